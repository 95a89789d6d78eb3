//! SAML 2.0 endpoints: signed metadata, Web Browser SSO over HTTP-Redirect and HTTP-POST
//! (SP-initiated and IdP-initiated), consent, and the SP registry's start-up and refresh.
//! Decisions are `idp_saml::idp::IdentityProvider`'s; this module only speaks HTTP.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use idp_core::disclosure::DisclosureEngine;
use idp_core::oidc::provider::percent_encode;
use idp_core::store::{SpRecord, SpStore};
use idp_saml::authn::Received;
use idp_saml::idp::{
    Credentials, IdentityProvider, IdpSettings, IdpStores, Outbound, PostForm, SloStep, SsoStep,
};
use idp_saml::sp::{ServiceProvider, SpSettings};
use serde::Deserialize;
use sha2::Digest as _;
use time::OffsetDateTime;

use crate::app::{AppState, current_session, html, see_other};
use crate::config::Runtime;
use crate::oidc::{consent_form, message_page, same_origin};
use crate::pages::{Lang, escape, layout};
use crate::serve::StartError;

/// The SAML side of the application state.
#[derive(Debug)]
pub struct SamlState {
    pub idp: IdentityProvider,
    pub http: reqwest::Client,
    pub metadata_refresh: Duration,
    /// The signed metadata and when it was signed: signing on every request would let
    /// anyone spend the IdP's CPU.
    pub signed_metadata: std::sync::Mutex<Option<(OffsetDateTime, Arc<String>)>>,
}

/// How long a signed metadata document is served before it is signed again.
const METADATA_RESIGN: time::Duration = time::Duration::minutes(5);

impl SamlState {
    fn metadata(&self, now: OffsetDateTime) -> Result<Arc<String>, idp_saml::crypto::SignError> {
        let mut cached = self
            .signed_metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, xml)) = cached.as_ref()
            && now - *at < METADATA_RESIGN
            && *at <= now
        {
            return Ok(xml.clone());
        }
        let xml = Arc::new(self.idp.metadata(now)?);
        *cached = Some((now, xml.clone()));
        Ok(xml)
    }
}

pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/saml/metadata", web::get().to(metadata))
        .route("/saml/sso", web::get().to(sso_redirect))
        .route("/saml/sso", web::post().to(sso_post))
        .route("/saml/sso/continue", web::get().to(sso_continue))
        .route("/saml/sso/consent", web::post().to(consent))
        .route("/saml/idp-initiated", web::get().to(idp_initiated))
        .route("/saml/slo", web::get().to(slo_redirect))
        .route("/saml/slo", web::post().to(slo_post));
}

fn not_configured(req: &HttpRequest) -> HttpResponse {
    message_page(
        Lang::of(req),
        StatusCode::NOT_FOUND,
        "saml_not_configured",
        "SAML は設定されていません。",
        "SAML is not configured.",
    )
}

async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(&req);
    };
    match saml.metadata(OffsetDateTime::now_utc()) {
        Ok(xml) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/samlmetadata+xml"))
            .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
            .body(xml.as_str().to_owned()),
        Err(e) => {
            tracing::error!(error = %e, "signing the SAML metadata failed");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}

/// `scheme://host[:port]` of a URL (the auto-POST page's `form-action`).
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let host_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + host_len])
}

const AUTO_SUBMIT: &str = "document.forms[0].submit();";

/// The HTTP-POST binding: a form the browser submits to the SP at once (a button when
/// scripts are off). Only this page's script and a form to the SP's origin are allowed.
fn post_page(lang: Lang, form: &PostForm) -> HttpResponse {
    post_form_page(
        lang,
        form,
        StatusCode::OK,
        lang.pick("サービスへ移動しています", "Returning to the service"),
        None,
    )
}

/// A page carrying `form` to the SP: submitted by a script (a hash-pinned one, the only
/// script allowed) unless `intro` is given, which is shown above a button the doctor
/// presses after reading it.
fn post_form_page(
    lang: Lang,
    form: &PostForm,
    status: StatusCode,
    title: &str,
    intro: Option<String>,
) -> HttpResponse {
    let Some(origin) = origin_of(&form.url) else {
        return HttpResponse::InternalServerError().finish();
    };
    let relay = form
        .relay_state
        .as_deref()
        .map(|r| {
            format!(
                r#"<input type="hidden" name="RelayState" value="{}">"#,
                escape(r)
            )
        })
        .unwrap_or_default();
    let fields = format!(
        r#"<form method="post" action="{url}"><input type="hidden" name="{field}" value="{message}">{relay}"#,
        url = escape(&form.url),
        field = form.field,
        message = escape(&form.message),
    );
    let body = match intro {
        None => format!(
            r#"{fields}<noscript><p>{note}</p><button type="submit">{button}</button></noscript></form><script>{AUTO_SUBMIT}</script>"#,
            note = escape(lang.pick(
                "JavaScript が無効です。ボタンを押してサービスへ進んでください。",
                "JavaScript is off. Press the button to continue to the service."
            )),
            button = escape(lang.pick("続ける", "Continue")),
        ),
        Some(intro) => format!(
            r#"{intro}{fields}<button type="submit" data-continue>{button}</button></form>"#,
            button = escape(lang.pick("サービスに戻る", "Return to the service")),
        ),
    };
    let hash = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(AUTO_SUBMIT.as_bytes()));
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            "Content-Security-Policy",
            format!(
                "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; form-action {origin}; frame-ancestors 'none'"
            ),
        ))
        // same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with
        // a form POST, and the same-origin check of consent and logout would refuse them.
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(layout(lang, title, &body))
}

/// How the request arrived: a cross-site POST carries no session cookie (SameSite=Lax),
/// so a missing session is first looked for again by a same-site GET.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arrival {
    CrossSitePost,
    Navigation,
}

/// The one mapping from an SSO step to what the browser sees.
fn sso_response(req: &HttpRequest, step: SsoStep, arrival: Arrival) -> HttpResponse {
    let lang = Lang::of(req);
    match step {
        SsoStep::Refused(reason) => refused_page(
            lang,
            "saml_request_refused",
            (
                "ログイン要求を受け付けられません",
                "The login request cannot be accepted",
            ),
            (
                "このログイン要求は受け付けられません。安全のため、サービスには戻りません。",
                "This login request cannot be accepted. For your safety you are not sent back to the service.",
            ),
            &reason,
        ),
        SsoStep::Post(form) => post_page(lang, &form),
        SsoStep::RequiredWithheld { refusal, form } => post_form_page(
            lang,
            &form,
            StatusCode::FORBIDDEN,
            crate::pages::required_withheld_title(lang),
            Some(crate::pages::required_withheld_body(lang, &refusal, "")),
        ),
        SsoStep::Login { pending } => {
            let continue_at = format!("/saml/sso/continue?pending={}", pending.dangerous_expose());
            match arrival {
                Arrival::CrossSitePost => see_other(&continue_at),
                Arrival::Navigation => see_other(&format!(
                    "/login?return_to={}",
                    percent_encode(&continue_at)
                )),
            }
        }
        SsoStep::Consent(prompt) => consent_form(
            lang,
            &prompt.sp_name,
            &prompt.claims,
            &prompt.pending,
            "/saml/sso/consent",
            false,
            // The answer is a page of this origin (the auto-POST form has its own policy).
            None,
        ),
        SsoStep::PendingExpired => message_page(
            lang,
            StatusCode::BAD_REQUEST,
            "authorization_expired",
            "ログイン要求の有効期限が切れました。サービスからもう一度ログインしてください。",
            "The login request has expired. Please log in again from the service.",
        ),
        SsoStep::Unavailable => message_page(
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "一時的に利用できません。しばらくしてからもう一度お試しください。",
            "Temporarily unavailable. Please try again later.",
        ),
    }
}

async fn sso_redirect(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(&req);
    };
    let session = current_session(&req, &state).await;
    let step = saml
        .idp
        .sso(
            Received::Redirect {
                raw_query: req.query_string(),
            },
            session.as_ref(),
            OffsetDateTime::now_utc(),
        )
        .await;
    sso_response(&req, step, Arrival::Navigation)
}

async fn sso_post(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(&req);
    };
    let fields = form_fields(&body);
    let Some((message, relay_state)) = post_message(&fields) else {
        return sso_response(
            &req,
            SsoStep::Refused(ONE_MESSAGE.into()),
            Arrival::Navigation,
        );
    };
    let session = current_session(&req, &state).await;
    let arrival = if session.is_some() {
        Arrival::Navigation
    } else {
        Arrival::CrossSitePost
    };
    let step = saml
        .idp
        .sso(
            Received::Post {
                message,
                relay_state,
            },
            session.as_ref(),
            OffsetDateTime::now_utc(),
        )
        .await;
    sso_response(&req, step, arrival)
}

const ONE_MESSAGE: &str = "one SAMLRequest (and at most one RelayState) is required";

fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// The HTTP-POST binding's `SAMLRequest` and optional `RelayState`, each at most once
/// (a repeated field is a differential between readers: refused).
fn post_message(fields: &[(String, String)]) -> Option<(&str, Option<&str>)> {
    let one = |name: &str| {
        let mut values = fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        (values.next(), values.next())
    };
    match (one("SAMLRequest"), one("RelayState")) {
        ((Some(message), None), (relay_state, None)) => Some((message, relay_state)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct ContinueQuery {
    pending: Option<String>,
}

async fn sso_continue(
    req: HttpRequest,
    query: web::Query<ContinueQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(&req);
    };
    let session = current_session(&req, &state).await;
    let step = saml
        .idp
        .resume(
            query.pending.as_deref().unwrap_or_default(),
            session.as_ref(),
            OffsetDateTime::now_utc(),
        )
        .await;
    sso_response(&req, step, Arrival::Navigation)
}

#[derive(Deserialize)]
struct ConsentAnswer {
    pending: String,
    decision: String,
}

async fn consent(
    req: HttpRequest,
    form: web::Form<ConsentAnswer>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(&req);
    };
    if !same_origin(&req, &state) {
        return HttpResponse::Forbidden().finish();
    }
    let session = current_session(&req, &state).await;
    let step = saml
        .idp
        .answer_consent(
            &form.pending,
            session.as_ref(),
            form.decision == "approve",
            OffsetDateTime::now_utc(),
        )
        .await;
    sso_response(&req, step, Arrival::Navigation)
}

#[derive(Deserialize)]
struct IdpInitiated {
    sp: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

async fn idp_initiated(
    req: HttpRequest,
    query: web::Query<IdpInitiated>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(&req);
    };
    let session = current_session(&req, &state).await;
    let step = saml
        .idp
        .unsolicited(
            &query.sp,
            query.relay_state.as_deref(),
            session.as_ref(),
            OffsetDateTime::now_utc(),
        )
        .await;
    sso_response(&req, step, Arrival::Navigation)
}

// ----- single logout ------------------------------------------------------------------

async fn slo_redirect(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let received = Received::Redirect {
        raw_query: req.query_string(),
    };
    slo_with(&req, &state, received).await
}

async fn slo_post(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let fields = form_fields(&body);
    match post_message(&fields) {
        Some((message, relay_state)) => {
            let received = Received::Post {
                message,
                relay_state,
            };
            slo_with(&req, &state, received).await
        }
        None => slo_refused(&req, ONE_MESSAGE),
    }
}

fn slo_refused(req: &HttpRequest, reason: &str) -> HttpResponse {
    refused_page(
        Lang::of(req),
        "saml_logout_refused",
        ("ログアウト", "Log out"),
        (
            "このログアウト要求は受け付けられません。",
            "This logout request cannot be accepted.",
        ),
        reason,
    )
}

/// A refused SAML message: a page for the browser (Japanese first) with the reason in
/// English for support, and nothing sent to the SP. `(ja, en)` pairs for title and text.
fn refused_page(
    lang: Lang,
    code: &str,
    title: (&'static str, &'static str),
    text: (&'static str, &'static str),
    reason: &str,
) -> HttpResponse {
    tracing::info!(%reason, code, "SAML message refused");
    let body = format!(
        r#"<p class="notice" data-reason="{code}">{}</p><p lang="en"><small>{}</small></p>"#,
        escape(lang.pick(text.0, text.1)),
        escape(reason)
    );
    html(
        StatusCode::BAD_REQUEST,
        layout(lang, lang.pick(title.0, title.1), &body),
    )
}

async fn slo_with(req: &HttpRequest, state: &AppState, received: Received<'_>) -> HttpResponse {
    let Some(saml) = &state.saml else {
        return not_configured(req);
    };
    let now = OffsetDateTime::now_utc();
    let browser = current_session(req, state).await;
    match saml.idp.slo(received, browser.as_ref(), now).await {
        SloStep::Refused(reason) => slo_refused(req, &reason),
        SloStep::Unavailable => sso_response(req, SsoStep::Unavailable, Arrival::Navigation),
        SloStep::Logout { sid, sp, answer } => {
            let mut ended_browser_session = false;
            if let Some(sid) = sid {
                match state.login.sessions().end_by_sid(&sid).await {
                    Ok(Some(session)) => {
                        ended_browser_session =
                            browser.as_ref().is_some_and(|b| b.sid == session.sid);
                        crate::app::end_relying_parties(state, &session, Some(&sp), now).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "logout: session store unavailable");
                        return sso_response(req, SsoStep::Unavailable, Arrival::Navigation);
                    }
                }
            }
            let lang = Lang::of(req);
            let mut response = match answer {
                Outbound::Redirect(url) => see_other(&url),
                Outbound::Post(form) => post_page(lang, &form),
            };
            if ended_browser_session {
                let _ = response.add_cookie(&crate::app::session_removal());
            }
            response
        }
    }
}

/// Tells the SAML SPs of an ending session (all but `except`, the SP that asked) over
/// their SOAP SingleLogoutService, in the background.
pub async fn notify_logout(
    state: &AppState,
    session: &idp_core::session::Session,
    except: Option<&str>,
    now: OffsetDateTime,
) {
    let Some(saml) = &state.saml else {
        return;
    };
    let notifications = saml.idp.logout_notifications(session, except, now).await;
    for n in notifications {
        let http = saml.http.clone();
        tokio::spawn(async move {
            let outcome = http
                .post(&n.url)
                .header("Content-Type", "text/xml; charset=utf-8")
                .header(
                    "SOAPAction",
                    "http://www.oasis-open.org/committees/security",
                )
                .body(n.envelope)
                .send()
                .await;
            match outcome {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(sp = %n.entity_id, "SAML back-channel logout delivered");
                }
                Ok(r) => {
                    tracing::warn!(sp = %n.entity_id, status = %r.status(), "SAML back-channel logout refused");
                }
                Err(e) => {
                    tracing::warn!(sp = %n.entity_id, error = %e, "SAML back-channel logout failed")
                }
            }
        });
    }
}

// ----- start-up and the SP registry ---------------------------------------------------

/// Fetches SP metadata from an https URL (bounded size, no redirects).
pub async fn fetch_metadata(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if bytes.len() > idp_saml::guard::MAX_METADATA_BYTES {
        return Err(format!("{url}: the metadata is too large"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{url}: not UTF-8"))
}

/// Checks metadata and settings and stores the SP; returns its entity ID. With
/// `expected`, metadata naming another entity is refused (a refresh never adds an SP).
pub async fn register_sp(
    sps: &dyn SpStore,
    metadata: &str,
    settings: &SpSettings,
    expected: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, String> {
    let sp = ServiceProvider::from_metadata(metadata, settings.clone(), now)
        .map_err(|e| e.to_string())?;
    if let Some(expected) = expected
        && sp.entity_id != expected
    {
        return Err(format!(
            "the metadata names {}, not {expected}",
            sp.entity_id
        ));
    }
    let record = SpRecord {
        entity_id: sp.entity_id.clone(),
        metadata: metadata.to_owned(),
        settings: serde_json::to_string(settings).map_err(|e| e.to_string())?,
        fetched_at: now,
    };
    // Two processes starting at once may race on a new SP: the loser writes again.
    let mut outcome = sps.put_sp(&record, now).await;
    if matches!(outcome, Err(idp_core::store::StoreError::Conflict(_))) {
        outcome = sps.put_sp(&record, now).await;
    }
    outcome.map_err(|e| e.to_string())?;
    Ok(sp.entity_id)
}

/// The SAML IdP: configured SPs registered (URL metadata fetched), settings built.
pub async fn prepare(
    runtime: &Runtime,
    stores: IdpStores,
    disclosure: Arc<DisclosureEngine>,
) -> Result<Option<SamlState>, StartError> {
    let (Some(config), Some(loaded)) = (&runtime.config.saml, &runtime.saml) else {
        return Ok(None);
    };
    let http = crate::serve::outbound_client(runtime, Duration::from_secs(10))
        .map_err(StartError::Saml)?;
    let now = OffsetDateTime::now_utc();
    let stored = |r: &idp_core::store::SpRecord| (r.metadata.clone(), r.settings.clone());
    let before: std::collections::BTreeMap<String, (String, String)> = stores
        .sps
        .sps()
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
        .iter()
        .map(|r| (r.entity_id.clone(), stored(r)))
        .collect();
    for (metadata, settings) in &loaded.sps {
        let metadata = match (metadata, &settings.metadata_url) {
            (Some(xml), _) => xml.clone(),
            (None, Some(url)) => fetch_metadata(&http, url).await.map_err(StartError::Saml)?,
            (None, None) => continue,
        };
        let entity = register_sp(stores.sps.as_ref(), &metadata, settings, None, now)
            .await
            .map_err(StartError::Saml)?;
        // A configured SP that is new or changed is an administrative change on record.
        let after = stores
            .sps
            .sp(&entity)
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
        if after.as_ref().map(stored) != before.get(&entity).cloned() {
            let event = idp_core::audit::AuditEvent::admin(
                "config",
                "sp.configured",
                Some(&entity),
                serde_json::json!({"audience": settings.audience, "claims": settings.claims, "pre_approved": settings.pre_approved}),
            );
            stores
                .audit
                .record(event)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?;
        }
    }
    let public = &runtime.config.public.url;
    let login = &runtime.config.login.url;
    let settings = IdpSettings {
        entity_id: loaded.entity_id.clone(),
        sso_url: format!("{public}/saml/sso"),
        sso_urls: vec![format!("{public}/saml/sso"), format!("{login}/saml/sso")],
        slo_url: format!("{public}/saml/slo"),
        require_signed_requests: config.require_signed_requests,
        assertion_lifetime: Duration::from_secs(config.assertion_ttl_secs),
        skew: Duration::from_secs(config.clock_skew_secs),
        request_max_age: Duration::from_secs(config.request_max_age_secs),
        pending_ttl: Duration::from_secs(600),
        session_ttl: runtime.session.absolute,
        pairwise_salt: runtime.config.oidc.pairwise_salt.as_bytes().to_vec(),
        organization: config.organization.clone(),
        metadata_valid_for: Duration::from_secs(7 * 24 * 3600),
        metadata_cache_for: Duration::from_secs(3600),
    };
    let idp = IdentityProvider::new(
        settings,
        stores,
        Credentials::new(loaded.credential.clone(), loaded.next_certificate.clone()),
        disclosure,
    );
    Ok(Some(SamlState {
        idp,
        http,
        metadata_refresh: Duration::from_secs(config.metadata_refresh_secs.max(60)),
        signed_metadata: std::sync::Mutex::new(None),
    }))
}

/// Refreshes metadata registered from URLs when its `cacheDuration` (or the configured
/// interval) has passed, or before its `validUntil`. A failed fetch or a document that
/// does not verify keeps the previous metadata, which stops being used at its own
/// `validUntil`.
pub fn spawn_metadata_refresher(state: web::Data<AppState>) {
    if state.saml.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(saml) = &state.saml else { return };
            if let Err(e) = refresh_once(saml).await {
                tracing::warn!(error = %e, "SAML metadata refresh");
            }
        }
    });
}

async fn refresh_once(saml: &SamlState) -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    let sps = saml.idp.stores().sps.clone();
    for record in sps.sps().await.map_err(|e| e.to_string())? {
        let Ok(settings) = serde_json::from_str::<SpSettings>(&record.settings) else {
            continue;
        };
        let Some(url) = settings.metadata_url.clone() else {
            continue;
        };
        let due = match idp_saml::idp::parse_record(&record, now) {
            Some(sp) => sp.refresh_at(record.fetched_at, saml.metadata_refresh) <= now,
            None => true,
        };
        if !due {
            continue;
        }
        match fetch_metadata(&saml.http, &url).await {
            Ok(xml) => {
                match register_sp(sps.as_ref(), &xml, &settings, Some(&record.entity_id), now).await
                {
                    Ok(entity) => tracing::info!(sp = %entity, "SAML metadata refreshed"),
                    Err(e) => {
                        tracing::warn!(sp = %record.entity_id, error = %e, "refreshed metadata refused")
                    }
                }
            }
            Err(e) => tracing::warn!(sp = %record.entity_id, error = %e, "metadata fetch failed"),
        }
    }
    Ok(())
}
