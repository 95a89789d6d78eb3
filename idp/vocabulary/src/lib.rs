//! The shared vocabulary of the HPKI IdP and its relying parties.
//!
//! Names only, no logic: claim names, scopes, SAML attribute names, authentication
//! context values and HPKI role codes. Relying parties depend on this crate instead of
//! spelling strings themselves.

pub mod hpki;

/// Authentication context values (OpenID Connect Core 1.0 §2, RFC 8176).
pub mod authn {
    /// `acr` for a login by mutual TLS with an HPKI card certificate whose key the card
    /// only uses after the PIN: possession of a hardware key plus knowledge of the PIN.
    pub const ACR_HPKI_CARD: &str = "urn:hpki:acr:card-pin";

    /// `amr` values for the card login (RFC 8176 §2): smart card, PIN, hardware-secured
    /// key, multiple factors.
    pub const AMR_HPKI_CARD: [&str; 4] = ["sc", "pin", "hwk", "mfa"];
}

/// OpenID Connect scopes offered by the IdP (DESIGN.md §4).
pub mod scope {
    pub const OPENID: &str = "openid";
    pub const PROFILE: &str = "profile";
    pub const EMAIL: &str = "email";
    pub const ADDRESS: &str = "address";
    pub const HPKI: &str = "hpki";
    pub const JMA: &str = "jma";
    pub const DOCTOR_REGISTRATION: &str = "doctor_registration";
    pub const OFFLINE_ACCESS: &str = "offline_access";
    /// The doctor's own account API (disclosure settings, consents, disclosure history):
    /// only for clients of the `jma_service` audience (the portal).
    pub const ACCOUNT: &str = "account";
}

/// Claim names (OpenID Connect Core 1.0 §5.1 plus the HPKI-specific ones).
pub mod claim {
    pub const SUB: &str = "sub";
    pub const ACR: &str = "acr";
    pub const AMR: &str = "amr";
    pub const AUTH_TIME: &str = "auth_time";
    /// The IdP's session ID (OIDC Back-Channel Logout 1.0 §2.1), in ID and logout tokens.
    pub const SID: &str = "sid";
    pub const NAME: &str = "name";
    pub const FAMILY_NAME: &str = "family_name";
    pub const GIVEN_NAME: &str = "given_name";
    pub const GENDER: &str = "gender";
    pub const BIRTHDATE: &str = "birthdate";
    /// Whole years of age on the day of the release (from the birth date; not a standard
    /// OIDC claim): for a relying party that needs the age but not the birth date.
    pub const AGE: &str = "age";
    pub const EMAIL: &str = "email";
    pub const ADDRESS: &str = "address";
    pub const HPKI_ROLE: &str = "hpki_role";
    pub const HPKI_ISSUER: &str = "hpki_issuer";
    pub const VERIFIED_CLAIMS: &str = "verified_claims";
    pub const JMA_MEMBER: &str = "jma_member";
    pub const JMA_MEMBER_ID: &str = "jma_member_id";
    pub const MEDICAL_ASSOCIATION: &str = "medical_association";
    pub const DOCTOR_REGISTRATION_NUMBER: &str = "doctor_registration_number";
    pub const DOCTOR_REGISTRATION_DATE: &str = "doctor_registration_date";

    /// BCP 47 language tags used for the Japanese name variants (OIDC Core §5.2).
    pub const LANG_KANJI: &str = "ja-Hani-JP";
    pub const LANG_KANA: &str = "ja-Kana-JP";
}

/// SAML attribute names (`urn:oid:` form) for the same vocabulary.
pub mod saml_attribute {
    /// hcRole, named by the Japanese HPKI hcRole coding scheme OID.
    pub const HC_ROLE: &str = "urn:oid:1.2.392.100495.1.6.1.1";
    pub const DISPLAY_NAME: &str = "urn:oid:2.16.840.1.113730.3.1.241";
    pub const SURNAME: &str = "urn:oid:2.5.4.4";
    pub const GIVEN_NAME: &str = "urn:oid:2.5.4.42";
    pub const MAIL: &str = "urn:oid:0.9.2342.19200300.100.1.3";
    pub const POSTAL_ADDRESS: &str = "urn:oid:2.5.4.16";
    /// Claims without a standard attribute, and the language variants of the name
    /// claims, are named `urn:jp:hpki-idp:claim:` + the claim name, with `:` before a
    /// language tag (`…:claim:family_name:ja-Kana-JP`).
    pub const CLAIM_PREFIX: &str = "urn:jp:hpki-idp:claim:";
    /// The `NameFormat` of every attribute we send.
    pub const NAME_FORMAT_URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
}
