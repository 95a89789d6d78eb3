//! What the portal tests share: the IdP configured with the portal and a regional
//! network as clients, and the portal (`hpki-portal`) as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Pki, Server, ServerOptions, client, free_port, idp_bin, pki, start};

pub const PORTAL_SECRET: &str = "portal-test-secret-0123456789abcdef";
pub const HAREYAKA_SECRET: &str = "hareyaka-test-secret-0123456789abcd";
pub const HAREYAKA_REDIRECT: &str = "https://hareyaka.test/cb";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The IdP's `[oidc]` additions: the portal (JMA service, pre-approved, account scope,
/// back-channel logout over HTTPS with the test CA) and a regional network.
pub fn oidc_extra(pki: &Pki, portal_port: u16, hareyaka_redirect: &str) -> String {
    format!(
        r#"backchannel_ca_files = ["{ca}"]

[[oidc.clients]]
client_id = "portal"
name = "医師資格証ポータル"
auth_method = "client_secret_basic"
secret_sha256 = "{portal}"
redirect_uris = ["https://localhost:{port}/auth/callback"]
post_logout_redirect_uris = ["https://localhost:{port}/"]
backchannel_logout_uri = "https://localhost:{port}/auth/backchannel-logout"
scopes = ["openid", "profile", "email", "hpki", "jma", "doctor_registration", "offline_access", "account"]
pre_approved = true
audience = "jma_service"
refresh_tokens = true

[[oidc.clients]]
client_id = "hareyaka"
name = "晴れやかネット"
auth_method = "client_secret_basic"
secret_sha256 = "{hareyaka}"
redirect_uris = ["{hareyaka_redirect}"]
scopes = ["openid", "profile", "email", "hpki"]
audience = "regional_network"
"#,
        ca = pki.path(&pki.manifest.server.ca).display(),
        portal = sha256_hex(PORTAL_SECRET),
        hareyaka = sha256_hex(HAREYAKA_SECRET),
        port = portal_port,
    )
}

/// A running `hpki-portal`.
pub struct Portal {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Portal {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("portal.log")).unwrap_or_default()
    }
}

pub fn portal_bin() -> PathBuf {
    let path = idp_bin().with_file_name("hpki-portal");
    assert!(
        path.exists(),
        "{} not found: run `cargo build -p hpki-portal` first",
        path.display()
    );
    path
}

pub async fn start_portal(server: &Server, pki: &Pki, port: u16) -> Portal {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("portal.secret"), PORTAL_SECRET).unwrap();
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
url = "https://localhost:{port}"
tls_cert = "{cert}"
tls_key = "{key}"

[idp]
issuer = "{issuer}"
ca_file = "{ca}"
client_id = "portal"
client_secret_file = "portal.secret"
"#,
        cert = pki.path(&pki.manifest.server.cert).display(),
        key = pki.path(&pki.manifest.server.key).display(),
        ca = pki.path(&pki.manifest.server.ca).display(),
        issuer = server.public(""),
    );
    let config = dir.path().join("portal.toml");
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(dir.path().join("portal.log")).unwrap();
    let child = Command::new(portal_bin())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let portal = Portal { child, dir, port };
    let http = client(pki, None);
    for _ in 0..100 {
        if let Ok(r) = http.get(portal.url("/healthz")).send().await
            && r.status() == 200
        {
            return portal;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the portal did not start:\n{}", portal.log());
}

/// The IdP and the portal; the regional network `hareyaka` is registered with
/// `hareyaka_redirect`.
pub async fn setup(hareyaka_redirect: &str) -> (Server, Portal, &'static Pki) {
    let pki = pki();
    let port = free_port();
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: oidc_extra(pki, port, hareyaka_redirect),
            ..ServerOptions::default()
        },
    );
    let portal = start_portal(&server, pki, port).await;
    (server, portal, pki)
}

/// A child process killed when dropped, with its standard error in a file.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The kit's example network (`examples/hareyaka.rs`) on `port`, a client of `server`.
pub async fn start_hareyaka(
    server: &Server,
    pki: &Pki,
    port: u16,
    log_dir: &std::path::Path,
) -> Process {
    let bin = idp_bin().with_file_name("examples").join("hareyaka");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p hpki-rp-kit --example hareyaka` first",
        bin.display()
    );
    let log = log_dir.join("hareyaka.log");
    let url = format!("https://localhost:{port}");
    let child = Command::new(bin)
        .env("HAREYAKA_URL", &url)
        .env("HAREYAKA_LISTEN", format!("127.0.0.1:{port}"))
        .env("HAREYAKA_ISSUER", server.public(""))
        .env("HAREYAKA_CLIENT_ID", "hareyaka")
        .env("HAREYAKA_CLIENT_SECRET", HAREYAKA_SECRET)
        .env("HAREYAKA_IDP_CA", pki.path(&pki.manifest.server.ca))
        .env("HAREYAKA_TLS_CERT", pki.path(&pki.manifest.server.cert))
        .env("HAREYAKA_TLS_KEY", pki.path(&pki.manifest.server.key))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let process = Process { child, log };
    let http = client(pki, None);
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{url}/")).send().await
            && r.status() == 200
        {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the example network did not start:\n{}", process.log());
}
