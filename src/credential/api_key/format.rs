//! The key format: `<prefix>_<body>`, parsed strictly before any store or crypto work.
//!
//! The body is [`BODY_LEN`] base62 characters (`0-9A-Za-z`): the public key id ([`ID_LEN`] characters), the secret
//! ([`SECRET_LEN`] characters) and the CRC32 of everything before it (the prefix, `_`, id and secret), written as
//! [`CHECKSUM_LEN`] base62 digits, most significant first. The id and the secret are drawn character by character
//! from the operating system's CSPRNG with rejection sampling, so every character carries log2(62) ≈ 5.95 bits:
//! the id has ≈ 95 bits, the secret ≈ 190 bits.

use std::fmt;
use std::str::FromStr;

use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::hash::{KeyHash, Peppers};
use crate::Secret;

/// The base62 alphabet, in ASCII order.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of the public key id.
pub const ID_LEN: usize = 16;
/// Characters of the secret.
pub const SECRET_LEN: usize = 32;
/// Characters of the checksum (a CRC32 in base62; 62⁶ > 2³²).
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the body after `<prefix>_`.
pub const BODY_LEN: usize = ID_LEN + SECRET_LEN + CHECKSUM_LEN;
/// The default prefix: keys look like `sg_<body>`. The layer, the gate file and the CLI all default to it.
pub const DEFAULT_PREFIX: &str = "sg";
/// The default header that carries an API key (`Authorization: Bearer <key>` is accepted too). The layer, the gate
/// file and the CLI all default to it.
pub const DEFAULT_KEY_HEADER: &str = "x-api-key";
/// The default environment variable that holds the pepper. The gate file and the CLI both default to it.
pub const DEFAULT_PEPPER_ENV: &str = "SCOPEGATE_PEPPER";
/// The longest prefix accepted.
pub const MAX_PREFIX_LEN: usize = 16;

/// Why a prefix was refused at configuration time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The prefix breaks the rule.
    #[error(
        "invalid API key prefix {0:?}: use 2 to 16 characters, a lower-case letter first, then lower-case letters, \
         digits and single '_' separators (not at the end), e.g. \"sg\" or \"acme_live\""
    )]
    Prefix(String),
}

/// Why a key id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API key id {0:?}: expected exactly 16 base62 characters (0-9, A-Z, a-z)")]
pub struct KeyIdError(String);

/// The format keys are issued and parsed in: the configured prefix, validated once.
///
/// Defaults to the prefix `sg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: Box<str>,
}

impl KeyFormat {
    /// A format with `prefix`: 2 to 16 characters, `[a-z]` first, then `[a-z0-9]` with single `_` separators that
    /// neither end the prefix nor follow each other (`sg`, `acme_live`). Since the body never holds `_`, the
    /// last `_` of a key always splits the prefix from the body.
    pub fn new(prefix: &str) -> Result<Self, FormatError> {
        let bytes = prefix.as_bytes();
        let valid = (2..=MAX_PREFIX_LEN).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            && !prefix.ends_with('_')
            && !prefix.contains("__");
        if valid {
            Ok(KeyFormat {
                prefix: prefix.into(),
            })
        } else {
            Err(FormatError::Prefix(
                prefix.chars().take(MAX_PREFIX_LEN + 8).collect(),
            ))
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The exact length of every key in this format.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + 1 + BODY_LEN
    }

    /// A regular expression matching keys of this format, for secret scanners (validate the checksum too).
    pub fn scanner_regex(&self) -> String {
        format!(r"\b{}_[0-9A-Za-z]{{{BODY_LEN}}}\b", self.prefix)
    }

    /// Parses a presented key: exact prefix, `_`, exactly [`BODY_LEN`] base62 characters, valid checksum.
    /// Anything else is `None`. Borrows from `presented`, allocates nothing.
    pub(crate) fn parse<'a>(&self, presented: &'a str) -> Option<ParsedKey<'a>> {
        let bytes = presented.as_bytes();
        let plen = self.prefix.len();
        if bytes.len() != plen + 1 + BODY_LEN
            || &bytes[..plen] != self.prefix.as_bytes()
            || bytes[plen] != b'_'
        {
            return None;
        }
        let body = &bytes[plen + 1..];
        // Three range tests per byte, folded without early exit (no data-dependent branch per character; the
        // compiler turns it into a few vector compares).
        if !body.iter().fold(true, |ok, &b| ok & is_base62(b)) {
            return None;
        }
        let (checked, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        // Values of 2³² and above cannot equal a CRC32, so a non-canonical encoding never passes.
        if decode_base62(checksum)? != u64::from(crc32fast::hash(checked)) {
            return None;
        }
        let (id, rest) = body.split_at(ID_LEN);
        let id: [u8; ID_LEN] = id.try_into().ok()?;
        let secret: &[u8; SECRET_LEN] = rest[..SECRET_LEN].try_into().ok()?;
        Some(ParsedKey {
            id: KeyId(id),
            secret,
        })
    }

    /// Draws a new id and secret from the OS CSPRNG, writes the key and hashes it under the current pepper.
    pub(crate) fn generate(
        &self,
        peppers: &Peppers,
    ) -> Result<(KeyId, Secret, KeyHash), rand::rand_core::OsError> {
        let mut chars = Zeroizing::new([0u8; ID_LEN + SECRET_LEN]);
        fill_base62(&mut chars[..])?;
        let mut key = Zeroizing::new(Vec::with_capacity(self.key_len()));
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b'_');
        key.extend_from_slice(&chars[..]);
        let crc = crc32fast::hash(&key);
        key.extend_from_slice(&encode_checksum(crc));
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&chars[..ID_LEN]);
        let id = KeyId(id);
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        secret.copy_from_slice(&chars[ID_LEN..]);
        let hash = peppers.hash(&id, &secret);
        Ok((id, Secret::new(std::mem::take(&mut *key)), hash))
    }
}

impl Default for KeyFormat {
    fn default() -> Self {
        KeyFormat {
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// A syntactically valid key, borrowed from the presented text.
pub(crate) struct ParsedKey<'a> {
    pub(crate) id: KeyId,
    pub(crate) secret: &'a [u8; SECRET_LEN],
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("id", &self.id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The public id of a key: 16 base62 characters. Used for lookups, logs, `keys revoke ID` and as the grant's
/// principal. Not a secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; ID_LEN]);

impl KeyId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Built only from base62 bytes, which are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_else(|_| unreachable!("key ids are ASCII"))
    }

    /// The id's bytes (ASCII).
    pub(crate) fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = KeyIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        match <[u8; ID_LEN]>::try_from(bytes) {
            Ok(id) if id.iter().all(u8::is_ascii_alphanumeric) => Ok(KeyId(id)),
            _ => Err(KeyIdError(text.chars().take(40).collect())),
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Fills `out` with uniformly random base62 characters from the OS CSPRNG (rejection sampling: bytes ≥ 248 are
/// dropped, so `b % 62` is uniform). Each kept byte fills the next slot of a shrinking slice, so the loop ends once
/// `out` is full whatever the draws (no counter whose arithmetic could go wrong).
fn fill_base62(out: &mut [u8]) -> Result<(), rand::rand_core::OsError> {
    let mut pool = Zeroizing::new([0u8; 64]);
    let mut rest = out;
    while !rest.is_empty() {
        OsRng.try_fill_bytes(&mut pool[..])?;
        for &b in pool.iter().filter(|&&b| b < 248) {
            let Some((slot, tail)) = std::mem::take(&mut rest).split_first_mut() else {
                break;
            };
            *slot = ALPHABET[usize::from(b % 62)];
            rest = tail;
        }
    }
    Ok(())
}

/// `key` with its checksum replaced by the right one for its (possibly altered) text: for tests that need a key
/// past the checksum.
#[cfg(test)]
pub(crate) fn rechecksummed(key: &str) -> String {
    let checked = &key[..key.len() - CHECKSUM_LEN];
    let checksum = encode_checksum(crc32fast::hash(checked.as_bytes()));
    let checksum = std::str::from_utf8(&checksum).unwrap_or_else(|_| unreachable!("base62"));
    format!("{checked}{checksum}")
}

fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// Whether `b` is in the base62 alphabet, without a branch or a table.
fn is_base62(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'A') < 26) | (b.wrapping_sub(b'a') < 26)
}

/// Marks a byte outside the alphabet in [`DIGIT`].
const INVALID: u8 = 0x80;

/// The value of each base62 digit, or [`INVALID`].
const DIGIT: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        // i < 62: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        {
            table[ALPHABET[i] as usize] = i as u8;
        }
        i += 1;
    }
    table
};

fn base62_digit(c: u8) -> Option<u64> {
    let d = DIGIT[usize::from(c)];
    (d & INVALID == 0).then_some(u64::from(d))
}

/// Decodes [`CHECKSUM_LEN`] base62 digits (at most 62⁶ − 1, which fits easily in a `u64`).
fn decode_base62(digits: &[u8]) -> Option<u64> {
    if digits.len() != CHECKSUM_LEN {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |acc, &c| Some(acc * 62 + base62_digit(c)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::hash::Pepper;
    use super::*;

    fn key(format: &KeyFormat) -> String {
        let peppers = Peppers::single(Pepper::new(1, vec![1; 32]).unwrap());
        let (_, secret, _) = format.generate(&peppers).unwrap();
        secret.expose_str().unwrap().to_owned()
    }

    #[test]
    fn a_valid_checksum_does_not_excuse_a_wrong_length() {
        let format = KeyFormat::default();
        let good = key(&format);
        // The twin: re-checksumming an intact key changes nothing.
        assert_eq!(rechecksummed(&good), good);
        assert!(format.parse(&rechecksummed(&good)).is_some());
        // One character more or fewer in the id, the checksum made right for it: still refused.
        let longer = rechecksummed(&format!("{}x{}", &good[..3], &good[3..]));
        let shorter = rechecksummed(&format!("{}{}", &good[..3], &good[4..]));
        // Another prefix of the same length, and another separator, each with a checksum made right for it.
        let other_prefix = rechecksummed(&format!("xy{}", &good[2..]));
        let other_separator = rechecksummed(&format!("sg-{}", &good[3..]));
        for bad in [&longer, &shorter, &other_prefix, &other_separator] {
            assert!(format.parse(bad).is_none(), "{bad}");
        }
        // The same key under a format whose prefix it has: read.
        let xy = KeyFormat::new("xy").unwrap();
        assert!(xy.parse(&other_prefix).is_some());
    }

    #[test]
    fn a_valid_checksum_does_not_excuse_a_character_outside_base62() {
        let format = KeyFormat::default();
        let good = key(&format);
        for at in [3, 20, good.len() - CHECKSUM_LEN - 1] {
            // Another base62 character, the checksum made right: a different, well-formed key.
            let other = if &good[at..=at] == "Z" { "Y" } else { "Z" };
            let swapped = rechecksummed(&format!("{}{other}{}", &good[..at], &good[at + 1..]));
            assert!(format.parse(&swapped).is_some(), "{swapped}");
            // A character outside base62 in the same place: refused, whatever the checksum says.
            // The neighbours of each range (`/` `:` around the digits, `@` `[` and `` ` `` `{` around the letters).
            for outside in ["-", "+", "/", "=", "_", ".", ":", "@", "[", "`", "{"] {
                let bad = rechecksummed(&format!("{}{outside}{}", &good[..at], &good[at + 1..]));
                assert!(format.parse(&bad).is_none(), "{bad}");
            }
        }
        // Two of them (an even count, which a parity-like mix-up of the per-character results would let through).
        let two = rechecksummed(&format!("{}--{}", &good[..5], &good[7..]));
        assert!(format.parse(&two).is_none(), "{two}");
    }

    #[test]
    fn a_parsed_key_shows_its_id_and_hides_its_secret() {
        let format = KeyFormat::new("acme").unwrap();
        let presented = key(&format);
        let parsed = format.parse(&presented).unwrap();
        let shown = format!("{parsed:?}");
        assert!(shown.contains(parsed.id.as_str()), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        let secret = std::str::from_utf8(parsed.secret).unwrap();
        assert!(!shown.contains(secret), "{shown}");
        assert_eq!(format!("{format:?}"), r#"KeyFormat { prefix: "acme" }"#);
    }

    #[test]
    fn generated_characters_are_uniform_over_base62() {
        // 62 × 4,000 draws: each character's count is 4,000 ± 63 (one standard deviation). A 10% band is over six
        // deviations wide (no flake), and catches a bias as small as one extra byte value per character (+25%).
        let mut chars = vec![0u8; 62 * 4_000];
        fill_base62(&mut chars).unwrap();
        let mut counts = [0usize; 62];
        for c in &chars {
            let at = ALPHABET
                .iter()
                .position(|a| a == c)
                .expect("a base62 character");
            counts[at] += 1;
        }
        for (at, count) in counts.iter().enumerate() {
            assert!(
                (3_600..=4_400).contains(count),
                "{:?} drawn {count} times",
                char::from(ALPHABET[at])
            );
        }
        // Short and empty outputs are filled exactly.
        let mut one = [0u8; 1];
        fill_base62(&mut one).unwrap();
        assert!(is_base62(one[0]));
        fill_base62(&mut []).unwrap();
    }

    #[test]
    fn prefixes_are_validated() {
        for good in ["sg", "acme", "acme_live", "a1", "abcdefghijklmnop", "x9_y"] {
            assert_eq!(KeyFormat::new(good).unwrap().prefix(), good);
        }
        for bad in [
            "",
            "s",
            "Sg",
            "1sg",
            "_sg",
            "sg_",
            "a__b",
            "sg-live",
            "abcdefghijklmnopq",
            "sé",
            "s g",
        ] {
            let err = KeyFormat::new(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn generated_keys_parse_and_have_the_documented_shape() {
        let format = KeyFormat::new("acme_live").unwrap();
        let regex_body = |k: &str| {
            let (prefix, body) = k.rsplit_once('_').unwrap();
            prefix == "acme_live"
                && body.len() == BODY_LEN
                && body.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        for _ in 0..200 {
            let k = key(&format);
            assert_eq!(k.len(), format.key_len());
            assert!(regex_body(&k), "{k}");
            let parsed = format.parse(&k).unwrap();
            assert_eq!(parsed.id.as_str(), &k[10..10 + ID_LEN]);
            assert_eq!(
                &parsed.secret[..],
                &k.as_bytes()[10 + ID_LEN..10 + ID_LEN + SECRET_LEN]
            );
        }
    }

    #[test]
    fn the_digit_table_accepts_exactly_the_alphabet() {
        for b in 0..=255u8 {
            assert_eq!(
                base62_digit(b).is_some(),
                b.is_ascii_alphanumeric(),
                "byte {b}"
            );
        }
        assert_eq!(base62_digit(b'0'), Some(0));
        assert_eq!(base62_digit(b'A'), Some(10));
        assert_eq!(base62_digit(b'z'), Some(61));
    }

    #[test]
    fn checksum_encoding_round_trips_at_the_edges() {
        for crc in [0, 1, 61, 62, u32::MAX, 0x8000_0000] {
            assert_eq!(decode_base62(&encode_checksum(crc)), Some(u64::from(crc)));
        }
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let format = KeyFormat::default();
        let k = key(&format);
        assert!(format.parse(&k).is_some());
        for i in 0..k.len() {
            for c in [b'0', b'z', b'A', b'_', b' ', b'-'] {
                let mut bytes = k.clone().into_bytes();
                if bytes[i] == c {
                    continue;
                }
                bytes[i] = c;
                let mutated = String::from_utf8(bytes).unwrap();
                assert!(format.parse(&mutated).is_none(), "{mutated}");
            }
        }
    }

    #[test]
    fn shape_errors_are_refused() {
        let format = KeyFormat::default();
        let k = key(&format);
        let body = &k[3..];
        for bad in [
            String::new(),
            format!("SG_{body}"),
            format!("sg-{body}"),
            format!("sgx_{body}"),
            format!("_{body}"),
            format!("{k}0"),
            k[..k.len() - 1].to_owned(),
            format!(" {k}"),
            format!("{k}\n"),
            format!("sg__{body}"),
            format!("sg_\u{430}{}", &body[1..]), // Cyrillic homoglyph in place of a character
            format!("sg_\u{430}{}", &body[2..]), // same byte length
            format!("sg_{}\u{430}", &body[..BODY_LEN - 2]),
        ] {
            assert!(format.parse(&bad).is_none(), "{bad:?}");
        }
        // A key of another prefix is not a key of this one.
        let other = KeyFormat::new("acme").unwrap();
        assert!(other.parse(&k).is_none());
    }

    #[test]
    fn an_overflowing_checksum_is_refused() {
        // "zzzzzz" is 62⁶ − 1, above every CRC32: never canonical.
        let format = KeyFormat::default();
        let k = key(&format);
        let forged = format!("{}zzzzzz", &k[..k.len() - CHECKSUM_LEN]);
        assert!(format.parse(&forged).is_none());
    }

    #[test]
    fn key_ids_parse_strictly() {
        let id: KeyId = "0123456789abcdeF".parse().unwrap();
        assert_eq!(id.to_string(), "0123456789abcdeF");
        assert_eq!(format!("{id:?}"), "KeyId(0123456789abcdeF)");
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdeFG",
            "0123456789abcde_",
            "0123456789abcdé",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_scanner_regex_names_the_prefix_and_length() {
        assert_eq!(
            KeyFormat::default().scanner_regex(),
            r"\bsg_[0-9A-Za-z]{54}\b"
        );
    }
}
