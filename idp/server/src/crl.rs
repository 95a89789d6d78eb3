//! Loading CRLs: files at start-up (a bad file stops the start), then a background task
//! that re-reads changed files and fetches allow-listed URLs. A CRL that fails to parse or
//! verify is logged and the previous one stays in force; logins never wait for a reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idp_core::hpki::{HpkiValidator, Installed, IssuerCrl};
use sha2::{Digest, Sha256};

/// The largest CRL we accept (a 100,000-entry CRL is about 4 MB).
const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;

/// DER from a DER or PEM CRL.
pub fn crl_der(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----BEGIN") {
        return rustls_pemfile::crls(&mut bytes.as_slice())
            .next()
            .ok_or_else(|| "no PEM CRL in the file".to_owned())?
            .map(|crl| crl.as_ref().to_vec())
            .map_err(|e| e.to_string());
    }
    Ok(bytes)
}

/// Installs every configured CRL file at start-up, or names the first that fails.
pub fn load_files(validator: &HpkiValidator, files: &[PathBuf]) -> Result<(), String> {
    for path in files {
        let failed = |e: String| format!("{}: {e}", path.display());
        let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        install(validator, bytes, &path.display().to_string()).map_err(failed)?;
    }
    Ok(())
}

/// Parses (DER or PEM), verifies and installs one CRL; returns its nextUpdate.
fn install(
    validator: &HpkiValidator,
    bytes: Vec<u8>,
    source: &str,
) -> Result<(Installed, Option<time::OffsetDateTime>), String> {
    let der = crl_der(bytes)?;
    let crl = IssuerCrl::parse_and_verify(&der, validator.trust().cas(), source)
        .map_err(|e| e.to_string())?;
    let next_update = crl.next_update();
    let outcome = validator.crls().install(crl).map_err(|e| e.to_string())?;
    Ok((outcome, next_update))
}

/// Re-reads changed files every `interval`, for the life of the process. URLs are fetched
/// at once on start, then again when the CRL's nextUpdate is due or `url_refresh` has
/// passed, whichever is first (a failed fetch is retried every `interval`). Parsing and
/// signature checks run on the blocking pool, never on the workers that serve logins; the
/// new CRL is swapped in atomically.
pub fn spawn_reloader(
    validator: Arc<HpkiValidator>,
    files: Vec<PathBuf>,
    urls: Vec<String>,
    interval: Duration,
    url_refresh: Duration,
) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "CRL fetcher unavailable");
                None
            }
        };
        let mut seen: HashMap<PathBuf, [u8; 32]> = HashMap::new();
        for path in &files {
            if let Ok(bytes) = std::fs::read(path) {
                seen.insert(path.clone(), Sha256::digest(&bytes).into());
            }
        }
        let mut ticker = tokio::time::interval(interval);
        let mut first = true;
        let mut due: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            ticker.tick().await;
            if !first {
                for path in &files {
                    reload_file(&validator, path, &mut seen).await;
                }
            }
            first = false;
            if let Some(client) = &client {
                let now = tokio::time::Instant::now();
                for url in &urls {
                    if due.get(url).is_some_and(|at| *at > now) {
                        continue;
                    }
                    match fetch(client, &validator, url).await {
                        Ok((outcome, next_update)) => {
                            tracing::debug!(%url, ?outcome, "CRL fetched");
                            due.insert(url.clone(), now + until_refetch(next_update, url_refresh));
                        }
                        Err(e) => {
                            tracing::warn!(%url, error = %e, "CRL fetch failed; keeping the CRL in force");
                            due.remove(url);
                        }
                    }
                }
            }
        }
    });
}

async fn reload_file(
    validator: &Arc<HpkiValidator>,
    path: &Path,
    seen: &mut HashMap<PathBuf, [u8; 32]>,
) {
    let Ok(bytes) = tokio::fs::read(path).await else {
        tracing::warn!(path = %path.display(), "CRL file unreadable; keeping the CRL in force");
        return;
    };
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if seen.get(path) == Some(&digest) {
        return;
    }
    let source = path.display().to_string();
    match install_off_thread(validator.clone(), bytes, source).await {
        Ok((outcome, _)) => {
            seen.insert(path.to_owned(), digest);
            tracing::info!(path = %path.display(), ?outcome, "CRL reloaded");
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "CRL not reloaded; keeping the CRL in force")
        }
    }
}

/// How long until a URL's CRL is fetched again: at its nextUpdate, at most `refresh`.
fn until_refetch(next_update: Option<time::OffsetDateTime>, refresh: Duration) -> Duration {
    next_update
        .map(|next| next - time::OffsetDateTime::now_utc())
        .and_then(|left| Duration::try_from(left).ok())
        .map_or(refresh, |left| left.min(refresh))
}

/// Parses, verifies and installs on the blocking pool; returns the CRL's nextUpdate.
async fn install_off_thread(
    validator: Arc<HpkiValidator>,
    bytes: Vec<u8>,
    source: String,
) -> Result<(Installed, Option<time::OffsetDateTime>), String> {
    tokio::task::spawn_blocking(move || install(&validator, bytes, &source))
        .await
        .map_err(|e| e.to_string())?
}

async fn fetch(
    client: &reqwest::Client,
    validator: &Arc<HpkiValidator>,
    url: &str,
) -> Result<(Installed, Option<time::OffsetDateTime>), String> {
    let mut response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_CRL_BYTES {
            return Err("CRL larger than the limit".into());
        }
        body.extend_from_slice(&chunk);
    }
    install_off_thread(validator.clone(), body, url.to_owned()).await
}
