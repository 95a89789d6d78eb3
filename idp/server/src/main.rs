//! `idp`: the HPKI single sign-on identity provider.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use idp_core::disclosure::{DisclosureEngine, DisclosurePolicy};
use idp_core::store::{ClientStore, DoctorDirectory};
use idp_server::config::Config;
use idp_server::demo::{self, DemoOptions};
use idp_server::serve;
use time::OffsetDateTime;

#[derive(Parser)]
#[command(
    name = "idp",
    version,
    about = "HPKI single sign-on identity provider for Japanese doctors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the IdP (both listeners) from a configuration file.
    Serve {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
    /// Run everything on embedded defaults with a generated test PKI and test cards.
    Demo {
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 8443)]
        public_port: u16,
        #[arg(long, default_value_t = 8444)]
        login_port: u16,
        /// Where the doctor portal runs (registered as a client of the demo).
        #[arg(long, default_value_t = 9443)]
        portal_port: u16,
        #[arg(long, default_value = "demo")]
        seed: String,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
    /// Check a configuration file (every file it names, every anchor) and exit.
    CheckConfig {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
    /// Write an HPKI-shaped test PKI and doctor cards.
    DevPki {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "dev")]
        seed: String,
        /// Issue date (YYYY-MM-DD) all validity periods derive from; default today (UTC).
        #[arg(long)]
        issued_at: Option<String>,
        /// Also create a SoftHSM2 token per card (needs SOFTHSM2_CONF set to
        /// <out>/softhsm/softhsm2.conf).
        #[arg(long)]
        softhsm: bool,
    },
    /// Doctor records.
    Doctors {
        #[command(subcommand)]
        command: DoctorsCommand,
    },
    /// ID token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// OpenID Connect clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// SAML service providers: register from metadata, list, remove.
    Sp {
        #[command(subcommand)]
        command: SpCommand,
    },
    /// The audit log: verify the chain, export a time range.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The disclosure policy (Cedar).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Why a relying party receives, or not, each claim of a doctor at a card login now.
    Explain {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        /// The OIDC client ID or the SAML SP's entity ID.
        #[arg(long)]
        client: String,
        /// The doctor's ID or HPKI holder ID.
        #[arg(long)]
        doctor: String,
        /// Print the JSON of the admin API instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the whole hash chain: the number of records and the last hash, or the
    /// first broken record (exit 1).
    Verify {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
    /// Write the records of a time range as JSON lines.
    Export {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        /// Start (inclusive): RFC 3339 or YYYY-MM-DD (UTC); default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive): RFC 3339 or YYYY-MM-DD (UTC); default: now.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load and validate a policies folder (schema.cedarschema and *.cedar): the folder
    /// given, or the configuration's [disclosure] policies, or the compiled-in defaults.
    Check {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, short, env = "IDP_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new key: published at once, signing after oidc.key_publish_before_use_secs
    /// (or --activate-in); the old key stays published until its tokens have expired.
    Rotate {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// Seconds until the new key signs (default from the configuration).
        #[arg(long)]
        activate_in: Option<u64>,
    },
    /// List keys as JSON lines with their state.
    List {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; a generated secret is printed once.
    Add {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        #[command(flatten)]
        args: Box<idp_server::admin::ClientArgs>,
    },
    /// List clients as JSON lines (without secrets).
    List {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
    /// Remove a client with its consents and refresh tokens.
    Remove {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        id: String,
    },
    /// Replace a client's secret; the new one is printed once.
    RotateSecret {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        id: String,
    },
    /// Print the SHA-256 of a secret read from standard input (for oidc.clients in the
    /// configuration file).
    HashSecret,
}

#[derive(Subcommand)]
enum SpCommand {
    /// Register (or replace) an SP from its metadata file or https URL.
    Add {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        #[command(flatten)]
        args: Box<idp_server::admin::SpArgs>,
    },
    /// List SPs as JSON lines.
    List {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
    /// Remove an SP with the consents given to it.
    Remove {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        entity_id: String,
    },
}

#[derive(Subcommand)]
enum DoctorsCommand {
    /// Import (insert or update by hpki_holder_id) from CSV, all or nothing.
    Import {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
        file: PathBuf,
    },
    /// List doctor records as JSON lines.
    List {
        #[arg(long, short, env = "IDP_CONFIG", default_value = "idp.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = actix_web::rt::System::with_tokio_rt(|| runtime).block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn base_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn load(config: &Path) -> Result<std::sync::Arc<idp_server::config::Runtime>, String> {
    Config::load(config)
        .and_then(|c| c.into_runtime(&base_dir(config)))
        .map_err(|e| e.to_string())
}

async fn database(config: &Path) -> Result<idp_store::Database, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let db = idp_store::Database::connect(&config.storage.database)
        .await
        .map_err(|e| format!("database: {e}"))?;
    db.migrate().await.map_err(|e| format!("database: {e}"))?;
    Ok(db)
}

/// The audit log of an administrative command: records chain into the database's log
/// (the running servers sign checkpoints over them), by `cli:<user>`.
fn cli_recorder(db: &idp_store::Database) -> idp_server::admin::Recorder {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    idp_server::admin::Recorder {
        audit: idp_core::audit::AuditLog::start(std::sync::Arc::new(db.clone()), None, usize::MAX),
        actor: format!("cli:{user}"),
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config } => {
            let runtime = load(&config)?;
            let state = serve::prepare(runtime).await.map_err(|e| e.to_string())?;
            serve::run(state).await.map_err(|e| e.to_string())
        }
        Command::Demo {
            dir,
            public_port,
            login_port,
            portal_port,
            seed,
        } => {
            let opts = DemoOptions {
                dir,
                public_port,
                login_port,
                portal_port,
                seed,
            };
            let (config, manifest) = demo::prepare(&opts).await?;
            let runtime = load(&config)?;
            let state = serve::prepare(runtime).await.map_err(|e| e.to_string())?;
            println!("{}", demo::instructions(&opts, &manifest));
            serve::run(state).await.map_err(|e| e.to_string())
        }
        Command::Migrate { config } => {
            database(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let runtime = load(&config)?;
            println!(
                "configuration OK: {} anchor(s), {} intermediate(s), {} CRL file(s)",
                runtime.trust.anchors().len(),
                runtime.trust.intermediates().len(),
                runtime.crl_files.len()
            );
            Ok(())
        }
        Command::DevPki {
            out,
            seed,
            issued_at,
            softhsm,
        } => {
            let issued_at = match issued_at {
                Some(date) => {
                    let format = time::macros::format_description!("[year]-[month]-[day]");
                    time::Date::parse(&date, format)
                        .map_err(|e| format!("--issued-at {date:?}: {e} (expected YYYY-MM-DD)"))?
                        .midnight()
                        .assume_utc()
                }
                None => OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT),
            };
            let softhsm = if softhsm {
                let module = idp_devpki::default_softhsm_module()
                    .ok_or("--softhsm: libsofthsm2.so not found (install the softhsm2 package)")?;
                Some(idp_devpki::SoftHsm { module })
            } else {
                None
            };
            let manifest = idp_devpki::generate(&idp_devpki::Options {
                seed,
                issued_at,
                out_dir: out.clone(),
                softhsm,
                crl_next_update: None,
            })
            .map_err(|e| e.to_string())?;
            println!(
                "wrote {} cards to {} (see README.md there)",
                manifest.cards.len(),
                out.display()
            );
            Ok(())
        }
        Command::Keys { command } => match command {
            KeysCommand::Rotate {
                config,
                alg,
                activate_in,
            } => {
                let runtime = load(&config)?;
                let db = database(&config).await?;
                let alg: idp_core::oidc::client::SigningAlg =
                    serde_json::from_value(serde_json::json!(alg))
                        .map_err(|_| "--alg must be RS256, PS256, ES256 or EdDSA".to_owned())?;
                let wait = activate_in.unwrap_or(runtime.config.oidc.key_publish_before_use_secs);
                let key = idp_server::admin::rotate_key(
                    &db,
                    &cli_recorder(&db),
                    alg,
                    std::time::Duration::from_secs(wait),
                    OffsetDateTime::now_utc(),
                )
                .await?;
                println!(
                    "key {} ({}) published; it signs from {}",
                    key.kid,
                    alg.as_str(),
                    key.active_from
                );
                Ok(())
            }
            KeysCommand::List { config } => {
                let runtime = load(&config)?;
                let db = database(&config).await?;
                let oidc = &runtime.config.oidc;
                let retention = std::time::Duration::from_secs(
                    oidc.id_token_ttl_secs + oidc.key_reload_secs + 300,
                );
                for line in
                    idp_server::admin::list_keys(&db, retention, OffsetDateTime::now_utc()).await?
                {
                    println!("{line}");
                }
                Ok(())
            }
        },
        Command::Client { command } => match command {
            ClientCommand::Add { config, args } => {
                let db = database(&config).await?;
                let recorder = cli_recorder(&db);
                let (client, secret) =
                    idp_server::admin::add_client(&db, &recorder, *args, OffsetDateTime::now_utc())
                        .await?;
                println!("client {} registered", client.client_id);
                if let Some(secret) = secret {
                    println!("client_secret: {}", secret.dangerous_expose());
                    println!("(shown once; only its digest is stored)");
                }
                Ok(())
            }
            ClientCommand::List { config } => {
                let db = database(&config).await?;
                for client in db.clients().await.map_err(|e| e.to_string())? {
                    println!("{}", idp_server::admin::client_summary(&client));
                }
                Ok(())
            }
            ClientCommand::Remove { config, id } => {
                let db = database(&config).await?;
                let recorder = cli_recorder(&db);
                if idp_server::admin::remove_client(&db, &recorder, &id).await? {
                    println!("client {id} removed");
                    Ok(())
                } else {
                    Err(format!("no client {id:?}"))
                }
            }
            ClientCommand::RotateSecret { config, id } => {
                let db = database(&config).await?;
                let recorder = cli_recorder(&db);
                let secret = idp_server::admin::rotate_secret(
                    &db,
                    &recorder,
                    &id,
                    OffsetDateTime::now_utc(),
                )
                .await?;
                println!("client_secret: {}", secret.dangerous_expose());
                Ok(())
            }
            ClientCommand::HashSecret => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| e.to_string())?;
                let secret = idp_core::secret::Secret::from_client_secret(line.trim_end())
                    .ok_or("the secret must be 1 to 256 visible ASCII characters")?;
                println!("{}", secret.digest());
                Ok(())
            }
        },
        Command::Sp { command } => match command {
            SpCommand::Add { config, args } => {
                let db = database(&config).await?;
                let http = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| e.to_string())?;
                let recorder = cli_recorder(&db);
                let sp = idp_server::admin::add_sp(
                    &db,
                    &recorder,
                    &http,
                    *args,
                    OffsetDateTime::now_utc(),
                )
                .await?;
                println!("SP {} registered", sp.entity_id);
                Ok(())
            }
            SpCommand::List { config } => {
                let db = database(&config).await?;
                for line in idp_server::admin::list_sps(&db, OffsetDateTime::now_utc()).await? {
                    println!("{line}");
                }
                Ok(())
            }
            SpCommand::Remove { config, entity_id } => {
                let db = database(&config).await?;
                let recorder = cli_recorder(&db);
                if idp_server::admin::remove_sp(&db, &recorder, &entity_id).await? {
                    println!("SP {entity_id} removed");
                    Ok(())
                } else {
                    Err(format!("no SP {entity_id:?}"))
                }
            }
        },
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            let runtime = load(&config)?;
            let signer = runtime.checkpoint_signer(false)?;
            let db = database(&config).await?;
            let report = idp_core::audit::verify_with_checkpoints(&db, &signer.public_key())
                .await
                .map_err(|e| format!("audit log broken: {e}"))?;
            println!(
                "audit chain intact: {} record(s), last hash {}; {} checkpoint(s) verified, the last at record {}",
                report.records,
                report.last_hash,
                report.checkpoints,
                report
                    .last_checkpoint
                    .map_or("none".to_owned(), |s| s.to_string())
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Export { config, from, to },
        } => {
            let db = database(&config).await?;
            let from = from
                .as_deref()
                .map(parse_instant)
                .transpose()?
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let to = to
                .as_deref()
                .map(parse_instant)
                .transpose()?
                .unwrap_or_else(OffsetDateTime::now_utc);
            let records = idp_core::audit::AuditStore::records_between(&db, from, to)
                .await
                .map_err(|e| e.to_string())?;
            for record in records {
                println!(
                    "{}",
                    serde_json::to_string(&record).map_err(|e| e.to_string())?
                );
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Check { dir, config },
        } => {
            // The configuration's folder is read as the server reads it, relative to the
            // configuration file; nothing else of the configuration is loaded.
            let dir = match (dir, config) {
                (Some(dir), _) => Some(dir),
                (None, Some(config)) => Config::load(&config)
                    .map_err(|e| e.to_string())?
                    .disclosure
                    .policies
                    .map(|p| base_dir(&config).join(p)),
                (None, None) => None,
            };
            let (policy, source) = match &dir {
                Some(dir) => (DisclosurePolicy::load(dir), dir.display().to_string()),
                None => (
                    DisclosurePolicy::builtin(),
                    "compiled-in defaults".to_owned(),
                ),
            };
            let policy = policy.map_err(|e| e.to_string())?;
            print!(
                "{}",
                idp_server::disclosure::policy_summary(&policy, &source)
            );
            Ok(())
        }
        Command::Explain {
            config,
            client,
            doctor,
            json,
        } => {
            let runtime = load(&config)?;
            let db = database(&config).await?;
            let engine = DisclosureEngine::new(runtime.disclosure.clone());
            let explanation = idp_server::disclosure::explain(
                &engine,
                idp_server::disclosure::ExplainStores {
                    doctors: &db,
                    clients: &db,
                    sps: &db,
                    consents: &db,
                    settings: &db,
                },
                &client,
                &doctor,
                OffsetDateTime::now_utc(),
            )
            .await?;
            if json {
                println!("{explanation:#}");
            } else {
                for line in idp_server::disclosure::explanation_lines(&explanation) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::Doctors { command } => match command {
            DoctorsCommand::Import { config, file } => {
                let db = database(&config).await?;
                let reader =
                    std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let profiles = idp_store::csv_import::parse_doctors(reader)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let report = db
                    .import(&profiles, OffsetDateTime::now_utc())
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "imported: {} inserted, {} updated",
                    report.inserted, report.updated
                );
                Ok(())
            }
            DoctorsCommand::List { config } => {
                let db = database(&config).await?;
                for doctor in db.list().await.map_err(|e| e.to_string())? {
                    println!(
                        "{}",
                        serde_json::to_string(&doctor).map_err(|e| e.to_string())?
                    );
                }
                Ok(())
            }
        },
    }
}

/// An instant on the command line: RFC 3339, or a date (midnight UTC).
fn parse_instant(value: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| format!("{value:?} is neither RFC 3339 nor YYYY-MM-DD"))
}
