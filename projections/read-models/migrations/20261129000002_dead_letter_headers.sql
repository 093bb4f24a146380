-- A dead letter kept in the table carries the original message's headers
-- (content-type, ce_id, ce_type, ce_schemaversion, traceparent), as one on
-- a broker does: it can be routed and traced like the event.
ALTER TABLE dead_letters ADD COLUMN headers jsonb NOT NULL DEFAULT '{}'::jsonb;
