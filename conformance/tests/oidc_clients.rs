//! End to end: client authentication beyond secrets, certificate-bound tokens, token
//! introspection and revocation, and logout (RP-initiated and back-channel).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use harness::{
    Browser, Leg, Pki, Server, ServerOptions, browse, client, client_with, location, pki, start,
};

const REDIRECT: &str = "https://rp.example/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Logs in with the doctor card through the browser leg of `client_id` (pre-approved);
/// returns the code and the session cookie.
async fn code_and_session(server: &Server, pki: &Pki, client_id: &str) -> (String, String) {
    let url = server.public(&format!(
        "/authorize?client_id={client_id}&redirect_uri={REDIRECT}&response_type=code&scope=openid%20profile%20hpki&state=s&nonce=n&code_challenge={CHALLENGE}&code_challenge_method=S256"
    ));
    let mut browser = Browser::new(pki);
    let query = match browse(server, pki, &mut browser, &url, "doctor", true, REDIRECT).await {
        Leg::Callback(query) => query,
        other => panic!("{other:?}\n{}", server.log()),
    };
    let code = query
        .split('&')
        .find_map(|p| p.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {query}"))
        .to_owned();
    let session = browser
        .cookies
        .iter()
        .find(|c| c.starts_with("__Host-idp_session="))
        .expect("a session")
        .clone();
    (code, session)
}

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &str,
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let mut request = http
        .post(url)
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
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn code_form(code: &str) -> String {
    format!(
        "grant_type=authorization_code&code={code}&redirect_uri={REDIRECT}&code_verifier={VERIFIER}"
    )
}

struct JwtClient {
    key: EncodingKey,
    public_pem: String,
}

fn jwt_client(dir: &Path) -> (JwtClient, std::path::PathBuf) {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("rp-key-1".into());
    let jwks = jsonwebtoken::jwk::JwkSet { keys: vec![jwk] };
    let path = dir.join("jwt-rp.jwks.json");
    std::fs::write(&path, serde_json::to_string(&jwks).unwrap()).unwrap();
    (
        JwtClient {
            key,
            public_pem: pair.public_key_pem(),
        },
        path,
    )
}

fn assertion(client: &JwtClient, aud: &str, exp_in: i64, jti: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rp-key-1".into());
    let iat = now() as i64;
    let claims = serde_json::json!({
        "iss": "jwt-rp", "sub": "jwt-rp", "aud": aud, "jti": jti,
        "iat": iat, "exp": iat + exp_in,
    });
    jsonwebtoken::encode(&header, &claims, &client.key).unwrap()
}

fn assertion_form(code: &str, assertion: &str) -> String {
    format!(
        "{}&client_id=jwt-rp&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}",
        code_form(code)
    )
}

#[tokio::test]
async fn private_key_jwt_accepts_a_fresh_assertion_and_refuses_the_attacks() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (rp, jwks) = jwt_client(dir.path());
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: format!(
                r#"
[[oidc.clients]]
client_id = "jwt-rp"
name = "JWT RP"
auth_method = "private_key_jwt"
jwks_file = "{}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "hpki"]
pre_approved = true
"#,
                jwks.display()
            ),
            ..ServerOptions::default()
        },
    );
    let http = client(pki, None);
    let token_url = server.public("/token");
    let aud = server.public("/token");
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let body = serde_json::json!({"iss": "jwt-rp", "sub": "jwt-rp", "aud": aud, "jti": "none-1", "exp": now() + 60});
    let alg_none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none"})),
        b64(body.clone())
    );
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &body,
        &EncodingKey::from_secret(rp.public_pem.as_bytes()),
    )
    .unwrap();
    let attacks = [
        ("expired", assertion(&rp, &aud, -120, "exp-1")),
        (
            "wrong aud",
            assertion(&rp, "https://other.example/token", 60, "aud-1"),
        ),
        ("too long", assertion(&rp, &aud, 3600, "long-1")),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
    ];
    for (name, jwt) in attacks {
        let (code, _) = code_and_session(&server, pki, "jwt-rp").await;
        let (status, body) = post_form(&http, &token_url, &assertion_form(&code, &jwt), None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{name}: {body}"
        );
    }
    // A fresh assertion works; the same assertion again is a replay.
    let jwt = assertion(&rp, &aud, 60, "fresh-1");
    let (code, _) = code_and_session(&server, pki, "jwt-rp").await;
    let (status, body) = post_form(&http, &token_url, &assertion_form(&code, &jwt), None).await;
    assert_eq!(status, 200, "{body}\n{}", server.log());
    let (code, _) = code_and_session(&server, pki, "jwt-rp").await;
    let (status, body) = post_form(&http, &token_url, &assertion_form(&code, &jwt), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed jti"
    );
    // The issuer is an accepted audience too.
    let jwt = assertion(&rp, &server.public(""), 60, "issuer-aud-1");
    let (code, _) = code_and_session(&server, pki, "jwt-rp").await;
    let (status, _) = post_form(&http, &token_url, &assertion_form(&code, &jwt), None).await;
    assert_eq!(status, 200);
}

/// A relying party's TLS client CA and certificate (RFC 8705 PKI method).
fn rp_certificate(
    dir: &Path,
) -> (
    std::path::PathBuf,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    String,
) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Regional Network Client CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec!["rp.example".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "rp.example");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.join("rp-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let thumbprint = hex::encode(Sha256::digest(leaf_cert.der()));
    (
        ca_path,
        vec![leaf_cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        thumbprint,
    )
}

#[tokio::test]
async fn tls_client_auth_binds_tokens_to_the_certificate() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key, thumbprint) = rp_certificate(dir.path());
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: format!(
                r#"mtls_client_cas = ["{ca}"]
[[oidc.clients]]
client_id = "mtls-rp"
name = "mTLS RP"
auth_method = "tls_client_auth"
tls_client_certificate_sha256 = "{thumbprint}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "hpki"]
pre_approved = true
"#,
                ca = ca.display()
            ),
            ..ServerOptions::default()
        },
    );
    let rp = client_with(pki, Some((chain, key)));
    // Over the public origin there is no certificate: refused.
    let (code, _) = code_and_session(&server, pki, "mtls-rp").await;
    let form = format!("{}&client_id=mtls-rp", code_form(&code));
    let (status, body) = post_form(&client(pki, None), &server.public("/token"), &form, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // Over the mTLS origin (the discovery document's mtls_endpoint_aliases) it works.
    let (code, _) = code_and_session(&server, pki, "mtls-rp").await;
    let form = format!("{}&client_id=mtls-rp", code_form(&code));
    let (status, tokens) = post_form(&rp, &server.login("/token"), &form, None).await;
    assert_eq!(status, 200, "{tokens}\n{}", server.log());
    let access = tokens["access_token"].as_str().unwrap();
    // The token is bound: useless without the certificate, or with another one.
    let userinfo = |http: reqwest::Client, url: String| async move {
        http.get(url)
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(userinfo(rp.clone(), server.login("/userinfo")).await, 200);
    assert_eq!(
        userinfo(client(pki, None), server.public("/userinfo")).await,
        401
    );
    assert_eq!(
        userinfo(client(pki, Some("doctor")), server.login("/userinfo")).await,
        401
    );
    // Introspection shows the binding (RFC 8705 §3.2).
    let (status, info) = post_form(
        &rp,
        &server.login("/introspect"),
        &format!("token={access}&client_id=mtls-rp"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(info["active"], true);
    let x5t =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hex::decode(&thumbprint).unwrap());
    assert_eq!(info["cnf"]["x5t#S256"], x5t.as_str());
    // Revocation, then introspection says inactive.
    let (status, _) = post_form(
        &rp,
        &server.login("/revoke"),
        &format!("token={access}&client_id=mtls-rp"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, info) = post_form(
        &rp,
        &server.login("/introspect"),
        &format!("token={access}&client_id=mtls-rp"),
        None,
    )
    .await;
    assert_eq!(info, serde_json::json!({"active": false}));
}

fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn logout_reaches_relying_parties_by_back_channel_and_rp_initiated_logout_redirects() {
    let pki = pki();
    let BackchannelRp {
        server,
        mut received,
        session,
        tokens,
    } = backchannel_rp(Vec::new()).await;
    let http = client(pki, None);
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let id_claims = jwt_claims(&id_token);
    // RP-initiated logout with the ID token as hint: straight to the registered URI.
    let response = http
        .get(server.public(&format!(
            "/end_session?id_token_hint={id_token}&post_logout_redirect_uri=https://rp.example/bye&state=st"
        )))
        .header(reqwest::header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "https://rp.example/bye?state=st");
    // The RP got a logout token for this session.
    let token = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("a back-channel logout arrives")
        .unwrap();
    let token = token.as_str();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let claims = jwt_claims(token);
    assert_eq!(claims["aud"], "bc-rp");
    assert_eq!(claims["sid"], id_claims["sid"]);
    assert_eq!(claims["sub"], id_claims["sub"]);
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(claims.get("nonce").is_none());
    // The session is gone.
    let (status, _) = harness::session_json(&server, pki, &session).await;
    assert_eq!(status, 401);
    // An unregistered post-logout URI, or a forged hint, is refused on a page.
    for query in [
        format!("id_token_hint={id_token}&post_logout_redirect_uri=https://evil.example/"),
        "id_token_hint=eyJhbGciOiJub25lIn0.e30.&post_logout_redirect_uri=https://rp.example/bye"
            .to_owned(),
    ] {
        let response = http
            .get(server.public(&format!("/end_session?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert!(response.headers().get("location").is_none());
    }
}

#[tokio::test]
async fn the_admin_api_manages_clients_behind_its_token() {
    let pki = pki();
    let token = "admin-token-0123456789abcdef";
    let server = start(
        pki,
        ServerOptions {
            tables: format!(
                "[admin]\ntoken_sha256 = \"{}\"\n",
                hex::encode(Sha256::digest(token))
            ),
            ..ServerOptions::default()
        },
    );
    let http = client(pki, None);
    let url = server.public("/admin/api/clients");
    for bad in [None, Some("wrong-token-0123456789")] {
        let mut request = http.get(&url);
        if let Some(bad) = bad {
            request = request.bearer_auth(bad);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let created = http
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({
            "id": "api-rp", "name": "API RP", "redirect_uris": [REDIRECT],
            "scopes": ["profile"], "id_token_alg": "ES256"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert!(created["client_secret"].as_str().unwrap().len() >= 32);
    assert!(
        created.get("secret_digest").is_none(),
        "digests never leave"
    );
    // Invalid metadata is refused with the reason.
    let refused = http
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"id": "bad", "name": "Bad", "redirect_uris": ["http://evil.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // The new client works at once: its authorization request goes to the card login.
    let response = http
        .get(server.public(&format!(
            "/authorize?client_id=api-rp&redirect_uri={REDIRECT}&response_type=code&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=S256"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert!(location(&response).starts_with("/login?"));
    let listed: serde_json::Value = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let rotated: serde_json::Value = http
        .post(format!("{url}/api-rp/rotate-secret"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(rotated["client_secret"], created["client_secret"]);
    let removed = http
        .delete(format!("{url}/api-rp"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let gone = http
        .get(format!("{url}/api-rp"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    // Each change is on record, by the admin API; the refused one is not; no secret is.
    let api = |kind: &str| {
        (
            kind.to_owned(),
            "admin-api".to_owned(),
            Some("api-rp".to_owned()),
        )
    };
    assert_eq!(
        admin_records(&server),
        [
            api("admin.client.added"),
            api("admin.client.secret_rotated"),
            api("admin.client.removed")
        ]
    );
    let export = server.idp(&["audit", "export"]);
    for secret in [&created["client_secret"], &rotated["client_secret"]] {
        assert!(!export.contains(secret.as_str().unwrap()));
    }

    // The audit log refuses writes (a full disk, a broken database): a change it cannot
    // record answers 503 temporarily_unavailable, not a client error.
    let db = server.dir.path().join("idp.db");
    let refuse = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.execute(\"CREATE TRIGGER audit_down BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'audit down'); END\"); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(refuse.success());
    let unrecorded = http
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"id": "late-rp", "name": "Late", "redirect_uris": [REDIRECT]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unrecorded.status(), 503);
    let body: serde_json::Value = unrecorded.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

async fn id_token_kid(server: &Server, pki: &Pki, secret: &str) -> String {
    let (code, _) = code_and_session(server, pki, "cli-rp").await;
    let (status, tokens) = post_form(
        &client(pki, None),
        &server.public("/token"),
        &code_form(&code),
        Some(("cli-rp", secret)),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    jsonwebtoken::decode_header(tokens["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap()
}

async fn published_kids(server: &Server, pki: &Pki) -> Vec<String> {
    let jwks: serde_json::Value = client(pki, None)
        .get(server.public("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn clients_added_by_the_cli_work_and_keys_rotate_with_overlap() {
    let pki = pki();
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: "key_reload_secs = 1\nkey_publish_before_use_secs = 3\n".into(),
            ..ServerOptions::default()
        },
    );
    let out = server.idp(&[
        "client",
        "add",
        "--id",
        "cli-rp",
        "--name",
        "CLI RP",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "profile",
        "--id-token-alg",
        "ES256",
        "--pre-approved",
    ]);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("the secret is printed once")
        .to_owned();
    assert!(server.idp(&["client", "list"]).contains("\"cli-rp\""));
    assert!(!server.idp(&["client", "list"]).contains(&secret));
    let before = published_kids(&server, pki).await;
    let old_kid = id_token_kid(&server, pki, &secret).await;
    assert!(before.contains(&old_kid));
    // Rotate: the new key is published (after a reload) before it signs.
    let out = server.idp(&["keys", "rotate", "--alg", "ES256", "--activate-in", "4"]);
    let new_kid = out.split_whitespace().nth(1).unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let during = published_kids(&server, pki).await;
    assert!(
        during.contains(&new_kid) && during.contains(&old_kid),
        "{during:?}"
    );
    assert_eq!(
        id_token_kid(&server, pki, &secret).await,
        old_kid,
        "not signing yet"
    );
    // After activation the new key signs; the old one is still published for its tokens.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    assert_eq!(id_token_kid(&server, pki, &secret).await, new_kid);
    assert!(published_kids(&server, pki).await.contains(&old_kid));
    assert!(
        server
            .idp(&["keys", "list"])
            .contains("retired, still published")
    );
    // Rotating the secret invalidates the old one; removing the client ends it.
    let rotated = server.idp(&["client", "rotate-secret", "cli-rp"]);
    assert!(!rotated.contains(&secret));
    let (code, _) = code_and_session(&server, pki, "cli-rp").await;
    let (status, _) = post_form(
        &client(pki, None),
        &server.public("/token"),
        &code_form(&code),
        Some(("cli-rp", &secret)),
    )
    .await;
    assert_eq!(status, 401);
    server.idp(&["client", "remove", "cli-rp"]);
    let response = client(pki, None)
        .get(server.public(&format!(
            "/authorize?client_id=cli-rp&redirect_uri={REDIRECT}&response_type=code&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=S256"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let admin = admin_records(&server);
    let cli = format!("cli:{user}");
    let expected = [
        ("admin.client.added", cli.as_str(), Some("cli-rp")),
        ("admin.key.rotated", cli.as_str(), None),
        ("admin.client.secret_rotated", cli.as_str(), Some("cli-rp")),
        ("admin.client.removed", cli.as_str(), Some("cli-rp")),
    ];
    assert_eq!(
        admin,
        expected.map(|(k, a, t)| (k.to_owned(), a.to_owned(), t.map(str::to_owned)))
    );
    assert!(
        !server.idp(&["audit", "export"]).contains(&secret),
        "no secret on record"
    );
}

/// The administrative changes made by people on record, in order: (kind, actor, relying
/// party). The keys the server generated at its first start (actor `system`) are checked to
/// be there and left out.
fn admin_records(server: &Server) -> Vec<(String, String, Option<String>)> {
    let records = server.audit_records();
    assert!(records.iter().any(|r| r["event"]["kind"] == "admin.key.generated"
        && r["event"]["actor"] == "system"));
    records
        .into_iter()
        .filter(|r| r["event"]["kind"].as_str().unwrap().starts_with("admin."))
        .filter(|r| r["event"]["actor"] != "system")
        .map(|r| {
            (
                r["event"]["kind"].as_str().unwrap().to_owned(),
                r["event"]["actor"].as_str().unwrap().to_owned(),
                r["event"]["relying_party"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// A relying party with a back-channel logout endpoint that answers `statuses` in turn
/// (`harness::logout_receiver`), and a doctor's IdP session in which it received tokens.
struct BackchannelRp {
    server: Server,
    received: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// The IdP session cookie.
    session: String,
    /// The token response.
    tokens: serde_json::Value,
}

async fn backchannel_rp(statuses: Vec<u16>) -> BackchannelRp {
    let pki = pki();
    let (port, received) = harness::logout_receiver(statuses).await;
    let secret = "logout-rp-secret-0123456789";
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: format!(
                r#"
[[oidc.clients]]
client_id = "bc-rp"
name = "Back-channel RP"
secret_sha256 = "{digest}"
auth_method = "client_secret_basic"
redirect_uris = ["{REDIRECT}"]
post_logout_redirect_uris = ["https://rp.example/bye"]
backchannel_logout_uri = "http://127.0.0.1:{port}/backchannel"
scopes = ["openid", "profile"]
pre_approved = true
"#,
                digest = hex::encode(Sha256::digest(secret))
            ),
            ..ServerOptions::default()
        },
    );
    let (code, session) = code_and_session(&server, pki, "bc-rp").await;
    let (status, tokens) = post_form(
        &client(pki, None),
        &server.public("/token"),
        &code_form(&code),
        Some(("bc-rp", secret)),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    BackchannelRp {
        server,
        received,
        session,
        tokens,
    }
}

/// The doctor logs out at the IdP (its logout form).
async fn logout_at_the_idp(rp: &BackchannelRp) {
    let response = client(pki(), None)
        .post(rp.server.public("/logout"))
        .header(reqwest::header::COOKIE, &rp.session)
        .header(reqwest::header::ORIGIN, rp.server.public(""))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection() || response.status() == 200);
}

async fn next_token(received: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(15), received.recv())
        .await
        .expect("a back-channel logout attempt arrives")
        .expect("the receiver runs")
}

#[tokio::test]
async fn a_back_channel_logout_is_tried_again_after_server_errors_not_after_a_refusal() {
    // Two 503s, then 200: three attempts with the same token.
    let mut rp = backchannel_rp(vec![503, 503]).await;
    logout_at_the_idp(&rp).await;
    let first = next_token(&mut rp.received).await;
    assert_eq!(next_token(&mut rp.received).await, first);
    assert_eq!(next_token(&mut rp.received).await, first);
    let mut delivered = false;
    for _ in 0..50 {
        if rp.server.log().contains("back-channel logout delivered") {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(delivered, "{}", rp.server.log());

    // A 400 (the RP refuses the token) is final: no second attempt within the retry pause.
    let mut rp = backchannel_rp(vec![400]).await;
    logout_at_the_idp(&rp).await;
    next_token(&mut rp.received).await;
    let again = tokio::time::timeout(std::time::Duration::from_secs(3), rp.received.recv()).await;
    assert!(again.is_err(), "a refused logout token is not sent again");
    assert!(rp.server.log().contains("back-channel logout refused"));
}
