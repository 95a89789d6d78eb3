//! The authorization code grant over the in-process store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use idp_core::audit::{AuditLog, AuditStore};
use idp_core::doctor::DoctorId;
use idp_core::oidc::ErrorCode;
use idp_core::oidc::client::{ClientRegistration, TokenEndpointAuthMethod};
use idp_core::oidc::grant::{Authorization, CodeGrant, GrantPolicy, Grants};
use idp_core::oidc::pkce::CodeChallenge;
use idp_core::session::CardSummary;
use idp_core::store::{DoctorDirectory, EphemeralStore, RefreshTokenStore};
use time::macros::datetime;

/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const NOW: time::OffsetDateTime = datetime!(2026-11-24 09:00 UTC);

/// The grants over SQLite, with the audit log they write revocations to.
async fn grants() -> (Grants, DoctorId, Arc<idp_store::Database>) {
    let store: Arc<dyn EphemeralStore> = Arc::new(idp_store::MemoryStore::new());
    let db = idp_store::Database::connect("sqlite::memory:")
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let profile = idp_core::doctor::DoctorProfile {
        hpki_holder_id: "h".into(),
        family_name: "日医".into(),
        given_name: "太郎".into(),
        ..Default::default()
    };
    let doctor = db.provision(&profile, NOW).await.unwrap();
    let db = Arc::new(db);
    let refresh: Arc<dyn RefreshTokenStore> = db.clone();
    let audit = AuditLog::start(db.clone(), None, 100);
    (
        Grants::new(store, refresh, GrantPolicy::default(), audit),
        doctor.id,
        db,
    )
}

/// The `token.revoked` records: (actor, doctor, reason, tokens).
async fn revocations(db: &idp_store::Database) -> Vec<(String, Option<String>, String, String)> {
    db.records_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.kind == "token.revoked")
        .map(|r| {
            (
                r.event.actor,
                r.event.doctor,
                r.event.detail["reason"].as_str().unwrap().to_owned(),
                r.event.detail["tokens"].to_string(),
            )
        })
        .collect()
}

fn client(id: &str, refresh_tokens: bool) -> ClientRegistration {
    ClientRegistration {
        refresh_tokens,
        ..ClientRegistration::new(id, id, TokenEndpointAuthMethod::ClientSecretBasic)
    }
}

fn grant(doctor: &DoctorId) -> CodeGrant {
    CodeGrant {
        authorization: Authorization {
            client_id: "rp".into(),
            doctor_id: doctor.clone(),
            scopes: vec!["openid".into(), "profile".into(), "offline_access".into()],
            released: ["name".to_owned()].into(),
            sid: "sid".into(),
            auth_time: NOW,
            acr: "urn:hpki:acr:card-pin".into(),
            amr: vec!["sc".into()],
            card: CardSummary {
                holder_id: "h".into(),
                subject: "CN=x".into(),
                issuer: "CN=ca".into(),
                serial: "01".into(),
                roles: vec!["Medical Doctor".into()],
                not_before: NOW,
                not_after: NOW,
                fingerprint: "00".into(),
                revocation: vec![],
            },
        },
        redirect_uri: "https://rp.example/cb".into(),
        nonce: Some("n".into()),
        code_challenge: CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap(),
    }
}

const CB: Option<&str> = Some("https://rp.example/cb");

#[tokio::test]
async fn a_code_is_redeemed_once_for_an_access_token() {
    let (grants, doctor, _audit) = grants().await;
    let code = grants.issue_code(&grant(&doctor)).await.unwrap();
    let redeemed = grants
        .redeem(
            code.dangerous_expose(),
            &client("rp", true),
            CB,
            Some(VERIFIER),
            None,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(redeemed.authorization, grant(&doctor).authorization);
    assert_eq!(redeemed.nonce.as_deref(), Some("n"));
    let access = grants
        .access(redeemed.access_token.dangerous_expose(), NOW)
        .await
        .unwrap()
        .expect("live token");
    assert_eq!(
        access.authorization.scopes,
        grant(&doctor).authorization.scopes
    );
    // Expired at its expiry time.
    assert!(
        grants
            .access(redeemed.access_token.dangerous_expose(), access.expires_at)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_replayed_code_fails_and_revokes_the_token_it_issued() {
    let (grants, doctor, audit) = grants().await;
    let code = grants.issue_code(&grant(&doctor)).await.unwrap();
    let first = grants
        .redeem(
            code.dangerous_expose(),
            &client("rp", true),
            CB,
            Some(VERIFIER),
            None,
            NOW,
        )
        .await
        .unwrap();
    let replay = grants
        .redeem(
            code.dangerous_expose(),
            &client("rp", true),
            CB,
            Some(VERIFIER),
            None,
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(replay.code, ErrorCode::InvalidGrant);
    assert!(
        grants
            .access(first.access_token.dangerous_expose(), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        revocations(&audit).await,
        vec![(
            "rp".into(),
            Some(doctor.as_str().into()),
            "code_replay".into(),
            r#"["access_token","refresh_family"]"#.into()
        )]
    );
}

#[tokio::test]
async fn a_code_is_bound_to_client_redirect_uri_and_verifier() {
    let (grants, doctor, _audit) = grants().await;
    let cases: [(&str, Option<&str>, Option<&str>); 5] = [
        ("other-client", CB, Some(VERIFIER)),
        ("rp", Some("https://rp.example/other"), Some(VERIFIER)),
        ("rp", None, Some(VERIFIER)),
        (
            "rp",
            CB,
            Some("wrong-verifier-wrong-verifier-wrong-verifier-x"),
        ),
        ("rp", CB, None),
    ];
    for (client_id, redirect, verifier) in cases {
        let code = grants.issue_code(&grant(&doctor)).await.unwrap();
        let err = grants
            .redeem(
                code.dangerous_expose(),
                &client(client_id, true),
                redirect,
                verifier,
                None,
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::InvalidGrant,
            "{client_id} {redirect:?} {verifier:?}"
        );
        // A failed attempt spends the code: the right client cannot use it afterwards.
        let again = grants
            .redeem(
                code.dangerous_expose(),
                &client("rp", true),
                CB,
                Some(VERIFIER),
                None,
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!(again.code, ErrorCode::InvalidGrant);
    }
    for garbage in ["", "a b", &"x".repeat(100)] {
        assert_eq!(
            grants
                .redeem(garbage, &client("rp", true), CB, Some(VERIFIER), None, NOW)
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidGrant
        );
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let (grants, doctor, audit) = grants().await;
    let rp = client("rp", true);
    let code = grants.issue_code(&grant(&doctor)).await.unwrap();
    let first = grants
        .redeem(code.dangerous_expose(), &rp, CB, Some(VERIFIER), None, NOW)
        .await
        .unwrap();
    let r1 = first
        .refresh_token
        .expect("offline_access gives a refresh token");
    let later = NOW + time::Duration::minutes(10);
    let second = grants
        .refresh(r1.dangerous_expose(), &rp, None, later)
        .await
        .unwrap();
    let r2 = second.refresh_token.expect("rotated");
    assert_ne!(r1, r2);
    assert_eq!(second.authorization, grant(&doctor).authorization);
    // Another client cannot use it.
    let other = client("other", true);
    assert_eq!(
        grants
            .refresh(r2.dangerous_expose(), &other, None, later)
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidGrant
    );
    assert!(revocations(&audit).await.is_empty());
    // Reusing r1 (stolen) revokes the family, and says so in the audit log: r2 is dead too.
    assert_eq!(
        grants
            .refresh(r1.dangerous_expose(), &rp, None, later)
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidGrant
    );
    assert_eq!(
        revocations(&audit).await,
        vec![(
            "rp".into(),
            Some(doctor.as_str().into()),
            "refresh_token_reuse".into(),
            r#"["refresh_family"]"#.into()
        )]
    );
    assert_eq!(
        grants
            .refresh(r2.dangerous_expose(), &rp, None, later)
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidGrant
    );
}

#[tokio::test]
async fn no_refresh_token_without_offline_access_or_for_clients_without_them() {
    let (grants, doctor, _audit) = grants().await;
    let code = grants.issue_code(&grant(&doctor)).await.unwrap();
    let issued = grants
        .redeem(
            code.dangerous_expose(),
            &client("rp", false),
            CB,
            Some(VERIFIER),
            None,
            NOW,
        )
        .await
        .unwrap();
    assert!(issued.refresh_token.is_none());
    let mut online = grant(&doctor);
    online
        .authorization
        .scopes
        .retain(|s| s != "offline_access");
    let code = grants.issue_code(&online).await.unwrap();
    let issued = grants
        .redeem(
            code.dangerous_expose(),
            &client("rp", true),
            CB,
            Some(VERIFIER),
            None,
            NOW,
        )
        .await
        .unwrap();
    assert!(issued.refresh_token.is_none());
}

#[tokio::test]
async fn a_replayed_code_also_revokes_the_refresh_family() {
    let (grants, doctor, _audit) = grants().await;
    let rp = client("rp", true);
    let code = grants.issue_code(&grant(&doctor)).await.unwrap();
    let first = grants
        .redeem(code.dangerous_expose(), &rp, CB, Some(VERIFIER), None, NOW)
        .await
        .unwrap();
    assert!(
        grants
            .redeem(code.dangerous_expose(), &rp, CB, Some(VERIFIER), None, NOW)
            .await
            .is_err()
    );
    let refresh = first.refresh_token.unwrap();
    assert_eq!(
        grants
            .refresh(refresh.dangerous_expose(), &rp, None, NOW)
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidGrant
    );
}

#[tokio::test]
async fn a_revocation_request_revokes_only_the_clients_own_tokens_and_is_recorded() {
    let (grants, doctor, audit) = grants().await;
    let rp = client("rp", true);
    let code = grants.issue_code(&grant(&doctor)).await.unwrap();
    let issued = grants
        .redeem(code.dangerous_expose(), &rp, CB, Some(VERIFIER), None, NOW)
        .await
        .unwrap();
    let (access, refresh) = (
        issued.access_token.dangerous_expose(),
        issued.refresh_token.as_ref().unwrap().dangerous_expose(),
    );
    // Another client's request, and unknown tokens, change and record nothing (RFC 7009
    // §2.2: the same answer).
    grants.revoke(access, "other", NOW).await.unwrap();
    grants.revoke(refresh, "other", NOW).await.unwrap();
    grants.revoke("unknown", "rp", NOW).await.unwrap();
    assert!(grants.access(access, NOW).await.unwrap().is_some());
    assert!(revocations(&audit).await.is_empty());
    grants.revoke(access, "rp", NOW).await.unwrap();
    grants.revoke(refresh, "rp", NOW).await.unwrap();
    assert!(grants.access(access, NOW).await.unwrap().is_none());
    assert!(grants.refresh(refresh, &rp, None, NOW).await.is_err());
    let who = Some(doctor.as_str().to_owned());
    assert_eq!(
        revocations(&audit).await,
        vec![
            (
                "rp".into(),
                who.clone(),
                "requested".into(),
                r#"["access_token"]"#.into()
            ),
            (
                "rp".into(),
                who,
                "requested".into(),
                r#"["refresh_family"]"#.into()
            ),
        ]
    );
}

#[test]
fn at_hash_matches_the_oidc_example() {
    // OIDC Core A.3/A.4 use this access token; its at_hash with SHA-256 is 77QmUPtjPfzWtF2AnpK9RQ.
    let token =
        idp_core::secret::Secret::from_client("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y")
            .unwrap();
    assert_eq!(
        idp_core::oidc::grant::at_hash(&token, idp_core::oidc::client::SigningAlg::RS256),
        "77QmUPtjPfzWtF2AnpK9RQ"
    );
}
