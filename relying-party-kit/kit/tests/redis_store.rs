//! `RedisSessions` against a real Redis (`IDP_TEST_REDIS_URL`; skipped when unset, except
//! in CI), each test under its own random key prefix. Back-channel logouts are real
//! `LogoutNotice`s: logout tokens signed here and verified by an `OidcClient` of the fake
//! provider; a SAML SOAP LogoutRequest is signed here and verified by a
//! `SamlServiceProvider`.

mod fake_op;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_op::{Announce, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TestKey};
use hpki_rp_kit::redis::AsyncCommands as _;
use hpki_rp_kit::{
    ClientAuth, ClientId, ClientSecret, Doctor, Error, HttpClient, IssuerUrl, LogoutNotice,
    OidcClient, OidcTokens, RedirectUrl, RedisReplayCache, RedisSessions, ReplayCache,
    ReplayVerdict, SamlIdp, SamlServiceProvider, SamlSession, SamlSpConfig, Session, SessionStore,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Sessions in these tests end after two minutes, so nothing they leave lasts.
const LIFETIME: Duration = Duration::from_secs(120);

/// The test Redis, or `None` (skip) when it is not configured; CI must configure it.
fn redis_url() -> Option<String> {
    match std::env::var("IDP_TEST_REDIS_URL") {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => panic!("IDP_TEST_REDIS_URL must be set in CI"),
        _ => {
            eprintln!("skipping: IDP_TEST_REDIS_URL is not set");
            None
        }
    }
}

fn random_prefix() -> String {
    format!("rp-kit-test-{:016x}", rand::random::<u64>())
}

/// A random session ID as the kit makes them (43 characters).
fn session_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

async fn sessions(url: &str, prefix: &str) -> RedisSessions {
    RedisSessions::connect(url, prefix)
        .await
        .expect("connect to the test Redis")
        .with_max_lifetime(LIFETIME)
}

/// A raw connection, to look at what the store left in Redis.
async fn raw(url: &str) -> hpki_rp_kit::redis::aio::MultiplexedConnection {
    hpki_rp_kit::redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn doctor(subject: &str) -> Doctor {
    serde_json::from_value(json!({
        "subject": subject,
        "name": {"default": "Taro Nichii", "kanji": "日医　太郎", "kana": "ニチイ　タロウ"},
        "family_name": {"default": "Nichii", "kanji": "日医", "kana": null},
        "given_name": {"default": null, "kanji": null, "kana": null},
        "hpki_role": "Medical Doctor",
        "hpki_issuer": "MEDIS-DC",
        "acr": "urn:example:acr",
        "amr": ["hwk", "pin"],
        "auth_time": "2025-04-01T09:00:00.5Z",
        "email": null,
        "gender": null,
        "birthdate": "1980-01-02",
        "age": 45,
        "prefecture": "岡山県",
        "jma_member": true,
        "jma_member_id": "J-1",
        "medical_association": {"prefecture": "岡山県医師会", "district": null},
        "doctor_registration_number": "123456",
        "doctor_registration_date": null,
        "certificate": {
            "issuer": "HPKI CA", "serial_number": "01",
            "not_before": "2024-01-01T00:00:00Z", "not_after": null
        },
        "claims": {"name": "Taro Nichii", "address": {"region": "岡山県"}}
    }))
    .expect("a Doctor from JSON")
}

fn session(subject: &str, sid: Option<&str>) -> Session {
    let tokens: OidcTokens = serde_json::from_value(json!({
        "access_token": "access-token",
        "refresh_token": "refresh-token",
        "expires_at": "2030-01-01T00:00:00Z",
        "id_token": "header.payload.signature",
    }))
    .expect("tokens from JSON");
    Session::new(
        doctor(subject),
        sid.map(str::to_owned),
        Some(tokens),
        "csrf-token".into(),
        OffsetDateTime::now_utc(),
    )
}

/// Sessions compare by their JSON (`Session` has no `PartialEq`).
fn same(a: &Session, b: &Session) -> bool {
    serde_json::to_value(a).expect("json") == serde_json::to_value(b).expect("json")
}

/// Mints back-channel logout tokens and has a real `OidcClient` verify them.
struct Logouts {
    client: OidcClient,
    issuer: String,
    key: EcdsaKeyPair,
}

impl Logouts {
    async fn start() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("P-256 key");
        let point = key.public_key().as_ref(); // 0x04 || x || y
        // The fake provider publishes a key's `jwk`; this one is ours (the test signs).
        let mut published = TestKey::es256("logout");
        published.jwk = json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": "logout",
            "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        let op = fake_op::start(Announce::default(), vec![published]);
        let client = OidcClient::discover(
            IssuerUrl::new(op.issuer.clone()).expect("issuer"),
            ClientId::new(CLIENT_ID.into()),
            ClientAuth::SecretBasic(ClientSecret::new(CLIENT_SECRET.into())),
            RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"),
            HttpClient::builder()
                .dangerous_allow_plain_http()
                .build()
                .expect("HTTP client"),
        )
        .await
        .expect("discovery");
        Self {
            client,
            issuer: op.issuer.clone(),
            key,
        }
    }

    /// The verified notice of a logout token naming `sid` and/or `sub`.
    async fn notice(&self, sid: Option<&str>, sub: Option<&str>) -> LogoutNotice {
        self.client
            .verify_logout_token(&self.token(sid, sub))
            .await
            .expect("a valid logout token")
    }

    /// A logout token signed by the provider's key, naming `sid` and/or `sub`.
    fn token(&self, sid: Option<&str>, sub: Option<&str>) -> String {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
            "jti": format!("{:x}", rand::random::<u128>()),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        if let Some(sid) = sid {
            claims["sid"] = sid.into();
        }
        if let Some(sub) = sub {
            claims["sub"] = sub.into();
        }
        let header = json!({"alg": "ES256", "kid": "logout", "typ": "logout+jwt"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

#[actix_web::test]
async fn sessions_are_stored_under_hashed_keys_with_their_lifetime_and_never_resurrected() {
    let Some(url) = redis_url() else { return };
    let prefix = random_prefix();
    let store = sessions(&url, &prefix).await;
    let mut redis = raw(&url).await;
    let id = session_id();

    assert!(store.get(&id).await.expect("get").is_none());
    let mut s = session("subject-1", Some("sid-1"));
    s.saml = Some(
        serde_json::from_value::<SamlSession>(json!({
            "name_id": {"value": "subject-1", "format": null, "name_qualifier": null,
                        "sp_name_qualifier": null},
            "session_index": "_index",
            "not_on_or_after": null,
            "idp_entity_id": "https://idp.test/saml",
        }))
        .expect("SAML session from JSON"),
    );
    store.insert(&id, s.clone()).await.expect("insert");
    let got = store.get(&id).await.expect("get").expect("the session");
    assert!(same(&got, &s), "round trip: {got:?}");
    assert_eq!(got.doctor.subject.as_str(), "subject-1");
    assert!(got.tokens.is_some() && got.saml.is_some());

    // The key is the SHA-256 of the ID; the ID itself appears in no key.
    let key = store.session_key(&id);
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(key, format!("{prefix}:session:{hex}"));
    let keys: Vec<String> = redis.keys(format!("{prefix}:*")).await.expect("KEYS");
    assert!(keys.contains(&key), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains(&id)), "{keys:?}");
    let stored: String = redis.get(&key).await.expect("GET");
    assert!(
        serde_json::from_str::<Value>(&stored).is_ok(),
        "stored as JSON"
    );

    // TTL: the absolute lifetime; the index sets live at least as long.
    let ttl: i64 = redis.pttl(&key).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 120_000, "session TTL {ttl}");
    for index in [
        format!("{prefix}:sid:sid-1"),
        format!("{prefix}:sub:subject-1"),
    ] {
        let index_ttl: i64 = redis.pttl(&index).await.expect("PTTL");
        assert!(index_ttl >= ttl - 1_000, "{index}: TTL {index_ttl}");
        let members: Vec<String> = redis.smembers(&index).await.expect("SMEMBERS");
        assert_eq!(members, vec![hex.clone()]);
    }

    // update: replaced, TTL kept.
    let mut touched = got.clone();
    touched.last_seen += time::Duration::minutes(1);
    touched.csrf = "another".into();
    store.update(&id, touched.clone()).await.expect("update");
    let got = store.get(&id).await.expect("get").expect("the session");
    assert!(same(&got, &touched));
    let after: i64 = redis.pttl(&key).await.expect("PTTL");
    assert!(after > 0 && after <= ttl, "KEEPTTL: {after} after {ttl}");

    // remove, then an update (a request that read the session before) does not bring it
    // back.
    store.remove(&id).await.expect("remove");
    assert!(store.get(&id).await.expect("get").is_none());
    store.update(&id, touched).await.expect("update");
    assert!(store.get(&id).await.expect("get").is_none(), "resurrected");
    let exists: bool = redis.exists(&key).await.expect("EXISTS");
    assert!(!exists);
    let members: Vec<String> = redis
        .smembers(format!("{prefix}:sub:subject-1"))
        .await
        .expect("SMEMBERS");
    assert!(members.is_empty(), "index entry left: {members:?}");

    // An update of a session never stored stores nothing; removing it is fine.
    let never = session_id();
    store
        .update(&never, session("subject-1", None))
        .await
        .expect("update");
    assert!(store.get(&never).await.expect("get").is_none());
    store.remove(&never).await.expect("remove");

    // remove_expired relies on the TTLs.
    assert_eq!(
        store
            .remove_expired(OffsetDateTime::now_utc(), OffsetDateTime::now_utc())
            .await
            .expect("remove_expired"),
        0
    );
}

#[actix_web::test]
async fn a_session_ends_with_its_lifetime_or_its_saml_end() {
    let Some(url) = redis_url() else { return };
    let prefix = random_prefix();
    let mut redis = raw(&url).await;

    // The SAML login's end comes before the lifetime: it is the TTL.
    let store = sessions(&url, &prefix).await;
    let id = session_id();
    let mut s = session("subject-1", None);
    s.saml = Some(
        serde_json::from_value::<SamlSession>(json!({
            "name_id": {"value": "subject-1", "format": null, "name_qualifier": null,
                        "sp_name_qualifier": null},
            "session_index": null,
            "not_on_or_after": (OffsetDateTime::now_utc() + time::Duration::seconds(30))
                .format(&Rfc3339)
                .expect("RFC 3339"),
            "idp_entity_id": "https://idp.test/saml",
        }))
        .expect("SAML session from JSON"),
    );
    store.insert(&id, s).await.expect("insert");
    let ttl: i64 = redis.pttl(store.session_key(&id)).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 30_000, "TTL {ttl}");

    // A session already past its lifetime is not kept.
    let id = session_id();
    let mut old = session("subject-1", None);
    old.created_at -= time::Duration::minutes(3);
    store.insert(&id, old).await.expect("insert");
    assert!(store.get(&id).await.expect("get").is_none());

    // And one whose TTL runs out is gone.
    let short = sessions(&url, &prefix)
        .await
        .with_max_lifetime(Duration::from_millis(300));
    let id = session_id();
    short
        .insert(&id, session("subject-1", None))
        .await
        .expect("insert");
    assert!(short.get(&id).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(short.get(&id).await.expect("get").is_none(), "expired");
}

#[actix_web::test]
async fn back_channel_logout_ends_the_sessions_named_by_sid_by_sub_or_by_both() {
    let Some(url) = redis_url() else { return };
    let logouts = Logouts::start().await;
    let store = sessions(&url, &random_prefix()).await;
    let named = [
        ("a", "u1", Some("s1")),
        ("b", "u1", Some("s2")),
        ("c", "u2", Some("s1")),
        ("d", "u1", None),
        ("e", "u3", Some("s3")),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, sub, sid) in named {
        let id = session_id();
        store.insert(&id, session(sub, sid)).await.expect("insert");
        ids.insert(name, id);
    }
    let live = async |store: &RedisSessions| {
        let mut live = Vec::new();
        for (name, _, _) in named {
            if store.get(&ids[name]).await.expect("get").is_some() {
                live.push(name);
            }
        }
        live
    };

    // Both names: only the session matching both ends (not c, same sid; not b or d, same
    // subject).
    let both = logouts.notice(Some("s1"), Some("u1")).await;
    assert_eq!(store.remove_named(&both).await.expect("remove_named"), 1);
    assert_eq!(live(&store).await, ["b", "c", "d", "e"]);
    // Again: nothing left to end.
    assert_eq!(store.remove_named(&both).await.expect("remove_named"), 0);

    // The subject: every session of it, with or without a sid.
    let sub = logouts.notice(None, Some("u1")).await;
    assert_eq!(store.remove_named(&sub).await.expect("remove_named"), 2);
    assert_eq!(live(&store).await, ["c", "e"]);

    // The sid.
    let sid = logouts.notice(Some("s1"), None).await;
    assert_eq!(store.remove_named(&sid).await.expect("remove_named"), 1);
    assert_eq!(live(&store).await, ["e"]);

    // Names that match nothing.
    let nothing = logouts.notice(Some("s3"), Some("u1")).await;
    assert_eq!(store.remove_named(&nothing).await.expect("remove_named"), 0);
    let unknown = logouts.notice(Some("unknown"), None).await;
    assert_eq!(store.remove_named(&unknown).await.expect("remove_named"), 0);
    assert_eq!(live(&store).await, ["e"]);
}

#[actix_web::test]
async fn two_processes_share_sessions_and_one_logout_ends_them_for_both() {
    let Some(url) = redis_url() else { return };
    let logouts = Logouts::start().await;
    let prefix = random_prefix();
    // Two "processes": separate connections, the same prefix.
    let one = sessions(&url, &prefix).await;
    let two = sessions(&url, &prefix).await;

    let first = session_id();
    let second = session_id();
    one.insert(&first, session("doctor", Some("idp-session")))
        .await
        .expect("insert");
    two.insert(&second, session("doctor", Some("idp-session")))
        .await
        .expect("insert");
    let seen = two.get(&first).await.expect("get").expect("one's session");
    assert_eq!(seen.sid.as_deref(), Some("idp-session"));
    assert!(one.get(&second).await.expect("get").is_some());

    // The back-channel logout reaches process two: process one's session ends too.
    let notice = logouts.notice(Some("idp-session"), None).await;
    assert_eq!(two.remove_named(&notice).await.expect("remove_named"), 2);
    assert!(one.get(&first).await.expect("get").is_none());
    assert!(one.get(&second).await.expect("get").is_none());
    // A request in flight in process one cannot bring its session back.
    one.update(&first, seen).await.expect("update");
    assert!(two.get(&first).await.expect("get").is_none());
}

/// A TCP relay to Redis that the test can cut, as if Redis went away.
struct Relay {
    port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let spawned = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                spawned.lock().expect("lock").push(relay);
            }
        });
        tasks.lock().expect("lock").push(accept);
        Self { port, tasks }
    }

    /// Closes the listener and every relayed connection.
    async fn cut(&self) {
        let tasks: Vec<_> = self.tasks.lock().expect("lock").drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[actix_web::test]
async fn an_unreachable_redis_is_an_error_never_a_session() {
    let Some(url) = redis_url() else { return };
    // Nothing listening: connecting fails with a session error.
    let closed = format!("redis://127.0.0.1:{}", closed_port());
    match RedisSessions::connect(&closed, "rp").await {
        Err(Error::Session(_)) => {}
        other => panic!("connect to a closed port: {other:?}"),
    }

    // Connected, then Redis goes away: every operation fails closed.
    let parsed = url::Url::parse(&url).expect("IDP_TEST_REDIS_URL");
    let target = format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed.port().unwrap_or(6379)
    );
    let relay = Relay::start(target).await;
    let mut relayed = parsed.clone();
    relayed.set_host(Some("127.0.0.1")).expect("host");
    relayed.set_port(Some(relay.port)).expect("port");
    let store = sessions(relayed.as_str(), &random_prefix()).await;
    let replay = RedisReplayCache::beside(&store);
    let id = session_id();
    store
        .insert(&id, session("doctor", Some("sid")))
        .await
        .expect("insert while reachable");
    assert!(store.get(&id).await.expect("get").is_some());
    let logouts = Logouts::start().await;
    let notice = logouts.notice(Some("sid"), None).await;

    relay.cut().await;
    let failed = |r: Result<(), Error>, what: &str| match r {
        Err(Error::Session(_)) => {}
        other => panic!("{what} without Redis: {other:?}"),
    };
    failed(store.get(&id).await.map(|_| ()), "get");
    failed(
        store.insert(&session_id(), session("doctor", None)).await,
        "insert",
    );
    failed(store.update(&id, session("doctor", None)).await, "update");
    failed(store.remove(&id).await, "remove");
    failed(
        store.remove_named(&notice).await.map(|_| ()),
        "remove_named",
    );
    // A SAML response cannot be checked for replay: refused.
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        replay
            .check_and_remember("assertion", now + time::Duration::minutes(5), now)
            .await,
        ReplayVerdict::Unavailable
    );
}

#[tokio::test]
async fn a_saml_assertion_is_accepted_once_across_processes_until_it_expires() {
    let Some(url) = redis_url() else { return };
    let prefix = random_prefix();
    let one = RedisReplayCache::beside(&sessions(&url, &prefix).await);
    let two = RedisReplayCache::beside(&sessions(&url, &prefix).await);
    let now = OffsetDateTime::now_utc();
    let until = now + time::Duration::milliseconds(1500);
    let id = "https://idp.example/saml/metadata\n_assertion-1";
    assert_eq!(
        one.check_and_remember(id, until, now).await,
        ReplayVerdict::Fresh
    );
    // The other process refuses the same assertion, and so does the first.
    assert_eq!(
        two.check_and_remember(id, until, now).await,
        ReplayVerdict::Replayed
    );
    assert_eq!(
        one.check_and_remember(id, until, now).await,
        ReplayVerdict::Replayed
    );
    // Another assertion is fresh; the key is a hash, never the ID.
    assert_eq!(
        two.check_and_remember("other", until, now).await,
        ReplayVerdict::Fresh
    );
    let mut redis = raw(&url).await;
    let keys: Vec<String> = redis
        .keys(format!("{prefix}:assertion:*"))
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| !k.contains("assertion-1")));
    // Remembered until `keep_until`, then forgotten by Redis itself.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let later = OffsetDateTime::now_utc();
    assert_eq!(
        one.check_and_remember(id, later + time::Duration::minutes(5), later)
            .await,
        ReplayVerdict::Fresh
    );
    // Nothing to remember for an already-ended assertion: refused.
    assert_eq!(
        one.check_and_remember("ended", later, later).await,
        ReplayVerdict::Replayed
    );
}

const SAML_IDP: &str = "https://idp.test/saml";
const SOAP_SLO: &str = "https://rp.test/saml/soap-slo";

/// An RSA key (PKCS#8 DER) and its self-signed certificate (PEM), the IdP's.
fn idp_key() -> (Vec<u8>, String) {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
        .expect("key");
    let mut name = openssl::x509::X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "idp").expect("cn");
    let name = name.build();
    let mut cert = openssl::x509::X509::builder().expect("builder");
    cert.set_version(2).expect("version");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    cert.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).expect("time"))
        .expect("not after");
    cert.sign(&key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    (
        key.private_key_to_pkcs8().expect("pkcs8"),
        String::from_utf8(cert.build().to_pem().expect("pem")).expect("utf-8"),
    )
}

/// The IdP's SOAP LogoutRequest for `name_id` and `session_index`, signed by xmlsec.
fn soap_logout_request(key_der: &[u8], id: &str, name_id: &str, session_index: &str) -> String {
    use samael::crypto::{Crypto, CryptoProvider as _};
    let issued = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time")
        .format(&Rfc3339)
        .expect("time");
    let xml = format!(
        r##"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}" Destination="{SOAP_SLO}"><saml:Issuer>{SAML_IDP}</saml:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature><saml:NameID>{name_id}</saml:NameID><samlp:SessionIndex>{session_index}</samlp:SessionIndex></samlp:LogoutRequest>"##
    );
    let signed = Crypto::sign_xml(xml, key_der).expect("xmlsec signs");
    let body = signed
        .split_once("?>")
        .map_or(signed.as_str(), |(_, b)| b)
        .trim();
    format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

#[tokio::test]
async fn a_saml_soap_logout_received_by_one_process_ends_the_session_for_all() {
    let Some(url) = redis_url() else { return };
    let prefix = random_prefix();
    let (key_der, cert) = idp_key();
    let process = |store: &RedisSessions| {
        let config = SamlSpConfig::new("https://rp.test/saml", "https://rp.test/saml/acs")
            .with_soap_slo_url(SOAP_SLO);
        let idp =
            SamlIdp::new(SAML_IDP, "https://idp.test/saml/sso", &[cert.as_str()]).expect("idp");
        SamlServiceProvider::new(config, idp)
            .expect("sp")
            .with_replay_cache(Arc::new(RedisReplayCache::beside(store)))
    };
    let (store_one, store_two) = (sessions(&url, &prefix).await, sessions(&url, &prefix).await);
    let (sp_one, sp_two) = (process(&store_one), process(&store_two));
    // SAML sessions as the web integration stores them: the NameID as subject, the
    // SessionIndex as sid.
    let saml = |name_id: &str, index: &str| {
        session(name_id, Some(index)).with_saml(
            serde_json::from_value::<SamlSession>(json!({
                "name_id": {"value": name_id, "format": null, "name_qualifier": null,
                            "sp_name_qualifier": null},
                "session_index": index,
                "not_on_or_after": null,
                "idp_entity_id": SAML_IDP,
            }))
            .expect("SAML session from JSON"),
        )
    };
    let (ended, other_index, other_doctor) = (session_id(), session_id(), session_id());
    store_one
        .insert(&ended, saml("nameid-1", "idp-session-1"))
        .await
        .expect("insert");
    store_one
        .insert(&other_index, saml("nameid-1", "idp-session-2"))
        .await
        .expect("insert");
    store_one
        .insert(&other_doctor, saml("nameid-2", "idp-session-1"))
        .await
        .expect("insert");

    // Process two receives the IdP's request and ends the session it names.
    let body = soap_logout_request(&key_der, "_logout-1", "nameid-1", "idp-session-1");
    let request = sp_two
        .verify_soap_logout(body.as_bytes())
        .await
        .expect("the IdP's request verifies");
    let mut removed = 0;
    for notice in request.notices() {
        removed += store_two.remove_named(&notice).await.expect("remove_named");
    }
    assert_eq!(removed, 1);
    assert!(store_one.get(&ended).await.expect("get").is_none());
    assert!(store_one.get(&other_index).await.expect("get").is_some());
    assert!(store_one.get(&other_doctor).await.expect("get").is_some());
    // Process one refuses the same request: the replay cache is shared.
    assert!(matches!(
        sp_one.verify_soap_logout(body.as_bytes()).await,
        Err(Error::SamlReplay)
    ));
}

#[actix_web::test]
async fn a_logout_token_is_accepted_once_by_all_processes_sharing_the_replay_cache() {
    let Some(url) = redis_url() else { return };
    let prefix = random_prefix();
    let logouts = Logouts::start().await;
    let process = |sessions: RedisSessions| {
        logouts
            .client
            .clone()
            .with_logout_replay_cache(Arc::new(RedisReplayCache::beside(&sessions)))
    };
    let one = process(sessions(&url, &prefix).await);
    let two = process(sessions(&url, &prefix).await);
    let token = logouts.token(Some("sid"), None);
    one.verify_logout_token(&token).await.expect("first use");
    assert!(matches!(
        two.verify_logout_token(&token).await,
        Err(Error::LogoutTokenReplay)
    ));
    // Another token is accepted by the other process.
    two.verify_logout_token(&logouts.token(None, Some("sub")))
        .await
        .expect("another token");
}
