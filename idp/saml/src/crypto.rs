//! XML signatures through samael's xmlsec bindings: enveloped signatures on what we send
//! (RSA-SHA256 or ECDSA-SHA256 with SHA-256 digests and exclusive c14n, never samael's SHA-1
//! default), and verification of what we receive after the shape check of [`crate::shape`]
//! (no wrapping), with an algorithm allow-list that has no SHA-1.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{Id, PKey, Private};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use samael::signature::{DigestAlgorithm, Signature, SignatureAlgorithm};
use samael::traits::ToXml;

use crate::guard::{self, XmlRefusal};
use crate::shape::{self, ShapeError};
use crate::xml::{INCLUSIVE_PREFIXES, XmlWriter};

const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

const VERIFY_ALGORITHMS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
];

/// Why a key or certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the private key is not a PEM RSA or P-256 key: {0}")]
    Key(String),
    #[error("the certificate is not a PEM X.509 certificate: {0}")]
    Certificate(String),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    #[error("RSA keys must have at least 2048 bits")]
    WeakKey,
}

/// Why signing failed (a bug or a broken key, never the input's fault).
#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// Why a signed message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Xml(#[from] XmlRefusal),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("the signature does not verify with the sender's registered keys")]
    BadSignature,
}

/// The IdP's signing key and its certificate (published in the metadata and in KeyInfo).
#[derive(Clone)]
pub struct SigningCredential {
    key: PKey<Private>,
    /// PKCS#8 DER, for xmlsec ([`Self::sign`]).
    key_der: Vec<u8>,
    cert: CertificateDer,
    method: SignatureAlgorithm,
}

impl fmt::Debug for SigningCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningCredential")
            .field("certificate_sha256", &self.certificate_sha256())
            .finish_non_exhaustive()
    }
}

impl SigningCredential {
    /// A credential from a PEM private key (PKCS#8 or PKCS#1/SEC1) and its PEM certificate.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, KeyError> {
        let key = PKey::private_key_from_pem(key_pem.as_bytes())
            .map_err(|e| KeyError::Key(e.to_string()))?;
        let cert = openssl::x509::X509::from_pem(cert_pem.as_bytes())
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        Self::from_parts(&key, &cert)
    }

    fn from_parts(key: &PKey<Private>, cert: &openssl::x509::X509) -> Result<Self, KeyError> {
        let method = match key.id() {
            Id::RSA if key.bits() >= 2048 => SignatureAlgorithm::RsaSha256,
            Id::RSA => return Err(KeyError::WeakKey),
            Id::EC => SignatureAlgorithm::EcdsaSha256,
            other => return Err(KeyError::Key(format!("unsupported key type {other:?}"))),
        };
        let public = cert
            .public_key()
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        if !public.public_eq(key) {
            return Err(KeyError::Mismatch);
        }
        let key_der = key
            .private_key_to_pkcs8()
            .map_err(|e| KeyError::Key(e.to_string()))?;
        let cert_der = cert
            .to_der()
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        Ok(Self {
            key: key.clone(),
            key_der,
            cert: CertificateDer::from(cert_der),
            method,
        })
    }

    /// A new RSA-2048 key with a self-signed certificate for `common_name`, valid for
    /// `days` (SAML trusts the certificate in the metadata, not a CA): `(key_pem, cert_pem)`.
    pub fn generate_pem(common_name: &str, days: u32) -> Result<(String, String), KeyError> {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::hash::MessageDigest;
        use openssl::x509::{X509Builder, X509NameBuilder};
        let err = |e: openssl::error::ErrorStack| KeyError::Key(e.to_string());
        let rsa = openssl::rsa::Rsa::generate(2048).map_err(err)?;
        let key = PKey::from_rsa(rsa).map_err(err)?;
        let mut name = X509NameBuilder::new().map_err(err)?;
        name.append_entry_by_text("CN", common_name).map_err(err)?;
        let name = name.build();
        let mut builder = X509Builder::new().map_err(err)?;
        builder.set_version(2).map_err(err)?;
        let mut serial = BigNum::new().map_err(err)?;
        serial
            .rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)
            .map_err(err)?;
        let serial = serial.to_asn1_integer().map_err(err)?;
        builder.set_serial_number(&serial).map_err(err)?;
        builder.set_subject_name(&name).map_err(err)?;
        builder.set_issuer_name(&name).map_err(err)?;
        builder.set_pubkey(&key).map_err(err)?;
        let not_before = Asn1Time::days_from_now(0).map_err(err)?;
        let not_after = Asn1Time::days_from_now(days).map_err(err)?;
        builder.set_not_before(&not_before).map_err(err)?;
        builder.set_not_after(&not_after).map_err(err)?;
        builder.sign(&key, MessageDigest::sha256()).map_err(err)?;
        let cert = builder.build();
        let key_pem = String::from_utf8(key.private_key_to_pem_pkcs8().map_err(err)?)
            .map_err(|e| KeyError::Key(e.to_string()))?;
        let cert_pem = String::from_utf8(cert.to_pem().map_err(err)?)
            .map_err(|e| KeyError::Key(e.to_string()))?;
        Ok((key_pem, cert_pem))
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        self.cert.der_data()
    }

    /// The certificate as the base64 text of `ds:X509Certificate`.
    pub fn certificate_base64(&self) -> String {
        B64.encode(self.cert.der_data())
    }

    /// Hex SHA-256 of the certificate (logs, `idp sp` output).
    pub fn certificate_sha256(&self) -> String {
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            self.cert.der_data(),
        ))
    }

    /// A `ds:Signature` template for [`Self::sign`], to be placed where the schema puts
    /// the signature of the element whose `ID` is `id` (after its `Issuer`).
    pub fn template(&self, id: &str) -> Result<String, SignError> {
        let mut signature = Signature::template(id, &self.cert);
        signature.signed_info.signature_method.algorithm = self.method.clone();
        for reference in &mut signature.signed_info.reference {
            reference.digest_method.algorithm = DigestAlgorithm::Sha256;
        }
        signature.to_string().map_err(|e| SignError(e.to_string()))
    }

    /// The `SigAlg` URI of query-string signatures (HTTP-Redirect binding).
    pub fn sig_alg(&self) -> &'static str {
        match self.method {
            SignatureAlgorithm::EcdsaSha256 => ECDSA_SHA256,
            _ => RSA_SHA256,
        }
    }

    /// A raw signature over `data` (HTTP-Redirect query strings): RSA PKCS#1 v1.5 with
    /// SHA-256, or ECDSA P-256 with SHA-256 as r‖s.
    pub fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let e = |e: openssl::error::ErrorStack| SignError(e.to_string());
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.key)
                .map_err(e)?;
        signer.update(data).map_err(e)?;
        let der = signer.sign_to_vec().map_err(e)?;
        if self.key.id() != Id::EC {
            return Ok(der);
        }
        let sig = openssl::ecdsa::EcdsaSig::from_der(&der).map_err(e)?;
        let mut out = sig.r().to_vec_padded(32).map_err(e)?;
        out.extend(sig.s().to_vec_padded(32).map_err(e)?);
        Ok(out)
    }

    /// Signs, by enveloped signature, the element of `doc` at the byte range `element`
    /// whose `ID` is `id`, inserting its `ds:Signature` at `slot` (where the schema puts
    /// it: after the element's `Issuer`, or first in metadata); returns the inserted
    /// length. `doc` must come from [`XmlWriter`], whose text is its own exc-c14n form:
    /// the element's bytes are then what the enveloped-signature and exc-c14n transforms
    /// make of it, the digest is their SHA-256, and SignedInfo is written canonical too.
    /// Sign inner elements first (an Assertion, then its Response): the outer digest
    /// covers the inner signature. The signature says RSA-SHA256 or ECDSA-SHA256 with
    /// SHA-256 digests and exclusive c14n with [`INCLUSIVE_PREFIXES`].
    pub fn sign_enveloped(
        &self,
        doc: &mut String,
        element: Range<usize>,
        slot: usize,
        id: &str,
    ) -> Result<usize, SignError> {
        let bytes = doc
            .get(element.clone())
            .filter(|_| element.contains(&slot))
            .ok_or_else(|| SignError("the element to sign is not in the document".into()))?;
        let digest = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            bytes.as_bytes(),
        ));
        let reference = format!("#{id}");
        let signed_info = |w: &mut XmlWriter| {
            w.open("ds:SignedInfo", &[])
                .empty("ds:CanonicalizationMethod", &[("Algorithm", EXC_C14N)])
                .empty("ds:SignatureMethod", &[("Algorithm", self.sig_alg())])
                .open("ds:Reference", &[("URI", &reference)])
                .open("ds:Transforms", &[])
                .empty("ds:Transform", &[("Algorithm", ENVELOPED)])
                .open("ds:Transform", &[("Algorithm", EXC_C14N)])
                .empty(
                    "ec:InclusiveNamespaces",
                    &[("PrefixList", INCLUSIVE_PREFIXES)],
                )
                .close("ds:Transform")
                .close("ds:Transforms")
                .empty("ds:DigestMethod", &[("Algorithm", SHA256)])
                .element("ds:DigestValue", &[], &digest)
                .close("ds:Reference")
                .close("ds:SignedInfo");
        };
        // SignedInfo's canonical form stands alone: it declares `ds` itself.
        let mut canonical = XmlWriter::new();
        signed_info(&mut canonical);
        let value = B64.encode(self.sign_bytes(canonical.finish().as_bytes())?);
        let mut w = XmlWriter::new();
        w.open("ds:Signature", &[]);
        signed_info(&mut w);
        w.element("ds:SignatureValue", &[], &value)
            .open("ds:KeyInfo", &[])
            .open("ds:X509Data", &[])
            .element("ds:X509Certificate", &[], &self.certificate_base64())
            .close("ds:X509Data")
            .close("ds:KeyInfo")
            .close("ds:Signature");
        let signature = w.finish();
        doc.insert_str(slot, &signature);
        Ok(signature.len())
    }

    /// Signs the first (document order) empty signature template of [`Self::template`]
    /// in `xml` through xmlsec: for XML not written by [`XmlWriter`] (test SPs, attack
    /// vectors); what the IdP sends is signed by [`Self::sign_enveloped`].
    pub fn sign(&self, xml: &str) -> Result<String, SignError> {
        Crypto::sign_xml(xml, &self.key_der).map_err(|e| SignError(e.to_string()))
    }
}

/// Verifies a received message signed by enveloped signature: the XML guard, the
/// shape check (one signature, child of the root, referencing it), then xmlsec with the
/// sender's certificates and no SHA-1. Returns the root's ID and the canonical signed
/// bytes, which are all the caller may read.
pub fn verify_enveloped(
    xml: &str,
    certificates: &[Vec<u8>],
) -> Result<(String, String), VerifyError> {
    verify_enveloped_sized(xml, certificates, guard::MAX_MESSAGE_BYTES)
}

/// [`verify_enveloped`] for documents of up to `max` bytes (metadata).
pub fn verify_enveloped_sized(
    xml: &str,
    certificates: &[Vec<u8>],
    max: usize,
) -> Result<(String, String), VerifyError> {
    guard::check_sized(xml.as_bytes(), max)?;
    let root_id = shape::check(xml)?;
    if certificates.is_empty() {
        return Err(VerifyError::BadSignature);
    }
    let certs: Vec<CertificateDer> = certificates
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &certs,
        ReduceMode::PreDigest,
        Some(VERIFY_ALGORITHMS),
    )
    .map_err(|_| VerifyError::BadSignature)?;
    Ok((root_id, signed))
}
