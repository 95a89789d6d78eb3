-- Schema v6 (SQLite): a configurable audit retention (docs/AUDIT.md, "Retention").
--
-- Kept semantically identical to migrations/postgres/2026-11-25-000006_audit_retention/up.sql.
-- The one row holds the retention in days (never below the MHLW guideline's year); the
-- server writes `[audit] retention_days` at start. The delete guard reads it, and a
-- missing row means 365: the floor holds whatever happens to the setting.
CREATE TABLE audit_retention (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    days INTEGER NOT NULL CHECK (days >= 365)
);
INSERT INTO audit_retention (id, days) VALUES (1, 365);

DROP TRIGGER audit_log_no_early_delete;
CREATE TRIGGER audit_log_no_early_delete BEFORE DELETE ON audit_log
WHEN OLD.at_micros > (CAST(strftime('%s', 'now') AS INTEGER)
    - MAX(365, COALESCE((SELECT days FROM audit_retention WHERE id = 1), 365)) * 86400) * 1000000
BEGIN
    SELECT RAISE(ABORT, 'audit records are kept for the retention period (at least 365 days)');
END;
