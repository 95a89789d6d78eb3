//! The connection pool on PostgreSQL (`IDP_TEST_POSTGRES_URL`) when the server ends every
//! session (a restart, a failover): pooled connections are checked before use, so no
//! query fails; the audit writer's kept connection fails one append (a clean error: the
//! requests waiting on it fail closed) and is replaced; the chain stays whole.

mod common;

use idp_core::audit::{AuditEvent, AuditStore, verify_store};
use idp_core::store::DoctorDirectory;
use idp_store::Database;

use common::Raw;

#[tokio::test]
async fn postgres_connections_ended_by_the_server_are_replaced() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    db.migrate().await.expect("migrate");
    // Several connections in the pool, all used; the audit writer keeps one.
    db.append(vec![event(0)], time::OffsetDateTime::now_utc())
        .await
        .expect("append");
    let uses: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.list().await })
        })
        .collect();
    for u in uses {
        u.await.expect("join").expect("list");
    }
    // The server ends every session of the database (a restart, a failover).
    Raw::Postgres(admin_url.clone()).exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        scratch.name()
    ));
    // Checked before use: every query answers.
    for _ in 0..20 {
        db.list()
            .await
            .expect("a query after the server ended the sessions");
    }
    // The audit writer's kept connection: one append fails cleanly, the next works.
    let failures = {
        let mut failures = 0;
        for i in 0..3 {
            match db
                .append(vec![event(i)], time::OffsetDateTime::now_utc())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        matches!(e, idp_core::store::StoreError::Unavailable(_)),
                        "{e:?}"
                    );
                    failures += 1;
                }
            }
        }
        failures
    };
    assert!(failures <= 1, "{failures} failed appends");
    db.append(vec![event(9)], time::OffsetDateTime::now_utc())
        .await
        .expect("append");
    verify_store(&db).await.expect("one chain");
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        kind: "login.success".into(),
        actor: format!("doctor-{i}"),
        doctor: Some(format!("doctor-{i}")),
        relying_party: None,
        detail: serde_json::json!({"n": i}),
    }
}
