//! The PostgreSQL key store: one database shared by every gate, the same table as `SQLite`, and change
//! notifications (`LISTEN`/`NOTIFY`) so that a change made anywhere reaches every gate's cache at once.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};

use super::format::KeyId;
use super::record::KeyRecord;
use super::sql::{Breaker, COLUMNS, RawRow, RowValues, backend, missing_migration};
use super::store::{ChangeWatcher, KeyStore, StoreChange, StoreError, StoreFuture, Watchers};
use crate::clock::unix_secs;

/// The PostgreSQL schema's migrations, embedded at compile time: the `SQLite` columns, plus the trigger that
/// announces changes and the operators' functions (`scopegate_revoke`, `scopegate_disable`, `scopegate_enable`).
static MIGRATOR: Migrator = sqlx::migrate!("src/credential/api_key/migrations/postgres");

/// The channel on which the schema's trigger announces changed key ids (`*`: every key).
pub const CHANGE_CHANNEL: &str = "scopegate_api_keys";

/// How often a quiet notification connection is checked, and how long the check may take.
const LISTEN_PING_EVERY: Duration = Duration::from_secs(5);
const LISTEN_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection attempts back off from the first value to the second.
const LISTEN_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// API keys in a PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]`), through `sqlx`.
///
/// [`connect`](Self::connect) never changes the schema: a database without it, or with an older one, is refused
/// with a message naming `scopegate keys migrate` ([`migrate`](Self::migrate)), which creates or upgrades it.
///
/// **Changes.** The schema's trigger announces every change that can alter a decision (insert, revoke, disable,
/// enable, rotation, any `UPDATE` or `DELETE` an operator runs, but not the `last_used_at` writes) on the channel
/// [`CHANGE_CHANNEL`] when its transaction commits. [`watch`](KeyStore::watch) starts a task (on the current tokio
/// runtime) that listens on one connection of the pool and hands each changed id to the watcher. The connection is
/// checked every 5 s when quiet; when it is lost, the task reconnects (backing off up to 2 s), and once it listens
/// again it announces [`StoreChange::All`], since what changed meanwhile was not heard. Until then, a cache's TTL
/// bounds how late a change is seen.
pub struct PgKeyStore {
    pool: PgPool,
    /// The URL without its password, for messages.
    shown: String,
    watchers: Watchers,
    breaker: Breaker,
}

impl fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgKeyStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// The URL with its password replaced, for messages and logs.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.chars().take(200).collect();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            let redacted = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{redacted}@{host}")
        }
        None => url.to_owned(),
    }
    .chars()
    .take(200)
    .collect()
}

impl PgKeyStore {
    /// Connects to a database whose schema is current; refuses a missing or older one (naming `keys migrate`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::pool(url).await?;
        store.check_schema().await?;
        Ok(store)
    }

    /// Creates or upgrades the schema, then connects. Running it again changes nothing.
    pub async fn migrate(url: &str) -> Result<Self, StoreError> {
        let store = Self::pool(url).await?;
        MIGRATOR.run(&store.pool).await.map_err(backend)?;
        Ok(store)
    }

    async fn pool(url: &str) -> Result<Self, StoreError> {
        let shown = without_password(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Url { url: shown });
        }
        let options =
            PgConnectOptions::from_str(url).map_err(|_| StoreError::Url { url: shown.clone() })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(PgKeyStore {
            pool,
            shown,
            watchers: Watchers::default(),
            breaker: Breaker::default(),
        })
    }

    async fn check_schema(&self) -> Result<(), StoreError> {
        let schema_error = |detail: String| StoreError::Schema {
            path: self.shown.clone(),
            detail: format!("{detail}; run `scopegate keys migrate --store URL`"),
        };
        let applied: HashSet<i64> =
            sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(|_| schema_error("no scopegate schema".to_owned()))?
                .into_iter()
                .collect();
        match missing_migration(&MIGRATOR, &applied) {
            Some(detail) => Err(schema_error(detail)),
            None => Ok(()),
        }
    }

    /// Closes every connection (waits for them), the notification listener's included. The store answers nothing
    /// afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One statement for the whole batch.
    async fn write_last_used(
        pool: &PgPool,
        ids: Vec<String>,
        times: Vec<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys AS k SET last_used_at = u.at \
             FROM unnest($1::text[], $2::bigint[]) AS u(id, at) \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .execute(pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    fn start_watching(&self, watcher: Arc<dyn ChangeWatcher>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                store = %self.shown,
                "no tokio runtime: the PostgreSQL key store cannot listen for changes; the cache's TTL alone bounds \
                 how late a change made elsewhere is seen"
            );
            return false;
        };
        self.watchers.add(Arc::clone(&watcher));
        runtime.spawn(listen(self.pool.clone(), watcher, self.shown.clone()));
        true
    }
}

/// What a notification's payload names.
fn change_of(payload: &str) -> StoreChange {
    match payload.parse::<KeyId>() {
        Ok(id) => StoreChange::Key(id),
        // `*`, or anything else: forget everything rather than miss a change.
        Err(_) => StoreChange::All,
    }
}

/// Listens on [`CHANGE_CHANNEL`] until the watcher or the pool is closed, reconnecting when the connection is lost.
async fn listen(pool: PgPool, watcher: Arc<dyn ChangeWatcher>, shown: String) {
    let mut retry = LISTEN_RETRY.0;
    let mut failing = false;
    while !watcher.is_closed() && !pool.is_closed() {
        let lost = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANGE_CHANNEL).await {
                Ok(()) => {
                    // Whatever changed before this point was not heard: every cached entry is suspect.
                    watcher.changed(StoreChange::All);
                    if failing {
                        tracing::info!(store = %shown, "listening for key changes again; the cache was flushed");
                    }
                    failing = false;
                    retry = LISTEN_RETRY.0;
                    relay(&mut listener, &pool, watcher.as_ref()).await
                }
                Err(error) => Some(error.to_string()),
            },
            Err(error) => Some(error.to_string()),
        };
        let Some(reason) = lost else { return };
        if !failing {
            tracing::warn!(
                store = %shown,
                %reason,
                "not listening for key changes: reconnecting; until then the cache's TTL bounds how late a change is seen"
            );
            failing = true;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LISTEN_RETRY.1);
    }
}

/// Hands each notification to the watcher. Returns `None` when the watcher or the pool is closed, or why the
/// connection was given up.
async fn relay(
    listener: &mut PgListener,
    pool: &PgPool,
    watcher: &dyn ChangeWatcher,
) -> Option<String> {
    loop {
        match tokio::time::timeout(LISTEN_PING_EVERY, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => watcher.changed(change_of(notification.payload())),
            Ok(Ok(None)) => return Some("the connection was lost".to_owned()),
            Ok(Err(error)) => return Some(error.to_string()),
            Err(_quiet) => {
                if watcher.is_closed() || pool.is_closed() {
                    return None;
                }
                // A connection that died without a word (no reset) shows here. A notification that arrives
                // meanwhile is kept by the listener for the next receive.
                let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(LISTEN_PING_TIMEOUT, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Some(error.to_string()),
                    Err(_) => return Some("the connection did not answer a check".to_owned()),
                }
            }
        }
        if watcher.is_closed() {
            return None;
        }
    }
}

super::sql::sql_key_store!(PgKeyStore, sqlx::Postgres, PgRow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            without_password("postgres://gate:s3cret@db.internal:5432/keys?sslmode=require"),
            "postgres://gate:***@db.internal:5432/keys?sslmode=require"
        );
        assert_eq!(
            without_password("postgresql://gate@db/keys"),
            "postgresql://gate@db/keys"
        );
        assert!(!without_password("postgres://a:b:c@h/d").contains("b:c"));
    }

    #[test]
    fn a_payload_names_one_key_or_all() {
        let id: KeyId = "AbCdEfGh12345678".parse().unwrap();
        assert_eq!(change_of("AbCdEfGh12345678"), StoreChange::Key(id));
        assert_eq!(change_of("*"), StoreChange::All);
        assert_eq!(change_of("not an id"), StoreChange::All);
    }
}
