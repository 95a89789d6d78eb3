#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;

use idp_vocabulary::hpki::HcRole;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

use super::*;

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
