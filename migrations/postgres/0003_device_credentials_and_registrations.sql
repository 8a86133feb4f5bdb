-- SIP digest credentials of devices and their registrations.
-- Keep in step with the other dialect's file of the same name.

-- The digest username a device authenticates with, and the stored
-- H(username:realm:password) for MD5 and SHA-256 (never the password).
ALTER TABLE devices ADD COLUMN sip_username TEXT;
ALTER TABLE devices ADD COLUMN ha1_md5 TEXT;
ALTER TABLE devices ADD COLUMN ha1_sha256 TEXT;
CREATE UNIQUE INDEX devices_sip_username ON devices(sip_username);

-- Contacts bound by REGISTER (RFC 3261 §10). `source` is where the
-- REGISTER came from (`udp:ip:port` / `tcp:ip:port`): requests to the
-- contact are sent there, which reaches devices behind NAT.
CREATE TABLE registrations (
    device_id   TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    contact     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    call_id     TEXT NOT NULL,
    cseq        BIGINT NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (device_id, contact)
);
CREATE INDEX registrations_expiry ON registrations(expires_at);
