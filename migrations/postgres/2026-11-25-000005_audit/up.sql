-- Schema v5 (PostgreSQL): the audit log (docs/AUDIT.md).
--
-- Kept semantically identical to migrations/sqlite/2026-11-25-000005_audit/up.sql.
-- Append-only, hash-chained: hash = SHA-256(prev_hash, "\n", canonical JSON of the
-- record), computed by idp_core::audit. doctor_id is not a foreign key: records outlive
-- the doctors they name. detail is canonical JSON (claim names, never values).
CREATE TABLE audit_log (
    seq BIGINT NOT NULL PRIMARY KEY CHECK (seq > 0),
    at_micros BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    doctor_id TEXT,
    relying_party TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- Signed checkpoints: an Ed25519 signature by the checkpoint key (a file, not in this
-- database) over a record's number and hash, so that cutting the end of the chain, or
-- rewriting it whole, is found by `idp audit verify`.
CREATE TABLE audit_checkpoints (
    seq BIGINT NOT NULL PRIMARY KEY CHECK (seq > 0),
    hash TEXT NOT NULL,
    at_micros BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- Export by time range; a doctor's own history.
CREATE INDEX audit_log_at_idx ON audit_log (at_micros);
CREATE INDEX audit_log_doctor_idx ON audit_log (doctor_id, seq);

-- Records are never changed, and never deleted within the retention floor of 365 days
-- (the MHLW guideline's year): defence in depth under the application, which has no
-- statement that updates or deletes them.
CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit records are append-only';
    END IF;
    IF OLD.at_micros > (EXTRACT(EPOCH FROM now())::BIGINT - 365 * 86400) * 1000000 THEN
        RAISE EXCEPTION 'audit records are kept for at least 365 days';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
