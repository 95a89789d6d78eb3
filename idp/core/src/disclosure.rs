//! The release decision shared by OpenID Connect and SAML (docs/DISCLOSURE.md):
//!
//! released = requested ∩ permitted by the administrators' Cedar policy ∩ allowed by the
//! doctor's own disclosure settings ∩ consented,
//!
//! with the reason for every withheld claim. The policy sees the doctor's setting, the
//! consent, the login's `acr` and the stated purpose in its context, so it can also
//! depend on them. [`DisclosureEngine`] holds the policy behind an `ArcSwap`: a reload
//! replaces it whole or not at all.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

pub use idp_policies::{
    Audience, CLAIMS, ClaimContext, ClaimGroup, DisclosurePolicy, PolicyError, Recipient, Verdict,
    group_of,
};
use idp_vocabulary::claim;

use crate::oidc::release::{ReleaseDecision, ReleasePolicy, ReleaseRequest, Withheld};

/// An item of the doctor's disclosure settings (the 情報開示設定 screen): one or more
/// claims the doctor allows or withholds per audience. The qualification itself (HPKI
/// role and issuer) is not an item: it is what a card login is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// 氏名: the names (kanji, kana, Latin), and `verified_claims`, which states them.
    Name,
    /// 性別
    Gender,
    /// 生年月日
    Birthdate,
    /// 年齢
    Age,
    /// 医師登録番号
    DoctorRegistrationNumber,
    /// 医師登録年月日
    DoctorRegistrationDate,
    /// 日医会員ID: membership and member ID.
    JmaMemberId,
    /// 所属医師会
    MedicalAssociation,
    /// 住所
    Address,
    /// メールアドレス
    Email,
}

impl Item {
    pub const ALL: [Self; 10] = [
        Self::Name,
        Self::Gender,
        Self::Birthdate,
        Self::Age,
        Self::DoctorRegistrationNumber,
        Self::DoctorRegistrationDate,
        Self::JmaMemberId,
        Self::MedicalAssociation,
        Self::Address,
        Self::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Gender => "gender",
            Self::Birthdate => "birthdate",
            Self::Age => "age",
            Self::DoctorRegistrationNumber => "doctor_registration_number",
            Self::DoctorRegistrationDate => "doctor_registration_date",
            Self::JmaMemberId => "jma_member_id",
            Self::MedicalAssociation => "medical_association",
            Self::Address => "address",
            Self::Email => "email",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == value)
    }

    /// The item's label on the doctor's pages: Japanese, English.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Self::Name => ("氏名", "Name"),
            Self::Gender => ("性別", "Gender"),
            Self::Birthdate => ("生年月日", "Date of birth"),
            Self::Age => ("年齢", "Age"),
            Self::DoctorRegistrationNumber => ("医師登録番号", "Doctor registration number"),
            Self::DoctorRegistrationDate => ("医師登録年月日", "Doctor registration date"),
            Self::JmaMemberId => ("日医会員ID", "JMA member ID"),
            Self::MedicalAssociation => ("所属医師会", "Medical association"),
            Self::Address => ("住所", "Address"),
            Self::Email => ("メールアドレス", "Email address"),
        }
    }

    /// Whether the item is allowed for `audience` when the doctor has not said: everything
    /// to regional networks and the JMA's services; only the name to third parties.
    pub fn default_allowed(self, audience: Audience) -> bool {
        match audience {
            Audience::RegionalNetwork | Audience::JmaService => true,
            Audience::ThirdParty => self == Self::Name,
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The item a claim (base name) belongs to; `None` for claims the doctor does not set
/// (the HPKI role and issuer).
pub fn item_of(claim_name: &str) -> Option<Item> {
    Some(match claim_name {
        claim::NAME | claim::FAMILY_NAME | claim::GIVEN_NAME | claim::VERIFIED_CLAIMS => Item::Name,
        claim::GENDER => Item::Gender,
        claim::BIRTHDATE => Item::Birthdate,
        claim::AGE => Item::Age,
        claim::DOCTOR_REGISTRATION_NUMBER => Item::DoctorRegistrationNumber,
        claim::DOCTOR_REGISTRATION_DATE => Item::DoctorRegistrationDate,
        claim::JMA_MEMBER | claim::JMA_MEMBER_ID => Item::JmaMemberId,
        claim::MEDICAL_ASSOCIATION => Item::MedicalAssociation,
        claim::ADDRESS => Item::Address,
        claim::EMAIL => Item::Email,
        _ => return None,
    })
}

/// One setting: the doctor allows (or withholds) `item` for `audience`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub item: Item,
    pub audience: Audience,
    pub allowed: bool,
}

/// A doctor's disclosure settings: what the doctor changed; the rest is the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisclosureSettings {
    changed: BTreeMap<(Item, Audience), bool>,
}

impl DisclosureSettings {
    pub fn from_settings(settings: impl IntoIterator<Item = Setting>) -> Self {
        let mut out = Self::default();
        for s in settings {
            out.set(s);
        }
        out
    }

    pub fn set(&mut self, setting: Setting) {
        self.changed
            .insert((setting.item, setting.audience), setting.allowed);
    }

    pub fn allows(&self, item: Item, audience: Audience) -> bool {
        self.changed
            .get(&(item, audience))
            .copied()
            .unwrap_or_else(|| item.default_allowed(audience))
    }

    /// Every item for every audience, defaults included.
    pub fn all(&self) -> Vec<Setting> {
        Item::ALL
            .iter()
            .flat_map(|item| {
                Audience::ALL.iter().map(|audience| Setting {
                    item: *item,
                    audience: *audience,
                    allowed: self.allows(*item, *audience),
                })
            })
            .collect()
    }

    /// Whether the doctor allows the claim (base name) for `audience`.
    pub fn allows_claim(&self, claim_name: &str, audience: Audience) -> bool {
        item_of(claim_name).is_none_or(|item| self.allows(item, audience))
    }
}

/// The release decision with the administrators' policy (see the module).
#[derive(Debug)]
pub struct DisclosureEngine {
    policy: ArcSwap<DisclosurePolicy>,
}

impl DisclosureEngine {
    pub fn new(policy: Arc<DisclosurePolicy>) -> Self {
        Self {
            policy: ArcSwap::new(policy),
        }
    }

    /// Installs a new policy (already loaded and validated).
    pub fn replace(&self, policy: Arc<DisclosurePolicy>) {
        self.policy.store(policy);
    }

    pub fn policy(&self) -> Arc<DisclosurePolicy> {
        self.policy.load_full()
    }
}

impl ReleasePolicy for DisclosureEngine {
    fn decide(&self, request: &ReleaseRequest<'_>) -> ReleaseDecision {
        let policy = self.policy.load();
        let rp = &request.relying_party;
        let recipient = Recipient {
            id: rp.id,
            audience: rp.audience,
            protocol: rp.protocol.as_str(),
            pre_approved: rp.pre_approved,
        };
        let consented = |name: &str| {
            rp.pre_approved
                || request
                    .consent
                    .is_some_and(|c| c.claims.iter().any(|x| x == name))
        };
        let facts: Vec<(&str, ClaimContext<'_>)> = request
            .requested
            .iter()
            .map(|name| {
                (
                    name.as_str(),
                    ClaimContext {
                        doctor_allows: request.settings.allows_claim(name, rp.audience),
                        consented: consented(name),
                        acr: request.acr,
                        purpose: request.purpose,
                    },
                )
            })
            .collect();
        let verdicts = policy.decide(&recipient, facts.iter().copied());
        // A claim the policy refuses only while it is not consented to can still be asked
        // for: decide those again as if consented.
        let retry: Vec<(&str, ClaimContext<'_>)> = facts
            .iter()
            .zip(&verdicts)
            .filter(|((_, c), v)| !c.consented && !v.is_permitted())
            .map(|((name, c), _)| {
                (
                    *name,
                    ClaimContext {
                        consented: true,
                        ..*c
                    },
                )
            })
            .collect();
        let permitted_if_consented: Vec<&str> = policy
            .decide(&recipient, retry.iter().copied())
            .into_iter()
            .zip(&retry)
            .filter(|(v, _)| v.is_permitted())
            .map(|(_, (name, _))| *name)
            .collect();
        let mut decision = ReleaseDecision {
            policy_version: policy.version().to_owned(),
            ..ReleaseDecision::default()
        };
        for ((name, context), verdict) in facts.into_iter().zip(verdicts) {
            let policy_ok = verdict.is_permitted() || permitted_if_consented.contains(&name);
            let withheld = if !policy_ok {
                Some(match verdict {
                    Verdict::Forbidden(by) => Withheld::PolicyForbids(by),
                    Verdict::Error(e) => Withheld::PolicyError(e),
                    Verdict::UnknownClaim => Withheld::UnknownClaim,
                    Verdict::NotPermitted | Verdict::Permitted(_) => Withheld::NotPermitted,
                })
            } else if let Some(item) = item_of(name).filter(|_| !context.doctor_allows) {
                Some(Withheld::DoctorSetting(item))
            } else if !context.consented {
                Some(Withheld::NoConsent)
            } else {
                None
            };
            match withheld {
                None => {
                    decision.released.insert(name.to_owned());
                }
                Some(reason) => decision.withheld.push((name.to_owned(), reason)),
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use time::OffsetDateTime;

    use super::*;
    use crate::doctor::DoctorId;
    use crate::oidc::release::{Protocol, RelyingParty};
    use crate::store::Consent;

    fn engine() -> DisclosureEngine {
        DisclosureEngine::new(Arc::new(DisclosurePolicy::builtin().expect("defaults")))
    }

    fn rp(audience: Audience, pre_approved: bool) -> RelyingParty<'static> {
        RelyingParty {
            id: "rp",
            protocol: Protocol::Oidc,
            pre_approved,
            audience,
        }
    }

    fn consent(claims: &[&str]) -> Consent {
        Consent {
            doctor_id: DoctorId::from_stored("d".into()),
            client_id: "rp".into(),
            scopes: vec![],
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
            granted_at: OffsetDateTime::UNIX_EPOCH,
            policy_version: None,
        }
    }

    fn decide(
        relying_party: RelyingParty<'_>,
        requested: &[&str],
        consent: Option<&Consent>,
        settings: &DisclosureSettings,
        acr: &str,
    ) -> ReleaseDecision {
        let requested: BTreeSet<String> = requested.iter().map(|c| (*c).to_owned()).collect();
        engine().decide(&ReleaseRequest {
            relying_party,
            requested: &requested,
            consent,
            settings,
            acr,
            purpose: "",
        })
    }

    const CARD: &str = idp_vocabulary::authn::ACR_HPKI_CARD;
    const ASKED: &[&str] = &[
        claim::NAME,
        claim::HPKI_ROLE,
        claim::EMAIL,
        claim::DOCTOR_REGISTRATION_NUMBER,
        claim::JMA_MEMBER_ID,
    ];

    #[test]
    fn the_same_request_gets_different_releases_by_audience() {
        let settings = DisclosureSettings::default();
        let regional = decide(
            rp(Audience::RegionalNetwork, true),
            ASKED,
            None,
            &settings,
            CARD,
        );
        let third = decide(rp(Audience::ThirdParty, true), ASKED, None, &settings, CARD);
        let names = |d: &ReleaseDecision| d.released.iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&regional),
            ["doctor_registration_number", "email", "hpki_role", "name"]
        );
        assert_eq!(names(&third), ["hpki_role", "name"]);
        assert!(third.withheld.contains(&(
            claim::DOCTOR_REGISTRATION_NUMBER.to_owned(),
            Withheld::PolicyForbids(vec!["third-party-no-registration".into()])
        )));
        assert!(
            third
                .withheld
                .contains(&(claim::EMAIL.to_owned(), Withheld::NotPermitted))
        );
        assert!(regional.policy_version.starts_with("sha256:"));
    }

    #[test]
    fn the_doctor_setting_withholds_and_consent_is_asked_last() {
        let mut settings = DisclosureSettings::default();
        settings.set(Setting {
            item: Item::Email,
            audience: Audience::RegionalNetwork,
            allowed: false,
        });
        let c = consent(&[claim::NAME]);
        let d = decide(
            rp(Audience::RegionalNetwork, false),
            &[claim::NAME, claim::EMAIL, claim::HPKI_ROLE],
            Some(&c),
            &settings,
            CARD,
        );
        assert_eq!(d.released, [claim::NAME.to_owned()].into());
        assert_eq!(
            d.withheld,
            vec![
                (
                    claim::EMAIL.to_owned(),
                    Withheld::DoctorSetting(Item::Email)
                ),
                (claim::HPKI_ROLE.to_owned(), Withheld::NoConsent),
            ]
        );
        assert_eq!(d.askable(), [claim::HPKI_ROLE.to_owned()].into());
        // The same setting for another audience changes nothing there.
        let jma = decide(
            rp(Audience::JmaService, true),
            &[claim::EMAIL],
            None,
            &settings,
            CARD,
        );
        assert!(jma.released.contains(claim::EMAIL));
    }

    #[test]
    fn verified_claims_follow_the_name_setting() {
        let mut settings = DisclosureSettings::default();
        settings.set(Setting {
            item: Item::Name,
            audience: Audience::JmaService,
            allowed: false,
        });
        let d = decide(
            rp(Audience::JmaService, true),
            &[claim::VERIFIED_CLAIMS, claim::HPKI_ROLE],
            None,
            &settings,
            CARD,
        );
        assert_eq!(d.released, [claim::HPKI_ROLE.to_owned()].into());
    }

    #[test]
    fn nothing_is_released_without_the_card_acr() {
        let d = decide(
            rp(Audience::JmaService, true),
            ASKED,
            None,
            &DisclosureSettings::default(),
            "urn:other",
        );
        assert!(d.released.is_empty());
        assert!(
            d.askable().is_empty(),
            "consent cannot fix a policy refusal"
        );
    }

    #[test]
    fn defaults_and_changes_are_listed_for_every_item_and_audience() {
        let mut settings = DisclosureSettings::default();
        assert!(settings.allows(Item::Address, Audience::RegionalNetwork));
        assert!(!settings.allows(Item::Address, Audience::ThirdParty));
        settings.set(Setting {
            item: Item::Address,
            audience: Audience::ThirdParty,
            allowed: true,
        });
        let all = settings.all();
        assert_eq!(all.len(), Item::ALL.len() * Audience::ALL.len());
        assert!(all.contains(&Setting {
            item: Item::Address,
            audience: Audience::ThirdParty,
            allowed: true
        }));
        for (name, _) in CLAIMS {
            if ![claim::HPKI_ROLE, claim::HPKI_ISSUER].contains(name) {
                assert!(item_of(name).is_some(), "{name} has an item");
            }
        }
    }
}
