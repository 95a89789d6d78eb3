//! The `EphemeralStore` suite, run against the in-process store and a real Redis
//! (`IDP_TEST_REDIS_URL`, a random key prefix per test).

mod common;

use std::sync::Arc;
use std::time::Duration;

use idp_core::store::{EphemeralStore, StoreError};
use idp_store::{MemoryStore, RedisStore, connect_ephemeral};
use tokio::sync::Barrier;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(500);
/// Comfortably past [`SHORT`].
const PAST_SHORT: Duration = Duration::from_millis(800);

/// The whole `EphemeralStore` contract. About 1.5 s of sleeping, for the TTL cases.
async fn suite(store: Arc<dyn EphemeralStore>) {
    store.ping().await.expect("ping");

    // put / get / overwrite / delete; values are bytes.
    assert_eq!(store.get("absent").await.expect("get"), None);
    store.put("k", b"one", LONG).await.expect("put");
    assert_eq!(store.get("k").await.expect("get"), Some(b"one".to_vec()));
    store.put("k", b"two", LONG).await.expect("put");
    assert_eq!(store.get("k").await.expect("get"), Some(b"two".to_vec()));
    let binary = [0u8, 0xff, 0x80, b'\n', 0];
    store.put("bin", &binary, LONG).await.expect("put");
    assert_eq!(store.get("bin").await.expect("get"), Some(binary.to_vec()));
    store.put("empty", b"", LONG).await.expect("put");
    assert_eq!(store.get("empty").await.expect("get"), Some(Vec::new()));
    store
        .put("日本語:キー", "値".as_bytes(), LONG)
        .await
        .expect("put");
    assert_eq!(
        store.get("日本語:キー").await.expect("get"),
        Some("値".as_bytes().to_vec())
    );
    store.delete("k").await.expect("delete");
    assert_eq!(store.get("k").await.expect("get"), None);
    store
        .delete("k")
        .await
        .expect("deleting an absent key is fine");

    // put_if_absent: the first wins, the value is kept, a freed key can be taken again.
    assert!(store.put_if_absent("jti:1", b"a", LONG).await.expect("pia"));
    assert!(!store.put_if_absent("jti:1", b"b", LONG).await.expect("pia"));
    assert_eq!(store.get("jti:1").await.expect("get"), Some(b"a".to_vec()));
    store.delete("jti:1").await.expect("delete");
    assert!(store.put_if_absent("jti:1", b"c", LONG).await.expect("pia"));

    // take: one shot.
    store.put("code:1", b"grant", LONG).await.expect("put");
    assert_eq!(
        store.take("code:1").await.expect("take"),
        Some(b"grant".to_vec())
    );
    assert_eq!(store.take("code:1").await.expect("take"), None);
    assert_eq!(store.get("code:1").await.expect("get"), None);

    // take under contention: of 50 concurrent takers exactly one gets the value.
    store.put("code:2", b"grant", LONG).await.expect("put");
    let barrier = Arc::new(Barrier::new(50));
    let takers: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store.take("code:2").await
            })
        })
        .collect();
    let mut winners = 0;
    for taker in takers {
        if let Some(value) = taker.await.expect("task").expect("take") {
            assert_eq!(value, b"grant");
            winners += 1;
        }
    }
    assert_eq!(winners, 1);

    // incr: counts from 1; the value reads back as decimal, as in Redis.
    assert_eq!(store.incr("rate:a", LONG).await.expect("incr"), 1);
    assert_eq!(store.incr("rate:a", LONG).await.expect("incr"), 2);
    assert_eq!(store.incr("rate:a", LONG).await.expect("incr"), 3);
    assert_eq!(store.get("rate:a").await.expect("get"), Some(b"3".to_vec()));
    assert_eq!(store.incr("rate:b", LONG).await.expect("incr"), 1);

    // TTLs. Set up every short-lived key, then wait once.
    store.put("ttl:put", b"v", SHORT).await.expect("put");
    assert!(
        store
            .put_if_absent("ttl:pia", b"v", SHORT)
            .await
            .expect("pia")
    );
    store.put("ttl:take", b"v", SHORT).await.expect("put");
    store
        .put("ttl:zero", b"v", Duration::ZERO)
        .await
        .expect("zero ttl");
    // The window starts at the first increment and later increments do not extend it.
    assert_eq!(store.incr("ttl:window", SHORT).await.expect("incr"), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        store.get("ttl:put").await.expect("get"),
        Some(b"v".to_vec())
    );
    assert_eq!(store.incr("ttl:window", SHORT).await.expect("incr"), 2);
    tokio::time::sleep(PAST_SHORT - Duration::from_millis(250)).await;
    assert_eq!(store.get("ttl:put").await.expect("get"), None);
    assert_eq!(store.get("ttl:zero").await.expect("get"), None);
    assert_eq!(store.take("ttl:take").await.expect("take"), None);
    assert!(
        store
            .put_if_absent("ttl:pia", b"w", LONG)
            .await
            .expect("pia"),
        "an expired key is absent"
    );
    assert_eq!(
        store.incr("ttl:window", SHORT).await.expect("incr"),
        1,
        "a new window after the first one expired"
    );
    // Long-lived entries are still there.
    assert_eq!(store.get("bin").await.expect("get"), Some(binary.to_vec()));
    assert_eq!(store.incr("rate:a", LONG).await.expect("incr"), 4);
}

#[tokio::test]
async fn memory_suite() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn memory_via_spec() {
    let store = connect_ephemeral("memory").await.expect("memory");
    store.ping().await.expect("ping");
    assert!(format!("{store:?}").contains("MemoryStore"));
}

#[tokio::test]
async fn memory_capacity_is_a_hard_limit() {
    let store = MemoryStore::with_capacity(3);
    for key in ["a", "b", "c"] {
        store.put(key, b"v", LONG).await.expect("put");
    }
    let full = store.put("d", b"v", LONG).await;
    assert!(
        matches!(&full, Err(StoreError::Unavailable(m)) if m == "capacity"),
        "{full:?}"
    );
    assert!(matches!(
        store.put_if_absent("d", b"v", LONG).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.incr("d", LONG).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(store.len(), 3);
    // Existing keys can still be overwritten and read.
    store
        .put("a", b"w", LONG)
        .await
        .expect("overwrite at capacity");
    assert_eq!(store.get("a").await.expect("get"), Some(b"w".to_vec()));
    // Freeing a slot makes room.
    store.delete("b").await.expect("delete");
    store.put("d", b"v", LONG).await.expect("put after delete");
    assert_eq!(store.len(), 3);
}

#[tokio::test]
async fn memory_expired_entries_do_not_count_against_capacity() {
    let store = MemoryStore::with_capacity(2);
    store
        .put("x", b"v", Duration::from_millis(1))
        .await
        .expect("put");
    store
        .put("y", b"v", Duration::from_millis(1))
        .await
        .expect("put");
    // Past the entries' TTL and the rate limit on sweeping a full store.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.len(), 2, "expired entries linger until swept");
    store
        .put("z", b"v", LONG)
        .await
        .expect("a full store sweeps first");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn memory_sweeping_removes_expired_entries() {
    // Lazily, on access.
    let store = MemoryStore::new();
    store
        .put("gone", b"v", Duration::from_millis(1))
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.len(), 1);
    assert_eq!(store.get("gone").await.expect("get"), None);
    assert!(store.is_empty(), "reading an expired entry removes it");

    // Explicitly.
    for i in 0..10 {
        store
            .put(&format!("s{i}"), b"v", Duration::from_millis(1))
            .await
            .expect("put");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.sweep(), 10);
    assert!(store.is_empty());

    // Periodically, as a side effect of writes to other keys: expired entries that are
    // never read again cannot pile up.
    let store = MemoryStore::new().sweep_every(8);
    for i in 0..100 {
        store
            .put(&format!("old{i}"), b"v", Duration::from_millis(300))
            .await
            .expect("put");
    }
    assert_eq!(store.len(), 100);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.len(), 100, "nothing has been swept yet");
    // A sweep runs within max(8, len / 4) = 35 writes.
    for i in 0..40 {
        store
            .put(&format!("new{i}"), b"v", LONG)
            .await
            .expect("put");
    }
    assert_eq!(store.len(), 40);
}

/// A Redis store with a fresh key prefix, or `None` when Redis is not configured.
async fn redis_store() -> Option<(RedisStore, String)> {
    let url = common::service_url("IDP_TEST_REDIS_URL", "Redis")?;
    let prefix = format!("idp-test:{}:", common::unique_suffix());
    let store = RedisStore::connect(&url, &prefix)
        .await
        .expect("connect to Redis");
    Some((store, url))
}

#[tokio::test]
async fn redis_suite() {
    let Some((store, _)) = redis_store().await else {
        return;
    };
    suite(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_keys_are_prefixed_and_counters_always_expire() {
    let Some((store, url)) = redis_store().await else {
        return;
    };
    store.put("session:1", b"v", LONG).await.expect("put");
    assert_eq!(store.incr("rate:1", LONG).await.expect("incr"), 1);

    let client = redis::Client::open(url.as_str()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let prefix = store.prefix().to_owned();
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{prefix}session:1"))
        .query_async(&mut raw)
        .await
        .expect("GET");
    assert_eq!(value, Some(b"v".to_vec()));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}rate:1"))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(
        ttl > 0 && ttl <= 60_000,
        "the counter has its window: {ttl}"
    );

    // A counter that somehow lost its TTL gets one at the next increment.
    redis::cmd("SET")
        .arg(format!("{prefix}rate:2"))
        .arg("5")
        .query_async::<()>(&mut raw)
        .await
        .expect("SET");
    assert_eq!(store.incr("rate:2", LONG).await.expect("incr"), 6);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}rate:2"))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(ttl > 0, "the orphan counter now expires: {ttl}");

    // Keys outside the prefix are not this store's.
    assert_eq!(store.get("idp-test:other").await.expect("get"), None);
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}session:1"))
        .arg(format!("{prefix}rate:1"))
        .arg(format!("{prefix}rate:2"))
        .query_async(&mut raw)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn redis_via_spec() {
    let Some(url) = common::service_url("IDP_TEST_REDIS_URL", "Redis") else {
        return;
    };
    let store = connect_ephemeral(&url).await.expect("connect");
    store.ping().await.expect("ping");
    let key = format!("test:{}", common::unique_suffix());
    store
        .put(&key, b"v", Duration::from_secs(5))
        .await
        .expect("put");
    assert_eq!(store.take(&key).await.expect("take"), Some(b"v".to_vec()));
}

#[tokio::test]
async fn redis_errors_never_show_the_password() {
    for spec in [
        "redis://:s3cret-pw@127.0.0.1:1",
        "redis://idp:s3cret-pw@127.0.0.1:1/0",
        "rediss://idp:s3cret-pw@127.0.0.1:1/0",
    ] {
        let error = connect_ephemeral(spec)
            .await
            .expect_err("nothing listens on port 1");
        let shown = format!("{error} {error:?}");
        eprintln!("{error}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
    let error = connect_ephemeral("memcached://u:s3cret-pw@cache")
        .await
        .expect_err("unsupported");
    assert!(matches!(error, idp_store::Error::UnsupportedUrl(_)));
    assert!(!format!("{error} {error:?}").contains("s3cret-pw"));
}
