//! End to end: the real `idp` binary, real TLS with client certificates, the generated test
//! cards, and (when SoftHSM2 is installed; always in CI) a PIN-protected PKCS#11 token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{
    CardStep, ServerOptions, client, complete, login, pki, present, session_json, start,
    start_login,
};
use time::OffsetDateTime;

#[tokio::test]
async fn good_cards_log_in_and_logout_ends_the_session() {
    let pki = pki();
    let server = start(pki, ServerOptions::default());
    for card in pki.manifest.cards.iter().filter(|c| c.good) {
        let session = login(&server, pki, &card.name)
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}\n{}", card.name, server.log()));
        let (status, json) = session_json(&server, pki, &session).await;
        assert_eq!(status, 200, "{}", card.name);
        let roles: Vec<String> = serde_json::from_value(json["card"]["roles"].clone()).unwrap();
        assert_eq!(roles, card.roles, "{}", card.name);
        assert_eq!(json["acr"], "urn:hpki:acr:card-pin");
        assert_eq!(json["amr"], serde_json::json!(["sc", "pin", "hwk", "mfa"]));
        assert_eq!(json["card"]["serial"], card.serial.as_str());
        // The CRL that vouched for the card is recorded.
        assert_eq!(json["card"]["revocation"][0]["status"], "good");

        let logout = client(pki, None)
            .post(server.public("/logout"))
            .header(reqwest::header::COOKIE, &session)
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), 303);
        let (status, _) = session_json(&server, pki, &session).await;
        assert_eq!(status, 401, "session must end at logout");
    }
}

#[tokio::test]
async fn every_bad_card_is_refused_with_its_reason() {
    let pki = pki();
    let server = start(pki, ServerOptions::default());
    let bad: Vec<_> = pki.manifest.cards.iter().filter(|c| !c.good).collect();
    assert!(bad.len() >= 10, "the test PKI must hold every bad card");
    let mut refused = Vec::new();
    for card in bad {
        let expected = card.expect.as_deref().unwrap();
        let browser = client(pki, None);
        let (_, login_url) = start_login(&server, &browser).await;
        let step = present(&client(pki, Some(&card.name)), &login_url).await;
        match (expected, step) {
            // No verifiable chain: the handshake itself fails (DESIGN.md §3).
            ("unknown_issuer", CardStep::Handshake(_)) => {}
            (_, CardStep::Refused(403, code)) => {
                assert_eq!(code, expected, "card {}", card.name);
                refused.push(code);
            }
            (_, other) => panic!("card {} expected {expected}, got {other:?}", card.name),
        }
    }
    // Each refusal that reached the IdP is in the audit log with its reason.
    let out = std::process::Command::new(harness::idp_bin())
        .args(["audit", "export", "-c", server.config.to_str().unwrap()])
        .output()
        .unwrap();
    let reasons: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"]["kind"] == "login.failure")
        .map(|r| r["event"]["detail"]["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, refused, "{}", server.log());
}

#[tokio::test]
async fn no_client_certificate_cannot_complete_a_handshake() {
    let pki = pki();
    let server = start(pki, ServerOptions::default());
    let browser = client(pki, None);
    let (_, login_url) = start_login(&server, &browser).await;
    assert!(matches!(
        present(&browser, &login_url).await,
        CardStep::Handshake(_)
    ));
}

#[tokio::test]
async fn tickets_are_single_use_and_bound_to_the_browser() {
    let pki = pki();
    let server = start(pki, ServerOptions::default());
    let browser = client(pki, None);

    // Carried to another browser (no binding cookie): refused, and the ticket is spent.
    let (_, login_url) = start_login(&server, &browser).await;
    let CardStep::Ticket(url) = present(&client(pki, Some("doctor")), &login_url).await else {
        panic!("doctor refused");
    };
    assert_eq!(
        complete(&browser, &url, None).await,
        Err("400 binding_mismatch".into())
    );

    // Another browser's binding cookie: refused.
    let (binding, login_url) = start_login(&server, &browser).await;
    let (other_binding, _) = start_login(&server, &browser).await;
    let CardStep::Ticket(url) = present(&client(pki, Some("doctor")), &login_url).await else {
        panic!("doctor refused");
    };
    assert_eq!(
        complete(&browser, &url, Some(&other_binding)).await,
        Err("400 binding_mismatch".into())
    );
    assert_eq!(
        complete(&browser, &url, Some(&binding)).await,
        Err("400 ticket_invalid".into())
    );

    // The right browser once; a replay fails.
    let (binding, login_url) = start_login(&server, &browser).await;
    let CardStep::Ticket(url) = present(&client(pki, Some("doctor")), &login_url).await else {
        panic!("doctor refused");
    };
    assert!(complete(&browser, &url, Some(&binding)).await.is_ok());
    assert_eq!(
        complete(&browser, &url, Some(&binding)).await,
        Err("400 ticket_invalid".into())
    );

    // A login request is single-use too.
    assert!(matches!(
        present(&client(pki, Some("doctor")), &login_url).await,
        CardStep::Refused(400, code) if code == "request_expired"
    ));
}

#[tokio::test]
async fn open_redirects_are_refused() {
    let pki = pki();
    let server = start(pki, ServerOptions::default());
    for target in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example%2F",
        "%2F%5Cevil.example",
    ] {
        let response = client(pki, None)
            .get(server.public(&format!("/login?return_to={target}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{target}");
    }
}

#[tokio::test]
async fn a_card_revoked_while_the_server_runs_is_refused_after_the_crl_reloads() {
    let pki = pki();
    // A private copy of the CRLs, so that other tests keep the original.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for rel in &pki.manifest.trust.crls {
        let target = dir
            .path()
            .join(std::path::Path::new(rel).file_name().unwrap());
        std::fs::copy(pki.path(rel), &target).unwrap();
        files.push(target);
    }
    let server = start(
        pki,
        ServerOptions {
            crl_files: Some(files.clone()),
            ..ServerOptions::default()
        },
    );
    assert!(login(&server, pki, "dentist").await.is_ok());

    let now = OffsetDateTime::now_utc();
    let revoked = [
        idp_devpki::Revocation::card(&pki.manifest, "revoked", now - time::Duration::days(30))
            .unwrap(),
        idp_devpki::Revocation::card(&pki.manifest, "dentist", now - time::Duration::minutes(1))
            .unwrap(),
    ];
    let der = idp_devpki::issue_crl_der(
        &pki.root,
        &pki.manifest,
        "jma-ca",
        &revoked,
        now - time::Duration::minutes(1),
        now + time::Duration::days(7),
        1000,
    )
    .unwrap();
    let jma = files.iter().find(|p| p.ends_with("jma-ca.crl")).unwrap();
    std::fs::write(jma, der).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match login(&server, pki, "dentist").await {
            Err(e) if e == "403 revoked" => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "dentist still accepted: {other:?}\n{}",
                    server.log()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    // Other cards of the same CA are unaffected.
    assert!(login(&server, pki, "doctor").await.is_ok());
}

fn stale_crls(pki: &harness::Pki, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let now = OffsetDateTime::now_utc();
    let mut files = Vec::new();
    for ca in ["root", "jma-ca"] {
        let der = idp_devpki::issue_crl_der(
            &pki.root,
            &pki.manifest,
            ca,
            &[],
            now - time::Duration::days(60),
            now - time::Duration::days(30),
            2,
        )
        .unwrap();
        let path = dir.join(format!("{ca}.crl"));
        std::fs::write(&path, der).unwrap();
        files.push(path);
    }
    files
}

#[tokio::test]
async fn a_stale_crl_hard_fails_by_default_and_soft_fails_when_configured() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let files = stale_crls(pki, dir.path());
    let hard = start(
        pki,
        ServerOptions {
            crl_files: Some(files.clone()),
            ..ServerOptions::default()
        },
    );
    assert_eq!(
        login(&hard, pki, "doctor").await,
        Err("403 revocation_stale".into())
    );

    let soft = start(
        pki,
        ServerOptions {
            crl_files: Some(files),
            revocation_extra: "when_stale = \"soft_fail\"".into(),
            ..ServerOptions::default()
        },
    );
    let session = login(&soft, pki, "doctor").await.unwrap();
    let (_, json) = session_json(&soft, pki, &session).await;
    assert_eq!(
        json["card"]["revocation"][0]["status"],
        "unchecked_stale_crl"
    );
}

#[tokio::test]
async fn a_missing_crl_hard_fails_by_default() {
    let pki = pki();
    let server = start(
        pki,
        ServerOptions {
            crl_files: Some(vec![]),
            ..ServerOptions::default()
        },
    );
    assert_eq!(
        login(&server, pki, "doctor").await,
        Err("403 revocation_unavailable".into())
    );
}

#[tokio::test]
async fn repeated_failures_are_rate_limited() {
    let pki = pki();
    let server = start(
        pki,
        ServerOptions {
            tables: "[rate_limit]\nfailures_per_address = 100\nfailures_per_certificate = 3\nwindow_secs = 600\n".into(),
            ..ServerOptions::default()
        },
    );
    for _ in 0..3 {
        assert_eq!(
            login(&server, pki, "expired").await,
            Err("403 expired".into())
        );
    }
    assert_eq!(
        login(&server, pki, "expired").await,
        Err("429 rate_limited".into())
    );
    // Another card from the same address is still served.
    assert!(login(&server, pki, "doctor").await.is_ok());
}

#[tokio::test]
async fn unknown_holders_follow_the_configured_policy() {
    let pki = pki();
    let refuse = start(
        pki,
        ServerOptions {
            import_doctors: false,
            ..ServerOptions::default()
        },
    );
    assert_eq!(
        login(&refuse, pki, "doctor").await,
        Err("403 no_doctor_record".into())
    );

    let provision = start(
        pki,
        ServerOptions {
            import_doctors: false,
            hpki_extra: "unknown_holder = \"provision\"".into(),
            ..ServerOptions::default()
        },
    );
    let session = login(&provision, pki, "doctor").await.unwrap();
    let (_, json) = session_json(&provision, pki, &session).await;
    let card = pki.manifest.card("doctor").unwrap();
    assert_eq!(json["display_name"], card.common_name.as_str());
    // The second login finds the provisioned record.
    assert!(login(&provision, pki, "doctor").await.is_ok());
    let list = Command::new(harness::idp_bin())
        .args(["doctors", "list", "--config"])
        .arg(&provision.config)
        .output()
        .unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"provisioned\""));
}

#[tokio::test]
async fn proxy_headers_are_accepted_only_from_trusted_proxies_and_validated_again() {
    use base64::Engine as _;
    let pki = pki();
    let b64 = |card: &str| {
        harness::certs(&pki.path(&pki.manifest.card(card).unwrap().chain))
            .iter()
            .map(|c| {
                format!(
                    ":{}:",
                    base64::engine::general_purpose::STANDARD.encode(c.as_ref())
                )
            })
            .collect::<Vec<_>>()
    };
    let browser = client(pki, None);
    // What a TLS-terminating proxy sends to the login listener (plain HTTP behind it).
    let via_proxy = |server: &harness::Server, client_cert: String, chain: String| {
        let browser = browser.clone();
        let url = format!("http://127.0.0.1:{}/login/hpki", server.login_port);
        let public = server.public("");
        async move {
            let response = browser
                .get(format!("{public}/login?return_to=/api/session"))
                .send()
                .await
                .unwrap();
            let binding = harness::cookie(&response, "__Host-idp_login").unwrap();
            let query = harness::location(&response)
                .split_once('?')
                .unwrap()
                .1
                .to_owned();
            let mut request = browser
                .get(format!("{url}?{query}"))
                .header("Client-Cert", client_cert);
            if !chain.is_empty() {
                request = request.header("Client-Cert-Chain", chain);
            }
            (binding, request.send().await.unwrap())
        }
    };
    let proxy_mode = |trusted: &str| ServerOptions {
        login_extra: format!(
            "client_certificate = \"rfc9440_proxy\"\ntrusted_proxies = [\"{trusted}\"]"
        ),
        ..ServerOptions::default()
    };

    let trusted = start(pki, proxy_mode("127.0.0.1"));
    let doctor = b64("doctor");
    let (binding, response) = via_proxy(&trusted, doctor[0].clone(), doctor[1..].join(", ")).await;
    assert_eq!(response.status(), 303, "{}", trusted.log());
    let url = harness::location(&response);
    assert!(complete(&browser, &url, Some(&binding)).await.is_ok());

    // Garbage and oversized headers get a clean refusal.
    for value in [
        ":not base64!:".to_owned(),
        "no-colons".to_owned(),
        format!(":{}:", "A".repeat(30_000)),
    ] {
        let (_, response) = via_proxy(&trusted, value, String::new()).await;
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // A bad card through the proxy is validated again and refused.
    let expired = b64("expired");
    let (_, response) = via_proxy(&trusted, expired[0].clone(), expired[1..].join(", ")).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        harness::reason(&response.text().await.unwrap()).as_deref(),
        Some("expired")
    );

    // The same headers from an address that is not a trusted proxy are refused.
    let untrusted = start(pki, proxy_mode("192.0.2.1"));
    let (_, response) = via_proxy(&untrusted, doctor[0].clone(), doctor[1..].join(", ")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        harness::reason(&response.text().await.unwrap()).as_deref(),
        Some("untrusted_proxy")
    );
}

#[tokio::test]
async fn pages_are_japanese_first_with_english_available() {
    let pki = pki();
    let server = start(pki, ServerOptions::default());
    let http = client(pki, None);
    let response = http.get(server.public("/")).send().await.unwrap();
    let headers = response.headers().clone();
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let ja = response.text().await.unwrap();
    assert!(ja.contains("<html lang=\"ja\">") && ja.contains("医師資格証"));
    let en = http
        .get(server.public("/?lang=en"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(en.contains("<html lang=\"en\">") && en.contains("HPKI login"));
    let accept = http
        .get(server.public("/"))
        .header(reqwest::header::ACCEPT_LANGUAGE, "en-US,en;q=0.9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(accept.contains("<html lang=\"en\">"));
}

/// The PIN-protected virtual card: curl signs the TLS handshake through the OpenSSL
/// PKCS#11 engine and SoftHSM2. The right PIN logs in; a wrong PIN cannot complete the
/// handshake.
#[tokio::test]
async fn a_pkcs11_card_logs_in_with_the_right_pin_only() {
    let pki = pki();
    let Some(conf) = &pki.softhsm_conf else {
        eprintln!("skipping: SoftHSM2 is not installed");
        return;
    };
    let engine = [
        "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
        "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    if !engine {
        assert!(
            std::env::var_os("CI").is_none(),
            "the OpenSSL PKCS#11 engine is required in CI"
        );
        eprintln!("skipping: libengine-pkcs11-openssl is not installed");
        return;
    }
    let server = start(pki, ServerOptions::default());
    let card = pki.manifest.card("doctor").unwrap();
    let curl = |pin: &str, login_url: &str| {
        Command::new("curl")
            .env("SOFTHSM2_CONF", conf)
            .args([
                "--silent",
                "--show-error",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code} %{redirect_url}",
            ])
            .args(["--engine", "pkcs11", "--key-type", "ENG", "--key"])
            .arg(format!(
                "pkcs11:token={};object=auth;type=private;pin-value={pin}",
                card.name
            ))
            .arg("--cert")
            .arg(pki.path(&card.chain))
            .arg("--cacert")
            .arg(pki.path(&pki.manifest.server.ca))
            .arg(login_url)
            .output()
            .unwrap()
    };
    let browser = client(pki, None);

    let (_, login_url) = start_login(&server, &browser).await;
    let wrong = curl("000000", &login_url);
    assert!(
        !wrong.status.success(),
        "a wrong PIN must not complete the handshake"
    );
    assert!(!String::from_utf8_lossy(&wrong.stdout).starts_with("303"));

    let (binding, login_url) = start_login(&server, &browser).await;
    let right = curl(&card.pin, &login_url);
    let out = String::from_utf8_lossy(&right.stdout).to_string();
    assert!(
        right.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&right.stderr)
    );
    let (status, url) = out.split_once(' ').unwrap();
    assert_eq!(status, "303", "{out}");
    let session = complete(&browser, url, Some(&binding)).await.unwrap();
    assert_eq!(session_json(&server, pki, &session).await.0, 200);
}

/// Production storage: PostgreSQL and Redis, for real.
#[tokio::test]
async fn logins_work_on_postgres_and_redis() {
    let (Some(pg), Some(redis)) = (
        harness::required_env("IDP_TEST_POSTGRES_URL"),
        harness::required_env("IDP_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let pki = pki();
    // A fresh database for this test.
    let name = format!("idp_e2e_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .arg(&pg)
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("DROP DATABASE IF EXISTS {name}"));
    psql(&format!("CREATE DATABASE {name}"));
    let (base, _) = pg.rsplit_once('/').unwrap();
    let server = start(
        pki,
        ServerOptions {
            database: Some(format!("{base}/{name}")),
            ephemeral: redis,
            ..ServerOptions::default()
        },
    );
    let session = login(&server, pki, "doctor").await.unwrap();
    assert_eq!(session_json(&server, pki, &session).await.0, 200);
    assert_eq!(
        login(&server, pki, "revoked").await,
        Err("403 revoked".into())
    );
    drop(server);
    psql(&format!("DROP DATABASE IF EXISTS {name}"));
}

#[tokio::test]
async fn crls_are_fetched_from_allow_listed_urls() {
    let pki = pki();
    let crl = std::fs::read(pki.path("crl/jma-ca.crl")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let crl = crl.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    crl.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&crl).await;
            });
        }
    });
    let base = format!("http://127.0.0.1:{port}/");
    let server = start(
        pki,
        ServerOptions {
            // Only the root's CRL from a file; the issuing CA's comes from the URL.
            crl_files: Some(vec![pki.path("crl/root.crl")]),
            revocation_extra: format!(
                "crl_urls = [\"{base}jma-ca.crl\"]\nallowed_url_prefixes = [\"{base}\"]"
            ),
            ..ServerOptions::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match login(&server, pki, "doctor").await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "CRL never fetched: {e}\n{}",
                    server.log()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    assert_eq!(
        login(&server, pki, "revoked").await,
        Err("403 revoked".into())
    );
    served.abort();
}

/// A client certificate that is garbage, truncated, oversized, or part of an over-long
/// chain ends the handshake; the server keeps serving.
#[tokio::test]
async fn malformed_client_certificates_end_the_handshake_cleanly() {
    use std::sync::Arc;

    #[derive(Debug)]
    struct Present(Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for Present {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    let pki = pki();
    let server = start(pki, ServerOptions::default());
    let card = pki.manifest.card("doctor").unwrap();
    let good = harness::certs(&pki.path(&card.chain));
    let key = harness::provider()
        .key_provider
        .load_private_key(harness::key(&pki.path(&card.key)))
        .unwrap();
    let leaf = good[0].as_ref().to_vec();
    let der = |bytes: Vec<u8>| rustls_pki_types::CertificateDer::from(bytes);
    let chains: Vec<(&str, Vec<rustls_pki_types::CertificateDer<'static>>)> = vec![
        ("garbage", vec![der(b"not a certificate at all".to_vec())]),
        ("truncated", vec![der(leaf[..leaf.len() / 2].to_vec())]),
        (
            "huge",
            vec![der(
                [vec![0x30, 0x82, 0x4e, 0x20], vec![0u8; 20_000]].concat()
            )],
        ),
        (
            "too many",
            std::iter::repeat_n(good[1].clone(), 7).fold(vec![good[0].clone()], |mut v, c| {
                v.push(c);
                v
            }),
        ),
    ];
    for (what, chain) in chains {
        let resolver = Arc::new(Present(Arc::new(rustls::sign::CertifiedKey::new(
            chain,
            key.clone(),
        ))));
        let mut roots = rustls::RootCertStore::empty();
        for cert in harness::certs(&pki.path(&pki.manifest.server.ca)) {
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(harness::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(resolver);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let (_, login_url) = start_login(&server, &client(pki, None)).await;
        assert!(
            matches!(present(&http, &login_url).await, CardStep::Handshake(_)),
            "{what} must not complete a handshake"
        );
    }
    // Still serving.
    assert!(
        login(&server, pki, "doctor").await.is_ok(),
        "{}",
        server.log()
    );
}
