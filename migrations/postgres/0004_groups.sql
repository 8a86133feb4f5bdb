-- Groups (ring all members), group-owned numbers and the company main line.
-- Keep in step with the other dialect's file of the same name.

-- A group rings its members in `position` order. Its extension shares one
-- namespace with the users' extensions; that is checked by the directory,
-- as no constraint spans two tables.
CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    extension   TEXT UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

-- A number is owned by a user or by a group, never both.
ALTER TABLE numbers ADD COLUMN group_id TEXT REFERENCES groups(id) ON DELETE SET NULL;
ALTER TABLE numbers ADD CONSTRAINT numbers_one_owner CHECK (user_id IS NULL OR group_id IS NULL);

-- 1 marks the company main line, which every user may present as caller ID.
-- At most one number is the main line.
ALTER TABLE numbers ADD COLUMN main_line BIGINT NOT NULL DEFAULT 0;
ALTER TABLE numbers ADD CONSTRAINT numbers_main_line_flag CHECK (main_line IN (0, 1));
CREATE UNIQUE INDEX numbers_single_main_line ON numbers(main_line) WHERE main_line = 1;

CREATE INDEX numbers_user ON numbers(user_id);
CREATE INDEX numbers_group ON numbers(group_id);
