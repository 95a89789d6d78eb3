//! Configuration: one TOML file (`idp.toml`) plus `IDP__` environment overrides
//! (`IDP__STORAGE__DATABASE=postgres://…` overrides `[storage] database`), unknown keys
//! rejected, turned once into a typed [`Runtime`] that has every certificate, key and
//! anchor loaded, or an error that names what is wrong.

use idp_core::disclosure::Audience;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use idp_core::hpki::{RevocationFailure, RevocationPolicy, TrustStore, ValidationPolicy};
use idp_core::login::{LoginPolicy, RateLimit, UnknownHolder};
use idp_core::oidc::client::{ClientRegistration, SigningAlg, TokenEndpointAuthMethod};
use idp_core::oidc::subject::SubjectType;
use idp_core::session::SessionPolicy;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The IdP's issuer identifier (the public origin's URL).
    pub issuer: String,
    pub public: PublicListener,
    pub login: LoginListener,
    pub hpki: Hpki,
    pub storage: Storage,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    pub oidc: OidcConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// The SAML 2.0 IdP; absent: no SAML endpoints.
    #[serde(default)]
    pub saml: Option<SamlConfig>,
    #[serde(default)]
    pub disclosure: DisclosureConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

/// The audit log (docs/AUDIT.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 key (PKCS#8 PEM) that signs checkpoints; created at the first start
    /// when missing. Keep it outside the database and its backups.
    #[serde(default = "default_checkpoint_key")]
    pub checkpoint_key: PathBuf,
    /// A checkpoint after this many records (and after the first batch of a process).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Records younger than this many days cannot be deleted (the database refuses);
    /// at least 365, the MHLW guideline's year.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_key: default_checkpoint_key(),
            checkpoint_every: default_checkpoint_every(),
            retention_days: default_retention_days(),
        }
    }
}

fn default_retention_days() -> u32 {
    idp_core::audit::MIN_RETENTION_DAYS
}

fn default_checkpoint_key() -> PathBuf {
    PathBuf::from("audit-checkpoint.key")
}

fn default_checkpoint_every() -> usize {
    100
}

impl Runtime {
    /// The checkpoint key's file, resolved against the configuration's folder (an
    /// absolute path stays as it is).
    pub fn checkpoint_key_path(&self) -> PathBuf {
        self.base_dir.join(&self.config.audit.checkpoint_key)
    }

    /// The checkpoint signer; the key file is created (mode 0600) when missing.
    pub fn checkpoint_signer(
        &self,
        create: bool,
    ) -> Result<idp_core::audit::CheckpointSigner, String> {
        let path = self.checkpoint_key_path();
        if create && !path.exists() {
            let pem = idp_core::audit::CheckpointSigner::generate_pem()?;
            match write_private(&path, &pem) {
                Ok(()) => tracing::info!(path = %path.display(), "audit checkpoint key created"),
                // Another process starting at the same time created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("audit.checkpoint_key {}: {e}", path.display())),
            }
        }
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("audit.checkpoint_key {}: {e}", path.display()))?;
        idp_core::audit::CheckpointSigner::from_pem(&pem)
            .map_err(|e| format!("audit.checkpoint_key {}: {e}", path.display()))
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// The disclosure policy (docs/DISCLOSURE.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureConfig {
    /// The policies folder (`schema.cedarschema` and `*.cedar`); unset: the compiled-in
    /// defaults (the repository's `policies/`).
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// How often the folder is checked for changes (seconds); a change that loads
    /// replaces the policy, one that does not is refused and the policy in force stays.
    /// SIGHUP and `POST /admin/api/policies/reload` check at once.
    #[serde(default = "default_policy_reload_secs")]
    pub reload_secs: u64,
}

fn default_policy_reload_secs() -> u64 {
    5
}

impl Default for DisclosureConfig {
    fn default() -> Self {
        Self {
            policies: None,
            reload_secs: default_policy_reload_secs(),
        }
    }
}

/// The SAML 2.0 identity provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// The IdP's entity ID (default: `{issuer}/saml/metadata`, where the metadata is).
    #[serde(default)]
    pub entity_id: Option<String>,
    /// PEM private key (RSA ≥ 2048 or P-256) that signs responses and metadata.
    pub signing_key: PathBuf,
    /// PEM certificate of that key, published in the metadata.
    pub signing_cert: PathBuf,
    /// PEM certificate of the next key, published ahead of a rollover.
    #[serde(default)]
    pub next_signing_cert: Option<PathBuf>,
    /// Require signed AuthnRequests from every SP (`WantAuthnRequestsSigned`).
    #[serde(default)]
    pub require_signed_requests: bool,
    /// How long an assertion may be presented to the SP.
    #[serde(default = "default_assertion_ttl")]
    pub assertion_ttl_secs: u64,
    /// How old an AuthnRequest may be (its ID is remembered as long, against replay).
    #[serde(default = "default_assertion_ttl")]
    pub request_max_age_secs: u64,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
    /// The organisation named in the metadata.
    #[serde(default = "default_organization")]
    pub organization: String,
    /// How often metadata fetched from a URL is refreshed when it states no
    /// `cacheDuration`.
    #[serde(default = "default_metadata_refresh")]
    pub metadata_refresh_secs: u64,
    /// Service providers registered by configuration (applied at every start).
    #[serde(default)]
    pub sps: Vec<SpConfig>,
}

fn default_assertion_ttl() -> u64 {
    300
}

fn default_clock_skew() -> u64 {
    60
}

fn default_organization() -> String {
    "医師資格証 シングルサインオン".to_owned()
}

fn default_metadata_refresh() -> u64 {
    6 * 3600
}

/// A service provider registered in the configuration file: its metadata from a file or
/// an https URL (a URL needs the certificate that signs the metadata).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpConfig {
    #[serde(default)]
    pub metadata_file: Option<PathBuf>,
    #[serde(default)]
    pub metadata_url: Option<String>,
    #[serde(default)]
    pub metadata_signing_cert: Option<PathBuf>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub name_id_format: idp_saml::sp::NameIdFormat,
    #[serde(default = "yes")]
    pub sign_response: bool,
    #[serde(default)]
    pub require_signed_requests: bool,
    #[serde(default)]
    pub claims: Vec<String>,
    #[serde(default)]
    pub pre_approved: bool,
    /// `regional_network`, `jma_service` or `third_party` (the default).
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub idp_initiated: bool,
}

fn yes() -> bool {
    true
}

/// The admin API (`/admin/api/…` on the public origin).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// SHA-256 (hex) of the admin bearer token (`idp client hash-secret` prints it). Unset:
    /// the admin API does not exist.
    pub token_sha256: Option<String>,
}

/// The OpenID Provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Secret salt of pairwise subject identifiers: at least 16 characters, never changed
    /// once relying parties have stored subjects (set it by `IDP__OIDC__PAIRWISE_SALT`).
    pub pairwise_salt: String,
    #[serde(default = "default_token_ttl")]
    pub id_token_ttl_secs: u64,
    #[serde(default = "default_token_ttl")]
    pub access_token_ttl_secs: u64,
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_secs: u64,
    #[serde(default = "default_refresh_family_ttl")]
    pub refresh_family_ttl_secs: u64,
    /// Algorithms that always have a signing key; a missing one is generated at start.
    #[serde(default = "default_signing_algs")]
    pub signing_algs: Vec<SigningAlg>,
    /// How long `idp keys rotate` publishes a new key before it signs. Must exceed
    /// `key_reload_secs` so that every process and relying party has seen it.
    #[serde(default = "default_rotation_overlap")]
    pub key_publish_before_use_secs: u64,
    /// How often each process reloads the signing keys from the database.
    #[serde(default = "default_reload_secs")]
    pub key_reload_secs: u64,
    /// PEM files of the CAs that issue relying parties' TLS client certificates
    /// (`tls_client_auth`, RFC 8705). Empty: no mTLS clients.
    #[serde(default)]
    pub mtls_client_cas: Vec<PathBuf>,
    /// PEM files of CAs trusted, besides the system's roots, for HTTPS to relying parties:
    /// OIDC `backchannel_logout_uri`, SAML SOAP logout and metadata URLs (an internal CA,
    /// or the test PKI's TLS root in the demo).
    #[serde(default)]
    pub backchannel_ca_files: Vec<PathBuf>,
    /// Clients registered by configuration (applied to the database at every start).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

fn default_token_ttl() -> u64 {
    300
}

fn default_refresh_ttl() -> u64 {
    14 * 24 * 3600
}

fn default_refresh_family_ttl() -> u64 {
    30 * 24 * 3600
}

fn default_signing_algs() -> Vec<SigningAlg> {
    vec![SigningAlg::RS256, SigningAlg::ES256]
}

fn default_rotation_overlap() -> u64 {
    3600
}

/// A client registered in the configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    pub name: String,
    /// SHA-256 (hex) of the client secret (`idp client hash-secret` prints it).
    pub secret_sha256: Option<String>,
    pub auth_method: TokenEndpointAuthMethod,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub id_token_signed_response_alg: SigningAlg,
    #[serde(default)]
    pub subject_type: SubjectType,
    /// The pairwise sector; defaults to the host of the first redirect URI.
    pub sector: Option<String>,
    #[serde(default)]
    pub pre_approved: bool,
    /// `regional_network`, `jma_service` or `third_party` (the default).
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub refresh_tokens: bool,
    /// JWKS file of a `private_key_jwt` client.
    pub jwks_file: Option<PathBuf>,
    pub tls_client_auth_subject_dn: Option<String>,
    pub tls_client_certificate_sha256: Option<String>,
    pub backchannel_logout_uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicListener {
    pub listen: SocketAddr,
    /// The origin browsers use (scheme, host, port), e.g. `https://idp.example.jp`.
    pub url: String,
    /// PEM certificate chain of the TLS server certificate.
    pub cert: PathBuf,
    /// PEM private key of the TLS server certificate.
    pub key: PathBuf,
}

/// How the login origin receives the client certificate.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificateSource {
    /// From the TLS handshake on this listener (the default).
    #[default]
    Tls,
    /// From RFC 9440 `Client-Cert`/`Client-Cert-Chain` headers set by a TLS-terminating
    /// proxy, accepted only from `trusted_proxies` and validated again here. The listener
    /// then serves plain HTTP on an address only the proxy reaches.
    Rfc9440Proxy,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginListener {
    pub listen: SocketAddr,
    /// The login origin browsers use, e.g. `https://login.idp.example.jp`.
    pub url: String,
    /// Server certificate for this listener; defaults to the public one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub client_certificate: ClientCertificateSource,
    /// Proxy addresses allowed to send RFC 9440 headers (`rfc9440_proxy` only).
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hpki {
    /// PEM files of the trust anchors (HPKI roots or CAs trusted directly).
    pub anchors: Vec<PathBuf>,
    /// PEM files of intermediate CAs the deployment vouches for (never anchors).
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// When non-empty, card certificates must assert one of these policy OIDs.
    #[serde(default)]
    pub accepted_policies: Vec<String>,
    /// A valid card with no doctor record: `refuse` (default) or `provision`.
    #[serde(default)]
    pub unknown_holder: UnknownHolder,
    #[serde(default)]
    pub revocation: Revocation,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// CRL files (DER or PEM), re-read when they change.
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// CRL URLs fetched in the background; each must start with an `allowed_url_prefixes` entry.
    #[serde(default)]
    pub crl_urls: Vec<String>,
    #[serde(default)]
    pub allowed_url_prefixes: Vec<String>,
    /// Seconds between checks of the files (and retries of failed fetches).
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
    /// A URL's CRL is fetched again at its nextUpdate, and at the latest this many seconds
    /// after the last fetch.
    #[serde(default = "default_url_refresh_secs")]
    pub url_refresh_secs: u64,
    #[serde(default)]
    pub when_missing: RevocationFailure,
    #[serde(default)]
    pub when_stale: RevocationFailure,
    /// Per-issuer policy, naming the issuer by its CA certificate file.
    #[serde(default)]
    pub overrides: Vec<RevocationOverride>,
}

impl Default for Revocation {
    fn default() -> Self {
        Self {
            crl_files: Vec::new(),
            crl_urls: Vec::new(),
            allowed_url_prefixes: Vec::new(),
            reload_secs: default_reload_secs(),
            url_refresh_secs: default_url_refresh_secs(),
            when_missing: RevocationFailure::HardFail,
            when_stale: RevocationFailure::HardFail,
            overrides: Vec::new(),
        }
    }
}

fn default_reload_secs() -> u64 {
    60
}

fn default_url_refresh_secs() -> u64 {
    3600
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationOverride {
    pub issuer_cert: PathBuf,
    #[serde(default)]
    pub when_missing: RevocationFailure,
    #[serde(default)]
    pub when_stale: RevocationFailure,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `sqlite://path`, `sqlite::memory:` or `postgres://…`.
    pub database: String,
    /// `memory` or `redis://…`.
    pub ephemeral: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub idle_secs: u64,
    pub absolute_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let d = SessionPolicy::default();
        Self {
            idle_secs: d.idle.as_secs(),
            absolute_secs: d.absolute.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub failures_per_address: u64,
    pub failures_per_certificate: u64,
    pub window_secs: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let d = RateLimit::default();
        Self {
            failures_per_address: d.per_address,
            failures_per_certificate: d.per_certificate,
            window_secs: d.window.as_secs(),
        }
    }
}

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("{key}: cannot read {path}: {reason}")]
    Read {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: {path} holds no {what}")]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// A server certificate chain and key, loaded.
#[derive(Debug)]
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The configuration with every file loaded and checked.
#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub base_dir: PathBuf,
    pub public_identity: ServerIdentity,
    pub login_identity: ServerIdentity,
    pub trust: TrustStore,
    pub validation: ValidationPolicy,
    pub login: LoginPolicy,
    pub session: SessionPolicy,
    pub crl_files: Vec<PathBuf>,
    /// Clients of the configuration file, checked.
    pub clients: Vec<ClientRegistration>,
    /// Anchors of relying parties' TLS client certificates.
    pub mtls_client_cas: Vec<CertificateDer<'static>>,
    /// Extra roots for HTTPS to back-channel logout URIs.
    pub backchannel_cas: Vec<CertificateDer<'static>>,
    /// The SAML IdP, when configured.
    pub saml: Option<SamlRuntime>,
    /// The disclosure policy, loaded and validated.
    pub disclosure: Arc<idp_core::disclosure::DisclosurePolicy>,
    /// Its folder (`None`: the compiled-in defaults, which never change).
    pub policy_dir: Option<PathBuf>,
}

impl Config {
    /// Reads `path` and the `IDP__` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Read {
                key: "config",
                path: path.to_owned(),
                reason: "no such file".into(),
            });
        }
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("IDP__").split("__"))
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Loads every file the configuration names. Relative paths are relative to `base_dir`
    /// (the configuration file's folder).
    pub fn into_runtime(self, base_dir: &Path) -> Result<Arc<Runtime>, ConfigError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base_dir.join(p)
            }
        };
        for (key, url) in [
            ("public.url", &self.public.url),
            ("login.url", &self.login.url),
            ("issuer", &self.issuer),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.ends_with('/') {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "{url:?} must be an origin like https://host[:port] without a trailing slash"
                    ),
                });
            }
        }
        let public_identity = load_identity(
            ("public.cert", &resolve(&self.public.cert)),
            ("public.key", &resolve(&self.public.key)),
        )?;
        let login_identity = match (&self.login.cert, &self.login.key) {
            (Some(cert), Some(key)) => {
                load_identity(("login.cert", &resolve(cert)), ("login.key", &resolve(key)))?
            }
            (None, None) => ServerIdentity {
                chain: public_identity.chain.clone(),
                key: public_identity.key.clone_key(),
            },
            _ => {
                return Err(ConfigError::Invalid {
                    key: "login.cert",
                    reason: "set both login.cert and login.key, or neither".into(),
                });
            }
        };
        if self.login.client_certificate == ClientCertificateSource::Rfc9440Proxy
            && self.login.trusted_proxies.is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "login.trusted_proxies",
                reason: "rfc9440_proxy needs at least one trusted proxy address".into(),
            });
        }
        let mut anchors = Vec::new();
        for path in &self.hpki.anchors {
            anchors.extend(load_certs("hpki.anchors", &resolve(path))?);
        }
        let mut intermediates = Vec::new();
        for path in &self.hpki.intermediates {
            intermediates.extend(load_certs("hpki.intermediates", &resolve(path))?);
        }
        let trust = TrustStore::new(anchors, intermediates).map_err(|e| ConfigError::Invalid {
            key: "hpki.anchors",
            reason: e.to_string(),
        })?;
        let mut overrides = std::collections::HashMap::new();
        for o in &self.hpki.revocation.overrides {
            let certs = load_certs(
                "hpki.revocation.overrides.issuer_cert",
                &resolve(&o.issuer_cert),
            )?;
            for cert in certs {
                let (_, parsed) =
                    x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
                        ConfigError::Invalid {
                            key: "hpki.revocation.overrides.issuer_cert",
                            reason: e.to_string(),
                        }
                    })?;
                overrides.insert(
                    parsed.subject().as_raw().to_vec(),
                    RevocationPolicy {
                        when_missing: o.when_missing,
                        when_stale: o.when_stale,
                    },
                );
            }
        }
        for oid in &self.hpki.accepted_policies {
            let ok = oid.split('.').count() >= 2
                && oid
                    .split('.')
                    .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "hpki.accepted_policies",
                    reason: format!("{oid:?} is not a dotted OID"),
                });
            }
        }
        for url in &self.hpki.revocation.crl_urls {
            if !self
                .hpki
                .revocation
                .allowed_url_prefixes
                .iter()
                .any(|p| url.starts_with(p.as_str()))
            {
                return Err(ConfigError::Invalid {
                    key: "hpki.revocation.crl_urls",
                    reason: format!(
                        "{url} is not under any hpki.revocation.allowed_url_prefixes entry"
                    ),
                });
            }
        }
        let crl_files = self
            .hpki
            .revocation
            .crl_files
            .iter()
            .map(|p| resolve(p))
            .collect();
        let validation = ValidationPolicy {
            accepted_policies: self.hpki.accepted_policies.clone(),
            revocation: RevocationPolicy {
                when_missing: self.hpki.revocation.when_missing,
                when_stale: self.hpki.revocation.when_stale,
            },
            revocation_overrides: overrides,
        };
        let login = LoginPolicy {
            unknown_holder: self.hpki.unknown_holder,
            rate_limit: RateLimit {
                per_address: self.rate_limit.failures_per_address,
                per_certificate: self.rate_limit.failures_per_certificate,
                window: Duration::from_secs(self.rate_limit.window_secs),
            },
            ..LoginPolicy::default()
        };
        let session = SessionPolicy {
            idle: Duration::from_secs(self.session.idle_secs),
            absolute: Duration::from_secs(self.session.absolute_secs),
        };
        if session.idle.is_zero() || session.absolute < session.idle {
            return Err(ConfigError::Invalid {
                key: "session",
                reason: "idle_secs must be positive and at most absolute_secs".into(),
            });
        }
        if self.oidc.pairwise_salt.len() < 16 {
            return Err(ConfigError::Invalid {
                key: "oidc.pairwise_salt",
                reason: "must be at least 16 characters".into(),
            });
        }
        if self.oidc.signing_algs.is_empty() {
            return Err(ConfigError::Invalid {
                key: "oidc.signing_algs",
                reason: "name at least one algorithm (RS256 is mandatory for OpenID providers)"
                    .into(),
            });
        }
        if self.oidc.key_publish_before_use_secs <= self.oidc.key_reload_secs {
            return Err(ConfigError::Invalid {
                key: "oidc.key_publish_before_use_secs",
                reason: "must exceed oidc.key_reload_secs".into(),
            });
        }
        let mut mtls_client_cas = Vec::new();
        for path in &self.oidc.mtls_client_cas {
            mtls_client_cas.extend(load_certs("oidc.mtls_client_cas", &resolve(path))?);
        }
        let mut backchannel_cas = Vec::new();
        for path in &self.oidc.backchannel_ca_files {
            backchannel_cas.extend(load_certs("oidc.backchannel_ca_files", &resolve(path))?);
        }
        let mut clients = Vec::new();
        for c in &self.oidc.clients {
            let jwks = match &c.jwks_file {
                Some(path) => {
                    let bytes = read("oidc.clients.jwks_file", &resolve(path))?;
                    Some(
                        serde_json::from_slice(&bytes).map_err(|e| ConfigError::Invalid {
                            key: "oidc.clients.jwks_file",
                            reason: format!("{}: {e}", path.display()),
                        })?,
                    )
                }
                None => None,
            };
            let registration = ClientRegistration {
                secret_digest: c.secret_sha256.as_ref().map(|s| s.to_ascii_lowercase()),
                redirect_uris: c.redirect_uris.clone(),
                post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
                allowed_scopes: c.scopes.clone(),
                id_token_signed_response_alg: c.id_token_signed_response_alg,
                subject_type: c.subject_type,
                sector: c.sector.clone().unwrap_or_default(),
                pre_approved: c.pre_approved,
                audience: c.audience,
                jwks,
                tls_client_auth_subject_dn: c.tls_client_auth_subject_dn.clone(),
                tls_client_certificate_sha256: c.tls_client_certificate_sha256.clone(),
                backchannel_logout_uri: c.backchannel_logout_uri.clone(),
                refresh_tokens: c.refresh_tokens,
                ..ClientRegistration::new(&c.client_id, &c.name, c.auth_method)
            };
            registration
                .check()
                .map_err(|reason| ConfigError::Invalid {
                    key: "oidc.clients",
                    reason: format!("{}: {reason}", c.client_id),
                })?;
            clients.push(registration);
        }
        let saml = self.saml_runtime(&resolve)?;
        if self.audit.retention_days < idp_core::audit::MIN_RETENTION_DAYS {
            return Err(ConfigError::Invalid {
                key: "audit.retention_days",
                reason: format!(
                    "{} is below the floor of {} days (the MHLW guideline's year)",
                    self.audit.retention_days,
                    idp_core::audit::MIN_RETENTION_DAYS
                ),
            });
        }
        let policy_dir = self.disclosure.policies.as_deref().map(&resolve);
        let policy = match policy_dir.as_deref() {
            Some(dir) => idp_core::disclosure::DisclosurePolicy::load(dir),
            None => idp_core::disclosure::DisclosurePolicy::builtin(),
        }
        .map_err(|e| ConfigError::Invalid {
            key: "disclosure.policies",
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Runtime {
            saml,
            clients,
            disclosure: Arc::new(policy),
            policy_dir,
            mtls_client_cas,
            backchannel_cas,
            base_dir: base_dir.to_owned(),
            public_identity,
            login_identity,
            trust,
            validation,
            login,
            session,
            crl_files,
            config: self,
        }))
    }
}

/// The SAML IdP's configuration with its files loaded.
#[derive(Debug)]
pub struct SamlRuntime {
    pub entity_id: String,
    pub credential: idp_saml::crypto::SigningCredential,
    /// Base64 DER of the next signing certificate, published ahead of a rollover.
    pub next_certificate: Option<String>,
    /// Service providers of the configuration file: metadata (from a file, or `None`
    /// for a URL fetched at start) and settings.
    pub sps: Vec<(Option<String>, idp_saml::sp::SpSettings)>,
}

impl Config {
    fn saml_runtime(
        &self,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<Option<SamlRuntime>, ConfigError> {
        let Some(saml) = &self.saml else {
            return Ok(None);
        };
        let text = |key: &'static str, path: &Path| {
            String::from_utf8(read(key, &resolve(path))?).map_err(|_| ConfigError::Invalid {
                key,
                reason: "not UTF-8 text".into(),
            })
        };
        let credential = idp_saml::crypto::SigningCredential::from_pem(
            &text("saml.signing_key", &saml.signing_key)?,
            &text("saml.signing_cert", &saml.signing_cert)?,
        )
        .map_err(|e| ConfigError::Invalid {
            key: "saml.signing_key",
            reason: e.to_string(),
        })?;
        let next_certificate = match &saml.next_signing_cert {
            Some(path) => {
                let der = idp_saml::sp::pem_certificate(&text("saml.next_signing_cert", path)?)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: "saml.next_signing_cert",
                        reason: "not a PEM certificate".into(),
                    })?;
                Some(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    der,
                ))
            }
            None => None,
        };
        let entity_id = saml
            .entity_id
            .clone()
            .unwrap_or_else(|| format!("{}/saml/metadata", self.issuer));
        let now = time::OffsetDateTime::now_utc();
        let mut sps = Vec::new();
        for sp in &saml.sps {
            let metadata_signing_certificate = match &sp.metadata_signing_cert {
                Some(path) => Some(text("saml.sps.metadata_signing_cert", path)?),
                None => None,
            };
            let settings = idp_saml::sp::SpSettings {
                display_name: sp.display_name.clone(),
                name_id_format: sp.name_id_format,
                sign_response: sp.sign_response,
                require_signed_requests: sp.require_signed_requests,
                claims: sp.claims.clone(),
                pre_approved: sp.pre_approved,
                audience: sp.audience,
                metadata_url: sp.metadata_url.clone(),
                metadata_signing_certificate,
                idp_initiated: sp.idp_initiated,
            };
            let metadata = match (&sp.metadata_file, &sp.metadata_url) {
                (Some(path), None) => {
                    let xml = text("saml.sps.metadata_file", path)?;
                    idp_saml::sp::ServiceProvider::from_metadata(&xml, settings.clone(), now)
                        .map_err(|e| ConfigError::Invalid {
                            key: "saml.sps.metadata_file",
                            reason: format!("{}: {e}", path.display()),
                        })?;
                    Some(xml)
                }
                (None, Some(url)) => {
                    if !url.starts_with("https://") {
                        return Err(ConfigError::Invalid {
                            key: "saml.sps.metadata_url",
                            reason: format!("{url} is not an https URL"),
                        });
                    }
                    if settings.metadata_signing_certificate.is_none() {
                        return Err(ConfigError::Invalid {
                            key: "saml.sps.metadata_signing_cert",
                            reason: format!(
                                "metadata fetched from {url} must be signed: name the signer's certificate"
                            ),
                        });
                    }
                    None
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "saml.sps",
                        reason: "set exactly one of metadata_file and metadata_url".into(),
                    });
                }
            };
            sps.push((metadata, settings));
        }
        Ok(Some(SamlRuntime {
            entity_id,
            credential,
            next_certificate,
            sps,
        }))
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Read {
        key,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Certificates from a PEM file (or a single DER certificate).
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Read {
            key,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::Empty {
            key,
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

fn load_identity(
    (cert_name, cert): (&'static str, &Path),
    (key_name, key_path): (&'static str, &Path),
) -> Result<ServerIdentity, ConfigError> {
    let chain = load_certs(cert_name, cert)?;
    let bytes = read(key_name, key_path)?;
    let private = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| ConfigError::Read {
            key: key_name,
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| ConfigError::Empty {
            key: key_name,
            path: key_path.to_owned(),
            what: "PEM private key",
        })?;
    Ok(ServerIdentity {
        chain,
        key: private,
    })
}
