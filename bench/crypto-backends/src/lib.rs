//! Shared fixtures of the crypto-backend benchmarks: the signing keys (made as the IdP
//! makes them in `idp/core/src/oidc/keys.rs`), a realistic ID-token claims set, and a
//! JWS written by hand on top of `ring`, used only to measure the primitive.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The issuer and audience of the benchmark tokens.
pub const ISS: &str = "https://idp.example.jp";
pub const AUD: &str = "rp-clinic-portal-0001";
pub const KID_RS256: &str = "bench-rs256";
pub const KID_ES256: &str = "bench-es256";
pub const KID_EDDSA: &str = "bench-eddsa";

/// An ID token as the IdP issues it: the protocol claims and the released profile
/// claims (flattened, as `claims_for_scopes` produces them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub auth_time: u64,
    pub nonce: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub at_hash: String,
    #[serde(flatten)]
    pub profile: Map<String, Value>,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A realistic ID token for a doctor who logged in with an HPKI card: pairwise `sub`,
/// nonce, `at_hash`, and profile / HPKI / JMA claims with Japanese strings. Valid for an
/// hour from now, so that tokens made once verify for the whole run.
pub fn id_token_claims() -> IdTokenClaims {
    let iat = unix_now();
    let profile = json!({
        "name": "Nichii Taro",
        "family_name": "Nichii",
        "given_name": "Taro",
        "name#ja-Hani-JP": "日医\u{3000}太郎",
        "family_name#ja-Hani-JP": "日医",
        "given_name#ja-Hani-JP": "太郎",
        "name#ja-Kana-JP": "ニチイ\u{3000}タロウ",
        "family_name#ja-Kana-JP": "ニチイ",
        "given_name#ja-Kana-JP": "タロウ",
        "gender": "male",
        "birthdate": "1975-04-01",
        "hpki_role": "Medical Doctor",
        "hpki_issuer": "CN=HPKI Test JMA CA",
        "jma_member": true,
        "medical_association": { "prefecture": "東京都医師会", "district": "文京区医師会" },
    });
    let Value::Object(profile) = profile else {
        unreachable!("a JSON object literal")
    };
    IdTokenClaims {
        iss: ISS.to_owned(),
        sub: "3f9a1c0e7b5d4a2f8c6e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a".to_owned(),
        aud: AUD.to_owned(),
        exp: iat + 3600,
        iat,
        auth_time: iat - 5,
        nonce: "n-0S6_WzA2Mj-7fKq3vYx9pLbR4tUe1H".to_owned(),
        acr: "urn:jma:hpki:loa:card".to_owned(),
        amr: vec!["hwk".to_owned(), "pin".to_owned(), "sc".to_owned()],
        at_hash: "77QmUPtjPfzWtF2AnpK9RQ".to_owned(),
        profile,
    }
}

/// The benchmark's signing keys, as PKCS#8 (PEM for jsonwebtoken, DER for ring).
#[derive(Debug)]
pub struct Keys {
    pub rsa_pkcs8_pem: String,
    pub rsa_pkcs8_der: Vec<u8>,
    pub ec_pkcs8_pem: String,
    pub ec_pkcs8_der: Vec<u8>,
    pub ed_pkcs8_pem: String,
}

impl Keys {
    /// Fresh keys: RSA-2048 (RustCrypto `rsa`), P-256 and Ed25519 (ring), as the IdP's
    /// `SigningKey::generate` makes them.
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let rsa =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA-2048 key generation");
        let rsa_pkcs8_der = rsa
            .to_pkcs8_der()
            .expect("RSA key as PKCS#8")
            .as_bytes()
            .to_vec();
        let rsa_pkcs8_pem = rsa
            .to_pkcs8_pem(LineEnding::LF)
            .expect("RSA key as PKCS#8 PEM")
            .to_string();
        let ec_pkcs8_der = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("P-256 key generation")
        .as_ref()
        .to_vec();
        let ed =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
        // ring writes PKCS#8 v2; jsonwebtoken wants v1 (RFC 8410), as in the IdP.
        let mut ed_v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        ed_v1.extend_from_slice(ed.as_ref().get(16..48).expect("ring's PKCS#8 layout"));
        Self {
            rsa_pkcs8_pem,
            rsa_pkcs8_der,
            ec_pkcs8_pem: pem_block("PRIVATE KEY", &ec_pkcs8_der),
            ec_pkcs8_der,
            ed_pkcs8_pem: pem_block("PRIVATE KEY", &ed_v1),
        }
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A compact JWS assembled by hand on `ring`. **Only a measurement of the primitive**
/// (plus the same JSON and base64 work as jsonwebtoken): it is not a JOSE library and
/// validates little; the IdP must not sign or verify this way.
pub mod ring_jws {
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey};

    use super::{AUD, ISS, IdTokenClaims, URL_SAFE_NO_PAD};
    use base64::Engine;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Header<'a> {
        typ: &'a str,
        alg: &'a str,
        kid: &'a str,
    }

    fn signing_input(alg: &str, kid: &str, claims: &IdTokenClaims) -> String {
        let header = serde_json::to_vec(&Header {
            typ: "JWT",
            alg,
            kid,
        })
        .expect("header JSON");
        let claims = serde_json::to_vec(claims).expect("claims JSON");
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut out);
        out
    }

    fn finish(mut input: String, signature: &[u8]) -> String {
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut input);
        input
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256).
    pub fn sign_rs256(
        key: &RsaKeyPair,
        rng: &SystemRandom,
        kid: &str,
        claims: &IdTokenClaims,
    ) -> String {
        let input = signing_input("RS256", kid, claims);
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &signature::RSA_PKCS1_SHA256,
            rng,
            input.as_bytes(),
            &mut sig,
        )
        .expect("RS256 signature");
        finish(input, &sig)
    }

    /// ES256 (ECDSA P-256 with SHA-256, fixed-length r‖s).
    pub fn sign_es256(
        key: &EcdsaKeyPair,
        rng: &SystemRandom,
        kid: &str,
        claims: &IdTokenClaims,
    ) -> String {
        let input = signing_input("ES256", kid, claims);
        let sig = key.sign(rng, input.as_bytes()).expect("ES256 signature");
        finish(input, sig.as_ref())
    }

    /// Splits, parses the header (checking `alg`), checks the signature with `public_key`
    /// under `alg`, and parses the claims (checking `iss`, `aud` and `exp` only).
    pub fn verify(
        token: &str,
        (jose_alg, alg): (&str, &'static dyn signature::VerificationAlgorithm),
        public_key: &[u8],
        now: u64,
    ) -> Option<IdTokenClaims> {
        let (input, sig) = token.rsplit_once('.')?;
        let (header, payload) = input.split_once('.')?;
        let header = URL_SAFE_NO_PAD.decode(header).ok()?;
        let header: Header<'_> = serde_json::from_slice(&header).ok()?;
        if header.alg != jose_alg {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        UnparsedPublicKey::new(alg, public_key)
            .verify(input.as_bytes(), &sig)
            .ok()?;
        let claims: IdTokenClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.iss == ISS && claims.aud == AUD && claims.exp > now).then_some(claims)
    }
}
