use super::*;
use std::collections::BTreeMap;
use x509_parser::der_parser::der::{Tag, parse_der};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::*;

const DOMAIN_VECTOR: &str = "30 34 30 32 06 06 28 81 85 42 00 01 31 28 31 26 30 24 A0 22 31 20 A0 0C 06 0A 2A 83 08 86 91 0F \
01 06 01 01 A2 10 0C 0E 4D 65 64 69 63 61 6C 20 44 6F 63 74 6F 72";

fn issued_at() -> OffsetDateTime {
    ::time::macros::datetime!(2025-04-01 09:00:00 UTC)
}

#[test]
fn hc_role_vector_is_byte_exact() {
    let expected = hex::decode(DOMAIN_VECTOR.replace(' ', "")).expect("vector is hex");
    assert_eq!(hc_role_extension_der(&["Medical Doctor"]), expected);
}

#[test]
fn test_policy_oids_round_trip_through_der() {
    for oid in [TEST_AUTH_POLICY_OID, TEST_SIGN_POLICY_OID, WRONG_POLICY_OID] {
        let content = oid_der_content(oid).expect("valid");
        assert_eq!(oid_string_from_der(&content).as_deref(), Some(oid));
    }
    assert_eq!(
        oid_der_content(TEST_AUTH_POLICY_OID).expect("valid"),
        [0x88, 0x37, 0x83, 0x08, 0x01, 0x01]
    );
    assert!(oid_der_content("x").is_none());
}

#[test]
fn hc_role_multi_is_sorted_set() {
    let der = hc_role_extension_der(&["Director of Hospital", "Medical Doctor"]);
    let same = hc_role_extension_der(&["Medical Doctor", "Director of Hospital"]);
    assert_eq!(der, same);
    assert_eq!(
        hc_roles(&der).expect("parses"),
        vec![
            "Medical Doctor".to_owned(),
            "Director of Hospital".to_owned()
        ]
    );
}

#[test]
fn malformed_hc_role_is_detected_by_a_strict_reader() {
    assert!(hc_roles(&pki::malformed_hc_role_der()).is_none());
}

/// A strict reader of the hcRole structure (test-side, independent of the writer).
fn hc_roles(ext_value: &[u8]) -> Option<Vec<String>> {
    let (rest, sda) = parse_der(ext_value).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let mut roles = Vec::new();
    for attr in sda.as_sequence().ok()? {
        let parts = attr.as_sequence().ok()?;
        if parts.first()?.as_oid().ok()?.to_id_string() != OID_HC_ACTOR {
            continue;
        }
        for actor_data in parts.get(1)?.as_set().ok()? {
            for actor in actor_data.as_set().ok()? {
                let actor = actor.as_sequence().ok()?;
                let coded_tagged = actor.first()?;
                if coded_tagged.header.tag() != Tag(0) {
                    return None;
                }
                let (_, coded) = parse_der(coded_tagged.as_slice().ok()?).ok()?;
                let mut scheme = None;
                let mut name = None;
                for member in coded.as_set().ok()? {
                    let (_, inner) = parse_der(member.as_slice().ok()?).ok()?;
                    match member.header.tag().0 {
                        0 => scheme = Some(inner.as_oid().ok()?.to_id_string()),
                        2 => name = Some(inner.as_str().ok()?.to_owned()),
                        _ => {}
                    }
                }
                if scheme? != OID_HC_ROLE_SCHEME {
                    return None;
                }
                roles.push(name?);
            }
        }
    }
    Some(roles)
}

fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base").to_owned();
                out.insert(rel, std::fs::read(&path).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).expect("PEM file");
    Pem::iter_from_buffer(&text)
        .map(|p| p.expect("valid PEM").contents)
        .collect()
}

fn cert_der(dir: &Path, rel: &str) -> Vec<u8> {
    pem_certs(&dir.join(rel)).remove(0)
}

fn policies(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::CertificatePolicies(p) => Some(
                p.iter()
                    .map(|i| oid_string_from_der(i.policy_id.as_bytes()).expect("valid OID"))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn sda(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_SUBJECT_DIRECTORY_ATTRIBUTES)
        .map(|e| {
            assert!(!e.critical, "2.5.29.9 must be non-critical");
            e.value.to_vec()
        })
}

fn check_cert(dir: &Path, manifest: &Manifest, card: &Card) {
    let der = cert_der(dir, &card.cert);
    let (rest, cert) = parse_x509_certificate(&der).expect("card cert parses");
    assert!(rest.is_empty());
    let name = card.name.as_str();
    let t = issued_at();

    // Subject.
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .expect("CN");
    assert_eq!(cn, card.common_name);
    assert!(cn.contains('\u{3000}'), "{name}: full-width space");
    let sn = cert
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    assert_eq!(sn, card.holder_id, "{name}: holder id");
    assert_eq!(hex::encode(cert.raw_serial()), card.serial);

    // Validity.
    let nb = cert.validity().not_before.to_datetime();
    let na = cert.validity().not_after.to_datetime();
    match name {
        "expired" => {
            assert_eq!(nb, pki::add_years(t, -6));
            assert_eq!(na, pki::add_years(t, -1));
        }
        "not-yet-valid" => {
            assert_eq!(nb, pki::add_years(t, 1));
            assert_eq!(na, pki::add_years(t, 6));
        }
        _ => {
            assert_eq!(nb, t, "{name}");
            assert_eq!(na, pki::add_years(t, 5), "{name}");
        }
    }

    // Key usage / EKU.
    let ku = cert.key_usage().expect("KU ok").expect("KU present");
    assert!(ku.critical);
    let bc = cert
        .basic_constraints()
        .expect("BC ok")
        .expect("BC present");
    assert!(!bc.value.ca);
    let eku = cert
        .extended_key_usage()
        .expect("EKU ok")
        .map(|e| e.value.clone());
    match name {
        "signing-cert" => {
            assert!(ku.value.non_repudiation() && !ku.value.digital_signature());
            assert!(eku.is_none());
        }
        "wrong-eku" => {
            assert!(ku.value.digital_signature());
            let eku = eku.expect("EKU");
            assert!(eku.email_protection && !eku.client_auth);
        }
        _ => {
            assert!(
                ku.value.digital_signature() && !ku.value.non_repudiation(),
                "{name}"
            );
            assert_eq!(ku.value.flags, 1, "{name}: digitalSignature only");
            let eku = eku.expect("EKU");
            assert!(
                eku.client_auth && !eku.email_protection && !eku.any,
                "{name}"
            );
        }
    }

    // Policy.
    let expected_policy = match name {
        "signing-cert" => TEST_SIGN_POLICY_OID,
        "wrong-policy" => WRONG_POLICY_OID,
        _ => TEST_AUTH_POLICY_OID,
    };
    assert_eq!(policies(&cert), vec![expected_policy.to_owned()], "{name}");

    // hcRole.
    match name {
        "no-hcrole" => assert!(sda(&cert).is_none()),
        "malformed-hcrole" => {
            let v = sda(&cert).expect("2.5.29.9 present");
            assert!(hc_roles(&v).is_none(), "malformed must not parse");
        }
        _ => {
            let v = sda(&cert).expect("2.5.29.9 present");
            assert_eq!(hc_roles(&v).expect("hcRole parses"), card.roles, "{name}");
        }
    }

    // Issuer and chain.
    let chain = pem_certs(&dir.join(&card.chain));
    assert_eq!(chain[0], der, "{name}: chain starts with the leaf");
    let ca = |n: &str| cert_der(dir, &manifest.ca(n).expect("CA").cert);
    match name {
        "self-signed" => {
            assert_eq!(chain.len(), 1);
            assert_eq!(cert.issuer(), cert.subject());
            cert.verify_signature(None).expect("self-signature");
        }
        "intermediate-missing" => {
            assert_eq!(chain.len(), 1, "only the leaf");
            let ca2 = ca("jma-ca-2");
            let (_, ca2) = parse_x509_certificate(&ca2).expect("CA 2");
            cert.verify_signature(Some(ca2.public_key()))
                .expect("signed by JMA CA 2");
        }
        "unknown-ca" => {
            let root = ca("unknown-root");
            assert_eq!(chain, vec![der.clone(), root.clone()]);
            let (_, root) = parse_x509_certificate(&root).expect("root");
            cert.verify_signature(Some(root.public_key()))
                .expect("signed by unknown root");
        }
        _ => {
            let jma = ca("jma-ca");
            assert_eq!(chain, vec![der.clone(), jma.clone()]);
            let (_, jma) = parse_x509_certificate(&jma).expect("JMA CA");
            cert.verify_signature(Some(jma.public_key()))
                .expect("signed by JMA CA");
            assert_eq!(cert.issuer(), jma.subject());
        }
    }

    // Signing certificate of good cards.
    if card.good {
        let sder = cert_der(dir, card.sign_cert.as_deref().expect("sign cert"));
        let (_, sc) = parse_x509_certificate(&sder).expect("sign cert parses");
        let ku = sc.key_usage().expect("KU").expect("KU");
        assert!(ku.value.non_repudiation() && !ku.value.digital_signature());
        assert!(sc.extended_key_usage().expect("EKU ok").is_none());
        assert_eq!(policies(&sc), vec![TEST_SIGN_POLICY_OID.to_owned()]);
        assert_eq!(
            hc_roles(&sda(&sc).expect("sda")).expect("roles"),
            card.roles
        );
    } else {
        assert!(card.sign_cert.is_none() && card.expect.is_some());
    }

    // PKCS#12 opens with the PIN and holds the key, the leaf and chain.pem's extra certs.
    let p12 = std::fs::read(dir.join(&card.p12)).expect("p12");
    let parsed = openssl::pkcs12::Pkcs12::from_der(&p12)
        .expect("p12 DER")
        .parse2(&card.pin)
        .expect("p12 opens with PIN");
    assert_eq!(parsed.cert.expect("cert").to_der().expect("der"), der);
    assert!(parsed.pkey.is_some());
    let extra = parsed.ca.map(|s| s.len()).unwrap_or(0);
    assert_eq!(extra, chain.len() - 1, "{name}: p12 CA certs");
    assert!(
        openssl::pkcs12::Pkcs12::from_der(&p12)
            .expect("p12 DER")
            .parse2("wrong")
            .is_err()
    );
}

#[test]
fn generate_is_deterministic_and_profiles_are_right() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let start = std::time::Instant::now();
    let ma = generate(&Options::new("test-seed", issued_at(), a.path())).expect("generate A");
    eprintln!("generate took {:?}", start.elapsed());
    let mb = generate(&Options::new("test-seed", issued_at(), b.path())).expect("generate B");
    assert_eq!(ma, mb);

    // Byte-identical except PKCS#12 (random salts).
    let fa = files(a.path());
    let fb = files(b.path());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    let mut compared = 0;
    for (path, bytes) in &fa {
        if path.extension().is_some_and(|e| e == "p12") {
            continue;
        }
        assert_eq!(Some(bytes), fb.get(path), "{} differs", path.display());
        compared += 1;
    }
    assert!(compared > 50, "compared {compared} files");

    // A different seed gives different keys.
    let c = tempfile::tempdir().expect("tempdir");
    let mc = generate(&Options::new("other-seed", issued_at(), c.path())).expect("generate C");
    assert_ne!(
        std::fs::read(a.path().join("ca/root.key")).expect("key"),
        std::fs::read(c.path().join("ca/root.key")).expect("key")
    );
    assert_ne!(
        ma.card("doctor").expect("doctor").serial,
        mc.card("doctor").expect("doctor").serial
    );

    let dir = a.path();
    let m = Manifest::load(dir).expect("manifest.json");
    assert_eq!(m, ma);
    check_manifest(&m);
    for card in &m.cards {
        check_cert(dir, &m, card);
    }
    check_cas_and_server(dir, &m);
    check_crls(dir, &m);
    check_csv(dir, &m);
    check_reissue(dir, &m);
}

fn check_manifest(m: &Manifest) {
    assert_eq!(m.issued_at, "2025-04-01T09:00:00Z");
    assert_eq!(m.trust.anchors, ["ca/root.pem"]);
    assert_eq!(m.trust.intermediates, ["ca/jma-ca.pem"]);
    assert_eq!(m.trust.crls, ["crl/root.crl", "crl/jma-ca.crl"]);
    let names: Vec<&str> = m.cards.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "doctor",
            "dentist",
            "pharmacist",
            "multi-role",
            "expired",
            "not-yet-valid",
            "revoked",
            "signing-cert",
            "wrong-eku",
            "no-hcrole",
            "malformed-hcrole",
            "unknown-ca",
            "self-signed",
            "intermediate-missing",
            "wrong-policy"
        ]
    );
    let expect = |n: &str| m.card(n).expect("card").expect.clone();
    assert_eq!(expect("doctor"), None);
    assert_eq!(expect("expired").as_deref(), Some("expired"));
    assert_eq!(expect("not-yet-valid").as_deref(), Some("not_yet_valid"));
    assert_eq!(expect("revoked").as_deref(), Some("revoked"));
    assert_eq!(expect("signing-cert").as_deref(), Some("wrong_key_usage"));
    assert_eq!(
        expect("wrong-eku").as_deref(),
        Some("wrong_extended_key_usage")
    );
    assert_eq!(expect("no-hcrole").as_deref(), Some("missing_hc_role"));
    assert_eq!(
        expect("malformed-hcrole").as_deref(),
        Some("malformed_hc_role")
    );
    assert_eq!(expect("unknown-ca").as_deref(), Some("unknown_issuer"));
    assert_eq!(expect("self-signed").as_deref(), Some("unknown_issuer"));
    assert_eq!(
        expect("intermediate-missing").as_deref(),
        Some("unknown_issuer")
    );
    assert_eq!(
        expect("wrong-policy").as_deref(),
        Some("policy_not_accepted")
    );
    let doctor = m.card("doctor").expect("doctor");
    assert_eq!(doctor.common_name, "日医\u{3000}太郎");
    assert_eq!(doctor.roles, ["Medical Doctor"]);
    assert_eq!(doctor.pin, "123456");
    assert_eq!(
        m.card("multi-role").expect("card").roles,
        ["Medical Doctor", "Director of Hospital"]
    );
    assert!(m.softhsm.is_none());
    assert!(m.cards.iter().all(|c| c.token_label.is_none()));
}

fn check_cas_and_server(dir: &Path, m: &Manifest) {
    let load = |n: &str| cert_der(dir, &m.ca(n).expect("CA").cert);
    let root_der = load("root");
    let jma_der = load("jma-ca");
    let (_, root) = parse_x509_certificate(&root_der).expect("root");
    let (_, jma) = parse_x509_certificate(&jma_der).expect("jma");
    root.verify_signature(None).expect("root self-signed");
    jma.verify_signature(Some(root.public_key()))
        .expect("JMA CA signed by root");
    let bc = jma.basic_constraints().expect("bc").expect("bc").value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = jma.key_usage().expect("ku").expect("ku").value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    assert!(jma.subject().to_string().contains("HPKI Test JMA CA"));
    assert_eq!(
        root.validity().not_after.to_datetime(),
        pki::add_years(issued_at(), 20)
    );
    assert_eq!(
        jma.validity().not_after.to_datetime(),
        pki::add_years(issued_at(), 10)
    );

    let tls_der = cert_der(dir, &m.server.ca);
    let (_, tls) = parse_x509_certificate(&tls_der).expect("tls root");
    let sder = cert_der(dir, &m.server.cert);
    let (_, server) = parse_x509_certificate(&sder).expect("server");
    server
        .verify_signature(Some(tls.public_key()))
        .expect("server signed by TLS root");
    let san = server
        .subject_alternative_name()
        .expect("san")
        .expect("san")
        .value
        .general_names
        .iter()
        .map(|g| format!("{g}"))
        .collect::<Vec<_>>();
    assert_eq!(san.len(), 3, "{san:?}");
    assert!(
        server
            .extended_key_usage()
            .expect("eku")
            .expect("eku")
            .value
            .server_auth
    );
    // The key matches the certificate.
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(dir.join(&m.server.key)).expect("server key"),
    )
    .expect("PKCS#8");
    let x = openssl::x509::X509::from_der(&sder).expect("x509");
    assert!(x.public_key().expect("pk").public_eq(&key));
}

fn check_crls(dir: &Path, m: &Manifest) {
    let load = |n: &str| cert_der(dir, &m.ca(n).expect("CA").cert);
    let jma_der = load("jma-ca");
    let (_, jma) = parse_x509_certificate(&jma_der).expect("jma");
    let crl_der = std::fs::read(dir.join("crl/jma-ca.crl")).expect("crl");
    let (_, crl) = parse_x509_crl(&crl_der).expect("CRL parses");
    crl.verify_signature(jma.public_key())
        .expect("CRL signed by JMA CA");
    assert_eq!(crl.issuer(), jma.subject());
    assert_eq!(crl.last_update().to_datetime(), issued_at());
    assert_eq!(
        crl.next_update().expect("nextUpdate").to_datetime(),
        pki::add_years(issued_at(), 10)
    );
    let revoked = m.card("revoked").expect("revoked card");
    let entries: Vec<_> = crl.iter_revoked_certificates().collect();
    assert_eq!(entries.len(), 3);
    let entry = entries
        .iter()
        .find(|e| hex::encode(e.raw_serial()) == revoked.serial)
        .expect("revoked serial listed");
    assert_eq!(entry.revocation_date.to_datetime(), issued_at());
    assert_eq!(
        entry.reason_code().map(|r| r.1),
        Some(x509_parser::x509::ReasonCode::KeyCompromise)
    );
    for good in m.cards.iter().filter(|c| c.good) {
        assert!(
            entries
                .iter()
                .all(|e| hex::encode(e.raw_serial()) != good.serial)
        );
    }

    let root_der = load("root");
    let (_, root) = parse_x509_certificate(&root_der).expect("root");
    let rcrl = std::fs::read(dir.join("crl/root.crl")).expect("root crl");
    let (_, rcrl) = parse_x509_crl(&rcrl).expect("root CRL parses");
    rcrl.verify_signature(root.public_key())
        .expect("root CRL signature");
    assert_eq!(rcrl.iter_revoked_certificates().count(), 0);

    let ca2_der = load("jma-ca-2");
    let (_, ca2) = parse_x509_certificate(&ca2_der).expect("ca2");
    let c2 = std::fs::read(dir.join("crl/jma-ca-2.crl")).expect("crl 2");
    let (_, c2) = parse_x509_crl(&c2).expect("CRL 2 parses");
    c2.verify_signature(ca2.public_key())
        .expect("CRL 2 signature");
}

fn check_csv(dir: &Path, m: &Manifest) {
    let text = std::fs::read_to_string(dir.join(&m.doctors_csv)).expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(DOCTORS_CSV_HEADER));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), m.cards.len());
    for (row, card) in rows.iter().zip(&m.cards) {
        assert_eq!(row.len(), 20);
        assert_eq!(Some(row[0].to_owned()), card.holder_id);
        assert_eq!(format!("{}\u{3000}{}", row[1], row[2]), card.common_name);
        assert!(["male", "female", "other", "unknown"].contains(&row[7]));
        assert!(["true", "false"].contains(&row[14]));
        assert_eq!(row[19], card.roles.join(";"));
        ::time::Date::parse(
            row[8],
            ::time::macros::format_description!("[year]-[month]-[day]"),
        )
        .expect("birthdate YYYY-MM-DD");
    }
    assert!(text.contains("岡山県"));
}

fn check_reissue(dir: &Path, m: &Manifest) {
    // Re-signing with the same inputs reproduces the generated root CRL byte for byte.
    let t = issued_at();
    let again = issue_crl_der(dir, m, "root", &[], t, pki::add_years(t, 10), 1).expect("reissue");
    assert_eq!(
        again,
        std::fs::read(dir.join("crl/root.crl")).expect("root crl")
    );

    // Revoke the doctor at run time, with a stale CRL.
    let now = t + Duration::days(3);
    let rev = Revocation::card(m, "doctor", now).expect("doctor revocation");
    let path =
        issue_crl(dir, m, "jma-ca", &[rev], now, now + Duration::hours(1), 2).expect("issue CRL");
    assert_eq!(path, dir.join("crl/jma-ca.crl"));
    let der = std::fs::read(&path).expect("crl");
    let (_, crl) = parse_x509_crl(&der).expect("parses");
    let jma = cert_der(dir, "ca/jma-ca.pem");
    let (_, jma) = parse_x509_certificate(&jma).expect("jma");
    crl.verify_signature(jma.public_key()).expect("signature");
    assert_eq!(crl.crl_number().map(|n| n.to_u64_digits()), Some(vec![2]));
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|e| hex::encode(e.raw_serial()))
        .collect();
    assert_eq!(serials, [m.card("doctor").expect("doctor").serial.clone()]);

    assert!(matches!(
        issue_crl_der(dir, m, "nope", &[], t, now, 1),
        Err(Error::UnknownCa(_))
    ));
    assert!(matches!(
        Revocation::card(m, "nope", t),
        Err(Error::UnknownCard(_))
    ));
    // nextUpdate before thisUpdate is an error, not a panic.
    assert!(issue_crl_der(dir, m, "root", &[], now, t, 1).is_err());
}

#[test]
fn large_crl_writes_a_usable_bench_pki() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = large_crl(dir.path(), "bench", issued_at(), 2000).expect("large crl");
    assert_eq!(l.entries, 2000);
    let root_der = pem_certs(&l.root).remove(0);
    let ica_der = pem_certs(&l.intermediate).remove(0);
    let (_, root) = parse_x509_certificate(&root_der).expect("root");
    let (_, ica) = parse_x509_certificate(&ica_der).expect("ica");
    ica.verify_signature(Some(root.public_key()))
        .expect("ica by root");
    let chain = pem_certs(&l.leaf_chain);
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], ica_der);
    let (_, leaf) = parse_x509_certificate(&chain[0]).expect("leaf");
    leaf.verify_signature(Some(ica.public_key()))
        .expect("leaf by ica");
    assert_eq!(hex::encode(leaf.raw_serial()), l.leaf_serial);
    assert_eq!(
        hc_roles(&sda(&leaf).expect("sda")).expect("roles"),
        ["Medical Doctor"]
    );
    assert_eq!(policies(&leaf), [TEST_AUTH_POLICY_OID]);
    let crl = std::fs::read(&l.crl).expect("crl");
    let (_, crl) = parse_x509_crl(&crl).expect("crl parses");
    crl.verify_signature(ica.public_key())
        .expect("crl signature");
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|e| hex::encode(e.raw_serial()))
        .collect();
    assert_eq!(serials.len(), 2000);
    assert!(!serials.contains(&l.leaf_serial));
    let rcrl = std::fs::read(&l.root_crl).expect("root crl");
    let (_, rcrl) = parse_x509_crl(&rcrl).expect("root crl parses");
    rcrl.verify_signature(root.public_key())
        .expect("root crl signature");
    assert!(l.leaf_key.is_file());
}

#[test]
fn softhsm_without_env_is_a_clear_error() {
    // Only meaningful when the test process was not given SOFTHSM2_CONF for this dir
    // (it cannot be, the dir is new).
    let Some(module) = default_softhsm_module() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new("s", issued_at(), dir.path());
    opts.softhsm = Some(SoftHsm { module });
    match generate(&opts) {
        Err(Error::SoftHsmConfEnv { expected, .. }) => {
            assert_eq!(expected, softhsm_conf_path(dir.path()).expect("path"));
            assert!(
                expected.is_file(),
                "conf written so the caller can point at it"
            );
            let text = std::fs::read_to_string(&expected).expect("conf");
            assert!(text.contains("objectstore.backend = file"));
        }
        other => panic!("expected SoftHsmConfEnv, got {other:?}"),
    }
    let mut bad = Options::new("s", issued_at(), dir.path());
    bad.softhsm = Some(SoftHsm {
        module: dir.path().join("missing.so"),
    });
    assert!(matches!(generate(&bad), Err(Error::SoftHsm { .. })));
}

#[test]
fn invalid_crl_next_update_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new("s", issued_at(), dir.path());
    opts.crl_next_update = Some(issued_at() - Duration::days(1));
    assert!(matches!(generate(&opts), Err(Error::Invalid(_))));
}
