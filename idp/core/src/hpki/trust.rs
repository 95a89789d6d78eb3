//! The configured HPKI trust: anchors (each HPKI root or CA the deployment trusts) and
//! intermediates the deployment vouches for. A client-sent certificate is never an anchor.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::TrustAnchor;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A configured CA certificate that failed to load. Start-up stops on any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("no HPKI trust anchor is configured")]
    NoAnchors,
    #[error("{what} #{index} is not a DER certificate: {reason}")]
    Malformed {
        what: &'static str,
        index: usize,
        reason: String,
    },
    #[error("{what} {subject} is not a CA certificate (basicConstraints cA is not set)")]
    NotCa { what: &'static str, subject: String },
    #[error("intermediate {0} is not signed by any configured anchor or intermediate")]
    Unanchored(String),
}

/// A CA certificate of the configuration, kept as DER with what we look up often.
#[derive(Clone, Debug)]
pub struct CaCertificate {
    der: CertificateDer<'static>,
    subject_raw: Vec<u8>,
    subject: String,
    crl_signer: bool,
}

impl CaCertificate {
    fn new(
        der: CertificateDer<'static>,
        what: &'static str,
        index: usize,
    ) -> Result<Self, TrustError> {
        let malformed = |reason: String| TrustError::Malformed {
            what,
            index,
            reason,
        };
        let (rest, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing data".into()));
        }
        let subject = cert.subject().to_string();
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| malformed(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(TrustError::NotCa { what, subject });
        }
        let crl_signer = cert
            .key_usage()
            .map_err(|e| malformed(e.to_string()))?
            .is_none_or(|ku| ku.value.crl_sign());
        let subject_raw = cert.subject().as_raw().to_vec();
        Ok(Self {
            der,
            subject_raw,
            subject,
            crl_signer,
        })
    }

    /// The certificate, parsed (it was parsed once already, so this cannot fail).
    pub fn parsed(&self) -> X509Certificate<'_> {
        X509Certificate::from_der(self.der.as_ref())
            .map(|(_, cert)| cert)
            .expect("invariant: CaCertificate::new parsed this DER")
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The DER of the subject Name (with its SEQUENCE header).
    pub fn subject_raw(&self) -> &[u8] {
        &self.subject_raw
    }

    /// The subject (RFC 4514).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Whether keyUsage allows cRLSign (or the extension is absent).
    pub fn may_sign_crls(&self) -> bool {
        self.crl_signer
    }
}

/// Trust anchors and configured intermediates, checked at start-up.
#[derive(Clone, Debug)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    cas: Vec<CaCertificate>,
}

impl TrustStore {
    /// Builds the store. Every anchor and intermediate must be a CA certificate, and every
    /// intermediate must be signed by an anchor or by an intermediate that is.
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        intermediates: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TrustError> {
        if anchors.is_empty() {
            return Err(TrustError::NoAnchors);
        }
        let mut cas = Vec::with_capacity(anchors.len() + intermediates.len());
        let mut webpki_anchors = Vec::with_capacity(anchors.len());
        for (index, der) in anchors.into_iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| TrustError::Malformed {
                    what: "anchor",
                    index,
                    reason: format!("{e:?}"),
                })?
                .to_owned();
            webpki_anchors.push(anchor);
            cas.push(CaCertificate::new(der, "anchor", index)?);
        }
        let anchored = cas.len();
        let mut pending: Vec<CaCertificate> = intermediates
            .into_iter()
            .enumerate()
            .map(|(index, der)| CaCertificate::new(der, "intermediate", index))
            .collect::<Result<_, _>>()?;
        // Accept intermediates in any order: repeatedly take those whose issuer is known.
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for candidate in pending {
                if signed_by_any(&candidate, &cas) {
                    cas.push(candidate);
                } else {
                    rest.push(candidate);
                }
            }
            if rest.len() == before {
                return Err(TrustError::Unanchored(rest[0].subject.clone()));
            }
            pending = rest;
        }
        let intermediates = cas[anchored..].iter().map(|ca| ca.der.clone()).collect();
        Ok(Self {
            anchors: webpki_anchors,
            intermediates,
            cas,
        })
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The configured intermediates (never anchors).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Anchors then intermediates: the CAs whose CRLs we accept.
    pub fn cas(&self) -> &[CaCertificate] {
        &self.cas
    }

    /// The DER subject Names of the CAs, for the TLS CertificateRequest's
    /// certificate_authorities, so that browsers offer only HPKI cards.
    pub fn ca_subjects(&self) -> Vec<Vec<u8>> {
        self.cas.iter().map(|ca| ca.subject_raw.clone()).collect()
    }
}

fn signed_by_any(candidate: &CaCertificate, issuers: &[CaCertificate]) -> bool {
    let cert = candidate.parsed();
    issuers.iter().any(|issuer| {
        let issuer_cert = issuer.parsed();
        issuer.subject_raw == cert.issuer().as_raw()
            && cert
                .verify_signature(Some(issuer_cert.public_key()))
                .is_ok()
    })
}
