//! The one type that holds secret bytes.
//!
//! ```
//! use scopegate::Secret;
//!
//! let key = Secret::from("sg_example-secret");
//! assert!(key.ct_eq(&Secret::from("sg_example-secret")));
//! assert!(!key.ct_eq(&Secret::from("sg_example-secreT")));
//! // Debug never shows the bytes.
//! assert_eq!(format!("{key:?}"), "Secret([REDACTED])");
//! ```

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Secret bytes: an API key, a bearer token, a pepper.
///
/// `Debug` is redacted, there is no `Display` or `Serialize`, comparisons run in constant time (for equal
/// lengths) and the bytes are zeroized when the value is dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// The bytes are wiped by `Zeroizing` when the value is dropped.
impl zeroize::ZeroizeOnDrop for Secret {}

impl Secret {
    /// Wraps bytes as a secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes. Call sites of this method are the places to review.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes (not secret: lengths are public in every protocol we speak).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with another secret in time that depends only on the lengths.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        self.ct_eq_bytes(other.expose())
    }

    /// Compares with `other` in time that depends only on the lengths, eight bytes at a time (a ~500-byte token in
    /// tens of nanoseconds, where a byte-wise compare takes a microsecond). The crate's one such compare.
    pub(crate) fn ct_eq_bytes(&self, other: &[u8]) -> bool {
        let a = self.expose();
        if a.len() != other.len() {
            return false;
        }
        let mut diff = 0u64;
        let (a_words, a_tail) = a.split_at(a.len() - a.len() % 8);
        let (b_words, b_tail) = other.split_at(a_words.len());
        for (x, y) in a_words.chunks_exact(8).zip(b_words.chunks_exact(8)) {
            let mut xa = [0u8; 8];
            let mut ya = [0u8; 8];
            xa.copy_from_slice(x);
            ya.copy_from_slice(y);
            diff |= u64::from_ne_bytes(xa) ^ u64::from_ne_bytes(ya);
        }
        for (x, y) in a_tail.iter().zip(b_tail) {
            diff |= u64::from(x ^ y);
        }
        bool::from(diff.ct_eq(&0))
    }
}

/// Secret bytes borrowed from where they arrived: a credential in a request's header, handed to an
/// [`Authenticator`](crate::credential::Authenticator) without copying it.
///
/// The same care as [`Secret`]: `Debug` is redacted and there is no `Display`. It does not zeroize, because it owns
/// nothing: the bytes belong to the request, which holds them until it is dropped whether or not they were copied.
/// An authenticator that must keep the credential past the call (a future waiting for a store) copies it with
/// [`to_secret`](Self::to_secret), which is zeroized on drop.
#[derive(Clone, Copy)]
pub struct SecretRef<'a>(&'a [u8]);

impl<'a> SecretRef<'a> {
    /// Borrows bytes as a secret.
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// The secret bytes. Call sites of this method are the places to review.
    #[inline]
    pub fn expose(&self) -> &'a [u8] {
        self.0
    }

    /// The secret as UTF-8 text, if it is.
    pub fn expose_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.0).ok()
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An owned copy, zeroized when dropped.
    pub fn to_secret(&self) -> Secret {
        Secret::new(self.0.to_vec())
    }
}

impl<'a> From<&'a Secret> for SecretRef<'a> {
    fn from(secret: &'a Secret) -> Self {
        SecretRef(secret.expose())
    }
}

impl fmt::Debug for SecretRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretRef([REDACTED])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_bytes() {
        let s = Secret::from("hunter2-very-secret");
        let r = SecretRef::from(&s);
        let printed = format!("{s:?} {s:#?} {r:?} {r:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(format!("{r:?}"), "SecretRef([REDACTED])");
    }

    #[test]
    fn a_borrowed_secret_reads_and_copies_the_same_bytes() {
        let s = Secret::from("sg_abc");
        let r = SecretRef::from(&s);
        assert_eq!(r.expose(), b"sg_abc");
        assert_eq!(r.expose_str(), Some("sg_abc"));
        assert_eq!((r.len(), r.is_empty()), (6, false));
        assert!(r.to_secret().ct_eq(&s));
        assert!(SecretRef::new(b"").is_empty());
        assert_eq!(SecretRef::new(&[0xff, 0xfe]).expose_str(), None);
    }

    #[test]
    fn equality_is_exact() {
        let a = Secret::from("abc");
        assert!(a.ct_eq(&Secret::from("abc")));
        assert!(!a.ct_eq(&Secret::from("abd")));
        assert!(!a.ct_eq(&Secret::from("abcd")));
        assert!(!a.ct_eq(&Secret::from("")));
    }

    #[test]
    fn the_word_wise_compare_is_exact() {
        let a = b"0123456789abcdefXYZ";
        let secret = Secret::new(a.to_vec());
        assert!(secret.ct_eq_bytes(a));
        for i in 0..a.len() {
            let mut b = *a;
            b[i] ^= 1;
            assert!(!secret.ct_eq_bytes(&b), "{i}");
        }
        assert!(!secret.ct_eq_bytes(&a[..18]));
        assert!(Secret::new(Vec::new()).ct_eq_bytes(b""));
    }
}
