//! The relying-party kit of the HPKI IdP: an OpenID Connect client that ends in a verified
//! [`Doctor`].
//!
//! ```text
//! let http = HttpClient::builder().extra_root_pem(ca_pem)?.build()?;
//! let rp = OidcClient::discover(issuer, client_id, ClientAuth::SecretBasic(secret), redirect_uri, http).await?;
//! // GET /login
//! let (url, pending) = rp.begin(&[scope::PROFILE, scope::HPKI], &AuthParams::hpki_card());
//! // keep `pending` in an encrypted cookie, redirect to `url`
//! // GET /callback?code&state&iss
//! let login = rp.finish(pending, &CallbackParams::from_query(query)?).await?;
//! let doctor = Doctor::from_login(&login);
//! ```
//!
//! The kit speaks only the protocol (OpenID Connect Core, Discovery, RFC 7636, RFC 9207,
//! RP-Initiated Logout); it never links the IdP's own crates.

mod account;
mod client;
mod doctor;
mod error;
mod http;
#[cfg(feature = "redis")]
mod redis_store;
mod replay;
mod saml;
mod seal;
mod sessions;
pub mod web;

pub use account::{
    AccountApi, Consent, DisclosureEntry, DisclosurePage, DisclosureSettings, Setting, SettingItem,
};
pub use client::{
    ALLOWED_ALGS, AuthParams, CallbackParams, Claims, ClientAuth, IdTokenHint,
    JWKS_REFETCH_INTERVAL, Login, LogoutNotice, OidcClient, PendingLogin, Refreshed, UserInfo,
    VerifiedIdToken,
};
pub use doctor::{CardCertificate, Doctor, JapaneseName, MedicalAssociation, TRUST_FRAMEWORK_HPKI};
pub use error::Error;
pub use http::{HttpClient, HttpClientBuilder, HttpError, MAX_BODY_BYTES};
#[cfg(feature = "redis")]
pub use redis_store::{DEFAULT_SESSION_LIFETIME, RedisReplayCache, RedisSessions};
pub use replay::{Clock, MemoryReplayCache, ReplayCache, ReplayVerdict, SystemClock};
pub use saml::{
    MAX_METADATA_BYTES, MAX_RELAY_STATE, SAML_MAX_DEPTH, SAML_MAX_ELEMENTS,
    SAML_MAX_SOAP_LOGOUT_BYTES, SamlAuthnOptions, SamlIdp, SamlLogin, SamlLogoutRequest,
    SamlLogoutStatus, SamlNameId, SamlPendingLogin, SamlServiceProvider, SamlSigningKey,
    SamlSpConfig, saml_soap_fault, saml_uri,
};
pub use seal::Sealer;
pub use sessions::{
    MAX_MEMORY_SESSIONS, MemorySessions, OidcTokens, SamlSession, Session, SessionStore,
};
pub use web::{RelyingParty, RequireRole, SignedIn, WebConfig, WebError};

/// The actix-web the [`web`] integration is built on (apps and tests use the same version).
pub use actix_web;
/// The shared vocabulary (scopes, claim names, acr values, hcRole).
pub use idp_vocabulary;
/// The spec nouns the kit's API uses, from openidconnect.
pub use openidconnect::core::{CoreAuthErrorResponseType, CoreAuthPrompt, CoreErrorResponseType};
pub use openidconnect::{
    AccessToken, AuthenticationContextClass, AuthenticationMethodReference,
    ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, LanguageTag, LoginHint,
    PostLogoutRedirectUrl, RedirectUrl, RefreshToken, Scope, SignatureVerificationError,
    SubjectIdentifier,
};
/// The redis client [`RedisSessions::from_connection`] takes a connection of.
#[cfg(feature = "redis")]
pub use redis;
