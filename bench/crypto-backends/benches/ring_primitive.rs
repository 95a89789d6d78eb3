//! `ring` 0.17 directly, with the JWS assembled by hand (`ring_jws` in src/lib.rs): a
//! measurement of the primitive, NOT a candidate implementation. jsonwebtoken 11 has no
//! ring backend; these figures show what the ring primitive costs under the same JSON and
//! base64 work.
//!
//! `ring-primitive` reuses a parsed key pair; `ring-primitive-keyparse` parses the
//! PKCS#8 key on every signature, as both jsonwebtoken backends do for RSA.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crypto_backends_bench::{KID_ES256, KID_RS256, Keys, id_token_claims, ring_jws, unix_now};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RsaKeyPair,
};

const BACKEND: &str = "ring-primitive";
const BACKEND_KEYPARSE: &str = "ring-primitive-keyparse";

fn benches(c: &mut Criterion) {
    let keys = Keys::generate();
    let claims = id_token_claims();
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::from_pkcs8(&keys.rsa_pkcs8_der).expect("RSA key");
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &keys.ec_pkcs8_der, &rng)
        .expect("P-256 key");

    let mut group = c.benchmark_group("sign");
    group.bench_function(BenchmarkId::new(BACKEND, "RS256"), |b| {
        b.iter(|| ring_jws::sign_rs256(&rsa, &rng, KID_RS256, black_box(&claims)))
    });
    group.bench_function(BenchmarkId::new(BACKEND, "ES256"), |b| {
        b.iter(|| ring_jws::sign_es256(&ec, &rng, KID_ES256, black_box(&claims)))
    });
    group.bench_function(BenchmarkId::new(BACKEND_KEYPARSE, "RS256"), |b| {
        b.iter(|| {
            let key = RsaKeyPair::from_pkcs8(black_box(&keys.rsa_pkcs8_der)).expect("RSA key");
            ring_jws::sign_rs256(&key, &rng, KID_RS256, black_box(&claims))
        })
    });
    group.bench_function(BenchmarkId::new(BACKEND_KEYPARSE, "ES256"), |b| {
        b.iter(|| {
            let key = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                black_box(&keys.ec_pkcs8_der),
                &rng,
            )
            .expect("P-256 key");
            ring_jws::sign_es256(&key, &rng, KID_ES256, black_box(&claims))
        })
    });
    group.finish();

    let now = unix_now();
    let rs_token = ring_jws::sign_rs256(&rsa, &rng, KID_RS256, &claims);
    let es_token = ring_jws::sign_es256(&ec, &rng, KID_ES256, &claims);
    let rs = ("RS256", &RSA_PKCS1_2048_8192_SHA256 as _);
    let es = ("ES256", &ECDSA_P256_SHA256_FIXED as _);
    let rsa_pub = rsa.public().as_ref().to_vec();
    let ec_pub = ec.public_key().as_ref().to_vec();
    assert_eq!(
        ring_jws::verify(&rs_token, rs, &rsa_pub, now).as_ref(),
        Some(&claims)
    );
    assert_eq!(
        ring_jws::verify(&es_token, es, &ec_pub, now).as_ref(),
        Some(&claims)
    );

    let mut group = c.benchmark_group("verify");
    group.bench_function(BenchmarkId::new(BACKEND, "RS256"), |b| {
        b.iter(|| ring_jws::verify(black_box(&rs_token), rs, &rsa_pub, now).expect("verifies"))
    });
    group.bench_function(BenchmarkId::new(BACKEND, "ES256"), |b| {
        b.iter(|| ring_jws::verify(black_box(&es_token), es, &ec_pub, now).expect("verifies"))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
}

criterion_group! {
    name = ring_primitive;
    config = config();
    targets = benches
}
criterion_main!(ring_primitive);
