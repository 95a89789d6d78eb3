//! The doctor record: who a verified card belongs to (DOMAIN.md, "The doctor's record").

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

/// Opaque, stable identifier of a doctor record (128 random bits, lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DoctorId(String);

impl DoctorId {
    /// A fresh random identifier.
    pub fn generate() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
    }

    /// An identifier read back from storage.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Gender as recorded at card application (OIDC `gender` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
    Other,
    #[default]
    Unknown,
}

impl Gender {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Male => "male",
            Self::Female => "female",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }

    /// Parses the stored or imported spelling; anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "male" => Some(Self::Male),
            "female" => Some(Self::Female),
            "other" => Some(Self::Other),
            "unknown" | "" => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// The attributes of a doctor, as imported or provisioned. The key that binds a card to
/// the record is `hpki_holder_id` (see [`crate::hpki::HpkiCredential::holder_id`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DoctorProfile {
    pub hpki_holder_id: String,
    pub family_name: String,
    pub given_name: String,
    pub family_name_kana: Option<String>,
    pub given_name_kana: Option<String>,
    pub family_name_latin: Option<String>,
    pub given_name_latin: Option<String>,
    pub gender: Gender,
    pub birthdate: Option<Date>,
    pub email: Option<String>,
    pub postal_code: Option<String>,
    /// 都道府県, used as the OIDC `address.region`.
    pub prefecture: Option<String>,
    pub address: Option<String>,
    pub jma_member_id: Option<String>,
    pub jma_member: bool,
    pub medical_association_prefecture: Option<String>,
    pub medical_association_district: Option<String>,
    /// 医籍登録番号.
    pub doctor_registration_number: Option<String>,
    pub doctor_registration_date: Option<Date>,
    /// The hcRole display name recorded for the doctor (the card is authoritative at login).
    pub hpki_role: Option<String>,
}

impl DoctorProfile {
    /// The full name in the Japanese order, family name first, separated by a full-width
    /// space as on the card.
    pub fn full_name(&self) -> String {
        match (self.family_name.is_empty(), self.given_name.is_empty()) {
            (false, false) => format!("{}\u{3000}{}", self.family_name, self.given_name),
            (false, true) => self.family_name.clone(),
            (true, _) => self.given_name.clone(),
        }
    }
}

/// How a doctor record came to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoctorOrigin {
    /// Imported by an administrator (`idp doctors import`).
    Imported,
    /// Created at first login from the certificate, under the `provision` policy.
    Provisioned,
}

impl DoctorOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imported => "imported",
            Self::Provisioned => "provisioned",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "imported" => Some(Self::Imported),
            "provisioned" => Some(Self::Provisioned),
            _ => None,
        }
    }
}

/// A stored doctor record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doctor {
    pub id: DoctorId,
    pub profile: DoctorProfile,
    pub origin: DoctorOrigin,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}
