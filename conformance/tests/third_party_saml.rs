//! A third-party SAML service provider against the live IdP: Python pysaml2
//! (`conformance/clients/python/saml_flow.py`) registers with its own metadata, sends a
//! signed AuthnRequest (HTTP-Redirect and HTTP-POST), the doctor logs in with the card
//! and consents, and pysaml2 validates the signed Response (signatures, Destination,
//! Audience, Recipient, InResponseTo, conditions) and reads the attributes; `xmlsec1
//! --verify` checks both signatures independently; a tampered attribute is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod saml_sp;

use harness::{Server, pki, saml_certificate_pem};
use saml_sp::SpScript;
use serde_json::Value;

const SP_ENTITY_ID: &str = "https://pysaml2-sp.example/saml";
const ACS_URL: &str = "https://pysaml2-sp.example/acs";
const HC_ROLE: &str = "urn:oid:1.2.392.100495.1.6.1.1";
const SMARTCARD_PKI: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI";

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

const PYSAML2: SpScript = SpScript {
    program: "python3",
    script: "saml_flow.py",
    dir: "conformance/clients/python",
    env: &[("PYTHONDONTWRITEBYTECODE", "1")],
    env_remove: &["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"],
    entity_id: SP_ENTITY_ID,
    acs_url: ACS_URL,
    label: "pysaml2 SP",
};

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
    let sp = PYSAML2.sp();
    let server = PYSAML2.start_idp(pki, &sp);
    let (ok, json) = PYSAML2.login(&server, pki, &sp, &[]).await;
    assert_login(&server, &json, ok);
    let steps = json["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s == "POST /saml/sso/consent 200"),
        "consent asked on the first login: {json:#}"
    );
    let name_id = json["name_id"].clone();

    // HTTP-POST binding; consent remembered; the persistent NameID is stable.
    let (ok, json) = PYSAML2
        .login(&server, pki, &sp, &[("BINDING", "post")])
        .await;
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
    let sp = PYSAML2.sp();
    let server = PYSAML2.start_idp(pki, &sp);
    let (ok, json) = PYSAML2.login(&server, pki, &sp, &[("LOGOUT", "yes")]).await;
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
    let sp = PYSAML2.sp();
    let server = PYSAML2.start_idp(pki, &sp);
    let (ok, json) = PYSAML2
        .login(&server, pki, &sp, &[("TAMPER", "attribute")])
        .await;
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
