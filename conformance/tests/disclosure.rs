//! End to end: the disclosure decision against the real `idp` binary. A regional-network
//! client and a third-party client asking for the same claims receive different ones; a
//! doctor who turns an item off stops releasing it at the next login; `idp explain` says
//! why; `idp policy check` refuses a bad policy and a server does not start with one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::process::Command;

use hpki_rp_kit::{AuthParams, OidcClient};
use idp_core::disclosure::{Audience, Item, Setting};
use idp_core::store::{DisclosureSettingsStore, DoctorDirectory};
use serde_json::Value;
use sha2::{Digest, Sha256};

use harness::{Browser, Pki, Server, ServerOptions, idp_bin, pki, start};

const REDIRECT: &str = "https://rp.example/cb";
const SECRET: &str = "disclosure-rp-secret-0123456789";
const SCOPES: &[&str] = &["profile", "hpki", "email", "doctor_registration"];

fn client_toml(id: &str, audience: &str) -> String {
    format!(
        r#"
[[oidc.clients]]
client_id = "{id}"
name = "{id}"
secret_sha256 = "{secret}"
auth_method = "client_secret_basic"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "hpki", "email", "doctor_registration"]
pre_approved = true
audience = "{audience}"
"#,
        secret = hex::encode(Sha256::digest(SECRET.as_bytes()))
    )
}

async fn kit(server: &Server, pki: &Pki, client_id: &str) -> OidcClient {
    harness::oidc_kit(server, pki, client_id, SECRET, REDIRECT).await
}

/// A card login for `client_id` asking for [`SCOPES`]: the userinfo claims.
async fn released(server: &Server, pki: &Pki, client_id: &str) -> Value {
    let kit = kit(server, pki, client_id).await;
    let login = harness::kit_login(server, pki, &kit, SCOPES, REDIRECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    Value::Object(
        kit.userinfo(&login.access_token, &login.subject)
            .await
            .unwrap()
            .claims,
    )
}

/// A login refused for a required claim: the page names the claim and why (`why`); its
/// link returns to the client. The query the client receives.
async fn refused_then_returned(server: &Server, pki: &Pki, url: &str, why: &str) -> String {
    let mut browser = Browser::new(pki);
    let (status, page) =
        harness::browse_to(server, pki, &mut browser, url, "doctor", true, REDIRECT)
            .await
            .expect_err("a refusal page");
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains(r#"data-reason="required_claims_withheld""#),
        "{page}"
    );
    assert!(page.contains(&format!(r#"data-why="{why}""#)), "{page}");
    let link = harness::between(&page, r#"<a class="button" href=""#, "\"").replace("&amp;", "&");
    let query = link
        .strip_prefix(&format!("{REDIRECT}?"))
        .unwrap_or_else(|| panic!("{link}"));
    query.to_owned()
}

fn holder_id(pki: &Pki) -> String {
    pki.manifest
        .card("doctor")
        .unwrap()
        .holder_id
        .clone()
        .unwrap()
}

/// Runs `idp`: success, then stdout followed by stderr.
fn idp(args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = idp_split(args);
    (ok, format!("{stdout}{stderr}"))
}

fn idp_split(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(idp_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn audiences_get_different_releases_and_the_doctor_setting_applies_at_the_next_login() {
    let pki = pki();
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: format!(
                "{}{}",
                client_toml("regional", "regional_network"),
                client_toml("third", "third_party")
            ),
            ..ServerOptions::default()
        },
    );
    let regional = released(&server, pki, "regional").await;
    let third = released(&server, pki, "third").await;
    for claim in ["name", "hpki_role"] {
        assert!(
            regional.get(claim).is_some(),
            "regional: {claim}: {regional}"
        );
        assert!(third.get(claim).is_some(), "third party: {claim}: {third}");
    }
    for claim in ["email", "doctor_registration_number"] {
        assert!(
            regional.get(claim).is_some(),
            "regional: {claim}: {regional}"
        );
        assert!(third.get(claim).is_none(), "third party: {claim}: {third}");
    }

    // A client that requires (essential) a claim the policy withholds is refused, not
    // given a partial login: the doctor reads why, then returns to the client with
    // access_denied.
    let third_kit = kit(&server, pki, "third").await;
    let (mut url, _pending) = third_kit.begin(SCOPES, &AuthParams::hpki_card());
    url.query_pairs_mut().append_pair(
        "claims",
        r#"{"id_token":{"doctor_registration_number":{"essential":true}}}"#,
    );
    let query = refused_then_returned(&server, pki, url.as_str(), "policy_forbids").await;
    assert!(query.contains("error=access_denied"), "{query}");
    assert!(query.contains("doctor_registration_number"), "{query}");
    assert!(!query.contains("code="), "{query}");

    // `idp explain` names the policy that withholds and the one that permits.
    let config = server.config.to_str().unwrap();
    let holder = holder_id(pki);
    let (ok, text) = idp(&[
        "explain", "-c", config, "--client", "third", "--doctor", &holder,
    ]);
    assert!(ok, "{text}");
    let line = |claim: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{claim} ")))
            .unwrap_or_else(|| panic!("no line for {claim}: {text}"))
            .to_owned()
    };
    assert!(
        line("doctor_registration_number").contains("policy forbid third-party-no-registration"),
        "{text}"
    );
    assert!(line("email").contains("no policy permits it"), "{text}");
    assert!(
        line("hpki_role").contains("permitted by third-party"),
        "{text}"
    );

    // The doctor withholds email from regional networks: the next login has none.
    let db = idp_store::Database::connect(&format!(
        "sqlite://{}",
        server.dir.path().join("idp.db").display()
    ))
    .await
    .unwrap();
    let doctor = db.find_by_holder(&holder).await.unwrap().unwrap();
    db.put_settings(
        &doctor.id,
        &[Setting {
            item: Item::Email,
            audience: Audience::RegionalNetwork,
            allowed: false,
        }],
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    let after = released(&server, pki, "regional").await;
    assert!(after.get("email").is_none(), "{after}");
    assert!(after.get("doctor_registration_number").is_some(), "{after}");
    let (_, text, _) = idp_split(&[
        "explain", "-c", config, "--client", "regional", "--doctor", &holder, "--json",
    ]);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    let email = json["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["claim"] == "email")
        .unwrap();
    assert_eq!(email["reason"], "doctor_setting", "{json:#}");

    // Every login, release and token was recorded before the answer: claim names, never
    // values. The two configured clients (new at start), the two signing keys generated at
    // the first start, four card logins (one refused for its essential claim), three
    // releases, three token responses.
    let (ok, text) = idp(&["audit", "verify", "-c", config]);
    assert!(
        ok && text.contains("audit chain intact: 14 record(s)"),
        "{text}"
    );
    assert!(text.contains("checkpoint(s) verified"), "{text}");
    let (ok, export, _) = idp_split(&["audit", "export", "-c", config]);
    assert!(ok, "{export}");
    let records: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "login.success").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "release").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds[..2], ["admin.client.configured"; 2], "{kinds:?}");
    assert_eq!(kinds[2..4], ["admin.key.generated"; 2], "{kinds:?}");
    let login = records
        .iter()
        .find(|r| r["event"]["kind"] == "login.success")
        .unwrap();
    assert_eq!(
        login["event"]["detail"]["acr"],
        idp_vocabulary::authn::ACR_HPKI_CARD
    );
    let third_release = records
        .iter()
        .find(|r| r["event"]["relying_party"] == "third" && r["event"]["kind"] == "release")
        .unwrap();
    let detail = &third_release["event"]["detail"];
    assert!(
        detail["claims"]
            .as_array()
            .unwrap()
            .contains(&"hpki_role".into())
    );
    assert!(
        !detail["claims"]
            .as_array()
            .unwrap()
            .contains(&"email".into())
    );
    assert!(
        detail["withheld"].as_array().unwrap().contains(
            &serde_json::json!({"claim": "doctor_registration_number", "reason": "policy_forbids"})
        ),
        "{detail}"
    );
    let email = regional["email"].as_str().unwrap();
    assert!(!export.contains(email), "no claim value in the audit log");

    // A configuration naming a policies folder that does not validate does not load.
    let bad = tempfile::tempdir().unwrap();
    std::fs::copy(
        harness::workspace().join("policies/schema.cedarschema"),
        bad.path().join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        bad.path().join("p.cedar"),
        "@id(\"p\") permit (principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let copy = server.dir.path().join("bad-policies.toml");
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &copy,
        format!(
            "{text}\n[disclosure]\npolicies = {:?}\n",
            bad.path().display().to_string()
        ),
    )
    .unwrap();
    let (ok, text) = idp(&["check-config", "-c", copy.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("disclosure.policies") && text.contains("nope"),
        "{text}"
    );
    // An audit retention below the year is refused too.
    let short = server.dir.path().join("short-retention.toml");
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&short, format!("{text}\n[audit]\nretention_days = 100\n")).unwrap();
    let (ok, text) = idp(&["check-config", "-c", short.to_str().unwrap()]);
    assert!(!ok && text.contains("audit.retention_days"), "{text}");
    // `idp policy check -c` reads the configuration's folder, and only that.
    let (ok, text) = idp(&["policy", "check", "-c", copy.to_str().unwrap()]);
    assert!(!ok && text.contains("nope"), "{text}");
    let (ok, text) = idp(&["policy", "check", "-c", config]);
    assert!(ok && text.contains("compiled-in defaults"), "{text}");
}

#[test]
fn a_bad_policy_is_refused_by_policy_check_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let policies = harness::workspace().join("policies");
    for name in ["schema.cedarschema", "release.cedar"] {
        std::fs::copy(policies.join(name), dir.path().join(name)).unwrap();
    }
    let dir_arg = dir.path().to_str().unwrap();
    let (ok, text) = idp(&["policy", "check", "--dir", dir_arg]);
    assert!(ok && text.contains("3 permit, 2 forbid"), "{text}");
    std::fs::write(
        dir.path().join("zz.cedar"),
        "@id(\"bad\") permit (principal, action, resource) when { principal.country == \"jp\" };",
    )
    .unwrap();
    let (ok, text) = idp(&["policy", "check", "--dir", dir_arg]);
    assert!(!ok, "{text}");
    assert!(text.contains("country"), "{text}");
}

/// The kinds of the audit records so far, in order.
fn audit_kinds(server: &Server) -> Vec<String> {
    server
        .audit_records()
        .iter()
        .map(|r| r["event"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn policies_reload_whole_or_not_at_all_and_the_admin_api_explains() {
    let pki = pki();
    let token = "admin-token-policies-0123456789";
    let folder = tempfile::tempdir().unwrap();
    let policies = harness::workspace().join("policies");
    for name in ["schema.cedarschema", "release.cedar"] {
        std::fs::copy(policies.join(name), folder.path().join(name)).unwrap();
    }
    let server = start(
        pki,
        ServerOptions {
            oidc_extra: client_toml("third", "third_party"),
            tables: format!(
                "[admin]\ntoken_sha256 = \"{}\"\n[disclosure]\npolicies = {:?}\nreload_secs = 1\n",
                hex::encode(Sha256::digest(token)),
                folder.path().display().to_string()
            ),
            ..ServerOptions::default()
        },
    );
    let config = server.config.to_str().unwrap().to_owned();
    let http = harness::client(pki, None);
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, server.public(path)).bearer_auth(token)
    };
    let get_json = |path: &'static str| {
        let request = admin(reqwest::Method::GET, path);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, before) = get_json("/admin/api/policies").await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        (before["permit"].as_u64(), before["forbid"].as_u64()),
        (Some(3), Some(2))
    );
    let v1 = before["version"].as_str().unwrap().to_owned();
    assert!(third_has_name(&server, pki).await);

    // The admin API explains, as `idp explain --json` does.
    let holder = holder_id(pki);
    let response = admin(
        reqwest::Method::GET,
        &format!("/admin/api/explain?relying_party=third&doctor={holder}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let explanation: Value = response.json().await.unwrap();
    let reason = |e: &Value, claim: &str| {
        e["claims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["claim"] == claim)
            .unwrap_or_else(|| panic!("{claim}: {e}"))["reason"]
            .clone()
    };
    assert_eq!(
        reason(&explanation, "doctor_registration_number"),
        "policy_forbids"
    );
    assert_eq!(reason(&explanation, "name"), "released");
    assert_eq!(explanation["policy_version"], v1.as_str());
    let missing = admin(
        reqwest::Method::GET,
        "/admin/api/explain?relying_party=nobody&doctor=nobody",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);
    let anonymous = http
        .get(server.public("/admin/api/policies"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // A change that does not validate is refused, once on record; the policy in force stays
    // through the periodic checks that see the same files again.
    std::fs::write(
        folder.path().join("zz.cedar"),
        "@id(\"broken\") forbid (principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let refused = admin(reqwest::Method::POST, "/admin/api/policies/reload")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"], "invalid_policy");
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{refused}"
    );
    assert_eq!(refused["version"], v1.as_str());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        get_json("/admin/api/policies").await.1["version"],
        v1.as_str()
    );
    assert!(
        third_has_name(&server, pki).await,
        "the old policy still decides"
    );
    let refusals = |kinds: &[String]| {
        kinds
            .iter()
            .filter(|k| *k == "admin.policy.refused")
            .count()
    };
    assert_eq!(refusals(&audit_kinds(&server)), 1);

    // A valid change is picked up by the periodic check: the name no longer goes to third
    // parties from the next login.
    std::fs::write(
        folder.path().join("zz.cedar"),
        "@id(\"no-name-for-third-parties\")\n@reason(\"test\")\nforbid (principal in Idp::Audience::\"third_party\", action == Idp::Action::\"release\", resource == Idp::Claim::\"name\");",
    )
    .unwrap();
    let mut v2 = v1.clone();
    for _ in 0..50 {
        v2 = get_json("/admin/api/policies").await.1["version"]
            .as_str()
            .unwrap()
            .to_owned();
        if v2 != v1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(v2, v1, "the change was not picked up\n{}", server.log());
    assert!(!third_has_name(&server, pki).await);
    let kinds = audit_kinds(&server);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "admin.policy.reloaded")
            .count(),
        1,
        "{kinds:?}"
    );
    // SIGHUP checks at once and does not stop the server; an API reload of the same files
    // changes nothing.
    let hup = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let again: Value = admin(reqwest::Method::POST, "/admin/api/policies/reload")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again,
        serde_json::json!({"result": "unchanged", "version": v2})
    );
    let (ok, text) = idp(&["audit", "verify", "-c", &config]);
    assert!(ok, "{text}");
}

/// Whether a login of the third-party client receives the doctor's name.
async fn third_has_name(server: &Server, pki: &Pki) -> bool {
    released(server, pki, "third").await.get("name").is_some()
}
