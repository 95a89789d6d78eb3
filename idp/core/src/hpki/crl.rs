//! Certificate revocation lists: parsed and signature-checked once when loaded, indexed
//! by serial number so that a lookup costs the same for ten entries or a million, and
//! swapped atomically so that logins never wait for a reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_X509_EXT_DELTA_CRL_INDICATOR, OID_X509_EXT_ISSUER_DISTRIBUTION_POINT,
};
use x509_parser::prelude::{FromDer, ParsedExtension};
use x509_parser::revocation_list::CertificateRevocationList;

use super::trust::CaCertificate;

/// Why a CRL was not installed. The previous CRL of the issuer, if any, stays in force.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("not a DER CRL: {0}")]
    Malformed(String),
    #[error("CRL issuer {0} is not a configured CA")]
    UnknownIssuer(String),
    #[error("CRL signature does not verify with the key of {0}")]
    BadSignature(String),
    #[error("CA {0} is not allowed to sign CRLs (keyUsage lacks cRLSign)")]
    NotCrlSigner(String),
    #[error("unsupported CRL: {0}")]
    Unsupported(&'static str),
    #[error("CRL for {issuer} is older than the one in force (number {current} > {offered})")]
    Rollback {
        issuer: String,
        current: String,
        offered: String,
    },
}

/// One revoked serial number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revocation {
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 §5.3.1 reason, when the entry gives one.
    pub reason: Option<String>,
}

/// A verified CRL of one issuer.
#[derive(Debug)]
pub struct IssuerCrl {
    issuer_raw: Vec<u8>,
    issuer: String,
    number: Option<Vec<u8>>,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    revoked: HashMap<Vec<u8>, Revocation>,
    source: String,
}

impl IssuerCrl {
    /// Parses `der`, finds its issuer among `cas`, and checks the signature with that CA's
    /// key. Delta and indirect CRLs are refused: we only rely on complete CRLs.
    pub fn parse_and_verify(
        der: &[u8],
        cas: &[CaCertificate],
        source: &str,
    ) -> Result<Self, CrlError> {
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlError::Malformed("trailing data".into()));
        }
        let issuer_raw = crl.issuer().as_raw().to_vec();
        let issuer = crl.issuer().to_string();
        let ca = cas
            .iter()
            .find(|ca| ca.subject_raw() == issuer_raw.as_slice())
            .ok_or_else(|| CrlError::UnknownIssuer(issuer.clone()))?;
        if !ca.may_sign_crls() {
            return Err(CrlError::NotCrlSigner(issuer));
        }
        crl.verify_signature(ca.parsed().public_key())
            .map_err(|_| CrlError::BadSignature(issuer.clone()))?;
        for ext in crl.extensions() {
            if ext.oid == OID_X509_EXT_DELTA_CRL_INDICATOR {
                return Err(CrlError::Unsupported("delta CRL"));
            }
            if ext.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT {
                if let ParsedExtension::IssuingDistributionPoint(idp) = ext.parsed_extension()
                    && (idp.indirect_crl || idp.only_some_reasons.is_some())
                {
                    return Err(CrlError::Unsupported("indirect or partitioned CRL"));
                }
            } else if ext.critical
                && matches!(
                    ext.parsed_extension(),
                    ParsedExtension::UnsupportedExtension { .. }
                )
            {
                return Err(CrlError::Unsupported("unknown critical CRL extension"));
            }
        }
        let mut revoked = HashMap::new();
        for entry in crl.iter_revoked_certificates() {
            let reason = entry
                .reason_code()
                .map(|(_, code)| reason_name(code.0).to_owned());
            revoked.insert(
                entry.raw_serial().to_vec(),
                Revocation {
                    revoked_at: entry.revocation_date.to_datetime(),
                    reason,
                },
            );
        }
        Ok(Self {
            issuer_raw,
            issuer,
            number: crl.crl_number().map(|n| n.to_bytes_be()),
            this_update: crl.last_update().to_datetime(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            revoked,
            source: source.to_owned(),
        })
    }

    /// The issuer's distinguished name (RFC 4514).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The DER of the issuer's Name.
    pub fn issuer_raw(&self) -> &[u8] {
        &self.issuer_raw
    }

    /// `cRLNumber` in decimal, when present.
    pub fn number(&self) -> Option<String> {
        self.number
            .as_deref()
            .map(|bytes| x509_parser::num_bigint::BigUint::from_bytes_be(bytes).to_string())
    }

    pub fn this_update(&self) -> OffsetDateTime {
        self.this_update
    }

    pub fn next_update(&self) -> Option<OffsetDateTime> {
        self.next_update
    }

    /// Where the CRL came from (a file path or URL), for logs and evidence.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// The revocation of `serial` (DER INTEGER content octets), if listed.
    pub fn revocation(&self, serial: &[u8]) -> Option<&Revocation> {
        self.revoked.get(serial)
    }

    /// Whether the CRL is past its nextUpdate at `now` (a CRL without nextUpdate is
    /// always stale: RFC 5280 requires the field).
    pub fn is_stale(&self, now: OffsetDateTime) -> bool {
        self.next_update.is_none_or(|next| now > next)
    }

    fn supersedes(&self, current: &IssuerCrl) -> Option<bool> {
        match (&self.number, &current.number) {
            (Some(new), Some(old)) => {
                let new = x509_parser::num_bigint::BigUint::from_bytes_be(new);
                let old = x509_parser::num_bigint::BigUint::from_bytes_be(old);
                match new.cmp(&old) {
                    std::cmp::Ordering::Equal => None,
                    ordering => Some(ordering.is_gt()),
                }
            }
            _ if self.this_update == current.this_update => None,
            _ => Some(self.this_update > current.this_update),
        }
    }
}

fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown",
    }
}

/// What [`RevocationStore::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The CRL is now in force for its issuer.
    Replaced,
    /// The same CRL (number or thisUpdate) was already in force.
    Unchanged,
}

/// A summary of one issuer's CRL in force, for metrics and readiness.
#[derive(Clone, Debug, Serialize)]
pub struct CrlStatus {
    pub issuer: String,
    pub number: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_update: Option<OffsetDateTime>,
    pub entries: usize,
    pub source: String,
}

/// The CRLs in force, one per issuer. Readers take a snapshot without locking; writers
/// are serialised and replace the whole map.
#[derive(Debug, Default)]
pub struct RevocationStore {
    current: ArcSwap<HashMap<Vec<u8>, Arc<IssuerCrl>>>,
    writer: Mutex<()>,
}

impl RevocationStore {
    /// Puts `crl` in force for its issuer unless the one in force is newer: a replayed
    /// old CRL (which could un-revoke a card) is refused.
    pub fn install(&self, crl: IssuerCrl) -> Result<Installed, CrlError> {
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let map = self.current.load();
        if let Some(current) = map.get(&crl.issuer_raw) {
            match crl.supersedes(current) {
                None => return Ok(Installed::Unchanged),
                Some(false) => {
                    return Err(CrlError::Rollback {
                        issuer: crl.issuer.clone(),
                        current: current
                            .number()
                            .unwrap_or_else(|| current.this_update.to_string()),
                        offered: crl.number().unwrap_or_else(|| crl.this_update.to_string()),
                    });
                }
                Some(true) => {}
            }
        }
        let mut next = HashMap::clone(&map);
        next.insert(crl.issuer_raw.clone(), Arc::new(crl));
        self.current.store(Arc::new(next));
        Ok(Installed::Replaced)
    }

    /// The CRL in force for the issuer with this DER Name.
    pub fn for_issuer(&self, issuer_raw: &[u8]) -> Option<Arc<IssuerCrl>> {
        self.current.load().get(issuer_raw).cloned()
    }

    /// One line per issuer, sorted by issuer name.
    pub fn status(&self) -> Vec<CrlStatus> {
        let mut out: Vec<CrlStatus> = self
            .current
            .load()
            .values()
            .map(|crl| CrlStatus {
                issuer: crl.issuer.clone(),
                number: crl.number(),
                this_update: crl.this_update,
                next_update: crl.next_update,
                entries: crl.len(),
                source: crl.source.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        out
    }
}
