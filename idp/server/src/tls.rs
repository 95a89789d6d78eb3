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
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
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

/// The login origin: a client certificate is required and verified by HPKI rules.
pub fn login_server_config(
    identity: &ServerIdentity,
    validator: Arc<HpkiValidator>,
) -> Result<ServerConfig, rustls::Error> {
    let verifier = Arc::new(HpkiClientVerifier::new(validator));
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
    subjects: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl HpkiClientVerifier {
    pub fn new(validator: Arc<HpkiValidator>) -> Self {
        let subjects = validator
            .trust()
            .ca_subjects()
            .into_iter()
            .map(DistinguishedName::from)
            .collect();
        Self {
            validator,
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
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        let now =
            OffsetDateTime::from_unix_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let outcome =
            PeerCertificate::new(chain).and_then(|peer| self.validator.validate(&peer, now));
        match outcome {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            // Chains to a configured CA: let the handler show the reason on a page.
            Err(refusal) if refusal.issued_by_trusted_ca() => Ok(ClientCertVerified::assertion()),
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
