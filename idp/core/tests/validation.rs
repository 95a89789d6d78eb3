//! `PeerCertificate -> HpkiCredential` over the generated test PKI, at injected times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

use idp_core::hpki::{
    CrlError, HpkiRefusal, HpkiValidator, Installed, PeerCertificate, RevocationFailure,
    RevocationPolicy, TrustStore, ValidationPolicy,
};
use idp_devpki::Manifest;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use time::macros::datetime;

const ISSUED_AT: OffsetDateTime = datetime!(2026-04-01 00:00 UTC);

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    manifest: Manifest,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pki");
        let manifest =
            idp_devpki::generate(&idp_devpki::Options::new("core-tests", ISSUED_AT, &root))
                .unwrap();
        Fixture {
            _dir: dir,
            root,
            manifest,
        }
    })
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read_to_string(path).unwrap();
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let b64: String = block
                .split("-----END")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            CertificateDer::from(base64_decode(&b64))
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).unwrap() as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

fn validator(policy: ValidationPolicy) -> HpkiValidator {
    let f = fixture();
    let load = |rels: &[String]| {
        rels.iter()
            .flat_map(|r| pem_certs(&f.root.join(r)))
            .collect::<Vec<_>>()
    };
    let trust = TrustStore::new(
        load(&f.manifest.trust.anchors),
        load(&f.manifest.trust.intermediates),
    )
    .unwrap();
    let validator = HpkiValidator::new(trust, policy);
    for crl in &f.manifest.trust.crls {
        let der = std::fs::read(f.root.join(crl)).unwrap();
        assert_eq!(
            validator.install_crl(&der, crl).unwrap(),
            Installed::Replaced
        );
    }
    validator
}

fn default_policy() -> ValidationPolicy {
    ValidationPolicy {
        accepted_policies: vec![fixture().manifest.trust.auth_policy_oid.clone()],
        ..ValidationPolicy::default()
    }
}

fn peer(card: &str) -> PeerCertificate {
    let f = fixture();
    let card = f.manifest.card(card).unwrap();
    PeerCertificate::new(pem_certs(&f.root.join(&card.chain))).unwrap()
}

fn now() -> OffsetDateTime {
    ISSUED_AT + time::Duration::days(30)
}

#[test]
fn good_cards_become_credentials_with_every_role() {
    let v = validator(default_policy());
    for card in fixture().manifest.cards.iter().filter(|c| c.good) {
        let credential = v
            .validate(&peer(&card.name), now())
            .unwrap_or_else(|e| panic!("{}: {e}", card.name));
        let roles: Vec<String> = credential
            .roles()
            .iter()
            .map(|r| r.display_name().to_owned())
            .collect();
        assert_eq!(roles, card.roles);
        assert_eq!(Some(credential.holder_id()), card.holder_id.as_deref());
        assert_eq!(credential.serial(), card.serial);
        assert_eq!(credential.common_name(), Some(card.common_name.as_str()));
        // Leaf and intermediate were both checked against a CRL.
        assert_eq!(credential.revocation().len(), 2);
        assert!(credential.revocation().iter().all(|e| e.status == "good"));
    }
}

#[test]
fn every_bad_card_gets_its_own_refusal() {
    let v = validator(default_policy());
    for card in fixture().manifest.cards.iter().filter(|c| !c.good) {
        let refusal = v.validate(&peer(&card.name), now()).expect_err(&card.name);
        assert_eq!(
            Some(refusal.code()),
            card.expect.as_deref(),
            "{}: {refusal}",
            card.name
        );
        let chain_ok = refusal.issued_by_trusted_ca();
        assert_eq!(
            chain_ok,
            refusal.code() != "unknown_issuer",
            "{}",
            card.name
        );
    }
}

#[test]
fn validity_is_judged_at_the_injected_time() {
    let v = validator(default_policy());
    let doctor = peer("doctor");
    assert!(
        v.validate(&doctor, ISSUED_AT + time::Duration::days(365 * 4))
            .is_ok()
    );
    assert_eq!(
        v.validate(&doctor, ISSUED_AT + time::Duration::days(365 * 6))
            .unwrap_err(),
        HpkiRefusal::Expired
    );
    assert_eq!(
        v.validate(&doctor, ISSUED_AT - time::Duration::days(1))
            .unwrap_err(),
        HpkiRefusal::NotYetValid
    );
}

#[test]
fn stale_and_missing_crls_follow_the_policy() {
    let late = ISSUED_AT + time::Duration::days(365 * 4);
    let f = fixture();
    // CRLs valid only 7 days.
    let short = |v: &HpkiValidator| {
        for ca in ["root", "jma-ca"] {
            let der = idp_devpki::issue_crl_der(
                &f.root,
                &f.manifest,
                ca,
                &[],
                ISSUED_AT,
                ISSUED_AT + time::Duration::days(7),
                50,
            )
            .unwrap();
            v.install_crl(&der, ca).unwrap();
        }
    };
    let hard = validator(default_policy());
    short(&hard);
    assert!(matches!(
        hard.validate(&peer("doctor"), late),
        Err(HpkiRefusal::RevocationStale { .. })
    ));

    let soft_policy = ValidationPolicy {
        revocation: RevocationPolicy {
            when_missing: RevocationFailure::HardFail,
            when_stale: RevocationFailure::SoftFail,
        },
        ..default_policy()
    };
    let soft = validator(soft_policy);
    short(&soft);
    let credential = soft.validate(&peer("doctor"), late).unwrap();
    assert_eq!(credential.revocation()[0].status, "unchecked_stale_crl");

    let trust_only = {
        let load = |rels: &[String]| {
            rels.iter()
                .flat_map(|r| pem_certs(&f.root.join(r)))
                .collect::<Vec<_>>()
        };
        HpkiValidator::new(
            TrustStore::new(
                load(&f.manifest.trust.anchors),
                load(&f.manifest.trust.intermediates),
            )
            .unwrap(),
            default_policy(),
        )
    };
    assert!(matches!(
        trust_only.validate(&peer("doctor"), now()),
        Err(HpkiRefusal::RevocationUnavailable { .. })
    ));
}

#[test]
fn an_older_crl_cannot_replace_a_newer_one() {
    let f = fixture();
    let v = validator(default_policy());
    let newer = idp_devpki::issue_crl_der(
        &f.root,
        &f.manifest,
        "jma-ca",
        &[],
        ISSUED_AT,
        ISSUED_AT + time::Duration::days(30),
        90,
    )
    .unwrap();
    assert_eq!(v.install_crl(&newer, "newer").unwrap(), Installed::Replaced);
    assert_eq!(
        v.install_crl(&newer, "again").unwrap(),
        Installed::Unchanged
    );
    // The original CRL (which lists the revoked card) is older: replaying it is refused.
    let original = std::fs::read(f.root.join("crl/jma-ca.crl")).unwrap();
    assert!(matches!(
        v.install_crl(&original, "old"),
        Err(CrlError::Rollback { .. })
    ));
}

#[test]
fn crls_from_unknown_issuers_or_with_bad_signatures_are_refused() {
    let f = fixture();
    let v = validator(default_policy());
    let unknown = std::fs::read(f.root.join("crl/jma-ca-2.crl")).unwrap();
    assert!(matches!(
        v.install_crl(&unknown, "x"),
        Err(CrlError::UnknownIssuer(_))
    ));
    let mut tampered = idp_devpki::issue_crl_der(
        &f.root,
        &f.manifest,
        "jma-ca",
        &[],
        ISSUED_AT,
        ISSUED_AT + time::Duration::days(30),
        91,
    )
    .unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(matches!(
        v.install_crl(&tampered, "x"),
        Err(CrlError::BadSignature(_))
    ));
    assert!(matches!(
        v.install_crl(b"garbage", "x"),
        Err(CrlError::Malformed(_))
    ));
}

#[test]
fn client_sent_certificates_are_never_anchors() {
    let f = fixture();
    let v = validator(default_policy());
    // The self-signed card presents itself; the unknown CA's card presents its root.
    for name in ["self-signed", "unknown-ca"] {
        let chain = pem_certs(&f.root.join(&f.manifest.card(name).unwrap().chain));
        let mut with_trusted_root = chain.clone();
        with_trusted_root.extend(pem_certs(&f.root.join(&f.manifest.trust.anchors[0])));
        for presented in [chain, with_trusted_root] {
            let refusal = v
                .validate(&PeerCertificate::new(presented).unwrap(), now())
                .unwrap_err();
            assert_eq!(refusal, HpkiRefusal::UnknownIssuer, "{name}");
        }
    }
}

#[test]
fn garbage_truncated_and_huge_chains_are_clean_refusals() {
    let v = validator(default_policy());
    assert_eq!(
        PeerCertificate::new(vec![]).unwrap_err(),
        HpkiRefusal::NoCertificate
    );
    assert_eq!(
        PeerCertificate::new(vec![CertificateDer::from(vec![0x30; 20_000])]).unwrap_err(),
        HpkiRefusal::TooLarge
    );
    assert_eq!(
        PeerCertificate::new(vec![CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]); 7]).unwrap_err(),
        HpkiRefusal::TooLarge
    );
    let good = peer("doctor").end_entity().as_ref().to_vec();
    for end in [0, 1, 2, 10, good.len() / 2, good.len() - 1] {
        let cut = PeerCertificate::new(vec![CertificateDer::from(good[..end].to_vec())]).unwrap();
        let refusal = v.validate(&cut, now()).unwrap_err();
        assert!(!refusal.issued_by_trusted_ca(), "{end}: {refusal}");
    }
    for i in (0..good.len()).step_by(7) {
        let mut flipped = good.clone();
        flipped[i] ^= 0x55;
        let result = v.validate(
            &PeerCertificate::new(vec![CertificateDer::from(flipped)]).unwrap(),
            now(),
        );
        assert!(
            result.is_err(),
            "a modified certificate must never validate (byte {i})"
        );
    }
}

#[test]
fn the_revocation_policy_can_be_relaxed_for_one_issuer_only() {
    let f = fixture();
    let late = ISSUED_AT + time::Duration::days(365 * 4);
    let jma_subject = {
        let pem = pem_certs(&f.root.join(&f.manifest.trust.intermediates[0]));
        let (_, cert) = x509_parser::parse_x509_certificate(pem[0].as_ref()).unwrap();
        cert.subject().as_raw().to_vec()
    };
    let policy = ValidationPolicy {
        revocation_overrides: [(
            jma_subject,
            RevocationPolicy {
                when_missing: RevocationFailure::HardFail,
                when_stale: RevocationFailure::SoftFail,
            },
        )]
        .into_iter()
        .collect(),
        ..default_policy()
    };
    let v = validator(policy);
    let short = |ca: &str, number: u64| {
        idp_devpki::issue_crl_der(
            &f.root,
            &f.manifest,
            ca,
            &[],
            ISSUED_AT,
            ISSUED_AT + time::Duration::days(7),
            number,
        )
        .unwrap()
    };
    // Only the JMA CA's CRL is stale: its cards pass (soft-fail), recorded as unchecked.
    v.install_crl(&short("jma-ca", 60), "short").unwrap();
    let fresh_root = idp_devpki::issue_crl_der(
        &f.root,
        &f.manifest,
        "root",
        &[],
        ISSUED_AT,
        late + time::Duration::days(1),
        60,
    )
    .unwrap();
    v.install_crl(&fresh_root, "fresh").unwrap();
    let credential = v.validate(&peer("doctor"), late).unwrap();
    assert_eq!(credential.revocation()[0].status, "unchecked_stale_crl");
    assert_eq!(credential.revocation()[1].status, "good");
    // The root's CRL stale too: the root keeps the default hard-fail.
    v.install_crl(&short("root", 61), "short").unwrap();
    assert!(matches!(
        v.validate(&peer("doctor"), late),
        Err(HpkiRefusal::RevocationStale { .. })
    ));
}
