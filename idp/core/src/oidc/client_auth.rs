//! Client authentication at the token, revocation and introspection endpoints (RFC 6749
//! §2.3, OIDC Core §9, RFC 7523, RFC 8705 §2.1).
//!
//! Exactly one method per request, and it must be the client's registered method. A
//! `private_key_jwt` assertion is verified with the client's registered public keys only:
//! asymmetric algorithms only (no `none`, no HMAC, so a public key can never be used as an
//! HMAC secret), `iss` = `sub` = client ID, `aud` naming this provider, a bounded lifetime
//! and a `jti` seen once.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::client::{ClientRegistration, TokenEndpointAuthMethod};
use super::provider::form_decode;
use super::{ErrorCode, OAuthError};
use crate::secret::digests_match;
use crate::store::{ClientStore, EphemeralStore};

/// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest lifetime accepted for a client assertion (`exp` - now).
const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(600);
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

/// The TLS client certificate of the request, when it came over the mTLS origin and its
/// chain verified to a configured relying-party CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject DN in RFC 4514 string form.
    pub subject_dn: String,
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
}

impl ClientCertificate {
    /// From the end-entity certificate's DER.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Self {
            subject_dn: cert.subject().to_string(),
            sha256: Sha256::digest(der).into(),
        })
    }

    /// `x5t#S256` (RFC 8705 §3.1): base64url of the SHA-256 of the DER certificate.
    pub fn x5t_s256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.sha256)
    }
}

/// What the request carried to authenticate the client.
#[derive(Clone, Debug, Default)]
pub struct Presented {
    /// `Authorization: Basic` credentials, already form-decoded (RFC 6749 §2.3.1).
    pub basic: Option<(String, String)>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    pub certificate: Option<ClientCertificate>,
}

impl Presented {
    /// Decodes an `Authorization` header value of the Basic scheme. `None` when it is not
    /// Basic; `Some(Err)` when it is Basic but malformed.
    pub fn parse_basic(header: &str) -> Option<Result<(String, String), OAuthError>> {
        let (scheme, value) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let malformed = || OAuthError::new(ErrorCode::InvalidClient, "malformed Basic credentials");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| malformed());
        Some(decoded.and_then(|bytes| {
            let text = String::from_utf8(bytes).map_err(|_| malformed())?;
            let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
            let id = form_decode(id).ok_or_else(malformed)?;
            let secret = form_decode(secret).ok_or_else(malformed)?;
            Ok((id, secret))
        }))
    }
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    jti: Option<String>,
    exp: u64,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
    sub: Option<String>,
}

fn invalid_client(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, description)
}

/// Authenticates clients.
#[derive(Debug, Clone)]
pub struct ClientAuthenticator {
    clients: Arc<dyn ClientStore>,
    replay: Arc<dyn EphemeralStore>,
    /// Accepted `aud` values of client assertions: the issuer and the token endpoint URLs.
    audiences: Vec<String>,
}

impl ClientAuthenticator {
    pub fn new(
        clients: Arc<dyn ClientStore>,
        replay: Arc<dyn EphemeralStore>,
        audiences: Vec<String>,
    ) -> Self {
        Self {
            clients,
            replay,
            audiences,
        }
    }

    /// The authenticated client, or `invalid_client` (401) / `invalid_request`.
    pub async fn authenticate(
        &self,
        presented: &Presented,
        now: OffsetDateTime,
    ) -> Result<ClientRegistration, OAuthError> {
        let method = method_of(presented)?;
        let client_id = match method {
            TokenEndpointAuthMethod::ClientSecretBasic => presented
                .basic
                .as_ref()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
            TokenEndpointAuthMethod::PrivateKeyJwt => {
                assertion_client_id(presented.client_assertion.as_deref().unwrap_or_default())?
            }
            TokenEndpointAuthMethod::ClientSecretPost | TokenEndpointAuthMethod::TlsClientAuth => {
                presented.client_id.clone().unwrap_or_default()
            }
        };
        if presented
            .client_id
            .as_ref()
            .is_some_and(|p| *p != client_id)
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "client_id differs from the authenticated client",
            ));
        }
        let client = self
            .clients
            .client(&client_id)
            .await
            .map_err(|_| OAuthError::new(ErrorCode::ServerError, "try again later"))?
            .ok_or_else(|| invalid_client("client authentication failed"))?;
        if client.auth_method != method {
            return Err(invalid_client(
                "the client is registered for another authentication method",
            ));
        }
        let ok = match method {
            TokenEndpointAuthMethod::ClientSecretBasic => presented
                .basic
                .as_ref()
                .is_some_and(|(_, secret)| client.secret_matches(secret)),
            TokenEndpointAuthMethod::ClientSecretPost => presented
                .client_secret
                .as_deref()
                .is_some_and(|secret| client.secret_matches(secret)),
            TokenEndpointAuthMethod::TlsClientAuth => presented
                .certificate
                .as_ref()
                .is_some_and(|cert| certificate_matches(&client, cert)),
            TokenEndpointAuthMethod::PrivateKeyJwt => {
                self.verify_assertion(
                    &client,
                    presented.client_assertion.as_deref().unwrap_or_default(),
                    now,
                )
                .await?;
                true
            }
        };
        if ok {
            Ok(client)
        } else {
            Err(invalid_client("client authentication failed"))
        }
    }

    async fn verify_assertion(
        &self,
        client: &ClientRegistration,
        assertion: &str,
        now: OffsetDateTime,
    ) -> Result<(), OAuthError> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| invalid_client("the client assertion is malformed"))?;
        let alg = header.alg;
        if !matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(invalid_client(
                "the client assertion's algorithm is not accepted",
            ));
        }
        let jwks = client
            .jwks
            .as_ref()
            .ok_or_else(|| invalid_client("the client has no registered keys"))?;
        let jwk = match &header.kid {
            Some(kid) => jwks.find(kid),
            None if jwks.keys.len() == 1 => jwks.keys.first(),
            None => None,
        }
        .ok_or_else(|| invalid_client("the client assertion's key is not registered"))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|_| invalid_client("the client's registered key is unusable"))?;
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&self.audiences);
        validation.set_issuer(&[&client.client_id]);
        validation.sub = Some(client.client_id.clone());
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
            .map_err(|_| invalid_client("the client assertion is not valid"))?;
        let claims = data.claims;
        debug_assert_eq!(claims.iss, claims.sub);
        let now_secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let remaining = claims.exp.saturating_sub(now_secs);
        if remaining > MAX_ASSERTION_LIFETIME.as_secs() {
            return Err(invalid_client("the client assertion lives too long"));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| invalid_client("the client assertion has no jti"))?;
        let key = format!(
            "jti:{}",
            hex::encode(Sha256::digest(format!("{}\0{jti}", client.client_id)))
        );
        let fresh = self
            .replay
            .put_if_absent(&key, b"1", Duration::from_secs(remaining + LEEWAY_SECS + 1))
            .await
            .map_err(|_| OAuthError::new(ErrorCode::ServerError, "try again later"))?;
        if !fresh {
            return Err(invalid_client("the client assertion was already used"));
        }
        Ok(())
    }
}

/// The single authentication method the request used.
fn method_of(presented: &Presented) -> Result<TokenEndpointAuthMethod, OAuthError> {
    let mut methods = Vec::new();
    if presented.basic.is_some() {
        methods.push(TokenEndpointAuthMethod::ClientSecretBasic);
    }
    if presented.client_secret.is_some() {
        methods.push(TokenEndpointAuthMethod::ClientSecretPost);
    }
    if presented.client_assertion.is_some() || presented.client_assertion_type.is_some() {
        if presented.client_assertion_type.as_deref() != Some(JWT_BEARER) {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "client_assertion_type must be jwt-bearer",
            ));
        }
        methods.push(TokenEndpointAuthMethod::PrivateKeyJwt);
    }
    match methods.as_slice() {
        [one] => Ok(*one),
        [] if presented.certificate.is_some() && presented.client_id.is_some() => {
            Ok(TokenEndpointAuthMethod::TlsClientAuth)
        }
        [] => Err(invalid_client("client authentication is required")),
        _ => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "more than one client authentication method",
        )),
    }
}

/// The client ID an assertion claims, read before verification only to find the keys.
fn assertion_client_id(assertion: &str) -> Result<String, OAuthError> {
    let payload = assertion
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid_client("the client assertion is malformed"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid_client("the client assertion is malformed"))?;
    let claims: UnverifiedIssuer = serde_json::from_slice(&bytes)
        .map_err(|_| invalid_client("the client assertion is malformed"))?;
    match (claims.iss, claims.sub) {
        (Some(iss), Some(sub)) if iss == sub => Ok(iss),
        _ => Err(invalid_client("the client assertion's iss and sub differ")),
    }
}

/// RFC 8705 §2.1.2: the registered subject DN, or the registered thumbprint.
fn certificate_matches(client: &ClientRegistration, cert: &ClientCertificate) -> bool {
    if let Some(thumbprint) = &client.tls_client_certificate_sha256 {
        return digests_match(&hex::encode(cert.sha256), &thumbprint.to_ascii_lowercase());
    }
    client
        .tls_client_auth_subject_dn
        .as_ref()
        .is_some_and(|dn| normalise_dn(dn) == normalise_dn(&cert.subject_dn))
}

fn normalise_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            let (k, v) = rdn.split_once('=').unwrap_or((rdn, ""));
            format!("{}={}", k.trim().to_ascii_uppercase(), v.trim())
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%3Aclient:p%40ss+word")
        );
        let (id, secret) = Presented::parse_basic(&header)
            .expect("basic")
            .expect("valid");
        assert_eq!(id, "my:client");
        assert_eq!(secret, "p@ss word");
        assert!(Presented::parse_basic("Bearer abc").is_none());
        assert!(Presented::parse_basic("Basic !!!").expect("basic").is_err());
        let no_colon = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("nocolon")
        );
        assert!(Presented::parse_basic(&no_colon).expect("basic").is_err());
    }

    #[test]
    fn exactly_one_method_is_allowed() {
        let both = Presented {
            basic: Some(("a".into(), "b".into())),
            client_secret: Some("b".into()),
            ..Presented::default()
        };
        assert_eq!(
            method_of(&both).map_err(|e| e.code),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            method_of(&Presented::default()).map_err(|e| e.code),
            Err(ErrorCode::InvalidClient)
        );
        let bad_type = Presented {
            client_assertion: Some("x".into()),
            client_assertion_type: Some("urn:other".into()),
            ..Presented::default()
        };
        assert_eq!(
            method_of(&bad_type).map_err(|e| e.code),
            Err(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn subject_dns_compare_with_normalised_attribute_names() {
        let client = ClientRegistration {
            tls_client_auth_subject_dn: Some("cn=rp.example, O=Hareyaka".into()),
            ..ClientRegistration::new("rp", "RP", TokenEndpointAuthMethod::TlsClientAuth)
        };
        let cert = ClientCertificate {
            subject_dn: "CN=rp.example,O=Hareyaka".into(),
            sha256: [0; 32],
        };
        assert!(certificate_matches(&client, &cert));
        let other = ClientCertificate {
            subject_dn: "CN=evil.example,O=Hareyaka".into(),
            sha256: [0; 32],
        };
        assert!(!certificate_matches(&client, &other));
    }
}
