//! A login's whole release decision (`DisclosureEngine::decide`): the default Cedar
//! policies, the doctor's settings (one item changed) and a consent covering half the
//! claims, for 20 requested claims (the 15 of the vocabulary, 5 of them twice: the
//! request set is what a relying party may name, and 20 is the yardstick).
//!
//! Run with `cargo bench -p idp-core --bench disclosure`; docs/BENCHMARKS.md
//! ("Disclosure decisions") has the figures.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use idp_core::disclosure::{
    Audience, CLAIMS, DisclosureEngine, DisclosurePolicy, DisclosureSettings, Item, Setting,
};
use idp_core::doctor::DoctorId;
use idp_core::oidc::release::{Protocol, ReleasePolicy, ReleaseRequest, RelyingParty};
use idp_core::store::Consent;

fn bench(c: &mut Criterion) {
    let engine = DisclosureEngine::new(Arc::new(DisclosurePolicy::builtin().expect("defaults")));
    // A set cannot hold a name twice: 15 distinct claims are what a request can name;
    // the 5 repeats are decided as a second request in the same iteration.
    let all: BTreeSet<String> = CLAIMS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let five: BTreeSet<String> = CLAIMS
        .iter()
        .take(5)
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let consent = Consent {
        doctor_id: DoctorId::from_stored("d".into()),
        client_id: "https://rp.example.jp".into(),
        scopes: vec![],
        claims: CLAIMS
            .iter()
            .step_by(2)
            .map(|(n, _)| (*n).to_owned())
            .collect(),
        granted_at: time::OffsetDateTime::UNIX_EPOCH,
        policy_version: None,
    };
    let settings = DisclosureSettings::from_settings([Setting {
        item: Item::Email,
        audience: Audience::RegionalNetwork,
        allowed: false,
    }]);
    let mut group = c.benchmark_group("disclosure");
    for audience in [Audience::RegionalNetwork, Audience::ThirdParty] {
        let rp = RelyingParty {
            id: "https://rp.example.jp",
            protocol: Protocol::Oidc,
            pre_approved: false,
            audience,
        };
        let request = |requested| ReleaseRequest {
            relying_party: rp,
            requested,
            consent: Some(&consent),
            settings: &settings,
            acr: idp_vocabulary::authn::ACR_HPKI_CARD,
            purpose: "",
        };
        group.bench_function(format!("engine_20_claims/{audience}"), |b| {
            b.iter(|| {
                black_box(engine.decide(black_box(&request(&all))));
                black_box(engine.decide(black_box(&request(&five))))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
