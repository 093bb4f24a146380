-- What each projection has applied, per aggregate: the view change and this
-- row commit in one transaction, so an event is applied at most once.
CREATE TABLE projection_progress (
    projection   text   NOT NULL,
    aggregate_id text   NOT NULL,
    sequence     bigint NOT NULL,
    CONSTRAINT projection_progress_pkey PRIMARY KEY (projection, aggregate_id)
);

-- The catalog as shoppers and staff see it.
CREATE TABLE product_catalog (
    product_id   uuid        NOT NULL,
    sku          text        NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL,
    price_minor  bigint      NOT NULL,
    currency     text        NOT NULL,
    on_hand      bigint      NOT NULL,
    reserved     bigint      NOT NULL,
    available    bigint      GENERATED ALWAYS AS (on_hand - reserved) STORED,
    status       text        NOT NULL,
    version      bigint      NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT product_catalog_pkey PRIMARY KEY (product_id)
);
CREATE INDEX product_catalog_status_price ON product_catalog (status, price_minor);

-- Orders with their lines, current status and status history.
CREATE TABLE order_view (
    order_id            uuid        NOT NULL,
    customer_id         uuid        NOT NULL,
    basket_id           uuid        NOT NULL,
    status              text        NOT NULL,
    total_minor         bigint      NOT NULL,
    currency            text        NOT NULL,
    lines               jsonb       NOT NULL,
    shipping_address    jsonb       NOT NULL,
    payment_reference   text,
    tracking_number     text,
    cancellation_reason text,
    status_history      jsonb       NOT NULL,
    placed_at           timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    version             bigint      NOT NULL,
    CONSTRAINT order_view_pkey PRIMARY KEY (order_id)
);
-- "Orders of a customer by status and date".
CREATE INDEX order_view_customer_status_placed ON order_view (customer_id, status, placed_at DESC);
