//! A typed view of the doctor behind a login, read with the shared vocabulary's claim names
//! so application code never spells a claim.

use idp_vocabulary::claim;
use idp_vocabulary::hpki::HcRole;
use openidconnect::{AuthenticationContextClass, AuthenticationMethodReference, SubjectIdentifier};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Error;
use crate::client::{Claims, Login, UserInfo, VerifiedIdToken};

/// A name with its Japanese script variants (OIDC Core §5.2 language tags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JapaneseName {
    /// The untagged value (Latin letters when the IdP has them, else kanji).
    pub default: Option<String>,
    /// `#ja-Hani-JP`: kanji.
    pub kanji: Option<String>,
    /// `#ja-Kana-JP`: katakana reading.
    pub kana: Option<String>,
}

impl JapaneseName {
    fn read(claims: &Claims, name: &str) -> Self {
        Self {
            default: text(claims, name),
            kanji: text(claims, &format!("{name}#{}", claim::LANG_KANJI)),
            kana: text(claims, &format!("{name}#{}", claim::LANG_KANA)),
        }
    }

    /// The kanji form, else the untagged one: what a Japanese page shows.
    pub fn for_display(&self) -> Option<&str> {
        self.kanji.as_deref().or(self.default.as_deref())
    }

    fn or(self, other: Self) -> Self {
        Self {
            default: self.default.or(other.default),
            kanji: self.kanji.or(other.kanji),
            kana: self.kana.or(other.kana),
        }
    }
}

/// The medical associations a doctor belongs to (`medical_association`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MedicalAssociation {
    /// The prefectural association (e.g. 岡山県医師会).
    pub prefecture: Option<String>,
    /// The district association (郡市区医師会).
    pub district: Option<String>,
}

/// The HPKI card certificate that authenticated the login, as the IdP vouches for it in
/// `verified_claims` (OpenID Connect for Identity Assurance: trust framework `jp_hpki`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CardCertificate {
    /// The issuing certification authority.
    pub issuer: Option<String>,
    pub serial_number: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

impl CardCertificate {
    fn read(claims: &Claims) -> Option<Self> {
        let verification = claims.get(claim::VERIFIED_CLAIMS)?.get("verification")?;
        if verification.get("trust_framework")?.as_str()? != TRUST_FRAMEWORK_HPKI {
            return None;
        }
        let evidence = verification.get("evidence")?.as_array()?.first()?;
        let field = |name: &str| {
            evidence
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let instant =
            |name: &str| field(name).and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok());
        Some(Self {
            issuer: field("issuer"),
            serial_number: field("serial_number"),
            not_before: instant("certificate_not_before"),
            not_after: instant("certificate_not_after"),
        })
    }
}

/// The trust framework of `verified_claims` backed by an HPKI certificate.
pub const TRUST_FRAMEWORK_HPKI: &str = "jp_hpki";

/// The doctor a relying party's handler works with. Only built from a validated login
/// (and, optionally, userinfo claims checked against the same subject).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Doctor {
    /// `sub` (pairwise: the same doctor has another subject at another sector).
    pub subject: SubjectIdentifier,
    pub name: JapaneseName,
    pub family_name: JapaneseName,
    pub given_name: JapaneseName,
    /// `hpki_role`: the card's hcRole (scope `hpki`).
    pub hpki_role: Option<HcRole>,
    /// `hpki_issuer`: the certification authority that issued the card (scope `hpki`).
    pub hpki_issuer: Option<String>,
    pub acr: Option<AuthenticationContextClass>,
    pub amr: Vec<AuthenticationMethodReference>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub auth_time: Option<OffsetDateTime>,
    /// `email` (scope `email`).
    pub email: Option<String>,
    /// `gender` (scope `profile`).
    pub gender: Option<String>,
    /// `birthdate`, `YYYY-MM-DD` (scope `profile`).
    pub birthdate: Option<String>,
    /// `age`: whole years on the day of the release (scope `profile`).
    pub age: Option<u32>,
    /// `address.region`: the prefecture (scope `address`).
    pub prefecture: Option<String>,
    /// `jma_member` (scope `jma`).
    pub jma_member: Option<bool>,
    /// `jma_member_id` (scope `jma`).
    pub jma_member_id: Option<String>,
    /// `medical_association`: prefecture and district associations (scope `jma`).
    pub medical_association: Option<MedicalAssociation>,
    /// `doctor_registration_number`: 医籍登録番号 (scope `doctor_registration`).
    pub doctor_registration_number: Option<String>,
    /// `doctor_registration_date`, `YYYY-MM-DD` (scope `doctor_registration`).
    pub doctor_registration_date: Option<String>,
    /// The card certificate behind the login, from `verified_claims` (asked for by name).
    pub certificate: Option<CardCertificate>,
    /// Every claim released to this relying party, by its `idp_vocabulary::claim` name
    /// (for items without a typed field above).
    pub claims: Claims,
}

impl Doctor {
    /// The doctor as the ID token describes them.
    pub fn from_login(login: &Login) -> Self {
        Self::from_claims(
            login.subject.clone(),
            &login.id_token_claims,
            login.acr.clone(),
            login.amr.clone(),
            login.auth_time,
        )
    }

    /// The doctor from a refreshed ID token.
    pub fn from_id_token(id_token: &VerifiedIdToken) -> Self {
        Self::from_claims(
            id_token.subject.clone(),
            &id_token.claims,
            id_token.acr.clone(),
            id_token.amr.clone(),
            id_token.auth_time,
        )
    }

    /// The doctor from the ID token completed with userinfo claims (the IdP may release
    /// some claims only at the userinfo endpoint). Userinfo values win; `acr`/`amr` come
    /// from the ID token alone.
    pub fn from_login_and_userinfo(login: &Login, userinfo: &UserInfo) -> Result<Self, Error> {
        if userinfo.subject != login.subject {
            return Err(Error::SubjectMismatch);
        }
        let from_userinfo = Self::from_claims(
            login.subject.clone(),
            &userinfo.claims,
            None,
            Vec::new(),
            None,
        );
        let from_token = Self::from_login(login);
        Ok(Self {
            subject: from_token.subject,
            name: from_userinfo.name.or(from_token.name),
            family_name: from_userinfo.family_name.or(from_token.family_name),
            given_name: from_userinfo.given_name.or(from_token.given_name),
            hpki_role: from_userinfo.hpki_role.or(from_token.hpki_role),
            hpki_issuer: from_userinfo.hpki_issuer.or(from_token.hpki_issuer),
            email: from_userinfo.email.or(from_token.email),
            gender: from_userinfo.gender.or(from_token.gender),
            birthdate: from_userinfo.birthdate.or(from_token.birthdate),
            age: from_userinfo.age.or(from_token.age),
            prefecture: from_userinfo.prefecture.or(from_token.prefecture),
            jma_member: from_userinfo.jma_member.or(from_token.jma_member),
            jma_member_id: from_userinfo.jma_member_id.or(from_token.jma_member_id),
            medical_association: from_userinfo
                .medical_association
                .or(from_token.medical_association),
            doctor_registration_number: from_userinfo
                .doctor_registration_number
                .or(from_token.doctor_registration_number),
            doctor_registration_date: from_userinfo
                .doctor_registration_date
                .or(from_token.doctor_registration_date),
            certificate: from_userinfo.certificate.or(from_token.certificate),
            acr: from_token.acr,
            amr: from_token.amr,
            auth_time: from_token.auth_time,
            claims: {
                let mut claims = login.id_token_claims.clone();
                claims.extend(userinfo.claims.clone());
                claims
            },
        })
    }

    /// Whether this login was an HPKI card with its PIN (`acr` of the card login).
    /// Over SAML the IdP names the same login with the SmartcardPKI class.
    pub fn is_hpki_card_login(&self) -> bool {
        self.acr.as_ref().is_some_and(|acr| {
            acr.as_str() == idp_vocabulary::authn::ACR_HPKI_CARD
                || acr.as_str() == crate::saml_uri::AC_SMARTCARD_PKI
        })
    }

    /// Whether the card says this is a medical doctor (hcRole `Medical Doctor`).
    pub fn is_medical_doctor(&self) -> bool {
        self.hpki_role == Some(HcRole::MedicalDoctor)
    }

    /// The doctor from released claims named by `idp_vocabulary::claim` (an ID token's,
    /// userinfo's, or a validated SAML assertion's attributes mapped to claims).
    pub(crate) fn from_claims(
        subject: SubjectIdentifier,
        claims: &Claims,
        acr: Option<AuthenticationContextClass>,
        amr: Vec<AuthenticationMethodReference>,
        auth_time: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            subject,
            name: JapaneseName::read(claims, claim::NAME),
            family_name: JapaneseName::read(claims, claim::FAMILY_NAME),
            given_name: JapaneseName::read(claims, claim::GIVEN_NAME),
            hpki_role: text(claims, claim::HPKI_ROLE).map(HcRole::from),
            hpki_issuer: text(claims, claim::HPKI_ISSUER),
            email: text(claims, claim::EMAIL),
            gender: text(claims, claim::GENDER),
            birthdate: text(claims, claim::BIRTHDATE),
            age: claims
                .get(claim::AGE)
                .and_then(Value::as_u64)
                .and_then(|a| u32::try_from(a).ok()),
            prefecture: claims
                .get(claim::ADDRESS)
                .and_then(|a| a.get("region"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            jma_member: claims.get(claim::JMA_MEMBER).and_then(Value::as_bool),
            jma_member_id: text(claims, claim::JMA_MEMBER_ID),
            medical_association: claims.get(claim::MEDICAL_ASSOCIATION).map(|a| {
                MedicalAssociation {
                    prefecture: a
                        .get("prefecture")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    district: a.get("district").and_then(Value::as_str).map(str::to_owned),
                }
            }),
            doctor_registration_number: text(claims, claim::DOCTOR_REGISTRATION_NUMBER),
            doctor_registration_date: text(claims, claim::DOCTOR_REGISTRATION_DATE),
            certificate: CardCertificate::read(claims),
            acr,
            amr,
            auth_time,
            claims: claims.clone(),
        }
    }
}

fn text(claims: &Claims, name: &str) -> Option<String> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}
