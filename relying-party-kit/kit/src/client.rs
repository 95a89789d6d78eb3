//! The OpenID Connect relying party: discovery, the authorization code flow with PKCE,
//! ID token validation, userinfo, refresh and RP-initiated logout.
//!
//! Invariants (each cited at its decision point):
//! - PKCE S256 on every authorization request (RFC 7636 §4.2; RFC 9700 §2.1.1).
//! - The callback's `state` is compared in constant time before anything else is read.
//! - RFC 9207: a callback's `iss` must equal the issuer; a missing `iss` is refused when the
//!   provider announces `authorization_response_iss_parameter_supported`.
//! - ID tokens are accepted only through openidconnect's verifier, with an explicit algorithm
//!   allow-list ([`ALLOWED_ALGS`]; never `none`, never HMAC), plus `at_hash` and `azp`
//!   checks that openidconnect leaves to the caller.
//! - The JWKS is cached; an unknown `kid` triggers at most one refetch per minute.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idp_vocabulary::{claim, scope};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthErrorResponseType, CoreAuthPrompt, CoreAuthenticationFlow,
    CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim,
    CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreSubjectIdentifierType,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthUrl,
    AuthenticationContextClass, AuthenticationMethodReference, AuthorizationCode,
    ClaimsVerificationError, Client, ClientId, ClientSecret, CsrfToken, DiscoveryError,
    EmptyExtraTokenFields, EndSessionUrl, EndpointNotSet, EndpointSet, IdToken, IdTokenFields,
    IdTokenVerifier, IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl, LanguageTag, LoginHint,
    LogoutRequest, Nonce, NonceVerifier, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, SubjectIdentifier,
    TokenUrl, UserInfoError, UserInfoUrl, http,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use url::Url;

use crate::Error;
use crate::http::{HttpClient, HttpError};

/// The ID token signature algorithms the kit accepts (OIDC Core §3.1.3.7 step 7): the
/// asymmetric ones the IdP signs with. `none` and the HMAC family are never accepted.
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 4] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// How long after a `kid`-triggered JWKS fetch another one may happen.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Clock skew tolerated for `iat` in the future and for `max_age`.
const CLOCK_SKEW_SECS: i64 = 60;

/// The claims of an ID token or userinfo response, by claim name.
pub type Claims = Map<String, Value>;

/// Every claim outside openidconnect's standard set, kept verbatim.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(transparent)]
struct OtherClaims(Map<String, Value>);
impl AdditionalClaims for OtherClaims {}

/// Provider metadata beyond openidconnect's core set.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct ExtraProviderMetadata {
    /// RFC 9207 §3.
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    /// OpenID Connect RP-Initiated Logout 1.0 §2.1.
    end_session_endpoint: Option<EndSessionUrl>,
    /// RFC 8414 §2 (PKCE methods).
    code_challenge_methods_supported: Option<Vec<String>>,
    /// RFC 8705 §5.
    mtls_endpoint_aliases: Option<MtlsEndpointAliases>,
}
impl AdditionalProviderMetadata for ExtraProviderMetadata {}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct MtlsEndpointAliases {
    token_endpoint: Option<TokenUrl>,
    userinfo_endpoint: Option<UserInfoUrl>,
}

type ProviderMetadataWithExtras = ProviderMetadata<
    ExtraProviderMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type HpkiIdToken = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type HpkiTokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type InnerClient<HasUserInfoUrl> = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    HpkiTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    HasUserInfoUrl,
>;

/// How the relying party authenticates to the token endpoint (OIDC Core §9, RFC 8705 §2).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: the secret in an HTTP Basic header (the default of OIDC Core).
    SecretBasic(ClientSecret),
    /// `client_secret_post`: the secret in the request body.
    SecretPost(ClientSecret),
    /// `tls_client_auth`: the client certificate configured on the [`HttpClient`].
    TlsClientAuth,
}

impl ClientAuth {
    fn method(&self) -> CoreClientAuthMethod {
        match self {
            Self::SecretBasic(_) => CoreClientAuthMethod::ClientSecretBasic,
            Self::SecretPost(_) => CoreClientAuthMethod::ClientSecretPost,
            Self::TlsClientAuth => CoreClientAuthMethod::Extension("tls_client_auth".into()),
        }
    }
}

/// Optional parameters of the authentication request (OIDC Core §3.1.2.1).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AuthParams {
    /// `acr_values`. When set, the ID token's `acr` must be one of them or the login fails.
    pub acr_values: Vec<AuthenticationContextClass>,
    /// `ui_locales`, in order of preference.
    pub ui_locales: Vec<LanguageTag>,
    /// `prompt`.
    pub prompt: Vec<CoreAuthPrompt>,
    /// `max_age`. When set, the ID token must carry an `auth_time` no older than this.
    pub max_age: Option<Duration>,
    /// `login_hint`.
    pub login_hint: Option<LoginHint>,
    /// Claims asked for by name in the ID token (the `claims` parameter, OIDC Core §5.5),
    /// beyond those of the scopes; `essential` ones make the IdP refuse a login without them.
    pub id_token_claims: Vec<(String, bool)>,
}

impl AuthParams {
    /// A login that must be an HPKI card login (`acr_values` = the card acr), with the
    /// provider's pages in Japanese.
    pub fn hpki_card() -> Self {
        Self {
            acr_values: vec![AuthenticationContextClass::new(
                idp_vocabulary::authn::ACR_HPKI_CARD.to_owned(),
            )],
            ui_locales: vec![LanguageTag::new("ja".to_owned())],
            ..Self::default()
        }
    }

    /// Adds an `acr_values` entry.
    pub fn acr_value(mut self, acr: &str) -> Self {
        self.acr_values
            .push(AuthenticationContextClass::new(acr.to_owned()));
        self
    }

    /// Adds a `ui_locales` entry (a BCP 47 tag such as `ja`).
    pub fn ui_locale(mut self, tag: &str) -> Self {
        self.ui_locales.push(LanguageTag::new(tag.to_owned()));
        self
    }

    /// Adds a `prompt` value.
    pub fn prompt(mut self, prompt: CoreAuthPrompt) -> Self {
        self.prompt.push(prompt);
        self
    }

    /// Sets `max_age`.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Asks for `claim` by name in the ID token (`essential`: the login fails without it).
    pub fn id_token_claim(mut self, claim: &str, essential: bool) -> Self {
        self.id_token_claims.push((claim.to_owned(), essential));
        self
    }

    /// Asks for `verified_claims`: the card certificate behind the login
    /// ([`crate::Doctor::certificate`]).
    pub fn with_card_certificate(self) -> Self {
        self.id_token_claim(idp_vocabulary::claim::VERIFIED_CLAIMS, false)
    }

    /// The `claims` parameter's value, if any claim is asked for by name.
    fn claims_parameter(&self) -> Option<String> {
        if self.id_token_claims.is_empty() {
            return None;
        }
        let id_token: Map<String, Value> = self
            .id_token_claims
            .iter()
            .map(|(name, essential)| {
                let request = if *essential {
                    serde_json::json!({"essential": true})
                } else {
                    Value::Null
                };
                (name.clone(), request)
            })
            .collect();
        Some(serde_json::json!({"id_token": id_token}).to_string())
    }
}

/// What the relying party must remember between [`OidcClient::begin`] and
/// [`OidcClient::finish`]: keep it in an encrypted (private) cookie or a server-side session.
/// A signed-only cookie shows the nonce and PKCE verifier to the browser, which is tolerable
/// (it is the same browser) but not best practice.
#[derive(Debug, Deserialize, Serialize)]
pub struct PendingLogin {
    state: CsrfToken,
    nonce: Nonce,
    pkce_verifier: PkceCodeVerifier,
    #[serde(default)]
    acr_values: Vec<AuthenticationContextClass>,
    #[serde(default)]
    max_age_secs: Option<u64>,
}

impl PendingLogin {
    /// The `state` sent with the request (to key server-side storage by it).
    pub fn state(&self) -> &CsrfToken {
        &self.state
    }
}

/// The authorization response as it arrives at the redirect URI (OIDC Core §3.1.2.5,
/// §3.1.2.6; RFC 9207 `iss`). Deserialize it from the query string (for example with
/// actix-web's `web::Query`) or use [`CallbackParams::from_query`].
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct CallbackParams {
    pub code: Option<AuthorizationCode>,
    pub state: Option<CsrfToken>,
    pub iss: Option<String>,
    pub error: Option<CoreAuthErrorResponseType>,
    pub error_description: Option<String>,
}

impl CallbackParams {
    /// Parses a query string (without the leading `?`). A parameter given twice is refused
    /// (RFC 6749 §3.1); unknown parameters are ignored.
    pub fn from_query(query: &str) -> Result<Self, Error> {
        let mut out = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            let duplicate = match name.as_ref() {
                "code" => out.code.replace(AuthorizationCode::new(value)).is_some(),
                "state" => out.state.replace(CsrfToken::new(value)).is_some(),
                "iss" => out.iss.replace(value).is_some(),
                "error" => out.error.replace(auth_error_code(&value)).is_some(),
                "error_description" => out.error_description.replace(value).is_some(),
                _ => false,
            };
            if duplicate {
                return Err(Error::MalformedCallback(format!(
                    "parameter {name} appears more than once"
                )));
            }
        }
        Ok(out)
    }
}

/// An `error` code of the authorization response; codes outside OIDC Core §3.1.2.6 and
/// RFC 6749 §4.1.2.1 are kept as `Extension`.
fn auth_error_code(value: &str) -> CoreAuthErrorResponseType {
    serde_json::from_value(Value::String(value.to_owned()))
        .unwrap_or_else(|_| CoreAuthErrorResponseType::Extension(value.to_owned()))
}

/// An ID token as the provider issued it, kept to send back as `id_token_hint` at logout.
/// Its `Debug` is redacted.
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct IdTokenHint(String);

impl IdTokenHint {
    /// The compact JWS.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdTokenHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdTokenHint([redacted])")
    }
}

/// An ID token that passed validation. Only the kit builds one.
#[derive(Clone)]
#[non_exhaustive]
pub struct VerifiedIdToken {
    /// `sub`.
    pub subject: SubjectIdentifier,
    /// Every claim of the token (standard and HPKI ones, language-tagged names as
    /// `family_name#ja-Kana-JP`). Read them through [`crate::Doctor`] rather than by name.
    pub claims: Claims,
    /// `acr`.
    pub acr: Option<AuthenticationContextClass>,
    /// `amr`.
    pub amr: Vec<AuthenticationMethodReference>,
    /// `auth_time`.
    pub auth_time: Option<OffsetDateTime>,
    /// The token itself, for `id_token_hint`.
    pub raw: IdTokenHint,
}

impl fmt::Debug for VerifiedIdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claim values are personal data: name them, do not print them.
        f.debug_struct("VerifiedIdToken")
            .field("subject", &self.subject)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("acr", &self.acr)
            .field("amr", &self.amr)
            .field("auth_time", &self.auth_time)
            .finish_non_exhaustive()
    }
}

/// A completed login: the validated ID token and the tokens of the code exchange.
#[derive(Clone)]
#[non_exhaustive]
pub struct Login {
    /// `sub` of the ID token (pairwise per sector at this IdP).
    pub subject: SubjectIdentifier,
    /// Every claim of the ID token.
    pub id_token_claims: Claims,
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    /// When the access token expires, if the provider said (`expires_in`).
    pub expires_at: Option<OffsetDateTime>,
    /// The scopes granted, if the provider listed them.
    pub scopes: Option<Vec<Scope>>,
    pub acr: Option<AuthenticationContextClass>,
    pub amr: Vec<AuthenticationMethodReference>,
    pub auth_time: Option<OffsetDateTime>,
    /// The raw ID token, for [`OidcClient::end_session_url`].
    pub id_token: IdTokenHint,
    /// `sid`: the IdP's session, named again by back-channel logout tokens.
    pub sid: Option<String>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("subject", &self.subject)
            .field(
                "id_token_claims",
                &self.id_token_claims.keys().collect::<Vec<_>>(),
            )
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("acr", &self.acr)
            .field("amr", &self.amr)
            .field("auth_time", &self.auth_time)
            .field("sid", &self.sid.is_some())
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Whether the doctor logged in with an HPKI card and PIN.
    pub fn is_hpki_card_login(&self) -> bool {
        self.acr
            .as_ref()
            .is_some_and(|acr| acr.as_str() == idp_vocabulary::authn::ACR_HPKI_CARD)
    }
}

/// The outcome of a refresh token grant.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Refreshed {
    pub access_token: AccessToken,
    /// The new refresh token when the provider rotated it; keep the old one otherwise.
    pub refresh_token: Option<RefreshToken>,
    pub expires_at: Option<OffsetDateTime>,
    /// The new ID token, validated, when the provider sent one (OIDC Core §12.2).
    pub id_token: Option<VerifiedIdToken>,
}

/// Claims from the userinfo endpoint, whose `sub` was checked against the login's.
#[derive(Clone)]
#[non_exhaustive]
pub struct UserInfo {
    pub subject: SubjectIdentifier,
    pub claims: Claims,
}

impl fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserInfo")
            .field("subject", &self.subject)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A back-channel logout token that passed validation: end the local sessions it names
/// (OpenID Connect Back-Channel Logout 1.0 §2.7). At least one of the two is present.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogoutNotice {
    /// `sub`: every session of this subject.
    pub subject: Option<SubjectIdentifier>,
    /// `sid`: the sessions that came from this IdP session.
    pub sid: Option<String>,
}

/// The largest logout token read (a few hundred bytes in practice).
const MAX_LOGOUT_TOKEN_LEN: usize = 8 * 1024;
/// The longest a logout token may claim to live.
const MAX_LOGOUT_TOKEN_LIFETIME_SECS: i64 = 600;

#[derive(Deserialize)]
struct LogoutClaims {
    exp: i64,
    iat: i64,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    nonce: Option<Value>,
    #[serde(default)]
    events: Option<Map<String, Value>>,
}

/// The event member a logout token must carry (§2.4).
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

struct JwksState {
    keys: CoreJsonWebKeySet,
    generation: u64,
    last_refetch: Option<Instant>,
}

struct JwksCache {
    uri: JsonWebKeySetUrl,
    state: tokio::sync::Mutex<JwksState>,
}

impl JwksCache {
    async fn snapshot(&self) -> (CoreJsonWebKeySet, u64) {
        let state = self.state.lock().await;
        (state.keys.clone(), state.generation)
    }

    /// Fetches the JWKS again because a token named a key not in `seen_generation`, unless
    /// another caller already did, or one such fetch happened within the last minute.
    async fn refetch_for_unknown_kid(
        &self,
        seen_generation: u64,
        http: &HttpClient,
    ) -> Result<Option<CoreJsonWebKeySet>, Error> {
        let mut state = self.state.lock().await;
        if state.generation != seen_generation {
            return Ok(Some(state.keys.clone()));
        }
        if state
            .last_refetch
            .is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL)
        {
            return Ok(None);
        }
        state.last_refetch = Some(Instant::now());
        let keys = JsonWebKeySet::fetch_async(&self.uri, http)
            .await
            .map_err(discovery_error)?;
        state.keys = keys.clone();
        state.generation += 1;
        Ok(Some(keys))
    }
}

/// What a particular ID token must satisfy beyond the provider-wide checks.
struct Expectations<'a> {
    nonce: Option<&'a Nonce>,
    acr_values: &'a [AuthenticationContextClass],
    max_age: Option<Duration>,
    access_token: Option<&'a AccessToken>,
}

/// A relying party of one OpenID Provider. Cheap to clone; clones share the JWKS cache.
#[derive(Clone)]
pub struct OidcClient {
    http: HttpClient,
    issuer: IssuerUrl,
    client_id: ClientId,
    auth: ClientAuth,
    redirect_uri: RedirectUrl,
    authorization_endpoint: AuthUrl,
    token_endpoint: TokenUrl,
    userinfo_endpoint: Option<UserInfoUrl>,
    end_session_endpoint: Option<EndSessionUrl>,
    iss_parameter_supported: bool,
    jwks: Arc<JwksCache>,
    /// The `jti`s of accepted logout tokens, each until its token expires.
    logout_jtis: Arc<dyn crate::ReplayCache>,
    clock: Arc<dyn crate::Clock>,
}

impl fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .field("auth", &self.auth)
            .field("redirect_uri", &self.redirect_uri.as_str())
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Reads the provider's discovery document and JWKS (OpenID Connect Discovery 1.0 §4)
    /// and checks that the provider can serve this relying party: a token endpoint, the
    /// `code` response type, PKCE S256 and the chosen client authentication method.
    pub async fn discover(
        issuer: IssuerUrl,
        client_id: ClientId,
        client_auth: ClientAuth,
        redirect_uri: RedirectUrl,
        http: HttpClient,
    ) -> Result<Self, Error> {
        if matches!(client_auth, ClientAuth::TlsClientAuth) && !http.has_client_identity() {
            return Err(Error::Config(
                "tls_client_auth needs a client certificate on the HTTP client".into(),
            ));
        }
        // Discovery §4.3: openidconnect checks that the document's issuer equals ours.
        let metadata = ProviderMetadataWithExtras::discover_async(issuer.clone(), &http)
            .await
            .map_err(discovery_error)?;
        let extra = metadata.additional_metadata();

        if !metadata
            .response_types_supported()
            .iter()
            .any(|types| types.as_slice() == [CoreResponseType::Code])
        {
            return Err(Error::Discovery(
                "the provider does not offer the code response type".into(),
            ));
        }
        if let Some(methods) = &extra.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(Error::Discovery(
                "the provider does not offer PKCE S256".into(),
            ));
        }
        // Discovery §3: an absent list means client_secret_basic only.
        let offered = metadata
            .token_endpoint_auth_methods_supported()
            .cloned()
            .unwrap_or_else(|| vec![CoreClientAuthMethod::ClientSecretBasic]);
        let method = client_auth.method();
        if !offered.contains(&method) {
            return Err(Error::Config(format!(
                "the provider does not offer {} at its token endpoint",
                method.as_ref()
            )));
        }

        let tls_auth = matches!(client_auth, ClientAuth::TlsClientAuth);
        let aliases = extra.mtls_endpoint_aliases.as_ref().filter(|_| tls_auth);
        let token_endpoint = aliases
            .and_then(|a| a.token_endpoint.clone())
            .or_else(|| metadata.token_endpoint().cloned())
            .ok_or(Error::MissingEndpoint("token endpoint"))?;
        let userinfo_endpoint = aliases
            .and_then(|a| a.userinfo_endpoint.clone())
            .or_else(|| metadata.userinfo_endpoint().cloned());

        Ok(Self {
            issuer,
            client_id,
            auth: client_auth,
            redirect_uri,
            authorization_endpoint: metadata.authorization_endpoint().clone(),
            token_endpoint,
            userinfo_endpoint,
            end_session_endpoint: extra.end_session_endpoint.clone(),
            iss_parameter_supported: extra.authorization_response_iss_parameter_supported,
            jwks: Arc::new(JwksCache {
                uri: metadata.jwks_uri().clone(),
                state: tokio::sync::Mutex::new(JwksState {
                    keys: metadata.jwks().clone(),
                    generation: 0,
                    last_refetch: None,
                }),
            }),
            http,
            logout_jtis: Arc::new(crate::MemoryReplayCache::default()),
            clock: Arc::new(crate::SystemClock),
        })
    }

    /// The same client remembering logout-token `jti`s in `cache` (default: bounded, in this
    /// process; share one, e.g. `RedisReplayCache`, between the processes of a relying
    /// party so that a token is accepted once by all of them).
    pub fn with_logout_replay_cache(mut self, cache: Arc<dyn crate::ReplayCache>) -> Self {
        self.logout_jtis = cache;
        self
    }

    /// The same client reading the time from `clock` for every expiry and freshness
    /// check (ID tokens, logout tokens): for a host whose clock is known to be off, and
    /// for tests of expiry that do not wait.
    pub fn with_clock(mut self, clock: Arc<dyn crate::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validates an ID token the provider issued to this client, as at login but without
    /// a nonce: signature against the JWKS, algorithm, `iss`, `aud`, `azp`, `exp`, `iat`
    /// (for a token kept and presented again, e.g. as `id_token_hint`).
    pub async fn validate_id_token(&self, token: &IdTokenHint) -> Result<VerifiedIdToken, Error> {
        let parsed: HpkiIdToken =
            serde_json::from_value(Value::String(token.0.clone())).map_err(|_| {
                Error::IdToken(ClaimsVerificationError::Unsupported("not a JWT".into()))
            })?;
        self.verify_id_token(
            &parsed,
            &Expectations {
                nonce: None,
                acr_values: &[],
                max_age: None,
                access_token: None,
            },
        )
        .await
    }

    /// The issuer this client trusts.
    pub fn issuer(&self) -> &IssuerUrl {
        &self.issuer
    }

    /// The authorization URL to redirect the browser to, and what to remember until the
    /// callback. `openid` is always requested; PKCE is always S256.
    pub fn begin(&self, scopes: &[&str], params: &AuthParams) -> (Url, PendingLogin) {
        let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client(CoreJsonWebKeySet::default());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(
                scopes
                    .iter()
                    .filter(|s| **s != scope::OPENID)
                    .map(|s| Scope::new((*s).to_owned())),
            )
            .set_pkce_challenge(challenge);
        for acr in &params.acr_values {
            request = request.add_auth_context_value(acr.clone());
        }
        for tag in &params.ui_locales {
            request = request.add_ui_locale(tag.clone());
        }
        for prompt in &params.prompt {
            request = request.add_prompt(prompt.clone());
        }
        if let Some(max_age) = params.max_age {
            request = request.set_max_age(max_age);
        }
        if let Some(hint) = &params.login_hint {
            request = request.set_login_hint(hint.clone());
        }
        if let Some(claims) = params.claims_parameter() {
            request = request.add_extra_param("claims", claims);
        }
        let (url, state, nonce) = request.url();
        (
            url,
            PendingLogin {
                state,
                nonce,
                pkce_verifier,
                acr_values: params.acr_values.clone(),
                max_age_secs: params.max_age.map(|d| d.as_secs()),
            },
        )
    }

    /// Completes the login from the callback: checks `state` and `iss`, turns an `error`
    /// into [`Error::Authorization`], exchanges the code with the PKCE verifier and
    /// validates the ID token.
    pub async fn finish(
        &self,
        pending: PendingLogin,
        callback: &CallbackParams,
    ) -> Result<Login, Error> {
        // RFC 6749 §10.12 / OIDC Core §3.1.2.7: the state binds the response to this browser.
        // CsrfToken's equality is constant-time (timing-resistant-secret-traits).
        if callback.state.as_ref() != Some(&pending.state) {
            return Err(Error::StateMismatch);
        }
        // RFC 9207 §2.4: applies to error responses too.
        match &callback.iss {
            Some(iss) if iss.as_str() == self.issuer.as_str() => {}
            Some(_) => return Err(Error::IssuerMismatch),
            None if self.iss_parameter_supported => return Err(Error::MissingIssuer),
            None => {}
        }
        if let Some(error) = &callback.error {
            return Err(Error::Authorization {
                error: error.clone(),
                description: callback.error_description.clone(),
            });
        }
        let code = callback.code.clone().ok_or(Error::MissingCode)?;

        let response = self
            .client(CoreJsonWebKeySet::default())
            .exchange_code(code)
            .set_pkce_verifier(pending.pkce_verifier)
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = response
            .extra_fields()
            .id_token()
            .ok_or(Error::MissingIdToken)?;
        let verified = self
            .verify_id_token(
                id_token,
                &Expectations {
                    nonce: Some(&pending.nonce),
                    acr_values: &pending.acr_values,
                    max_age: pending.max_age_secs.map(Duration::from_secs),
                    access_token: Some(response.access_token()),
                },
            )
            .await?;
        let sid = match verified.claims.get(claim::SID) {
            Some(Value::String(sid)) => Some(sid.clone()),
            _ => None,
        };
        Ok(Login {
            sid,
            subject: verified.subject,
            id_token_claims: verified.claims,
            access_token: response.access_token().clone(),
            refresh_token: response.refresh_token().cloned(),
            expires_at: expires_at(response.expires_in()),
            scopes: response.scopes().cloned(),
            acr: verified.acr,
            amr: verified.amr,
            auth_time: verified.auth_time,
            id_token: verified.raw,
        })
    }

    /// Claims from the userinfo endpoint (OIDC Core §5.3), refused unless their `sub` is
    /// `subject` (§5.3.2: token substitution).
    pub async fn userinfo(
        &self,
        access_token: &AccessToken,
        subject: &SubjectIdentifier,
    ) -> Result<UserInfo, Error> {
        let url = self
            .userinfo_endpoint
            .clone()
            .ok_or(Error::MissingEndpoint("userinfo endpoint"))?;
        // openidconnect builds the Authorization header with `expect`: a token the provider
        // sent with characters a header cannot carry would panic there. Refuse it here.
        if http::HeaderValue::from_str(access_token.secret()).is_err() {
            return Err(Error::UserInfo(
                "the access token cannot be sent as a bearer token".into(),
            ));
        }
        let (keys, _) = self.jwks.snapshot().await;
        let claims: openidconnect::UserInfoClaims<OtherClaims, CoreGenderClaim> = self
            .client(keys)
            .set_user_info_url(url)
            .user_info(access_token.clone(), Some(subject.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                UserInfoError::ClaimsVerification(ClaimsVerificationError::InvalidSubject(_)) => {
                    Error::SubjectMismatch
                }
                UserInfoError::Request(e) => Error::Http(e),
                UserInfoError::Response(status, _, message) => {
                    Error::UserInfo(format!("{status}: {message}"))
                }
                UserInfoError::Parse(e) => {
                    Error::UserInfo(format!("malformed response at {}", e.path()))
                }
                other => Error::UserInfo(other.to_string()),
            })?;
        Ok(UserInfo {
            subject: claims.subject().clone(),
            claims: to_claims(&claims)?,
        })
    }

    /// A refresh token grant (RFC 6749 §6). A new ID token, if sent, is validated like the
    /// first and must name the same `subject` (OIDC Core §12.2).
    pub async fn refresh(
        &self,
        refresh_token: &RefreshToken,
        subject: &SubjectIdentifier,
    ) -> Result<Refreshed, Error> {
        let response = self
            .client(CoreJsonWebKeySet::default())
            .exchange_refresh_token(refresh_token)
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = match response.extra_fields().id_token() {
            Some(id_token) => {
                let verified = self
                    .verify_id_token(
                        id_token,
                        &Expectations {
                            nonce: None,
                            acr_values: &[],
                            max_age: None,
                            access_token: Some(response.access_token()),
                        },
                    )
                    .await?;
                if verified.subject != *subject {
                    return Err(Error::SubjectMismatch);
                }
                Some(verified)
            }
            None => None,
        };
        Ok(Refreshed {
            access_token: response.access_token().clone(),
            refresh_token: response.refresh_token().cloned(),
            expires_at: expires_at(response.expires_in()),
            id_token,
        })
    }

    /// The URL to send the browser to for RP-initiated logout (OpenID Connect RP-Initiated
    /// Logout 1.0 §2), with `id_token_hint`, `client_id` and the optional redirect and state.
    pub fn end_session_url(
        &self,
        id_token_hint: &IdTokenHint,
        post_logout_redirect_uri: Option<PostLogoutRedirectUrl>,
        state: Option<CsrfToken>,
    ) -> Result<Url, Error> {
        let endpoint = self
            .end_session_endpoint
            .clone()
            .ok_or(Error::MissingEndpoint("end_session_endpoint"))?;
        // Parsed only to hand it back: the provider validates its own token.
        let hint: HpkiIdToken = serde_json::from_value(Value::String(id_token_hint.0.clone()))
            .map_err(|_| Error::Config("the id_token_hint is not a JWT".into()))?;
        let mut request = LogoutRequest::from(endpoint)
            .set_id_token_hint(&hint)
            .set_client_id(self.client_id.clone());
        if let Some(uri) = post_logout_redirect_uri {
            request = request.set_post_logout_redirect_uri(uri);
        }
        if let Some(state) = state {
            request = request.set_state(state);
        }
        Ok(request.http_get_url())
    }

    /// Validates a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signature with the provider's JWKS (one refetch for an unknown `kid`) and an
    /// asymmetric algorithm only, `typ` `logout+jwt` when present, `iss`, `aud`, `iat`, `exp`
    /// (at most ten minutes ahead), the back-channel logout event, `sub` or `sid`, no
    /// `nonce`, and a `jti` never seen before by this client.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutNotice, Error> {
        use jsonwebtoken::{Algorithm, Validation};
        if token.len() > MAX_LOGOUT_TOKEN_LEN {
            return Err(Error::LogoutToken("too large"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Error::LogoutToken("malformed"))?;
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| !typ.eq_ignore_ascii_case("logout+jwt"))
        {
            return Err(Error::LogoutToken("typ is not logout+jwt"));
        }
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(Error::LogoutToken("algorithm not accepted"));
        }
        let (keys, generation) = self.jwks.snapshot().await;
        let key = match decoding_key(&keys, header.kid.as_deref(), header.alg)? {
            Some(key) => key,
            None => {
                let keys = self
                    .jwks
                    .refetch_for_unknown_kid(generation, &self.http)
                    .await?
                    .ok_or(Error::UnknownSigningKey)?;
                decoding_key(&keys, header.kid.as_deref(), header.alg)?
                    .ok_or(Error::UnknownSigningKey)?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_SECS.unsigned_abs();
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        // Expiry is checked below against the client's clock.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<LogoutClaims>(token, &key, &validation)
            .map_err(|e| {
                Error::LogoutToken(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature",
                    jsonwebtoken::errors::ErrorKind::InvalidIssuer => "issued by another issuer",
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => "issued to another client",
                    _ => "claims do not validate",
                })
            })?
            .claims;
        let now = self.clock.now().unix_timestamp();
        if claims.exp + CLOCK_SKEW_SECS < now {
            return Err(Error::LogoutToken("expired"));
        }
        if claims.iat > now + CLOCK_SKEW_SECS {
            return Err(Error::LogoutToken("issued in the future"));
        }
        if claims.exp > now + MAX_LOGOUT_TOKEN_LIFETIME_SECS {
            return Err(Error::LogoutToken("lives too long"));
        }
        if !claims
            .events
            .as_ref()
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object)
        {
            return Err(Error::LogoutToken("no back-channel logout event"));
        }
        if claims.nonce.is_some() {
            return Err(Error::LogoutToken("carries a nonce"));
        }
        let subject = claims
            .sub
            .filter(|s| !s.is_empty())
            .map(SubjectIdentifier::new);
        let sid = claims.sid.filter(|s| !s.is_empty());
        if subject.is_none() && sid.is_none() {
            return Err(Error::LogoutToken("names neither sub nor sid"));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or(Error::LogoutToken("no jti"))?;
        let keep_until = OffsetDateTime::from_unix_timestamp(claims.exp + CLOCK_SKEW_SECS)
            .map_err(|_| Error::LogoutToken("claims do not validate"))?;
        let now = OffsetDateTime::from_unix_timestamp(now)
            .map_err(|_| Error::LogoutToken("claims do not validate"))?;
        match self
            .logout_jtis
            .check_and_remember(&format!("logout-jti\n{jti}"), keep_until, now)
            .await
        {
            crate::ReplayVerdict::Fresh => Ok(LogoutNotice { subject, sid }),
            crate::ReplayVerdict::Replayed => Err(Error::LogoutTokenReplay),
            crate::ReplayVerdict::Unavailable => {
                Err(Error::LogoutToken("the replay cache cannot remember it"))
            }
        }
    }

    fn client(&self, keys: CoreJsonWebKeySet) -> InnerClient<EndpointNotSet> {
        let client = Client::new(self.client_id.clone(), self.issuer.clone(), keys)
            .set_auth_uri(self.authorization_endpoint.clone())
            .set_token_uri(self.token_endpoint.clone())
            .set_redirect_uri(self.redirect_uri.clone());
        match &self.auth {
            ClientAuth::SecretBasic(secret) => client
                .set_client_secret(secret.clone())
                .set_auth_type(AuthType::BasicAuth),
            ClientAuth::SecretPost(secret) => client
                .set_client_secret(secret.clone())
                .set_auth_type(AuthType::RequestBody),
            // No secret: oauth2 sends client_id in the body; the certificate authenticates.
            ClientAuth::TlsClientAuth => client.set_auth_type(AuthType::RequestBody),
        }
    }

    /// Validates an ID token with the cached JWKS, fetching the JWKS again once when the
    /// token names a key the cache does not hold (OIDC Core §10.1.1: key rotation).
    async fn verify_id_token(
        &self,
        id_token: &HpkiIdToken,
        expect: &Expectations<'_>,
    ) -> Result<VerifiedIdToken, Error> {
        let (keys, generation) = self.jwks.snapshot().await;
        match self.verify_with(keys, id_token, expect) {
            Err(Error::UnknownSigningKey) => {
                match self
                    .jwks
                    .refetch_for_unknown_kid(generation, &self.http)
                    .await?
                {
                    Some(keys) => self.verify_with(keys, id_token, expect),
                    None => Err(Error::UnknownSigningKey),
                }
            }
            other => other,
        }
    }

    fn verify_with(
        &self,
        keys: CoreJsonWebKeySet,
        id_token: &HpkiIdToken,
        expect: &Expectations<'_>,
    ) -> Result<VerifiedIdToken, Error> {
        let now = self.clock.now().unix_timestamp();
        let mut verifier =
            IdTokenVerifier::new_public_client(self.client_id.clone(), self.issuer.clone(), keys)
                .set_allowed_algs(ALLOWED_ALGS)
                .set_time_fn(move || {
                    chrono::DateTime::<chrono::Utc>::from_timestamp(now, 0).unwrap_or_default()
                })
                // §3.1.3.7 step 10: refuse tokens issued in the future.
                .set_issue_time_verifier_fn(move |iat| {
                    if iat.timestamp() > now + CLOCK_SKEW_SECS {
                        Err("the ID token was issued in the future".into())
                    } else {
                        Ok(())
                    }
                });
        let acr_values = expect.acr_values;
        if !acr_values.is_empty() {
            // §3.1.3.7 step 12: the acr requested must be the acr asserted.
            verifier = verifier.set_auth_context_verifier_fn(move |acr| match acr {
                Some(acr) if acr_values.contains(acr) => Ok(()),
                Some(acr) => Err(format!("acr {} was not requested", acr.as_str())),
                None => Err("no acr although acr_values were requested".into()),
            });
        }
        if let Some(max_age) = expect.max_age {
            // §3.1.3.7 step 13.
            let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            verifier = verifier.set_auth_time_verifier_fn(move |auth_time| match auth_time {
                Some(t)
                    if now.saturating_sub(t.timestamp())
                        <= max_age.saturating_add(CLOCK_SKEW_SECS) =>
                {
                    Ok(())
                }
                Some(_) => Err("the authentication is older than max_age".into()),
                None => Err("no auth_time although max_age was requested".into()),
            });
        }
        let expected_nonce = expect.nonce;
        let nonce_check = move |nonce: Option<&Nonce>| match expected_nonce {
            Some(expected) => expected.verify(nonce),
            // Refresh (§12.2): no nonce was sent, so none is checked.
            None => Ok(()),
        };
        let claims = id_token
            .claims(&verifier, nonce_check)
            .map_err(claims_error)?;

        // §3.1.3.7 step 5 (openidconnect leaves azp to the caller).
        if let Some(azp) = claims.authorized_party()
            && azp != &self.client_id
        {
            return Err(Error::IdToken(ClaimsVerificationError::InvalidAudience(
                "azp names another client".into(),
            )));
        }
        // §3.1.3.8: at_hash, when present, must match the access token.
        if let (Some(expected), Some(access_token)) =
            (claims.access_token_hash(), expect.access_token)
        {
            let signature = |e: SignatureVerificationError| {
                Error::IdToken(ClaimsVerificationError::SignatureVerification(e))
            };
            let alg = id_token.signing_alg().map_err(signature)?;
            let key = id_token.signing_key(&verifier).map_err(signature)?;
            let actual = AccessTokenHash::from_token(access_token, alg, key)
                .map_err(|e| Error::IdToken(ClaimsVerificationError::Other(e.to_string())))?;
            if actual != *expected {
                return Err(Error::AccessTokenHashMismatch);
            }
        }

        let raw = match serde_json::to_value(id_token) {
            Ok(Value::String(raw)) => IdTokenHint(raw),
            _ => {
                return Err(Error::TokenResponse(
                    "the ID token does not serialise".into(),
                ));
            }
        };
        Ok(VerifiedIdToken {
            subject: claims.subject().clone(),
            claims: to_claims(claims)?,
            acr: claims.auth_context_ref().cloned(),
            amr: claims.auth_method_refs().cloned().unwrap_or_default(),
            auth_time: claims
                .auth_time()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()),
            raw,
        })
    }
}

/// The key of `keys` a JWS with `kid` and `alg` names: by `kid`, or the only key when the
/// header has none. `None` when no key matches (the caller may refetch the JWKS).
fn decoding_key(
    keys: &CoreJsonWebKeySet,
    kid: Option<&str>,
    alg: jsonwebtoken::Algorithm,
) -> Result<Option<jsonwebtoken::DecodingKey>, Error> {
    // Key by key: one key jsonwebtoken cannot read does not hide the others.
    let set: Vec<jsonwebtoken::jwk::Jwk> = keys
        .keys()
        .iter()
        .filter_map(|key| {
            serde_json::to_value(key)
                .and_then(serde_json::from_value)
                .ok()
        })
        .collect();
    let jwk = match kid {
        Some(kid) => set.iter().find(|k| k.common.key_id.as_deref() == Some(kid)),
        None if set.len() == 1 => set.first(),
        None => None,
    };
    let Some(jwk) = jwk else {
        return Ok(None);
    };
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a.to_string() != format!("{alg:?}"))
    {
        return Err(Error::LogoutToken("the key is for another algorithm"));
    }
    jsonwebtoken::DecodingKey::from_jwk(jwk)
        .map(Some)
        .map_err(|_| Error::LogoutToken("the provider's key is unusable"))
}

fn to_claims<T: Serialize>(claims: &T) -> Result<Claims, Error> {
    match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::TokenResponse(
            "claims do not form a JSON object".into(),
        )),
    }
}

fn expires_at(expires_in: Option<Duration>) -> Option<OffsetDateTime> {
    let expires_in = time::Duration::try_from(expires_in?).ok()?;
    OffsetDateTime::now_utc().checked_add(expires_in)
}

fn claims_error(e: ClaimsVerificationError) -> Error {
    match e {
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => Error::UnknownSigningKey,
        other => Error::IdToken(other),
    }
}

fn discovery_error(e: DiscoveryError<HttpError>) -> Error {
    match e {
        DiscoveryError::Request(e) => Error::Http(e),
        // The body is dropped: only the status and openidconnect's reason are kept.
        DiscoveryError::Response(status, _, message) => {
            Error::Discovery(format!("{status}: {message}"))
        }
        DiscoveryError::Parse(e) => Error::Discovery(format!("malformed document at {}", e.path())),
        other => Error::Discovery(other.to_string()),
    }
}

fn token_error(
    e: RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>,
) -> Error {
    match e {
        RequestTokenError::ServerResponse(response) => Error::TokenEndpoint {
            error: response.error().clone(),
            description: response.error_description().cloned(),
        },
        RequestTokenError::Request(e) => Error::Http(e),
        // The body may hold tokens: keep only where parsing failed.
        RequestTokenError::Parse(e, _) => {
            Error::TokenResponse(format!("malformed response at {}", e.path()))
        }
        RequestTokenError::Other(message) => Error::TokenResponse(message),
    }
}
