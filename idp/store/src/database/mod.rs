//! The durable store: SQLite or PostgreSQL through one diesel connection type.

mod audit;
mod clients;
mod consents;
mod disclosure;
mod doctors;
mod keys;
mod refresh;
mod schema;
mod sps;

use std::fmt;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{self, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use idp_core::store::StoreError;
use time::OffsetDateTime;

use crate::Error;
use crate::redact::RedactedUrl;
pub(crate) use doctors::parse_date;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Settings of every SQLite connection. `busy_timeout` comes first so that switching the
/// journal mode of a file another connection holds waits instead of failing.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; \
     PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON;";

/// Key of the PostgreSQL advisory lock that serialises concurrent `migrate` calls
/// (several instances starting at once). Arbitrary, fixed: "idp-migr" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6964_702d_6d69_6772;

/// One connection to either backend. The derive generates the `MultiBackend` that lets the
/// same diesel query run on both.
#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Which database a [`Database`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite: a file, or one in-memory database.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Pool settings for [`Database::connect_with`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DatabaseOptions {
    /// Most connections held open. `None` picks per backend: 4 for an SQLite file (one
    /// writer at a time anyway; WAL lets readers proceed), 10 for PostgreSQL. An in-memory
    /// SQLite database always has exactly one.
    pub max_connections: Option<u32>,
    /// How long to wait for a connection, at start-up and from the pool.
    pub connection_timeout: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            connection_timeout: Duration::from_secs(10),
        }
    }
}

impl DatabaseOptions {
    /// Sets [`DatabaseOptions::max_connections`].
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Sets [`DatabaseOptions::connection_timeout`].
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }
}

/// Where connections go, parsed from the URL.
#[derive(Clone)]
enum Target {
    SqliteFile(String),
    SqliteMemory,
    /// The URL as given (it may hold a password: never shown).
    Postgres(String),
}

/// Opens connections of exactly the backend the URL named. (The derived
/// `AnyConnection::establish` would try each backend in turn, so a PostgreSQL URL whose
/// server is down would end up creating an SQLite file named after it.)
struct Manager {
    target: Target,
    url: RedactedUrl,
}

/// A connection failure, already scrubbed of secrets.
#[derive(Debug)]
struct ConnectError(String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<AnyConnection, ConnectError> {
        let scrub = |e: &dyn fmt::Display| ConnectError(self.url.scrub(&e.to_string()));
        match &self.target {
            Target::SqliteFile(path) => {
                let mut conn = SqliteConnection::establish(path).map_err(|e| scrub(&e))?;
                conn.batch_execute(SQLITE_PRAGMAS).map_err(|e| scrub(&e))?;
                Ok(AnyConnection::Sqlite(conn))
            }
            Target::SqliteMemory => {
                let mut conn = SqliteConnection::establish(":memory:").map_err(|e| scrub(&e))?;
                conn.batch_execute("PRAGMA foreign_keys = ON;")
                    .map_err(|e| scrub(&e))?;
                Ok(AnyConnection::Sqlite(conn))
            }
            Target::Postgres(url) => PgConnection::establish(url)
                .map(AnyConnection::Postgresql)
                .map_err(|e| scrub(&e)),
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectError> {
        conn.ping()
            .map_err(|e| ConnectError(self.url.scrub(&e.to_string())))
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}

/// Sends pool errors (already scrubbed) to tracing instead of the `log` crate.
#[derive(Debug)]
struct TracingErrorHandler;

impl r2d2::HandleError<ConnectError> for TracingErrorHandler {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(%error, "database connection failed");
    }
}

type Pool = r2d2::Pool<Manager>;

/// The durable store: a pool of connections to SQLite or PostgreSQL. Cheap to clone (the
/// pool is shared). Implements [`idp_core::store::DoctorDirectory`],
/// [`idp_core::store::ClientStore`], [`idp_core::store::KeyStore`],
/// [`idp_core::store::ConsentStore`], [`idp_core::store::RefreshTokenStore`] and
/// [`idp_core::store::SpStore`].
///
/// Every call runs its blocking diesel work on tokio's blocking thread pool, so it must be
/// awaited inside a tokio runtime.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    backend: Backend,
    url: RedactedUrl,
    /// The last audit record this process wrote or read (number, hash, time): the next
    /// append chains after it without reading it back; a number taken meanwhile by
    /// another process is a conflict, after which the tip is read again.
    audit_tip: std::sync::Arc<std::sync::Mutex<Option<(i64, String, i64)>>>,
    /// The audit writer's connection, kept between appends (see [`Database::run_kept`]).
    audit_conn: Kept,
}

/// A connection kept between uses by one sequential writer.
type Kept = std::sync::Arc<std::sync::Mutex<Option<r2d2::PooledConnection<Manager>>>>;

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects with the default [`DatabaseOptions`]. See [`Database::connect_with`].
    pub async fn connect(url: &str) -> Result<Database, Error> {
        Self::connect_with(url, &DatabaseOptions::default()).await
    }

    /// Connects to the database named by `url` and checks that one connection opens.
    ///
    /// - `sqlite://PATH`: a file, relative to the working directory (`sqlite://data/idp.db`)
    ///   or absolute (`sqlite:///var/lib/idp/idp.db`). The file and its parent directories
    ///   are created if missing. Every connection uses WAL, a 5 s busy timeout and foreign
    ///   keys.
    /// - `sqlite::memory:`: one in-memory database, private to this `Database` and lost
    ///   when it is dropped; the pool holds exactly one connection, forever.
    /// - `postgres://…` or `postgresql://…`: a libpq connection URL. A
    ///   `connect_timeout=10` parameter is added unless the URL has one.
    ///
    /// The schema is not touched: call [`Database::migrate`].
    pub async fn connect_with(url: &str, options: &DatabaseOptions) -> Result<Database, Error> {
        let redacted = RedactedUrl::new(url);
        let (target, backend) =
            parse_url(url).ok_or_else(|| Error::UnsupportedUrl(redacted.to_string()))?;

        let (max_size, min_idle, lifetime) = match &target {
            // One connection that is never recycled: recycling it would lose the database.
            Target::SqliteMemory => (1, Some(1), None),
            Target::SqliteFile(_) => (
                options.max_connections.unwrap_or(4),
                Some(1),
                Some(Duration::from_secs(30 * 60)),
            ),
            // No idle minimum: r2d2 refills one on its own threads after every checkout,
            // and a refill still connecting when the process exits races libpq's OpenSSL
            // against its exit-time cleanup (a crash at the end of a CLI command).
            // Connections are made when a query needs one and kept while used.
            Target::Postgres(_) => (
                options.max_connections.unwrap_or(10),
                Some(0),
                Some(Duration::from_secs(30 * 60)),
            ),
        };
        let builder = Pool::builder()
            .max_size(max_size.max(1))
            .min_idle(min_idle)
            .max_lifetime(lifetime)
            .idle_timeout(lifetime.map(|_| Duration::from_secs(10 * 60)))
            .connection_timeout(options.connection_timeout)
            // Each connection is checked (`is_valid`) before use: a connection the server
            // ended (a restart, a failover) is replaced instead of failing a request, and
            // diesel cannot tell a dead socket otherwise (tests/pool.rs).
            .test_on_check_out(true)
            .error_handler(Box::new(TracingErrorHandler));
        let manager = Manager {
            target: target.clone(),
            url: redacted.clone(),
        };

        let connect_error = |reason: String| Error::Connect {
            endpoint: redacted.to_string(),
            reason: redacted.scrub(reason.trim_end()),
        };
        let pool = tokio::task::spawn_blocking(move || {
            if let Target::SqliteFile(path) = &target
                && let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create directory {}: {e}", parent.display()))?;
            }
            // One connection up front: a wrong URL or an unreachable server fails here at
            // once, with the driver's reason, instead of after the pool's timeout.
            r2d2::ManageConnection::connect(&manager).map_err(|e| e.to_string())?;
            builder.build(manager).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| connect_error(e.to_string()))?
        .map_err(connect_error)?;

        tracing::info!(url = %redacted, ?backend, "database connected");
        Ok(Database {
            pool,
            backend,
            url: redacted,
            audit_tip: std::sync::Arc::default(),
            audit_conn: std::sync::Arc::default(),
        })
    }

    /// Which backend this database is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations of this backend that have not been applied yet, in
    /// one transaction, and returns their names (`2026-11-24-000001_doctors`) in order.
    /// Running it again returns an empty list.
    ///
    /// Concurrent callers are serialised (a PostgreSQL advisory lock; an immediate
    /// transaction on SQLite), so several instances may start at once.
    pub async fn migrate(&self) -> Result<Vec<String>, Error> {
        let url = self.url.clone();
        let fail = |reason: String| Error::Migrate {
            endpoint: url.to_string(),
            reason: url.scrub(&reason),
        };
        let applied = self
            .run(|conn| {
                write_transaction(conn, |conn| {
                    let migrations = match conn {
                        AnyConnection::Sqlite(_) => SQLITE_MIGRATIONS,
                        AnyConnection::Postgresql(_) => {
                            conn.batch_execute(&format!(
                                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                            ))
                            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                            POSTGRES_MIGRATIONS
                        }
                    };
                    apply_migrations(conn, migrations).map_err(StoreError::Unavailable)
                })
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        for name in &applied {
            tracing::info!(url = %self.url, migration = %name, "migration applied");
        }
        Ok(applied)
    }

    /// Runs blocking diesel work on a pooled connection, off the async workers.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| {
                StoreError::Unavailable(format!(
                    "no database connection ({url}): {}",
                    url.scrub(&e.to_string())
                ))
            })?;
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("database task failed: {e}")))?
    }

    /// [`Database::run`] on the connection `kept` holds: checked when taken from the pool,
    /// then reused without a check while its uses succeed (a sequential writer saves the
    /// check's round trip on every use); a use that fails gives it back to the pool, which
    /// checks it before anyone uses it again.
    async fn run_kept<T, F>(&self, kept: &Kept, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let url = self.url.clone();
        let kept = kept.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = kept
                .lock()
                .map_err(|_| StoreError::Unavailable("kept connection lock poisoned".into()))?;
            let mut conn = match slot.take() {
                Some(conn) => conn,
                None => pool.get().map_err(|e| {
                    StoreError::Unavailable(format!(
                        "no database connection ({url}): {}",
                        url.scrub(&e.to_string())
                    ))
                })?,
            };
            let outcome = work(&mut conn);
            if outcome.is_ok() {
                *slot = Some(conn);
            }
            outcome
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("database task failed: {e}")))?
    }
}

/// A stored unix timestamp read back, or [`StoreError::Corrupt`] naming what holds it
/// (`what` is for logs: a table, a key and a column, never a secret).
pub(crate) fn stored_time(
    what: impl fmt::Display,
    value: i64,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} holds {value}, not a unix timestamp")))
}

/// Parses a connection URL into a target, or `None` if no backend matches.
fn parse_url(url: &str) -> Option<(Target, Backend)> {
    if url == "sqlite::memory:" {
        return Some((Target::SqliteMemory, Backend::Sqlite));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        return Some((Target::SqliteFile(path.to_owned()), Backend::Sqlite));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let url = if url.contains("connect_timeout=") {
            url.to_owned()
        } else if url.contains('?') {
            format!("{url}&connect_timeout=10")
        } else {
            format!("{url}?connect_timeout=10")
        };
        return Some((Target::Postgres(url), Backend::Postgres));
    }
    None
}

fn apply_migrations(
    conn: &mut AnyConnection,
    migrations: EmbeddedMigrations,
) -> Result<Vec<String>, String> {
    let pending = conn
        .pending_migrations(migrations)
        .map_err(|e| e.to_string())?;
    let mut applied = Vec::with_capacity(pending.len());
    for migration in pending {
        let name = migration.name().to_string();
        conn.run_migration(&migration)
            .map_err(|e| format!("{name}: {e}"))?;
        applied.push(name);
    }
    Ok(applied)
}

/// Runs `work` in a write transaction: committed if it returns `Ok`, rolled back
/// otherwise. On SQLite the transaction is `BEGIN IMMEDIATE`: it takes the write lock at
/// the start (waiting on the busy timeout), so a read-then-write transaction cannot fail
/// with `SQLITE_BUSY` when it upgrades its lock.
pub(crate) fn write_transaction<T>(
    conn: &mut AnyConnection,
    work: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let begun = match conn {
        AnyConnection::Sqlite(inner) => {
            AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")
        }
        AnyConnection::Postgresql(_) => AnyConnection::begin_transaction(conn),
    };
    begun.map_err(doctors::db_error)?;
    match work(conn) {
        Ok(value) => match AnyConnection::commit_transaction(conn) {
            Ok(()) => Ok(value),
            Err(error) => {
                // A failed COMMIT may leave the transaction open; close it so the pooled
                // connection is clean (or is discarded as broken).
                let _ = AnyConnection::rollback_transaction(conn);
                Err(doctors::db_error(error))
            }
        },
        Err(error) => {
            if let Err(rollback) = AnyConnection::rollback_transaction(conn) {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, Target, parse_url};

    #[test]
    fn urls_select_the_backend() {
        assert!(matches!(
            parse_url("sqlite::memory:"),
            Some((Target::SqliteMemory, Backend::Sqlite))
        ));
        assert!(matches!(
            parse_url("sqlite://data/idp.db"),
            Some((Target::SqliteFile(p), Backend::Sqlite)) if p == "data/idp.db"
        ));
        assert!(matches!(
            parse_url("sqlite:///var/lib/idp.db"),
            Some((Target::SqliteFile(p), Backend::Sqlite)) if p == "/var/lib/idp.db"
        ));
        assert!(matches!(
            parse_url("postgres://u@h/db"),
            Some((Target::Postgres(u), Backend::Postgres)) if u == "postgres://u@h/db?connect_timeout=10"
        ));
        assert!(matches!(
            parse_url("postgresql://u@h/db?sslmode=require&connect_timeout=3"),
            Some((Target::Postgres(u), Backend::Postgres)) if u.ends_with("connect_timeout=3")
        ));
        for bad in ["sqlite://", "mysql://h/db", "memory", "", "sqlite:idp.db"] {
            assert!(parse_url(bad).is_none(), "{bad}");
        }
    }
}
