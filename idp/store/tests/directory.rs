//! The `DoctorDirectory` suite, run against real databases: an SQLite file, SQLite in
//! memory, and PostgreSQL (`IDP_TEST_POSTGRES_URL`, a fresh database per test).

mod common;

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use idp_core::doctor::{Doctor, DoctorId, DoctorOrigin, DoctorProfile, Gender};
use idp_core::store::{DoctorDirectory, ImportReport, StoreError};
use idp_store::{Backend, Database};
use time::OffsetDateTime;
use time::macros::{date, datetime};

/// Runs SQL on the database behind the store's back (to corrupt rows).
type RawSql<'a> = &'a dyn Fn(&str);

fn profile(holder_id: &str, family_name: &str, given_name: &str) -> DoctorProfile {
    DoctorProfile {
        hpki_holder_id: holder_id.to_owned(),
        family_name: family_name.to_owned(),
        given_name: given_name.to_owned(),
        ..DoctorProfile::default()
    }
}

/// A record with every attribute set, in Japanese where the card would be.
fn nichii_taro() -> DoctorProfile {
    DoctorProfile {
        hpki_holder_id: "JPHPKI-00000001".to_owned(),
        family_name: "日医".to_owned(),
        given_name: "太郎".to_owned(),
        family_name_kana: Some("ニチイ".to_owned()),
        given_name_kana: Some("タロウ".to_owned()),
        family_name_latin: Some("NICHII".to_owned()),
        given_name_latin: Some("TARO".to_owned()),
        gender: Gender::Male,
        birthdate: Some(date!(1970 - 01 - 01)),
        email: Some("taro@example.jp".to_owned()),
        postal_code: Some("700-0000".to_owned()),
        prefecture: Some("岡山県".to_owned()),
        address: Some("岡山市北区丸の内１丁目１−１　医師会館３階".to_owned()),
        jma_member_id: Some("JMA-123456".to_owned()),
        jma_member: true,
        medical_association_prefecture: Some("岡山県医師会".to_owned()),
        medical_association_district: Some("岡山市医師会".to_owned()),
        doctor_registration_number: Some("456789".to_owned()),
        doctor_registration_date: Some(date!(1996 - 05 - 10)),
        hpki_role: Some("Medical Doctor".to_owned()),
    }
}

fn at_second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 is a valid nanosecond")
}

async fn holder(db: &Database, holder_id: &str) -> Doctor {
    db.find_by_holder(holder_id)
        .await
        .expect("find_by_holder")
        .unwrap_or_else(|| panic!("{holder_id} is stored"))
}

/// The whole `DoctorDirectory` contract, on a fresh (unmigrated) database.
async fn suite(db: Database, raw: Option<RawSql<'_>>) {
    // Migrations: applied once, then a no-op.
    assert_eq!(
        db.migrate().await.expect("first migrate"),
        common::MIGRATIONS
    );
    assert_eq!(
        db.migrate().await.expect("second migrate"),
        Vec::<String>::new()
    );
    db.ping().await.expect("ping");
    assert!(db.list().await.expect("list").is_empty());

    // Provision, then find by holder and by ID; Japanese text round-trips.
    let t0 = datetime!(2026-11-24 09:00:00.750 UTC);
    let taro = nichii_taro();
    let provisioned = db.provision(&taro, t0).await.expect("provision");
    assert_eq!(provisioned.profile, taro);
    assert_eq!(provisioned.profile.full_name(), "日医\u{3000}太郎");
    assert_eq!(provisioned.origin, DoctorOrigin::Provisioned);
    assert_eq!(provisioned.created_at, at_second(t0));
    assert_eq!(provisioned.updated_at, at_second(t0));
    assert_eq!(provisioned.last_login_at, None);
    assert_eq!(holder(&db, &taro.hpki_holder_id).await, provisioned);
    assert_eq!(
        db.find(&provisioned.id).await.expect("find"),
        Some(provisioned.clone())
    );
    assert_eq!(
        db.find_by_holder("JPHPKI-absent").await.expect("find"),
        None
    );
    assert_eq!(db.find(&DoctorId::generate()).await.expect("find"), None);

    // The holder ID is bound once.
    let again = db
        .provision(&profile(&taro.hpki_holder_id, "別人", "花子"), t0)
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(holder(&db, &taro.hpki_holder_id).await, provisioned);

    // Import: inserts, then updates by holder ID (every column, NULLs included).
    let t1 = datetime!(2026-11-25 10:00:00 UTC);
    let mut hanako = profile("JPHPKI-00000002", "医師", "花子");
    hanako.gender = Gender::Female;
    hanako.email = Some("hanako@example.jp".to_owned());
    hanako.birthdate = Some(date!(1985 - 12 - 31));
    let jiro = profile("JPHPKI-00000003", "山田", "次郎");
    assert_eq!(
        db.import(&[hanako.clone(), jiro.clone()], t1)
            .await
            .expect("import"),
        ImportReport {
            inserted: 2,
            updated: 0
        }
    );
    let hanako_stored = holder(&db, &hanako.hpki_holder_id).await;
    assert_eq!(hanako_stored.profile, hanako);
    assert_eq!(hanako_stored.origin, DoctorOrigin::Imported);

    let t2 = datetime!(2026-11-26 11:00:00 UTC);
    let mut hanako_moved = hanako.clone();
    hanako_moved.email = None;
    hanako_moved.birthdate = None;
    hanako_moved.prefecture = Some("東京都".to_owned());
    let mut taro_updated = taro.clone();
    taro_updated.jma_member = false;
    taro_updated.hpki_role = None;
    let saburo = profile("JPHPKI-00000004", "佐藤", "三郎");
    assert_eq!(
        db.import(
            &[hanako_moved.clone(), saburo.clone(), taro_updated.clone()],
            t2
        )
        .await
        .expect("second import"),
        ImportReport {
            inserted: 1,
            updated: 2
        }
    );
    let hanako_after = holder(&db, &hanako.hpki_holder_id).await;
    assert_eq!(hanako_after.profile, hanako_moved);
    assert_eq!(hanako_after.id, hanako_stored.id, "an update keeps the ID");
    assert_eq!(hanako_after.created_at, t1);
    assert_eq!(hanako_after.updated_at, t2);
    let taro_after = holder(&db, &taro.hpki_holder_id).await;
    assert_eq!(taro_after.profile, taro_updated);
    assert_eq!(
        taro_after.origin,
        DoctorOrigin::Provisioned,
        "an import keeps how the record came to exist"
    );
    assert_eq!(holder(&db, &jiro.hpki_holder_id).await.updated_at, t1);

    // All or nothing: the third profile violates a constraint (empty holder ID), so
    // neither the insert nor the update before it is stored.
    let t3 = datetime!(2026-11-27 12:00:00 UTC);
    let mut jiro_renamed = jiro.clone();
    jiro_renamed.family_name = "鈴木".to_owned();
    let failed = db
        .import(
            &[
                profile("JPHPKI-00000005", "新規", "五郎"),
                jiro_renamed,
                profile("", "空", "欄"),
            ],
            t3,
        )
        .await;
    assert!(matches!(failed, Err(StoreError::Conflict(_))), "{failed:?}");
    assert_eq!(
        db.find_by_holder("JPHPKI-00000005").await.expect("find"),
        None
    );
    assert_eq!(holder(&db, &jiro.hpki_holder_id).await.profile, jiro);
    // A holder ID twice in one import is refused as a whole too.
    let doubled = db
        .import(
            &[
                profile("JPHPKI-00000006", "重複", "一"),
                profile("JPHPKI-00000006", "重複", "二"),
            ],
            t3,
        )
        .await;
    assert!(
        matches!(doubled, Err(StoreError::Conflict(_))),
        "{doubled:?}"
    );
    assert_eq!(
        db.find_by_holder("JPHPKI-00000006").await.expect("find"),
        None
    );
    assert_eq!(db.list().await.expect("list").len(), 4);

    // record_login.
    let t4 = datetime!(2026-11-28 08:30:15.999 UTC);
    db.record_login(&provisioned.id, t4)
        .await
        .expect("record_login");
    let logged_in = holder(&db, &taro.hpki_holder_id).await;
    assert_eq!(logged_in.last_login_at, Some(at_second(t4)));
    assert_eq!(logged_in.updated_at, t2, "a login is not an update");
    let unknown = db.record_login(&DoctorId::generate(), t4).await;
    assert!(
        matches!(unknown, Err(StoreError::Conflict(_))),
        "{unknown:?}"
    );

    // list: ordered by holder ID, in code point order on both backends (upper case
    // before lower case, ASCII before kana).
    let odd = ["b-2", "B-10", "a-1", "ｈ-1", "Z-9", "JPHPKI-00000000"];
    db.import(
        &odd.iter()
            .map(|h| profile(h, "順序", "確認"))
            .collect::<Vec<_>>(),
        t4,
    )
    .await
    .expect("import for ordering");
    let listed: Vec<String> = db
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.profile.hpki_holder_id)
        .collect();
    let mut expected = listed.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(listed.len(), 4 + odd.len());
    assert_eq!(listed.first().map(String::as_str), Some("B-10"));
    assert_eq!(listed.last().map(String::as_str), Some("ｈ-1"));

    // Concurrency: one holder provisioned by 10 callers at once is bound exactly once;
    // 16 different holders all succeed.
    let db = Arc::new(db);
    let same = (0..10).map(|_| {
        let db = Arc::clone(&db);
        tokio::spawn(async move {
            db.provision(&profile("JPHPKI-RACE", "競争", "一"), t4)
                .await
        })
    });
    let mut won = 0;
    for task in same.collect::<Vec<_>>() {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let distinct: Vec<_> = (0..16)
        .map(|i| {
            let db = Arc::clone(&db);
            tokio::spawn(async move {
                db.provision(&profile(&format!("JPHPKI-PAR-{i:02}"), "並行", "太"), t4)
                    .await
            })
        })
        .collect();
    for task in distinct {
        task.await.expect("task").expect("distinct provisioning");
    }

    // Corrupt stored values are errors, not panics.
    if let Some(raw) = raw {
        raw("UPDATE doctors SET birthdate = '1970/01/01' WHERE hpki_holder_id = 'JPHPKI-00000003'");
        let corrupt = db.find_by_holder("JPHPKI-00000003").await;
        assert!(
            matches!(corrupt, Err(StoreError::Corrupt(_))),
            "{corrupt:?}"
        );
        let listed = db.list().await;
        assert!(matches!(listed, Err(StoreError::Corrupt(_))), "{listed:?}");
        raw(
            "UPDATE doctors SET birthdate = NULL, doctor_registration_date = '2024-02-30' \
             WHERE hpki_holder_id = 'JPHPKI-00000003'",
        );
        let corrupt = db.find_by_holder("JPHPKI-00000003").await;
        assert!(
            matches!(corrupt, Err(StoreError::Corrupt(_))),
            "{corrupt:?}"
        );
        // Other records still read.
        holder(&db, &taro.hpki_holder_id).await;
    }
}

#[tokio::test]
async fn sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/dir/idp.db");
    let url = format!("sqlite://{}", path.display());
    let db = Database::connect(&url).await.expect("connect");
    assert_eq!(db.backend(), Backend::Sqlite);
    assert!(path.exists(), "the file and its directories are created");

    let raw_path = path.to_str().expect("UTF-8 temp path").to_owned();
    let raw = move |sql: &str| {
        let mut conn = SqliteConnection::establish(&raw_path).expect("raw sqlite");
        conn.batch_execute(sql).expect("raw sql");
    };
    suite(db, Some(&raw)).await;

    // Every connection put the file in WAL mode.
    #[derive(QueryableByName)]
    struct JournalMode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8")).expect("raw");
    let mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result::<JournalMode>(&mut conn)
        .expect("journal mode");
    assert_eq!(mode.journal_mode, "wal");
}

#[tokio::test]
async fn sqlite_file_corrupt_gender() {
    // Only SQLite can be told to ignore the CHECK constraint on gender.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    db.provision(
        &profile("JPHPKI-1", "日医", "太郎"),
        datetime!(2026-11-24 0:00 UTC),
    )
    .await
    .expect("provision");
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8")).expect("raw");
    conn.batch_execute(
        "PRAGMA ignore_check_constraints = ON; \
         UPDATE doctors SET gender = 'M' WHERE hpki_holder_id = 'JPHPKI-1';",
    )
    .expect("raw sql");
    let corrupt = db.find_by_holder("JPHPKI-1").await;
    assert!(
        matches!(corrupt, Err(StoreError::Corrupt(_))),
        "{corrupt:?}"
    );
}

#[tokio::test]
async fn sqlite_memory() {
    let db = Database::connect("sqlite::memory:").await.expect("connect");
    assert_eq!(db.backend(), Backend::Sqlite);
    suite(db, None).await;
}

#[tokio::test]
async fn postgres() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    assert_eq!(db.backend(), Backend::Postgres);
    let raw_url = scratch.url().to_owned();
    let raw = move |sql: &str| {
        let mut conn = PgConnection::establish(&raw_url).expect("raw postgres");
        conn.batch_execute(sql).expect("raw sql");
    };
    suite(db, Some(&raw)).await;
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    for url in [
        "postgres://idp:s3cret-pw@127.0.0.1:1/idp",
        "postgresql://127.0.0.1:1/idp?user=idp&password=s3cret-pw",
    ] {
        let error = Database::connect(url)
            .await
            .expect_err("nothing listens on port 1");
        let shown = format!("{error} {error:?}");
        eprintln!("{error}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
    }
    let error = Database::connect("mysql://root:s3cret-pw@db/idp")
        .await
        .expect_err("unsupported");
    assert!(matches!(error, idp_store::Error::UnsupportedUrl(_)));
    assert!(!format!("{error} {error:?}").contains("s3cret-pw"));
}
