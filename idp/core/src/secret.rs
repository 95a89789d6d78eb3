//! Secrets as types: a redacting `Debug`, no `Display`, constant-time equality.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A bearer secret (session ID, one-time ticket, browser binding). It can be compared
/// and hashed, and read only by naming the escape hatch.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// 256 random bits, base64url without padding.
    pub fn generate() -> Self {
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
    }

    /// Wraps a value received from a client. Over-long values are refused: no secret we
    /// issue is longer than 64 characters.
    pub fn from_client(value: &str) -> Option<Self> {
        (!value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(value.to_owned()))
    }

    /// Wraps a client secret presented at the token endpoint: any printable ASCII, at
    /// most 256 bytes (registered secrets may come from elsewhere than [`Secret::generate`]).
    pub fn from_client_secret(value: &str) -> Option<Self> {
        (!value.is_empty() && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Self(value.to_owned()))
    }

    /// The value itself, for the one place that must send it (a cookie, a redirect).
    pub fn dangerous_expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the secret, hex: what storage keys use, so a store dump holds no
    /// usable bearer value.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

/// Constant-time comparison of two hex digests.
pub fn digests_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::generate();
        assert!(!format!("{secret:?}").contains(secret.dangerous_expose()));
    }

    #[test]
    fn client_values_are_bounded_and_charset_checked() {
        assert!(Secret::from_client("abc-DEF_123").is_some());
        assert!(Secret::from_client("").is_none());
        assert!(Secret::from_client(&"a".repeat(65)).is_none());
        assert!(Secret::from_client("a b").is_none());
        assert!(Secret::from_client("a\r\nSet-Cookie: x").is_none());
    }

    #[test]
    fn generated_secrets_differ_and_round_trip() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert_eq!(Secret::from_client(a.dangerous_expose()), Some(a.clone()));
        assert_eq!(a.digest().len(), 64);
    }
}
