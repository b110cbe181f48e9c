//! Composing replies (server side) and decoding them (client side: `murakumo bench` and the
//! tests).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use super::meta::MetaStatus;
use super::meta::reply;
use super::tokens::{LineScan, parse_u32, parse_u64, put_u64, scan_line, split};
use super::{ErrorReply, Response};
use crate::Decoded;

/// The longest reply line [`decode_response`] waits for. Reply lines are short (a key of
/// at most 250 bytes and a few numbers), so a longer one means the peer is not memcached.
pub const MAX_RESPONSE_LINE: usize = 64 * 1024;

/// Why a reply could not be decoded. The stream is then out of step; a client should drop
/// the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// No line end within [`MAX_RESPONSE_LINE`] bytes.
    #[error("reply line longer than {limit} bytes")]
    LineTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The line does not start with a reply word we know.
    #[error("unrecognised reply line {line:?}")]
    Unrecognised {
        /// The start of the line, for the log.
        line: String,
    },
    /// A known reply word with arguments that do not parse.
    #[error("malformed {what} reply line")]
    Malformed {
        /// Which reply it was.
        what: &'static str,
    },
    /// A value's data block was not followed by `\r\n`.
    #[error("data block not terminated by \\r\\n")]
    BadDataChunk,
}

/// Appends one hit of a retrieval, `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`:
/// the same bytes as [`Response::Value`], for a server that has the key and value as
/// borrowed slices and should not have to build (and drop) a [`Response`] for every hit.
pub fn encode_value(key: &[u8], flags: u32, cas: Option<u64>, data: &[u8], out: &mut BytesMut) {
    out.reserve(key.len() + data.len() + 64);
    encode_value_head(key, flags, cas, data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the line of [`encode_value`] without its data block, for a server that sends
/// a large value from where it is stored: the caller sends `data_len` bytes and `\r\n`.
pub fn encode_value_head(
    key: &[u8],
    flags: u32,
    cas: Option<u64>,
    data_len: usize,
    out: &mut BytesMut,
) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" ");
    put_u64(out, u64::from(flags));
    out.extend_from_slice(b" ");
    put_u64(out, data_len as u64);
    if let Some(cas) = cas {
        out.extend_from_slice(b" ");
        put_u64(out, cas);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the wire form of one reply line (and its data block) to `out`.
///
/// For [`Response::Meta`], `data` is written only with [`MetaStatus::Va`] (an absent value
/// is written as an empty one) and ignored with every other status.
pub fn encode_response(resp: &Response, out: &mut BytesMut) {
    let word: &[u8] = match resp {
        Response::Stored => b"STORED\r\n",
        Response::NotStored => b"NOT_STORED\r\n",
        Response::Exists => b"EXISTS\r\n",
        Response::NotFound => b"NOT_FOUND\r\n",
        Response::Deleted => b"DELETED\r\n",
        Response::Touched => b"TOUCHED\r\n",
        Response::Ok => b"OK\r\n",
        Response::End => b"END\r\n",
        Response::Value {
            key,
            flags,
            cas,
            data,
        } => {
            encode_value(key, *flags, *cas, data, out);
            return;
        }
        Response::Number(n) => {
            put_u64(out, *n);
            b"\r\n"
        }
        Response::Version(v) => {
            out.extend_from_slice(b"VERSION ");
            out.extend_from_slice(v.as_bytes());
            b"\r\n"
        }
        Response::Stat { name, value } => {
            out.extend_from_slice(b"STAT ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b" ");
            out.extend_from_slice(value.as_bytes());
            b"\r\n"
        }
        Response::Error(e) => {
            let (word, msg): (&[u8], &str) = match e {
                ErrorReply::Error => (b"ERROR", ""),
                ErrorReply::Client(m) => (b"CLIENT_ERROR ", m),
                ErrorReply::Server(m) => (b"SERVER_ERROR ", m),
            };
            out.extend_from_slice(word);
            out.extend_from_slice(msg.as_bytes());
            b"\r\n"
        }
        Response::Meta(m) => {
            reply::encode(m, out);
            b""
        }
        Response::MetaDebug(d) => {
            reply::encode_debug(d, out);
            b""
        }
    };
    out.extend_from_slice(word);
}

/// Reads the `len`-byte data block that starts at `start`, and its `\r\n`.
pub(crate) fn data_block(
    buf: &[u8],
    start: usize,
    len: usize,
) -> Decoded<Result<Bytes, ResponseError>> {
    let Some(end) = start
        .checked_add(len)
        .filter(|e| e.checked_add(2).is_some())
    else {
        return Decoded::Done {
            item: Err(ResponseError::Malformed {
                what: "value length",
            }),
            consumed: start,
        };
    };
    match (buf.get(start..end), buf.get(end..end + 2)) {
        (Some(data), Some(b"\r\n")) => Decoded::Done {
            item: Ok(Bytes::copy_from_slice(data)),
            consumed: end + 2,
        },
        (Some(_), Some(_)) => Decoded::Done {
            item: Err(ResponseError::BadDataChunk),
            consumed: end + 2,
        },
        _ => Decoded::Incomplete,
    }
}

/// What follows the first token of a line: everything after it and one space.
fn rest_after_first(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    line.get(end + 1..).unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Looks for one whole reply at the front of `buf`: a line, plus the data block for `VALUE`
/// and `VA`. Like [`decode_request`](super::decode_request), it consumes nothing when it
/// answers `Incomplete`.
pub fn decode_response(buf: &[u8]) -> Decoded<Result<Response, ResponseError>> {
    let (line, line_len) = match scan_line(buf, MAX_RESPONSE_LINE) {
        LineScan::Incomplete => return Decoded::Incomplete,
        LineScan::TooLong { consumed } => {
            return Decoded::Done {
                item: Err(ResponseError::LineTooLong {
                    limit: MAX_RESPONSE_LINE,
                }),
                consumed,
            };
        }
        LineScan::Line { content, consumed } => (content, consumed),
    };
    let done = |item| Decoded::Done {
        item,
        consumed: line_len,
    };
    let mut tokens = split(line);
    let first = tokens.next().unwrap_or_default();
    let single = tokens.next().is_none();
    let rest = rest_after_first(line);
    let simple = |r: Response| {
        if single {
            done(Ok(r))
        } else {
            done(Err(ResponseError::Malformed { what: "status" }))
        }
    };
    match first {
        b"VALUE" => decode_value(rest, buf, line_len),
        b"STORED" => simple(Response::Stored),
        b"NOT_STORED" => simple(Response::NotStored),
        b"EXISTS" => simple(Response::Exists),
        b"NOT_FOUND" => simple(Response::NotFound),
        b"DELETED" => simple(Response::Deleted),
        b"TOUCHED" => simple(Response::Touched),
        b"OK" => simple(Response::Ok),
        b"END" => simple(Response::End),
        b"VERSION" => done(Ok(Response::Version(text(rest)))),
        b"STAT" => {
            let mut parts = split(rest);
            match parts.next() {
                Some(name) => done(Ok(Response::Stat {
                    name: text(name),
                    value: text(rest_after_first(rest)),
                })),
                None => done(Err(ResponseError::Malformed { what: "STAT" })),
            }
        }
        b"ERROR" => done(Ok(Response::Error(ErrorReply::Error))),
        b"CLIENT_ERROR" => done(Ok(Response::Error(ErrorReply::Client(Cow::Owned(text(
            rest,
        )))))),
        b"SERVER_ERROR" => done(Ok(Response::Error(ErrorReply::Server(Cow::Owned(text(
            rest,
        )))))),
        b"ME" => done(reply::decode_debug(rest)),
        word => {
            if let Some(status) = MetaStatus::from_word(word) {
                return reply::decode(status, rest, buf, line_len);
            }
            match parse_u64(word) {
                Some(n) if single && word.first().is_some_and(u8::is_ascii_digit) => {
                    done(Ok(Response::Number(n)))
                }
                _ => {
                    let shown = &line[..line.len().min(64)];
                    done(Err(ResponseError::Unrecognised { line: text(shown) }))
                }
            }
        }
    }
}

/// The `<key> <flags> <bytes> [<cas>]` after `VALUE`.
fn value_header(rest: &[u8]) -> Option<(&[u8], u32, usize, Option<u64>)> {
    let mut t = split(rest);
    let key = t.next()?;
    let flags = parse_u32(t.next()?)?;
    let len = usize::try_from(parse_u64(t.next()?)?).ok()?;
    let cas = match t.next() {
        Some(c) => Some(parse_u64(c)?),
        None => None,
    };
    t.next().is_none().then_some((key, flags, len, cas))
}

fn decode_value(
    rest: &[u8],
    buf: &[u8],
    line_len: usize,
) -> Decoded<Result<Response, ResponseError>> {
    const BAD: ResponseError = ResponseError::Malformed { what: "VALUE" };
    let header = value_header(rest);
    let Some((key, flags, len, cas)) = header else {
        return Decoded::Done {
            item: Err(BAD),
            consumed: line_len,
        };
    };
    match data_block(buf, line_len, len) {
        Decoded::Incomplete => Decoded::Incomplete,
        Decoded::Done { item, consumed } => Decoded::Done {
            item: item.map(|data| Response::Value {
                key: Bytes::copy_from_slice(key),
                flags,
                cas,
                data,
            }),
            consumed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::meta::{MetaDebugResponse, MetaResponse, ReturnFlag};
    use super::*;

    #[test]
    fn value_and_meta_heads_frame_the_data_their_callers_send() {
        let large = vec![7u8; 70_000];
        for data in [&b""[..], b"v", &large] {
            for cas in [None, Some(9)] {
                let mut whole = BytesMut::new();
                encode_value(b"key", 5, cas, data, &mut whole);
                let mut parts = BytesMut::new();
                encode_value_head(b"key", 5, cas, data.len(), &mut parts);
                parts.extend_from_slice(data);
                parts.extend_from_slice(b"\r\n");
                assert_eq!(parts, whole);
            }
            let flags = [ReturnFlag::ClientFlags(3), ReturnFlag::Cas(4)];
            for status in [MetaStatus::Va, MetaStatus::Hd, MetaStatus::En] {
                let mut whole = BytesMut::new();
                crate::ascii::encode_meta_reply(status, &flags, Some(data), &mut whole);
                let mut parts = BytesMut::new();
                crate::ascii::encode_meta_reply_head(status, &flags, data.len(), &mut parts);
                if status == MetaStatus::Va {
                    parts.extend_from_slice(data);
                    parts.extend_from_slice(b"\r\n");
                }
                assert_eq!(parts, whole, "{status:?}");
            }
        }
    }

    fn enc(r: &Response) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_response(r, &mut out);
        out.to_vec()
    }

    fn dec(buf: &[u8]) -> Result<Response, ResponseError> {
        match decode_response(buf) {
            Decoded::Done { item, consumed } => {
                assert_eq!(consumed, buf.len());
                item
            }
            Decoded::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn classic_words() {
        let cases: [(Response, &[u8]); 8] = [
            (Response::Stored, b"STORED\r\n"),
            (Response::NotStored, b"NOT_STORED\r\n"),
            (Response::Exists, b"EXISTS\r\n"),
            (Response::NotFound, b"NOT_FOUND\r\n"),
            (Response::Deleted, b"DELETED\r\n"),
            (Response::Touched, b"TOUCHED\r\n"),
            (Response::Ok, b"OK\r\n"),
            (Response::End, b"END\r\n"),
        ];
        for (resp, wire) in cases {
            assert_eq!(enc(&resp), wire);
            assert_eq!(dec(wire), Ok(resp));
        }
    }

    #[test]
    fn value_lines() {
        let v = Response::Value {
            key: Bytes::from_static(b"foo"),
            flags: 5,
            cas: Some(77),
            data: Bytes::from_static(b"a\r\nb"),
        };
        assert_eq!(enc(&v), b"VALUE foo 5 4 77\r\na\r\nb\r\n");
        assert_eq!(dec(b"VALUE foo 5 4 77\r\na\r\nb\r\n"), Ok(v));
        assert_eq!(
            decode_response(b"VALUE foo 5 4\r\na\r\n"),
            Decoded::Incomplete
        );
        assert_eq!(
            dec(b"VALUE foo 5 1\r\nabc"),
            Err(ResponseError::BadDataChunk)
        );
        assert_eq!(
            dec(b"VALUE foo x 1\r\n"),
            Err(ResponseError::Malformed { what: "VALUE" })
        );
    }

    #[test]
    fn numbers_versions_stats_errors() {
        assert_eq!(enc(&Response::Number(42)), b"42\r\n");
        assert_eq!(dec(b"42\r\n"), Ok(Response::Number(42)));
        // memcached may pad a shrunk number with spaces.
        assert_eq!(dec(b"9  \r\n"), Ok(Response::Number(9)));
        assert_eq!(
            dec(b"VERSION 1.6.21\r\n"),
            Ok(Response::Version("1.6.21".into()))
        );
        let stat = Response::Stat {
            name: "pid".into(),
            value: "123".into(),
        };
        assert_eq!(enc(&stat), b"STAT pid 123\r\n");
        assert_eq!(dec(b"STAT pid 123\r\n"), Ok(stat));
        assert_eq!(dec(b"ERROR\r\n"), Ok(Response::Error(ErrorReply::Error)));
        let client = Response::Error(ErrorReply::Client("bad data chunk".into()));
        assert_eq!(enc(&client), b"CLIENT_ERROR bad data chunk\r\n");
        assert_eq!(dec(b"CLIENT_ERROR bad data chunk\r\n"), Ok(client));
        assert_eq!(
            dec(b"SERVER_ERROR out of memory\r\n"),
            Ok(Response::Error(ErrorReply::Server("out of memory".into())))
        );
    }

    #[test]
    fn meta_lines() {
        let va = Response::Meta(MetaResponse {
            status: MetaStatus::Va,
            flags: vec![
                ReturnFlag::Ttl(-1),
                ReturnFlag::Key {
                    key: Bytes::from_static(b"\x00k"),
                    base64: true,
                },
                ReturnFlag::Opaque(Bytes::from_static(b"7")),
                ReturnFlag::Hit(true),
                ReturnFlag::Won,
            ],
            data: Some(Bytes::from_static(b"hi")),
        });
        assert_eq!(enc(&va), b"VA 2 t-1 kAGs= b O7 h1 W\r\nhi\r\n");
        assert_eq!(dec(b"VA 2 t-1 kAGs= b O7 h1 W\r\nhi\r\n"), Ok(va));
        let hd = Response::Meta(MetaResponse::new(MetaStatus::Hd));
        assert_eq!(enc(&hd), b"HD\r\n");
        assert_eq!(dec(b"HD\r\n"), Ok(hd));
        assert_eq!(
            dec(b"EN\r\n"),
            Ok(Response::Meta(MetaResponse::new(MetaStatus::En)))
        );
        assert_eq!(
            dec(b"MN\r\n"),
            Ok(Response::Meta(MetaResponse::new(MetaStatus::Mn)))
        );
        assert_eq!(
            dec(b"HD b\r\n"),
            Err(ResponseError::Malformed { what: "meta" })
        );
        assert_eq!(decode_response(b"VA 3\r\nab"), Decoded::Incomplete);
    }

    #[test]
    fn meta_debug_line() {
        let me = Response::MetaDebug(MetaDebugResponse {
            key: Bytes::from_static(b"foo"),
            fields: vec![("exp".into(), "-1".into()), ("fetch".into(), "no".into())],
        });
        assert_eq!(enc(&me), b"ME foo exp=-1 fetch=no\r\n");
        assert_eq!(dec(b"ME foo exp=-1 fetch=no\r\n"), Ok(me));
    }

    #[test]
    fn unknown_and_overlong_replies() {
        assert!(matches!(
            dec(b"WAT\r\n"),
            Err(ResponseError::Unrecognised { .. })
        ));
        assert!(matches!(
            dec(b"\r\n"),
            Err(ResponseError::Unrecognised { .. })
        ));
        let endless = vec![b'x'; MAX_RESPONSE_LINE + 10];
        assert!(matches!(
            decode_response(&endless),
            Decoded::Done {
                item: Err(ResponseError::LineTooLong { .. }),
                ..
            }
        ));
    }
}
