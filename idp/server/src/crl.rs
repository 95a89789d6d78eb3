//! Loading CRLs: files at start-up (a bad file stops the start), then a background task
//! that re-reads changed files and fetches allow-listed URLs. A CRL that fails to parse or
//! verify is logged and the previous one stays in force; logins never wait for a reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idp_core::hpki::{HpkiValidator, Installed};
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

fn install_file(validator: &HpkiValidator, path: &Path) -> Result<Installed, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = crl_der(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    validator
        .install_crl(&der, &path.display().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Installs every configured CRL file, or names the first that fails.
pub fn load_files(validator: &HpkiValidator, files: &[PathBuf]) -> Result<(), String> {
    for path in files {
        install_file(validator, path)?;
    }
    Ok(())
}

/// Re-reads changed files and fetches URLs every `interval`, for the life of the process.
pub fn spawn_reloader(
    validator: Arc<HpkiValidator>,
    files: Vec<PathBuf>,
    urls: Vec<String>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let client = match client {
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
        ticker.tick().await;
        loop {
            ticker.tick().await;
            for path in &files {
                let Ok(bytes) = tokio::fs::read(path).await else {
                    tracing::warn!(path = %path.display(), "CRL file unreadable; keeping the CRL in force");
                    continue;
                };
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                if seen.get(path) == Some(&digest) {
                    continue;
                }
                match install_file(&validator, path) {
                    Ok(outcome) => {
                        seen.insert(path.clone(), digest);
                        tracing::info!(path = %path.display(), ?outcome, "CRL reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "CRL not reloaded; keeping the CRL in force")
                    }
                }
            }
            if let Some(client) = &client {
                for url in &urls {
                    if let Err(e) = fetch(client, &validator, url).await {
                        tracing::warn!(%url, error = %e, "CRL fetch failed; keeping the CRL in force");
                    }
                }
            }
        }
    });
}

async fn fetch(
    client: &reqwest::Client,
    validator: &HpkiValidator,
    url: &str,
) -> Result<Installed, String> {
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
    let der = crl_der(body)?;
    validator.install_crl(&der, url).map_err(|e| e.to_string())
}
