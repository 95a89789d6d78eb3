-- Schema v3 (SQLite): SAML service providers registered at run time.
--
-- Kept semantically identical to migrations/postgres/2026-11-24-000003_saml/up.sql.
-- Types are the portable subset read through diesel's MultiBackend: TEXT, BIGINT.
-- Timestamps are unix seconds (BIGINT). The metadata (XML) and the settings (JSON of
-- idp_saml::sp::SpSettings) are TEXT, parsed by the SAML crate when read: a malformed
-- one is reported there, never as a panic.
--
-- SQLite's default BINARY collation orders UTF-8 by code point, like COLLATE "C" on
-- PostgreSQL, so listings are ordered identically on both backends.

-- Service providers registered at run time (CLI, admin API, metadata refresh), keyed by
-- entity ID. fetched_at is when the metadata was last read from its source. The consents
-- given to an SP are stored in consents with client_id = entity_id (not a foreign key:
-- SPs may come from the configuration file); removing a stored SP deletes them.
CREATE TABLE saml_sps (
    entity_id TEXT NOT NULL PRIMARY KEY CHECK (entity_id <> ''),
    metadata TEXT NOT NULL,
    settings TEXT NOT NULL,
    fetched_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
