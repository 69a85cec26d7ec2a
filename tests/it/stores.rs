//! One contract for every key store: memory, `SQLite` and PostgreSQL answer the same operations the same way.
//!
//! PostgreSQL: `SCOPEGATE_TEST_POSTGRES_URL` names a server where the tests may create databases (`.ci/run` starts
//! a throwaway cluster with `scripts/throwaway-postgres.sh`). Without it the PostgreSQL tests fail under CI and
//! skip loudly elsewhere.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, IssuerError, KeyCache, KeyFormat, KeyIssuer, KeyStatus, KeyStore,
    MemoryKeyStore, NewKey, Pepper, Peppers, RateLimit, StoreAccess, StoreError, open_store,
};
use scopegate::policy::{DenialKind, ScopeSet};
use scopegate::{Clock, ManualClock};

const T0: u64 = 1_800_000_000;

/// The whole contract, against `store`.
async fn contract(store: Arc<dyn KeyStore>) {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
    let peppers = Peppers::single(Pepper::new(1, vec![9; 32]).unwrap());
    // A cache with a one-second TTL: what the store holds is what the verifier sees, a second later at most.
    let cache = Arc::new(KeyCache::new(
        Arc::clone(&store),
        CacheConfig::default().ttl(Duration::from_secs(1)),
    ));
    let issuer = KeyIssuer::new(
        Arc::clone(&store),
        KeyFormat::default(),
        peppers.clone(),
        Arc::clone(&clock_arc),
    );
    let verifier = ApiKeyVerifier::builder(peppers, cache)
        .clock(clock_arc)
        .build();
    let request = |name: &str| {
        NewKey::new(
            name,
            ScopeSet::parse(["invoices:read", "orders:*"]).unwrap(),
        )
        .allow_ips(
            ["10.0.0.0/8", "2001:db8::/32"]
                .iter()
                .map(|c| c.parse::<scopegate::network::Cidr>().unwrap())
                .collect(),
        )
        .attributes(
            [("tenant".to_owned(), "acme".to_owned())]
                .into_iter()
                .collect(),
        )
        .expires_in(Duration::from_secs(86_400))
    };

    // Issued, read back and verified exactly as issued.
    let a = issuer.issue(request("a")).await.unwrap();
    let a_key = a.key().expose_str().unwrap().to_owned();
    let info = issuer.get(a.id()).await.unwrap();
    assert_eq!(&info, a.info());
    let grant = verifier.verify(&a_key).await.unwrap();
    assert_eq!(grant.principal(), a.id().as_str());
    assert_eq!(grant.attr("tenant"), Some("acme"));
    assert_eq!(grant.scopes().to_string(), info.scopes.to_string());
    // A wrong secret under the right id: refused.
    let mut wrong = a_key.clone().into_bytes();
    let last = wrong.len() - 5;
    wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
    assert!(
        verifier
            .verify(std::str::from_utf8(&wrong).unwrap())
            .await
            .is_err()
    );

    // The same record twice: refused, the first kept.
    let record = store.get(a.id()).await.unwrap().unwrap();
    assert!(matches!(
        store.insert(record).await,
        Err(StoreError::Duplicate(id)) if id == a.id()
    ));
    assert_eq!(issuer.get(a.id()).await.unwrap(), info);

    // Revocation: final, and the earliest time is kept.
    let b = issuer.issue(request("b")).await.unwrap();
    let b_key = b.key().expose_str().unwrap().to_owned();
    assert!(verifier.verify(&b_key).await.is_ok());
    issuer.revoke(b.id()).await.unwrap();
    let first = store.get(b.id()).await.unwrap().unwrap().info.revoked_at;
    clock.advance(Duration::from_secs(2));
    store
        .revoke(b.id(), clock.now() + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        store.get(b.id()).await.unwrap().unwrap().info.revoked_at,
        first
    );
    assert_eq!(
        verifier.verify(&b_key).await.unwrap_err().kind(),
        DenialKind::RevokedCredential
    );

    // Rotation with grace: both work, then the old one stops; a revoked key cannot be rotated.
    let c = issuer.issue(request("c")).await.unwrap();
    let c_key = c.key().expose_str().unwrap().to_owned();
    let d = issuer
        .rotate(c.id(), Duration::from_secs(300), None)
        .await
        .unwrap();
    let d_key = d.key().expose_str().unwrap().to_owned();
    assert_eq!(d.info().replaces, Some(c.id()));
    assert!(verifier.verify(&c_key).await.is_ok());
    assert!(verifier.verify(&d_key).await.is_ok());
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        verifier.verify(&c_key).await.unwrap_err().kind(),
        DenialKind::RevokedCredential
    );
    assert!(verifier.verify(&d_key).await.is_ok());
    assert!(issuer.rotate(b.id(), Duration::ZERO, None).await.is_err());

    // Listing: every record (ordered by creation time, then id), statuses as the clock says.
    let now = clock.now();
    let listed = issuer.list().await.unwrap();
    assert!(
        listed
            .windows(2)
            .all(|w| (w[0].created_at, w[0].id.as_str()) <= (w[1].created_at, w[1].id.as_str()))
    );
    let mut seen: Vec<(&str, bool, KeyStatus)> = listed
        .iter()
        .map(|k| (k.name.as_str(), k.replaces.is_some(), k.status(now)))
        .collect();
    seen.sort_by_key(|(name, replaces, _)| (*name, *replaces));
    assert_eq!(
        seen,
        [
            ("a", false, KeyStatus::Active),
            ("b", false, KeyStatus::Revoked),
            ("c", false, KeyStatus::Revoked),
            ("c", true, KeyStatus::Active),
        ]
    );
    // An unknown id: nothing, and nothing to revoke, disable or enable.
    let unknown = "0000000000000000".parse().unwrap();
    assert!(store.get(unknown).await.unwrap().is_none());
    assert!(store.revoke(unknown, now).await.unwrap().is_none());
    assert!(
        store
            .set_disabled(unknown, Some(now))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        issuer.enable(unknown).await,
        Err(IssuerError::UnknownKey(_))
    ));

    disable_and_enable(&store, &issuer, &verifier, &clock).await;
    limits_and_last_use(&store, &issuer, &clock).await;
    changes_are_announced(&store, &issuer, &clock).await;
}

/// Disabled until enabled; the first time kept; a disabled key cannot be rotated; a revoked key cannot be enabled.
async fn disable_and_enable(
    store: &Arc<dyn KeyStore>,
    issuer: &KeyIssuer,
    verifier: &ApiKeyVerifier,
    clock: &ManualClock,
) {
    let scopes = ScopeSet::parse(["invoices:read"]).unwrap();
    let e = issuer
        .issue(NewKey::new("e", scopes.clone()))
        .await
        .unwrap();
    let e_key = e.key().expose_str().unwrap().to_owned();
    assert!(verifier.verify(&e_key).await.is_ok());
    let disabled = issuer.disable(e.id()).await.unwrap();
    let first = disabled.disabled_at.expect("disabled_at is set");
    assert_eq!(disabled.status(clock.now()), KeyStatus::Disabled);
    clock.advance(Duration::from_secs(2)); // past the verifier's cache TTL
    assert_eq!(
        verifier.verify(&e_key).await.unwrap_err().kind(),
        DenialKind::DisabledCredential
    );
    // Again: the first time stays.
    assert_eq!(
        issuer.disable(e.id()).await.unwrap().disabled_at,
        Some(first)
    );
    assert!(matches!(
        issuer.rotate(e.id(), Duration::ZERO, None).await,
        Err(IssuerError::NotActive {
            status: "disabled",
            ..
        })
    ));
    let enabled = issuer.enable(e.id()).await.unwrap();
    assert_eq!(enabled.disabled_at, None);
    clock.advance(Duration::from_secs(2));
    assert!(verifier.verify(&e_key).await.is_ok());

    // Revoked, then disabled and enabled: still revoked, and enabling is refused.
    let f = issuer.issue(NewKey::new("f", scopes)).await.unwrap();
    let f_key = f.key().expose_str().unwrap().to_owned();
    issuer.disable(f.id()).await.unwrap();
    issuer.revoke(f.id()).await.unwrap();
    assert!(matches!(
        issuer.enable(f.id()).await,
        Err(IssuerError::Revoked(id)) if id == f.id()
    ));
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        verifier.verify(&f_key).await.unwrap_err().kind(),
        DenialKind::RevokedCredential
    );
    let status = issuer.get(f.id()).await.unwrap().status(clock.now());
    assert_eq!(status, KeyStatus::Revoked);
    // The store's enable does not undo the revocation either.
    store.set_disabled(f.id(), None).await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        verifier.verify(&f_key).await.unwrap_err().kind(),
        DenialKind::RevokedCredential
    );
}

/// A rate limit is stored and copied by rotation (or replaced); `last_used_at` only moves later.
async fn limits_and_last_use(store: &Arc<dyn KeyStore>, issuer: &KeyIssuer, clock: &ManualClock) {
    let limit: RateLimit = "100/m".parse().unwrap();
    let scopes = ScopeSet::parse(["invoices:read"]).unwrap();
    let g = issuer
        .issue(NewKey::new("g", scopes.clone()).rate_limit(limit))
        .await
        .unwrap();
    assert_eq!(issuer.get(g.id()).await.unwrap().rate_limit, Some(limit));
    let h = issuer.rotate(g.id(), Duration::ZERO, None).await.unwrap();
    assert_eq!(issuer.get(h.id()).await.unwrap().rate_limit, Some(limit));
    let other: RateLimit = "5/s".parse().unwrap();
    let i = issuer
        .rotate_with(h.id(), Duration::ZERO, None, Some(other))
        .await
        .unwrap();
    assert_eq!(issuer.get(i.id()).await.unwrap().rate_limit, Some(other));
    let plain = issuer.issue(NewKey::new("plain", scopes)).await.unwrap();
    assert_eq!(issuer.get(plain.id()).await.unwrap().rate_limit, None);

    let t = clock.now();
    assert_eq!(issuer.get(i.id()).await.unwrap().last_used_at, None);
    let unknown = "1111111111111111".parse().unwrap();
    store
        .record_last_used(vec![(i.id(), t), (unknown, t)])
        .await
        .unwrap();
    assert_eq!(issuer.get(i.id()).await.unwrap().last_used_at, Some(t));
    store
        .record_last_used(vec![(i.id(), t - Duration::from_secs(60))])
        .await
        .unwrap();
    assert_eq!(issuer.get(i.id()).await.unwrap().last_used_at, Some(t));
    let later = t + Duration::from_secs(60);
    store.record_last_used(vec![(i.id(), later)]).await.unwrap();
    assert_eq!(issuer.get(i.id()).await.unwrap().last_used_at, Some(later));
    assert!(store.get(unknown).await.unwrap().is_none());
}

/// A cache that watches the store drops a key changed behind its back (not through the cache) without waiting for
/// its TTL, here an hour: at once for the memory and `SQLite` stores (the write went through the same object), as
/// soon as the notification arrives for PostgreSQL.
async fn changes_are_announced(store: &Arc<dyn KeyStore>, issuer: &KeyIssuer, clock: &ManualClock) {
    let peppers = Peppers::single(Pepper::new(1, vec![9; 32]).unwrap());
    let watching = Arc::new(KeyCache::new(
        Arc::clone(store),
        CacheConfig::default().ttl(Duration::from_secs(3600)),
    ));
    let verifier = ApiKeyVerifier::builder(peppers, Arc::clone(&watching))
        .clock(clock.clone())
        .last_used(None)
        .build();
    let scopes = ScopeSet::parse(["invoices:read"]).unwrap();
    let j = issuer.issue(NewKey::new("j", scopes)).await.unwrap();
    let j_key = j.key().expose_str().unwrap().to_owned();
    assert!(verifier.verify(&j_key).await.is_ok());
    assert!(watching.is_watching_store());
    // Straight to the store: the watching cache is not the writer.
    store.set_disabled(j.id(), Some(clock.now())).await.unwrap();
    let disabled = Some(DenialKind::DisabledCredential);
    assert_eq!(until(&verifier, &j_key, disabled).await, disabled);
    store.set_disabled(j.id(), None).await.unwrap();
    assert_eq!(until(&verifier, &j_key, None).await, None);
    store.revoke(j.id(), clock.now()).await.unwrap();
    let revoked = Some(DenialKind::RevokedCredential);
    assert_eq!(until(&verifier, &j_key, revoked).await, revoked);
}

/// Verifies `key` until the outcome is `want` (`None`: allowed), for at most 2 s; the last outcome.
async fn until(
    verifier: &ApiKeyVerifier,
    key: &str,
    want: Option<DenialKind>,
) -> Option<DenialKind> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let outcome = verifier.verify(key).await.err().map(|d| d.kind());
        if outcome == want || std::time::Instant::now() > deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryKeyStore::new())).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    // A gate never creates a store; the `keys` commands do.
    assert!(matches!(
        open_store(&url, StoreAccess::Gate).await,
        Err(StoreError::Missing { .. })
    ));
    contract(open_store(&url, StoreAccess::Manage).await.unwrap()).await;
}

/// The PostgreSQL server's URL, or `None` (with a loud message) where none is configured outside CI.
pub(crate) fn postgres_server() -> Option<String> {
    if let Ok(url) = std::env::var("SCOPEGATE_TEST_POSTGRES_URL") {
        return Some(url);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: SCOPEGATE_TEST_POSTGRES_URL is not set; .ci/run starts a throwaway cluster (scripts/throwaway-postgres.sh)"
    );
    eprintln!(
        "\n*** SKIPPED: the PostgreSQL store tests need SCOPEGATE_TEST_POSTGRES_URL: \
         eval \"$(scripts/throwaway-postgres.sh)\" starts a throwaway cluster ***\n"
    );
    None
}

/// A database of its own on the test server, created now; its URL.
pub(crate) async fn fresh_database(server: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("sg_test_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[tokio::test]
async fn the_postgres_store_keeps_the_contract_once_migrated() {
    let Some(server) = postgres_server() else {
        return;
    };
    let url = fresh_database(&server).await;
    // A database without the schema is refused, naming the command that creates it; nothing is created.
    for access in [StoreAccess::Gate, StoreAccess::Manage] {
        let err = open_store(&url, access).await.unwrap_err().to_string();
        assert!(err.contains("keys migrate"), "{err}");
    }
    open_store(&url, StoreAccess::Migrate).await.unwrap();
    // Again: nothing changes, and the store opens for a gate.
    open_store(&url, StoreAccess::Migrate).await.unwrap();
    contract(open_store(&url, StoreAccess::Gate).await.unwrap()).await;
}

#[tokio::test]
async fn a_postgres_password_never_reaches_an_error() {
    let err = open_store(
        "postgres://gate:hunter2-secret@127.0.0.1:1/keys",
        StoreAccess::Gate,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    let err = open_store("mysql://gate:hunter2@db/keys", StoreAccess::Gate)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("hunter2") && err.contains("postgres://"),
        "{err}"
    );
}

/// A store at the previous schema version (the first migration only) holding a key: a gate refuses it, naming the
/// missing migration; `keys migrate` (or, for `SQLite`, a `keys` command) upgrades it in place, and the key still
/// verifies.
async fn an_older_schema_is_refused_then_upgraded(url: &str, previous: sqlx::migrate::Migrator) {
    use sqlx::Connection as _;
    // The first version's schema, and a key row written the way that version wrote it.
    let insert = "INSERT INTO api_keys (id, name, scopes, allow_ips, attributes, pepper_version, key_hash, \
                  created_at, expires_at, revoked_at, replaces) \
                  VALUES ($1, 'old', '[\"invoices:read\"]', NULL, '{}', 1, $2, 1800000000, NULL, NULL, NULL)";
    let peppers = Peppers::single(Pepper::new(1, vec![9; 32]).unwrap());
    // Mint a key with today's issuer into a memory store, then copy its row by hand.
    let memory: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let clock: Arc<dyn Clock> = Arc::new(scopegate::SystemClock);
    let minted = KeyIssuer::new(memory.clone(), KeyFormat::default(), peppers.clone(), clock)
        .issue(NewKey::new(
            "old",
            ScopeSet::parse(["invoices:read"]).unwrap(),
        ))
        .await
        .unwrap();
    let hex = hash_hex(&memory.get(minted.id()).await.unwrap().unwrap().hash);
    if url.starts_with("sqlite://") {
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let mut db = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        previous.run(&mut db).await.unwrap();
        sqlx::query(insert)
            .bind(minted.id().as_str())
            .bind(&hex)
            .execute(&mut db)
            .await
            .unwrap();
    } else {
        let mut db = sqlx::PgConnection::connect(url).await.unwrap();
        previous.run(&mut db).await.unwrap();
        sqlx::query(insert)
            .bind(minted.id().as_str())
            .bind(&hex)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let refused = open_store(url, StoreAccess::Gate)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("20261201000000"), "{refused}");
    open_store(url, StoreAccess::Migrate).await.unwrap();
    let store = open_store(url, StoreAccess::Gate).await.unwrap();
    let cache = Arc::new(KeyCache::new(Arc::clone(&store), CacheConfig::default()));
    let verifier = ApiKeyVerifier::builder(peppers, cache)
        .last_used(None)
        .build();
    assert!(
        verifier
            .verify(minted.key().expose_str().unwrap())
            .await
            .is_ok()
    );
    let info = store.get(minted.id()).await.unwrap().unwrap().info;
    assert_eq!(
        (info.disabled_at, info.rate_limit, info.last_used_at),
        (None, None, None)
    );
}

/// The 64 hex digits the stores keep for a digest.
fn hash_hex(hash: &scopegate::credential::api_key::KeyHash) -> String {
    use std::fmt::Write as _;
    hash.digest().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A migrator of the first migration of `database` (`sqlite` or `postgres`) alone.
async fn previous_version(database: &str) -> (tempfile::TempDir, sqlx::migrate::Migrator) {
    let dir = tempfile::tempdir().unwrap();
    let name = "20261123000000_api_keys.sql";
    let source = format!(
        "{}/src/credential/api_key/migrations/{database}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(source, dir.path().join(name)).unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    (dir, migrator)
}

#[tokio::test]
async fn an_older_sqlite_schema_is_refused_then_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let (_keep, previous) = previous_version("sqlite").await;
    an_older_schema_is_refused_then_upgraded(&url, previous).await;
}

#[tokio::test]
async fn an_older_postgres_schema_is_refused_then_upgraded() {
    let Some(server) = postgres_server() else {
        return;
    };
    let url = fresh_database(&server).await;
    let (_keep, previous) = previous_version("postgres").await;
    an_older_schema_is_refused_then_upgraded(&url, previous).await;
}
