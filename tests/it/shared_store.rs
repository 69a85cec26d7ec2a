//! Several gates on one PostgreSQL database: a change made through one gate, the CLI or an operator's SQL reaches
//! the others within a second through `LISTEN`/`NOTIFY`; without notifications, within the cache's TTL; a lost
//! notification connection flushes the cache when it is back; the database down and back; a dump holds no secret.
//!
//! Every gate here caches for an hour unless said otherwise, so that only a notification (or a flush) can explain a
//! change seen sooner.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, KeyStore, NewKey, Pepper, Peppers,
    PgKeyStore, StoreAccess, open_store,
};
use scopegate::policy::{DenialKind, ScopeSet};
use scopegate::{Clock, SystemClock};

use crate::stores::{fresh_database, postgres_server};

const PEPPER: &str = "a-shared-store-pepper-of-more-than-32-bytes";
const HOUR: Duration = Duration::from_secs(3600);

fn peppers() -> Peppers {
    Peppers::single(Pepper::new(1, PEPPER.as_bytes().to_vec()).unwrap())
}

/// One gate: its own connection pool, its own cache, an issuer writing through that cache.
struct Gate {
    cache: Arc<KeyCache>,
    issuer: KeyIssuer,
    verifier: ApiKeyVerifier,
}

async fn gate(url: &str, cache: CacheConfig, last_used: Option<Duration>) -> Gate {
    let store = open_store(url, StoreAccess::Gate).await.unwrap();
    let cache = Arc::new(KeyCache::new(store, cache));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Gate {
        issuer: KeyIssuer::new(
            cache.clone(),
            KeyFormat::default(),
            peppers(),
            Arc::clone(&clock),
        ),
        verifier: ApiKeyVerifier::builder(peppers(), cache.clone())
            .last_used(last_used)
            .build(),
        cache,
    }
}

/// A migrated database of its own on the test server; `None` (skipped loudly) where there is none outside CI.
async fn database() -> Option<String> {
    let server = postgres_server()?;
    let url = fresh_database(&server).await;
    open_store(&url, StoreAccess::Migrate).await.unwrap();
    Some(url)
}

fn scopes() -> ScopeSet {
    ScopeSet::parse(["orders:read"]).unwrap()
}

/// How long until verifying `key` at `gate` gives `want` (`None`: allowed), polling every millisecond; `None`
/// when it has not after `limit`.
async fn time_until(
    gate: &ApiKeyVerifier,
    key: &str,
    want: Option<DenialKind>,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let outcome = gate.verify(key).await.err().map(|d| d.kind());
        if outcome == want {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(args)
        .env("SCOPEGATE_PEPPER", PEPPER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_change_anywhere_reaches_the_other_gate_within_a_second() {
    let Some(url) = database().await else { return };
    let a = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let b = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let revoked = Some(DenialKind::RevokedCredential);
    let disabled = Some(DenialKind::DisabledCredential);
    let second = Duration::from_secs(1);
    let mut delays = Vec::new();

    // Issued at A; B reads it once, then holds it for an hour unless told otherwise.
    let issue = || async { a.issuer.issue(NewKey::new("k", scopes())).await.unwrap() };
    let k1 = issue().await;
    let k1_key = k1.key().expose_str().unwrap().to_owned();
    assert!(b.verifier.verify(&k1_key).await.is_ok());
    assert!(b.cache.is_watching_store());

    // Disabled and enabled at A.
    a.issuer.disable(k1.id()).await.unwrap();
    delays.push(time_until(&b.verifier, &k1_key, disabled, second).await);
    a.issuer.enable(k1.id()).await.unwrap();
    delays.push(time_until(&b.verifier, &k1_key, None, second).await);
    // Revoked at A.
    a.issuer.revoke(k1.id()).await.unwrap();
    delays.push(time_until(&b.verifier, &k1_key, revoked, second).await);

    // Rotated at A with no grace: the old key stops at B, the new one works there.
    let k2 = issue().await;
    let k2_key = k2.key().expose_str().unwrap().to_owned();
    assert!(b.verifier.verify(&k2_key).await.is_ok());
    let k3 = a
        .issuer
        .rotate(k2.id(), Duration::ZERO, None)
        .await
        .unwrap();
    delays.push(time_until(&b.verifier, &k2_key, revoked, second).await);
    assert!(
        b.verifier
            .verify(k3.key().expose_str().unwrap())
            .await
            .is_ok()
    );

    // Revoked and disabled through the CLI, another process.
    let k4 = issue().await;
    let k4_key = k4.key().expose_str().unwrap().to_owned();
    assert!(b.verifier.verify(&k4_key).await.is_ok());
    cli(&["keys", "disable", "--store", &url, k4.id().as_str()]);
    delays.push(time_until(&b.verifier, &k4_key, disabled, second).await);
    cli(&["keys", "revoke", "--store", &url, k4.id().as_str()]);
    delays.push(time_until(&b.verifier, &k4_key, revoked, second).await);

    // Through the operators' SQL functions.
    let k5 = issue().await;
    let k5_key = k5.key().expose_str().unwrap().to_owned();
    assert!(b.verifier.verify(&k5_key).await.is_ok());
    let sql = sqlx::PgPool::connect(&url).await.unwrap();
    let call = |function: &'static str| {
        let sql = sql.clone();
        let id = k5.id().as_str().to_owned();
        async move {
            sqlx::query_scalar::<_, bool>(&format!("SELECT {function}($1)"))
                .bind(id)
                .fetch_one(&sql)
                .await
        }
    };
    assert!(call("scopegate_disable").await.unwrap());
    delays.push(time_until(&b.verifier, &k5_key, disabled, second).await);
    assert!(call("scopegate_enable").await.unwrap());
    delays.push(time_until(&b.verifier, &k5_key, None, second).await);
    assert!(call("scopegate_revoke").await.unwrap());
    delays.push(time_until(&b.verifier, &k5_key, revoked, second).await);
    // Revocation is final in SQL too.
    let refused = call("scopegate_enable").await.unwrap_err().to_string();
    assert!(refused.contains("revocation is final"), "{refused}");

    assert!(
        delays.iter().all(Option::is_some),
        "a change did not reach the other gate within 1 s: {delays:?}"
    );
    eprintln!("delays until the other gate saw each change: {delays:?}");
}

#[tokio::test]
async fn without_notifications_the_ttl_bounds_the_delay() {
    let Some(url) = database().await else { return };
    let a = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let ttl = Duration::from_secs(2);
    let deaf = gate(
        &url,
        CacheConfig::default().ttl(ttl).store_notifications(false),
        None,
    )
    .await;
    let k = a.issuer.issue(NewKey::new("k", scopes())).await.unwrap();
    let key = k.key().expose_str().unwrap().to_owned();
    assert!(deaf.verifier.verify(&key).await.is_ok());
    assert!(!deaf.cache.is_watching_store());
    let revoked_at = Instant::now();
    a.issuer.revoke(k.id()).await.unwrap();
    // Not told: the cached key still answers for a while (the twin of the test above) ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deaf.verifier.verify(&key).await.is_ok());
    // ... and is refused once its entry is past the TTL.
    let seen = time_until(
        &deaf.verifier,
        &key,
        Some(DenialKind::RevokedCredential),
        ttl,
    )
    .await;
    assert!(seen.is_some(), "not refused within the TTL");
    assert!(revoked_at.elapsed() <= ttl + Duration::from_millis(500));
}

/// A change made with the trigger switched off is announced to nobody; when the listener's connection is lost
/// and comes back, the cache is flushed, so the change is seen then.
#[tokio::test]
async fn a_lost_listener_flushes_the_cache_when_it_is_back() {
    let Some(url) = database().await else { return };
    let b = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let a = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let k = a.issuer.issue(NewKey::new("k", scopes())).await.unwrap();
    let key = k.key().expose_str().unwrap().to_owned();
    assert!(b.verifier.verify(&key).await.is_ok());
    // Let the listener start and flush once (its first LISTEN), and read the key again after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.verifier.verify(&key).await.is_ok());

    let sql = sqlx::PgPool::connect(&url).await.unwrap();
    let mut tx = sql.begin().await.unwrap();
    for statement in [
        "ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed",
        "UPDATE api_keys SET revoked_at = 1",
        "ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    // Unannounced: B still answers from its cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.verifier.verify(&key).await.is_ok());

    // The listeners' connections end (each gate holds one, waiting on LISTEN).
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&sql)
    .await
    .unwrap();
    assert!(!ended.is_empty() && ended.iter().all(|e| *e), "{ended:?}");
    let seen = time_until(
        &b.verifier,
        &key,
        Some(DenialKind::RevokedCredential),
        Duration::from_secs(3),
    )
    .await;
    assert!(seen.is_some(), "the cache was not flushed on reconnect");
}

/// A cluster of this test's own (it is stopped and started); `None` where the server tests are skipped.
struct OwnCluster {
    url: String,
    down: String,
    up: String,
    stop: String,
}

impl OwnCluster {
    fn start() -> Option<OwnCluster> {
        postgres_server()?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/throwaway-postgres.sh");
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "eval \"$({script})\" && printf '%s\\n' \"$SCOPEGATE_TEST_POSTGRES_URL\" \
                 \"$SCOPEGATE_TEST_POSTGRES_DOWN\" \"$SCOPEGATE_TEST_POSTGRES_UP\" \"$SCOPEGATE_TEST_POSTGRES_STOP\""
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines().map(str::to_owned);
        let mut next = || lines.next().unwrap();
        Some(OwnCluster {
            url: next(),
            down: next(),
            up: next(),
            stop: next(),
        })
    }

    fn run(command: &str) {
        let status = Command::new("bash")
            .arg("-c")
            .arg(command)
            .status()
            .unwrap();
        assert!(status.success(), "{command}");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg("-c").arg(&self.stop).status();
    }
}

/// The database down: a cached key answers until its cache bound, then 503; a key not cached is 503 at once; never
/// 200 without the store. Back up: the gate recovers by itself, and listens again.
#[tokio::test]
async fn the_database_down_and_back() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let url = fresh_database(&cluster.url).await;
    open_store(&url, StoreAccess::Migrate).await.unwrap();
    let ttl = Duration::from_secs(2);
    let g = gate(&url, CacheConfig::default().ttl(ttl), None).await;
    let cached = g.issuer.issue(NewKey::new("c", scopes())).await.unwrap();
    let cached_key = cached.key().expose_str().unwrap().to_owned();
    let uncached = g.issuer.issue(NewKey::new("u", scopes())).await.unwrap();
    let uncached_key = uncached.key().expose_str().unwrap().to_owned();
    assert!(g.verifier.verify(&cached_key).await.is_ok());
    let read_at = Instant::now();

    OwnCluster::run(&cluster.down);
    let unavailable = Some(DenialKind::Unavailable);
    assert_eq!(
        g.verifier.verify(&uncached_key).await.unwrap_err().kind(),
        DenialKind::Unavailable
    );
    // The cached key answers until its bound; only allowed or 503, never anything else, then 503.
    if read_at.elapsed() + Duration::from_millis(500) < ttl {
        assert!(g.verifier.verify(&cached_key).await.is_ok());
    }
    let refused = time_until(&g.verifier, &cached_key, unavailable, ttl * 2).await;
    assert!(refused.is_some(), "the cached key outlived its bound");
    assert!(read_at.elapsed() + Duration::from_millis(50) >= ttl);
    for _ in 0..20 {
        assert_eq!(
            g.verifier.verify(&cached_key).await.unwrap_err().kind(),
            DenialKind::Unavailable
        );
    }

    OwnCluster::run(&cluster.up);
    let back = time_until(&g.verifier, &uncached_key, None, Duration::from_secs(10)).await;
    assert!(back.is_some(), "the gate did not recover");
    assert!(g.verifier.verify(&cached_key).await.is_ok());
    // Listening again after a restart: a gate that caches for an hour sees a change made elsewhere.
    let watching = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    assert!(watching.verifier.verify(&cached_key).await.is_ok());
    OwnCluster::run(&cluster.down);
    OwnCluster::run(&cluster.up);
    tokio::time::sleep(Duration::from_millis(200)).await;
    g.issuer.revoke(cached.id()).await.unwrap();
    let seen = time_until(
        &watching.verifier,
        &cached_key,
        Some(DenialKind::RevokedCredential),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        seen.is_some(),
        "the restarted database's changes were not heard"
    );
}

/// `last_used_at` is written behind the request, once per interval per key, and shows in `keys list --json`.
#[tokio::test]
async fn last_use_is_written_behind_the_requests() {
    let Some(url) = database().await else { return };
    let g = gate(
        &url,
        CacheConfig::default().ttl(HOUR),
        Some(Duration::from_secs(1)),
    )
    .await;
    let used = g.issuer.issue(NewKey::new("used", scopes())).await.unwrap();
    let idle = g.issuer.issue(NewKey::new("idle", scopes())).await.unwrap();
    let before = SystemClock.now() - Duration::from_secs(1);
    for _ in 0..100 {
        assert!(
            g.verifier
                .verify(used.key().expose_str().unwrap())
                .await
                .is_ok()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let last_used = loop {
        let info = g.issuer.get(used.id()).await.unwrap();
        if info.last_used_at.is_some() || Instant::now() > deadline {
            break info.last_used_at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(last_used.is_some_and(|t| t >= before), "{last_used:?}");
    assert_eq!(g.issuer.get(idle.id()).await.unwrap().last_used_at, None);

    let listed: serde_json::Value =
        serde_json::from_str(&cli(&["keys", "list", "--store", &url, "--json"])).unwrap();
    let entry = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .cloned()
            .unwrap()
    };
    assert!(entry(used.id().as_str())["last_used_at"].is_string());
    assert!(entry(idle.id().as_str())["last_used_at"].is_null());
    assert_eq!(entry(idle.id().as_str())["status"], "active");
}

/// A dump of the database holds key ids and hashes, never a key, its secret part, or the pepper.
#[tokio::test]
async fn a_dump_holds_no_key_and_no_pepper() {
    let Some(url) = database().await else { return };
    let store = PgKeyStore::connect(&url).await.unwrap();
    let issuer = KeyIssuer::new(
        Arc::new(store),
        KeyFormat::default(),
        peppers(),
        Arc::new(SystemClock),
    );
    let mut keys = Vec::new();
    for n in 0..5 {
        let key = issuer
            .issue(NewKey::new(format!("k{n}"), scopes()))
            .await
            .unwrap();
        keys.push((key.id(), key.key().expose_str().unwrap().to_owned()));
    }
    let pg_dump = ["/usr/lib/postgresql/15/bin/pg_dump", "pg_dump"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .expect("pg_dump is installed with PostgreSQL");
    let dump = Command::new(pg_dump).arg(&url).output().unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8(dump.stdout).unwrap();
    let pepper_hex = PEPPER.bytes().fold(String::new(), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    });
    for (id, key) in &keys {
        // The id is public and is there; the key and its secret part are not.
        assert!(dump.contains(id.as_str()));
        let secret = &key[key.len() - 40..key.len() - 6];
        assert!(!dump.contains(key.as_str()) && !dump.contains(secret));
    }
    assert!(!dump.contains(PEPPER) && !dump.contains(&pepper_hex));
}

/// Two gates with separate caches agree on many keys, half of them revoked straight in the store.
#[tokio::test]
async fn two_gates_agree_on_many_keys() {
    let Some(url) = database().await else { return };
    let a = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let b = gate(&url, CacheConfig::default().ttl(HOUR), None).await;
    let store: Arc<dyn KeyStore> = Arc::clone(a.cache.store());
    let mut keys = Vec::new();
    for n in 0..50 {
        let issued = a
            .issuer
            .issue(NewKey::new(format!("k{n}"), scopes()))
            .await
            .unwrap();
        keys.push(issued);
    }
    for (n, k) in keys.iter().enumerate() {
        if n % 2 == 0 {
            store.revoke(k.id(), SystemClock.now()).await.unwrap();
        }
    }
    for (n, k) in keys.iter().enumerate() {
        let key = k.key().expose_str().unwrap();
        let want = (n % 2 == 0).then_some(DenialKind::RevokedCredential);
        for verifier in [&a.verifier, &b.verifier] {
            let seen = time_until(verifier, key, want, Duration::from_secs(1)).await;
            assert!(seen.is_some(), "key {n}");
        }
    }
}
