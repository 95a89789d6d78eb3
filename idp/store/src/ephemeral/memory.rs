//! The in-process ephemeral store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idp_core::store::{EphemeralStore, StoreError};

use super::effective_ttl;

/// Default [`MemoryStore`] capacity: entries held at most.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// Default minimum number of writes between two sweeps of a [`MemoryStore`].
pub const DEFAULT_SWEEP_EVERY: usize = 1024;

/// While full, the store sweeps at most this often before refusing a new key, so a
/// store full of live entries does not rescan the whole map on every refused write.
const FULL_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// An [`EphemeralStore`] in this process's memory: for a single instance (development,
/// small deployments). State is lost on restart and not shared between processes.
///
/// Memory is bounded two ways:
/// - expired entries are removed when touched, and a sweep removes all of them once
///   enough writes have happened since the last sweep (at least
///   [`DEFAULT_SWEEP_EVERY`], and at least a quarter of the entries, so sweeping costs O(1)
///   per write amortised);
/// - a hard capacity: a write that would add a key beyond it first sweeps, and if the map
///   is still full fails with [`StoreError::Unavailable`]`("capacity")` instead of growing.
///   Overwriting or incrementing an existing key is always possible.
///
/// Counters ([`EphemeralStore::incr`]) are stored as ASCII decimal, as Redis stores them,
/// so `get` on a counter returns e.g. `b"3"` with either store.
pub struct MemoryStore {
    state: Mutex<State>,
    capacity: usize,
    sweep_every: usize,
}

struct State {
    entries: HashMap<String, Entry>,
    writes_since_sweep: usize,
    last_sweep: Instant,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .field("sweep_every", &self.sweep_every)
            .finish()
    }
}

impl MemoryStore {
    /// An empty store with [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty store holding at most `capacity` entries (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                writes_since_sweep: 0,
                last_sweep: Instant::now(),
            }),
            capacity: capacity.max(1),
            sweep_every: DEFAULT_SWEEP_EVERY,
        }
    }

    /// Sets the minimum number of writes between sweeps (at least 1); see the type docs.
    pub fn sweep_every(mut self, writes: usize) -> Self {
        self.sweep_every = writes.max(1);
        self
    }

    /// The number of entries held, including expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity this store was built with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes every expired entry now and returns how many were removed. Writes do this
    /// on their own; this is for tests and maintenance.
    pub fn sweep(&self) -> usize {
        self.lock().sweep(Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, and every update leaves the map
        // consistent, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bookkeeping before a write: the periodic sweep, then the capacity check for `key`.
    /// Stores `value` under `key` for `ttl` (capacity and sweeping as for every write).
    fn write(
        &self,
        state: &mut State,
        key: &str,
        value: &[u8],
        ttl: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.prepare_write(state, key, now)?;
        state.entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: expiry(now, ttl),
            },
        );
        Ok(())
    }

    fn prepare_write(&self, state: &mut State, key: &str, now: Instant) -> Result<(), StoreError> {
        state.writes_since_sweep += 1;
        let threshold = self.sweep_every.max(state.entries.len() / 4);
        if state.writes_since_sweep >= threshold {
            state.sweep(now);
        }
        if state.entries.len() >= self.capacity && !state.entries.contains_key(key) {
            if now.duration_since(state.last_sweep) >= FULL_SWEEP_INTERVAL {
                state.sweep(now);
            }
            if state.entries.len() >= self.capacity {
                tracing::warn!(capacity = self.capacity, "memory store is full");
                return Err(StoreError::Unavailable("capacity".to_owned()));
            }
        }
        Ok(())
    }
}

impl State {
    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.is_live(now));
        self.writes_since_sweep = 0;
        self.last_sweep = now;
        before - self.entries.len()
    }

    /// The live entry under `key`; an expired one is removed.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.is_live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    let ttl = effective_ttl(ttl);
    // `effective_ttl` caps the TTL at a year, far from `Instant`'s range on any platform;
    // were the addition to overflow anyway, the entry would simply expire at once.
    now.checked_add(ttl).unwrap_or(now)
}

#[async_trait]
impl EphemeralStore for MemoryStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        self.write(&mut state, key, value, ttl, now)?;
        Ok(())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.live(key, now).is_some() {
            return Ok(false);
        }
        self.write(&mut state, key, value, ttl, now)?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        Ok(self.lock().live(key, now).map(|entry| entry.value.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        let entry = self.lock().entries.remove(key);
        Ok(entry.filter(|e| e.is_live(now)).map(|e| e.value))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().entries.remove(key);
        Ok(())
    }

    async fn incr(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(entry) = state.live(key, now) {
            let count = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Conflict("the value is not a counter".to_owned()))?;
            let count = count.saturating_add(1);
            // The window is fixed at the first increment: the expiry is kept.
            entry.value = count.to_string().into_bytes();
            return Ok(count);
        }
        self.prepare_write(&mut state, key, now)?;
        state.entries.insert(
            key.to_owned(),
            Entry {
                value: b"1".to_vec(),
                expires_at: expiry(now, window),
            },
        );
        Ok(1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
