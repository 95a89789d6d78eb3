//! Third-party relying-party libraries against the live IdP: node `openid-client` and
//! Python Authlib (`conformance/clients/`), each doing discovery, the code flow with PKCE
//! S256, the doctor's card presented on the login origin, the code exchange with full ID
//! token validation, userinfo and refresh; and each refusing what it must refuse.
//!
//! The libraries are installed by the test command (`npm ci --prefix
//! conformance/clients/node`, `pip install -r conformance/clients/python/requirements.txt`).
//! When they are missing the tests fail in CI (CI set) and are skipped elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use harness::{Pki, Server, ServerOptions, pki, start, workspace};
use serde_json::Value;

const ACR_CARD_PIN: &str = "urn:hpki:acr:card-pin";
const NODE_SECRET: &str = "node-rp-secret-for-conformance-only";
const PYTHON_SECRET: &str = "python-rp-secret-for-conformance-only";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Library {
    /// `openid-client` (latest), run by node.
    OpenIdClient,
    /// Authlib, run by python3.
    Authlib,
}

/// One registered client and the library that drives it.
struct Rp {
    library: Library,
    client_id: &'static str,
    secret: &'static str,
    auth_method: &'static str,
    alg: &'static str,
    redirect_uri: &'static str,
    pre_approved: bool,
}

/// openid-client: ES256 ID tokens, client_secret_basic, pre-approved.
const NODE_RP: Rp = Rp {
    library: Library::OpenIdClient,
    client_id: "node-rp",
    secret: NODE_SECRET,
    auth_method: "client_secret_basic",
    alg: "ES256",
    redirect_uri: "https://node-rp.example/cb",
    pre_approved: true,
};

/// Authlib: RS256 ID tokens, client_secret_post, consent asked on the first login.
const PYTHON_RP: Rp = Rp {
    library: Library::Authlib,
    client_id: "python-rp",
    secret: PYTHON_SECRET,
    auth_method: "client_secret_post",
    alg: "RS256",
    redirect_uri: "https://python-rp.example/cb",
    pre_approved: false,
};

fn client_dir(library: Library) -> PathBuf {
    let sub = match library {
        Library::OpenIdClient => "conformance/clients/node",
        Library::Authlib => "conformance/clients/python",
    };
    workspace().join(sub)
}

/// Whether the library and its runtime are installed; fails in CI when they are not.
fn installed(library: Library) -> bool {
    let (missing, install) = match library {
        Library::OpenIdClient => {
            let node = std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            let module = client_dir(library).join("node_modules/openid-client/package.json");
            let missing = !node || !module.exists();
            (missing, "npm ci --prefix conformance/clients/node")
        }
        Library::Authlib => {
            let missing = !std::process::Command::new("python3")
                .args(["-c", "import authlib, joserfc, requests"])
                .output()
                .is_ok_and(|o| o.status.success());
            (
                missing,
                "python3 -m pip install -r conformance/clients/python/requirements.txt",
            )
        }
    };
    if !missing {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{library:?} is not installed and CI does not skip its tests: run `{install}`");
    }
    eprintln!("warning: skipping the {library:?} tests: not installed (run `{install}`)");
    false
}

/// SHA-256 (hex) of a client secret, by `idp client hash-secret`.
fn secret_sha256(secret: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(harness::idp_bin())
        .args(["client", "hash-secret"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "idp client hash-secret failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn clients_toml() -> String {
    [NODE_RP, PYTHON_RP]
        .iter()
        .map(|rp| {
            format!(
                r#"
[[oidc.clients]]
client_id = "{id}"
name = "{id} (conformance)"
secret_sha256 = "{hash}"
auth_method = "{method}"
redirect_uris = ["{redirect}"]
scopes = ["openid", "profile", "email", "hpki", "offline_access"]
pre_approved = {pre_approved}
refresh_tokens = true
id_token_signed_response_alg = "{alg}"
"#,
                id = rp.client_id,
                hash = secret_sha256(rp.secret),
                method = rp.auth_method,
                redirect = rp.redirect_uri,
                pre_approved = rp.pre_approved,
                alg = rp.alg,
            )
        })
        .collect()
}

fn start_idp(pki: &Pki) -> Server {
    start(
        pki,
        ServerOptions {
            oidc_extra: clients_toml(),
            ..Default::default()
        },
    )
}

/// Runs one flow of `rp`'s library with the doctor's card; returns the exit status and
/// the JSON object the script printed.
async fn run_flow(server: &Server, pki: &Pki, rp: &Rp, extra: &[(&str, &str)]) -> (bool, Value) {
    let card = pki.manifest.card("doctor").expect("doctor card");
    let mut cmd = match rp.library {
        Library::OpenIdClient => {
            let mut cmd = tokio::process::Command::new("node");
            cmd.arg("oidc-flow.mjs");
            cmd
        }
        Library::Authlib => {
            let mut cmd = tokio::process::Command::new("python3");
            cmd.arg("oidc_flow.py").env("PYTHONDONTWRITEBYTECODE", "1");
            cmd
        }
    };
    cmd.current_dir(client_dir(rp.library))
        .env("ISSUER", server.public(""))
        .env("CA_FILE", pki.path(&pki.manifest.server.ca))
        .env("CARD_CERT", pki.path(&card.chain))
        .env("CARD_KEY", pki.path(&card.key))
        .env("CLIENT_ID", rp.client_id)
        .env("CLIENT_SECRET", rp.secret)
        .env("REDIRECT_URI", rp.redirect_uri)
        .env("AUTH_METHOD", rp.auth_method)
        .env("ID_TOKEN_ALG", rp.alg)
        .env_remove("TAMPER")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in extra {
        cmd.env(name, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{:?} flow did not finish in 120 s", rp.library))
        .unwrap_or_else(|e| panic!("{:?} flow could not start: {e}", rp.library));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "{:?} printed no JSON\nstdout: {stdout}\nstderr: {stderr}\nidp log:\n{}",
                rp.library,
                server.log()
            )
        });
    (out.status.success(), json)
}

/// The doctor's kanji family name, from the test PKI's doctors list.
fn doctor_family_name_kanji(pki: &Pki, holder_id: &str) -> String {
    let csv = std::fs::read_to_string(pki.path(&pki.manifest.doctors_csv)).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == "family_name").unwrap();
    let row = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|cols| cols[0] == holder_id)
        .expect("the doctor is in the doctors list");
    row[column].to_owned()
}

/// Everything a successful flow must show.
fn assert_login(server: &Server, pki: &Pki, rp: &Rp, ok: bool, json: &Value) {
    let context = format!("{:?}: {json:#}\nidp log:\n{}", rp.library, server.log());
    assert!(ok && json["ok"] == true, "flow failed: {context}");
    let card = pki.manifest.card("doctor").unwrap();
    let holder_id = card.holder_id.as_deref().unwrap();
    let issuer = server.public("");

    // Discovery and the authorization response (RFC 9207 iss).
    assert_eq!(json["issuer"], issuer.as_str(), "{context}");
    assert_eq!(json["callback"]["iss"], issuer.as_str(), "{context}");

    // The card went to the login origin, and only there.
    let steps: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let card_steps: Vec<&&str> = steps.iter().filter(|s| s.ends_with("(card)")).collect();
    assert_eq!(
        card_steps,
        [&"GET /login/hpki 303 (card)"],
        "card presented once, on the login origin: {context}"
    );
    if !rp.pre_approved {
        assert!(
            steps.contains(&"POST /authorize/consent 303"),
            "consent asked: {context}"
        );
    }

    // The ID token, validated by the library.
    let header = &json["id_token_header"];
    assert_eq!(header["alg"], rp.alg, "{context}");
    let claims = &json["id_token_claims"];
    let sub = json["sub"].as_str().expect("sub");
    assert_eq!(claims["sub"], sub, "{context}");
    assert_eq!(claims["iss"], issuer.as_str(), "{context}");
    assert_eq!(claims["aud"], rp.client_id, "{context}");
    assert_eq!(claims["azp"], rp.client_id, "{context}");
    assert!(claims["at_hash"].is_string(), "{context}");
    // Pairwise: neither the HPKI holder id nor anything that contains it.
    assert!(
        sub != holder_id && !sub.contains(holder_id) && sub.len() >= 32,
        "sub must be pairwise: {context}"
    );
    assert_eq!(claims["acr"], ACR_CARD_PIN, "{context}");
    assert_eq!(claims["hpki_role"], "Medical Doctor", "{context}");
    let kanji = doctor_family_name_kanji(pki, holder_id);
    assert_eq!(
        claims["family_name#ja-Hani-JP"],
        kanji.as_str(),
        "{context}"
    );

    // Userinfo with the access token.
    let userinfo = &json["userinfo"];
    assert_eq!(userinfo["sub"], sub, "{context}");
    assert_eq!(userinfo["hpki_role"], "Medical Doctor", "{context}");
    assert_eq!(
        userinfo["family_name#ja-Hani-JP"],
        kanji.as_str(),
        "{context}"
    );

    // Refresh: new tokens, the same subject, and the new access token works.
    let refresh = &json["refresh"];
    assert_eq!(refresh["new_access_token"], true, "{context}");
    assert_eq!(refresh["new_refresh_token"], true, "{context}");
    assert_eq!(refresh["userinfo_sub"], sub, "{context}");
    if refresh["id_token"] == true {
        assert_eq!(refresh["id_token_claims"]["sub"], sub, "{context}");
        assert_eq!(refresh["id_token_claims"]["acr"], ACR_CARD_PIN, "{context}");
    }
}

#[tokio::test]
async fn openid_client_logs_in_with_the_card_validates_and_refreshes() {
    if !installed(Library::OpenIdClient) {
        return;
    }
    let pki = pki();
    let server = start_idp(pki);
    let (ok, json) = run_flow(&server, pki, &NODE_RP, &[]).await;
    assert_login(&server, pki, &NODE_RP, ok, &json);
    assert_eq!(json["library"], "openid-client");
}

#[tokio::test]
async fn authlib_logs_in_with_the_card_validates_and_refreshes() {
    if !installed(Library::Authlib) {
        return;
    }
    let pki = pki();
    let server = start_idp(pki);
    let (ok, json) = run_flow(&server, pki, &PYTHON_RP, &[]).await;
    assert_login(&server, pki, &PYTHON_RP, ok, &json);
    assert_eq!(json["library"], "authlib");
}

/// A refusal: the script failed, the flow got as far as the token endpoint.
fn assert_refused(rp: &Rp, ok: bool, json: &Value, last_step: &str) -> Value {
    assert!(
        !ok && json["ok"] == false,
        "{:?} must refuse: {json:#}",
        rp.library
    );
    let steps = json["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s == "GET /login/hpki 303 (card)"),
        "the login itself succeeded: {json:#}"
    );
    let last = steps
        .iter()
        .rposition(|s| s.as_str().unwrap().starts_with("POST /token"))
        .expect("the code was exchanged");
    assert_eq!(steps[last], last_step, "{json:#}");
    json["error"].clone()
}

#[tokio::test]
async fn openid_client_refuses_a_tampered_id_token_and_the_idp_a_wrong_secret() {
    if !installed(Library::OpenIdClient) {
        return;
    }
    let pki = pki();
    let server = start_idp(pki);

    // The ID token's payload altered in transit: the JWKS signature check fails.
    let (ok, json) = run_flow(&server, pki, &NODE_RP, &[("TAMPER", "id_token")]).await;
    let error = assert_refused(&NODE_RP, ok, &json, "POST /token 200");
    assert_eq!(error["code"], "OAUTH_INVALID_RESPONSE", "{json:#}");
    assert!(
        error["cause"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("signature"),
        "{json:#}"
    );

    // A wrong secret in HTTP Basic: 401 invalid_client with a Basic challenge.
    let (ok, json) = run_flow(&server, pki, &NODE_RP, &[("CLIENT_SECRET", "wrong")]).await;
    let error = assert_refused(&NODE_RP, ok, &json, "POST /token 401");
    assert_eq!(error["error"], "invalid_client", "{json:#}");
    assert_eq!(error["status"], 401, "{json:#}");
    assert_eq!(error["challenges"][0]["scheme"], "basic", "{json:#}");
}

#[tokio::test]
async fn authlib_refuses_a_tampered_id_token_and_the_idp_a_wrong_secret() {
    if !installed(Library::Authlib) {
        return;
    }
    let pki = pki();
    let server = start_idp(pki);

    // The ID token's payload altered in transit: the JWKS signature check fails.
    let (ok, json) = run_flow(&server, pki, &PYTHON_RP, &[("TAMPER", "id_token")]).await;
    let error = assert_refused(&PYTHON_RP, ok, &json, "POST /token 200");
    assert_eq!(error["name"], "BadSignatureError", "{json:#}");

    // A wrong secret in the body: invalid_client.
    let (ok, json) = run_flow(&server, pki, &PYTHON_RP, &[("CLIENT_SECRET", "wrong")]).await;
    let error = assert_refused(&PYTHON_RP, ok, &json, "POST /token 401");
    assert_eq!(error["error"], "invalid_client", "{json:#}");

    // The registered method is client_secret_post: HTTP Basic is refused.
    let (ok, json) = run_flow(
        &server,
        pki,
        &PYTHON_RP,
        &[("AUTH_METHOD", "client_secret_basic")],
    )
    .await;
    let error = assert_refused(&PYTHON_RP, ok, &json, "POST /token 401");
    assert_eq!(error["error"], "invalid_client", "{json:#}");
}
