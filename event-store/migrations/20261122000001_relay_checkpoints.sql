-- Where each relay stands in the global order: the last event the broker
-- acknowledged. Only ever moves forward.
CREATE TABLE relay_checkpoints (
    name            text        NOT NULL,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT relay_checkpoints_pkey PRIMARY KEY (name)
);
