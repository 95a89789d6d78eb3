//! Every signed document the IdP sends, written canonical and signed without xmlsec
//! (`SigningCredential::sign_enveloped`), checked by xmlsec: the signatures verify (with
//! RSA and with ECDSA keys), and the bytes xmlsec digests after its own enveloped-signature
//! and exc-c14n transforms are exactly the document as written minus the signature, hostile
//! characters included. A writer that drifted from exc-c14n (a namespace declared twice or
//! missing, an attribute out of order, an escape c14n writes otherwise) fails here.

use std::time::Duration;

use idp_saml::attributes::Attribute;
use idp_saml::crypto::SigningCredential;
use idp_saml::logout::{self, LogoutRequestOut, Signing};
use idp_saml::metadata::{self, IdpDescription};
use idp_saml::response::{self, AUTHN_CONTEXT_SMARTCARD_PKI, Assertion, SamlStatus};
use idp_saml::sp::{NAMEID_PERSISTENT, NAMEID_TRANSIENT};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use time::OffsetDateTime;

/// Values that exercise every escape and replacement of the writer.
const HOSTILE: &str = "山田 \"太郎\" <x y='1'>&amp; a\tb\nc\rd\u{1}e\u{FFFE}f ]]>";
const ISSUER: &str = "https://idp.example.jp/saml/metadata";
const SP: &str = "https://sp.example.jp/saml?a=1&b=\"2\"";
const ACS: &str = "https://sp.example.jp/acs?x=<1>&y='2'";

fn rsa() -> SigningCredential {
    let (key, cert) = SigningCredential::generate_pem("idp", 30).expect("key");
    SigningCredential::from_pem(&key, &cert).expect("credential")
}

fn ecdsa() -> SigningCredential {
    let certified = rcgen::generate_simple_self_signed(vec!["idp.example.jp".into()])
        .expect("P-256 certificate");
    SigningCredential::from_pem(
        &certified.signing_key.serialize_pem(),
        &certified.cert.pem(),
    )
    .expect("credential")
}

fn credentials() -> [(&'static str, SigningCredential); 2] {
    [("RSA", rsa()), ("ECDSA", ecdsa())]
}

/// xmlsec's verdict: the pre-digest bytes of the document's (outer) signature, after
/// verifying every signature in it with `credential`'s certificate.
fn predigest(xml: &str, credential: &SigningCredential) -> Option<String> {
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &[CertificateDer::from(credential.certificate_der().to_vec())],
        ReduceMode::PreDigest,
        Some(&[
            AllowedSignatureAlgorithm::RsaSha256,
            AllowedSignatureAlgorithm::EcdsaSha256,
        ]),
    )
    .ok()
}

/// `xml` without its `n`th `ds:Signature` element (0: the first in document order).
fn without_signature(xml: &str, n: usize) -> String {
    let start = xml
        .match_indices("<ds:Signature ")
        .nth(n)
        .expect("signature")
        .0;
    let end = start + xml[start..].find("</ds:Signature>").expect("end") + 15;
    format!("{}{}", &xml[..start], &xml[end..])
}

/// The signature verifies, xmlsec digested exactly the bytes we wrote, and one changed
/// byte is refused.
fn assert_canonical_and_verified(what: &str, xml: &str, credential: &SigningCredential) {
    assert!(!xml.contains("sha1"), "{what}: no SHA-1 anywhere");
    assert!(!xml.starts_with("<?xml"), "{what}: no declaration");
    let digested =
        predigest(xml, credential).unwrap_or_else(|| panic!("{what} does not verify: {xml}"));
    assert_eq!(digested, without_signature(xml, 0), "{what}");
    let tampered = xml.replacen("2.0", "2.1", 1);
    assert!(
        predigest(&tampered, credential).is_none(),
        "{what} tampered"
    );
    assert!(predigest(xml, &rsa()).is_none(), "{what} with another key");
}

fn attributes() -> Vec<Attribute> {
    vec![
        Attribute {
            name: "urn:oid:2.5.4.4".into(),
            friendly_name: Some("sn"),
            values: vec![HOSTILE.into(), "日医".into()],
        },
        Attribute {
            name: "urn:jp:hpki-idp:claim:name:ja-Kana-JP".into(),
            friendly_name: None,
            values: vec!["ニチイ\u{3000}タロウ".into()],
        },
    ]
}

fn assertion<'a>(attributes: &'a [Attribute], sign_response: bool) -> Assertion<'a> {
    let now = OffsetDateTime::now_utc();
    Assertion {
        issuer: ISSUER,
        audience: SP,
        acs_url: ACS,
        in_response_to: Some("_req\"<&>"),
        name_id: HOSTILE,
        name_id_format: NAMEID_PERSISTENT,
        session_index: "sid-1",
        authn_instant: now,
        session_not_on_or_after: Some(now + Duration::from_secs(3600)),
        authn_context_class: AUTHN_CONTEXT_SMARTCARD_PKI,
        attributes,
        now,
        lifetime: Duration::from_secs(300),
        skew: Duration::from_secs(30),
        sign_response,
    }
}

#[test]
fn double_signed_response_is_canonical_and_both_signatures_verify() {
    let attributes = attributes();
    for (kind, credential) in credentials() {
        let xml = response::success(&credential, &assertion(&attributes, true)).expect("signs");
        assert_eq!(xml.matches("<ds:Signature ").count(), 2, "{xml}");
        assert_canonical_and_verified(kind, &xml, &credential);
        // The Assertion alone (as an SP that keeps only it reads it): its own signature
        // covers exactly its bytes.
        let start = xml.find("<saml:Assertion ").expect("assertion");
        let end = xml.find("</saml:Assertion>").expect("end") + 17;
        let alone = &xml[start..end];
        let digested = predigest(alone, &credential).expect("the assertion verifies alone");
        assert_eq!(digested, without_signature(alone, 0), "{kind}");
        // Tampering with the Assertion breaks both signatures.
        let tampered = xml.replacen("sid-1", "sid-2", 1);
        assert!(predigest(&tampered, &credential).is_none());
    }
}

#[test]
fn assertion_only_response_is_canonical() {
    let attributes = attributes();
    for (kind, credential) in credentials() {
        let xml = response::success(&credential, &assertion(&attributes, false)).expect("signs");
        assert_eq!(xml.matches("<ds:Signature ").count(), 1, "{xml}");
        assert!(
            xml.find("<ds:Signature ") > xml.find("<saml:Assertion "),
            "only the Assertion is signed"
        );
        let digested = predigest(&xml, &credential).expect("verifies");
        let start = xml.find("<saml:Assertion ").expect("assertion");
        let end = xml.find("</saml:Assertion>").expect("end") + 17;
        assert_eq!(digested, without_signature(&xml[start..end], 0), "{kind}");
    }
}

#[test]
fn refusal_and_logout_messages_are_canonical() {
    let now = OffsetDateTime::now_utc();
    let status = SamlStatus::requester(Some(response::status::REQUEST_DENIED), HOSTILE);
    for (kind, credential) in credentials() {
        let refusal =
            response::refusal(&credential, ISSUER, ACS, Some("_r&1"), &status, now).expect("signs");
        assert_canonical_and_verified(&format!("{kind} refusal"), &refusal, &credential);

        let (_, request) = logout::request(
            &credential,
            &LogoutRequestOut {
                issuer: ISSUER,
                destination: ACS,
                name_id: HOSTILE,
                name_id_format: NAMEID_TRANSIENT,
                sp_name_qualifier: SP,
                session_index: "sid-1",
                now,
                lifetime: Duration::from_secs(60),
            },
            Signing::Enveloped,
        )
        .expect("signs");
        assert_canonical_and_verified(&format!("{kind} LogoutRequest"), &request, &credential);

        let answer = logout::response(
            &credential,
            ISSUER,
            ACS,
            "_lr\"1",
            &status,
            now,
            Signing::Enveloped,
        )
        .expect("signs");
        assert_canonical_and_verified(&format!("{kind} LogoutResponse"), &answer, &credential);

        let unsigned = logout::response(
            &credential,
            ISSUER,
            ACS,
            "_lr1",
            &status,
            now,
            Signing::QueryString,
        )
        .expect("writes");
        assert!(
            !unsigned.contains("Signature"),
            "the query string carries it"
        );
    }
}

#[test]
fn metadata_is_canonical() {
    let names = [
        ("urn:oid:2.5.4.4".to_owned(), Some("sn")),
        ("urn:jp:hpki-idp:claim:jma_member".to_owned(), None),
    ];
    for (kind, credential) in credentials() {
        let certificates = [credential.certificate_base64(), rsa().certificate_base64()];
        let xml = metadata::idp_metadata(
            &credential,
            &IdpDescription {
                entity_id: ISSUER,
                sso_url: ACS,
                slo_url: SP,
                want_authn_requests_signed: true,
                certificates: &certificates,
                valid_for: Duration::from_secs(86400),
                cache_for: Duration::from_secs(3600),
                attributes: &names,
                organization: HOSTILE,
                now: OffsetDateTime::now_utc(),
            },
        )
        .expect("signs");
        assert_canonical_and_verified(&format!("{kind} metadata"), &xml, &credential);
    }
}
