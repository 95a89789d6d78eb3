//! Storage traits. `idp-store` implements them with diesel (SQLite, PostgreSQL) and with
//! an in-process map or Redis; core logic only sees these traits.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::doctor::{Doctor, DoctorId, DoctorProfile};

/// A storage failure. The message is for logs only: it never reaches the wire.
#[derive(Debug, thiserror::Error)]
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
