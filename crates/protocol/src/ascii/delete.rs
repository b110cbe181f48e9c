//! `delete <key> [0] [noreply]`.
//!
//! The `0` is the remnant of a removed "hold time" argument that old PHP clients still send;
//! memcached accepts exactly `0` there and nothing else.

use bytes::{Bytes, BytesMut};

use super::tokens::{BAD_FORMAT, key_ok};
use super::{Frame, Outcome, Rejection, Request, put_noreply};

const USAGE: &str = "bad command line format.  Usage: delete <key> [noreply]";

pub(super) fn parse(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    if !(2..=4).contains(&toks.len()) {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let mut noreply = false;
    if toks.len() > 2 {
        let hold_is_zero = toks.get(2) == Some(b"0");
        noreply = toks.last_is_noreply();
        let valid = (toks.len() == 3 && (hold_is_zero || noreply))
            || (toks.len() == 4 && hold_is_zero && noreply);
        if !valid {
            return frame.line_only(Err(Rejection::client(USAGE)));
        }
    }
    let Some(key) = toks.get(1).filter(|k| key_ok(k, frame.limits.max_key_len)) else {
        return frame.line_only(Err(Rejection::client(BAD_FORMAT)));
    };
    frame.line_only(Ok(Request::Delete {
        key: Bytes::copy_from_slice(key),
        noreply,
    }))
}

pub(super) fn encode(key: &[u8], noreply: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;

    fn delete(noreply: bool) -> Request {
        Request::Delete {
            key: Bytes::from_static(b"k"),
            noreply,
        }
    }

    #[test]
    fn plain_legacy_zero_and_noreply() {
        assert_eq!(ok(b"delete k\r\n"), delete(false));
        assert_eq!(ok(b"delete k 0\r\n"), delete(false));
        assert_eq!(ok(b"delete k noreply\r\n"), delete(true));
        assert_eq!(ok(b"delete k 0 noreply\r\n"), delete(true));
    }

    #[test]
    fn other_hold_times_get_the_usage_error() {
        for line in [
            &b"delete k 10\r\n"[..],
            b"delete k 1 noreply\r\n",
            b"delete k 0 junk\r\n",
        ] {
            assert_eq!(
                rejected(line).0,
                "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
            );
        }
    }

    #[test]
    fn arity_and_key_errors() {
        assert_eq!(rejected(b"delete\r\n").0, "ERROR");
        assert_eq!(rejected(b"delete k 0 noreply x\r\n").0, "ERROR");
        assert_eq!(
            rejected(format!("delete {}\r\n", "k".repeat(251)).as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(encoded(&delete(true)), b"delete k noreply\r\n");
        assert_eq!(encoded(&delete(false)), b"delete k\r\n");
    }
}
