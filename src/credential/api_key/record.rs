//! What the store keeps about a key, and what may be shown of it.

use std::time::SystemTime;

use super::format::KeyId;
use super::hash::KeyHash;
use super::rate_limit::RateLimit;
use crate::Attributes;
use crate::network::CidrSet;
use crate::policy::ScopeSet;

/// Everything about a key except its hash: safe to list and print.
///
/// `revoked_at` is the moment from which the key is refused as revoked. It is in the future while a rotated key
/// is in its grace period, and revocation only ever moves it earlier: it is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The public id.
    pub id: KeyId,
    /// A human label.
    pub name: String,
    /// The granted scopes.
    pub scopes: ScopeSet,
    /// The networks the key may be used from; `None` for anywhere.
    pub allow_ips: Option<CidrSet>,
    /// Attributes (e.g. `tenant`), compared with bound path parameters.
    pub attributes: Attributes,
    /// When it was issued.
    pub created_at: SystemTime,
    /// When it stops working; `None` for never.
    pub expires_at: Option<SystemTime>,
    /// When it is (or will be, at the end of a rotation grace) refused as revoked.
    pub revoked_at: Option<SystemTime>,
    /// The key this one replaced by rotation.
    pub replaces: Option<KeyId>,
    /// When the key was disabled: it is refused as `disabled_credential` until it is enabled again (which clears
    /// this). `None`: not disabled.
    pub disabled_at: Option<SystemTime>,
    /// At most this many allowed requests per unit; `None` for no limit. Copied by rotation.
    pub rate_limit: Option<RateLimit>,
    /// When the key was last allowed, as written behind the request (at most once per key per interval, so up to
    /// that interval late); `None` if never recorded. Never read by verification.
    pub last_used_at: Option<SystemTime>,
}

/// The state of a key at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Works, and can be rotated.
    Active,
    /// Works until `until` (rotated, in its grace period); cannot be rotated again.
    Retiring {
        /// The end of the grace period.
        until: SystemTime,
    },
    /// Refused as revoked.
    Revoked,
    /// Refused as disabled, until enabled again.
    Disabled,
    /// Refused as expired.
    Expired,
}

impl KeyStatus {
    /// `active`, `retiring`, `revoked`, `disabled` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retiring { .. } => "retiring",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Expired => "expired",
        }
    }
}

impl KeyInfo {
    /// The key's status at `now`, in verification's order: revoked, then disabled, then expired.
    pub fn status(&self, now: SystemTime) -> KeyStatus {
        match (self.revoked_at, self.expires_at) {
            (Some(r), _) if r <= now => KeyStatus::Revoked,
            _ if self.disabled_at.is_some() => KeyStatus::Disabled,
            (_, Some(e)) if e <= now => KeyStatus::Expired,
            (Some(until), _) => KeyStatus::Retiring { until },
            _ => KeyStatus::Active,
        }
    }
}

/// A stored key: its [`KeyInfo`] and its [`KeyHash`]. `Debug` shows no digest.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The listable part.
    pub info: KeyInfo,
    /// The keyed hash of the secret.
    pub hash: KeyHash,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn statuses_read_as_their_names() {
        let retiring = KeyStatus::Retiring { until: at(1) };
        let names = [
            KeyStatus::Active,
            retiring,
            KeyStatus::Revoked,
            KeyStatus::Disabled,
            KeyStatus::Expired,
        ]
        .map(KeyStatus::as_str);
        assert_eq!(
            names,
            ["active", "retiring", "revoked", "disabled", "expired"]
        );
    }

    fn info(expires: Option<u64>, revoked: Option<u64>) -> KeyInfo {
        KeyInfo {
            id: "AAAAAAAAAAAAAAAA".parse().unwrap(),
            name: "n".into(),
            scopes: ScopeSet::parse(["a:read"]).unwrap(),
            allow_ips: None,
            attributes: Attributes::new(),
            created_at: at(0),
            expires_at: expires.map(at),
            revoked_at: revoked.map(at),
            replaces: None,
            disabled_at: None,
            rate_limit: None,
            last_used_at: None,
        }
    }

    #[test]
    fn status_follows_the_clock_and_checks_revocation_first() {
        assert_eq!(info(None, None).status(at(10)), KeyStatus::Active);
        assert_eq!(info(Some(10), None).status(at(9)), KeyStatus::Active);
        assert_eq!(info(Some(10), None).status(at(10)), KeyStatus::Expired);
        assert_eq!(
            info(None, Some(10)).status(at(9)),
            KeyStatus::Retiring { until: at(10) }
        );
        assert_eq!(info(None, Some(10)).status(at(10)), KeyStatus::Revoked);
        assert_eq!(info(Some(5), Some(5)).status(at(5)), KeyStatus::Revoked);
        assert_eq!(info(Some(5), Some(20)).status(at(6)), KeyStatus::Expired);
        // Disabled: after revocation, before expiry.
        let disabled = |expires, revoked| KeyInfo {
            disabled_at: Some(at(1)),
            ..info(expires, revoked)
        };
        assert_eq!(disabled(None, None).status(at(9)), KeyStatus::Disabled);
        assert_eq!(disabled(Some(5), None).status(at(9)), KeyStatus::Disabled);
        assert_eq!(disabled(None, Some(5)).status(at(9)), KeyStatus::Revoked);
        assert_eq!(disabled(None, Some(50)).status(at(9)), KeyStatus::Disabled);
    }

    #[test]
    fn debug_of_a_record_shows_no_digest() {
        let record = KeyRecord {
            info: info(None, None),
            hash: KeyHash::from_parts(1, [0x5a; 32]),
        };
        let printed = format!("{record:?}");
        assert!(printed.contains("AAAAAAAAAAAAAAAA"));
        assert!(!printed.contains("90"), "{printed}"); // 0x5a as a decimal byte
        assert!(!printed.to_lowercase().contains("5a5a"), "{printed}");
    }
}
