#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;

use idp_vocabulary::hpki::HcRole;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

use samael::crypto::{CertificateDer, Crypto, CryptoProvider as _, ReduceMode};

use super::*;
use crate::LogoutNotice;

/// A new RSA key and self-signed certificate, PEM.
pub(crate) fn key_pair(cn: &str) -> (String, String) {
    let rsa = Rsa::generate(2048).unwrap();
    let key = PKey::from_rsa(rsa).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        String::from_utf8(b.build().to_pem().unwrap()).unwrap(),
    )
}

pub(crate) fn idp(cert_pem: &str) -> SamlIdp {
    SamlIdp::new(
        "https://idp.example/saml/metadata",
        "https://idp.example/saml/sso",
        &[cert_pem],
    )
    .unwrap()
    .with_slo_url("https://idp.example/saml/slo")
    .unwrap()
}

#[test]
fn attribute_names_map_back_to_vocabulary_claims() {
    assert_eq!(
        claim_for_attribute(saml_attribute::HC_ROLE).as_deref(),
        Some(claim::HPKI_ROLE)
    );
    assert_eq!(
        claim_for_attribute(saml_attribute::SURNAME).as_deref(),
        Some(claim::FAMILY_NAME)
    );
    assert_eq!(
        claim_for_attribute(&format!(
            "{}{}:{}",
            saml_attribute::CLAIM_PREFIX,
            claim::FAMILY_NAME,
            claim::LANG_KANA
        )),
        Some(format!("{}#{}", claim::FAMILY_NAME, claim::LANG_KANA))
    );
    assert_eq!(
        claim_for_attribute(&format!(
            "{}{}",
            saml_attribute::CLAIM_PREFIX,
            claim::JMA_MEMBER
        ))
        .as_deref(),
        Some(claim::JMA_MEMBER)
    );
    assert_eq!(claim_for_attribute("urn:oid:9.9.9"), None);
    assert_eq!(claim_for_attribute(saml_attribute::CLAIM_PREFIX), None);
    assert_eq!(
        claim_for_attribute(&format!("{}Name#x", saml_attribute::CLAIM_PREFIX)),
        None
    );
}

#[test]
fn attributes_become_the_same_doctor_as_oidc_claims() {
    let kanji = format!(
        "{}{}:{}",
        saml_attribute::CLAIM_PREFIX,
        claim::FAMILY_NAME,
        claim::LANG_KANJI
    );
    let attributes = vec![
        (
            saml_attribute::HC_ROLE.to_owned(),
            vec!["Medical Doctor".to_owned()],
        ),
        (
            saml_attribute::SURNAME.to_owned(),
            vec!["Yamada".to_owned()],
        ),
        (kanji, vec!["山田".to_owned()]),
        (
            saml_attribute::POSTAL_ADDRESS.to_owned(),
            vec!["岡山県".to_owned()],
        ),
        ("urn:oid:9.9.9".to_owned(), vec!["ignored".to_owned()]),
        (
            saml_attribute::MAIL.to_owned(),
            vec!["a@x".into(), "b@x".into()],
        ),
    ];
    let claims = claims_from_attributes(&attributes);
    assert_eq!(claims.len(), 5);
    assert_eq!(claims[claim::ADDRESS]["formatted"], "岡山県");
    assert_eq!(claims[claim::EMAIL], serde_json::json!(["a@x", "b@x"]));
    let doctor = Doctor::from_claims(
        openidconnect::SubjectIdentifier::new("pairwise".into()),
        &claims,
        None,
        Vec::new(),
        None,
    );
    assert_eq!(doctor.hpki_role, Some(HcRole::MedicalDoctor));
    assert_eq!(doctor.family_name.default.as_deref(), Some("Yamada"));
    assert_eq!(doctor.family_name.kanji.as_deref(), Some("山田"));
}

#[test]
fn metadata_is_escaped_and_reads_back() {
    let (key, cert) = key_pair("sp");
    let config = SamlSpConfig::new(
        "https://sp.example/saml?a=1&b=\"<x>\"",
        "https://sp.example/acs",
    )
    .with_slo_url("https://sp.example/slo")
    .with_signing_key(SamlSigningKey::from_pem(&key, &cert).unwrap());
    let sp = SamlServiceProvider::new(config, idp(&cert)).unwrap();
    let metadata = sp.metadata();
    let root = xml::parse(xml::guard(metadata.as_bytes(), MAX_METADATA_BYTES).unwrap()).unwrap();
    assert_eq!(
        root.attr("entityID"),
        Some("https://sp.example/saml?a=1&b=\"<x>\"")
    );
    let d = root.child(NS_METADATA, "SPSSODescriptor").unwrap();
    assert_eq!(d.attr("AuthnRequestsSigned"), Some("true"));
    assert_eq!(d.attr("WantAssertionsSigned"), Some("true"));
    let acs = d.child(NS_METADATA, "AssertionConsumerService").unwrap();
    assert_eq!(acs.attr("Binding"), Some(BINDING_HTTP_POST));
    assert_eq!(acs.attr("Location"), Some("https://sp.example/acs"));
    let cert_b64 = d
        .child(NS_METADATA, "KeyDescriptor")
        .and_then(|k| k.child(NS_DSIG, "KeyInfo"))
        .and_then(|k| k.child(NS_DSIG, "X509Data"))
        .and_then(|k| k.child(NS_DSIG, "X509Certificate"))
        .unwrap()
        .value()
        .to_owned();
    assert_eq!(
        certificate_der(&cert_b64).unwrap(),
        certificate_der(&cert).unwrap()
    );
    assert!(d.child(NS_METADATA, "SingleLogoutService").is_some());

    // Without a key, the metadata does not promise signed requests.
    let unsigned = SamlServiceProvider::new(
        SamlSpConfig::new("https://sp.example/saml", "https://sp.example/acs"),
        idp(&cert),
    )
    .unwrap();
    assert!(
        unsigned
            .metadata()
            .contains("AuthnRequestsSigned=\"false\"")
    );
    assert!(!unsigned.metadata().contains("KeyDescriptor"));
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

fn form_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned()
}

#[test]
fn the_authn_request_is_deflated_signed_and_pending() {
    let (key, cert) = key_pair("sp");
    let sp = SamlServiceProvider::new(
        SamlSpConfig::new("https://sp.example/saml", "https://sp.example/acs")
            .with_signing_key(SamlSigningKey::from_pem(&key, &cert).unwrap()),
        idp(&cert),
    )
    .unwrap();
    let (url, pending) = sp
        .begin(&SamlAuthnOptions::hpki_card().with_relay_state("r&1"))
        .unwrap();
    assert!(
        url.as_str()
            .starts_with("https://idp.example/saml/sso?SAMLRequest=")
    );
    let query = url.query().unwrap();
    // The signature covers the parameters as sent, in order.
    let signed = &query[..query.find("&Signature=").unwrap()];
    let signature = B64
        .decode(form_decode(query_param(query, "Signature").unwrap()))
        .unwrap();
    let public = X509::from_pem(cert.as_bytes())
        .unwrap()
        .public_key()
        .unwrap();
    let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
    verifier.update(signed.as_bytes()).unwrap();
    assert!(verifier.verify(&signature).unwrap());
    assert_eq!(
        form_decode(query_param(query, "SigAlg").unwrap()),
        RSA_SHA256
    );
    assert_eq!(
        form_decode(query_param(query, "RelayState").unwrap()),
        "r&1"
    );
    // The request inflates to what the IdP needs.
    let deflated = B64
        .decode(form_decode(query_param(query, "SAMLRequest").unwrap()))
        .unwrap();
    let mut request = String::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut request)
        .unwrap();
    let root = xml::parse(&request).unwrap();
    assert!(root.is(PROTOCOL, "AuthnRequest"));
    assert_eq!(root.attr("ID"), Some(pending.request_id.as_str()));
    assert_eq!(
        root.attr("Destination"),
        Some("https://idp.example/saml/sso")
    );
    assert_eq!(
        root.attr("AssertionConsumerServiceURL"),
        Some("https://sp.example/acs")
    );
    assert_eq!(
        root.child(xml::NS_ASSERTION, "Issuer").map(|i| i.value()),
        Some("https://sp.example/saml")
    );
    // The pending login survives a cookie.
    let json = serde_json::to_string(&pending).unwrap();
    assert_eq!(
        serde_json::from_str::<SamlPendingLogin>(&json).unwrap(),
        pending
    );
    // A RelayState over 80 bytes is refused.
    assert!(
        sp.begin(&SamlAuthnOptions::default().with_relay_state(&"x".repeat(81)))
            .is_err()
    );
}

#[test]
fn idp_metadata_gives_endpoints_and_certificates() {
    let (_, cert) = key_pair("idp");
    let b64 = B64.encode(certificate_der(&cert).unwrap());
    let metadata = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example/saml/metadata"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" WantAuthnRequestsSigned="true"><md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>
{b64}
</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:KeyDescriptor use="encryption"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>bm90IGEgY2VydA==</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleLogoutService Binding="{BINDING_HTTP_REDIRECT}" Location="https://idp.example/saml/slo"/><md:SingleSignOnService Binding="{BINDING_HTTP_POST}" Location="https://idp.example/saml/sso-post"/><md:SingleSignOnService Binding="{BINDING_HTTP_REDIRECT}" Location="https://idp.example/saml/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    );
    let idp = SamlIdp::from_metadata(&metadata).unwrap();
    assert_eq!(idp.entity_id(), "https://idp.example/saml/metadata");
    assert_eq!(idp.sso_url().as_str(), "https://idp.example/saml/sso");
    assert_eq!(
        idp.slo_url().map(Url::as_str),
        Some("https://idp.example/saml/slo")
    );
    assert_eq!(idp.certificates.len(), 1);
    let with_dtd = metadata.replace(
        "<md:EntityDescriptor",
        "<!DOCTYPE x [<!ENTITY e 'x'>]><md:EntityDescriptor",
    );
    assert!(matches!(
        SamlIdp::from_metadata(&with_dtd),
        Err(Error::SamlXmlRefused(_))
    ));
}

// ----- SOAP back-channel logout ------------------------------------------------------

const IDP: &str = "https://idp.example/saml/metadata";
const SOAP_SLO: &str = "https://sp.example/saml/soap-slo";

/// A clock the tests set.
pub(crate) struct FixedClock(pub(crate) std::sync::Mutex<OffsetDateTime>);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// The fields of a LogoutRequest the tests vary.
pub(crate) struct LogoutFields<'a> {
    pub(crate) id: &'a str,
    pub(crate) issuer: &'a str,
    pub(crate) destination: Option<&'a str>,
    pub(crate) issued: OffsetDateTime,
    pub(crate) lifetime: time::Duration,
    pub(crate) name_id: Option<&'a str>,
    pub(crate) session_indexes: &'a [&'a str],
}

impl LogoutFields<'_> {
    pub(crate) fn new(issued: OffsetDateTime) -> Self {
        LogoutFields {
            id: "_l0",
            issuer: IDP,
            destination: Some(SOAP_SLO),
            issued,
            lifetime: time::Duration::minutes(5),
            name_id: Some("pairwise-nameid"),
            session_indexes: &["idp-session"],
        }
    }
}

/// A LogoutRequest as the IdP writes it, signed with `key` unless `None`, in a SOAP
/// envelope.
pub(crate) fn soap_logout(key: Option<&SamlSigningKey>, f: &LogoutFields<'_>) -> String {
    let issued = instant(f.issued);
    let until = instant(f.issued + f.lifetime);
    let mut attrs = vec![
        ("xmlns:samlp", PROTOCOL),
        ("xmlns:saml", xml::NS_ASSERTION),
        ("ID", f.id),
        ("Version", "2.0"),
        ("IssueInstant", issued.as_str()),
        ("NotOnOrAfter", until.as_str()),
    ];
    if let Some(d) = f.destination {
        attrs.push(("Destination", d));
    }
    let mut w = Writer::new();
    w.open("samlp:LogoutRequest", &attrs);
    w.element("saml:Issuer", &[], f.issuer);
    if let Some(key) = key {
        key.signature_template(&mut w, f.id);
    }
    if let Some(name_id) = f.name_id {
        w.element(
            "saml:NameID",
            &[
                ("Format", NAMEID_PERSISTENT),
                ("NameQualifier", f.issuer),
                ("SPNameQualifier", "https://sp.example/saml"),
            ],
            name_id,
        );
    }
    for index in f.session_indexes {
        w.element("samlp:SessionIndex", &[], index);
    }
    w.close("samlp:LogoutRequest");
    let mut message = w.finish();
    if let Some(key) = key {
        message = key.sign_enveloped(&message).unwrap();
    }
    logout::soap_envelope(&message)
}

/// An SP with a SOAP SLO URL whose IdP signs with `idp_key`, on a settable clock.
pub(crate) fn soap_sp(
    idp_cert: &str,
    sp_key: Option<SamlSigningKey>,
) -> (SamlServiceProvider, Arc<FixedClock>) {
    let mut config = SamlSpConfig::new("https://sp.example/saml", "https://sp.example/saml/acs")
        .with_slo_url("https://sp.example/saml/slo")
        .with_soap_slo_url(SOAP_SLO);
    if let Some(key) = sp_key {
        config = config.with_signing_key(key);
    }
    let clock = Arc::new(FixedClock(std::sync::Mutex::new(OffsetDateTime::now_utc())));
    let sp = SamlServiceProvider::new(config, idp(idp_cert))
        .unwrap()
        .with_clock(clock.clone());
    (sp, clock)
}

#[test]
fn the_metadata_advertises_the_soap_slo_endpoint_on_its_own_path() {
    let (_, cert) = key_pair("idp");
    let (sp, _) = soap_sp(&cert, None);
    let metadata = sp.metadata();
    let root = xml::parse(&metadata).unwrap();
    let d = root.child(NS_METADATA, "SPSSODescriptor").unwrap();
    let slo: Vec<(Option<&str>, Option<&str>)> = d
        .children(NS_METADATA, "SingleLogoutService")
        .map(|e| (e.attr("Binding"), e.attr("Location")))
        .collect();
    assert_eq!(
        slo,
        [
            (
                Some(BINDING_HTTP_REDIRECT),
                Some("https://sp.example/saml/slo")
            ),
            (Some(BINDING_SOAP), Some(SOAP_SLO)),
        ]
    );
    for clash in ["https://sp.example/saml/acs", "https://sp.example/saml/slo"] {
        let config = SamlSpConfig::new("https://sp.example/saml", "https://sp.example/saml/acs")
            .with_slo_url("https://sp.example/saml/slo")
            .with_soap_slo_url(clash);
        assert!(matches!(
            SamlServiceProvider::new(config, idp(&cert)),
            Err(Error::Config(_))
        ));
    }
    let plain = SamlSpConfig::new("https://sp.example/saml", "https://sp.example/saml/acs")
        .with_soap_slo_url("http://sp.example/soap");
    assert!(SamlServiceProvider::new(plain, idp(&cert)).is_err());
}

#[tokio::test]
async fn a_signed_soap_logout_request_verifies_once_and_names_the_sessions() {
    let (idp_key, idp_cert) = key_pair("idp");
    let idp_key = SamlSigningKey::from_pem(&idp_key, &idp_cert).unwrap();
    let (sp, clock) = soap_sp(&idp_cert, None);
    let now = clock.now();
    let body = soap_logout(Some(&idp_key), &LogoutFields::new(now));
    let request = sp.verify_soap_logout(body.as_bytes()).await.unwrap();
    assert_eq!(request.id, "_l0");
    assert_eq!(request.name_id.value, "pairwise-nameid");
    assert_eq!(request.session_indexes, ["idp-session"]);
    assert_eq!(
        request.notices(),
        [LogoutNotice {
            subject: Some(openidconnect::SubjectIdentifier::new(
                "pairwise-nameid".into()
            )),
            sid: Some("idp-session".into()),
        }]
    );
    // The same request again.
    assert!(matches!(
        sp.verify_soap_logout(body.as_bytes()).await,
        Err(Error::SamlReplay)
    ));
    // No SessionIndex: every session of the NameID; several: each.
    let all = soap_logout(
        Some(&idp_key),
        &LogoutFields {
            id: "_l1",
            session_indexes: &[],
            ..LogoutFields::new(now)
        },
    );
    let request = sp.verify_soap_logout(all.as_bytes()).await.unwrap();
    assert_eq!(request.notices().len(), 1);
    assert_eq!(request.notices()[0].sid, None);
    let two = soap_logout(
        Some(&idp_key),
        &LogoutFields {
            id: "_l2",
            session_indexes: &["a", "b"],
            destination: None,
            ..LogoutFields::new(now)
        },
    );
    let request = sp.verify_soap_logout(two.as_bytes()).await.unwrap();
    assert_eq!(request.notices().len(), 2);
    // The replay key space is not the assertions': an assertion ID equal to a request ID
    // is another key.
    assert_eq!(
        sp.replay
            .check_and_remember(
                &format!("{IDP}\n_l0"),
                now + time::Duration::minutes(5),
                now
            )
            .await,
        ReplayVerdict::Fresh
    );
}

#[tokio::test]
async fn soap_logout_requests_that_do_not_verify_are_refused() {
    let (idp_key_pem, idp_cert) = key_pair("idp");
    let idp_key = SamlSigningKey::from_pem(&idp_key_pem, &idp_cert).unwrap();
    let (other_key, other_cert) = key_pair("other");
    let other_key = SamlSigningKey::from_pem(&other_key, &other_cert).unwrap();
    let (sp, clock) = soap_sp(&idp_cert, None);
    let now = clock.now();
    let fields = |id| LogoutFields {
        id,
        ..LogoutFields::new(now)
    };
    let refused = |body: String| {
        let sp = sp.clone();
        async move { sp.verify_soap_logout(body.as_bytes()).await.unwrap_err() }
    };

    // Unsigned; signed by another key; tampered after signing.
    assert!(matches!(
        refused(soap_logout(None, &fields("_u"))).await,
        Error::SamlUnsigned
    ));
    assert!(matches!(
        refused(soap_logout(Some(&other_key), &fields("_o"))).await,
        Error::SamlSignature
    ));
    let genuine = soap_logout(Some(&idp_key), &fields("_g"));
    let tampered = genuine.replace("pairwise-nameid", "someone-else");
    assert!(matches!(refused(tampered).await, Error::SamlSignature));

    // Wrapping: the signed request moved under an unsigned one that names another
    // subject; a second LogoutRequest in the Body; a signature outside the request; a
    // signature referencing another element; a header block.
    let signed_request = between_tags(&genuine, "<soap:Body>", "</soap:Body>");
    let evil = soap_logout(
        None,
        &LogoutFields {
            id: "_evil",
            name_id: Some("victim"),
            ..LogoutFields::new(now)
        },
    );
    let evil_request = between_tags(&evil, "<soap:Body>", "</soap:Body>");
    let nested = evil.replace(
        "<saml:NameID",
        &format!("<samlp:Extensions>{signed_request}</samlp:Extensions><saml:NameID"),
    );
    assert!(matches!(refused(nested).await, Error::SamlStructure(_)));
    let side_by_side = genuine.replace(
        "</soap:Body>",
        &format!("{}</soap:Body>", evil_request.replace("_evil", "_evil2")),
    );
    assert!(matches!(refused(side_by_side).await, Error::SamlSoap(_)));
    let in_body = genuine.replace(
        "<soap:Body>",
        "<soap:Header><x:Evil xmlns:x=\"urn:x\"/></soap:Header><soap:Body>",
    );
    assert!(matches!(refused(in_body).await, Error::SamlSoap(_)));
    let other_reference = genuine.replace("URI=\"#_g\"", "URI=\"#_elsewhere\"");
    assert!(matches!(
        refused(other_reference).await,
        Error::SamlStructure(_)
    ));
    let not_soap = signed_request.to_owned();
    assert!(matches!(refused(not_soap).await, Error::SamlSoap(_)));
    let dtd = genuine.replacen("?>", "?><!DOCTYPE x>", 1);
    assert!(matches!(refused(dtd).await, Error::SamlXmlRefused(_)));
    let large = genuine.replace(
        "</soap:Body>",
        &format!("</soap:Body><!--{}-->", "x".repeat(MAX_SOAP_LOGOUT)),
    );
    assert!(matches!(refused(large).await, Error::SamlResponseTooLarge));

    // Issuer, Destination, NameID.
    let wrong_issuer = LogoutFields {
        issuer: "https://other-idp.example",
        ..fields("_i")
    };
    assert!(matches!(
        refused(soap_logout(Some(&idp_key), &wrong_issuer)).await,
        Error::SamlIssuer
    ));
    let wrong_destination = LogoutFields {
        destination: Some("https://sp.example/elsewhere"),
        ..fields("_d")
    };
    assert!(matches!(
        refused(soap_logout(Some(&idp_key), &wrong_destination)).await,
        Error::SamlDestination
    ));
    let no_name_id = LogoutFields {
        name_id: None,
        ..fields("_n")
    };
    assert!(matches!(
        refused(soap_logout(Some(&idp_key), &no_name_id)).await,
        Error::SamlNameId
    ));

    // Times: the SP's clock past NotOnOrAfter, past the age limit, before IssueInstant.
    let timed = soap_logout(Some(&idp_key), &fields("_t"));
    *clock.0.lock().unwrap() = now + time::Duration::minutes(7);
    assert!(matches!(refused(timed.clone()).await, Error::SamlExpired));
    let long_lived = soap_logout(
        Some(&idp_key),
        &LogoutFields {
            lifetime: time::Duration::hours(1),
            ..fields("_a")
        },
    );
    assert!(matches!(refused(long_lived).await, Error::SamlExpired));
    *clock.0.lock().unwrap() = now - time::Duration::minutes(5);
    assert!(matches!(
        refused(timed.clone()).await,
        Error::SamlNotYetValid
    ));
    // None of the refused requests was remembered: the timed one verifies in its window.
    *clock.0.lock().unwrap() = now;
    assert!(sp.verify_soap_logout(timed.as_bytes()).await.is_ok());
}

const MAX_SOAP_LOGOUT: usize = logout::MAX_SOAP_LOGOUT_BYTES;

fn between_tags<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap() + start.len();
    let to = from + text[from..].find(end).unwrap();
    &text[from..to]
}

#[test]
fn the_soap_logout_response_is_signed_and_carries_the_status() {
    let (_, idp_cert) = key_pair("idp");
    let (sp_key_pem, sp_cert) = key_pair("sp");
    let sp_key = SamlSigningKey::from_pem(&sp_key_pem, &sp_cert).unwrap();
    let (sp, _) = soap_sp(&idp_cert, Some(sp_key));
    for (status, codes) in [
        (SamlLogoutStatus::Success, vec![STATUS_SUCCESS]),
        (
            SamlLogoutStatus::Refused,
            vec![STATUS_REQUESTER, STATUS_REQUEST_DENIED],
        ),
        (SamlLogoutStatus::Unavailable, vec![STATUS_RESPONDER]),
    ] {
        let envelope = sp.soap_logout_response(Some("_l0"), status).unwrap();
        assert!(envelope.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope"));
        let message = between_tags(&envelope, "<soap:Body>", "</soap:Body>");
        let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            message,
            &[CertificateDer::from(certificate_der(&sp_cert).unwrap())],
            ReduceMode::PreDigest,
            None,
        )
        .expect("signed with the SP's key");
        let root = xml::parse(&signed).unwrap();
        assert!(root.is(PROTOCOL, "LogoutResponse"));
        assert_eq!(root.attr("InResponseTo"), Some("_l0"));
        assert_eq!(
            root.child(xml::NS_ASSERTION, "Issuer").map(|i| i.value()),
            Some("https://sp.example/saml")
        );
        let mut found = Vec::new();
        let mut code = root
            .child(PROTOCOL, "Status")
            .and_then(|s| s.child(PROTOCOL, "StatusCode"));
        while let Some(c) = code {
            found.push(c.attr("Value").unwrap());
            code = c.child(PROTOCOL, "StatusCode");
        }
        assert_eq!(found, codes);
    }
    // A P-256 key signs with ECDSA-SHA256.
    let ec = PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "ec sp").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&ec).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&ec, MessageDigest::sha256()).unwrap();
    let ec_cert = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
    let ec_key = String::from_utf8(ec.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let (ec_sp, _) = soap_sp(
        &idp_cert,
        Some(SamlSigningKey::from_pem(&ec_key, &ec_cert).unwrap()),
    );
    let envelope = ec_sp
        .soap_logout_response(Some("_l0"), SamlLogoutStatus::Success)
        .unwrap();
    assert!(envelope.contains(ECDSA_SHA256));
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        between_tags(&envelope, "<soap:Body>", "</soap:Body>"),
        &[CertificateDer::from(certificate_der(&ec_cert).unwrap())],
        ReduceMode::PreDigest,
        None,
    )
    .expect("signed with the SP's P-256 key");

    // Without a key: unsigned, no InResponseTo when the request did not verify.
    let (unsigned, _) = soap_sp(&idp_cert, None);
    let envelope = unsigned
        .soap_logout_response(None, SamlLogoutStatus::Refused)
        .unwrap();
    assert!(!envelope.contains("Signature") && !envelope.contains("InResponseTo"));
    assert!(
        logout::soap_fault("x<y")
            .contains("<faultcode>soap:Client</faultcode><faultstring>x&lt;y</faultstring>")
    );
}
