-- Live updates for GraphQL subscriptions: every change of an order_view
-- row notifies eshop_order_view from the changing transaction, so the
-- notification is delivered when, and only if, the change commits.
CREATE FUNCTION order_view_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eshop_order_view', json_build_object(
        'order_id', NEW.order_id, 'customer_id', NEW.customer_id, 'version', NEW.version)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER order_view_notify
    AFTER INSERT OR UPDATE ON order_view
    FOR EACH ROW EXECUTE FUNCTION order_view_notify();
