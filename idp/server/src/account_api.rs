//! The doctor's account API (docs/DISCLOSURE.md, "The doctor's API"): disclosure settings,
//! consents and disclosure history, for a client holding the doctor's access token with
//! the `account` scope (the portal). Errors are RFC 6750 / OAuth JSON.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use idp_core::account::{self, AccountError, Actor, HISTORY_PAGE_MAX};
use idp_core::disclosure::{Audience, Item, Setting};
use idp_core::oidc::grant::AccessGrant;
use idp_core::oidc::{ErrorCode, OAuthError};
use idp_vocabulary::scope;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app::AppState;
use crate::oidc::{bearer, oauth_error, rp_certificate};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/me/disclosure-settings", web::get().to(get_settings))
        .route("/api/me/disclosure-settings", web::put().to(put_settings))
        .route("/api/me/consents", web::get().to(consents))
        .route(
            "/api/me/consents/{relying_party}",
            web::delete().to(withdraw),
        )
        .route("/api/me/disclosures", web::get().to(disclosures));
}

/// The grant behind the request's bearer token, which must carry the `account` scope.
async fn grant(req: &HttpRequest, state: &AppState) -> Result<AccessGrant, HttpResponse> {
    let token = match bearer(req, &[]) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return Err(HttpResponse::Unauthorized()
                .insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer realm=\"idp\", scope=\"{}\"", scope::ACCOUNT),
                ))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
        Err(e) => return Err(oauth_error(&e, false)),
    };
    let certificate = rp_certificate(req, state);
    state
        .oidc
        .provider
        .bearer_with_scope(
            &token,
            certificate.as_ref(),
            scope::ACCOUNT,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|e| oauth_error(&e, false))
}

fn ok_json(value: &serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(value)
}

fn unavailable(e: &dyn std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "account API: store or audit log unavailable");
    oauth_error(
        &OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the service is unavailable",
        ),
        false,
    )
}

fn invalid(description: impl Into<String>) -> HttpResponse {
    oauth_error(
        &OAuthError::new(ErrorCode::InvalidRequest, description),
        false,
    )
}

async fn settings_body(state: &AppState, grant: &AccessGrant) -> HttpResponse {
    let settings = match state
        .oidc
        .provider
        .stores()
        .settings
        .settings_of(&grant.authorization.doctor_id)
        .await
    {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let items: Vec<_> = Item::ALL
        .iter()
        .map(|i| {
            let (ja, en) = i.label();
            json!({"item": i.as_str(), "ja": ja, "en": en})
        })
        .collect();
    let audiences: Vec<_> = Audience::ALL.iter().map(|a| a.as_str()).collect();
    let all: Vec<_> = settings
        .all()
        .into_iter()
        .map(|s| {
            json!({
                "item": s.item.as_str(),
                "audience": s.audience.as_str(),
                "allowed": s.allowed,
                "default": s.item.default_allowed(s.audience),
            })
        })
        .collect();
    ok_json(&json!({"items": items, "audiences": audiences, "settings": all}))
}

async fn get_settings(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match grant(&req, &state).await {
        Ok(grant) => settings_body(&state, &grant).await,
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    settings: Vec<SettingChange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingChange {
    item: String,
    audience: String,
    allowed: bool,
}

/// The most settings one request may change (every item for every audience).
const MAX_CHANGES: usize = Item::ALL.len() * Audience::ALL.len();

/// Changes some settings (all or none) and answers with the settings now in force.
async fn put_settings(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let grant = match grant(&req, &state).await {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !is_json {
        return invalid("the body must be application/json");
    }
    let change: SettingsChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return invalid(format!("the body is not a settings change: {e}")),
    };
    if change.settings.len() > MAX_CHANGES {
        return invalid(format!("at most {MAX_CHANGES} settings at once"));
    }
    let mut changes = Vec::with_capacity(change.settings.len());
    for c in &change.settings {
        let Some(item) = Item::parse(&c.item) else {
            return invalid(format!("unknown item {:?}", c.item));
        };
        let Some(audience) = Audience::parse(&c.audience) else {
            return invalid(format!("unknown audience {:?}", c.audience));
        };
        changes.push(Setting {
            item,
            audience,
            allowed: c.allowed,
        });
    }
    let stores = state.oidc.provider.stores();
    let outcome = account::change_settings(
        stores.settings.as_ref(),
        &stores.audit,
        &grant.authorization.doctor_id,
        Actor::Client(&grant.authorization.client_id),
        &changes,
        OffsetDateTime::now_utc(),
    )
    .await;
    match outcome {
        Ok(_) => settings_body(&state, &grant).await,
        Err(e @ AccountError::Repeated { .. }) => invalid(e.to_string()),
        Err(AccountError::Store(e)) => unavailable(&e),
    }
}

/// The display name of a relying party: the OIDC client's name, the SAML SP's, or its ID.
pub(crate) async fn relying_party_name(state: &AppState, id: &str) -> (String, &'static str) {
    if let Ok(Some(client)) = state.oidc.provider.stores().clients.client(id).await {
        return (client.name, "oidc");
    }
    if let Some(saml) = &state.saml
        && let Ok(Some(sp)) = saml.idp.sp(id, OffsetDateTime::now_utc()).await
    {
        return (sp.display_name().to_owned(), "saml");
    }
    (id.to_owned(), "unknown")
}

async fn consents(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let grant = match grant(&req, &state).await {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    let consents = match state
        .oidc
        .provider
        .stores()
        .consents
        .consents_of(&grant.authorization.doctor_id)
        .await
    {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    let mut out = Vec::with_capacity(consents.len());
    for c in consents {
        let (name, protocol) = relying_party_name(&state, &c.client_id).await;
        out.push(json!({
            "relying_party": c.client_id,
            "name": name,
            "protocol": protocol,
            "claims": c.claims,
            "scopes": c.scopes,
            "granted_at": c.granted_at.format(&Rfc3339).unwrap_or_default(),
            "policy_version": c.policy_version,
        }));
    }
    ok_json(&json!({"consents": out}))
}

/// Withdraws a consent (and the relying party's refresh tokens): 204, or 404 when there
/// was none.
async fn withdraw(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let grant = match grant(&req, &state).await {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    let stores = state.oidc.provider.stores();
    match account::withdraw_consent(
        stores.consents.as_ref(),
        &stores.audit,
        &grant.authorization.doctor_id,
        Actor::Client(&grant.authorization.client_id),
        &path,
        OffsetDateTime::now_utc(),
    )
    .await
    {
        Ok(true) => HttpResponse::NoContent()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Ok(false) => HttpResponse::build(StatusCode::NOT_FOUND)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({"error": "not_found", "error_description": "no consent to this relying party"})),
        Err(e) => unavailable(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    before: Option<i64>,
    limit: Option<usize>,
}

/// The doctor's own audit records, newest first; `next_before` pages on.
async fn disclosures(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let grant = match grant(&req, &state).await {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    let query = match web::Query::<HistoryQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return invalid(format!("bad query: {e}")),
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return invalid(format!("limit must be 1-{HISTORY_PAGE_MAX}"));
    }
    let stores = state.oidc.provider.stores();
    match account::history(
        &stores.audit,
        &grant.authorization.doctor_id,
        query.before,
        limit,
    )
    .await
    {
        Ok(entries) => {
            let next_before = (entries.len() == limit)
                .then(|| entries.last().map(|e| e.seq))
                .flatten();
            // Each relying party's display name, looked up once per page.
            let mut names = std::collections::HashMap::new();
            let mut out = Vec::with_capacity(entries.len());
            for entry in entries {
                let name = match &entry.relying_party {
                    Some(id) => {
                        if !names.contains_key(id) {
                            let (name, _) = relying_party_name(&state, id).await;
                            names.insert(id.clone(), name);
                        }
                        names.get(id).cloned()
                    }
                    None => None,
                };
                let mut value = serde_json::to_value(&entry).unwrap_or_default();
                if let (Some(name), serde_json::Value::Object(map)) = (name, &mut value) {
                    map.insert("relying_party_name".into(), json!(name));
                }
                out.push(value);
            }
            ok_json(&json!({"entries": out, "next_before": next_before}))
        }
        Err(e) => unavailable(&e),
    }
}
