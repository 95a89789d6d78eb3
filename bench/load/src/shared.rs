//! What both load generators share: latency histograms and their summaries, the rustls
//! and reqwest clients (the test card's mutual-TLS client included), CPU time from
//! `/proc`, and the small helpers of a browser leg (cookies, step names, form encoding).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hdrhistogram::Histogram;
use rand::RngCore;
use reqwest::header::SET_COOKIE;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use url::Url;

/// Latency histograms in microseconds (1 µs to 60 s, 3 significant digits).
pub(crate) fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What one worker measured.
pub(crate) struct Samples {
    pub(crate) whole: Histogram<u64>,
    pub(crate) steps: BTreeMap<String, Histogram<u64>>,
    pub(crate) done: u64,
    pub(crate) errors: u64,
    pub(crate) first_errors: Vec<String>,
}

impl Samples {
    pub(crate) fn new() -> Self {
        Self {
            whole: histogram(),
            steps: BTreeMap::new(),
            done: 0,
            errors: 0,
            first_errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(e);
        }
    }

    pub(crate) fn record(&mut self, total: Duration, steps: &[(String, Duration)]) {
        self.done += 1;
        let _ = self.whole.record(micros(total));
        for (name, d) in steps {
            let _ = self
                .steps
                .entry(name.clone())
                .or_insert_with(histogram)
                .record(micros(*d));
        }
    }

    pub(crate) fn merge(&mut self, other: Samples) {
        let _ = self.whole.add(&other.whole);
        for (name, h) in other.steps {
            let _ = self.steps.entry(name).or_insert_with(histogram).add(&h);
        }
        self.done += other.done;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e);
            }
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Latency summary in milliseconds.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key", path.display()))
}

pub(crate) fn http_client(
    config: rustls::ClientConfig,
    new_connection_each_request: bool,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        // The servers listen on 127.0.0.1; no resolver on the way (nor ::1 tried first).
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)));
    if new_connection_each_request {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after_comm` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

pub(crate) fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

pub(crate) fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A step's name: the method and path, with ID-like segments (16+ characters) as `:id`.
pub(crate) fn step_name(prefix: &str, url: &Url) -> String {
    let path: Vec<&str> = url
        .path()
        .split('/')
        .map(|s| if s.len() >= 16 { ":id" } else { s })
        .collect();
    format!("{prefix}{}", path.join("/"))
}

/// The `name=value` of each Set-Cookie, replacing earlier values of the same name.
pub(crate) fn keep_cookies(jar: &mut Vec<(String, String)>, response: &reqwest::Response) {
    for v in response.headers().get_all(SET_COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        let pair = v.split(';').next().unwrap_or_default();
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        jar.retain(|(n, _)| n != name);
        if !value.is_empty() {
            jar.push((name.trim().to_owned(), value.to_owned()));
        }
    }
}

pub(crate) fn cookie_header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The servers' CA as a root store.
pub(crate) fn root_store(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A rustls client configuration builder on ring trusting `roots`.
pub(crate) fn tls_builder(
    roots: &rustls::RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("rustls: {e}"))
        .map(|b| b.with_root_certificates(roots.clone()))
}

/// The test card's TLS client: its certificate chain and key, session resumption
/// disabled so that every new connection is a full handshake with client authentication
/// (as a new browser session would do); with `new_connection_each_request`, no idle
/// connection is kept.
pub(crate) fn card_client(
    roots: &rustls::RootCertStore,
    chain: &Path,
    key: &Path,
    new_connection_each_request: bool,
) -> Result<reqwest::Client, String> {
    let mut config = tls_builder(roots)?
        .with_client_auth_cert(read_certs(chain)?, read_key(key)?)
        .map_err(|e| format!("card: {e}"))?;
    config.resumption = rustls::client::Resumption::disabled();
    http_client(config, new_connection_each_request)
}

/// What a measured run found: the merged samples, the window's length, and the CPU time
/// of the server and of this process per completed operation (ms) and in cores.
pub(crate) struct Measured {
    pub(crate) samples: Samples,
    pub(crate) seconds: f64,
    pub(crate) server: Option<(f64, f64)>,
    pub(crate) loadgen: Option<(f64, f64)>,
}

/// Runs `concurrency` workers and measures them: in duration mode (`count_mode` false)
/// over `window`, taking CPU times at its start and end; in count mode around the whole
/// run.
pub(crate) async fn measure<F, Fut>(
    concurrency: usize,
    window: (std::time::Instant, std::time::Instant),
    count_mode: bool,
    server_pid: Option<u32>,
    worker: F,
) -> Measured
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Samples> + Send + 'static,
{
    use std::time::Instant;
    let server_pid = server_pid.map(|p| p.to_string());
    let cpu_probe = {
        let server_pid = server_pid.clone();
        tokio::spawn(async move {
            let (start, end) = window;
            if !count_mode {
                tokio::time::sleep_until(start.into()).await;
            }
            let at_start = (
                server_pid.as_deref().and_then(cpu_time),
                cpu_time("self"),
                Instant::now(),
            );
            if !count_mode {
                tokio::time::sleep_until(end.into()).await;
            }
            at_start
        })
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|id| tokio::spawn(worker(id)))
        .collect();
    let mut samples = Samples::new();
    for w in workers {
        match w.await {
            Ok(s) => samples.merge(s),
            Err(e) => samples.error(format!("worker panicked: {e}")),
        }
    }
    let ended = Instant::now();
    let (server_start, self_start, started) = match cpu_probe.await {
        Ok(v) => v,
        Err(_) => (None, None, window.0),
    };
    let (server_end, self_end) = (server_pid.as_deref().and_then(cpu_time), cpu_time("self"));
    let seconds = if count_mode {
        ended.duration_since(started).as_secs_f64()
    } else {
        window.1.duration_since(window.0).as_secs_f64()
    };
    let per_op = |a: Option<Duration>, b: Option<Duration>| {
        let used = b?.checked_sub(a?)?.as_secs_f64();
        Some((
            used * 1000.0 / samples.done.max(1) as f64,
            used / seconds.max(1e-9),
        ))
    };
    let server = per_op(server_start, server_end);
    let loadgen = per_op(self_start, self_end);
    Measured {
        samples,
        seconds,
        server,
        loadgen,
    }
}
