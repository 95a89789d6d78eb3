-- Schema v4 (PostgreSQL): disclosure. The doctors' own disclosure settings, and the policy
-- version a consent was given under.
--
-- Kept semantically identical to migrations/sqlite/2026-11-25-000004_disclosure/up.sql.
-- Types are the portable subset read through diesel's MultiBackend: TEXT, BIGINT, BOOLEAN.

-- The policy version (idp_policies::DisclosurePolicy::version) in force when the doctor
-- consented; NULL for consents given before policies were versioned.
ALTER TABLE consents ADD COLUMN policy_version TEXT;

-- A doctor's disclosure settings (the 情報開示設定 screen): one row per item and
-- audience the doctor has set; items and audiences without a row take the defaults of
-- idp_core::disclosure::Item::default_allowed. The primary key serves settings_of.
CREATE TABLE disclosure_settings (
    doctor_id TEXT NOT NULL REFERENCES doctors (id) ON DELETE CASCADE,
    item TEXT NOT NULL CHECK (item IN ('name', 'gender', 'birthdate',
        'doctor_registration_number', 'doctor_registration_date', 'jma_member_id',
        'medical_association', 'address', 'email')),
    audience TEXT NOT NULL CHECK (audience IN ('regional_network', 'jma_service', 'third_party')),
    allowed BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (doctor_id, item, audience)
);
