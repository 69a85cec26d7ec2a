//! The PostgreSQL key store: one database shared by every gate, the same schema and migrations as `SQLite`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::format::KeyId;
use super::record::KeyRecord;
use super::sql::{COLUMNS, MIGRATOR, RawRow, RowValues, backend, missing_migration};
use super::store::{KeyStore, StoreError, StoreFuture};
use crate::clock::unix_secs;

/// API keys in a PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]`), through `sqlx`.
///
/// [`connect`](Self::connect) never changes the schema: a database without it, or with an older one, is refused
/// with a message naming `scopegate keys migrate` ([`migrate`](Self::migrate)), which creates or upgrades it.
pub struct PgKeyStore {
    pool: PgPool,
    /// The URL without its password, for messages.
    shown: String,
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
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(PgKeyStore { pool, shown })
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
        match missing_migration(&applied) {
            Some(detail) => Err(schema_error(detail)),
            None => Ok(()),
        }
    }

    /// Closes every connection (waits for them). The store answers nothing afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
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
}
