//! `set`, `add`, `replace`, `append`, `prepend`, `cas`: a command line and a data block.
//!
//! The length is read first, before anything else on the line is judged, because once we know
//! it every later rejection can swallow the data block instead of running it as commands.

use bytes::{Bytes, BytesMut};

use super::tokens::{
    BAD_FORMAT, key_ok, parse_data_len, parse_i64, parse_u32, parse_u64, put_i64, put_u64,
};
use super::{Frame, Outcome, Rejection, Request, StoreMode, put_noreply};
use crate::{AfterError, Decoded, Limits};

/// The six storage commands, before the `cas` unique has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// What follows a command line that announced `len` bytes of data.
pub(crate) enum DataBlock {
    /// Not all of it (and its terminator) has arrived.
    Incomplete,
    /// The data is `buf[start..start + len]` and was followed by `\r\n`; the whole request
    /// is `consumed` bytes.
    Ok { consumed: usize },
    /// The data was not followed by `\r\n`; `consumed` runs through the end of that line.
    BadChunk { consumed: usize },
    /// The data was not followed by `\r\n` and no line end is in sight either.
    Unsyncable { consumed: usize },
}

/// Looks at the `len` bytes after a command line of `start` bytes, and at their terminator.
pub(crate) fn data_block(buf: &[u8], start: usize, len: usize, limits: &Limits) -> DataBlock {
    let data_end = start.saturating_add(len);
    let need = data_end.saturating_add(2);
    // A bare `\n` right after the data is decided at once: waiting for a second terminator
    // byte could stall a client that ends its data blocks with `\n` alone.
    if buf.get(data_end) == Some(&b'\n') {
        return DataBlock::BadChunk {
            consumed: data_end + 1,
        };
    }
    let Some(terminator) = buf.get(data_end..need) else {
        return DataBlock::Incomplete;
    };
    if terminator == b"\r\n" {
        return DataBlock::Ok { consumed: need };
    }
    // A bad terminator: drop the rest of that line so that one command gets one reply.
    let window_end = data_end.saturating_add(limits.max_line_len.saturating_add(2));
    let window = buf
        .get(data_end..buf.len().min(window_end))
        .unwrap_or_default();
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) => DataBlock::BadChunk {
            consumed: data_end + nl + 1,
        },
        None if buf.len() >= window_end => DataBlock::Unsyncable {
            consumed: window_end,
        },
        None => DataBlock::Incomplete,
    }
}

/// Turns a [`DataBlock`] into the outcome of a storage request, building the request from
/// the data slice only when the block is good.
pub(crate) fn finish(
    frame: &Frame<'_>,
    len: usize,
    build: impl FnOnce(Bytes) -> Request,
) -> Outcome {
    let start = frame.line_len;
    match data_block(frame.buf, start, len, frame.limits) {
        DataBlock::Incomplete => Decoded::Incomplete,
        DataBlock::Ok { consumed } => Decoded::Done {
            item: Ok(build(match frame.shared {
                Some(shared) => shared.slice(start..start + len),
                None => Bytes::copy_from_slice(&frame.buf[start..start + len]),
            })),
            consumed,
        },
        DataBlock::BadChunk { consumed } => Decoded::Done {
            item: Err(Rejection::client("bad data chunk")),
            consumed,
        },
        DataBlock::Unsyncable { consumed } => Decoded::Done {
            item: Err(Rejection::client("bad data chunk").then(AfterError::Close)),
            consumed,
        },
    }
}

/// Where the data length is on a storage command line (see [`parse`]).
pub(super) const LEN_TOKEN: usize = 4;

/// `<cmd> <key> <flags> <exptime> <bytes> [noreply]` and
/// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`.
pub(super) fn parse(frame: &Frame<'_>, kind: Kind) -> Outcome {
    let toks = &frame.tokens;
    let base = if kind == Kind::Cas { 6 } else { 5 };
    if toks.len() != base && toks.len() != base + 1 {
        // memcached answers `ERROR`. With too many tokens the length is still where it
        // belongs, so the data block that surely follows is swallowed, not run.
        let after = toks
            .get(LEN_TOKEN)
            .filter(|_| toks.len() > base)
            .and_then(parse_data_len)
            .map_or(AfterError::Continue, |len| {
                AfterError::Swallow(len as u64 + 2)
            });
        return frame.line_only(Err(Rejection::unknown().then(after)));
    }
    // As memcached: an extra last token that is not `noreply` is ignored.
    let noreply = toks.len() == base + 1 && toks.last_is_noreply();
    let Some(len) = toks.get(LEN_TOKEN).and_then(parse_data_len) else {
        // Without a length there is nothing we could safely swallow.
        return frame.line_only(Err(Rejection::client(BAD_FORMAT)));
    };
    let swallow = AfterError::Swallow(len as u64 + 2);
    let reject = |r: Rejection| frame.line_only(Err(r.then(swallow)));
    let Some(key) = toks.get(1).filter(|k| key_ok(k, frame.limits.max_key_len)) else {
        return reject(Rejection::client(BAD_FORMAT));
    };
    let (Some(flags), Some(exptime)) = (
        toks.get(2).and_then(parse_u32),
        toks.get(3).and_then(parse_i64),
    ) else {
        return reject(Rejection::client(BAD_FORMAT));
    };
    let mode = match kind {
        Kind::Set => StoreMode::Set,
        Kind::Add => StoreMode::Add,
        Kind::Replace => StoreMode::Replace,
        Kind::Append => StoreMode::Append,
        Kind::Prepend => StoreMode::Prepend,
        Kind::Cas => match toks.get(5).and_then(parse_u64) {
            Some(unique) => StoreMode::Cas(unique),
            None => return reject(Rejection::client(BAD_FORMAT)),
        },
    };
    if len > frame.limits.max_value_len {
        let rejection = Rejection::too_large();
        return reject(if mode == StoreMode::Set {
            rejection.invalidating(Bytes::copy_from_slice(key))
        } else {
            rejection
        });
    }
    finish(frame, len, |value| Request::Store {
        mode,
        key: Bytes::copy_from_slice(key),
        flags,
        exptime,
        value,
        noreply,
    })
}

pub(super) fn encode(
    mode: StoreMode,
    key: &[u8],
    flags: u32,
    exptime: i64,
    value: &[u8],
    noreply: bool,
    out: &mut BytesMut,
) {
    out.reserve(key.len() + value.len() + 64);
    out.extend_from_slice(mode.command().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" ");
    put_u64(out, u64::from(flags));
    out.extend_from_slice(b" ");
    put_i64(out, exptime);
    out.extend_from_slice(b" ");
    put_u64(out, value.len() as u64);
    if let StoreMode::Cas(unique) = mode {
        out.extend_from_slice(b" ");
        put_u64(out, unique);
    }
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{decode, encoded, ok, rejected};
    use super::*;

    fn store(mode: StoreMode, key: &str, flags: u32, exptime: i64, value: &str) -> Request {
        Request::Store {
            mode,
            key: Bytes::copy_from_slice(key.as_bytes()),
            flags,
            exptime,
            value: Bytes::copy_from_slice(value.as_bytes()),
            noreply: false,
        }
    }

    #[test]
    fn every_storage_command() {
        assert_eq!(
            ok(b"set foo 5 0 3\r\nbar\r\n"),
            store(StoreMode::Set, "foo", 5, 0, "bar")
        );
        assert_eq!(
            ok(b"add foo 0 -1 0\r\n\r\n"),
            store(StoreMode::Add, "foo", 0, -1, "")
        );
        assert_eq!(
            ok(b"replace foo 4294967295 100 2\r\nab\r\n"),
            store(StoreMode::Replace, "foo", u32::MAX, 100, "ab")
        );
        assert_eq!(
            ok(b"append foo 0 0 1\nx\r\n"),
            store(StoreMode::Append, "foo", 0, 0, "x")
        );
        assert_eq!(
            ok(b"prepend foo 0 0 1\r\nx\r\n"),
            store(StoreMode::Prepend, "foo", 0, 0, "x")
        );
        assert_eq!(
            ok(b"cas foo 1 2 3 99\r\nabc\r\n"),
            store(StoreMode::Cas(99), "foo", 1, 2, "abc")
        );
    }

    #[test]
    fn data_may_contain_crlf() {
        assert_eq!(
            ok(b"set k 0 0 4\r\n\r\n\r\n\r\n"),
            store(StoreMode::Set, "k", 0, 0, "\r\n\r\n")
        );
    }

    #[test]
    fn noreply_on_every_storage_command() {
        for cmd in [
            &b"set k 0 0 1 noreply\r\nx\r\n"[..],
            b"add k 0 0 1 noreply\r\nx\r\n",
            b"replace k 0 0 1 noreply\r\nx\r\n",
            b"append k 0 0 1 noreply\r\nx\r\n",
            b"prepend k 0 0 1 noreply\r\nx\r\n",
            b"cas k 0 0 1 7 noreply\r\nx\r\n",
        ] {
            let Request::Store { noreply, .. } = ok(cmd) else {
                panic!("not a store")
            };
            assert!(noreply, "{:?}", String::from_utf8_lossy(cmd));
        }
        // memcached ignores an extra token that is not `noreply`.
        let Request::Store { noreply, .. } = ok(b"set k 0 0 1 junk\r\nx\r\n") else {
            panic!("not a store")
        };
        assert!(!noreply);
    }

    #[test]
    fn waits_for_the_whole_data_block() {
        assert_eq!(decode(b"set k 0 0 5\r\n"), Decoded::Incomplete);
        assert_eq!(decode(b"set k 0 0 5\r\nhel"), Decoded::Incomplete);
        assert_eq!(decode(b"set k 0 0 5\r\nhello"), Decoded::Incomplete);
        assert_eq!(decode(b"set k 0 0 5\r\nhello\r"), Decoded::Incomplete);
    }

    #[test]
    fn wrong_token_count_is_error() {
        assert_eq!(
            rejected(b"set k 0 0\r\n"),
            ("ERROR".into(), AfterError::Continue)
        );
        assert_eq!(
            rejected(b"set k 0 0 1 noreply x\r\n"),
            ("ERROR".into(), AfterError::Swallow(3))
        );
        assert_eq!(
            rejected(b"cas k 0 0 1 2 noreply x\r\n"),
            ("ERROR".into(), AfterError::Swallow(3))
        );
        assert_eq!(
            rejected(b"set k 0 0 x noreply x\r\n"),
            ("ERROR".into(), AfterError::Continue)
        );
        assert_eq!(rejected(b"cas k 0 0 1\r\n").0, "ERROR");
    }

    #[test]
    fn bad_line_with_good_length_swallows_the_data() {
        let long_key = format!("set {} 0 0 5\r\n", "k".repeat(251));
        for line in [
            long_key.as_bytes(),
            b"set k\x01 0 0 5\r\n",
            b"set k abc 0 5\r\n",
            b"set k -1 0 5\r\n",
            b"set k 4294967296 0 5\r\n",
            b"set k 0 1.5 5\r\n",
            b"cas k 0 0 5 abc\r\n",
            b"cas k 0 0 5 -1 noreply\r\n",
        ] {
            assert_eq!(
                rejected(line),
                (
                    "CLIENT_ERROR bad command line format".to_owned(),
                    AfterError::Swallow(7)
                ),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn bad_length_cannot_swallow() {
        for line in [
            &b"set k 0 0 -1\r\n"[..],
            b"set k 0 0 abc\r\n",
            b"set k 0 0 4294967295\r\n",
            b"set k 0 0 2147483647\r\n",
            b"set k 0 0 2147483648\r\n",
        ] {
            assert_eq!(
                rejected(line),
                (
                    "CLIENT_ERROR bad command line format".to_owned(),
                    AfterError::Continue
                )
            );
        }
    }

    #[test]
    fn too_large_value_swallows() {
        let limits = Limits {
            max_value_len: 10,
            ..Limits::default()
        };
        let out = super::super::decode_request(b"set k 0 0 11\r\n", &limits);
        assert_eq!(
            out,
            Decoded::Done {
                item: Err(Rejection::server("object too large for cache")
                    .then(AfterError::Swallow(13))
                    .invalidating(Bytes::from_static(b"k"))),
                consumed: 14,
            }
        );
        // Exactly at the limit is accepted; the default limit is memcached's 1 MiB.
        let ok10 = super::super::decode_request(b"set k 0 0 10\r\n0123456789\r\n", &limits);
        assert!(matches!(ok10, Decoded::Done { item: Ok(_), .. }));
        assert_eq!(
            rejected(b"set k 0 0 1048577\r\n"),
            (
                "SERVER_ERROR object too large for cache".to_owned(),
                AfterError::Swallow(1_048_579)
            )
        );
    }

    #[test]
    fn bad_data_chunk_drops_the_rest_of_the_line() {
        // Declared 3, sent 5: one error, and the next command survives.
        let buf = b"set k 0 0 3\r\nhello\r\nget k\r\n";
        assert_eq!(
            decode(buf),
            Decoded::Done {
                item: Err(Rejection::client("bad data chunk")),
                consumed: 20,
            }
        );
        assert!(matches!(ok(&buf[20..]), Request::Get { .. }));
        // A bare `\n` after the data is a bad chunk too (memcached needs `\r\n` there).
        assert_eq!(
            rejected(b"set k 0 0 3\r\nabc\n"),
            (
                "CLIENT_ERROR bad data chunk".to_owned(),
                AfterError::Continue
            )
        );
        // Until the end of the bad line arrives, wait for it.
        assert_eq!(decode(b"set k 0 0 3\r\nabcde"), Decoded::Incomplete);
    }

    #[test]
    fn bad_data_chunk_without_line_end_closes() {
        let limits = Limits {
            max_line_len: 12,
            ..Limits::default()
        };
        let mut buf = b"set k 0 0 1\r\nx".to_vec();
        buf.extend_from_slice(&[b'y'; 30]);
        match super::super::decode_request(&buf, &limits) {
            Decoded::Done {
                item: Err(rej),
                consumed,
            } => {
                assert_eq!(rej.reply.to_string(), "CLIENT_ERROR bad data chunk");
                assert_eq!(rej.after, AfterError::Close);
                assert!(consumed <= buf.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encoded(&store(StoreMode::Cas(42), "k", 3, -1, "v")),
            b"cas k 3 -1 1 42\r\nv\r\n"
        );
        let mut req = store(StoreMode::Set, "k", 0, 0, "");
        if let Request::Store { noreply, .. } = &mut req {
            *noreply = true;
        }
        assert_eq!(encoded(&req), b"set k 0 0 0 noreply\r\n\r\n");
    }

    #[test]
    fn an_oversized_set_names_the_key_to_invalidate() {
        let limits = Limits {
            max_value_len: 4,
            ..Limits::default()
        };
        let decode = |line: &[u8]| match crate::ascii::decode_request(line, &limits) {
            Decoded::Done {
                item: Err(rejection),
                ..
            } => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        };
        assert_eq!(
            decode(b"set k 0 0 5\r\n").invalidates,
            Some(Bytes::from_static(b"k"))
        );
        assert_eq!(decode(b"add k 0 0 5\r\n").invalidates, None);
        assert_eq!(
            decode(b"ms k 5 T0\r\n").invalidates,
            Some(Bytes::from_static(b"k"))
        );
        assert_eq!(decode(b"ms k 5 MA\r\n").invalidates, None);
    }
}
