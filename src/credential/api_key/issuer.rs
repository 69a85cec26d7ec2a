//! Issuing, listing, revoking and rotating keys.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::format::{KeyFormat, KeyId};
use super::hash::Peppers;
use super::rate_limit::RateLimit;
use super::record::{KeyInfo, KeyRecord, KeyStatus};
use super::store::{KeyStore, StoreError};
use crate::network::CidrSet;
use crate::policy::ScopeSet;
use crate::{Attributes, Clock, Secret};

/// The longest key name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Why an issuer operation was refused. Never carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// The name is empty, too long, or has control characters.
    #[error("invalid key name: use 1 to {MAX_NAME_LEN} bytes without control characters")]
    Name,
    /// No scope was given.
    #[error("a key needs at least one scope")]
    NoScopes,
    /// A bare `*` scope.
    #[error("invalid scope \"*\": API keys cannot be issued with the superuser scope")]
    SuperuserScope,
    /// An allow-list with no network (the key could never be used).
    #[error("an IP allow-list must name at least one network (leave it out for no restriction)")]
    EmptyAllowList,
    /// An attribute with an empty name, or a control character in its name or value.
    #[error(
        "invalid attribute {0:?}: names must be non-empty and names and values free of control characters"
    )]
    Attribute(String),
    /// A zero or out-of-range duration.
    #[error("invalid {what}: {reason}")]
    Duration {
        /// Which duration (`expires_in`, `grace`).
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// No key has this id.
    #[error("no API key has id {0}")]
    UnknownKey(KeyId),
    /// Only an active key can be rotated.
    #[error("API key {id} cannot be rotated: it is {status}")]
    NotActive {
        /// The key.
        id: KeyId,
        /// `revoked`, `disabled`, `expired` or `retiring` (already rotated).
        status: &'static str,
    },
    /// Revocation is final: a revoked key cannot be enabled.
    #[error("API key {0} is revoked, and revocation is final: it cannot be enabled")]
    Revoked(KeyId),
    /// The operating system's random generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(#[from] rand::rand_core::OsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new key grants. Defaults: no allow-list (any address), no attributes, no expiry.
#[derive(Debug, Clone)]
pub struct NewKey {
    name: String,
    scopes: ScopeSet,
    allow_ips: Option<CidrSet>,
    attributes: Attributes,
    expires_in: Option<Duration>,
    rate_limit: Option<RateLimit>,
}

impl NewKey {
    /// A key named `name` granting `scopes`.
    pub fn new(name: impl Into<String>, scopes: ScopeSet) -> Self {
        NewKey {
            name: name.into(),
            scopes,
            allow_ips: None,
            attributes: Attributes::new(),
            expires_in: None,
            rate_limit: None,
        }
    }

    /// Limits the key to this many allowed requests per unit (stored with the key, copied by rotation).
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Restricts the key to these networks.
    #[must_use]
    pub fn allow_ips(mut self, networks: CidrSet) -> Self {
        self.allow_ips = Some(networks);
        self
    }

    /// Sets the attributes (e.g. `tenant`).
    #[must_use]
    pub fn attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Makes the key expire this long after issuance.
    #[must_use]
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    fn validate(&self) -> Result<(), IssuerError> {
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || self.name.chars().any(char::is_control)
        {
            return Err(IssuerError::Name);
        }
        if self.scopes.is_empty() {
            return Err(IssuerError::NoScopes);
        }
        if self.scopes.iter().any(crate::policy::Scope::is_superuser) {
            return Err(IssuerError::SuperuserScope);
        }
        if self.allow_ips.as_ref().is_some_and(CidrSet::is_empty) {
            return Err(IssuerError::EmptyAllowList);
        }
        for (name, value) in &self.attributes {
            if name.is_empty()
                || name.chars().any(char::is_control)
                || value.chars().any(char::is_control)
            {
                return Err(IssuerError::Attribute(name.chars().take(64).collect()));
            }
        }
        Ok(())
    }
}

/// A newly issued key: the only time the plaintext exists. `Debug` shows the info, never the key.
pub struct IssuedKey {
    key: Secret,
    info: KeyInfo,
}

impl IssuedKey {
    /// The full key (`<prefix>_<body>`), to hand to its user once.
    pub fn key(&self) -> &Secret {
        &self.key
    }

    /// The key's public information.
    pub fn info(&self) -> &KeyInfo {
        &self.info
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.info.id
    }

    /// Both parts.
    pub fn into_parts(self) -> (Secret, KeyInfo) {
        (self.key, self.info)
    }
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &self.key)
            .field("info", &self.info)
            .finish()
    }
}

/// Issues, lists, revokes and rotates keys in a store.
///
/// Give it the same [`KeyCache`](super::KeyCache) the verifier uses, and revocations take effect on this replica
/// at once.
pub struct KeyIssuer {
    store: Arc<dyn KeyStore>,
    format: KeyFormat,
    peppers: Peppers,
    clock: Arc<dyn Clock>,
}

impl KeyIssuer {
    /// An issuer writing to `store`, hashing with the current pepper of `peppers`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        format: KeyFormat,
        peppers: Peppers,
        clock: Arc<dyn Clock>,
    ) -> Self {
        KeyIssuer {
            store,
            format,
            peppers,
            clock,
        }
    }

    /// The current time, in whole seconds (what every store can keep exactly).
    fn now(&self) -> SystemTime {
        let now = self.clock.now();
        match now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
            Err(_) => now,
        }
    }

    /// Issues a key. The returned [`IssuedKey`] is the only copy of the plaintext.
    pub async fn issue(&self, request: NewKey) -> Result<IssuedKey, IssuerError> {
        request.validate()?;
        let now = self.now();
        let expires_at = match request.expires_in {
            None => None,
            Some(lifetime) => Some(after(now, lifetime, "expires_in")?),
        };
        let (key, record) = self.mint(|id| KeyInfo {
            id,
            name: request.name,
            scopes: request.scopes,
            allow_ips: request.allow_ips,
            attributes: request.attributes,
            created_at: now,
            expires_at,
            revoked_at: None,
            replaces: None,
            disabled_at: None,
            rate_limit: request.rate_limit,
            last_used_at: None,
        })?;
        let info = record.info.clone();
        self.store.insert(record).await?;
        tracing::info!(key_id = %info.id, name = %info.name, "API key issued");
        Ok(IssuedKey { key, info })
    }

    /// Draws a new key, hashes it, and builds its record around the new id.
    fn mint(
        &self,
        info: impl FnOnce(KeyId) -> KeyInfo,
    ) -> Result<(Secret, KeyRecord), IssuerError> {
        let (id, key, hash) = self.format.generate(&self.peppers)?;
        Ok((
            key,
            KeyRecord {
                info: info(id),
                hash,
            },
        ))
    }

    /// Every key, oldest first, without secrets or hashes.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, IssuerError> {
        Ok(self
            .list_with_pepper_versions()
            .await?
            .into_iter()
            .map(|(info, _)| info)
            .collect())
    }

    /// Every key, oldest first, with the version of the pepper its digest was made with (not secret, and what a
    /// pepper rotation needs: the keys still under an older version), never the digest itself.
    pub async fn list_with_pepper_versions(&self) -> Result<Vec<(KeyInfo, u32)>, IssuerError> {
        let mut keys: Vec<(KeyInfo, u32)> = self
            .store
            .list()
            .await?
            .into_iter()
            .map(|r| {
                let version = r.hash.pepper_version();
                (r.info, version)
            })
            .collect();
        keys.sort_by(|(a, _), (b, _)| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// One key's information.
    pub async fn get(&self, id: KeyId) -> Result<KeyInfo, IssuerError> {
        match self.store.get(id).await? {
            Some(record) => Ok(record.info),
            None => Err(IssuerError::UnknownKey(id)),
        }
    }

    /// Revokes a key from now on. Final; revoking a revoked key keeps its original time, and revoking a key in its
    /// rotation grace ends the grace now.
    pub async fn revoke(&self, id: KeyId) -> Result<KeyInfo, IssuerError> {
        let now = self.now();
        match self.store.revoke(id, now).await? {
            Some(record) => {
                tracing::info!(key_id = %id, "API key revoked");
                Ok(record.info)
            }
            None => Err(IssuerError::UnknownKey(id)),
        }
    }

    /// Disables a key: it is refused as `disabled_credential` until [`enable`](Self::enable)d. Disabling a disabled
    /// key keeps its first `disabled_at`; disabling a revoked key changes nothing that matters (it stays revoked).
    pub async fn disable(&self, id: KeyId) -> Result<KeyInfo, IssuerError> {
        let now = self.now();
        match self.store.set_disabled(id, Some(now)).await? {
            Some(record) => {
                tracing::info!(key_id = %id, "API key disabled");
                Ok(record.info)
            }
            None => Err(IssuerError::UnknownKey(id)),
        }
    }

    /// Enables a disabled key again. A revoked key is [`IssuerError::Revoked`]: revocation is final.
    pub async fn enable(&self, id: KeyId) -> Result<KeyInfo, IssuerError> {
        let now = self.now();
        let current = self
            .store
            .get(id)
            .await?
            .ok_or(IssuerError::UnknownKey(id))?;
        if current.info.status(now) == KeyStatus::Revoked {
            return Err(IssuerError::Revoked(id));
        }
        match self.store.set_disabled(id, None).await? {
            Some(record) => {
                tracing::info!(key_id = %id, "API key enabled");
                Ok(record.info)
            }
            None => Err(IssuerError::UnknownKey(id)),
        }
    }

    /// Replaces an active key with a new one that copies its name, scopes, allow-list, attributes and rate limit.
    ///
    /// The new key expires after `expires_in` if given, else after the old key's lifetime counted from now (never,
    /// if the old key never expired). The old key keeps working for `grace` (zero: it stops now) but never past its
    /// own expiry; after the grace it is refused as revoked. Only an active key can be rotated: a revoked,
    /// disabled, expired or already rotated key is [`IssuerError::NotActive`], an unknown id
    /// [`IssuerError::UnknownKey`].
    pub async fn rotate(
        &self,
        id: KeyId,
        grace: Duration,
        expires_in: Option<Duration>,
    ) -> Result<IssuedKey, IssuerError> {
        self.rotate_with(id, grace, expires_in, None).await
    }

    /// [`rotate`](Self::rotate), with the new key's rate limit set to `rotated_limit` rather than copied (`None`
    /// copies the old key's).
    pub async fn rotate_with(
        &self,
        id: KeyId,
        grace: Duration,
        expires_in: Option<Duration>,
        rotated_limit: Option<RateLimit>,
    ) -> Result<IssuedKey, IssuerError> {
        let now = self.now();
        let old = self
            .store
            .get(id)
            .await?
            .ok_or(IssuerError::UnknownKey(id))?;
        let status = old.info.status(now);
        if status != KeyStatus::Active {
            return Err(IssuerError::NotActive {
                id,
                status: status.as_str(),
            });
        }
        let expires_at = match (expires_in, old.info.expires_at) {
            (Some(lifetime), _) => Some(after(now, lifetime, "expires_in")?),
            (None, Some(old_expiry)) => {
                let lifetime = old_expiry
                    .duration_since(old.info.created_at)
                    .unwrap_or(Duration::ZERO);
                Some(after(
                    now,
                    lifetime.max(Duration::from_secs(1)),
                    "expires_in",
                )?)
            }
            (None, None) => None,
        };
        let old_ends_at = now.checked_add(grace).ok_or(IssuerError::Duration {
            what: "grace",
            reason: "too large",
        })?;
        let (key, record) = self.mint(|new_id| KeyInfo {
            id: new_id,
            name: old.info.name,
            scopes: old.info.scopes,
            allow_ips: old.info.allow_ips,
            attributes: old.info.attributes,
            created_at: now,
            expires_at,
            revoked_at: None,
            replaces: Some(id),
            disabled_at: None,
            rate_limit: rotated_limit.or(old.info.rate_limit),
            last_used_at: None,
        })?;
        let info = record.info.clone();
        if !self.store.rotate(id, old_ends_at, now, record).await? {
            // Changed between our read and the write (revoked or rotated concurrently).
            let status = match self.store.get(id).await? {
                Some(r) => r.info.status(now).as_str(),
                None => return Err(IssuerError::UnknownKey(id)),
            };
            return Err(IssuerError::NotActive { id, status });
        }
        tracing::info!(key_id = %info.id, replaces = %id, grace_secs = grace.as_secs(), "API key rotated");
        Ok(IssuedKey { key, info })
    }
}

impl fmt::Debug for KeyIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyIssuer")
            .field("store", &self.store)
            .field("format", &self.format)
            .field("peppers", &self.peppers)
            .finish_non_exhaustive()
    }
}

fn after(
    now: SystemTime,
    lifetime: Duration,
    what: &'static str,
) -> Result<SystemTime, IssuerError> {
    if lifetime.is_zero() {
        return Err(IssuerError::Duration {
            what,
            reason: "must be longer than zero",
        });
    }
    now.checked_add(lifetime).ok_or(IssuerError::Duration {
        what,
        reason: "too large",
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn new(name: &str) -> NewKey {
        NewKey::new(name, ScopeSet::parse(["a:read"]).unwrap())
    }

    fn refusal(key: &NewKey) -> Option<String> {
        key.validate().err().map(|e| format!("{e:?}"))
    }

    #[test]
    fn a_name_is_one_to_200_characters_without_control_ones() {
        for bad in [
            String::new(),
            "x".repeat(MAX_NAME_LEN + 1),
            "a\nb".into(),
            "tab\t".into(),
        ] {
            assert_eq!(refusal(&new(&bad)).as_deref(), Some("Name"), "{bad:?}");
        }
        for good in [
            "x".to_owned(),
            "x".repeat(MAX_NAME_LEN),
            "billing – prod".into(),
        ] {
            assert_eq!(refusal(&new(&good)), None, "{good:?}");
        }
    }

    #[test]
    fn scopes_allowlists_and_attributes_are_checked() {
        let none = NewKey::new("k", ScopeSet::new());
        assert_eq!(refusal(&none).as_deref(), Some("NoScopes"));
        let superuser = NewKey::new("k", ScopeSet::danger_allow_superuser(["*"]).unwrap());
        assert_eq!(refusal(&superuser).as_deref(), Some("SuperuserScope"));
        let empty_list = new("k").allow_ips(CidrSet::new());
        assert_eq!(refusal(&empty_list).as_deref(), Some("EmptyAllowList"));
        let listed = new("k").allow_ips(["10.0.0.0/8".parse().unwrap()].into_iter().collect());
        assert_eq!(refusal(&listed), None);
        let attrs = |k: &str, v: &str| new("k").attributes([(k.to_owned(), v.to_owned())].into());
        for (name, value) in [("", "v"), ("a\u{7}", "v"), ("tenant", "a\rb")] {
            assert!(
                refusal(&attrs(name, value))
                    .unwrap()
                    .starts_with("Attribute("),
                "{name:?}={value:?}"
            );
        }
        assert_eq!(refusal(&attrs("tenant", "acme corp")), None);
    }
}
