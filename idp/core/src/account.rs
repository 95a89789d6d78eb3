//! The doctor's own account: disclosure settings, consents and disclosure history, as the
//! account page and the doctor's API (scope `account`, docs/DISCLOSURE.md) see them. Every
//! change is recorded in the audit log; a change whose record cannot be written is
//! reported as failed to the caller.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditLog, AuditRecord};
use crate::disclosure::{Audience, Item, Setting};
use crate::doctor::DoctorId;
use crate::store::{ConsentStore, DisclosureSettingsStore, StoreError};

/// Who made a change: the doctor on the account page, or a client acting with the
/// doctor's `account`-scoped access token.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    Doctor,
    Client(&'a str),
}

impl Actor<'_> {
    fn name(self, doctor: &DoctorId) -> String {
        match self {
            Self::Doctor => doctor.as_str().to_owned(),
            Self::Client(id) => id.to_owned(),
        }
    }
}

/// A change that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The request names an item or audience twice.
    #[error("{item} for {audience} is set twice")]
    Repeated { item: Item, audience: Audience },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `changes` to the doctor's settings (all or none) and records the ones that
/// differ from what was in force; returns those.
pub async fn change_settings(
    settings: &dyn DisclosureSettingsStore,
    audit: &AuditLog,
    doctor: &DoctorId,
    actor: Actor<'_>,
    changes: &[Setting],
    now: OffsetDateTime,
) -> Result<Vec<Setting>, AccountError> {
    for (i, c) in changes.iter().enumerate() {
        if changes[..i]
            .iter()
            .any(|o| o.item == c.item && o.audience == c.audience)
        {
            return Err(AccountError::Repeated {
                item: c.item,
                audience: c.audience,
            });
        }
    }
    let before = settings.settings_of(doctor).await?;
    let changed: Vec<Setting> = changes
        .iter()
        .copied()
        .filter(|c| before.allows(c.item, c.audience) != c.allowed)
        .collect();
    if changed.is_empty() {
        return Ok(changed);
    }
    settings.put_settings(doctor, &changed, now).await?;
    audit
        .record(AuditEvent::settings_changed(doctor, actor, &changed))
        .await?;
    Ok(changed)
}

/// Withdraws the doctor's consent to `relying_party` (its refresh tokens with it) and
/// records it; returns whether there was a consent.
pub async fn withdraw_consent(
    consents: &dyn ConsentStore,
    audit: &AuditLog,
    doctor: &DoctorId,
    actor: Actor<'_>,
    relying_party: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let existed = consents.revoke_consent(doctor, relying_party, now).await?;
    if existed {
        audit
            .record(AuditEvent::consent_revoked(doctor, actor, relying_party))
            .await?;
    }
    Ok(existed)
}

/// One entry of a doctor's disclosure history: the audit record as the doctor may see it
/// (no other doctor's data exists in it; session IDs are left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub relying_party: Option<String>,
    pub detail: Value,
}

impl HistoryEntry {
    pub fn of(record: &AuditRecord) -> Self {
        let mut detail = record.event.detail.clone();
        if let Value::Object(map) = &mut detail {
            map.remove("sid");
        }
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.at_micros) * 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        Self {
            seq: record.seq,
            at,
            kind: record.event.kind.clone(),
            actor: record.event.actor.clone(),
            relying_party: record.event.relying_party.clone(),
            detail,
        }
    }
}

/// The most entries one history page holds.
pub const HISTORY_PAGE_MAX: usize = 200;

/// A page of the doctor's own audit records, newest first, before record `before`.
pub async fn history(
    audit: &AuditLog,
    doctor: &DoctorId,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let records = audit
        .store()
        .records_of(doctor.as_str(), before, limit.clamp(1, HISTORY_PAGE_MAX))
        .await?;
    Ok(records.iter().map(HistoryEntry::of).collect())
}

impl AuditEvent {
    /// The doctor's settings changed (the new values of the items that changed).
    pub fn settings_changed(doctor: &DoctorId, actor: Actor<'_>, changed: &[Setting]) -> Self {
        let changes: Vec<Value> = changed
            .iter()
            .map(|s| json!({"item": s.item.as_str(), "audience": s.audience.as_str(), "allowed": s.allowed}))
            .collect();
        Self {
            kind: "settings.changed".into(),
            actor: actor.name(doctor),
            doctor: Some(doctor.as_str().to_owned()),
            relying_party: None,
            detail: json!({"changes": changes}),
        }
    }

    /// A consent withdrawn (the relying party's refresh tokens with it).
    pub fn consent_revoked(doctor: &DoctorId, actor: Actor<'_>, relying_party: &str) -> Self {
        Self {
            kind: "consent.revoked".into(),
            actor: actor.name(doctor),
            doctor: Some(doctor.as_str().to_owned()),
            relying_party: Some(relying_party.to_owned()),
            detail: json!({"refresh_tokens": "revoked"}),
        }
    }
}
