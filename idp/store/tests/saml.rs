//! The SAML store (`SpStore`) of `Database`, run against real databases: SQLite in
//! memory, an SQLite file, and PostgreSQL (`IDP_TEST_POSTGRES_URL`, a fresh database per
//! test).

mod common;

use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use idp_core::doctor::DoctorId;
use idp_core::store::{Consent, ConsentStore, DoctorDirectory, SpRecord, SpStore, StoreError};
use idp_store::Database;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use common::Raw;

impl Raw {
    /// Makes every `DELETE FROM saml_sps` fail (a trigger), or lets it succeed again.
    fn refuse_sp_deletes(&self, refuse: bool) {
        let sql = match (self, refuse) {
            (Raw::Sqlite(_), true) => {
                "CREATE TRIGGER saml_sps_refuse BEFORE DELETE ON saml_sps \
                 BEGIN SELECT RAISE(ABORT, 'deletion refused by the test'); END;"
            }
            (Raw::Sqlite(_), false) => "DROP TRIGGER saml_sps_refuse;",
            (Raw::Postgres(_), true) => {
                "CREATE FUNCTION saml_sps_refuse() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'deletion refused by the test'; END $$; \
                 CREATE TRIGGER saml_sps_refuse BEFORE DELETE ON saml_sps \
                 FOR EACH ROW EXECUTE FUNCTION saml_sps_refuse();"
            }
            (Raw::Postgres(_), false) => {
                "DROP TRIGGER saml_sps_refuse ON saml_sps; DROP FUNCTION saml_sps_refuse();"
            }
        };
        self.exec(sql);
    }
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

const T0: OffsetDateTime = datetime!(2026-11-24 09:00:00 UTC);

fn metadata(entity_id: &str, acs: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#
    )
}

fn record(entity_id: &str, fetched_at: OffsetDateTime) -> SpRecord {
    SpRecord {
        entity_id: entity_id.to_owned(),
        metadata: metadata(entity_id, "https://sp.example/acs"),
        settings: r#"{"display_name":"晴れやかネット","attributes":["family_name"]}"#.to_owned(),
        fetched_at,
    }
}

async fn doctor(db: &Database, holder_id: &str) -> DoctorId {
    common::doctor_at(db, holder_id, T0).await
}

fn consent(doctor: &DoctorId, client_id: &str) -> Consent {
    Consent {
        doctor_id: doctor.clone(),
        client_id: client_id.to_owned(),
        scopes: vec!["openid".into()],
        claims: vec!["family_name".into(), "given_name".into()],
        granted_at: T0,
        policy_version: None,
    }
}

async fn listed(db: &Database) -> Vec<String> {
    db.sps()
        .await
        .expect("sps")
        .into_iter()
        .map(|sp| sp.entity_id)
        .collect()
}

/// The whole contract, on a fresh (unmigrated) database.
async fn suite(db: Database, raw: Option<&Raw>) {
    assert_eq!(db.migrate().await.expect("migrate"), common::MIGRATIONS);
    let taro = doctor(&db, "JPHPKI-00000001").await;
    let hanako = doctor(&db, "JPHPKI-00000002").await;
    put_get_list(&db, raw).await;
    refused(&db).await;
    remove(&db, &taro, &hanako, raw).await;
}

async fn put_get_list(db: &Database, raw: Option<&Raw>) {
    assert!(db.sps().await.expect("sps").is_empty());
    assert_eq!(db.sp("https://a.example/sp").await.expect("sp"), None);

    // Byte (code point) order, whatever the database's collation: "B" < "a" < "b" < "ä".
    let ids = [
        "https://b.example/sp",
        "urn:ärzte",
        "https://a.example/sp",
        "https://B.example/sp",
        "urn:Zahn",
    ];
    for id in ids {
        db.put_sp(&record(id, T0), T0).await.expect("put_sp");
    }
    assert_eq!(
        listed(db).await,
        [
            "https://B.example/sp",
            "https://a.example/sp",
            "https://b.example/sp",
            "urn:Zahn",
            "urn:ärzte",
        ]
    );
    assert_eq!(
        db.sp("https://a.example/sp").await.expect("sp"),
        Some(record("https://a.example/sp", T0))
    );
    // Lookups are exact: no case folding.
    assert_eq!(
        db.sp("https://B.example/sp").await.expect("sp"),
        Some(record("https://B.example/sp", T0))
    );
    assert_eq!(db.sp("https://A.example/sp").await.expect("sp"), None);

    // Upsert: metadata, settings and fetched_at replaced, one row, creation time kept.
    // fetched_at is kept to the second.
    let t1 = T0 + Duration::days(3);
    let replaced = SpRecord {
        entity_id: "https://a.example/sp".to_owned(),
        metadata: metadata("https://a.example/sp", "https://a.example/new-acs"),
        settings: r#"{"display_name":"新しい名前"}"#.to_owned(),
        fetched_at: t1 + Duration::milliseconds(750),
    };
    db.put_sp(&replaced, t1 + Duration::hours(1))
        .await
        .expect("put_sp again");
    assert_eq!(
        db.sp("https://a.example/sp").await.expect("sp"),
        Some(SpRecord {
            fetched_at: t1,
            ..replaced.clone()
        })
    );
    assert_eq!(db.sps().await.expect("sps").len(), ids.len());
    if let Some(raw) = raw {
        let column = |c: &str| {
            raw.scalar(&format!(
                "SELECT {c} AS v FROM saml_sps WHERE entity_id = 'https://a.example/sp'"
            ))
        };
        assert_eq!(column("COUNT(*)"), Some(1));
        assert_eq!(column("fetched_at"), Some(t1.unix_timestamp()));
        assert_eq!(column("created_at"), Some(T0.unix_timestamp()));
        assert_eq!(
            column("updated_at"),
            Some((t1 + Duration::hours(1)).unix_timestamp())
        );
    }
}

/// An empty entity ID is refused (the key's CHECK) and stores nothing.
async fn refused(db: &Database) {
    let before = listed(db).await;
    let empty = db.put_sp(&record("", T0), T0).await;
    assert!(matches!(empty, Err(StoreError::Conflict(_))), "{empty:?}");
    assert_eq!(listed(db).await, before);
    assert_eq!(db.sp("").await.expect("sp"), None);
}

async fn remove(db: &Database, taro: &DoctorId, hanako: &DoctorId, raw: Option<&Raw>) {
    let sp = "https://b.example/sp";
    let other_sp = "https://B.example/sp";
    for (doctor, client) in [
        (taro, sp),
        (hanako, sp),
        (taro, other_sp),
        (taro, "oidc-client"),
    ] {
        db.put_consent(&consent(doctor, client))
            .await
            .expect("put_consent");
    }

    // One transaction: when deleting the SP fails, its consents are still there.
    if let Some(raw) = raw {
        raw.refuse_sp_deletes(true);
        let failed = db.remove_sp(sp).await;
        assert!(failed.is_err(), "{failed:?}");
        raw.refuse_sp_deletes(false);
        assert!(db.sp(sp).await.expect("sp").is_some());
        assert!(db.consent(taro, sp).await.expect("consent").is_some());
        assert!(db.consent(hanako, sp).await.expect("consent").is_some());
    }

    // Removal takes the SP's consents (every doctor's) with it, and nothing else.
    assert!(db.remove_sp(sp).await.expect("remove_sp"));
    assert_eq!(db.sp(sp).await.expect("sp"), None);
    assert_eq!(db.consent(taro, sp).await.expect("consent"), None);
    assert_eq!(db.consent(hanako, sp).await.expect("consent"), None);
    assert!(db.consent(taro, other_sp).await.expect("consent").is_some());
    assert!(
        db.consent(taro, "oidc-client")
            .await
            .expect("consent")
            .is_some()
    );
    assert_eq!(
        listed(db).await,
        [
            "https://B.example/sp",
            "https://a.example/sp",
            "urn:Zahn",
            "urn:ärzte",
        ]
    );
    if let Some(raw) = raw {
        assert_eq!(
            raw.scalar(&format!(
                "SELECT COUNT(*) AS v FROM consents WHERE client_id = '{sp}'"
            )),
            Some(0)
        );
    }

    // Again: nothing left to remove.
    assert!(!db.remove_sp(sp).await.expect("remove_sp"));
    assert!(
        !db.remove_sp("urn:never-registered")
            .await
            .expect("remove_sp")
    );
    assert_eq!(db.sps().await.expect("sps").len(), 4);
}

#[tokio::test]
async fn sqlite_memory() {
    let db = Database::connect("sqlite::memory:").await.expect("connect");
    suite(db, None).await;
}

#[tokio::test]
async fn sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let raw = Raw::Sqlite(path.to_str().expect("UTF-8 temp path").to_owned());
    suite(db, Some(&raw)).await;
}

#[tokio::test]
async fn postgres() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    let raw = Raw::Postgres(scratch.url().to_owned());
    suite(db, Some(&raw)).await;
}

/// A stored `fetched_at` that is no timestamp is reported as corrupt, naming the SP.
async fn corrupt_rows(db: Database, raw: &Raw) {
    db.migrate().await.expect("migrate");
    db.put_sp(&record("urn:broken", T0), T0)
        .await
        .expect("put_sp");
    db.put_sp(&record("urn:fine", T0), T0)
        .await
        .expect("put_sp");
    raw.exec("UPDATE saml_sps SET fetched_at = 9000000000000000 WHERE entity_id = 'urn:broken'");
    let corrupt = db.sp("urn:broken").await;
    assert!(
        matches!(&corrupt, Err(StoreError::Corrupt(m)) if m.contains("urn:broken") && m.contains("fetched_at")),
        "{corrupt:?}"
    );
    let corrupt = db.sps().await;
    assert!(
        matches!(&corrupt, Err(StoreError::Corrupt(_))),
        "{corrupt:?}"
    );
    assert_eq!(
        db.sp("urn:fine").await.expect("sp"),
        Some(record("urn:fine", T0))
    );
}

#[tokio::test]
async fn sqlite_file_corrupt_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let raw = Raw::Sqlite(path.to_str().expect("UTF-8 temp path").to_owned());
    corrupt_rows(db, &raw).await;
}

#[tokio::test]
async fn postgres_corrupt_rows() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    let raw = Raw::Postgres(scratch.url().to_owned());
    corrupt_rows(db, &raw).await;
}

async fn before_revert(db: &Database) -> DoctorId {
    db.migrate().await.expect("migrate");
    let taro = doctor(db, "JPHPKI-00000001").await;
    db.put_consent(&consent(&taro, "urn:sp"))
        .await
        .expect("put_consent");
    db.put_sp(&record("urn:sp", T0), T0).await.expect("put_sp");
    taro
}

async fn after_revert(db: &Database, taro: &DoctorId) {
    assert!(db.sps().await.expect("sps").is_empty());
    assert!(db.consent(taro, "urn:sp").await.expect("consent").is_some());
    assert!(db.find(taro).await.expect("find").is_some());
    db.put_sp(&record("urn:sp", T0), T0).await.expect("put_sp");
    assert_eq!(listed(db).await, ["urn:sp"]);
}

#[tokio::test]
async fn sqlite_file_migration_reverts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let taro = before_revert(&db).await;
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8")).expect("raw");
    common::revert_through_and_reapply(&mut conn, || SQLITE_MIGRATIONS, "20261124000003");
    after_revert(&db, &taro).await;
}

#[tokio::test]
async fn postgres_migration_reverts() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    let taro = before_revert(&db).await;
    let mut conn = PgConnection::establish(scratch.url()).expect("raw");
    common::revert_through_and_reapply(&mut conn, || POSTGRES_MIGRATIONS, "20261124000003");
    after_revert(&db, &taro).await;
}
