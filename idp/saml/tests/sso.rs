//! The SAML building blocks against each other: signed responses that verify (and stop
//! verifying when a byte changes), AuthnRequest intake over both bindings, and the attacks
//! it must refuse.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use idp_saml::attributes::Attribute;
use idp_saml::authn::{self, IntakeError, IntakeRules, Received};
use idp_saml::crypto::SigningCredential;
use idp_saml::redirect;
use idp_saml::response::{self, AUTHN_CONTEXT_SMARTCARD_PKI, Assertion};
use idp_saml::sp::{NAMEID_PERSISTENT, NameIdFormat, ServiceProvider, SpSettings};
use idp_saml::xml::{NS_SAML, NS_SAMLP, XmlWriter, instant};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use time::OffsetDateTime;

const SSO: &str = "https://idp.example.jp/saml/sso";
const SP_ID: &str = "https://sp.example.jp/saml";
const ACS: &str = "https://sp.example.jp/acs";

struct Party {
    credential: SigningCredential,
    cert_b64: String,
}

fn party(name: &str) -> Party {
    let (key, cert) = SigningCredential::generate_pem(name, 30).expect("key");
    let credential = SigningCredential::from_pem(&key, &cert).expect("credential");
    let cert_b64 = credential.certificate_base64();
    Party {
        credential,
        cert_b64,
    }
}

fn metadata(sp: &Party, signed_requests: bool) -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP_ID}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="{signed_requests}">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{ACS}" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#,
        sp.cert_b64
    )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn request_xml(id: &str, acs: &str, sp: Option<&Party>) -> String {
    let mut w = XmlWriter::new();
    w.open(
        "samlp:AuthnRequest",
        &[
            ("ID", id),
            ("Version", "2.0"),
            ("IssueInstant", &instant(now())),
            ("Destination", SSO),
            ("AssertionConsumerServiceURL", acs),
        ],
    );
    w.element("saml:Issuer", &[], SP_ID);
    let slot = w.position();
    w.empty(
        "samlp:NameIDPolicy",
        &[("Format", NAMEID_PERSISTENT), ("AllowCreate", "true")],
    );
    w.close("samlp:AuthnRequest");
    let mut xml = w.finish();
    let end = xml.len();
    match sp {
        Some(sp) => {
            sp.credential
                .sign_enveloped(&mut xml, 0..end, slot, id)
                .expect("sign");
            xml
        }
        None => xml,
    }
}

fn rules<'a>(sso: &'a [String]) -> IntakeRules<'a> {
    IntakeRules {
        sso_urls: sso,
        require_signed: false,
        now: now(),
        max_age: Duration::from_secs(300),
        skew: Duration::from_secs(30),
    }
}

fn post(xml: &str) -> String {
    B64.encode(xml)
}

fn accept_post(xml: &str, sp: &ServiceProvider) -> Result<authn::AcceptedRequest, IntakeError> {
    let sso = vec![SSO.to_owned()];
    let message = post(xml);
    let received = Received::Post {
        message: &message,
        relay_state: Some("rs"),
    };
    let incoming = authn::read(received).expect("decoded and its Issuer read");
    assert_eq!(incoming.issuer(), SP_ID);
    authn::accept(incoming, sp, &rules(&sso))
}

/// Both intake steps, as the IdP runs them.
fn intake(
    received: Received<'_>,
    sp: &ServiceProvider,
    rules: &IntakeRules<'_>,
) -> Result<authn::AcceptedRequest, IntakeError> {
    authn::accept(authn::read(received)?, sp, rules)
}

fn registered(sp: &Party, signed_requests: bool) -> ServiceProvider {
    ServiceProvider::from_metadata(&metadata(sp, signed_requests), SpSettings::default(), now())
        .expect("metadata")
}

#[test]
fn signed_post_request_is_accepted_and_its_fields_come_from_the_signed_bytes() {
    let sp = party("sp");
    let registered = registered(&sp, true);
    let accepted =
        accept_post(&request_xml("_req1", ACS, Some(&sp)), &registered).expect("accepted");
    assert!(accepted.signed);
    assert_eq!(accepted.acs_url, ACS);
    assert_eq!(accepted.id, "_req1");
    assert_eq!(accepted.relay_state.as_deref(), Some("rs"));
    assert_eq!(accepted.name_id_format, NameIdFormat::Persistent);
}

#[test]
fn unsigned_request_is_refused_when_signing_is_required() {
    let sp = party("sp");
    let err = accept_post(&request_xml("_req2", ACS, None), &registered(&sp, true));
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
    // Not required: accepted unsigned.
    let ok = accept_post(&request_xml("_req2", ACS, None), &registered(&sp, false)).expect("ok");
    assert!(!ok.signed);
}

#[test]
fn request_signed_by_another_key_is_refused() {
    let (sp, other) = (party("sp"), party("other"));
    let err = accept_post(
        &request_xml("_req3", ACS, Some(&other)),
        &registered(&sp, true),
    );
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
}

#[test]
fn tampered_signed_request_is_refused() {
    let sp = party("sp");
    let xml = request_xml("_req4", ACS, Some(&sp))
        .replace("AllowCreate=\"true\"", "AllowCreate=\"false\"");
    let err = accept_post(&xml, &registered(&sp, true));
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
}

#[test]
fn acs_not_in_metadata_is_never_answered() {
    let sp = party("sp");
    let xml = request_xml("_req5", "https://evil.example/acs", Some(&sp));
    let err = accept_post(&xml, &registered(&sp, true));
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
}

#[test]
fn signature_wrapping_is_refused() {
    let sp = party("sp");
    let genuine = request_xml("_genuine", ACS, Some(&sp));
    let genuine_body = genuine
        .split_once("?>")
        .map_or(genuine.as_str(), |(_, body)| body)
        .trim();
    // The genuine signed request nested in an attacker's request with another ACS.
    let wrapped = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="_evil" Version="2.0" IssueInstant="{}" Destination="{SSO}" AssertionConsumerServiceURL="https://evil.example/acs" ForceAuthn="false"><saml:Issuer>{SP_ID}</saml:Issuer><samlp:Extensions>{genuine_body}</samlp:Extensions></samlp:AuthnRequest>"#,
        instant(now())
    );
    let err = accept_post(&wrapped, &registered(&sp, true));
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
    // Same, with the attacker's ACS the registered one: still refused (the signature
    // does not cover the root).
    let wrapped = wrapped.replace("https://evil.example/acs", ACS);
    let err = accept_post(&wrapped, &registered(&sp, true));
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
}

#[test]
fn xxe_and_billion_laughs_are_refused_before_parsing() {
    let sp = party("sp");
    let registered = registered(&sp, false);
    for payload in [
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
            request_xml("_x", ACS, None).replace(SP_ID, "&x;")
        ),
        "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">&lol2;</samlp:AuthnRequest>".to_owned(),
    ] {
        let sso = vec![SSO.to_owned()];
        let message = post(&payload);
        let received = Received::Post { message: &message, relay_state: None };
        assert!(matches!(authn::read(received), Err(IntakeError::Untrusted(_))));
        assert!(matches!(intake(received, &registered, &rules(&sso)), Err(IntakeError::Untrusted(_))));
    }
}

#[test]
fn signed_redirect_request_is_accepted_and_a_forged_query_is_not() {
    let sp = party("sp");
    let registered = registered(&sp, true);
    let xml = request_xml("_redir", ACS, None);
    let query =
        redirect::encode("SAMLRequest", &xml, Some("state 1"), &sp.credential).expect("encode");
    let sso = vec![SSO.to_owned()];
    let accepted = intake(
        Received::Redirect { raw_query: &query },
        &registered,
        &rules(&sso),
    )
    .expect("accepted");
    assert!(accepted.signed);
    assert_eq!(accepted.relay_state.as_deref(), Some("state 1"));
    // RelayState changed after signing.
    let forged = query.replace("RelayState=state%201", "RelayState=state%202");
    assert_ne!(forged, query);
    let err = intake(
        Received::Redirect { raw_query: &forged },
        &registered,
        &rules(&sso),
    );
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
    // Signature dropped.
    let unsigned = query
        .split("&SigAlg=")
        .next()
        .unwrap_or_default()
        .to_owned();
    let err = intake(
        Received::Redirect {
            raw_query: &unsigned,
        },
        &registered,
        &rules(&sso),
    );
    assert!(matches!(err, Err(IntakeError::Untrusted(_))), "{err:?}");
}

#[test]
fn unsupported_nameid_policy_gets_a_status_at_the_registered_acs() {
    let sp = party("sp");
    let xml = request_xml("_nip", ACS, None).replace(
        NAMEID_PERSISTENT,
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    );
    match accept_post(&xml, &registered(&sp, false)) {
        Err(IntakeError::Status(answer)) => {
            assert_eq!(answer.acs_url, ACS);
            assert_eq!(answer.in_response_to, "_nip");
            assert_eq!(
                answer.status.sub_code,
                Some(response::status::INVALID_NAMEID_POLICY)
            );
        }
        other => panic!("{other:?}"),
    }
}

fn verify_all(xml: &str, cert: &[u8]) -> bool {
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &[CertificateDer::from(cert.to_vec())],
        ReduceMode::PreDigest,
        Some(&[AllowedSignatureAlgorithm::RsaSha256]),
    )
    .is_ok()
}

#[test]
fn success_response_is_double_signed_with_sha256_and_escapes_values() {
    let idp = party("idp");
    let attributes = vec![Attribute {
        name: "urn:oid:2.5.4.4".into(),
        friendly_name: Some("sn"),
        values: vec!["山田</saml:AttributeValue><x>&".into()],
    }];
    let t = now();
    let a = Assertion {
        issuer: "https://idp.example.jp",
        audience: SP_ID,
        acs_url: ACS,
        in_response_to: Some("_req"),
        name_id: "pairwise-1",
        name_id_format: NAMEID_PERSISTENT,
        session_index: "sid-1",
        authn_instant: t,
        session_not_on_or_after: Some(t + Duration::from_secs(3600)),
        authn_context_class: AUTHN_CONTEXT_SMARTCARD_PKI,
        attributes: &attributes,
        now: t,
        lifetime: Duration::from_secs(300),
        skew: Duration::from_secs(30),
        sign_response: true,
    };
    let xml = response::success(&idp.credential, &a).expect("response");
    assert_eq!(xml.matches("<ds:Signature ").count(), 2, "{xml}");
    assert!(!xml.contains("sha1"), "no SHA-1 anywhere");
    assert!(xml.contains("山田&lt;/saml:AttributeValue&gt;&lt;x&gt;&amp;"));
    assert!(verify_all(&xml, idp.credential.certificate_der()));
    let other = party("other");
    assert!(!verify_all(&xml, other.credential.certificate_der()));
    let tampered = xml.replace("pairwise-1", "pairwise-2");
    assert!(!verify_all(&tampered, idp.credential.certificate_der()));

    let unsigned_response = response::success(
        &idp.credential,
        &Assertion {
            sign_response: false,
            ..a
        },
    )
    .expect("response");
    assert_eq!(unsigned_response.matches("<ds:Signature ").count(), 1);
    assert!(verify_all(
        &unsigned_response,
        idp.credential.certificate_der()
    ));
}

/// Metadata from a URL must carry an enveloped signature by the configured certificate.
#[test]
fn signed_metadata_is_required_when_a_signer_is_configured() {
    let (sp, federation, other) = (party("sp"), party("federation"), party("other"));
    let id = "_md1";
    let unsigned = metadata(&sp, false).replacen(
        "<md:EntityDescriptor ",
        &format!("<md:EntityDescriptor ID=\"{id}\" "),
        1,
    );
    let at = unsigned.find("<md:SPSSODescriptor").expect("descriptor");
    let template = federation.credential.template(id).expect("template");
    let signed = federation
        .credential
        .sign(&format!("{}{template}{}", &unsigned[..at], &unsigned[at..]))
        .expect("signs");
    let pem = |p: &Party| {
        let b64 = p
            .cert_b64
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned());
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.collect::<Vec<_>>().join("\n")
        )
    };
    let settings = |signer: &Party| SpSettings {
        metadata_signing_certificate: Some(pem(signer)),
        ..SpSettings::default()
    };
    let sp_read = ServiceProvider::from_metadata(&signed, settings(&federation), now())
        .expect("signed by the configured signer");
    assert_eq!(sp_read.entity_id, SP_ID);
    for (xml, signer) in [
        (&signed, &other),
        (&unsigned, &federation),
        (
            &signed.replace(ACS, "https://evil.example/acs"),
            &federation,
        ),
    ] {
        assert!(
            matches!(
                ServiceProvider::from_metadata(xml, settings(signer), now()),
                Err(idp_saml::sp::MetadataError::Signature(_))
            ),
            "refused"
        );
    }
}
