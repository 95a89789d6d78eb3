//! The kit over HTTPS: a provider whose certificate chains to a test CA trusted through
//! `extra_root_pem`, and RFC 8705 `tls_client_auth` with a client certificate.

mod fake_op;

use std::sync::Arc;

use fake_op::{Announce, CLIENT_ID, REDIRECT_URI, TestKey};
use hpki_rp_kit::idp_vocabulary::scope;
use hpki_rp_kit::{
    AuthParams, CallbackParams, ClientAuth, ClientId, ClientSecret, Error, HttpClient, HttpError,
    IssuerUrl, OidcClient, RedirectUrl,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

impl TestPki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        Self { ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn leaf(&self, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(pki: &TestPki, client_ca: Option<&TestPki>) -> rustls::ServerConfig {
    let server = pki.leaf(
        vec!["127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(client_ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(client_ca.ca.der().clone()).expect("client CA");
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(
            vec![server.cert_der],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der)),
        )
        .expect("server config")
}

async fn discover(issuer: &str, auth: ClientAuth, http: HttpClient) -> Result<OidcClient, Error> {
    OidcClient::discover(
        IssuerUrl::new(issuer.into()).expect("issuer"),
        ClientId::new(CLIENT_ID.into()),
        auth,
        RedirectUrl::new(REDIRECT_URI.into()).expect("redirect URI"),
        http,
    )
    .await
}

/// The browser leg, over the same test CA.
async fn authorize(ca_pem: &str, url: &url::Url) -> CallbackParams {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA")])
        .build()
        .expect("browser");
    let response = browser.get(url.as_str()).send().await.expect("authorize");
    assert_eq!(response.status(), 302);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    let location = url::Url::parse(location).expect("URL");
    CallbackParams::from_query(location.query().unwrap_or_default()).expect("callback")
}

#[actix_web::test]
async fn a_provider_under_a_test_pki_is_trusted_through_the_extra_root() {
    let pki = TestPki::new("Test IdP CA");
    let op = fake_op::start_tls(
        Announce::default(),
        vec![TestKey::es256("ec-1")],
        server_config(&pki, None),
        false,
    );
    let http = HttpClient::builder()
        .extra_root_pem(pki.ca_pem().as_bytes())
        .expect("root")
        .only_extra_roots()
        .build()
        .expect("client");
    let rp = discover(
        &op.issuer,
        ClientAuth::SecretBasic(ClientSecret::new(fake_op::CLIENT_SECRET.into())),
        http,
    )
    .await
    .expect("discovery over TLS");
    let (url, pending) = rp.begin(&[scope::PROFILE], &AuthParams::default());
    let callback = authorize(&pki.ca_pem(), &url).await;
    let login = rp.finish(pending, &callback).await.expect("login over TLS");
    assert_eq!(login.subject.as_str(), fake_op::SUBJECT);

    // Trusting another CA only: the handshake fails, nothing is fetched.
    let other = TestPki::new("Another CA");
    let http = HttpClient::builder()
        .extra_root_pem(other.ca_pem().as_bytes())
        .expect("root")
        .only_extra_roots()
        .build()
        .expect("client");
    let refused = discover(
        &op.issuer,
        ClientAuth::SecretBasic(ClientSecret::new(fake_op::CLIENT_SECRET.into())),
        http,
    )
    .await;
    assert!(
        matches!(refused, Err(Error::Http(HttpError::Transport(_)))),
        "{refused:?}"
    );
}

#[actix_web::test]
async fn tls_client_auth_presents_the_configured_certificate() {
    let server_pki = TestPki::new("Test IdP CA");
    let client_pki = TestPki::new("Test RP client CA");
    let op = fake_op::start_tls(
        Announce {
            auth_methods: vec!["tls_client_auth"],
            ..Announce::default()
        },
        vec![TestKey::es256("ec-1")],
        server_config(&server_pki, Some(&client_pki)),
        true,
    );
    let client = client_pki.leaf(vec!["rp.test".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let http = HttpClient::builder()
        .extra_root_pem(server_pki.ca_pem().as_bytes())
        .expect("root")
        .only_extra_roots()
        .client_identity_pem(client.cert_pem.as_bytes(), client.key_pem.as_bytes())
        .expect("identity")
        .build()
        .expect("client");
    assert!(http.has_client_identity());
    assert!(!format!("{http:?}").contains("PRIVATE KEY"));
    let rp = discover(&op.issuer, ClientAuth::TlsClientAuth, http)
        .await
        .expect("discovery with a client certificate");

    // The browser has no client certificate, so the authorization leg is simulated: the
    // code comes from an authorize call made by a client that does have one.
    let (url, pending) = rp.begin(&[scope::PROFILE], &AuthParams::default());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", client.cert_pem, client.key_pem).as_bytes())
            .expect("identity");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([
            reqwest::Certificate::from_pem(server_pki.ca_pem().as_bytes()).expect("CA"),
        ])
        .identity(identity)
        .build()
        .expect("browser");
    let response = browser.get(url.as_str()).send().await.expect("authorize");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let location = url::Url::parse(&location).expect("URL");
    let callback =
        CallbackParams::from_query(location.query().unwrap_or_default()).expect("callback");

    let login = rp.finish(pending, &callback).await.expect("login");
    assert_eq!(login.subject.as_str(), fake_op::SUBJECT);
    assert_eq!(*op.last_client_auth.lock().expect("lock"), Some("tls"));

    // Without the certificate the provider refuses the handshake.
    let http = HttpClient::builder()
        .extra_root_pem(server_pki.ca_pem().as_bytes())
        .expect("root")
        .only_extra_roots()
        .build()
        .expect("client");
    let refused = discover(
        &op.issuer,
        ClientAuth::SecretBasic(ClientSecret::new(fake_op::CLIENT_SECRET.into())),
        http,
    )
    .await;
    assert!(
        matches!(refused, Err(Error::Http(HttpError::Transport(_)))),
        "{refused:?}"
    );
}

#[test]
fn malformed_pem_is_a_configuration_error() {
    assert!(matches!(
        HttpClient::builder().extra_root_pem(b"not a certificate"),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        HttpClient::builder().only_extra_roots().build(),
        Err(Error::Config(_))
    ));
    let pki = TestPki::new("CA");
    let leaf = pki.leaf(vec!["rp.test".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let refused = HttpClient::builder().client_identity_pem(leaf.cert_pem.as_bytes(), b"garbage");
    match refused {
        Err(Error::Config(message)) => assert!(!message.contains("garbage")),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
