//! A [`SessionStore`] on Redis (feature `redis`), for relying parties that run several
//! processes: every process sees every session, and a back-channel logout received by one
//! process ends the sessions all of them serve.
//!
//! Layout, under a key prefix `P` chosen by the application:
//! - `P:session:{hex(SHA-256(id))}`: the session as JSON. The cookie value never appears
//!   in a key (a `SCAN` or a `MONITOR` does not hand out live cookies). Its TTL is the
//!   session's absolute lifetime ([`RedisSessions::with_max_lifetime`], shortened by a
//!   SAML `SessionNotOnOrAfter`), so expired sessions vanish on their own.
//! - `P:sid:{sid}` and `P:sub:{sub}`: sets of the hashes of the sessions of an IdP session
//!   and of a subject, kept at least as long as their members, for back-channel logout.
//!
//! Every change is one Lua script, so it is atomic: a logout cannot interleave with an
//! insert or an update, and an update never brings back a session a logout removed. The
//! scripts name the index and session keys they derive, so this needs a single Redis
//! (not Redis Cluster), 6.0 or newer (`KEEPTTL`).
//!
//! Every Redis failure is an [`Error::Session`]: the kit's extractors then answer 503, never
//! a login.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};
use time::OffsetDateTime;

use crate::Error;
use crate::client::LogoutNotice;
use crate::sessions::{Session, SessionStore};

/// The absolute lifetime a session gets when none is configured: the default
/// [`WebConfig::absolute_timeout`](crate::WebConfig::absolute_timeout).
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// Stores the session (KEYS[1], value ARGV[1], TTL ARGV[2] ms) and adds its hash
/// (ARGV[3]) to the index sets KEYS[2..]. Index members whose session is gone are pruned
/// (ARGV[4]: the session key prefix), and each set lives as long as its longest member.
const INSERT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if redis.call('EXISTS', ARGV[4] .. member) == 0 then
      redis.call('SREM', KEYS[i], member)
    end
  end
  redis.call('SADD', KEYS[i], ARGV[3])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// Replaces the session KEYS[1] only if it still exists, keeping its TTL; indexes its hash
/// ARGV[2] under the sets KEYS[2..] (in case its sid or subject changed). 0 if it was gone.
const UPDATE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'XX', 'KEEPTTL') then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[2])
  if ttl > 0 and redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// Removes the session KEYS[1] (hash ARGV[2]) and its index entries (ARGV[1]: the prefix).
const REMOVE: &str = r"
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local ok, session = pcall(cjson.decode, raw)
if ok and type(session) == 'table' then
  if type(session.sid) == 'string' then
    redis.call('SREM', ARGV[1] .. ':sid:' .. session.sid, ARGV[2])
  end
  if type(session.doctor) == 'table' and type(session.doctor.subject) == 'string' then
    redis.call('SREM', ARGV[1] .. ':sub:' .. session.doctor.subject, ARGV[2])
  end
end
return redis.call('DEL', KEYS[1])
";

/// Back-channel logout: ends the sessions named by the index sets KEYS (the sid set, the
/// subject set, or both: then their intersection), each checked against its stored sid
/// and subject (ARGV[2..5]: has_sid, sid, has_sub, sub), as `MemorySessions` does. Stale
/// members are pruned. Returns how many sessions ended.
const REMOVE_NAMED: &str = r"
local prefix = ARGV[1]
local members
if #KEYS == 2 then
  members = redis.call('SINTER', KEYS[1], KEYS[2])
else
  members = redis.call('SMEMBERS', KEYS[1])
end
local ended = 0
for _, member in ipairs(members) do
  local key = prefix .. ':session:' .. member
  local raw = redis.call('GET', key)
  if not raw then
    for i = 1, #KEYS do
      redis.call('SREM', KEYS[i], member)
    end
  else
    local session = cjson.decode(raw)
    local sid = session.sid
    local sub = session.doctor.subject
    local sid_ok = ARGV[2] == '0' or sid == ARGV[3]
    local sub_ok = ARGV[4] == '0' or sub == ARGV[5]
    if sid_ok and sub_ok then
      redis.call('DEL', key)
      ended = ended + 1
      if type(sid) == 'string' then
        redis.call('SREM', prefix .. ':sid:' .. sid, member)
      end
      if type(sub) == 'string' then
        redis.call('SREM', prefix .. ':sub:' .. sub, member)
      end
    end
  end
end
return ended
";

/// Sessions in Redis, shared by every process of the relying party. Cheap to clone (one
/// multiplexed connection that reconnects on its own).
#[derive(Clone)]
pub struct RedisSessions {
    connection: ConnectionManager,
    prefix: String,
    max_lifetime: Duration,
    insert: Script,
    update: Script,
    remove: Script,
    remove_named: Script,
}

impl fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.prefix)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

/// Logs the cause (never a key: a session key is derived from a cookie) and fails closed.
fn unavailable(operation: &'static str, error: &RedisError) -> Error {
    tracing::warn!(operation, kind = ?error.kind(), error = %error, "redis session store failed");
    Error::Session("the session store (redis) is unavailable")
}

impl RedisSessions {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://` for
    /// TLS) and checks that the server answers. Keys start with `key_prefix` followed by
    /// `:` (e.g. `"my-rp"`), so several relying parties can share one Redis. Sessions live
    /// at most [`DEFAULT_SESSION_LIFETIME`] unless [`Self::with_max_lifetime`] says
    /// otherwise. Connecting and each later command time out after 5 s.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, Error> {
        if url.starts_with("rediss://") && rustls::crypto::CryptoProvider::get_default().is_none() {
            // No rustls provider chosen by the process yet: choose the kit's one (ring)
            // rather than let redis panic. Losing a race with another installer is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(|e| unavailable("connect", &e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let mut connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable("connect", &e))?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| unavailable("connect", &e))?;
        Ok(Self::from_connection(connection, key_prefix))
    }

    /// Sessions on a connection the application already has.
    pub fn from_connection(connection: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            connection,
            prefix: key_prefix.to_owned(),
            max_lifetime: DEFAULT_SESSION_LIFETIME,
            insert: Script::new(INSERT),
            update: Script::new(UPDATE),
            remove: Script::new(REMOVE),
            remove_named: Script::new(REMOVE_NAMED),
        }
    }

    /// The absolute lifetime of a session (from its `created_at`): set it to
    /// [`WebConfig::absolute_timeout`](crate::WebConfig::absolute_timeout).
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The prefix of every key.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of the session under `id`: the prefix and the SHA-256 of `id` in hex
    /// (never the cookie value itself).
    pub fn session_key(&self, id: &str) -> String {
        self.session_key_of(&hash(id))
    }

    fn session_key_of(&self, hash: &str) -> String {
        format!("{}:session:{hash}", self.prefix)
    }

    fn sid_key(&self, sid: &str) -> String {
        format!("{}:sid:{sid}", self.prefix)
    }

    fn sub_key(&self, sub: &str) -> String {
        format!("{}:sub:{sub}", self.prefix)
    }

    /// The index sets a session belongs to.
    fn index_keys(&self, session: &Session) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if let Some(sid) = &session.sid {
            keys.push(self.sid_key(sid));
        }
        keys.push(self.sub_key(session.doctor.subject.as_str()));
        keys
    }

    /// Milliseconds until the session must end: its absolute lifetime, or earlier if its
    /// SAML login set an end. `None` when it already has.
    fn ttl_millis(&self, session: &Session, now: OffsetDateTime) -> Option<u64> {
        let mut end = session.created_at + self.max_lifetime;
        if let Some(login_end) = session.saml.as_ref().and_then(|s| s.not_on_or_after) {
            end = end.min(login_end);
        }
        let left = end - now;
        (left.is_positive())
            .then(|| u64::try_from(left.whole_milliseconds()).map_or(u64::MAX, |ms| ms.max(1)))
    }
}

/// SHA-256 in lower-case hex.
fn hash(id: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, id.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_json(session: &Session) -> Result<String, Error> {
    serde_json::to_string(session).map_err(|_| Error::Session("the session cannot be stored"))
}

#[async_trait::async_trait]
impl SessionStore for RedisSessions {
    async fn insert(&self, id: &str, session: Session) -> Result<(), Error> {
        let Some(ttl) = self.ttl_millis(&session, OffsetDateTime::now_utc()) else {
            // Already past its end: there is nothing to keep.
            return Ok(());
        };
        let json = to_json(&session)?;
        let member = hash(id);
        let mut invocation = self.insert.key(self.session_key_of(&member));
        for key in self.index_keys(&session) {
            invocation.key(key);
        }
        invocation
            .arg(json)
            .arg(ttl)
            .arg(&member)
            .arg(format!("{}:session:", self.prefix));
        invocation
            .invoke_async::<()>(&mut self.connection.clone())
            .await
            .map_err(|e| unavailable("insert", &e))
    }

    async fn get(&self, id: &str) -> Result<Option<Session>, Error> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.session_key(id))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| unavailable("get", &e))?;
        raw.map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                tracing::warn!(error = %e, "a stored session is unreadable");
                Error::Session("a stored session is unreadable")
            })
        })
        .transpose()
    }

    async fn update(&self, id: &str, session: Session) -> Result<(), Error> {
        let json = to_json(&session)?;
        let member = hash(id);
        let mut invocation = self.update.key(self.session_key_of(&member));
        for key in self.index_keys(&session) {
            invocation.key(key);
        }
        invocation.arg(json).arg(&member);
        invocation
            .invoke_async::<()>(&mut self.connection.clone())
            .await
            .map_err(|e| unavailable("update", &e))
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let member = hash(id);
        self.remove
            .key(self.session_key_of(&member))
            .arg(&self.prefix)
            .arg(&member)
            .invoke_async::<()>(&mut self.connection.clone())
            .await
            .map_err(|e| unavailable("remove", &e))
    }

    async fn remove_named(&self, notice: &LogoutNotice) -> Result<usize, Error> {
        let mut invocation = self.remove_named.prepare_invoke();
        if let Some(sid) = &notice.sid {
            invocation.key(self.sid_key(sid));
        }
        if let Some(sub) = &notice.subject {
            invocation.key(self.sub_key(sub.as_str()));
        }
        if notice.sid.is_none() && notice.subject.is_none() {
            // Names nothing (the kit never builds such a notice): ends nothing.
            return Ok(0);
        }
        invocation
            .arg(&self.prefix)
            .arg(if notice.sid.is_some() { "1" } else { "0" })
            .arg(notice.sid.as_deref().unwrap_or(""))
            .arg(if notice.subject.is_some() { "1" } else { "0" })
            .arg(notice.subject.as_ref().map_or("", |s| s.as_str()));
        invocation
            .invoke_async::<usize>(&mut self.connection.clone())
            .await
            .map_err(|e| unavailable("remove_named", &e))
    }

    /// Nothing to do: every session carries its absolute lifetime as a Redis TTL, and a
    /// session idle too long is ended when next presented (the kit checks both timeouts on
    /// every request).
    async fn remove_expired(
        &self,
        _created_before: OffsetDateTime,
        _seen_before: OffsetDateTime,
    ) -> Result<usize, Error> {
        Ok(0)
    }
}

/// A SAML [`ReplayCache`](crate::ReplayCache) on Redis: an assertion accepted by one
/// process is refused by every other. Each assertion is `SET P:assertion:{hex(SHA-256)}
/// NX PXAT` until it could no longer be accepted; any Redis failure refuses the response
/// ([`ReplayVerdict::Unavailable`](crate::ReplayVerdict::Unavailable)).
#[derive(Clone)]
pub struct RedisReplayCache {
    connection: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisReplayCache {
    /// The cache on the connection of a [`RedisSessions`] (or any other), under
    /// `key_prefix`.
    pub fn from_connection(connection: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            connection,
            prefix: key_prefix.to_owned(),
        }
    }

    /// The cache on the same Redis and prefix as `sessions`.
    pub fn beside(sessions: &RedisSessions) -> Self {
        Self::from_connection(sessions.connection.clone(), &sessions.prefix)
    }
}

#[async_trait::async_trait]
impl crate::ReplayCache for RedisReplayCache {
    async fn check_and_remember(
        &self,
        id: &str,
        keep_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> crate::ReplayVerdict {
        use crate::ReplayVerdict;
        if keep_until <= now {
            // Nothing to remember: validation refuses such an assertion anyway.
            return ReplayVerdict::Replayed;
        }
        let at_millis = keep_until.unix_timestamp_nanos() / 1_000_000;
        let key = format!("{}:assertion:{}", self.prefix, hash(id));
        let mut connection = self.connection.clone();
        let set: Result<Option<String>, RedisError> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(i64::try_from(at_millis).unwrap_or(i64::MAX))
            .query_async(&mut connection)
            .await;
        match set {
            Ok(Some(_)) => ReplayVerdict::Fresh,
            Ok(None) => ReplayVerdict::Replayed,
            Err(e) => {
                tracing::warn!(kind = ?e.kind(), error = %e, "redis replay cache failed");
                ReplayVerdict::Unavailable
            }
        }
    }
}
