//! hcRole: the healthcare role carried in subjectDirectoryAttributes (DOMAIN.md).
//!
//! ```text
//! SubjectDirectoryAttributes ::= SEQUENCE OF Attribute          -- extension 2.5.29.9
//! Attribute ::= SEQUENCE { type OID (1.0.17090.0.1), values SET OF HCActorData }
//! HCActorData ::= SET OF HCActor
//! HCActor ::= SEQUENCE { codedData [0] EXPLICIT CodedData, ... }
//! CodedData ::= SET { codingSchemeReference [0] EXPLICIT OID,
//!                     codeDataValue [1] EXPLICIT String OPTIONAL,
//!                     codeDataShortDisplayName [2] EXPLICIT String OPTIONAL,
//!                     codeDataLongDisplayName [3] EXPLICIT String OPTIONAL, ... }
//! ```
//! Strict about structure, tolerant of what may follow: unknown members are skipped,
//! every HCActor is kept, unknown role values are kept verbatim.

use idp_vocabulary::hpki::{HcRole, OID_HC_ACTOR, OID_HC_ROLE_SCHEME};
use serde::{Deserialize, Serialize};

use super::der::{self, DerError, Reader};

/// One healthcare actor entry from the certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HcActor {
    /// `codingSchemeReference`, in dotted form.
    pub coding_scheme: String,
    /// `codeDataValue`, when present.
    pub code_value: Option<String>,
    /// `codeDataShortDisplayName` (`Medical Doctor`), when present.
    pub short_display_name: Option<String>,
    /// `codeDataLongDisplayName`, when present.
    pub long_display_name: Option<String>,
}

impl HcActor {
    /// The role, when this actor uses the Japanese HPKI hcRole scheme and names one.
    pub fn role(&self) -> Option<HcRole> {
        if self.coding_scheme != OID_HC_ROLE_SCHEME {
            return None;
        }
        self.short_display_name
            .as_deref()
            .or(self.code_value.as_deref())
            .map(HcRole::from_display_name)
    }
}

/// The subjectDirectoryAttributes value is not the structure DOMAIN.md describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed hcRole attribute: {0}")]
pub struct MalformedHcRole(#[from] pub DerError);

/// Reads every HCActor from the value of a subjectDirectoryAttributes extension.
/// Attributes of other types are skipped; an extension without hcRole yields no actors.
pub fn parse_subject_directory_attributes(value: &[u8]) -> Result<Vec<HcActor>, MalformedHcRole> {
    let mut attributes = Reader::new(der::read_single(value, der::SEQUENCE)?);
    let mut actors = Vec::new();
    while !attributes.is_empty() {
        let mut attribute = Reader::new(attributes.read(der::SEQUENCE)?);
        let kind = der::oid_to_string(attribute.read(der::OID)?)?;
        let values = attribute.read(der::SET)?;
        attribute.finish()?;
        if kind != OID_HC_ACTOR {
            continue;
        }
        let mut values = Reader::new(values);
        while !values.is_empty() {
            let mut actor_data = Reader::new(values.read(der::SET)?);
            while !actor_data.is_empty() {
                actors.push(parse_actor(actor_data.read(der::SEQUENCE)?)?);
            }
        }
    }
    Ok(actors)
}

fn parse_actor(content: &[u8]) -> Result<HcActor, MalformedHcRole> {
    let mut actor = Reader::new(content);
    // codedData [0] EXPLICIT CodedData is mandatory and first; whatever follows
    // (regional data [1], extensions) is skipped.
    let coded = der::read_single(actor.read(der::context(0))?, der::SET)?;
    while !actor.is_empty() {
        actor.read_any()?;
    }
    let mut members = Reader::new(coded);
    let mut coding_scheme = None;
    let mut code_value = None;
    let mut short_display_name = None;
    let mut long_display_name = None;
    while !members.is_empty() {
        let (tag, inner) = members.read_any()?;
        let slot = match tag {
            t if t == der::context(0) => {
                if coding_scheme.is_some() {
                    return Err(DerError::TrailingData.into());
                }
                coding_scheme = Some(der::oid_to_string(der::read_single(inner, der::OID)?)?);
                continue;
            }
            t if t == der::context(1) => &mut code_value,
            t if t == der::context(2) => &mut short_display_name,
            t if t == der::context(3) => &mut long_display_name,
            _ => continue,
        };
        if slot.is_some() {
            return Err(DerError::TrailingData.into());
        }
        let mut explicit = Reader::new(inner);
        let (string_tag, bytes) = explicit.read_any()?;
        explicit.finish()?;
        *slot = Some(der::string(string_tag, bytes)?);
    }
    let coding_scheme = coding_scheme.ok_or(DerError::Truncated)?;
    Ok(HcActor {
        coding_scheme,
        code_value,
        short_display_name,
        long_display_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DER example from DOMAIN.md ("Medical Doctor").
    const MEDICAL_DOCTOR: [u8; 54] = [
        0x30, 0x34, 0x30, 0x32, 0x06, 0x06, 0x28, 0x81, 0x85, 0x42, 0x00, 0x01, 0x31, 0x28, 0x31,
        0x26, 0x30, 0x24, 0xa0, 0x22, 0x31, 0x20, 0xa0, 0x0c, 0x06, 0x0a, 0x2a, 0x83, 0x08, 0x86,
        0x91, 0x0f, 0x01, 0x06, 0x01, 0x01, 0xa2, 0x10, 0x0c, 0x0e, 0x4d, 0x65, 0x64, 0x69, 0x63,
        0x61, 0x6c, 0x20, 0x44, 0x6f, 0x63, 0x74, 0x6f, 0x72,
    ];

    #[test]
    fn parses_the_domain_vector() {
        let actors = parse_subject_directory_attributes(&MEDICAL_DOCTOR).expect("valid vector");
        assert_eq!(actors.len(), 1);
        assert_eq!(actors[0].coding_scheme, OID_HC_ROLE_SCHEME);
        assert_eq!(
            actors[0].short_display_name.as_deref(),
            Some("Medical Doctor")
        );
        assert_eq!(actors[0].role(), Some(HcRole::MedicalDoctor));
    }

    /// Builds the extension value for several actors, each (scheme content, members).
    fn encode(actors: &[&[u8]]) -> Vec<u8> {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if content.len() < 0x80 {
                out.push(u8::try_from(content.len()).expect("short"));
            } else {
                out.push(0x82);
                out.extend_from_slice(&u16::try_from(content.len()).expect("fits").to_be_bytes());
            }
            out.extend_from_slice(content);
            out
        }
        let mut actor_data = Vec::new();
        for members in actors {
            actor_data.extend(tlv(0x30, &tlv(0xa0, &tlv(0x31, members))));
        }
        let mut attribute = tlv(0x06, &[0x28, 0x81, 0x85, 0x42, 0x00, 0x01]);
        attribute.extend(tlv(0x31, &tlv(0x31, &actor_data)));
        tlv(0x30, &tlv(0x30, &attribute))
    }

    fn member(tag: u8, string_tag: u8, value: &str) -> Vec<u8> {
        let inner = [
            vec![string_tag, u8::try_from(value.len()).expect("short")],
            value.as_bytes().to_vec(),
        ]
        .concat();
        [vec![tag, u8::try_from(inner.len()).expect("short")], inner].concat()
    }

    fn jp_scheme() -> Vec<u8> {
        vec![
            0xa0, 0x0c, 0x06, 0x0a, 0x2a, 0x83, 0x08, 0x86, 0x91, 0x0f, 0x01, 0x06, 0x01, 0x01,
        ]
    }

    #[test]
    fn keeps_every_actor_and_unknown_values_verbatim() {
        let doctor = [jp_scheme(), member(0xa2, 0x0c, "Medical Doctor")].concat();
        let director = [jp_scheme(), member(0xa2, 0x0c, "Director of Hospital")].concat();
        let unknown = [
            jp_scheme(),
            member(0xa1, 0x0c, "X-99"),
            member(0xa2, 0x0c, "Acupuncturist"),
        ]
        .concat();
        let value = encode(&[&doctor, &director, &unknown]);
        let actors = parse_subject_directory_attributes(&value).expect("valid");
        let roles: Vec<_> = actors.iter().filter_map(HcActor::role).collect();
        assert_eq!(
            roles,
            vec![
                HcRole::MedicalDoctor,
                HcRole::DirectorOfHospital,
                HcRole::Other("Acupuncturist".into())
            ]
        );
        assert_eq!(actors[2].code_value.as_deref(), Some("X-99"));
    }

    #[test]
    fn skips_unknown_members_and_other_attribute_types() {
        let with_extra = [
            jp_scheme(),
            member(0xa2, 0x0c, "Dentist"),
            member(0xa7, 0x0c, "future"),
        ]
        .concat();
        let mut value = encode(&[&with_extra]);
        // Prepend an attribute of another type (countryOfCitizenship 1.3.6.1.5.5.7.9.4).
        let other = [
            0x30, 0x0d, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x09, 0x04, 0x31, 0x01,
            0x00,
        ];
        let inner_len = usize::from(value[1]);
        let mut body = other.to_vec();
        body.extend_from_slice(&value[2..2 + inner_len]);
        value = [vec![0x30, u8::try_from(body.len()).expect("short")], body].concat();
        let actors = parse_subject_directory_attributes(&value).expect("valid");
        assert_eq!(actors.len(), 1);
        assert_eq!(actors[0].role(), Some(HcRole::Dentist));
    }

    #[test]
    fn an_extension_without_hc_actor_yields_nothing() {
        let other = [
            0x30, 0x0f, 0x30, 0x0d, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x09, 0x04,
            0x31, 0x01, 0x00,
        ];
        assert_eq!(parse_subject_directory_attributes(&other), Ok(vec![]));
    }

    #[test]
    fn malformed_structures_are_typed_refusals() {
        // The scheme reference is an INTEGER, not an OID.
        let bad_scheme = [
            vec![0xa0, 0x03, 0x02, 0x01, 0x05],
            member(0xa2, 0x0c, "Medical Doctor"),
        ]
        .concat();
        assert!(parse_subject_directory_attributes(&encode(&[&bad_scheme])).is_err());
        // No scheme reference at all.
        let no_scheme = member(0xa2, 0x0c, "Medical Doctor");
        assert!(parse_subject_directory_attributes(&encode(&[&no_scheme])).is_err());
        // A display name that is not a string type.
        let bad_string = [jp_scheme(), vec![0xa2, 0x03, 0x02, 0x01, 0x01]].concat();
        assert!(parse_subject_directory_attributes(&encode(&[&bad_string])).is_err());
        // Invalid UTF-8.
        let bad_utf8 = [jp_scheme(), vec![0xa2, 0x04, 0x0c, 0x02, 0xc3, 0x28]].concat();
        assert!(parse_subject_directory_attributes(&encode(&[&bad_utf8])).is_err());
    }

    #[test]
    fn no_prefix_or_bit_flip_of_the_vector_panics() {
        for end in 0..MEDICAL_DOCTOR.len() {
            assert!(parse_subject_directory_attributes(&MEDICAL_DOCTOR[..end]).is_err());
        }
        for i in 0..MEDICAL_DOCTOR.len() {
            for bit in 0..8 {
                let mut flipped = MEDICAL_DOCTOR;
                flipped[i] ^= 1 << bit;
                let _ = parse_subject_directory_attributes(&flipped);
            }
        }
    }
}
