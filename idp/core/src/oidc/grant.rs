//! The authorization code grant (RFC 6749 §4.1, OIDC Core §3.1.3) over the ephemeral
//! store: single-use codes with a short life, bound to client, redirect URI and PKCE; a
//! replayed code revokes what it issued (RFC 6749 §4.1.2, RFC 9700 §4.5).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use std::collections::BTreeSet;

use idp_vocabulary::scope;

use super::authorize::AuthorizationRequest;
use super::client::ClientRegistration;
use super::pkce::CodeChallenge;
use super::{ErrorCode, OAuthError};
use crate::audit::{AuditEvent, AuditLog};
use crate::doctor::DoctorId;
use crate::secret::Secret;
use crate::session::{CardSummary, Session};
use crate::store::{EphemeralStore, RefreshRecord, RefreshTokenStore, Rotation, StoreError};

/// Lifetimes of what the grant issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPolicy {
    /// Authorization codes (60 s).
    pub code_ttl: Duration,
    /// Access tokens.
    pub access_token_ttl: Duration,
    /// How long a redeemed code is remembered to detect replay.
    pub replay_window: Duration,
    /// Each refresh token (rotated at every use).
    pub refresh_token_ttl: Duration,
    /// A refresh-token family, from the code it came from, whatever the rotations.
    pub refresh_family_ttl: Duration,
}

impl Default for GrantPolicy {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(60),
            access_token_ttl: Duration::from_secs(300),
            replay_window: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            refresh_family_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What a doctor authorized a client to have: shared by codes, access tokens and
/// refresh-token families.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub client_id: String,
    pub doctor_id: DoctorId,
    pub scopes: Vec<String>,
    /// The claim names released (decided at authorization).
    pub released: BTreeSet<String>,
    /// The session's public ID (`sid`).
    pub sid: String,
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    pub acr: String,
    pub amr: Vec<String>,
    pub card: CardSummary,
}

impl Authorization {
    /// Whether refresh tokens go with this authorization.
    pub fn offline(&self) -> bool {
        self.scopes.iter().any(|s| s == scope::OFFLINE_ACCESS)
    }
}

/// What an authorization code stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub authorization: Authorization,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    pub code_challenge: CodeChallenge,
}

impl CodeGrant {
    pub fn new(
        request: &AuthorizationRequest,
        session: &Session,
        released: BTreeSet<String>,
    ) -> Self {
        Self {
            authorization: Authorization {
                client_id: request.client_id.clone(),
                doctor_id: session.doctor_id.clone(),
                scopes: request.scopes.clone(),
                released,
                sid: session.sid.clone(),
                auth_time: session.auth_time,
                acr: session.acr.clone(),
                amr: session.amr.clone(),
                card: session.card.clone(),
            },
            redirect_uri: request.redirect_uri.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
        }
    }
}

/// What an access token stands for (userinfo, introspection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    pub authorization: Authorization,
    /// RFC 8705 §3: `x5t#S256` of the certificate the token is bound to.
    pub cnf_x5t_s256: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Tokens issued for a code or a refresh.
#[derive(Debug)]
pub struct Issued {
    pub authorization: Authorization,
    /// The nonce of the authorization request (codes only).
    pub nonce: Option<String>,
    pub access_token: Secret,
    pub expires_in: Duration,
    pub refresh_token: Option<Secret>,
}

#[derive(Serialize, Deserialize)]
struct UsedCode {
    access_tokens: Vec<String>,
    refresh_tokens: Vec<String>,
    client_id: String,
    /// The doctor of the authorization (for the audit record of a replay).
    #[serde(default)]
    doctor_id: Option<DoctorId>,
}

/// Codes, access tokens and refresh tokens. Every revocation is recorded in the audit
/// log (`token.revoked`): a replayed code, a reused refresh token, a revocation request.
#[derive(Debug, Clone)]
pub struct Grants {
    store: Arc<dyn EphemeralStore>,
    refresh: Arc<dyn RefreshTokenStore>,
    policy: GrantPolicy,
    audit: AuditLog,
}

/// Why tokens were revoked (`token.revoked` records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationCause {
    /// RFC 7009: the client asked.
    Requested,
    /// A spent refresh token was presented again: its family is revoked.
    RefreshTokenReuse,
    /// An authorization code was presented again: what it issued is revoked.
    CodeReplay,
}

impl RevocationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::CodeReplay => "code_replay",
        }
    }
}

impl AuditEvent {
    /// Tokens revoked: which (`access_token`, `refresh_family` or both) and why; never
    /// the tokens.
    pub fn tokens_revoked(
        client_id: &str,
        doctor: Option<&DoctorId>,
        cause: RevocationCause,
        tokens: &[&str],
    ) -> Self {
        Self {
            kind: "token.revoked".into(),
            actor: client_id.to_owned(),
            doctor: doctor.map(|d| d.as_str().to_owned()),
            relying_party: Some(client_id.to_owned()),
            detail: serde_json::json!({"reason": cause.as_str(), "tokens": tokens}),
        }
    }
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, description)
}

/// A storage failure as the client sees it: no detail.
pub fn server_error(e: StoreError) -> OAuthError {
    OAuthError::new(
        if matches!(e, StoreError::Unavailable(_)) {
            ErrorCode::TemporarilyUnavailable
        } else {
            ErrorCode::ServerError
        },
        "try again later",
    )
}

fn corrupt(e: serde_json::Error) -> OAuthError {
    server_error(StoreError::Corrupt(e.to_string()))
}

impl Grants {
    pub fn new(
        store: Arc<dyn EphemeralStore>,
        refresh: Arc<dyn RefreshTokenStore>,
        policy: GrantPolicy,
        audit: AuditLog,
    ) -> Self {
        Self {
            store,
            refresh,
            policy,
            audit,
        }
    }

    /// Records a revocation that has happened; a failed write is reported to the client as
    /// a failure (the revocation stands).
    async fn record_revocation(
        &self,
        client_id: &str,
        doctor: Option<&DoctorId>,
        cause: RevocationCause,
        tokens: &[&str],
    ) -> Result<(), OAuthError> {
        self.audit
            .record(AuditEvent::tokens_revoked(client_id, doctor, cause, tokens))
            .await
            .map_err(server_error)
    }

    pub fn policy(&self) -> GrantPolicy {
        self.policy
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

    /// Redeems `code` for `client` (already authenticated) at the token endpoint. A second
    /// redemption fails and revokes the access and refresh tokens the first one issued.
    /// `cnf` binds the access token to the client's TLS certificate.
    pub async fn redeem(
        &self,
        code: &str,
        client: &ClientRegistration,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        cnf: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Issued, OAuthError> {
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
                for token in &used.access_tokens {
                    self.store
                        .delete(&format!("access:{token}"))
                        .await
                        .map_err(server_error)?;
                }
                for token in &used.refresh_tokens {
                    self.refresh
                        .revoke_refresh_family(token, &used.client_id, now)
                        .await
                        .map_err(server_error)?;
                }
                let mut tokens = vec!["access_token"];
                if !used.refresh_tokens.is_empty() {
                    tokens.push("refresh_family");
                }
                self.record_revocation(
                    &used.client_id,
                    used.doctor_id.as_ref(),
                    RevocationCause::CodeReplay,
                    &tokens,
                )
                .await?;
            }
            return Err(invalid_grant(
                "the code is invalid, expired or already used",
            ));
        };
        let grant: CodeGrant = serde_json::from_slice(&bytes).map_err(corrupt)?;
        // RFC 6749 §4.1.3: the code was issued to this client, for this redirect URI.
        if grant.authorization.client_id != client.client_id {
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
        let access_token = self.issue_access(&grant.authorization, cnf, now).await?;
        let refresh_token = if client.refresh_tokens && grant.authorization.offline() {
            Some(self.issue_refresh(&grant.authorization, now).await?)
        } else {
            None
        };
        let used = UsedCode {
            access_tokens: vec![access_token.digest()],
            refresh_tokens: refresh_token.iter().map(Secret::digest).collect(),
            client_id: client.client_id.clone(),
            doctor_id: Some(grant.authorization.doctor_id.clone()),
        };
        let used = serde_json::to_vec(&used).map_err(corrupt)?;
        self.store
            .put(&used_key, &used, self.policy.replay_window)
            .await
            .map_err(server_error)?;
        Ok(Issued {
            authorization: grant.authorization,
            nonce: grant.nonce,
            access_token,
            expires_in: self.policy.access_token_ttl,
            refresh_token,
        })
    }

    /// Rotates a refresh token (RFC 6749 §6, RFC 9700 §4.14.2): the presented token is
    /// spent, a new one issued; presenting a spent token revokes its whole family.
    pub async fn refresh(
        &self,
        token: &str,
        client: &ClientRegistration,
        cnf: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Issued, OAuthError> {
        let token = Secret::from_client(token)
            .ok_or_else(|| invalid_grant("the refresh token is not valid"))?;
        let next = Secret::generate();
        let rotation = self
            .refresh
            .rotate_refresh(
                &token.digest(),
                &client.client_id,
                &next.digest(),
                now + self.policy.refresh_token_ttl,
                now,
            )
            .await
            .map_err(server_error)?;
        let record = match rotation {
            Rotation::Rotated(record) => record,
            Rotation::Reused { doctor_id, .. } => {
                self.record_revocation(
                    &client.client_id,
                    Some(&doctor_id),
                    RevocationCause::RefreshTokenReuse,
                    &["refresh_family"],
                )
                .await?;
                return Err(invalid_grant(
                    "the refresh token was already used; its grant is revoked",
                ));
            }
            Rotation::Invalid => {
                return Err(invalid_grant(
                    "the refresh token is invalid, expired or revoked",
                ));
            }
        };
        let authorization: Authorization = serde_json::from_str(&record.grant).map_err(corrupt)?;
        let access_token = self.issue_access(&authorization, cnf, now).await?;
        Ok(Issued {
            authorization,
            nonce: None,
            access_token,
            expires_in: self.policy.access_token_ttl,
            refresh_token: Some(next),
        })
    }

    async fn issue_access(
        &self,
        authorization: &Authorization,
        cnf: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Secret, OAuthError> {
        let access_token = Secret::generate();
        let access = AccessGrant {
            authorization: authorization.clone(),
            cnf_x5t_s256: cnf,
            issued_at: now,
            expires_at: now + self.policy.access_token_ttl,
        };
        let value = serde_json::to_vec(&access).map_err(corrupt)?;
        self.store
            .put(
                &format!("access:{}", access_token.digest()),
                &value,
                self.policy.access_token_ttl,
            )
            .await
            .map_err(server_error)?;
        Ok(access_token)
    }

    async fn issue_refresh(
        &self,
        authorization: &Authorization,
        now: OffsetDateTime,
    ) -> Result<Secret, OAuthError> {
        let token = Secret::generate();
        let family_end = now + self.policy.refresh_family_ttl;
        let record = RefreshRecord {
            token_digest: token.digest(),
            family_id: Secret::generate().digest(),
            client_id: authorization.client_id.clone(),
            doctor_id: authorization.doctor_id.clone(),
            grant: serde_json::to_string(authorization).map_err(corrupt)?,
            issued_at: now,
            expires_at: (now + self.policy.refresh_token_ttl).min(family_end),
            family_expires_at: family_end,
        };
        self.refresh
            .insert_refresh(&record)
            .await
            .map_err(server_error)?;
        Ok(token)
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

    /// The live refresh token's authorization, for introspection.
    pub async fn refresh_grant(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(RefreshRecord, Authorization)>, StoreError> {
        let Some(token) = Secret::from_client(token) else {
            return Ok(None);
        };
        let Some(record) = self.refresh.live_refresh(&token.digest(), now).await? else {
            return Ok(None);
        };
        let authorization =
            serde_json::from_str(&record.grant).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((record, authorization)))
    }

    /// Revokes a token of `client_id` (RFC 7009): an access token, or a refresh token and
    /// its whole family. Unknown tokens and other clients' tokens are ignored, as the RFC
    /// asks (the response is the same).
    pub async fn revoke(
        &self,
        token: &str,
        client_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), OAuthError> {
        let Some(secret) = Secret::from_client(token) else {
            return Ok(());
        };
        if let Some(grant) = self.access(token, now).await.map_err(server_error)?
            && grant.authorization.client_id == client_id
        {
            self.store
                .delete(&format!("access:{}", secret.digest()))
                .await
                .map_err(server_error)?;
            return self
                .record_revocation(
                    client_id,
                    Some(&grant.authorization.doctor_id),
                    RevocationCause::Requested,
                    &["access_token"],
                )
                .await;
        }
        let revoked = self
            .refresh
            .revoke_refresh_family(&secret.digest(), client_id, now)
            .await
            .map_err(server_error)?;
        if let Some(doctor) = revoked {
            self.record_revocation(
                client_id,
                Some(&doctor),
                RevocationCause::Requested,
                &["refresh_family"],
            )
            .await?;
        }
        Ok(())
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
