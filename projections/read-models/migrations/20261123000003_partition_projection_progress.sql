-- Each projection's per-aggregate progress in a partition of its own, so a
-- rebuild swaps in its new progress by attaching a partition (a catalog
-- change, however many aggregates) instead of deleting and inserting every
-- row while the live projector waits. Projections without a partition of
-- their own land in the default one.
ALTER TABLE projection_progress RENAME TO projection_progress_unpartitioned;
ALTER INDEX projection_progress_pkey RENAME TO projection_progress_unpartitioned_pkey;

CREATE TABLE projection_progress (
    projection   text   NOT NULL,
    aggregate_id text   NOT NULL,
    sequence     bigint NOT NULL,
    CONSTRAINT projection_progress_pkey PRIMARY KEY (projection, aggregate_id)
) PARTITION BY LIST (projection);

CREATE TABLE projection_progress_product_catalog PARTITION OF projection_progress
    FOR VALUES IN ('product_catalog');
CREATE TABLE projection_progress_basket_view PARTITION OF projection_progress
    FOR VALUES IN ('basket_view');
CREATE TABLE projection_progress_order_view PARTITION OF projection_progress
    FOR VALUES IN ('order_view');
CREATE TABLE projection_progress_sales_daily PARTITION OF projection_progress
    FOR VALUES IN ('sales_daily');
CREATE TABLE projection_progress_other PARTITION OF projection_progress DEFAULT;

INSERT INTO projection_progress SELECT * FROM projection_progress_unpartitioned;
DROP TABLE projection_progress_unpartitioned;
