//! SAML service providers managed at run time: `idp sp add|list|remove` against the
//! database of a running IdP (which uses a newly added SP at once), and the admin API's
//! `/admin/api/sps` behind its bearer token; metadata that must not be registered is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{
    ServerOptions, client, pki, saml_redirect_request as redirect_request, saml_table, start,
};
use idp_saml::crypto::SigningCredential;
use sha2::{Digest, Sha256};

const TOKEN: &str = "admin-token-0123456789abcdef";

fn metadata(entity_id: &str, valid_until: Option<&str>) -> String {
    let (_, cert) = SigningCredential::generate_pem("sp", 5).unwrap();
    let cert = idp_saml::sp::pem_certificate(&cert).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert);
    let valid = valid_until
        .map(|v| format!(" validUntil=\"{v}\""))
        .unwrap_or_default();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}"{valid}>
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://cli-sp.example/acs" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

fn idp(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(harness::idp_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn sps_are_managed_by_the_cli_and_the_admin_api() {
    let pki = pki();
    let server = start(
        pki,
        ServerOptions {
            tables: format!(
                "{}[admin]\ntoken_sha256 = \"{}\"\n",
                saml_table(""),
                hex::encode(Sha256::digest(TOKEN))
            ),
            ..ServerOptions::default()
        },
    );
    let http = client(pki, None);
    let sso = server.public("/saml/sso");

    // Not registered yet: refused on a page.
    let cli_sp = "https://cli-sp.example/saml";
    let response = http
        .get(format!("{sso}?{}", redirect_request(cli_sp, &sso)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // `idp sp add` from a file: the running IdP accepts its requests at once.
    let file = server.dir.path().join("cli-sp.xml");
    std::fs::write(&file, metadata(cli_sp, None)).unwrap();
    let (ok, out) = idp(
        &server.config,
        &[
            "sp",
            "add",
            "--metadata-file",
            file.to_str().unwrap(),
            "--display-name",
            "CLI SP",
            "--claim",
            "hpki_role",
        ],
    );
    assert!(ok, "{out}");
    let response = http
        .get(format!("{sso}?{}", redirect_request(cli_sp, &sso)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "accepted, on to the login");
    let (ok, out) = idp(&server.config, &["sp", "list"]);
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(listed["entity_id"], cli_sp);
    assert_eq!(listed["display_name"], "CLI SP");
    assert_eq!(listed["claims"], serde_json::json!(["hpki_role"]));

    // Expired metadata and a DTD are refused by the CLI.
    let expired = server.dir.path().join("expired.xml");
    std::fs::write(
        &expired,
        metadata("https://old.example/saml", Some("2001-01-01T00:00:00Z")),
    )
    .unwrap();
    let (ok, out) = idp(
        &server.config,
        &["sp", "add", "--metadata-file", expired.to_str().unwrap()],
    );
    assert!(!ok && out.contains("expired"), "{out}");
    let dtd = server.dir.path().join("dtd.xml");
    std::fs::write(
        &dtd,
        format!(
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
            metadata("https://dtd.example/saml", None)
        ),
    )
    .unwrap();
    let (ok, out) = idp(
        &server.config,
        &["sp", "add", "--metadata-file", dtd.to_str().unwrap()],
    );
    assert!(!ok && out.contains("document type"), "{out}");
    // A URL without the signer's certificate is refused before any fetch.
    let (ok, out) = idp(
        &server.config,
        &["sp", "add", "--metadata-url", "https://127.0.0.1:9/md.xml"],
    );
    assert!(!ok && out.contains("signed"), "{out}");

    // From a URL (TLS verified): the signature is checked before anything is read. The
    // IdP's own metadata stands in for a federation feed: signed by the configured
    // certificate it verifies (and is then refused as not an SP); by another, it does not.
    let idp_cert = server.dir.path().join("idp-saml.crt");
    std::fs::write(&idp_cert, harness::saml_certificate_pem()).unwrap();
    let (_, other_cert) = SigningCredential::generate_pem("other", 5).unwrap();
    let other = server.dir.path().join("other.crt");
    std::fs::write(&other, other_cert).unwrap();
    let url = server.public("/saml/metadata");
    let fetch = |signer: &std::path::Path| {
        let out = std::process::Command::new(harness::idp_bin())
            .args([
                "sp",
                "add",
                "--metadata-url",
                &url,
                "--metadata-signing-cert",
            ])
            .arg(signer)
            .arg("--config")
            .arg(&server.config)
            .env("SSL_CERT_FILE", pki.path(&pki.manifest.server.ca))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fetch(&idp_cert);
    assert!(err.contains("SPSSODescriptor"), "{err}");
    let err = fetch(&other);
    assert!(err.contains("signature"), "{err}");

    // The admin API, behind its token.
    let api = server.public("/admin/api/sps");
    assert_eq!(http.get(&api).send().await.unwrap().status(), 401);
    let api_sp = "https://api-sp.example/saml";
    let created = http
        .post(&api)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "metadata": metadata(api_sp, None),
            "name_id_format": "transient",
            "pre_approved": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["entity_id"], api_sp);
    assert_eq!(created["name_id_format"], "transient");
    let bad = http
        .post(&api)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"metadata": "<not-metadata/>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(bad["error"], "invalid_metadata");
    let list: serde_json::Value = http
        .get(&api)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entity_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [api_sp, cli_sp]);
    let remove = |entity: &str| {
        http.delete(format!(
            "{api}?entity_id={}",
            idp_core::oidc::provider::percent_encode(entity)
        ))
        .bearer_auth(TOKEN)
        .send()
    };
    assert_eq!(remove(api_sp).await.unwrap().status(), 204);
    assert_eq!(remove(api_sp).await.unwrap().status(), 404);

    // `idp sp remove`: the running IdP refuses its requests again.
    let (ok, out) = idp(&server.config, &["sp", "remove", cli_sp]);
    assert!(ok, "{out}");
    let response = http
        .get(format!("{sso}?{}", redirect_request(cli_sp, &sso)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
