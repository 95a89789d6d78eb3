//! The OpenID Provider: the authorization endpoint's decisions (login, consent, code), the
//! token endpoint's grants, userinfo, revocation, introspection, RP-initiated and
//! back-channel logout. No HTTP: the server turns [`AuthorizeStep`], [`OAuthError`] and
//! the JSON values here into responses.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use idp_vocabulary::scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::authorize::{AuthorizationRequest, AuthorizeError, RawParams, UntrustedRequest};
use super::claims::japan_date;
use super::client::{ClientRegistration, SigningAlg, host_of};
use super::client_auth::{ClientAuthenticator, ClientCertificate, Presented};
use super::grant::{AccessGrant, Authorization, CodeGrant, GrantPolicy, Grants, Issued, at_hash};
use super::keys::KeySet;
use super::release::{
    Protocol, ReleasePolicy, RelyingParty, RequiredWithheld, Shown, Verification, decide_at_login,
    essential_claims, released_values, requested_claims,
};
use super::subject::subject_for;
use super::{ErrorCode, OAuthError};
use crate::audit::{AuditEvent, AuditLog};
use crate::doctor::DoctorId;
use crate::secret::Secret;
use crate::session::Session;
use crate::store::{
    ClientStore, Consent, ConsentStore, DisclosureSettingsStore, DoctorDirectory, EphemeralStore,
    RefreshTokenStore, StoreError, keep_json, take_json,
};

/// `events` member of a logout token (OIDC Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Provider settings.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub issuer: String,
    /// Secret salt of pairwise subjects (never changes for a deployment).
    pub pairwise_salt: Vec<u8>,
    pub id_token_ttl: Duration,
    pub grants: GrantPolicy,
    /// How long a pending authorization request waits for login and consent.
    pub pending_ttl: Duration,
    /// How long the relying parties of a session are remembered (back-channel logout):
    /// the session's absolute lifetime.
    pub session_ttl: Duration,
}

/// The stores the provider works on.
#[derive(Clone, Debug)]
pub struct ProviderStores {
    /// Releases and consents are recorded here before the answer that depends on them.
    pub audit: AuditLog,
    pub clients: Arc<dyn ClientStore>,
    pub consents: Arc<dyn ConsentStore>,
    pub settings: Arc<dyn DisclosureSettingsStore>,
    pub refresh: Arc<dyn RefreshTokenStore>,
    pub doctors: Arc<dyn DoctorDirectory>,
    pub ephemeral: Arc<dyn EphemeralStore>,
}

/// What the authorization endpoint does next.
#[derive(Debug)]
pub enum AuthorizeStep {
    /// Show an error page; never redirect (unknown client, unregistered redirect URI).
    Untrusted(UntrustedRequest),
    /// Send the browser to the client: a code or an error, with `state` and `iss`.
    Redirect(String),
    /// The doctor must log in (again); then continue with `pending`.
    Login { pending: Secret },
    /// The doctor must consent.
    Consent(ConsentPrompt),
    /// The client requires claims that are withheld: show the doctor why, then send the
    /// browser to `redirect` (the client's redirect URI with `access_denied`).
    RequiredWithheld {
        refusal: RequiredWithheld,
        redirect: String,
    },
    /// The pending request is unknown or expired, or belongs to another doctor.
    PendingExpired,
    /// A store is down.
    Unavailable,
}

/// What the consent page shows.
#[derive(Debug)]
pub struct ConsentPrompt {
    pub pending: Secret,
    pub client_name: String,
    pub client_id: String,
    /// Claim names the client would receive.
    pub claims: Vec<String>,
    /// Whether the client asks for the doctor's account API (scope `account`).
    pub manages_account: bool,
    pub ui_locales: Vec<String>,
    /// Where the answer sends the browser (the page's form may lead there).
    pub redirect_uri: String,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    request: AuthorizationRequest,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// What the consent page showed (a pending request waiting for consent).
    #[serde(default)]
    shown: Option<Shown>,
}

/// The token endpoint's successful response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

/// The token endpoint's form parameters.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

/// A back-channel logout to deliver.
#[derive(Debug)]
pub struct BackchannelLogout {
    pub client_id: String,
    pub uri: String,
    pub logout_token: String,
}

/// Where an RP-initiated logout goes afterwards.
#[derive(Debug, PartialEq, Eq)]
pub enum LogoutTarget {
    /// The registered post-logout redirect URI (with `state`).
    Client(String),
    /// The IdP's own "logged out" page.
    Page,
}

/// The OpenID Provider.
#[derive(Debug)]
pub struct Provider {
    settings: ProviderSettings,
    stores: ProviderStores,
    keys: ArcSwap<KeySet>,
    grants: Grants,
    authenticator: ClientAuthenticator,
    release: Arc<dyn ReleasePolicy>,
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(v));
        sep = '&';
    }
    out
}

/// Percent-encoding of a query component (RFC 3986 unreserved characters kept).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` decoding of one component.
pub fn form_decode(value: &str) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl Provider {
    pub fn new(
        settings: ProviderSettings,
        stores: ProviderStores,
        keys: KeySet,
        release: Arc<dyn ReleasePolicy>,
        assertion_audiences: Vec<String>,
    ) -> Self {
        let grants = Grants::new(
            stores.ephemeral.clone(),
            stores.refresh.clone(),
            settings.grants,
            stores.audit.clone(),
        );
        let authenticator = ClientAuthenticator::new(
            stores.clients.clone(),
            stores.ephemeral.clone(),
            assertion_audiences,
        );
        Self {
            settings,
            stores,
            keys: ArcSwap::from_pointee(keys),
            grants,
            authenticator,
            release,
        }
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    pub fn stores(&self) -> &ProviderStores {
        &self.stores
    }

    /// The keys in force (JWKS, discovery).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Installs a new key set (rotation, reload).
    pub fn set_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
    }

    /// The `sub` a client sees for a doctor.
    pub fn subject(&self, client: &ClientRegistration, doctor: &DoctorId) -> String {
        let sector = if client.sector.is_empty() {
            client
                .redirect_uris
                .first()
                .and_then(|u| host_of(u))
                .unwrap_or(&client.client_id)
        } else {
            &client.sector
        };
        subject_for(
            doctor,
            client.subject_type,
            sector,
            &self.settings.pairwise_salt,
        )
    }

    // ----- authorization endpoint -------------------------------------------------

    /// A new authorization request.
    pub async fn authorize(
        &self,
        params: &RawParams,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> AuthorizeStep {
        let client = match params.client_id() {
            Some(id) => match self.stores.clients.client(id).await {
                Ok(client) => client,
                Err(_) => return AuthorizeStep::Unavailable,
            },
            None => None,
        };
        let request = match AuthorizationRequest::parse(params, |_| client) {
            Ok((request, _)) => request,
            Err(AuthorizeError::Untrusted(e)) => return AuthorizeStep::Untrusted(e),
            Err(AuthorizeError::Redirect(e)) => {
                return AuthorizeStep::Redirect(self.error_redirect(
                    &e.redirect_uri,
                    e.state.as_deref(),
                    &e.error,
                ));
            }
        };
        self.decide(request, now, session, now, false).await
    }

    /// Continues a pending request after the login.
    pub async fn resume(
        &self,
        pending: &str,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> AuthorizeStep {
        match self.take_pending(pending).await {
            Ok(Some(p)) => {
                self.decide(p.request, p.created_at, session, now, false)
                    .await
            }
            Ok(None) => AuthorizeStep::PendingExpired,
            Err(_) => AuthorizeStep::Unavailable,
        }
    }

    /// The doctor's answer on the consent page.
    pub async fn answer_consent(
        &self,
        pending: &str,
        session: Option<&Session>,
        approved: bool,
        now: OffsetDateTime,
    ) -> AuthorizeStep {
        let p = match self.take_pending(pending).await {
            Ok(Some(p)) => p,
            Ok(None) => return AuthorizeStep::PendingExpired,
            Err(_) => return AuthorizeStep::Unavailable,
        };
        let Some(session) = session else {
            return AuthorizeStep::PendingExpired;
        };
        if !approved {
            return AuthorizeStep::Redirect(self.error_redirect(
                &p.request.redirect_uri,
                p.request.state.as_deref(),
                &OAuthError::new(ErrorCode::AccessDenied, "the doctor declined"),
            ));
        }
        let client = match self.stores.clients.client(&p.request.client_id).await {
            Ok(Some(client)) => client,
            Ok(None) => return AuthorizeStep::PendingExpired,
            Err(_) => return AuthorizeStep::Unavailable,
        };
        // The doctor consented to what the page showed; a request that showed no consent
        // page cannot be answered.
        let Some(shown) = p.shown else {
            return AuthorizeStep::PendingExpired;
        };
        let mut scopes = p.request.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let consent = Consent::given(session, &client.client_id, scopes, shown, now);
        if self.stores.consents.put_consent(&consent).await.is_err()
            || self
                .stores
                .audit
                .record(AuditEvent::consent_given(&consent, Protocol::Oidc))
                .await
                .is_err()
        {
            return AuthorizeStep::Unavailable;
        }
        self.decide(p.request, p.created_at, Some(session), now, true)
            .await
    }

    async fn take_pending(&self, pending: &str) -> Result<Option<Pending>, StoreError> {
        take_json(self.stores.ephemeral.as_ref(), "authz", pending).await
    }

    async fn keep_pending(&self, pending: &Pending) -> Result<Secret, StoreError> {
        keep_json(
            self.stores.ephemeral.as_ref(),
            "authz",
            pending,
            self.settings.pending_ttl,
        )
        .await
    }

    fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &OAuthError,
    ) -> String {
        let mut params = vec![
            ("error", error.code.as_str()),
            ("error_description", error.description.as_str()),
        ];
        if let Some(state) = state {
            params.push(("state", state));
        }
        params.push(("iss", &self.settings.issuer));
        redirect_with(redirect_uri, &params)
    }

    async fn decide(
        &self,
        request: AuthorizationRequest,
        created_at: OffsetDateTime,
        session: Option<&Session>,
        now: OffsetDateTime,
        consent_answered: bool,
    ) -> AuthorizeStep {
        let fail = |code: ErrorCode, description: &str| {
            AuthorizeStep::Redirect(self.error_redirect(
                &request.redirect_uri,
                request.state.as_deref(),
                &OAuthError::new(code, description),
            ))
        };
        let fresh_enough = |s: &Session| {
            let fresh_login = !request.prompt.login || s.auth_time >= created_at;
            let within_max_age = request.max_age.is_none_or(|max| {
                (now - s.auth_time).whole_seconds() <= i64::try_from(max).unwrap_or(i64::MAX)
            });
            fresh_login && within_max_age
        };
        let Some(session) = session.filter(|s| fresh_enough(s)) else {
            if request.prompt.none {
                return fail(ErrorCode::LoginRequired, "the doctor is not logged in");
            }
            let pending = Pending {
                request,
                created_at,
                shown: None,
            };
            return match self.keep_pending(&pending).await {
                Ok(pending) => AuthorizeStep::Login { pending },
                Err(_) => AuthorizeStep::Unavailable,
            };
        };
        let client = match self.stores.clients.client(&request.client_id).await {
            Ok(Some(client)) => client,
            Ok(None) => return AuthorizeStep::Untrusted(UntrustedRequest::UnknownClient),
            Err(_) => return AuthorizeStep::Unavailable,
        };
        let requested = requested_claims(&client, &request.scopes, request.claims.as_ref());
        // A pre-approved client needs no stored consent.
        let consent = if client.pre_approved {
            None
        } else {
            match self
                .stores
                .consents
                .consent(&session.doctor_id, &client.client_id)
                .await
            {
                Ok(consent) => consent,
                Err(_) => return AuthorizeStep::Unavailable,
            }
        };
        let Ok(decision) = decide_at_login(
            self.release.as_ref(),
            self.stores.settings.as_ref(),
            RelyingParty::client(&client),
            &requested,
            session,
            consent.as_ref(),
        )
        .await
        else {
            return AuthorizeStep::Unavailable;
        };
        // Essential claims withheld by the policy or the doctor: a clear refusal, not a
        // login that breaks later at the relying party.
        let missing = decision.missing_required(&essential_claims(request.claims.as_ref()));
        if !missing.is_empty() {
            let refusal = RequiredWithheld {
                relying_party: client.name.clone(),
                claims: missing,
            };
            let redirect = self.error_redirect(
                &request.redirect_uri,
                request.state.as_deref(),
                &OAuthError::new(
                    ErrorCode::AccessDenied,
                    refusal.description("essential claims"),
                ),
            );
            // With prompt=none nothing may be shown: the error goes back at once.
            if request.prompt.none {
                return AuthorizeStep::Redirect(redirect);
            }
            return AuthorizeStep::RequiredWithheld { refusal, redirect };
        }
        let scopes_consented = client.pre_approved
            || consent.as_ref().is_some_and(|c| {
                request
                    .scopes
                    .iter()
                    .all(|s| c.scopes.iter().any(|x| x == s))
            });
        let must_ask = !client.pre_approved
            && !consent_answered
            && (request.prompt.consent || !decision.askable().is_empty() || !scopes_consented);
        if must_ask {
            if request.prompt.none {
                return fail(ErrorCode::ConsentRequired, "the doctor has not consented");
            }
            let claims = decision.consentable();
            let manages_account = request.scopes.iter().any(|s| s == scope::ACCOUNT);
            let prompt_locales = request.ui_locales.clone();
            let (client_name, client_id) = (client.name.clone(), client.client_id.clone());
            let redirect_uri = request.redirect_uri.clone();
            let pending = Pending {
                request,
                created_at,
                shown: Some(decision.shown()),
            };
            return match self.keep_pending(&pending).await {
                Ok(pending) => AuthorizeStep::Consent(ConsentPrompt {
                    pending,
                    client_name,
                    client_id,
                    claims,
                    manages_account,
                    ui_locales: prompt_locales,
                    redirect_uri,
                }),
                Err(_) => AuthorizeStep::Unavailable,
            };
        }
        // Nothing is released unrecorded: the record is durable before the code exists.
        let event = AuditEvent::release(session, &RelyingParty::client(&client), &decision);
        if self.stores.audit.record(event).await.is_err() {
            return AuthorizeStep::Unavailable;
        }
        let grant = CodeGrant::new(&request, session, decision.released);
        let code = match self.grants.issue_code(&grant).await {
            Ok(code) => code,
            Err(_) => return AuthorizeStep::Unavailable,
        };
        if self
            .remember_client(&session.sid, &client.client_id)
            .await
            .is_err()
        {
            return AuthorizeStep::Unavailable;
        }
        let mut params = vec![("code", code.dangerous_expose())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        params.push(("iss", &self.settings.issuer));
        AuthorizeStep::Redirect(redirect_with(&request.redirect_uri, &params))
    }

    /// Remembers that `client_id` received tokens in the session `sid` (back-channel logout).
    async fn remember_client(&self, sid: &str, client_id: &str) -> Result<(), StoreError> {
        let key = format!("session-rps:{sid}");
        let mut clients: BTreeSet<String> = match self.stores.ephemeral.get(&key).await? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => BTreeSet::new(),
        };
        if clients.insert(client_id.to_owned()) {
            let value =
                serde_json::to_vec(&clients).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.stores
                .ephemeral
                .put(&key, &value, self.settings.session_ttl)
                .await?;
        }
        Ok(())
    }

    // ----- token endpoint ---------------------------------------------------------

    /// Authenticates the client of a token, revocation or introspection request.
    pub async fn authenticate_client(
        &self,
        presented: &Presented,
        now: OffsetDateTime,
    ) -> Result<ClientRegistration, OAuthError> {
        self.authenticator.authenticate(presented, now).await
    }

    /// The token endpoint (RFC 6749 §3.2, §4.1.3, §6).
    pub async fn token(
        &self,
        form: &TokenForm,
        presented: &Presented,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, OAuthError> {
        let grant_type = form
            .grant_type
            .as_deref()
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, "grant_type is required"))?;
        if !matches!(grant_type, "authorization_code" | "refresh_token") {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "only authorization_code and refresh_token are supported",
            ));
        }
        let client = self.authenticate_client(presented, now).await?;
        // RFC 8705 §3: tokens of mTLS clients are bound to their certificate.
        let cnf = presented
            .certificate
            .as_ref()
            .filter(|_| client.auth_method == super::client::TokenEndpointAuthMethod::TlsClientAuth)
            .map(ClientCertificate::x5t_s256);
        let certificate_bound = cnf.is_some();
        let issued = if grant_type == "authorization_code" {
            let code = form
                .code
                .as_deref()
                .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, "code is required"))?;
            self.grants
                .redeem(
                    code,
                    &client,
                    form.redirect_uri.as_deref(),
                    form.code_verifier.as_deref(),
                    cnf,
                    now,
                )
                .await?
        } else {
            if !client.refresh_tokens {
                return Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "this client may not use refresh tokens",
                ));
            }
            let token = form.refresh_token.as_deref().ok_or_else(|| {
                OAuthError::new(ErrorCode::InvalidRequest, "refresh_token is required")
            })?;
            let issued = self.grants.refresh(token, &client, cnf, now).await?;
            if let Some(scope) = &form.scope {
                let narrower = scope
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .all(|s| issued.authorization.scopes.iter().any(|x| x == s));
                if !narrower {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        "a refresh cannot widen the scope",
                    ));
                }
            }
            issued
        };
        let id_token = self.id_token(&client, &issued, now).await?;
        // Nothing leaves the token endpoint unrecorded.
        let event = AuditEvent::tokens_issued(
            &issued.authorization,
            grant_type,
            issued.refresh_token.is_some(),
            certificate_bound,
        );
        if self.stores.audit.record(event).await.is_err() {
            return Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "try again later",
            ));
        }
        Ok(TokenResponse {
            access_token: issued.access_token.dangerous_expose().to_owned(),
            token_type: "Bearer",
            expires_in: issued.expires_in.as_secs(),
            refresh_token: issued
                .refresh_token
                .as_ref()
                .map(|t| t.dangerous_expose().to_owned()),
            id_token: Some(id_token),
            scope: issued.authorization.scopes.join(" "),
        })
    }

    async fn profile_claims(
        &self,
        authorization: &Authorization,
        now: OffsetDateTime,
    ) -> Result<Map<String, Value>, OAuthError> {
        let doctor = self
            .stores
            .doctors
            .find(&authorization.doctor_id)
            .await
            .map_err(super::grant::server_error)?
            .ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the doctor record no longer exists",
                )
            })?;
        Ok(released_values(
            &doctor.profile,
            Some(Verification {
                card: &authorization.card,
                auth_time: authorization.auth_time,
            }),
            &authorization.released,
            japan_date(now),
        ))
    }

    async fn id_token(
        &self,
        client: &ClientRegistration,
        issued: &Issued,
        now: OffsetDateTime,
    ) -> Result<String, OAuthError> {
        let a = &issued.authorization;
        let alg = client.id_token_signed_response_alg;
        let keys = self.keys();
        let signer = keys.signer(alg).ok_or_else(|| {
            OAuthError::new(
                ErrorCode::ServerError,
                "no signing key for the client's algorithm",
            )
        })?;
        let mut claims = self.profile_claims(a, now).await?;
        let ttl = i64::try_from(self.settings.id_token_ttl.as_secs()).unwrap_or(300);
        claims.insert("iss".into(), json!(self.settings.issuer));
        claims.insert("sub".into(), json!(self.subject(client, &a.doctor_id)));
        claims.insert("aud".into(), json!(client.client_id));
        claims.insert("azp".into(), json!(client.client_id));
        claims.insert("iat".into(), json!(unix(now)));
        claims.insert("exp".into(), json!(unix(now) + ttl));
        claims.insert("auth_time".into(), json!(unix(a.auth_time)));
        claims.insert("acr".into(), json!(a.acr));
        claims.insert("amr".into(), json!(a.amr));
        claims.insert("sid".into(), json!(a.sid));
        claims.insert("at_hash".into(), json!(at_hash(&issued.access_token, alg)));
        if let Some(nonce) = &issued.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        signer
            .sign("JWT", &claims)
            .map_err(|_| OAuthError::new(ErrorCode::ServerError, "signing failed"))
    }

    // ----- userinfo, introspection, revocation ------------------------------------

    /// The live grant behind a bearer token, checking the certificate binding
    /// (RFC 8705 §3): a bound token is only good with its certificate.
    pub async fn bearer(
        &self,
        token: &str,
        certificate: Option<&ClientCertificate>,
        now: OffsetDateTime,
    ) -> Result<AccessGrant, OAuthError> {
        let invalid = || OAuthError::new(ErrorCode::InvalidToken, "the access token is not valid");
        let grant = self
            .grants
            .access(token, now)
            .await
            .map_err(super::grant::server_error)?
            .ok_or_else(invalid)?;
        if let Some(bound) = &grant.cnf_x5t_s256 {
            let presented = certificate.map(ClientCertificate::x5t_s256);
            if presented.as_deref() != Some(bound.as_str()) {
                return Err(invalid());
            }
        }
        Ok(grant)
    }

    /// The live grant behind a bearer token for a resource that needs `needed`: the token
    /// must carry the scope, and its client must still be registered with it (an
    /// administrator who takes a scope away ends its tokens' use at once).
    pub async fn bearer_with_scope(
        &self,
        token: &str,
        certificate: Option<&ClientCertificate>,
        needed: &str,
        now: OffsetDateTime,
    ) -> Result<AccessGrant, OAuthError> {
        let grant = self.bearer(token, certificate, now).await?;
        let insufficient = || {
            OAuthError::new(
                ErrorCode::InsufficientScope,
                format!("the access token lacks the {needed} scope"),
            )
        };
        if !grant.authorization.scopes.iter().any(|s| s == needed) {
            return Err(insufficient());
        }
        let client = self
            .stores
            .clients
            .client(&grant.authorization.client_id)
            .await
            .map_err(super::grant::server_error)?
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidToken, "the client is gone"))?;
        if !client.allowed_scopes.iter().any(|s| s == needed) {
            return Err(insufficient());
        }
        Ok(grant)
    }

    /// The UserInfo response (OIDC Core §5.3).
    pub async fn userinfo(
        &self,
        token: &str,
        certificate: Option<&ClientCertificate>,
        now: OffsetDateTime,
    ) -> Result<Map<String, Value>, OAuthError> {
        let grant = self.bearer(token, certificate, now).await?;
        let a = &grant.authorization;
        let client = self
            .stores
            .clients
            .client(&a.client_id)
            .await
            .map_err(super::grant::server_error)?
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidToken, "the client is gone"))?;
        let mut claims = self
            .profile_claims(a, now)
            .await
            .map_err(|e| OAuthError::new(ErrorCode::InvalidToken, e.description))?;
        claims.insert("sub".into(), json!(self.subject(&client, &a.doctor_id)));
        Ok(claims)
    }

    /// RFC 7662 introspection for an authenticated client: only its own tokens are shown
    /// as active.
    pub async fn introspect(
        &self,
        client: &ClientRegistration,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Value, OAuthError> {
        let inactive = json!({"active": false});
        if let Some(grant) = self
            .grants
            .access(token, now)
            .await
            .map_err(super::grant::server_error)?
        {
            if grant.authorization.client_id != client.client_id {
                return Ok(inactive);
            }
            let mut out = self.introspection(client, &grant.authorization, "access_token");
            out.insert("iat".into(), json!(unix(grant.issued_at)));
            out.insert("exp".into(), json!(unix(grant.expires_at)));
            if let Some(x5t) = grant.cnf_x5t_s256 {
                out.insert("cnf".into(), json!({"x5t#S256": x5t}));
            }
            return Ok(Value::Object(out));
        }
        if let Some((record, authorization)) = self
            .grants
            .refresh_grant(token, now)
            .await
            .map_err(super::grant::server_error)?
        {
            if record.client_id != client.client_id {
                return Ok(inactive);
            }
            let mut out = self.introspection(client, &authorization, "refresh_token");
            out.insert("iat".into(), json!(unix(record.issued_at)));
            out.insert("exp".into(), json!(unix(record.expires_at)));
            return Ok(Value::Object(out));
        }
        Ok(inactive)
    }

    fn introspection(
        &self,
        client: &ClientRegistration,
        a: &Authorization,
        token_type: &str,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("active".into(), json!(true));
        out.insert("scope".into(), json!(a.scopes.join(" ")));
        out.insert("client_id".into(), json!(a.client_id));
        out.insert("sub".into(), json!(self.subject(client, &a.doctor_id)));
        out.insert("iss".into(), json!(self.settings.issuer));
        out.insert("token_type".into(), json!(token_type));
        out.insert("acr".into(), json!(a.acr));
        out.insert("auth_time".into(), json!(unix(a.auth_time)));
        out
    }

    /// RFC 7009 revocation.
    pub async fn revoke(
        &self,
        client: &ClientRegistration,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(), OAuthError> {
        self.grants.revoke(token, &client.client_id, now).await
    }

    // ----- logout -----------------------------------------------------------------

    /// Checks an RP-initiated logout request (OIDC RP-Initiated Logout 1.0 §2): the
    /// `id_token_hint` must be one of ours (expiry ignored), and a post-logout redirect URI
    /// must be registered for its audience (or for `client_id`).
    pub fn end_session_target(
        &self,
        id_token_hint: Option<&str>,
        client_id: Option<&str>,
        post_logout_redirect_uri: Option<&str>,
        state: Option<&str>,
        clients: &[ClientRegistration],
    ) -> Result<LogoutTarget, OAuthError> {
        let invalid = |d: &str| OAuthError::new(ErrorCode::InvalidRequest, d);
        let hinted_client = match id_token_hint {
            Some(hint) => Some(
                self.verify_own_id_token(hint)
                    .ok_or_else(|| invalid("id_token_hint was not issued by this provider"))?,
            ),
            None => None,
        };
        let audience = match (hinted_client.as_deref(), client_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid("client_id does not match id_token_hint"));
            }
            (Some(a), _) => Some(a.to_owned()),
            (None, b) => b.map(str::to_owned),
        };
        let Some(uri) = post_logout_redirect_uri else {
            return Ok(LogoutTarget::Page);
        };
        let client = audience
            .and_then(|aud| clients.iter().find(|c| c.client_id == aud))
            .ok_or_else(|| invalid("post_logout_redirect_uri needs id_token_hint or client_id"))?;
        if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
            return Err(invalid("post_logout_redirect_uri is not registered"));
        }
        let mut params = Vec::new();
        if let Some(state) = state {
            params.push(("state", state));
        }
        Ok(LogoutTarget::Client(redirect_with(uri, &params)))
    }

    /// The audience of an ID token this provider signed (signature checked against the
    /// published keys; expiry ignored, as a logout hint may be old).
    fn verify_own_id_token(&self, token: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Hint {
            iss: String,
            aud: String,
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let keys = self.keys();
        let jwks = keys.jwks();
        let jwk = jwks.find(header.kid.as_deref()?)?;
        // Only the algorithms this provider signs with.
        SigningAlg::ALL
            .into_iter()
            .find(|a| super::keys::algorithm(*a) == header.alg)?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iss", "aud"]);
        validation.set_issuer(&[&self.settings.issuer]);
        let hint = jsonwebtoken::decode::<Hint>(token, &key, &validation)
            .ok()?
            .claims;
        (hint.iss == self.settings.issuer).then_some(hint.aud)
    }

    /// Ends the session `session`: the logout tokens to deliver to each relying party of
    /// the session that registered a back-channel logout URI.
    pub async fn logout_session(
        &self,
        session: &Session,
        now: OffsetDateTime,
    ) -> Vec<BackchannelLogout> {
        let key = format!("session-rps:{}", session.sid);
        let clients: BTreeSet<String> = match self.stores.ephemeral.take(&key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        let mut out = Vec::new();
        for client_id in clients {
            let Ok(Some(client)) = self.stores.clients.client(&client_id).await else {
                continue;
            };
            let Some(uri) = client.backchannel_logout_uri.clone() else {
                continue;
            };
            let keys = self.keys();
            let Some(signer) = keys.signer(client.id_token_signed_response_alg) else {
                continue;
            };
            let claims = json!({
                "iss": self.settings.issuer,
                "aud": client.client_id,
                "iat": unix(now),
                "exp": unix(now) + 120,
                "jti": Secret::generate().digest(),
                "sub": self.subject(&client, &session.doctor_id),
                "sid": session.sid,
                "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
            });
            if let Ok(logout_token) = signer.sign("logout+jwt", &claims) {
                out.push(BackchannelLogout {
                    client_id,
                    uri,
                    logout_token,
                });
            }
        }
        out
    }
}
