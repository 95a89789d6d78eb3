//! The authorization code grant over the in-process store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use idp_core::doctor::DoctorId;
use idp_core::oidc::ErrorCode;
use idp_core::oidc::grant::{CodeGrant, GrantPolicy, Grants};
use idp_core::oidc::pkce::CodeChallenge;
use idp_core::store::EphemeralStore;
use time::macros::datetime;

/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const NOW: time::OffsetDateTime = datetime!(2026-11-24 09:00 UTC);

fn grants() -> Grants {
    let store: Arc<dyn EphemeralStore> = Arc::new(idp_store::MemoryStore::new());
    Grants::new(store, GrantPolicy::default())
}

fn grant() -> CodeGrant {
    CodeGrant {
        client_id: "rp".into(),
        redirect_uri: "https://rp.example/cb".into(),
        scopes: vec!["openid".into(), "profile".into()],
        nonce: Some("n".into()),
        code_challenge: CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap(),
        doctor_id: DoctorId::from_stored("d1".into()),
        auth_time: NOW,
        acr: "urn:hpki:acr:card-pin".into(),
        amr: vec!["sc".into()],
        claims: None,
    }
}

const CB: Option<&str> = Some("https://rp.example/cb");

#[tokio::test]
async fn a_code_is_redeemed_once_for_an_access_token() {
    let grants = grants();
    let code = grants.issue_code(&grant()).await.unwrap();
    let redeemed = grants
        .redeem(code.dangerous_expose(), "rp", CB, Some(VERIFIER), NOW)
        .await
        .unwrap();
    assert_eq!(redeemed.grant, grant());
    let access = grants
        .access(redeemed.access_token.dangerous_expose(), NOW)
        .await
        .unwrap()
        .expect("live token");
    assert_eq!(access.scopes, vec!["openid", "profile"]);
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
    let grants = grants();
    let code = grants.issue_code(&grant()).await.unwrap();
    let first = grants
        .redeem(code.dangerous_expose(), "rp", CB, Some(VERIFIER), NOW)
        .await
        .unwrap();
    let replay = grants
        .redeem(code.dangerous_expose(), "rp", CB, Some(VERIFIER), NOW)
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
}

#[tokio::test]
async fn a_code_is_bound_to_client_redirect_uri_and_verifier() {
    let grants = grants();
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
    for (client, redirect, verifier) in cases {
        let code = grants.issue_code(&grant()).await.unwrap();
        let err = grants
            .redeem(code.dangerous_expose(), client, redirect, verifier, NOW)
            .await
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::InvalidGrant,
            "{client} {redirect:?} {verifier:?}"
        );
        // A failed attempt spends the code: the right client cannot use it afterwards.
        let again = grants
            .redeem(code.dangerous_expose(), "rp", CB, Some(VERIFIER), NOW)
            .await
            .unwrap_err();
        assert_eq!(again.code, ErrorCode::InvalidGrant);
    }
    for garbage in ["", "a b", &"x".repeat(100)] {
        assert_eq!(
            grants
                .redeem(garbage, "rp", CB, Some(VERIFIER), NOW)
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidGrant
        );
    }
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
