-- Where a projection's dead letters go when no broker runs
-- (EVENT_BUS_URL=none): what it could not take, with the error and the
-- original payload, as a dead-letter topic holds them on a broker.
CREATE TABLE dead_letters (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection text        NOT NULL,
    error      text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    key        bytea,
    payload    bytea,
    dead_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_projection ON dead_letters (projection, dead_at);
