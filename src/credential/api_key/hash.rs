//! The pepper and the keyed hash: only `HMAC-SHA256(pepper, id ‖ secret)` is ever stored.
//!
//! The pepper is a server-side key that never enters the store, so a stolen database holds digests that cannot
//! be checked offline. Each pepper has a version, recorded beside every digest; several versions can be configured
//! at once so that keys hashed under an older pepper keep verifying while new keys use the current one.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::ZeroizeOnDrop;

use super::format::{ID_LEN, KeyId, SECRET_LEN};
use super::prepared_hmac::PreparedHmac;
use crate::Secret;

/// The shortest pepper accepted, in bytes.
pub const MIN_PEPPER_LEN: usize = 32;

/// Why a pepper (or a set of them) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PepperError {
    /// Fewer than [`MIN_PEPPER_LEN`] bytes.
    #[error("the API key pepper is {len} bytes long; at least {MIN_PEPPER_LEN} are required")]
    TooShort {
        /// The length found.
        len: usize,
    },
    /// The environment variable is not set.
    #[error(
        "the environment variable {var} (the API key pepper) is not set; set it to at least {MIN_PEPPER_LEN} random bytes, e.g. `openssl rand -hex 32`"
    )]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The environment variable is too short.
    #[error(
        "the environment variable {var} (the API key pepper) is {len} bytes long; at least {MIN_PEPPER_LEN} are required"
    )]
    EnvTooShort {
        /// The variable's name.
        var: String,
        /// The length found.
        len: usize,
    },
    /// Two peppers with the same version.
    #[error("two API key peppers have version {0}; versions must be distinct")]
    DuplicateVersion(u32),
}

/// A server-side hashing key with its version. At least [`MIN_PEPPER_LEN`] bytes; `Debug` is redacted.
#[derive(Clone)]
pub struct Pepper {
    version: u32,
    secret: Secret,
}

impl Pepper {
    /// A pepper of `version` from raw bytes.
    pub fn new(version: u32, bytes: Vec<u8>) -> Result<Self, PepperError> {
        Self::of_len(version, Secret::new(bytes)).map_err(|len| PepperError::TooShort { len })
    }

    /// A pepper of `version`, or `Err(its length)` when it is shorter than [`MIN_PEPPER_LEN`].
    fn of_len(version: u32, secret: Secret) -> Result<Self, usize> {
        if secret.len() < MIN_PEPPER_LEN {
            return Err(secret.len());
        }
        Ok(Pepper { version, secret })
    }

    /// A pepper of `version` read from the environment variable `var` (its bytes, as set). The error names the
    /// variable, never its value.
    pub fn from_env(var: &str, version: u32) -> Result<Self, PepperError> {
        let value = std::env::var_os(var).ok_or_else(|| PepperError::EnvMissing {
            var: var.to_owned(),
        })?;
        Self::of_len(version, Secret::new(value.into_encoded_bytes())).map_err(|len| {
            PepperError::EnvTooShort {
                var: var.to_owned(),
                len,
            }
        })
    }

    /// The version recorded beside digests made with this pepper.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// The secret wipes itself when dropped.
impl ZeroizeOnDrop for Pepper {}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pepper")
            .field("version", &self.version)
            .field("secret", &self.secret)
            .finish()
    }
}

/// The configured peppers: the current one (new keys are hashed with it) and older ones (still verified).
///
/// Each pepper is keyed into HMAC once, here; every hash starts from the keyed state. The keyed states are as good
/// as the peppers: every copy (`Clone` included) is wiped when dropped.
#[derive(Clone)]
pub struct Peppers {
    current: u32,
    /// (version, keyed HMAC state), current first. A handful of entries: a linear scan is the fastest lookup.
    prepared: Vec<(u32, PreparedHmac)>,
}

/// Every field wipes itself: the keyed states on their own drop, the versions are not secret.
impl ZeroizeOnDrop for Peppers {}

impl Peppers {
    /// The current pepper and any older ones that keys may still be hashed under.
    pub fn new(
        current: Pepper,
        older: impl IntoIterator<Item = Pepper>,
    ) -> Result<Self, PepperError> {
        let current_version = current.version;
        let peppers: Vec<Pepper> = std::iter::once(current).chain(older).collect();
        // Sized once: a vector that grows moves its keyed states and frees the old copies unwiped.
        let mut prepared: Vec<(u32, PreparedHmac)> = Vec::with_capacity(peppers.len());
        for pepper in &peppers {
            if prepared.iter().any(|(v, _)| *v == pepper.version) {
                return Err(PepperError::DuplicateVersion(pepper.version));
            }
            prepared.push((pepper.version, PreparedHmac::new(pepper.secret.expose())));
        }
        Ok(Peppers {
            current: current_version,
            prepared,
        })
    }

    /// A single pepper.
    pub fn single(pepper: Pepper) -> Self {
        let version = pepper.version;
        Self::new(pepper, []).unwrap_or_else(|_| unreachable!("one version {version} is distinct"))
    }

    /// The current version.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// The configured versions, current first.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.prepared.iter().map(|(v, _)| *v)
    }

    /// Hashes a new key under the current pepper.
    pub(crate) fn hash(&self, id: &KeyId, secret: &[u8; SECRET_LEN]) -> KeyHash {
        let (version, mac) = &self.prepared[0];
        KeyHash {
            pepper_version: *version,
            digest: digest(mac, id, secret),
        }
    }

    /// The presented key's digest under the current pepper, as four lanes. Verification computes it before it
    /// reads the stored entry: the hash then needs nothing from memory that may still be on its way, and the CPU
    /// overlaps the two.
    pub(crate) fn current_digest(&self, id: &KeyId, secret: &[u8; SECRET_LEN]) -> [u64; 4] {
        lanes(&digest(&self.prepared[0].1, id, secret))
    }

    /// Checks a presented secret against a stored digest, in constant time. `current` is
    /// [`current_digest`](Self::current_digest) of the same id and secret, used when the stored digest is under the
    /// current pepper; an older version is hashed here. `None` when the digest's pepper version is not configured.
    pub(crate) fn verify(
        &self,
        id: &KeyId,
        secret: &[u8; SECRET_LEN],
        current: &[u64; 4],
        pepper_version: u32,
        stored: &[u64; 4],
    ) -> Option<bool> {
        let older;
        let computed = if pepper_version == self.current {
            current
        } else {
            let (_, mac) = self.prepared.iter().find(|(v, _)| *v == pepper_version)?;
            older = lanes(&digest(mac, id, secret));
            &older
        };
        Some(bool::from(computed[..].ct_eq(&stored[..])))
    }
}

impl fmt::Debug for Peppers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peppers")
            .field("current", &self.current)
            .field("versions", &self.versions().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn digest(prepared: &PreparedHmac, id: &KeyId, secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    // id ‖ secret is 48 bytes: one compression for the inner hash, one for the outer.
    let mut message = [0u8; ID_LEN + SECRET_LEN];
    message[..ID_LEN].copy_from_slice(id.as_bytes());
    message[ID_LEN..].copy_from_slice(secret);
    let digest = prepared.mac(&message);
    zeroize::Zeroize::zeroize(&mut message);
    digest
}

/// A digest as four `u64` lanes, for a fast constant-time comparison.
pub(crate) fn lanes(digest: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (lane, chunk) in out.iter_mut().zip(digest.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *lane = u64::from_le_bytes(bytes);
    }
    out
}

/// What the store keeps instead of a key: the pepper version and `HMAC-SHA256(pepper, id ‖ secret)`.
///
/// `Debug` prints the version only. There is no `PartialEq`: compare with [`KeyHash::ct_eq`].
#[derive(Clone)]
pub struct KeyHash {
    pepper_version: u32,
    digest: [u8; 32],
}

impl KeyHash {
    /// Rebuilds a stored hash (for [`KeyStore`](super::KeyStore) implementations).
    pub fn from_parts(pepper_version: u32, digest: [u8; 32]) -> Self {
        KeyHash {
            pepper_version,
            digest,
        }
    }

    /// The pepper version the digest was made with.
    pub fn pepper_version(&self) -> u32 {
        self.pepper_version
    }

    /// The digest bytes, for [`KeyStore`](super::KeyStore) implementations to persist.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Constant-time equality of version and digest.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.pepper_version == other.pepper_version
            && bool::from(self.digest[..].ct_eq(&other.digest[..]))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHash")
            .field("pepper_version", &self.pepper_version)
            .field("digest", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pepper(version: u32, fill: u8) -> Pepper {
        Pepper::new(version, vec![fill; 32]).unwrap()
    }

    #[test]
    fn short_peppers_are_refused() {
        assert_eq!(
            Pepper::new(1, vec![7; 31]).unwrap_err(),
            PepperError::TooShort { len: 31 }
        );
        assert!(Pepper::new(1, vec![7; 32]).is_ok());
    }

    #[test]
    fn env_errors_name_the_variable_and_never_the_value() {
        let err = Pepper::from_env("SCOPEGATE_TEST_PEPPER_SURELY_UNSET", 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("SCOPEGATE_TEST_PEPPER_SURELY_UNSET")
        );
        // A short variable that is set on most machines (tests may not set variables: `set_var` is unsafe).
        let short = ["HOME", "USER", "SHELL", "LANG", "PATH"]
            .into_iter()
            .find_map(|var| {
                let value = std::env::var(var).ok()?;
                (!value.is_empty() && value.len() < MIN_PEPPER_LEN).then_some((var, value))
            });
        if let Some((var, value)) = short {
            let err = Pepper::from_env(var, 1).unwrap_err();
            assert_eq!(
                err,
                PepperError::EnvTooShort {
                    var: var.to_owned(),
                    len: value.len()
                }
            );
            assert!(err.to_string().contains(var));
            assert!(!err.to_string().contains(&value));
        }
    }

    #[test]
    fn versions_are_kept_and_shown_but_secrets_are_not() {
        let one = pepper(7, 0xab);
        assert_eq!(one.version(), 7);
        let shown = format!("{one:?}");
        assert!(shown.contains("version: 7"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("abab"),
            "{shown}"
        );
        let peppers = Peppers::new(pepper(3, 1), [pepper(1, 2), pepper(2, 3)]).unwrap();
        assert_eq!(peppers.versions().collect::<Vec<_>>(), [3, 1, 2]);
        assert_eq!(peppers.current_version(), 3);
        let shown = format!("{peppers:?}");
        assert!(shown.contains("current: 3"), "{shown}");
        assert!(shown.contains("versions: [3, 1, 2]"), "{shown}");
    }

    #[test]
    fn key_hashes_are_equal_only_in_version_and_every_digest_byte() {
        let digest = [0x5a; 32];
        let stored = KeyHash::from_parts(2, digest);
        assert!(stored.ct_eq(&KeyHash::from_parts(2, digest)));
        // The same digest under another version, and one bit off anywhere in the digest.
        assert!(!stored.ct_eq(&KeyHash::from_parts(3, digest)));
        for at in [0, 17, 31] {
            let mut other = digest;
            other[at] ^= 1;
            assert!(!stored.ct_eq(&KeyHash::from_parts(2, other)), "byte {at}");
        }
        assert!(!stored.ct_eq(&KeyHash::from_parts(3, [0; 32])));
        // Debug shows the version, never the digest.
        let shown = format!("{stored:?}");
        assert!(shown.contains("pepper_version: 2"), "{shown}");
        assert!(
            shown.contains("REDACTED") && !shown.contains("90"),
            "{shown}"
        );
    }

    #[test]
    fn duplicate_versions_are_refused() {
        assert_eq!(
            Peppers::new(pepper(1, 1), [pepper(1, 2)]).unwrap_err(),
            PepperError::DuplicateVersion(1)
        );
    }

    /// Verification as the verifier runs it: the current pepper's digest first, then the compare.
    fn check(
        peppers: &Peppers,
        id: &KeyId,
        secret: &[u8; SECRET_LEN],
        version: u32,
        stored: &[u64; 4],
    ) -> Option<bool> {
        let current = peppers.current_digest(id, secret);
        peppers.verify(id, secret, &current, version, stored)
    }

    #[test]
    fn a_digest_verifies_only_under_its_pepper() {
        let id: KeyId = "0123456789abcdef".parse().unwrap();
        let secret = [b'x'; SECRET_LEN];
        let a = Peppers::single(pepper(1, 1));
        let hash = a.hash(&id, &secret);
        let stored = lanes(hash.digest());
        assert_eq!(check(&a, &id, &secret, 1, &stored), Some(true));
        let mut other = secret;
        other[0] = b'y';
        assert_eq!(check(&a, &id, &other, 1, &stored), Some(false));
        let other_id: KeyId = "0123456789abcdeg".parse().unwrap();
        assert_eq!(check(&a, &other_id, &secret, 1, &stored), Some(false));
        // Same version number, different bytes: never verifies.
        let b = Peppers::single(pepper(1, 2));
        assert_eq!(check(&b, &id, &secret, 1, &stored), Some(false));
        // Unknown version.
        assert_eq!(check(&b, &id, &secret, 2, &stored), None);
        // Older version still configured: hashed under that pepper, not the current one.
        let rotated = Peppers::new(pepper(2, 2), [pepper(1, 1)]).unwrap();
        assert_eq!(rotated.current_version(), 2);
        assert_eq!(check(&rotated, &id, &secret, 1, &stored), Some(true));
        assert_eq!(rotated.hash(&id, &secret).pepper_version(), 2);
        // The precomputed digest is used for the current version only: a stored digest under version 1 is never
        // compared with the current pepper's digest, even when it is handed in.
        let current = rotated.current_digest(&id, &secret);
        assert_eq!(
            rotated.verify(&id, &secret, &current, 2, &stored),
            Some(false)
        );
        assert_eq!(
            rotated.verify(&id, &secret, &stored, 1, &stored),
            Some(true)
        );
        let newer = lanes(rotated.hash(&id, &secret).digest());
        assert_eq!(
            rotated.verify(&id, &secret, &current, 2, &newer),
            Some(true)
        );
        assert_eq!(
            rotated.verify(&id, &secret, &current, 1, &newer),
            Some(false)
        );
    }

    #[test]
    fn keyed_states_are_wiped_on_drop() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<Peppers>();
        wiped_on_drop::<Pepper>();
    }

    /// The digest is HMAC-SHA256 over id ‖ secret, as the `hmac` crate computes it (keys stored before the keyed
    /// state was kept by hand still verify).
    #[test]
    fn digests_are_hmac_sha256_of_id_and_secret() {
        use hmac::{Hmac, Mac};
        let id: KeyId = "0123456789abcdef".parse().unwrap();
        let secret = [b'x'; SECRET_LEN];
        for (version, fill) in [(1, 1u8), (2, 0xfe)] {
            let peppers = Peppers::single(pepper(version, fill));
            let mut reference = Hmac::<sha2::Sha256>::new_from_slice(&[fill; 32]).unwrap();
            reference.update(id.as_bytes());
            reference.update(&secret);
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(peppers.hash(&id, &secret).digest(), &expected);
        }
    }

    #[test]
    fn debug_prints_no_secret_material() {
        let p = Pepper::new(3, b"pepper-bytes-that-must-stay-hidden!!".to_vec()).unwrap();
        let set = Peppers::single(p.clone());
        let hash = KeyHash::from_parts(3, [0xab; 32]);
        let printed = format!("{p:?} {set:?} {hash:?} {p:#?} {hash:#?}");
        assert!(!printed.contains("pepper-bytes"), "{printed}");
        assert!(!printed.contains("171"), "{printed}"); // 0xab as a decimal byte
        assert!(!printed.to_lowercase().contains("abab"), "{printed}");
        assert!(printed.contains("version"));
    }
}
