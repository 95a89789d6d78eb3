//! ID-token signing and verification through `jsonwebtoken` 11, the way the IdP does it
//! (`jsonwebtoken::encode` with an `EncodingKey` from PKCS#8 PEM) and the way a relying
//! party does it (`jsonwebtoken::decode` with a `DecodingKey` from the published JWK).
//!
//! The backend is jsonwebtoken's crate feature, so each backend is its own build:
//!   cargo bench --bench jwt                                            # rust_crypto
//!   cargo bench --bench jwt --no-default-features --features aws_lc_rs # aws-lc-rs

#[cfg(all(feature = "rust_crypto", feature = "aws_lc_rs"))]
compile_error!("enable exactly one of the features `rust_crypto` and `aws_lc_rs`");
#[cfg(not(any(feature = "rust_crypto", feature = "aws_lc_rs")))]
compile_error!("enable one of the features `rust_crypto` and `aws_lc_rs`");

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crypto_backends_bench::{AUD, ISS, IdTokenClaims, KID_EDDSA, KID_ES256, KID_RS256, Keys};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};

#[cfg(feature = "rust_crypto")]
const BACKEND: &str = "jwt-rust_crypto";
#[cfg(feature = "aws_lc_rs")]
const BACKEND: &str = "jwt-aws_lc_rs";

struct Case {
    alg: Algorithm,
    name: &'static str,
    kid: &'static str,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

fn case(alg: Algorithm, name: &'static str, kid: &'static str, encoding: EncodingKey) -> Case {
    // A relying party verifies with the key from the IdP's JWKS.
    let jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
    let decoding = DecodingKey::from_jwk(&jwk).expect("decoding key from JWK");
    Case {
        alg,
        name,
        kid,
        encoding,
        decoding,
    }
}

fn sign(case: &Case, claims: &IdTokenClaims) -> String {
    // As `SigningKey::sign` in idp/core/src/oidc/keys.rs.
    let mut header = Header::new(case.alg);
    header.kid = Some(case.kid.to_owned());
    header.typ = Some("JWT".to_owned());
    encode(&header, claims, &case.encoding).expect("signed ID token")
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_audience(&[AUD]);
    v.set_issuer(&[ISS]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

fn benches(c: &mut Criterion) {
    let keys = Keys::generate();
    let claims = id_token_claims_checked();
    let cases = [
        case(
            Algorithm::RS256,
            "RS256",
            KID_RS256,
            EncodingKey::from_rsa_pem(keys.rsa_pkcs8_pem.as_bytes()).expect("RSA key"),
        ),
        case(
            Algorithm::ES256,
            "ES256",
            KID_ES256,
            EncodingKey::from_ec_pem(keys.ec_pkcs8_pem.as_bytes()).expect("P-256 key"),
        ),
        case(
            Algorithm::EdDSA,
            "EdDSA",
            KID_EDDSA,
            EncodingKey::from_ed_pem(keys.ed_pkcs8_pem.as_bytes()).expect("Ed25519 key"),
        ),
    ];

    let mut group = c.benchmark_group("sign");
    for case in &cases {
        group.bench_function(BenchmarkId::new(BACKEND, case.name), |b| {
            b.iter(|| sign(case, black_box(&claims)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("verify");
    for case in &cases {
        let token = sign(case, &claims);
        let validation = validation(case.alg);
        let back = decode::<IdTokenClaims>(&token, &case.decoding, &validation)
            .expect("the token verifies");
        assert_eq!(back.claims, claims, "{} round trip", case.name);
        group.bench_function(BenchmarkId::new(BACKEND, case.name), |b| {
            b.iter(|| {
                decode::<IdTokenClaims>(black_box(&token), &case.decoding, &validation)
                    .expect("the token verifies")
            })
        });
    }
    group.finish();
}

/// The claims, after checking that the token is about the size the IdP issues.
fn id_token_claims_checked() -> IdTokenClaims {
    let claims = crypto_backends_bench::id_token_claims();
    let json = serde_json::to_string(&claims).expect("claims JSON");
    assert!(
        json.len() > 700,
        "a realistic claims set ({} bytes)",
        json.len()
    );
    claims
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
}

criterion_group! {
    name = jwt;
    config = config();
    targets = benches
}
criterion_main!(jwt);
