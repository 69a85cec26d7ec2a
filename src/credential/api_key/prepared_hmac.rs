//! HMAC-SHA256 (RFC 2104) keyed once, whose keyed state is wiped when dropped.
//!
//! Keying HMAC costs two SHA-256 compressions (the key's inner and outer pad blocks); a verification that starts
//! from the two states saved after them costs two more, about 40% less than keying every time. Those two states
//! are as good as the pepper itself: whoever reads them can compute every digest. The `hmac` crate keeps them in
//! a type that is never wiped, so the states are kept here, as plain words that [`zeroize`] clears on drop, and
//! the compressions come from `sha2`'s own `compress256`. The `hmac` crate stays the reference that the tests
//! compare against.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// SHA-256's block length in bytes.
const BLOCK_LEN: usize = 64;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The SHA-256 states after the key's inner (`0x36`) and outer (`0x5c`) pad blocks. Cloning copies the states;
/// every copy is wiped when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct PreparedHmac {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl PreparedHmac {
    /// Keys HMAC-SHA256 with `key` (any length; a key longer than a block is hashed first, as RFC 2104 says).
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut block = [0u8; BLOCK_LEN];
        if key.len() > BLOCK_LEN {
            let mut state = INITIAL_STATE;
            let mut hashed = [0u8; 32];
            finish(&mut state, key, 0, &mut hashed);
            block[..32].copy_from_slice(&hashed);
            hashed.zeroize();
            state.zeroize();
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut prepared = PreparedHmac {
            inner: INITIAL_STATE,
            outer: INITIAL_STATE,
        };
        for (pad, state) in [(0x36u8, &mut prepared.inner), (0x5c, &mut prepared.outer)] {
            let mut padded = block;
            for byte in &mut padded {
                *byte ^= pad;
            }
            compress256(state, &[GenericArray::from(padded)]);
            padded.zeroize();
        }
        block.zeroize();
        prepared
    }

    /// `HMAC-SHA256(key, message)`.
    pub(crate) fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner_digest = [0u8; 32];
        // The copy of the inner state is turned into the inner digest in place; the outer copy into the result.
        let mut inner = self.inner;
        finish(&mut inner, message, BLOCK_LEN as u64, &mut inner_digest);
        let mut outer = self.outer;
        let mut out = [0u8; 32];
        finish(&mut outer, &inner_digest, BLOCK_LEN as u64, &mut out);
        out
    }
}

/// Feeds `data` into `state`, which has already absorbed `prior` bytes (a multiple of the block length), adds
/// SHA-256's padding and writes the digest to `out`. The buffer that held the tail of `data` is wiped.
fn finish(state: &mut [u32; 8], data: &[u8], prior: u64, out: &mut [u8; 32]) {
    let mut blocks = data.chunks_exact(BLOCK_LEN);
    for block in &mut blocks {
        compress256(state, &[*GenericArray::from_slice(block)]);
    }
    let rest = blocks.remainder();
    // The rest, 0x80, zeros, and the message length in bits: one block, or two when the length does not fit.
    let mut tail = [0u8; 2 * BLOCK_LEN];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() + 1 + 8 <= BLOCK_LEN {
        BLOCK_LEN
    } else {
        2 * BLOCK_LEN
    };
    let bits = (prior + data.len() as u64).wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..tail_len].chunks_exact(BLOCK_LEN) {
        compress256(state, &[*GenericArray::from_slice(block)]);
    }
    // Only the first `rest.len()` bytes held message bytes.
    tail[..rest.len()].zeroize();
    for (bytes, word) in out.chunks_exact_mut(4).zip(state.iter()) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha2::Sha256;

    use super::*;

    fn reference(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .fold(String::new(), |text, b| text + &format!("{b:02x}"))
    }

    /// RFC 4231's test cases 1, 2, 6 and 7 (short key, short key and data, a key longer than a block).
    #[test]
    fn rfc_4231_vectors() {
        let cases: [(&[u8], &[u8], &str); 4] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &[0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, message, expected) in cases {
            assert_eq!(hex(&PreparedHmac::new(key).mac(message)), expected);
        }
    }

    /// The boundaries of the padding: a message whose tail leaves 0 to 9 bytes free in its last block, and keys
    /// of exactly one block and one more.
    #[test]
    fn padding_boundaries_match_the_reference() {
        for key_len in [0u8, 1, 32, 63, 64, 65, 128, 129] {
            let key: Vec<u8> = (0..key_len).collect();
            let prepared = PreparedHmac::new(&key);
            for len in 0..=200u8 {
                let message: Vec<u8> = (0..len).map(|i| i.wrapping_mul(7)).collect();
                assert_eq!(
                    prepared.mac(&message),
                    reference(&key, &message),
                    "key {key_len}, message {len}"
                );
            }
        }
    }

    #[test]
    fn the_keyed_state_is_wiped() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<PreparedHmac>();
        let mut prepared = PreparedHmac::new(&[7; 32]);
        assert_ne!(prepared.inner, [0; 8]);
        assert_ne!(prepared.outer, [0; 8]);
        prepared.zeroize();
        assert_eq!((prepared.inner, prepared.outer), ([0; 8], [0; 8]));
    }

    proptest! {
        #[test]
        fn every_key_and_message_match_the_reference(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            message in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(PreparedHmac::new(&key).mac(&message), reference(&key, &message));
        }
    }
}
