//! A typed view of the doctor behind a login, read with the shared vocabulary's claim names
//! so application code never spells a claim.

use idp_vocabulary::claim;
use idp_vocabulary::hpki::HcRole;
use openidconnect::{AuthenticationContextClass, AuthenticationMethodReference, SubjectIdentifier};
use serde_json::Value;
use time::OffsetDateTime;

use crate::Error;
use crate::client::{Claims, Login, UserInfo, VerifiedIdToken};

/// A name with its Japanese script variants (OIDC Core §5.2 language tags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// The doctor a relying party's handler works with. Only built from a validated login
/// (and, optionally, userinfo claims checked against the same subject).
#[derive(Clone, Debug)]
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
    pub auth_time: Option<OffsetDateTime>,
}

impl Doctor {
    /// The doctor as the ID token describes them.
    pub fn from_login(login: &Login) -> Self {
        Self::read(
            login.subject.clone(),
            &login.id_token_claims,
            login.acr.clone(),
            login.amr.clone(),
            login.auth_time,
        )
    }

    /// The doctor from a refreshed ID token.
    pub fn from_id_token(id_token: &VerifiedIdToken) -> Self {
        Self::read(
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
        let from_userinfo = Self::read(
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
            acr: from_token.acr,
            amr: from_token.amr,
            auth_time: from_token.auth_time,
        })
    }

    /// Whether this login was an HPKI card with its PIN (`acr` of the card login).
    pub fn is_hpki_card_login(&self) -> bool {
        self.acr
            .as_ref()
            .is_some_and(|acr| acr.as_str() == idp_vocabulary::authn::ACR_HPKI_CARD)
    }

    /// Whether the card says this is a medical doctor (hcRole `Medical Doctor`).
    pub fn is_medical_doctor(&self) -> bool {
        self.hpki_role == Some(HcRole::MedicalDoctor)
    }

    fn read(
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
            acr,
            amr,
            auth_time,
        }
    }
}

fn text(claims: &Claims, name: &str) -> Option<String> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}
