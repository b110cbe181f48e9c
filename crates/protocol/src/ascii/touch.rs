//! `touch <key> <exptime> [noreply]`.

use bytes::{Bytes, BytesMut};

use super::tokens::{BAD_FORMAT, key_ok, parse_i64, put_i64};
use super::{Frame, Outcome, Rejection, Request, put_noreply};

pub(super) fn parse(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    if toks.len() != 3 && toks.len() != 4 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let noreply = toks.len() == 4 && toks.last_is_noreply();
    let Some(key) = toks.get(1).filter(|k| key_ok(k, frame.limits.max_key_len)) else {
        return frame.line_only(Err(Rejection::client(BAD_FORMAT)));
    };
    let Some(exptime) = toks.get(2).and_then(parse_i64) else {
        return frame.line_only(Err(Rejection::client("invalid exptime argument")));
    };
    frame.line_only(Ok(Request::Touch {
        key: Bytes::copy_from_slice(key),
        exptime,
        noreply,
    }))
}

pub(super) fn encode(key: &[u8], exptime: i64, noreply: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"touch ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" ");
    put_i64(out, exptime);
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;

    fn touch(exptime: i64, noreply: bool) -> Request {
        Request::Touch {
            key: Bytes::from_static(b"k"),
            exptime,
            noreply,
        }
    }

    #[test]
    fn touch_parses() {
        assert_eq!(ok(b"touch k 10\r\n"), touch(10, false));
        assert_eq!(ok(b"touch k -1 noreply\r\n"), touch(-1, true));
    }

    #[test]
    fn touch_errors() {
        assert_eq!(rejected(b"touch k\r\n").0, "ERROR");
        assert_eq!(
            rejected(b"touch k soon\r\n").0,
            "CLIENT_ERROR invalid exptime argument"
        );
        assert_eq!(
            rejected(format!("touch {} 1\r\n", "k".repeat(251)).as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(encoded(&touch(30, true)), b"touch k 30 noreply\r\n");
    }
}
