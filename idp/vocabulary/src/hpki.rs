//! HPKI object identifiers and the hcRole values of the Japanese healthcare PKI.

use std::fmt;

use serde::{Deserialize, Serialize};

/// subjectDirectoryAttributes (RFC 5280 §4.2.1.8): the extension that carries hcRole.
pub const OID_SUBJECT_DIRECTORY_ATTRIBUTES: &str = "2.5.29.9";
/// ISO 17090 `id-hcpki-at-healthcareActor`: the attribute type inside it.
pub const OID_HC_ACTOR: &str = "1.0.17090.0.1";
/// The Japanese HPKI hcRole coding scheme (`codingSchemeReference`).
pub const OID_HC_ROLE_SCHEME: &str = "1.2.392.100495.1.6.1.1";

/// A healthcare role from the Japanese HPKI hcRole scheme.
///
/// The closed set holds the national qualifications and administrator roles we know; a
/// value we do not know is kept verbatim in [`HcRole::Other`], never dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum HcRole {
    MedicalDoctor,
    Dentist,
    Pharmacist,
    Nurse,
    Midwife,
    PublicHealthNurse,
    RadiologicalTechnologist,
    ClinicalLaboratoryTechnologist,
    PhysicalTherapist,
    OccupationalTherapist,
    Orthoptist,
    SpeechTherapist,
    ClinicalEngineer,
    DentalHygienist,
    DentalTechnician,
    ProsthetistAndOrthotist,
    EmergencyMedicalTechnician,
    RegisteredDietitian,
    PsychiatricSocialWorker,
    CertifiedSocialWorker,
    CertifiedCareWorker,
    DirectorOfHospital,
    DirectorOfClinic,
    /// A value outside the known list, kept exactly as the certificate spells it.
    Other(String),
}

const KNOWN: [(HcRole, &str, &str); 23] = [
    (HcRole::MedicalDoctor, "Medical Doctor", "医師"),
    (HcRole::Dentist, "Dentist", "歯科医師"),
    (HcRole::Pharmacist, "Pharmacist", "薬剤師"),
    (HcRole::Nurse, "Nurse", "看護師"),
    (HcRole::Midwife, "Midwife", "助産師"),
    (HcRole::PublicHealthNurse, "Public Health Nurse", "保健師"),
    (
        HcRole::RadiologicalTechnologist,
        "Radiological Technologist",
        "診療放射線技師",
    ),
    (
        HcRole::ClinicalLaboratoryTechnologist,
        "Clinical Laboratory Technologist",
        "臨床検査技師",
    ),
    (
        HcRole::PhysicalTherapist,
        "Physical Therapist",
        "理学療法士",
    ),
    (
        HcRole::OccupationalTherapist,
        "Occupational Therapist",
        "作業療法士",
    ),
    (HcRole::Orthoptist, "Orthoptist", "視能訓練士"),
    (HcRole::SpeechTherapist, "Speech Therapist", "言語聴覚士"),
    (
        HcRole::ClinicalEngineer,
        "Clinical Engineer",
        "臨床工学技士",
    ),
    (HcRole::DentalHygienist, "Dental Hygienist", "歯科衛生士"),
    (HcRole::DentalTechnician, "Dental Technician", "歯科技工士"),
    (
        HcRole::ProsthetistAndOrthotist,
        "Prosthetist and Orthotist",
        "義肢装具士",
    ),
    (
        HcRole::EmergencyMedicalTechnician,
        "Emergency Medical Technician",
        "救急救命士",
    ),
    (
        HcRole::RegisteredDietitian,
        "Registered Dietitian",
        "管理栄養士",
    ),
    (
        HcRole::PsychiatricSocialWorker,
        "Psychiatric Social Worker",
        "精神保健福祉士",
    ),
    (
        HcRole::CertifiedSocialWorker,
        "Certified Social Worker",
        "社会福祉士",
    ),
    (
        HcRole::CertifiedCareWorker,
        "Certified Care Worker",
        "介護福祉士",
    ),
    (HcRole::DirectorOfHospital, "Director of Hospital", "病院長"),
    (HcRole::DirectorOfClinic, "Director of Clinic", "診療所長"),
];

impl HcRole {
    /// The role for a `codeDataShortDisplayName` as the certificate spells it.
    pub fn from_display_name(value: &str) -> Self {
        KNOWN
            .iter()
            .find(|(_, en, _)| *en == value)
            .map(|(role, _, _)| role.clone())
            .unwrap_or_else(|| Self::Other(value.to_owned()))
    }

    /// The English display name used in certificates (`Medical Doctor`).
    pub fn display_name(&self) -> &str {
        match self {
            Self::Other(value) => value,
            known => KNOWN
                .iter()
                .find(|(role, _, _)| role == known)
                .map(|(_, en, _)| *en)
                .unwrap_or_default(),
        }
    }

    /// The Japanese name of the qualification (`医師`), when the role is known.
    pub fn japanese_name(&self) -> Option<&'static str> {
        KNOWN
            .iter()
            .find(|(role, _, _)| role == self)
            .map(|(_, _, ja)| *ja)
    }
}

impl From<String> for HcRole {
    fn from(value: String) -> Self {
        Self::from_display_name(&value)
    }
}

impl From<HcRole> for String {
    fn from(role: HcRole) -> Self {
        role.display_name().to_owned()
    }
}

impl fmt::Display for HcRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_roles_round_trip_through_their_display_name() {
        for (role, en, _) in KNOWN.iter() {
            assert_eq!(&HcRole::from_display_name(en), role);
            assert_eq!(role.display_name(), *en);
        }
    }

    #[test]
    fn unknown_roles_are_kept_verbatim() {
        let role = HcRole::from_display_name("Acupuncturist");
        assert_eq!(role, HcRole::Other("Acupuncturist".into()));
        assert_eq!(role.display_name(), "Acupuncturist");
        assert_eq!(role.japanese_name(), None);
    }

    #[test]
    fn serialises_as_the_display_name() {
        let json = serde_json::to_string(&HcRole::MedicalDoctor).expect("serialises");
        assert_eq!(json, "\"Medical Doctor\"");
        let back: HcRole = serde_json::from_str("\"Dentist\"").expect("parses");
        assert_eq!(back, HcRole::Dentist);
    }
}
