//! Client registrations. A client's secret is stored only as its SHA-256 digest (secrets
//! we issue carry 256 random bits, so a fast hash is enough) and compared in constant time.

use serde::{Deserialize, Serialize};

use super::subject::SubjectType;
use crate::secret::{Secret, digests_match};

/// How the client authenticates at the token endpoint (OIDC Core §9, RFC 8705).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    TlsClientAuth,
}

impl TokenEndpointAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
        }
    }
}

/// ID token signing algorithms the provider offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SigningAlg {
    #[default]
    RS256,
    PS256,
    ES256,
    EdDSA,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 4] = [Self::RS256, Self::PS256, Self::ES256, Self::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// A registered relying party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRegistration {
    pub client_id: String,
    /// Display name on the consent page.
    pub name: String,
    /// SHA-256 hex of the client secret, for the `client_secret_*` methods.
    pub secret_digest: Option<String>,
    pub auth_method: TokenEndpointAuthMethod,
    /// Exact redirect URIs (no wildcards, no prefix matching).
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes this client may ask for; `openid` is required for OIDC.
    pub allowed_scopes: Vec<String>,
    pub id_token_signed_response_alg: SigningAlg,
    pub subject_type: SubjectType,
    /// The pairwise sector (by default the host of the redirect URIs).
    pub sector: String,
    /// Skip the consent page (first-party modules).
    pub pre_approved: bool,
    /// The kind of organisation, for the disclosure policy and the doctors' settings
    /// (default: third party, to whom the least is released).
    #[serde(default)]
    pub audience: crate::disclosure::Audience,
    /// Public keys of a `private_key_jwt` client (a JWKS document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<jsonwebtoken::jwk::JwkSet>,
    /// RFC 8705 §2.1.2 `tls_client_auth_subject_dn` of a `tls_client_auth` client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// SHA-256 thumbprint (lowercase hex of the DER) of a `tls_client_auth` client's
    /// certificate; either this or the subject DN identifies the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_certificate_sha256: Option<String>,
    /// OIDC Back-Channel Logout 1.0 `backchannel_logout_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
    /// Whether the client may receive refresh tokens (with the `offline_access` scope).
    #[serde(default)]
    pub refresh_tokens: bool,
}

impl ClientRegistration {
    /// A registration with the defaults: scope `openid`, RS256 ID tokens, pairwise
    /// subjects, consent asked, no refresh tokens, no redirect URIs yet.
    pub fn new(
        client_id: impl Into<String>,
        name: impl Into<String>,
        auth_method: TokenEndpointAuthMethod,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            name: name.into(),
            secret_digest: None,
            auth_method,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            allowed_scopes: vec![idp_vocabulary::scope::OPENID.to_owned()],
            id_token_signed_response_alg: SigningAlg::RS256,
            subject_type: SubjectType::Pairwise,
            sector: String::new(),
            pre_approved: false,
            audience: crate::disclosure::Audience::ThirdParty,
            jwks: None,
            tls_client_auth_subject_dn: None,
            tls_client_certificate_sha256: None,
            backchannel_logout_uri: None,
            refresh_tokens: false,
        }
    }

    /// Checks that the registration is complete and safe; the reason otherwise.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = !self.client_id.is_empty()
            && self.client_id.len() <= 128
            && self.client_id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err("client_id must be 1-128 printable ASCII characters".into());
        }
        if self.redirect_uris.is_empty() {
            return Err("at least one redirect URI is required".into());
        }
        for uri in self
            .redirect_uris
            .iter()
            .chain(&self.post_logout_redirect_uris)
        {
            check_uri(uri)?;
        }
        if let Some(uri) = &self.backchannel_logout_uri {
            check_uri(uri)?;
        }
        if !self
            .allowed_scopes
            .iter()
            .any(|s| s == idp_vocabulary::scope::OPENID)
        {
            return Err("the scopes must include openid".into());
        }
        if self
            .allowed_scopes
            .iter()
            .any(|s| s == idp_vocabulary::scope::ACCOUNT)
            && self.audience != crate::disclosure::Audience::JmaService
        {
            return Err("the account scope is only for clients of the jma_service audience".into());
        }
        match self.auth_method {
            TokenEndpointAuthMethod::ClientSecretBasic
            | TokenEndpointAuthMethod::ClientSecretPost => {
                let ok = self
                    .secret_digest
                    .as_ref()
                    .is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
                if !ok {
                    return Err(
                        "a client_secret method needs the secret's SHA-256 (64 hex digits)".into(),
                    );
                }
            }
            TokenEndpointAuthMethod::PrivateKeyJwt => {
                if self.jwks.as_ref().is_none_or(|k| k.keys.is_empty()) {
                    return Err("private_key_jwt needs the client's public keys (jwks)".into());
                }
            }
            TokenEndpointAuthMethod::TlsClientAuth => {
                if self.tls_client_auth_subject_dn.is_none()
                    && self.tls_client_certificate_sha256.is_none()
                {
                    return Err(
                        "tls_client_auth needs a certificate subject DN or SHA-256 thumbprint"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether `uri` is registered, by exact string comparison (RFC 9700 §2.1).
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| registered == uri)
    }

    /// Checks a presented secret against the stored digest, in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        match (&self.secret_digest, Secret::from_client_secret(presented)) {
            (Some(digest), Some(secret)) => digests_match(&secret.digest(), digest),
            _ => false,
        }
    }
}

/// A registered URI: absolute https (http only for loopback hosts, RFC 8252 §7.3), no
/// fragment.
fn check_uri(uri: &str) -> Result<(), String> {
    let loopback = matches!(host_of(uri), Some("127.0.0.1" | "[::1]" | "localhost"));
    let scheme_ok = uri.starts_with("https://") || (uri.starts_with("http://") && loopback);
    if !scheme_ok || host_of(uri).is_none() || uri.contains('#') {
        return Err(format!(
            "{uri:?} must be an absolute https URI (http only for loopback) without a fragment"
        ));
    }
    Ok(())
}

/// The host of a URL, used as the default pairwise sector.
pub fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientRegistration {
        ClientRegistration {
            client_id: "hareyaka".into(),
            name: "晴れやかネット".into(),
            secret_digest: Some(
                Secret::from_client_secret("s3cret-value")
                    .expect("valid")
                    .digest(),
            ),
            auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
            redirect_uris: vec!["https://rp.example/cb".into()],
            post_logout_redirect_uris: vec![],
            allowed_scopes: vec!["openid".into()],
            id_token_signed_response_alg: SigningAlg::RS256,
            subject_type: SubjectType::Pairwise,
            sector: "rp.example".into(),
            pre_approved: false,
            audience: crate::disclosure::Audience::RegionalNetwork,
            jwks: None,
            tls_client_auth_subject_dn: None,
            tls_client_certificate_sha256: None,
            backchannel_logout_uri: None,
            refresh_tokens: false,
        }
    }

    #[test]
    fn redirect_uris_match_exactly() {
        let c = client();
        assert!(c.has_redirect_uri("https://rp.example/cb"));
        for near in [
            "https://rp.example/cb/",
            "https://rp.example/cb?x=1",
            "https://rp.example/CB",
            "http://rp.example/cb",
            "https://rp.example/c",
        ] {
            assert!(!c.has_redirect_uri(near), "{near}");
        }
    }

    #[test]
    fn secrets_are_checked_against_the_digest() {
        let c = client();
        assert!(c.secret_matches("s3cret-value"));
        assert!(!c.secret_matches("s3cret-valuf"));
        assert!(!c.secret_matches(""));
        let public = ClientRegistration {
            secret_digest: None,
            ..client()
        };
        assert!(!public.secret_matches("s3cret-value"));
    }

    #[test]
    fn hosts_are_extracted_for_sectors() {
        assert_eq!(host_of("https://rp.example:8443/cb"), Some("rp.example"));
        assert_eq!(host_of("https://user@rp.example/cb"), Some("rp.example"));
        assert_eq!(host_of("https://[::1]:8443/cb"), Some("[::1]"));
        assert_eq!(host_of("not a url"), None);
    }
}
