//! Start-up refuses a configuration that names a missing or invalid file, an unknown key,
//! or a certificate that cannot serve its role, and says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// figment::Jail's closure returns figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use idp_server::config::Config;

/// Loading reads the process environment, which the environment test changes: every load
/// holds this lock so that no test sees another's variables.
static ENVIRONMENT: Mutex<()> = Mutex::new(());

struct Fixture {
    _dir: tempfile::TempDir,
    pki: std::path::PathBuf,
    manifest: idp_devpki::Manifest,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let at = time::macros::datetime!(2026-04-01 00:00 UTC);
        let manifest =
            idp_devpki::generate(&idp_devpki::Options::new("config-tests", at, &pki)).unwrap();
        Fixture {
            _dir: dir,
            pki,
            manifest,
        }
    })
}

fn config_text(anchor: &str) -> String {
    let f = fixture();
    let p = |rel: &str| f.pki.join(rel).display().to_string();
    format!(
        r#"issuer = "https://localhost:8443"
[public]
listen = "127.0.0.1:8443"
url = "https://localhost:8443"
cert = "{cert}"
key = "{key}"
[login]
listen = "127.0.0.1:8444"
url = "https://localhost:8444"
[hpki]
anchors = ["{anchor}"]
intermediates = ["{intermediate}"]
[hpki.revocation]
crl_files = ["{crl}"]
[storage]
database = "sqlite::memory:"
ephemeral = "memory"
[oidc]
pairwise_salt = "config-test-pairwise-salt"
"#,
        cert = p(&f.manifest.server.cert),
        key = p(&f.manifest.server.key),
        intermediate = p(&f.manifest.trust.intermediates[0]),
        crl = p(&f.manifest.trust.crls[0]),
    )
}

fn load(text: &str) -> Result<(), String> {
    let _environment = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
        .and_then(|c| c.into_runtime(Path::new(dir.path())))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn good_anchor() -> String {
    fixture()
        .pki
        .join(&fixture().manifest.trust.anchors[0])
        .display()
        .to_string()
}

#[test]
fn a_complete_configuration_loads() {
    load(&config_text(&good_anchor())).unwrap();
}

#[test]
fn a_missing_anchor_file_is_named() {
    let err = load(&config_text("/nonexistent/root.pem")).unwrap_err();
    assert!(
        err.contains("hpki.anchors") && err.contains("/nonexistent/root.pem"),
        "{err}"
    );
}

#[test]
fn an_anchor_that_is_not_a_ca_is_refused() {
    let f = fixture();
    let leaf = f
        .pki
        .join(&f.manifest.card("doctor").unwrap().cert)
        .display()
        .to_string();
    let err = load(&config_text(&leaf)).unwrap_err();
    assert!(
        err.contains("hpki.anchors") && err.contains("not a CA"),
        "{err}"
    );
}

#[test]
fn an_intermediate_without_its_anchor_is_refused() {
    let f = fixture();
    let other_root = f
        .pki
        .join(&f.manifest.ca("unknown-root").unwrap().cert)
        .display()
        .to_string();
    let err = load(&config_text(&other_root)).unwrap_err();
    assert!(err.contains("not signed by any configured anchor"), "{err}");
}

#[test]
fn an_empty_anchor_list_is_refused() {
    let text = config_text(&good_anchor()).replace(
        &format!("anchors = [\"{}\"]", good_anchor()),
        "anchors = []",
    );
    let err = load(&text).unwrap_err();
    assert!(err.contains("no HPKI trust anchor"), "{err}");
}

#[test]
fn unknown_keys_are_rejected() {
    let text = config_text(&good_anchor()).replace("[storage]", "[storage]\ndatbase = \"typo\"");
    let err = load(&text).unwrap_err();
    assert!(err.contains("datbase"), "{err}");
}

#[test]
fn a_missing_server_key_is_named() {
    let f = fixture();
    let key = f.pki.join(&f.manifest.server.key).display().to_string();
    let text = config_text(&good_anchor()).replace(&key, "/nonexistent/server.key");
    let err = load(&text).unwrap_err();
    assert!(
        err.contains("public.key") && err.contains("/nonexistent/server.key"),
        "{err}"
    );
}

#[test]
fn a_file_without_certificates_is_named() {
    let f = fixture();
    let key = f.pki.join(&f.manifest.server.key).display().to_string();
    let err = load(&config_text(&key)).unwrap_err();
    assert!(
        err.contains("hpki.anchors") && err.contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn crl_urls_must_be_allow_listed_and_origins_well_formed() {
    let text = config_text(&good_anchor()).replace(
        "[hpki.revocation]",
        "[hpki.revocation]\ncrl_urls = [\"http://crl.example/jma.crl\"]\nallowed_url_prefixes = [\"http://other.example/\"]",
    );
    let err = load(&text).unwrap_err();
    assert!(err.contains("hpki.revocation.crl_urls"), "{err}");

    let text = config_text(&good_anchor()).replace(
        "url = \"https://localhost:8443\"",
        "url = \"https://localhost:8443/\"",
    );
    let err = load(&text).unwrap_err();
    assert!(err.contains("public.url"), "{err}");
}

#[test]
fn proxy_mode_needs_trusted_proxies() {
    let text = config_text(&good_anchor()).replace(
        "url = \"https://localhost:8444\"",
        "url = \"https://localhost:8444\"\nclient_certificate = \"rfc9440_proxy\"",
    );
    let err = load(&text).unwrap_err();
    assert!(err.contains("login.trusted_proxies"), "{err}");
}

#[test]
fn environment_variables_override_the_file() {
    let _environment = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    figment::Jail::expect_with(|jail| {
        jail.create_file("idp.toml", &config_text(&good_anchor()))?;
        jail.set_env("IDP__STORAGE__DATABASE", "postgres://idp@db.example/idp");
        jail.set_env("IDP__SESSION__IDLE_SECS", "600");
        jail.set_env("IDP__SESSION__ABSOLUTE_SECS", "3600");
        let config = Config::load(Path::new("idp.toml")).map_err(|e| e.to_string())?;
        assert_eq!(config.storage.database, "postgres://idp@db.example/idp");
        assert_eq!(config.session.idle_secs, 600);
        // Variables outside the IDP__ prefix are not configuration.
        jail.set_env("IDP_LOG", "debug");
        jail.set_env("IDP__STORAGE__DATBASE", "typo");
        let err = Config::load(Path::new("idp.toml")).unwrap_err().to_string();
        assert!(err.contains("datbase"), "{err}");
        Ok(())
    });
}
