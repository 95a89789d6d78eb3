//! `portal.toml`: where the portal listens, its TLS identity, and the IdP it logs in with.
//! Relative paths are read from the configuration file's folder. Unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: String,
    url: String,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    session_key_file: Option<PathBuf>,
    #[serde(default)]
    cookie_prefix: Option<String>,
    idp: IdpFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdpFile {
    issuer: String,
    ca_file: Option<PathBuf>,
    client_id: String,
    client_secret_file: PathBuf,
}

/// The portal's configuration, with every file read.
#[derive(Debug)]
pub struct Config {
    pub listen: String,
    /// The portal's external origin (`https://portal.example.jp`), without a trailing slash.
    pub url: String,
    pub tls_cert_pem: Vec<u8>,
    pub tls_key_pem: Vec<u8>,
    /// The key of the sealed login cookie; random at start when not configured.
    pub session_key: Option<[u8; 32]>,
    pub cookie_prefix: String,
    pub issuer: String,
    pub idp_ca_pem: Option<Vec<u8>>,
    pub client_id: String,
    pub client_secret: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |p: &Path| {
            let full = dir.join(p);
            std::fs::read(&full).map_err(|e| format!("{}: {e}", full.display()))
        };
        let session_key =
            match &file.session_key_file {
                Some(p) => {
                    let text = String::from_utf8(read(p)?)
                        .map_err(|_| format!("{}: not text", p.display()))?;
                    let bytes = hex::decode(text.trim())
                        .map_err(|_| format!("{}: not hexadecimal", p.display()))?;
                    Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                        format!("{}: must hold 32 bytes (64 hex digits)", p.display())
                    })?)
                }
                None => None,
            };
        let secret = String::from_utf8(read(&file.idp.client_secret_file)?)
            .map_err(|_| "the client secret file is not text".to_owned())?
            .trim()
            .to_owned();
        if secret.is_empty() {
            return Err("the client secret file is empty".into());
        }
        let url = file.url.trim_end_matches('/').to_owned();
        if !url.starts_with("https://") {
            return Err("url must be https://".into());
        }
        Ok(Self {
            listen: file.listen,
            url,
            tls_cert_pem: read(&file.tls_cert)?,
            tls_key_pem: read(&file.tls_key)?,
            session_key,
            cookie_prefix: file.cookie_prefix.unwrap_or_else(|| "portal".to_owned()),
            issuer: file.idp.issuer,
            idp_ca_pem: file.idp.ca_file.as_deref().map(read).transpose()?,
            client_id: file.idp.client_id,
            client_secret: secret,
        })
    }
}
