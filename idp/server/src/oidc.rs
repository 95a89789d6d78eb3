//! The OpenID Provider's endpoints: thin handlers over `idp_core::oidc::provider`, with
//! one mapping from [`OAuthError`] to the wire.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use idp_core::oidc::authorize::{RawParams, UntrustedRequest};
use idp_core::oidc::client::{SigningAlg, TokenEndpointAuthMethod};
use idp_core::oidc::client_auth::{ClientCertificate, Presented};
use idp_core::oidc::keys::{KeyRing, SigningKey};
use idp_core::oidc::provider::{
    AuthorizeStep, BackchannelLogout, ConsentPrompt, LogoutTarget, Provider, TokenForm,
    percent_encode,
};
use idp_core::oidc::{ErrorCode, OAuthError};
use idp_core::store::{KeyStore, StoredKey};
use idp_vocabulary::scope;
use openidconnect::core::{
    CoreClaimName, CoreClientAuthMethod, CoreGrantType, CoreJwsSigningAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AuthUrl, IssuerUrl, JsonWebKeySetUrl, ResponseTypes, Scope, TokenUrl, UserInfoUrl,
};
use rustls_pki_types::UnixTime;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::{AppState, current_session, end_browser_session, html, see_other};
use crate::pages::{Lang, claim_label, escape, layout};
use crate::tls::PresentedChain;

/// Routes of the public origin.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/.well-known/openid-configuration",
        web::get().to(discovery),
    )
    .route("/jwks", web::get().to(jwks))
    .route("/authorize", web::get().to(authorize))
    .route("/authorize", web::post().to(authorize_post))
    .route("/authorize/continue", web::get().to(authorize_continue))
    .route("/authorize/consent", web::post().to(consent))
    .route("/end_session", web::get().to(end_session))
    .route("/end_session", web::post().to(end_session_post));
    mtls_routes(cfg);
}

/// Routes served on both origins; on the login origin (mTLS) they authenticate
/// `tls_client_auth` clients and bind tokens to their certificate (RFC 8705 §5).
pub fn mtls_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/token", web::post().to(token))
        .route("/userinfo", web::get().to(userinfo))
        .route("/userinfo", web::post().to(userinfo_post))
        .route("/revoke", web::post().to(revoke))
        .route("/introspect", web::post().to(introspect));
}

// ----- discovery -----------------------------------------------------------------------

/// Metadata beyond OpenID Connect Discovery 1.0's core set.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct ExtraMetadata {
    code_challenge_methods_supported: Vec<String>,
    authorization_response_iss_parameter_supported: bool,
    revocation_endpoint: String,
    introspection_endpoint: String,
    end_session_endpoint: String,
    backchannel_logout_supported: bool,
    backchannel_logout_session_supported: bool,
    tls_client_certificate_bound_access_tokens: bool,
    mtls_endpoint_aliases: serde_json::Value,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    verified_claims_supported: bool,
    trust_frameworks_supported: Vec<String>,
    evidence_supported: Vec<String>,
    claims_in_verified_claims_supported: Vec<String>,
}

impl openidconnect::AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    openidconnect::core::CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    openidconnect::core::CoreClaimType,
    CoreGrantType,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJweKeyManagementAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

fn jws_alg(alg: SigningAlg) -> CoreJwsSigningAlgorithm {
    match alg {
        SigningAlg::RS256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        SigningAlg::PS256 => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        SigningAlg::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        SigningAlg::EdDSA => CoreJwsSigningAlgorithm::EdDsa,
    }
}

/// The discovery document (OpenID Connect Discovery 1.0 §3, RFC 8414, RFC 9207,
/// RFC 8705 §5), built with the `openidconnect` crate's types.
pub fn discovery_document(
    issuer: &str,
    mtls_origin: &str,
    algs: &[SigningAlg],
) -> Result<serde_json::Value, String> {
    let url = |path: &str| format!("{issuer}{path}");
    let mtls = |path: &str| format!("{mtls_origin}{path}");
    let methods = [
        TokenEndpointAuthMethod::ClientSecretBasic,
        TokenEndpointAuthMethod::ClientSecretPost,
        TokenEndpointAuthMethod::PrivateKeyJwt,
        TokenEndpointAuthMethod::TlsClientAuth,
    ];
    let method_names: Vec<String> = methods.iter().map(|m| m.as_str().to_owned()).collect();
    let extra = ExtraMetadata {
        code_challenge_methods_supported: vec!["S256".into()],
        authorization_response_iss_parameter_supported: true,
        revocation_endpoint: url("/revoke"),
        introspection_endpoint: url("/introspect"),
        end_session_endpoint: url("/end_session"),
        backchannel_logout_supported: true,
        backchannel_logout_session_supported: true,
        tls_client_certificate_bound_access_tokens: true,
        mtls_endpoint_aliases: serde_json::json!({
            "token_endpoint": mtls("/token"),
            "userinfo_endpoint": mtls("/userinfo"),
            "revocation_endpoint": mtls("/revoke"),
            "introspection_endpoint": mtls("/introspect"),
        }),
        revocation_endpoint_auth_methods_supported: method_names.clone(),
        introspection_endpoint_auth_methods_supported: method_names.clone(),
        verified_claims_supported: true,
        trust_frameworks_supported: vec![idp_core::oidc::release::TRUST_FRAMEWORK_HPKI.to_owned()],
        evidence_supported: vec!["electronic_signature".into()],
        claims_in_verified_claims_supported: ["family_name", "given_name", "hpki_role"]
            .map(String::from)
            .to_vec(),
    };
    let err = |e: openidconnect::url::ParseError| e.to_string();
    let claims: Vec<CoreClaimName> = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce"]
        .into_iter()
        .chain(["acr", "amr", "sid", "azp", "at_hash"])
        .map(str::to_owned)
        .chain(
            idp_core::oidc::release::SCOPE_CLAIMS
                .iter()
                .flat_map(|(_, names)| names.iter().map(|n| (*n).to_owned())),
        )
        .map(CoreClaimName::new)
        .collect();
    let metadata = Metadata::new(
        IssuerUrl::new(issuer.to_owned()).map_err(err)?,
        AuthUrl::new(url("/authorize")).map_err(err)?,
        JsonWebKeySetUrl::new(url("/jwks")).map_err(err)?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![
            CoreSubjectIdentifierType::Pairwise,
            CoreSubjectIdentifierType::Public,
        ],
        algs.iter().copied().map(jws_alg).collect(),
        extra,
    )
    .set_token_endpoint(Some(TokenUrl::new(url("/token")).map_err(err)?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(url("/userinfo")).map_err(err)?))
    .set_scopes_supported(Some(
        [
            scope::OPENID,
            scope::PROFILE,
            scope::EMAIL,
            scope::ADDRESS,
            scope::HPKI,
            scope::JMA,
            scope::DOCTOR_REGISTRATION,
            scope::OFFLINE_ACCESS,
            scope::ACCOUNT,
        ]
        .map(|s| Scope::new(s.to_owned()))
        .to_vec(),
    ))
    .set_response_modes_supported(Some(vec![CoreResponseMode::Query]))
    .set_grant_types_supported(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
    ]))
    .set_acr_values_supported(Some(vec![openidconnect::AuthenticationContextClass::new(
        idp_vocabulary::authn::ACR_HPKI_CARD.to_owned(),
    )]))
    .set_token_endpoint_auth_methods_supported(Some(
        methods
            .iter()
            .map(|m| match m {
                TokenEndpointAuthMethod::ClientSecretBasic => {
                    CoreClientAuthMethod::ClientSecretBasic
                }
                TokenEndpointAuthMethod::ClientSecretPost => CoreClientAuthMethod::ClientSecretPost,
                TokenEndpointAuthMethod::PrivateKeyJwt => CoreClientAuthMethod::PrivateKeyJwt,
                TokenEndpointAuthMethod::TlsClientAuth => {
                    CoreClientAuthMethod::Extension("tls_client_auth".into())
                }
            })
            .collect(),
    ))
    .set_token_endpoint_auth_signing_alg_values_supported(Some(vec![
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::EdDsa,
    ]))
    .set_claims_supported(Some(claims))
    .set_claims_parameter_supported(Some(true))
    .set_request_parameter_supported(Some(false))
    .set_request_uri_parameter_supported(Some(false))
    .set_ui_locales_supported(Some(vec![
        openidconnect::LanguageTag::new("ja".into()),
        openidconnect::LanguageTag::new("en".into()),
    ]))
    .set_claims_locales_supported(Some(vec![
        openidconnect::LanguageTag::new("ja-Hani-JP".into()),
        openidconnect::LanguageTag::new("ja-Kana-JP".into()),
        openidconnect::LanguageTag::new("en".into()),
    ]));
    serde_json::to_value(&metadata).map_err(|e| e.to_string())
}

fn json_no_store(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .json(&state.oidc.discovery)
}

async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .json(state.oidc.provider.keys().jwks())
}

// ----- keys ---------------------------------------------------------------------------

/// Loads the signing keys, generating (and storing) one for each configured algorithm
/// that has none, and builds the key ring at `now`.
pub async fn load_keys(
    store: &dyn KeyStore,
    recorder: &crate::admin::Recorder,
    algs: &[SigningAlg],
    retention: Duration,
    now: OffsetDateTime,
) -> Result<KeyRing, String> {
    let mut stored = store.signing_keys().await.map_err(|e| e.to_string())?;
    for alg in algs {
        if !stored.iter().any(|k| k.alg == *alg) {
            let key = SigningKey::generate(*alg).map_err(|e| e.to_string())?;
            let record = StoredKey {
                kid: key.kid().to_owned(),
                alg: *alg,
                pkcs8_pem: key.dangerous_pkcs8_pem().to_owned(),
                created_at: now,
                active_from: now,
            };
            store
                .add_signing_key(&record)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(kid = key.kid(), alg = alg.as_str(), "signing key generated");
            recorder
                .record(
                    "key.generated",
                    None,
                    serde_json::json!({"kid": record.kid, "alg": alg.as_str()}),
                )
                .await?;
            stored.push(record);
        }
    }
    KeyRing::build(&stored, now, retention).map_err(|e| e.to_string())
}

/// Reloads the key ring from the database every `interval` (rotation by another process
/// or the CLI) and prunes keys no longer published.
pub fn spawn_key_reloader(
    state: web::Data<AppState>,
    store: Arc<dyn KeyStore>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let algs = &state.runtime.config.oidc.signing_algs;
            let system = crate::admin::Recorder {
                audit: state.oidc.provider.stores().audit.clone(),
                actor: "system".into(),
            };
            match load_keys(
                store.as_ref(),
                &system,
                algs,
                state.oidc.key_retention,
                OffsetDateTime::now_utc(),
            )
            .await
            {
                Ok(ring) => {
                    for kid in &ring.expired {
                        if let Err(e) = store.remove_signing_key(kid).await {
                            tracing::warn!(kid, error = %e, "pruning a retired key failed");
                        }
                    }
                    state.oidc.provider.set_keys(ring.keys);
                }
                Err(e) => tracing::error!(error = %e, "signing keys not reloaded"),
            }
        }
    });
}

// ----- the OAuth error mapping ---------------------------------------------------------

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// The one mapping from an OAuth error to a JSON response (RFC 6749 §5.2, RFC 6750 §3).
pub fn oauth_error(error: &OAuthError, basic_used: bool) -> HttpResponse {
    let status = match error.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if error.code == ErrorCode::InvalidClient && basic_used {
        response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"idp\""));
    }
    if matches!(
        error.code,
        ErrorCode::InvalidToken | ErrorCode::InsufficientScope
    ) {
        response.insert_header((
            header::WWW_AUTHENTICATE,
            format!(
                "Bearer error=\"{}\", error_description=\"{}\"",
                error.code.as_str(),
                error.description.replace('"', "'")
            ),
        ));
    }
    response.json(ErrorBody {
        error: error.code.as_str(),
        error_description: &error.description,
    })
}

/// Form parameters, refusing repeated ones (RFC 6749 §3.2).
fn form_params(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::new(ErrorCode::InvalidRequest, "the body is not a form"))?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is repeated"),
            ));
        }
    }
    Ok(pairs)
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// The relying party's TLS client certificate, when this request came over the mTLS
/// origin with a certificate that verifies to a configured RP client CA.
pub(crate) fn rp_certificate(req: &HttpRequest, state: &AppState) -> Option<ClientCertificate> {
    let chain = req.conn_data::<PresentedChain>()?;
    state.oidc.rp_cas.verify(&chain.0, UnixTime::now())
}

/// Client credentials from the request (header, form, TLS).
fn presented(
    req: &HttpRequest,
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<Presented, OAuthError> {
    let basic = match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(Presented::parse_basic)
    {
        Some(parsed) => Some(parsed?),
        None => None,
    };
    Ok(Presented {
        basic,
        client_id: param(pairs, "client_id"),
        client_secret: param(pairs, "client_secret"),
        client_assertion_type: param(pairs, "client_assertion_type"),
        client_assertion: param(pairs, "client_assertion"),
        certificate: rp_certificate(req, state),
    })
}

/// The parameters of a form-encoded request body (refused otherwise).
fn form_body(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    if !is_form(req) {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    form_params(body)
}

fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}

async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let outcome = async {
        let pairs = form_body(&req, &body)?;
        let presented = presented(&req, &state, &pairs)?;
        let form = TokenForm {
            grant_type: param(&pairs, "grant_type"),
            code: param(&pairs, "code"),
            redirect_uri: param(&pairs, "redirect_uri"),
            code_verifier: param(&pairs, "code_verifier"),
            refresh_token: param(&pairs, "refresh_token"),
            scope: param(&pairs, "scope"),
        };
        state
            .oidc
            .provider
            .token(&form, &presented, OffsetDateTime::now_utc())
            .await
    }
    .await;
    match outcome {
        Ok(tokens) => {
            state.metrics.count_token("issued");
            json_no_store(StatusCode::OK, &tokens)
        }
        Err(e) => {
            state.metrics.count_token(e.code.as_str());
            tracing::info!(error = e.code.as_str(), detail = %e.description, "token request refused");
            oauth_error(&e, basic_used(&req))
        }
    }
}

/// The bearer token of a request: the `Authorization` header, or (POST) the
/// `access_token` form parameter (RFC 6750 §2.1, §2.2); never both. `None` when there is
/// none at all.
pub(crate) fn bearer(
    req: &HttpRequest,
    pairs: &[(String, String)],
) -> Result<Option<String>, OAuthError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let form = param(pairs, "access_token");
    match (header, form) {
        (Some(t), None) | (None, Some(t)) => Ok(Some(t)),
        (Some(_), Some(_)) => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "more than one access token",
        )),
        (None, None) => Ok(None),
    }
}

async fn userinfo(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    userinfo_with(&req, &state, &[]).await
}

async fn userinfo_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let pairs = if is_form(&req) {
        match form_params(&body) {
            Ok(p) => p,
            Err(e) => return oauth_error(&e, false),
        }
    } else {
        Vec::new()
    };
    userinfo_with(&req, &state, &pairs).await
}

async fn userinfo_with(
    req: &HttpRequest,
    state: &AppState,
    pairs: &[(String, String)],
) -> HttpResponse {
    let outcome = async {
        let Some(token) = bearer(req, pairs)? else {
            return Ok(None);
        };
        let certificate = rp_certificate(req, state);
        state
            .oidc
            .provider
            .userinfo(&token, certificate.as_ref(), OffsetDateTime::now_utc())
            .await
            .map(Some)
    }
    .await;
    match outcome {
        Ok(Some(claims)) => json_no_store(StatusCode::OK, &claims),
        // RFC 6750 §3.1: no credentials, so no error code, only the challenge.
        Ok(None) => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"idp\""))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => oauth_error(&e, false),
    }
}

/// The authenticated client and the `token` parameter of a revocation or introspection
/// request (RFC 7009 §2.1, RFC 7662 §2.1).
async fn client_and_token(
    req: &HttpRequest,
    state: &AppState,
    body: &[u8],
) -> Result<(idp_core::oidc::client::ClientRegistration, String), OAuthError> {
    let pairs = form_body(req, body)?;
    let presented = presented(req, state, &pairs)?;
    let client = state
        .oidc
        .provider
        .authenticate_client(&presented, OffsetDateTime::now_utc())
        .await?;
    let token = param(&pairs, "token")
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, "token is required"))?;
    Ok((client, token))
}

async fn revoke(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let outcome = async {
        let (client, token) = client_and_token(&req, &state, &body).await?;
        state
            .oidc
            .provider
            .revoke(&client, &token, OffsetDateTime::now_utc())
            .await
    }
    .await;
    match outcome {
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => oauth_error(&e, basic_used(&req)),
    }
}

async fn introspect(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let outcome = async {
        let (client, token) = client_and_token(&req, &state, &body).await?;
        state
            .oidc
            .provider
            .introspect(&client, &token, OffsetDateTime::now_utc())
            .await
    }
    .await;
    match outcome {
        Ok(body) => json_no_store(StatusCode::OK, &body),
        Err(e) => oauth_error(&e, basic_used(&req)),
    }
}

fn basic_used(req: &HttpRequest) -> bool {
    req.headers().contains_key(header::AUTHORIZATION)
}

// ----- authorization endpoint ---------------------------------------------------------

fn untrusted_page(lang: Lang, error: &UntrustedRequest) -> HttpResponse {
    let (code, ja, en) = match error {
        UntrustedRequest::MissingClient => (
            "missing_client",
            "client_id がありません。",
            "client_id is missing.",
        ),
        UntrustedRequest::UnknownClient => (
            "unknown_client",
            "このサービスは登録されていません。",
            "This service is not registered.",
        ),
        UntrustedRequest::MissingRedirectUri => (
            "missing_redirect_uri",
            "redirect_uri がありません。",
            "redirect_uri is missing.",
        ),
        UntrustedRequest::RedirectUriNotRegistered => (
            "redirect_uri_not_registered",
            "戻り先 URL が登録されていません。安全のため、このサービスには戻りません。",
            "The return URL is not registered. For your safety you are not sent back to the service.",
        ),
    };
    let body = format!(
        r#"<p class="notice" data-reason="{code}">{}</p>"#,
        escape(lang.pick(ja, en))
    );
    html(
        StatusCode::BAD_REQUEST,
        layout(
            lang,
            lang.pick(
                "ログイン要求を受け付けられません",
                "The login request cannot be accepted",
            ),
            &body,
        ),
    )
}

pub(crate) fn message_page(
    lang: Lang,
    status: StatusCode,
    code: &str,
    ja: &'static str,
    en: &'static str,
) -> HttpResponse {
    let body = format!(
        r#"<p class="notice" data-reason="{}">{}</p>"#,
        escape(code),
        escape(lang.pick(ja, en))
    );
    html(status, layout(lang, lang.pick(ja, en), &body))
}

/// The consent page's language: `ui_locales` first, then the browser's.
fn consent_lang(req: &HttpRequest, prompt: &ConsentPrompt) -> Lang {
    for tag in &prompt.ui_locales {
        let tag = tag.to_ascii_lowercase();
        if tag.starts_with("ja") {
            return Lang::Ja;
        }
        if tag.starts_with("en") {
            return Lang::En;
        }
    }
    Lang::of(req)
}

fn consent_page(req: &HttpRequest, prompt: &ConsentPrompt) -> HttpResponse {
    consent_form(
        consent_lang(req, prompt),
        &prompt.client_name,
        &prompt.claims,
        &prompt.pending,
        "/authorize/consent",
        prompt.manages_account,
        reqwest::Url::parse(&prompt.redirect_uri)
            .ok()
            .map(|u| u.origin().ascii_serialization()),
    )
}

/// The consent page of a relying party (OIDC client or SAML SP): the claims it would
/// receive, approve or deny, posted to `action` with the pending request.
pub(crate) fn consent_form(
    lang: Lang,
    client_name: &str,
    claims: &[String],
    pending: &idp_core::secret::Secret,
    action: &str,
    manages_account: bool,
    // The origin the answer redirects to: browsers apply the page's `form-action` to the
    // redirect after the POST as well, so it must be allowed.
    answer_origin: Option<String>,
) -> HttpResponse {
    let mut items = String::new();
    if manages_account {
        items.push_str(&format!(
            r#"<li data-scope="account">{}</li>"#,
            escape(lang.pick(
                "あなたの情報開示設定・同意・開示履歴の参照と変更",
                "Reading and changing your disclosure settings, consents and disclosure history"
            ))
        ));
    }
    for name in claims {
        items.push_str(&format!(
            r#"<li data-claim="{}">{}</li>"#,
            escape(name),
            escape(claim_label(lang, name))
        ));
    }
    if items.is_empty() {
        items.push_str(&format!(
            "<li>{}</li>",
            lang.pick(
                "本人であること（識別子）のみ",
                "Only that it is you (an identifier)"
            )
        ));
    }
    let body = format!(
        r#"<p><strong>{client}</strong> {lead}</p>
<ul class="claims">{items}</ul>
<p>{note}</p>
<form method="post" action="{action}">
<input type="hidden" name="pending" value="{pending}">
<input type="hidden" name="lang" value="{lang_code}">
<button type="submit" name="decision" value="approve">{approve}</button>
<button type="submit" name="decision" value="deny" class="secondary">{deny}</button>
</form>"#,
        client = escape(client_name),
        action = escape(action),
        lead = escape(lang.pick(
            "が次の情報の提供を求めています。",
            "asks for the following information."
        )),
        note = escape(lang.pick(
            "同意はアカウント画面からいつでも取り消せます。",
            "You can withdraw consent at any time from your account page."
        )),
        pending = escape(pending.dangerous_expose()),
        lang_code = lang.code(),
        approve = escape(lang.pick("同意して続ける", "Allow and continue")),
        deny = escape(lang.pick("同意しない", "Deny")),
    );
    crate::app::html_with_form_action(
        StatusCode::OK,
        layout(lang, lang.pick("情報提供への同意", "Consent"), &body),
        answer_origin.as_deref(),
    )
}

/// The one mapping from an authorization step to what the browser sees.
fn authorize_response(req: &HttpRequest, step: AuthorizeStep) -> HttpResponse {
    let lang = Lang::of(req);
    match step {
        AuthorizeStep::Untrusted(e) => untrusted_page(lang, &e),
        AuthorizeStep::Redirect(url) => see_other(&url),
        AuthorizeStep::Login { pending } => {
            let return_to = format!("/authorize/continue?pending={}", pending.dangerous_expose());
            see_other(&format!("/login?return_to={}", percent_encode(&return_to)))
        }
        AuthorizeStep::Consent(prompt) => consent_page(req, &prompt),
        AuthorizeStep::RequiredWithheld { refusal, redirect } => {
            let action = format!(
                r#"<p><a class="button" href="{}" data-continue>{}</a></p>"#,
                escape(&redirect),
                escape(lang.pick("サービスに戻る", "Return to the service"))
            );
            html(
                StatusCode::FORBIDDEN,
                layout(
                    lang,
                    crate::pages::required_withheld_title(lang),
                    &crate::pages::required_withheld_body(lang, &refusal, &action),
                ),
            )
        }
        AuthorizeStep::PendingExpired => message_page(
            lang,
            StatusCode::BAD_REQUEST,
            "authorization_expired",
            "ログイン要求の有効期限が切れました。サービスからもう一度ログインしてください。",
            "The login request has expired. Please log in again from the service.",
        ),
        AuthorizeStep::Unavailable => message_page(
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "一時的に利用できません。しばらくしてからもう一度お試しください。",
            "Temporarily unavailable. Please try again later.",
        ),
    }
}

fn query_params(req: &HttpRequest) -> RawParams {
    RawParams::new(
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string()).unwrap_or_default(),
    )
}

async fn authorize(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let params = query_params(&req);
    authorize_with(&req, &state, params).await
}

async fn authorize_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    authorize_with(&req, &state, RawParams::new(pairs)).await
}

async fn authorize_with(req: &HttpRequest, state: &AppState, params: RawParams) -> HttpResponse {
    let session = current_session(req, state).await;
    let step = state
        .oidc
        .provider
        .authorize(&params, session.as_ref(), OffsetDateTime::now_utc())
        .await;
    authorize_response(req, step)
}

#[derive(Deserialize)]
struct ContinueQuery {
    pending: Option<String>,
}

async fn authorize_continue(
    req: HttpRequest,
    query: web::Query<ContinueQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let session = current_session(&req, &state).await;
    let step = state
        .oidc
        .provider
        .resume(
            query.pending.as_deref().unwrap_or_default(),
            session.as_ref(),
            OffsetDateTime::now_utc(),
        )
        .await;
    authorize_response(&req, step)
}

/// A state-changing form must come from our own origin (SameSite=Lax keeps the session
/// cookie off cross-site POSTs; a foreign `Origin` is refused outright).
pub fn same_origin(req: &HttpRequest, state: &AppState) -> bool {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|origin| origin == state.runtime.config.public.url)
}

#[derive(Deserialize)]
struct ConsentForm {
    pending: String,
    decision: String,
}

async fn consent(
    req: HttpRequest,
    form: web::Form<ConsentForm>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !same_origin(&req, &state) {
        return HttpResponse::Forbidden().finish();
    }
    let session = current_session(&req, &state).await;
    let step = state
        .oidc
        .provider
        .answer_consent(
            &form.pending,
            session.as_ref(),
            form.decision == "approve",
            OffsetDateTime::now_utc(),
        )
        .await;
    authorize_response(&req, step)
}

// ----- logout -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct EndSessionParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

async fn end_session(
    req: HttpRequest,
    query: web::Query<EndSessionParams>,
    state: web::Data<AppState>,
) -> HttpResponse {
    end_session_with(&req, &state, query.into_inner()).await
}

async fn end_session_post(
    req: HttpRequest,
    form: web::Form<EndSessionParams>,
    state: web::Data<AppState>,
) -> HttpResponse {
    end_session_with(&req, &state, form.into_inner()).await
}

/// RP-Initiated Logout 1.0: with a valid `id_token_hint` the session ends at once; without
/// one the doctor confirms (a third party cannot log a doctor out by a link).
async fn end_session_with(
    req: &HttpRequest,
    state: &AppState,
    params: EndSessionParams,
) -> HttpResponse {
    let lang = Lang::of(req);
    let clients = match state.oidc.provider.stores().clients.clients().await {
        Ok(c) => c,
        Err(_) => return authorize_response(req, AuthorizeStep::Unavailable),
    };
    let target = state.oidc.provider.end_session_target(
        params.id_token_hint.as_deref(),
        params.client_id.as_deref(),
        params.post_logout_redirect_uri.as_deref(),
        params.state.as_deref(),
        &clients,
    );
    let target = match target {
        Ok(target) => target,
        Err(e) => {
            let body = format!(
                r#"<p class="notice" data-reason="invalid_logout_request">{}</p><p><code>{}</code></p>"#,
                escape(lang.pick(
                    "ログアウト要求が正しくありません。",
                    "The logout request is not valid."
                )),
                escape(&e.description)
            );
            return html(
                StatusCode::BAD_REQUEST,
                layout(lang, lang.pick("ログアウト", "Log out"), &body),
            );
        }
    };
    if params.id_token_hint.is_none() {
        let body = format!(
            r#"<p>{}</p><form method="post" action="/logout"><button type="submit">{}</button></form>"#,
            escape(lang.pick("ログアウトしますか？", "Do you want to log out?")),
            escape(lang.pick("ログアウト", "Log out")),
        );
        return html(
            StatusCode::OK,
            layout(lang, lang.pick("ログアウト", "Log out"), &body),
        );
    }
    let mut response = match &target {
        LogoutTarget::Client(url) => see_other(url),
        LogoutTarget::Page => see_other("/?logged_out=1"),
    };
    if let Err(e) = end_browser_session(req, state).await {
        tracing::error!(error = %e, "end_session: session store unavailable");
        return authorize_response(req, AuthorizeStep::Unavailable);
    }
    let _ = response.add_cookie(&crate::app::session_removal());
    response
}

/// Delivery attempts of one back-channel logout: at once, then after these pauses.
const BACKCHANNEL_RETRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// Delivers back-channel logout tokens (OIDC Back-Channel Logout 1.0 §2.5) in the
/// background: each RP gets a POST with a short timeout, tried again after a transport
/// failure or a 5xx/429 answer (the same token: it lives two minutes), not after another
/// refusal (§2.8: the RP says the token is bad). The outcome is logged.
pub fn deliver_backchannel(state: &AppState, logouts: Vec<BackchannelLogout>) {
    for logout in logouts {
        let http = state.oidc.http.clone();
        tokio::spawn(async move {
            let mut pauses = BACKCHANNEL_RETRY_PAUSES.iter();
            loop {
                let outcome = http
                    .post(&logout.uri)
                    .header(header::CACHE_CONTROL.as_str(), "no-store")
                    .header(
                        header::CONTENT_TYPE.as_str(),
                        "application/x-www-form-urlencoded",
                    )
                    .body(format!(
                        "logout_token={}",
                        percent_encode(&logout.logout_token)
                    ))
                    .send()
                    .await;
                let retry = match &outcome {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(client = logout.client_id, "back-channel logout delivered");
                        return;
                    }
                    Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
                    Err(_) => true,
                };
                match (retry, pauses.next()) {
                    (true, Some(pause)) => {
                        tracing::info!(
                            client = logout.client_id,
                            "back-channel logout: trying again"
                        );
                        tokio::time::sleep(*pause).await;
                    }
                    _ => {
                        match outcome {
                            Ok(r) => {
                                tracing::warn!(client = logout.client_id, status = %r.status(), "back-channel logout refused")
                            }
                            Err(e) => {
                                tracing::warn!(client = logout.client_id, error = %e, "back-channel logout failed")
                            }
                        }
                        return;
                    }
                }
            }
        });
    }
}

/// The provider's part of the shared state.
#[derive(Debug)]
pub struct OidcState {
    pub provider: Provider,
    pub discovery: serde_json::Value,
    pub rp_cas: Arc<crate::tls::RpClientCas>,
    pub http: reqwest::Client,
    /// How long a superseded key stays published.
    pub key_retention: Duration,
}
