//! The administrators' disclosure (attribute-release) policy, in Cedar.
//!
//! The policy says what each relying party may ever receive: a claim is permitted when
//! some policy permits releasing it and none forbids it (Cedar's default deny). It is one
//! part of the release decision (docs/DISCLOSURE.md): released = requested ∩ permitted
//! here ∩ allowed by the doctor's own setting ∩ consented. The doctor's setting, the
//! consent, the login's `acr` and the stated purpose are in the request's context, so a
//! policy may also depend on them.
//!
//! Loading is all or nothing: the schema (`schema.cedarschema`) must parse, every
//! `*.cedar` file must parse, every policy must carry a unique `@id` annotation, no
//! template may appear, and the set must validate against the schema in strict mode.
//! Evaluation fails closed: a policy that errors while evaluating withholds the claim.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use idp_vocabulary::claim;

/// The schema file in a policies folder.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// The default policies, compiled in (the files of this folder): what `idp demo` and a
/// configuration without a policies folder use.
pub const DEFAULT_SCHEMA: &str = include_str!("../schema.cedarschema");
pub const DEFAULT_POLICIES: &[(&str, &str)] =
    &[("release.cedar", include_str!("../release.cedar"))];

/// The kind of organisation a relying party is. Registrations without one are third
/// parties: the least that is released.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Regional care networks (Hareyaka-net, iSN, Mame-net).
    RegionalNetwork,
    /// The JMA's own services and the modules built on relying-party-kit.
    JmaService,
    #[default]
    ThirdParty,
}

impl Audience {
    pub const ALL: [Self; 3] = [Self::RegionalNetwork, Self::JmaService, Self::ThirdParty];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegionalNetwork => "regional_network",
            Self::JmaService => "jma_service",
            Self::ThirdParty => "third_party",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The groups claims belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClaimGroup {
    /// Who the doctor is: names, gender, birth date.
    Identity,
    /// That the doctor is a doctor: the HPKI role, its issuer, `verified_claims`.
    Qualification,
    /// How to reach the doctor: email, address.
    Contact,
    /// The doctor registration (医籍登録) number and date.
    Registration,
    /// JMA membership, member ID, medical association.
    Membership,
}

impl ClaimGroup {
    pub const ALL: [Self; 5] = [
        Self::Identity,
        Self::Qualification,
        Self::Contact,
        Self::Registration,
        Self::Membership,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Qualification => "qualification",
            Self::Contact => "contact",
            Self::Registration => "registration",
            Self::Membership => "membership",
        }
    }
}

/// Every claim a policy decides on, with its group.
pub const CLAIMS: &[(&str, ClaimGroup)] = &[
    (claim::NAME, ClaimGroup::Identity),
    (claim::FAMILY_NAME, ClaimGroup::Identity),
    (claim::GIVEN_NAME, ClaimGroup::Identity),
    (claim::GENDER, ClaimGroup::Identity),
    (claim::BIRTHDATE, ClaimGroup::Identity),
    (claim::AGE, ClaimGroup::Identity),
    (claim::HPKI_ROLE, ClaimGroup::Qualification),
    (claim::HPKI_ISSUER, ClaimGroup::Qualification),
    (claim::VERIFIED_CLAIMS, ClaimGroup::Qualification),
    (claim::EMAIL, ClaimGroup::Contact),
    (claim::ADDRESS, ClaimGroup::Contact),
    (claim::DOCTOR_REGISTRATION_NUMBER, ClaimGroup::Registration),
    (claim::DOCTOR_REGISTRATION_DATE, ClaimGroup::Registration),
    (claim::JMA_MEMBER, ClaimGroup::Membership),
    (claim::JMA_MEMBER_ID, ClaimGroup::Membership),
    (claim::MEDICAL_ASSOCIATION, ClaimGroup::Membership),
];

/// The group of a claim (by base name); `None` for a claim no policy knows, which is
/// never released.
pub fn group_of(claim_name: &str) -> Option<ClaimGroup> {
    CLAIMS
        .iter()
        .find(|(name, _)| *name == claim_name)
        .map(|(_, group)| *group)
}

/// Why a policy folder did not load. The message names the file and the policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{SCHEMA_FILE}: {0}")]
    Schema(String),
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: a policy has no @id annotation (every policy needs one: decisions name it)")]
    MissingId { file: String },
    #[error("{file}: the @id {id:?} is used twice")]
    DuplicateId { file: String, id: String },
    #[error("{file}: templates are not supported here")]
    Template { file: String },
    #[error("no policy files (*.cedar): nothing would ever be released")]
    Empty,
    #[error("the policies do not validate against the schema:\n{0}")]
    Invalid(String),
}

/// The relying party a decision is for.
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    /// The client ID or the SP's entity ID.
    pub id: &'a str,
    pub audience: Audience,
    /// `"oidc"` or `"saml"`.
    pub protocol: &'a str,
    pub pre_approved: bool,
}

/// What is known about one claim at one login: the request's context.
#[derive(Clone, Copy, Debug)]
pub struct ClaimContext<'a> {
    pub doctor_allows: bool,
    pub consented: bool,
    pub acr: &'a str,
    pub purpose: &'a str,
}

/// The policy's verdict on one claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Permitted by these policies.
    Permitted(Vec<String>),
    /// Forbidden by these policies.
    Forbidden(Vec<String>),
    /// No policy permits it (Cedar's default deny).
    NotPermitted,
    /// The claim is not in the vocabulary.
    UnknownClaim,
    /// A policy failed to evaluate: withheld (fail closed).
    Error(String),
}

impl Verdict {
    pub fn is_permitted(&self) -> bool {
        matches!(self, Self::Permitted(_))
    }
}

/// A loaded, validated policy set with its schema and base entities.
pub struct DisclosurePolicy {
    schema: Schema,
    policies: PolicySet,
    /// Audiences, claim groups and claims.
    entities_base: Entities,
    version: String,
    /// `@reason` of each policy, by `@id`.
    reasons: BTreeMap<String, String>,
    authorizer: Authorizer,
    action: EntityUid,
    /// The entity of each claim of [`CLAIMS`], by position.
    claim_uids: Vec<EntityUid>,
    /// Verdicts already computed (see [`DisclosurePolicy::decide`]).
    memo: RwLock<HashMap<String, Arc<Memo>>>,
}

/// The verdicts of one recipient and login context (acr, purpose): one slot per claim of
/// [`CLAIMS`] and per value of `doctor_allows` and `consented`.
type Memo = [OnceLock<Verdict>; CLAIMS.len() * 4];

/// Recipient contexts remembered at most; the memo starts afresh beyond.
const MEMO_RECIPIENTS: usize = 4096;

impl fmt::Debug for DisclosurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DisclosurePolicy")
            .field("version", &self.version)
            .field("policies", &self.reasons.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn uid(type_name: &str, id: &str) -> EntityUid {
    // The type names are this module's constants and parse; the IDs may be anything.
    let type_name = EntityTypeName::from_str(type_name)
        .unwrap_or_else(|_| unreachable!("entity type {type_name} is a constant of this module"));
    EntityUid::from_type_name_and_id(type_name, EntityId::new(id))
}

impl DisclosurePolicy {
    /// The compiled-in default policies.
    pub fn builtin() -> Result<Self, PolicyError> {
        let files: Vec<(String, String)> = DEFAULT_POLICIES
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        Self::from_sources(DEFAULT_SCHEMA, files)
    }

    /// Loads `dir/schema.cedarschema` and every `dir/*.cedar` (in name order).
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        let schema = read(&dir.join(SCHEMA_FILE))?;
        let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::Read {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| PolicyError::Read {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?
                .path();
            if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.push((name, read(&path)?));
            }
        }
        files.sort();
        Self::from_sources(&schema, files)
    }

    /// A policy set from the schema's text and `(file name, text)` policy files.
    pub fn from_sources(
        schema_text: &str,
        files: Vec<(String, String)>,
    ) -> Result<Self, PolicyError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema_text)
            .map_err(|e| PolicyError::Schema(e.to_string()))?;
        if files.is_empty() {
            return Err(PolicyError::Empty);
        }
        let mut policies = PolicySet::new();
        let mut reasons = BTreeMap::new();
        for (file, text) in &files {
            let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
                file: file.clone(),
                message: e.to_string(),
            })?;
            if parsed.templates().next().is_some() {
                return Err(PolicyError::Template { file: file.clone() });
            }
            let mut in_file: Vec<&Policy> = parsed.policies().collect();
            // Source order (the parser numbers them policy0, policy1, …).
            in_file.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            for policy in in_file {
                let id = policy
                    .annotation("id")
                    .filter(|id| !id.trim().is_empty())
                    .ok_or_else(|| PolicyError::MissingId { file: file.clone() })?
                    .to_owned();
                if reasons.contains_key(&id) {
                    return Err(PolicyError::DuplicateId {
                        file: file.clone(),
                        id,
                    });
                }
                let reason = policy.annotation("reason").unwrap_or_default().to_owned();
                policies
                    .add(policy.new_id(PolicyId::new(&id)))
                    .map_err(|e| PolicyError::Parse {
                        file: file.clone(),
                        message: e.to_string(),
                    })?;
                reasons.insert(id, reason);
            }
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let errors: Vec<String> = validation
                .validation_errors()
                .map(|e| format!("- {e}"))
                .collect();
            return Err(PolicyError::Invalid(errors.join("\n")));
        }
        let entities_base = Entities::from_entities(base_entities(), Some(&schema))
            .map_err(|e| PolicyError::Schema(format!("the IdP's entities do not fit: {e}")))?;
        let mut hash = Sha256::new();
        hash.update(schema_text.as_bytes());
        for (file, text) in &files {
            hash.update([0]);
            hash.update(file.as_bytes());
            hash.update([0]);
            hash.update(text.as_bytes());
        }
        let version = format!("sha256:{}", &hex::encode(hash.finalize())[..16]);
        let claim_uids = CLAIMS
            .iter()
            .map(|(name, _)| uid("Idp::Claim", name))
            .collect();
        Ok(Self {
            schema,
            policies,
            entities_base,
            version,
            reasons,
            authorizer: Authorizer::new(),
            action: uid("Idp::Action", "release"),
            claim_uids,
            memo: RwLock::new(HashMap::new()),
        })
    }

    /// A short digest of the schema and the policy files: consents and audit records
    /// name the policy version they were made under.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `@id`s with their `@reason`s.
    pub fn reasons(&self) -> &BTreeMap<String, String> {
        &self.reasons
    }

    /// The `@reason` of a policy.
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.reasons.get(id).map(String::as_str)
    }

    /// How many policies permit (`true`) or forbid (`false`).
    pub fn count(&self, effect_permit: bool) -> usize {
        self.policies
            .policies()
            .filter(|p| (p.effect() == Effect::Permit) == effect_permit)
            .count()
    }

    /// The entities of one decision (the base ones and the relying party) and the
    /// relying party's UID.
    fn entities_for(&self, recipient: &Recipient<'_>) -> Result<(Entities, EntityUid), String> {
        let principal = uid("Idp::RelyingParty", recipient.id);
        let attrs = HashMap::from([
            (
                "protocol".to_owned(),
                RestrictedExpression::new_string(recipient.protocol.to_owned()),
            ),
            (
                "pre_approved".to_owned(),
                RestrictedExpression::new_bool(recipient.pre_approved),
            ),
        ]);
        let rp = Entity::new(
            principal.clone(),
            attrs,
            HashSet::from([uid("Idp::Audience", recipient.audience.as_str())]),
        )
        .map_err(|e| e.to_string())?;
        let entities = self
            .entities_base
            .clone()
            .add_entities([rp], None)
            .map_err(|e| e.to_string())?;
        Ok((entities, principal))
    }

    /// The verdict on each claim (by base name) for `recipient`, in order.
    ///
    /// A verdict is a pure function of the policy set, the recipient (ID, audience,
    /// protocol, pre-approval: the only entity data) and the context, and this policy set
    /// never changes (a reload is a new `DisclosurePolicy`), so verdicts are memoised per
    /// recipient and context: Cedar runs once per distinct question, then the answer is a
    /// lookup.
    pub fn decide<'c>(
        &self,
        recipient: &Recipient<'_>,
        claims: impl IntoIterator<Item = (&'c str, ClaimContext<'c>)>,
    ) -> Vec<Verdict> {
        let claims: Vec<(&str, ClaimContext<'_>)> = claims.into_iter().collect();
        // Built only when a verdict is not remembered yet.
        let mut entities: Option<(Entities, EntityUid)> = None;
        let mut memo_of: HashMap<(&str, &str), Arc<Memo>> = HashMap::new();
        let mut out = Vec::with_capacity(claims.len());
        for (name, context) in claims {
            let Some(index) = CLAIMS.iter().position(|(n, _)| *n == name) else {
                out.push(Verdict::UnknownClaim);
                continue;
            };
            let memo = memo_of
                .entry((context.acr, context.purpose))
                .or_insert_with(|| self.memo(recipient, context.acr, context.purpose))
                .clone();
            let slot = &memo[index * 4
                + usize::from(context.doctor_allows) * 2
                + usize::from(context.consented)];
            if let Some(verdict) = slot.get() {
                out.push(verdict.clone());
                continue;
            }
            let (entities, principal) = match &entities {
                Some(e) => e,
                None => match self.entities_for(recipient) {
                    Ok(e) => entities.insert(e),
                    // Not remembered: nothing was decided.
                    Err(e) => {
                        out.push(Verdict::Error(e));
                        continue;
                    }
                },
            };
            let verdict = self.decide_one(entities, principal, &self.claim_uids[index], &context);
            out.push(slot.get_or_init(|| verdict).clone());
        }
        out
    }

    /// The memo of a recipient and login context.
    fn memo(&self, recipient: &Recipient<'_>, acr: &str, purpose: &str) -> Arc<Memo> {
        // Unambiguous: every field is length-prefixed.
        let key = [
            recipient.id,
            recipient.audience.as_str(),
            recipient.protocol,
            if recipient.pre_approved { "1" } else { "0" },
            acr,
            purpose,
        ]
        .iter()
        .map(|f| format!("{}:{f}", f.len()))
        .collect::<String>();
        if let Some(memo) = self
            .memo
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return memo.clone();
        }
        let mut map = self
            .memo
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MEMO_RECIPIENTS {
            map.clear();
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(std::array::from_fn(|_| OnceLock::new())))
            .clone()
    }

    fn decide_one(
        &self,
        entities: &Entities,
        principal: &EntityUid,
        resource: &EntityUid,
        context: &ClaimContext<'_>,
    ) -> Verdict {
        let context = Context::from_pairs([
            (
                "doctor_allows".to_owned(),
                RestrictedExpression::new_bool(context.doctor_allows),
            ),
            (
                "consented".to_owned(),
                RestrictedExpression::new_bool(context.consented),
            ),
            (
                "acr".to_owned(),
                RestrictedExpression::new_string(context.acr.to_owned()),
            ),
            (
                "purpose".to_owned(),
                RestrictedExpression::new_string(context.purpose.to_owned()),
            ),
        ]);
        // The request is built from our own typed values, which fit the schema by
        // construction (a test validates one against it): no per-claim validation.
        let request = context.map_err(|e| e.to_string()).and_then(|context| {
            Request::new(
                principal.clone(),
                self.action.clone(),
                resource.clone(),
                context,
                None,
            )
            .map_err(|e| e.to_string())
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => return Verdict::Error(e),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Verdict::Error(errors.join("; "));
        }
        let mut by: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        by.sort();
        match (response.decision(), by.is_empty()) {
            (Decision::Allow, _) => Verdict::Permitted(by),
            (Decision::Deny, true) => Verdict::NotPermitted,
            (Decision::Deny, false) => Verdict::Forbidden(by),
        }
    }

    /// The schema (tests validate requests against it).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

/// Audiences, claim groups and claims in their groups.
fn base_entities() -> Vec<Entity> {
    let mut out: Vec<Entity> = Audience::ALL
        .iter()
        .map(|a| Entity::new_no_attrs(uid("Idp::Audience", a.as_str()), HashSet::new()))
        .collect();
    out.extend(
        ClaimGroup::ALL
            .iter()
            .map(|g| Entity::new_no_attrs(uid("Idp::ClaimGroup", g.as_str()), HashSet::new())),
    );
    out.extend(CLAIMS.iter().map(|(name, group)| {
        Entity::new_no_attrs(
            uid("Idp::Claim", name),
            HashSet::from([uid("Idp::ClaimGroup", group.as_str())]),
        )
    }));
    out
}
