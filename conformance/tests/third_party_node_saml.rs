//! A second, independent third-party SAML service provider against the live IdP: node
//! `@node-saml/node-saml` (`conformance/clients/node/saml-flow.mjs`; xml-crypto and xmldom
//! underneath, nothing shared with pysaml2/xmlsec1). It registers with the metadata its
//! own generator writes, sends an AuthnRequest by HTTP-Redirect signed with RSA-SHA256,
//! the doctor logs in with the card and consents, and node-saml validates the Response
//! (both signatures, InResponseTo against its request cache, SubjectConfirmationData and
//! Conditions time limits, Audience; the script adds Destination, Recipient and Issuer,
//! which node-saml leaves to its caller) and reads the attributes; a tampered attribute is
//! refused.
//!
//! The library is installed by the test command (`npm ci --prefix
//! conformance/clients/node`). When it is missing the tests fail in CI (CI set) and are
//! skipped elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod saml_sp;

use std::path::PathBuf;

use harness::{Pki, Server, pki, saml_certificate_pem, workspace};
use saml_sp::SpScript;
use serde_json::Value;

const SP_ENTITY_ID: &str = "https://node-saml-sp.example/saml";
const ACS_URL: &str = "https://node-saml-sp.example/acs";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const SMARTCARD_PKI: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI";
const FAMILY_NAME_KANJI: &str = "urn:jp:hpki-idp:claim:family_name:ja-Hani-JP";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

fn node_dir() -> PathBuf {
    workspace().join("conformance/clients/node")
}

/// Whether node and node-saml are installed; fails in CI when they are not.
fn installed() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let module = node_dir().join("node_modules/@node-saml/node-saml/package.json");
    if node && module.exists() {
        return true;
    }
    let install = "npm ci --prefix conformance/clients/node";
    if std::env::var_os("CI").is_some() {
        panic!("node-saml is not installed and CI does not skip its tests: run `{install}`");
    }
    eprintln!("warning: skipping the node-saml tests: not installed (run `{install}`)");
    false
}

const NODE_SAML: SpScript = SpScript {
    program: "node",
    script: "saml-flow.mjs",
    dir: "conformance/clients/node",
    env: &[],
    env_remove: &["NODE_TLS_REJECT_UNAUTHORIZED", "NODE_EXTRA_CA_CERTS"],
    entity_id: SP_ENTITY_ID,
    acs_url: ACS_URL,
    label: "node-saml SP",
};

/// One column of the doctor's row in the test PKI's doctors list.
fn doctor_column(pki: &Pki, name: &str) -> String {
    let card = pki.manifest.card("doctor").unwrap();
    let holder_id = card.holder_id.as_deref().unwrap();
    let csv = std::fs::read_to_string(pki.path(&pki.manifest.doctors_csv)).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == name).unwrap();
    let row = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|cols| cols[0] == holder_id)
        .expect("the doctor is in the doctors list");
    row[column].to_owned()
}

fn steps(json: &Value) -> Vec<&str> {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn assert_login(server: &Server, pki: &Pki, json: &Value, ok: bool) {
    let context = format!("{json:#}\nidp log:\n{}", server.log());
    assert!(ok && json["ok"] == true, "flow failed: {context}");
    assert_eq!(json["library"], "@node-saml/node-saml", "{context}");
    let idp_entity_id = server.public("/saml/metadata");
    assert_eq!(json["idp_entity_id"], idp_entity_id, "{context}");
    assert_eq!(json["issuer"], idp_entity_id, "{context}");
    assert_eq!(json["idp_sso_url"], server.public("/saml/sso"), "{context}");

    // The AuthnRequest went signed with RSA-SHA256; the Response answers it.
    assert_eq!(json["request_signed"], true, "{context}");
    assert_eq!(json["request_sig_alg"], RSA_SHA256, "{context}");
    assert!(json["request_id"].is_string(), "{context}");
    assert_eq!(json["inResponseTo"], json["request_id"], "{context}");

    // To this SP's ACS, and only there.
    assert_eq!(json["acs"], ACS_URL, "{context}");
    assert_eq!(json["destination"], ACS_URL, "{context}");
    assert_eq!(
        json["recipients"],
        serde_json::json!([ACS_URL]),
        "{context}"
    );
    assert_eq!(json["relay_state"], "relay-123", "{context}");
    let csp = json["csp"].as_str().unwrap();
    assert!(
        csp.contains("form-action https://node-saml-sp.example;"),
        "{context}"
    );

    assert_eq!(json["nameIDFormat"], PERSISTENT, "{context}");
    assert!(json["nameID"].as_str().unwrap().len() >= 32, "{context}");
    assert!(
        !json["sessionIndex"].as_str().unwrap_or_default().is_empty(),
        "{context}"
    );
    assert_eq!(json["authn_context"], SMARTCARD_PKI, "{context}");
    assert_eq!(json["hcRole"], "Medical Doctor", "{context}");
    assert_eq!(
        json["sn"],
        doctor_column(pki, "family_name_latin").as_str(),
        "{context}"
    );
    assert_eq!(
        json["attributes"][FAMILY_NAME_KANJI],
        doctor_column(pki, "family_name").as_str(),
        "{context}"
    );
    let xml = json["response_xml"].as_str().unwrap();
    assert!(
        !xml.to_ascii_lowercase().contains("sha1"),
        "no SHA-1: {context}"
    );
    // node-saml verified the signatures with the IdP's signing certificate, as its
    // metadata publishes it.
    let certificate: String = saml_certificate_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(
        json["idp_certs"],
        serde_json::json!([certificate]),
        "{context}"
    );

    // The card went to the login origin, and only there, once.
    let steps = steps(json);
    let card_steps: Vec<&&str> = steps.iter().filter(|s| s.ends_with("(card)")).collect();
    assert_eq!(
        card_steps,
        [&"GET /login/hpki 303 (card)"],
        "card presented once, on the login origin: {context}"
    );
}

#[test]
fn the_idp_reads_node_saml_metadata() {
    if !installed() {
        return;
    }
    let sp = NODE_SAML.sp();
    let xml = std::fs::read_to_string(sp.metadata()).unwrap();
    let parsed = idp_saml::sp::ServiceProvider::from_metadata(
        &xml,
        idp_saml::sp::SpSettings::default(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(parsed.entity_id, SP_ENTITY_ID);
    assert_eq!(parsed.acs.len(), 1, "{xml}");
    assert_eq!(parsed.acs[0].location, ACS_URL);
    assert!(parsed.acs[0].location.starts_with("https://"));
    assert!(parsed.authn_requests_signed, "{xml}");
    assert!(parsed.want_assertions_signed, "{xml}");
    let cert = std::fs::read_to_string(sp.cert()).unwrap();
    assert_eq!(
        parsed.signing_certificates,
        [idp_saml::sp::pem_certificate(&cert).unwrap()],
        "{xml}"
    );
}

#[tokio::test]
async fn node_saml_logs_in_with_the_card() {
    if !installed() {
        return;
    }
    let pki = pki();
    let sp = NODE_SAML.sp();
    let server = NODE_SAML.start_idp(pki, &sp);
    let (ok, json) = NODE_SAML.login(&server, pki, &sp, &[]).await;
    assert_login(&server, pki, &json, ok);
    assert!(
        steps(&json).contains(&"POST /saml/sso/consent 200"),
        "consent asked on the first login: {json:#}"
    );
    let name_id = json["nameID"].clone();
    let session_index = json["sessionIndex"].clone();

    // A second login (a new node process: the card again, no session cookie): consent
    // remembered, the persistent NameID stable.
    let (ok, json) = NODE_SAML.login(&server, pki, &sp, &[]).await;
    assert_login(&server, pki, &json, ok);
    assert_eq!(json["nameID"], name_id, "{json:#}");
    assert_ne!(json["sessionIndex"], session_index, "{json:#}");
    assert!(
        !steps(&json).iter().any(|s| s.contains("/saml/sso/consent")),
        "consent not asked again: {json:#}"
    );
}

#[tokio::test]
async fn node_saml_refuses_a_tampered_attribute() {
    if !installed() {
        return;
    }
    let pki = pki();
    let sp = NODE_SAML.sp();
    let server = NODE_SAML.start_idp(pki, &sp);
    let (ok, json) = NODE_SAML
        .login(&server, pki, &sp, &[("TAMPER", "attribute")])
        .await;
    assert!(!ok && json["ok"] == false, "{json:#}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("signature"),
        "refused for its signature: {json:#}"
    );
    // It was the IdP's genuine Response that got that far.
    assert!(
        steps(&json)
            .iter()
            .any(|s| s.starts_with("POST /saml/sso/consent")),
        "{json:#}"
    );
}
