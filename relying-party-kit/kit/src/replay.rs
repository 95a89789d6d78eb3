//! The clock every check of the kit reads, and the replay cache that makes each SAML
//! assertion, SAML logout request and OIDC logout token usable once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use time::OffsetDateTime;

/// The time validity windows are checked against. Inject another one in tests to move
/// time forward without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// What a replay cache says about an assertion ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not seen before; now remembered until its expiry.
    Fresh,
    /// Seen before and not yet expired.
    Replayed,
    /// The cache cannot remember it (full, or its store failed): refused, fail closed.
    Unavailable,
}

/// Remembers assertion IDs until their validity ends, so that each is accepted once. A
/// deployment with several processes needs a shared implementation (e.g. on Redis, with
/// an atomic set-if-absent and an expiry).
#[async_trait::async_trait]
pub trait ReplayCache: Send + Sync {
    /// Remembers `id` until `keep_until` if it is not already remembered.
    async fn check_and_remember(
        &self,
        id: &str,
        keep_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> ReplayVerdict;
}

/// An in-process replay cache with expiry and a bound on its size: when full of unexpired
/// entries it refuses new ones ([`ReplayVerdict::Unavailable`]) rather than forgetting.
pub struct MemoryReplayCache {
    entries: Mutex<HashMap<String, OffsetDateTime>>,
    max_entries: usize,
}

impl MemoryReplayCache {
    /// The default bound.
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// How many IDs are remembered (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_ENTRIES)
    }
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

#[async_trait::async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn check_and_remember(
        &self,
        id: &str,
        keep_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> ReplayVerdict {
        let Ok(mut entries) = self.entries.lock() else {
            return ReplayVerdict::Unavailable;
        };
        if let Some(until) = entries.get(id)
            && *until > now
        {
            return ReplayVerdict::Replayed;
        }
        if entries.len() >= self.max_entries {
            entries.retain(|_, until| *until > now);
            if entries.len() >= self.max_entries {
                return ReplayVerdict::Unavailable;
            }
        }
        entries.insert(id.to_owned(), keep_until);
        ReplayVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[tokio::test]
    async fn an_id_is_accepted_once_until_it_expires_and_the_cache_is_bounded() {
        let cache = MemoryReplayCache::new(2);
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let later = now + Duration::minutes(5);
        assert_eq!(
            cache.check_and_remember("a", later, now).await,
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache
                .check_and_remember("a", later, now + Duration::minutes(4))
                .await,
            ReplayVerdict::Replayed
        );
        assert_eq!(
            cache.check_and_remember("b", later, now).await,
            ReplayVerdict::Fresh
        );
        // Full of live entries: refused rather than forgotten.
        assert_eq!(
            cache.check_and_remember("c", later, now).await,
            ReplayVerdict::Unavailable
        );
        // Once they expire they are purged and the ID may be used again.
        let after = later + Duration::seconds(1);
        assert_eq!(
            cache
                .check_and_remember("c", after + Duration::minutes(5), after)
                .await,
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache
                .check_and_remember("a", after + Duration::minutes(5), after)
                .await,
            ReplayVerdict::Fresh
        );
    }
}
