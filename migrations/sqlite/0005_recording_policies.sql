-- Administrator auto-recording policies (F7): "record all calls (admin)" on a
-- number (the main line is a number too) or on a group (a group doubles as
-- the call queue). Recordings made because of a policy are admin-only.
-- Keep in step with the other dialect's file of the same name.

-- A policy is one yes/no property of the number or group it covers, so it
-- is a flag on that row rather than a table of (scope kind, scope id) rows:
-- it cannot name a number or group that does not exist, it goes when its
-- number or group is deleted, and routing reads it from the rows it loads
-- anyway. (A policy table would need either an untyped scope id, which no
-- foreign key can check, or one nullable foreign key per kind of scope.)
-- Reassigning a number to another owner keeps its flag: the policy is about
-- the line, not about who answers it.
-- SQLite cannot add a table constraint to an existing table, so each check
-- sits on its new column.

-- 1: every call to this number is recorded for admins.
ALTER TABLE numbers ADD COLUMN record_calls BIGINT NOT NULL DEFAULT 0
    CONSTRAINT numbers_record_calls_flag CHECK (record_calls IN (0, 1));

-- 1: every call for this group (its numbers, its extension) is recorded for
-- admins.
ALTER TABLE groups ADD COLUMN record_calls BIGINT NOT NULL DEFAULT 0
    CONSTRAINT groups_record_calls_flag CHECK (record_calls IN (0, 1));
