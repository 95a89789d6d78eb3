CREATE OR REPLACE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit records are append-only';
    END IF;
    IF OLD.at_micros > (EXTRACT(EPOCH FROM now())::BIGINT - 365 * 86400) * 1000000 THEN
        RAISE EXCEPTION 'audit records are kept for at least 365 days';
    END IF;
    RETURN OLD;
END $$;
DROP TABLE audit_retention;
