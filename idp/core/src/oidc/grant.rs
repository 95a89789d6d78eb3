//! The authorization code grant (RFC 6749 §4.1, OIDC Core §3.1.3) over the ephemeral
//! store: single-use codes with a short life, bound to client, redirect URI and PKCE; a
//! replayed code revokes what it issued (RFC 6749 §4.1.2, RFC 9700 §4.5).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::authorize::AuthorizationRequest;
use super::pkce::CodeChallenge;
use super::{ErrorCode, OAuthError};
use crate::doctor::DoctorId;
use crate::secret::Secret;
use crate::session::Session;
use crate::store::{EphemeralStore, StoreError};

/// Lifetimes of what the grant issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPolicy {
    /// Authorization codes (60 s).
    pub code_ttl: Duration,
    /// Access tokens.
    pub access_token_ttl: Duration,
    /// How long a redeemed code is remembered to detect replay.
    pub replay_window: Duration,
}

impl Default for GrantPolicy {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(60),
            access_token_ttl: Duration::from_secs(300),
            replay_window: Duration::from_secs(600),
        }
    }
}

/// What an authorization code stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: CodeChallenge,
    pub doctor_id: DoctorId,
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    pub acr: String,
    pub amr: Vec<String>,
    pub claims: Option<serde_json::Value>,
}

impl CodeGrant {
    pub fn new(request: &AuthorizationRequest, session: &Session) -> Self {
        Self {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            doctor_id: session.doctor_id.clone(),
            auth_time: session.auth_time,
            acr: session.acr.clone(),
            amr: session.amr.clone(),
            claims: request.claims.clone(),
        }
    }
}

/// What an access token stands for (userinfo, introspection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    pub client_id: String,
    pub doctor_id: DoctorId,
    pub scopes: Vec<String>,
    pub claims: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A redeemed code: the grant and the access token issued for it.
#[derive(Debug)]
pub struct Redeemed {
    pub grant: CodeGrant,
    pub access_token: Secret,
    pub expires_in: Duration,
}

#[derive(Serialize, Deserialize)]
struct UsedCode {
    access_tokens: Vec<String>,
}

/// Codes and access tokens.
#[derive(Debug, Clone)]
pub struct Grants {
    store: Arc<dyn EphemeralStore>,
    policy: GrantPolicy,
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, description)
}

fn server_error(e: StoreError) -> OAuthError {
    OAuthError::new(
        if matches!(e, StoreError::Unavailable(_)) {
            ErrorCode::TemporarilyUnavailable
        } else {
            ErrorCode::ServerError
        },
        "try again later",
    )
}

impl Grants {
    pub fn new(store: Arc<dyn EphemeralStore>, policy: GrantPolicy) -> Self {
        Self { store, policy }
    }

    /// Issues a single-use code for `grant`.
    pub async fn issue_code(&self, grant: &CodeGrant) -> Result<Secret, StoreError> {
        let code = Secret::generate();
        let value = serde_json::to_vec(grant).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store
            .put(
                &format!("code:{}", code.digest()),
                &value,
                self.policy.code_ttl,
            )
            .await?;
        Ok(code)
    }

    /// Redeems `code` for `client_id` (already authenticated) at the token endpoint.
    /// A second redemption fails and revokes the access token the first one issued.
    pub async fn redeem(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Redeemed, OAuthError> {
        let code =
            Secret::from_client(code).ok_or_else(|| invalid_grant("the code is not valid"))?;
        let used_key = format!("code-used:{}", code.digest());
        let Some(bytes) = self
            .store
            .take(&format!("code:{}", code.digest()))
            .await
            .map_err(server_error)?
        else {
            // Unknown, expired or replayed. A replay revokes what the code issued.
            let used = self.store.take(&used_key).await.map_err(server_error)?;
            if let Some(used) = used.and_then(|u| serde_json::from_slice::<UsedCode>(&u).ok()) {
                for token in used.access_tokens {
                    self.store
                        .delete(&format!("access:{token}"))
                        .await
                        .map_err(server_error)?;
                }
            }
            return Err(invalid_grant(
                "the code is invalid, expired or already used",
            ));
        };
        let grant: CodeGrant = serde_json::from_slice(&bytes)
            .map_err(|e| server_error(StoreError::Corrupt(e.to_string())))?;
        // RFC 6749 §4.1.3: the code was issued to this client, for this redirect URI.
        if grant.client_id != client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if redirect_uri != Some(grant.redirect_uri.as_str()) {
            return Err(invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        // RFC 7636 §4.6.
        let verifier = code_verifier.ok_or_else(|| invalid_grant("code_verifier is required"))?;
        if !grant.code_challenge.verify(verifier) {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let access_token = Secret::generate();
        let expires_at = now + self.policy.access_token_ttl;
        let access = AccessGrant {
            client_id: grant.client_id.clone(),
            doctor_id: grant.doctor_id.clone(),
            scopes: grant.scopes.clone(),
            claims: grant.claims.clone(),
            expires_at,
        };
        let value = serde_json::to_vec(&access)
            .map_err(|e| server_error(StoreError::Corrupt(e.to_string())))?;
        self.store
            .put(
                &format!("access:{}", access_token.digest()),
                &value,
                self.policy.access_token_ttl,
            )
            .await
            .map_err(server_error)?;
        let used = UsedCode {
            access_tokens: vec![access_token.digest()],
        };
        let used = serde_json::to_vec(&used)
            .map_err(|e| server_error(StoreError::Corrupt(e.to_string())))?;
        self.store
            .put(&used_key, &used, self.policy.replay_window)
            .await
            .map_err(server_error)?;
        Ok(Redeemed {
            grant,
            access_token,
            expires_in: self.policy.access_token_ttl,
        })
    }

    /// The grant behind a bearer access token, if it is live at `now`.
    pub async fn access(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AccessGrant>, StoreError> {
        let Some(token) = Secret::from_client(token) else {
            return Ok(None);
        };
        let Some(bytes) = self
            .store
            .get(&format!("access:{}", token.digest()))
            .await?
        else {
            return Ok(None);
        };
        let grant: AccessGrant =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((grant.expires_at > now).then_some(grant))
    }
}

/// `at_hash` (OIDC Core §3.1.3.6): base64url of the left half of the access token's hash,
/// with the hash of the ID token's algorithm: SHA-256 for RS256, PS256 and ES256, SHA-512
/// for EdDSA with Ed25519.
pub fn at_hash(access_token: &Secret, alg: super::client::SigningAlg) -> String {
    let token = access_token.dangerous_expose().as_bytes();
    let encode = |half: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half);
    match alg {
        super::client::SigningAlg::EdDSA => encode(&sha2::Sha512::digest(token)[..32]),
        _ => encode(&Sha256::digest(token)[..16]),
    }
}
