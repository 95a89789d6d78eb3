//! Signed SAML login responses: `idp_saml::response::success` with an RSA-2048 key
//! (RSA-SHA256, SHA-256 digests, exclusive c14n; written canonical and signed by
//! `SigningCredential::sign_enveloped`, checked once with samael's xmlsec verifier).
//!
//! Run with `cargo bench -p idp-saml --bench response`; scripts/bench-saml.sh runs it
//! next to samlify (bench/samlify) and docs/BENCHMARKS.md ("SAML responses") has the
//! figures and the machine they were taken on.
//!
//! - `response/signed_response_and_assertion`: the Assertion and the Response both
//!   signed (`sign_response = true`, the default for an SP): two enveloped signatures.
//! - `response/assertion_only`: only the Assertion signed (`sign_response = false`).
//!
//! Each iteration builds and signs one complete response for `idp dev-pki`'s doctor with
//! exactly the attributes a live login releases to an SP allowed `name`, `family_name`,
//! `given_name`, `email` and `hpki_role` (scripts/bench-saml.sh registers such an SP):
//! displayName, sn, givenName, mail, hcRole and the Japanese kanji and kana variants of
//! the three names, eleven attributes in all; a pairwise persistent NameID, the session
//! index and the AuthnStatement. The base64 encoding for the HTTP-POST form is not
//! included (the caller does it; it is about 10 µs).
//!
//! Environment:
//! - `SAML_BENCH_KEY`, `SAML_BENCH_CERT`: PEM key and certificate to sign with (the
//!   benchmark script passes the key samlify signs with); default: a new RSA-2048 key.
//! - `SAML_BENCH_SAMPLE_DIR`: write one response of each kind there
//!   (`idp-signed-response.xml`, `idp-assertion-only.xml`) before measuring.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use idp_saml::attributes::Attribute;
use idp_saml::crypto::SigningCredential;
use idp_saml::response::{self, AUTHN_CONTEXT_SMARTCARD_PKI, Assertion};
use idp_saml::sp::NAMEID_PERSISTENT;
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use time::OffsetDateTime;

/// The values the benchmark SP registered by scripts/bench-saml.sh receives; samlify's
/// script (bench/samlify/response.mjs) uses the same ones.
const ISSUER: &str = "https://localhost:8443/saml/metadata";
const SP_ENTITY_ID: &str = "https://sp.bench.example/saml";
const ACS_URL: &str = "https://sp.bench.example/saml/acs";
const REQUEST_ID: &str = "_3f1c9a0e7b5d4c2a8e6f0b1d3c5a7e9f";
/// A pairwise subject as `subject_for` makes it (43 characters of base64url).
const NAME_ID: &str = "q3Vx0mJ6bK2pN8sT4wY7zA1cE5gH9iL0oR3uW6yB2dF";
/// A session's public ID as the IdP makes it (32 hex digits).
const SESSION_INDEX: &str = "3e4e7f72d6b8b0ce81d3b3c53083afec";

fn attributes() -> Vec<Attribute> {
    let one = |name: &str, friendly: Option<&'static str>, value: &str| Attribute {
        name: name.to_owned(),
        friendly_name: friendly,
        values: vec![value.to_owned()],
    };
    let claim =
        |name: &str, value: &str| one(&format!("urn:jp:hpki-idp:claim:{name}"), None, value);
    // Exactly what a live login releases for the test doctor to an SP allowed `name`,
    // `family_name`, `given_name`, `email` and `hpki_role`, in the order
    // `attributes::attributes` sorts them (by name).
    vec![
        claim("family_name:ja-Hani-JP", "日医"),
        claim("family_name:ja-Kana-JP", "ニチイ"),
        claim("given_name:ja-Hani-JP", "太郎"),
        claim("given_name:ja-Kana-JP", "タロウ"),
        claim("name:ja-Hani-JP", "日医\u{3000}太郎"),
        claim("name:ja-Kana-JP", "ニチイ\u{3000}タロウ"),
        one(
            "urn:oid:0.9.2342.19200300.100.1.3",
            Some("mail"),
            "doctor@test.invalid",
        ),
        one(
            "urn:oid:1.2.392.100495.1.6.1.1",
            Some("hcRole"),
            "Medical Doctor",
        ),
        one(
            "urn:oid:2.16.840.1.113730.3.1.241",
            Some("displayName"),
            "日医\u{3000}太郎",
        ),
        one("urn:oid:2.5.4.4", Some("sn"), "NICHII"),
        one("urn:oid:2.5.4.42", Some("givenName"), "TARO"),
    ]
}

fn credential() -> SigningCredential {
    let (key, cert) = match (
        std::env::var("SAML_BENCH_KEY"),
        std::env::var("SAML_BENCH_CERT"),
    ) {
        (Ok(key), Ok(cert)) => (
            std::fs::read_to_string(&key).expect("SAML_BENCH_KEY readable"),
            std::fs::read_to_string(&cert).expect("SAML_BENCH_CERT readable"),
        ),
        _ => SigningCredential::generate_pem("bench IdP", 30).expect("RSA-2048 key generated"),
    };
    SigningCredential::from_pem(&key, &cert).expect("signing credential")
}

fn assertion(attributes: &[Attribute], now: OffsetDateTime, sign_response: bool) -> Assertion<'_> {
    Assertion {
        issuer: ISSUER,
        audience: SP_ENTITY_ID,
        acs_url: ACS_URL,
        in_response_to: Some(REQUEST_ID),
        name_id: NAME_ID,
        name_id_format: NAMEID_PERSISTENT,
        session_index: SESSION_INDEX,
        authn_instant: now,
        session_not_on_or_after: Some(now + Duration::from_secs(8 * 3600)),
        authn_context_class: AUTHN_CONTEXT_SMARTCARD_PKI,
        attributes,
        now,
        lifetime: Duration::from_secs(300),
        skew: Duration::from_secs(60),
        sign_response,
    }
}

/// Every signature in `xml` verifies with the certificate (RSA-SHA256 only).
fn verifies(xml: &str, cert: &[u8]) -> bool {
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &[CertificateDer::from(cert.to_vec())],
        ReduceMode::PreDigest,
        Some(&[AllowedSignatureAlgorithm::RsaSha256]),
    )
    .is_ok()
}

fn bench_response(c: &mut Criterion) {
    let credential = credential();
    let attributes = attributes();
    let sample_dir = std::env::var_os("SAML_BENCH_SAMPLE_DIR");
    // What is measured is checked once first: signature count, algorithms, signatures.
    for (sign_response, signatures, file) in [
        (true, 2, "idp-signed-response.xml"),
        (false, 1, "idp-assertion-only.xml"),
    ] {
        let xml = response::success(
            &credential,
            &assertion(&attributes, OffsetDateTime::now_utc(), sign_response),
        )
        .expect("response signed");
        assert_eq!(xml.matches("<ds:SignatureValue>").count(), signatures);
        assert!(xml.contains("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"));
        assert!(xml.contains("http://www.w3.org/2001/04/xmlenc#sha256"));
        assert!(!xml.contains("sha1"), "no SHA-1");
        assert!(xml.contains("日医\u{3000}太郎"));
        assert!(verifies(&xml, credential.certificate_der()));
        eprintln!(
            "{file}: {} bytes, {signatures} signature(s), verified",
            xml.len()
        );
        if let Some(dir) = &sample_dir {
            std::fs::write(std::path::Path::new(dir).join(file), &xml).expect("sample written");
        }
    }

    let mut group = c.benchmark_group("response");
    for (id, sign_response) in [
        ("signed_response_and_assertion", true),
        ("assertion_only", false),
    ] {
        group.bench_function(id, |b| {
            b.iter(|| {
                // A new instant per response, as in the live endpoint.
                let a = assertion(&attributes, OffsetDateTime::now_utc(), sign_response);
                black_box(response::success(&credential, black_box(&a)).expect("signed"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_response);
criterion_main!(benches);
