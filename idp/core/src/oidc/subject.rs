//! Subject identifiers (OIDC Core §8): pairwise per sector by default, so that two
//! relying parties cannot correlate a doctor by `sub`; public on request.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::doctor::DoctorId;

/// How a client sees subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    #[default]
    Pairwise,
    Public,
}

/// The `sub` of `doctor` for a client. Pairwise: base64url(SHA-256(sector ‖ 0 ‖ doctor ‖ 0
/// ‖ salt)), stable for the sector and the salt, unlinkable across sectors without the salt.
pub fn subject_for(
    doctor: &DoctorId,
    subject_type: SubjectType,
    sector: &str,
    salt: &[u8],
) -> String {
    match subject_type {
        SubjectType::Public => doctor.as_str().to_owned(),
        SubjectType::Pairwise => {
            let mut hash = Sha256::new();
            hash.update(sector.as_bytes());
            hash.update([0]);
            hash.update(doctor.as_str().as_bytes());
            hash.update([0]);
            hash.update(salt);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.finalize())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_subjects_are_stable_per_sector_and_differ_across_sectors() {
        let doctor = DoctorId::from_stored("abc".into());
        let a1 = subject_for(&doctor, SubjectType::Pairwise, "hareyaka.example", b"salt");
        let a2 = subject_for(&doctor, SubjectType::Pairwise, "hareyaka.example", b"salt");
        let b = subject_for(&doctor, SubjectType::Pairwise, "isn.example", b"salt");
        let other_salt = subject_for(
            &doctor,
            SubjectType::Pairwise,
            "hareyaka.example",
            b"pepper",
        );
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1, other_salt);
        assert!(!a1.contains("abc"));
        assert_eq!(
            subject_for(&doctor, SubjectType::Public, "x", b"salt"),
            "abc"
        );
    }
}
