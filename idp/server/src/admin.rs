//! Administration from the command line and the admin API: signing keys, OIDC clients and
//! SAML service providers, stored in the database the configuration names (so every
//! running process sees the change).

use idp_core::audit::{AuditEvent, AuditLog};
use idp_core::disclosure::Audience;
use idp_core::oidc::client::{ClientRegistration, SigningAlg, TokenEndpointAuthMethod};
use idp_core::oidc::keys::{KeyRing, SigningKey};
use idp_core::oidc::subject::SubjectType;
use idp_core::secret::Secret;
use idp_core::store::{ClientStore, KeyStore, StoredKey};
use time::OffsetDateTime;

/// Who makes administrative changes, and the audit log that records them (docs/AUDIT.md):
/// every change below is recorded after it is made; a record that cannot be written is
/// reported as an error naming the change.
#[derive(Debug)]
pub struct Recorder {
    pub audit: AuditLog,
    /// `admin-api`, `cli:<user>`, `config` or `system`.
    pub actor: String,
}

impl Recorder {
    pub async fn record(
        &self,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), AdminError> {
        self.audit
            .record(AuditEvent::admin(&self.actor, action, target, detail))
            .await
            .map_err(|e| {
                AdminError::Unrecorded(format!(
                    "{action} was made but could not be recorded in the audit log: {e}"
                ))
            })
    }
}

/// Why an administrative change failed: the request (refused, nothing changed), or the
/// audit log (the change was made; its record could not be written).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unrecorded(String),
}

impl From<String> for AdminError {
    fn from(reason: String) -> Self {
        Self::Invalid(reason)
    }
}

impl From<&str> for AdminError {
    fn from(reason: &str) -> Self {
        Self::Invalid(reason.to_owned())
    }
}

impl From<AdminError> for String {
    fn from(e: AdminError) -> Self {
        e.to_string()
    }
}

/// The audit record's view of a client: its registration without the secret digest or
/// keys, so that a change of scopes, audience or redirect URIs is on record.
pub(crate) fn client_detail(client: &ClientRegistration) -> serde_json::Value {
    serde_json::json!({
        "name": client.name,
        "auth_method": client.auth_method,
        "redirect_uris": client.redirect_uris,
        "scopes": client.allowed_scopes,
        "audience": client.audience,
        "pre_approved": client.pre_approved,
        "refresh_tokens": client.refresh_tokens,
    })
}

/// `idp keys rotate`: a new key for `alg`, published now, signing after `publish_before_use`.
pub async fn rotate_key(
    store: &dyn KeyStore,
    recorder: &Recorder,
    alg: SigningAlg,
    publish_before_use: std::time::Duration,
    now: OffsetDateTime,
) -> Result<StoredKey, AdminError> {
    let key = SigningKey::generate(alg).map_err(|e| e.to_string())?;
    let record = StoredKey {
        kid: key.kid().to_owned(),
        alg,
        pkcs8_pem: key.dangerous_pkcs8_pem().to_owned(),
        created_at: now,
        active_from: now + publish_before_use,
    };
    store
        .add_signing_key(&record)
        .await
        .map_err(|e| e.to_string())?;
    recorder
        .record(
            "key.rotated",
            None,
            serde_json::json!({"kid": record.kid, "alg": alg.as_str(), "active_from": record.active_from.unix_timestamp()}),
        )
        .await?;
    Ok(record)
}

/// `idp keys list`: one line per key with its state at `now`.
pub async fn list_keys(
    store: &dyn KeyStore,
    retention: std::time::Duration,
    now: OffsetDateTime,
) -> Result<Vec<String>, String> {
    let stored = store.signing_keys().await.map_err(|e| e.to_string())?;
    let ring = KeyRing::build(&stored, now, retention).map_err(|e| e.to_string())?;
    let signing: Vec<String> = SigningAlg::ALL
        .into_iter()
        .filter_map(|a| ring.keys.signer(a).map(|k| k.kid().to_owned()))
        .collect();
    Ok(stored
        .iter()
        .map(|k| {
            let state = if signing.contains(&k.kid) {
                "signing"
            } else if ring.expired.contains(&k.kid) {
                "expired"
            } else if k.active_from > now {
                "published, signs from active_from"
            } else {
                "retired, still published"
            };
            serde_json::json!({
                "kid": k.kid,
                "alg": k.alg.as_str(),
                "created_at": k.created_at.unix_timestamp(),
                "active_from": k.active_from.unix_timestamp(),
                "state": state,
            })
            .to_string()
        })
        .collect())
}

/// A new client: the options of `idp client add`, and the JSON body of
/// `POST /admin/api/clients` (same names, `jwks` inline instead of `jwks_file`).
#[derive(Debug, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: String,
    /// client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth.
    #[arg(long, default_value = "client_secret_basic")]
    #[serde(default = "default_method")]
    pub auth_method: String,
    #[arg(long = "redirect-uri", required = true)]
    pub redirect_uris: Vec<String>,
    #[arg(long = "post-logout-redirect-uri")]
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may ask for (openid is always included).
    #[arg(long = "scope")]
    #[serde(default)]
    pub scopes: Vec<String>,
    #[arg(long, default_value = "RS256")]
    #[serde(default = "default_alg")]
    pub id_token_alg: String,
    #[arg(long)]
    #[serde(default)]
    pub public_subject: bool,
    #[arg(long)]
    #[serde(default)]
    pub pre_approved: bool,
    /// `regional_network`, `jma_service` or `third_party`.
    #[arg(long, default_value = "third_party", value_parser = parse_audience)]
    #[serde(default)]
    pub audience: Audience,
    #[arg(long)]
    #[serde(default)]
    pub refresh_tokens: bool,
    /// JWKS file of a private_key_jwt client.
    #[arg(long)]
    #[serde(skip)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// The JWKS itself (admin API only).
    #[arg(skip)]
    #[serde(default)]
    pub jwks: Option<jsonwebtoken::jwk::JwkSet>,
    #[arg(long)]
    #[serde(default)]
    pub tls_subject_dn: Option<String>,
    #[arg(long)]
    #[serde(default)]
    pub tls_cert_sha256: Option<String>,
    #[arg(long)]
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
}

/// A new SAML service provider: the options of `idp sp add`, and the JSON body of
/// `POST /admin/api/sps` (same names; `metadata` inline instead of `metadata_file`,
/// `metadata_signing_certificate` as PEM text instead of a file).
#[derive(Debug, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpArgs {
    /// The SP's metadata file.
    #[arg(long, required_unless_present = "metadata_url")]
    #[serde(skip)]
    pub metadata_file: Option<std::path::PathBuf>,
    /// The metadata itself (admin API only).
    #[arg(skip)]
    #[serde(default)]
    pub metadata: Option<String>,
    /// An https URL the metadata is fetched from and refreshed (it must be signed).
    #[arg(long)]
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// PEM file of the certificate that signs the metadata.
    #[arg(long)]
    #[serde(skip)]
    pub metadata_signing_cert: Option<std::path::PathBuf>,
    /// The PEM certificate itself (admin API only).
    #[arg(skip)]
    #[serde(default)]
    pub metadata_signing_certificate: Option<String>,
    #[arg(long)]
    #[serde(default)]
    pub display_name: Option<String>,
    /// persistent (pairwise per SP, the default) or transient.
    #[arg(long, default_value = "persistent")]
    #[serde(default = "default_name_id_format")]
    pub name_id_format: String,
    /// Sign the Assertion only, not the Response.
    #[arg(long)]
    #[serde(default)]
    pub assertion_signature_only: bool,
    #[arg(long)]
    #[serde(default)]
    pub require_signed_requests: bool,
    /// Claims the SP may receive (default: those its metadata requests).
    #[arg(long = "claim")]
    #[serde(default)]
    pub claims: Vec<String>,
    #[arg(long)]
    #[serde(default)]
    pub pre_approved: bool,
    /// `regional_network`, `jma_service` or `third_party`.
    #[arg(long, default_value = "third_party", value_parser = parse_audience)]
    #[serde(default)]
    pub audience: Audience,
    #[arg(long)]
    #[serde(default)]
    pub idp_initiated: bool,
}

fn default_name_id_format() -> String {
    "persistent".into()
}

/// Registers (or replaces) an SP from `idp sp add` or the admin API: the metadata read
/// (fetched for a URL, which must be signed by the named certificate), checked, stored.
pub async fn add_sp(
    store: &dyn idp_core::store::SpStore,
    recorder: &Recorder,
    http: &reqwest::Client,
    args: SpArgs,
    now: OffsetDateTime,
) -> Result<idp_saml::sp::ServiceProvider, AdminError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let name_id_format: idp_saml::sp::NameIdFormat =
        serde_json::from_value(serde_json::json!(args.name_id_format))
            .map_err(|_| "name_id_format must be persistent or transient".to_owned())?;
    let metadata_signing_certificate = match (
        &args.metadata_signing_cert,
        args.metadata_signing_certificate,
    ) {
        (Some(path), _) => Some(read(path)?),
        (None, pem) => pem,
    };
    let settings = idp_saml::sp::SpSettings {
        display_name: args.display_name,
        name_id_format,
        sign_response: !args.assertion_signature_only,
        require_signed_requests: args.require_signed_requests,
        claims: args.claims,
        pre_approved: args.pre_approved,
        audience: args.audience,
        metadata_url: args.metadata_url.clone(),
        metadata_signing_certificate,
        idp_initiated: args.idp_initiated,
    };
    let metadata = match (&args.metadata_file, args.metadata, &args.metadata_url) {
        (Some(path), None, None) => read(path)?,
        (None, Some(xml), None) => xml,
        (None, None, Some(url)) => {
            if !url.starts_with("https://") {
                return Err(format!("{url} is not an https URL").into());
            }
            if settings.metadata_signing_certificate.is_none() {
                return Err(
                    "metadata fetched from a URL must be signed: name its signer's certificate"
                        .into(),
                );
            }
            crate::saml::fetch_metadata(http, url).await?
        }
        _ => return Err("give exactly one of the metadata file, the metadata or its URL".into()),
    };
    crate::saml::register_sp(store, &metadata, &settings, None, now).await?;
    let sp = idp_saml::sp::ServiceProvider::from_metadata(&metadata, settings, now)
        .map_err(|e| e.to_string())?;
    recorder
        .record("sp.added", Some(&sp.entity_id), sp_summary(&sp))
        .await?;
    Ok(sp)
}

/// `idp sp remove`, `DELETE /admin/api/sps`: the SP and the consents given to it; whether
/// it existed.
pub async fn remove_sp(
    store: &dyn idp_core::store::SpStore,
    recorder: &Recorder,
    entity_id: &str,
) -> Result<bool, AdminError> {
    let removed = store
        .remove_sp(entity_id)
        .await
        .map_err(|e| e.to_string())?;
    if removed {
        recorder
            .record("sp.removed", Some(entity_id), serde_json::json!({}))
            .await?;
    }
    Ok(removed)
}

/// One line of `idp sp list` (and the admin API's SP object).
pub fn sp_summary(sp: &idp_saml::sp::ServiceProvider) -> serde_json::Value {
    serde_json::json!({
        "entity_id": sp.entity_id,
        "display_name": sp.display_name(),
        "acs": sp.acs.iter().map(|a| &a.location).collect::<Vec<_>>(),
        "slo": sp.slo.iter().map(|e| &e.location).collect::<Vec<_>>(),
        "signing_certificates": sp.signing_certificates.len(),
        "authn_requests_signed": sp.requires_signed_requests(false),
        "name_id_format": sp.settings.name_id_format,
        "sign_response": sp.settings.sign_response,
        "claims": sp.claims(),
        "pre_approved": sp.settings.pre_approved,
        "audience": sp.settings.audience,
        "idp_initiated": sp.settings.idp_initiated,
        "metadata_url": sp.settings.metadata_url,
        "valid_until": sp.valid_until.map(idp_saml::xml::instant),
    })
}

/// Every stored SP as summaries; a record whose metadata no longer parses is listed with
/// its entity ID and `"usable": false`.
pub async fn list_sps(
    store: &dyn idp_core::store::SpStore,
    now: OffsetDateTime,
) -> Result<Vec<serde_json::Value>, String> {
    Ok(store
        .sps()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|record| match idp_saml::idp::parse_record(record, now) {
            Some(sp) => sp_summary(&sp),
            None => serde_json::json!({"entity_id": record.entity_id, "usable": false}),
        })
        .collect())
}

fn default_method() -> String {
    "client_secret_basic".into()
}

fn default_alg() -> String {
    "RS256".into()
}

fn parse_method(s: &str) -> Result<TokenEndpointAuthMethod, String> {
    serde_json::from_value(serde_json::json!(s)).map_err(|_| format!("unknown auth method {s:?}"))
}

fn parse_alg(s: &str) -> Result<SigningAlg, String> {
    serde_json::from_value(serde_json::json!(s)).map_err(|_| format!("unknown algorithm {s:?}"))
}

/// `idp client add`: registers a client; returns the registration and, for secret
/// methods, the generated secret (shown once, stored only as its digest).
pub async fn add_client(
    store: &dyn ClientStore,
    recorder: &Recorder,
    args: ClientArgs,
    now: OffsetDateTime,
) -> Result<(ClientRegistration, Option<Secret>), AdminError> {
    if store
        .client(&args.id)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(format!("client {:?} already exists", args.id).into());
    }
    let method = parse_method(&args.auth_method)?;
    let secret = matches!(
        method,
        TokenEndpointAuthMethod::ClientSecretBasic | TokenEndpointAuthMethod::ClientSecretPost
    )
    .then(Secret::generate);
    let jwks = match &args.jwks_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => args.jwks,
    };
    let mut scopes = vec![idp_vocabulary::scope::OPENID.to_owned()];
    for s in args.scopes {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let client = ClientRegistration {
        secret_digest: secret.as_ref().map(Secret::digest),
        redirect_uris: args.redirect_uris,
        post_logout_redirect_uris: args.post_logout_redirect_uris,
        allowed_scopes: scopes,
        id_token_signed_response_alg: parse_alg(&args.id_token_alg)?,
        subject_type: if args.public_subject {
            SubjectType::Public
        } else {
            SubjectType::Pairwise
        },
        pre_approved: args.pre_approved,
        audience: args.audience,
        refresh_tokens: args.refresh_tokens,
        jwks,
        tls_client_auth_subject_dn: args.tls_subject_dn,
        tls_client_certificate_sha256: args.tls_cert_sha256,
        backchannel_logout_uri: args.backchannel_logout_uri,
        ..ClientRegistration::new(args.id, args.name, method)
    };
    client.check()?;
    store
        .put_client(&client, now)
        .await
        .map_err(|e| e.to_string())?;
    recorder
        .record(
            "client.added",
            Some(&client.client_id),
            client_detail(&client),
        )
        .await?;
    Ok((client, secret))
}

/// `idp client remove`, `DELETE /admin/api/clients/{id}`: whether it existed.
pub async fn remove_client(
    store: &dyn ClientStore,
    recorder: &Recorder,
    client_id: &str,
) -> Result<bool, AdminError> {
    let removed = store
        .remove_client(client_id)
        .await
        .map_err(|e| e.to_string())?;
    if removed {
        recorder
            .record("client.removed", Some(client_id), serde_json::json!({}))
            .await?;
    }
    Ok(removed)
}

/// `idp client rotate-secret`: a new secret replaces the old one at once.
pub async fn rotate_secret(
    store: &dyn ClientStore,
    recorder: &Recorder,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<Secret, AdminError> {
    let mut client = store
        .client(client_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no client {client_id:?}"))?;
    if client.secret_digest.is_none() {
        return Err(format!("client {client_id:?} does not use a secret").into());
    }
    let secret = Secret::generate();
    client.secret_digest = Some(secret.digest());
    store
        .put_client(&client, now)
        .await
        .map_err(|e| e.to_string())?;
    recorder
        .record(
            "client.secret_rotated",
            Some(client_id),
            serde_json::json!({}),
        )
        .await?;
    Ok(secret)
}

/// The registration as shown by `idp client list` (the secret digest left out).
pub fn client_summary(client: &ClientRegistration) -> String {
    let mut value = serde_json::to_value(client).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("secret_digest");
    }
    value.to_string()
}

// ----- the admin API -------------------------------------------------------------------

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::app::AppState;

/// Routes of the admin API (public origin); it answers 404 unless `[admin] token_sha256`
/// is set.
pub fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/api/sps", web::get().to(api_list_sps))
        .route("/admin/api/sps", web::post().to(api_add_sp))
        .route("/admin/api/sps", web::delete().to(api_remove_sp))
        .route("/admin/api/clients", web::get().to(api_list_clients))
        .route("/admin/api/clients", web::post().to(api_add_client))
        .route("/admin/api/clients/{id}", web::get().to(api_get_client))
        .route(
            "/admin/api/clients/{id}",
            web::delete().to(api_remove_client),
        )
        .route(
            "/admin/api/clients/{id}/rotate-secret",
            web::post().to(api_rotate_secret),
        )
        .route("/admin/api/policies", web::get().to(api_policies))
        .route(
            "/admin/api/policies/reload",
            web::post().to(api_reload_policies),
        )
        .route("/admin/api/explain", web::get().to(api_explain));
}

/// The policy in force: version, source, counts, and every policy with its reason.
async fn api_policies(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let policy = state.policies.engine().policy();
    let policies: Vec<_> = policy
        .reasons()
        .iter()
        .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
        .collect();
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "version": policy.version(),
            "source": state.policies.dir().map_or("builtin".to_owned(), |d| d.display().to_string()),
            "permit": policy.count(true),
            "forbid": policy.count(false),
            "policies": policies,
        }))
}

/// Reloads the policies folder now: 200 with the outcome, or 422 `invalid_policy` with
/// the error (the policy in force stays).
async fn api_reload_policies(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    use crate::disclosure::ReloadOutcome;
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    match state.policies.reload("admin-api", true).await {
        Ok(ReloadOutcome::Refused { error, version }) => HttpResponse::UnprocessableEntity()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "error": "invalid_policy",
                "error_description": error,
                "version": version,
            })),
        Ok(outcome) => {
            let (result, version) = match outcome {
                ReloadOutcome::Reloaded { to, .. } => ("reloaded", to),
                ReloadOutcome::Unchanged { version } => ("unchanged", version),
                ReloadOutcome::Builtin { version } => ("builtin", version),
                ReloadOutcome::Refused { version, .. } => ("refused", version),
            };
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .json(serde_json::json!({"result": result, "version": version}))
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    relying_party: String,
    doctor: String,
}

/// `idp explain --json` over HTTP: each claim's decision for a relying party and doctor.
async fn api_explain(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let query = match web::Query::<ExplainQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let stores = state.oidc.provider.stores();
    let explain_stores = crate::disclosure::ExplainStores {
        doctors: state.doctors.as_ref(),
        clients: stores.clients.as_ref(),
        sps: state.sps.as_ref(),
        consents: stores.consents.as_ref(),
        settings: stores.settings.as_ref(),
    };
    match crate::disclosure::explain(
        state.policies.engine(),
        explain_stores,
        &query.relying_party,
        &query.doctor,
        OffsetDateTime::now_utc(),
    )
    .await
    {
        Ok(explanation) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(explanation),
        Err(e) => api_error(StatusCode::NOT_FOUND, "not_found", &e),
    }
}

fn saml_missing() -> HttpResponse {
    api_error(StatusCode::NOT_FOUND, "not_found", "SAML is not configured")
}

async fn api_list_sps(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let Some(saml) = &state.saml else {
        return saml_missing();
    };
    match list_sps(saml.idp.stores().sps.as_ref(), OffsetDateTime::now_utc()).await {
        Ok(list) => HttpResponse::Ok().json(list),
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn api_add_sp(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let Some(saml) = &state.saml else {
        return saml_missing();
    };
    let args: SpArgs = match serde_json::from_slice(&body) {
        Ok(args) => args,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let store = saml.idp.stores().sps.clone();
    let recorder = api_recorder(&state);
    match add_sp(
        store.as_ref(),
        &recorder,
        &saml.http,
        args,
        OffsetDateTime::now_utc(),
    )
    .await
    {
        Ok(sp) => {
            tracing::info!(sp = %sp.entity_id, "SP registered through the admin API");
            HttpResponse::Created().json(sp_summary(&sp))
        }
        Err(AdminError::Invalid(reason)) => {
            api_error(StatusCode::BAD_REQUEST, "invalid_metadata", &reason)
        }
        Err(AdminError::Unrecorded(e)) => unavailable(&e),
    }
}

async fn api_remove_sp(
    req: HttpRequest,
    query: web::Query<EntityQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let Some(saml) = &state.saml else {
        return saml_missing();
    };
    let recorder = api_recorder(&state);
    match remove_sp(saml.idp.stores().sps.as_ref(), &recorder, &query.entity_id).await {
        Ok(true) => {
            tracing::info!(sp = %query.entity_id, "SP removed through the admin API");
            HttpResponse::NoContent().finish()
        }
        Ok(false) => api_error(StatusCode::NOT_FOUND, "not_found", "no such SP"),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// Entity IDs are URLs: they travel as a query parameter, not a path segment.
#[derive(serde::Deserialize)]
struct EntityQuery {
    entity_id: String,
}

fn api_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({"error": error, "error_description": description}))
}

/// A store or the audit log failed: logged, and a 503 without detail.
fn unavailable(error: &str) -> HttpResponse {
    tracing::error!(error, "admin API: store or audit log unavailable");
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again later",
    )
}

/// The admin bearer token, checked against the configured digest in constant time: the
/// refusal, or `None` when the request may proceed.
fn admin_denial(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    let Some(expected) = state.runtime.config.admin.token_sha256.as_deref() else {
        return Some(HttpResponse::NotFound().finish());
    };
    let presented = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| Secret::from_client_secret(t.trim()));
    match presented {
        Some(token)
            if idp_core::secret::digests_match(&token.digest(), &expected.to_ascii_lowercase()) =>
        {
            None
        }
        _ => Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer realm=\"idp-admin\""))
                .json(serde_json::json!({"error": "invalid_token"})),
        ),
    }
}

fn api_recorder(state: &AppState) -> Recorder {
    Recorder {
        audit: state.oidc.provider.stores().audit.clone(),
        actor: "admin-api".into(),
    }
}

fn summary_json(client: &ClientRegistration) -> serde_json::Value {
    serde_json::from_str(&client_summary(client)).unwrap_or_default()
}

async fn api_list_clients(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    match state.oidc.provider.stores().clients.clients().await {
        Ok(clients) => {
            HttpResponse::Ok().json(clients.iter().map(summary_json).collect::<Vec<_>>())
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn api_get_client(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    match state.oidc.provider.stores().clients.client(&id).await {
        Ok(Some(client)) => HttpResponse::Ok().json(summary_json(&client)),
        Ok(None) => api_error(StatusCode::NOT_FOUND, "not_found", "no such client"),
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn api_add_client(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let args: ClientArgs = match serde_json::from_slice(&body) {
        Ok(args) => args,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let store = state.oidc.provider.stores().clients.clone();
    let recorder = api_recorder(&state);
    match add_client(store.as_ref(), &recorder, args, OffsetDateTime::now_utc()).await {
        Ok((client, secret)) => {
            tracing::info!(
                client = client.client_id,
                "client registered through the admin API"
            );
            let mut body = summary_json(&client);
            if let (Some(secret), Some(map)) = (secret, body.as_object_mut()) {
                map.insert("client_secret".into(), secret.dangerous_expose().into());
            }
            HttpResponse::Created()
                .insert_header(("Cache-Control", "no-store"))
                .json(body)
        }
        Err(AdminError::Invalid(reason)) => {
            api_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", &reason)
        }
        Err(AdminError::Unrecorded(e)) => unavailable(&e),
    }
}

async fn api_remove_client(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let stores = state.oidc.provider.stores();
    let recorder = api_recorder(&state);
    match remove_client(stores.clients.as_ref(), &recorder, &id).await {
        Ok(true) => {
            tracing::info!(client = %id, "client removed through the admin API");
            HttpResponse::NoContent().finish()
        }
        Ok(false) => api_error(StatusCode::NOT_FOUND, "not_found", "no such client"),
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn api_rotate_secret(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(denied) = admin_denial(&req, &state) {
        return denied;
    }
    let store = state.oidc.provider.stores().clients.clone();
    let recorder = api_recorder(&state);
    match rotate_secret(store.as_ref(), &recorder, &id, OffsetDateTime::now_utc()).await {
        Ok(secret) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "client_id": id.as_str(),
                "client_secret": secret.dangerous_expose(),
            })),
        Err(AdminError::Invalid(reason)) => {
            api_error(StatusCode::BAD_REQUEST, "invalid_request", &reason)
        }
        Err(AdminError::Unrecorded(e)) => unavailable(&e),
    }
}

fn parse_audience(value: &str) -> Result<Audience, String> {
    Audience::parse(value)
        .ok_or_else(|| "the audience is regional_network, jma_service or third_party".to_owned())
}
