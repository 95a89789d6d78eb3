//! The IdP's account API for the doctor's own services (scope `account`, JMA-service
//! relying parties only): disclosure settings, consents and disclosure history, called
//! with the doctor's access token.

use std::fmt;

use openidconnect::AccessToken;
use openidconnect::http::{self, Method, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::Error;
use crate::http::HttpClient;

/// One disclosure item (情報開示項目) the doctor decides on, with its labels.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettingItem {
    pub item: String,
    pub ja: String,
    pub en: String,
}

/// Whether `item` is released to relying parties of `audience`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setting {
    pub item: String,
    pub audience: String,
    pub allowed: bool,
    /// What holds when the doctor has not decided.
    #[serde(default)]
    pub default: bool,
}

impl Setting {
    /// A change to send with [`AccountApi::change_settings`].
    pub fn change(item: &str, audience: &str, allowed: bool) -> Self {
        Self {
            item: item.to_owned(),
            audience: audience.to_owned(),
            allowed,
            default: false,
        }
    }
}

/// The doctor's disclosure settings: every item for every audience.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct DisclosureSettings {
    pub items: Vec<SettingItem>,
    pub audiences: Vec<String>,
    pub settings: Vec<Setting>,
}

impl DisclosureSettings {
    /// Whether `item` is released to `audience`.
    pub fn allowed(&self, item: &str, audience: &str) -> Option<bool> {
        self.settings
            .iter()
            .find(|s| s.item == item && s.audience == audience)
            .map(|s| s.allowed)
    }
}

/// A relying party the doctor consented to.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Consent {
    /// The client ID or SAML entity ID.
    pub relying_party: String,
    pub name: String,
    /// `oidc` or `saml`.
    pub protocol: String,
    pub claims: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub granted_at: String,
}

/// One of the doctor's audit records: what was released (or done) to whom, when.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct DisclosureEntry {
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// The event (`release`, `consent.granted`, `login.succeeded`, ...).
    pub kind: String,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub relying_party: Option<String>,
    /// The relying party's display name, as the IdP knows it.
    #[serde(default)]
    pub relying_party_name: Option<String>,
    /// The event's details (claim names, never values; no session IDs).
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// One page of the disclosure history, newest first.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct DisclosurePage {
    pub entries: Vec<DisclosureEntry>,
    /// Pass as `before` for the next (older) page; `None` at the end.
    pub next_before: Option<i64>,
}

#[derive(Deserialize)]
struct Consents {
    consents: Vec<Consent>,
}

#[derive(Deserialize)]
struct ApiError {
    error: String,
}

/// The account API of one IdP.
#[derive(Clone)]
pub struct AccountApi {
    http: HttpClient,
    base: Url,
}

impl fmt::Debug for AccountApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl AccountApi {
    /// The API under `issuer` (the IdP's public origin).
    pub fn new(http: HttpClient, issuer: &str) -> Result<Self, Error> {
        let base = Url::parse(&format!("{}/", issuer.trim_end_matches('/')))
            .map_err(|e| Error::Config(format!("issuer URL: {e}")))?;
        Ok(Self { http, base })
    }

    pub async fn settings(&self, token: &AccessToken) -> Result<DisclosureSettings, Error> {
        self.call(token, Method::GET, "api/me/disclosure-settings", None)
            .await
    }

    /// Applies `changes` all or none; answers with the settings now in force.
    pub async fn change_settings(
        &self,
        token: &AccessToken,
        changes: &[Setting],
    ) -> Result<DisclosureSettings, Error> {
        let changes: Vec<_> = changes
            .iter()
            .map(|s| serde_json::json!({"item": s.item, "audience": s.audience, "allowed": s.allowed}))
            .collect();
        let body = serde_json::json!({ "settings": changes });
        self.call(
            token,
            Method::PUT,
            "api/me/disclosure-settings",
            Some(body.to_string()),
        )
        .await
    }

    pub async fn consents(&self, token: &AccessToken) -> Result<Vec<Consent>, Error> {
        let consents: Consents = self
            .call(token, Method::GET, "api/me/consents", None)
            .await?;
        Ok(consents.consents)
    }

    /// Withdraws the consent to `relying_party` (its refresh tokens end with it); `false`
    /// when there was none.
    pub async fn withdraw_consent(
        &self,
        token: &AccessToken,
        relying_party: &str,
    ) -> Result<bool, Error> {
        let path = format!(
            "api/me/consents/{}",
            url::form_urlencoded::byte_serialize(relying_party.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        );
        match self
            .call::<serde_json::Value>(token, Method::DELETE, &path, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The doctor's audit records, newest first, `limit` (1–200) at a time, older than
    /// `before` when given.
    pub async fn disclosures(
        &self,
        token: &AccessToken,
        before: Option<i64>,
        limit: usize,
    ) -> Result<DisclosurePage, Error> {
        let mut path = format!("api/me/disclosures?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        self.call(token, Method::GET, &path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        token: &AccessToken,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, Error> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::Config(format!("account API URL: {e}")))?;
        let bearer = http::HeaderValue::from_str(&format!("Bearer {}", token.secret()))
            .map_err(|_| Error::Config("the access token cannot be sent as a bearer".into()))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(header::AUTHORIZATION, bearer)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body.unwrap_or_default().into_bytes())
            .map_err(|e| Error::Config(e.to_string()))?;
        let response = self.http.execute(request).await?;
        let status = response.status();
        if status == http::StatusCode::NO_CONTENT {
            return serde_json::from_value(serde_json::Value::Null).map_err(|_| Error::Api {
                status: status.as_u16(),
                error: "unexpected empty answer".into(),
            });
        }
        if !status.is_success() {
            let error = serde_json::from_slice::<ApiError>(response.body())
                .map(|e| e.error)
                .unwrap_or_else(|_| "unreadable error".to_owned());
            return Err(Error::Api {
                status: status.as_u16(),
                error,
            });
        }
        serde_json::from_slice(response.body()).map_err(|e| Error::Api {
            status: status.as_u16(),
            error: format!("malformed answer ({e})"),
        })
    }
}
