-- Per projection: how many events went to the dead-letter topic.
CREATE TABLE projection_status (
    projection   text        NOT NULL,
    dead_letters bigint      NOT NULL DEFAULT 0,
    last_dead_letter_at timestamptz,
    CONSTRAINT projection_status_pkey PRIMARY KEY (projection)
);

-- Per projection and partition: the next offset to read and the last event
-- taken, written in the projection's own transaction (for the PostgreSQL
-- views) or after the bulk request is acknowledged (for the search index).
-- Lag is the partition's high watermark minus next_offset.
CREATE TABLE projection_offsets (
    projection      text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    global_position bigint,
    event_time      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projection_offsets_pkey PRIMARY KEY (projection, topic, partition)
);
