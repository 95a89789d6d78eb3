//! The audit log on real databases (an SQLite file and PostgreSQL from
//! `IDP_TEST_POSTGRES_URL`): group commit keeps one unbroken chain under concurrent
//! writers; the database refuses updates and early deletes; and every tampering done
//! directly in the database (triggers dropped first, as an administrator could) is found by
//! `verify_store`, which names the first broken record.

mod common;

use std::sync::Arc;

use idp_core::audit::{
    AuditEvent, AuditLog, AuditStore, ChainBreak, CheckpointSigner, VerifyError, verify_store,
    verify_with_checkpoints,
};
use idp_store::Database;
use serde_json::json;

use common::Raw;

impl Raw {
    fn drop_guards(&self) {
        let sql = match self {
            Raw::Sqlite(_) => {
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_early_delete;"
            }
            Raw::Postgres(_) => "DROP TRIGGER audit_log_guard ON audit_log;",
        };
        self.exec(sql);
    }
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        kind: "release".into(),
        actor: format!("doctor-{}", i % 7),
        doctor: Some(format!("doctor-{}", i % 7)),
        relying_party: Some("hareyaka".into()),
        detail: json!({"protocol": "oidc", "claims": ["hpki_role", "name"], "n": i}),
    }
}

async fn broken_at(db: &Database) -> i64 {
    match verify_store(db).await {
        Err(VerifyError::Broken(b)) => b.seq(),
        other => panic!("not broken: {other:?}"),
    }
}

async fn suite(db: Database, raw: Raw) {
    db.migrate().await.expect("migrate");
    let db = Arc::new(db);
    // 300 concurrent writers through group commit: one chain, no gap, no fork; signed
    // checkpoints along it.
    let signer = Arc::new(
        CheckpointSigner::from_pem(&CheckpointSigner::generate_pem().expect("key")).expect("key"),
    );
    let log = AuditLog::start(db.clone(), Some(signer.clone()), 50);
    let writers: Vec<_> = (0..300)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.record(event(i)).await })
        })
        .collect();
    for w in writers {
        w.await.expect("join").expect("recorded");
    }
    let (count, _) = verify_store(db.as_ref()).await.expect("intact");
    assert_eq!(count, 300);
    // Two processes (two connections, each with its own log and tip) writing at once:
    // still one chain; the loser of each race for a number reads the tip again.
    let other = AuditLog::start(
        Arc::new(Database::connect(&raw.url()).await.expect("connect")),
        None,
        usize::MAX,
    );
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let log = if i % 2 == 0 {
                log.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { log.record(event(i)).await })
        })
        .collect();
    for w in writers {
        w.await.expect("join").expect("recorded");
    }
    let (count, _) = verify_store(db.as_ref()).await.expect("intact");
    assert_eq!(count, 500);
    let report = verify_with_checkpoints(db.as_ref(), &signer.public_key())
        .await
        .expect("intact");
    assert!(report.checkpoints >= 1, "{report:?}");
    let last_checkpoint = report.last_checkpoint.expect("checkpointed");
    // A doctor's own records, newest first, in pages; no other doctor's.
    let mine = db
        .records_of("doctor-3", None, 1000)
        .await
        .expect("history");
    let doctor_3 = |n: usize| (0..n).filter(|i| i % 7 == 3).count();
    assert_eq!(mine.len(), doctor_3(300) + doctor_3(200));
    assert!(mine.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(
        mine.iter()
            .all(|r| r.event.doctor.as_deref() == Some("doctor-3"))
    );
    let page = db
        .records_of("doctor-3", Some(mine[9].seq), 5)
        .await
        .expect("page");
    assert_eq!(page, mine[10..15].to_vec());
    assert!(
        db.records_of("nobody", None, 10)
            .await
            .expect("none")
            .is_empty()
    );
    // Another key's view: the checkpoints are not its.
    let other =
        CheckpointSigner::from_pem(&CheckpointSigner::generate_pem().expect("key")).expect("key");
    assert!(matches!(
        verify_with_checkpoints(db.as_ref(), &other.public_key()).await,
        Err(VerifyError::BadCheckpoint { .. })
    ));

    // The database itself refuses changes and early deletions.
    assert!(
        raw.try_exec("UPDATE audit_log SET actor = 'x' WHERE seq = 5")
            .is_err()
    );
    assert!(raw.try_exec("DELETE FROM audit_log WHERE seq = 5").is_err());
    assert_eq!(verify_store(db.as_ref()).await.expect("intact").0, 500);

    // Retention: configurable upward from 365 days, never below; the guard reads it, and
    // a removed setting falls back to the floor.
    assert_eq!(db.retention_days().await.expect("retention"), 365);
    let days_ago =
        |d: i64| (time::OffsetDateTime::now_utc().unix_timestamp() - d * 86400) * 1_000_000;
    let insert_old = |seq: i64, days: i64| {
        raw.try_exec(&format!(
            "INSERT INTO audit_log (seq, at_micros, kind, actor, detail, prev_hash, hash) \
             VALUES ({seq}, {}, 'release', 'x', '{{}}', 'x', 'x')",
            days_ago(days)
        ))
        .expect("insert");
    };
    insert_old(900_001, 380);
    db.set_retention_days(400).await.expect("set");
    assert_eq!(db.retention_days().await.expect("retention"), 400);
    assert!(
        raw.try_exec("DELETE FROM audit_log WHERE seq = 900001")
            .is_err()
    );
    db.set_retention_days(365).await.expect("set");
    raw.try_exec("DELETE FROM audit_log WHERE seq = 900001")
        .expect("older than the retention");
    assert!(db.set_retention_days(364).await.is_err());
    assert!(
        raw.try_exec("UPDATE audit_retention SET days = 30")
            .is_err()
    );
    raw.try_exec("DELETE FROM audit_retention")
        .expect("setting removed");
    assert_eq!(db.retention_days().await.expect("retention"), 365);
    insert_old(900_002, 300);
    assert!(
        raw.try_exec("DELETE FROM audit_log WHERE seq = 900002")
            .is_err()
    );
    db.set_retention_days(300)
        .await
        .expect_err("below the floor");
    db.set_retention_days(365).await.expect("restored");
    insert_old(900_003, 0);
    raw.try_exec("DELETE FROM audit_log WHERE seq >= 900002")
        .expect_err("still young");

    // An administrator drops the guards and tampers; verify names the first record.
    raw.drop_guards();
    // Cutting the end of the chain, past a checkpoint: the chain alone still verifies, the
    // checkpoint does not.
    raw.try_exec(&format!(
        "DELETE FROM audit_log WHERE seq >= {last_checkpoint}"
    ))
    .expect("truncate");
    assert!(verify_store(db.as_ref()).await.is_ok());
    assert!(matches!(
        verify_with_checkpoints(db.as_ref(), &signer.public_key()).await,
        Err(VerifyError::Truncated { seq, .. }) if seq == last_checkpoint
    ));
    raw.try_exec(&format!(
        "DELETE FROM audit_checkpoints WHERE seq >= {last_checkpoint}"
    ))
    .expect("forget the checkpoint");
    // The log goes on after the cut: a process started since appends 300 records after the
    // new end; one that ran before (its tip is a number taken meanwhile) loses the race
    // for that number, reads the tip again and appends after it. One chain, no gap.
    let restarted = Database::connect(&raw.url()).await.expect("connect");
    AuditStore::append(
        &restarted,
        (0..300).map(event).collect(),
        time::OffsetDateTime::now_utc(),
    )
    .await
    .expect("append");
    AuditStore::append(db.as_ref(), vec![event(7)], time::OffsetDateTime::now_utc())
        .await
        .expect("append after a conflict");
    let (end, _) = verify_store(db.as_ref()).await.expect("intact");
    assert_eq!(end, last_checkpoint - 1 + 300 + 1);
    raw.try_exec("UPDATE audit_log SET detail = '{\"claims\":[\"name\"]}' WHERE seq = 250")
        .expect("edit");
    assert_eq!(broken_at(&db).await, 250);
    raw.try_exec("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 120")
        .expect("edit");
    assert_eq!(broken_at(&db).await, 120);
    raw.try_exec("DELETE FROM audit_log WHERE seq = 60")
        .expect("delete");
    assert_eq!(broken_at(&db).await, 61);
    // Reordering: two records swap their numbers.
    raw.try_exec(
        "UPDATE audit_log SET seq = 900000 WHERE seq = 30; \
         UPDATE audit_log SET seq = 30 WHERE seq = 31; \
         UPDATE audit_log SET seq = 31 WHERE seq = 900000;",
    )
    .expect("reorder");
    assert_eq!(broken_at(&db).await, 30);
    // Insertion: a forged record at 10, its successors renumbered.
    raw.try_exec(
        "UPDATE audit_log SET seq = seq + 100000 WHERE seq >= 10; \
         UPDATE audit_log SET seq = seq - 100000 + 1 WHERE seq >= 100000; \
         INSERT INTO audit_log (seq, at_micros, kind, actor, detail, prev_hash, hash) \
         SELECT 10, at_micros, 'release', 'forger', '{}', hash, hash FROM audit_log WHERE seq = 9;",
    )
    .expect("insert");
    assert_eq!(broken_at(&db).await, 10);
    // Appending after tampering still works; the break stays where it is.
    AuditStore::append(
        db.as_ref(),
        vec![event(999)],
        time::OffsetDateTime::now_utc(),
    )
    .await
    .expect("append");
    assert!(matches!(
        verify_store(db.as_ref()).await,
        Err(VerifyError::Broken(
            ChainBreak::Unlinked { seq: 10 } | ChainBreak::Edited { seq: 10 }
        ))
    ));
}

#[tokio::test]
async fn sqlite_audit_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idp.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    suite(db, Raw::Sqlite(path.display().to_string())).await;
}

#[tokio::test]
async fn postgres_audit_chain() {
    let Some(admin_url) = common::service_url("IDP_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let scratch = common::PgTestDatabase::create(&admin_url);
    let db = Database::connect(scratch.url()).await.expect("connect");
    suite(db, Raw::Postgres(scratch.url().to_owned())).await;
}
