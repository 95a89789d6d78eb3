//! relying-party-kit's actix-web integration logging a doctor in over SAML, against the
//! live IdP: a small actix app runs in this test process (HTTPS with the test PKI's server
//! certificate, so the kit's `__Host-` cookies and the `SameSite=None; Secure` SAML login
//! cookie are what a browser would get), its SP metadata is registered with the IdP, and a
//! browser goes /saml/login → card login → the IdP's auto-POST form → POST /saml/acs → a
//! page behind the `Doctor` extractor. Refused: a replayed ACS POST, an ACS POST without
//! the login cookie, a RelayState that is not the one sent, a pharmacist's card behind
//! `RequireRole::medical_doctor()`. Logout of a SAML session goes through the IdP's SLO;
//! a logout at the IdP reaches the app over the SOAP back channel and ends its session,
//! while forged, tampered, wrapped, stale or replayed SOAP LogoutRequests end nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::net::TcpListener;
use std::sync::Arc;

use harness::{Browser, Server, ServerOptions, between, location, pki, reason, saml_table, start};
use hpki_rp_kit::actix_web::{App, HttpResponse, HttpServer, web};
use hpki_rp_kit::{
    Doctor, MemorySessions, RelyingParty, RequireRole, SamlIdp, SamlServiceProvider,
    SamlSigningKey, SamlSpConfig, Sealer, SignedIn, WebConfig,
};

const LOGIN_COOKIE: &str = "__Host-kitweb-saml-login";
const SESSION_COOKIE: &str = "__Host-kitweb-session";

struct Fixture {
    idp: Server,
    _dir: tempfile::TempDir,
    /// `https://localhost:{port}`, the app.
    base: String,
    metadata: String,
    /// The app's SOAP SingleLogoutService, served over plain HTTP on loopback (the IdP's
    /// SAML back-channel client trusts only public roots, and the app's certificate comes
    /// from the test PKI).
    soap_url: String,
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn acs(&self) -> String {
        self.url("/saml/acs")
    }

    fn browser(&self) -> Browser {
        let mut browser = Browser::new(pki());
        browser.also_keep = vec![LOGIN_COOKIE.into(), SESSION_COOKIE.into()];
        browser
    }
}

async fn whoami(signed_in: SignedIn) -> HttpResponse {
    let doctor = signed_in.doctor();
    HttpResponse::Ok().body(format!(
        "role={} saml={} csrf={}",
        doctor
            .hpki_role
            .as_ref()
            .map(|r| r.display_name())
            .unwrap_or("none"),
        signed_in.session().saml.is_some(),
        signed_in.csrf_token()
    ))
}

async fn chart(doctor: Doctor) -> HttpResponse {
    HttpResponse::Ok().body(format!(
        "chart for a {}",
        doctor
            .hpki_role
            .as_ref()
            .map(|r| r.display_name())
            .unwrap_or("none")
    ))
}

/// The IdP with the app's SP registered, and the app (SAML only) serving on its own thread.
async fn setup() -> Fixture {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let soap_url = format!(
        "http://127.0.0.1:{}/saml/soap-slo",
        plain.local_addr().unwrap().port()
    );
    let (key, cert) = idp_saml::crypto::SigningCredential::generate_pem("kit web SP", 30).unwrap();
    let config = SamlSpConfig::new(&format!("{base}/saml"), &format!("{base}/saml/acs"))
        .with_signing_key(SamlSigningKey::from_pem(&key, &cert).unwrap())
        .with_slo_url(&format!("{base}/saml/slo"))
        .with_soap_slo_url(&soap_url);
    let dir = tempfile::tempdir().unwrap();
    let sp_file = dir.path().join("sp.xml");
    std::fs::write(&sp_file, config.metadata()).unwrap();
    let sps = format!(
        "[[saml.sps]]\nmetadata_file = \"{}\"\npre_approved = true\n\
         claims = [\"name\", \"family_name\", \"given_name\", \"hpki_role\"]\n",
        sp_file.display()
    );
    let idp = start(
        pki,
        ServerOptions {
            tables: saml_table(&sps),
            ..Default::default()
        },
    );
    let idp_metadata = harness::fetch_text(pki, &idp.public("/saml/metadata")).await;
    let sp = SamlServiceProvider::new(
        config.clone(),
        SamlIdp::from_metadata(&idp_metadata).unwrap(),
    )
    .unwrap();
    let rp = web::Data::new(RelyingParty::new_saml(
        sp,
        Sealer::random().unwrap(),
        Arc::new(MemorySessions::default()),
        WebConfig {
            cookie_prefix: "kitweb".into(),
            ..WebConfig::default()
        },
    ));
    let tls = rustls::ServerConfig::builder_with_provider(harness::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            harness::certs(&pki.path(&pki.manifest.server.cert)),
            harness::key(&pki.path(&pki.manifest.server.key)),
        )
        .unwrap();
    std::thread::spawn(move || {
        hpki_rp_kit::actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let rp = rp.clone();
                App::new()
                    .app_data(rp.clone())
                    .configure(|cfg| rp.routes(cfg))
                    .route("/", web::get().to(|| async { "landing" }))
                    .route("/whoami", web::get().to(whoami))
                    .service(
                        web::scope("/clinical")
                            .wrap(RequireRole::medical_doctor())
                            .route("/chart", web::get().to(chart)),
                    )
            })
            .workers(1)
            .listen_rustls_0_23(listener, tls)
            .unwrap()
            .listen(plain)
            .unwrap()
            .run()
            .await
            .unwrap();
        });
    });
    Fixture {
        idp,
        _dir: dir,
        base,
        metadata: config.metadata(),
        soap_url,
    }
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Set-Cookie header for `name`, whole (attributes included).
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// A browser at the IdP's auto-POST page after `path` started a login at the app with
/// `card`: the ACS form body (`SAMLResponse`, `RelayState`).
async fn up_to_the_acs(fx: &Fixture, browser: &mut Browser, path: &str, card: &str) -> String {
    let pki = pki();
    let mut url = fx.url(path);
    // The app's own redirects (to its login route, then to the IdP).
    let started = loop {
        let response = browser.get(&url).await;
        assert_eq!(response.status(), 303, "{url}");
        let next = location(&response);
        if let Some(cookie) = set_cookie(&response, LOGIN_COOKIE) {
            // Sealed, short-lived, and sent on the IdP's cross-site POST to the ACS.
            for attribute in [
                "Secure",
                "HttpOnly",
                "SameSite=None",
                "Path=/",
                "Max-Age=600",
            ] {
                assert!(cookie.contains(attribute), "{attribute}: {cookie}");
            }
            assert!(!cookie.contains("whoami") && !cookie.contains("chart"));
            break next;
        }
        url = if next.starts_with('/') {
            fx.url(&next)
        } else {
            next
        };
    };
    assert!(
        started.starts_with(&fx.idp.public("/saml/sso?SAMLRequest=")),
        "{started}"
    );
    // RelayState is an opaque random value, not the return path.
    let relay_state = between(&started, "RelayState=", "&");
    assert_eq!(relay_state.len(), 43, "{relay_state}");
    let page =
        match harness::browse_to(&fx.idp, pki, browser, &started, card, true, &fx.acs()).await {
            Err((200, page)) if page.contains("name=\"SAMLResponse\"") => page,
            other => panic!("no Response page: {other:?}\n{}", fx.idp.log()),
        };
    assert!(page.contains(&format!("action=\"{}\"", fx.acs())), "{page}");
    let response = between(&page, "name=\"SAMLResponse\" value=\"", "\"");
    let relay_back = between(&page, "name=\"RelayState\" value=\"", "\"");
    assert_eq!(relay_back, relay_state);
    format!(
        "SAMLResponse={}&RelayState={}",
        url_encode(response),
        url_encode(relay_back)
    )
}

async fn post_acs(fx: &Fixture, browser: &mut Browser, form: &str) -> reqwest::Response {
    browser.post_form(&fx.acs(), &fx.idp.public(""), form).await
}

async fn refusal(response: reqwest::Response) -> (u16, Option<String>) {
    let status = response.status().as_u16();
    (status, reason(&response.text().await.unwrap()))
}

#[tokio::test]
async fn a_saml_login_through_the_kit_gives_a_session_and_logs_out_at_the_idp() {
    let fx = setup().await;
    let pki = pki();

    // The SP metadata the app serves is the one the IdP registered.
    let metadata = harness::client(pki, None)
        .get(fx.url("/saml/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 200);
    assert_eq!(
        metadata.headers()["content-type"],
        "application/samlmetadata+xml"
    );
    assert_eq!(metadata.text().await.unwrap(), fx.metadata);

    // A page behind the Doctor extractor sends the browser to log in (SAML only: the
    // kit's login route starts the SAML login), returning to it.
    let mut browser = fx.browser();
    let form = up_to_the_acs(&fx, &mut browser, "/whoami", "doctor").await;
    let login_cookie = browser
        .cookies
        .iter()
        .find(|c| c.starts_with(LOGIN_COOKIE))
        .cloned()
        .expect("the SAML login cookie");
    let done = post_acs(&fx, &mut browser, &form).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/whoami");
    let session = set_cookie(&done, SESSION_COOKIE).expect("a session cookie");
    assert!(session.contains("SameSite=Lax") && session.contains("Secure"));
    assert!(
        set_cookie(&done, LOGIN_COOKIE)
            .is_some_and(|c| c.starts_with(&format!("{LOGIN_COOKIE}=;"))),
        "the login cookie is removed"
    );
    let page = browser.get(&fx.url("/whoami")).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.starts_with("role=Medical Doctor saml=true "), "{body}");
    let csrf = body.rsplit("csrf=").next().unwrap().to_owned();
    // The Doctor extractor behind RequireRole::medical_doctor().
    let chart = browser.get(&fx.url("/clinical/chart")).await;
    assert_eq!(chart.status(), 200);
    assert_eq!(chart.text().await.unwrap(), "chart for a Medical Doctor");

    // The same POST again: without the login cookie (removed), no login is in progress…
    let again = post_acs(&fx, &mut browser, &form).await;
    assert_eq!(refusal(again).await, (400, Some("login_expired".into())));
    // …and with it (captured before), the Response is a replay.
    browser.cookies.push(login_cookie);
    let replayed = post_acs(&fx, &mut browser, &form).await;
    assert_eq!(
        refusal(replayed).await,
        (400, Some("login_replayed".into()))
    );
    // The session of the first POST is untouched.
    assert_eq!(browser.get(&fx.url("/whoami")).await.status(), 200);

    // Logout: the local session ends and the browser goes to the IdP with a signed
    // LogoutRequest; the IdP answers at the app's SLO route, which lands on "/".
    let out = browser
        .post_form(
            &fx.url("/auth/logout"),
            &fx.base,
            &format!("csrf={}", url_encode(&csrf)),
        )
        .await;
    assert_eq!(out.status(), 303);
    let to_idp = location(&out);
    assert!(
        to_idp.starts_with(&fx.idp.public("/saml/slo?SAMLRequest="))
            && to_idp.contains("&Signature="),
        "{to_idp}"
    );
    let answer = browser.get(&to_idp).await;
    assert_eq!(answer.status(), 303, "{}", fx.idp.log());
    let back = location(&answer);
    assert!(
        back.starts_with(&fx.url("/saml/slo?SAMLResponse=")),
        "{back}"
    );
    let landed = browser.get(&back).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(location(&landed), "/");
    let gone = browser.get(&fx.url("/whoami")).await;
    assert_eq!(gone.status(), 303);
    assert_eq!(location(&gone), "/auth/login?return_to=%2Fwhoami");
    // The IdP session ended too: a new login asks for the card again.
    let restart = browser.get(&fx.url("/saml/login")).await;
    let at_idp = browser.get(&location(&restart)).await;
    assert_eq!(at_idp.status(), 303);
    assert!(
        location(&at_idp).starts_with("/login?"),
        "{}",
        location(&at_idp)
    );
}

#[tokio::test]
async fn an_acs_post_without_its_login_cookie_or_with_another_relay_state_is_refused() {
    let fx = setup().await;
    let mut browser = fx.browser();
    let form = up_to_the_acs(&fx, &mut browser, "/saml/login?return_to=/whoami", "doctor").await;
    // Another browser (the attacker's page posting the doctor's Response, or the browser
    // that lost the cookie): no login in progress there.
    let mut other = fx.browser();
    let refused = post_acs(&fx, &mut other, &form).await;
    assert_eq!(refusal(refused).await, (400, Some("login_expired".into())));
    assert!(other.cookies.is_empty(), "no session");
    // The right cookie with another RelayState.
    let (response, _) = form.split_once("&RelayState=").unwrap();
    let forged = format!("{response}&RelayState=somewhere-else");
    let refused = post_acs(&fx, &mut browser, &forged).await;
    assert_eq!(refusal(refused).await, (400, Some("login_invalid".into())));
    let refused = post_acs(&fx, &mut browser, response).await;
    assert_eq!(refusal(refused).await, (400, Some("login_invalid".into())));
    // A refused POST does not cancel the login in progress: the genuine one completes.
    let done = post_acs(&fx, &mut browser, &form).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/whoami");
    assert_eq!(browser.get(&fx.url("/whoami")).await.status(), 200);
}

#[tokio::test]
async fn require_role_refuses_a_pharmacist() {
    let fx = setup().await;
    let mut browser = fx.browser();
    let form = up_to_the_acs(&fx, &mut browser, "/clinical/chart", "pharmacist").await;
    let done = post_acs(&fx, &mut browser, &form).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/clinical/chart");
    let whoami = browser.get(&fx.url("/whoami")).await;
    let body = whoami.text().await.unwrap();
    assert!(body.starts_with("role=Pharmacist saml=true "), "{body}");
    let refused = browser.get(&fx.url("/clinical/chart")).await;
    assert_eq!(
        refusal(refused).await,
        (403, Some("role_not_permitted".into()))
    );
}

/// The NameID and SessionIndex of the Response in an ACS form body.
fn name_id_and_session_index(form: &str) -> (String, String) {
    let encoded = between(form, "SAMLResponse=", "&")
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    let xml = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap(),
    )
    .unwrap();
    let name_id = between(&xml, "<saml:NameID ", "</saml:NameID>")
        .split_once('>')
        .unwrap()
        .1
        .to_owned();
    (name_id, between(&xml, "SessionIndex=\"", "\"").to_owned())
}

/// The IdP's SAML signing credential (the harness's key files).
fn idp_credential() -> idp_saml::crypto::SigningCredential {
    let table = saml_table("");
    let key = std::fs::read_to_string(between(&table, "signing_key = \"", "\"")).unwrap();
    let cert = std::fs::read_to_string(between(&table, "signing_cert = \"", "\"")).unwrap();
    idp_saml::crypto::SigningCredential::from_pem(&key, &cert).unwrap()
}

/// A LogoutRequest as the IdP writes one (signed unless `signed` is false), in a SOAP
/// envelope; returns its ID too.
#[allow(clippy::too_many_arguments)]
fn logout_request(
    credential: &idp_saml::crypto::SigningCredential,
    fx: &Fixture,
    issuer: &str,
    name_id: &str,
    session_index: &str,
    now: time::OffsetDateTime,
    signed: bool,
) -> (String, String) {
    let (id, xml) = idp_saml::logout::request(
        credential,
        &idp_saml::logout::LogoutRequestOut {
            issuer,
            destination: &fx.soap_url,
            name_id,
            name_id_format: idp_saml::sp::NAMEID_PERSISTENT,
            sp_name_qualifier: &fx.url("/saml"),
            session_index,
            now,
            lifetime: std::time::Duration::from_secs(300),
        },
        if signed {
            idp_saml::logout::Signing::Enveloped
        } else {
            idp_saml::logout::Signing::QueryString
        },
    )
    .unwrap();
    (id, idp_saml::logout::soap_envelope(&xml))
}

/// POSTs a SOAP body to the app's SOAP SLO endpoint: HTTP status and body.
async fn post_soap(fx: &Fixture, body: String) -> (u16, String) {
    let response = harness::client(pki(), None)
        .post(&fx.soap_url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header(
            "SOAPAction",
            "http://www.oasis-open.org/committees/security",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

const REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

#[tokio::test]
async fn a_logout_at_the_idp_ends_the_saml_session_over_the_soap_back_channel() {
    let fx = setup().await;

    // The metadata the IdP registered advertises the SOAP endpoint.
    assert!(fx.metadata.contains(&format!(
        r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="{}"/>"#,
        fx.soap_url
    )));

    let mut browser = fx.browser();
    let form = up_to_the_acs(&fx, &mut browser, "/whoami", "doctor").await;
    let (name_id, session_index) = name_id_and_session_index(&form);
    let done = post_acs(&fx, &mut browser, &form).await;
    assert_eq!(done.status(), 303);
    assert_eq!(browser.get(&fx.url("/whoami")).await.status(), 200);

    // Crafted requests naming this doctor's session: each refused with a SAML error status
    // (HTTP 200, SAML SOAP binding), and the session lives on.
    let idp = idp_credential();
    let issuer = fx.idp.public("/saml/metadata");
    let now = time::OffsetDateTime::now_utc();
    let (other_key, other_cert) =
        idp_saml::crypto::SigningCredential::generate_pem("not the IdP", 1).unwrap();
    let other = idp_saml::crypto::SigningCredential::from_pem(&other_key, &other_cert).unwrap();
    let unsigned = logout_request(&idp, &fx, &issuer, &name_id, &session_index, now, false).1;
    let foreign_key = logout_request(&other, &fx, &issuer, &name_id, &session_index, now, true).1;
    // Signed for another IdP session, then pointed at this one.
    let tampered = logout_request(&idp, &fx, &issuer, &name_id, "another-session", now, true)
        .1
        .replace("another-session", &session_index);
    // Wrapping: a genuinely signed request for nobody inside an unsigned one for the doctor.
    let (_, decoy) = logout_request(&idp, &fx, &issuer, "nobody", "nothing", now, true);
    let decoy = between(&decoy, "<soap:Body>", "</soap:Body>").to_owned();
    let wrapped = unsigned.replacen(
        "<saml:NameID",
        &format!("<samlp:Extensions>{decoy}</samlp:Extensions><saml:NameID"),
        1,
    );
    let wrong_issuer = logout_request(
        &idp,
        &fx,
        "https://evil.example/saml",
        &name_id,
        &session_index,
        now,
        true,
    )
    .1;
    let stale = logout_request(
        &idp,
        &fx,
        &issuer,
        &name_id,
        &session_index,
        now - time::Duration::hours(1),
        true,
    )
    .1;
    for (what, body) in [
        ("unsigned", unsigned),
        ("signed by another key", foreign_key),
        ("tampered after signing", tampered),
        ("wrapped", wrapped),
        ("another issuer", wrong_issuer),
        ("issued an hour ago", stale),
    ] {
        let (status, answer) = post_soap(&fx, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert!(answer.contains(REQUEST_DENIED), "{what}: {answer}");
        assert!(answer.contains("<samlp:LogoutResponse"), "{what}: {answer}");
        assert!(!answer.contains("InResponseTo"), "{what}: {answer}");
        assert_eq!(
            browser.get(&fx.url("/whoami")).await.status(),
            200,
            "{what} ended the session"
        );
    }
    // Not SOAP at all: a SOAP fault (HTTP 500).
    let (status, answer) = post_soap(&fx, "<x/>".into()).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer.contains("<faultcode>soap:Client</faultcode>"),
        "{answer}"
    );
    // A genuine request for another IdP session is accepted once (it ends nothing here);
    // its replay is refused.
    let (id, genuine) = logout_request(&idp, &fx, &issuer, &name_id, "elsewhere", now, true);
    let (status, answer) = post_soap(&fx, genuine.clone()).await;
    assert_eq!(status, 200);
    assert!(
        answer.contains(SUCCESS) && answer.contains(&format!("InResponseTo=\"{id}\"")),
        "{answer}"
    );
    assert!(
        answer.contains("<ds:SignatureValue>"),
        "signed by the SP: {answer}"
    );
    let (status, answer) = post_soap(&fx, genuine).await;
    assert_eq!(status, 200);
    assert!(answer.contains(REQUEST_DENIED), "replayed: {answer}");
    assert_eq!(browser.get(&fx.url("/whoami")).await.status(), 200);

    // The doctor logs out at the IdP (in this browser, not through the app): the IdP
    // sends its signed LogoutRequest over SOAP in the background, and the app's session
    // ends.
    let logout = browser
        .post_form(&fx.idp.public("/logout"), &fx.idp.public(""), "")
        .await;
    assert_eq!(logout.status(), 303);
    let mut ended = false;
    for _ in 0..100 {
        let page = browser.get(&fx.url("/whoami")).await;
        if page.status() == 303 {
            assert_eq!(location(&page), "/auth/login?return_to=%2Fwhoami");
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ended,
        "the app's session outlived the IdP logout\n{}",
        fx.idp.log()
    );
}
