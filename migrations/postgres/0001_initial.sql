-- Switchboard schema, PostgreSQL flavour. Keep in step with ../sqlite/.
-- Portable column types only (BIGINT, TEXT, BYTEA): one code base reads both
-- databases through sqlx's Any driver. Times are Unix epoch milliseconds.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    extension           TEXT UNIQUE,
    salesforce_user_id  TEXT UNIQUE,
    created_at          BIGINT NOT NULL
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    contact_uri  TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE numbers (
    number      TEXT PRIMARY KEY,
    user_id     TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE calls (
    id            TEXT PRIMARY KEY,
    sip_call_id   TEXT NOT NULL,
    direction     TEXT NOT NULL,
    from_number   TEXT NOT NULL,
    to_number     TEXT NOT NULL,
    user_id       TEXT,
    state         TEXT NOT NULL,
    next_seq      BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    answered_at   BIGINT,
    ended_at      BIGINT,
    end_reason    TEXT
);
CREATE INDEX calls_started ON calls(started_at);

CREATE TABLE recordings (
    id           TEXT PRIMARY KEY,
    call_id      TEXT NOT NULL REFERENCES calls(id),
    object_key   TEXT NOT NULL,
    format       TEXT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    admin_only   BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);
CREATE INDEX recordings_call ON recordings(call_id);

-- Transactional outbox: every call event is inserted here in the same
-- transaction as the state change it describes. The relay publishes rows in
-- id order and stamps published_at; on `switchboard up` the in-process
-- connector reads this table directly as the event log.
CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id       TEXT NOT NULL,
    sequence      BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    payload       BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    published_at  BIGINT,
    UNIQUE (call_id, sequence)
);
CREATE INDEX outbox_unpublished ON outbox(id) WHERE published_at IS NULL;

-- Connector: how far it has read an event log it owns no offsets in
-- (the outbox on `switchboard up`).
CREATE TABLE connector_cursors (
    name      TEXT PRIMARY KEY,
    position  BIGINT NOT NULL
);

-- Connector: folded sync state per call and agent (one Salesforce Task each).
CREATE TABLE sync_tasks (
    call_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    state            TEXT NOT NULL,
    salesforce_id    TEXT,
    last_synced_at   BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (call_id, user_id)
);

-- Connector: events Salesforce refused for good, with the reason, for
-- `switchboard replay`.
CREATE TABLE dead_letters (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id      TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    replayed_at  BIGINT
);
