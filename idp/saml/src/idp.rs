//! The SAML identity provider's decisions: an accepted AuthnRequest (or an unsolicited
//! login for a configured SP) goes through the same session, consent and release as the
//! OIDC side and ends in a signed Response for the SP's registered ACS. No HTTP: the
//! server turns [`SsoStep`] into pages, redirects and auto-POST forms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use idp_core::audit::{AuditEvent, AuditLog};
use idp_core::oidc::release::{
    Protocol, ReleasePolicy, RequiredWithheld, Shown, Verification, decide_at_login,
    released_values,
};
use idp_core::oidc::subject::{SubjectType, subject_for};
use idp_core::secret::Secret;
use idp_core::session::Session;
use idp_core::store::{
    Consent, ConsentStore, DisclosureSettingsStore, DoctorDirectory, EphemeralStore, SpRecord,
    SpStore, StoreError, keep_json, take_json,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attributes::{attribute_name, attributes};
use crate::authn::{self, AcceptedRequest, IntakeError, IntakeRules, Received, StatusAnswer};
use crate::crypto::{SignError, SigningCredential};
use crate::metadata::{IdpDescription, idp_metadata};
use crate::response::{self, AUTHN_CONTEXT_SMARTCARD_PKI, Assertion, SamlStatus, status};
use crate::sp::{NameIdFormat, ServiceProvider, SpSettings};
use crate::xml::new_id;

/// Settings of the SAML IdP.
#[derive(Clone, Debug)]
pub struct IdpSettings {
    pub entity_id: String,
    /// The SSO URL published in the metadata.
    pub sso_url: String,
    /// Every URL a request's `Destination` may name (public and login origins).
    pub sso_urls: Vec<String>,
    pub slo_url: String,
    /// Signed AuthnRequests required from every SP.
    pub require_signed_requests: bool,
    /// How long an assertion may be presented.
    pub assertion_lifetime: Duration,
    /// Clock skew allowed both ways.
    pub skew: Duration,
    /// How old a request's IssueInstant may be (also how long its ID is remembered).
    pub request_max_age: Duration,
    /// How long a request waits for login and consent.
    pub pending_ttl: Duration,
    /// The session's absolute lifetime (SessionNotOnOrAfter; SPs of a session kept).
    pub session_ttl: Duration,
    /// Secret salt of persistent NameIDs (the OIDC pairwise salt).
    pub pairwise_salt: Vec<u8>,
    pub organization: String,
    pub metadata_valid_for: Duration,
    pub metadata_cache_for: Duration,
}

/// The stores the IdP works on.
#[derive(Clone, Debug)]
pub struct IdpStores {
    /// Releases and consents are recorded here before the answer that depends on them.
    pub audit: AuditLog,
    pub sps: Arc<dyn SpStore>,
    pub consents: Arc<dyn ConsentStore>,
    pub settings: Arc<dyn DisclosureSettingsStore>,
    pub doctors: Arc<dyn DoctorDirectory>,
    pub ephemeral: Arc<dyn EphemeralStore>,
}

/// An auto-submitting form to the SP (HTTP-POST binding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostForm {
    pub url: String,
    /// `SAMLResponse` or `SAMLRequest`.
    pub field: &'static str,
    /// Base64 of the message.
    pub message: String,
    pub relay_state: Option<String>,
}

/// What the consent page shows.
#[derive(Debug)]
pub struct SpConsentPrompt {
    pub pending: Secret,
    pub sp_name: String,
    pub entity_id: String,
    pub claims: Vec<String>,
}

/// What the SSO endpoint does next.
#[derive(Debug)]
pub enum SsoStep {
    /// Show an error page; never answer the SP (unknown SP, bad signature, ACS not in
    /// the metadata, replay, malformed message).
    Refused(String),
    /// Send the browser to the SP with this form.
    Post(PostForm),
    /// The doctor must log in (again); then continue with `pending`.
    Login { pending: Secret },
    /// The doctor must consent.
    Consent(SpConsentPrompt),
    /// The SP requires attributes that are withheld: show the doctor why, with `form`
    /// (the `RequestDenied` Response) to return to the SP.
    RequiredWithheld {
        refusal: RequiredWithheld,
        form: PostForm,
    },
    /// The pending request is unknown or expired.
    PendingExpired,
    /// A store is down or signing failed.
    Unavailable,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    request: AcceptedRequest,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// What the consent page showed (a pending request waiting for consent).
    #[serde(default)]
    shown: Option<Shown>,
}

/// The SPs a session logged in to, with the NameID each received (Single Logout).
pub type SessionParticipants = BTreeMap<String, Participant>;

/// What an SP of a session received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub name_id: String,
    pub name_id_format: String,
}

/// The SAML identity provider.
#[derive(Debug)]
pub struct IdentityProvider {
    settings: IdpSettings,
    stores: IdpStores,
    credentials: ArcSwap<Credentials>,
    release: Arc<dyn ReleasePolicy>,
    /// Parsed SPs by entity ID, with the stored metadata and settings they came from: the
    /// store is read on every request (so changes apply at once), the XML parsed only when
    /// it changed.
    /// Keyed by entity ID: the stored settings (JSON) and the SP parsed from them and its
    /// metadata (which the SP keeps).
    parsed: std::sync::Mutex<std::collections::HashMap<String, (String, ServiceProvider)>>,
}

/// The signing credential and every certificate to publish.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub signing: SigningCredential,
    /// Base64 DER of the certificates in the metadata (signing first).
    pub published: Vec<String>,
}

impl Credentials {
    /// `next`: base64 DER of the next key's certificate, published ahead of a rollover.
    pub fn new(signing: SigningCredential, next: Option<String>) -> Self {
        let mut published = vec![signing.certificate_base64()];
        published.extend(next);
        Self { signing, published }
    }
}

fn participants_key(sid: &str) -> String {
    format!("saml-session:{sid}")
}

impl IdentityProvider {
    pub fn new(
        settings: IdpSettings,
        stores: IdpStores,
        credentials: Credentials,
        release: Arc<dyn ReleasePolicy>,
    ) -> Self {
        Self {
            settings,
            stores,
            credentials: ArcSwap::from_pointee(credentials),
            release,
            parsed: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn settings(&self) -> &IdpSettings {
        &self.settings
    }

    pub fn stores(&self) -> &IdpStores {
        &self.stores
    }

    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// The signed metadata document.
    pub fn metadata(&self, now: OffsetDateTime) -> Result<String, SignError> {
        let credentials = self.credentials();
        let names: Vec<(String, Option<&'static str>)> = idp_core::oidc::release::SCOPE_CLAIMS
            .iter()
            .flat_map(|(_, claims)| claims.iter())
            .filter(|c| **c != idp_vocabulary::claim::VERIFIED_CLAIMS)
            .map(|c| attribute_name(c))
            .collect();
        idp_metadata(
            &credentials.signing,
            &IdpDescription {
                entity_id: &self.settings.entity_id,
                sso_url: &self.settings.sso_url,
                slo_url: &self.settings.slo_url,
                want_authn_requests_signed: self.settings.require_signed_requests,
                certificates: &credentials.published,
                valid_for: self.settings.metadata_valid_for,
                cache_for: self.settings.metadata_cache_for,
                attributes: &names,
                organization: &self.settings.organization,
                now,
            },
        )
    }

    /// The registered SP with this entity ID (its metadata parsed and still valid).
    pub async fn sp(
        &self,
        entity_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ServiceProvider>, StoreError> {
        let Some(record) = self.stores.sps.sp(entity_id).await? else {
            return Ok(None);
        };
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((settings, sp)) = parsed.get(entity_id)
            && sp.metadata == record.metadata
            && *settings == record.settings
        {
            return Ok(sp
                .valid_until
                .is_none_or(|until| until > now)
                .then(|| sp.clone()));
        }
        let sp = parse_record(&record, now);
        match &sp {
            Some(sp) => {
                parsed.insert(entity_id.to_owned(), (record.settings, sp.clone()));
            }
            None => {
                parsed.remove(entity_id);
            }
        }
        Ok(sp)
    }

    /// A new AuthnRequest.
    pub async fn sso(
        &self,
        received: Received<'_>,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> SsoStep {
        let incoming = match authn::read(received) {
            Ok(incoming) => incoming,
            Err(e) => return self.intake_failure(e, now),
        };
        let sp = match self.sp(incoming.issuer(), now).await {
            Ok(Some(sp)) => sp,
            Ok(None) => return SsoStep::Refused("the service provider is not registered".into()),
            Err(_) => return SsoStep::Unavailable,
        };
        let rules = IntakeRules {
            sso_urls: &self.settings.sso_urls,
            require_signed: self.settings.require_signed_requests,
            now,
            max_age: self.settings.request_max_age,
            skew: self.settings.skew,
        };
        let request = match authn::accept(incoming, &sp, &rules) {
            Ok(request) => request,
            Err(e) => return self.intake_failure(e, now),
        };
        // A request ID is answered once: a replayed request (same SP, same ID) is refused.
        match self
            .first_time("saml-request", &request.sp_entity_id, &request.id)
            .await
        {
            Ok(true) => {}
            Ok(false) => return SsoStep::Refused("this request was already answered".into()),
            Err(_) => return SsoStep::Unavailable,
        }
        self.decide(request, Some(&sp), now, session, now, false)
            .await
    }

    /// An unsolicited response for an SP that allows it (IdP-initiated login).
    pub async fn unsolicited(
        &self,
        entity_id: &str,
        relay_state: Option<&str>,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> SsoStep {
        let sp = match self.sp(entity_id, now).await {
            Ok(Some(sp)) if sp.settings.idp_initiated => sp,
            Ok(_) => {
                return SsoStep::Refused(
                    "the service provider does not accept IdP-initiated login".into(),
                );
            }
            Err(_) => return SsoStep::Unavailable,
        };
        let Some(acs) = sp.acs_for(None, None) else {
            return SsoStep::Refused("the service provider has no ACS".into());
        };
        let request = AcceptedRequest {
            id: String::new(),
            sp_entity_id: sp.entity_id.clone(),
            acs_url: acs.location.clone(),
            relay_state: relay_state
                .filter(|r| r.len() <= authn::MAX_RELAY_STATE)
                .map(str::to_owned),
            force_authn: false,
            is_passive: false,
            name_id_format: sp.settings.name_id_format,
            signed: false,
        };
        self.decide(request, Some(&sp), now, session, now, false)
            .await
    }

    /// Continues a pending request after the login.
    pub async fn resume(
        &self,
        pending: &str,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> SsoStep {
        match self.take_pending(pending).await {
            Ok(Some(p)) => {
                self.decide(p.request, None, p.created_at, session, now, false)
                    .await
            }
            Ok(None) => SsoStep::PendingExpired,
            Err(_) => SsoStep::Unavailable,
        }
    }

    /// The doctor's answer on the consent page.
    pub async fn answer_consent(
        &self,
        pending: &str,
        session: Option<&Session>,
        approved: bool,
        now: OffsetDateTime,
    ) -> SsoStep {
        let p = match self.take_pending(pending).await {
            Ok(Some(p)) => p,
            Ok(None) => return SsoStep::PendingExpired,
            Err(_) => return SsoStep::Unavailable,
        };
        let Some(session) = session else {
            return SsoStep::PendingExpired;
        };
        let sp = match self.sp(&p.request.sp_entity_id, now).await {
            Ok(Some(sp)) => sp,
            Ok(None) => return SsoStep::PendingExpired,
            Err(_) => return SsoStep::Unavailable,
        };
        if !approved {
            return self.refuse(
                &p.request,
                &SamlStatus::responder(Some(status::REQUEST_DENIED), "the doctor declined"),
                now,
            );
        }
        // The doctor consented to what the page showed.
        let Some(shown) = p.shown else {
            return SsoStep::PendingExpired;
        };
        let consent = Consent::given(session, &sp.entity_id, Vec::new(), shown, now);
        if self.stores.consents.put_consent(&consent).await.is_err()
            || self
                .stores
                .audit
                .record(AuditEvent::consent_given(&consent, Protocol::Saml))
                .await
                .is_err()
        {
            return SsoStep::Unavailable;
        }
        self.decide(p.request, Some(&sp), p.created_at, Some(session), now, true)
            .await
    }

    fn intake_failure(&self, error: IntakeError, now: OffsetDateTime) -> SsoStep {
        match error {
            IntakeError::Untrusted(reason) => SsoStep::Refused(reason),
            IntakeError::Status(answer) => {
                let StatusAnswer {
                    acs_url,
                    in_response_to,
                    relay_state,
                    status,
                } = *answer;
                self.status_form(&acs_url, Some(&in_response_to), relay_state, &status, now)
            }
        }
    }

    fn status_form(
        &self,
        acs_url: &str,
        in_response_to: Option<&str>,
        relay_state: Option<String>,
        status: &SamlStatus,
        now: OffsetDateTime,
    ) -> SsoStep {
        let credentials = self.credentials();
        match response::refusal(
            &credentials.signing,
            &self.settings.entity_id,
            acs_url,
            in_response_to,
            status,
            now,
        ) {
            Ok(xml) => SsoStep::Post(PostForm {
                url: acs_url.to_owned(),
                field: "SAMLResponse",
                message: base64::engine::general_purpose::STANDARD.encode(xml),
                relay_state,
            }),
            Err(_) => SsoStep::Unavailable,
        }
    }

    fn refuse(
        &self,
        request: &AcceptedRequest,
        status: &SamlStatus,
        now: OffsetDateTime,
    ) -> SsoStep {
        let irt = (!request.id.is_empty()).then_some(request.id.as_str());
        self.status_form(
            &request.acs_url,
            irt,
            request.relay_state.clone(),
            status,
            now,
        )
    }

    async fn take_pending(&self, pending: &str) -> Result<Option<Pending>, StoreError> {
        take_json(self.stores.ephemeral.as_ref(), "saml-authn", pending).await
    }

    async fn keep_pending(&self, pending: &Pending) -> Result<Secret, StoreError> {
        keep_json(
            self.stores.ephemeral.as_ref(),
            "saml-authn",
            pending,
            self.settings.pending_ttl,
        )
        .await
    }

    /// Whether a message (`kind`, sender, ID) is seen for the first time: IDs are
    /// remembered as long as a message may be presented, so each is answered once.
    async fn first_time(&self, kind: &str, sender: &str, id: &str) -> Result<bool, StoreError> {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{sender}\u{0}{id}").as_bytes(),
        );
        self.stores
            .ephemeral
            .put_if_absent(
                &format!("{kind}:{}", hex::encode(digest)),
                b"1",
                self.settings.request_max_age + self.settings.skew * 2,
            )
            .await
    }

    /// The NameID an SP sees for a doctor.
    fn name_id(&self, sp: &ServiceProvider, format: NameIdFormat, session: &Session) -> String {
        match format {
            NameIdFormat::Persistent => subject_for(
                &session.doctor_id,
                SubjectType::Pairwise,
                &sp.entity_id,
                &self.settings.pairwise_salt,
            ),
            NameIdFormat::Transient => new_id(),
        }
    }

    /// `sp`: the request's SP when the caller has it already (read from the store
    /// otherwise, once a session is there to use it).
    async fn decide(
        &self,
        request: AcceptedRequest,
        sp: Option<&ServiceProvider>,
        created_at: OffsetDateTime,
        session: Option<&Session>,
        now: OffsetDateTime,
        consent_answered: bool,
    ) -> SsoStep {
        let fresh = |s: &Session| !request.force_authn || s.auth_time >= created_at;
        let Some(session) = session.filter(|s| fresh(s)) else {
            if request.is_passive {
                return self.refuse(
                    &request,
                    &SamlStatus::responder(Some(status::NO_PASSIVE), "the doctor is not logged in"),
                    now,
                );
            }
            return match self
                .keep_pending(&Pending {
                    request,
                    created_at,
                    shown: None,
                })
                .await
            {
                Ok(pending) => SsoStep::Login { pending },
                Err(_) => SsoStep::Unavailable,
            };
        };
        let fetched;
        let sp = match sp {
            Some(sp) => sp,
            None => match self.sp(&request.sp_entity_id, now).await {
                Ok(Some(sp)) => {
                    fetched = sp;
                    &fetched
                }
                Ok(None) => {
                    return SsoStep::Refused("the service provider is not registered".into());
                }
                Err(_) => return SsoStep::Unavailable,
            },
        };
        let requested = sp.claims();
        let consent = if sp.settings.pre_approved {
            None
        } else {
            match self
                .stores
                .consents
                .consent(&session.doctor_id, &sp.entity_id)
                .await
            {
                Ok(consent) => consent,
                Err(_) => return SsoStep::Unavailable,
            }
        };
        let Ok(decision) = decide_at_login(
            self.release.as_ref(),
            self.stores.settings.as_ref(),
            sp.relying_party(),
            &requested,
            session,
            consent.as_ref(),
        )
        .await
        else {
            return SsoStep::Unavailable;
        };
        // Required attributes withheld by the policy or the doctor: a SAML refusal, not a
        // login that breaks later at the SP.
        let missing = decision.missing_required(&sp.required_claims);
        if !missing.is_empty() {
            let refusal = RequiredWithheld {
                relying_party: sp.display_name().to_owned(),
                claims: missing,
            };
            let answer = self.refuse(
                &request,
                &SamlStatus::responder(
                    Some(status::REQUEST_DENIED),
                    &refusal.description("required attributes"),
                ),
                now,
            );
            // A passive request may show nothing: the refusal goes back at once.
            return match answer {
                SsoStep::Post(form) if !request.is_passive => {
                    SsoStep::RequiredWithheld { refusal, form }
                }
                other => other,
            };
        }
        let must_ask = !sp.settings.pre_approved
            && !consent_answered
            && (consent.is_none() || !decision.askable().is_empty());
        if must_ask {
            if request.is_passive {
                return self.refuse(
                    &request,
                    &SamlStatus::responder(
                        Some(status::NO_PASSIVE),
                        "the doctor has not consented",
                    ),
                    now,
                );
            }
            let (sp_name, entity_id) = (sp.display_name().to_owned(), sp.entity_id.clone());
            return match self
                .keep_pending(&Pending {
                    request,
                    created_at,
                    shown: Some(decision.shown()),
                })
                .await
            {
                Ok(pending) => SsoStep::Consent(SpConsentPrompt {
                    pending,
                    sp_name,
                    entity_id,
                    claims: decision.consentable(),
                }),
                Err(_) => SsoStep::Unavailable,
            };
        }
        let profile = match self.stores.doctors.find(&session.doctor_id).await {
            Ok(Some(doctor)) => doctor.profile,
            Ok(None) => {
                return self.refuse(
                    &request,
                    &SamlStatus::responder(Some(status::AUTHN_FAILED), "the doctor is unknown"),
                    now,
                );
            }
            Err(_) => return SsoStep::Unavailable,
        };
        let values = released_values(
            &profile,
            Some(Verification {
                card: &session.card,
                auth_time: session.auth_time,
            }),
            &decision.released,
            idp_core::oidc::claims::japan_date(now),
        );
        let attributes = attributes(&values);
        // Nothing is released unrecorded: the record is durable before the Response exists.
        let event = AuditEvent::release(session, &sp.relying_party(), &decision);
        if self.stores.audit.record(event).await.is_err() {
            return SsoStep::Unavailable;
        }
        let name_id = self.name_id(sp, request.name_id_format, session);
        let format = request.name_id_format.uri();
        if self
            .remember_participant(&session.sid, &sp.entity_id, &name_id, format)
            .await
            .is_err()
        {
            return SsoStep::Unavailable;
        }
        let credentials = self.credentials();
        let in_response_to = (!request.id.is_empty()).then_some(request.id.as_str());
        let xml = response::success(
            &credentials.signing,
            &Assertion {
                issuer: &self.settings.entity_id,
                audience: &sp.entity_id,
                acs_url: &request.acs_url,
                in_response_to,
                name_id: &name_id,
                name_id_format: format,
                session_index: &session.sid,
                authn_instant: session.auth_time,
                session_not_on_or_after: Some(session.auth_time + self.settings.session_ttl),
                authn_context_class: AUTHN_CONTEXT_SMARTCARD_PKI,
                attributes: &attributes,
                now,
                lifetime: self.settings.assertion_lifetime,
                skew: self.settings.skew,
                sign_response: sp.settings.sign_response,
            },
        );
        match xml {
            Ok(xml) => SsoStep::Post(PostForm {
                url: request.acs_url.clone(),
                field: "SAMLResponse",
                message: base64::engine::general_purpose::STANDARD.encode(xml),
                relay_state: request.relay_state.clone(),
            }),
            Err(e) => {
                tracing::error!(error = %e, "signing a SAML response failed");
                SsoStep::Unavailable
            }
        }
    }

    /// Remembers that an SP received an assertion in the session `sid` (Single Logout).
    async fn remember_participant(
        &self,
        sid: &str,
        entity_id: &str,
        name_id: &str,
        format: &str,
    ) -> Result<(), StoreError> {
        let key = participants_key(sid);
        let mut participants = self.participants(sid).await?;
        let participant = Participant {
            name_id: name_id.to_owned(),
            name_id_format: format.to_owned(),
        };
        if participants.get(entity_id) != Some(&participant) {
            participants.insert(entity_id.to_owned(), participant);
            let value = serde_json::to_vec(&participants)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.stores
                .ephemeral
                .put(&key, &value, self.settings.session_ttl)
                .await?;
        }
        Ok(())
    }

    /// The SPs of a session.
    pub async fn participants(&self, sid: &str) -> Result<SessionParticipants, StoreError> {
        Ok(
            match self.stores.ephemeral.get(&participants_key(sid)).await? {
                Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                None => SessionParticipants::new(),
            },
        )
    }
}

/// A message the IdP sends through the browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// HTTP-Redirect: the whole URL, query signed.
    Redirect(String),
    /// HTTP-POST: an auto-submitting form.
    Post(PostForm),
}

/// A back-channel (SOAP) LogoutRequest to deliver to an SP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoapLogout {
    pub entity_id: String,
    pub url: String,
    /// The SOAP envelope holding the signed LogoutRequest.
    pub envelope: String,
}

/// What the SLO endpoint does with an SP's LogoutRequest.
#[derive(Debug)]
pub enum SloStep {
    /// Show an error page; answer nobody (unknown SP, unsigned or badly signed, replayed,
    /// malformed).
    Refused(String),
    /// End the session `sid` when there is one (and propagate to its other relying
    /// parties), then send `answer` to the SP.
    Logout {
        sid: Option<String>,
        /// The SP that asked (it is not notified again).
        sp: String,
        answer: Outbound,
    },
    Unavailable,
}

impl IdentityProvider {
    /// An SP's LogoutRequest (front channel, either binding). It must be signed by the SP.
    pub async fn slo(
        &self,
        received: Received<'_>,
        browser_session: Option<&Session>,
        now: OffsetDateTime,
    ) -> SloStep {
        let refused = |reason: &str| SloStep::Refused(reason.to_owned());
        let decoded = match authn::decode_message(received, "SAMLRequest") {
            Ok(decoded) => decoded,
            Err(e) => return SloStep::Refused(e.to_string()),
        };
        let Ok(unverified) = crate::logout::parse_request(&decoded.xml) else {
            return refused("the message is not a LogoutRequest");
        };
        let sp = match self.sp(&unverified.issuer, now).await {
            Ok(Some(sp)) => sp,
            Ok(None) => return refused("the service provider is not registered"),
            Err(_) => return SloStep::Unavailable,
        };
        let request = match (&decoded.query_signature, decoded.binding) {
            (Some(signature), _) => {
                if !sp.signing_certificates.iter().any(|c| signature.verify(c)) {
                    return refused("the signature does not verify");
                }
                unverified
            }
            (None, authn::Binding::Post) => {
                let Ok((root_id, signed)) =
                    crate::crypto::verify_enveloped(&decoded.xml, &sp.signing_certificates)
                else {
                    return refused("the LogoutRequest is not signed by the service provider");
                };
                match crate::logout::parse_request(&signed) {
                    Ok(request) if request.id == root_id => request,
                    _ => return refused("the signed element is not the LogoutRequest"),
                }
            }
            (None, authn::Binding::Redirect) => {
                return refused("the LogoutRequest is not signed by the service provider");
            }
        };
        if request.issuer != sp.entity_id || request.version != "2.0" {
            return refused("the LogoutRequest's Issuer or Version is wrong");
        }
        if request
            .destination
            .as_ref()
            .is_some_and(|d| *d != self.settings.slo_url)
        {
            return refused("the Destination is not this IdP's SLO endpoint");
        }
        let fresh = request.issue_instant.is_some_and(|t| {
            t <= now + self.settings.skew
                && t >= now - self.settings.request_max_age - self.settings.skew
        });
        let expired = request
            .not_on_or_after
            .is_some_and(|t| t + self.settings.skew <= now);
        if !fresh || expired {
            return refused("the LogoutRequest is too old or in the future");
        }
        match self
            .first_time("saml-logout", &request.issuer, &request.id)
            .await
        {
            Ok(true) => {}
            Ok(false) => return refused("this LogoutRequest was already answered"),
            Err(_) => return SloStep::Unavailable,
        }
        // The session: named by SessionIndex, else the browser's; it must be one in
        // which this SP received exactly this NameID.
        let mut candidates = request.session_indexes.clone();
        if candidates.is_empty()
            && let Some(s) = browser_session
        {
            candidates.push(s.sid.clone());
        }
        let mut sid = None;
        for candidate in candidates {
            match self.participants(&candidate).await {
                Ok(p)
                    if p.get(&sp.entity_id)
                        .is_some_and(|x| x.name_id == request.name_id) =>
                {
                    sid = Some(candidate);
                    break;
                }
                Ok(_) => {}
                Err(_) => return SloStep::Unavailable,
            }
        }
        let Some(endpoint) = sp.slo_endpoint() else {
            return refused("the service provider has no SingleLogoutService for the answer");
        };
        let destination = endpoint
            .response_location
            .clone()
            .unwrap_or_else(|| endpoint.location.clone());
        let credentials = self.credentials();
        let status = SamlStatus::new(status::SUCCESS, None, "");
        let answer = match endpoint.binding {
            crate::sp::SloBinding::Redirect => crate::logout::response(
                &credentials.signing,
                &self.settings.entity_id,
                &destination,
                &request.id,
                &status,
                now,
                crate::logout::Signing::QueryString,
            )
            .and_then(|xml| {
                crate::redirect::encode(
                    "SAMLResponse",
                    &xml,
                    decoded.relay_state.as_deref(),
                    &credentials.signing,
                )
            })
            .map(|query| {
                let sep = if destination.contains('?') { '&' } else { '?' };
                Outbound::Redirect(format!("{destination}{sep}{query}"))
            }),
            _ => crate::logout::response(
                &credentials.signing,
                &self.settings.entity_id,
                &destination,
                &request.id,
                &status,
                now,
                crate::logout::Signing::Enveloped,
            )
            .map(|xml| {
                Outbound::Post(PostForm {
                    url: destination.clone(),
                    field: "SAMLResponse",
                    message: base64::engine::general_purpose::STANDARD.encode(xml),
                    relay_state: decoded.relay_state.clone(),
                })
            }),
        };
        match answer {
            Ok(answer) => SloStep::Logout {
                sid,
                sp: sp.entity_id.clone(),
                answer,
            },
            Err(e) => {
                tracing::error!(error = %e, "signing a LogoutResponse failed");
                SloStep::Unavailable
            }
        }
    }

    /// The back-channel LogoutRequests for the SPs of an ending session (all but
    /// `except`, the SP that asked), for those whose metadata has a SOAP endpoint. The
    /// session's SP list is consumed.
    pub async fn logout_notifications(
        &self,
        session: &Session,
        except: Option<&str>,
        now: OffsetDateTime,
    ) -> Vec<SoapLogout> {
        let participants: SessionParticipants = match self
            .stores
            .ephemeral
            .take(&participants_key(&session.sid))
            .await
        {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => return Vec::new(),
        };
        let credentials = self.credentials();
        let mut out = Vec::new();
        for (entity_id, participant) in participants {
            if Some(entity_id.as_str()) == except {
                continue;
            }
            let Ok(Some(sp)) = self.sp(&entity_id, now).await else {
                continue;
            };
            let Some(endpoint) = sp.soap_slo_endpoint() else {
                continue;
            };
            let request = crate::logout::request(
                &credentials.signing,
                &crate::logout::LogoutRequestOut {
                    issuer: &self.settings.entity_id,
                    destination: &endpoint.location,
                    name_id: &participant.name_id,
                    name_id_format: &participant.name_id_format,
                    sp_name_qualifier: &entity_id,
                    session_index: &session.sid,
                    now,
                    lifetime: self.settings.assertion_lifetime,
                },
                crate::logout::Signing::Enveloped,
            );
            match request {
                Ok((_, xml)) => out.push(SoapLogout {
                    entity_id: entity_id.clone(),
                    url: endpoint.location.clone(),
                    envelope: crate::logout::soap_envelope(&xml),
                }),
                Err(e) => tracing::error!(error = %e, "signing a LogoutRequest failed"),
            }
        }
        out
    }
}

/// Parses a stored SP; a record that no longer parses (expired metadata) is treated as
/// absent, and logged.
pub fn parse_record(record: &SpRecord, now: OffsetDateTime) -> Option<ServiceProvider> {
    let settings: SpSettings = match serde_json::from_str(&record.settings) {
        Ok(settings) => settings,
        Err(e) => {
            tracing::warn!(sp = %record.entity_id, error = %e, "stored SP settings do not parse");
            return None;
        }
    };
    match ServiceProvider::from_metadata(&record.metadata, settings, now) {
        Ok(sp) if sp.entity_id == record.entity_id => Some(sp),
        Ok(_) => {
            tracing::warn!(sp = %record.entity_id, "stored metadata names another entity");
            None
        }
        Err(e) => {
            tracing::warn!(sp = %record.entity_id, error = %e, "stored SP metadata is not usable");
            None
        }
    }
}
