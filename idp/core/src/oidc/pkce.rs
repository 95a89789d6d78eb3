//! PKCE (RFC 7636) with S256 only: `plain` offers no protection against a stolen code.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A `code_challenge` (S256): 43 base64url characters, the SHA-256 of the verifier.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Parses a challenge with its method; only `S256` is accepted (RFC 7636 §4.2 and
    /// RFC 9700 §2.1.1).
    pub fn parse(challenge: &str, method: Option<&str>) -> Result<Self, &'static str> {
        match method {
            Some("S256") => {}
            Some("plain") | None => return Err("code_challenge_method must be S256"),
            Some(_) => return Err("unsupported code_challenge_method"),
        }
        let valid = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(challenge.to_owned()))
        } else {
            Err("code_challenge is not a base64url SHA-256 digest")
        }
    }

    /// Whether `verifier` (RFC 7636 §4.1: 43–128 unreserved characters) hashes to this
    /// challenge. Constant time in the comparison.
    pub fn verify(&self, verifier: &str) -> bool {
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !well_formed {
            return false;
        }
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        computed.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_vector_verifies() {
        let challenge = CodeChallenge::parse(CHALLENGE, Some("S256")).expect("valid");
        assert!(challenge.verify(VERIFIER));
        assert!(!challenge.verify(&VERIFIER.replace('d', "e")));
    }

    #[test]
    fn plain_missing_and_malformed_challenges_are_refused() {
        assert!(CodeChallenge::parse(CHALLENGE, None).is_err());
        assert!(CodeChallenge::parse(VERIFIER, Some("plain")).is_err());
        assert!(CodeChallenge::parse(CHALLENGE, Some("S512")).is_err());
        assert!(CodeChallenge::parse("short", Some("S256")).is_err());
        assert!(CodeChallenge::parse(&format!("{}=", &CHALLENGE[..42]), Some("S256")).is_err());
    }

    #[test]
    fn malformed_verifiers_never_verify() {
        let challenge = CodeChallenge::parse(CHALLENGE, Some("S256")).expect("valid");
        assert!(!challenge.verify(""));
        assert!(!challenge.verify("short"));
        assert!(!challenge.verify(&"a".repeat(129)));
        // The challenge itself is not a verifier of itself.
        assert!(!challenge.verify(CHALLENGE));
    }
}
