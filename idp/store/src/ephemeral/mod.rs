//! Ephemeral stores: in-process ([`memory::MemoryStore`]) or Redis ([`redis::RedisStore`]).

pub(crate) mod memory;
pub(crate) mod redis;

use std::sync::Arc;
use std::time::Duration;

use idp_core::store::EphemeralStore;

use crate::Error;
use crate::redact::RedactedUrl;

/// The longest time to live either store keeps an entry: longer TTLs are shortened to it.
/// Nothing ephemeral legitimately lives a year, and the cap keeps expiry arithmetic (an
/// `Instant` plus the TTL; Redis' millisecond expiry) far from overflow.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// A TTL both stores apply the same way: at least one millisecond (a zero TTL means
/// "expires at once", which Redis would refuse), at most [`MAX_TTL`].
pub(crate) fn effective_ttl(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_millis(1), MAX_TTL)
}

/// Opens the ephemeral store named by `spec`:
///
/// - `memory`: a [`MemoryStore`](crate::MemoryStore) with the default capacity (one process
///   only: state is not shared between instances and is lost on restart);
/// - `redis://…` or `rediss://…` (TLS): a [`RedisStore`](crate::RedisStore) with the key
///   prefix [`DEFAULT_KEY_PREFIX`](crate::DEFAULT_KEY_PREFIX). The server is contacted
///   once here, so a wrong address fails at start-up.
pub async fn connect_ephemeral(spec: &str) -> Result<Arc<dyn EphemeralStore>, Error> {
    if spec == "memory" {
        return Ok(Arc::new(memory::MemoryStore::new()));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        let store = redis::RedisStore::connect(spec, redis::DEFAULT_KEY_PREFIX).await?;
        return Ok(Arc::new(store));
    }
    Err(Error::UnsupportedUrl(RedactedUrl::new(spec).to_string()))
}
