//! HPKI certificate validation: [`PeerCertificate`] in, [`HpkiCredential`] out.
//!
//! Only [`HpkiValidator::validate`] builds an `HpkiCredential`, and it does so only after
//! every check of DESIGN.md §3 passed, in this order:
//!
//! 1. size limits, then the chain to a configured anchor (rustls-webpki; client-sent
//!    intermediates are candidates for path building, never anchors);
//! 2. validity of every certificate on the path at the injected `now`;
//! 3. the authentication profile of the leaf: keyUsage digitalSignature and not
//!    nonRepudiation (a signing certificate is refused at login), extendedKeyUsage
//!    clientAuth present — webpki alone accepts a leaf without EKU and ignores keyUsage;
//! 4. certificate policy OIDs, when configured;
//! 5. revocation of every non-anchor certificate on the path from its issuer's CRL;
//! 6. hcRole from subjectDirectoryAttributes.
//!
//! Each refusal is a distinct [`HpkiRefusal`].

pub mod crl;
mod der;
pub mod hc_role;
pub mod trust;

use std::collections::HashMap;
use std::time::Duration;

use idp_vocabulary::hpki::HcRole;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::oid_registry::asn1_rs::oid;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

pub use crl::{CrlError, CrlStatus, Installed, IssuerCrl, Revocation, RevocationStore};
pub use der::DerError;
pub use hc_role::{HcActor, MalformedHcRole};
pub use trust::{CaCertificate, TrustError, TrustStore};

/// The largest certificate we parse (real HPKI certificates are under 2 KiB).
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// The most certificates a client may send (leaf plus intermediates).
pub const MAX_CHAIN_LENGTH: usize = 6;

/// Signature algorithms accepted on certificate chains.
static SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// The certificates a client presented, leaf first, exactly as received. Nothing about
/// them is trusted until [`HpkiValidator::validate`] turns them into an [`HpkiCredential`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl PeerCertificate {
    /// Wraps a presented chain (leaf first). Empty, over-long or oversized chains are
    /// refused before any parsing.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Result<Self, HpkiRefusal> {
        if chain.len() > MAX_CHAIN_LENGTH {
            return Err(HpkiRefusal::TooLarge);
        }
        if chain
            .iter()
            .any(|c| c.as_ref().len() > MAX_CERTIFICATE_BYTES)
        {
            return Err(HpkiRefusal::TooLarge);
        }
        let mut chain = chain.into_iter();
        let end_entity = chain.next().ok_or(HpkiRefusal::NoCertificate)?;
        Ok(Self {
            end_entity,
            intermediates: chain.collect(),
        })
    }

    pub fn end_entity(&self) -> &CertificateDer<'static> {
        &self.end_entity
    }

    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// SHA-256 over the leaf's DER: the key for per-certificate rate limits.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.end_entity.as_ref()).into()
    }
}

/// Why a certificate was refused. Each failure has its own variant and [`code`](Self::code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpkiRefusal {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("the certificate chain is too long or a certificate is too large")]
    TooLarge,
    #[error("the certificate is not valid DER: {0}")]
    Malformed(String),
    #[error("the certificate does not chain to a configured HPKI trust anchor")]
    UnknownIssuer,
    #[error("a signature on the certificate chain does not verify")]
    BadSignature,
    #[error("the certificate chain is not acceptable: {0}")]
    ChainInvalid(String),
    #[error("the certificate (or its issuer) expired")]
    Expired,
    #[error("the certificate (or its issuer) is not valid yet")]
    NotYetValid,
    #[error("keyUsage is not that of an HPKI authentication certificate")]
    WrongKeyUsage,
    #[error("extendedKeyUsage does not include clientAuth")]
    WrongExtendedKeyUsage,
    #[error("none of the certificate policies is accepted")]
    PolicyNotAccepted,
    #[error("the certificate {serial} was revoked at {revoked_at} ({reason})")]
    Revoked {
        serial: String,
        revoked_at: OffsetDateTime,
        reason: String,
    },
    #[error("no CRL is available for {issuer}")]
    RevocationUnavailable { issuer: String },
    #[error("the CRL of {issuer} is past its nextUpdate")]
    RevocationStale { issuer: String },
    #[error("the certificate carries no HPKI hcRole")]
    MissingHcRole,
    #[error("the hcRole attribute is malformed: {0}")]
    MalformedHcRole(DerError),
}

impl HpkiRefusal {
    /// A stable, machine-readable code (logs, audit, metrics, test vectors).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed_certificate",
            Self::UnknownIssuer => "unknown_issuer",
            Self::BadSignature => "bad_signature",
            Self::ChainInvalid(_) => "chain_invalid",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongKeyUsage => "wrong_key_usage",
            Self::WrongExtendedKeyUsage => "wrong_extended_key_usage",
            Self::PolicyNotAccepted => "policy_not_accepted",
            Self::Revoked { .. } => "revoked",
            Self::RevocationUnavailable { .. } => "revocation_unavailable",
            Self::RevocationStale { .. } => "revocation_stale",
            Self::MissingHcRole => "missing_hc_role",
            Self::MalformedHcRole(_) => "malformed_hc_role",
        }
    }

    /// Whether the certificate provably comes from a configured HPKI CA (its chain
    /// verified), so that the refusal can be shown to the doctor on a page. Refusals
    /// where this is false end the TLS handshake instead: nothing without a verifiable
    /// chain completes one (DESIGN.md §3).
    pub fn issued_by_trusted_ca(&self) -> bool {
        !matches!(
            self,
            Self::NoCertificate
                | Self::TooLarge
                | Self::Malformed(_)
                | Self::UnknownIssuer
                | Self::BadSignature
                | Self::ChainInvalid(_)
        )
    }
}

/// What to do when an issuer's CRL is missing or past nextUpdate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RevocationFailure {
    /// Refuse the login (the default: fail closed).
    #[default]
    HardFail,
    /// Accept, recording that revocation could not be checked.
    SoftFail,
}

/// Revocation policy for one issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevocationPolicy {
    pub when_missing: RevocationFailure,
    pub when_stale: RevocationFailure,
}

/// What the validator requires beyond the chain.
#[derive(Clone, Debug, Default)]
pub struct ValidationPolicy {
    /// When non-empty, the leaf must assert at least one of these policy OIDs.
    pub accepted_policies: Vec<String>,
    /// Revocation policy for issuers without an override.
    pub revocation: RevocationPolicy,
    /// Per-issuer overrides, keyed by the DER of the issuer's Name.
    pub revocation_overrides: HashMap<Vec<u8>, RevocationPolicy>,
}

/// How the revocation status of one certificate was established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvidence {
    /// The subject of the checked certificate.
    pub subject: String,
    pub issuer: String,
    /// The CRL that vouched, or `None` when soft-fail let the certificate through.
    pub crl_number: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub crl_this_update: Option<OffsetDateTime>,
    pub crl_source: Option<String>,
    /// `good`, `unchecked_missing_crl` or `unchecked_stale_crl`.
    pub status: String,
}

/// A card certificate that passed every check. Only [`HpkiValidator::validate`] makes one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HpkiCredential {
    holder_id: String,
    subject: String,
    common_name: Option<String>,
    issuer: String,
    serial: String,
    #[serde(with = "time::serde::rfc3339")]
    not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
    actors: Vec<HcActor>,
    fingerprint: String,
    revocation: Vec<RevocationEvidence>,
    #[serde(with = "time::serde::rfc3339")]
    validated_at: OffsetDateTime,
}

impl HpkiCredential {
    /// The card holder's identifier: the subject's serialNumber attribute (2.5.4.5), or,
    /// when absent, `dn:` and the SHA-256 of issuer and subject Names. Doctor records are
    /// bound to this value.
    pub fn holder_id(&self) -> &str {
        &self.holder_id
    }

    /// The subject distinguished name (RFC 4514, UTF-8).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject commonName (often the kanji name with a full-width space).
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The issuing CA's distinguished name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The certificate serial number, colon-free lower-case hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Every HCActor of the certificate, in order.
    pub fn actors(&self) -> &[HcActor] {
        &self.actors
    }

    /// The roles of the Japanese hcRole scheme, in certificate order (at least one).
    pub fn roles(&self) -> Vec<HcRole> {
        self.actors.iter().filter_map(HcActor::role).collect()
    }

    /// SHA-256 of the certificate DER, lower-case hex (`x5t#S256` is its base64url form).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Which CRL vouched for each non-anchor certificate of the path.
    pub fn revocation(&self) -> &[RevocationEvidence] {
        &self.revocation
    }

    /// The `now` at which the checks passed.
    pub fn validated_at(&self) -> OffsetDateTime {
        self.validated_at
    }
}

/// Validates presented card certificates against the configured trust and CRLs.
#[derive(Debug)]
pub struct HpkiValidator {
    trust: TrustStore,
    policy: ValidationPolicy,
    crls: RevocationStore,
}

impl HpkiValidator {
    pub fn new(trust: TrustStore, policy: ValidationPolicy) -> Self {
        Self {
            trust,
            policy,
            crls: RevocationStore::default(),
        }
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// The CRLs in force; [`RevocationStore::install`] replaces one at run time.
    pub fn crls(&self) -> &RevocationStore {
        &self.crls
    }

    /// Parses and verifies a CRL against the configured CAs and puts it in force.
    pub fn install_crl(&self, der: &[u8], source: &str) -> Result<Installed, CrlError> {
        self.crls
            .install(IssuerCrl::parse_and_verify(der, self.trust.cas(), source)?)
    }

    /// Runs every check of DESIGN.md §3 at `now`.
    pub fn validate(
        &self,
        peer: &PeerCertificate,
        now: OffsetDateTime,
    ) -> Result<HpkiCredential, HpkiRefusal> {
        let (rest, leaf) = X509Certificate::from_der(peer.end_entity.as_ref())
            .map_err(|e| HpkiRefusal::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(HpkiRefusal::Malformed("trailing data".into()));
        }
        let end_entity = EndEntityCert::try_from(&peer.end_entity)
            .map_err(|e| HpkiRefusal::Malformed(format!("{e:?}")))?;

        // 1-2. Chain and validity. Candidates: what the client sent, then what we vouch for.
        let mut candidates = peer.intermediates.clone();
        candidates.extend(self.trust.intermediates().iter().cloned());
        let verify_at = |at: UnixTime| {
            end_entity
                .verify_for_usage(
                    SIGNATURE_ALGORITHMS,
                    self.trust.anchors(),
                    &candidates,
                    at,
                    AnyUsage,
                    None,
                    None,
                )
                .map(|path| {
                    path.intermediate_certificates()
                        .map(|cert| cert.der().into_owned())
                        .collect::<Vec<_>>()
                })
        };
        let path = match verify_at(unix_time(now)) {
            Ok(path) => path,
            Err(
                error @ (webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }),
            ) => {
                // Tell "expired card of a trusted CA" from "unknown certificate": check the
                // chain at the validity boundaries of the leaf and of the candidate CAs (one
                // of them lies inside every validity period of a path, if any does). Only a
                // chain that verifies at some such moment is reported as expired or not yet
                // valid; the refusal stands either way.
                let verified_at_some_time = validity_boundaries(&peer.end_entity, &candidates)
                    .into_iter()
                    .any(|at| verify_at(at).is_ok());
                return Err(match (verified_at_some_time, error) {
                    (true, webpki::Error::CertExpired { .. }) => HpkiRefusal::Expired,
                    (true, _) => HpkiRefusal::NotYetValid,
                    (false, _) => HpkiRefusal::UnknownIssuer,
                });
            }
            Err(other) => return Err(map_chain_error(other)),
        };

        // 3. The authentication profile.
        check_key_usage(&leaf)?;
        check_extended_key_usage(&leaf)?;

        // 4. Certificate policies.
        if !self.policy.accepted_policies.is_empty()
            && !asserts_any_policy(&leaf, &self.policy.accepted_policies)?
        {
            return Err(HpkiRefusal::PolicyNotAccepted);
        }

        // 5. Revocation of the leaf and every intermediate on the path.
        let mut revocation = Vec::with_capacity(1 + path.len());
        revocation.push(self.check_revocation(&leaf, now)?);
        for der in &path {
            let (_, cert) = X509Certificate::from_der(der.as_ref())
                .map_err(|e| HpkiRefusal::Malformed(e.to_string()))?;
            check_intermediate_eku(&cert)?;
            revocation.push(self.check_revocation(&cert, now)?);
        }

        // 6. hcRole.
        let actors = match leaf
            .get_extension_unique(&oid!(2.5.29.9))
            .map_err(|e| HpkiRefusal::Malformed(e.to_string()))?
        {
            Some(ext) => hc_role::parse_subject_directory_attributes(ext.value)
                .map_err(|MalformedHcRole(e)| HpkiRefusal::MalformedHcRole(e))?,
            None => return Err(HpkiRefusal::MissingHcRole),
        };
        if !actors.iter().any(|actor| actor.role().is_some()) {
            return Err(HpkiRefusal::MissingHcRole);
        }

        let subject = leaf.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let holder_id = subject
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .next()
            .and_then(|attr| attr.as_str().ok())
            .filter(|value| !value.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let mut hash = Sha256::new();
                hash.update(leaf.issuer().as_raw());
                hash.update(subject.as_raw());
                format!("dn:{}", hex::encode(hash.finalize()))
            });
        Ok(HpkiCredential {
            holder_id,
            subject: subject.to_string(),
            common_name,
            issuer: leaf.issuer().to_string(),
            serial: hex::encode(leaf.raw_serial()),
            not_before: leaf.validity().not_before.to_datetime(),
            not_after: leaf.validity().not_after.to_datetime(),
            actors,
            fingerprint: hex::encode(peer.fingerprint()),
            revocation,
            validated_at: now,
        })
    }

    fn check_revocation(
        &self,
        cert: &X509Certificate<'_>,
        now: OffsetDateTime,
    ) -> Result<RevocationEvidence, HpkiRefusal> {
        let issuer_raw = cert.issuer().as_raw();
        let issuer = cert.issuer().to_string();
        let policy = self
            .policy
            .revocation_overrides
            .get(issuer_raw)
            .copied()
            .unwrap_or(self.policy.revocation);
        let evidence = |status: &str, crl: Option<&IssuerCrl>| RevocationEvidence {
            subject: cert.subject().to_string(),
            issuer: issuer.clone(),
            crl_number: crl.and_then(IssuerCrl::number),
            crl_this_update: crl.map(IssuerCrl::this_update),
            crl_source: crl.map(|c| c.source().to_owned()),
            status: status.to_owned(),
        };
        let Some(crl) = self.crls.for_issuer(issuer_raw) else {
            return match policy.when_missing {
                RevocationFailure::HardFail => Err(HpkiRefusal::RevocationUnavailable { issuer }),
                RevocationFailure::SoftFail => Ok(evidence("unchecked_missing_crl", None)),
            };
        };
        if let Some(revoked) = crl.revocation(cert.raw_serial()) {
            return Err(HpkiRefusal::Revoked {
                serial: hex::encode(cert.raw_serial()),
                revoked_at: revoked.revoked_at,
                reason: revoked
                    .reason
                    .clone()
                    .unwrap_or_else(|| "unspecified".into()),
            });
        }
        if crl.is_stale(now) || crl.this_update() > now {
            return match policy.when_stale {
                RevocationFailure::HardFail => Err(HpkiRefusal::RevocationStale { issuer }),
                RevocationFailure::SoftFail => Ok(evidence("unchecked_stale_crl", Some(&crl))),
            };
        }
        Ok(evidence("good", Some(&crl)))
    }
}

/// Path building asks this about every certificate's EKU. The leaf's profile is checked
/// separately ([`check_extended_key_usage`]: webpki would accept a leaf without EKU), and
/// so are intermediates ([`check_intermediate_eku`]); here we only require that the
/// extension is well-formed.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// An intermediate that restricts EKU must allow clientAuth (or any purpose).
fn check_intermediate_eku(cert: &X509Certificate<'_>) -> Result<(), HpkiRefusal> {
    match cert
        .extended_key_usage()
        .map_err(|e| HpkiRefusal::Malformed(e.to_string()))?
    {
        Some(eku) if !(eku.value.client_auth || eku.value.any) => {
            Err(HpkiRefusal::WrongExtendedKeyUsage)
        }
        _ => Ok(()),
    }
}

/// Chain errors other than validity times (those are told apart in `validate`).
fn map_chain_error(error: webpki::Error) -> HpkiRefusal {
    match error {
        webpki::Error::UnknownIssuer => HpkiRefusal::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => HpkiRefusal::BadSignature,
        webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
            HpkiRefusal::Malformed(format!("{error:?}"))
        }
        other => HpkiRefusal::ChainInvalid(format!("{other:?}")),
    }
}

fn check_key_usage(leaf: &X509Certificate<'_>) -> Result<(), HpkiRefusal> {
    let usage = leaf
        .key_usage()
        .map_err(|e| HpkiRefusal::Malformed(e.to_string()))?
        .ok_or(HpkiRefusal::WrongKeyUsage)?;
    let ku = usage.value;
    // The authentication certificate signs the TLS handshake: digitalSignature. A signing
    // (署名用) certificate carries nonRepudiation and must never be used to log in.
    if !ku.digital_signature() || ku.non_repudiation() || ku.key_cert_sign() || ku.crl_sign() {
        return Err(HpkiRefusal::WrongKeyUsage);
    }
    Ok(())
}

fn check_extended_key_usage(leaf: &X509Certificate<'_>) -> Result<(), HpkiRefusal> {
    let eku = leaf
        .extended_key_usage()
        .map_err(|e| HpkiRefusal::Malformed(e.to_string()))?
        .ok_or(HpkiRefusal::WrongExtendedKeyUsage)?;
    if eku.value.client_auth {
        Ok(())
    } else {
        Err(HpkiRefusal::WrongExtendedKeyUsage)
    }
}

/// Policy OIDs are compared in our own dotted decoding: x509-parser renders OIDs under
/// the `2.` arc with a second component of 40 or more incorrectly.
fn asserts_any_policy(
    leaf: &X509Certificate<'_>,
    accepted: &[String],
) -> Result<bool, HpkiRefusal> {
    for ext in leaf.extensions() {
        if let ParsedExtension::CertificatePolicies(policies) = ext.parsed_extension() {
            return Ok(policies
                .iter()
                .filter_map(|p| der::oid_to_string(p.policy_id.as_bytes()).ok())
                .any(|id| accepted.contains(&id)));
        }
    }
    Ok(false)
}

/// notBefore and notAfter of the leaf and every candidate intermediate.
fn validity_boundaries(
    leaf: &CertificateDer<'_>,
    candidates: &[CertificateDer<'_>],
) -> Vec<UnixTime> {
    let mut times = Vec::new();
    for der in std::iter::once(leaf).chain(candidates) {
        if let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) {
            times.push(unix_time(cert.validity().not_before.to_datetime()));
            times.push(unix_time(cert.validity().not_after.to_datetime()));
        }
    }
    times
}

fn unix_time(at: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(at.unix_timestamp()).unwrap_or(0),
    ))
}
