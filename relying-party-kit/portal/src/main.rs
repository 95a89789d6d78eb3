//! `hpki-portal`: the doctor portal (医師資格証ポータル). A relying party of the HPKI IdP
//! built on `hpki-rp-kit`: the doctor logs in with the card through the IdP and sees the
//! released identity, sets disclosure settings, manages consents and reads the disclosure
//! history, all through the IdP's account API with the doctor's own access token.

mod config;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::Parser;
use hpki_rp_kit::idp_vocabulary::scope;
use hpki_rp_kit::{
    AccountApi, AuthParams, ClientAuth, ClientId, ClientSecret, Doctor, Error, HttpClient,
    IssuerUrl, MemorySessions, OidcClient, PostLogoutRedirectUrl, RedirectUrl, RelyingParty,
    RequireRole, Sealer, Setting, SignedIn, WebConfig, WebError,
};
use serde::Deserialize;

use config::Config;
use view::{Frame, Lang, Section};

#[derive(Debug, Parser)]
#[command(name = "hpki-portal", about = "The doctor portal of the HPKI IdP")]
struct Args {
    /// The portal's configuration file.
    #[arg(long, short, env = "HPKI_PORTAL_CONFIG", default_value = "portal.toml")]
    config: PathBuf,
}

/// How long the portal waits for the IdP's discovery document at start.
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(60);

const LANG_COOKIE: &str = "portal-lang";

#[derive(Debug)]
struct Portal {
    api: AccountApi,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let config = Config::load(&args.config)?;
    let mut http = HttpClient::builder();
    if let Some(ca) = &config.idp_ca_pem {
        http = http.extra_root_pem(ca).map_err(|e| e.to_string())?;
    }
    let http = http.build().map_err(|e| e.to_string())?;
    let oidc = discover(&config, http.clone()).await?;
    let api = AccountApi::new(http, &config.issuer).map_err(|e| e.to_string())?;
    let sealer = match &config.session_key {
        Some(key) => Sealer::new(key),
        None => Sealer::random().map_err(|e| e.to_string())?,
    };
    let web_config = WebConfig {
        scopes: [
            scope::PROFILE,
            scope::EMAIL,
            scope::HPKI,
            scope::JMA,
            scope::DOCTOR_REGISTRATION,
            scope::OFFLINE_ACCESS,
            scope::ACCOUNT,
        ]
        .map(str::to_owned)
        .to_vec(),
        auth_params: AuthParams::hpki_card().with_card_certificate(),
        cookie_prefix: config.cookie_prefix.clone(),
        post_logout_redirect_uri: Some(
            PostLogoutRedirectUrl::new(format!("{}/", config.url)).map_err(|e| e.to_string())?,
        ),
        ..WebConfig::default()
    };
    let rp = web::Data::new(RelyingParty::new(
        oidc,
        sealer,
        Arc::new(MemorySessions::default()),
        web_config,
    ));
    let portal = web::Data::new(Portal { api });
    let tls = server_tls(&config)?;
    tracing::info!(listen = config.listen, url = config.url, "portal listening");
    HttpServer::new(move || {
        let rp = rp.clone();
        App::new()
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::X_FRAME_OPTIONS, "DENY"))
                    .add((header::REFERRER_POLICY, "no-referrer"))
                    .add((
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https:; frame-ancestors 'none'",
                    ))
                    .add((
                        header::STRICT_TRANSPORT_SECURITY,
                        "max-age=31536000",
                    )),
            )
            .app_data(rp.clone())
            .app_data(portal.clone())
            .configure(|cfg| rp.routes(cfg))
            .route("/", web::get().to(welcome))
            .route("/healthz", web::get().to(|| async { "ok" }))
            .service(
                web::scope("")
                    .wrap(RequireRole::medical_doctor())
                    .route("/profile", web::get().to(profile))
                    .route("/settings", web::get().to(settings))
                    .route("/settings", web::post().to(save_settings))
                    .route("/consents", web::get().to(consents))
                    .route("/consents/withdraw", web::post().to(withdraw))
                    .route("/history", web::get().to(history)),
            )
    })
    .bind_rustls_0_23(&config.listen, tls)
    .map_err(|e| format!("{}: {e}", config.listen))?
    .run()
    .await
    .map_err(|e| e.to_string())
}

/// Discovers the IdP, waiting for it to come up (the demo starts both at once).
async fn discover(config: &Config, http: HttpClient) -> Result<OidcClient, String> {
    let deadline = tokio::time::Instant::now() + DISCOVERY_PATIENCE;
    loop {
        let outcome = OidcClient::discover(
            IssuerUrl::new(config.issuer.clone()).map_err(|e| e.to_string())?,
            ClientId::new(config.client_id.clone()),
            ClientAuth::SecretBasic(ClientSecret::new(config.client_secret.clone())),
            RedirectUrl::new(format!("{}/auth/callback", config.url)).map_err(|e| e.to_string())?,
            http.clone(),
        )
        .await;
        match outcome {
            Ok(client) => return Ok(client),
            Err(e @ (Error::Http(_) | Error::Discovery(_)))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(error = %e, "waiting for the IdP");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("IdP discovery: {e}")),
        }
    }
}

fn server_tls(config: &Config) -> Result<rustls::ServerConfig, String> {
    let certs = rustls_pemfile::certs(&mut config.tls_cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_cert: {e}"))?;
    let key = rustls_pemfile::private_key(&mut config.tls_key_pem.as_slice())
        .map_err(|e| format!("tls_key: {e}"))?
        .ok_or("tls_key: no private key")?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS identity: {e}"))
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    lang: Option<String>,
    done: Option<String>,
    before: Option<i64>,
}

/// What a page request carries besides the session: its query, its language (`?lang=`,
/// remembered in a cookie, else the cookie, else Japanese) and that cookie when it is set
/// now.
struct Visit {
    query: PageQuery,
    lang: Lang,
    cookie: Option<Cookie<'static>>,
}

impl Visit {
    fn of(req: &HttpRequest) -> Self {
        let query = web::Query::<PageQuery>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default();
        let parse = |v: &str| match v {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        };
        if let Some(lang) = query.lang.as_deref().and_then(parse) {
            let cookie = Cookie::build(LANG_COOKIE, lang.code())
                .path("/")
                .secure(true)
                .http_only(true)
                .same_site(SameSite::Lax)
                .max_age(actix_web::cookie::time::Duration::days(365))
                .finish();
            return Self {
                query,
                lang,
                cookie: Some(cookie),
            };
        }
        let lang = req
            .cookie(LANG_COOKIE)
            .and_then(|c| parse(c.value()))
            .unwrap_or(Lang::Ja);
        Self {
            query,
            lang,
            cookie: None,
        }
    }

    fn frame<'a>(
        &self,
        section: Section,
        path: &'a str,
        signed_in: Option<&'a SignedIn>,
    ) -> Frame<'a> {
        Frame {
            lang: self.lang,
            section,
            path,
            csrf: signed_in.map(SignedIn::csrf_token),
        }
    }

    /// The message a `?done=` after a change asks for.
    fn done(&self) -> Option<&'static str> {
        let l = self.lang;
        match self.query.done.as_deref()? {
            "saved" => Some(l.t(
                "情報開示設定を保存しました。次回のログインから反映されます。",
                "Your disclosure settings are saved. They apply from your next login.",
            )),
            "unchanged" => Some(l.t("変更はありませんでした。", "Nothing was changed.")),
            "withdrawn" => Some(l.t("同意を取り消しました。", "The consent was withdrawn.")),
            "none" => Some(l.t(
                "取り消す同意はありませんでした。",
                "There was no consent to withdraw.",
            )),
            _ => None,
        }
    }

    fn page(self, body: String) -> HttpResponse {
        let mut response = HttpResponse::Ok();
        response
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(cookie) = self.cookie {
            response.cookie(cookie);
        }
        response.body(body)
    }
}

async fn welcome(req: HttpRequest, doctor: Option<Doctor>) -> HttpResponse {
    let visit = Visit::of(&req);
    let body = view::welcome(&visit.frame(Section::Home, "/", None), doctor.as_ref());
    visit.page(body)
}

async fn profile(req: HttpRequest, signed_in: SignedIn) -> HttpResponse {
    let visit = Visit::of(&req);
    let frame = visit.frame(Section::Profile, "/profile", Some(&signed_in));
    let body = view::profile(&frame, signed_in.doctor());
    visit.page(body)
}

/// What an account API failure means for the doctor: log in again (the token is no
/// longer valid), or a page saying the IdP could not be reached.
fn api_failure(e: Error, frame: &Frame<'_>) -> Result<HttpResponse, WebError> {
    match e {
        Error::Api { status: 401, .. } => {
            tracing::info!("the IdP no longer accepts the session's token");
            Err(WebError::LoginRequired {
                login_url: format!(
                    "/auth/login?return_to={}",
                    url::form_urlencoded::byte_serialize(frame.path.as_bytes()).collect::<String>()
                ),
            })
        }
        e => {
            tracing::warn!(error = %e, "account API call failed");
            Ok(HttpResponse::ServiceUnavailable()
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(view::problem(
                    frame,
                    "認証サーバーと通信できませんでした。しばらくしてからもう一度お試しください。",
                    "The identity provider could not be reached. Please try again in a moment.",
                )))
        }
    }
}

async fn settings(
    req: HttpRequest,
    mut signed_in: SignedIn,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, WebError> {
    let visit = Visit::of(&req);
    let token = signed_in.access_token().await?;
    let frame = visit.frame(Section::Settings, "/settings", Some(&signed_in));
    match portal.api.settings(&token).await {
        Ok(s) => {
            let body = view::settings(&frame, &s, visit.done());
            Ok(visit.page(body))
        }
        Err(e) => api_failure(e, &frame),
    }
}

async fn save_settings(
    req: HttpRequest,
    mut signed_in: SignedIn,
    portal: web::Data<Portal>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let mut csrf = None;
    let mut allowed = std::collections::BTreeSet::new();
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "csrf" => csrf = Some(value.into_owned()),
            "allow" => {
                allowed.insert(value.into_owned());
            }
            _ => {}
        }
    }
    signed_in.check_csrf(csrf.as_deref().unwrap_or_default())?;
    let visit = Visit::of(&req);
    let token = signed_in.access_token().await?;
    let frame = visit.frame(Section::Settings, "/settings", Some(&signed_in));
    let current = match portal.api.settings(&token).await {
        Ok(s) => s,
        Err(e) => return api_failure(e, &frame),
    };
    // An unticked checkbox is absent from the form: every pair the page showed is decided.
    let changes: Vec<Setting> = current
        .settings
        .iter()
        .filter_map(|s| {
            let want = allowed.contains(&format!("{}:{}", s.item, s.audience));
            (want != s.allowed).then(|| Setting::change(&s.item, &s.audience, want))
        })
        .collect();
    if changes.is_empty() {
        return Ok(see_other("/settings?done=unchanged"));
    }
    match portal.api.change_settings(&token, &changes).await {
        Ok(_) => Ok(see_other("/settings?done=saved")),
        Err(e) => api_failure(e, &frame),
    }
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

async fn consents(
    req: HttpRequest,
    mut signed_in: SignedIn,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, WebError> {
    let visit = Visit::of(&req);
    let token = signed_in.access_token().await?;
    let frame = visit.frame(Section::Consents, "/consents", Some(&signed_in));
    match portal.api.consents(&token).await {
        Ok(list) => {
            let body = view::consents(&frame, &list, visit.done());
            Ok(visit.page(body))
        }
        Err(e) => api_failure(e, &frame),
    }
}

#[derive(Deserialize)]
struct WithdrawForm {
    csrf: String,
    relying_party: String,
}

async fn withdraw(
    req: HttpRequest,
    mut signed_in: SignedIn,
    portal: web::Data<Portal>,
    form: web::Form<WithdrawForm>,
) -> Result<HttpResponse, WebError> {
    signed_in.check_csrf(&form.csrf)?;
    let visit = Visit::of(&req);
    let token = signed_in.access_token().await?;
    let frame = visit.frame(Section::Consents, "/consents", Some(&signed_in));
    match portal
        .api
        .withdraw_consent(&token, &form.relying_party)
        .await
    {
        Ok(true) => Ok(see_other("/consents?done=withdrawn")),
        Ok(false) => Ok(see_other("/consents?done=none")),
        Err(e) => api_failure(e, &frame),
    }
}

/// Entries per history page.
const HISTORY_PAGE: usize = 50;

async fn history(
    req: HttpRequest,
    mut signed_in: SignedIn,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, WebError> {
    let visit = Visit::of(&req);
    let token = signed_in.access_token().await?;
    let frame = visit.frame(Section::History, "/history", Some(&signed_in));
    let page = match portal
        .api
        .disclosures(&token, visit.query.before, HISTORY_PAGE)
        .await
    {
        Ok(page) => page,
        Err(e) => return api_failure(e, &frame),
    };
    let body = view::history(&frame, &page.entries, page.next_before);
    Ok(visit.page(body))
}
