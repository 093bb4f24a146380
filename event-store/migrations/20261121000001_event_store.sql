-- The event store. Column names follow postgres-es 0.5 so that its
-- repository can read this table too; the extra columns have defaults.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Global order: (transaction_id, global_position). The identity has gaps
    -- (a rolled-back append burns numbers) and concurrent transactions commit
    -- out of identity order; see docs/event-store.md for how a reader
    -- follows this order without ever skipping a late commit.
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- Optimistic concurrency: two writers of the same next sequence cannot
    -- both commit.
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_order ON events (transaction_id, global_position);
CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_type_time ON events (event_type, recorded_at);

-- Snapshots of aggregate state, written in the same transaction as the
-- events they cover (postgres-es column names).
CREATE TABLE snapshots (
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    last_sequence    bigint      NOT NULL CHECK (last_sequence > 0),
    current_snapshot bigint      NOT NULL,
    payload          jsonb       NOT NULL,
    timestamp        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Values that must be unique across aggregates (a product's SKU), claimed in
-- the same transaction as the event that introduces them.
CREATE TABLE unique_claims (
    scope        text        NOT NULL,
    value        text        NOT NULL,
    aggregate_id text        NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unique_claims_pkey PRIMARY KEY (scope, value)
);

-- Idempotency keys, recorded in the same transaction as the events their
-- request appended, so a retry can never append twice.
CREATE TABLE idempotency_keys (
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    outcome      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
