//! The HTTP-Redirect binding (SAML Bindings §3.4): `SAMLRequest`/`SAMLResponse` as
//! base64 of raw DEFLATE, and the query-string signature computed over the parameters
//! exactly as received (§3.4.4.1), never re-encoded.
//!
//! Limits come before work: the encoded message is bounded before decoding, the inflated
//! one while inflating (a deflate bomb stops at the limit), and the XML then goes through
//! [`crate::guard::check`].

use std::io::Read;

use base64::Engine;
use x509_parser::prelude::FromDer;

use crate::guard::{self, MAX_MESSAGE_BYTES, XmlRefusal};

/// The longest encoded message accepted in a URL.
pub const MAX_ENCODED_BYTES: usize = 32 * 1024;

/// Signature algorithms accepted for query-string signatures (no SHA-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigAlg {
    RsaSha256,
    RsaSha512,
    EcdsaSha256,
}

impl SigAlg {
    pub fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => Some(Self::RsaSha256),
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => Some(Self::RsaSha512),
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => Some(Self::EcdsaSha256),
            _ => None,
        }
    }

    fn ring(self) -> &'static dyn ring::signature::VerificationAlgorithm {
        match self {
            Self::RsaSha256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RsaSha512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            // XML Signature encodes ECDSA signatures as r ‖ s (RFC 4050 §3.3).
            Self::EcdsaSha256 => &ring::signature::ECDSA_P256_SHA256_FIXED,
        }
    }
}

/// Why a Redirect-binding message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("the message parameter is missing")]
    Missing,
    #[error("parameter {0} is repeated")]
    Repeated(&'static str),
    #[error("the encoded message is too large")]
    TooLarge,
    #[error("the message is not valid base64")]
    Base64,
    #[error("the message is not valid DEFLATE data")]
    Deflate,
    #[error("the signature algorithm is not accepted")]
    SigAlg,
    #[error("Signature without SigAlg, or SigAlg without Signature")]
    IncompleteSignature,
    #[error("a parameter is not valid percent-encoding")]
    Encoding,
    #[error(transparent)]
    Xml(#[from] XmlRefusal),
}

/// The signature of a Redirect-binding message, to be checked against the sender's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuerySignature {
    pub alg: SigAlg,
    /// `SAMLRequest=…[&RelayState=…]&SigAlg=…` exactly as received.
    signed_octets: String,
    signature: Vec<u8>,
}

impl QuerySignature {
    /// Whether the signature verifies with the public key of `certificate` (DER).
    pub fn verify(&self, certificate: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(certificate) else {
            return false;
        };
        let key = cert.public_key().subject_public_key.data.as_ref();
        ring::signature::UnparsedPublicKey::new(self.alg.ring(), key)
            .verify(self.signed_octets.as_bytes(), &self.signature)
            .is_ok()
    }
}

/// A decoded Redirect-binding message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectMessage {
    /// The XML, checked by [`guard::check`].
    pub xml: String,
    pub relay_state: Option<String>,
    /// Present when the sender signed the query string.
    pub signature: Option<QuerySignature>,
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(value: &str) -> Result<String, RedirectError> {
    idp_core::oidc::provider::form_decode(value).ok_or(RedirectError::Encoding)
}

fn base64_decode(value: &str) -> Result<Vec<u8>, RedirectError> {
    // A '+' that arrived unencoded became a space in form decoding.
    let cleaned: String = value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .map_err(|_| RedirectError::Base64)
}

/// Decodes the Redirect-binding message `param` (`SAMLRequest` or `SAMLResponse`) from a
/// raw (still percent-encoded) query string.
pub fn decode(raw_query: &str, param: &'static str) -> Result<RedirectMessage, RedirectError> {
    if raw_query.len() > MAX_ENCODED_BYTES * 2 {
        return Err(RedirectError::TooLarge);
    }
    let mut message = None;
    let mut relay_state = None;
    let mut sig_alg = None;
    let mut signature = None;
    for pair in raw_query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            n if n == param => (&mut message, param),
            "RelayState" => (&mut relay_state, "RelayState"),
            "SigAlg" => (&mut sig_alg, "SigAlg"),
            "Signature" => (&mut signature, "Signature"),
            _ => continue,
        };
        if slot.0.replace(value).is_some() {
            return Err(RedirectError::Repeated(slot.1));
        }
    }
    let encoded = message.ok_or(RedirectError::Missing)?;
    if encoded.len() > MAX_ENCODED_BYTES {
        return Err(RedirectError::TooLarge);
    }
    let deflated = base64_decode(&form_decode(encoded)?)?;
    let mut xml = Vec::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .take(u64::try_from(MAX_MESSAGE_BYTES + 1).unwrap_or(u64::MAX))
        .read_to_end(&mut xml)
        .map_err(|_| RedirectError::Deflate)?;
    if xml.len() > MAX_MESSAGE_BYTES {
        return Err(XmlRefusal::TooLarge.into());
    }
    let xml = guard::check(&xml)?.to_owned();
    let signature = match (sig_alg, signature) {
        (None, None) => None,
        (Some(alg), Some(sig)) => {
            let alg_uri = form_decode(alg)?;
            let alg_parsed = SigAlg::from_uri(&alg_uri).ok_or(RedirectError::SigAlg)?;
            let mut signed_octets = format!("{param}={encoded}");
            if let Some(rs) = relay_state {
                signed_octets.push_str("&RelayState=");
                signed_octets.push_str(rs);
            }
            signed_octets.push_str("&SigAlg=");
            signed_octets.push_str(alg);
            Some(QuerySignature {
                alg: alg_parsed,
                signed_octets,
                signature: base64_decode(&form_decode(sig)?)?,
            })
        }
        _ => return Err(RedirectError::IncompleteSignature),
    };
    Ok(RedirectMessage {
        xml,
        relay_state: relay_state.map(form_decode).transpose()?,
        signature,
    })
}

/// Encodes `xml` for the Redirect binding (DEFLATE, base64, percent-encoding) and signs
/// the query string with `credential`: `param=…[&RelayState=…]&SigAlg=…&Signature=…`.
pub fn encode(
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    credential: &crate::crypto::SigningCredential,
) -> Result<String, crate::crypto::SignError> {
    use idp_core::oidc::provider::percent_encode;
    use std::io::Write as _;
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater
        .write_all(xml.as_bytes())
        .map_err(|e| crate::crypto::SignError(e.to_string()))?;
    let deflated = deflater
        .finish()
        .map_err(|e| crate::crypto::SignError(e.to_string()))?;
    let mut query = format!(
        "{param}={}",
        percent_encode(&base64::engine::general_purpose::STANDARD.encode(deflated))
    );
    if let Some(rs) = relay_state {
        query.push_str("&RelayState=");
        query.push_str(&percent_encode(rs));
    }
    query.push_str("&SigAlg=");
    query.push_str(&percent_encode(credential.sig_alg()));
    let signature = credential.sign_bytes(query.as_bytes())?;
    query.push_str("&Signature=");
    query.push_str(&percent_encode(
        &base64::engine::general_purpose::STANDARD.encode(signature),
    ));
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const XML: &str = r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_abc" Version="2.0"/>"#;
    const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

    fn deflate(data: &[u8]) -> String {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("deflate");
        base64::engine::general_purpose::STANDARD.encode(encoder.finish().expect("deflate"))
    }

    fn enc(value: &str) -> String {
        idp_core::oidc::provider::percent_encode(value)
    }

    /// An RSA-2048 key with a self-signed certificate: (signer, certificate DER).
    fn signer() -> (crate::crypto::SigningCredential, Vec<u8>) {
        let (key, cert) =
            crate::crypto::SigningCredential::generate_pem("sp.example", 1).expect("key");
        let credential = crate::crypto::SigningCredential::from_pem(&key, &cert).expect("pem");
        let der = credential.certificate_der().to_vec();
        (credential, der)
    }

    #[test]
    fn an_unsigned_request_decodes_with_its_relay_state() {
        let query = format!(
            "SAMLRequest={}&RelayState={}",
            enc(&deflate(XML.as_bytes())),
            enc("/back?x=1")
        );
        let message = decode(&query, "SAMLRequest").expect("decodes");
        assert_eq!(message.xml, XML);
        assert_eq!(message.relay_state.as_deref(), Some("/back?x=1"));
        assert!(message.signature.is_none());
    }

    #[test]
    fn deflate_bombs_oversized_and_malformed_messages_are_refused() {
        let bomb = deflate(&vec![b'<'; 50 * MAX_MESSAGE_BYTES]);
        assert!(
            bomb.len() < MAX_ENCODED_BYTES,
            "a real bomb: small when encoded"
        );
        let query = format!("SAMLRequest={}", enc(&bomb));
        assert_eq!(
            decode(&query, "SAMLRequest"),
            Err(RedirectError::Xml(XmlRefusal::TooLarge))
        );
        let huge = format!("SAMLRequest={}", "A".repeat(MAX_ENCODED_BYTES + 1));
        assert_eq!(decode(&huge, "SAMLRequest"), Err(RedirectError::TooLarge));
        assert_eq!(
            decode("SAMLRequest=!!!", "SAMLRequest"),
            Err(RedirectError::Base64)
        );
        assert_eq!(
            decode("RelayState=x", "SAMLRequest"),
            Err(RedirectError::Missing)
        );
        let not_deflate = base64::engine::general_purpose::STANDARD.encode([0xffu8; 64]);
        assert_eq!(
            decode(&format!("SAMLRequest={}", enc(&not_deflate)), "SAMLRequest"),
            Err(RedirectError::Deflate)
        );
        let twice = format!(
            "SAMLRequest={0}&SAMLRequest={0}",
            enc(&deflate(XML.as_bytes()))
        );
        assert_eq!(
            decode(&twice, "SAMLRequest"),
            Err(RedirectError::Repeated("SAMLRequest"))
        );
        let xxe = deflate(br#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#);
        assert_eq!(
            decode(&format!("SAMLRequest={}", enc(&xxe)), "SAMLRequest"),
            Err(RedirectError::Xml(XmlRefusal::Dtd))
        );
    }

    #[test]
    fn query_signatures_verify_over_the_octets_as_received() {
        let (key, cert) = signer();
        // Lower-case percent-encoding, as some SPs send it: verified as received.
        let encoded = enc(&deflate(XML.as_bytes()));
        let mut message = String::new();
        let mut rest = encoded.as_str();
        while let Some(at) = rest.find('%') {
            message.push_str(&rest[..at]);
            message.push_str(&rest[at..at + 3].to_ascii_lowercase());
            rest = &rest[at + 3..];
        }
        message.push_str(rest);
        assert!(message.contains("%2b") || message.contains("%2f") || message.contains("%3d"));
        let signed = format!(
            "SAMLRequest={message}&RelayState=rs&SigAlg={}",
            enc(RSA_SHA256)
        );
        let raw = key.sign_bytes(signed.as_bytes()).expect("signs");
        let signature = enc(&base64::engine::general_purpose::STANDARD.encode(raw));
        let query = format!("{signed}&Signature={signature}");
        let decoded = decode(&query, "SAMLRequest").expect("decodes");
        let sig = decoded.signature.expect("signed");
        assert_eq!(sig.alg, SigAlg::RsaSha256);
        assert!(sig.verify(&cert));
        // Any change to a signed parameter breaks it.
        let tampered = query.replace("RelayState=rs", "RelayState=evil");
        let sig = decode(&tampered, "SAMLRequest")
            .expect("decodes")
            .signature
            .expect("signed");
        assert!(!sig.verify(&cert));
        // Another key does not verify it.
        let (_, other) = signer();
        let sig = decode(&query, "SAMLRequest")
            .expect("decodes")
            .signature
            .expect("signed");
        assert!(!sig.verify(&other));
        assert!(!sig.verify(b"not a certificate"));
        // SHA-1 is refused; half a signature is refused.
        let sha1 = query.replace(
            &enc(RSA_SHA256),
            &enc("http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
        );
        assert_eq!(decode(&sha1, "SAMLRequest"), Err(RedirectError::SigAlg));
        let half = format!("SAMLRequest={message}&Signature={signature}");
        assert_eq!(
            decode(&half, "SAMLRequest"),
            Err(RedirectError::IncompleteSignature)
        );
    }
}
