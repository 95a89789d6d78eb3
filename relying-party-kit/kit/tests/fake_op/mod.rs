//! A fake OpenID Provider for the kit's tests: discovery, JWKS, authorize, token and userinfo
//! on 127.0.0.1, with knobs to make each of its answers wrong in one specific way.
//!
//! Keys are made at test time (RSA with the `rsa` crate, P-256 and Ed25519 with ring) and
//! tokens are signed with ring directly, so a test controls every byte of the JWS.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Map, Value, json};

pub const CLIENT_ID: &str = "rp-test";
pub const CLIENT_SECRET: &str = "s3cret:with/odd+chars";
pub const REDIRECT_URI: &str = "https://rp.test/callback";
pub const SUBJECT: &str = "pairwise-subject-1";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Signer {
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    signer: Signer,
    pub jwk: Value,
}

fn rsa_pkcs8() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    // One RSA key per test binary: generation is the slow part.
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
        let der = key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec();
        (der, key.n().to_bytes_be(), key.e().to_bytes_be())
    })
}

impl TestKey {
    pub fn rs256(kid: &str) -> Self {
        Self::rsa(kid, "RS256", &signature::RSA_PKCS1_SHA256)
    }

    pub fn ps256(kid: &str) -> Self {
        Self::rsa(kid, "PS256", &signature::RSA_PSS_SHA256)
    }

    fn rsa(kid: &str, alg: &'static str, encoding: &'static dyn signature::RsaEncoding) -> Self {
        let (der, n, e) = rsa_pkcs8();
        Self {
            kid: kid.into(),
            alg,
            signer: Signer::Rsa(RsaKeyPair::from_pkcs8(der).expect("RSA"), encoding),
            jwk: json!({"kty": "RSA", "use": "sig", "alg": alg, "kid": kid, "n": b64(n), "e": b64(e)}),
        }
    }

    pub fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256");
        let pair = EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).expect("P-256");
        let point = pair.public_key().as_ref().to_vec(); // 0x04 || x || y
        Self {
            kid: kid.into(),
            alg: "ES256",
            jwk: json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            signer: Signer::Ec(pair),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519");
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("Ed25519");
        Self {
            kid: kid.into(),
            alg: "EdDSA",
            jwk: json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "kid": kid, "crv": "Ed25519",
                        "x": b64(pair.public_key().as_ref())}),
            signer: Signer::Ed(pair),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair, encoding) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), message, &mut sig)
                    .expect("RSA sign");
                sig
            }
            Signer::Ec(pair) => pair
                .sign(&SystemRandom::new(), message)
                .expect("ECDSA sign")
                .as_ref()
                .to_vec(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// `at_hash` for this key's algorithm (OIDC Core §3.1.3.6; SHA-512 for Ed25519).
    pub fn at_hash(&self, access_token: &str) -> String {
        let digest = if self.alg == "EdDSA" {
            ring::digest::digest(&ring::digest::SHA512, access_token.as_bytes())
        } else {
            ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes())
        };
        let d = digest.as_ref();
        b64(&d[..d.len() / 2])
    }
}

/// How the next ID token goes wrong (all off = a correct token).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Sign with this kid (must be in `signers`); default the first published key.
    pub sign_with: Option<String>,
    /// Put this kid in the header instead of the signer's.
    pub header_kid: Option<String>,
    /// Send `alg: none` and an empty signature.
    pub alg_none: bool,
    /// Flip a bit of the signature.
    pub corrupt_signature: bool,
    /// Claims to set (a `null` removes the claim) over the defaults.
    pub claims: Map<String, Value>,
    /// Send a wrong `at_hash`.
    pub wrong_at_hash: bool,
    /// Leave the ID token out of the token response.
    pub omit_id_token: bool,
    /// Userinfo answers for this subject instead.
    pub userinfo_subject: Option<String>,
}

/// What the fake provider's discovery document announces.
#[derive(Clone, Debug)]
pub struct Announce {
    pub iss_parameter_supported: bool,
    pub auth_methods: Vec<&'static str>,
    pub end_session: bool,
}

impl Default for Announce {
    fn default() -> Self {
        Self {
            iss_parameter_supported: true,
            auth_methods: vec!["client_secret_basic", "client_secret_post"],
            end_session: true,
        }
    }
}

struct Grant {
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
    scope: String,
}

/// The provider's state, shared with its handlers and the test.
pub struct FakeOp {
    pub issuer: String,
    pub announce: Announce,
    /// The TLS listener refuses connections without a verified client certificate, so any
    /// token request without a secret that reaches the handler is `tls_client_auth`.
    pub client_cert_required: bool,
    /// Keys that can sign (published or not).
    signers: Mutex<Vec<Arc<TestKey>>>,
    /// Kids in the JWKS.
    published: Mutex<Vec<String>>,
    pub plan: Mutex<Plan>,
    grants: Mutex<HashMap<String, Grant>>,
    pub jwks_hits: AtomicUsize,
    pub token_hits: AtomicUsize,
    /// `basic` or `post`: how the last token request authenticated.
    pub last_client_auth: Mutex<Option<&'static str>>,
    /// The last authorization request's query parameters.
    pub last_authorize: Mutex<Vec<(String, String)>>,
    counter: AtomicUsize,
}

impl FakeOp {
    /// Adds a signing key and publishes it in the JWKS.
    pub fn publish(&self, key: TestKey) {
        self.published.lock().expect("lock").push(key.kid.clone());
        self.signers.lock().expect("lock").push(Arc::new(key));
    }

    /// Adds a key that can sign but is not in the JWKS.
    pub fn add_unpublished(&self, key: TestKey) {
        self.signers.lock().expect("lock").push(Arc::new(key));
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.plan.lock().expect("lock") = plan;
    }

    fn signer(&self, kid: Option<&str>) -> Arc<TestKey> {
        let signers = self.signers.lock().expect("lock");
        let wanted = kid
            .map(str::to_owned)
            .unwrap_or_else(|| self.published.lock().expect("lock")[0].clone());
        signers
            .iter()
            .rev()
            .find(|k| k.kid == wanted)
            .cloned()
            .expect("no such signer")
    }

    fn jwks(&self) -> Value {
        let published = self.published.lock().expect("lock");
        let signers = self.signers.lock().expect("lock");
        let keys: Vec<Value> = published
            .iter()
            .filter_map(|kid| signers.iter().find(|k| &k.kid == kid))
            .map(|k| k.jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::SeqCst))
    }

    /// A signed ID token following the current plan.
    pub fn id_token(&self, nonce: Option<&str>, access_token: &str) -> String {
        let plan = self.plan.lock().expect("lock").clone();
        let key = self.signer(plan.sign_with.as_deref());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": SUBJECT,
            "aud": CLIENT_ID,
            "exp": now + 300,
            "iat": now,
            "auth_time": now - 5,
            "acr": idp_vocabulary::authn::ACR_HPKI_CARD,
            "amr": idp_vocabulary::authn::AMR_HPKI_CARD,
            "name": "Taro Nichii",
            "name#ja-Hani-JP": "日医　太郎",
            "name#ja-Kana-JP": "ニチイ　タロウ",
            "family_name": "Nichii",
            "family_name#ja-Hani-JP": "日医",
            "family_name#ja-Kana-JP": "ニチイ",
            "given_name": "Taro",
            "given_name#ja-Hani-JP": "太郎",
            "given_name#ja-Kana-JP": "タロウ",
            "hpki_role": "Medical Doctor",
            "hpki_issuer": "CN=HPKI-01-MedCA-forNonRepudiation,O=Japan Medical Association,C=JP",
        });
        let object = claims.as_object_mut().expect("object");
        if let Some(nonce) = nonce {
            object.insert("nonce".into(), json!(nonce));
        }
        let at_hash = if plan.wrong_at_hash {
            key.at_hash("another access token")
        } else {
            key.at_hash(access_token)
        };
        object.insert("at_hash".into(), json!(at_hash));
        for (name, value) in plan.claims {
            if value.is_null() {
                object.remove(&name);
            } else {
                object.insert(name, value);
            }
        }
        let mut header = json!({"typ": "JWT", "alg": key.alg, "kid": key.kid});
        if let Some(kid) = &plan.header_kid {
            header["kid"] = json!(kid);
        }
        if plan.alg_none {
            header = json!({"typ": "JWT", "alg": "none"});
        }
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        if plan.alg_none {
            return format!("{signing_input}.");
        }
        let mut sig = key.sign(signing_input.as_bytes());
        if plan.corrupt_signature {
            sig[7] ^= 0x01;
        }
        format!("{signing_input}.{}", b64(&sig))
    }
}

async fn discovery(op: web::Data<FakeOp>) -> HttpResponse {
    let issuer = &op.issuer;
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": op.announce.auth_methods,
        "authorization_response_iss_parameter_supported": op.announce.iss_parameter_supported,
    });
    if op.announce.end_session {
        doc["end_session_endpoint"] = json!(format!("{issuer}/end_session"));
    }
    HttpResponse::Ok().json(doc)
}

async fn jwks(op: web::Data<FakeOp>) -> HttpResponse {
    op.jwks_hits.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(op.jwks())
}

async fn authorize(op: web::Data<FakeOp>, req: HttpRequest) -> HttpResponse {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    *op.last_authorize.lock().expect("lock") = params.clone();
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if get("response_type").as_deref() != Some("code")
        || get("client_id").as_deref() != Some(CLIENT_ID)
        || get("code_challenge_method").as_deref() != Some("S256")
    {
        return HttpResponse::BadRequest().body("bad authorization request");
    }
    let (Some(redirect_uri), Some(challenge), Some(state)) =
        (get("redirect_uri"), get("code_challenge"), get("state"))
    else {
        return HttpResponse::BadRequest().body("missing parameter");
    };
    let code = op.fresh("code");
    op.grants.lock().expect("lock").insert(
        code.clone(),
        Grant {
            nonce: get("nonce"),
            challenge,
            redirect_uri: redirect_uri.clone(),
            scope: get("scope").unwrap_or_default(),
        },
    );
    let mut location = url::Url::parse(&redirect_uri).expect("redirect URI");
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state)
        .append_pair("iss", &op.issuer);
    HttpResponse::Found()
        .insert_header(("Location", location.to_string()))
        .finish()
}

fn token_error(error: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": error }))
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let header = req.headers().get("authorization")?.to_str().ok()?;
    let decoded = STANDARD.decode(header.strip_prefix("Basic ")?).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

async fn token(op: web::Data<FakeOp>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    op.token_hits.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (auth, client_id, secret) = match basic_credentials(&req) {
        Some((id, secret)) => ("basic", id, secret),
        None => (
            "post",
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    let auth = if auth == "post" && secret.is_empty() && op.client_cert_required {
        "tls"
    } else {
        auth
    };
    if client_id != CLIENT_ID || (auth != "tls" && secret != CLIENT_SECRET) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client" }));
    }
    *op.last_client_auth.lock().expect("lock") = Some(auth);
    let access_token = op.fresh("access");
    let (nonce, refresh) = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(grant) = form
                .get("code")
                .and_then(|c| op.grants.lock().expect("lock").remove(c))
            else {
                return token_error("invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge =
                b64(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
            if challenge != grant.challenge || form.get("redirect_uri") != Some(&grant.redirect_uri)
            {
                return token_error("invalid_grant");
            }
            let _ = grant.scope;
            (grant.nonce, op.fresh("refresh"))
        }
        Some("refresh_token") => {
            if !form
                .get("refresh_token")
                .is_some_and(|t| t.starts_with("refresh-"))
            {
                return token_error("invalid_grant");
            }
            (None, op.fresh("refresh"))
        }
        _ => return token_error("unsupported_grant_type"),
    };
    let mut response = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "refresh_token": refresh,
        "scope": "openid profile hpki",
    });
    if !op.plan.lock().expect("lock").omit_id_token {
        response["id_token"] = json!(op.id_token(nonce.as_deref(), &access_token));
    }
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(response)
}

async fn userinfo(op: web::Data<FakeOp>, req: HttpRequest) -> HttpResponse {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| t.starts_with("access-")) {
        return HttpResponse::Unauthorized().finish();
    }
    let subject = op
        .plan
        .lock()
        .expect("lock")
        .userinfo_subject
        .clone()
        .unwrap_or_else(|| SUBJECT.into());
    HttpResponse::Ok().json(json!({
        "sub": subject,
        "family_name#ja-Kana-JP": "ニチイ",
        "given_name#ja-Kana-JP": "タロウ",
        "email": "taro@example.jp",
        "hpki_role": "Medical Doctor",
        "jma_member": true,
    }))
}

/// Serves `/redirect-me` with a 302 to test that redirects are refused.
async fn redirect_me() -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", "http://127.0.0.1:9/elsewhere"))
        .finish()
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/.well-known/openid-configuration",
        web::get().to(discovery),
    )
    .route("/jwks", web::get().to(jwks))
    .route("/authorize", web::get().to(authorize))
    .route("/token", web::post().to(token))
    .route("/userinfo", web::get().to(userinfo))
    .route(
        "/redirect-me/.well-known/openid-configuration",
        web::get().to(redirect_me),
    );
}

fn new_op(issuer: String, announce: Announce, client_cert_required: bool) -> web::Data<FakeOp> {
    web::Data::new(FakeOp {
        issuer,
        announce,
        client_cert_required,
        signers: Mutex::new(Vec::new()),
        published: Mutex::new(Vec::new()),
        plan: Mutex::new(Plan::default()),
        grants: Mutex::new(HashMap::new()),
        jwks_hits: AtomicUsize::new(0),
        token_hits: AtomicUsize::new(0),
        last_client_auth: Mutex::new(None),
        last_authorize: Mutex::new(Vec::new()),
        counter: AtomicUsize::new(0),
    })
}

/// Starts the provider on plain HTTP at a free loopback port, with `keys` published.
pub fn start(announce: Announce, keys: Vec<TestKey>) -> web::Data<FakeOp> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let op = new_op(format!("http://127.0.0.1:{port}"), announce, false);
    for key in keys {
        op.publish(key);
    }
    let data = op.clone();
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
    actix_web::rt::spawn(server);
    op
}

/// Starts the provider on HTTPS with `server_config`, issuer `https://127.0.0.1:PORT`.
pub fn start_tls(
    announce: Announce,
    keys: Vec<TestKey>,
    server_config: rustls::ServerConfig,
    client_cert_required: bool,
) -> web::Data<FakeOp> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let op = new_op(
        format!("https://127.0.0.1:{port}"),
        announce,
        client_cert_required,
    );
    for key in keys {
        op.publish(key);
    }
    let data = op.clone();
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, server_config)
        .expect("listen")
        .run();
    actix_web::rt::spawn(server);
    op
}
