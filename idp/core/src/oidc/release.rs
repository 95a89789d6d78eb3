//! The release decision: which claims a relying party receives.
//!
//! Until the disclosure engine lands, released = requested ∩ consented. Handlers only see
//! [`ReleasePolicy`]; the disclosure engine replaces [`ConsentOnly`] without touching them.

use std::collections::BTreeSet;
use std::fmt::Debug;

use idp_vocabulary::{claim, scope};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::claims::claims_for_scopes;
use super::client::ClientRegistration;
use crate::doctor::DoctorProfile;
use crate::session::CardSummary;
use crate::store::Consent;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// The doctor has not consented to it for this relying party.
    NoConsent,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoConsent => "no_consent",
        }
    }
}

/// The protocol a relying party speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Oidc,
    Saml,
}

/// The relying party a release is for: an OIDC client or a SAML service provider.
#[derive(Clone, Copy, Debug)]
pub struct RelyingParty<'a> {
    /// The client ID or the SP's entity ID (consents are kept under it).
    pub id: &'a str,
    pub protocol: Protocol,
    /// The organisation agreed on the doctors' behalf: no consent needed.
    pub pre_approved: bool,
}

impl<'a> RelyingParty<'a> {
    pub fn client(client: &'a ClientRegistration) -> Self {
        Self {
            id: &client.client_id,
            protocol: Protocol::Oidc,
            pre_approved: client.pre_approved,
        }
    }
}

/// What a relying party is asking for, with what the doctor has consented to.
#[derive(Debug)]
pub struct ReleaseRequest<'a> {
    pub relying_party: RelyingParty<'a>,
    pub requested: &'a BTreeSet<String>,
    pub consent: Option<&'a Consent>,
}

/// The decision: released claim names, and each withheld one with its reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseDecision {
    pub released: BTreeSet<String>,
    pub withheld: Vec<(String, Withheld)>,
}

/// Decides releases.
pub trait ReleasePolicy: Send + Sync + Debug {
    fn decide(&self, request: &ReleaseRequest<'_>) -> ReleaseDecision;
}

/// released = requested ∩ consented; a pre-approved relying party has consent for everything it
/// may ask for.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsentOnly;

impl ReleasePolicy for ConsentOnly {
    fn decide(&self, request: &ReleaseRequest<'_>) -> ReleaseDecision {
        let mut decision = ReleaseDecision::default();
        for name in request.requested {
            let consented = request.relying_party.pre_approved
                || request
                    .consent
                    .is_some_and(|c| c.claims.iter().any(|x| x == name));
            if consented {
                decision.released.insert(name.clone());
            } else {
                decision.withheld.push((name.clone(), Withheld::NoConsent));
            }
        }
        decision
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
) -> Map<String, Value> {
    let all_scopes: Vec<String> = SCOPE_CLAIMS.iter().map(|(s, _)| (*s).to_owned()).collect();
    let card = verification.map(|v| v.card);
    let mut out: Map<String, Value> = claims_for_scopes(profile, card, &all_scopes)
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
    use crate::doctor::DoctorId;
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
    fn release_is_requested_and_consented() {
        let requested: BTreeSet<String> = ["name", "hpki_role"].map(String::from).into();
        let consent = Consent {
            doctor_id: DoctorId::from_stored("d".into()),
            client_id: "rp".into(),
            scopes: vec![],
            claims: vec!["hpki_role".into()],
            granted_at: OffsetDateTime::UNIX_EPOCH,
        };
        let c = client(false);
        let d = ConsentOnly.decide(&ReleaseRequest {
            relying_party: RelyingParty::client(&c),
            requested: &requested,
            consent: Some(&consent),
        });
        assert_eq!(d.released, ["hpki_role".to_owned()].into());
        assert_eq!(d.withheld, vec![("name".to_owned(), Withheld::NoConsent)]);
        let pre = client(true);
        let d = ConsentOnly.decide(&ReleaseRequest {
            relying_party: RelyingParty::client(&pre),
            requested: &requested,
            consent: None,
        });
        assert_eq!(d.released, requested);
    }
}
