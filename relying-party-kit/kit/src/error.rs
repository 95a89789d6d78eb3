//! The kit's one error type. Messages name what failed in spec terms; they never carry a
//! token, a code, a secret or a response body (bodies can hold tokens).

use openidconnect::ClaimsVerificationError;
use openidconnect::core::{CoreAuthErrorResponseType, CoreErrorResponseType};

use crate::http::HttpError;

/// Everything that can go wrong in the relying party's side of an OpenID Connect login.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kit was configured with something unusable (a malformed URL or PEM, an
    /// authentication method the provider does not offer, a TLS setup rustls refuses).
    #[error("configuration: {0}")]
    Config(String),
    /// The provider could not be reached or answered at the transport level wrongly.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// OpenID Connect Discovery failed: unreachable, malformed, or naming another issuer.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The provider's metadata lacks something a login needs.
    #[error("the provider metadata has no {0}")]
    MissingEndpoint(&'static str),
    /// The callback's `state` is missing or is not the one this login sent (RFC 6749 §10.12).
    #[error("the callback's state does not belong to this login")]
    StateMismatch,
    /// The callback has no `iss` although the provider announces
    /// `authorization_response_iss_parameter_supported` (RFC 9207 §2.4).
    #[error("the callback has no iss parameter although the provider always sends one")]
    MissingIssuer,
    /// The callback's `iss` is not this provider's issuer (RFC 9207 §2.4: a mix-up attack).
    #[error("the callback's iss parameter names another issuer")]
    IssuerMismatch,
    /// The provider answered the authorization request with an error (OIDC Core §3.1.2.6).
    #[error("the provider refused the login: {}{}", error.as_ref(), description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Authorization {
        error: CoreAuthErrorResponseType,
        description: Option<String>,
    },
    /// The callback carries neither `code` nor `error`.
    #[error("the callback carries neither code nor error")]
    MissingCode,
    /// The callback's query string could not be read.
    #[error("malformed callback: {0}")]
    MalformedCallback(String),
    /// The token endpoint answered with an OAuth error (RFC 6749 §5.2).
    #[error("the token endpoint refused: {}{}", error.as_ref(), description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenEndpoint {
        error: CoreErrorResponseType,
        description: Option<String>,
    },
    /// The token endpoint's answer was not a usable token response.
    #[error("unusable token response: {0}")]
    TokenResponse(String),
    /// The token response of an authorization code grant carries no ID token.
    #[error("the token response carries no ID token")]
    MissingIdToken,
    /// The ID token failed validation (OIDC Core §3.1.3.7): signature, algorithm, issuer,
    /// audience, expiry, nonce, acr or auth_time.
    #[error("invalid ID token: {0}")]
    IdToken(#[source] ClaimsVerificationError),
    /// The ID token names a signing key the provider does not publish, even after the JWKS
    /// was fetched again (or a refetch was refused because one happened in the last minute).
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownSigningKey,
    /// The ID token's `at_hash` does not match the access token (OIDC Core §3.1.3.8).
    #[error("the ID token's at_hash does not match the access token")]
    AccessTokenHashMismatch,
    /// A refreshed ID token or a userinfo response names another subject than the login
    /// (OIDC Core §12.2, §5.3.2).
    #[error("the provider answered for another subject")]
    SubjectMismatch,
    /// The userinfo endpoint's answer was unusable.
    #[error("userinfo: {0}")]
    UserInfo(String),
}

impl Error {
    /// The `ClaimsVerificationError` when this is an ID token failure.
    pub fn id_token_failure(&self) -> Option<&ClaimsVerificationError> {
        match self {
            Self::IdToken(e) => Some(e),
            _ => None,
        }
    }
}
