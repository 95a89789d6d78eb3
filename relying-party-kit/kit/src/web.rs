//! actix-web integration: login, callback, logout and back-channel logout routes, the
//! [`Doctor`] and [`SignedIn`] extractors, and the [`RequireRole`] guard.
//!
//! ```text
//! let rp = web::Data::new(RelyingParty::new(oidc, Sealer::new(&key), Arc::new(MemorySessions::default()), WebConfig::default()));
//! App::new()
//!     .app_data(rp.clone())
//!     .configure(|cfg| rp.routes(cfg))                 // /auth/login, /auth/callback, ...
//!     .route("/", web::get().to(|doctor: Doctor| async move { ... }))
//!     .service(web::scope("/clinical").wrap(RequireRole::medical_doctor()) ...)
//! ```
//!
//! Invariants:
//! - The pending login (state, nonce, PKCE verifier, where to return) travels in a sealed
//!   (AES-256-GCM), HttpOnly, SameSite=Lax cookie that lives ten minutes and opens once.
//! - The session cookie holds only a random 256-bit ID; a new one is issued at every login
//!   (no fixation). Idle and absolute timeouts are enforced on every request.
//! - `return_to` is a local path only (no open redirect).
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
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idp_vocabulary::hpki::HcRole;
use openidconnect::{AccessToken, PostLogoutRedirectUrl};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::{AuthParams, CallbackParams, OidcClient, PendingLogin};
use crate::seal::Sealer;
use crate::sessions::{OidcTokens, Session, SessionStore};
use crate::{Doctor, Error};

/// How long a started login may take before its cookie no longer opens.
pub const LOGIN_COOKIE_LIFETIME: Duration = Duration::from_secs(600);
/// How often the kit sweeps expired sessions out of the store (at a login).
const SWEEP_INTERVAL_SECS: i64 = 300;
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
        }
    }
}

/// The relying party's web side: put it into the app as `web::Data` and register its
/// routes with [`RelyingParty::routes`].
pub struct RelyingParty {
    oidc: OidcClient,
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

impl RelyingParty {
    pub fn new(
        oidc: OidcClient,
        sealer: Sealer,
        sessions: Arc<dyn SessionStore>,
        config: WebConfig,
    ) -> Self {
        Self {
            oidc,
            sealer,
            sessions,
            config,
            rng: SystemRandom::new(),
            last_sweep: AtomicI64::new(0),
        }
    }

    /// The OpenID Connect client (for calls beyond login).
    pub fn oidc(&self) -> &OidcClient {
        &self.oidc
    }

    pub fn config(&self) -> &WebConfig {
        &self.config
    }

    /// The session store (for an app that lists or ends sessions itself).
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Registers the login, callback, logout and back-channel logout routes. The app must
    /// also hold this value as `web::Data<RelyingParty>`.
    pub fn routes(&self, cfg: &mut web::ServiceConfig) {
        let c = &self.config;
        cfg.route(&c.login_path, web::get().to(login))
            .route(&c.callback_path, web::get().to(callback))
            .route(&c.logout_path, web::post().to(logout))
            .route(
                &c.backchannel_logout_path,
                web::post().to(backchannel_logout),
            );
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

    fn cookie<'c>(&self, what: &str, value: String, max_age: Duration) -> Cookie<'c> {
        Cookie::build(self.cookie_name(what), value)
            .path("/")
            .secure(self.config.secure_cookies)
            .http_only(true)
            .same_site(SameSite::Lax)
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
    /// refused refresh ends the session (the doctor logs in again).
    pub async fn access_token(&mut self) -> Result<AccessToken, WebError> {
        let login_required = || WebError::LoginRequired {
            login_url: self.rp.login_url(&self.rp.config.landing_path),
        };
        let tokens = self.session.tokens.clone().ok_or_else(login_required)?;
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
        match self
            .rp
            .oidc
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

async fn signed_in(req: &HttpRequest) -> Result<SignedIn, WebError> {
    let rp = req
        .app_data::<web::Data<RelyingParty>>()
        .cloned()
        .ok_or(WebError::NotConfigured)?;
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

async fn login(
    rp: web::Data<RelyingParty>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let return_to = query
        .return_to
        .as_deref()
        .and_then(local_path)
        .unwrap_or(&rp.config.landing_path)
        .to_owned();
    let scopes: Vec<&str> = rp.config.scopes.iter().map(String::as_str).collect();
    let (url, pending) = rp.oidc.begin(&scopes, &rp.config.auth_params);
    let expires = OffsetDateTime::now_utc() + LOGIN_COOKIE_LIFETIME;
    let sealed = rp
        .sealer
        .seal(
            &rp.cookie_name("login"),
            &LoginCookie { pending, return_to },
            expires,
        )
        .map_err(WebError::Unavailable)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(rp.cookie("login", sealed, LOGIN_COOKIE_LIFETIME))
        .finish())
}

async fn callback(rp: web::Data<RelyingParty>, req: HttpRequest) -> HttpResponse {
    let now = OffsetDateTime::now_utc();
    let restart = Some((
        rp.login_url(&rp.config.landing_path),
        "もう一度ログインする",
        "Log in again",
    ));
    let opened: Option<LoginCookie> = req
        .cookie(&rp.cookie_name("login"))
        .and_then(|c| rp.sealer.open(&rp.cookie_name("login"), c.value(), now));
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
        Ok(params) => rp.oidc.finish(pending, &params).await,
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
        match rp.oidc.userinfo(&login.access_token, &login.subject).await {
            Ok(info) => match Doctor::from_login_and_userinfo(&login, &info) {
                Ok(doctor) => doctor,
                Err(e) => return unavailable(e),
            },
            Err(e) => return unavailable(e),
        }
    } else {
        Doctor::from_login(&login)
    };
    let (id, csrf) = match (rp.random_token(), rp.random_token()) {
        (Ok(id), Ok(csrf)) => (id, csrf),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let tokens = OidcTokens {
        access_token: login.access_token,
        refresh_token: login.refresh_token,
        expires_at: login.expires_at,
        id_token: login.id_token,
    };
    rp.sweep(now).await;
    let session = Session::new(doctor, login.sid, Some(tokens), csrf, now);
    if let Err(e) = rp.sessions.insert(&id, session).await {
        return unavailable(e);
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, return_to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(rp.removal("login"))
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
    let to_idp = signed_in.session.tokens.as_ref().and_then(|tokens| {
        rp.oidc
            .end_session_url(
                &tokens.id_token,
                rp.config.post_logout_redirect_uri.clone(),
                None,
            )
            .ok()
    });
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
    let notice = match rp.oidc.verify_logout_token(&token).await {
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
    use super::local_path;

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
