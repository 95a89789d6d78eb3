//! The two origins' routes and handlers. Handlers extract, call core, and map the result
//! through one function per kind of outcome.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use idp_core::hpki::{HpkiRefusal, HpkiValidator, PeerCertificate};
use idp_core::login::{LoginError, LoginService, ReturnTo};
use idp_core::secret::Secret;
use idp_core::session::Session;
use idp_core::store::{DoctorDirectory, EphemeralStore};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::config::{ClientCertificateSource, Runtime};
use crate::pages::{Lang, escape, layout, login_failure_text};
use crate::tls::PresentedChain;

pub const SESSION_COOKIE: &str = "__Host-idp_session";
pub const LOGIN_COOKIE: &str = "__Host-idp_login";

/// Shared state of both origins.
#[derive(Debug)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub login: LoginService,
    pub validator: Arc<HpkiValidator>,
    pub doctors: Arc<dyn DoctorDirectory>,
    pub ephemeral: Arc<dyn EphemeralStore>,
    pub metrics: Metrics,
    pub oidc: crate::oidc::OidcState,
    /// The SAML IdP, when configured.
    pub saml: Option<crate::saml::SamlState>,
    /// The disclosure policy in force and its reloading.
    pub policies: Arc<crate::disclosure::PolicyReloader>,
    /// Registered SAML SPs (also without a SAML IdP configured: `explain` reads them).
    pub sps: Arc<dyn idp_core::store::SpStore>,
}

impl AppState {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn public_url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.runtime.config.public.url, path_and_query)
    }
}

/// Prometheus counters.
#[derive(Debug, Default)]
pub struct Metrics {
    logins: Mutex<BTreeMap<&'static str, u64>>,
    tokens: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn count_login(&self, outcome: &'static str) {
        let mut map = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(outcome).or_default() += 1;
    }

    pub fn count_token(&self, outcome: &'static str) {
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(outcome).or_default() += 1;
    }

    fn render(&self, state: &AppState) -> String {
        let mut out = String::from(
            "# HELP idp_logins_total Card logins by outcome.\n# TYPE idp_logins_total counter\n",
        );
        for (outcome, count) in self.logins.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "idp_logins_total{{outcome=\"{outcome}\"}} {count}\n"
            ));
        }
        out.push_str(
            "# HELP idp_token_requests_total Token endpoint requests by outcome.\n# TYPE idp_token_requests_total counter\n",
        );
        for (outcome, count) in self.tokens.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "idp_token_requests_total{{outcome=\"{outcome}\"}} {count}\n"
            ));
        }
        out.push_str("# HELP idp_crl_entries Revoked serials in the CRL in force.\n# TYPE idp_crl_entries gauge\n");
        out.push_str("# HELP idp_crl_next_update_seconds nextUpdate of the CRL in force (Unix time).\n# TYPE idp_crl_next_update_seconds gauge\n");
        for crl in state.validator.crls().status() {
            let issuer = crl.issuer.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "idp_crl_entries{{issuer=\"{issuer}\"}} {}\n",
                crl.entries
            ));
            if let Some(next) = crl.next_update {
                out.push_str(&format!(
                    "idp_crl_next_update_seconds{{issuer=\"{issuer}\"}} {}\n",
                    next.unix_timestamp()
                ));
            }
        }
        out
    }
}

/// Routes of the public origin (no client certificate).
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/login", web::get().to(start_login))
        .route("/login/complete", web::get().to(complete_login))
        .route("/account", web::get().to(account))
        .route("/account/consents/revoke", web::post().to(revoke_consent))
        .route("/api/session", web::get().to(session_json))
        .route("/logout", web::post().to(logout))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .configure(crate::oidc::public_routes)
        .configure(crate::saml::public_routes)
        .configure(crate::admin::api_routes)
        .configure(crate::account_api::routes);
}

/// Routes of the login origin (client certificate required).
pub fn login_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/hpki", web::get().to(login_hpki))
        .route("/healthz", web::get().to(healthz))
        .configure(crate::oidc::mtls_routes)
        .default_service(web::to(to_public_login));
}

pub(crate) fn html(status: StatusCode, body: String) -> HttpResponse {
    html_with_form_action(status, body, None)
}

/// [`html`] whose forms may also lead to `origin` (a POST answered with a redirect there).
pub(crate) fn html_with_form_action(
    status: StatusCode,
    body: String,
    origin: Option<&str>,
) -> HttpResponse {
    // An origin is scheme://host[:port] only: nothing that could end the directive.
    let extra = origin
        .filter(|o| {
            o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":/.-[]".contains(&b))
        })
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            "Content-Security-Policy",
            format!("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{extra}; frame-ancestors 'none'"),
        ))
        // same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with
        // a form POST, and the same-origin check of consent and logout would refuse them.
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn secure_cookie(
    name: &'static str,
    value: String,
    max_age: Option<CookieDuration>,
) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, value)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .finish();
    if let Some(age) = max_age {
        cookie.set_max_age(age);
    }
    cookie
}

/// The cookie that removes the session cookie.
pub(crate) fn session_removal() -> Cookie<'static> {
    removal(SESSION_COOKIE)
}

/// Ends the browser's session, if any, and sends back-channel logout tokens to the
/// relying parties it logged in to.
pub(crate) async fn end_browser_session(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(), idp_core::store::StoreError> {
    let Some(id) = cookie_secret(req, SESSION_COOKIE) else {
        return Ok(());
    };
    let now = state.now();
    let session = state.login.sessions().resume(&id, now).await?;
    state.login.sessions().end(&id).await?;
    if let Some(session) = session {
        end_relying_parties(state, &session, None, now).await;
    }
    Ok(())
}

/// Ends the relying parties of an ending session: OIDC back-channel logout tokens and
/// SAML SOAP LogoutRequests (all but `except_sp`, a SAML SP that asked), delivered in the
/// background.
pub(crate) async fn end_relying_parties(
    state: &AppState,
    session: &idp_core::session::Session,
    except_sp: Option<&str>,
    now: OffsetDateTime,
) {
    let logouts = state.oidc.provider.logout_session(session, now).await;
    crate::oidc::deliver_backchannel(state, logouts);
    crate::saml::notify_logout(state, session, except_sp, now).await;
}

fn removal(name: &'static str) -> Cookie<'static> {
    let mut cookie = secure_cookie(name, String::new(), None);
    cookie.make_removal();
    cookie
}

fn cookie_secret(req: &HttpRequest, name: &str) -> Option<Secret> {
    req.cookie(name)
        .and_then(|c| Secret::from_client(c.value()))
}

/// The one mapping from a login outcome to what the browser sees.
fn login_failure(state: &AppState, lang: Lang, error: &LoginError) -> HttpResponse {
    let code = error.code();
    state.metrics.count_login(code);
    let status = match error {
        LoginError::Refused(_) | LoginError::NoDoctorRecord => StatusCode::FORBIDDEN,
        LoginError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        LoginError::RequestExpired
        | LoginError::TicketInvalid
        | LoginError::BindingMismatch
        | LoginError::InvalidReturnTo => StatusCode::BAD_REQUEST,
        LoginError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    match error {
        LoginError::Store(e) => tracing::error!(error = %e, "login failed: storage"),
        other => tracing::info!(reason = code, detail = %other, "login refused"),
    }
    failure_page(state, lang, status, code)
}

fn failure_page(state: &AppState, lang: Lang, status: StatusCode, code: &str) -> HttpResponse {
    let (title, detail) = login_failure_text(lang, code);
    let again = lang.pick("もう一度ログインする", "Log in again");
    let body = format!(
        r#"<p class="notice" data-reason="{code}">{detail}</p>
<p><a class="button" href="{url}">{again}</a></p>"#,
        code = escape(code),
        detail = escape(detail),
        url = escape(&state.public_url("/login")),
        again = escape(again),
    );
    html(status, layout(lang, title, &body))
}

async fn home(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let lang = Lang::of(&req);
    let session = current_session(&req, &state).await;
    let body = match session {
        Some(_) => format!(
            r#"<p>{}</p><p><a class="button" href="/account">{}</a></p>"#,
            lang.pick("ログインしています。", "You are logged in."),
            lang.pick("アカウント", "Account")
        ),
        None => format!(
            r#"<p>{}</p><p><a class="button" href="/login">{}</a></p>"#,
            lang.pick(
                "医師資格証（HPKIカード）をカードリーダーに置いてログインしてください。PINの入力を求められます。",
                "Put your doctor qualification card (HPKI card) on the reader and log in. You will be asked for the PIN."
            ),
            lang.pick("HPKIログイン", "HPKI login")
        ),
    };
    html(
        StatusCode::OK,
        layout(
            lang,
            lang.pick("医師資格証でログイン", "Log in with your card"),
            &body,
        ),
    )
}

#[derive(Deserialize)]
struct StartQuery {
    return_to: Option<String>,
}

async fn start_login(
    req: HttpRequest,
    query: web::Query<StartQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let return_to = match query.return_to.as_deref().map(ReturnTo::parse).transpose() {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => return login_failure(&state, lang, &e),
    };
    match state.login.start(return_to).await {
        Ok(started) => {
            let ttl = CookieDuration::seconds(
                i64::try_from(state.runtime.login.request_ttl.as_secs()).unwrap_or(600),
            );
            let location = format!(
                "{}/login/hpki?req={}&lang={}",
                state.runtime.config.login.url,
                started.request.dangerous_expose(),
                lang.code()
            );
            let mut response = see_other(&location);
            let _ = response.add_cookie(&secure_cookie(
                LOGIN_COOKIE,
                started.binding.dangerous_expose().to_owned(),
                Some(ttl),
            ));
            response
        }
        Err(e) => login_failure(&state, lang, &e),
    }
}

#[derive(Deserialize)]
struct HpkiQuery {
    req: Option<String>,
}

async fn login_hpki(
    req: HttpRequest,
    query: web::Query<HpkiQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let Some(request) = query.req.as_deref().and_then(Secret::from_client) else {
        return see_other(&state.public_url("/login"));
    };
    let (peer, client) = match presented_certificate(&req, &state) {
        Ok(presented) => presented,
        Err(code) => {
            state.metrics.count_login(code);
            return failure_page(&state, lang, StatusCode::BAD_REQUEST, code);
        }
    };
    match state
        .login
        .authenticate(&request, peer, client, state.now())
        .await
    {
        Ok(ticket) => {
            state.metrics.count_login("authenticated");
            see_other(&state.public_url(&format!(
                "/login/complete?ticket={}",
                ticket.dangerous_expose()
            )))
        }
        Err(e) => login_failure(&state, lang, &e),
    }
}

async fn to_public_login(state: web::Data<AppState>) -> HttpResponse {
    see_other(&state.public_url("/login"))
}

/// The certificate the client presented and the client's address: from this TLS
/// connection, or (proxy mode) from RFC 9440 headers set by a trusted proxy.
fn presented_certificate(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(Result<PeerCertificate, HpkiRefusal>, IpAddr), &'static str> {
    let peer_ip = req.peer_addr().map(|a| a.ip()).ok_or("no_peer_address")?;
    match state.runtime.config.login.client_certificate {
        ClientCertificateSource::Tls => {
            let chain = req
                .conn_data::<PresentedChain>()
                .map(|c| c.0.clone())
                .unwrap_or_default();
            Ok((PeerCertificate::new(chain), peer_ip))
        }
        ClientCertificateSource::Rfc9440Proxy => {
            if !state
                .runtime
                .config
                .login
                .trusted_proxies
                .contains(&peer_ip)
            {
                tracing::warn!(%peer_ip, "client certificate headers from an address that is not a trusted proxy");
                return Err("untrusted_proxy");
            }
            let client = req
                .headers()
                .get("X-Forwarded-For")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(peer_ip);
            Ok((rfc9440_chain(req), client))
        }
    }
}

/// Parses `Client-Cert` (an sf-binary item) and `Client-Cert-Chain` (a list of them).
fn rfc9440_chain(req: &HttpRequest) -> Result<PeerCertificate, HpkiRefusal> {
    let decode = |item: &str| -> Result<CertificateDer<'static>, HpkiRefusal> {
        let inner = item
            .trim()
            .strip_prefix(':')
            .and_then(|s| s.strip_suffix(':'))
            .ok_or_else(|| HpkiRefusal::Malformed("Client-Cert is not an sf-binary item".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map(CertificateDer::from)
            .map_err(|_| HpkiRefusal::Malformed("Client-Cert is not base64".into()))
    };
    let mut leaf = req.headers().get_all("Client-Cert");
    let leaf = match (leaf.next(), leaf.next()) {
        (Some(value), None) => value
            .to_str()
            .map_err(|_| HpkiRefusal::Malformed("Client-Cert is not ASCII".into()))?,
        (None, _) => return Err(HpkiRefusal::NoCertificate),
        (Some(_), Some(_)) => {
            return Err(HpkiRefusal::Malformed("several Client-Cert headers".into()));
        }
    };
    let mut chain = vec![decode(leaf)?];
    for value in req.headers().get_all("Client-Cert-Chain") {
        let value = value
            .to_str()
            .map_err(|_| HpkiRefusal::Malformed("Client-Cert-Chain is not ASCII".into()))?;
        for item in value.split(',').filter(|s| !s.trim().is_empty()) {
            chain.push(decode(item)?);
            if chain.len() > idp_core::hpki::MAX_CHAIN_LENGTH {
                return Err(HpkiRefusal::TooLarge);
            }
        }
    }
    PeerCertificate::new(chain)
}

#[derive(Deserialize)]
struct CompleteQuery {
    ticket: Option<String>,
}

async fn complete_login(
    req: HttpRequest,
    query: web::Query<CompleteQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let lang = Lang::of(&req);
    let Some(ticket) = query.ticket.as_deref().and_then(Secret::from_client) else {
        return login_failure(&state, lang, &LoginError::TicketInvalid);
    };
    let binding = cookie_secret(&req, LOGIN_COOKIE);
    let previous = cookie_secret(&req, SESSION_COOKIE);
    match state
        .login
        .complete(&ticket, binding.as_ref(), previous.as_ref(), state.now())
        .await
    {
        Ok(done) => {
            state.metrics.count_login("success");
            tracing::info!(doctor = done.session.doctor_id.as_str(), serial = %done.session.card.serial, "login");
            let mut response = see_other(done.return_to.as_str());
            let _ = response.add_cookie(&secure_cookie(
                SESSION_COOKIE,
                done.session_id.dangerous_expose().to_owned(),
                None,
            ));
            let _ = response.add_cookie(&removal(LOGIN_COOKIE));
            response
        }
        Err(e) => login_failure(&state, lang, &e),
    }
}

pub(crate) async fn current_session(req: &HttpRequest, state: &AppState) -> Option<Session> {
    let id = cookie_secret(req, SESSION_COOKIE)?;
    match state.login.sessions().resume(&id, state.now()).await {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(error = %e, "session store unavailable");
            None
        }
    }
}

async fn account(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let lang = Lang::of(&req);
    let Some(session) = current_session(&req, &state).await else {
        return see_other("/login?return_to=/account");
    };
    let fmt = |t: OffsetDateTime| t.date().to_string();
    let roles = session
        .card
        .roles
        .iter()
        .map(|r| {
            let role = idp_vocabulary::hpki::HcRole::from_display_name(r);
            match (lang, role.japanese_name()) {
                (Lang::Ja, Some(ja)) => format!("{ja}（{r}）"),
                _ => r.clone(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rows = [
        (lang.pick("氏名", "Name"), session.display_name.clone()),
        (lang.pick("資格", "Qualification"), roles),
        (
            lang.pick("証明書発行者", "Certificate issuer"),
            session.card.issuer.clone(),
        ),
        (
            lang.pick("証明書の有効期間", "Certificate validity"),
            format!(
                "{} – {}",
                fmt(session.card.not_before),
                fmt(session.card.not_after)
            ),
        ),
        (
            lang.pick("ログイン日時", "Logged in at"),
            session.auth_time.to_string(),
        ),
    ];
    let mut body = String::from("<dl>");
    for (label, value) in rows {
        body.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            escape(label),
            escape(&value)
        ));
    }
    body.push_str("</dl>");
    body.push_str(&consents_section(&state, lang, &session).await);
    body.push_str(&format!(
        r#"<form method="post" action="/logout"><button type="submit">{}</button></form>"#,
        lang.pick("ログアウト", "Log out")
    ));
    html(
        StatusCode::OK,
        layout(lang, lang.pick("アカウント", "Account"), &body),
    )
}

/// The doctor's consents, each with the claims it covers and a button to withdraw it.
async fn consents_section(state: &AppState, lang: Lang, session: &Session) -> String {
    let stores = state.oidc.provider.stores();
    let consents = match stores.consents.consents_of(&session.doctor_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "consents unavailable");
            return String::new();
        }
    };
    let mut out = format!(
        "<h2>{}</h2>",
        escape(lang.pick("情報提供への同意", "Consents"))
    );
    if consents.is_empty() {
        out.push_str(&format!(
            "<p>{}</p>",
            escape(lang.pick(
                "同意しているサービスはありません。",
                "You have not consented to any service."
            ))
        ));
        return out;
    }
    out.push_str(r#"<ul class="consents">"#);
    for consent in consents {
        let (name, _) = crate::account_api::relying_party_name(state, &consent.client_id).await;
        let claims = consent
            .claims
            .iter()
            .map(|c| crate::pages::claim_label(lang, c))
            .collect::<Vec<_>>()
            .join(lang.pick("、", ", "));
        out.push_str(&format!(
            r#"<li data-client="{id}"><strong>{name}</strong>: {claims}
<form method="post" action="/account/consents/revoke"><input type="hidden" name="client_id" value="{id}"><button type="submit" class="secondary">{revoke}</button></form></li>"#,
            id = escape(&consent.client_id),
            name = escape(&name),
            claims = escape(&claims),
            revoke = escape(lang.pick("同意を取り消す", "Withdraw consent")),
        ));
    }
    out.push_str("</ul>");
    out
}

#[derive(Deserialize)]
struct RevokeConsentForm {
    client_id: String,
}

/// Withdraws a consent: the relying party's refresh tokens for this doctor are revoked in
/// the same transaction, and the next login asks again.
async fn revoke_consent(
    req: HttpRequest,
    form: web::Form<RevokeConsentForm>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !crate::oidc::same_origin(&req, &state) {
        return HttpResponse::Forbidden().finish();
    }
    let Some(session) = current_session(&req, &state).await else {
        return see_other("/login?return_to=/account");
    };
    let stores = state.oidc.provider.stores();
    match idp_core::account::withdraw_consent(
        stores.consents.as_ref(),
        &stores.audit,
        &session.doctor_id,
        idp_core::account::Actor::Doctor,
        &form.client_id,
        state.now(),
    )
    .await
    {
        Ok(_) => see_other("/account"),
        Err(e) => {
            tracing::error!(error = %e, "consent withdrawal failed or could not be audited");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}

async fn session_json(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match current_session(&req, &state).await {
        Some(session) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(session),
        None => HttpResponse::Unauthorized()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"error": "no_session"})),
    }
}

async fn logout(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // A cross-site form cannot log a doctor out: SameSite=Lax keeps the cookie off
    // cross-site POSTs, and a foreign Origin is refused outright.
    if !crate::oidc::same_origin(&req, &state) {
        return HttpResponse::Forbidden().finish();
    }
    if let Err(e) = end_browser_session(&req, &state).await {
        tracing::error!(error = %e, "logout: session store unavailable");
        return HttpResponse::ServiceUnavailable().finish();
    }
    let mut response = see_other("/");
    let _ = response.add_cookie(&removal(SESSION_COOKIE));
    response
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.doctors.ping().await;
    let ephemeral = state.ephemeral.ping().await;
    let ready = database.is_ok() && ephemeral.is_ok();
    let body = serde_json::json!({
        "database": database.is_ok(),
        "ephemeral_store": ephemeral.is_ok(),
        "crls": state.validator.crls().status(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.metrics.render(&state))
}
