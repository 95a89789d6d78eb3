//! Browser sessions: created at login, kept in the ephemeral store under the digest of
//! their ID, ended by idle timeout, absolute timeout or logout.

use std::sync::Arc;
use std::time::Duration;

use idp_vocabulary::authn;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::doctor::DoctorId;
use crate::hpki::{HpkiCredential, RevocationEvidence};
use crate::secret::Secret;
use crate::store::{EphemeralStore, StoreError};

/// Idle and absolute session lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused for this long ends.
    pub idle: Duration,
    /// A session ends this long after login, however active.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(8 * 60 * 60),
        }
    }
}

/// What the session remembers of the card that opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    pub holder_id: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub roles: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
    pub revocation: Vec<RevocationEvidence>,
}

impl From<&HpkiCredential> for CardSummary {
    fn from(credential: &HpkiCredential) -> Self {
        Self {
            holder_id: credential.holder_id().to_owned(),
            subject: credential.subject().to_owned(),
            issuer: credential.issuer().to_owned(),
            serial: credential.serial().to_owned(),
            roles: credential
                .roles()
                .iter()
                .map(|r| r.display_name().to_owned())
                .collect(),
            not_before: credential.not_before(),
            not_after: credential.not_after(),
            fingerprint: credential.fingerprint().to_owned(),
            revocation: credential.revocation().to_vec(),
        }
    }
}

/// A logged-in doctor's session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session's public identifier: the OIDC `sid` claim and the SAML `SessionIndex`.
    /// Unrelated to the cookie's secret ID, so that relying parties never learn that.
    pub sid: String,
    pub doctor_id: DoctorId,
    pub display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub acr: String,
    pub amr: Vec<String>,
    pub card: CardSummary,
}

impl Session {
    /// A session for a card login at `now`.
    pub fn for_card_login(
        doctor_id: DoctorId,
        display_name: String,
        credential: &HpkiCredential,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            sid: Secret::generate().digest()[..32].to_owned(),
            doctor_id,
            display_name,
            auth_time: now,
            last_seen: now,
            acr: authn::ACR_HPKI_CARD.to_owned(),
            amr: authn::AMR_HPKI_CARD
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            card: CardSummary::from(credential),
        }
    }

    /// How long the session may still live at `now`, or `None` when it has ended.
    pub fn remaining(&self, policy: SessionPolicy, now: OffsetDateTime) -> Option<Duration> {
        let idle_end = self.last_seen + policy.idle;
        let absolute_end = self.auth_time + policy.absolute;
        let end = idle_end.min(absolute_end);
        Duration::try_from(end - now)
            .ok()
            .filter(|left| !left.is_zero())
    }
}

/// Touching a session rewrites it at most this often (sliding idle timeout without a
/// store write on every request).
const TOUCH_INTERVAL: time::Duration = time::Duration::seconds(30);

/// Sessions over an [`EphemeralStore`].
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn EphemeralStore>,
    policy: SessionPolicy,
}

impl Sessions {
    pub fn new(store: Arc<dyn EphemeralStore>, policy: SessionPolicy) -> Self {
        Self { store, policy }
    }

    fn key(id: &Secret) -> String {
        format!("session:{}", id.digest())
    }

    /// Stores a new session under a fresh ID (rotation: a login never reuses an ID).
    pub async fn create(
        &self,
        session: &Session,
        now: OffsetDateTime,
    ) -> Result<Secret, StoreError> {
        let ttl = session
            .remaining(self.policy, now)
            .ok_or_else(|| StoreError::Conflict("session already expired".into()))?;
        let id = Secret::generate();
        let value = serde_json::to_vec(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store.put(&Self::key(&id), &value, ttl).await?;
        // The public sid finds the session for logouts that arrive without the browser
        // (SAML SOAP logout, a cross-site POST without the cookie).
        self.store
            .put(
                &Self::sid_key(&session.sid),
                id.digest().as_bytes(),
                self.policy.absolute,
            )
            .await?;
        Ok(id)
    }

    fn sid_key(sid: &str) -> String {
        format!("session-sid:{sid}")
    }

    /// Ends the session whose public `sid` this is, wherever its browser is; returns it
    /// when it was still live.
    pub async fn end_by_sid(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        let Some(digest) = self.store.take(&Self::sid_key(sid)).await? else {
            return Ok(None);
        };
        let key = format!("session:{}", String::from_utf8_lossy(&digest));
        let session = self
            .store
            .take(&key)
            .await?
            .and_then(|bytes| serde_json::from_slice::<Session>(&bytes).ok());
        Ok(session)
    }

    /// The live session for `id` at `now`, its idle timer restarted. An expired or
    /// unreadable session is deleted and reported as absent.
    pub async fn resume(
        &self,
        id: &Secret,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        let key = Self::key(id);
        let Some(bytes) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let Ok(mut session) = serde_json::from_slice::<Session>(&bytes) else {
            self.store.delete(&key).await?;
            return Ok(None);
        };
        if session.remaining(self.policy, now).is_none() {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        if now - session.last_seen >= TOUCH_INTERVAL {
            session.last_seen = now;
            if let Some(ttl) = session.remaining(self.policy, now) {
                let value =
                    serde_json::to_vec(&session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                self.store.put(&key, &value, ttl).await?;
            }
        }
        Ok(Some(session))
    }

    /// Ends the session (logout, or rotation at a new login).
    pub async fn end(&self, id: &Secret) -> Result<(), StoreError> {
        self.store.delete(&Self::key(id)).await
    }
}
