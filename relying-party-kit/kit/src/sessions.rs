//! The relying party's own sessions: what a signed-in browser's cookie stands for. Kept on
//! the server (the cookie holds only a random ID), so that a back-channel logout from the
//! IdP can end them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use openidconnect::{AccessToken, RefreshToken};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::{IdTokenHint, LogoutNotice};
use crate::saml::{SamlLogin, SamlNameId};
use crate::{Doctor, Error};

/// The most sessions [`MemorySessions`] holds; past it, expired ones are dropped and, if
/// none expired, a new login is refused rather than an old session evicted silently.
pub const MAX_MEMORY_SESSIONS: usize = 100_000;

/// The tokens of an OpenID Connect login, kept to call the IdP's APIs for the doctor and
/// to send `id_token_hint` at logout.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OidcTokens {
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub id_token: IdTokenHint,
}

impl fmt::Debug for OidcTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcTokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a SAML login leaves in its session: the NameID and SessionIndex an SP-initiated
/// `LogoutRequest` names, and the end the IdP set for the session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SamlSession {
    pub name_id: SamlNameId,
    /// `SessionIndex` of the `AuthnStatement`.
    pub session_index: Option<String>,
    /// `SessionNotOnOrAfter`: the session ends then, whatever the kit's own timeouts say.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_on_or_after: Option<OffsetDateTime>,
    pub idp_entity_id: String,
}

impl SamlSession {
    pub fn from_login(login: &SamlLogin) -> Self {
        Self {
            name_id: login.name_id.clone(),
            session_index: login.session_index.clone(),
            not_on_or_after: login.session_not_on_or_after,
            idp_entity_id: login.idp_entity_id.clone(),
        }
    }
}

/// One signed-in browser.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Session {
    pub doctor: Doctor,
    /// The IdP's session, which back-channel logout names: the OIDC `sid`, or a SAML
    /// login's `SessionIndex` (which the IdP's SOAP LogoutRequest names).
    pub sid: Option<String>,
    /// Present for OpenID Connect logins.
    pub tokens: Option<OidcTokens>,
    /// Present for SAML logins (which have no tokens).
    pub saml: Option<SamlSession>,
    /// The anti-CSRF token the app puts into its forms ([`crate::web::SignedIn::csrf_token`]).
    pub csrf: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

impl Session {
    /// A session begun `now`.
    pub fn new(
        doctor: Doctor,
        sid: Option<String>,
        tokens: Option<OidcTokens>,
        csrf: String,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            doctor,
            sid,
            tokens,
            saml: None,
            csrf,
            created_at: now,
            last_seen: now,
        }
    }

    /// The session of a SAML login.
    pub fn with_saml(mut self, saml: SamlSession) -> Self {
        self.saml = Some(saml);
        self
    }

    /// Whether the session has passed an end its login set (SAML `SessionNotOnOrAfter`).
    pub fn login_expired(&self, now: OffsetDateTime) -> bool {
        self.saml
            .as_ref()
            .and_then(|s| s.not_on_or_after)
            .is_some_and(|end| now >= end)
    }

    fn named_by(&self, notice: &LogoutNotice) -> bool {
        // §2.7: a token with both names ends the sessions matching both.
        let sid_matches = notice
            .sid
            .as_ref()
            .is_none_or(|sid| self.sid.as_ref() == Some(sid));
        let subject_matches = notice
            .subject
            .as_ref()
            .is_none_or(|sub| &self.doctor.subject == sub);
        sid_matches && subject_matches
    }
}

/// Where sessions live. Implement it on a shared store (Redis, a database) when several
/// processes serve the relying party; [`MemorySessions`] serves one process.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Stores a new session under `id` (a fresh random value).
    async fn insert(&self, id: &str, session: Session) -> Result<(), Error>;
    /// The session under `id`.
    async fn get(&self, id: &str) -> Result<Option<Session>, Error>;
    /// Replaces the session under `id`, if it still exists (refreshed tokens, last use).
    async fn update(&self, id: &str, session: Session) -> Result<(), Error>;
    /// Ends the session under `id`.
    async fn remove(&self, id: &str) -> Result<(), Error>;
    /// Ends every session a back-channel logout names; returns how many ended.
    async fn remove_named(&self, notice: &LogoutNotice) -> Result<usize, Error>;
    /// Ends every session that began before `created_before` or was last used before
    /// `seen_before` (called now and then by the kit).
    async fn remove_expired(
        &self,
        created_before: OffsetDateTime,
        seen_before: OffsetDateTime,
    ) -> Result<usize, Error>;
}

/// Sessions in this process's memory, bounded by [`MAX_MEMORY_SESSIONS`].
#[derive(Debug, Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl MemorySessions {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>, Error> {
        self.sessions
            .lock()
            .map_err(|_| Error::Session("the session table is unavailable"))
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessions {
    async fn insert(&self, id: &str, session: Session) -> Result<(), Error> {
        let mut sessions = self.lock()?;
        if sessions.len() >= MAX_MEMORY_SESSIONS {
            return Err(Error::Session("too many sessions"));
        }
        sessions.insert(id.to_owned(), session);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Session>, Error> {
        Ok(self.lock()?.get(id).cloned())
    }

    async fn update(&self, id: &str, session: Session) -> Result<(), Error> {
        if let Some(slot) = self.lock()?.get_mut(id) {
            *slot = session;
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.lock()?.remove(id);
        Ok(())
    }

    async fn remove_named(&self, notice: &LogoutNotice) -> Result<usize, Error> {
        let mut sessions = self.lock()?;
        let before = sessions.len();
        sessions.retain(|_, s| !s.named_by(notice));
        Ok(before - sessions.len())
    }

    async fn remove_expired(
        &self,
        created_before: OffsetDateTime,
        seen_before: OffsetDateTime,
    ) -> Result<usize, Error> {
        let mut sessions = self.lock()?;
        let before = sessions.len();
        sessions.retain(|_, s| s.created_at >= created_before && s.last_seen >= seen_before);
        Ok(before - sessions.len())
    }
}
