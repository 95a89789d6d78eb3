//! A third-party SAML service provider against the live IdP: Python pysaml2
//! (`conformance/clients/python/saml_flow.py`) registers with its own metadata, sends a
//! signed AuthnRequest (HTTP-Redirect and HTTP-POST), the doctor logs in with the card
//! and consents, and pysaml2 validates the signed Response (signatures, Destination,
//! Audience, Recipient, InResponseTo, conditions) and reads the attributes; `xmlsec1
//! --verify` checks both signatures independently; a tampered attribute is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::{
    Pki, Server, ServerOptions, pki, saml_certificate_pem, saml_table, start, workspace,
};
use serde_json::Value;

const SP_ENTITY_ID: &str = "https://pysaml2-sp.example/saml";
const ACS_URL: &str = "https://pysaml2-sp.example/acs";
const HC_ROLE: &str = "urn:oid:1.2.392.100495.1.6.1.1";
const SMARTCARD_PKI: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI";

fn python_dir() -> PathBuf {
    workspace().join("conformance/clients/python")
}

/// Whether pysaml2 and xmlsec1 are installed; fails in CI when they are not.
fn installed() -> bool {
    let python = std::process::Command::new("python3")
        .args(["-c", "import saml2, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    let xmlsec = std::process::Command::new("xmlsec1")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if python && xmlsec {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "pysaml2 or xmlsec1 is not installed and CI does not skip its tests: run scripts/test.sh"
        );
    }
    eprintln!("warning: skipping the pysaml2 tests: pysaml2 or xmlsec1 is not installed");
    false
}

struct Sp {
    dir: tempfile::TempDir,
}

impl Sp {
    fn key(&self) -> PathBuf {
        self.dir.path().join("sp.key")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("sp.crt")
    }
}

/// The SP's key pair and its metadata as pysaml2 writes it.
fn sp() -> (Sp, PathBuf) {
    let sp = Sp {
        dir: tempfile::tempdir().unwrap(),
    };
    let (key, cert) = idp_saml::crypto::SigningCredential::generate_pem("pysaml2 SP", 30).unwrap();
    std::fs::write(sp.key(), key).unwrap();
    std::fs::write(sp.cert(), cert).unwrap();
    let out = std::process::Command::new("python3")
        .arg("saml_flow.py")
        .current_dir(python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MODE", "metadata")
        .env("SP_ENTITY_ID", SP_ENTITY_ID)
        .env("ACS_URL", ACS_URL)
        .env("SP_KEY", sp.key())
        .env("SP_CERT", sp.cert())
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let metadata = sp.dir.path().join("sp-metadata.xml");
    std::fs::write(&metadata, json["metadata"].as_str().unwrap()).unwrap();
    (sp, metadata)
}

fn start_idp(pki: &Pki, metadata: &Path) -> Server {
    let sps = format!(
        r#"
[[saml.sps]]
metadata_file = "{}"
display_name = "pysaml2 SP (conformance)"
claims = ["name", "family_name", "given_name", "hpki_role"]
"#,
        metadata.display()
    );
    start(
        pki,
        ServerOptions {
            tables: saml_table(&sps),
            ..Default::default()
        },
    )
}

async fn run_login(server: &Server, pki: &Pki, sp: &Sp, extra: &[(&str, &str)]) -> (bool, Value) {
    let card = pki.manifest.card("doctor").expect("doctor card");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("saml_flow.py")
        .current_dir(python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MODE", "login")
        .env("SP_ENTITY_ID", SP_ENTITY_ID)
        .env("ACS_URL", ACS_URL)
        .env("SP_KEY", sp.key())
        .env("SP_CERT", sp.cert())
        .env("IDP_METADATA_URL", server.public("/saml/metadata"))
        .env("CA_FILE", pki.path(&pki.manifest.server.ca))
        .env("CARD_CERT", pki.path(&card.chain))
        .env("CARD_KEY", pki.path(&card.key))
        .env_remove("TAMPER")
        .env_remove("BINDING")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in extra {
        cmd.env(name, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the pysaml2 flow finishes in 120 s")
        .expect("python3 starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "pysaml2 printed no JSON\nstdout: {stdout}\nstderr: {}\nidp log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                server.log()
            )
        });
    (out.status.success(), json)
}

/// `xmlsec1 --verify` of one signature of the Response, with the IdP's certificate.
fn xmlsec1_verifies(xml: &str, node_xpath: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (doc, cert) = (dir.path().join("response.xml"), dir.path().join("idp.crt"));
    std::fs::write(&doc, xml).unwrap();
    std::fs::write(&cert, saml_certificate_pem()).unwrap();
    let out = std::process::Command::new("xmlsec1")
        .arg("--verify")
        .arg("--pubkey-cert-pem")
        .arg(&cert)
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:protocol:Response",
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            "--node-xpath",
            node_xpath,
        ])
        .arg(&doc)
        .output()
        .unwrap();
    out.status.success()
}

const RESPONSE_SIGNATURE: &str = "/*[local-name()='Response']/*[local-name()='Signature']";
const ASSERTION_SIGNATURE: &str =
    "/*[local-name()='Response']/*[local-name()='Assertion']/*[local-name()='Signature']";

fn assert_login(server: &Server, json: &Value, ok: bool) {
    let context = format!("{json:#}\nidp log:\n{}", server.log());
    assert!(ok && json["ok"] == true, "flow failed: {context}");
    assert_eq!(
        json["idp_entity_id"],
        server.public("/saml/metadata"),
        "{context}"
    );
    assert_eq!(json["acs"], ACS_URL, "{context}");
    assert_eq!(json["relay_state"], "relay-123", "{context}");
    assert_eq!(json["in_response_to"], json["request_id"], "{context}");
    assert_eq!(
        json["name_id_format"], "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        "{context}"
    );
    assert!(json["name_id"].as_str().unwrap().len() >= 32, "{context}");
    assert!(
        !json["session_index"].as_str().unwrap().is_empty(),
        "{context}"
    );
    assert_eq!(json["authn_context"], SMARTCARD_PKI, "{context}");
    assert_eq!(json["ava"][HC_ROLE][0], "Medical Doctor", "{context}");
    assert!(json["ava"]["sn"][0].is_string(), "{context}");
    let steps: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        steps.iter().filter(|s| s.ends_with("(card)")).count(),
        1,
        "card presented once: {context}"
    );
    // The auto-POST page may submit a form to the SP's origin only.
    let csp = json["csp"].as_str().unwrap();
    assert!(
        csp.contains("form-action https://pysaml2-sp.example;"),
        "{context}"
    );
    let xml = json["response_xml"].as_str().unwrap();
    assert!(
        !xml.to_ascii_lowercase().contains("sha1"),
        "no SHA-1: {context}"
    );
    assert!(
        xmlsec1_verifies(xml, RESPONSE_SIGNATURE),
        "xmlsec1, Response: {context}"
    );
    assert!(
        xmlsec1_verifies(xml, ASSERTION_SIGNATURE),
        "xmlsec1, Assertion: {context}"
    );
    let tampered = xml.replacen("Medical Doctor", "Pharmacist", 1);
    assert!(!xmlsec1_verifies(&tampered, ASSERTION_SIGNATURE));
    assert!(!xmlsec1_verifies(&tampered, RESPONSE_SIGNATURE));
}

#[tokio::test]
async fn pysaml2_logs_in_with_the_card_over_redirect_and_post() {
    if !installed() {
        return;
    }
    let pki = pki();
    let (sp, metadata) = sp();
    let server = start_idp(pki, &metadata);
    let (ok, json) = run_login(&server, pki, &sp, &[]).await;
    assert_login(&server, &json, ok);
    let steps = json["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s == "POST /saml/sso/consent 200"),
        "consent asked on the first login: {json:#}"
    );
    let name_id = json["name_id"].clone();

    // HTTP-POST binding; consent remembered; the persistent NameID is stable.
    let (ok, json) = run_login(&server, pki, &sp, &[("BINDING", "post")]).await;
    assert_login(&server, &json, ok);
    assert_eq!(json["name_id"], name_id, "{json:#}");
    assert!(
        !json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("/saml/sso/consent")),
        "consent not asked again: {json:#}"
    );
}

#[tokio::test]
async fn pysaml2_single_logout_ends_the_idp_session() {
    if !installed() {
        return;
    }
    let pki = pki();
    let (sp, metadata) = sp();
    let server = start_idp(pki, &metadata);
    let (ok, json) = run_login(&server, pki, &sp, &[("LOGOUT", "yes")]).await;
    assert_login(&server, &json, ok);
    let logout = &json["logout"];
    assert_eq!(
        logout["status"], "urn:oasis:names:tc:SAML:2.0:status:Success",
        "{json:#}"
    );
    assert_eq!(logout["signed_query"], true, "{json:#}");
    assert_eq!(logout["session_before"], 200, "{json:#}");
    assert_eq!(
        logout["session_after"], 401,
        "the IdP session ended: {json:#}"
    );
}

#[tokio::test]
async fn pysaml2_refuses_a_tampered_attribute() {
    if !installed() {
        return;
    }
    let pki = pki();
    let (sp, metadata) = sp();
    let server = start_idp(pki, &metadata);
    let (ok, json) = run_login(&server, pki, &sp, &[("TAMPER", "attribute")]).await;
    assert!(!ok && json["ok"] == false, "{json:#}");
    let name = json["error"]["name"].as_str().unwrap_or_default();
    assert!(
        name.contains("Signature")
            || json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("ignature"),
        "refused for its signature: {json:#}"
    );
}
