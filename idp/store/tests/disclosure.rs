//! The doctors' disclosure settings (`DisclosureSettingsStore`) and the consent's policy
//! version, against real databases: SQLite in memory and PostgreSQL
//! (`IDP_TEST_POSTGRES_URL`, a fresh database per test).

mod common;

use idp_core::disclosure::{Audience, DisclosureSettings, Item, Setting};
use idp_core::doctor::DoctorId;
use idp_core::store::{DisclosureSettingsStore, StoreError};
use idp_store::Database;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-24 09:00:00 UTC);

async fn doctor(db: &Database, holder_id: &str) -> DoctorId {
    common::doctor_at(db, holder_id, T0).await
}

fn setting(item: Item, audience: Audience, allowed: bool) -> Setting {
    Setting {
        item,
        audience,
        allowed,
    }
}

async fn settings_round_trip(db: Database) {
    db.migrate().await.expect("migrate");
    let taro = doctor(&db, "JPHPKI-00000001").await;
    let hanako = doctor(&db, "JPHPKI-00000002").await;
    // Nothing set: the defaults.
    assert_eq!(
        db.settings_of(&taro).await.expect("settings"),
        DisclosureSettings::default()
    );
    let changes = [
        setting(Item::Email, Audience::RegionalNetwork, false),
        setting(Item::Address, Audience::ThirdParty, true),
    ];
    db.put_settings(&taro, &changes, T0).await.expect("put");
    let read = db.settings_of(&taro).await.expect("settings");
    assert_eq!(read, DisclosureSettings::from_settings(changes));
    assert!(!read.allows(Item::Email, Audience::RegionalNetwork));
    assert!(
        read.allows(Item::Email, Audience::JmaService),
        "other audiences keep theirs"
    );
    // Changing a setting again replaces it; another doctor's are untouched.
    db.put_settings(
        &taro,
        &[setting(Item::Email, Audience::RegionalNetwork, true)],
        T0,
    )
    .await
    .expect("put again");
    assert!(
        db.settings_of(&taro)
            .await
            .expect("settings")
            .allows(Item::Email, Audience::RegionalNetwork)
    );
    assert_eq!(
        db.settings_of(&hanako).await.expect("settings"),
        DisclosureSettings::default()
    );
    // An unknown doctor: a conflict, and nothing written.
    let ghost = DoctorId::from_stored("no-such-doctor".into());
    let e = db
        .put_settings(&ghost, &changes, T0)
        .await
        .expect_err("foreign key");
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert_eq!(
        db.settings_of(&ghost).await.expect("settings"),
        DisclosureSettings::default()
    );
}

#[tokio::test]
async fn sqlite_settings_round_trip() {
    settings_round_trip(Database::connect("sqlite::memory:").await.expect("connect")).await;
}

#[tokio::test]
async fn postgres_settings_round_trip() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    settings_round_trip(Database::connect(scratch.url()).await.expect("connect")).await;
}
