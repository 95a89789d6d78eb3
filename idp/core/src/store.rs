//! Storage traits. `idp-store` implements them with diesel (SQLite, PostgreSQL) and with
//! an in-process map or Redis; core logic only sees these traits.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::disclosure::{DisclosureSettings, Setting};
use crate::doctor::{Doctor, DoctorId, DoctorProfile};

/// A storage failure. The message is for logs only: it never reaches the wire.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Short-lived state with a time to live: login requests, sessions, one-time tickets,
/// rate-limit counters. Every entry expires; nothing grows without bound.
///
/// Keys are namespaced by the caller (`session:…`, `login:…`). Values are opaque bytes.
#[async_trait]
pub trait EphemeralStore: Send + Sync + Debug {
    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Stores `value` only if `key` is absent; returns whether it was stored. This is the
    /// primitive for replay caches (`jti`, request IDs).
    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Atomically reads and deletes `key`: of two concurrent callers, at most one gets
    /// the value (one-time codes and tickets).
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes `key`; deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Increments the counter under `key` and returns the new value; `get` reads a counter
    /// as its decimal ASCII value (as Redis stores it). The window starts at
    /// the first increment: the counter expires `window` after it was created.
    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError>;

    /// Checks that the store answers (readiness probe).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Keeps `value` as JSON under `{prefix}:{digest}` of a fresh [`Secret`] for `ttl` and
/// returns the secret, for the browser to bring back (pending authorization requests).
pub async fn keep_json<T: serde::Serialize>(
    store: &dyn EphemeralStore,
    prefix: &str,
    value: &T,
    ttl: Duration,
) -> Result<crate::secret::Secret, StoreError> {
    let id = crate::secret::Secret::generate();
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store
        .put(&format!("{prefix}:{}", id.digest()), &bytes, ttl)
        .await?;
    Ok(id)
}

/// Takes (once) what [`keep_json`] kept under the secret the client presented; an
/// unknown, malformed or unreadable value is absent.
pub async fn take_json<T: serde::de::DeserializeOwned>(
    store: &dyn EphemeralStore,
    prefix: &str,
    presented: &str,
) -> Result<Option<T>, StoreError> {
    let Some(id) = crate::secret::Secret::from_client(presented) else {
        return Ok(None);
    };
    let Some(bytes) = store.take(&format!("{prefix}:{}", id.digest())).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub inserted: usize,
    pub updated: usize,
}

/// The doctor records.
#[async_trait]
pub trait DoctorDirectory: Send + Sync + Debug {
    /// The doctor bound to a card holder ID, if any.
    async fn find_by_holder(&self, holder_id: &str) -> Result<Option<Doctor>, StoreError>;

    /// The doctor with this ID, if any.
    async fn find(&self, id: &DoctorId) -> Result<Option<Doctor>, StoreError>;

    /// Creates a record from a certificate at first login (provisioning). Fails with
    /// [`StoreError::Conflict`] when the holder ID is already bound.
    async fn provision(
        &self,
        profile: &DoctorProfile,
        now: OffsetDateTime,
    ) -> Result<Doctor, StoreError>;

    /// Inserts or updates (by holder ID) the given records in one transaction: either all
    /// of them are stored or none is.
    async fn import(
        &self,
        profiles: &[DoctorProfile],
        now: OffsetDateTime,
    ) -> Result<ImportReport, StoreError>;

    /// Records a successful login.
    async fn record_login(&self, id: &DoctorId, at: OffsetDateTime) -> Result<(), StoreError>;

    /// All records, ordered by holder ID (administration and export).
    async fn list(&self) -> Result<Vec<Doctor>, StoreError>;

    /// Checks that the database answers (readiness probe).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A signing key as stored: the private key as PKCS#8 PEM and when it starts signing.
/// Keys are only ever inserted (and pruned long after retirement); which key signs and
/// which are published is computed from the set (`oidc::keys::KeyRing`).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: crate::oidc::client::SigningAlg,
    pub pkcs8_pem: String,
    pub created_at: OffsetDateTime,
    /// When the key starts signing; it is published from `created_at`.
    pub active_from: OffsetDateTime,
}

impl Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

/// Clients registered at run time (CLI, admin API) and from the configuration.
#[async_trait]
pub trait ClientStore: Send + Sync + Debug {
    /// The client with this ID, if registered.
    async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<crate::oidc::client::ClientRegistration>, StoreError>;

    /// All clients, ordered by client ID.
    async fn clients(&self) -> Result<Vec<crate::oidc::client::ClientRegistration>, StoreError>;

    /// Inserts or replaces the registration with this client ID.
    async fn put_client(
        &self,
        client: &crate::oidc::client::ClientRegistration,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Removes a client (and its consents and refresh tokens); returns whether it existed.
    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError>;
}

/// A SAML service provider as stored: its metadata as registered and the
/// administrator's settings (JSON of `idp_saml::sp::SpSettings`), both parsed by the
/// SAML crate when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpRecord {
    pub entity_id: String,
    pub metadata: String,
    pub settings: String,
    /// When the metadata was last read from its source (file or URL).
    pub fetched_at: OffsetDateTime,
}

/// SAML service providers registered at run time (CLI, admin API, metadata refresh).
#[async_trait]
pub trait SpStore: Send + Sync + Debug {
    /// The SP with this entity ID, if registered.
    async fn sp(&self, entity_id: &str) -> Result<Option<SpRecord>, StoreError>;

    /// All SPs, ordered by entity ID.
    async fn sps(&self) -> Result<Vec<SpRecord>, StoreError>;

    /// Inserts or replaces the SP with this entity ID.
    async fn put_sp(&self, record: &SpRecord, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Removes an SP and the consents given to it; returns whether it existed.
    async fn remove_sp(&self, entity_id: &str) -> Result<bool, StoreError>;
}

/// Signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync + Debug {
    /// Every stored key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores a new key. Fails with [`StoreError::Conflict`] on a duplicate kid.
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Deletes a key that is no longer published; returns whether it existed.
    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError>;
}

/// A doctor's consent to release claims to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub doctor_id: DoctorId,
    pub client_id: String,
    /// The consented scopes (sorted, no duplicates).
    pub scopes: Vec<String>,
    /// The consented claim names (sorted, no duplicates).
    pub claims: Vec<String>,
    pub granted_at: OffsetDateTime,
    /// The disclosure policy version in force when the doctor consented (`None`: before
    /// policies were versioned).
    pub policy_version: Option<String>,
}

/// The doctors' own disclosure settings (per item and audience; defaults where unset).
#[async_trait]
pub trait DisclosureSettingsStore: Send + Sync + Debug {
    /// The doctor's settings (the defaults when the doctor has set nothing).
    async fn settings_of(&self, doctor: &DoctorId) -> Result<DisclosureSettings, StoreError>;

    /// Sets these items for these audiences, all or none (one transaction). An unknown
    /// doctor is a [`StoreError::Conflict`].
    async fn put_settings(
        &self,
        doctor: &DoctorId,
        settings: &[Setting],
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

/// Consents, per doctor and client.
#[async_trait]
pub trait ConsentStore: Send + Sync + Debug {
    async fn consent(
        &self,
        doctor: &DoctorId,
        client_id: &str,
    ) -> Result<Option<Consent>, StoreError>;

    /// Inserts or replaces the consent of `consent.doctor_id` for `consent.client_id`.
    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError>;

    /// Every consent of a doctor, ordered by client ID.
    async fn consents_of(&self, doctor: &DoctorId) -> Result<Vec<Consent>, StoreError>;

    /// Revokes a consent and every refresh token of that doctor and client, in one
    /// transaction; returns whether a consent existed.
    async fn revoke_consent(
        &self,
        doctor: &DoctorId,
        client_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}

/// A refresh token as stored: only the digest of the token is kept. Tokens of one
/// authorization form a family; rotating a token marks it used and adds its successor;
/// presenting a used token revokes the whole family (RFC 9700 §4.14.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_digest: String,
    pub family_id: String,
    pub client_id: String,
    pub doctor_id: DoctorId,
    /// The grant behind the family (scopes, claims request, auth_time, acr, amr, session
    /// id, certificate binding), serialised as JSON by the caller.
    pub grant: String,
    pub issued_at: OffsetDateTime,
    /// This token's end; never later than the family's.
    pub expires_at: OffsetDateTime,
    /// The end of the whole family (bounded lifetime, whatever the rotations).
    pub family_expires_at: OffsetDateTime,
}

/// What presenting a refresh token found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now used and its successor is stored. Carries the
    /// presented token's record.
    Rotated(RefreshRecord),
    /// The token had already been used (even if it has expired since, while its family
    /// lives): the whole family is now revoked.
    Reused {
        family_id: String,
        doctor_id: crate::doctor::DoctorId,
    },
    /// Unknown, expired, revoked, or issued to another client (nothing changed).
    Invalid,
}

/// Refresh tokens.
#[async_trait]
pub trait RefreshTokenStore: Send + Sync + Debug {
    /// Stores the first token of a family.
    async fn insert_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError>;

    /// Atomically (one transaction; concurrent presentations of one token rotate it at
    /// most once) checks the token with `presented_digest` for `client_id` at `now` and,
    /// when live, marks it used and stores its successor under `next_digest`: same
    /// family, client, doctor, grant and family end, issued at `now`, expiring at
    /// `next_expires_at` or the family's end, whichever is first.
    async fn rotate_refresh(
        &self,
        presented_digest: &str,
        client_id: &str,
        next_digest: &str,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Rotation, StoreError>;

    /// The live (unused, unrevoked, unexpired) token with this digest, if any.
    async fn live_refresh(
        &self,
        token_digest: &str,
        now: OffsetDateTime,
    ) -> Result<Option<RefreshRecord>, StoreError>;

    /// Revokes the family of the token with this digest if it belongs to `client_id`;
    /// returns the doctor of the family when anything was revoked.
    async fn revoke_refresh_family(
        &self,
        token_digest: &str,
        client_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<crate::doctor::DoctorId>, StoreError>;

    /// Deletes records whose family ended before `before`; returns how many.
    async fn prune_refresh(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
