-- Schema v1 (SQLite): the doctor records.
--
-- Kept semantically identical to migrations/postgres/2026-11-24-000001_doctors/up.sql.
-- Types are the portable subset read through diesel's MultiBackend: TEXT, BIGINT, BOOLEAN.
-- Dates are ISO 8601 TEXT (YYYY-MM-DD); timestamps are unix seconds (BIGINT).
-- Dates deliberately carry no CHECK: a malformed stored date is reported as
-- StoreError::Corrupt when read, never as a panic.
CREATE TABLE doctors (
    id TEXT NOT NULL PRIMARY KEY,
    hpki_holder_id TEXT NOT NULL CHECK (hpki_holder_id <> ''),
    family_name TEXT NOT NULL,
    given_name TEXT NOT NULL,
    family_name_kana TEXT,
    given_name_kana TEXT,
    family_name_latin TEXT,
    given_name_latin TEXT,
    gender TEXT NOT NULL CHECK (gender IN ('male', 'female', 'other', 'unknown')),
    birthdate TEXT,
    email TEXT,
    postal_code TEXT,
    prefecture TEXT,
    address TEXT,
    jma_member_id TEXT,
    jma_member BOOLEAN NOT NULL CHECK (jma_member IN (0, 1)),
    medical_association_prefecture TEXT,
    medical_association_district TEXT,
    doctor_registration_number TEXT,
    doctor_registration_date TEXT,
    hpki_role TEXT,
    origin TEXT NOT NULL CHECK (origin IN ('imported', 'provisioned')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT
);

-- The card binding: one record per HPKI holder ID. This unique index is both the
-- UNIQUE constraint and the lookup index for find_by_holder and list's ordering
-- (SQLite's default BINARY collation orders UTF-8 by code point, like COLLATE "C").
CREATE UNIQUE INDEX doctors_hpki_holder_id_key ON doctors (hpki_holder_id);
