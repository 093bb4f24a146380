-- Readers of the global order pass over the running transactions of
-- connections named 'eshop-projector' (see docs/event-store.md, "The global
-- order"). That is only safe while such a connection can never append an
-- event, so the store refuses it.
CREATE FUNCTION events_refuse_read_model_writers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = 'eshop-projector' THEN
        RAISE EXCEPTION 'connections named eshop-projector write read models only and cannot append events'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_refuse_read_model_writers
    BEFORE INSERT OR UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_read_model_writers();
