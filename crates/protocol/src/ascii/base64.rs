//! The standard base64 alphabet (RFC 4648 §4, with padding), for meta-command binary keys.
//!
//! Meta commands take a `b` flag meaning "the key token is base64". That is the only use of
//! base64 in the protocol and it needs a few dozen lines, so we keep our own codec rather
//! than pull in a dependency. Decoding is strict: only canonical encodings are accepted, so
//! that encoding the decoded key gives back exactly the text the client sent, which is what
//! a `k` return flag must echo.

use bytes::{BufMut, BytesMut};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Length of the padded encoding of `n` bytes.
pub(crate) fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends the padded base64 encoding of `input` to `out`.
pub(crate) fn encode_into(input: &[u8], out: &mut BytesMut) {
    out.reserve(encoded_len(input.len()));
    for chunk in input.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 0x3f) as usize];
        out.put_u8(sextet(18));
        out.put_u8(sextet(12));
        out.put_u8(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.put_u8(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes a canonical padded encoding. Returns `None` for anything else, including an
/// encoding of zero bytes (an empty key is never valid).
pub(crate) fn decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.is_empty() || !input.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let last = input.len() / 4 - 1;
    for (i, quad) in input.chunks_exact(4).enumerate() {
        let pad = match quad {
            [_, _, b'=', b'='] => 2,
            [_, _, _, b'='] => 1,
            _ => 0,
        };
        if pad > 0 && i != last {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        // Canonical form: the bits that padding discards must be zero.
        let produced = 3 - pad;
        let discarded_mask = (1u32 << (8 * pad as u32)) - 1;
        if n & discarded_mask != 0 {
            return None;
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..=produced]);
    }
    if out.is_empty() { None } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(input: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_into(input, &mut out);
        out.to_vec()
    }

    #[test]
    fn rfc4648_vectors() {
        let vectors: [(&[u8], &[u8]); 6] = [
            (b"f", b"Zg=="),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg=="),
            (b"fooba", b"Zm9vYmE="),
            (b"foobar", b"Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(enc(plain), coded);
            assert_eq!(decode(coded).as_deref(), Some(plain));
            assert_eq!(encoded_len(plain.len()), coded.len());
        }
    }

    #[test]
    fn rejects_non_canonical_and_garbage() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"Zg="), None);
        assert_eq!(decode(b"Zh=="), None, "non-zero discarded bits");
        assert_eq!(decode(b"Zm9=Zm9v"), None, "padding in the middle");
        assert_eq!(decode(b"Zm9*"), None);
        assert_eq!(decode(b"===="), None);
        assert_eq!(decode(b"Z==="), None);
    }

    #[test]
    fn binary_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        for len in 1..all.len() {
            let coded = enc(&all[..len]);
            assert_eq!(decode(&coded).as_deref(), Some(&all[..len]));
        }
    }
}
