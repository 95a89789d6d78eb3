//! The doctor portal in a real browser: Debian's Chromium driven by playwright-core
//! (`conformance/clients/node/portal-browser.mjs`), the doctor's test card presented with
//! Playwright's `clientCertificates`, against the live IdP, the portal and the kit's example
//! regional network, all over real TLS. Screenshots are saved under
//! `target/e2e-screenshots/portal/` (or `$E2E_SCREENSHOTS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod portal_support;

use std::path::PathBuf;

use base64::Engine as _;
use harness::{free_port, workspace};
use portal_support::{setup, start_hareyaka};

/// Chromium and the node packages, or a skip (a failure in CI).
fn browser_installed() -> Option<PathBuf> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let module =
        workspace().join("conformance/clients/node/node_modules/playwright-core/package.json");
    if chromium.exists() && module.exists() {
        return Some(chromium);
    }
    let install = "scripts/deps.sh chromium && npm ci --prefix conformance/clients/node";
    if std::env::var_os("CI").is_some() {
        panic!("Chromium or playwright-core is missing and CI does not skip: run `{install}`");
    }
    eprintln!("warning: skipping the browser test: run `{install}`");
    None
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: Chromium's key pin.
fn spki_pin(cert_pem: &[u8]) -> String {
    use sha2::Digest;
    let der = rustls_pemfile::certs(&mut &cert_pem[..])
        .next()
        .expect("a certificate")
        .expect("PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw))
}

fn screenshots() -> PathBuf {
    std::env::var_os("E2E_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"))
                .join("e2e-screenshots")
        })
        .join("portal")
}

#[tokio::test]
async fn a_doctor_in_chromium_with_a_test_card() {
    let Some(chromium) = browser_installed() else {
        return;
    };
    let hareyaka_port = free_port();
    let hareyaka_url = format!("https://localhost:{hareyaka_port}");
    let (server, portal, pki) = setup(&format!("{hareyaka_url}/auth/callback")).await;
    let hareyaka = start_hareyaka(&server, pki, hareyaka_port, portal.dir.path()).await;
    let card = pki.manifest.card("doctor").unwrap();
    let pin = spki_pin(&std::fs::read(pki.path(&pki.manifest.server.cert)).unwrap());
    let shots = screenshots();
    let out = tokio::process::Command::new("node")
        .arg("portal-browser.mjs")
        .current_dir(workspace().join("conformance/clients/node"))
        .env("CHROMIUM", chromium)
        .env("PORTAL_URL", portal.url(""))
        .env("HAREYAKA_URL", &hareyaka_url)
        .env("IDP_LOGIN_ORIGIN", server.login(""))
        .env("CARD_CERT", pki.path(&card.chain))
        .env("CARD_KEY", pki.path(&card.key))
        .env("SPKI_HASHES", pin)
        // Playwright makes the client-certificate connection from node: trust the test root.
        .env("NODE_EXTRA_CA_CERTS", pki.path(&pki.manifest.server.ca))
        .env("SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), out)
        .await
        .expect("the browser run took over three minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed\n--- steps\n{stdout}\n--- stderr\n{}\n--- portal\n{}\n--- network\n{}\n--- idp\n{}",
        String::from_utf8_lossy(&out.stderr),
        portal.log(),
        hareyaka.log(),
        server.log()
    );
    assert!(stdout.contains("{\"step\":\"done\"}"), "{stdout}");
    for name in [
        "04-portal-profile",
        "06-portal-settings-saved",
        "07-hareyaka-released-after",
        "09-portal-consent-withdrawn",
        "10-portal-history",
    ] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{name} is not a PNG");
    }
}
