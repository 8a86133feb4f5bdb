-- Voicemails are stored like recordings (one object each) and told apart by
-- kind; a voicemail belongs to the mailbox of the user it was left for.
-- Keep in step with the other dialect's file of the same name.
ALTER TABLE recordings ADD COLUMN kind TEXT NOT NULL DEFAULT 'recording'
    CONSTRAINT recordings_kind CHECK (kind IN ('recording', 'voicemail'));
ALTER TABLE recordings ADD COLUMN user_id TEXT;
CREATE INDEX recordings_user ON recordings(user_id);
