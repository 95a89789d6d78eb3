-- Schema v6 (PostgreSQL): a configurable audit retention (docs/AUDIT.md, "Retention").
--
-- Kept semantically identical to migrations/sqlite/2026-11-25-000006_audit_retention/up.sql.
-- The one row holds the retention in days (never below the MHLW guideline's year); the
-- server writes `[audit] retention_days` at start. The delete guard reads it, and a
-- missing row means 365: the floor holds whatever happens to the setting.
CREATE TABLE audit_retention (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    days INTEGER NOT NULL CHECK (days >= 365)
);
INSERT INTO audit_retention (id, days) VALUES (1, 365);

CREATE OR REPLACE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit records are append-only';
    END IF;
    IF OLD.at_micros > (EXTRACT(EPOCH FROM now())::BIGINT
        - GREATEST(365, COALESCE((SELECT days FROM audit_retention WHERE id = 1), 365))::BIGINT * 86400) * 1000000 THEN
        RAISE EXCEPTION 'audit records are kept for the retention period (at least 365 days)';
    END IF;
    RETURN OLD;
END $$;
