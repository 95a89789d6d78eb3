//! actix-web integration: login, callback, logout and back-channel logout routes (OpenID
//! Connect), metadata, login, assertion consumer and SOAP back-channel logout routes (SAML
//! 2.0), the [`Doctor`] and [`SignedIn`] extractors, and the [`RequireRole`] guard.
//!
//! ```text
//! let rp = web::Data::new(RelyingParty::new(oidc, Sealer::new(&key), Arc::new(MemorySessions::default()), WebConfig::default()));
//! // or SAML only:  RelyingParty::new_saml(sp, sealer, sessions, config)
//! // or both:       RelyingParty::new(oidc, ...).with_saml(sp)
//! App::new()
//!     .app_data(rp.clone())
//!     .configure(|cfg| rp.routes(cfg))                 // /auth/login, /auth/callback, /saml/acs, ...
//!     .route("/", web::get().to(|doctor: Doctor| async move { ... }))
//!     .service(web::scope("/clinical").wrap(RequireRole::medical_doctor()) ...)
//! ```
//!
//! Invariants:
//! - The pending login (state, nonce, PKCE verifier, where to return) travels in a sealed
//!   (AES-256-GCM), HttpOnly, SameSite=Lax cookie that lives ten minutes and opens once.
//! - The pending SAML login (request ID, RelayState, where to return) travels in its own
//!   sealed cookie, SameSite=None (see [`saml_acs`] for why and why that is safe).
//! - The session cookie holds only a random 256-bit ID; a new one is issued at every login
//!   (no fixation). Idle and absolute timeouts (and a SAML `SessionNotOnOrAfter`) are
//!   enforced on every request.
//! - `return_to` is a local path only (no open redirect); it never travels in RelayState.
//! - Logout is a POST carrying the session's anti-CSRF token.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::body::EitherBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idp_vocabulary::hpki::HcRole;
use openidconnect::{AccessToken, PostLogoutRedirectUrl};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::{AuthParams, CallbackParams, OidcClient, PendingLogin};
use crate::saml::{SamlAuthnOptions, SamlLogoutStatus, SamlPendingLogin, SamlServiceProvider};
use crate::seal::Sealer;
use crate::sessions::{OidcTokens, SamlSession, Session, SessionStore};
use crate::{Doctor, Error};

/// How long a started login may take before its cookie no longer opens.
pub const LOGIN_COOKIE_LIFETIME: Duration = Duration::from_secs(600);
/// How often the kit sweeps expired sessions out of the store (at a login).
const SWEEP_INTERVAL_SECS: i64 = 300;
/// The SAML login cookie (`__Host-{prefix}-saml-login`): SameSite=None, see [`saml_acs`].
const SAML_LOGIN_COOKIE: &str = "saml-login";
/// The largest ACS form body read: the SP's `max_response_bytes` base64- and form-encoded
/// (at most ×4/3 ×3), plus room for RelayState.
fn max_acs_body(sp: &SamlServiceProvider) -> usize {
    sp.config()
        .max_response_bytes
        .saturating_mul(4)
        .saturating_add(4096)
}
/// A session's last use is written back at most this often.
const TOUCH_INTERVAL_SECS: i64 = 60;
/// An access token this close to expiry is refreshed before use.
const REFRESH_MARGIN_SECS: i64 = 30;

/// How the relying party's web side behaves. Build it with struct update syntax from
/// `WebConfig::default()`.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Scopes asked for at login (`openid` is always added).
    pub scopes: Vec<String>,
    /// Further authentication request parameters; the default asks for the HPKI card acr.
    pub auth_params: AuthParams,
    /// Whether to complete the doctor with the userinfo endpoint's claims after login.
    pub fetch_userinfo: bool,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, used or not.
    pub absolute_timeout: Duration,
    /// Cookie names are `__Host-{prefix}-session` and `__Host-{prefix}-login`: give every
    /// relying party on the same host its own prefix (cookies do not tell ports apart).
    pub cookie_prefix: String,
    /// `Secure` cookies with the `__Host-` prefix. Only a plain-HTTP development setup
    /// turns this off.
    pub secure_cookies: bool,
    pub login_path: String,
    pub callback_path: String,
    pub logout_path: String,
    pub backchannel_logout_path: String,
    /// Where a browser lands after login without `return_to`, and after a local logout.
    pub landing_path: String,
    /// Where the IdP sends the browser after RP-initiated logout (must be registered).
    pub post_logout_redirect_uri: Option<PostLogoutRedirectUrl>,
    /// SAML: where the SP metadata is served (`application/samlmetadata+xml`).
    pub saml_metadata_path: String,
    /// SAML: the route that starts a SAML login (`?return_to=`). When the relying party
    /// has no OpenID Connect client, `login_path` starts the SAML login too. The assertion
    /// consumer and single logout routes are the paths of [`crate::SamlSpConfig::acs_url`]
    /// and [`crate::SamlSpConfig::slo_url`], so they cannot disagree with the metadata.
    pub saml_login_path: String,
    /// SAML: what the AuthnRequest asks for; the default asks for the card login
    /// (SmartcardPKI). Its `relay_state` is ignored: the kit sends its own.
    pub saml_authn: SamlAuthnOptions,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            scopes: vec![
                idp_vocabulary::scope::PROFILE.to_owned(),
                idp_vocabulary::scope::HPKI.to_owned(),
            ],
            auth_params: AuthParams::hpki_card(),
            fetch_userinfo: false,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(8 * 60 * 60),
            cookie_prefix: "hpki".to_owned(),
            secure_cookies: true,
            login_path: "/auth/login".to_owned(),
            callback_path: "/auth/callback".to_owned(),
            logout_path: "/auth/logout".to_owned(),
            backchannel_logout_path: "/auth/backchannel-logout".to_owned(),
            landing_path: "/".to_owned(),
            post_logout_redirect_uri: None,
            saml_metadata_path: "/saml/metadata".to_owned(),
            saml_login_path: "/saml/login".to_owned(),
            saml_authn: SamlAuthnOptions::hpki_card(),
        }
    }
}

/// The relying party's web side: put it into the app as `web::Data` and register its
/// routes with [`RelyingParty::routes`]. It logs doctors in with OpenID Connect
/// ([`RelyingParty::new`]), SAML 2.0 ([`RelyingParty::new_saml`]) or both
/// ([`RelyingParty::with_saml`]); either way a login ends in the same kind of [`Session`].
pub struct RelyingParty {
    oidc: Option<OidcClient>,
    saml: Option<SamlServiceProvider>,
    sealer: Sealer,
    sessions: Arc<dyn SessionStore>,
    config: WebConfig,
    rng: SystemRandom,
    last_sweep: AtomicI64,
}

impl fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelyingParty")
            .field("oidc", &self.oidc)
            .field("saml", &self.saml)
            .field("sessions", &self.sessions)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The sealed content of the login cookie.
#[derive(Deserialize, Serialize)]
struct LoginCookie {
    pending: PendingLogin,
    return_to: String,
}

/// The sealed content of the SAML login cookie.
#[derive(Deserialize, Serialize)]
struct SamlLoginCookie {
    pending: SamlPendingLogin,
    return_to: String,
}

impl RelyingParty {
    /// A relying party that logs doctors in with OpenID Connect.
    pub fn new(
        oidc: OidcClient,
        sealer: Sealer,
        sessions: Arc<dyn SessionStore>,
        config: WebConfig,
    ) -> Self {
        Self::with_protocols(Some(oidc), None, sealer, sessions, config)
    }

    /// A relying party that logs doctors in with SAML 2.0 only: `login_path` starts the
    /// SAML login, and there are no callback and back-channel logout routes.
    pub fn new_saml(
        saml: SamlServiceProvider,
        sealer: Sealer,
        sessions: Arc<dyn SessionStore>,
        config: WebConfig,
    ) -> Self {
        Self::with_protocols(None, Some(saml), sealer, sessions, config)
    }

    /// Also offers SAML 2.0 login (at `saml_login_path`) beside OpenID Connect.
    pub fn with_saml(mut self, saml: SamlServiceProvider) -> Self {
        self.saml = Some(saml);
        self
    }

    fn with_protocols(
        oidc: Option<OidcClient>,
        saml: Option<SamlServiceProvider>,
        sealer: Sealer,
        sessions: Arc<dyn SessionStore>,
        config: WebConfig,
    ) -> Self {
        Self {
            oidc,
            saml,
            sealer,
            sessions,
            config,
            rng: SystemRandom::new(),
            last_sweep: AtomicI64::new(0),
        }
    }

    /// The OpenID Connect client (for calls beyond login), if the relying party has one.
    pub fn oidc(&self) -> Option<&OidcClient> {
        self.oidc.as_ref()
    }

    /// The SAML service provider, if the relying party has one.
    pub fn saml(&self) -> Option<&SamlServiceProvider> {
        self.saml.as_ref()
    }

    pub fn config(&self) -> &WebConfig {
        &self.config
    }

    /// The session store (for an app that lists or ends sessions itself).
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Registers the routes: login and logout always; callback and back-channel logout
    /// with OpenID Connect; metadata, SAML login, the assertion consumer (the path of the
    /// SP's ACS URL) and, if the SP has one, single logout (the path of its SLO URL) with
    /// SAML, and the back-channel (SOAP) single logout at the path of its SOAP SLO URL if it
    /// has one. The app must also hold this value as `web::Data<RelyingParty>`.
    pub fn routes(&self, cfg: &mut web::ServiceConfig) {
        let c = &self.config;
        cfg.route(&c.login_path, web::get().to(login))
            .route(&c.logout_path, web::post().to(logout));
        if self.oidc.is_some() {
            cfg.route(&c.callback_path, web::get().to(callback)).route(
                &c.backchannel_logout_path,
                web::post().to(backchannel_logout),
            );
        }
        if let Some(sp) = &self.saml {
            cfg.route(&c.saml_metadata_path, web::get().to(saml_metadata));
            if c.saml_login_path != c.login_path {
                cfg.route(&c.saml_login_path, web::get().to(saml_login));
            }
            // SamlServiceProvider::new checked both URLs.
            if let Ok(acs) = url::Url::parse(&sp.config().acs_url) {
                cfg.route(acs.path(), web::post().to(saml_acs));
            }
            if let Some(Ok(slo)) = sp.config().slo_url.as_deref().map(url::Url::parse) {
                cfg.route(slo.path(), web::route().to(saml_slo));
            }
            if let Some(Ok(soap)) = sp.config().soap_slo_url.as_deref().map(url::Url::parse) {
                cfg.route(soap.path(), web::post().to(saml_soap_logout));
            }
        }
    }

    /// The URL path that starts a login returning to `return_to`.
    pub fn login_url(&self, return_to: &str) -> String {
        format!(
            "{}?{}",
            self.config.login_path,
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return_to", return_to)
                .finish()
        )
    }

    fn cookie_name(&self, what: &str) -> String {
        if self.config.secure_cookies {
            format!("__Host-{}-{what}", self.config.cookie_prefix)
        } else {
            format!("{}-{what}", self.config.cookie_prefix)
        }
    }

    /// The URL path that starts a SAML login returning to `return_to`.
    pub fn saml_login_url(&self, return_to: &str) -> String {
        format!(
            "{}?{}",
            self.config.saml_login_path,
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return_to", return_to)
                .finish()
        )
    }

    fn cookie<'c>(&self, what: &str, value: String, max_age: Duration) -> Cookie<'c> {
        Cookie::build(self.cookie_name(what), value)
            .path("/")
            .secure(self.config.secure_cookies)
            .http_only(true)
            .same_site(if what == SAML_LOGIN_COOKIE {
                // Sent on the IdP's cross-site POST to the ACS: see `saml_acs`.
                SameSite::None
            } else {
                SameSite::Lax
            })
            .max_age(actix_web::cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .finish()
    }

    fn removal<'c>(&self, what: &str) -> Cookie<'c> {
        let mut cookie = self.cookie(what, String::new(), Duration::ZERO);
        cookie.make_removal();
        cookie
    }

    /// Seals `value` into the short-lived login cookie `what` (the OIDC and the SAML login
    /// share this, and its lifetime).
    fn login_cookie<'c, T: Serialize>(&self, what: &str, value: &T) -> Result<Cookie<'c>, Error> {
        let expires = OffsetDateTime::now_utc() + LOGIN_COOKIE_LIFETIME;
        let sealed = self.sealer.seal(&self.cookie_name(what), value, expires)?;
        Ok(self.cookie(what, sealed, LOGIN_COOKIE_LIFETIME))
    }

    /// The value sealed in the login cookie `what` of the request, if it opens.
    fn open_login_cookie<T: serde::de::DeserializeOwned>(
        &self,
        req: &HttpRequest,
        what: &str,
        now: OffsetDateTime,
    ) -> Option<T> {
        let name = self.cookie_name(what);
        req.cookie(&name)
            .and_then(|c| self.sealer.open(&name, c.value(), now))
    }

    fn random_token(&self) -> Result<String, Error> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| Error::Config("no system randomness".into()))?;
        Ok(B64.encode(bytes))
    }

    /// The session of the request, if its cookie names a live one. Ends a session past
    /// its timeouts and records its use (at most once a minute).
    async fn session_of(&self, req: &HttpRequest) -> Result<Option<(String, Session)>, Error> {
        let Some(cookie) = req.cookie(&self.cookie_name("session")) else {
            return Ok(None);
        };
        let id = cookie.value().to_owned();
        if id.len() != 43 {
            return Ok(None);
        }
        let Some(mut session) = self.sessions.get(&id).await? else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        if now - session.created_at > self.config.absolute_timeout
            || now - session.last_seen > self.config.idle_timeout
            || session.login_expired(now)
        {
            self.sessions.remove(&id).await?;
            return Ok(None);
        }
        if (now - session.last_seen).whole_seconds() >= TOUCH_INTERVAL_SECS {
            session.last_seen = now;
            self.sessions.update(&id, session.clone()).await?;
        }
        Ok(Some((id, session)))
    }

    async fn sweep(&self, now: OffsetDateTime) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.unix_timestamp() - last < SWEEP_INTERVAL_SECS
            || self
                .last_sweep
                .compare_exchange(
                    last,
                    now.unix_timestamp(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let _ = self
            .sessions
            .remove_expired(
                now - self.config.absolute_timeout,
                now - self.config.idle_timeout,
            )
            .await;
    }
}

/// What stops a request that needs a signed-in doctor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// No live session: browsers asking for a page are sent to the login route, other
    /// requests get 401.
    #[error("login required")]
    LoginRequired { login_url: String },
    /// Signed in, but the card's role is not one this part of the app admits.
    #[error("the HPKI role does not permit this")]
    RoleNotPermitted { required: Vec<HcRole> },
    /// A form without the session's anti-CSRF token.
    #[error("the form is not from this session")]
    Csrf,
    /// The relying party itself failed (session store, token refresh transport).
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[source] Error),
    /// The relying party is not set up (`web::Data<RelyingParty>` missing).
    #[error("the relying party is not configured in this app")]
    NotConfigured,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::LoginRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::RoleNotPermitted { .. } | Self::Csrf => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::LoginRequired { login_url } => {
                // A page load goes to the login; an API call learns it needs one.
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, login_url.as_str()))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish()
            }
            Self::RoleNotPermitted { required } => {
                let ja = required
                    .iter()
                    .map(|r| r.japanese_name().unwrap_or(r.display_name()))
                    .collect::<Vec<_>>()
                    .join("・");
                let en = required
                    .iter()
                    .map(HcRole::display_name)
                    .collect::<Vec<_>>()
                    .join(", ");
                page(
                    self.status_code(),
                    "role_not_permitted",
                    "ご利用いただけません",
                    "Not available",
                    &format!("この機能は{ja}の資格を持つ方だけが利用できます。"),
                    &format!("This part is only for holders of: {en}."),
                    None,
                )
            }
            Self::Csrf => page(
                self.status_code(),
                "csrf",
                "操作を受け付けられません",
                "Request refused",
                "このフォームは現在のログインのものではありません。ページを開き直してからもう一度操作してください。",
                "This form does not belong to your current login. Reload the page and try again.",
                None,
            ),
            Self::Unavailable(_) | Self::NotConfigured => page(
                self.status_code(),
                "unavailable",
                "一時的に利用できません",
                "Temporarily unavailable",
                "しばらくしてからもう一度お試しください。",
                "Please try again in a moment.",
                None,
            ),
        }
    }
}

/// A signed-in doctor's session, for handlers that call the IdP's APIs for the doctor
/// or put forms on their pages.
#[derive(Debug)]
pub struct SignedIn {
    rp: web::Data<RelyingParty>,
    id: String,
    session: Session,
}

impl SignedIn {
    pub fn doctor(&self) -> &Doctor {
        &self.session.doctor
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The token to put into every form of this session (`<input type=hidden name=csrf>`).
    pub fn csrf_token(&self) -> &str {
        &self.session.csrf
    }

    /// Refuses a submitted form whose `csrf` field is not this session's token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), WebError> {
        if constant_time_eq(self.session.csrf.as_bytes(), submitted.as_bytes()) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }

    /// An access token for the IdP's APIs, refreshed first when it is about to expire. A
    /// refused refresh ends the session (the doctor logs in again). A SAML session has no
    /// tokens: it gets `LoginRequired`.
    pub async fn access_token(&mut self) -> Result<AccessToken, WebError> {
        let login_required = || WebError::LoginRequired {
            login_url: self.rp.login_url(&self.rp.config.landing_path),
        };
        let tokens = self.session.tokens.clone().ok_or_else(login_required)?;
        let Some(oidc) = self.rp.oidc.as_ref() else {
            return Err(login_required());
        };
        let now = OffsetDateTime::now_utc();
        let fresh = tokens
            .expires_at
            .is_none_or(|at| (at - now).whole_seconds() > REFRESH_MARGIN_SECS);
        if fresh {
            return Ok(tokens.access_token);
        }
        let Some(refresh_token) = &tokens.refresh_token else {
            self.end().await?;
            return Err(login_required());
        };
        match oidc
            .refresh(refresh_token, &self.session.doctor.subject)
            .await
        {
            Ok(refreshed) => {
                let tokens = OidcTokens {
                    access_token: refreshed.access_token.clone(),
                    refresh_token: refreshed.refresh_token.or(tokens.refresh_token),
                    expires_at: refreshed.expires_at,
                    id_token: refreshed.id_token.map(|t| t.raw).unwrap_or(tokens.id_token),
                };
                self.session.tokens = Some(tokens);
                self.rp
                    .sessions
                    .update(&self.id, self.session.clone())
                    .await
                    .map_err(WebError::Unavailable)?;
                Ok(refreshed.access_token)
            }
            Err(Error::Http(e)) => Err(WebError::Unavailable(Error::Http(e))),
            Err(_) => {
                self.end().await?;
                Err(login_required())
            }
        }
    }

    /// Ends this session here (not at the IdP).
    pub async fn end(&self) -> Result<(), WebError> {
        self.rp
            .sessions
            .remove(&self.id)
            .await
            .map_err(WebError::Unavailable)
    }
}

/// The session [`RequireRole`] already looked up for this request, so that the handler's
/// extractor does not read the store a second time.
#[derive(Clone)]
struct LookedUp {
    id: String,
    session: Session,
}

async fn signed_in(req: &HttpRequest) -> Result<SignedIn, WebError> {
    let rp = req
        .app_data::<web::Data<RelyingParty>>()
        .cloned()
        .ok_or(WebError::NotConfigured)?;
    if let Some(LookedUp { id, session }) = req.extensions_mut().remove::<LookedUp>() {
        return Ok(SignedIn { rp, id, session });
    }
    match rp.session_of(req).await {
        Ok(Some((id, session))) => Ok(SignedIn { rp, id, session }),
        Ok(None) => {
            let here = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let return_to = if req.method() == actix_web::http::Method::GET {
                here
            } else {
                rp.config.landing_path.as_str()
            };
            Err(WebError::LoginRequired {
                login_url: rp.login_url(return_to),
            })
        }
        Err(e) => Err(WebError::Unavailable(e)),
    }
}

impl FromRequest for SignedIn {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, WebError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { signed_in(&req).await })
    }
}

impl FromRequest for Doctor {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, WebError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { signed_in(&req).await.map(|s| s.session.doctor) })
    }
}

/// Middleware admitting only signed-in doctors whose card carries one of the given HPKI
/// roles: others are sent to log in, or get a 403 page naming the roles admitted.
#[derive(Clone, Debug)]
pub struct RequireRole {
    roles: Arc<[HcRole]>,
}

impl RequireRole {
    pub fn any_of(roles: impl IntoIterator<Item = HcRole>) -> Self {
        Self {
            roles: roles.into_iter().collect(),
        }
    }

    /// Only medical doctors (hcRole `Medical Doctor`, 医師).
    pub fn medical_doctor() -> Self {
        Self::any_of([HcRole::MedicalDoctor])
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequireRole
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RequireRoleService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireRoleService {
            service: Rc::new(service),
            roles: self.roles.clone(),
        }))
    }
}

/// The service [`RequireRole`] wraps around a scope.
#[derive(Debug)]
pub struct RequireRoleService<S> {
    service: Rc<S>,
    roles: Arc<[HcRole]>,
}

impl<S, B> Service<ServiceRequest> for RequireRoleService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let roles = self.roles.clone();
        Box::pin(async move {
            let refusal = match signed_in(req.request()).await {
                Ok(s)
                    if s.doctor()
                        .hpki_role
                        .as_ref()
                        .is_some_and(|r| roles.contains(r)) =>
                {
                    req.extensions_mut().insert(LookedUp {
                        id: s.id,
                        session: s.session,
                    });
                    return service.call(req).await.map(|r| r.map_into_left_body());
                }
                Ok(_) => WebError::RoleNotPermitted {
                    required: roles.to_vec(),
                },
                Err(e) => e,
            };
            Ok(req
                .into_response(refusal.error_response())
                .map_into_right_body())
        })
    }
}

/// `return_to` as a path of this app, or `None` (an absolute or scheme-relative URL, a
/// backslash trick, a control character: an open redirect attempt).
fn local_path(value: &str) -> Option<&str> {
    let ok = value.starts_with('/')
        && !value.starts_with("//")
        && !value.starts_with("/\\")
        && value.len() <= 2048
        && !value.chars().any(|c| c.is_control() || c == '\\');
    ok.then_some(value)
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

impl LoginQuery {
    /// The validated local `return_to`, or the landing path.
    fn return_to(&self, rp: &RelyingParty) -> String {
        self.return_to
            .as_deref()
            .and_then(local_path)
            .unwrap_or(&rp.config.landing_path)
            .to_owned()
    }
}

async fn login(
    rp: web::Data<RelyingParty>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let Some(oidc) = rp.oidc.as_ref() else {
        return saml_login(rp, query).await;
    };
    let return_to = query.return_to(&rp);
    let scopes: Vec<&str> = rp.config.scopes.iter().map(String::as_str).collect();
    let (url, pending) = oidc.begin(&scopes, &rp.config.auth_params);
    let cookie = rp
        .login_cookie("login", &LoginCookie { pending, return_to })
        .map_err(WebError::Unavailable)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish())
}

async fn callback(rp: web::Data<RelyingParty>, req: HttpRequest) -> HttpResponse {
    let Some(oidc) = rp.oidc.as_ref() else {
        return WebError::NotConfigured.error_response();
    };
    let now = OffsetDateTime::now_utc();
    let restart = Some((
        rp.login_url(&rp.config.landing_path),
        "もう一度ログインする",
        "Log in again",
    ));
    let opened: Option<LoginCookie> = rp.open_login_cookie(&req, "login", now);
    let Some(LoginCookie { pending, return_to }) = opened else {
        return page(
            StatusCode::BAD_REQUEST,
            "login_expired",
            "ログインの手続きが見つかりません",
            "No login in progress",
            "ログインを始めてから時間が経ちすぎたか、別の画面で始めたログインです。もう一度ログインしてください。",
            "The login took too long or was started elsewhere. Please log in again.",
            restart,
        )
        .with_cookie(rp.removal("login"));
    };
    let outcome = match CallbackParams::from_query(req.query_string()) {
        Ok(params) => oidc.finish(pending, &params).await,
        Err(e) => Err(e),
    };
    let login = match outcome {
        Ok(login) => login,
        Err(Error::Authorization { error, .. }) => {
            tracing::info!(error = error.as_ref(), "the IdP refused the login");
            return page(
                StatusCode::FORBIDDEN,
                "login_refused",
                "ログインできませんでした",
                "Login not completed",
                "ログインが取り消されたか、医師資格証による認証が完了しませんでした。",
                "The login was cancelled or the doctor qualification card was not accepted.",
                restart,
            )
            .with_cookie(rp.removal("login"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "login callback refused");
            return page(
                StatusCode::BAD_REQUEST,
                "login_invalid",
                "ログインを完了できませんでした",
                "The login could not be completed",
                "認証サーバーからの応答を確認できませんでした。もう一度ログインしてください。",
                "The answer from the identity provider did not validate. Please log in again.",
                restart,
            )
            .with_cookie(rp.removal("login"));
        }
    };
    let doctor = if rp.config.fetch_userinfo {
        match oidc.userinfo(&login.access_token, &login.subject).await {
            Ok(info) => match Doctor::from_login_and_userinfo(&login, &info) {
                Ok(doctor) => doctor,
                Err(e) => return unavailable(e),
            },
            Err(e) => return unavailable(e),
        }
    } else {
        Doctor::from_login(&login)
    };
    let tokens = OidcTokens {
        access_token: login.access_token,
        refresh_token: login.refresh_token,
        expires_at: login.expires_at,
        id_token: login.id_token,
    };
    signed_in_at(&rp, now, "login", return_to, |csrf| {
        Session::new(doctor, login.sid, Some(tokens), csrf, now)
    })
    .await
}

/// Ends a login: a new session (fresh ID and anti-CSRF token) made by `session`, its
/// cookie, the login cookie `login_cookie` removed, and the browser sent to `return_to`.
async fn signed_in_at(
    rp: &RelyingParty,
    now: OffsetDateTime,
    login_cookie: &str,
    return_to: String,
    session: impl FnOnce(String) -> Session,
) -> HttpResponse {
    let (id, csrf) = match (rp.random_token(), rp.random_token()) {
        (Ok(id), Ok(csrf)) => (id, csrf),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    rp.sweep(now).await;
    if let Err(e) = rp.sessions.insert(&id, session(csrf)).await {
        return unavailable(e);
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, return_to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(rp.removal(login_cookie))
        .cookie(rp.cookie("session", id, rp.config.absolute_timeout))
        .finish()
}

fn unavailable(e: Error) -> HttpResponse {
    tracing::warn!(error = %e, "login could not be completed");
    WebError::Unavailable(e).error_response()
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    rp: web::Data<RelyingParty>,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, WebError> {
    let landing = |rp: &RelyingParty| {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, rp.config.landing_path.as_str()))
            .cookie(rp.removal("session"))
            .finish()
    };
    let signed_in = match signed_in(&req).await {
        Ok(s) => s,
        Err(WebError::LoginRequired { .. }) => return Ok(landing(&rp)),
        Err(e) => return Err(e),
    };
    signed_in.check_csrf(&form.csrf)?;
    signed_in.end().await?;
    let session = &signed_in.session;
    let oidc_logout = session
        .tokens
        .as_ref()
        .zip(rp.oidc.as_ref())
        .and_then(|(tokens, oidc)| {
            oidc.end_session_url(
                &tokens.id_token,
                rp.config.post_logout_redirect_uri.clone(),
                None,
            )
            .ok()
        });
    // A SAML session: the SP-initiated LogoutRequest (signed, HTTP-Redirect), when the SP
    // has a signing key and the IdP an SLO endpoint; otherwise the session ends here only.
    let saml_logout = || {
        let (saml, sp) = session.saml.as_ref().zip(rp.saml.as_ref())?;
        match sp.logout_url(&saml.name_id, saml.session_index.as_deref(), None) {
            Ok((url, _)) => Some(url),
            Err(e) => {
                tracing::info!(error = %e, "SAML session ended here only");
                None
            }
        }
    };
    let to_idp = oidc_logout.or_else(saml_logout);
    Ok(match to_idp {
        Some(url) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url.as_str()))
            .cookie(rp.removal("session"))
            .finish(),
        None => landing(&rp),
    })
}

/// OpenID Connect Back-Channel Logout 1.0 §2.5–2.8: the IdP POSTs `logout_token`; every
/// session it names ends. 200 when done, 400 with an OAuth-style error otherwise.
async fn backchannel_logout(rp: web::Data<RelyingParty>, body: web::Bytes) -> HttpResponse {
    let bad = |description: &str| {
        HttpResponse::BadRequest()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({
                "error": "invalid_request",
                "error_description": description,
            }))
    };
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    let (Some(token), None) = (tokens.next(), tokens.next()) else {
        return bad("exactly one logout_token is required");
    };
    let Some(oidc) = rp.oidc.as_ref() else {
        return bad("no OpenID Connect client");
    };
    let notice = match oidc.verify_logout_token(&token).await {
        Ok(notice) => notice,
        Err(e) => {
            tracing::warn!(error = %e, "back-channel logout refused");
            return bad(&e.to_string());
        }
    };
    match rp.sessions.remove_named(&notice).await {
        Ok(ended) => {
            tracing::info!(ended, "back-channel logout");
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        Err(e) => {
            tracing::warn!(error = %e, "back-channel logout failed");
            HttpResponse::ServiceUnavailable()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
    }
}

/// GET `saml_metadata_path`: the SP metadata, for registering the SP with the IdP.
async fn saml_metadata(rp: web::Data<RelyingParty>) -> HttpResponse {
    match rp.saml.as_ref() {
        Some(sp) => HttpResponse::Ok()
            .content_type("application/samlmetadata+xml")
            .body(sp.metadata()),
        None => WebError::NotConfigured.error_response(),
    }
}

/// GET `saml_login_path?return_to=`: an AuthnRequest over HTTP-Redirect. The pending login
/// and the validated `return_to` go into the sealed SAML login cookie; RelayState is a
/// fresh random value (also sealed in the cookie, and compared at the ACS), never the
/// return path.
async fn saml_login(
    rp: web::Data<RelyingParty>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let sp = rp.saml.as_ref().ok_or(WebError::NotConfigured)?;
    let return_to = query.return_to(&rp);
    let relay_state = rp.random_token().map_err(WebError::Unavailable)?;
    let options = rp.config.saml_authn.clone().with_relay_state(&relay_state);
    let (url, pending) = sp.begin(&options).map_err(WebError::Unavailable)?;
    let cookie = rp
        .login_cookie(SAML_LOGIN_COOKIE, &SamlLoginCookie { pending, return_to })
        .map_err(WebError::Unavailable)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish())
}

/// POST to the ACS URL's path: the IdP's `SAMLResponse` (HTTP-POST binding), validated
/// against the pending login of this browser, ends in a session like an OIDC login's (no
/// tokens; the NameID and SessionIndex kept for logout) and a 303 to `return_to`.
///
/// Why the SAML login cookie is `SameSite=None; Secure`: the ACS request is a form POST
/// from the IdP's origin, a cross-site request, and browsers do not send `Lax` cookies on
/// cross-site POSTs. The two usual answers:
/// - a server-side store of pending logins keyed by RelayState: the posted Response then
///   finds *a* pending login, but nothing ties it to *this browser*: an attacker starts a
///   login himself, takes the IdP's Response and RelayState, and has the victim's browser
///   post them (login CSRF: the victim works in the attacker's account). It also needs a
///   store shared by every process;
/// - the pending login in a sealed cookie sent cross-site (`SameSite=None`, hence
///   `Secure`): the request ID it holds is secret to this browser and the IdP, and the
///   Response must name it in `InResponseTo` (in the signed assertion, too), so a Response
///   obtained for another login does not match, wherever it is posted from.
///
/// The kit takes the second. Sending this one cookie cross-site reveals nothing (it is
/// sealed, HttpOnly, lives ten minutes) and a forged cross-site POST can only present a
/// Response to the browser's own request, which the replay cache lets through once. The
/// cookie is removed when a Response to it is accepted or the IdP's signed answer refuses
/// the login, not when a Response does not validate: a stray or forged POST (any site can
/// send one) does not cancel the login in progress. The session cookie stays `SameSite=Lax`. The RelayState
/// sent is a random value sealed with the pending login and must come back unchanged.
/// Without `secure_cookies` (plain-HTTP development) browsers drop a `SameSite=None`
/// cookie, so SAML login needs HTTPS in a browser.
async fn saml_acs(
    rp: web::Data<RelyingParty>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let Some(sp) = rp.saml.as_ref() else {
        return WebError::NotConfigured.error_response();
    };
    let now = OffsetDateTime::now_utc();
    let restart = || {
        Some((
            rp.saml_login_url(&rp.config.landing_path),
            "もう一度ログインする",
            "Log in again",
        ))
    };
    let invalid = || {
        page(
            StatusCode::BAD_REQUEST,
            "login_invalid",
            "ログインを完了できませんでした",
            "The login could not be completed",
            "認証サーバーからの応答を確認できませんでした。もう一度ログインしてください。",
            "The answer from the identity provider did not validate. Please log in again.",
            restart(),
        )
    };
    let body = match payload.to_bytes_limited(max_acs_body(sp)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("SAML ACS: unreadable or oversized form");
            return invalid();
        }
    };
    let (mut responses, mut relay_states) = (Vec::new(), Vec::new());
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "SAMLResponse" => responses.push(value),
            "RelayState" => relay_states.push(value),
            _ => {}
        }
    }
    let ([response], [] | [_]) = (responses.as_slice(), relay_states.as_slice()) else {
        tracing::warn!("SAML ACS: not exactly one SAMLResponse, or several RelayStates");
        return invalid();
    };
    let relay_state = relay_states.first().map(|r| r.as_ref());
    let opened: Option<SamlLoginCookie> = rp.open_login_cookie(&req, SAML_LOGIN_COOKIE, now);
    let (pending, return_to) = match opened {
        Some(SamlLoginCookie { pending, return_to }) => {
            let relay_state_matches = match (pending.relay_state.as_deref(), relay_state) {
                (Some(sent), Some(back)) => constant_time_eq(sent.as_bytes(), back.as_bytes()),
                (None, None) => true,
                _ => false,
            };
            if !relay_state_matches {
                tracing::warn!("SAML ACS: RelayState is not the one sent");
                return invalid();
            }
            (Some(pending), return_to)
        }
        // Unsolicited (IdP-initiated) only if the SP allows it; `finish` decides.
        None if sp.config().allow_idp_initiated => (None, rp.config.landing_path.clone()),
        None => {
            return page(
                StatusCode::BAD_REQUEST,
                "login_expired",
                "ログインの手続きが見つかりません",
                "No login in progress",
                "ログインを始めてから時間が経ちすぎたか、別の画面で始めたログインです。もう一度ログインしてください。",
                "The login took too long or was started elsewhere. Please log in again.",
                restart(),
            )
            .with_cookie(rp.removal(SAML_LOGIN_COOKIE));
        }
    };
    let login = match sp.finish(pending.as_ref(), response).await {
        Ok(login) => login,
        Err(Error::SamlStatus { codes }) => {
            tracing::info!(?codes, "the IdP refused the SAML login");
            return page(
                StatusCode::FORBIDDEN,
                "login_refused",
                "ログインできませんでした",
                "Login not completed",
                "ログインが取り消されたか、医師資格証による認証が完了しませんでした。",
                "The login was cancelled or the doctor qualification card was not accepted.",
                restart(),
            )
            .with_cookie(rp.removal(SAML_LOGIN_COOKIE));
        }
        Err(Error::SamlReplay) => {
            tracing::warn!("SAML ACS: a Response used before");
            return page(
                StatusCode::BAD_REQUEST,
                "login_replayed",
                "このログインは使用済みです",
                "This login was already used",
                "同じログインの応答が二度送られました。もう一度ログインしてください。",
                "The same login answer was sent twice. Please log in again.",
                restart(),
            );
        }
        Err(e @ Error::SamlReplayCacheUnavailable) => return unavailable(e),
        Err(e) => {
            tracing::warn!(error = %e, "SAML ACS: Response refused");
            return invalid();
        }
    };
    let saml = SamlSession::from_login(&login);
    // The SessionIndex is the session's `sid` and the NameID its doctor's subject, so that
    // the IdP's back-channel LogoutRequest ends it through `SessionStore::remove_named`.
    let sid = login.session_index.clone();
    signed_in_at(&rp, now, SAML_LOGIN_COOKIE, return_to, |csrf| {
        Session::new(login.doctor, sid, None, csrf, now).with_saml(saml)
    })
    .await
}

/// GET or POST at the SLO URL's path: where the IdP answers the SP-initiated logout with
/// its `LogoutResponse`. The local session ended before the browser went to the IdP, so
/// nothing here acts on the message (it is not read): the browser goes to the landing page.
async fn saml_slo(rp: web::Data<RelyingParty>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, rp.config.landing_path.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// POST at the SOAP SLO URL's path: the IdP's back-channel `LogoutRequest` (SAML SOAP
/// binding), sent when the doctor's IdP session ended elsewhere. Verified by
/// [`SamlServiceProvider::verify_soap_logout`]; every local session of its NameID (and
/// SessionIndex, when named) ends. The answer is a SOAP `LogoutResponse` with HTTP 200:
/// `Success`, `Requester`/`RequestDenied` when the request is refused (nothing ends), or
/// `Responder` when the replay cache or the session store failed; a body that is not a
/// SOAP envelope carrying one LogoutRequest gets a SOAP fault with HTTP 500.
async fn saml_soap_logout(rp: web::Data<RelyingParty>, payload: web::Payload) -> HttpResponse {
    let soap = |status: StatusCode, body: String| {
        HttpResponse::build(status)
            .content_type("text/xml; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body)
    };
    let fault = |reason: &str| {
        soap(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::saml_soap_fault(reason),
        )
    };
    let Some(sp) = rp.saml.as_ref() else {
        return fault("no SAML service provider");
    };
    let body = match payload
        .to_bytes_limited(crate::SAML_MAX_SOAP_LOGOUT_BYTES)
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("SAML back-channel logout: unreadable or oversized body");
            return fault("unreadable or oversized body");
        }
    };
    let (status, in_response_to) = match sp.verify_soap_logout(&body).await {
        Ok(request) => {
            let mut ended = 0;
            let mut failed = false;
            for notice in request.notices() {
                match rp.sessions.remove_named(&notice).await {
                    Ok(n) => ended += n,
                    Err(e) => {
                        tracing::warn!(error = %e, "SAML back-channel logout failed");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                (SamlLogoutStatus::Unavailable, Some(request.id))
            } else {
                tracing::info!(ended, "SAML back-channel logout");
                (SamlLogoutStatus::Success, Some(request.id))
            }
        }
        Err(e @ (Error::SamlSoap(_) | Error::SamlXmlRefused(_) | Error::SamlResponseTooLarge)) => {
            tracing::warn!(error = %e, "SAML back-channel logout: not a SOAP LogoutRequest");
            return fault(&e.to_string());
        }
        Err(e @ Error::SamlReplayCacheUnavailable) => {
            tracing::warn!(error = %e, "SAML back-channel logout failed");
            (SamlLogoutStatus::Unavailable, None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "SAML back-channel logout refused");
            (SamlLogoutStatus::Refused, None)
        }
    };
    match sp.soap_logout_response(in_response_to.as_deref(), status) {
        Ok(answer) => soap(StatusCode::OK, answer),
        Err(e) => {
            tracing::warn!(error = %e, "SAML back-channel logout: no answer");
            fault("the answer could not be written")
        }
    }
}

trait WithCookie {
    fn with_cookie(self, cookie: Cookie<'_>) -> Self;
}

impl WithCookie for HttpResponse {
    fn with_cookie(mut self, cookie: Cookie<'_>) -> Self {
        let _ = self.add_cookie(&cookie);
        self
    }
}

/// A small bilingual page (Japanese first) for the kit's own answers.
fn page(
    status: StatusCode,
    reason: &str,
    title_ja: &str,
    title_en: &str,
    body_ja: &str,
    body_en: &str,
    link: Option<(String, &str, &str)>,
) -> HttpResponse {
    let link = link
        .map(|(href, ja, en)| {
            format!(
                "<p><a href=\"{}\">{} <span lang=\"en\">/ {}</span></a></p>",
                escape(&href),
                escape(ja),
                escape(en)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{tj}</title></head>\n<body data-reason=\"{reason}\"><main>\
<h1>{tj}</h1><p>{bj}</p>\
<section lang=\"en\"><h2>{te}</h2><p>{be}</p></section>{link}</main></body></html>\n",
        tj = escape(title_ja),
        te = escape(title_en),
        bj = escape(body_ja),
        be = escape(body_en),
        reason = escape(reason),
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

/// Whether `a` equals `b`, in time that depends only on their lengths (for secrets:
/// anti-CSRF tokens, passwords compared by an app).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HTML text and attribute escaping.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::saml::tests::{idp, key_pair};
    use crate::{MemorySessions, SamlSigningKey, SamlSpConfig};
    use actix_web::App;
    use actix_web::test as actix_test;

    /// A SAML-only relying party for `https://sp.example`, and its sealer's key.
    fn saml_rp() -> web::Data<RelyingParty> {
        let (_, idp_cert) = key_pair("IdP");
        let (key, cert) = key_pair("SP");
        let config = SamlSpConfig::new("https://sp.example/saml", "https://sp.example/saml/acs")
            .with_signing_key(SamlSigningKey::from_pem(&key, &cert).unwrap())
            .with_slo_url("https://sp.example/saml/slo");
        let sp = SamlServiceProvider::new(config, idp(&idp_cert)).unwrap();
        web::Data::new(RelyingParty::new_saml(
            sp,
            Sealer::new(&[9; 32]),
            Arc::new(MemorySessions::default()),
            WebConfig::default(),
        ))
    }

    fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
        url.split_once('?')?
            .1
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    }

    #[actix_web::test]
    async fn saml_routes_without_oidc() {
        let rp = saml_rp();
        let app = actix_test::init_service(
            App::new()
                .app_data(rp.clone())
                .configure(|cfg| rp.routes(cfg)),
        )
        .await;

        // The kit's login route starts the SAML login; an absolute return_to is dropped.
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/auth/login?return_to=https%3A%2F%2Fevil.example%2F")
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let to = res
            .headers()
            .get(header::LOCATION)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            to.starts_with("https://idp.example/saml/sso?SAMLRequest="),
            "{to}"
        );
        assert!(query_param(&to, "Signature").is_some());
        let relay_state = query_param(&to, "RelayState").unwrap();
        assert_eq!(relay_state.len(), 43);
        let cookie = res
            .response()
            .cookies()
            .find(|c| c.name() == "__Host-hpki-saml-login")
            .unwrap();
        assert_eq!(cookie.same_site(), Some(SameSite::None));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
        let sealed: SamlLoginCookie = rp
            .sealer
            .open(cookie.name(), cookie.value(), OffsetDateTime::now_utc())
            .unwrap();
        assert_eq!(sealed.return_to, "/");
        assert_eq!(sealed.pending.relay_state.as_deref(), Some(relay_state));
        // The sealed SAML login does not open as the OIDC login cookie.
        assert!(
            rp.sealer
                .open::<SamlLoginCookie>(
                    "__Host-hpki-login",
                    cookie.value(),
                    OffsetDateTime::now_utc()
                )
                .is_none()
        );

        // A local return_to is kept.
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/saml/login?return_to=%2Fchart%3Fid%3D7")
                .to_request(),
        )
        .await;
        let cookie = res
            .response()
            .cookies()
            .find(|c| c.name() == "__Host-hpki-saml-login")
            .unwrap()
            .into_owned();
        let sealed: SamlLoginCookie = rp
            .sealer
            .open(cookie.name(), cookie.value(), OffsetDateTime::now_utc())
            .unwrap();
        assert_eq!(sealed.return_to, "/chart?id=7");

        // Metadata.
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/saml/metadata")
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/samlmetadata+xml"
        );

        // No OIDC routes.
        for (method, path) in [
            (actix_web::http::Method::GET, "/auth/callback"),
            (actix_web::http::Method::POST, "/auth/backchannel-logout"),
        ] {
            let res = actix_test::call_service(
                &app,
                actix_test::TestRequest::default()
                    .method(method)
                    .uri(path)
                    .to_request(),
            )
            .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        }

        // The ACS: no login cookie; a Response that does not validate leaves the login
        // cookie in place; a RelayState other than the one sent.
        let acs = |cookie: Option<&Cookie<'static>>, form: &str| {
            let mut req = actix_test::TestRequest::post()
                .uri("/saml/acs")
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .set_payload(form.to_owned());
            if let Some(c) = cookie {
                req = req.cookie(c.clone());
            }
            req.to_request()
        };
        let reason_of = |body: &[u8]| {
            let body = std::str::from_utf8(body).unwrap().to_owned();
            body.split("data-reason=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
        };
        let form = format!(
            "SAMLResponse=PHg%2B&RelayState={}",
            sealed.pending.relay_state.as_deref().unwrap()
        );
        let res = actix_test::call_service(&app, acs(None, &form)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            reason_of(&actix_test::read_body(res).await).as_deref(),
            Some("login_expired")
        );
        let res = actix_test::call_service(&app, acs(Some(&cookie), &form)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(res.response().cookies().next().is_none());
        assert_eq!(
            reason_of(&actix_test::read_body(res).await).as_deref(),
            Some("login_invalid")
        );
        for form in [
            "SAMLResponse=PHg%2B&RelayState=other".to_owned(),
            "SAMLResponse=PHg%2B".to_owned(),
            format!("{form}&SAMLResponse=PHg%2B"),
            format!("{form}&RelayState=x"),
        ] {
            let res = actix_test::call_service(&app, acs(Some(&cookie), &form)).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{form}");
            assert_eq!(
                reason_of(&actix_test::read_body(res).await).as_deref(),
                Some("login_invalid"),
                "{form}"
            );
        }
        let huge = format!("SAMLResponse={}", "A".repeat(2 * 1024 * 1024));
        let res = actix_test::call_service(&app, acs(Some(&cookie), &huge)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);

        // The IdP's LogoutResponse lands on the landing page.
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/saml/slo?SAMLResponse=x")
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/");
    }

    /// A store that counts its reads.
    #[derive(Debug, Default)]
    struct CountingSessions {
        inner: MemorySessions,
        gets: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SessionStore for CountingSessions {
        async fn insert(&self, id: &str, session: Session) -> Result<(), Error> {
            self.inner.insert(id, session).await
        }
        async fn get(&self, id: &str) -> Result<Option<Session>, Error> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(id).await
        }
        async fn update(&self, id: &str, session: Session) -> Result<(), Error> {
            self.inner.update(id, session).await
        }
        async fn remove(&self, id: &str) -> Result<(), Error> {
            self.inner.remove(id).await
        }
        async fn remove_named(&self, notice: &crate::LogoutNotice) -> Result<usize, Error> {
            self.inner.remove_named(notice).await
        }
        async fn remove_expired(
            &self,
            created_before: OffsetDateTime,
            seen_before: OffsetDateTime,
        ) -> Result<usize, Error> {
            self.inner.remove_expired(created_before, seen_before).await
        }
    }

    #[actix_web::test]
    async fn behind_require_role_the_extractor_reuses_the_guards_lookup() {
        let store = Arc::new(CountingSessions::default());
        let (key, cert) = key_pair("SP");
        let (_, idp_cert) = key_pair("IdP");
        let config = SamlSpConfig::new("https://sp.example/saml", "https://sp.example/saml/acs")
            .with_signing_key(SamlSigningKey::from_pem(&key, &cert).unwrap());
        let rp = web::Data::new(RelyingParty::new_saml(
            SamlServiceProvider::new(config, idp(&idp_cert)).unwrap(),
            Sealer::new(&[9; 32]),
            store.clone(),
            WebConfig::default(),
        ));
        let mut claims = crate::Claims::new();
        claims.insert(
            idp_vocabulary::claim::HPKI_ROLE.into(),
            serde_json::json!("Medical Doctor"),
        );
        let doctor = Doctor::from_claims(
            openidconnect::SubjectIdentifier::new("s".into()),
            &claims,
            None,
            Vec::new(),
            None,
        );
        let id = "S".repeat(43);
        let now = OffsetDateTime::now_utc();
        store
            .insert(&id, Session::new(doctor, None, None, "csrf".into(), now))
            .await
            .unwrap();
        let app = actix_test::init_service(
            App::new().app_data(rp.clone()).service(
                web::scope("/clinical")
                    .wrap(RequireRole::medical_doctor())
                    .route(
                        "",
                        web::get().to(|s: SignedIn| async move {
                            s.doctor().subject.as_str().to_owned()
                        }),
                    ),
            ),
        )
        .await;
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/clinical")
                .cookie(Cookie::new("__Host-hpki-session", id.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(actix_test::read_body(res).await, "s");
        assert_eq!(store.gets.load(Ordering::SeqCst), 1, "one read per request");
    }

    #[actix_web::test]
    async fn a_saml_session_ends_at_session_not_on_or_after() {
        let rp = saml_rp();
        let now = OffsetDateTime::now_utc();
        let session = |id: &str, end: OffsetDateTime| {
            let doctor = Doctor::from_claims(
                openidconnect::SubjectIdentifier::new(id.into()),
                &crate::Claims::new(),
                None,
                Vec::new(),
                None,
            );
            Session::new(doctor, None, None, "csrf".into(), now).with_saml(SamlSession {
                name_id: crate::SamlNameId {
                    value: id.into(),
                    format: None,
                    name_qualifier: None,
                    sp_name_qualifier: None,
                },
                session_index: Some("i".into()),
                not_on_or_after: Some(end),
                idp_entity_id: "https://idp.example/saml/metadata".into(),
            })
        };
        let (live, ended) = ("L".repeat(43), "E".repeat(43));
        rp.sessions
            .insert(&live, session("live", now + time::Duration::minutes(5)))
            .await
            .unwrap();
        rp.sessions
            .insert(&ended, session("ended", now - time::Duration::seconds(1)))
            .await
            .unwrap();
        let request = |id: &str| {
            actix_test::TestRequest::get()
                .cookie(Cookie::new("__Host-hpki-session", id.to_owned()))
                .to_http_request()
        };
        let (_, found) = rp.session_of(&request(&live)).await.unwrap().unwrap();
        assert!(found.saml.is_some());
        assert!(rp.session_of(&request(&ended)).await.unwrap().is_none());
        assert!(rp.sessions.get(&ended).await.unwrap().is_none());
    }

    #[actix_web::test]
    async fn the_idps_soap_logout_request_ends_the_sessions_it_names() {
        use crate::saml::tests::{LogoutFields, soap_logout, soap_sp};
        let (idp_key, idp_cert) = key_pair("IdP");
        let idp_key = SamlSigningKey::from_pem(&idp_key, &idp_cert).unwrap();
        let (sp_key, sp_cert) = key_pair("SP");
        let (sp, _) = soap_sp(
            &idp_cert,
            Some(SamlSigningKey::from_pem(&sp_key, &sp_cert).unwrap()),
        );
        let rp = web::Data::new(RelyingParty::new_saml(
            sp,
            Sealer::new(&[9; 32]),
            Arc::new(MemorySessions::default()),
            WebConfig::default(),
        ));
        let app = actix_test::init_service(
            App::new()
                .app_data(rp.clone())
                .configure(|cfg| rp.routes(cfg)),
        )
        .await;
        let now = OffsetDateTime::now_utc();
        let session = |name_id: &str, index: &str| {
            let doctor = Doctor::from_claims(
                openidconnect::SubjectIdentifier::new(name_id.into()),
                &crate::Claims::new(),
                None,
                Vec::new(),
                None,
            );
            Session::new(doctor, Some(index.into()), None, "csrf".into(), now)
        };
        // The doctor's session from the IdP session that ends, the same doctor's from
        // another IdP session, another doctor's from the same index.
        let ids = ["A".repeat(43), "B".repeat(43), "C".repeat(43)];
        for (id, (name_id, index)) in ids.iter().zip([
            ("pairwise-nameid", "idp-session"),
            ("pairwise-nameid", "other-session"),
            ("someone-else", "idp-session"),
        ]) {
            rp.sessions
                .insert(id, session(name_id, index))
                .await
                .unwrap();
        }
        let post = |body: String| {
            actix_test::TestRequest::post()
                .uri("/saml/soap-slo")
                .insert_header((header::CONTENT_TYPE, "text/xml; charset=utf-8"))
                .set_payload(body)
                .to_request()
        };
        let alive = || async {
            let mut alive = Vec::new();
            for id in &ids {
                alive.push(rp.sessions.get(id).await.unwrap().is_some());
            }
            alive
        };

        // Refused (unsigned): a SAML error status with HTTP 200, nothing ends.
        let res =
            actix_test::call_service(&app, post(soap_logout(None, &LogoutFields::new(now)))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/xml; charset=utf-8"
        );
        let body = String::from_utf8(actix_test::read_body(res).await.to_vec()).unwrap();
        assert!(
            body.contains(crate::saml_uri::STATUS_REQUEST_DENIED),
            "{body}"
        );
        assert!(!body.contains("InResponseTo"));
        assert_eq!(alive().await, [true, true, true]);

        // Not SOAP: a SOAP fault with HTTP 500.
        let res = actix_test::call_service(&app, post("<a/>".into())).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8(actix_test::read_body(res).await.to_vec()).unwrap();
        assert!(
            body.contains("<faultcode>soap:Client</faultcode>"),
            "{body}"
        );
        assert_eq!(alive().await, [true, true, true]);

        // The IdP's signed request: Success, signed, and only the named session ends.
        let genuine = soap_logout(Some(&idp_key), &LogoutFields::new(now));
        let res = actix_test::call_service(&app, post(genuine.clone())).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = String::from_utf8(actix_test::read_body(res).await.to_vec()).unwrap();
        assert!(body.contains(crate::saml_uri::STATUS_SUCCESS), "{body}");
        assert!(body.contains("InResponseTo=\"_l0\"") && body.contains("<ds:SignatureValue>"));
        assert_eq!(alive().await, [false, true, true]);

        // Replayed: refused.
        let res = actix_test::call_service(&app, post(genuine)).await;
        let body = String::from_utf8(actix_test::read_body(res).await.to_vec()).unwrap();
        assert!(
            body.contains(crate::saml_uri::STATUS_REQUEST_DENIED),
            "{body}"
        );
        assert_eq!(alive().await, [false, true, true]);

        // GET is not the SOAP route.
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/saml/soap-slo")
                .to_request(),
        )
        .await;
        assert!(res.status().is_client_error());
    }

    #[test]
    fn return_to_is_a_local_path_only() {
        for good in ["/", "/profile", "/history?before=12&limit=5"] {
            assert_eq!(local_path(good), Some(good));
        }
        for bad in [
            "",
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/a\\b",
            "/\n/evil",
            "evil",
            "javascript:alert(1)",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
    }
}
