//! A regional care network with its own password accounts that adds "HPKIログイン" beside
//! them and links the two (the guide in relying-party-kit/README.md walks through it).
//!
//! ```text
//! HAREYAKA_ISSUER=https://localhost:8443 HAREYAKA_CLIENT_ID=hareyaka \
//! HAREYAKA_CLIENT_SECRET=… HAREYAKA_IDP_CA=var/demo/pki/ca/tls-root.pem \
//! HAREYAKA_TLS_CERT=… HAREYAKA_TLS_KEY=… HAREYAKA_LISTEN=127.0.0.1:9444 \
//! HAREYAKA_URL=https://localhost:9444 cargo run -p hpki-rp-kit --example hareyaka
//! ```
//!
//! Local accounts are a demo table (user `yamada`, password `hareyaka-demo`); a real network
//! keeps its own user database and password hashing. What the example shows is the HPKI
//! side: the kit's routes, the `Doctor` extractor, linking by (issuer, subject), and the
//! released claims on `/me`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hpki_rp_kit::idp_vocabulary::scope;
use hpki_rp_kit::web::{constant_time_eq, escape};
use hpki_rp_kit::{
    AuthParams, ClientAuth, ClientId, ClientSecret, Doctor, HttpClient, IssuerUrl, MemorySessions,
    OidcClient, PostLogoutRedirectUrl, RedirectUrl, RelyingParty, Sealer, SignedIn, WebConfig,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// The network's own account table: user name → password (a demo; hash them for real).
const ACCOUNTS: [(&str, &str, &str); 1] = [("yamada", "hareyaka-demo", "山田 花子")];
const ACCOUNT_COOKIE: &str = "__Host-hareyaka-account";

#[derive(Default)]
struct Network {
    /// Password sessions: cookie value → user name.
    password_sessions: Mutex<HashMap<String, String>>,
    /// The link table: HPKI subject (pairwise for this network) → local user name.
    links: Mutex<HashMap<String, String>>,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[actix_web::main]
async fn main() -> Result<(), String> {
    let url = env("HAREYAKA_URL")?;
    let mut http = HttpClient::builder();
    if let Ok(ca) = env("HAREYAKA_IDP_CA") {
        let pem = std::fs::read(&ca).map_err(|e| format!("{ca}: {e}"))?;
        http = http.extra_root_pem(&pem).map_err(|e| e.to_string())?;
    }
    let oidc = OidcClient::discover(
        IssuerUrl::new(env("HAREYAKA_ISSUER")?).map_err(|e| e.to_string())?,
        ClientId::new(env("HAREYAKA_CLIENT_ID")?),
        ClientAuth::SecretBasic(ClientSecret::new(env("HAREYAKA_CLIENT_SECRET")?)),
        RedirectUrl::new(format!("{url}/auth/callback")).map_err(|e| e.to_string())?,
        http.build().map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    let rp = web::Data::new(RelyingParty::new(
        oidc,
        Sealer::random().map_err(|e| e.to_string())?,
        Arc::new(MemorySessions::default()),
        WebConfig {
            scopes: [scope::PROFILE, scope::EMAIL, scope::HPKI]
                .map(str::to_owned)
                .to_vec(),
            auth_params: AuthParams::hpki_card(),
            cookie_prefix: "hareyaka".to_owned(),
            landing_path: "/".to_owned(),
            post_logout_redirect_uri: Some(
                PostLogoutRedirectUrl::new(format!("{url}/")).map_err(|e| e.to_string())?,
            ),
            ..WebConfig::default()
        },
    ));
    let network = web::Data::new(Network::default());
    let tls = tls(&env("HAREYAKA_TLS_CERT")?, &env("HAREYAKA_TLS_KEY")?)?;
    let listen = env("HAREYAKA_LISTEN")?;
    println!("hareyaka example on {url}");
    HttpServer::new(move || {
        let rp = rp.clone();
        App::new()
            .app_data(rp.clone())
            .app_data(network.clone())
            .configure(|cfg| rp.routes(cfg))
            .route("/", web::get().to(home))
            .route("/password-login", web::post().to(password_login))
            .route("/me", web::get().to(me))
            .route("/link", web::post().to(link))
    })
    .bind_rustls_0_23(&listen, tls)
    .map_err(|e| format!("{listen}: {e}"))?
    .run()
    .await
    .map_err(|e| e.to_string())
}

fn tls(cert: &str, key: &str) -> Result<rustls::ServerConfig, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("{cert}: {e}"))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{key}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| e.to_string())?
        .ok_or("no private key")?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
<body><main><h1>{t}</h1>{body}</main></body></html>",
            t = escape(title)
        ))
}

/// The login page: the network's own password form, and the HPKI button beside it.
async fn home(req: HttpRequest, network: web::Data<Network>) -> HttpResponse {
    if let Some(user) = password_user(&req, &network) {
        return page(
            "晴れやかネット",
            &format!(
                "<p data-login=\"password\">{} さん（パスワードでログイン中）</p>",
                escape(&user)
            ),
        );
    }
    page(
        "晴れやかネット ログイン",
        "<form method=\"post\" action=\"/password-login\">\
<p><label>ユーザーID <input name=\"user\" autocomplete=\"username\"></label></p>\
<p><label>パスワード <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\
<p><button type=\"submit\">ログイン</button></p></form>\
<p><a href=\"/auth/login?return_to=%2Fme\" data-action=\"hpki-login\">HPKIログイン</a>（医師資格証）</p>",
    )
}

fn password_user(req: &HttpRequest, network: &Network) -> Option<String> {
    let cookie = req.cookie(ACCOUNT_COOKIE)?;
    network
        .password_sessions
        .lock()
        .ok()?
        .get(cookie.value())
        .cloned()
}

#[derive(Deserialize)]
struct PasswordForm {
    user: String,
    password: String,
}

fn check_password(user: &str, password: &str) -> bool {
    ACCOUNTS
        .iter()
        .any(|(u, p, _)| *u == user && constant_time_eq(p.as_bytes(), password.as_bytes()))
}

async fn password_login(
    form: web::Form<PasswordForm>,
    network: web::Data<Network>,
) -> HttpResponse {
    if !check_password(&form.user, &form.password) {
        return page(
            "ログインできません",
            "<p>ユーザーIDまたはパスワードが違います。</p>",
        );
    }
    let mut id = [0u8; 32];
    if SystemRandom::new().fill(&mut id).is_err() {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let id = id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if let Ok(mut sessions) = network.password_sessions.lock() {
        sessions.insert(id.clone(), form.user.clone());
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .cookie(
            Cookie::build(ACCOUNT_COOKIE, id)
                .path("/")
                .secure(true)
                .http_only(true)
                .same_site(SameSite::Lax)
                .finish(),
        )
        .finish()
}

/// After HPKI login: the linked account, or the form that links one; and what the IdP
/// released to this network.
async fn me(signed_in: SignedIn, network: web::Data<Network>) -> HttpResponse {
    let doctor: &Doctor = signed_in.doctor();
    let linked = network
        .links
        .lock()
        .ok()
        .and_then(|links| links.get(doctor.subject.as_str()).cloned());
    let account = match &linked {
        Some(user) => format!(
            "<p data-linked=\"{u}\">晴れやかネットのアカウント {u} と連携済みです。</p>",
            u = escape(user)
        ),
        None => format!(
            "<form method=\"post\" action=\"/link\"><p>既存の晴れやかネットのアカウントと連携します。</p>\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<p><label>ユーザーID <input name=\"user\"></label></p>\
<p><label>パスワード <input name=\"password\" type=\"password\"></label></p>\
<p><button type=\"submit\">連携する</button></p></form>",
            escape(signed_in.csrf_token())
        ),
    };
    let role = doctor
        .hpki_role
        .as_ref()
        .map(|r| r.japanese_name().unwrap_or(r.display_name()).to_owned())
        .unwrap_or_default();
    let released = format!(
        "<dl><dt>氏名</dt><dd data-claim=\"name\">{}</dd><dt>資格</dt><dd data-claim=\"hpki_role\">{}</dd>\
<dt>メールアドレス</dt><dd data-claim=\"email\">{}</dd></dl>",
        escape(doctor.name.for_display().unwrap_or("—")),
        escape(&role),
        escape(doctor.email.as_deref().unwrap_or("（提供されていません）")),
    );
    page(
        "晴れやかネット（HPKIログイン）",
        &format!("{account}<h2>認証サーバーから提供された情報</h2>{released}"),
    )
}

#[derive(Deserialize)]
struct LinkForm {
    csrf: String,
    user: String,
    password: String,
}

async fn link(
    signed_in: SignedIn,
    network: web::Data<Network>,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, hpki_rp_kit::WebError> {
    signed_in.check_csrf(&form.csrf)?;
    // The doctor proves the local account with its password once; the link is by the
    // IdP's subject, which is stable and pairwise for this network.
    if !check_password(&form.user, &form.password) {
        return Ok(page(
            "連携できません",
            "<p>ユーザーIDまたはパスワードが違います。</p>",
        ));
    }
    if let Ok(mut links) = network.links.lock() {
        links.insert(
            signed_in.doctor().subject.as_str().to_owned(),
            form.user.clone(),
        );
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/me"))
        .finish())
}
