//! Sessions at injected times over the in-process ephemeral store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use idp_core::doctor::DoctorId;
use idp_core::login::ReturnTo;
use idp_core::secret::Secret;
use idp_core::session::{CardSummary, Session, SessionPolicy, Sessions};
use idp_core::store::EphemeralStore;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-24 09:00 UTC);

fn session(at: OffsetDateTime) -> Session {
    Session {
        sid: "sid-1".into(),
        doctor_id: DoctorId::from_stored("d1".into()),
        display_name: "日医\u{3000}太郎".into(),
        auth_time: at,
        last_seen: at,
        acr: idp_vocabulary::authn::ACR_HPKI_CARD.into(),
        amr: vec!["sc".into(), "pin".into(), "hwk".into(), "mfa".into()],
        card: CardSummary {
            holder_id: "JMA-TEST-000001".into(),
            subject: "CN=日医　太郎".into(),
            issuer: "CN=HPKI Test JMA CA".into(),
            serial: "01".into(),
            roles: vec!["Medical Doctor".into()],
            not_before: at,
            not_after: at + time::Duration::days(365),
            fingerprint: "00".into(),
            revocation: vec![],
        },
    }
}

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle: Duration::from_secs(30 * 60),
        absolute: Duration::from_secs(8 * 60 * 60),
    }
}

fn sessions() -> Sessions {
    let store: Arc<dyn EphemeralStore> = Arc::new(idp_store::MemoryStore::new());
    Sessions::new(store, policy())
}

fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

#[tokio::test]
async fn a_session_lives_while_used_and_ends_after_the_idle_timeout() {
    let sessions = sessions();
    let id = sessions.create(&session(T0), T0).await.unwrap();
    // Used every 20 minutes: alive for hours (the idle timer restarts).
    let mut at = T0;
    for _ in 0..10 {
        at += minutes(20);
        assert!(
            sessions.resume(&id, at).await.unwrap().is_some(),
            "alive at {at}"
        );
    }
    // Then 31 minutes without use: gone, and deleted.
    assert!(
        sessions
            .resume(&id, at + minutes(31))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sessions
            .resume(&id, at + minutes(1))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_absolute_timeout_ends_even_an_active_session() {
    let sessions = sessions();
    let id = sessions.create(&session(T0), T0).await.unwrap();
    let mut at = T0;
    while at < T0 + minutes(8 * 60 - 10) {
        at += minutes(10);
        assert!(sessions.resume(&id, at).await.unwrap().is_some());
    }
    assert!(
        sessions
            .resume(&id, T0 + minutes(8 * 60 + 1))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_ids_are_never_reused() {
    let sessions = sessions();
    let a = sessions.create(&session(T0), T0).await.unwrap();
    let b = sessions.create(&session(T0), T0).await.unwrap();
    assert_ne!(a, b, "every login gets a fresh ID");
    sessions.end(&a).await.unwrap();
    assert!(sessions.resume(&a, T0).await.unwrap().is_none());
    assert!(sessions.resume(&b, T0).await.unwrap().is_some());
    // An ID nobody issued finds nothing.
    assert!(
        sessions
            .resume(&Secret::generate(), T0)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn remaining_is_the_earlier_of_idle_and_absolute() {
    let s = session(T0);
    assert_eq!(
        s.remaining(policy(), T0),
        Some(Duration::from_secs(30 * 60))
    );
    let mut late = s.clone();
    late.last_seen = T0 + minutes(8 * 60 - 5);
    assert_eq!(
        late.remaining(policy(), late.last_seen),
        Some(Duration::from_secs(5 * 60))
    );
    assert_eq!(s.remaining(policy(), T0 + minutes(30)), None);
}

#[test]
fn return_addresses_are_local_paths_only() {
    for good in ["/", "/account", "/a?b=c&d=%2F", "/ja/ページ"] {
        assert!(ReturnTo::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "account",
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "/a\r\nSet-Cookie: x=y",
        "javascript:alert(1)",
    ] {
        assert!(ReturnTo::parse(bad).is_err(), "{bad:?}");
    }
    assert!(ReturnTo::parse(&format!("/{}", "a".repeat(3000))).is_err());
}
