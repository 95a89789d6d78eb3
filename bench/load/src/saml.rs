//! Load generator for complete SAML 2.0 SP-initiated logins against a running IdP
//! (docs/BENCHMARKS.md, "SAML responses"; run it with scripts/bench-saml.sh).
//!
//! `saml-load run` drives `--concurrency` workers, each doing one login after another for
//! `--duration-secs` (after `--warmup-secs`) or until `--logins` logins are done. One
//! login is what a browser does between a service provider and the IdP, with no session
//! at the IdP beforehand:
//!
//! 1. the SP's AuthnRequest (unsigned, a new ID each time, `AssertionConsumerServiceURL`,
//!    persistent `NameIDPolicy`) by HTTP-Redirect: `GET /saml/sso?SAMLRequest=…&RelayState=…`
//!    (DEFLATE, base64, URL-encoded) → 303 to `/login`;
//! 2. `GET /login` → 303 to the login origin and the login cookie;
//! 3. the login origin over a NEW mutual-TLS connection presenting the test card (session
//!    resumption disabled: a full handshake and the card's HPKI validation every login)
//!    → 303 to `/login/complete`;
//! 4. `GET /login/complete` → 303 to `/saml/sso/continue` and the session cookie;
//! 5. `GET /saml/sso/continue` → the SP is `pre_approved`, so no consent page: the
//!    HTTP-POST binding's auto-submit page;
//! 6. what the SP does first (cheaply, not a signature verification): the form's action is
//!    the ACS URL, `SAMLResponse` base64-decodes to a `samlp:Response` with `Success`, the
//!    request's ID as `InResponseTo` (Response and SubjectConfirmationData), the ACS as
//!    `Destination`, the SP as `Audience`, RSA-SHA256, `--signatures` `ds:SignatureValue`
//!    elements (2: Response and Assertion), and the RelayState comes back.
//!
//! Every request's latency goes into an HDR histogram per step; the report gives logins
//! per second, p50/p99/max of whole logins and of each step, the CPU time the IdP
//! (`--server-pid`) and this process used in the measured window, and the errors (any
//! error makes the exit status 1). `--json FILE` writes the same as JSON; `saml-load
//! table DIR` prints the table of a directory of such files.

mod shared;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, Subcommand};
use rand::RngCore;
use reqwest::header::{CONNECTION, COOKIE, LOCATION};
use serde::{Deserialize, Serialize};
use url::Url;

use shared::{
    Latency, Measured, Samples, card_client, cookie_header, form_encode, http_client, keep_cookies,
    measure, random_b64, root_store, step_name, tls_builder,
};

#[derive(Parser)]
#[command(
    name = "saml-load",
    about = "Load generator for SAML 2.0 SP-initiated logins"
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

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The IdP's public origin (`https://localhost:8443`); the SSO endpoint is
    /// `<public>/saml/sso`.
    #[arg(long)]
    public: String,
    /// PEM of the CA of the IdP's TLS certificates.
    #[arg(long)]
    ca: PathBuf,
    /// PEM chain of the test card (leaf first).
    #[arg(long)]
    card_chain: PathBuf,
    /// PEM private key of the test card.
    #[arg(long)]
    card_key: PathBuf,
    /// The SP's entity ID (registered at the IdP, `pre_approved`).
    #[arg(long)]
    sp_entity_id: String,
    /// The SP's ACS URL (HTTP-POST) as in its metadata.
    #[arg(long)]
    acs_url: String,
    /// `ds:SignatureValue` elements expected in each Response (2: Response and
    /// Assertion signed; 1: `sign_response = false`).
    #[arg(long, default_value_t = 2)]
    signatures: usize,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds (after the warm-up); the default when `--logins` is not given.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Run exactly this many logins in all, every one measured; no warm-up.
    #[arg(long, conflicts_with = "duration_secs")]
    logins: Option<u64>,
    /// Seconds of load before the measured window (results discarded).
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Process whose CPU time over the measured window is reported (the IdP).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the first decoded Response here (to compare it with the generated ones).
    #[arg(long)]
    dump_response: Option<PathBuf>,
    /// Name of the run in the report (default: the concurrency).
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
    concurrency: usize,
    /// `ds:SignatureValue` elements in each Response (2: Response and Assertion signed).
    signatures: usize,
    seconds: f64,
    completed: u64,
    per_second: f64,
    errors: u64,
    first_errors: Vec<String>,
    latency: Latency,
    steps: BTreeMap<String, Latency>,
    /// CPU time of the IdP in the window, per completed login (ms) and in cores.
    server_cpu_ms_per_op: Option<f64>,
    server_cores: Option<f64>,
    /// The same for this load generator.
    loadgen_cpu_ms_per_op: Option<f64>,
    loadgen_cores: Option<f64>,
    /// Mean size of the decoded `samlp:Response` (bytes).
    response_bytes: f64,
}

/// Everything the workers share.
struct Shared {
    args: RunArgs,
    sso_url: Url,
    /// The public origin: keep-alive connections, as a browser.
    browser: reqwest::Client,
    /// The login origin: a new connection (full mutual-TLS handshake) for every login.
    card: reqwest::Client,
    window: (Instant, Instant),
    remaining: Option<AtomicU64>,
    response_bytes: AtomicU64,
    dumped: std::sync::atomic::AtomicBool,
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
    eprintln!("saml-load: {message}");
    std::process::exit(2)
}

fn setup(args: RunArgs) -> Result<Shared, String> {
    let roots = root_store(&args.ca)?;
    let browser = http_client(tls_builder(&roots)?.with_no_client_auth(), false)?;
    let card = card_client(&roots, &args.card_chain, &args.card_key, true)?;
    let sso_url = Url::parse(&format!("{}/saml/sso", args.public.trim_end_matches('/')))
        .map_err(|e| format!("--public {}: {e}", args.public))?;
    let now = Instant::now();
    let (window, remaining) = match args.logins {
        Some(n) => ((now, now + Duration::from_secs(365 * 86400)), Some(n)),
        None => {
            let warmup = Duration::from_secs_f64(args.warmup_secs.max(0.0));
            let measured = Duration::from_secs_f64(args.duration_secs.unwrap_or(10.0).max(0.1));
            ((now + warmup, now + warmup + measured), None)
        }
    };
    Ok(Shared {
        args,
        sso_url,
        browser,
        card,
        window,
        remaining: remaining.map(AtomicU64::new),
        response_bytes: AtomicU64::new(0),
        dumped: std::sync::atomic::AtomicBool::new(false),
    })
}

async fn run(args: RunArgs) -> i32 {
    let shared = match setup(args) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("saml-load: {e}");
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
            .unwrap_or_else(|| format!("saml login c={}", args.concurrency)),
        concurrency: args.concurrency,
        signatures: args.signatures,
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
        response_bytes: shared.response_bytes.load(Ordering::Relaxed) as f64
            / samples.done.max(1) as f64,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("saml-load: {}: {e}", path.display());
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
    println!("== {}", r.label);
    println!(
        "{} logins in {:.1} s: {:.1} logins/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}; Response {:.0} bytes",
        r.completed,
        r.seconds,
        r.per_second,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.errors,
        r.response_bytes
    );
    if let (Some(ms), Some(cores)) = (r.server_cpu_ms_per_op, r.server_cores) {
        println!("IdP CPU: {ms:.2} ms per login ({cores:.2} cores)");
    }
    if let (Some(ms), Some(cores)) = (r.loadgen_cpu_ms_per_op, r.loadgen_cores) {
        println!("load generator CPU: {ms:.2} ms per login ({cores:.2} cores)");
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

/// Takes one login in login-count mode; `false` when none is left.
fn take(shared: &Shared) -> bool {
    match &shared.remaining {
        None => Instant::now() < shared.window.1,
        Some(n) => n
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
            .is_ok(),
    }
}

async fn worker(shared: Arc<Shared>, id: usize) -> Samples {
    let mut samples = Samples::new();
    while take(&shared) {
        let started = Instant::now();
        let result = login(&shared).await;
        let ended = Instant::now();
        match result {
            Ok((steps, bytes)) => {
                if ended >= shared.window.0 && ended < shared.window.1 {
                    samples.record(ended - started, &steps);
                    shared
                        .response_bytes
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                }
            }
            Err(e) => samples.error(format!("worker {id}: {e}")),
        }
    }
    samples
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM-DDThh:mm:ssZ` of the current time (UTC).
fn instant_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// XML text/attribute escaping for the few values of the AuthnRequest.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SP's AuthnRequest and its HTTP-Redirect query string (SAML Bindings §3.4.4.1).
fn authn_request(shared: &Shared, id: &str, relay_state: &str) -> Result<String, String> {
    let args = &shared.args;
    let xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{}" Destination="{}" AssertionConsumerServiceURL="{}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/></samlp:AuthnRequest>"#,
        instant_now(),
        xml_escape(shared.sso_url.as_str()),
        xml_escape(&args.acs_url),
        xml_escape(&args.sp_entity_id),
    );
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater
        .write_all(xml.as_bytes())
        .map_err(|e| format!("deflate: {e}"))?;
    let deflated = deflater.finish().map_err(|e| format!("deflate: {e}"))?;
    Ok(format!(
        "SAMLRequest={}&RelayState={}",
        form_encode(&STANDARD.encode(deflated)),
        form_encode(relay_state)
    ))
}

/// The value of `name="…" value="…"` in the auto-POST page, HTML-unescaped.
fn form_value(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker)? + marker.len();
    let end = start + html[start..].find('"')?;
    Some(html_unescape(&html[start..end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// One login; returns the steps and the size of the decoded Response.
async fn login(shared: &Shared) -> Result<(Vec<(String, Duration)>, usize), String> {
    let request_id = format!("_{}", random_hex(20));
    let relay_state = random_b64(12);
    let mut url = shared.sso_url.clone();
    url.set_query(Some(&authn_request(shared, &request_id, &relay_state)?));
    let public_origin = shared.sso_url.origin();
    let mut steps = Vec::with_capacity(7);
    let mut jar: Vec<(String, String)> = Vec::new();
    for _ in 0..12 {
        let card_leg = url.origin() != public_origin;
        let started = Instant::now();
        let response = if card_leg {
            shared
                .card
                .get(url.as_str())
                .header(CONNECTION, "close")
                .send()
                .await
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
        let name = if card_leg {
            format!("card (new mTLS) GET {}", step_name("", &url))
        } else {
            format!("GET {}", step_name("", &url))
        };
        steps.push((name, started.elapsed()));
        if let Some(location) = location.filter(|_| status.is_redirection()) {
            url = url
                .join(&location)
                .map_err(|e| format!("Location {location}: {e}"))?;
            continue;
        }
        let page = String::from_utf8_lossy(&body);
        if !status.is_success() || !page.contains(r#"name="SAMLResponse""#) {
            return Err(format!(
                "GET {}: {status} {}",
                url.path(),
                page.chars().take(300).collect::<String>()
            ));
        }
        let started = Instant::now();
        let bytes = check_post_page(shared, &page, &request_id, &relay_state)?;
        steps.push(("(SP) SAMLResponse check".into(), started.elapsed()));
        return Ok((steps, bytes));
    }
    Err("no SAMLResponse after 12 requests".into())
}

/// The auto-POST page and the Response in it, checked as described in the module's
/// documentation; returns the Response's size.
fn check_post_page(
    shared: &Shared,
    page: &str,
    request_id: &str,
    relay_state: &str,
) -> Result<usize, String> {
    let args = &shared.args;
    let action = {
        let marker = r#"<form method="post" action=""#;
        let start = page.find(marker).ok_or("no form in the POST page")? + marker.len();
        let end = start + page[start..].find('"').ok_or("unterminated action")?;
        html_unescape(&page[start..end])
    };
    if action != args.acs_url {
        return Err(format!("the form posts to {action}, not the ACS"));
    }
    if form_value(page, "RelayState").as_deref() != Some(relay_state) {
        return Err("RelayState not returned".into());
    }
    let message = form_value(page, "SAMLResponse").ok_or("no SAMLResponse value")?;
    let xml = STANDARD
        .decode(message.as_bytes())
        .map_err(|e| format!("SAMLResponse is not base64: {e}"))?;
    let xml = String::from_utf8(xml).map_err(|_| "SAMLResponse is not UTF-8")?;
    let signatures = xml.matches("<ds:SignatureValue>").count();
    if signatures != args.signatures {
        return Err(format!(
            "{signatures} ds:SignatureValue in the Response, expected {}",
            args.signatures
        ));
    }
    let in_response_to = format!(r#"InResponseTo="{request_id}""#);
    for (what, needle) in [
        (
            "InResponseTo (Response and SubjectConfirmationData)",
            &in_response_to,
        ),
        (
            "the ACS as Destination",
            &format!(r#"Destination="{}""#, args.acs_url),
        ),
        (
            "the SP as Audience",
            &format!("<saml:Audience>{}</saml:Audience>", args.sp_entity_id),
        ),
        (
            "Success",
            &"urn:oasis:names:tc:SAML:2.0:status:Success".to_owned(),
        ),
        (
            "RSA-SHA256",
            &"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256".to_owned(),
        ),
    ] {
        if !xml.contains(needle.as_str()) {
            return Err(format!("the Response lacks {what}"));
        }
    }
    if xml.matches(&in_response_to).count() != 2 {
        return Err("InResponseTo not on both the Response and the SubjectConfirmationData".into());
    }
    if !xml.trim_start().starts_with("<?xml") && !xml.trim_start().starts_with("<samlp:Response") {
        return Err("not a samlp:Response".into());
    }
    if let Some(path) = &args.dump_response
        && !shared.dumped.swap(true, Ordering::Relaxed)
    {
        std::fs::write(path, &xml).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(xml.len())
}

// ----- table ------------------------------------------------------------------------

fn table(dir: &std::path::Path) -> Result<(), String> {
    let mut reports: Vec<Report> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // Other result files (samlify's, criterion summaries) are not ours.
            if let Ok(r) = serde_json::from_str::<Report>(&text) {
                reports.push(r);
            }
        }
    }
    reports.sort_by(|a, b| {
        (std::cmp::Reverse(a.signatures), a.concurrency, &a.label).cmp(&(
            std::cmp::Reverse(b.signatures),
            b.concurrency,
            &b.label,
        ))
    });
    let cpu = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
    println!(
        "| run | conc. | logins/s | p50 ms | p99 ms | errors | IdP CPU ms/login | IdP cores | load generator CPU ms/login | Response bytes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &reports {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} | {:.0} |",
            r.label,
            r.concurrency,
            r.per_second,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.errors,
            cpu(r.server_cpu_ms_per_op),
            cpu(r.server_cores),
            cpu(r.loadgen_cpu_ms_per_op),
            r.response_bytes
        );
    }
    if reports.is_empty() {
        return Ok(());
    }
    println!();
    println!("Mean ms per step:");
    println!();
    let head: Vec<String> = reports.iter().map(|r| r.label.clone()).collect();
    println!("| step | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(reports.len()));
    let mut steps: Vec<&String> = reports.iter().flat_map(|r| r.steps.keys()).collect();
    steps.sort();
    steps.dedup();
    for step in steps {
        let cells: Vec<String> = reports
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
    let whole: Vec<String> = reports
        .iter()
        .map(|r| format!("{:.2}", r.latency.mean_ms))
        .collect();
    println!("| whole login | {} |", whole.join(" | "));
    Ok(())
}
