//! TLS for the two listeners, and the client-certificate verifier of the login origin.
//!
//! The login origin requires a client certificate. [`HpkiClientVerifier`] runs the same
//! [`HpkiValidator`] as the login handler: a certificate whose chain does not verify to a
//! configured anchor ends the handshake with a TLS alert; one that chains but fails a
//! later check (expired, revoked, signing certificate, no hcRole…) completes the handshake
//! so that the handler can show the doctor a readable refusal. Only the handler's own
//! validation ever creates a session.

use std::any::Any;
use std::sync::Arc;

use actix_web::dev::Extensions;
use idp_core::hpki::{HpkiRefusal, HpkiValidator, PeerCertificate};
use idp_core::oidc::client_auth::ClientCertificate;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;

use crate::config::ServerIdentity;

/// The certificates the client presented on this connection, as rustls received them.
#[derive(Clone, Debug)]
pub struct PresentedChain(pub Vec<CertificateDer<'static>>);

type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;

/// `on_connect` hook: moves the peer's certificates from the rustls connection into the
/// connection's extensions, where the login handler's extractor finds them.
pub fn capture_peer_chain(connection: &dyn Any, extensions: &mut Extensions) {
    if let Some(tls) = connection.downcast_ref::<TlsStream>() {
        let (_, session) = tls.get_ref();
        if let Some(certs) = session.peer_certificates() {
            extensions.insert(PresentedChain(
                certs.iter().map(|c| c.clone().into_owned()).collect(),
            ));
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2: cards may only sign PKCS#1 v1.5, which TLS 1.3 does not allow for
/// RSA client keys.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The public origin: server authentication only.
pub fn public_server_config(identity: &ServerIdentity) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CAs of relying parties' TLS client certificates (`tls_client_auth`, RFC 8705).
#[derive(Debug, Default)]
pub struct RpClientCas {
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
}

impl RpClientCas {
    pub fn new(cas: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        let mut anchors = Vec::new();
        let mut subjects = Vec::new();
        for ca in cas {
            let anchor = webpki::anchor_from_trusted_cert(ca)
                .map_err(|e| rustls::Error::General(format!("oidc.mtls_client_cas: {e}")))?
                .to_owned();
            subjects.push(DistinguishedName::from(anchor.subject.as_ref().to_vec()));
            anchors.push(anchor);
        }
        Ok(Self { anchors, subjects })
    }

    /// The client certificate of a relying party, when `chain` verifies to one of these
    /// CAs for client authentication at `now`.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Option<ClientCertificate> {
        let (leaf, intermediates) = chain.split_first()?;
        if self.anchors.is_empty() {
            return None;
        }
        let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .ok()?;
        ClientCertificate::from_der(leaf.as_ref())
    }
}

/// The login origin: a client certificate is required and verified by HPKI rules (or,
/// for relying parties' servers, by the RP client CAs).
pub fn login_server_config(
    identity: &ServerIdentity,
    validator: Arc<HpkiValidator>,
    rp_cas: Arc<RpClientCas>,
) -> Result<ServerConfig, rustls::Error> {
    let verifier = Arc::new(HpkiClientVerifier::new(validator, rp_cas));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies client certificates with the IdP's HPKI rules during the handshake.
#[derive(Debug)]
pub struct HpkiClientVerifier {
    validator: Arc<HpkiValidator>,
    rp_cas: Arc<RpClientCas>,
    subjects: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl HpkiClientVerifier {
    pub fn new(validator: Arc<HpkiValidator>, rp_cas: Arc<RpClientCas>) -> Self {
        let subjects = validator
            .trust()
            .ca_subjects()
            .into_iter()
            .map(DistinguishedName::from)
            .chain(rp_cas.subjects.iter().cloned())
            .collect();
        Self {
            validator,
            rp_cas,
            subjects,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for HpkiClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain: Vec<CertificateDer<'static>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        let unix_now = now;
        let now =
            OffsetDateTime::from_unix_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let outcome = PeerCertificate::new(chain.clone())
            .and_then(|peer| self.validator.validate(&peer, now));
        match outcome {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            // Chains to a configured CA: let the handler show the reason on a page.
            Err(refusal) if refusal.issued_by_trusted_ca() => Ok(ClientCertVerified::assertion()),
            // A relying party's server (tls_client_auth); handlers verify it again.
            Err(_) if self.rp_cas.verify(&chain, unix_now).is_some() => {
                Ok(ClientCertVerified::assertion())
            }
            Err(refusal) => {
                tracing::info!(
                    reason = refusal.code(),
                    "client certificate refused in the TLS handshake"
                );
                Err(rustls::Error::InvalidCertificate(alert_for(&refusal)))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn alert_for(refusal: &HpkiRefusal) -> CertificateError {
    match refusal {
        HpkiRefusal::UnknownIssuer => CertificateError::UnknownIssuer,
        HpkiRefusal::BadSignature => CertificateError::BadSignature,
        _ => CertificateError::BadEncoding,
    }
}
