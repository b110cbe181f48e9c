//! `me <key> [b]`: meta debug, the item's metadata as `key=value` text.

use bytes::{Bytes, BytesMut};

use super::super::base64;
use super::super::tokens::{BAD_FORMAT, key_ok};
use super::super::{Frame, Outcome, Rejection, Request};
use super::{put_base64_flag, put_key};

/// memcached only looks for a `b` as the token right after the key, and ignores the rest.
pub(crate) fn parse(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    let Some(raw) = toks.get(1).filter(|k| key_ok(k, frame.limits.max_key_len)) else {
        return frame.line_only(Err(Rejection::client(BAD_FORMAT)));
    };
    let base64 = toks.get(2) == Some(b"b");
    let key = if base64 {
        match base64::decode(raw) {
            Some(k) => Bytes::from(k),
            None => return frame.line_only(Err(Rejection::client(BAD_FORMAT))),
        }
    } else {
        Bytes::copy_from_slice(raw)
    };
    frame.line_only(Ok(Request::MetaDebug { key, base64 }))
}

pub(crate) fn encode(key: &[u8], base64: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"me ");
    put_key(key, base64, out);
    put_base64_flag(base64, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{encoded, ok, rejected};
    use super::*;

    #[test]
    fn me_plain_and_base64() {
        let plain = ok(b"me foo\r\n");
        assert_eq!(
            plain,
            Request::MetaDebug {
                key: Bytes::from_static(b"foo"),
                base64: false
            }
        );
        assert_eq!(encoded(&plain), b"me foo\r\n");
        let binary = ok(b"me Zm9v b\r\n");
        assert_eq!(
            binary,
            Request::MetaDebug {
                key: Bytes::from_static(b"foo"),
                base64: true
            }
        );
        assert_eq!(encoded(&binary), b"me Zm9v b\r\n");
    }

    #[test]
    fn me_errors() {
        for line in [&b"me\r\n"[..], b"me Zm9 b\r\n"] {
            assert_eq!(rejected(line).0, "CLIENT_ERROR bad command line format");
        }
        assert_eq!(
            rejected(format!("me {}\r\n", "k".repeat(251)).as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
    }
}
