//! The release decision: which claims a relying party receives.
//!
//! Handlers only see [`ReleasePolicy`]; the implementation is
//! [`crate::disclosure::DisclosureEngine`] (requested ∩ policy ∩ doctor's settings ∩
//! consent).

use std::collections::BTreeSet;
use std::fmt::Debug;

use idp_vocabulary::{claim, scope};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::claims::claims_for_scopes;
use super::client::ClientRegistration;
use crate::audit::AuditEvent;
use crate::disclosure::{Audience, DisclosureSettings, Item};
use crate::doctor::DoctorProfile;
use crate::session::CardSummary;
use crate::session::Session;
use crate::store::{Consent, DisclosureSettingsStore, StoreError};

/// The claims (base names, without language tags) each scope stands for.
pub const SCOPE_CLAIMS: &[(&str, &[&str])] = &[
    (
        scope::PROFILE,
        &[
            claim::NAME,
            claim::FAMILY_NAME,
            claim::GIVEN_NAME,
            claim::GENDER,
            claim::BIRTHDATE,
            claim::AGE,
        ],
    ),
    (scope::EMAIL, &[claim::EMAIL]),
    (scope::ADDRESS, &[claim::ADDRESS]),
    (
        scope::HPKI,
        &[claim::HPKI_ROLE, claim::HPKI_ISSUER, claim::VERIFIED_CLAIMS],
    ),
    (
        scope::JMA,
        &[
            claim::JMA_MEMBER,
            claim::JMA_MEMBER_ID,
            claim::MEDICAL_ASSOCIATION,
        ],
    ),
    (
        scope::DOCTOR_REGISTRATION,
        &[
            claim::DOCTOR_REGISTRATION_NUMBER,
            claim::DOCTOR_REGISTRATION_DATE,
        ],
    ),
];

/// Claims released only when asked for by name in the `claims` parameter, not by scope.
const ON_REQUEST_ONLY: &[&str] = &[claim::VERIFIED_CLAIMS];

fn scope_of(claim_name: &str) -> Option<&'static str> {
    SCOPE_CLAIMS
        .iter()
        .find(|(_, claims)| claims.contains(&claim_name))
        .map(|(scope, _)| *scope)
}

/// The claim names named in a `claims` request parameter (OIDC Core §5.5), either member.
pub fn claims_parameter_names(claims: Option<&Value>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for member in ["userinfo", "id_token"] {
        if let Some(Value::Object(map)) = claims.and_then(|c| c.get(member)) {
            names.extend(map.keys().map(|k| base_name(k).to_owned()));
        }
    }
    names
}

/// The claims marked `"essential": true` in a `claims` request parameter (OIDC Core
/// §5.5.1), either member, by base name.
pub fn essential_claims(claims: Option<&Value>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for member in ["userinfo", "id_token"] {
        if let Some(Value::Object(map)) = claims.and_then(|c| c.get(member)) {
            names.extend(
                map.iter()
                    .filter(|(_, v)| v.get("essential") == Some(&Value::Bool(true)))
                    .map(|(k, _)| base_name(k).to_owned()),
            );
        }
    }
    names
}

/// A claim name without its language tag (`family_name#ja-Kana-JP` → `family_name`).
pub fn base_name(name: &str) -> &str {
    name.split_once('#').map_or(name, |(base, _)| base)
}

/// The claim names a request asks for: those of its scopes, plus those named in the
/// `claims` parameter that belong to a scope the client may use.
pub fn requested_claims(
    client: &ClientRegistration,
    scopes: &[String],
    claims: Option<&Value>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (scope, names) in SCOPE_CLAIMS {
        if scopes.iter().any(|s| s == scope) {
            out.extend(
                names
                    .iter()
                    .filter(|n| !ON_REQUEST_ONLY.contains(n))
                    .map(|n| (*n).to_owned()),
            );
        }
    }
    for name in claims_parameter_names(claims) {
        if let Some(scope) = scope_of(&name)
            && client.allowed_scopes.iter().any(|s| s == scope)
        {
            out.insert(name);
        }
    }
    out
}

/// Why a requested claim was not released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// Forbidden by these administrators' policies (`@id`s).
    PolicyForbids(Vec<String>),
    /// No administrators' policy permits it for this relying party.
    NotPermitted,
    /// A policy failed to evaluate (withheld: fail closed).
    PolicyError(String),
    /// Not a claim of the vocabulary.
    UnknownClaim,
    /// The doctor's own disclosure setting withholds this item for this audience.
    DoctorSetting(Item),
    /// The doctor has not consented to it for this relying party.
    NoConsent,
}

impl Withheld {
    /// A short code (logs, audit records, `idp explain`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PolicyForbids(_) => "policy_forbids",
            Self::NotPermitted => "not_permitted",
            Self::PolicyError(_) => "policy_error",
            Self::UnknownClaim => "unknown_claim",
            Self::DoctorSetting(_) => "doctor_setting",
            Self::NoConsent => "no_consent",
        }
    }
}

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PolicyForbids(ids) => write!(f, "withheld: policy forbid {}", ids.join(", ")),
            Self::NotPermitted => f.write_str("withheld: no policy permits it"),
            Self::PolicyError(e) => write!(f, "withheld: a policy failed to evaluate ({e})"),
            Self::UnknownClaim => f.write_str("withheld: not a claim of the vocabulary"),
            Self::DoctorSetting(item) => write!(f, "withheld: doctor setting ({item})"),
            Self::NoConsent => f.write_str("withheld: not consented"),
        }
    }
}

/// A login refused because the relying party requires claims that are withheld: the
/// doctor is shown why (and what could change it) before the protocol's error goes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequiredWithheld {
    /// The relying party's display name.
    pub relying_party: String,
    /// The required claims withheld, with their reasons.
    pub claims: Vec<(String, Withheld)>,
}

impl RequiredWithheld {
    /// The protocol error's description: each claim with its reason.
    pub fn description(&self, what: &str) -> String {
        let list: Vec<String> = self
            .claims
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        format!("{what} are withheld: {}", list.join("; "))
    }
}

/// The protocol a relying party speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Oidc,
    Saml,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Saml => "saml",
        }
    }
}

/// The relying party a release is for: an OIDC client or a SAML service provider.
#[derive(Clone, Copy, Debug)]
pub struct RelyingParty<'a> {
    /// The client ID or the SP's entity ID (consents are kept under it).
    pub id: &'a str,
    pub protocol: Protocol,
    /// The organisation agreed on the doctors' behalf: no consent needed.
    pub pre_approved: bool,
    /// The kind of organisation (the policy's and the doctor's settings' unit).
    pub audience: Audience,
}

impl<'a> RelyingParty<'a> {
    pub fn client(client: &'a ClientRegistration) -> Self {
        Self {
            id: &client.client_id,
            protocol: Protocol::Oidc,
            pre_approved: client.pre_approved,
            audience: client.audience,
        }
    }
}

/// What a relying party is asking for, with what is known of the doctor and the login.
#[derive(Debug)]
pub struct ReleaseRequest<'a> {
    pub relying_party: RelyingParty<'a>,
    pub requested: &'a BTreeSet<String>,
    pub consent: Option<&'a Consent>,
    /// The doctor's disclosure settings.
    pub settings: &'a DisclosureSettings,
    /// The login's `acr`.
    pub acr: &'a str,
    /// The purpose the relying party stated ("" when none).
    pub purpose: &'a str,
}

/// The decision: released claim names, and each withheld one with its reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseDecision {
    pub released: BTreeSet<String>,
    pub withheld: Vec<(String, Withheld)>,
    /// The version of the policy that decided.
    pub policy_version: String,
}

impl ReleaseDecision {
    /// The claims withheld only because the doctor has not consented: what the consent
    /// page asks for.
    pub fn askable(&self) -> BTreeSet<String> {
        self.withheld
            .iter()
            .filter(|(_, why)| *why == Withheld::NoConsent)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The required claims this decision withholds for a reason consent cannot change
    /// (policy, doctor's setting, unknown claim): a relying party that requires them is
    /// refused rather than given a partial login. With the reasons.
    pub fn missing_required(&self, required: &BTreeSet<String>) -> Vec<(String, Withheld)> {
        self.withheld
            .iter()
            .filter(|(name, why)| required.contains(name) && *why != Withheld::NoConsent)
            .cloned()
            .collect()
    }

    /// What the relying party receives once the doctor consents: the consent page's
    /// list and the consent's claim set (sorted).
    pub fn consentable(&self) -> Vec<String> {
        let mut out: BTreeSet<String> = self.released.clone();
        out.extend(self.askable());
        out.into_iter().collect()
    }
}

/// Decides releases.
pub trait ReleasePolicy: Send + Sync + Debug {
    fn decide(&self, request: &ReleaseRequest<'_>) -> ReleaseDecision;
}

/// The release decision for `relying_party` at a login (OIDC and SAML alike): the
/// doctor's settings are read, the login's `acr` is the session's.
pub async fn decide_at_login(
    policy: &dyn ReleasePolicy,
    settings: &dyn DisclosureSettingsStore,
    relying_party: RelyingParty<'_>,
    requested: &BTreeSet<String>,
    session: &Session,
    consent: Option<&Consent>,
) -> Result<ReleaseDecision, StoreError> {
    let settings = settings.settings_of(&session.doctor_id).await?;
    Ok(policy.decide(&ReleaseRequest {
        relying_party,
        requested,
        consent,
        settings: &settings,
        acr: &session.acr,
        purpose: "",
    }))
}

impl AuditEvent {
    /// A release to `relying_party` at a login: the claim names released and withheld
    /// with their reasons, the policy version and the login's `acr`; never values.
    pub fn release(
        session: &Session,
        relying_party: &RelyingParty<'_>,
        decision: &ReleaseDecision,
    ) -> Self {
        let withheld: Vec<Value> = decision
            .withheld
            .iter()
            .map(|(name, why)| json!({"claim": name, "reason": why.as_str()}))
            .collect();
        Self {
            kind: "release".into(),
            actor: session.doctor_id.as_str().to_owned(),
            doctor: Some(session.doctor_id.as_str().to_owned()),
            relying_party: Some(relying_party.id.to_owned()),
            detail: json!({
                "protocol": relying_party.protocol.as_str(),
                "audience": relying_party.audience.as_str(),
                "claims": decision.released,
                "withheld": withheld,
                "policy_version": decision.policy_version,
                "acr": session.acr,
                "sid": session.sid,
            }),
        }
    }

    /// Tokens issued at the token endpoint (`grant_type` `authorization_code` or
    /// `refresh_token`): what they carry, never the tokens.
    pub fn tokens_issued(
        authorization: &super::grant::Authorization,
        grant_type: &str,
        refresh_token: bool,
        certificate_bound: bool,
    ) -> Self {
        Self {
            kind: "token.issued".into(),
            actor: authorization.client_id.clone(),
            doctor: Some(authorization.doctor_id.as_str().to_owned()),
            relying_party: Some(authorization.client_id.clone()),
            detail: json!({
                "grant_type": grant_type,
                "scopes": authorization.scopes,
                "claims": authorization.released,
                "refresh_token": refresh_token,
                "certificate_bound": certificate_bound,
                "sid": authorization.sid,
            }),
        }
    }

    /// A consent given on the consent page.
    pub fn consent_given(consent: &Consent, protocol: Protocol) -> Self {
        Self {
            kind: "consent.given".into(),
            actor: consent.doctor_id.as_str().to_owned(),
            doctor: Some(consent.doctor_id.as_str().to_owned()),
            relying_party: Some(consent.client_id.clone()),
            detail: json!({
                "protocol": protocol.as_str(),
                "claims": consent.claims,
                "scopes": consent.scopes,
                "policy_version": consent.policy_version,
            }),
        }
    }
}

/// What a consent page showed: the claims the relying party receives once the doctor
/// consents, under this policy version. Kept with the pending request, so that the consent
/// stored is exactly what the doctor read, whatever changes before the answer (the release
/// is decided again then, and is never wider than policy and settings allow).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    pub claims: Vec<String>,
    pub policy_version: String,
}

impl ReleaseDecision {
    /// What the consent page shows for this decision.
    pub fn shown(&self) -> Shown {
        Shown {
            claims: self.consentable(),
            policy_version: self.policy_version.clone(),
        }
    }
}

impl Consent {
    /// The consent a doctor gives on the consent page to what it `shown`.
    pub fn given(
        session: &Session,
        relying_party_id: &str,
        scopes: Vec<String>,
        shown: Shown,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            doctor_id: session.doctor_id.clone(),
            client_id: relying_party_id.to_owned(),
            scopes,
            claims: shown.claims,
            granted_at: now,
            policy_version: Some(shown.policy_version),
        }
    }
}

/// Facts about the login that `verified_claims` states as evidence.
#[derive(Clone, Copy, Debug)]
pub struct Verification<'a> {
    pub card: &'a CardSummary,
    pub auth_time: OffsetDateTime,
}

/// The values of the released claims (language-tagged variants included) for a doctor.
pub fn released_values(
    profile: &DoctorProfile,
    verification: Option<Verification<'_>>,
    released: &BTreeSet<String>,
    today: time::Date,
) -> Map<String, Value> {
    let all_scopes: Vec<String> = SCOPE_CLAIMS.iter().map(|(s, _)| (*s).to_owned()).collect();
    let card = verification.map(|v| v.card);
    let mut out: Map<String, Value> = claims_for_scopes(profile, card, &all_scopes, today)
        .into_iter()
        .filter(|(name, _)| released.contains(base_name(name)))
        .collect();
    if released.contains(claim::VERIFIED_CLAIMS)
        && let Some(v) = verification
    {
        out.insert(
            claim::VERIFIED_CLAIMS.to_owned(),
            verified_claims(profile, v),
        );
    }
    out
}

/// Trust framework identifier for the Japanese HPKI.
pub const TRUST_FRAMEWORK_HPKI: &str = "jp_hpki";

/// `verified_claims` (OpenID Connect for Identity Assurance 1.0): the name and the HPKI
/// role, verified under the HPKI trust framework by the card's certificate.
fn verified_claims(profile: &DoctorProfile, v: Verification<'_>) -> Value {
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let revocation: Vec<Value> = v
        .card
        .revocation
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    let mut claims = Map::new();
    claims.insert(claim::FAMILY_NAME.into(), json!(profile.family_name));
    claims.insert(claim::GIVEN_NAME.into(), json!(profile.given_name));
    if let Some(role) = v.card.roles.first() {
        claims.insert(claim::HPKI_ROLE.into(), json!(role));
    }
    json!({
        "verification": {
            "trust_framework": TRUST_FRAMEWORK_HPKI,
            "time": rfc3339(v.auth_time),
            "evidence": [{
                "type": "electronic_signature",
                "signature_type": "hpki_authentication_certificate",
                "issuer": v.card.issuer,
                "serial_number": v.card.serial,
                "created_at": rfc3339(v.auth_time),
                "certificate_not_before": rfc3339(v.card.not_before),
                "certificate_not_after": rfc3339(v.card.not_after),
                "revocation_checked": revocation,
            }],
        },
        "claims": claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::client::TokenEndpointAuthMethod;

    fn client(pre_approved: bool) -> ClientRegistration {
        ClientRegistration {
            allowed_scopes: ["openid", "profile", "hpki"].map(String::from).to_vec(),
            pre_approved,
            ..ClientRegistration::new("rp", "RP", TokenEndpointAuthMethod::ClientSecretBasic)
        }
    }

    #[test]
    fn requested_claims_come_from_scopes_and_the_claims_parameter() {
        let scopes = ["openid", "profile"].map(String::from).to_vec();
        let claims = json!({"id_token": {"hpki_role": {"essential": true}, "email": null},
                            "userinfo": {"verified_claims": null, "family_name#ja-Kana-JP": null}});
        let requested = requested_claims(&client(false), &scopes, Some(&claims));
        assert!(requested.contains("name") && requested.contains("hpki_role"));
        assert!(requested.contains("verified_claims"));
        // email's scope is not allowed for this client.
        assert!(!requested.contains("email"));
        // verified_claims only by name.
        let by_scope = requested_claims(&client(false), &["hpki".into()], None);
        assert!(!by_scope.contains("verified_claims"));
    }

    #[test]
    fn essential_claims_and_missing_required_ones() {
        let claims = json!({"id_token": {"email": {"essential": true}, "name": null},
                            "userinfo": {"family_name#ja-Kana-JP": {"essential": true},
                                         "gender": {"essential": false}}});
        let essential = essential_claims(Some(&claims));
        assert_eq!(
            essential,
            ["email".to_owned(), "family_name".to_owned()].into()
        );
        let decision = ReleaseDecision {
            released: ["name".to_owned()].into(),
            withheld: vec![
                ("email".into(), Withheld::NotPermitted),
                ("family_name".into(), Withheld::NoConsent),
            ],
            policy_version: String::new(),
        };
        // Consent can still be asked for family_name; email is withheld for good.
        let missing = RequiredWithheld {
            relying_party: "RP".into(),
            claims: decision.missing_required(&essential),
        };
        assert_eq!(
            missing.claims,
            [("email".to_owned(), Withheld::NotPermitted)]
        );
        assert_eq!(
            missing.description("essential claims"),
            "essential claims are withheld: email (withheld: no policy permits it)"
        );
    }
}
