//! relying-party-kit's SAML service provider against the live IdP: the kit writes the SP
//! metadata the IdP registers, sends a signed AuthnRequest over HTTP-Redirect, the doctor
//! logs in with the card, and the kit validates the IdP's Response into a `Doctor`. Every
//! attack on the Response (tampering, replay, another SP's response, expiry, another
//! request's response, a removed signature, signature wrapping, an unsolicited response)
//! is refused with its own error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use harness::{Browser, Server, ServerOptions, between, pki, saml_table, start};
use hpki_rp_kit::idp_vocabulary::hpki::HcRole;
use hpki_rp_kit::{
    Clock, Error, SamlAuthnOptions, SamlIdp, SamlLogin, SamlPendingLogin, SamlServiceProvider,
    SamlSigningKey, SamlSpConfig, saml_uri,
};
use time::OffsetDateTime;

const SP: &str = "https://kit-sp.example/saml";
const ACS: &str = "https://kit-sp.example/acs";
const SLO: &str = "https://kit-sp.example/slo";
/// Another registered SP (its Responses carry a signed assertion in an unsigned Response).
const OTHER: &str = "https://other-kit-sp.example/saml";
const OTHER_ACS: &str = "https://other-kit-sp.example/acs";

/// The system clock moved by an offset the test sets.
#[derive(Default)]
struct TestClock {
    offset: Mutex<time::Duration>,
}

impl TestClock {
    fn advance(&self, by: time::Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + *self.offset.lock().unwrap()
    }
}

fn sp_config(entity_id: &str, acs: &str) -> SamlSpConfig {
    let (key, cert) = idp_saml::crypto::SigningCredential::generate_pem("kit SAML SP", 30).unwrap();
    SamlSpConfig::new(entity_id, acs)
        .with_signing_key(SamlSigningKey::from_pem(&key, &cert).unwrap())
        // Long enough for the clock tests to pass the assertion's lifetime first.
        .with_max_login_age(Duration::from_secs(3600))
}

struct Fixture {
    server: Server,
    _dir: tempfile::TempDir,
    sp: SamlServiceProvider,
    other: SamlServiceProvider,
    clock: Arc<TestClock>,
}

/// An IdP with both SPs registered from the metadata the kit writes, and the kit's SPs
/// configured from the IdP's published metadata. `extra` goes into our SP's table.
async fn setup(config: SamlSpConfig, extra: &str) -> Fixture {
    let pki = pki();
    let config = config.with_slo_url(SLO);
    let other_config = sp_config(OTHER, OTHER_ACS);
    let dir = tempfile::tempdir().unwrap();
    let (ours, other) = (dir.path().join("sp.xml"), dir.path().join("other.xml"));
    std::fs::write(&ours, config.metadata()).unwrap();
    std::fs::write(&other, other_config.metadata()).unwrap();
    let claims = r#"claims = ["name", "family_name", "given_name", "hpki_role"]"#;
    let sps = format!(
        "[[saml.sps]]\nmetadata_file = \"{}\"\npre_approved = true\n{claims}\n{extra}\n\n\
         [[saml.sps]]\nmetadata_file = \"{}\"\npre_approved = true\nsign_response = false\n{claims}\n",
        ours.display(),
        other.display()
    );
    let server = start(
        pki,
        ServerOptions {
            tables: saml_table(&sps),
            ..Default::default()
        },
    );
    let metadata = harness::fetch_text(pki, &server.public("/saml/metadata")).await;
    let idp = SamlIdp::from_metadata(&metadata).expect("the IdP's metadata");
    assert_eq!(idp.entity_id(), server.public("/saml/metadata"));
    let clock = Arc::new(TestClock::default());
    let sp = SamlServiceProvider::new(config, idp.clone())
        .unwrap()
        .with_clock(clock.clone());
    let other = SamlServiceProvider::new(other_config, idp).unwrap();
    Fixture {
        server,
        _dir: dir,
        sp,
        other,
        clock,
    }
}

async fn fixture() -> Fixture {
    setup(sp_config(SP, ACS), "").await
}

/// Drives the browser from `url` through the card login to the auto-POST page: the
/// `SAMLResponse` value.
async fn posted_response(server: &Server, url: &str) -> String {
    let pki = pki();
    let mut browser = Browser::new(pki);
    let page = match harness::browse_to(server, pki, &mut browser, url, "doctor", true, ACS).await {
        Err((200, page)) if page.contains("name=\"SAMLResponse\"") => page,
        other => panic!("no Response page: {other:?}\n{}", server.log()),
    };
    between(&page, "name=\"SAMLResponse\" value=\"", "\"").to_owned()
}

/// An SP-initiated login by `sp` up to the Response it is posted.
async fn login(server: &Server, sp: &SamlServiceProvider) -> (SamlPendingLogin, String) {
    let (url, pending) = sp.begin(&SamlAuthnOptions::hpki_card()).unwrap();
    (pending, posted_response(server, url.as_str()).await)
}

fn decode(encoded: &str) -> String {
    String::from_utf8(B64.decode(encoded).unwrap()).unwrap()
}

fn encode(xml: &str) -> String {
    B64.encode(xml)
}

/// The byte range of the first element named `qname` (`saml:Assertion`).
fn element(xml: &str, qname: &str) -> (usize, usize) {
    let start = xml
        .find(&format!("<{qname} "))
        .or_else(|| xml.find(&format!("<{qname}>")))
        .unwrap_or_else(|| panic!("no {qname}"));
    let close = format!("</{qname}>");
    let end = start + xml[start..].find(&close).unwrap() + close.len();
    (start, end)
}

fn remove_first(xml: &str, qname: &str) -> String {
    let (start, end) = element(xml, qname);
    format!("{}{}", &xml[..start], &xml[end..])
}

fn assert_good(login: &SamlLogin, server: &Server) {
    let doctor = &login.doctor;
    assert_eq!(doctor.hpki_role, Some(HcRole::MedicalDoctor));
    assert!(doctor.is_medical_doctor());
    assert_eq!(doctor.family_name.kanji.as_deref(), Some("日医"));
    assert_eq!(doctor.family_name.kana.as_deref(), Some("ニチイ"));
    assert_eq!(doctor.given_name.kanji.as_deref(), Some("太郎"));
    assert_eq!(doctor.given_name.kana.as_deref(), Some("タロウ"));
    assert!(
        doctor
            .name
            .for_display()
            .is_some_and(|n| n.starts_with("日医"))
    );
    assert_eq!(
        login.name_id.format.as_deref(),
        Some(saml_uri::NAMEID_PERSISTENT)
    );
    assert_eq!(doctor.subject.as_str(), login.name_id.value);
    assert!(login.name_id.value.len() >= 32);
    assert!(
        login
            .session_index
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(login.is_smartcard_login());
    assert_eq!(
        doctor.acr.as_ref().map(|a| a.as_str()),
        Some(saml_uri::AC_SMARTCARD_PKI)
    );
    let auth_time = doctor.auth_time.expect("AuthnInstant");
    assert!(
        (OffsetDateTime::now_utc() - auth_time)
            .whole_seconds()
            .abs()
            < 300
    );
    assert_eq!(login.idp_entity_id, server.public("/saml/metadata"));
}

#[tokio::test]
async fn a_card_login_gives_the_doctor_and_the_same_subject_again() {
    let fx = fixture().await;
    let (pending, response) = login(&fx.server, &fx.sp).await;
    let first = fx
        .sp
        .finish(Some(&pending), &response)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", decode(&response)));
    assert_eq!(
        first.in_response_to.as_deref(),
        Some(pending.request_id.as_str())
    );
    assert_good(&first, &fx.server);

    // A second login: the persistent pairwise NameID is stable.
    let (pending, response) = login(&fx.server, &fx.sp).await;
    let second = fx.sp.finish(Some(&pending), &response).await.unwrap();
    assert_eq!(second.name_id, first.name_id);
    assert_ne!(second.assertion_id, first.assertion_id);

    // The SP whose Responses are unsigned around a signed assertion works too.
    let (pending, response) = login(&fx.server, &fx.other).await;
    assert_eq!(decode(&response).matches("<ds:Signature ").count(), 1);
    let other = fx.other.finish(Some(&pending), &response).await.unwrap();
    assert_good(&other, &fx.server);
    assert_ne!(other.name_id.value, first.name_id.value, "pairwise per SP");
}

#[tokio::test]
async fn a_tampered_attribute_or_name_id_is_refused() {
    let fx = fixture().await;
    let (pending, response) = login(&fx.server, &fx.sp).await;
    let xml = decode(&response);
    assert!(xml.contains("Medical Doctor"));
    let role = xml.replace("Medical Doctor", "Director of Hospital");
    let err = fx
        .sp
        .finish(Some(&pending), &encode(&role))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlSignature), "{err}");
    let (start, _) = element(&xml, "saml:NameID");
    let value_at = start + xml[start..].find('>').unwrap() + 1;
    let mut name_id = xml.clone();
    let first = name_id.as_bytes()[value_at];
    let replacement = if first == b'a' { "b" } else { "a" };
    name_id.replace_range(value_at..value_at + 1, replacement);
    let err = fx
        .sp
        .finish(Some(&pending), &encode(&name_id))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlSignature), "{err}");
    // The genuine response still passes (the refusals left nothing behind).
    fx.sp.finish(Some(&pending), &response).await.unwrap();
}

#[tokio::test]
async fn the_same_response_twice_is_a_replay() {
    let fx = fixture().await;
    let (pending, response) = login(&fx.server, &fx.sp).await;
    fx.sp.finish(Some(&pending), &response).await.unwrap();
    let err = fx.sp.finish(Some(&pending), &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlReplay), "{err}");
}

#[tokio::test]
async fn a_response_for_another_sp_is_refused() {
    let fx = fixture().await;
    let (other_pending, response) = login(&fx.server, &fx.other).await;
    let (_, pending) = fx.sp.begin(&SamlAuthnOptions::default()).unwrap();
    let err = fx.sp.finish(Some(&pending), &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlDestination), "{err}");
    // Even with the other SP's pending login (an attacker relaying both): refused.
    let err = fx
        .sp
        .finish(Some(&other_pending), &response)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlDestination), "{err}");
    // An SP that shares our ACS URL but not our entity ID: the audience stops it.
    let same_acs = SamlServiceProvider::new(
        SamlSpConfig::new("https://third-sp.example/saml", OTHER_ACS),
        fx.other.idp().clone(),
    )
    .unwrap();
    let err = same_acs
        .finish(Some(&other_pending), &response)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlAudience), "{err}");
}

#[tokio::test]
async fn an_expired_response_is_refused() {
    let fx = fixture().await;
    let (pending, response) = login(&fx.server, &fx.sp).await;
    // The IdP's assertions live 5 minutes; 10 minutes later is past that and the skew.
    fx.clock.advance(time::Duration::minutes(10));
    let err = fx.sp.finish(Some(&pending), &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlExpired), "{err}");
    // And a login request older than max_login_age is refused on its own.
    fx.clock.advance(time::Duration::hours(2));
    let err = fx.sp.finish(Some(&pending), &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlLoginExpired), "{err}");
}

#[tokio::test]
async fn a_response_to_another_request_is_refused() {
    let fx = fixture().await;
    let (_, answered) = login(&fx.server, &fx.sp).await;
    let (_, pending_elsewhere) = fx.sp.begin(&SamlAuthnOptions::default()).unwrap();
    let err = fx
        .sp
        .finish(Some(&pending_elsewhere), &answered)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlInResponseTo), "{err}");
}

#[tokio::test]
async fn removed_signatures_are_refused() {
    let fx = fixture().await;
    let (pending, response) = login(&fx.server, &fx.sp).await;
    let xml = decode(&response);
    assert_eq!(xml.matches("<ds:Signature ").count(), 2, "{xml}");
    // Both signatures gone.
    let none = remove_first(&remove_first(&xml, "ds:Signature"), "ds:Signature");
    let err = fx
        .sp
        .finish(Some(&pending), &encode(&none))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlUnsigned), "{err}");
    // Only the assertion's (the Response's signature stays and still names the Response).
    let (a_start, _) = element(&xml, "saml:Assertion");
    let (s_start, s_end) = {
        let (s, e) = element(&xml[a_start..], "ds:Signature");
        (a_start + s, a_start + e)
    };
    let no_assertion_sig = format!("{}{}", &xml[..s_start], &xml[s_end..]);
    let err = fx
        .sp
        .finish(Some(&pending), &encode(&no_assertion_sig))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SamlUnsigned), "{err}");
    // Only the Response's: the assertion is still signed, and its signature verifies.
    let no_response_sig = remove_first(&xml, "ds:Signature");
    let login = fx
        .sp
        .finish(Some(&pending), &encode(&no_response_sig))
        .await
        .expect("a signed assertion in an unsigned Response is the other accepted form");
    assert!(login.doctor.is_medical_doctor());
}

#[tokio::test]
async fn signature_wrapping_is_refused() {
    let fx = fixture().await;
    let (pending, response) = login(&fx.server, &fx.sp).await;
    let xml = decode(&response);
    let (a_start, a_end) = element(&xml, "saml:Assertion");
    let genuine = &xml[a_start..a_end];
    let id = between(genuine, "ID=\"", "\"").to_owned();
    // The evil assertion: the genuine one unsigned, with a new ID and another role.
    let evil = remove_first(genuine, "ds:Signature")
        .replacen(&format!("ID=\"{id}\""), "ID=\"_evil\"", 1)
        .replace("Medical Doctor", "Director of Hospital");
    let unsigned_response = remove_first(&xml, "ds:Signature");
    let variants = [
        // The signed assertion moved into Extensions, the evil one in its place.
        format!(
            "{}<samlp:Extensions>{genuine}</samlp:Extensions>{evil}{}",
            &unsigned_response[..unsigned_response.find("<saml:Assertion").unwrap()],
            &unsigned_response[unsigned_response.find("</saml:Assertion>").unwrap()
                + "</saml:Assertion>".len()..]
        ),
        // The evil assertion added beside the signed one, before it.
        format!("{}{evil}{}", &xml[..a_start], &xml[a_start..]),
        // The signed assertion moved inside the evil one.
        format!(
            "{}{}{}",
            &unsigned_response[..unsigned_response.find("<saml:Assertion").unwrap()],
            evil.replacen(
                "</saml:Assertion>",
                &format!("{genuine}</saml:Assertion>"),
                1
            ),
            &unsigned_response[unsigned_response.find("</saml:Assertion>").unwrap()
                + "</saml:Assertion>".len()..]
        ),
        // The evil assertion carrying the genuine assertion's signature (reference to the
        // genuine ID, which is gone).
        format!(
            "{}{}{}",
            &unsigned_response[..unsigned_response.find("<saml:Assertion").unwrap()],
            genuine
                .replace("Medical Doctor", "Director of Hospital")
                .replacen(&format!("ID=\"{id}\""), "ID=\"_evil\"", 1),
            &unsigned_response[unsigned_response.find("</saml:Assertion>").unwrap()
                + "</saml:Assertion>".len()..]
        ),
        // The whole genuine Response wrapped in an evil one.
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_outer\" Version=\"2.0\" IssueInstant=\"2030-01-01T00:00:00Z\" Destination=\"{ACS}\"><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{evil}<samlp:Extensions>{}</samlp:Extensions></samlp:Response>",
            xml.trim_start_matches(|c| c != '<')
                .strip_prefix("<?xml")
                .map_or(xml.as_str(), |r| r.split_once("?>").unwrap().1)
        ),
    ];
    for (i, wrapped) in variants.iter().enumerate() {
        let err = fx
            .sp
            .finish(Some(&pending), &encode(wrapped))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::SamlStructure(_)
                    | Error::SamlAssertionCount
                    | Error::SamlUnsigned
                    | Error::SamlSignature
            ),
            "variant {i}: {err}"
        );
    }
    // None of them consumed the genuine assertion.
    fx.sp.finish(Some(&pending), &response).await.unwrap();
}

#[tokio::test]
async fn an_unsolicited_response_is_refused_unless_allowed() {
    let fx = setup(sp_config(SP, ACS), "idp_initiated = true").await;
    let url = fx
        .server
        .public(&format!("/saml/idp-initiated?sp={}", url_encode(SP)));
    let response = posted_response(&fx.server, &url).await;
    assert!(!decode(&response).contains("InResponseTo"));
    let err = fx.sp.finish(None, &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlUnsolicited), "{err}");
    // With a login pending in this browser, it is not the answer to it either.
    let (_, pending) = fx.sp.begin(&SamlAuthnOptions::default()).unwrap();
    let err = fx.sp.finish(Some(&pending), &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlInResponseTo), "{err}");
    // An SP that explicitly allows IdP-initiated login accepts it, once.
    let allowing = SamlServiceProvider::new(
        fx.sp.config().clone().allow_idp_initiated(true),
        fx.sp.idp().clone(),
    )
    .unwrap();
    let login = allowing.finish(None, &response).await.unwrap();
    assert_eq!(login.in_response_to, None);
    assert_good(&login, &fx.server);
    let err = allowing.finish(None, &response).await.unwrap_err();
    assert!(matches!(err, Error::SamlReplay), "{err}");
    // A solicited response is not accepted as unsolicited.
    let (_, solicited) = login_pair(&fx).await;
    let err = allowing.finish(None, &solicited).await.unwrap_err();
    assert!(matches!(err, Error::SamlUnsolicited), "{err}");
}

async fn login_pair(fx: &Fixture) -> (SamlPendingLogin, String) {
    login(&fx.server, &fx.sp).await
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

#[tokio::test]
async fn sp_initiated_logout_ends_the_idp_session() {
    let fx = fixture().await;
    let pki = pki();
    let (url, pending) = fx.sp.begin(&SamlAuthnOptions::hpki_card()).unwrap();
    let mut browser = Browser::new(pki);
    let page = match harness::browse_to(
        &fx.server,
        pki,
        &mut browser,
        url.as_str(),
        "doctor",
        true,
        ACS,
    )
    .await
    {
        Err((200, page)) => page,
        other => panic!("{other:?}"),
    };
    let response = between(&page, "name=\"SAMLResponse\" value=\"", "\"");
    let login = fx.sp.finish(Some(&pending), response).await.unwrap();
    // While the IdP session lives, another login is answered at once.
    let (url, _) = fx.sp.begin(&SamlAuthnOptions::default()).unwrap();
    let direct = browser.get(url.as_str()).await;
    assert_eq!(direct.status(), 200);
    assert!(direct.text().await.unwrap().contains("SAMLResponse"));
    let (logout, _) = fx
        .sp
        .logout_url(&login.name_id, login.session_index.as_deref(), Some("bye"))
        .unwrap();
    let answer = browser.get(logout.as_str()).await;
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let body = answer.text().await.unwrap();
    // The IdP answers at our SLO endpoint with a LogoutResponse.
    let answered_at_slo = location.as_deref().is_some_and(|l| l.starts_with(SLO))
        || (status == 200 && body.contains(SLO) && body.contains("SAMLResponse"));
    assert!(
        answered_at_slo,
        "{status} {location:?} {body}\n{}",
        fx.server.log()
    );
    // The IdP session is gone: a new login asks for the card again.
    let (url, _) = fx.sp.begin(&SamlAuthnOptions::default()).unwrap();
    let again = browser.get(url.as_str()).await;
    assert_eq!(again.status(), 303);
    let next = harness::location(&again);
    assert!(next.starts_with("/login?"), "{next}");
}
