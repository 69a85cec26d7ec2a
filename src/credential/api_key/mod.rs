//! API keys: format, hashing, issuance, stores, cache and verification.
//!
//! A key looks like `sg_<54 base62 characters>`: a public 16-character id, a 32-character secret (≈ 190 bits from
//! the OS CSPRNG) and a CRC32 checksum, so that a mistyped or forged key is refused before any store or crypto
//! work. The store keeps only `HMAC-SHA256(pepper, id ‖ secret)` and the pepper's version; the plaintext is
//! returned once, by [`KeyIssuer::issue`]. See `docs/api-keys.md` for the format, the threat model and operations.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use scopegate::credential::api_key::{
//!     ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, MemoryKeyStore, NewKey, Pepper, Peppers,
//! };
//! use scopegate::policy::{DenialKind, ScopeSet};
//! use scopegate::{Clock, ManualClock};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
//! let peppers = Peppers::single(Pepper::new(1, vec![0x42; 32])?);
//! let cache = Arc::new(KeyCache::new(Arc::new(MemoryKeyStore::new()), CacheConfig::default()));
//! let issuer = KeyIssuer::new(cache.clone(), KeyFormat::default(), peppers.clone(), clock.clone());
//! let verifier = ApiKeyVerifier::builder(peppers, cache).clock(clock.clone()).build();
//!
//! let issued = issuer
//!     .issue(NewKey::new("billing job", ScopeSet::parse(["invoices:read"])?).expires_in(Duration::from_secs(3600)))
//!     .await?;
//! let key = issued.key().expose_str().unwrap();
//!
//! // Allowed: the grant names the key id and carries its scopes.
//! let grant = verifier.verify(key).await?;
//! assert_eq!(grant.principal(), issued.id().as_str());
//!
//! // Refused: one character changed (the checksum fails, no store call), then the key once revoked.
//! let typo = format!("{}x", &key[..key.len() - 1]);
//! assert_eq!(verifier.verify(&typo).await.unwrap_err().kind(), DenialKind::InvalidCredential);
//! issuer.revoke(issued.id()).await?;
//! assert_eq!(verifier.verify(key).await.unwrap_err().kind(), DenialKind::RevokedCredential);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod cache;
mod format;
mod hash;
mod issuer;
mod last_used;
#[cfg(feature = "postgres")]
mod postgres;
mod prepared_hmac;
mod rate_limit;
mod record;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod table;
mod verify;

pub use cache::{CacheConfig, KeyCache};
pub use format::{
    BODY_LEN, CHECKSUM_LEN, DEFAULT_KEY_HEADER, DEFAULT_PEPPER_ENV, DEFAULT_PREFIX, FormatError,
    ID_LEN, KeyFormat, KeyId, KeyIdError, MAX_PREFIX_LEN, SECRET_LEN,
};
pub use hash::{KeyHash, MIN_PEPPER_LEN, Pepper, PepperError, Peppers};
pub use issuer::{IssuedKey, IssuerError, KeyIssuer, MAX_NAME_LEN, NewKey};
#[cfg(feature = "postgres")]
pub use postgres::{CHANGE_CHANNEL, PgKeyStore};
pub use rate_limit::{MAX_RATE_LIMIT, RateLimit, RateLimitError, RateUnit};
pub use record::{KeyInfo, KeyRecord, KeyStatus};
#[cfg(feature = "sqlite")]
pub use sqlite::{OpenMode, SqliteKeyStore};
pub use store::{
    ChangeWatcher, KeyStore, MemoryKeyStore, StoreAccess, StoreChange, StoreError, StoreFuture,
    open_store,
};
pub use verify::{ApiKeyVerifier, ApiKeyVerifierBuilder, DEFAULT_LAST_USED_INTERVAL};
