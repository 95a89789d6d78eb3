//! Authorization requests (OIDC Core §3.1.2.1, RFC 6749 §4.1.1, RFC 7636).
//!
//! An [`AuthorizationRequest`] exists only once its client is known and its redirect URI
//! is registered for that client: before that, errors are shown on a page and never
//! redirected (RFC 6749 §4.1.2.1). After it, errors go back to the client's redirect URI
//! with `state` and `iss` ([`RedirectError`]).

use std::collections::HashMap;

use super::client::ClientRegistration;
use super::pkce::CodeChallenge;
use super::{ErrorCode, OAuthError};

/// Limits on free-form parameters.
const MAX_STATE: usize = 2048;
const MAX_NONCE: usize = 512;
const MAX_CLAIMS: usize = 8192;

/// `prompt` (OIDC Core §3.1.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
    pub select_account: bool,
}

/// A validated authorization request, bound to its client and redirect URI.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Requested scopes the client may have, in request order, `openid` included.
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: CodeChallenge,
    pub prompt: Prompt,
    pub max_age: Option<u64>,
    pub acr_values: Vec<String>,
    /// The `claims` request parameter (OIDC Core §5.5), as parsed JSON.
    pub claims: Option<serde_json::Value>,
    pub ui_locales: Vec<String>,
}

/// An error that must not be redirected: the client or redirect URI cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedRequest {
    #[error("client_id is missing or repeated")]
    MissingClient,
    #[error("the client is not registered")]
    UnknownClient,
    #[error("redirect_uri is missing or repeated")]
    MissingRedirectUri,
    #[error("redirect_uri is not registered for this client")]
    RedirectUriNotRegistered,
}

/// An error sent back to the client's registered redirect URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct RedirectError {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub error: OAuthError,
}

/// Why a request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error(transparent)]
    Untrusted(#[from] UntrustedRequest),
    #[error(transparent)]
    Redirect(#[from] RedirectError),
}

/// Parameters as received (query string or form), every occurrence kept so that repeated
/// parameters can be refused (RFC 6749 §3.1).
#[derive(Clone, Debug, Default)]
pub struct RawParams(HashMap<String, Vec<String>>);

impl RawParams {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_default().push(v);
        }
        Self(map)
    }

    /// The `client_id`, if present exactly once.
    pub fn client_id(&self) -> Option<&str> {
        self.single("client_id").ok().flatten()
    }

    /// The single value of `name`; `Err(())` when it is repeated. Empty values count as
    /// absent (RFC 6749 §3.1).
    fn single(&self, name: &str) -> Result<Option<&str>, ()> {
        match self.0.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one.as_str()).filter(|v| !v.is_empty())),
            Some(_) => Err(()),
        }
    }
}

impl AuthorizationRequest {
    /// Validates `params` against the registration found by `lookup`.
    pub fn parse(
        params: &RawParams,
        lookup: impl FnOnce(&str) -> Option<ClientRegistration>,
    ) -> Result<(Self, ClientRegistration), AuthorizeError> {
        let client_id = params
            .single("client_id")
            .ok()
            .flatten()
            .ok_or(UntrustedRequest::MissingClient)?;
        let client = lookup(client_id).ok_or(UntrustedRequest::UnknownClient)?;
        let redirect_uri = params
            .single("redirect_uri")
            .ok()
            .flatten()
            .ok_or(UntrustedRequest::MissingRedirectUri)?;
        if !client.has_redirect_uri(redirect_uri) {
            return Err(UntrustedRequest::RedirectUriNotRegistered.into());
        }
        // From here on, errors go back to the client.
        let state = params.single("state").ok().flatten().map(str::to_owned);
        let fail = |code: ErrorCode, description: &str| -> AuthorizeError {
            RedirectError {
                redirect_uri: redirect_uri.to_owned(),
                state: state.clone().filter(|s| s.len() <= MAX_STATE),
                error: OAuthError::new(code, description),
            }
            .into()
        };
        let one = |name: &str| -> Result<Option<&str>, AuthorizeError> {
            params
                .single(name)
                .map_err(|()| fail(ErrorCode::InvalidRequest, &format!("{name} is repeated")))
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) || params.single("state").is_err() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "state is repeated or too long",
            ));
        }
        if one("request")?.is_some() {
            return Err(fail(
                ErrorCode::RequestNotSupported,
                "request objects are not supported",
            ));
        }
        if one("request_uri")?.is_some() {
            return Err(fail(
                ErrorCode::RequestUriNotSupported,
                "request_uri is not supported",
            ));
        }
        match one("response_type")? {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ));
            }
            None => return Err(fail(ErrorCode::InvalidRequest, "response_type is required")),
        }
        match one("response_mode")? {
            None | Some("query") => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "only response_mode=query is supported",
                ));
            }
        }
        let requested: Vec<&str> = one("scope")?
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        if !requested.contains(&"openid") {
            return Err(fail(
                ErrorCode::InvalidScope,
                "the openid scope is required",
            ));
        }
        let mut scopes: Vec<String> = Vec::new();
        for scope in requested {
            if client.allowed_scopes.iter().any(|a| a == scope)
                && !scopes.iter().any(|s| s == scope)
            {
                scopes.push(scope.to_owned());
            }
        }
        if !scopes.iter().any(|s| s == "openid") {
            return Err(fail(
                ErrorCode::InvalidScope,
                "the client may not use the openid scope",
            ));
        }
        let code_challenge = CodeChallenge::parse(
            one("code_challenge")?.ok_or_else(|| {
                fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge is required (PKCE S256)",
                )
            })?,
            one("code_challenge_method")?,
        )
        .map_err(|reason| fail(ErrorCode::InvalidRequest, reason))?;
        let nonce = one("nonce")?.map(str::to_owned);
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
            return Err(fail(ErrorCode::InvalidRequest, "nonce is too long"));
        }
        let mut prompt = Prompt::default();
        for value in one("prompt")?
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
        {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => prompt.select_account = true,
                _ => return Err(fail(ErrorCode::InvalidRequest, "unknown prompt value")),
            }
        }
        if prompt.none && (prompt.login || prompt.consent || prompt.select_account) {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "prompt=none cannot be combined",
            ));
        }
        let max_age = one("max_age")?
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    fail(
                        ErrorCode::InvalidRequest,
                        "max_age is not a number of seconds",
                    )
                })
            })
            .transpose()?;
        let claims = one("claims")?
            .map(|text| {
                if text.len() > MAX_CLAIMS {
                    return Err(fail(ErrorCode::InvalidRequest, "claims is too long"));
                }
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|_| fail(ErrorCode::InvalidRequest, "claims is not JSON"))?;
                let valid = value.as_object().is_some_and(|members| {
                    members.iter().all(|(k, v)| {
                        matches!(k.as_str(), "userinfo" | "id_token")
                            && (v.is_object() || v.is_null())
                    })
                });
                if valid {
                    Ok(value)
                } else {
                    Err(fail(
                        ErrorCode::InvalidRequest,
                        "claims must be an object of userinfo/id_token objects",
                    ))
                }
            })
            .transpose()?;
        let words = |name: &str| -> Result<Vec<String>, AuthorizeError> {
            Ok(one(name)?
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        };
        let acr_values = words("acr_values")?;
        let ui_locales = words("ui_locales")?;
        let request = Self {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            state: state.clone(),
            nonce,
            code_challenge,
            prompt,
            max_age,
            acr_values,
            claims,
            ui_locales,
        };
        Ok((request, client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::client::TokenEndpointAuthMethod;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client() -> ClientRegistration {
        ClientRegistration {
            redirect_uris: vec!["https://rp.example/cb".into()],
            allowed_scopes: vec!["openid".into(), "profile".into(), "hpki".into()],
            sector: "rp.example".into(),
            ..ClientRegistration::new("rp", "RP", TokenEndpointAuthMethod::ClientSecretBasic)
        }
    }

    fn params(extra: &[(&str, &str)], without: &[&str]) -> RawParams {
        let base = [
            ("client_id", "rp"),
            ("redirect_uri", "https://rp.example/cb"),
            ("response_type", "code"),
            ("scope", "openid profile email hpki"),
            ("state", "st"),
            ("nonce", "n-0S6_WzA2Mj"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        RawParams::new(
            base.iter()
                .filter(|(k, _)| !without.contains(k))
                .chain(extra.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    fn parse(p: &RawParams) -> Result<AuthorizationRequest, AuthorizeError> {
        AuthorizationRequest::parse(p, |id| (id == "rp").then(client)).map(|(r, _)| r)
    }

    fn redirected(p: &RawParams) -> ErrorCode {
        match parse(p) {
            Err(AuthorizeError::Redirect(e)) => {
                assert_eq!(e.redirect_uri, "https://rp.example/cb");
                assert_eq!(e.state.as_deref(), Some("st"));
                e.error.code
            }
            other => panic!("expected a redirected error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_is_bound_to_its_client() {
        let request = parse(&params(
            &[
                ("prompt", "login"),
                ("max_age", "300"),
                ("ui_locales", "ja en"),
            ],
            &[],
        ))
        .expect("valid");
        // email is not allowed for this client: dropped, not an error.
        assert_eq!(request.scopes, vec!["openid", "profile", "hpki"]);
        assert!(request.prompt.login);
        assert_eq!(request.max_age, Some(300));
        assert_eq!(request.ui_locales, vec!["ja", "en"]);
        assert_eq!(request.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    }

    #[test]
    fn untrusted_clients_and_redirect_uris_are_never_redirected() {
        let unknown = params(&[("client_id", "other")], &["client_id"]);
        assert_eq!(parse(&unknown), Err(UntrustedRequest::UnknownClient.into()));
        assert_eq!(
            parse(&params(&[], &["client_id"])),
            Err(UntrustedRequest::MissingClient.into())
        );
        assert_eq!(
            parse(&params(&[], &["redirect_uri"])),
            Err(UntrustedRequest::MissingRedirectUri.into())
        );
        for uri in [
            "https://evil.example/cb",
            "https://rp.example/cb/",
            "https://rp.example/cb?next=evil",
        ] {
            let p = params(&[("redirect_uri", uri)], &["redirect_uri"]);
            assert_eq!(
                parse(&p),
                Err(UntrustedRequest::RedirectUriNotRegistered.into()),
                "{uri}"
            );
        }
        // A repeated client_id or redirect_uri is not trusted either.
        assert_eq!(
            parse(&params(&[("client_id", "rp")], &[])),
            Err(UntrustedRequest::MissingClient.into())
        );
        assert_eq!(
            parse(&params(&[("redirect_uri", "https://rp.example/cb")], &[])),
            Err(UntrustedRequest::MissingRedirectUri.into())
        );
    }

    #[test]
    fn protocol_errors_are_redirected_with_state() {
        assert_eq!(
            redirected(&params(&[("response_type", "token")], &["response_type"])),
            ErrorCode::UnsupportedResponseType
        );
        assert_eq!(
            redirected(&params(
                &[("response_type", "code id_token")],
                &["response_type"]
            )),
            ErrorCode::UnsupportedResponseType
        );
        assert_eq!(
            redirected(&params(&[], &["response_type"])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("scope", "profile")], &["scope"])),
            ErrorCode::InvalidScope
        );
        assert_eq!(
            redirected(&params(&[], &["code_challenge"])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(
                &[("code_challenge_method", "plain")],
                &["code_challenge_method"]
            )),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[], &["code_challenge_method"])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("prompt", "none login")], &[])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("prompt", "sometimes")], &[])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("max_age", "-1")], &[])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("claims", "not json")], &[])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("claims", r#"{"other":{}}"#)], &[])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("request", "eyJ...")], &[])),
            ErrorCode::RequestNotSupported
        );
        assert_eq!(
            redirected(&params(&[("request_uri", "https://x")], &[])),
            ErrorCode::RequestUriNotSupported
        );
        assert_eq!(
            redirected(&params(&[("response_mode", "fragment")], &[])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirected(&params(&[("scope", "openid")], &[])),
            ErrorCode::InvalidRequest,
            "repeated scope"
        );
        assert_eq!(
            redirected(&params(&[("nonce", &"n".repeat(513))], &["nonce"])),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn the_claims_parameter_is_kept() {
        let claims = r#"{"id_token":{"hpki_role":{"essential":true}},"userinfo":null}"#;
        let request = parse(&params(&[("claims", claims)], &[])).expect("valid");
        assert_eq!(
            request.claims.expect("claims")["id_token"]["hpki_role"]["essential"],
            true
        );
    }
}
