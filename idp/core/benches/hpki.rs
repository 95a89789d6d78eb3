//! `PeerCertificate -> HpkiCredential` with large CRLs in force, and the CRL load itself.
//!
//! Run with `cargo bench -p idp-core --bench hpki`; the figures and the machine they were
//! taken on are in docs/BENCHMARKS.md, which cites the group names used here.
//!
//! - `validate/crl_entries/{10,1000,100000}`: full validation of a good leaf (chain leaf +
//!   issuing CA as a client sends it, chain signatures, profile, policy, revocation of leaf
//!   and issuing CA, hcRole) with an issuing-CA CRL of that many entries and the root CRL in
//!   force. Equal figures show that the revocation lookup does not grow with the CRL.
//! - `crl_lookup/{10,1000,100000}`: the revocation lookup alone (`IssuerCrl::revocation`).
//! - `crl_load/{1000,100000}`: `IssuerCrl::parse_and_verify` (DER parse, signature check,
//!   index build).
//! - `crl_install/100000`: parse, verify and install into a fresh validator.
//! - `validate_during_reload/crl_entries/100000`: `validate` while another thread
//!   re-parses, re-verifies and re-installs the 100,000-entry CRL in a loop.
//!
//! The test PKI (idp-devpki `large_crl`) is generated once per CRL size, outside the
//! measured loops.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use idp_core::hpki::{
    HpkiValidator, IssuerCrl, PeerCertificate, RevocationStore, TrustStore, ValidationPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

const SEED: &str = "bench";
const SIZES: [usize; 3] = [10, 1_000, 100_000];
const LARGE: usize = 100_000;

fn issued_at() -> OffsetDateTime {
    time::macros::datetime!(2025-04-01 09:00:00 UTC)
}

/// Inside the validity of every certificate and CRL of the bench PKI.
fn now() -> OffsetDateTime {
    issued_at() + time::Duration::days(30)
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("PEM file readable")
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// One generated bench PKI, loaded.
struct Fixture {
    entries: usize,
    trust: TrustStore,
    chain: Vec<CertificateDer<'static>>,
    root_crl: Vec<u8>,
    crl: Vec<u8>,
    leaf_serial: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(entries: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = std::time::Instant::now();
        let pki = idp_devpki::large_crl(dir.path(), SEED, issued_at(), entries)
            .expect("bench PKI generated");
        let crl = std::fs::read(&pki.crl).expect("CRL readable");
        eprintln!(
            "bench PKI with {entries} CRL entries generated in {:.1?}; issuing-CA CRL is {} bytes",
            started.elapsed(),
            crl.len()
        );
        let trust = TrustStore::new(pem_certs(&pki.root), pem_certs(&pki.intermediate))
            .expect("trust store");
        Self {
            entries,
            trust,
            chain: pem_certs(&pki.leaf_chain),
            root_crl: std::fs::read(&pki.root_crl).expect("root CRL readable"),
            crl,
            leaf_serial: hex::decode(&pki.leaf_serial).expect("hex serial"),
            _dir: dir,
        }
    }

    fn policy() -> ValidationPolicy {
        ValidationPolicy {
            accepted_policies: vec![idp_devpki::TEST_AUTH_POLICY_OID.to_owned()],
            ..ValidationPolicy::default()
        }
    }

    /// A validator with both CRLs in force.
    fn validator(&self) -> HpkiValidator {
        let validator = HpkiValidator::new(self.trust.clone(), Self::policy());
        validator
            .install_crl(&self.root_crl, "bench/root.crl")
            .expect("root CRL installs");
        validator
            .install_crl(&self.crl, "bench/issuing-ca.crl")
            .expect("issuing-CA CRL installs");
        validator
    }

    fn peer(&self) -> PeerCertificate {
        PeerCertificate::new(self.chain.clone()).expect("chain within limits")
    }

    /// Fails the run rather than measure a refusal.
    fn assert_valid(&self, validator: &HpkiValidator) {
        let credential = validator
            .validate(&self.peer(), now())
            .expect("the bench leaf validates");
        assert_eq!(credential.holder_id(), "BENCH-000001");
        assert_eq!(credential.revocation().len(), 2);
        assert!(credential.revocation().iter().all(|r| r.status == "good"));
        let issuing = validator
            .crls()
            .for_issuer(self.issuing_ca_name())
            .expect("issuing-CA CRL in force");
        assert_eq!(issuing.len(), self.entries);
    }

    fn issuing_ca_name(&self) -> &[u8] {
        self.trust
            .cas()
            .last()
            .expect("root and issuing CA")
            .subject_raw()
    }
}

fn benches(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = SIZES.into_iter().map(Fixture::new).collect();
    let large = fixtures
        .iter()
        .find(|f| f.entries == LARGE)
        .expect("large fixture");

    let mut group = c.benchmark_group("validate");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(5));
    for fixture in &fixtures {
        let validator = fixture.validator();
        fixture.assert_valid(&validator);
        let peer = fixture.peer();
        group.bench_with_input(
            BenchmarkId::new("crl_entries", fixture.entries),
            &peer,
            |b, peer| b.iter(|| validator.validate(black_box(peer), now())),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("crl_lookup");
    for fixture in &fixtures {
        let validator = fixture.validator();
        let crl = validator
            .crls()
            .for_issuer(fixture.issuing_ca_name())
            .expect("issuing-CA CRL in force");
        assert!(crl.revocation(&fixture.leaf_serial).is_none());
        group.bench_with_input(
            BenchmarkId::from_parameter(fixture.entries),
            &fixture.leaf_serial,
            |b, serial| b.iter(|| crl.revocation(black_box(serial)).is_some()),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("crl_load");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(8));
    for fixture in fixtures.iter().filter(|f| f.entries >= 1_000) {
        let parsed = IssuerCrl::parse_and_verify(&fixture.crl, fixture.trust.cas(), "bench")
            .expect("CRL verifies");
        assert_eq!(parsed.len(), fixture.entries);
        group.bench_with_input(
            BenchmarkId::from_parameter(fixture.entries),
            &fixture.crl,
            |b, der| {
                // The drop of the index happens outside the measurement.
                b.iter_batched(
                    || (),
                    |()| IssuerCrl::parse_and_verify(black_box(der), fixture.trust.cas(), "bench"),
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("crl_install");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(8));
    group.bench_with_input(
        BenchmarkId::from_parameter(large.entries),
        &large.crl,
        |b, der| {
            // A fresh validator each time: one with this CRL in force would answer Unchanged.
            b.iter_batched(
                || HpkiValidator::new(large.trust.clone(), Fixture::policy()),
                |validator| {
                    let installed = validator
                        .install_crl(black_box(der), "bench/issuing-ca.crl")
                        .expect("installs");
                    (installed, validator)
                },
                BatchSize::PerIteration,
            )
        },
    );
    // The same through the store API, as the server's reload path uses it.
    group.bench_with_input(
        BenchmarkId::new("store", large.entries),
        &large.crl,
        |b, der| {
            b.iter_batched(
                RevocationStore::default,
                |store| {
                    let crl = IssuerCrl::parse_and_verify(black_box(der), large.trust.cas(), "b")
                        .expect("verifies");
                    let installed = store.install(crl).expect("installs");
                    (installed, store)
                },
                BatchSize::PerIteration,
            )
        },
    );
    group.finish();

    // Logins while a reload is in progress: a second thread re-parses, re-verifies and
    // re-installs the 100,000-entry CRL in a loop. Readers take an ArcSwap snapshot and
    // never the writer lock, so they should only feel the competition for the two cores.
    let validator = large.validator();
    large.assert_valid(&validator);
    let peer = large.peer();
    let stop = AtomicBool::new(false);
    let reloads = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                validator
                    .install_crl(&large.crl, "bench/issuing-ca.crl")
                    .expect("reinstall");
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut group = c.benchmark_group("validate_during_reload");
        group.sample_size(50);
        group.measurement_time(Duration::from_secs(5));
        group.bench_with_input(
            BenchmarkId::new("crl_entries", large.entries),
            &peer,
            |b, peer| b.iter(|| validator.validate(black_box(peer), now())),
        );
        group.finish();
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "validate_during_reload: {} reloads of the {}-entry CRL ran concurrently",
        reloads.load(Ordering::Relaxed),
        large.entries
    );
}

criterion_group!(hpki, benches);
criterion_main!(hpki);
