//! The audit log: append-only, hash-chained records of what was disclosed to whom and
//! when (the MHLW guideline asks for a year of them), and of logins, consents, tokens and
//! administration (docs/AUDIT.md).
//!
//! Each record carries the hash of the previous one; its own hash is SHA-256 over the
//! previous hash and the record's canonical encoding (sequence number, time, kind, actor,
//! doctor, relying party and a detail object, as JSON with sorted keys and no
//! whitespace). Editing, deleting, inserting or reordering records breaks the chain at the
//! first record touched, which [`verify`] names. Records carry claim names, never values.
//!
//! [`AuditLog`] writes with group commit: callers send events to one writer task and wait
//! for the batch holding theirs to commit (durably, in one transaction) before they
//! answer; a failed write fails every caller of the batch, so nothing depending on it is
//! released unrecorded.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// The least retention of audit records: the MHLW guideline's year.
pub const MIN_RETENTION_DAYS: u32 = 365;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// `login.success`, `login.failure`, `release`, `consent.given`, `consent.revoked`,
    /// `token.issued`, `token.revoked`, `settings.changed`, `admin.*`.
    pub kind: String,
    /// Who acted: a doctor ID, `admin`, `system`, or a client ID.
    pub actor: String,
    /// The doctor concerned, if any.
    pub doctor: Option<String>,
    /// The relying party concerned (client ID or SP entity ID), if any.
    pub relying_party: Option<String>,
    /// Everything else: claim names, protocol, policy version, reason. Never claim values.
    pub detail: Value,
}

impl AuditEvent {
    /// An administrative change (`admin.<action>`): a client, an SP, a signing key or
    /// the disclosure policy, by `actor` (`admin-api`, `cli:<user>`, `config`, `system`);
    /// `target` is the relying party changed, if any. Never secrets.
    pub fn admin(actor: &str, action: &str, target: Option<&str>, detail: Value) -> Self {
        Self {
            kind: format!("admin.{action}"),
            actor: actor.to_owned(),
            doctor: None,
            relying_party: target.map(str::to_owned),
            detail,
        }
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix time in microseconds.
    pub at_micros: i64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// JSON with object keys sorted and no whitespace, whatever serde_json's map order.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The hash of a record: SHA-256 (hex) of the previous hash, a newline and the canonical
/// encoding of the record's fields.
pub fn record_hash(seq: i64, at_micros: i64, event: &AuditEvent, prev_hash: &str) -> String {
    let body = serde_json::json!({
        "seq": seq,
        "at": at_micros,
        "kind": event.kind,
        "actor": event.actor,
        "doctor": event.doctor,
        "relying_party": event.relying_party,
        "detail": event.detail,
    });
    let mut hash = Sha256::new();
    hash.update(prev_hash.as_bytes());
    hash.update(b"\n");
    hash.update(canonical_json(&body).as_bytes());
    hex::encode(hash.finalize())
}

/// Chains `events` after `(last_seq, last_hash)`, all at `at_micros`.
pub fn chain(
    last_seq: i64,
    last_hash: &str,
    at_micros: i64,
    events: Vec<AuditEvent>,
) -> Vec<AuditRecord> {
    let mut prev = last_hash.to_owned();
    let mut out = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let seq = last_seq + 1 + i64::try_from(i).unwrap_or(i64::MAX - last_seq - 1);
        let hash = record_hash(seq, at_micros, &event, &prev);
        out.push(AuditRecord {
            seq,
            at_micros,
            event,
            prev_hash: prev,
            hash: hash.clone(),
        });
        prev = hash;
    }
    out
}

/// Where the chain is broken, and how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq}: its content does not match its hash (edited)")]
    Edited { seq: i64 },
    #[error(
        "record {seq}: expected sequence number {expected} (a record was deleted or inserted before it)"
    )]
    Gap { seq: i64, expected: i64 },
    #[error(
        "record {seq}: it does not follow the previous record's hash (inserted, reordered or the previous one edited)"
    )]
    Unlinked { seq: i64 },
    #[error("record {seq}: time goes backwards (reordered)")]
    TimeReversed { seq: i64 },
}

impl ChainBreak {
    /// The first broken record's sequence number.
    pub fn seq(&self) -> i64 {
        match self {
            Self::Edited { seq }
            | Self::Gap { seq, .. }
            | Self::Unlinked { seq }
            | Self::TimeReversed { seq } => *seq,
        }
    }
}

/// Checks records in sequence order, continuing a chain at `(last_seq, last_hash,
/// last_at)` (`(0, GENESIS, i64::MIN)` from the start): the first break, or the new end.
pub fn verify<'a>(
    mut last: (i64, String, i64),
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<(i64, String, i64), ChainBreak> {
    for r in records {
        if r.seq != last.0 + 1 {
            return Err(ChainBreak::Gap {
                seq: r.seq,
                expected: last.0 + 1,
            });
        }
        if r.prev_hash != last.1 {
            return Err(ChainBreak::Unlinked { seq: r.seq });
        }
        if record_hash(r.seq, r.at_micros, &r.event, &r.prev_hash) != r.hash {
            return Err(ChainBreak::Edited { seq: r.seq });
        }
        if r.at_micros < last.2 {
            return Err(ChainBreak::TimeReversed { seq: r.seq });
        }
        last = (r.seq, r.hash.clone(), r.at_micros);
    }
    Ok(last)
}

/// A signed checkpoint: the checkpoint key's Ed25519 signature over a record's number,
/// hash and time ([`checkpoint_message`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at_micros: i64,
    /// The first 16 hex digits of the SHA-256 of the public key.
    pub key_id: String,
    /// Base64 (standard) of the 64-byte signature.
    pub signature: String,
}

/// The signed bytes of a checkpoint.
pub fn checkpoint_message(seq: i64, hash: &str, at_micros: i64) -> Vec<u8> {
    format!("hpki-idp audit checkpoint\n{seq}\n{hash}\n{at_micros}").into_bytes()
}

/// The checkpoint key: Ed25519, kept in a file outside the database.
pub struct CheckpointSigner {
    key: ring::signature::Ed25519KeyPair,
    key_id: String,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The key ID of an Ed25519 public key.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key))[..16].to_owned()
}

impl CheckpointSigner {
    /// A new key as PKCS#8 PEM (`PRIVATE KEY`).
    pub fn generate_pem() -> Result<String, String> {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "cannot generate an Ed25519 key".to_owned())?;
        let b64 = B64.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// The key from PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = B64
            .decode(b64)
            .map_err(|_| "the checkpoint key is not PEM".to_owned())?;
        let key = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| "the checkpoint key is not an Ed25519 PKCS#8 key".to_owned())?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(Self { key, key_id })
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, record: &AuditRecord) -> Checkpoint {
        let signature = self.key.sign(&checkpoint_message(
            record.seq,
            &record.hash,
            record.at_micros,
        ));
        Checkpoint {
            seq: record.seq,
            hash: record.hash.clone(),
            at_micros: record.at_micros,
            key_id: self.key_id.clone(),
            signature: B64.encode(signature.as_ref()),
        }
    }
}

/// Whether `checkpoint` is signed by `public_key`.
pub fn checkpoint_signed_by(checkpoint: &Checkpoint, public_key: &[u8]) -> bool {
    let Ok(signature) = B64.decode(&checkpoint.signature) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(
            &checkpoint_message(checkpoint.seq, &checkpoint.hash, checkpoint.at_micros),
            &signature,
        )
        .is_ok()
}

/// Where audit records are kept.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// Appends `events` after the current last record, in one transaction that also
    /// serialises concurrent writers (other processes included); returns the records.
    async fn append(
        &self,
        events: Vec<AuditEvent>,
        now: OffsetDateTime,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Up to `limit` records with `seq > after`, in sequence order.
    async fn records_after(&self, after: i64, limit: usize)
    -> Result<Vec<AuditRecord>, StoreError>;

    /// Stores a checkpoint (one already stored for the same record is kept).
    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Every checkpoint, in sequence order.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// Records of a time range `[from, to)`, in sequence order.
    async fn records_between(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Sets how many days records are kept at least (the database refuses deleting younger
    /// ones); below 365 is refused.
    async fn set_retention_days(&self, days: u32) -> Result<(), StoreError>;

    /// The retention in force, in days.
    async fn retention_days(&self) -> Result<u32, StoreError>;

    /// A doctor's own records, newest first: up to `limit` with `seq < before` (all when
    /// `before` is `None`).
    async fn records_of(
        &self,
        doctor: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// What `idp audit verify` found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    #[error("checkpoint at record {seq}: the signature is not the checkpoint key's")]
    BadCheckpoint { seq: i64 },
    #[error("checkpoint at record {seq}: the chain's record {seq} has another hash (rewritten)")]
    CheckpointMismatch { seq: i64 },
    #[error(
        "the chain ends at record {end} but a checkpoint vouches for record {seq} (records cut from the end)"
    )]
    Truncated { seq: i64, end: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a verified log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: i64,
    pub last_hash: String,
    /// Checkpoints verified with the key.
    pub checkpoints: usize,
    /// The last record a checkpoint vouches for.
    pub last_checkpoint: Option<i64>,
}

/// Verifies the chain (as [`verify_store`]) and every checkpoint against `public_key`:
/// each signed by it, each matching the chain's record, none beyond the chain's end.
pub async fn verify_with_checkpoints(
    store: &dyn AuditStore,
    public_key: &[u8],
) -> Result<VerifyReport, VerifyError> {
    let checkpoints = store.checkpoints().await?;
    for cp in &checkpoints {
        if !checkpoint_signed_by(cp, public_key) {
            return Err(VerifyError::BadCheckpoint { seq: cp.seq });
        }
    }
    let mut by_seq: std::collections::BTreeMap<i64, &Checkpoint> =
        checkpoints.iter().map(|c| (c.seq, c)).collect();
    let mut last = (0, GENESIS.to_owned(), i64::MIN);
    loop {
        let page = store.records_after(last.0, PAGE).await?;
        if page.is_empty() {
            break;
        }
        last = verify(last, &page)?;
        for record in &page {
            if let Some(cp) = by_seq.remove(&record.seq)
                && cp.hash != record.hash
            {
                return Err(VerifyError::CheckpointMismatch { seq: cp.seq });
            }
        }
    }
    if let Some((&seq, _)) = by_seq.iter().next_back() {
        return Err(VerifyError::Truncated { seq, end: last.0 });
    }
    Ok(VerifyReport {
        records: last.0,
        last_hash: last.1,
        checkpoints: checkpoints.len(),
        last_checkpoint: checkpoints.last().map(|c| c.seq),
    })
}

/// Records read at a time when verifying.
const PAGE: usize = 1000;

/// Verifies the whole stored chain, a page at a time: the number of records and the last
/// hash, or the first break.
pub async fn verify_store(store: &dyn AuditStore) -> Result<(i64, String), VerifyError> {
    let mut last = (0, GENESIS.to_owned(), i64::MIN);
    loop {
        let page = store.records_after(last.0, PAGE).await?;
        if page.is_empty() {
            return Ok((last.0, last.1));
        }
        // A record numbered below the expected one cannot come back from `seq > last`;
        // one above it is a gap, reported by `verify`.
        last = verify(last, &page)?;
    }
}

type Ack = oneshot::Sender<Result<(), StoreError>>;

/// The audit log with group commit (see the module).
#[derive(Clone, Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<(AuditEvent, Ack)>,
    store: Arc<dyn AuditStore>,
}

/// Events gathered into one transaction at most.
const MAX_BATCH: usize = 256;

impl AuditLog {
    /// Starts the writer task on the current tokio runtime. With a signer, a checkpoint
    /// is signed after the first batch and then whenever `every` records have been
    /// written since the last one.
    pub fn start(
        store: Arc<dyn AuditStore>,
        signer: Option<Arc<CheckpointSigner>>,
        every: usize,
    ) -> Self {
        let (sender, mut receiver) = mpsc::channel::<(AuditEvent, Ack)>(4096);
        let writer = store.clone();
        tokio::spawn(async move {
            let store = writer;
            let mut since_checkpoint = usize::MAX;
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (events, acks): (Vec<AuditEvent>, Vec<Ack>) = batch.into_iter().unzip();
                let outcome = store.append(events, OffsetDateTime::now_utc()).await;
                match &outcome {
                    Err(e) => {
                        tracing::error!(error = %e, "audit write failed: the actions waiting on it fail");
                    }
                    Ok(records) => {
                        since_checkpoint = since_checkpoint.saturating_add(records.len());
                        if let (Some(signer), Some(last)) = (&signer, records.last())
                            && since_checkpoint >= every
                        {
                            // The records are durable already; a checkpoint that fails is
                            // logged and tried again after the next batch.
                            match store.put_checkpoint(&signer.sign(last)).await {
                                Ok(()) => since_checkpoint = 0,
                                Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
                            }
                        }
                    }
                }
                for ack in acks {
                    let _ = ack.send(outcome.as_ref().map(|_| ()).map_err(Clone::clone));
                }
            }
        });
        Self { sender, store }
    }

    /// The store the log writes to, for reading (history, verification, export).
    pub fn store(&self) -> &dyn AuditStore {
        self.store.as_ref()
    }

    /// Records `event` durably; returns once it is committed.
    pub async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.sender
            .send((event, ack))
            .await
            .map_err(|_| StoreError::Unavailable("the audit writer has stopped".into()))?;
        done.await
            .map_err(|_| StoreError::Unavailable("the audit writer has stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            kind: "release".into(),
            actor: format!("doctor-{i}"),
            doctor: Some(format!("doctor-{i}")),
            relying_party: Some("hareyaka".into()),
            detail: serde_json::json!({"protocol": "oidc", "claims": ["name", "hpki_role"], "policy_version": "sha256:x"}),
        }
    }

    fn records(n: usize) -> Vec<AuditRecord> {
        chain(0, GENESIS, 1_000, (0..n).map(event).collect())
    }

    const START: (i64, &str, i64) = (0, GENESIS, i64::MIN);

    fn check(records: &[AuditRecord]) -> Result<(i64, String, i64), ChainBreak> {
        verify((START.0, START.1.to_owned(), START.2), records)
    }

    #[test]
    fn an_intact_chain_verifies_and_continues() {
        let mut r = records(5);
        assert_eq!(check(&r).expect("intact").0, 5);
        let last = r.last().expect("records").clone();
        r.extend(chain(last.seq, &last.hash, 2_000, vec![event(9)]));
        assert_eq!(check(&r).expect("intact").0, 6);
    }

    #[test]
    fn every_tampering_names_the_first_broken_record() {
        let r = records(6);
        let mut edited = r.clone();
        edited[2].event.detail = serde_json::json!({"claims": ["name"]});
        assert_eq!(check(&edited), Err(ChainBreak::Edited { seq: 3 }));
        let mut deleted = r.clone();
        deleted.remove(3);
        assert_eq!(check(&deleted).map_err(|e| e.seq()), Err(5));
        let mut reordered = r.clone();
        reordered.swap(1, 2);
        assert_eq!(check(&reordered).map_err(|e| e.seq()), Err(3));
        // An inserted record with a forged hash and renumbered successors still breaks
        // the link to the next genuine record.
        let mut inserted = r.clone();
        let forged = chain(2, &r[1].hash, 1_000, vec![event(42)]).remove(0);
        inserted.insert(2, forged);
        for (i, rec) in inserted.iter_mut().enumerate().skip(3) {
            rec.seq = i64::try_from(i).expect("small") + 1;
        }
        assert_eq!(check(&inserted).map_err(|e| e.seq()), Err(4));
        // Deleting the last record is invisible to the chain alone: checkpoints catch it.
        let mut truncated = r.clone();
        truncated.pop();
        assert!(check(&truncated).is_ok());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "é\""}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[1,{"y":"é\"","z":0}]},"b":1}"#
        );
    }
}
