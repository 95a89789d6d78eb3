DROP TABLE disclosure_settings;
ALTER TABLE consents DROP COLUMN policy_version;
