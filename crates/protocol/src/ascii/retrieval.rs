//! `get`, `gets`, `gat`, `gats`: the multi-key retrievals.

use bytes::{Bytes, BytesMut};

use super::tokens::{BAD_FORMAT, key_ok, parse_i64, put_i64};
use super::{Frame, Outcome, Rejection, Request};

/// Copies the keys from token `from` on, refusing the whole request if any key is bad, as
/// memcached drops the values it had already queued and answers only the error.
///
/// A plain loop into a vector sized from the token count: this runs for every get, and
/// collecting an iterator of `Result`s cost more than the copies themselves.
fn keys(frame: &Frame<'_>, from: usize) -> Result<Vec<Bytes>, Rejection> {
    let max = frame.limits.max_key_len;
    let mut keys = Vec::with_capacity(frame.tokens.len().saturating_sub(from));
    for key in frame.tokens.all_from(from) {
        if !key_ok(key, max) {
            return Err(Rejection::client(BAD_FORMAT));
        }
        keys.push(Bytes::copy_from_slice(key));
    }
    Ok(keys)
}

/// `get <key>*` / `gets <key>*`.
pub(super) fn parse_get(frame: &Frame<'_>, cas: bool) -> Outcome {
    if frame.tokens.len() < 2 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    frame.line_only(keys(frame, 1).map(|keys| Request::Get { keys, cas }))
}

/// `gat <exptime> <key>*` / `gats <exptime> <key>*`.
///
/// memcached answers a bare `gat <exptime>` with an empty `END`; its newer request parser
/// and we both require at least one key, since a retrieval of nothing is a client bug.
pub(super) fn parse_gat(frame: &Frame<'_>, cas: bool) -> Outcome {
    if frame.tokens.len() < 3 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let Some(exptime) = frame.tokens.get(1).and_then(parse_i64) else {
        return frame.line_only(Err(Rejection::client("invalid exptime argument")));
    };
    frame.line_only(keys(frame, 2).map(|keys| Request::GetAndTouch { exptime, keys, cas }))
}

fn put_keys(keys: &[Bytes], out: &mut BytesMut) {
    for key in keys {
        out.extend_from_slice(b" ");
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"\r\n");
}

pub(super) fn encode_get(keys: &[Bytes], cas: bool, out: &mut BytesMut) {
    out.extend_from_slice(if cas { b"gets" } else { b"get" });
    put_keys(keys, out);
}

pub(super) fn encode_gat(exptime: i64, keys: &[Bytes], cas: bool, out: &mut BytesMut) {
    out.extend_from_slice(if cas { b"gats " } else { b"gat " });
    put_i64(out, exptime);
    put_keys(keys, out);
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;
    use crate::AfterError;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn get_and_gets() {
        assert_eq!(
            ok(b"get foo\r\n"),
            Request::Get {
                keys: vec![b("foo")],
                cas: false
            }
        );
        assert_eq!(
            ok(b"gets  a b  c\n"),
            Request::Get {
                keys: vec![b("a"), b("b"), b("c")],
                cas: true
            }
        );
    }

    #[test]
    fn get_many_keys_beyond_the_token_array() {
        let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
        let line = format!("get {}\r\n", keys.join(" "));
        let Request::Get { keys: got, .. } = ok(line.as_bytes()) else {
            panic!("not a get")
        };
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], b("key99"));
    }

    #[test]
    fn get_without_key_is_error() {
        assert_eq!(rejected(b"get\r\n").0, "ERROR");
        assert_eq!(rejected(b"gets \r\n").0, "ERROR");
    }

    #[test]
    fn get_with_bad_key_rejects_the_whole_line() {
        let long = format!("get ok {}\r\n", "k".repeat(251));
        assert_eq!(
            rejected(long.as_bytes()),
            (
                "CLIENT_ERROR bad command line format".to_owned(),
                AfterError::Continue
            )
        );
        assert_eq!(
            rejected(b"get a\x01b\r\n").0,
            "CLIENT_ERROR bad command line format"
        );
        let max = format!("get {}\r\n", "k".repeat(250));
        assert!(matches!(ok(max.as_bytes()), Request::Get { .. }));
    }

    #[test]
    fn gat_and_gats() {
        assert_eq!(
            ok(b"gat 10 foo bar\r\n"),
            Request::GetAndTouch {
                exptime: 10,
                keys: vec![b("foo"), b("bar")],
                cas: false
            }
        );
        assert_eq!(
            ok(b"gats -1 foo\r\n"),
            Request::GetAndTouch {
                exptime: -1,
                keys: vec![b("foo")],
                cas: true
            }
        );
    }

    #[test]
    fn gat_errors() {
        assert_eq!(rejected(b"gat\r\n").0, "ERROR");
        assert_eq!(rejected(b"gat 10\r\n").0, "ERROR");
        assert_eq!(
            rejected(b"gat abc foo\r\n").0,
            "CLIENT_ERROR invalid exptime argument"
        );
        assert_eq!(
            rejected(format!("gats 1 {}\r\n", "x".repeat(300)).as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encoded(&Request::Get {
                keys: vec![b("a"), b("b")],
                cas: false
            }),
            b"get a b\r\n"
        );
        assert_eq!(
            encoded(&Request::GetAndTouch {
                exptime: -5,
                keys: vec![b("a")],
                cas: true
            }),
            b"gats -5 a\r\n"
        );
    }
}
