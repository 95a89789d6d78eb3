//! The OpenID Connect stores (`ClientStore`, `KeyStore`, `ConsentStore`,
//! `RefreshTokenStore`) of `Database`, run against real databases: SQLite in memory, an
//! SQLite file, and PostgreSQL (`IDP_TEST_POSTGRES_URL`, a fresh database per test).

mod common;

use std::sync::Arc;

use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use idp_core::doctor::DoctorId;
use idp_core::oidc::client::{ClientRegistration, SigningAlg, TokenEndpointAuthMethod};
use idp_core::store::{
    ClientStore, Consent, ConsentStore, DoctorDirectory, KeyStore, RefreshRecord,
    RefreshTokenStore, Rotation, StoreError, StoredKey,
};
use idp_store::Database;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;

use common::Raw;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

const T0: OffsetDateTime = datetime!(2026-11-24 09:00:00 UTC);

fn registration(client_id: &str, name: &str) -> ClientRegistration {
    let mut client =
        ClientRegistration::new(client_id, name, TokenEndpointAuthMethod::ClientSecretBasic);
    client.secret_digest =
        Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into());
    client.redirect_uris = vec![format!("https://{client_id}.example/cb")];
    client.allowed_scopes = vec!["openid".into(), "profile".into(), "offline_access".into()];
    client.sector = format!("{client_id}.example");
    client.refresh_tokens = true;
    client
}

/// A `private_key_jwt` client carrying a JWKS document (built through serde: the store
/// keeps the registration as JSON, so this is also the round trip under test).
fn jwks_client(client_id: &str) -> ClientRegistration {
    let mut value = serde_json::to_value(registration(client_id, "電子カルテ連携"))
        .expect("registration to JSON");
    value["auth_method"] = "private_key_jwt".into();
    value["secret_digest"] = serde_json::Value::Null;
    value["id_token_signed_response_alg"] = "ES256".into();
    value["subject_type"] = "public".into();
    value["backchannel_logout_uri"] = "https://rp.example/logout".into();
    value["jwks"] = serde_json::json!({
        "keys": [{
            "kty": "EC",
            "crv": "P-256",
            "kid": "rp-1",
            "use": "sig",
            "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }]
    });
    serde_json::from_value(value).expect("a registration with a JWKS")
}

async fn doctor(db: &Database, holder_id: &str) -> DoctorId {
    common::doctor_at(db, holder_id, T0).await
}

fn key(kid: &str, alg: SigningAlg, created_at: OffsetDateTime) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        alg,
        pkcs8_pem: format!(
            "-----BEGIN PRIVATE KEY-----\nsecret-of-{kid}\n-----END PRIVATE KEY-----\n"
        ),
        created_at,
        active_from: created_at + Duration::days(1),
    }
}

fn consent(doctor: &DoctorId, client_id: &str, scopes: &[&str], at: OffsetDateTime) -> Consent {
    Consent {
        doctor_id: doctor.clone(),
        client_id: client_id.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        claims: vec!["family_name".into(), "given_name".into()],
        granted_at: at,
        policy_version: Some("sha256:0123456789abcdef".into()),
    }
}

/// The first token of a family: live for an hour, the family for 30 days.
fn first_token(
    digest: &str,
    family_id: &str,
    client_id: &str,
    doctor: &DoctorId,
    issued_at: OffsetDateTime,
) -> RefreshRecord {
    RefreshRecord {
        token_digest: digest.to_owned(),
        family_id: family_id.to_owned(),
        client_id: client_id.to_owned(),
        doctor_id: doctor.clone(),
        grant: format!(r#"{{"scope":"openid offline_access","family":"{family_id}"}}"#),
        issued_at,
        expires_at: issued_at + Duration::hours(1),
        family_expires_at: issued_at + Duration::days(30),
    }
}

async fn live(db: &Database, digest: &str, now: OffsetDateTime) -> Option<RefreshRecord> {
    db.live_refresh(digest, now).await.expect("live_refresh")
}

async fn rotate(
    db: &Database,
    presented: &str,
    client_id: &str,
    next: &str,
    now: OffsetDateTime,
) -> Rotation {
    db.rotate_refresh(presented, client_id, next, now + Duration::hours(1), now)
        .await
        .expect("rotate_refresh")
}

/// Every contract, on a fresh (unmigrated) database.
async fn suite(db: Database, raw: Option<&Raw>) {
    assert_eq!(db.migrate().await.expect("migrate"), common::MIGRATIONS);
    let taro = doctor(&db, "JPHPKI-00000001").await;
    let hanako = doctor(&db, "JPHPKI-00000002").await;
    clients(&db, &taro, raw).await;
    keys(&db).await;
    consents(&db, &taro, &hanako).await;
    refresh_rotation(&db, &taro).await;
    refresh_revocation_and_prune(&db, &taro, &hanako).await;
}

async fn clients(db: &Database, taro: &DoctorId, raw: Option<&Raw>) {
    assert!(db.clients().await.expect("clients").is_empty());
    assert_eq!(db.client("hareyaka").await.expect("client"), None);

    // Code point order, whatever the database's collation ("Z" < "a" < "b" < "ä").
    let ids = ["b-portal", "ärzte", "a-karte", "Z-lab"];
    for id in ids {
        db.put_client(&registration(id, "晴れやかネット"), T0)
            .await
            .expect("put_client");
    }
    let rich = jwks_client("jwks-rp");
    db.put_client(&rich, T0).await.expect("put_client");
    assert_eq!(
        db.client("jwks-rp").await.expect("client"),
        Some(rich.clone())
    );
    let listed: Vec<String> = db
        .clients()
        .await
        .expect("clients")
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    assert_eq!(listed, ["Z-lab", "a-karte", "b-portal", "jwks-rp", "ärzte"]);

    // Upsert: the registration is replaced, its creation time kept.
    let mut renamed = registration("a-karte", "新しい名前");
    renamed
        .redirect_uris
        .push("https://a-karte.example/cb2".into());
    renamed.pre_approved = true;
    let t1 = T0 + Duration::days(3);
    db.put_client(&renamed, t1).await.expect("put_client");
    assert_eq!(db.client("a-karte").await.expect("client"), Some(renamed));
    assert_eq!(db.clients().await.expect("clients").len(), 5);
    if let Some(raw) = raw {
        let column = |c: &str| {
            raw.scalar(&format!(
                "SELECT {c} AS v FROM oidc_clients WHERE client_id = 'a-karte'"
            ))
        };
        assert_eq!(column("created_at"), Some(T0.unix_timestamp()));
        assert_eq!(column("updated_at"), Some(t1.unix_timestamp()));
    }

    // Removal takes the client's consents and refresh tokens with it, and nothing else.
    db.put_consent(&consent(taro, "b-portal", &["openid"], T0))
        .await
        .expect("put_consent");
    db.put_consent(&consent(taro, "Z-lab", &["openid"], T0))
        .await
        .expect("put_consent");
    db.insert_refresh(&first_token("rt-b", "fam-b", "b-portal", taro, T0))
        .await
        .expect("insert_refresh");
    db.insert_refresh(&first_token("rt-z", "fam-z", "Z-lab", taro, T0))
        .await
        .expect("insert_refresh");
    assert!(db.remove_client("b-portal").await.expect("remove_client"));
    assert!(!db.remove_client("b-portal").await.expect("remove_client"));
    assert_eq!(db.client("b-portal").await.expect("client"), None);
    assert_eq!(db.consent(taro, "b-portal").await.expect("consent"), None);
    assert_eq!(live(db, "rt-b", T0).await, None);
    assert_eq!(
        rotate(db, "rt-b", "b-portal", "rt-b2", T0).await,
        Rotation::Invalid
    );
    if let Some(raw) = raw {
        assert_eq!(
            raw.scalar("SELECT COUNT(*) AS v FROM refresh_tokens WHERE client_id = 'b-portal'"),
            Some(0),
            "the rows are gone, not just revoked"
        );
    }
    assert!(db.consent(taro, "Z-lab").await.expect("consent").is_some());
    assert!(live(db, "rt-z", T0).await.is_some());
    assert_eq!(db.clients().await.expect("clients").len(), 4);
    assert!(!db.remove_client("never-registered").await.expect("remove"));

    // Clean up what later sections count.
    db.revoke_consent(taro, "Z-lab", T0).await.expect("revoke");
}

async fn keys(db: &Database) {
    assert!(db.signing_keys().await.expect("signing_keys").is_empty());
    let t1 = T0 + Duration::days(90);
    // Oldest first; within one second, by kid in code point order ("K" < "k").
    let newest = key("2026-b", SigningAlg::EdDSA, t1 + Duration::days(1));
    let lower = key("key-a", SigningAlg::PS256, t1);
    let upper = key("Key-B", SigningAlg::ES256, t1);
    let oldest = key("zz-oldest", SigningAlg::RS256, T0);
    for k in [&newest, &lower, &upper, &oldest] {
        db.add_signing_key(k).await.expect("add_signing_key");
    }
    assert_eq!(
        db.signing_keys().await.expect("signing_keys"),
        vec![oldest.clone(), upper.clone(), lower.clone(), newest.clone()]
    );

    // A duplicate kid is a conflict and replaces nothing; the error shows no key.
    let mut again = key("key-a", SigningAlg::RS256, T0);
    again.pkcs8_pem = "-----BEGIN PRIVATE KEY-----\nother\n-----END PRIVATE KEY-----\n".into();
    let duplicate = db.add_signing_key(&again).await;
    assert!(
        matches!(&duplicate, Err(StoreError::Conflict(m)) if !m.contains("PRIVATE KEY")),
        "{duplicate:?}"
    );
    assert_eq!(db.signing_keys().await.expect("signing_keys").len(), 4);
    assert!(
        db.signing_keys()
            .await
            .expect("signing_keys")
            .contains(&lower)
    );

    assert!(db.remove_signing_key("key-a").await.expect("remove"));
    assert!(!db.remove_signing_key("key-a").await.expect("remove"));
    assert_eq!(
        db.signing_keys().await.expect("signing_keys"),
        vec![oldest, upper, newest]
    );
}

async fn consents(db: &Database, taro: &DoctorId, hanako: &DoctorId) {
    assert_eq!(db.consent(taro, "portal").await.expect("consent"), None);
    assert!(db.consents_of(taro).await.expect("consents_of").is_empty());

    let first = consent(taro, "portal", &["openid", "profile"], T0);
    db.put_consent(&first).await.expect("put_consent");
    assert_eq!(
        db.consent(taro, "portal").await.expect("consent"),
        Some(first.clone())
    );
    // Replaced, not added.
    let t1 = T0 + Duration::hours(5);
    let mut wider = consent(taro, "portal", &["email", "openid", "profile"], t1);
    wider.claims = vec![
        "birthdate".into(),
        "email".into(),
        "family_name".into(),
        "医籍登録番号".into(),
    ];
    db.put_consent(&wider).await.expect("put_consent");
    assert_eq!(
        db.consent(taro, "portal").await.expect("consent"),
        Some(wider.clone())
    );
    let empty = Consent {
        scopes: vec![],
        claims: vec![],
        policy_version: None,
        ..consent(taro, "Z-karte", &[], T0)
    };
    db.put_consent(&empty).await.expect("put_consent");
    let hanakos = consent(hanako, "portal", &["openid"], T0);
    db.put_consent(&hanakos).await.expect("put_consent");
    // Ordered by client ID, code point order; one doctor's only.
    assert_eq!(
        db.consents_of(taro).await.expect("consents_of"),
        vec![empty.clone(), wider.clone()]
    );
    assert_eq!(
        db.consents_of(hanako).await.expect("consents_of"),
        vec![hanakos.clone()]
    );
    // A consent of no doctor is refused.
    let orphan = db
        .put_consent(&consent(&DoctorId::generate(), "portal", &["openid"], T0))
        .await;
    assert!(matches!(orphan, Err(StoreError::Conflict(_))), "{orphan:?}");

    // Revoking a consent revokes that doctor's tokens for that client, used or not, and
    // no other token.
    db.insert_refresh(&first_token("c-1", "c-fam", "portal", taro, T0))
        .await
        .expect("insert_refresh");
    assert!(matches!(
        rotate(db, "c-1", "portal", "c-2", T0 + Duration::minutes(1)).await,
        Rotation::Rotated(_)
    ));
    db.insert_refresh(&first_token(
        "c-other-client",
        "c-fam2",
        "Z-karte",
        taro,
        T0,
    ))
    .await
    .expect("insert_refresh");
    db.insert_refresh(&first_token(
        "c-other-doctor",
        "c-fam3",
        "portal",
        hanako,
        T0,
    ))
    .await
    .expect("insert_refresh");
    let now = T0 + Duration::minutes(2);
    assert!(live(db, "c-2", now).await.is_some());
    assert!(
        db.revoke_consent(taro, "portal", now)
            .await
            .expect("revoke")
    );
    assert_eq!(db.consent(taro, "portal").await.expect("consent"), None);
    assert_eq!(live(db, "c-2", now).await, None);
    // The revoked successor is refused as revoked (Invalid), not as reuse.
    assert_eq!(
        rotate(db, "c-2", "portal", "c-3", now).await,
        Rotation::Invalid
    );
    assert!(live(db, "c-other-client", now).await.is_some());
    assert!(live(db, "c-other-doctor", now).await.is_some());
    assert_eq!(
        db.consents_of(hanako).await.expect("consents_of"),
        vec![hanakos]
    );
    assert!(
        !db.revoke_consent(taro, "portal", now)
            .await
            .expect("revoke")
    );
    assert_eq!(
        db.consents_of(taro).await.expect("consents_of"),
        vec![empty]
    );
}

async fn refresh_rotation(db: &Database, taro: &DoctorId) {
    // Happy path: the presented record comes back, the successor inherits the family.
    let r0 = first_token("r-0", "fam-1", "portal", taro, T0);
    db.insert_refresh(&r0).await.expect("insert_refresh");
    assert_eq!(live(db, "r-0", T0).await, Some(r0.clone()));
    let duplicate = db.insert_refresh(&r0).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );

    let t1 = T0 + Duration::minutes(20);
    assert_eq!(
        rotate(db, "r-0", "portal", "r-1", t1).await,
        Rotation::Rotated(r0.clone())
    );
    assert_eq!(live(db, "r-0", t1).await, None, "a used token is not live");
    let r1 = RefreshRecord {
        token_digest: "r-1".into(),
        issued_at: t1,
        expires_at: t1 + Duration::hours(1),
        ..r0.clone()
    };
    assert_eq!(live(db, "r-1", t1).await, Some(r1.clone()));

    // A successor whose digest is taken: an error, and nothing changed.
    let t2 = t1 + Duration::minutes(10);
    let taken = db
        .rotate_refresh("r-1", "portal", "r-0", t2 + Duration::hours(1), t2)
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(live(db, "r-1", t2).await, Some(r1.clone()));

    // Another client presenting it: nothing changes.
    assert_eq!(
        rotate(db, "r-1", "other", "r-x", t2).await,
        Rotation::Invalid
    );
    assert_eq!(live(db, "r-1", t2).await, Some(r1.clone()));
    assert_eq!(live(db, "r-x", t2).await, None);

    // Reuse of r-0, even after its own expiry (the family still lives): the family is
    // revoked, r-1 with it, and no successor is stored.
    let r0_end = r0.expires_at;
    assert!(r0_end < r1.expires_at && r0_end > t2);
    assert_eq!(
        rotate(db, "r-0", "portal", "r-2", r0_end).await,
        Rotation::Reused {
            family_id: "fam-1".into(),
            doctor_id: taro.clone(),
        }
    );
    assert_eq!(live(db, "r-1", t2).await, None);
    assert_eq!(live(db, "r-2", t2).await, None);
    assert_eq!(
        rotate(db, "r-1", "portal", "r-3", t2).await,
        Rotation::Invalid
    );
    // Presenting the used token again still finds a revoked family: Invalid.
    assert_eq!(
        rotate(db, "r-0", "portal", "r-4", t2).await,
        Rotation::Invalid
    );

    // Unknown.
    assert_eq!(
        rotate(db, "never-issued", "portal", "r-5", t2).await,
        Rotation::Invalid
    );

    // Expiry: at expires_at the token is dead, and the failed attempt changed nothing
    // (rotating it "earlier" still works).
    let e0 = first_token("e-0", "fam-e", "portal", taro, T0);
    db.insert_refresh(&e0).await.expect("insert_refresh");
    assert_eq!(live(db, "e-0", e0.expires_at).await, None);
    assert_eq!(
        rotate(db, "e-0", "portal", "e-1", e0.expires_at).await,
        Rotation::Invalid
    );
    assert_eq!(
        rotate(
            db,
            "e-0",
            "portal",
            "e-1",
            e0.expires_at + Duration::days(1)
        )
        .await,
        Rotation::Invalid
    );
    let almost = e0.expires_at - Duration::seconds(1);
    assert_eq!(live(db, "e-0", almost).await, Some(e0.clone()));
    assert_eq!(
        rotate(db, "e-0", "portal", "e-1", almost).await,
        Rotation::Rotated(e0)
    );

    // The family's end caps every successor, and ends the family.
    let mut b0 = first_token("b-0", "fam-bound", "portal", taro, T0);
    b0.family_expires_at = T0 + Duration::minutes(90);
    db.insert_refresh(&b0).await.expect("insert_refresh");
    let t3 = T0 + Duration::minutes(59);
    assert!(matches!(
        db.rotate_refresh("b-0", "portal", "b-1", t3 + Duration::days(1), t3)
            .await
            .expect("rotate"),
        Rotation::Rotated(_)
    ));
    let b1 = live(db, "b-1", t3).await.expect("b-1 is live");
    assert_eq!(b1.expires_at, b0.family_expires_at);
    assert_eq!(b1.family_expires_at, b0.family_expires_at);
    assert_eq!(live(db, "b-1", b0.family_expires_at).await, None);
    assert_eq!(
        rotate(db, "b-1", "portal", "b-2", b0.family_expires_at).await,
        Rotation::Invalid
    );

    // A token may not outlive its family.
    let mut long = first_token("l-0", "fam-long", "portal", taro, T0);
    long.expires_at = long.family_expires_at + Duration::seconds(1);
    let refused = db.insert_refresh(&long).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
}

async fn refresh_revocation_and_prune(db: &Database, taro: &DoctorId, hanako: &DoctorId) {
    let t1 = T0 + Duration::minutes(10);
    db.insert_refresh(&first_token("v-0", "fam-v", "portal", hanako, T0))
        .await
        .expect("insert_refresh");
    assert!(matches!(
        rotate(db, "v-0", "portal", "v-1", t1).await,
        Rotation::Rotated(_)
    ));
    // Only the family's client may revoke it; any token of the family names it.
    let revoke = |digest: &'static str, client: &'static str| async move {
        db.revoke_refresh_family(digest, client, t1)
            .await
            .expect("revoke")
    };
    assert_eq!(revoke("v-0", "other").await, None);
    assert!(live(db, "v-1", t1).await.is_some());
    assert_eq!(revoke("unknown", "portal").await, None);
    let owner = live(db, "v-1", t1).await.expect("live").doctor_id;
    assert_eq!(revoke("v-0", "portal").await, Some(owner));
    assert_eq!(live(db, "v-1", t1).await, None);
    assert_eq!(
        revoke("v-1", "portal").await,
        None,
        "nothing left to revoke"
    );
    assert_eq!(
        rotate(db, "v-1", "portal", "v-2", t1).await,
        Rotation::Invalid
    );

    // Prune: families that ended strictly before the cut, every row of them.
    let mut short = first_token("p-short", "fam-short", "portal", taro, T0);
    short.family_expires_at = T0 + Duration::hours(2);
    db.insert_refresh(&short).await.expect("insert_refresh");
    let mut edge = first_token("p-edge", "fam-edge", "portal", taro, T0);
    edge.family_expires_at = T0 + Duration::hours(3);
    db.insert_refresh(&edge).await.expect("insert_refresh");
    assert_eq!(db.prune_refresh(T0).await.expect("prune"), 0);
    // fam-bound (2 rows, ended at T0 + 90 min) and fam-short end before the cut;
    // fam-edge ends exactly at it and stays.
    let cut = T0 + Duration::hours(3);
    assert_eq!(db.prune_refresh(cut).await.expect("prune"), 3);
    assert_eq!(db.prune_refresh(cut).await.expect("prune"), 0);
    assert!(live(db, "p-edge", T0).await.is_some());
    assert_eq!(live(db, "p-short", T0).await, None);
    // Everything else ends 30 days after T0 or later: the 12 rows left by the sections
    // above (rt-z; c-1, c-2 and the two other c- tokens; r-0, r-1; e-0, e-1; v-0, v-1;
    // p-edge).
    let everything = db
        .prune_refresh(T0 + Duration::days(60))
        .await
        .expect("prune");
    assert_eq!(everything, 12);
    assert_eq!(live(db, "rt-z", T0).await, None);
}

/// `tasks` presentations of one token at once: exactly one rotates it; the others see
/// reuse (and the family ends revoked) or find it invalid.
async fn concurrent_rotation(db: Database, raw: &Raw, rounds: usize, tasks: usize) {
    db.migrate().await.expect("migrate");
    let taro = doctor(&db, "JPHPKI-00000001").await;
    let mut reuse_seen = 0;
    for round in 0..rounds {
        let family = format!("fam-{round}");
        let presented = format!("race-{round}");
        db.insert_refresh(&first_token(&presented, &family, "portal", &taro, T0))
            .await
            .expect("insert_refresh");
        let barrier = Arc::new(Barrier::new(tasks));
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let db = db.clone();
                let barrier = Arc::clone(&barrier);
                let presented = presented.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let next = format!("{presented}-next-{task}");
                    let now = T0 + Duration::minutes(1);
                    let outcome = db
                        .rotate_refresh(&presented, "portal", &next, now + Duration::hours(1), now)
                        .await
                        .expect("rotate_refresh");
                    (next, outcome)
                })
            })
            .collect();
        let mut rotated = Vec::new();
        let mut reused = 0;
        for handle in handles {
            match handle.await.expect("task") {
                (next, Rotation::Rotated(record)) => {
                    assert_eq!(record.token_digest, presented);
                    rotated.push(next);
                }
                (_, Rotation::Reused { family_id, .. }) => {
                    assert_eq!(family_id, family);
                    reused += 1;
                }
                (_, Rotation::Invalid) => {}
            }
        }
        assert_eq!(rotated.len(), 1, "round {round}: exactly one rotation");
        let rows = raw.scalar(&format!(
            "SELECT COUNT(*) AS v FROM refresh_tokens WHERE family_id = '{family}'"
        ));
        assert_eq!(rows, Some(2), "round {round}: one successor stored");
        let unrevoked = raw.scalar(&format!(
            "SELECT COUNT(*) AS v FROM refresh_tokens \
             WHERE family_id = '{family}' AND revoked_at IS NULL"
        ));
        let successor_live = live(&db, &rotated[0], T0 + Duration::minutes(2))
            .await
            .is_some();
        if reused > 0 {
            assert_eq!(
                unrevoked,
                Some(0),
                "round {round}: reuse revokes the family"
            );
            assert!(!successor_live);
            reuse_seen += 1;
        } else {
            assert_eq!(unrevoked, Some(2), "round {round}: nothing revoked");
            assert!(successor_live);
        }
    }
    eprintln!("{reuse_seen} of {rounds} rounds reported reuse");
}

/// A consent revoked while its token rotates: whichever commits first, no token of the
/// grant is left live (a successor committed during the revocation is revoked too).
async fn revocation_races_rotation(db: Database, rounds: usize) {
    db.migrate().await.expect("migrate");
    let taro = doctor(&db, "JPHPKI-00000001").await;
    let now = T0 + Duration::minutes(1);
    for round in 0..rounds {
        let client = format!("rp-{round}");
        let presented = format!("race-{round}");
        let next = format!("race-{round}-next");
        db.put_consent(&consent(&taro, &client, &["openid"], T0))
            .await
            .expect("put_consent");
        db.insert_refresh(&first_token(
            &presented,
            &format!("fam-{round}"),
            &client,
            &taro,
            T0,
        ))
        .await
        .expect("insert_refresh");
        let barrier = Arc::new(Barrier::new(2));
        let rotation = tokio::spawn({
            let (db, barrier) = (db.clone(), Arc::clone(&barrier));
            let (presented, client, next) = (presented.clone(), client.clone(), next.clone());
            async move {
                barrier.wait().await;
                rotate(&db, &presented, &client, &next, now).await
            }
        });
        let revocation = tokio::spawn({
            let (db, barrier, taro, client) = (db.clone(), barrier, taro.clone(), client.clone());
            async move {
                barrier.wait().await;
                db.revoke_consent(&taro, &client, now)
                    .await
                    .expect("revoke")
            }
        });
        let rotated = rotation.await.expect("task");
        assert!(revocation.await.expect("task"), "round {round}");
        assert!(
            matches!(rotated, Rotation::Rotated(_) | Rotation::Invalid),
            "round {round}: {rotated:?}"
        );
        assert_eq!(live(&db, &presented, now).await, None, "round {round}");
        assert_eq!(live(&db, &next, now).await, None, "round {round}");
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_concurrent_rotation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let raw = Raw::Sqlite(path.to_str().expect("UTF-8 temp path").to_owned());
    concurrent_rotation(db, &raw, 10, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_revocation_races_rotation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    revocation_races_rotation(db, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_revocation_races_rotation() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    revocation_races_rotation(db, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_rotation() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    let raw = Raw::Postgres(scratch.url().to_owned());
    concurrent_rotation(db, &raw, 50, 8).await;
}

#[tokio::test]
async fn sqlite_file_migration_reverts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    let taro = doctor(&db, "JPHPKI-00000001").await;
    db.insert_refresh(&first_token("t", "f", "rp", &taro, T0))
        .await
        .expect("insert_refresh");
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8")).expect("raw");
    common::revert_through_and_reapply(&mut conn, || SQLITE_MIGRATIONS, "20261124000002");
    assert_eq!(live(&db, "t", T0).await, None);
    assert!(db.find(&taro).await.expect("find").is_some());
}

#[tokio::test]
async fn postgres_migration_reverts() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    db.migrate().await.expect("migrate");
    let taro = doctor(&db, "JPHPKI-00000001").await;
    db.insert_refresh(&first_token("t", "f", "rp", &taro, T0))
        .await
        .expect("insert_refresh");
    let mut conn = PgConnection::establish(scratch.url()).expect("raw");
    common::revert_through_and_reapply(&mut conn, || POSTGRES_MIGRATIONS, "20261124000002");
    assert_eq!(live(&db, "t", T0).await, None);
    assert!(db.find(&taro).await.expect("find").is_some());
}

/// Values the store cannot read are reported as corrupt, without the secrets they hold.
#[tokio::test]
async fn sqlite_file_corrupt_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let raw = Raw::Sqlite(path.to_str().expect("UTF-8 temp path").to_owned());
    db.migrate().await.expect("migrate");
    let taro = doctor(&db, "JPHPKI-00000001").await;

    db.add_signing_key(&key("k1", SigningAlg::RS256, T0))
        .await
        .expect("add");
    raw.exec(
        "PRAGMA ignore_check_constraints = ON; \
         UPDATE signing_keys SET alg = 'HS256' WHERE kid = 'k1';",
    );
    let corrupt = db.signing_keys().await;
    assert!(
        matches!(&corrupt, Err(StoreError::Corrupt(m)) if m.contains("HS256") && !m.contains("secret-of-k1")),
        "{corrupt:?}"
    );

    db.put_client(&registration("rp", "RP"), T0)
        .await
        .expect("put_client");
    db.put_client(&registration("rp2", "RP"), T0)
        .await
        .expect("put_client");
    raw.exec("UPDATE oidc_clients SET registration = '{\"client_id\":' WHERE client_id = 'rp'");
    let corrupt = db.client("rp").await;
    assert!(
        matches!(corrupt, Err(StoreError::Corrupt(_))),
        "{corrupt:?}"
    );
    let corrupt = db.clients().await;
    assert!(
        matches!(corrupt, Err(StoreError::Corrupt(_))),
        "{corrupt:?}"
    );
    // A registration stored under another client's ID.
    raw.exec(
        "UPDATE oidc_clients SET registration = \
         (SELECT registration FROM oidc_clients WHERE client_id = 'rp2') \
         WHERE client_id = 'rp'",
    );
    let corrupt = db.client("rp").await;
    assert!(
        matches!(corrupt, Err(StoreError::Corrupt(_))),
        "{corrupt:?}"
    );
    assert!(db.client("rp2").await.expect("client").is_some());

    db.put_consent(&consent(&taro, "rp", &["openid"], T0))
        .await
        .expect("put_consent");
    raw.exec("UPDATE consents SET claims = '\"email\"'");
    let corrupt = db.consent(&taro, "rp").await;
    assert!(
        matches!(corrupt, Err(StoreError::Corrupt(_))),
        "{corrupt:?}"
    );

    db.insert_refresh(&first_token("t-0", "fam", "rp", &taro, T0))
        .await
        .expect("insert_refresh");
    raw.exec("UPDATE refresh_tokens SET issued_at = 9223372036854775807");
    let corrupt = db.live_refresh("t-0", T0).await;
    assert!(
        matches!(&corrupt, Err(StoreError::Corrupt(m)) if !m.contains("t-0")),
        "{corrupt:?}"
    );
    // Nothing is half-done: the failed read of the presented record rolls back its claim.
    let failed = db
        .rotate_refresh("t-0", "rp", "t-1", T0 + Duration::hours(1), T0)
        .await;
    assert!(matches!(failed, Err(StoreError::Corrupt(_))), "{failed:?}");
    assert_eq!(
        raw.scalar("SELECT used_at AS v FROM refresh_tokens WHERE token_digest = 't-0'"),
        None
    );
    assert_eq!(
        raw.scalar("SELECT COUNT(*) AS v FROM refresh_tokens"),
        Some(1)
    );
}
