//! Starting the IdP from a loaded configuration.

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use idp_core::audit::AuditLog;
use idp_core::disclosure::DisclosureEngine;
use idp_core::hpki::HpkiValidator;
use idp_core::login::LoginService;
use idp_core::oidc::grant::GrantPolicy;
use idp_core::oidc::provider::{Provider, ProviderSettings, ProviderStores};
use idp_core::session::Sessions;
use idp_core::store::{ClientStore, DoctorDirectory, EphemeralStore};

use crate::app::{AppState, Metrics, login_routes, public_routes};
use crate::config::{ClientCertificateSource, Runtime};
use crate::oidc::OidcState;
use crate::{crl, tls};

/// A start-up failure, naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(String),
    #[error("ephemeral store: {0}")]
    Ephemeral(String),
    #[error("hpki.revocation.crl_files: {0}")]
    Crl(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("oidc: {0}")]
    Keys(String),
    #[error("saml: {0}")]
    Saml(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects storage (applying migrations) and loads CRLs: everything but the listeners.
pub async fn prepare(runtime: Arc<Runtime>) -> Result<web::Data<AppState>, StartError> {
    let database = idp_store::Database::connect(&runtime.config.storage.database)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;
    database
        .migrate()
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;
    let database = Arc::new(database);
    let doctors: Arc<dyn DoctorDirectory> = database.clone();
    let ephemeral: Arc<dyn EphemeralStore> =
        idp_store::connect_ephemeral(&runtime.config.storage.ephemeral)
            .await
            .map_err(|e| StartError::Ephemeral(e.to_string()))?;
    let validator = Arc::new(HpkiValidator::new(
        runtime.trust.clone(),
        runtime.validation.clone(),
    ));
    crl::load_files(&validator, &runtime.crl_files).map_err(StartError::Crl)?;
    crl::spawn_reloader(
        validator.clone(),
        runtime.crl_files.clone(),
        runtime.config.hpki.revocation.crl_urls.clone(),
        Duration::from_secs(runtime.config.hpki.revocation.reload_secs.max(1)),
        Duration::from_secs(runtime.config.hpki.revocation.url_refresh_secs.max(1)),
    );
    let sessions = Sessions::new(ephemeral.clone(), runtime.session);
    idp_core::audit::AuditStore::set_retention_days(
        database.as_ref(),
        runtime.config.audit.retention_days,
    )
    .await
    .map_err(|e| StartError::Database(e.to_string()))?;
    let signer = runtime
        .checkpoint_signer(true)
        .map_err(StartError::Database)?;
    #[cfg(not(feature = "bench-unaudited"))]
    let audit_store: Arc<dyn idp_core::audit::AuditStore> = database.clone();
    #[cfg(feature = "bench-unaudited")]
    let audit_store: Arc<dyn idp_core::audit::AuditStore> = {
        tracing::error!("built with bench-unaudited: nothing is audited (benchmarks only)");
        Arc::new(unaudited::Discard)
    };
    let audit = AuditLog::start(
        audit_store,
        Some(Arc::new(signer)),
        runtime.config.audit.checkpoint_every.max(1),
    );
    let login = LoginService::new(
        audit.clone(),
        ephemeral.clone(),
        doctors.clone(),
        validator.clone(),
        sessions,
        runtime.login,
    );
    let disclosure = Arc::new(DisclosureEngine::new(runtime.disclosure.clone()));
    let oidc = prepare_oidc(
        &runtime,
        &database,
        ephemeral.clone(),
        doctors.clone(),
        disclosure.clone(),
        audit.clone(),
    )
    .await?;
    let policies = Arc::new(crate::disclosure::PolicyReloader::new(
        runtime.policy_dir.clone(),
        disclosure.clone(),
        audit.clone(),
    ));
    let saml = crate::saml::prepare(
        &runtime,
        idp_saml::idp::IdpStores {
            audit,
            sps: database.clone(),
            consents: database.clone(),
            settings: database.clone(),
            doctors: doctors.clone(),
            ephemeral: ephemeral.clone(),
        },
        disclosure.clone(),
    )
    .await?;
    let state = web::Data::new(AppState {
        runtime: runtime.clone(),
        login,
        validator,
        doctors,
        ephemeral,
        metrics: Metrics::default(),
        oidc,
        saml,
        policies: policies.clone(),
        sps: database.clone(),
    });
    crate::disclosure::spawn_policy_reloader(
        policies,
        Duration::from_secs(runtime.config.disclosure.reload_secs.max(1)),
    );
    crate::saml::spawn_metadata_refresher(state.clone());
    crate::oidc::spawn_key_reloader(
        state.clone(),
        database,
        Duration::from_secs(runtime.config.oidc.key_reload_secs.max(1)),
    );
    Ok(state)
}

/// The OpenID Provider: configured clients applied, signing keys loaded (and generated
/// where an algorithm has none).
async fn prepare_oidc(
    runtime: &Runtime,
    database: &Arc<idp_store::Database>,
    ephemeral: Arc<dyn EphemeralStore>,
    doctors: Arc<dyn DoctorDirectory>,
    disclosure: Arc<DisclosureEngine>,
    audit: AuditLog,
) -> Result<OidcState, StartError> {
    let config = &runtime.config.oidc;
    let now = time::OffsetDateTime::now_utc();
    let clients: Arc<dyn ClientStore> = database.clone();
    let recorder = crate::admin::Recorder {
        audit: audit.clone(),
        actor: "config".into(),
    };
    for client in &runtime.clients {
        let stored = clients
            .client(&client.client_id)
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
        if stored.as_ref() == Some(client) {
            continue;
        }
        // Two processes starting at once may both insert a new client: the loser of that
        // race updates instead.
        let mut outcome = clients.put_client(client, now).await;
        if matches!(outcome, Err(idp_core::store::StoreError::Conflict(_))) {
            outcome = clients.put_client(client, now).await;
        }
        outcome.map_err(|e| StartError::Database(e.to_string()))?;
        // A configured client that is new or changed is an administrative change on record.
        recorder
            .record(
                "client.configured",
                Some(&client.client_id),
                crate::admin::client_detail(client),
            )
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
    }
    let id_token_ttl = Duration::from_secs(config.id_token_ttl_secs);
    let key_retention = id_token_ttl + Duration::from_secs(config.key_reload_secs + 300);
    let system = crate::admin::Recorder {
        audit: audit.clone(),
        actor: "system".into(),
    };
    let ring = crate::oidc::load_keys(
        database.as_ref(),
        &system,
        &config.signing_algs,
        key_retention,
        now,
    )
    .await
    .map_err(StartError::Keys)?;
    let issuer = runtime.config.issuer.clone();
    let settings = ProviderSettings {
        issuer: issuer.clone(),
        pairwise_salt: config.pairwise_salt.as_bytes().to_vec(),
        id_token_ttl,
        grants: GrantPolicy {
            access_token_ttl: Duration::from_secs(config.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
            refresh_family_ttl: Duration::from_secs(config.refresh_family_ttl_secs),
            ..GrantPolicy::default()
        },
        pending_ttl: Duration::from_secs(600),
        session_ttl: runtime.session.absolute,
    };
    let stores = ProviderStores {
        audit,
        clients,
        consents: database.clone(),
        settings: database.clone(),
        refresh: database.clone(),
        doctors,
        ephemeral,
    };
    let login_url = runtime.config.login.url.clone();
    let audiences = vec![
        issuer.clone(),
        format!("{issuer}/token"),
        format!("{login_url}/token"),
    ];
    let provider = Provider::new(settings, stores, ring.keys, disclosure, audiences);
    let discovery = crate::oidc::discovery_document(&issuer, &login_url, &config.signing_algs)
        .map_err(StartError::Keys)?;
    let rp_cas = Arc::new(tls::RpClientCas::new(&runtime.mtls_client_cas)?);
    let http = outbound_client(runtime, Duration::from_secs(5)).map_err(StartError::Keys)?;
    Ok(OidcState {
        provider,
        discovery,
        rp_cas,
        http,
        key_retention,
    })
}

/// The client for HTTPS to relying parties (back-channel logout, SAML metadata URLs):
/// no redirects followed, the system's roots plus `oidc.backchannel_ca_files`.
pub fn outbound_client(runtime: &Runtime, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut extra_roots = Vec::new();
    for der in &runtime.backchannel_cas {
        extra_roots.push(
            reqwest::Certificate::from_der(der)
                .map_err(|e| format!("oidc.backchannel_ca_files: {e}"))?,
        );
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_merge(extra_roots)
        .build()
        .map_err(|e| e.to_string())
}

/// Runs both listeners until the process is stopped.
pub async fn run(state: web::Data<AppState>) -> Result<(), StartError> {
    let runtime = state.runtime.clone();
    let public_tls = tls::public_server_config(&runtime.public_identity)?;
    let public_state = state.clone();
    let public = HttpServer::new(move || {
        App::new()
            .wrap(security_headers())
            .app_data(public_state.clone())
            .configure(public_routes)
    })
    .workers(workers())
    .listen_rustls_0_23(
        std::net::TcpListener::bind(runtime.config.public.listen)?,
        public_tls,
    )?
    .run();
    let login_state = state.clone();
    let login_builder = HttpServer::new(move || {
        App::new()
            .wrap(security_headers())
            .app_data(login_state.clone())
            .configure(login_routes)
    })
    .workers(workers())
    .on_connect(tls::capture_peer_chain);
    let login_listener = std::net::TcpListener::bind(runtime.config.login.listen)?;
    let login = match runtime.config.login.client_certificate {
        ClientCertificateSource::Tls => {
            let login_tls = tls::login_server_config(
                &runtime.login_identity,
                state.validator.clone(),
                state.oidc.rp_cas.clone(),
            )?;
            login_builder
                .listen_rustls_0_23(login_listener, login_tls)?
                .run()
        }
        ClientCertificateSource::Rfc9440Proxy => login_builder.listen(login_listener)?.run(),
    };
    tracing::info!(
        public = %runtime.config.public.url,
        login = %runtime.config.login.url,
        "idp listening"
    );
    tokio::try_join!(public, login)?;
    Ok(())
}

/// Headers on every response of both origins.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Strict-Transport-Security", "max-age=31536000"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// The audit store of a `bench-unaudited` build: chains and discards.
#[cfg(feature = "bench-unaudited")]
mod unaudited {
    use idp_core::audit::{AuditEvent, AuditRecord, AuditStore, Checkpoint, GENESIS, chain};
    use idp_core::store::StoreError;
    use time::OffsetDateTime;

    #[derive(Debug)]
    pub struct Discard;

    #[async_trait::async_trait]
    impl AuditStore for Discard {
        async fn append(
            &self,
            events: Vec<AuditEvent>,
            now: OffsetDateTime,
        ) -> Result<Vec<AuditRecord>, StoreError> {
            let at = i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
            Ok(chain(0, GENESIS, at, events))
        }
        async fn records_after(&self, _: i64, _: usize) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
        async fn put_checkpoint(&self, _: &Checkpoint) -> Result<(), StoreError> {
            Ok(())
        }
        async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
            Ok(Vec::new())
        }
        async fn records_between(
            &self,
            _: OffsetDateTime,
            _: OffsetDateTime,
        ) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
        async fn set_retention_days(&self, _: u32) -> Result<(), StoreError> {
            Ok(())
        }
        async fn retention_days(&self) -> Result<u32, StoreError> {
            Ok(idp_core::audit::MIN_RETENTION_DAYS)
        }
        async fn records_of(
            &self,
            _: &str,
            _: Option<i64>,
            _: usize,
        ) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
    }
}
