//! `incr <key> <delta> [noreply]` and `decr <key> <delta> [noreply]`.

use bytes::{Bytes, BytesMut};

use super::tokens::{BAD_FORMAT, key_ok, parse_u64, put_u64};
use super::{Frame, Outcome, Rejection, Request, put_noreply};

pub(super) fn parse(frame: &Frame<'_>, incr: bool) -> Outcome {
    let toks = &frame.tokens;
    if toks.len() != 3 && toks.len() != 4 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let noreply = toks.len() == 4 && toks.last_is_noreply();
    let Some(key) = toks.get(1).filter(|k| key_ok(k, frame.limits.max_key_len)) else {
        return frame.line_only(Err(Rejection::client(BAD_FORMAT)));
    };
    let Some(delta) = toks.get(2).and_then(parse_u64) else {
        return frame.line_only(Err(Rejection::client("invalid numeric delta argument")));
    };
    frame.line_only(Ok(Request::Arith {
        key: Bytes::copy_from_slice(key),
        delta,
        incr,
        noreply,
    }))
}

pub(super) fn encode(key: &[u8], delta: u64, incr: bool, noreply: bool, out: &mut BytesMut) {
    out.extend_from_slice(if incr { b"incr " } else { b"decr " });
    out.extend_from_slice(key);
    out.extend_from_slice(b" ");
    put_u64(out, delta);
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;

    fn arith(key: &str, delta: u64, incr: bool, noreply: bool) -> Request {
        Request::Arith {
            key: Bytes::copy_from_slice(key.as_bytes()),
            delta,
            incr,
            noreply,
        }
    }

    #[test]
    fn incr_and_decr() {
        assert_eq!(ok(b"incr n 5\r\n"), arith("n", 5, true, false));
        assert_eq!(ok(b"decr n 1 noreply\r\n"), arith("n", 1, false, true));
        assert_eq!(
            ok(b"incr n 18446744073709551615\r\n"),
            arith("n", u64::MAX, true, false)
        );
    }

    #[test]
    fn delta_must_be_u64() {
        for line in [
            &b"incr n abc\r\n"[..],
            b"incr n -1\r\n",
            b"decr n 18446744073709551616\r\n",
            b"incr n 1.5 noreply\r\n",
        ] {
            assert_eq!(
                rejected(line).0,
                "CLIENT_ERROR invalid numeric delta argument"
            );
        }
    }

    #[test]
    fn arity_and_key_errors() {
        assert_eq!(rejected(b"incr n\r\n").0, "ERROR");
        assert_eq!(rejected(b"incr n 1 noreply x\r\n").0, "ERROR");
        let long = format!("decr {} 1\r\n", "k".repeat(251));
        assert_eq!(
            rejected(long.as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(encoded(&arith("n", 7, true, true)), b"incr n 7 noreply\r\n");
        assert_eq!(encoded(&arith("n", 0, false, false)), b"decr n 0\r\n");
    }
}
