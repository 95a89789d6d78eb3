//! Configuration: one TOML file (`idp.toml`) plus `IDP__` environment overrides
//! (`IDP__STORAGE__DATABASE=postgres://…` overrides `[storage] database`), unknown keys
//! rejected, turned once into a typed [`Runtime`] that has every certificate, key and
//! anchor loaded, or an error that names what is wrong.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use idp_core::hpki::{RevocationFailure, RevocationPolicy, TrustStore, ValidationPolicy};
use idp_core::login::{LoginPolicy, RateLimit, UnknownHolder};
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
        Ok(Arc::new(Runtime {
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
