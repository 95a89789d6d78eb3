//! Sealed values for cookies: AES-256-GCM (authenticated encryption, so a sealed value is
//! both signed and unreadable to the browser), bound to the cookie's name and carrying its
//! own expiry. A value sealed for one cookie does not open as another.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::Error;

/// The largest sealed value accepted: cookies are capped at 4 KiB by browsers anyway.
const MAX_SEALED_LEN: usize = 4096;

/// Seals and opens values with one 256-bit key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([key redacted])")
    }
}

#[derive(serde::Deserialize, Serialize)]
struct Envelope<T> {
    /// Unix seconds after which the value no longer opens.
    exp: i64,
    v: T,
}

impl Sealer {
    /// A sealer with a 32-byte key (keep it secret; every process of the relying party
    /// needs the same key).
    pub fn new(key: &[u8; 32]) -> Self {
        // AES-256 accepts every 32-byte key.
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes any 32-byte key"));
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A sealer with a random key: sealed values do not survive a restart and are not
    /// shared between processes.
    pub fn random() -> Result<Self, Error> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Config("no system randomness".into()))?;
        Ok(Self::new(&key))
    }

    /// `value` sealed for the cookie `name`, opening until `expires`.
    pub fn seal<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        expires: OffsetDateTime,
    ) -> Result<String, Error> {
        let mut plain = serde_json::to_vec(&Envelope {
            exp: expires.unix_timestamp(),
            v: value,
        })
        .map_err(|e| Error::Config(format!("unsealable value: {e}")))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Config("no system randomness".into()))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut plain,
            )
            .map_err(|_| Error::Config("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&plain);
        Ok(B64.encode(out))
    }

    /// The value sealed for `name`, if `sealed` is authentic and not expired at `now`.
    /// Every failure is the same `None`: a forged, altered, misplaced or stale value.
    pub fn open<T: DeserializeOwned>(
        &self,
        name: &str,
        sealed: &str,
        now: OffsetDateTime,
    ) -> Option<T> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let mut bytes = B64.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let body = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let mut body = body;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .ok()?;
        let envelope: Envelope<T> = serde_json::from_slice(plain).ok()?;
        (envelope.exp > now.unix_timestamp()).then_some(envelope.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn sealer() -> Sealer {
        Sealer::new(&[7u8; 32])
    }

    #[test]
    fn opens_what_it_sealed_until_expiry() {
        let now = OffsetDateTime::now_utc();
        let s = sealer();
        let sealed = s
            .seal("login", &"pending", now + Duration::minutes(10))
            .expect("seal");
        assert_eq!(
            s.open::<String>("login", &sealed, now).as_deref(),
            Some("pending")
        );
        assert_eq!(
            s.open::<String>("login", &sealed, now + Duration::minutes(11)),
            None
        );
    }

    #[test]
    fn refuses_another_cookie_another_key_and_any_altered_byte() {
        let now = OffsetDateTime::now_utc();
        let s = sealer();
        let sealed = s
            .seal("login", &"pending", now + Duration::minutes(10))
            .expect("seal");
        assert_eq!(s.open::<String>("session", &sealed, now), None);
        assert_eq!(
            Sealer::new(&[8u8; 32]).open::<String>("login", &sealed, now),
            None
        );
        let raw = B64.decode(&sealed).expect("base64");
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 1;
            assert_eq!(
                s.open::<String>("login", &B64.encode(&altered), now),
                None,
                "byte {i}"
            );
        }
        assert_eq!(s.open::<String>("login", "", now), None);
        assert_eq!(s.open::<String>("login", "not base64!", now), None);
        assert_eq!(s.open::<String>("login", &"A".repeat(5000), now), None);
    }
}
