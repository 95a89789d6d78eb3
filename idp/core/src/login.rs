//! The card login across the two origins (DESIGN.md §1, §3).
//!
//! ```text
//! public origin   GET /login?return_to=/x    start(): pending login + browser binding cookie
//! login origin    GET /login/hpki?req=R      authenticate(): mTLS certificate -> credential
//!                                            -> doctor record -> one-time ticket
//! public origin   GET /login/complete?ticket=T   complete(): ticket + binding -> session
//! ```
//! The session ID is created on the origin that sets its cookie; the ticket is single-use,
//! short-lived and bound to the browser that started the login, so a ticket carried to
//! another browser (login CSRF, session fixation) is refused.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditLog};
use crate::doctor::{Doctor, DoctorProfile};
use crate::hpki::{HpkiCredential, HpkiRefusal, HpkiValidator, PeerCertificate};
use crate::secret::{Secret, digests_match};
use crate::session::{Session, Sessions};
use crate::store::{DoctorDirectory, EphemeralStore, StoreError};

/// What to do with a valid card whose holder has no doctor record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownHolder {
    /// Refuse the login (the default: only imported doctors log in).
    #[default]
    Refuse,
    /// Create a record from the certificate (name from CN, role from hcRole).
    Provision,
}

/// Limits on failed logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Failures allowed from one client address per window.
    pub per_address: u64,
    /// Failures allowed for one certificate per window.
    pub per_certificate: u64,
    pub window: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_address: 30,
            per_certificate: 5,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Login behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginPolicy {
    pub unknown_holder: UnknownHolder,
    /// How long a started login may take (the doctor finds the card, types the PIN).
    pub request_ttl: Duration,
    /// How long the one-time ticket between the origins lives.
    pub ticket_ttl: Duration,
    pub rate_limit: RateLimit,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        Self {
            unknown_holder: UnknownHolder::Refuse,
            request_ttl: Duration::from_secs(10 * 60),
            ticket_ttl: Duration::from_secs(60),
            rate_limit: RateLimit::default(),
        }
    }
}

/// Why a login did not go through. One variant per reason; the server maps each to a page.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the card certificate was refused: {0}")]
    Refused(#[from] HpkiRefusal),
    #[error("too many failed logins; try again later")]
    RateLimited,
    #[error("no doctor record is bound to this card")]
    NoDoctorRecord,
    #[error("the login request is unknown or expired")]
    RequestExpired,
    #[error("the login ticket is unknown, used or expired")]
    TicketInvalid,
    #[error("the login was started in another browser")]
    BindingMismatch,
    #[error("the return address is not a path on this site")]
    InvalidReturnTo,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    /// A stable code for logs, metrics and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(refusal) => refusal.code(),
            Self::RateLimited => "rate_limited",
            Self::NoDoctorRecord => "no_doctor_record",
            Self::RequestExpired => "request_expired",
            Self::TicketInvalid => "ticket_invalid",
            Self::BindingMismatch => "binding_mismatch",
            Self::InvalidReturnTo => "invalid_return_to",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// A path on the public origin to return to after login: absolute path, no scheme, no
/// authority, no backslash or control characters (no open redirect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnTo(String);

impl ReturnTo {
    pub fn parse(value: &str) -> Result<Self, LoginError> {
        let ok = value.starts_with('/')
            && !value.starts_with("//")
            && value.len() <= 2048
            && !value.chars().any(|c| c == '\\' || c.is_control());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(LoginError::InvalidReturnTo)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReturnTo {
    fn default() -> Self {
        Self("/account".into())
    }
}

/// A started login: the request ID (goes to the login origin) and the browser binding
/// (a cookie on the public origin).
#[derive(Debug)]
pub struct StartedLogin {
    pub request: Secret,
    pub binding: Secret,
}

/// A finished login, ready for its session cookie.
#[derive(Debug)]
pub struct CompletedLogin {
    pub session_id: Secret,
    pub session: Session,
    pub return_to: ReturnTo,
}

#[derive(Serialize, Deserialize)]
struct PendingLogin {
    return_to: ReturnTo,
    binding: String,
}

#[derive(Serialize, Deserialize)]
struct TicketRecord {
    session: Session,
    return_to: ReturnTo,
    binding: String,
}

/// The card login.
#[derive(Debug, Clone)]
pub struct LoginService {
    audit: AuditLog,
    store: Arc<dyn EphemeralStore>,
    doctors: Arc<dyn DoctorDirectory>,
    validator: Arc<HpkiValidator>,
    sessions: Sessions,
    policy: LoginPolicy,
}

impl LoginService {
    pub fn new(
        audit: AuditLog,
        store: Arc<dyn EphemeralStore>,
        doctors: Arc<dyn DoctorDirectory>,
        validator: Arc<HpkiValidator>,
        sessions: Sessions,
        policy: LoginPolicy,
    ) -> Self {
        Self {
            audit,
            store,
            doctors,
            validator,
            sessions,
            policy,
        }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Remembers a login that should come back to `return_to`.
    pub async fn start(&self, return_to: ReturnTo) -> Result<StartedLogin, LoginError> {
        let started = StartedLogin {
            request: Secret::generate(),
            binding: Secret::generate(),
        };
        let pending = PendingLogin {
            return_to,
            binding: started.binding.digest(),
        };
        self.store
            .put(
                &pending_key(&started.request),
                &encode(&pending)?,
                self.policy.request_ttl,
            )
            .await?;
        Ok(started)
    }

    /// Authenticates the presented card for the pending login `request`. Returns the
    /// one-time ticket that completes the login on the public origin.
    ///
    /// Every outcome but a rate-limited attempt is audited (`login.success`,
    /// `login.failure` with the reason); a success whose record cannot be written fails.
    pub async fn authenticate(
        &self,
        request: &Secret,
        peer: Result<PeerCertificate, HpkiRefusal>,
        client: IpAddr,
        now: OffsetDateTime,
    ) -> Result<Secret, LoginError> {
        let fingerprint = peer.as_ref().ok().map(|p| hex::encode(p.fingerprint()));
        match self.authenticate_card(request, peer, client, now).await {
            Ok((ticket, session)) => {
                let event = AuditEvent {
                    kind: "login.success".into(),
                    actor: session.doctor_id.as_str().to_owned(),
                    doctor: Some(session.doctor_id.as_str().to_owned()),
                    relying_party: None,
                    detail: serde_json::json!({
                        "acr": session.acr,
                        "sid": session.sid,
                        "certificate": {
                            "issuer": session.card.issuer,
                            "serial": session.card.serial,
                            "fingerprint": session.card.fingerprint,
                        },
                        "client_address": client.to_string(),
                    }),
                };
                self.audit.record(event).await?;
                Ok(ticket)
            }
            Err(LoginError::RateLimited) => Err(LoginError::RateLimited),
            Err(error) => {
                let event = AuditEvent {
                    kind: "login.failure".into(),
                    actor: "anonymous".into(),
                    doctor: None,
                    relying_party: None,
                    detail: serde_json::json!({
                        "reason": error.code(),
                        "certificate_fingerprint": fingerprint,
                        "client_address": client.to_string(),
                    }),
                };
                if let Err(e) = self.audit.record(event).await {
                    tracing::error!(error = %e, "a login failure could not be audited");
                }
                Err(error)
            }
        }
    }

    async fn authenticate_card(
        &self,
        request: &Secret,
        peer: Result<PeerCertificate, HpkiRefusal>,
        client: IpAddr,
        now: OffsetDateTime,
    ) -> Result<(Secret, Session), LoginError> {
        let limit = self.policy.rate_limit;
        let address_key = format!("ratelimit:addr:{client}");
        let certificate_key = peer
            .as_ref()
            .ok()
            .map(|p| format!("ratelimit:cert:{}", hex::encode(p.fingerprint())));
        if self.failures(&address_key).await? >= limit.per_address {
            return Err(LoginError::RateLimited);
        }
        if let Some(key) = &certificate_key
            && self.failures(key).await? >= limit.per_certificate
        {
            return Err(LoginError::RateLimited);
        }
        let credential = match peer.and_then(|peer| self.validator.validate(&peer, now)) {
            Ok(credential) => credential,
            Err(refusal) => {
                self.store.incr(&address_key, limit.window).await?;
                if let Some(key) = &certificate_key {
                    self.store.incr(key, limit.window).await?;
                }
                return Err(refusal.into());
            }
        };
        // The request is spent once a valid card is presented, whatever follows.
        let pending: PendingLogin = decode(
            &self
                .store
                .take(&pending_key(request))
                .await?
                .ok_or(LoginError::RequestExpired)?,
        )?;
        let doctor = self.doctor_for(&credential, now).await?;
        self.doctors.record_login(&doctor.id, now).await?;
        let display_name = doctor.profile.full_name();
        let ticket = Secret::generate();
        let record = TicketRecord {
            session: Session::for_card_login(doctor.id, display_name, &credential, now),
            return_to: pending.return_to,
            binding: pending.binding,
        };
        self.store
            .put(
                &ticket_key(&ticket),
                &encode(&record)?,
                self.policy.ticket_ttl,
            )
            .await?;
        Ok((ticket, record.session))
    }

    /// Redeems the ticket in the browser that started the login and opens the session.
    /// `previous` is the session the browser had, if any: it ends (rotation on login).
    pub async fn complete(
        &self,
        ticket: &Secret,
        binding: Option<&Secret>,
        previous: Option<&Secret>,
        now: OffsetDateTime,
    ) -> Result<CompletedLogin, LoginError> {
        let record: TicketRecord = decode(
            &self
                .store
                .take(&ticket_key(ticket))
                .await?
                .ok_or(LoginError::TicketInvalid)?,
        )?;
        let bound = binding.is_some_and(|b| digests_match(&b.digest(), &record.binding));
        if !bound {
            return Err(LoginError::BindingMismatch);
        }
        if let Some(previous) = previous {
            self.sessions.end(previous).await?;
        }
        let session = record.session;
        let session_id = self.sessions.create(&session, now).await?;
        Ok(CompletedLogin {
            session_id,
            session,
            return_to: record.return_to,
        })
    }

    async fn failures(&self, key: &str) -> Result<u64, StoreError> {
        Ok(match self.store.get(key).await? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u64::MAX),
            None => 0,
        })
    }

    async fn doctor_for(
        &self,
        credential: &HpkiCredential,
        now: OffsetDateTime,
    ) -> Result<Doctor, LoginError> {
        if let Some(doctor) = self.doctors.find_by_holder(credential.holder_id()).await? {
            return Ok(doctor);
        }
        match self.policy.unknown_holder {
            UnknownHolder::Refuse => Err(LoginError::NoDoctorRecord),
            UnknownHolder::Provision => {
                match self.doctors.provision(&profile_from(credential), now).await {
                    Ok(doctor) => Ok(doctor),
                    // Another login provisioned the same holder first.
                    Err(StoreError::Conflict(_)) => self
                        .doctors
                        .find_by_holder(credential.holder_id())
                        .await?
                        .ok_or(LoginError::NoDoctorRecord),
                    Err(other) => Err(other.into()),
                }
            }
        }
    }
}

/// A profile from what the certificate says: the CN split at the first (full-width or
/// ASCII) space into family and given name, and the first hcRole.
pub fn profile_from(credential: &HpkiCredential) -> DoctorProfile {
    let cn = credential.common_name().unwrap_or_default().trim();
    let (family, given) = cn
        .split_once(['\u{3000}', ' '])
        .map(|(f, g)| (f.trim().to_owned(), g.trim().to_owned()))
        .unwrap_or_else(|| (cn.to_owned(), String::new()));
    DoctorProfile {
        hpki_holder_id: credential.holder_id().to_owned(),
        family_name: family,
        given_name: given,
        hpki_role: credential
            .roles()
            .first()
            .map(|r| r.display_name().to_owned()),
        ..DoctorProfile::default()
    }
}

fn pending_key(request: &Secret) -> String {
    format!("login:{}", request.digest())
}

fn ticket_key(ticket: &Secret) -> String {
    format!("ticket:{}", ticket.digest())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, LoginError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()).into())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, LoginError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()).into())
}
