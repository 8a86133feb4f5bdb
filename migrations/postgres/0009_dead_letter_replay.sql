-- `switchboard replay` (decision 0020). Keep in step with ../sqlite/.

-- Dead letters keep what the Kafka dead-letter topic carries in headers, so
-- the table is filtered like the topic: the short label (`undecodable`,
-- `invalid_event`, `salesforce_rejected`), Salesforce's error code when it
-- refused the write, and where the event was read (`outbox row 42`). Rows
-- stored before this migration get their label from the wording of their
-- reason, and no error code or origin.
ALTER TABLE dead_letters ADD COLUMN label TEXT NOT NULL DEFAULT 'invalid_event';
ALTER TABLE dead_letters ADD COLUMN error_code TEXT;
ALTER TABLE dead_letters ADD COLUMN origin TEXT;
UPDATE dead_letters SET label = 'undecodable' WHERE reason LIKE 'undecodable CallEvent:%';
UPDATE dead_letters SET label = 'salesforce_rejected' WHERE reason LIKE 'Salesforce refused %';
-- The letters still waiting for a replay. A replayed letter is stamped,
-- not deleted; its event goes back into the outbox as a new row whose
-- sequence is minus the letter's id (the event keeps its own sequence in
-- the payload), which no gateway sequence (1, 2, ...) can collide with.
CREATE INDEX dead_letters_waiting ON dead_letters (id) WHERE replayed_at IS NULL;

-- Kafka mode: the letters of the dead-letter topic already fed back to the
-- call-event topic, by their place `<topic>/<partition>@<offset>`. The
-- replay's consumer group cannot commit past a letter a filter left out, so
-- this journal is what keeps a letter behind it from being replayed twice.
CREATE TABLE dead_letter_replays (
    position     TEXT PRIMARY KEY,
    call_id      TEXT NOT NULL,
    replayed_at  BIGINT NOT NULL
);
