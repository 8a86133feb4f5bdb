-- Connector: the facts of each call folded from its events (direction,
-- parties, agents, end, recordings) and the event sequences already applied,
-- as JSON. Every Task of the call in sync_tasks is derived from this row, and
-- the applied sequences make redelivered or replayed events harmless.
-- Keep in step with ../sqlite/.
CREATE TABLE sync_calls (
    call_id     TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
