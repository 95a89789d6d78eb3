//! Storage for the HPKI identity provider: the implementations of the storage traits that
//! `idp-core` defines ([`idp_core::store::DoctorDirectory`] and
//! [`idp_core::store::EphemeralStore`]).
//!
//! # Design
//!
//! **Durable records** ([`Database`]) live in SQLite or PostgreSQL through diesel. One
//! connection type, a `#[derive(MultiConnection)]` enum over `SqliteConnection` and
//! `PgConnection`, runs the same query code on both; the backend is chosen by the URL
//! (`sqlite://path`, `sqlite::memory:`, `postgres://…`).
//!
//! - *Per-backend migrations.* DDL is not portable (SQLite has no `COLLATE "C"`, its
//!   booleans are integers, its `ALTER TABLE` is limited), so each backend has its own
//!   migration folder (`migrations/sqlite`, `migrations/postgres`) with the same version
//!   names and the same semantics, both embedded in the binary. [`Database::migrate`] picks
//!   the set for the connected backend.
//! - *Portable column types.* Only TEXT, BIGINT and BOOLEAN are used: dates are ISO
//!   `YYYY-MM-DD` text and timestamps are unix seconds, so one row type reads on both
//!   backends. A malformed stored value is a [`StoreError::Corrupt`], never a panic.
//! - *No upsert clause.* diesel's MultiBackend has no `ON CONFLICT`; imports select then
//!   insert or update inside one transaction. On SQLite write transactions start with
//!   `BEGIN IMMEDIATE`, so concurrent writers queue on the busy timeout instead of failing
//!   on a lock upgrade.
//! - *`spawn_blocking`.* diesel and its r2d2 pool are synchronous. Every database call runs
//!   on tokio's blocking pool ([`tokio::task::spawn_blocking`]), so a slow query or a pool
//!   wait never stalls the async workers that serve TLS and HTTP.
//!
//! **Ephemeral state** (sessions, login requests, one-time codes, replay caches, rate
//! counters) lives in a [`MemoryStore`] (one process) or a [`RedisStore`] (shared between
//! instances). Every entry has a time to live, and nothing grows without bound: the memory
//! store sweeps expired entries as it is written and refuses new keys beyond a hard
//! capacity; Redis expires keys itself, and counters get their expiry atomically with their
//! creation (a Lua script), so a crash cannot leave a counter that never expires.
//!
//! **Secrets.** A connection URL may carry a password. It is never logged and never put
//! in an error: errors and logs show the URL with the password replaced by `***` and the
//! query string dropped, and driver messages are scrubbed of the password as well.
//!
//! **Time.** Durable operations take `now` from the caller, like `idp-core`. Only the
//! ephemeral stores read a clock: the monotonic [`std::time::Instant`] for expiry.
//!
//! [`StoreError::Corrupt`]: idp_core::store::StoreError::Corrupt

#![warn(missing_docs)]

pub mod csv_import;
mod database;
mod ephemeral;
mod redact;

pub use database::{Backend, Database, DatabaseOptions};
pub use ephemeral::memory::{DEFAULT_CAPACITY, DEFAULT_SWEEP_EVERY, MemoryStore};
pub use ephemeral::redis::{DEFAULT_KEY_PREFIX, RedisStore};
pub use ephemeral::{MAX_TTL, connect_ephemeral};

/// A failure to set up a store: connecting, or migrating the schema.
///
/// Store operations themselves fail with [`idp_core::store::StoreError`]. Messages here
/// never contain a password: endpoints are shown redacted (`postgres://idp:***@db/idp`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL names no supported store.
    #[error(
        "unsupported store URL {0:?}: expected sqlite://PATH, sqlite::memory:, \
         postgres://…, postgresql://…, memory, redis://… or rediss://…"
    )]
    UnsupportedUrl(String),
    /// The store could not be reached or opened.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The redacted URL.
        endpoint: String,
        /// What went wrong (scrubbed of the password).
        reason: String,
    },
    /// Applying the schema migrations failed.
    #[error("migrating {endpoint} failed: {reason}")]
    Migrate {
        /// The redacted URL.
        endpoint: String,
        /// What went wrong (scrubbed of the password).
        reason: String,
    },
}
