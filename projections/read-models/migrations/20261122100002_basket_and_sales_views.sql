-- Baskets with their lines, line totals and total.
CREATE TABLE basket_view (
    basket_id   uuid        NOT NULL,
    customer_id uuid        NOT NULL,
    status      text        NOT NULL,
    currency    text,
    lines       jsonb       NOT NULL,
    total_minor bigint      NOT NULL,
    item_count  bigint      NOT NULL,
    order_id    uuid,
    opened_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL,
    CONSTRAINT basket_view_pkey PRIMARY KEY (basket_id)
);
CREATE INDEX basket_view_customer ON basket_view (customer_id, status);

-- Units sold and revenue per UTC day and product, net of cancellations
-- (a cancellation is taken off the day the order was placed).
CREATE TABLE sales_daily (
    day           date   NOT NULL,
    product_id    uuid   NOT NULL,
    currency      text   NOT NULL,
    sku           text   NOT NULL,
    units         bigint NOT NULL,
    revenue_minor bigint NOT NULL,
    orders        bigint NOT NULL,
    CONSTRAINT sales_daily_pkey PRIMARY KEY (day, product_id, currency)
);

-- What sales_daily needs to take a cancelled order off again.
CREATE TABLE sales_daily_orders (
    order_id uuid  NOT NULL,
    day      date  NOT NULL,
    lines    jsonb NOT NULL,
    CONSTRAINT sales_daily_orders_pkey PRIMARY KEY (order_id)
);
