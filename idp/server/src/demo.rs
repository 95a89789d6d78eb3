//! `idp demo`: the whole system on embedded defaults — SQLite, the in-process ephemeral
//! store, a generated test PKI with test cards, TLS on localhost.

use std::path::{Path, PathBuf};

use idp_core::store::DoctorDirectory;
use time::OffsetDateTime;

/// Where and how the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub public_port: u16,
    pub login_port: u16,
    /// Where the doctor portal (`hpki-portal`) listens, registered as a client.
    pub portal_port: u16,
    pub seed: String,
}

/// Generates the test PKI (once; an existing one is reused so that browsers keep their
/// imported test cards), writes `idp.toml`, and imports the test doctors. Returns the
/// configuration path and the PKI manifest.
pub async fn prepare(opts: &DemoOptions) -> Result<(PathBuf, idp_devpki::Manifest), String> {
    let pki = opts.dir.join("pki");
    let manifest_path = pki.join("manifest.json");
    let manifest: idp_devpki::Manifest = if manifest_path.exists() {
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?
    } else {
        let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
        idp_devpki::generate(&idp_devpki::Options {
            seed: opts.seed.clone(),
            issued_at: today,
            out_dir: pki.clone(),
            softhsm: None,
            crl_next_update: None,
        })
        .map_err(|e| format!("test PKI: {e}"))?
    };
    saml_keys(&opts.dir)?;
    let portal_secret = portal_files(opts, &manifest)?;
    let config = demo_config(&manifest, opts, &portal_secret);
    let config_path = opts.dir.join("idp.toml");
    std::fs::write(&config_path, config).map_err(|e| format!("{}: {e}", config_path.display()))?;

    let database =
        idp_store::Database::connect(&format!("sqlite://{}", opts.dir.join("idp.db").display()))
            .await
            .map_err(|e| e.to_string())?;
    database.migrate().await.map_err(|e| e.to_string())?;
    let csv =
        std::fs::File::open(pki.join("doctors.csv")).map_err(|e| format!("doctors.csv: {e}"))?;
    let profiles =
        idp_store::csv_import::parse_doctors(csv).map_err(|e| format!("doctors.csv: {e}"))?;
    database
        .import(&profiles, OffsetDateTime::now_utc())
        .await
        .map_err(|e| e.to_string())?;
    Ok((config_path, manifest))
}

/// The SAML signing key and its self-signed certificate (`saml-signing.key`/`.crt`),
/// generated once and kept, so SPs that registered the demo's metadata stay valid.
fn saml_keys(dir: &Path) -> Result<(), String> {
    let (key, cert) = (dir.join("saml-signing.key"), dir.join("saml-signing.crt"));
    if key.exists() && cert.exists() {
        return Ok(());
    }
    let (key_pem, cert_pem) =
        idp_saml::crypto::SigningCredential::generate_pem("idp demo SAML signing", 3650)
            .map_err(|e| format!("SAML signing key: {e}"))?;
    std::fs::write(&key, key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    std::fs::write(&cert, cert_pem).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(())
}

/// A file of the demo folder: generated once and kept (so restarts keep registrations).
fn kept_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let value = make();
    std::fs::write(path, format!("{value}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(value)
}

/// The doctor portal's client secret, session key and `portal.toml` (it runs beside the
/// IdP with the demo's TLS identity, registered as a pre-approved JMA-service client).
/// Returns the client secret.
fn portal_files(opts: &DemoOptions, manifest: &idp_devpki::Manifest) -> Result<String, String> {
    use idp_core::secret::Secret;
    let secret = kept_secret(&opts.dir.join("portal.secret"), || {
        Secret::generate().dangerous_expose().to_owned()
    })?;
    // 64 hex digits: the SHA-256 of 256 fresh random bits.
    kept_secret(&opts.dir.join("portal-session.key"), || {
        Secret::generate().digest()
    })?;
    let toml = format!(
        r#"# Written by `idp demo`: the doctor portal beside the demo IdP.
listen = "127.0.0.1:{port}"
url = "https://localhost:{port}"
tls_cert = "pki/{cert}"
tls_key = "pki/{key}"
session_key_file = "portal-session.key"

[idp]
issuer = "https://localhost:{public}"
ca_file = "pki/{ca}"
client_id = "{PORTAL_CLIENT_ID}"
client_secret_file = "portal.secret"
"#,
        port = opts.portal_port,
        public = opts.public_port,
        cert = manifest.server.cert,
        key = manifest.server.key,
        ca = manifest.server.ca,
    );
    let path = opts.dir.join("portal.toml");
    std::fs::write(&path, toml).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret)
}

/// The portal's client ID in the demo.
pub const PORTAL_CLIENT_ID: &str = "portal";

fn demo_config(manifest: &idp_devpki::Manifest, opts: &DemoOptions, portal_secret: &str) -> String {
    let (dir, public_port, login_port, portal_port) = (
        &opts.dir,
        opts.public_port,
        opts.login_port,
        opts.portal_port,
    );
    let list = |paths: &[String]| {
        paths
            .iter()
            .map(|p| format!("\"pki/{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"# Written by `idp demo`: embedded defaults and the generated test PKI.
issuer = "https://localhost:{public_port}"

[public]
listen = "127.0.0.1:{public_port}"
url = "https://localhost:{public_port}"
cert = "pki/{server_cert}"
key = "pki/{server_key}"

[login]
listen = "127.0.0.1:{login_port}"
url = "https://localhost:{login_port}"

[hpki]
anchors = [{anchors}]
intermediates = [{intermediates}]
accepted_policies = ["{auth_policy}"]
unknown_holder = "refuse"

[hpki.revocation]
crl_files = [{crls}]
reload_secs = 5

[storage]
database = "sqlite://{db}"
ephemeral = "memory"

[oidc]
# Demo only: derived from the seed. A deployment sets a secret salt once and keeps it.
pairwise_salt = "{salt}"
# The portal's back-channel logout endpoint has a certificate of the test PKI.
backchannel_ca_files = ["pki/{server_ca}"]

# The doctor portal (`hpki-portal -c portal.toml`): a first-party JMA service.
[[oidc.clients]]
client_id = "{PORTAL_CLIENT_ID}"
name = "医師資格証ポータル"
auth_method = "client_secret_basic"
secret_sha256 = "{portal_digest}"
redirect_uris = ["https://localhost:{portal_port}/auth/callback"]
post_logout_redirect_uris = ["https://localhost:{portal_port}/"]
backchannel_logout_uri = "https://localhost:{portal_port}/auth/backchannel-logout"
scopes = ["openid", "profile", "email", "hpki", "jma", "doctor_registration", "offline_access", "account"]
pre_approved = true
audience = "jma_service"
refresh_tokens = true

[saml]
# Demo only: a generated key with a self-signed certificate (SAML trusts the metadata).
signing_key = "saml-signing.key"
signing_cert = "saml-signing.crt"
"#,
        salt = demo_salt(&manifest.seed),
        server_ca = manifest.server.ca,
        portal_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            portal_secret.as_bytes()
        )),
        server_cert = manifest.server.cert,
        server_key = manifest.server.key,
        anchors = list(&manifest.trust.anchors),
        intermediates = list(&manifest.trust.intermediates),
        auth_policy = manifest.trust.auth_policy_oid,
        crls = list(&manifest.trust.crls),
        db = dir.join("idp.db").display(),
    )
}

/// The demo's pairwise salt: stable for a seed, so subjects survive restarts.
fn demo_salt(seed: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!(
        "idp demo pairwise salt\0{seed}"
    )))
}

/// What the demo prints: where to go and how to log in with a test card.
pub fn instructions(opts: &DemoOptions, manifest: &idp_devpki::Manifest) -> String {
    let pki = opts.dir.join("pki");
    let p = |rel: &str| pki.join(rel).display().to_string();
    let mut cards = String::new();
    for card in &manifest.cards {
        let what = match (&card.expect, card.good) {
            (None, _) => "good".to_owned(),
            (Some(code), _) => format!("refused: {code}"),
        };
        cards.push_str(&format!(
            "    {:<22} {:<28} {}\n",
            card.name,
            what,
            p(&card.p12)
        ));
    }
    let doctor = manifest.card("doctor");
    let curl = doctor
        .map(|d| {
            format!(
                "curl --cacert {ca} --cert {chain} --key {key} -L -b jar.txt -c jar.txt \\\n      'https://localhost:{port}/login?return_to=/api/session'",
                ca = p(&manifest.server.ca),
                chain = p(&d.chain),
                key = p(&d.key),
                port = opts.public_port,
            )
        })
        .unwrap_or_default();
    format!(
        r#"
HPKI IdP demo is running.

  Public origin: https://localhost:{public}/        (医師資格証でログイン)
  Login origin:  https://localhost:{login}/login/hpki  (asks for the card certificate)
  Doctor portal: https://localhost:{portal}/        (医師資格証ポータル; scripts/demo.sh starts it,
                 or: hpki-portal -c {portal_toml})
  TLS test root to trust: {ca}

  Test cards (PKCS#12, password = PIN {pin}); import one into the browser:
{cards}
  Log in from the command line with the good test card:
    {curl}
"#,
        public = opts.public_port,
        login = opts.login_port,
        portal = opts.portal_port,
        portal_toml = opts.dir.join("portal.toml").display(),
        ca = p(&manifest.server.ca),
        pin = doctor.map(|d| d.pin.as_str()).unwrap_or("123456"),
    )
}
