//! [`AuditStore`] over the `audit_log` table. An append is one multi-row INSERT (atomic on
//! both backends, one round trip), chained after the tip this process last wrote or read;
//! the primary key refuses a number another process took meanwhile, and the loser reads
//! the tip again and retries.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::audit::{AuditEvent, AuditRecord, AuditStore, Checkpoint, GENESIS, chain};
use idp_core::store::StoreError;
use time::OffsetDateTime;

use super::doctors::db_error;
use super::schema::{audit_checkpoints, audit_log, audit_retention};
use super::{AnyConnection, Backend, Database};

/// A row of `audit_log`, in column order.
#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = audit_log, treat_none_as_default_value = false)]
struct AuditRow {
    seq: i64,
    at_micros: i64,
    kind: String,
    actor: String,
    doctor_id: Option<String>,
    relying_party: Option<String>,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn new(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at_micros: r.at_micros,
            kind: r.event.kind.clone(),
            actor: r.event.actor.clone(),
            doctor_id: r.event.doctor.clone(),
            relying_party: r.event.relying_party.clone(),
            detail: idp_core::audit::canonical_json(&r.event.detail),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }

    /// The record; a detail that is not JSON is kept as a string, so that `verify` reports
    /// the record as edited instead of the read failing.
    fn into_record(self) -> AuditRecord {
        let detail =
            serde_json::from_str(&self.detail).unwrap_or(serde_json::Value::String(self.detail));
        AuditRecord {
            seq: self.seq,
            at_micros: self.at_micros,
            event: AuditEvent {
                kind: self.kind,
                actor: self.actor,
                doctor: self.doctor_id,
                relying_party: self.relying_party,
                detail,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// The records of loaded rows.
fn records(rows: QueryResult<Vec<AuditRow>>) -> Result<Vec<AuditRecord>, StoreError> {
    Ok(rows
        .map_err(db_error)?
        .into_iter()
        .map(AuditRow::into_record)
        .collect())
}

/// A row of `audit_checkpoints`, in column order.
#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = audit_checkpoints)]
struct CheckpointRow {
    seq: i64,
    hash: String,
    at_micros: i64,
    key_id: String,
    signature: String,
}

/// Attempts of an append that lost a race for the next sequence number.
const APPEND_ATTEMPTS: usize = 10;

#[async_trait]
impl AuditStore for Database {
    async fn append(
        &self,
        events: Vec<AuditEvent>,
        now: OffsetDateTime,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let at_micros = i64::try_from(now.unix_timestamp_nanos() / 1000)
            .map_err(|_| StoreError::Conflict("time out of range".into()))?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let events = events.clone();
            let tip = self.audit_tip.lock().map(|t| t.clone()).unwrap_or(None);
            let work = move |conn: &mut AnyConnection| {
                let (last_seq, last_hash, last_at) = match tip {
                    Some(tip) => tip,
                    None => audit_log::table
                        .order(audit_log::seq.desc())
                        .select((audit_log::seq, audit_log::hash, audit_log::at_micros))
                        .first::<(i64, String, i64)>(conn)
                        .optional()
                        .map_err(db_error)?
                        .unwrap_or((0, GENESIS.to_owned(), i64::MIN)),
                };
                // Time never goes backwards along the chain, whatever the clocks of
                // several processes say.
                let records = chain(last_seq, &last_hash, at_micros.max(last_at), events);
                let rows: Vec<AuditRow> = records.iter().map(AuditRow::new).collect();
                // One statement: the batch is written whole or not at all. A batch of
                // one (the common case below full load) uses the single-row statement,
                // which diesel keeps prepared: one round trip instead of a prepare and
                // an execute.
                match (conn, rows.as_slice()) {
                    (conn, [row]) => diesel::insert_into(audit_log::table)
                        .values(row)
                        .execute(conn),
                    (AnyConnection::Postgresql(pg), rows) => diesel::insert_into(audit_log::table)
                        .values(rows)
                        .execute(pg),
                    (AnyConnection::Sqlite(lite), rows) => diesel::insert_into(audit_log::table)
                        .values(rows)
                        .execute(lite),
                }
                .map_err(db_error)?;
                Ok(records)
            };
            // PostgreSQL: the writer keeps its connection (no check query before every
            // batch). SQLite checks in-process, and an in-memory database has one
            // connection only, which the writer must not keep from everyone else.
            let outcome = match self.backend() {
                Backend::Postgres => self.run_kept(&self.audit_conn, work).await,
                Backend::Sqlite => self.run(work).await,
            };
            let mut tip = self
                .audit_tip
                .lock()
                .map_err(|_| StoreError::Unavailable("audit tip lock poisoned".into()))?;
            match outcome {
                Ok(records) => {
                    *tip = records.last().map(|r| (r.seq, r.hash.clone(), r.at_micros));
                    return Ok(records);
                }
                // Another process wrote after our tip: read it again.
                Err(StoreError::Conflict(_)) if attempt < APPEND_ATTEMPTS => *tip = None,
                Err(e) => {
                    *tip = None;
                    return Err(e);
                }
            }
        }
    }

    async fn records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            records(
                audit_log::table
                    .filter(audit_log::seq.gt(after))
                    .order(audit_log::seq.asc())
                    .limit(limit)
                    .load::<AuditRow>(conn),
            )
        })
        .await
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let row = CheckpointRow {
            seq: checkpoint.seq,
            hash: checkpoint.hash.clone(),
            at_micros: checkpoint.at_micros,
            key_id: checkpoint.key_id.clone(),
            signature: checkpoint.signature.clone(),
        };
        let outcome = self
            .run(move |conn| {
                diesel::insert_into(audit_checkpoints::table)
                    .values(&row)
                    .execute(conn)
                    .map_err(db_error)
            })
            .await;
        match outcome {
            // Another process checkpointed the same record.
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.run(move |conn| {
            Ok(audit_checkpoints::table
                .order(audit_checkpoints::seq.asc())
                .load::<CheckpointRow>(conn)
                .map_err(db_error)?
                .into_iter()
                .map(|r| Checkpoint {
                    seq: r.seq,
                    hash: r.hash,
                    at_micros: r.at_micros,
                    key_id: r.key_id,
                    signature: r.signature,
                })
                .collect())
        })
        .await
    }

    async fn records_between(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let micros =
            |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
        let (from, to) = (micros(from), micros(to));
        self.run(move |conn| {
            records(
                audit_log::table
                    .filter(audit_log::at_micros.ge(from))
                    .filter(audit_log::at_micros.lt(to))
                    .order(audit_log::seq.asc())
                    .load::<AuditRow>(conn),
            )
        })
        .await
    }

    async fn set_retention_days(&self, days: u32) -> Result<(), StoreError> {
        if days < idp_core::audit::MIN_RETENTION_DAYS {
            return Err(StoreError::Conflict(format!(
                "audit retention must be at least {} days",
                idp_core::audit::MIN_RETENTION_DAYS
            )));
        }
        let days = i32::try_from(days)
            .map_err(|_| StoreError::Conflict("audit retention out of range".into()))?;
        self.run(move |conn| {
            let updated = diesel::update(audit_retention::table.filter(audit_retention::id.eq(1)))
                .set(audit_retention::days.eq(days))
                .execute(conn)
                .map_err(db_error)?;
            if updated == 0 {
                diesel::insert_into(audit_retention::table)
                    .values((audit_retention::id.eq(1), audit_retention::days.eq(days)))
                    .execute(conn)
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn retention_days(&self) -> Result<u32, StoreError> {
        let days = self
            .run(move |conn| {
                audit_retention::table
                    .filter(audit_retention::id.eq(1))
                    .select(audit_retention::days)
                    .first::<i32>(conn)
                    .optional()
                    .map_err(db_error)
            })
            .await?;
        // A missing row is the floor, as in the database's guard.
        Ok(days
            .and_then(|d| u32::try_from(d).ok())
            .map_or(idp_core::audit::MIN_RETENTION_DAYS, |d| {
                d.max(idp_core::audit::MIN_RETENTION_DAYS)
            }))
    }

    async fn records_of(
        &self,
        doctor: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let doctor = doctor.to_owned();
        let before = before.unwrap_or(i64::MAX);
        self.run(move |conn| {
            records(
                audit_log::table
                    .filter(audit_log::doctor_id.eq(doctor))
                    .filter(audit_log::seq.lt(before))
                    .order(audit_log::seq.desc())
                    .limit(limit)
                    .load::<AuditRow>(conn),
            )
        })
        .await
    }
}
