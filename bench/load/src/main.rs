//! Load generator for complete OpenID Connect authorization-code flows (docs/BENCHMARKS.md,
//! "OpenID Connect flows under load").
//!
//! `oidc-load run` drives `--concurrency` workers, each running one flow after another
//! for `--duration-secs` (after `--warmup-secs`) or until `--flows` flows are done:
//!
//! - `flow`: the IdP's browser leg, redirect by redirect (`/authorize`, `/login`, the
//!   login origin over a NEW mutual-TLS connection presenting the test card, with session
//!   resumption disabled so every flow is a full handshake, `/login/complete`,
//!   `/authorize/continue`), then `POST /token` with `client_secret_basic` and the PKCE
//!   verifier, then the ID token's signature (JWKS fetched once), `iss`, `aud`, `exp`,
//!   `nonce` and `alg` are checked.
//! - `refresh`: one such flow per worker with `offline_access`, then `grant_type=refresh_token`
//!   requests one after another (each rotates the token and returns a new ID token, which
//!   is checked): a token-endpoint-only load.
//! - `oidc-provider-flow` / `oidc-provider-refresh`: the same against node `oidc-provider`
//!   (`bench/oidc-provider/server.mjs`), whose interaction route logs the fixed account in
//!   without a card; no mutual TLS. For refresh tokens it needs `prompt=consent`.
//!
//! Every request's latency goes into an HDR histogram per step; the report gives flows
//! (or refreshes) per second, p50/p99/max of whole flows and of each step, the CPU time
//! the server process (`--server-pid`) and this process used in the measured window, and
//! the errors (any error makes the exit status 1). `--json FILE` writes the same as JSON;
//! `oidc-load table DIR` prints the table of a directory of such files.

mod shared;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Parser, Subcommand, ValueEnum};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, COOKIE, LOCATION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use shared::{
    Latency, Measured, Samples, card_client, cookie_header, form_encode, http_client, keep_cookies,
    measure, random_b64, root_store, step_name, tls_builder,
};

#[derive(Parser)]
#[command(
    name = "oidc-load",
    about = "Load generator for OpenID Connect code flows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one measurement.
    Run(Box<RunArgs>),
    /// Print the table of a directory of `run --json` results.
    Table {
        /// Directory of result files (`*.json`).
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Flow,
    Refresh,
    OidcProviderFlow,
    OidcProviderRefresh,
}

impl Mode {
    fn refresh(self) -> bool {
        matches!(self, Mode::Refresh | Mode::OidcProviderRefresh)
    }
    fn oidc_provider(self) -> bool {
        matches!(self, Mode::OidcProviderFlow | Mode::OidcProviderRefresh)
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Issuer; `<issuer>/.well-known/openid-configuration` names the endpoints.
    #[arg(long)]
    issuer: String,
    /// PEM of the CA of the servers' TLS certificates.
    #[arg(long)]
    ca: PathBuf,
    /// PEM chain of the test card (leaf first); needed for `flow` and `refresh`.
    #[arg(long)]
    card_chain: Option<PathBuf>,
    /// PEM private key of the test card.
    #[arg(long)]
    card_key: Option<PathBuf>,
    #[arg(long)]
    client_id: String,
    #[arg(long)]
    client_secret: String,
    /// The ID token's expected `alg` (the client's `id_token_signed_response_alg`).
    #[arg(long)]
    alg: String,
    #[arg(long, default_value = "https://rp.example/cb")]
    redirect_uri: String,
    /// Scopes of the authorization request (`offline_access` is added in refresh modes).
    #[arg(long, default_value = "openid profile hpki")]
    scope: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds (after the warm-up); the default when `--flows` is not given.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Run exactly this many flows (or refreshes) in all, every one measured; no warm-up.
    #[arg(long, conflicts_with = "duration_secs")]
    flows: Option<u64>,
    /// Seconds of load before the measured window (results discarded).
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Keep the connection to the login origin open between flows (one per worker) instead
    /// of a new mutual-TLS handshake every flow: a browser logging in again within its
    /// keep-alive time. For measuring what the handshake costs, not the headline numbers.
    #[arg(long)]
    card_keepalive: bool,
    /// Process whose CPU time over the measured window is reported (the server).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of the run in the report (default: mode, alg and concurrency).
    #[arg(long)]
    label: Option<String>,
    /// Also write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One run's result (`--json`).
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    label: String,
    mode: Mode,
    alg: String,
    concurrency: usize,
    seconds: f64,
    /// Completed flows (refresh modes: refresh requests) in the window.
    completed: u64,
    per_second: f64,
    errors: u64,
    first_errors: Vec<String>,
    /// Whole flows (refresh modes: each refresh request).
    latency: Latency,
    steps: BTreeMap<String, Latency>,
    /// CPU time of the server process in the window, per completed flow (ms) and in cores.
    server_cpu_ms_per_op: Option<f64>,
    server_cores: Option<f64>,
    /// The same for this load generator.
    loadgen_cpu_ms_per_op: Option<f64>,
    loadgen_cores: Option<f64>,
    /// `--card-keepalive`: no new handshake per flow.
    #[serde(default)]
    card_keepalive: bool,
}

/// Endpoints from the discovery document.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// Everything the workers share.
struct Shared {
    args: RunArgs,
    discovery: Discovery,
    /// The public origin (and the RP's back channel): keep-alive connections.
    browser: reqwest::Client,
    rp: reqwest::Client,
    /// The login origin: one rustls configuration, a new connection for every request.
    card: Option<reqwest::Client>,
    keys: HashMap<String, DecodingKey>,
    alg: Algorithm,
    scope: String,
    /// Flows/refreshes whose end falls in [start, end) are measured.
    window: (Instant, Instant),
    remaining: Option<AtomicU64>,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => fail(&format!("tokio: {e}")),
            };
            let code = runtime.block_on(run(*args));
            std::process::exit(code);
        }
        Command::Table { dir } => {
            if let Err(e) = table(&dir) {
                fail(&e);
            }
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("oidc-load: {message}");
    std::process::exit(2)
}

async fn setup(args: RunArgs) -> Result<Shared, String> {
    let roots = root_store(&args.ca)?;
    let browser = http_client(tls_builder(&roots)?.with_no_client_auth(), false)?;
    let rp = http_client(tls_builder(&roots)?.with_no_client_auth(), false)?;
    let card = if args.mode.oidc_provider() {
        None
    } else {
        let (Some(chain), Some(key)) = (&args.card_chain, &args.card_key) else {
            return Err("--card-chain and --card-key are needed for this mode".into());
        };
        // A full handshake with the card every flow, as a new browser session would do.
        Some(card_client(&roots, chain, key, !args.card_keepalive)?)
    };

    let discovery: Discovery = get_json(
        &browser,
        &format!(
            "{}/.well-known/openid-configuration",
            args.issuer.trim_end_matches('/')
        ),
    )
    .await?;
    if discovery.issuer != args.issuer {
        return Err(format!(
            "discovery names issuer {}, not {}",
            discovery.issuer, args.issuer
        ));
    }
    let jwks: JwkSet = get_json(&browser, &discovery.jwks_uri).await?;
    let mut keys = HashMap::new();
    for jwk in &jwks.keys {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        // Keys of algorithms this build cannot verify are skipped; a token signed with
        // one of them fails as an unknown kid.
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, key);
        }
    }
    let alg: Algorithm = args
        .alg
        .parse()
        .map_err(|e| format!("--alg {}: {e}", args.alg))?;
    let mut scope = args.scope.clone();
    if args.mode.refresh() && !scope.split(' ').any(|s| s == "offline_access") {
        scope.push_str(" offline_access");
    }
    let now = Instant::now();
    let (window, remaining) = match args.flows {
        Some(n) => ((now, now + Duration::from_secs(365 * 86400)), Some(n)),
        None => {
            let warmup = Duration::from_secs_f64(args.warmup_secs.max(0.0));
            let measured = Duration::from_secs_f64(args.duration_secs.unwrap_or(10.0).max(0.1));
            ((now + warmup, now + warmup + measured), None)
        }
    };
    Ok(Shared {
        args,
        discovery,
        browser,
        rp,
        card,
        keys,
        alg,
        scope,
        window,
        remaining: remaining.map(AtomicU64::new),
    })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e:?}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
}

async fn run(args: RunArgs) -> i32 {
    let shared = match setup(args).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("oidc-load: {e}");
            return 2;
        }
    };
    let Measured {
        samples,
        seconds,
        server,
        loadgen,
    } = {
        let workers = shared.clone();
        measure(
            shared.args.concurrency,
            shared.window,
            shared.remaining.is_some(),
            shared.args.server_pid,
            move |id| worker(workers.clone(), id),
        )
        .await
    };
    let args = &shared.args;
    let report = Report {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("{:?} {} c={}", args.mode, args.alg, args.concurrency)),
        mode: args.mode,
        alg: args.alg.clone(),
        concurrency: args.concurrency,
        seconds,
        completed: samples.done,
        per_second: samples.done as f64 / seconds.max(1e-9),
        errors: samples.errors,
        first_errors: samples.first_errors.clone(),
        latency: Latency::of(&samples.whole),
        steps: samples
            .steps
            .iter()
            .map(|(k, h)| (k.clone(), Latency::of(h)))
            .collect(),
        server_cpu_ms_per_op: server.map(|s| s.0),
        server_cores: server.map(|s| s.1),
        loadgen_cpu_ms_per_op: loadgen.map(|s| s.0),
        loadgen_cores: loadgen.map(|s| s.1),
        card_keepalive: args.card_keepalive,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("oidc-load: {}: {e}", path.display());
            return 2;
        }
    }
    if report.errors > 0 || report.completed == 0 {
        1
    } else {
        0
    }
}

fn print_report(r: &Report) {
    let what = if r.mode.refresh() {
        "refreshes"
    } else {
        "flows"
    };
    println!("== {}", r.label);
    println!(
        "{} {what} in {:.1} s: {:.1} {what}/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}",
        r.completed,
        r.seconds,
        r.per_second,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.errors
    );
    if let (Some(ms), Some(cores)) = (r.server_cpu_ms_per_op, r.server_cores) {
        println!("server CPU: {ms:.2} ms per op ({cores:.2} cores)");
    }
    if let (Some(ms), Some(cores)) = (r.loadgen_cpu_ms_per_op, r.loadgen_cores) {
        println!("load generator CPU: {ms:.2} ms per op ({cores:.2} cores)");
    }
    for (step, l) in &r.steps {
        println!(
            "  {step:<40} mean {:>7.2} ms  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
            l.mean_ms, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    for e in &r.first_errors {
        println!("  error: {e}");
    }
}

/// Takes one unit of work in flow-count mode; `false` when none is left.
fn take(shared: &Shared) -> bool {
    match &shared.remaining {
        None => Instant::now() < shared.window.1,
        Some(n) => n
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
            .is_ok(),
    }
}

fn in_window(shared: &Shared, t: Instant) -> bool {
    t >= shared.window.0 && t < shared.window.1
}

async fn worker(shared: Arc<Shared>, id: usize) -> Samples {
    let mut samples = Samples::new();
    let mut refresh_token: Option<String> = None;
    while take(&shared) {
        let started = Instant::now();
        let result = if shared.args.mode.refresh() {
            match refresh_token.take() {
                None => flow(&shared).await.map(|done| {
                    // The first flow of a worker only obtains the refresh token: never measured.
                    refresh_token = done.refresh_token;
                    None
                }),
                Some(token) => refresh(&shared, &token).await.map(|done| {
                    refresh_token = done.refresh_token;
                    Some(done.steps)
                }),
            }
        } else {
            flow(&shared).await.map(|done| Some(done.steps))
        };
        let ended = Instant::now();
        match result {
            Ok(Some(steps)) if in_window(&shared, ended) => {
                samples.record(ended - started, &steps);
            }
            Ok(_) => {}
            Err(e) => {
                samples.error(format!("worker {id}: {e}"));
                if shared.args.mode.refresh() && refresh_token.is_none() {
                    // The chain is broken; the next iteration starts a new one after a pause
                    // (so a failing server is not hammered).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    if shared.args.mode.refresh() && refresh_token.is_none() && samples.done == 0 {
        samples.error(format!("worker {id}: no refresh token obtained"));
    }
    samples
}

/// The outcome of one flow or refresh.
struct Done {
    steps: Vec<(String, Duration)>,
    refresh_token: Option<String>,
}

async fn flow(shared: &Shared) -> Result<Done, String> {
    let args = &shared.args;
    let verifier = random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64(16);
    let nonce = random_b64(16);
    let mut authorize =
        Url::parse(&shared.discovery.authorization_endpoint).map_err(|e| e.to_string())?;
    {
        let mut q = authorize.query_pairs_mut();
        q.append_pair("client_id", &args.client_id)
            .append_pair("redirect_uri", &args.redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", &shared.scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if args.mode == Mode::OidcProviderRefresh {
            // oidc-provider drops offline_access unless consent is prompted for.
            q.append_pair("prompt", "consent");
        }
    }
    let public_origin = authorize.origin();
    let mut steps = Vec::with_capacity(8);
    let mut jar: Vec<(String, String)> = Vec::new();
    let mut url = authorize;
    let mut code = None;
    for _ in 0..12 {
        let card_leg = url.origin() != public_origin;
        let started = Instant::now();
        let response = if card_leg {
            let card = shared
                .card
                .as_ref()
                .ok_or_else(|| format!("redirected to {url} without a card"))?;
            let mut request = card.get(url.as_str());
            if !args.card_keepalive {
                request = request.header(CONNECTION, "close");
            }
            request.send().await
        } else {
            let mut request = shared.browser.get(url.as_str());
            if !jar.is_empty() {
                request = request.header(COOKIE, cookie_header(&jar));
            }
            request.send().await
        }
        .map_err(|e| format!("GET {}: {e:?}", url.path()))?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !card_leg {
            keep_cookies(&mut jar, &response);
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        steps.push((
            step_name(
                match (card_leg, args.card_keepalive) {
                    (false, _) => "",
                    (true, false) => "card (new mTLS) ",
                    (true, true) => "card (kept-alive mTLS) ",
                },
                &url,
            ),
            started.elapsed(),
        ));
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            return Err(format!(
                "GET {}: {status} {}",
                url.path(),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        };
        let next = url
            .join(&location)
            .map_err(|e| format!("Location {location}: {e}"))?;
        if next.as_str().starts_with(&args.redirect_uri) {
            let query: HashMap<_, _> = next.query_pairs().into_owned().collect();
            if let Some(error) = query.get("error") {
                return Err(format!(
                    "authorization error {error}: {}",
                    query.get("error_description").cloned().unwrap_or_default()
                ));
            }
            if query.get("state") != Some(&state) {
                return Err("state mismatch".into());
            }
            code = query.get("code").cloned();
            break;
        }
        url = next;
    }
    let code = code.ok_or("no code after 12 redirects")?;
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        form_encode(&code),
        form_encode(&args.redirect_uri),
        verifier
    );
    let started = Instant::now();
    let tokens = token_request(shared, form).await?;
    steps.push(("POST /token (authorization_code)".into(), started.elapsed()));
    let started = Instant::now();
    check_id_token(shared, &tokens, Some(&nonce))?;
    steps.push(("(client) ID token check".into(), started.elapsed()));
    Ok(Done {
        steps,
        refresh_token: tokens
            .get("refresh_token")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    })
}

async fn refresh(shared: &Shared, token: &str) -> Result<Done, String> {
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        form_encode(token)
    );
    let started = Instant::now();
    let tokens = token_request(shared, form).await?;
    let took = started.elapsed();
    let started = Instant::now();
    check_id_token(shared, &tokens, None)?;
    let check = started.elapsed();
    let refresh_token = tokens
        .get("refresh_token")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or("no refresh token in the refresh response")?;
    Ok(Done {
        steps: vec![
            ("POST /token (refresh_token)".into(), took),
            ("(client) ID token check".into(), check),
        ],
        refresh_token: Some(refresh_token),
    })
}

async fn token_request(shared: &Shared, form: String) -> Result<serde_json::Value, String> {
    let args = &shared.args;
    // RFC 6749 §2.3.1: the credentials are form-encoded before Basic encoding.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_encode(&args.client_id),
        form_encode(&args.client_secret)
    ));
    let response = shared
        .rp
        .post(&shared.discovery.token_endpoint)
        .header(AUTHORIZATION, format!("Basic {basic}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| format!("POST /token: {e:?}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "POST /token: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("POST /token: {e}"))
}

fn check_id_token(
    shared: &Shared,
    tokens: &serde_json::Value,
    nonce: Option<&str>,
) -> Result<(), String> {
    let id_token = tokens
        .get("id_token")
        .and_then(|v| v.as_str())
        .ok_or("no id_token")?;
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| format!("ID token: {e}"))?;
    if header.alg != shared.alg {
        return Err(format!(
            "ID token signed with {:?}, not {:?}",
            header.alg, shared.alg
        ));
    }
    let kid = header.kid.unwrap_or_default();
    let key = shared
        .keys
        .get(&kid)
        .ok_or_else(|| format!("ID token kid {kid:?} not in the JWKS"))?;
    let mut validation = Validation::new(shared.alg);
    validation.set_issuer(&[&shared.discovery.issuer]);
    validation.set_audience(&[&shared.args.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(id_token, key, &validation)
        .map_err(|e| format!("ID token: {e}"))?;
    if let Some(nonce) = nonce
        && data.claims.get("nonce").and_then(|v| v.as_str()) != Some(nonce)
    {
        return Err("ID token nonce mismatch".into());
    }
    Ok(())
}

// ----- table ------------------------------------------------------------------------

fn table(dir: &Path) -> Result<(), String> {
    let mut reports: Vec<Report> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            reports
                .push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    reports.sort_by(|a, b| {
        (
            a.mode.oidc_provider(),
            a.mode.refresh(),
            &a.alg,
            a.concurrency,
        )
            .cmp(&(
                b.mode.oidc_provider(),
                b.mode.refresh(),
                &b.alg,
                b.concurrency,
            ))
    });
    let find = |mode: Mode, alg: &str, c: usize| {
        reports
            .iter()
            .find(|r| r.mode == mode && r.alg == alg && r.concurrency == c && r.label_is_matrix())
    };
    let cpu = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());

    println!("### Complete flows");
    println!();
    println!(
        "| alg | conc. | IdP flows/s | IdP p50 ms | IdP p99 ms | IdP errors | IdP server CPU ms/flow | oidc-provider flows/s | p50 ms | p99 ms | errors | server CPU ms/flow | ratio (flows/s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports
        .iter()
        .filter(|r| r.mode == Mode::Flow && r.label_is_matrix())
    {
        let node = find(Mode::OidcProviderFlow, &r.alg, r.concurrency);
        let (n_rate, n_p50, n_p99, n_err, n_cpu, ratio) = match node {
            Some(n) => (
                format!("{:.1}", n.per_second),
                format!("{:.2}", n.latency.p50_ms),
                format!("{:.2}", n.latency.p99_ms),
                n.errors.to_string(),
                cpu(n.server_cpu_ms_per_op),
                format!("{:.2}×", r.per_second / n.per_second.max(1e-9)),
            ),
            None => Default::default(),
        };
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {n_rate} | {n_p50} | {n_p99} | {n_err} | {n_cpu} | {ratio} |",
            r.alg,
            r.concurrency,
            r.per_second,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.errors,
            cpu(r.server_cpu_ms_per_op)
        );
    }
    let kept: Vec<&Report> = reports
        .iter()
        .filter(|r| r.mode == Mode::Flow && r.card_keepalive)
        .collect();
    if !kept.is_empty() {
        println!();
        println!(
            "### IdP flows with the card connection kept alive (no new mTLS handshake per flow)"
        );
        println!();
        println!(
            "| alg | conc. | flows/s | p50 ms | p99 ms | errors | server CPU ms/flow | load generator CPU ms/flow | new-handshake flows/s (matrix) | oidc-provider flows/s | ratio to oidc-provider |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in kept {
            let fresh = find(Mode::Flow, &r.alg, r.concurrency)
                .map(|f| format!("{:.1}", f.per_second))
                .unwrap_or_default();
            let (n_rate, ratio) = match find(Mode::OidcProviderFlow, &r.alg, r.concurrency) {
                Some(n) => (
                    format!("{:.1}", n.per_second),
                    format!("{:.2}×", r.per_second / n.per_second.max(1e-9)),
                ),
                None => Default::default(),
            };
            println!(
                "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {fresh} | {n_rate} | {ratio} |",
                r.alg,
                r.concurrency,
                r.per_second,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.errors,
                cpu(r.server_cpu_ms_per_op),
                cpu(r.loadgen_cpu_ms_per_op)
            );
        }
    }
    println!();
    println!("### Token endpoint inside the flows (authorization_code grant)");
    println!();
    println!(
        "| alg | conc. | IdP /token p50 ms | p99 ms | share of flow time | oidc-provider /token p50 ms | p99 ms | share of flow time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let token_step = |r: &Report| {
        let t = r.steps.get("POST /token (authorization_code)")?;
        let share = t.mean_ms / r.latency.mean_ms.max(1e-9) * 100.0;
        Some((
            format!("{:.2}", t.p50_ms),
            format!("{:.2}", t.p99_ms),
            format!("{share:.0} %"),
        ))
    };
    for r in reports
        .iter()
        .filter(|r| r.mode == Mode::Flow && r.label_is_matrix())
    {
        let (a, b, c) = token_step(r).unwrap_or_default();
        let (d, e, f) = find(Mode::OidcProviderFlow, &r.alg, r.concurrency)
            .and_then(token_step)
            .unwrap_or_default();
        println!(
            "| {} | {} | {a} | {b} | {c} | {d} | {e} | {f} |",
            r.alg, r.concurrency
        );
    }
    println!();
    println!("### Token endpoint alone (refresh_token grants, one rotation chain per worker)");
    println!();
    println!(
        "| alg | conc. | IdP refreshes/s | p50 ms | p99 ms | errors | server CPU ms/refresh | oidc-provider refreshes/s | p50 ms | p99 ms | errors | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports
        .iter()
        .filter(|r| r.mode == Mode::Refresh && r.label_is_matrix())
    {
        let node = find(Mode::OidcProviderRefresh, &r.alg, r.concurrency);
        let (n_rate, n_p50, n_p99, n_err, ratio) = match node {
            Some(n) => (
                format!("{:.1}", n.per_second),
                format!("{:.2}", n.latency.p50_ms),
                format!("{:.2}", n.latency.p99_ms),
                n.errors.to_string(),
                format!("{:.2}×", r.per_second / n.per_second.max(1e-9)),
            ),
            None => Default::default(),
        };
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {n_rate} | {n_p50} | {n_p99} | {n_err} | {ratio} |",
            r.alg,
            r.concurrency,
            r.per_second,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.errors,
            cpu(r.server_cpu_ms_per_op)
        );
    }
    println!();
    println!("### Where a flow's time goes (mean ms per step, by concurrency)");
    for mode in [Mode::Flow, Mode::OidcProviderFlow] {
        for alg in ["ES256", "RS256"] {
            let runs: Vec<&Report> = reports
                .iter()
                .filter(|r| r.mode == mode && r.alg == alg && r.label_is_matrix())
                .collect();
            if runs.is_empty() {
                continue;
            }
            let server = if mode == Mode::Flow {
                "IdP"
            } else {
                "oidc-provider"
            };
            println!();
            println!("{server}, {alg}:");
            println!();
            let head: Vec<String> = runs
                .iter()
                .map(|r| format!("c={}", r.concurrency))
                .collect();
            println!("| step | {} |", head.join(" | "));
            println!("|---|{}", "---:|".repeat(runs.len()));
            let mut steps: Vec<&String> = runs.iter().flat_map(|r| r.steps.keys()).collect();
            steps.sort();
            steps.dedup();
            for step in steps {
                let cells: Vec<String> = runs
                    .iter()
                    .map(|r| {
                        r.steps
                            .get(step)
                            .map(|l| format!("{:.2}", l.mean_ms))
                            .unwrap_or_default()
                    })
                    .collect();
                println!("| `{step}` | {} |", cells.join(" | "));
            }
            let row = |name: &str, f: &dyn Fn(&Report) -> String| {
                let cells: Vec<String> = runs.iter().map(|r| f(r)).collect();
                println!("| {name} | {} |", cells.join(" | "));
            };
            row("whole flow", &|r| format!("{:.2}", r.latency.mean_ms));
            row("server CPU ms/flow", &|r| cpu(r.server_cpu_ms_per_op));
            row("server CPU, cores", &|r| cpu(r.server_cores));
            row("load generator CPU ms/flow", &|r| {
                cpu(r.loadgen_cpu_ms_per_op)
            });
            row("load generator CPU, cores", &|r| cpu(r.loadgen_cores));
        }
    }
    let mut others: Vec<&Report> = reports
        .iter()
        .filter(|r| !r.label_is_matrix() && !r.card_keepalive)
        .collect();
    others.sort_by(|a, b| a.label.cmp(&b.label));
    if !others.is_empty() {
        println!();
        println!("### Other runs");
        println!();
        println!(
            "| run | ops | seconds | ops/s | p50 ms | p99 ms | max ms | errors | server CPU ms/op |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in others {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} |",
                r.label,
                r.completed,
                r.seconds,
                r.per_second,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.errors,
                cpu(r.server_cpu_ms_per_op)
            );
        }
    }
    Ok(())
}

impl Report {
    /// Runs of the matrix are labelled `matrix ...` by the script; others stand alone.
    fn label_is_matrix(&self) -> bool {
        self.label.starts_with("matrix") && !self.card_keepalive
    }
}
