//! Disclosure tooling: `idp policy check` and `idp explain` (and the admin API's explain
//! call): what the policy is, and why a relying party does or does not receive each claim
//! of a doctor.

use std::collections::BTreeSet;

use idp_core::disclosure::{
    DisclosureEngine, DisclosurePolicy, Recipient, Verdict, group_of, item_of,
};
use idp_core::doctor::{Doctor, DoctorId};
use idp_core::oidc::client::ClientRegistration;
use idp_core::oidc::release::{ReleasePolicy, ReleaseRequest, RelyingParty, SCOPE_CLAIMS};
use idp_core::store::{
    ClientStore, ConsentStore, DisclosureSettingsStore, DoctorDirectory, SpStore,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The summary `idp policy check` prints for a policy that loaded.
pub fn policy_summary(policy: &DisclosurePolicy, source: &str) -> String {
    let mut out = format!(
        "policies OK ({source}): {} permit, {} forbid, version {}\n",
        policy.count(true),
        policy.count(false),
        policy.version()
    );
    for (id, reason) in policy.reasons() {
        out.push_str(&format!("  {id}: {reason}\n"));
    }
    out
}

/// The stores `explain` reads.
#[derive(Clone, Copy)]
pub struct ExplainStores<'a> {
    pub doctors: &'a dyn DoctorDirectory,
    pub clients: &'a dyn ClientStore,
    pub sps: &'a dyn SpStore,
    pub consents: &'a dyn ConsentStore,
    pub settings: &'a dyn DisclosureSettingsStore,
}

impl std::fmt::Debug for ExplainStores<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExplainStores")
    }
}

/// Every claim a client may ask for: those of its allowed scopes, `verified_claims`
/// included when its scope is allowed.
fn client_claims(client: &ClientRegistration) -> BTreeSet<String> {
    SCOPE_CLAIMS
        .iter()
        .filter(|(scope, _)| client.allowed_scopes.iter().any(|s| s == scope))
        .flat_map(|(_, names)| names.iter().map(|n| (*n).to_owned()))
        .collect()
}

async fn find_doctor(doctors: &dyn DoctorDirectory, doctor: &str) -> Result<Doctor, String> {
    if let Some(found) = doctors
        .find(&DoctorId::from_stored(doctor.to_owned()))
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(found);
    }
    doctors
        .find_by_holder(doctor)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no doctor with the ID or HPKI holder ID {doctor:?}"))
}

/// Why `relying_party` (a client ID or an SP's entity ID) receives or does not receive
/// each claim it may ask for of `doctor` (a doctor ID or HPKI holder ID), at a card login
/// now: the JSON of the admin API, which `idp explain` prints as lines.
pub async fn explain(
    engine: &DisclosureEngine,
    stores: ExplainStores<'_>,
    relying_party: &str,
    doctor: &str,
    now: OffsetDateTime,
) -> Result<Value, String> {
    let doctor = find_doctor(stores.doctors, doctor).await?;
    let client = stores
        .clients
        .client(relying_party)
        .await
        .map_err(|e| e.to_string())?;
    let sp = match &client {
        Some(_) => None,
        None => stores
            .sps
            .sp(relying_party)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|record| idp_saml::idp::parse_record(&record, now)),
    };
    let (rp, requested) = match (&client, &sp) {
        (Some(client), _) => (RelyingParty::client(client), client_claims(client)),
        (None, Some(sp)) => (sp.relying_party(), sp.claims()),
        (None, None) => {
            return Err(format!(
                "no OIDC client or SAML SP {relying_party:?} (or its stored metadata is unusable)"
            ));
        }
    };
    let consent = stores
        .consents
        .consent(&doctor.id, rp.id)
        .await
        .map_err(|e| e.to_string())?;
    let settings = stores
        .settings
        .settings_of(&doctor.id)
        .await
        .map_err(|e| e.to_string())?;
    let acr = idp_vocabulary::authn::ACR_HPKI_CARD;
    let decision = engine.decide(&ReleaseRequest {
        relying_party: rp,
        requested: &requested,
        consent: consent.as_ref(),
        settings: &settings,
        acr,
        purpose: "",
    });
    // The permitting policies of the released claims.
    let policy = engine.policy();
    let recipient = Recipient {
        id: rp.id,
        audience: rp.audience,
        protocol: rp.protocol.as_str(),
        pre_approved: rp.pre_approved,
    };
    let context = idp_core::disclosure::ClaimContext {
        doctor_allows: true,
        consented: true,
        acr,
        purpose: "",
    };
    let released: Vec<&String> = decision.released.iter().collect();
    let permits = policy.decide(&recipient, released.iter().map(|n| (n.as_str(), context)));
    let named = |ids: &[String]| -> Vec<Value> {
        ids.iter()
            .map(|id| json!({"id": id, "reason": policy.reason(id).unwrap_or_default()}))
            .collect()
    };
    let mut claims = Vec::new();
    for (name, verdict) in released.iter().zip(&permits) {
        let by = match verdict {
            Verdict::Permitted(ids) => named(ids),
            _ => Vec::new(),
        };
        claims.push(json!({
            "claim": name,
            "group": group_of(name).map(|g| g.as_str()),
            "item": item_of(name),
            "released": true,
            "reason": "released",
            "detail": "released",
            "policies": by,
        }));
    }
    for (name, why) in &decision.withheld {
        let by = match why {
            idp_core::oidc::release::Withheld::PolicyForbids(ids) => named(ids),
            _ => Vec::new(),
        };
        claims.push(json!({
            "claim": name,
            "group": group_of(name).map(|g| g.as_str()),
            "item": item_of(name),
            "released": false,
            "reason": why.as_str(),
            "detail": why.to_string(),
            "policies": by,
        }));
    }
    claims.sort_by(|a, b| a["claim"].as_str().cmp(&b["claim"].as_str()));
    Ok(json!({
        "relying_party": rp.id,
        "protocol": rp.protocol.as_str(),
        "audience": rp.audience,
        "pre_approved": rp.pre_approved,
        "doctor": doctor.id.as_str(),
        "acr": acr,
        "policy_version": decision.policy_version,
        "consent": consent.map(|c| json!({
            "claims": c.claims,
            "policy_version": c.policy_version,
            "granted_at": c.granted_at.unix_timestamp(),
        })),
        "claims": claims,
    }))
}

/// `explain`'s JSON as the lines `idp explain` prints.
pub fn explanation_lines(explanation: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = vec![format!(
        "{} ({}, audience {}{}) for doctor {}; policy {}",
        text(&explanation["relying_party"]),
        text(&explanation["protocol"]),
        text(&explanation["audience"]),
        if explanation["pre_approved"].as_bool() == Some(true) {
            ", pre-approved"
        } else {
            ""
        },
        text(&explanation["doctor"]),
        text(&explanation["policy_version"]),
    )];
    for claim in explanation["claims"].as_array().into_iter().flatten() {
        let policies: Vec<String> = claim["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{} ({})", text(&p["id"]), text(&p["reason"])))
            .collect();
        let by = if policies.is_empty() {
            String::new()
        } else if claim["released"].as_bool() == Some(true) {
            format!(": permitted by {}", policies.join(", "))
        } else {
            format!(": {}", policies.join(", "))
        };
        out.push(format!(
            "  {:<28} {}{}",
            text(&claim["claim"]),
            text(&claim["detail"]),
            by
        ));
    }
    out
}

/// What a policy reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The folder's files are as they were (or load to the version in force).
    Unchanged { version: String },
    /// The new policy is in force (and on record).
    Reloaded { from: String, to: String },
    /// The folder does not load: the policy in force stays (and the refusal is on record).
    Refused { error: String, version: String },
    /// The compiled-in defaults are in force: there is nothing to reload.
    Builtin { version: String },
}

/// Reloads the disclosure policy from its folder (docs/DISCLOSURE.md, "Reloading"): a
/// change that loads and validates replaces the policy whole after its record commits; one
/// that does not is refused, recorded once, and the policy in force stays.
#[derive(Debug)]
pub struct PolicyReloader {
    dir: Option<std::path::PathBuf>,
    engine: std::sync::Arc<DisclosureEngine>,
    audit: idp_core::audit::AuditLog,
    /// The digest of the folder's files last acted on.
    seen: tokio::sync::Mutex<Option<String>>,
}

/// SHA-256 over the names and contents of the folder's policy files, in name order.
fn folder_digest(dir: &std::path::Path) -> Result<String, String> {
    use sha2::Digest as _;
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "cedar" || x == "cedarschema")
        })
        .collect();
    names.sort();
    let mut hash = sha2::Sha256::new();
    for path in names {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        hash.update(path.file_name().unwrap_or_default().as_encoded_bytes());
        hash.update([0]);
        hash.update(sha2::Sha256::digest(&bytes));
    }
    Ok(hex::encode(hash.finalize()))
}

impl PolicyReloader {
    pub fn new(
        dir: Option<std::path::PathBuf>,
        engine: std::sync::Arc<DisclosureEngine>,
        audit: idp_core::audit::AuditLog,
    ) -> Self {
        // Nothing seen yet: the first check loads the folder once and finds it unchanged
        // unless it changed since the start.
        Self {
            dir,
            engine,
            audit,
            seen: tokio::sync::Mutex::new(None),
        }
    }

    pub fn engine(&self) -> &DisclosureEngine {
        &self.engine
    }

    /// The policies folder, if one is configured.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// Checks the folder (at once when `force`, else only if its files changed) and
    /// reloads; `actor` is who asked (`system`, `signal`, `admin-api`).
    pub async fn reload(&self, actor: &str, force: bool) -> Result<ReloadOutcome, String> {
        // One reload at a time; the lock also orders the audit records.
        let mut seen = self.seen.lock().await;
        let in_force = self.engine.policy().version().to_owned();
        let Some(dir) = self.dir.clone() else {
            return Ok(ReloadOutcome::Builtin { version: in_force });
        };
        let digest = folder_digest(&dir);
        if !force && digest.as_ref().ok() == seen.as_ref() {
            return Ok(ReloadOutcome::Unchanged { version: in_force });
        }
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || DisclosurePolicy::load(&dir))
                .await
                .map_err(|e| e.to_string())?
        };
        let outcome = match (digest.clone(), loaded) {
            (Ok(_), Ok(policy)) if policy.version() == in_force => {
                ReloadOutcome::Unchanged { version: in_force }
            }
            (Ok(_), Ok(policy)) => {
                let to = policy.version().to_owned();
                // Recorded first: no policy is in force unrecorded.
                self.record(
                    actor,
                    "policy.reloaded",
                    json!({"from": in_force, "to": to, "permit": policy.count(true), "forbid": policy.count(false)}),
                )
                .await?;
                self.engine.replace(std::sync::Arc::new(policy));
                tracing::info!(from = %in_force, to = %to, "disclosure policy reloaded");
                ReloadOutcome::Reloaded { from: in_force, to }
            }
            (Err(e), _) => ReloadOutcome::Refused {
                error: e,
                version: in_force,
            },
            (_, Err(e)) => ReloadOutcome::Refused {
                error: e.to_string(),
                version: in_force,
            },
        };
        if let ReloadOutcome::Refused { error, version } = &outcome {
            tracing::error!(error = %error, in_force = %version, "disclosure policy refused; the one in force stays");
            // Once per change of the files, however often it is looked at.
            if force || digest.as_ref().ok() != seen.as_ref() {
                self.record(
                    actor,
                    "policy.refused",
                    json!({"error": error, "in_force": version}),
                )
                .await?;
            }
        }
        *seen = digest.ok();
        Ok(outcome)
    }

    async fn record(&self, actor: &str, action: &str, detail: Value) -> Result<(), String> {
        self.audit
            .record(idp_core::audit::AuditEvent::admin(
                actor, action, None, detail,
            ))
            .await
            .map_err(|e| format!("the audit log is unavailable: {e}"))
    }
}

/// Checks the policies folder every `interval`, and at once on SIGHUP.
pub fn spawn_policy_reloader(
    reloader: std::sync::Arc<PolicyReloader>,
    interval: std::time::Duration,
) {
    if reloader.dir().is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let (actor, force) = tokio::select! {
                _ = ticker.tick() => ("system", false),
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => ("signal", true),
            };
            if let Err(e) = reloader.reload(actor, force).await {
                tracing::error!(error = %e, "disclosure policy reload failed");
            }
        }
    });
}
