//! ID token signing keys: generated here, persisted by the caller as PKCS#8 PEM, published
//! as a JWKS. Signing goes through `jsonwebtoken`; no JOSE is written by hand.

use std::collections::HashMap;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde::Serialize;

use super::client::SigningAlg;

/// A key that could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("key {kid} is not a valid {alg} private key: {reason}")]
    Load {
        kid: String,
        alg: &'static str,
        reason: String,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

pub(crate) fn algorithm(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::RS256 => Algorithm::RS256,
        SigningAlg::PS256 => Algorithm::PS256,
        SigningAlg::ES256 => Algorithm::ES256,
        SigningAlg::EdDSA => Algorithm::EdDSA,
    }
}

/// A private signing key with its public JWK.
pub struct SigningKey {
    kid: String,
    alg: SigningAlg,
    encoding: EncodingKey,
    jwk: Jwk,
    pkcs8_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key for `alg` (RSA 2048 for RS256/PS256, P-256, Ed25519) with a random kid.
    pub fn generate(alg: SigningAlg) -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pem = match alg {
            SigningAlg::RS256 | SigningAlg::PS256 => {
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                key.to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| KeyError::Generate(e.to_string()))?
                    .to_string()
            }
            SigningAlg::ES256 => {
                let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &rng,
                )
                .map_err(|e| KeyError::Generate(e.to_string()))?;
                pem_block("PRIVATE KEY", doc.as_ref())
            }
            SigningAlg::EdDSA => {
                // ring writes PKCS#8 v2 (with the public key), which jsonwebtoken's JWK
                // helper refuses; re-wrap the 32-byte seed as PKCS#8 v1 (RFC 8410).
                let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let seed = doc
                    .as_ref()
                    .get(16..48)
                    .ok_or_else(|| KeyError::Generate("unexpected PKCS#8 layout".into()))?;
                let mut v1 = vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04,
                    0x22, 0x04, 0x20,
                ];
                v1.extend_from_slice(seed);
                pem_block("PRIVATE KEY", &v1)
            }
        };
        let kid = hex::encode(rand::random::<[u8; 12]>());
        Self::from_pkcs8_pem(&kid, alg, &pem)
    }

    /// Loads a stored key.
    pub fn from_pkcs8_pem(kid: &str, alg: SigningAlg, pem: &str) -> Result<Self, KeyError> {
        let load = |reason: String| KeyError::Load {
            kid: kid.to_owned(),
            alg: alg.as_str(),
            reason,
        };
        let encoding = match alg {
            SigningAlg::RS256 | SigningAlg::PS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            SigningAlg::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            SigningAlg::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .map_err(|e| load(e.to_string()))?;
        let mut jwk =
            Jwk::from_encoding_key(&encoding, algorithm(alg)).map_err(|e| load(e.to_string()))?;
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match alg {
            SigningAlg::RS256 => KeyAlgorithm::RS256,
            SigningAlg::PS256 => KeyAlgorithm::PS256,
            SigningAlg::ES256 => KeyAlgorithm::ES256,
            SigningAlg::EdDSA => KeyAlgorithm::EdDSA,
        });
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            pkcs8_pem: pem.to_owned(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public key as a JWK (no private members).
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The private key for storage. Named so that no caller reaches it by accident.
    pub fn dangerous_pkcs8_pem(&self) -> &str {
        &self.pkcs8_pem
    }

    /// Signs `claims` as a JWS with `typ` and this key's `kid`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(algorithm(self.alg));
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The keys in force: one active signer per algorithm, and every published key (active
/// ones plus those kept until tokens they signed have expired).
#[derive(Debug, Default)]
pub struct KeySet {
    published: Vec<SigningKey>,
    active: HashMap<SigningAlg, usize>,
}

impl KeySet {
    /// `keys` in order of preference: the first of each algorithm signs; all are published.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        let mut active = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            active.entry(key.alg).or_insert(i);
        }
        Self {
            published: keys,
            active,
        }
    }

    /// `signers` (one per algorithm; a later one of the same algorithm is only published)
    /// and keys that are only published.
    pub fn from_parts(signers: Vec<SigningKey>, published_only: Vec<SigningKey>) -> Self {
        let mut set = Self::new(signers);
        set.published.extend(published_only);
        set
    }

    /// The key that signs for `alg`, if any.
    pub fn signer(&self, alg: SigningAlg) -> Option<&SigningKey> {
        self.active.get(&alg).and_then(|i| self.published.get(*i))
    }

    /// The algorithms this set can sign with.
    pub fn algorithms(&self) -> Vec<SigningAlg> {
        SigningAlg::ALL
            .into_iter()
            .filter(|a| self.active.contains_key(a))
            .collect()
    }

    /// The JWKS document (public keys only).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.published.iter().map(|k| k.jwk.clone()).collect(),
        }
    }
}

/// Which stored keys sign and which are published at a moment (key rotation with overlap).
///
/// Per algorithm, the key with the latest `active_from` not after `now` signs. A key is
/// published from its creation (so relying parties cache it before it is used), while it
/// signs, and for `retention` after its successor took over (so tokens it signed still
/// verify). Older keys are reported for pruning.
#[derive(Debug)]
pub struct KeyRing {
    pub keys: KeySet,
    /// Kids no longer published: safe to delete.
    pub expired: Vec<String>,
}

impl KeyRing {
    pub fn build(
        stored: &[crate::store::StoredKey],
        now: time::OffsetDateTime,
        retention: std::time::Duration,
    ) -> Result<Self, KeyError> {
        let mut signers = Vec::new();
        let mut others = Vec::new();
        let mut expired = Vec::new();
        for alg in SigningAlg::ALL {
            let mut of_alg: Vec<&crate::store::StoredKey> =
                stored.iter().filter(|k| k.alg == alg).collect();
            of_alg.sort_by(|a, b| {
                (a.active_from, a.created_at, &a.kid).cmp(&(b.active_from, b.created_at, &b.kid))
            });
            let current = of_alg.iter().rposition(|k| k.active_from <= now);
            for (i, key) in of_alg.iter().enumerate() {
                let load = || SigningKey::from_pkcs8_pem(&key.kid, alg, &key.pkcs8_pem);
                match current {
                    Some(c) if i == c => signers.push(load()?),
                    Some(c) if i < c => {
                        // Superseded when the next key became active.
                        let superseded_at = of_alg[i + 1].active_from;
                        if now < superseded_at + retention {
                            others.push(load()?);
                        } else {
                            expired.push(key.kid.clone());
                        }
                    }
                    _ => others.push(load()?),
                }
            }
        }
        Ok(Self {
            keys: KeySet::from_parts(signers, others),
            expired,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        sub: String,
        aud: String,
        exp: u64,
    }

    #[test]
    fn every_algorithm_signs_and_verifies_through_the_published_jwks() {
        let keys: Vec<SigningKey> = SigningAlg::ALL
            .into_iter()
            .map(|alg| SigningKey::generate(alg).expect("generates"))
            .collect();
        let set = KeySet::new(keys);
        let jwks = set.jwks();
        let text = serde_json::to_string(&jwks).expect("serialises");
        for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\""] {
            assert!(
                !text.contains(private),
                "private member {private} published"
            );
        }
        let claims = Claims {
            sub: "s".into(),
            aud: "rp".into(),
            exp: 4_102_444_800,
        };
        for alg in SigningAlg::ALL {
            let signer = set.signer(alg).expect("active");
            let token = signer.sign("JWT", &claims).expect("signs");
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(header.kid.as_deref(), Some(signer.kid()));
            let jwk = jwks.find(signer.kid()).expect("published");
            let key = DecodingKey::from_jwk(jwk).expect("decoding key");
            let mut validation = Validation::new(algorithm(alg));
            validation.set_audience(&["rp"]);
            let decoded = decode::<Claims>(&token, &key, &validation).expect("verifies");
            assert_eq!(decoded.claims, claims);
        }
    }

    #[test]
    fn a_stored_key_loads_back_with_the_same_public_key() {
        let key = SigningKey::generate(SigningAlg::ES256).expect("generates");
        let again =
            SigningKey::from_pkcs8_pem(key.kid(), SigningAlg::ES256, key.dangerous_pkcs8_pem())
                .expect("loads");
        assert_eq!(key.public_jwk(), again.public_jwk());
        assert!(
            SigningKey::from_pkcs8_pem("k", SigningAlg::RS256, key.dangerous_pkcs8_pem()).is_err()
        );
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    fn stored(alg: SigningAlg, created: i64, active: i64) -> crate::store::StoredKey {
        let key = SigningKey::generate(alg).expect("generates");
        crate::store::StoredKey {
            kid: key.kid().to_owned(),
            alg,
            pkcs8_pem: key.dangerous_pkcs8_pem().to_owned(),
            created_at: time::OffsetDateTime::from_unix_timestamp(created).expect("time"),
            active_from: time::OffsetDateTime::from_unix_timestamp(active).expect("time"),
        }
    }

    #[test]
    fn rotation_publishes_before_use_and_retires_after_the_retention() {
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("time");
        let retention = std::time::Duration::from_secs(100);
        let old = stored(SigningAlg::ES256, 0, 0);
        let new = stored(SigningAlg::ES256, 1000, 2000);
        let keys = [old.clone(), new.clone()];
        let kids = |ring: &KeyRing| -> Vec<String> {
            let mut k: Vec<String> = ring
                .keys
                .jwks()
                .keys
                .iter()
                .filter_map(|j| j.common.key_id.clone())
                .collect();
            k.sort();
            k
        };
        let mut both = vec![old.kid.clone(), new.kid.clone()];
        both.sort();
        // Before the new key is active: old signs, both published.
        let ring = KeyRing::build(&keys, at(1500), retention).expect("builds");
        assert_eq!(
            ring.keys.signer(SigningAlg::ES256).map(SigningKey::kid),
            Some(old.kid.as_str())
        );
        assert_eq!(kids(&ring), both);
        // After: new signs, old still published during the retention.
        let ring = KeyRing::build(&keys, at(2050), retention).expect("builds");
        assert_eq!(
            ring.keys.signer(SigningAlg::ES256).map(SigningKey::kid),
            Some(new.kid.as_str())
        );
        assert_eq!(kids(&ring), both);
        assert!(ring.expired.is_empty());
        // After the retention: old is gone and reported for pruning.
        let ring = KeyRing::build(&keys, at(2100), retention).expect("builds");
        assert_eq!(kids(&ring), vec![new.kid.clone()]);
        assert_eq!(ring.expired, vec![old.kid.clone()]);
        // Only a future key: nothing signs for that algorithm, but it is published.
        let ring = KeyRing::build(std::slice::from_ref(&new), at(1500), retention).expect("builds");
        assert!(ring.keys.signer(SigningAlg::ES256).is_none());
        assert_eq!(kids(&ring), vec![new.kid.clone()]);
    }

    #[test]
    fn the_first_key_of_each_algorithm_signs_and_older_ones_stay_published() {
        let new = SigningKey::generate(SigningAlg::ES256).expect("generates");
        let old = SigningKey::generate(SigningAlg::ES256).expect("generates");
        let (new_kid, old_kid) = (new.kid().to_owned(), old.kid().to_owned());
        let set = KeySet::new(vec![new, old]);
        assert_eq!(
            set.signer(SigningAlg::ES256).map(SigningKey::kid),
            Some(new_kid.as_str())
        );
        assert!(set.jwks().find(&old_kid).is_some());
        assert_eq!(set.algorithms(), vec![SigningAlg::ES256]);
        assert!(set.signer(SigningAlg::RS256).is_none());
    }
}
