//! The default policies (`policies/*.cedar`) case by case: for every audience and every
//! claim group, what is permitted and what is forbidden, and by which policy; then the
//! loader's refusals (a bad policy never loads) and the fail-closed evaluation.

use idp_policies::{
    Audience, CLAIMS, ClaimContext, ClaimGroup, DEFAULT_SCHEMA, DisclosurePolicy, PolicyError,
    Recipient, Verdict, group_of,
};
use idp_vocabulary::claim;

const CARD: &str = idp_vocabulary::authn::ACR_HPKI_CARD;

fn policy() -> DisclosurePolicy {
    DisclosurePolicy::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("the policies folder loads")
}

fn recipient(audience: Audience) -> Recipient<'static> {
    Recipient {
        id: "rp",
        audience,
        protocol: "oidc",
        pre_approved: false,
    }
}

fn context(acr: &str) -> ClaimContext<'_> {
    ClaimContext {
        doctor_allows: true,
        consented: true,
        acr,
        purpose: "",
    }
}

fn verdict(policy: &DisclosurePolicy, audience: Audience, claim_name: &str) -> Verdict {
    policy
        .decide(&recipient(audience), [(claim_name, context(CARD))])
        .remove(0)
}

/// The expected verdict of the default policies for a group and an audience.
fn expected(audience: Audience, group: ClaimGroup) -> Verdict {
    use Audience::*;
    use ClaimGroup::*;
    let permitted = |id: &str| Verdict::Permitted(vec![id.to_owned()]);
    match (audience, group) {
        (RegionalNetwork, Identity | Qualification | Registration | Contact) => {
            permitted("regional-network")
        }
        (RegionalNetwork, Membership) => Verdict::NotPermitted,
        (JmaService, _) => permitted("jma-service"),
        (ThirdParty, Identity | Qualification) => permitted("third-party"),
        (ThirdParty, Registration) => {
            Verdict::Forbidden(vec!["third-party-no-registration".to_owned()])
        }
        (ThirdParty, Contact | Membership) => Verdict::NotPermitted,
    }
}

#[test]
fn every_audience_and_claim_group_gets_the_documented_verdict() {
    let policy = policy();
    // Twice: the second round answers from the memo, and must answer the same.
    for _ in 0..2 {
        for audience in Audience::ALL {
            for (name, group) in CLAIMS {
                assert_eq!(
                    verdict(&policy, audience, name),
                    expected(audience, *group),
                    "{audience} / {name}"
                );
            }
        }
    }
}

#[test]
fn nothing_is_released_without_the_card_login() {
    let policy = policy();
    for audience in Audience::ALL {
        for acr in ["", "urn:mace:incommon:iap:silver", "urn:hpki:acr:card-pin "] {
            let v = policy
                .decide(&recipient(audience), [(claim::HPKI_ROLE, context(acr))])
                .remove(0);
            assert_eq!(
                v,
                Verdict::Forbidden(vec!["card-login-only".to_owned()]),
                "{audience} {acr:?}"
            );
        }
    }
}

#[test]
fn unknown_claims_are_never_permitted() {
    let policy = policy();
    assert_eq!(group_of("ssn"), None);
    assert_eq!(
        verdict(&policy, Audience::JmaService, "ssn"),
        Verdict::UnknownClaim
    );
}

#[test]
fn the_compiled_in_defaults_are_the_files_of_this_folder() {
    let builtin = DisclosurePolicy::builtin().expect("defaults load");
    assert_eq!(builtin.version(), policy().version());
    assert!(builtin.version().starts_with("sha256:"));
    assert!(
        builtin.reasons().values().all(|reason| !reason.is_empty()),
        "every default policy says why"
    );
}

#[test]
fn a_policy_naming_the_recipient_applies_to_it_alone() {
    let extra = r#"
        @id("hareyaka-no-address")
        @reason("Hareyaka-net asked not to receive addresses")
        forbid (principal == Idp::RelyingParty::"hareyaka", action, resource == Idp::Claim::"address");
    "#;
    let policy = with_extra(extra).expect("loads");
    let hareyaka = Recipient {
        id: "hareyaka",
        ..recipient(Audience::RegionalNetwork)
    };
    let other = recipient(Audience::RegionalNetwork);
    let verdicts = |r: &Recipient<'_>| policy.decide(r, [(claim::ADDRESS, context(CARD))]);
    assert_eq!(
        verdicts(&hareyaka),
        [Verdict::Forbidden(vec!["hareyaka-no-address".to_owned()])]
    );
    assert!(verdicts(&other)[0].is_permitted());
}

#[test]
fn policies_can_use_the_doctor_setting_consent_and_purpose() {
    let extra = r#"
        @id("contact-needs-treatment-purpose")
        @reason("contact details only for treatment")
        forbid (principal, action, resource in Idp::ClaimGroup::"contact")
        unless { context.purpose == "treatment" && context.doctor_allows && context.consented };
    "#;
    let policy = with_extra(extra).expect("loads");
    let r = recipient(Audience::RegionalNetwork);
    let decide = |purpose: &str, doctor_allows: bool| {
        policy
            .decide(
                &r,
                [(
                    claim::EMAIL,
                    ClaimContext {
                        doctor_allows,
                        consented: true,
                        acr: CARD,
                        purpose,
                    },
                )],
            )
            .remove(0)
    };
    assert!(decide("treatment", true).is_permitted());
    assert!(!decide("", true).is_permitted());
    assert!(!decide("treatment", false).is_permitted());
}

fn with_extra(extra: &str) -> Result<DisclosurePolicy, PolicyError> {
    let mut files: Vec<(String, String)> = idp_policies::DEFAULT_POLICIES
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    files.push(("extra.cedar".to_owned(), extra.to_owned()));
    DisclosurePolicy::from_sources(DEFAULT_SCHEMA, files)
}

/// A policy text and the refusal it must get.
type Case = (&'static str, fn(&PolicyError) -> bool);

#[test]
fn bad_policies_never_load() {
    let cases: &[Case] = &[
        // Syntax.
        (
            "@id(\"x\") permit (principal, action, resource",
            |e| matches!(e, PolicyError::Parse { file, .. } if file == "extra.cedar"),
        ),
        // No @id.
        ("permit (principal, action, resource);", |e| {
            matches!(e, PolicyError::MissingId { .. })
        }),
        // A duplicate @id.
        (
            "@id(\"jma-service\") permit (principal, action, resource);",
            |e| matches!(e, PolicyError::DuplicateId { id, .. } if id == "jma-service"),
        ),
        // An attribute the schema does not have.
        (
            "@id(\"x\") permit (principal, action, resource) when { principal.country == \"jp\" };",
            |e| matches!(e, PolicyError::Invalid(m) if m.contains("country")),
        ),
        // A context field of the wrong type.
        (
            "@id(\"x\") permit (principal, action, resource) when { context.consented == \"yes\" };",
            |e| matches!(e, PolicyError::Invalid(_)),
        ),
        // An entity type that does not exist.
        (
            "@id(\"x\") permit (principal == Idp::Doctor::\"d\", action, resource);",
            |e| matches!(e, PolicyError::Invalid(_)),
        ),
        // A template.
        (
            "@id(\"x\") permit (principal == ?principal, action, resource);",
            |e| matches!(e, PolicyError::Template { .. }),
        ),
    ];
    for (text, check) in cases {
        match with_extra(text) {
            Ok(_) => panic!("loaded: {text}"),
            Err(e) => assert!(check(&e), "{text}: {e}"),
        }
    }
    assert!(matches!(
        DisclosurePolicy::from_sources("namespace {", vec![]),
        Err(PolicyError::Schema(_))
    ));
    assert!(matches!(
        DisclosurePolicy::from_sources(DEFAULT_SCHEMA, vec![]),
        Err(PolicyError::Empty)
    ));
}

#[test]
fn a_folder_with_a_broken_file_does_not_load_and_names_it() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("schema.cedarschema"), DEFAULT_SCHEMA).expect("schema");
    for (name, text) in idp_policies::DEFAULT_POLICIES {
        std::fs::write(dir.path().join(name), text).expect("policy");
    }
    assert!(DisclosurePolicy::load(dir.path()).is_ok());
    std::fs::write(dir.path().join("zz-broken.cedar"), "@id(\"b\") forbid (").expect("file");
    let e = DisclosurePolicy::load(dir.path()).expect_err("refused");
    assert!(e.to_string().starts_with("zz-broken.cedar: "), "{e}");
    // Not a .cedar file: ignored.
    std::fs::remove_file(dir.path().join("zz-broken.cedar")).expect("rm");
    std::fs::write(dir.path().join("notes.txt"), "forbid (").expect("file");
    assert!(DisclosurePolicy::load(dir.path()).is_ok());
}

#[test]
fn a_policy_that_errors_while_evaluating_withholds_the_claim() {
    // Validates (Long + Long), overflows when evaluated. Cedar skips a policy that errors;
    // a skipped forbid would release what it forbids, so any error withholds.
    let extra = r#"
        @id("overflow")
        @reason("errors while evaluating")
        forbid (principal, action, resource in Idp::ClaimGroup::"identity")
        when { 9223372036854775807 + 1 > 0 };
    "#;
    let policy = with_extra(extra).expect("validates");
    let v = policy.decide(
        &recipient(Audience::JmaService),
        [
            (claim::NAME, context(CARD)),
            (claim::HPKI_ROLE, context(CARD)),
        ],
    );
    assert!(
        matches!(&v[0], Verdict::Error(e) if e.contains("overflow")),
        "{v:?}"
    );
    assert!(!v[0].is_permitted());
    // Claims the erring policy does not cover are unaffected.
    assert!(v[1].is_permitted(), "{v:?}");
}

#[test]
fn requests_fit_the_schema() {
    let policy = policy();
    let context = cedar_policy::Context::from_pairs([
        (
            "doctor_allows".to_owned(),
            cedar_policy::RestrictedExpression::new_bool(true),
        ),
        (
            "consented".to_owned(),
            cedar_policy::RestrictedExpression::new_bool(true),
        ),
        (
            "acr".to_owned(),
            cedar_policy::RestrictedExpression::new_string(CARD.to_owned()),
        ),
        (
            "purpose".to_owned(),
            cedar_policy::RestrictedExpression::new_string(String::new()),
        ),
    ])
    .expect("context");
    let uid = |t: &str, id: &str| {
        cedar_policy::EntityUid::from_type_name_and_id(
            t.parse().expect("type"),
            cedar_policy::EntityId::new(id),
        )
    };
    cedar_policy::Request::new(
        uid("Idp::RelyingParty", "rp"),
        uid("Idp::Action", "release"),
        uid("Idp::Claim", "name"),
        context,
        Some(policy.schema()),
    )
    .expect("the context the engine builds is the schema's");
    // The base entities are checked against the schema at every load (`policy()` above).
}
