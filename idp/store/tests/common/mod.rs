//! Helpers shared by the integration tests: service URLs from the environment, unique
//! names, a throw-away PostgreSQL database.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The URL of a test service from `var`. When unset: with `CI` set, the test fails (CI
/// must run every tier); otherwise it prints a notice and the caller skips.
pub fn service_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set, but CI is: the {what} tests must run in CI \
                 (e.g. {var}={example})",
                example = match var {
                    "IDP_TEST_POSTGRES_URL" => "postgres://postgres@127.0.0.1:5432/test",
                    _ => "redis://127.0.0.1:6379",
                }
            );
            eprintln!("SKIPPED: the {what} tests need {var} (a {what} URL); it is not set");
            None
        }
    }
}

/// 16 hex digits unlikely to repeat across processes and calls.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", hasher.finish())
}

/// `url` with its database (path) replaced by `database`; the query string is kept.
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").expect("a postgres:// URL") + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map(|q| &rest[authority_end + q..])
        .unwrap_or_default();
    format!(
        "{}{}/{database}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    )
}

/// A fresh PostgreSQL database `idp_test_<random>`, dropped (with its connections) when
/// this value is dropped. Declare it before the `Database` that uses it, so it drops last.
pub struct PgTestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgTestDatabase {
    /// The database's name.
    #[allow(dead_code)]
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn create(admin_url: &str) -> Self {
        let name = format!("idp_test_{}", unique_suffix());
        let mut admin = PgConnection::establish(admin_url)
            .expect("connecting to IDP_TEST_POSTGRES_URL (is PostgreSQL running?)");
        // A linguistic (ICU en-US) default collation where the server has one, so that
        // tests notice a column that relies on the database's default ordering; a plain
        // database otherwise.
        let icu = format!(
            "CREATE DATABASE {name} TEMPLATE template0 \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        );
        if admin.batch_execute(&icu).is_err() {
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("creating the test database");
        }
        let url = with_database(admin_url, &name);
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgTestDatabase {
    fn drop(&mut self) {
        match PgConnection::establish(&self.admin_url) {
            Ok(mut admin) => {
                if let Err(e) = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )) {
                    eprintln!("could not drop test database {}: {e}", self.name);
                }
            }
            Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
        }
    }
}

#[test]
fn database_is_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/test?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    assert_eq!(with_database("postgres://h?a=b", "x"), "postgres://h/x?a=b");
}

/// Reverts the migrations newer than `version` and `version` itself (down.sql, newest
/// first), then applies them all again: each migration's down.sql must undo it.
pub fn revert_through_and_reapply<C>(
    conn: &mut C,
    migrations: fn() -> diesel_migrations::EmbeddedMigrations,
    version: &str,
) where
    C: diesel_migrations::MigrationHarness<C::Backend> + Connection,
{
    let mut reverted = 0;
    loop {
        let last = conn
            .revert_last_migration(migrations())
            .expect("revert a migration");
        reverted += 1;
        if last.to_string() == version {
            break;
        }
        assert!(reverted < 100, "{version} is not a migration");
    }
    let reapplied = conn
        .run_pending_migrations(migrations())
        .expect("apply them again");
    assert_eq!(reapplied.len(), reverted);
}

/// Every migration, in order: what `Database::migrate` applies to a fresh database.
pub const MIGRATIONS: &[&str] = &[
    "2026-11-24-000001_doctors",
    "2026-11-24-000002_oidc",
    "2026-11-24-000003_saml",
    "2026-11-25-000004_disclosure",
    "2026-11-25-000005_audit",
    "2026-11-25-000006_audit_retention",
];

/// A doctor record (日医 太郎) provisioned for `holder_id` at `at`: its ID.
pub async fn doctor_at(
    db: &idp_store::Database,
    holder_id: &str,
    at: time::OffsetDateTime,
) -> idp_core::doctor::DoctorId {
    use idp_core::store::DoctorDirectory as _;
    db.provision(
        &idp_core::doctor::DoctorProfile {
            hpki_holder_id: holder_id.to_owned(),
            family_name: "日医".to_owned(),
            given_name: "太郎".to_owned(),
            ..idp_core::doctor::DoctorProfile::default()
        },
        at,
    )
    .await
    .expect("provision")
    .id
}

/// The database behind the store's back: to read columns the traits do not return, to
/// corrupt or tamper with rows and to make statements fail.
pub enum Raw {
    Sqlite(String),
    Postgres(String),
}

#[derive(diesel::QueryableByName)]
struct Scalar {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    v: Option<i64>,
}

impl Raw {
    /// The database's URL, for another [`idp_store::Database`] on it.
    #[allow(dead_code)]
    pub fn url(&self) -> String {
        match self {
            Raw::Sqlite(path) => format!("sqlite://{path}"),
            Raw::Postgres(url) => url.clone(),
        }
    }

    /// Runs `sql`; the database's error as text.
    pub fn try_exec(&self, sql: &str) -> Result<(), String> {
        match self {
            Raw::Sqlite(path) => diesel::SqliteConnection::establish(path)
                .expect("raw sqlite")
                .batch_execute(sql),
            Raw::Postgres(url) => PgConnection::establish(url)
                .expect("raw postgres")
                .batch_execute(sql),
        }
        .map_err(|e| e.to_string())
    }

    /// Runs `sql`, which must succeed.
    pub fn exec(&self, sql: &str) {
        self.try_exec(sql).expect("raw sql");
    }

    /// The BIGINT (or NULL) that `sql` selects as `v`.
    pub fn scalar(&self, sql: &str) -> Option<i64> {
        use diesel::RunQueryDsl as _;
        let query = diesel::sql_query(sql);
        match self {
            Raw::Sqlite(path) => query
                .get_result::<Scalar>(&mut diesel::SqliteConnection::establish(path).expect("raw")),
            Raw::Postgres(url) => {
                query.get_result::<Scalar>(&mut PgConnection::establish(url).expect("raw"))
            }
        }
        .expect("raw query")
        .v
    }
}
