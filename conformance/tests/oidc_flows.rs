//! End to end: OpenID Connect flows against the real `idp` binary, driven by
//! `relying-party-kit`'s client (built on the `openidconnect` crate), with the card login
//! on the mTLS origin in the middle; and the attacks the provider must refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use hpki_rp_kit::{AuthParams, CallbackParams, OidcClient, PendingLogin};
use sha2::{Digest, Sha256};

use harness::{
    Browser, CardStep, Leg, Pki, Server, ServerOptions, browse, client, location, pki, present,
    reason, start,
};

const REDIRECT: &str = "https://rp.example/cb";
const SECRET: &str = "kit-rp-secret-0123456789";

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A client registration for `[oidc]`.
fn client_toml(id: &str, extra: &str) -> String {
    format!(
        r#"
[[oidc.clients]]
client_id = "{id}"
name = "地域医療連携ネット {id}"
secret_sha256 = "{secret}"
auth_method = "client_secret_basic"
redirect_uris = ["{REDIRECT}"]
post_logout_redirect_uris = ["https://rp.example/bye"]
scopes = ["openid", "profile", "hpki", "offline_access", "email"]
refresh_tokens = true
{extra}
"#,
        secret = digest(SECRET)
    )
}

fn server_with_clients(pki: &Pki, clients: &str) -> Server {
    start(
        pki,
        ServerOptions {
            oidc_extra: clients.to_owned(),
            ..ServerOptions::default()
        },
    )
}

async fn kit(server: &Server, pki: &Pki, client_id: &str) -> OidcClient {
    harness::oidc_kit(server, pki, client_id, SECRET, REDIRECT).await
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.replace("%3A", ":").replace("%2F", "/"))
    })
}

async fn login_with_kit(
    server: &Server,
    pki: &Pki,
    browser: &mut Browser,
    kit: &OidcClient,
    scopes: &[&str],
    params: &AuthParams,
) -> (String, PendingLogin) {
    let (url, pending) = kit.begin(scopes, params);
    match browse(server, pki, browser, url.as_str(), "doctor", true, REDIRECT).await {
        Leg::Callback(query) => (query, pending),
        Leg::Page(status, reason) => {
            panic!("stopped at a page: {status} {reason:?}\n{}", server.log())
        }
    }
}

#[tokio::test]
async fn the_kit_logs_in_with_the_card_consents_and_refreshes() {
    let pki = pki();
    let server = server_with_clients(
        pki,
        &client_toml("kit-rp", r#"id_token_signed_response_alg = "ES256""#),
    );
    let kit = kit(&server, pki, "kit-rp").await;
    let mut browser = Browser::new(pki);
    let (query, pending) = login_with_kit(
        &server,
        pki,
        &mut browser,
        &kit,
        &["profile", "hpki", "offline_access"],
        &AuthParams::hpki_card(),
    )
    .await;
    // RFC 9207: the issuer comes back with the code.
    assert_eq!(
        query_param(&query, "iss").as_deref(),
        Some(server.public("").as_str())
    );
    let callback = CallbackParams::from_query(&query).unwrap();
    let login = kit
        .finish(pending, &callback)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(login.is_hpki_card_login());
    let claims = &login.id_token_claims;
    assert_eq!(claims["hpki_role"], "Medical Doctor");
    assert!(claims["family_name#ja-Hani-JP"].is_string());
    assert!(claims.get("email").is_none(), "email was not requested");
    assert_eq!(
        claims["amr"],
        serde_json::json!(["sc", "pin", "hwk", "mfa"])
    );
    // Pairwise: not the doctor's record ID, and 43 base64url characters.
    assert_eq!(login.subject.as_str().len(), 43);
    let userinfo = kit
        .userinfo(&login.access_token, &login.subject)
        .await
        .unwrap();
    assert_eq!(userinfo.claims["hpki_role"], "Medical Doctor");
    // Refresh rotates; the old refresh token is then a reuse that kills the family.
    let first = login
        .refresh_token
        .clone()
        .expect("offline_access gives a refresh token");
    let refreshed = kit.refresh(&first, &login.subject).await.unwrap();
    let second = refreshed.refresh_token.clone().expect("rotated");
    assert_ne!(first.secret(), second.secret());
    assert!(
        kit.refresh(&first, &login.subject).await.is_err(),
        "reuse refused"
    );
    assert!(
        kit.refresh(&second, &login.subject).await.is_err(),
        "family revoked after reuse"
    );
    // The consent is remembered: the next login goes straight back with a code.
    let (url, pending) = kit.begin(&["profile", "hpki"], &AuthParams::default());
    let response = browser.get(url.as_str()).await;
    assert_eq!(response.status(), 303);
    let back = location(&response);
    assert!(
        back.starts_with(REDIRECT),
        "no consent page the second time: {back}"
    );
    let again = kit
        .finish(
            pending,
            &CallbackParams::from_query(back.split_once('?').unwrap().1).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.subject, login.subject, "pairwise subjects are stable");
}

#[tokio::test]
async fn prompt_none_login_and_consent_required_and_denied_consent() {
    let pki = pki();
    let server = server_with_clients(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let mut browser = Browser::new(pki);
    // No session and prompt=none: login_required back at the client, no page.
    let params = AuthParams::default().prompt(openidconnect::core::CoreAuthPrompt::None);
    let (url, _) = kit.begin(&["profile"], &params);
    let response = browser.get(url.as_str()).await;
    let back = location(&response);
    assert!(
        back.starts_with(REDIRECT) && back.contains("error=login_required"),
        "{back}"
    );
    // Log in, deny consent: access_denied.
    let (url, _) = kit.begin(&["profile"], &AuthParams::default());
    match browse(
        &server,
        pki,
        &mut browser,
        url.as_str(),
        "doctor",
        false,
        REDIRECT,
    )
    .await
    {
        Leg::Callback(query) => assert_eq!(
            query_param(&query, "error").as_deref(),
            Some("access_denied")
        ),
        other => panic!("{other:?}"),
    }
    // Logged in but no consent, prompt=none: consent_required.
    let (url, _) = kit.begin(&["profile"], &params);
    let back = location(&browser.get(url.as_str()).await);
    assert!(back.contains("error=consent_required"), "{back}");
}

#[tokio::test]
async fn untrusted_requests_are_shown_on_a_page_and_never_redirected() {
    let pki = pki();
    let server = server_with_clients(pki, &client_toml("rp", ""));
    let mut browser = Browser::new(pki);
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    for (query, expected) in [
        (
            format!(
                "client_id=rp&redirect_uri=https://evil.example/cb&response_type=code&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
            ),
            "redirect_uri_not_registered",
        ),
        (
            format!(
                "client_id=rp&redirect_uri={REDIRECT}/&response_type=code&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
            ),
            "redirect_uri_not_registered",
        ),
        (
            format!("client_id=nobody&redirect_uri={REDIRECT}&response_type=code&scope=openid"),
            "unknown_client",
        ),
        (
            "redirect_uri=https://evil.example/cb".to_owned(),
            "missing_client",
        ),
    ] {
        let response = browser
            .get(&server.public(&format!("/authorize?{query}")))
            .await;
        assert_eq!(response.status(), 400, "{query}");
        assert!(response.headers().get("location").is_none());
        assert_eq!(
            reason(&response.text().await.unwrap()).as_deref(),
            Some(expected),
            "{query}"
        );
    }
    // Registered client and URI: errors go back to the client with state and iss.
    for (query, error) in [
        (
            format!(
                "response_type=code&scope=profile&code_challenge={challenge}&code_challenge_method=S256"
            ),
            "invalid_scope",
        ),
        (
            "response_type=code&scope=openid".to_owned(),
            "invalid_request",
        ),
        (
            format!(
                "response_type=code&scope=openid&code_challenge={challenge}&code_challenge_method=plain"
            ),
            "invalid_request",
        ),
        (
            format!(
                "response_type=token&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
            ),
            "unsupported_response_type",
        ),
        (
            format!(
                "response_type=code&scope=openid&code_challenge={challenge}&code_challenge_method=S256&request=eyJ"
            ),
            "request_not_supported",
        ),
    ] {
        let url = server.public(&format!(
            "/authorize?client_id=rp&redirect_uri={REDIRECT}&state=s1&{query}"
        ));
        let response = browser.get(&url).await;
        assert_eq!(response.status(), 303, "{query}");
        let back = location(&response);
        assert!(
            back.starts_with(&format!("{REDIRECT}?error={error}")),
            "{query} -> {back}"
        );
        assert!(back.contains("state=s1") && back.contains("iss="), "{back}");
    }
}

/// Runs the browser leg by hand and returns (code, verifier).
async fn code_for(server: &Server, pki: &Pki, client_id: &str) -> (String, String) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let url = server.public(&format!(
        "/authorize?client_id={client_id}&redirect_uri={REDIRECT}&response_type=code&scope=openid%20profile%20offline_access&state=x&code_challenge={challenge}&code_challenge_method=S256"
    ));
    let mut browser = Browser::new(pki);
    match browse(server, pki, &mut browser, &url, "doctor", true, REDIRECT).await {
        Leg::Callback(query) => (query_param(&query, "code").unwrap(), verifier.to_owned()),
        other => panic!("{other:?}\n{}", server.log()),
    }
}

async fn token_request(
    server: &Server,
    pki: &Pki,
    basic: Option<(&str, &str)>,
    form: &str,
) -> (u16, serde_json::Value) {
    let mut request = client(pki, None)
        .post(server.public("/token"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form.to_owned());
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn token_endpoint_refuses_replay_theft_pkce_mismatch_and_bad_secrets() {
    let pki = pki();
    let clients = format!("{}{}", client_toml("rp", ""), client_toml("thief", ""));
    let server = server_with_clients(pki, &clients);
    let form = |code: &str, verifier: &str| {
        format!(
            "grant_type=authorization_code&code={code}&redirect_uri={REDIRECT}&code_verifier={verifier}"
        )
    };
    // A code stolen by another client.
    let (code, verifier) = code_for(&server, pki, "rp").await;
    let (status, body) = token_request(
        &server,
        pki,
        Some(("thief", SECRET)),
        &form(&code, &verifier),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // PKCE mismatch.
    let (code, _) = code_for(&server, pki, "rp").await;
    let (status, body) = token_request(
        &server,
        pki,
        Some(("rp", SECRET)),
        &form(&code, "wrong-verifier-wrong-verifier-wrong-verifier-1"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Bad secret: 401 invalid_client.
    let (code, verifier) = code_for(&server, pki, "rp").await;
    let (status, body) = token_request(
        &server,
        pki,
        Some(("rp", "not-the-secret-000000")),
        &form(&code, &verifier),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // Unknown client.
    let (status, body) = token_request(
        &server,
        pki,
        Some(("nobody", SECRET)),
        &form(&code, &verifier),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // The right request works once; the replay fails and revokes the access token.
    let (code, verifier) = code_for(&server, pki, "rp").await;
    let (status, tokens) =
        token_request(&server, pki, Some(("rp", SECRET)), &form(&code, &verifier)).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string() && tokens["token_type"] == "Bearer");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let userinfo = |token: String| {
        let http = client(pki, None);
        let url = server.public("/userinfo");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(userinfo(access.clone()).await, 200);
    // No token at all: the challenge without an error code (RFC 6750 §3.1).
    let bare = client(pki, None)
        .get(server.public("/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    let challenge = bare.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "{challenge}"
    );
    let forged = client(pki, None)
        .get(server.public("/userinfo"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert!(
        forged.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, body) =
        token_request(&server, pki, Some(("rp", SECRET)), &form(&code, &verifier)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        userinfo(access).await,
        401,
        "the replay revoked the access token"
    );
    // Unsupported grant, missing grant type, JSON body.
    let (status, body) = token_request(
        &server,
        pki,
        Some(("rp", SECRET)),
        "grant_type=password&username=a&password=b",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body) = token_request(&server, pki, Some(("rp", SECRET)), "code=abc").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = token_request(
        &server,
        pki,
        Some(("rp", SECRET)),
        "grant_type=authorization_code&grant_type=authorization_code",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn no_client_certificate_means_no_login() {
    let pki = pki();
    let server = server_with_clients(pki, &client_toml("rp", ""));
    let mut browser = Browser::new(pki);
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let mut url = server.public(&format!(
        "/authorize?client_id=rp&redirect_uri={REDIRECT}&response_type=code&scope=openid&code_challenge={challenge}&code_challenge_method=S256"
    ));
    // Follow to the login origin, then try it without a certificate, and with a revoked card.
    for _ in 0..4 {
        let response = browser.get(&url).await;
        url = location(&response);
        if url.starts_with('/') {
            url = server.public(&url);
        }
        if url.starts_with(&server.login("")) {
            break;
        }
    }
    assert!(url.starts_with(&server.login("")), "{url}");
    assert!(matches!(
        present(&client(pki, None), &url).await,
        CardStep::Handshake(_)
    ));
    match present(&client(pki, Some("revoked")), &url).await {
        CardStep::Refused(403, code) => assert_eq!(code, "revoked"),
        other => panic!("{other:?}"),
    }
}

/// Production shape: two IdP processes sharing PostgreSQL and Redis serve one flow.
#[tokio::test]
async fn two_processes_on_postgres_and_redis_serve_one_flow() {
    let (Some(pg), Some(redis)) = (
        harness::required_env("IDP_TEST_POSTGRES_URL"),
        harness::required_env("IDP_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let pki = pki();
    let database = harness::PgDatabase::create(&pg, &format!("idp_oidc_{}", std::process::id()));
    let options = || ServerOptions {
        database: Some(database.url.clone()),
        ephemeral: redis.clone(),
        oidc_extra: client_toml("rp", "pre_approved = true"),
        ..ServerOptions::default()
    };
    let first = start(pki, options());
    let second = start(
        pki,
        ServerOptions {
            import_doctors: false,
            ..options()
        },
    );
    // Authorize (and log in) on the first, redeem the code on the second.
    let (code, verifier) = code_for(&first, pki, "rp").await;
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={REDIRECT}&code_verifier={verifier}"
    );
    let (status, tokens) = token_request(&second, pki, Some(("rp", SECRET)), &form).await;
    assert_eq!(status, 200, "{tokens}\n{}", second.log());
    let access = tokens["access_token"].as_str().unwrap();
    for server in [&first, &second] {
        let response = client(pki, None)
            .get(server.public("/userinfo"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Both processes sign with the same published keys.
    let jwks = |server: &Server| {
        let http = client(pki, None);
        let url = server.public("/jwks");
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(jwks(&first).await, jwks(&second).await);
    // A refresh on the first, then the old token replayed on the second: reuse detected,
    // and the rotated token dies on the first too.
    let old = tokens["refresh_token"]
        .as_str()
        .expect("offline_access")
        .to_owned();
    let (status, rotated) = token_request(
        &first,
        pki,
        Some(("rp", SECRET)),
        &format!("grant_type=refresh_token&refresh_token={old}"),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = token_request(
        &second,
        pki,
        Some(("rp", SECRET)),
        &format!("grant_type=refresh_token&refresh_token={old}"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token_request(
        &first,
        pki,
        Some(("rp", SECRET)),
        &format!("grant_type=refresh_token&refresh_token={new}"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    drop(first);
    drop(second);
}

#[tokio::test]
async fn a_doctor_sees_and_withdraws_a_consent_which_revokes_the_refresh_tokens() {
    let pki = pki();
    let server = server_with_clients(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let mut browser = Browser::new(pki);
    let (query, pending) = login_with_kit(
        &server,
        pki,
        &mut browser,
        &kit,
        &["profile", "offline_access"],
        &AuthParams::default(),
    )
    .await;
    let login = kit
        .finish(pending, &CallbackParams::from_query(&query).unwrap())
        .await
        .unwrap();
    let refresh = login.refresh_token.clone().unwrap();
    let account = browser
        .get(&server.public("/account"))
        .await
        .text()
        .await
        .unwrap();
    assert!(account.contains(r#"data-client="rp""#), "{account}");
    assert!(account.contains("氏名"));
    // A foreign origin cannot withdraw it.
    let response = browser
        .post_form(
            &server.public("/account/consents/revoke"),
            "https://evil.example",
            "client_id=rp",
        )
        .await;
    assert_eq!(response.status(), 403);
    let response = browser
        .post_form(
            &server.public("/account/consents/revoke"),
            &server.public(""),
            "client_id=rp",
        )
        .await;
    assert_eq!(response.status(), 303);
    let account = browser
        .get(&server.public("/account"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!account.contains(r#"data-client="rp""#));
    assert!(
        kit.refresh(&refresh, &login.subject).await.is_err(),
        "refresh tokens revoked"
    );
    // The next login asks again.
    let (url, _) = kit.begin(&["profile"], &AuthParams::default());
    let response = browser.get(url.as_str()).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains(r#"name="pending""#));
    // The audit log has the consent, its withdrawal and the tokens, in that order.
    let out = std::process::Command::new(harness::idp_bin())
        .args(["audit", "export", "-c", server.config.to_str().unwrap()])
        .output()
        .unwrap();
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| r["event"]["kind"].as_str().unwrap().to_owned())
        .filter(|k| k.starts_with("consent.") || k == "token.issued")
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("consent.given"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("consent.revoked"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "token.issued"), "{kinds:?}");
}
