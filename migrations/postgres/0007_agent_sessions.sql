-- Agents sign in (Connect with Salesforce) and get a session: an expiring
-- bearer token, stored only as its SHA-256, with the agent's Salesforce
-- tokens sealed (AES-256-GCM) for searches made on the agent's behalf.
-- Users have a role: admins see admin-only recordings in the agent API.
-- A call remembers the agent who answered it (its recordings and rating
-- are that agent's). Agent settings (F2) and the answers to requests with an Idempotency-Key
-- live here too. Keep in step with the other dialect's file of the same name.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'agent'
    CONSTRAINT users_role CHECK (role IN ('agent', 'admin'));

ALTER TABLE calls ADD COLUMN agent_user_id TEXT;
CREATE INDEX calls_agent ON calls(agent_user_id);

CREATE TABLE agent_sessions (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    salesforce   TEXT
);
CREATE INDEX agent_sessions_user ON agent_sessions(user_id);
CREATE INDEX agent_sessions_expiry ON agent_sessions(expires_at);

CREATE TABLE agent_settings (
    user_id               TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    privacy_mode          BIGINT NOT NULL DEFAULT 0,
    open_task_after_call  BIGINT NOT NULL DEFAULT 1,
    call_relation         TEXT NOT NULL DEFAULT 'none'
        CONSTRAINT agent_settings_relation CHECK (call_relation IN ('none', 'case', 'opportunity')),
    updated_at            BIGINT NOT NULL
);

CREATE TABLE idempotency_keys (
    user_id       TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT NOT NULL,
    body          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
