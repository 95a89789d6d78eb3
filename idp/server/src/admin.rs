//! Administration from the command line: signing keys and OIDC clients, stored in the
//! database the configuration names (so every running process sees the change).

use idp_core::oidc::client::{ClientRegistration, SigningAlg, TokenEndpointAuthMethod};
use idp_core::oidc::keys::{KeyRing, SigningKey};
use idp_core::oidc::subject::SubjectType;
use idp_core::secret::Secret;
use idp_core::store::{ClientStore, KeyStore, StoredKey};
use time::OffsetDateTime;

/// `idp keys rotate`: a new key for `alg`, published now, signing after `publish_before_use`.
pub async fn rotate_key(
    store: &dyn KeyStore,
    alg: SigningAlg,
    publish_before_use: std::time::Duration,
    now: OffsetDateTime,
) -> Result<StoredKey, String> {
    let key = SigningKey::generate(alg).map_err(|e| e.to_string())?;
    let record = StoredKey {
        kid: key.kid().to_owned(),
        alg,
        pkcs8_pem: key.dangerous_pkcs8_pem().to_owned(),
        created_at: now,
        active_from: now + publish_before_use,
    };
    store
        .add_signing_key(&record)
        .await
        .map_err(|e| e.to_string())?;
    Ok(record)
}

/// `idp keys list`: one line per key with its state at `now`.
pub async fn list_keys(
    store: &dyn KeyStore,
    retention: std::time::Duration,
    now: OffsetDateTime,
) -> Result<Vec<String>, String> {
    let stored = store.signing_keys().await.map_err(|e| e.to_string())?;
    let ring = KeyRing::build(&stored, now, retention).map_err(|e| e.to_string())?;
    let signing: Vec<String> = SigningAlg::ALL
        .into_iter()
        .filter_map(|a| ring.keys.signer(a).map(|k| k.kid().to_owned()))
        .collect();
    Ok(stored
        .iter()
        .map(|k| {
            let state = if signing.contains(&k.kid) {
                "signing"
            } else if ring.expired.contains(&k.kid) {
                "expired"
            } else if k.active_from > now {
                "published, signs from active_from"
            } else {
                "retired, still published"
            };
            serde_json::json!({
                "kid": k.kid,
                "alg": k.alg.as_str(),
                "created_at": k.created_at.unix_timestamp(),
                "active_from": k.active_from.unix_timestamp(),
                "state": state,
            })
            .to_string()
        })
        .collect())
}

/// Options of `idp client add`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: String,
    /// client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth.
    #[arg(long, default_value = "client_secret_basic")]
    pub auth_method: String,
    #[arg(long = "redirect-uri", required = true)]
    pub redirect_uris: Vec<String>,
    #[arg(long = "post-logout-redirect-uri")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may ask for (openid is always included).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    #[arg(long, default_value = "RS256")]
    pub id_token_alg: String,
    #[arg(long)]
    pub public_subject: bool,
    #[arg(long)]
    pub pre_approved: bool,
    #[arg(long)]
    pub refresh_tokens: bool,
    /// JWKS file of a private_key_jwt client.
    #[arg(long)]
    pub jwks_file: Option<std::path::PathBuf>,
    #[arg(long)]
    pub tls_subject_dn: Option<String>,
    #[arg(long)]
    pub tls_cert_sha256: Option<String>,
    #[arg(long)]
    pub backchannel_logout_uri: Option<String>,
}

fn parse_method(s: &str) -> Result<TokenEndpointAuthMethod, String> {
    serde_json::from_value(serde_json::json!(s)).map_err(|_| format!("unknown auth method {s:?}"))
}

fn parse_alg(s: &str) -> Result<SigningAlg, String> {
    serde_json::from_value(serde_json::json!(s)).map_err(|_| format!("unknown algorithm {s:?}"))
}

/// `idp client add`: registers a client; returns the registration and, for secret
/// methods, the generated secret (shown once, stored only as its digest).
pub async fn add_client(
    store: &dyn ClientStore,
    args: ClientArgs,
    now: OffsetDateTime,
) -> Result<(ClientRegistration, Option<Secret>), String> {
    if store
        .client(&args.id)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(format!("client {:?} already exists", args.id));
    }
    let method = parse_method(&args.auth_method)?;
    let secret = matches!(
        method,
        TokenEndpointAuthMethod::ClientSecretBasic | TokenEndpointAuthMethod::ClientSecretPost
    )
    .then(Secret::generate);
    let jwks = match &args.jwks_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let mut scopes = vec![idp_vocabulary::scope::OPENID.to_owned()];
    for s in args.scopes {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let client = ClientRegistration {
        secret_digest: secret.as_ref().map(Secret::digest),
        redirect_uris: args.redirect_uris,
        post_logout_redirect_uris: args.post_logout_redirect_uris,
        allowed_scopes: scopes,
        id_token_signed_response_alg: parse_alg(&args.id_token_alg)?,
        subject_type: if args.public_subject {
            SubjectType::Public
        } else {
            SubjectType::Pairwise
        },
        pre_approved: args.pre_approved,
        refresh_tokens: args.refresh_tokens,
        jwks,
        tls_client_auth_subject_dn: args.tls_subject_dn,
        tls_client_certificate_sha256: args.tls_cert_sha256,
        backchannel_logout_uri: args.backchannel_logout_uri,
        ..ClientRegistration::new(args.id, args.name, method)
    };
    client.check()?;
    store
        .put_client(&client, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok((client, secret))
}

/// `idp client rotate-secret`: a new secret replaces the old one at once.
pub async fn rotate_secret(
    store: &dyn ClientStore,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<Secret, String> {
    let mut client = store
        .client(client_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no client {client_id:?}"))?;
    if client.secret_digest.is_none() {
        return Err(format!("client {client_id:?} does not use a secret"));
    }
    let secret = Secret::generate();
    client.secret_digest = Some(secret.digest());
    store
        .put_client(&client, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(secret)
}

/// The registration as shown by `idp client list` (the secret digest left out).
pub fn client_summary(client: &ClientRegistration) -> String {
    let mut value = serde_json::to_value(client).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("secret_digest");
    }
    value.to_string()
}
