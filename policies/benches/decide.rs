//! The Cedar part of a login's release decision: the default policies deciding 20 claims
//! for one relying party (`DisclosurePolicy::decide`), both as every login after the first
//! sees it (memoised verdicts) and as the first login of a relying party and context
//! after a (re)load (the relying party's entity added to the base entities, then one
//! Cedar authorization per claim).
//!
//! Run with `cargo bench -p idp-policies --bench decide`; docs/BENCHMARKS.md
//! ("Disclosure decisions") has the figures. The 20 claims are the 15 of the vocabulary
//! and 5 of them a second time (a request naming language variants decides each base
//! name once; 20 is the yardstick).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use idp_policies::{Audience, CLAIMS, ClaimContext, DisclosurePolicy, Recipient};

fn bench(c: &mut Criterion) {
    let policy = DisclosurePolicy::builtin().expect("defaults load");
    let names: Vec<&str> = CLAIMS
        .iter()
        .chain(CLAIMS.iter().take(5))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(names.len(), 20);
    let context = ClaimContext {
        doctor_allows: true,
        consented: true,
        acr: idp_vocabulary::authn::ACR_HPKI_CARD,
        purpose: "",
    };
    let mut group = c.benchmark_group("disclosure");
    for audience in [Audience::RegionalNetwork, Audience::ThirdParty] {
        let recipient = Recipient {
            id: "https://rp.example.jp",
            audience,
            protocol: "oidc",
            pre_approved: false,
        };
        // Every later login of this relying party and context: memoised verdicts.
        group.bench_function(format!("cedar_20_claims/{audience}"), |b| {
            b.iter(|| {
                black_box(policy.decide(black_box(&recipient), names.iter().map(|n| (*n, context))))
            });
        });
        // The first login of a relying party and context after a (re)load: Cedar evaluates
        // every claim (the policy is loaded outside the measurement).
        group.bench_function(format!("cedar_20_claims_first/{audience}"), |b| {
            b.iter_batched(
                || DisclosurePolicy::builtin().expect("defaults load"),
                |fresh| {
                    black_box(
                        fresh.decide(black_box(&recipient), names.iter().map(|n| (*n, context))),
                    )
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
