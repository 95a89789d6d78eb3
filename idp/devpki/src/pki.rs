//! Key, serial, time and certificate-parameter helpers shared by the generators.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CrlDistributionPoint, CustomExtension,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256, SanType, SerialNumber,
};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use sha2::{Digest, Sha256};
use std::path::Path;
use time::{Duration, Month, OffsetDateTime, UtcOffset};

use crate::{Error, der};

/// One deterministic RSA-2048 key in the forms the generators need.
pub(crate) struct KeyMaterial {
    pub(crate) pkcs8_der: Vec<u8>,
    pub(crate) pkcs8_pem: String,
    pub(crate) keypair: KeyPair,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial([elided])")
    }
}

fn label_hash(domain: &str, seed: &str, label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(seed.as_bytes());
    h.update([0u8]);
    h.update(label.as_bytes());
    h.finalize().into()
}

/// RSA-2048 key from a ChaCha20 RNG seeded with SHA-256("idp-devpki/key" 0x00 seed 0x00 label).
pub(crate) fn derive_key(seed: &str, label: &str) -> Result<KeyMaterial, Error> {
    let mut rng = ChaCha20Rng::from_seed(label_hash("idp-devpki/key", seed, label));
    let key = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| Error::Key {
        label: label.to_owned(),
        message: e.to_string(),
    })?;
    let key_err = |e: rsa::pkcs8::Error| Error::Key {
        label: label.to_owned(),
        message: e.to_string(),
    };
    let pkcs8_der = key.to_pkcs8_der().map_err(key_err)?.as_bytes().to_vec();
    let pkcs8_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(key_err)?
        .to_string();
    let keypair = KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8_pem, &PKCS_RSA_SHA256)
        .map_err(|e| Error::cert(label, e))?;
    Ok(KeyMaterial {
        pkcs8_der,
        pkcs8_pem,
        keypair,
    })
}

/// P-256 key whose scalar is SHA-256("idp-devpki/ec-key" 0x00 seed 0x00 label) reduced
/// modulo the group order: the TLS server key (ECDSA handshakes cost far less CPU than
/// RSA-2048 ones, and TLS servers are free to choose; the cards stay RSA as HPKI issues them).
pub(crate) fn derive_ec_key(seed: &str, label: &str) -> Result<KeyMaterial, Error> {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey, EcPoint};
    use openssl::nid::Nid;
    let key_err = |e: openssl::error::ErrorStack| Error::Key {
        label: label.to_owned(),
        message: e.to_string(),
    };
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(key_err)?;
    let mut ctx = BigNumContext::new().map_err(key_err)?;
    let mut order = BigNum::new().map_err(key_err)?;
    group.order(&mut order, &mut ctx).map_err(key_err)?;
    let hash =
        BigNum::from_slice(&label_hash("idp-devpki/ec-key", seed, label)).map_err(key_err)?;
    let mut scalar = BigNum::new().map_err(key_err)?;
    scalar.nnmod(&hash, &order, &mut ctx).map_err(key_err)?;
    let mut public = EcPoint::new(&group).map_err(key_err)?;
    public
        .mul_generator2(&group, &scalar, &mut ctx)
        .map_err(key_err)?;
    let ec = EcKey::from_private_components(&group, &scalar, &public).map_err(key_err)?;
    let pkey = openssl::pkey::PKey::from_ec_key(ec).map_err(key_err)?;
    let pkcs8_der = pkey.private_key_to_pkcs8().map_err(key_err)?;
    let pkcs8_pem =
        String::from_utf8(pkey.private_key_to_pem_pkcs8().map_err(key_err)?).map_err(|e| {
            Error::Key {
                label: label.to_owned(),
                message: e.to_string(),
            }
        })?;
    let keypair = KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8_pem, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::cert(label, e))?;
    Ok(KeyMaterial {
        pkcs8_der,
        pkcs8_pem,
        keypair,
    })
}

/// Loads a PKCS#8 PEM RSA key written earlier (for re-signing CRLs).
pub(crate) fn load_key(path: &Path, pem: &str) -> Result<KeyPair, Error> {
    KeyPair::from_pkcs8_pem_and_sign_algo(pem, &PKCS_RSA_SHA256).map_err(|e| Error::Cert {
        what: format!("loading CA key {}", path.display()),
        message: e.to_string(),
    })
}

/// Positive 16-byte serial number derived from the seed and a label.
pub(crate) fn serial(seed: &str, label: &str) -> Vec<u8> {
    let h = label_hash("idp-devpki/serial", seed, label);
    let mut s = h[..16].to_vec();
    // Positive and exactly 16 significant bytes.
    s[0] = (s[0] & 0x7F) | 0x40;
    s
}

/// issued_at normalised to UTC with whole seconds (what X.509 can carry).
pub(crate) fn normalise(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t.to_offset(UtcOffset::UTC))
}

/// Calendar-year arithmetic; 29 February maps to 28 February in non-leap years.
pub(crate) fn add_years(t: OffsetDateTime, years: i32) -> OffsetDateTime {
    let year = t.year().saturating_add(years);
    match t.replace_year(year) {
        Ok(v) => v,
        Err(_) => t
            .replace_day(28)
            .and_then(|v| v.replace_month(Month::February))
            .and_then(|v| v.replace_year(year))
            .unwrap_or(t + Duration::days(365 * i64::from(years))),
    }
}

pub(crate) fn printable(what: &str, s: &str) -> Result<DnValue, Error> {
    PrintableString::try_from(s)
        .map(DnValue::PrintableString)
        .map_err(|e| Error::cert(what, e))
}

pub(crate) fn dn(
    what: &str,
    country: bool,
    o: Option<&str>,
    ou: Option<&str>,
    cn: &str,
    serial_number: Option<&str>,
) -> Result<DistinguishedName, Error> {
    let mut d = DistinguishedName::new();
    if country {
        d.push(DnType::CountryName, printable(what, "JP")?);
    }
    if let Some(o) = o {
        d.push(DnType::OrganizationName, o);
    }
    if let Some(ou) = ou {
        d.push(DnType::OrganizationalUnitName, ou);
    }
    d.push(DnType::CommonName, cn);
    if let Some(sn) = serial_number {
        d.push(DnType::CustomDnType(vec![2, 5, 4, 5]), printable(what, sn)?);
    }
    Ok(d)
}

/// CA certificate parameters: keyCertSign + cRLSign, AKI/SKI, basicConstraints critical.
pub(crate) fn ca_params(
    name: DistinguishedName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: Vec<u8>,
    path_len: Option<u8>,
    crl_dp: Option<&str>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = name;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from(serial));
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = true;
    if let Some(url) = crl_dp {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_owned()],
        }];
    }
    p
}

/// What goes into subjectDirectoryAttributes.
#[derive(Debug, Clone)]
pub(crate) enum HcRoleExt {
    Roles(Vec<String>),
    Malformed,
    Absent,
}

/// An end-entity profile.
#[derive(Debug, Clone)]
pub(crate) struct LeafProfile {
    pub(crate) key_usages: Vec<KeyUsagePurpose>,
    pub(crate) ekus: Vec<ExtendedKeyUsagePurpose>,
    pub(crate) policy: Option<String>,
    pub(crate) hc_role: HcRoleExt,
    pub(crate) crl_dp: Option<String>,
    pub(crate) sans: Vec<SanType>,
}

/// End-entity parameters: AKI, SKI, basicConstraints CA:false, KU (critical), EKU, CRL DP,
/// certificatePolicies (non-critical) and subjectDirectoryAttributes (non-critical).
pub(crate) fn leaf_params(
    what: &str,
    name: DistinguishedName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: Vec<u8>,
    profile: &LeafProfile,
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from(serial));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = profile.key_usages.clone();
    p.extended_key_usages = profile.ekus.clone();
    p.use_authority_key_identifier_extension = true;
    p.subject_alt_names = profile.sans.clone();
    if let Some(url) = &profile.crl_dp {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    if let Some(policy) = &profile.policy {
        let arcs = der::parse_oid(policy).ok_or_else(|| Error::Cert {
            what: what.to_owned(),
            message: format!("invalid policy OID {policy:?}"),
        })?;
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            certificate_policies_der(&arcs),
        ));
    }
    let sda = match &profile.hc_role {
        HcRoleExt::Roles(roles) => {
            let refs: Vec<&str> = roles.iter().map(String::as_str).collect();
            Some(crate::hc_role_extension_der(&refs))
        }
        HcRoleExt::Malformed => Some(malformed_hc_role_der()),
        HcRoleExt::Absent => None,
    };
    if let Some(value) = sda {
        p.custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 9], value));
    }
    Ok(p)
}

/// certificatePolicies ::= SEQUENCE OF PolicyInformation { policyIdentifier } (no qualifiers).
pub(crate) fn certificate_policies_der(policy: &[u64]) -> Vec<u8> {
    der::sequence(&[der::sequence(&[der::oid(policy)])])
}

/// subjectDirectoryAttributes whose HCActor's codingSchemeReference is an INTEGER (1)
/// instead of an OBJECT IDENTIFIER. Well-formed DER (so the certificate parses) but not a
/// valid HCActor.
pub(crate) fn malformed_hc_role_der() -> Vec<u8> {
    let coded = der::tlv(
        der::TAG_SET,
        &der::cat(&[
            der::explicit(0, &der::tlv(der::TAG_INTEGER, &[0x01])),
            der::explicit(2, &der::utf8("Medical Doctor")),
        ]),
    );
    let actor = der::sequence(&[der::explicit(0, &coded)]);
    let actor_data = der::set_of(vec![actor]);
    let values = der::set_of(vec![actor_data]);
    let attribute = der::sequence(&[der::oid(crate::HC_ACTOR_ARCS), values]);
    der::sequence(&[attribute])
}

/// A CA: its certificate plus an rcgen issuer owning the key.
pub(crate) struct Ca {
    pub(crate) name: &'static str,
    pub(crate) issuer: CertifiedIssuer<'static, KeyPair>,
    pub(crate) key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("name", &self.name).finish()
    }
}

impl Ca {
    pub(crate) fn der(&self) -> &[u8] {
        self.issuer.der()
    }
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }
}

pub(crate) fn self_signed_ca(
    name: &'static str,
    params: CertificateParams,
    key: KeyMaterial,
) -> Result<Ca, Error> {
    let issuer =
        CertifiedIssuer::self_signed(params, key.keypair).map_err(|e| Error::cert(name, e))?;
    Ok(Ca {
        name,
        issuer,
        key_pem: key.pkcs8_pem,
    })
}

pub(crate) fn sub_ca(
    name: &'static str,
    params: CertificateParams,
    key: KeyMaterial,
    parent: &Ca,
) -> Result<Ca, Error> {
    let issuer = CertifiedIssuer::signed_by(params, key.keypair, &parent.issuer)
        .map_err(|e| Error::cert(name, e))?;
    Ok(Ca {
        name,
        issuer,
        key_pem: key.pkcs8_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_years_handles_leap_day() {
        let t = time::macros::datetime!(2024-02-29 12:00 UTC);
        assert_eq!(
            add_years(t, 1),
            time::macros::datetime!(2025-02-28 12:00 UTC)
        );
        assert_eq!(
            add_years(t, 4),
            time::macros::datetime!(2028-02-29 12:00 UTC)
        );
    }

    #[test]
    fn serial_is_positive_16_bytes() {
        let s = serial("seed", "x");
        assert_eq!(s.len(), 16);
        assert!(s[0] & 0x80 == 0 && s[0] != 0);
        assert_eq!(s, serial("seed", "x"));
        assert_ne!(s, serial("seed", "y"));
    }
}
