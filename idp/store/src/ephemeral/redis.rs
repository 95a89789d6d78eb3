//! The Redis ephemeral store.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use idp_core::store::{EphemeralStore, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

use super::effective_ttl;
use crate::Error;
use crate::redact::RedactedUrl;

/// The key prefix [`connect_ephemeral`](crate::connect_ephemeral) uses.
pub const DEFAULT_KEY_PREFIX: &str = "idp:";

/// INCR, and give the counter its expiry when this increment created it. One script, so
/// it is atomic: no crash or concurrent caller can observe a counter without a TTL. A
/// counter found without one (written by something else) gets it too.
const INCR_SCRIPT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
";

/// An [`EphemeralStore`] in Redis (6.2 or newer: `take` uses `GETDEL`), shared by every
/// instance of the IdP. Each key is stored as the configured prefix followed by the
/// caller's key, so several deployments can share one Redis.
///
/// The connection is a [`ConnectionManager`]: it reconnects on its own after a failure;
/// while Redis is unreachable, operations fail with [`StoreError::Unavailable`] (5 s
/// response timeout) rather than hang.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    url: RedactedUrl,
    incr: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://` for
    /// TLS) and checks the server answers. Keys are stored under `prefix` (e.g. `"idp:"`).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let redacted = RedactedUrl::new(url);
        let fail = |e: RedisError| Error::Connect {
            endpoint: redacted.to_string(),
            reason: redacted.scrub(&e.to_string()),
        };
        if url.starts_with("rediss://") && rustls::crypto::CryptoProvider::get_default().is_none() {
            // The process has not chosen a rustls provider yet (the server installs ring at
            // start-up); choose the project's one rather than let redis panic. Losing a race
            // with another installer is fine: a provider is then installed either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let mut connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(fail)?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(fail)?;
        tracing::info!(url = %redacted, prefix, "redis connected");
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            url: redacted,
            incr: Script::new(INCR_SCRIPT),
        })
    }

    /// The prefix put before every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, error: &RedisError) -> StoreError {
        StoreError::Unavailable(format!(
            "redis ({}): {}",
            self.url,
            self.url.scrub(&error.to_string())
        ))
    }
}

/// Milliseconds of a TTL as Redis takes them (`PX`).
fn millis(ttl: Duration) -> u64 {
    // `effective_ttl` caps at a year: about 3.2e10 ms.
    u64::try_from(effective_ttl(ttl).as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl EphemeralStore for RedisStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.connection.clone();
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.connection.clone();
        redis::cmd("GETDEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let mut conn = self.connection.clone();
        self.incr
            .key(self.key(key))
            .arg(millis(window))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }
}
