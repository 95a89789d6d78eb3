//! End to end: the doctor's account API (scope `account`) against the real `idp` binary.
//! The portal reads and changes the doctor's disclosure settings, and the next logins to an
//! OIDC client and to a SAML SP release less; consents are listed and withdrawn; the
//! doctor's own disclosure history pages through the audit log. Tokens without the scope,
//! without a token, and malformed changes are refused with RFC 6750 / OAuth errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use hpki_rp_kit::AuthParams;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use harness::{
    Browser, Pki, Server, ServerOptions, client, idp_bin, pki, posted_saml_response, saml_login,
    saml_table, start,
};

const REDIRECT: &str = "https://rp.example/cb";
const SECRET: &str = "account-api-rp-secret-0123456789";
const SP: &str = "https://regional-sp.example/saml";
/// The SAML attribute of `email` (eduPerson `mail`).
const MAIL: &str = idp_vocabulary::saml_attribute::MAIL;

fn client_toml(id: &str, audience: &str, scopes: &[&str], pre_approved: bool) -> String {
    format!(
        r#"
[[oidc.clients]]
client_id = "{id}"
name = "{id} service"
secret_sha256 = "{secret}"
auth_method = "client_secret_basic"
redirect_uris = ["{REDIRECT}"]
scopes = {scopes:?}
pre_approved = {pre_approved}
audience = "{audience}"
"#,
        secret = hex::encode(Sha256::digest(SECRET.as_bytes()))
    )
}

/// An SP that requires email (`RequestedAttribute isRequired`).
const REQUIRING_SP: &str = "https://requiring-sp.example/saml";

/// Metadata of an SP at `entity_id`; with `requires`, a required attribute.
fn sp_metadata(entity_id: &str, requires: Option<&str>) -> String {
    let requested = requires
        .map(|name| {
            format!(
                r#"<md:AttributeConsumingService index="0"><md:ServiceName xml:lang="ja">必須</md:ServiceName><md:RequestedAttribute Name="{name}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri" isRequired="true"/></md:AttributeConsumingService>"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{entity_id}/acs" index="0"/>
    {requested}
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

/// A card login of the doctor to `client_id` (consent approved if asked): the access
/// token and the userinfo claims.
async fn login(server: &Server, pki: &Pki, client_id: &str, scopes: &[&str]) -> (String, Value) {
    let kit = harness::oidc_kit(server, pki, client_id, SECRET, REDIRECT).await;
    let login = harness::kit_login(server, pki, &kit, scopes, REDIRECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let claims = kit
        .userinfo(&login.access_token, &login.subject)
        .await
        .unwrap()
        .claims;
    (login.access_token.secret().clone(), Value::Object(claims))
}

/// The Response a SAML login to [`SP`] brings the SP.
async fn saml_response(server: &Server, pki: &Pki) -> String {
    let mut browser = Browser::new(pki);
    let (status, page) = saml_login(server, pki, &mut browser, SP, "doctor").await;
    assert_eq!(status, 200, "{page}\n{}", server.log());
    posted_saml_response(&page)
}

struct Api<'a> {
    server: &'a Server,
    http: reqwest::Client,
}

impl Api<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self.http.request(method, self.server.public(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{path}"
        );
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"))
        };
        (status, challenge, json)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Option<String>, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn put_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, json) = self
            .send(
                reqwest::Method::PUT,
                path,
                Some(token),
                Some(("application/json", body.to_string())),
            )
            .await;
        (status, json)
    }
}

fn allowed(settings: &Value, item: &str, audience: &str) -> bool {
    settings["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["item"] == item && s["audience"] == audience)
        .unwrap_or_else(|| panic!("no {item}/{audience}: {settings}"))["allowed"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn the_portal_changes_settings_withdraws_consents_and_reads_the_history() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("sp.xml");
    std::fs::write(&metadata, sp_metadata(SP, None)).unwrap();
    let requiring = dir.path().join("requiring-sp.xml");
    std::fs::write(&requiring, sp_metadata(REQUIRING_SP, Some(MAIL))).unwrap();
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: [
                client_toml(
                    "portal",
                    "jma_service",
                    &["openid", "profile", "account"],
                    true,
                ),
                client_toml(
                    "regional",
                    "regional_network",
                    &["openid", "profile", "email"],
                    true,
                ),
                client_toml("third", "third_party", &["openid", "profile"], false),
            ]
            .concat(),
            tables: saml_table(&format!(
                "[[saml.sps]]\nmetadata_file = \"{}\"\npre_approved = true\naudience = \"regional_network\"\nclaims = [\"name\", \"email\", \"hpki_role\"]\n\
                 [[saml.sps]]\nmetadata_file = \"{}\"\npre_approved = true\naudience = \"regional_network\"\n",
                metadata.display(),
                requiring.display()
            )),
            ..ServerOptions::default()
        },
    );
    let api = Api {
        server: &server,
        http: client(pki, None),
    };
    let (portal, _) = login(&server, pki, "portal", &["openid", "profile", "account"]).await;

    // Before: the defaults, and email goes to regional networks over both protocols.
    let (status, _, settings) = api.get("/api/me/disclosure-settings", Some(&portal)).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["settings"].as_array().unwrap().len(), 10 * 3);
    assert_eq!(
        settings["items"][0],
        json!({"item": "name", "ja": "氏名", "en": "Name"})
    );
    assert!(allowed(&settings, "email", "regional_network"));
    assert!(!allowed(&settings, "email", "third_party"));
    let (_, before) = login(&server, pki, "regional", &["openid", "profile", "email"]).await;
    assert!(before.get("email").is_some(), "{before}");
    assert!(saml_response(&server, pki).await.contains(MAIL));

    // The doctor turns email off for regional networks through the portal.
    let (status, after) = api
        .put_json(
            "/api/me/disclosure-settings",
            &portal,
            json!({"settings": [{"item": "email", "audience": "regional_network", "allowed": false}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert!(!allowed(&after, "email", "regional_network"));
    assert!(allowed(&after, "email", "jma_service"));
    // The next login to each releases no email; the rest still goes.
    let (_, next) = login(&server, pki, "regional", &["openid", "profile", "email"]).await;
    assert!(next.get("email").is_none(), "{next}");
    assert!(next.get("name").is_some(), "{next}");
    let response = saml_response(&server, pki).await;
    assert!(!response.contains(MAIL), "{response}");
    assert!(
        response.contains(idp_vocabulary::saml_attribute::HC_ROLE),
        "{response}"
    );
    // An SP that requires email is refused: the doctor reads that the own setting withholds
    // it, and the button returns a RequestDenied Response without an assertion.
    let mut browser = Browser::new(pki);
    let (status, page) = saml_login(&server, pki, &mut browser, REQUIRING_SP, "doctor").await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains(r#"data-reason="required_claims_withheld""#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-claim="email" data-why="doctor_setting""#),
        "{page}"
    );
    assert!(page.contains("情報開示設定"), "Japanese first: {page}");
    assert!(
        !page.contains("<script>"),
        "the doctor presses the button: {page}"
    );
    let denied = posted_saml_response(&page);
    assert!(
        denied.contains("urn:oasis:names:tc:SAML:2.0:status:RequestDenied"),
        "{denied}"
    );
    assert!(!denied.contains("Assertion"), "{denied}");
    // An OIDC client that requires email (essential) likewise.
    let kit = harness::oidc_kit(&server, pki, "regional", SECRET, REDIRECT).await;
    let (mut url, _) = kit.begin(&["openid", "profile", "email"], &AuthParams::hpki_card());
    url.query_pairs_mut()
        .append_pair("claims", r#"{"userinfo":{"email":{"essential":true}}}"#);
    let mut browser = Browser::new(pki);
    let (status, page) = harness::browse_to(
        &server,
        pki,
        &mut browser,
        url.as_str(),
        "doctor",
        true,
        REDIRECT,
    )
    .await
    .expect_err("a refusal page");
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains(r#"data-claim="email" data-why="doctor_setting""#),
        "{page}"
    );
    assert!(page.contains("error=access_denied"), "{page}");

    // Consents: the third party asks, the doctor approves; the portal lists and withdraws.
    login(&server, pki, "third", &["openid", "profile"]).await;
    let (status, _, consents) = api.get("/api/me/consents", Some(&portal)).await;
    assert_eq!(status, StatusCode::OK);
    let list = consents["consents"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{consents}");
    assert_eq!(list[0]["relying_party"], "third");
    assert_eq!(list[0]["name"], "third service");
    assert_eq!(list[0]["protocol"], "oidc");
    assert!(
        list[0]["claims"]
            .as_array()
            .unwrap()
            .contains(&json!("name"))
    );
    let (status, _, _) = api
        .send(
            reqwest::Method::DELETE,
            "/api/me/consents/third",
            Some(&portal),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = api
        .send(
            reqwest::Method::DELETE,
            "/api/me/consents/third",
            Some(&portal),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let (_, _, consents) = api.get("/api/me/consents", Some(&portal)).await;
    assert_eq!(consents["consents"], json!([]));

    // The doctor's own history, newest first: the withdrawal and the settings change by
    // the portal, the releases with claim names; never session IDs.
    let (status, _, history) = api
        .get("/api/me/disclosures?limit=200", Some(&portal))
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries[0]["kind"], "consent.revoked", "{history:#}");
    assert_eq!(entries[0]["actor"], "portal");
    assert_eq!(entries[0]["relying_party"], "third");
    let change = entries
        .iter()
        .find(|e| e["kind"] == "settings.changed")
        .unwrap();
    assert_eq!(change["actor"], "portal");
    assert_eq!(
        change["detail"]["changes"],
        json!([{"item": "email", "audience": "regional_network", "allowed": false}])
    );
    let releases: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "release" && e["relying_party"] == SP)
        .collect();
    assert_eq!(releases.len(), 2, "{history:#}");
    assert_eq!(releases[0]["detail"]["protocol"], "saml");
    assert!(
        !releases[0]["detail"]["claims"]
            .as_array()
            .unwrap()
            .contains(&json!("email"))
    );
    assert!(
        releases[1]["detail"]["claims"]
            .as_array()
            .unwrap()
            .contains(&json!("email"))
    );
    assert!(!history.to_string().contains("\"sid\""), "{history}");
    assert!(history["next_before"].is_null());
    // Paging: two at a time, then on from the last one seen.
    let (_, _, first) = api.get("/api/me/disclosures?limit=2", Some(&portal)).await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let next = first["next_before"].as_i64().unwrap();
    assert_eq!(first["entries"][1]["seq"].as_i64(), Some(next));
    let (_, _, second) = api
        .get(
            &format!("/api/me/disclosures?limit=2&before={next}"),
            Some(&portal),
        )
        .await;
    assert_eq!(second["entries"][0], entries[2]);

    // Refusals. No token: a challenge naming the scope, no error code (RFC 6750 §3.1).
    let (status, challenge, _) = api.get("/api/me/disclosure-settings", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("scope=\"account\""));
    let (status, challenge, body) = api
        .get("/api/me/disclosure-settings", Some("not-a-token"))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_token"))
    );
    assert!(challenge.unwrap().contains("error=\"invalid_token\""));
    // A token without the scope (the regional network's) reads and changes nothing.
    let (regional, _) = login(&server, pki, "regional", &["openid", "profile"]).await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/me/disclosure-settings"),
        (reqwest::Method::GET, "/api/me/consents"),
        (reqwest::Method::GET, "/api/me/disclosures"),
        (reqwest::Method::DELETE, "/api/me/consents/regional"),
    ] {
        let (status, challenge, body) = api.send(method, path, Some(&regional), None).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::FORBIDDEN, &json!("insufficient_scope")),
            "{path}"
        );
        assert!(challenge.unwrap().contains("error=\"insufficient_scope\""));
    }
    let (status, body) = api
        .put_json(
            "/api/me/disclosure-settings",
            &regional,
            json!({"settings": [{"item": "email", "audience": "regional_network", "allowed": true}]}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
    // Malformed changes change nothing.
    for bad in [
        json!({"settings": [{"item": "blood_type", "audience": "regional_network", "allowed": true}]}),
        json!({"settings": [{"item": "email", "audience": "everyone", "allowed": true}]}),
        json!({"settings": [{"item": "email", "audience": "regional_network", "allowed": "yes"}]}),
        json!({"settings": [
            {"item": "email", "audience": "regional_network", "allowed": true},
            {"item": "email", "audience": "regional_network", "allowed": false}
        ]}),
        json!({"settings": [], "doctor": "someone-else"}),
    ] {
        let (status, body) = api
            .put_json("/api/me/disclosure-settings", &portal, bad.clone())
            .await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_request")),
            "{bad}"
        );
    }
    let (status, _, body) = api
        .send(
            reqwest::Method::PUT,
            "/api/me/disclosure-settings",
            Some(&portal),
            Some(("text/plain", "email=off".into())),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );
    let (status, _, _) = api.get("/api/me/disclosures?limit=0", Some(&portal)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, _, settings) = api.get("/api/me/disclosure-settings", Some(&portal)).await;
    assert!(
        !allowed(&settings, "email", "regional_network"),
        "unchanged"
    );

    // The chain holds every record the API wrote.
    server.idp(&["audit", "verify"]);

    // Only a client of the jma_service audience may hold the account scope.
    let rogue = server.dir.path().join("rogue.toml");
    let text = std::fs::read_to_string(&server.config).unwrap();
    let text = text.replacen(
        "[[oidc.clients]]",
        &format!(
            "{}\n[[oidc.clients]]",
            client_toml("rogue", "third_party", &["openid", "account"], true)
        ),
        1,
    );
    std::fs::write(&rogue, text).unwrap();
    let out = std::process::Command::new(idp_bin())
        .args(["check-config", "-c", rogue.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("account scope"),
        "{text}"
    );
}
