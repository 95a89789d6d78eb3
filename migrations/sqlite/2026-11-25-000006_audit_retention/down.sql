DROP TRIGGER audit_log_no_early_delete;
CREATE TRIGGER audit_log_no_early_delete BEFORE DELETE ON audit_log
WHEN OLD.at_micros > (CAST(strftime('%s', 'now') AS INTEGER) - 365 * 86400) * 1000000
BEGIN
    SELECT RAISE(ABORT, 'audit records are kept for at least 365 days');
END;
DROP TABLE audit_retention;
