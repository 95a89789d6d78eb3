//! The OIDC relying party against a fake provider on 127.0.0.1: the happy paths per
//! algorithm and client authentication, and each way a callback or ID token can be wrong.

mod fake_op;

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::web;
use fake_op::{Announce, CLIENT_ID, CLIENT_SECRET, FakeOp, Plan, REDIRECT_URI, SUBJECT, TestKey};
use hpki_rp_kit::idp_vocabulary::{authn, hpki::HcRole, scope};
use hpki_rp_kit::{
    AuthParams, CallbackParams, ClaimsVerificationError, ClientAuth, ClientId, ClientSecret,
    CoreAuthErrorResponseType, CoreAuthPrompt, CsrfToken, Doctor, Error, HttpClient, HttpError,
    IssuerUrl, OidcClient, PendingLogin, PostLogoutRedirectUrl, RedirectUrl,
    SignatureVerificationError,
};
use serde_json::{Map, Value, json};

fn install_provider() {
    // The test's own reqwest client (reqwest is built with rustls-no-provider). The kit does
    // not need this: it picks ring itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn plain_http() -> HttpClient {
    HttpClient::builder()
        .dangerous_allow_plain_http()
        .build()
        .expect("HTTP client")
}

fn secret() -> ClientSecret {
    ClientSecret::new(CLIENT_SECRET.into())
}

async fn discover_with(
    op: &FakeOp,
    auth: ClientAuth,
    http: HttpClient,
) -> Result<OidcClient, Error> {
    OidcClient::discover(
        IssuerUrl::new(op.issuer.clone()).expect("issuer"),
        ClientId::new(CLIENT_ID.into()),
        auth,
        RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"),
        http,
    )
    .await
}

async fn rp(op: &FakeOp) -> OidcClient {
    discover_with(op, ClientAuth::SecretBasic(secret()), plain_http())
        .await
        .expect("discovery")
}

/// What the browser would bring back: follows the authorization URL to the provider and
/// reads the redirect's query.
async fn authorize(url: &url::Url) -> CallbackParams {
    install_provider();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let response = browser.get(url.as_str()).send().await.expect("authorize");
    assert_eq!(
        response.status(),
        302,
        "the fake provider refused the request"
    );
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    let location = url::Url::parse(location).expect("Location URL");
    assert!(location.as_str().starts_with(REDIRECT_URI));
    CallbackParams::from_query(location.query().unwrap_or_default()).expect("callback")
}

async fn begin(rp: &OidcClient, params: &AuthParams) -> (PendingLogin, CallbackParams) {
    let (url, pending) = rp.begin(&[scope::PROFILE, scope::HPKI], params);
    let callback = authorize(&url).await;
    (pending, callback)
}

async fn login_with(op: &FakeOp, plan: Plan) -> Result<hpki_rp_kit::Login, Error> {
    let rp = rp(op).await;
    op.set_plan(plan);
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    rp.finish(pending, &callback).await
}

fn claims(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn id_token_error(result: Result<hpki_rp_kit::Login, Error>) -> ClaimsVerificationError {
    match result {
        Err(Error::IdToken(e)) => e,
        other => panic!("expected an ID token failure, got {other:?}"),
    }
}

fn start(keys: Vec<TestKey>) -> web::Data<FakeOp> {
    fake_op::start(Announce::default(), keys)
}

#[actix_web::test]
async fn rs256_login_yields_a_verified_doctor() {
    let op = start(vec![TestKey::rs256("rsa-1")]);
    let rp = rp(&op).await;
    let params = AuthParams::hpki_card()
        .prompt(CoreAuthPrompt::Login)
        .max_age(Duration::from_secs(600));
    let (url, pending) = rp.begin(&[scope::OPENID, scope::PROFILE, scope::HPKI], &params);
    let callback = authorize(&url).await;

    // The request the provider saw: code flow, PKCE S256, nonce, the HPKI acr, Japanese.
    let seen = op.last_authorize.lock().expect("lock").clone();
    let get = |name: &str| seen.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert!(get("code_challenge").is_some_and(|c| c.len() == 43));
    assert!(get("nonce").is_some_and(|n| !n.is_empty()));
    assert_eq!(get("acr_values").as_deref(), Some(authn::ACR_HPKI_CARD));
    assert_eq!(get("ui_locales").as_deref(), Some("ja"));
    assert_eq!(get("prompt").as_deref(), Some("login"));
    assert_eq!(get("max_age").as_deref(), Some("600"));
    assert_eq!(get("scope").as_deref(), Some("openid profile hpki"));

    let login = rp.finish(pending, &callback).await.expect("login");
    assert_eq!(login.subject.as_str(), SUBJECT);
    assert!(login.is_hpki_card_login());
    assert_eq!(
        login.amr.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        authn::AMR_HPKI_CARD
    );
    assert!(login.auth_time.is_some());
    assert!(login.refresh_token.is_some());
    assert!(
        login
            .expires_at
            .is_some_and(|t| t > time::OffsetDateTime::now_utc())
    );
    assert!(login.access_token.secret().starts_with("access-"));
    assert_eq!(login.id_token.secret().split('.').count(), 3);
    assert_eq!(*op.last_client_auth.lock().expect("lock"), Some("basic"));

    let doctor = Doctor::from_login(&login);
    assert_eq!(doctor.subject.as_str(), SUBJECT);
    assert_eq!(doctor.family_name.kanji.as_deref(), Some("日医"));
    assert_eq!(doctor.family_name.kana.as_deref(), Some("ニチイ"));
    assert_eq!(doctor.family_name.default.as_deref(), Some("Nichii"));
    assert_eq!(doctor.given_name.kanji.as_deref(), Some("太郎"));
    assert_eq!(doctor.name.for_display(), Some("日医　太郎"));
    assert_eq!(doctor.hpki_role, Some(HcRole::MedicalDoctor));
    assert!(doctor.is_medical_doctor());
    assert!(doctor.is_hpki_card_login());
    assert!(
        doctor
            .hpki_issuer
            .is_some_and(|i| i.contains("Japan Medical Association"))
    );

    // Debug output names claims but shows neither tokens nor personal data.
    let debug = format!("{login:?}");
    assert!(!debug.contains(login.access_token.secret()));
    assert!(!debug.contains(login.id_token.secret()));
    assert!(!debug.contains("日医"));
    assert!(debug.contains("family_name"));
}

#[actix_web::test]
async fn es256_login_with_client_secret_post() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = discover_with(&op, ClientAuth::SecretPost(secret()), plain_http())
        .await
        .expect("discovery");
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    let login = rp.finish(pending, &callback).await.expect("ES256 login");
    assert_eq!(login.subject.as_str(), SUBJECT);
    assert_eq!(*op.last_client_auth.lock().expect("lock"), Some("post"));
}

#[actix_web::test]
async fn ps256_and_eddsa_logins() {
    let op = start(vec![TestKey::ps256("ps-1"), TestKey::ed25519("ed-1")]);
    for kid in ["ps-1", "ed-1"] {
        let login = login_with(
            &op,
            Plan {
                sign_with: Some(kid.into()),
                ..Plan::default()
            },
        )
        .await;
        assert!(login.is_ok(), "{kid}: {login:?}");
    }
}

#[actix_web::test]
async fn wrong_nonce_is_refused() {
    let op = start(vec![TestKey::rs256("rsa-1")]);
    let plan = Plan {
        claims: claims(&[("nonce", json!("someone-elses-nonce"))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::InvalidNonce(_)
    ));
    let plan = Plan {
        claims: claims(&[("nonce", Value::Null)]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::InvalidNonce(_)
    ));
}

#[actix_web::test]
async fn wrong_audience_is_refused() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let plan = Plan {
        claims: claims(&[("aud", json!("another-rp"))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::InvalidAudience(_)
    ));
    // Our client_id among others not trusted (§3.1.3.7 step 3).
    let plan = Plan {
        claims: claims(&[("aud", json!([CLIENT_ID, "another-rp"]))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::InvalidAudience(_)
    ));
    // azp naming another client.
    let plan = Plan {
        claims: claims(&[("azp", json!("another-rp"))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::InvalidAudience(_)
    ));
}

#[actix_web::test]
async fn wrong_issuer_claim_is_refused() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let plan = Plan {
        claims: claims(&[("iss", json!("https://evil.example"))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::InvalidIssuer(_)
    ));
}

#[actix_web::test]
async fn expired_and_future_tokens_are_refused() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let plan = Plan {
        claims: claims(&[("exp", json!(now() - 10)), ("iat", json!(now() - 310))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::Expired(_)
    ));
    let plan = Plan {
        claims: claims(&[("iat", json!(now() + 3600)), ("exp", json!(now() + 7200))]),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::Expired(_)
    ));
}

#[actix_web::test]
async fn bad_signatures_are_refused() {
    let op = start(vec![TestKey::rs256("rsa-1"), TestKey::es256("ec-1")]);
    for kid in ["rsa-1", "ec-1"] {
        let plan = Plan {
            sign_with: Some(kid.into()),
            corrupt_signature: true,
            ..Plan::default()
        };
        assert!(
            matches!(
                id_token_error(login_with(&op, plan).await),
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::CryptoError(_)
                )
            ),
            "{kid}"
        );
    }
    // A key the provider does not publish, claiming a published kid.
    op.add_unpublished(TestKey::es256("forger"));
    let plan = Plan {
        sign_with: Some("forger".into()),
        header_kid: Some("ec-1".into()),
        ..Plan::default()
    };
    assert!(matches!(
        id_token_error(login_with(&op, plan).await),
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::CryptoError(_))
    ));
}

#[actix_web::test]
async fn alg_none_is_refused() {
    let op = start(vec![TestKey::rs256("rsa-1")]);
    // With and without at_hash (whose check would also trip over the missing signature).
    for at_hash in [None, Some(Value::Null)] {
        let plan = Plan {
            alg_none: true,
            claims: at_hash
                .map(|v| claims(&[("at_hash", v)]))
                .unwrap_or_default(),
            ..Plan::default()
        };
        assert!(matches!(
            id_token_error(login_with(&op, plan).await),
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoSignature
                    | SignatureVerificationError::DisallowedAlg(_)
            )
        ));
    }
}

#[actix_web::test]
async fn at_hash_mismatch_is_refused() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let plan = Plan {
        wrong_at_hash: true,
        ..Plan::default()
    };
    assert!(matches!(
        login_with(&op, plan).await,
        Err(Error::AccessTokenHashMismatch)
    ));
}

#[actix_web::test]
async fn missing_id_token_is_refused() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let plan = Plan {
        omit_id_token: true,
        ..Plan::default()
    };
    assert!(matches!(
        login_with(&op, plan).await,
        Err(Error::MissingIdToken)
    ));
}

#[actix_web::test]
async fn requested_acr_must_be_asserted() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    op.set_plan(Plan {
        claims: claims(&[("acr", json!("urn:example:password"))]),
        ..Plan::default()
    });
    let (pending, callback) = begin(&rp, &AuthParams::hpki_card()).await;
    assert!(matches!(
        id_token_error(rp.finish(pending, &callback).await),
        ClaimsVerificationError::InvalidAuthContext(_)
    ));
    // Without acr_values the same token is accepted, and the app sees it is no card login.
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    let login = rp.finish(pending, &callback).await.expect("login");
    assert!(!login.is_hpki_card_login());
}

#[actix_web::test]
async fn max_age_needs_a_recent_auth_time() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    op.set_plan(Plan {
        claims: claims(&[("auth_time", json!(now() - 3600))]),
        ..Plan::default()
    });
    let params = AuthParams::default().max_age(Duration::from_secs(300));
    let (pending, callback) = begin(&rp, &params).await;
    assert!(matches!(
        id_token_error(rp.finish(pending, &callback).await),
        ClaimsVerificationError::InvalidAuthTime(_)
    ));
}

#[actix_web::test]
async fn state_must_match() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.state = Some(CsrfToken::new("forged".into()));
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::StateMismatch)
    ));
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.state = None;
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::StateMismatch)
    ));
    // Refused before the code was spent.
    assert_eq!(op.token_hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn callback_iss_is_checked() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.iss = Some("https://mix-up.example".into());
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::IssuerMismatch)
    ));
    // The provider announces RFC 9207 support: a callback without iss is refused.
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.iss = None;
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::MissingIssuer)
    ));
    // Error responses are checked too.
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.code = None;
    callback.error = Some(CoreAuthErrorResponseType::AccessDenied);
    callback.iss = Some("https://mix-up.example".into());
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::IssuerMismatch)
    ));
    assert_eq!(op.token_hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn missing_iss_is_tolerated_when_the_provider_does_not_announce_it() {
    let op = fake_op::start(
        Announce {
            iss_parameter_supported: false,
            ..Announce::default()
        },
        vec![TestKey::es256("ec-1")],
    );
    let rp = rp(&op).await;
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.iss = None;
    rp.finish(pending, &callback)
        .await
        .expect("login without iss");
    // But a wrong one is still refused.
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.iss = Some("https://mix-up.example".into());
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::IssuerMismatch)
    ));
}

#[actix_web::test]
async fn error_callbacks_are_typed() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    let query = format!(
        "error=login_required&error_description=no%20card&state={}&iss={}",
        callback.state.as_ref().expect("state").secret(),
        op.issuer
    );
    let error_callback = CallbackParams::from_query(&query).expect("query");
    match rp.finish(pending, &error_callback).await {
        Err(Error::Authorization { error, description }) => {
            assert_eq!(error, CoreAuthErrorResponseType::LoginRequired);
            assert_eq!(description.as_deref(), Some("no card"));
        }
        other => panic!("expected an authorization error, got {other:?}"),
    }
    let (pending, mut callback) = begin(&rp, &AuthParams::default()).await;
    callback.code = None;
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::MissingCode)
    ));
}

#[actix_web::test]
async fn unknown_kid_triggers_one_jwks_refetch() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    assert_eq!(
        op.jwks_hits.load(Ordering::SeqCst),
        1,
        "discovery reads the JWKS"
    );

    // Key rotation after discovery: the new kid is not in the cache.
    op.publish(TestKey::es256("ec-2"));
    op.set_plan(Plan {
        sign_with: Some("ec-2".into()),
        ..Plan::default()
    });
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    rp.finish(pending, &callback)
        .await
        .expect("login after rotation");
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 2, "one refetch");

    // The refreshed cache serves the next login without a fetch.
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    rp.finish(pending, &callback).await.expect("cached key");
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 2);

    // Another unknown kid within the minute: no second refetch, the login fails.
    op.publish(TestKey::es256("ec-3"));
    op.set_plan(Plan {
        sign_with: Some("ec-3".into()),
        ..Plan::default()
    });
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::UnknownSigningKey)
    ));
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 2, "rate-limited");
}

#[actix_web::test]
async fn a_kid_the_provider_never_publishes_is_refused_after_one_refetch() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    op.add_unpublished(TestKey::es256("rogue"));
    op.set_plan(Plan {
        sign_with: Some("rogue".into()),
        ..Plan::default()
    });
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    assert!(matches!(
        rp.finish(pending, &callback).await,
        Err(Error::UnknownSigningKey)
    ));
    assert_eq!(op.jwks_hits.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn userinfo_is_bound_to_the_login_subject() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    let login = rp.finish(pending, &callback).await.expect("login");

    let userinfo = rp
        .userinfo(&login.access_token, &login.subject)
        .await
        .expect("userinfo");
    assert_eq!(userinfo.subject.as_str(), SUBJECT);
    assert_eq!(
        userinfo.claims.get("email"),
        Some(&json!("taro@example.jp"))
    );
    let doctor = Doctor::from_login_and_userinfo(&login, &userinfo).expect("same subject");
    assert_eq!(doctor.family_name.kanji.as_deref(), Some("日医"));
    assert_eq!(doctor.given_name.kana.as_deref(), Some("タロウ"));
    assert!(doctor.is_hpki_card_login());

    op.set_plan(Plan {
        userinfo_subject: Some("someone-else".into()),
        ..Plan::default()
    });
    assert!(matches!(
        rp.userinfo(&login.access_token, &login.subject).await,
        Err(Error::SubjectMismatch)
    ));
}

#[actix_web::test]
async fn refresh_validates_the_new_id_token() {
    let op = start(vec![TestKey::rs256("rsa-1")]);
    let rp = rp(&op).await;
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    let login = rp.finish(pending, &callback).await.expect("login");
    let refresh_token = login.refresh_token.clone().expect("refresh token");

    let refreshed = rp
        .refresh(&refresh_token, &login.subject)
        .await
        .expect("refresh");
    assert_ne!(refreshed.access_token.secret(), login.access_token.secret());
    let id_token = refreshed.id_token.expect("new ID token");
    assert_eq!(id_token.subject, login.subject);
    assert_eq!(
        Doctor::from_id_token(&id_token).hpki_role,
        Some(HcRole::MedicalDoctor)
    );

    // A refreshed ID token for another subject (OIDC Core §12.2).
    op.set_plan(Plan {
        claims: claims(&[("sub", json!("another-subject"))]),
        ..Plan::default()
    });
    assert!(matches!(
        rp.refresh(&refresh_token, &login.subject).await,
        Err(Error::SubjectMismatch)
    ));
    // And one with a bad signature.
    op.set_plan(Plan {
        corrupt_signature: true,
        ..Plan::default()
    });
    assert!(matches!(
        rp.refresh(&refresh_token, &login.subject).await,
        Err(Error::IdToken(_))
    ));
}

#[actix_web::test]
async fn token_endpoint_errors_are_typed() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = discover_with(
        &op,
        ClientAuth::SecretBasic(ClientSecret::new("wrong".into())),
        plain_http(),
    )
    .await
    .expect("discovery");
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    match rp.finish(pending, &callback).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error.as_ref(), "invalid_client");
        }
        other => panic!("expected a token endpoint error, got {other:?}"),
    }
}

#[actix_web::test]
async fn end_session_url_carries_the_hint() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    let (pending, callback) = begin(&rp, &AuthParams::default()).await;
    let login = rp.finish(pending, &callback).await.expect("login");
    let url = rp
        .end_session_url(
            &login.id_token,
            Some(PostLogoutRedirectUrl::new("https://rp.test/bye".into()).expect("URL")),
            Some(CsrfToken::new("logout-state".into())),
        )
        .expect("logout URL");
    assert!(
        url.as_str()
            .starts_with(&format!("{}/end_session?", op.issuer))
    );
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("id_token_hint"), Some(login.id_token.secret()));
    assert_eq!(get("client_id"), Some(CLIENT_ID));
    assert_eq!(get("post_logout_redirect_uri"), Some("https://rp.test/bye"));
    assert_eq!(get("state"), Some("logout-state"));
}

#[actix_web::test]
async fn discovery_refusals() {
    let op = start(vec![TestKey::es256("ec-1")]);

    // The document's issuer must be exactly the configured one (Discovery §4.3).
    let with_slash = OidcClient::discover(
        IssuerUrl::new(format!("{}/", op.issuer)).expect("issuer"),
        ClientId::new(CLIENT_ID.into()),
        ClientAuth::SecretBasic(secret()),
        RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"),
        plain_http(),
    )
    .await;
    assert!(
        matches!(with_slash, Err(Error::Discovery(_))),
        "{with_slash:?}"
    );

    // Redirects are never followed.
    let redirected = OidcClient::discover(
        IssuerUrl::new(format!("{}/redirect-me", op.issuer)).expect("issuer"),
        ClientId::new(CLIENT_ID.into()),
        ClientAuth::SecretBasic(secret()),
        RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"),
        plain_http(),
    )
    .await;
    assert!(
        matches!(redirected, Err(Error::Http(HttpError::Redirect(_)))),
        "{redirected:?}"
    );

    // Plain HTTP needs the explicit test switch.
    let https_only = HttpClient::builder().build().expect("client");
    let plain = discover_with(&op, ClientAuth::SecretBasic(secret()), https_only).await;
    assert!(
        matches!(plain, Err(Error::Http(HttpError::Transport(_)))),
        "{plain:?}"
    );

    // tls_client_auth without a client certificate is a configuration error.
    let no_cert = discover_with(&op, ClientAuth::TlsClientAuth, plain_http()).await;
    assert!(matches!(no_cert, Err(Error::Config(_))), "{no_cert:?}");
}

#[actix_web::test]
async fn unoffered_client_authentication_is_a_configuration_error() {
    let op = fake_op::start(
        Announce {
            auth_methods: vec!["client_secret_post"],
            ..Announce::default()
        },
        vec![TestKey::es256("ec-1")],
    );
    let basic = discover_with(&op, ClientAuth::SecretBasic(secret()), plain_http()).await;
    assert!(matches!(basic, Err(Error::Config(_))), "{basic:?}");
    discover_with(&op, ClientAuth::SecretPost(secret()), plain_http())
        .await
        .expect("post is offered");
}

#[actix_web::test]
async fn pending_login_survives_a_cookie_round_trip() {
    let op = start(vec![TestKey::es256("ec-1")]);
    let rp = rp(&op).await;
    let (url, pending) = rp.begin(&[scope::PROFILE], &AuthParams::hpki_card());
    let debug = format!("{pending:?}");
    let cookie = serde_json::to_string(&pending).expect("serialise");
    assert!(
        !debug.contains(pending.state().secret()),
        "Debug is redacted"
    );

    let restored: PendingLogin = serde_json::from_str(&cookie).expect("deserialise");
    let callback = authorize(&url).await;
    let login = rp.finish(restored, &callback).await.expect("login");
    assert!(login.is_hpki_card_login());
}

#[test]
fn callback_query_parsing() {
    let parsed =
        CallbackParams::from_query("code=abc&state=xyz&iss=https%3A%2F%2Fidp.test&extra=1")
            .expect("parses");
    assert_eq!(
        parsed.code.as_ref().map(|c| c.secret().as_str()),
        Some("abc")
    );
    assert_eq!(parsed.iss.as_deref(), Some("https://idp.test"));
    assert!(matches!(
        CallbackParams::from_query("code=a&code=b&state=s"),
        Err(Error::MalformedCallback(_))
    ));
    let unknown = CallbackParams::from_query("error=card_locked&state=s").expect("parses");
    assert_eq!(
        unknown.error,
        Some(CoreAuthErrorResponseType::Extension("card_locked".into()))
    );
}

/// Never called: it only has to type-check, proving the futures can cross threads (axum,
/// tokio::spawn).
#[allow(dead_code)]
fn futures_are_send(
    rp: &OidcClient,
    pending: PendingLogin,
    callback: &CallbackParams,
    login: &hpki_rp_kit::Login,
) {
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&rp.finish(pending, callback));
    assert_send(&rp.userinfo(&login.access_token, &login.subject));
    assert_send(&rp.refresh(
        login.refresh_token.as_ref().expect("refresh token"),
        &login.subject,
    ));
    assert_send(&OidcClient::discover(
        IssuerUrl::new("https://idp.test".into()).expect("issuer"),
        ClientId::new(CLIENT_ID.into()),
        ClientAuth::TlsClientAuth,
        RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"),
        plain_http(),
    ));
}
