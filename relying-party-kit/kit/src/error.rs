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
    /// A back-channel logout token failed validation (OIDC Back-Channel Logout 1.0 §2.6).
    #[error("invalid logout token: {0}")]
    LogoutToken(&'static str),
    /// A back-channel logout token's `jti` was seen before (§2.6 step 8: replay).
    #[error("the logout token was already used")]
    LogoutTokenReplay,
    /// The relying party's session store failed or is full.
    #[error("session store: {0}")]
    Session(&'static str),
    /// The IdP's account API answered with an error (RFC 6750 or OAuth-style `error`).
    #[error("the account API answered {status}: {error}")]
    Api { status: u16, error: String },

    // ----- SAML 2.0 service provider (`SamlServiceProvider`) -----------------------------
    /// The `SAMLResponse` is larger than `SamlSpConfig::max_response_bytes`, or a SOAP
    /// logout request larger than `SAML_MAX_SOAP_LOGOUT_BYTES`.
    #[error("the SAML message is larger than allowed")]
    SamlResponseTooLarge,
    /// The message is not base64, not well-formed XML, or lacks a required part.
    #[error("malformed SAML message: {0}")]
    SamlMalformed(&'static str),
    /// The XML guard refused the message before any parser ran: a DTD or entity, a
    /// processing instruction, control characters, not UTF-8, too deep or too many elements.
    #[error("the SAML message was refused before parsing: {0}")]
    SamlXmlRefused(&'static str),
    /// The structure check refused the Response (signature wrapping and its relatives): a
    /// signature or assertion out of place, a reference to another element, a forbidden
    /// transform, an ID used twice, the signed element not being the one read. The same
    /// for a LogoutRequest's signature.
    #[error("the SAML message's structure is refused: {0}")]
    SamlStructure(&'static str),
    /// A signature or digest algorithm outside the allow-list (no SHA-1).
    #[error("the SAML message uses a signature or digest algorithm that is not accepted")]
    SamlSignatureAlgorithm,
    /// The assertion (or a Response without one, or a LogoutRequest) carries no signature.
    #[error("the SAML message is not signed")]
    SamlUnsigned,
    /// A signature does not verify with the IdP's metadata certificates.
    #[error("the SAML message's signature does not verify with the IdP's certificates")]
    SamlSignature,
    /// The Response's `Destination` is missing or is not this SP's ACS URL, or a
    /// LogoutRequest's `Destination` is not this SP's SOAP SLO URL.
    #[error("the SAML message's Destination is not this service provider's endpoint")]
    SamlDestination,
    /// The Response, the assertion or a LogoutRequest names another issuer than the IdP's
    /// entity ID.
    #[error("the SAML message was issued by another entity than the IdP")]
    SamlIssuer,
    /// The IdP answered with a status other than Success (e.g. `RequestDenied` when the
    /// doctor declined, `NoPassive`): the status code URIs, top-level first.
    #[error("the IdP answered with SAML status {}", codes.join(" / "))]
    SamlStatus { codes: Vec<String> },
    /// The Response carries no assertion or more than one.
    #[error("the SAML response must carry exactly one assertion")]
    SamlAssertionCount,
    /// The assertion's audience restriction does not name this SP's entity ID (or a
    /// LogoutRequest's NameID names another SP in `SPNameQualifier`).
    #[error("the SAML message is not meant for this service provider")]
    SamlAudience,
    /// No bearer `SubjectConfirmation` fits (missing, or `Recipient` not the ACS URL).
    #[error("no bearer SubjectConfirmation of the SAML assertion fits: {0}")]
    SamlSubjectConfirmation(&'static str),
    /// `InResponseTo` is not the ID of the pending request.
    #[error("the SAML response answers another request")]
    SamlInResponseTo,
    /// A Response without a pending request while IdP-initiated login is not enabled, or
    /// an unsolicited Response that names a request.
    #[error("unsolicited SAML response refused")]
    SamlUnsolicited,
    /// `NotBefore` (or a LogoutRequest's `IssueInstant`) lies in the future (beyond the
    /// allowed skew).
    #[error("the SAML message is not yet valid")]
    SamlNotYetValid,
    /// `NotOnOrAfter` (conditions, subject confirmation or session) has passed, or a
    /// LogoutRequest's `NotOnOrAfter`, or its `IssueInstant` is older than
    /// `SamlSpConfig::max_logout_age`.
    #[error("the SAML message has expired")]
    SamlExpired,
    /// The pending request is older than `SamlSpConfig::max_login_age`.
    #[error("the SAML login request is too old")]
    SamlLoginExpired,
    /// The assertion (or the LogoutRequest's ID) was already accepted once.
    #[error("the SAML message was already used")]
    SamlReplay,
    /// The replay cache could not remember the assertion (full or failing): refused.
    #[error("the replay cache cannot remember the SAML assertion")]
    SamlReplayCacheUnavailable,
    /// The assertion's subject (or a LogoutRequest) has no `NameID`.
    #[error("the SAML message has no NameID")]
    SamlNameId,
    /// A SOAP back-channel logout that is not a SOAP 1.1 envelope whose Body holds one
    /// `samlp:LogoutRequest` (answered with a SOAP fault, not a SAML status).
    #[error("not a SOAP envelope carrying one LogoutRequest: {0}")]
    SamlSoap(&'static str),
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
