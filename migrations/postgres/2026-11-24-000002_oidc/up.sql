-- Schema v2 (PostgreSQL): OpenID Connect state: clients registered at run time, signing
-- keys, consents and refresh-token families.
--
-- Kept semantically identical to migrations/sqlite/2026-11-24-000002_oidc/up.sql.
-- Types are the portable subset read through diesel's MultiBackend: TEXT, BIGINT.
-- Timestamps are unix seconds (BIGINT). JSON documents are TEXT, parsed when read: a
-- malformed one is reported as StoreError::Corrupt, never as a panic.
--
-- COLLATE "C" on the ordered keys: byte (code point) order, the same order SQLite's
-- BINARY collation gives, so listings are ordered identically on both backends.

-- Clients registered at run time (CLI, admin API). The registration is the serialised
-- idp_core::oidc::client::ClientRegistration; its client_id equals the key.
CREATE TABLE oidc_clients (
    client_id TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (client_id <> ''),
    registration TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Signing keys, only ever inserted (and pruned long after retirement). The private key
-- is PKCS#8 PEM: whoever reads this table can sign ID tokens.
CREATE TABLE signing_keys (
    kid TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (kid <> ''),
    alg TEXT NOT NULL CHECK (alg IN ('RS256', 'PS256', 'ES256', 'EdDSA')),
    private_key_pem TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    active_from BIGINT NOT NULL
);

-- A doctor's consent to release claims to a client: sorted JSON arrays of scope and
-- claim names. The client is not a foreign key: clients may come from the configuration
-- file and never be stored here; removing a stored client deletes its consents.
-- The primary key also serves consents_of (every consent of one doctor).
CREATE TABLE consents (
    doctor_id TEXT NOT NULL REFERENCES doctors (id) ON DELETE CASCADE,
    client_id TEXT COLLATE "C" NOT NULL,
    scopes TEXT NOT NULL,
    claims TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (doctor_id, client_id)
);

-- Refresh tokens, stored by the digest of the token only. Tokens of one authorization
-- share a family_id; rotating marks a token used (used_at) and inserts its successor;
-- presenting a used token revokes the family (revoked_at on every row, RFC 9700
-- section 4.14.2). No token outlives its family. Rows are deleted (pruned) once the
-- family has ended.
CREATE TABLE refresh_tokens (
    token_digest TEXT NOT NULL PRIMARY KEY,
    family_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    doctor_id TEXT NOT NULL REFERENCES doctors (id) ON DELETE CASCADE,
    grant_json TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    family_expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT,
    CHECK (expires_at <= family_expires_at)
);

-- Revoking a family (reuse, revoke_refresh_family).
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
-- Revoking a consent revokes the tokens of that doctor and client.
CREATE INDEX refresh_tokens_doctor_client_idx ON refresh_tokens (doctor_id, client_id);
