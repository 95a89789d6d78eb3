//! Durability of the audit log: the IdP is killed with SIGKILL in the middle of a stream
//! of logins (no shutdown, no flush); after it restarts, every token response a client
//! received has its `token.issued` record (and its login its `release` record), and the
//! chain verifies. On SQLite (the embedded default) and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use harness::{Pki, Server, ServerOptions, pki, start};

const REDIRECT: &str = "https://rp.example/cb";
const SECRET: &str = "durability-rp-secret-0123456789";
/// Logins running at once.
const STREAMS: usize = 4;

/// One card login to the client; the `sid` of the ID token the client received.
async fn login(server: &Server, pki: &Pki) -> Option<String> {
    let kit = harness::oidc_kit(server, pki, "rp", SECRET, REDIRECT).await;
    let login = harness::kit_login(server, pki, &kit, &["profile", "hpki"], REDIRECT)
        .await
        .ok()?;
    login
        .id_token_claims
        .get("sid")?
        .as_str()
        .map(str::to_owned)
}

/// The `sid`s of the records of `kind` after a restart.
fn recorded(server: &Server, kind: &str) -> BTreeSet<String> {
    server
        .audit_records()
        .into_iter()
        .filter(|r| r["event"]["kind"] == kind)
        .filter_map(|r| r["event"]["detail"]["sid"].as_str().map(str::to_owned))
        .collect()
}

async fn every_token_received_before_a_sigkill_is_on_record(database: Option<String>) {
    let pki = pki();
    let server = start(
        pki,
        ServerOptions {
            database,
            oidc_extra: format!(
                r#"
[[oidc.clients]]
client_id = "rp"
name = "rp"
secret_sha256 = "{}"
auth_method = "client_secret_basic"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "hpki"]
pre_approved = true
audience = "regional_network"
"#,
                hex::encode(Sha256::digest(SECRET.as_bytes()))
            ),
            ..ServerOptions::default()
        },
    );
    // The streams hold the server; the kill goes by process ID, as an operator's would.
    let shared = Arc::new(server);
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (server, received) = (shared.clone(), received.clone());
            // A stream ends at its first failed login (the kill): a panic of the browser
            // harness included, which ends only this task.
            tokio::spawn(async move {
                while let Some(sid) = login(&server, pki).await {
                    received.lock().unwrap().push(sid);
                }
            })
        })
        .collect();
    for _ in 0..1200 {
        if received.lock().unwrap().len() >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &shared.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for stream in streams {
        let _ = stream.await;
    }
    let mut server = Arc::try_unwrap(shared)
        .ok()
        .expect("every stream has ended");
    server.kill();
    let received = received.lock().unwrap().clone();
    assert!(
        received.len() >= 12,
        "too few logins before the kill: {}\n{}",
        received.len(),
        server.log()
    );

    server.restart();
    let tokens = recorded(&server, "token.issued");
    let releases = recorded(&server, "release");
    for sid in &received {
        assert!(
            tokens.contains(sid),
            "tokens of session {sid} were received but not recorded"
        );
        assert!(
            releases.contains(sid),
            "the release of session {sid} is not recorded"
        );
    }
    server.idp(&["audit", "verify"]);
    // The restarted server serves again and its records continue the chain.
    assert!(login(&server, pki).await.is_some(), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_token_received_before_a_sigkill_is_on_record() {
    every_token_received_before_a_sigkill_is_on_record(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_token_received_before_a_sigkill_is_on_record() {
    let Some(url) = harness::required_env("IDP_TEST_POSTGRES_URL") else {
        return;
    };
    let database =
        harness::PgDatabase::create(&url, &format!("idp_durability_{}", std::process::id()));
    every_token_received_before_a_sigkill_is_on_record(Some(database.url.clone())).await;
}
