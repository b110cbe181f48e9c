//! The ascii framing: memcached's classic text commands and its meta commands.
//!
//! Both are line based and share one tokeniser, so they live together and may be mixed on one
//! connection. A request is a command line, plus a data block for the storage commands
//! (`set`, …, `ms`). Parsing and composing are split by command family, one file each; this
//! file holds the types the rest of the system matches on and the dispatch.
//!
//! # Where we differ from memcached, on purpose
//!
//! - A storage command whose line is rejected after its length was read (bad key, bad
//!   flags, bad expiry, a value that is too large) is answered with
//!   [`AfterError::Swallow`]`(len + 2)`, so its data block is never run as commands. memcached
//!   only does this for a value that is too large. A storage line with too many tokens still
//!   gets memcached's `ERROR`, and is swallowed the same way when its length token parses.
//! - A data block not followed by `\r\n` gets `CLIENT_ERROR bad data chunk`; we then drop the
//!   rest of that line too (up to and including the next `\n`), so the client receives one
//!   reply for one command and the next command starts on a fresh line. If no `\n` shows up
//!   within `max_line_len` bytes the stream cannot be resynchronised and the rejection
//!   says [`AfterError::Close`].
//! - A line longer than `max_line_len` (memcached grows its buffer for long `get` lines) is
//!   answered `CLIENT_ERROR line too long` and the connection is closed, so a peer that never
//!   sends `\n` holds a bounded amount of memory.
//! - Errors are always answered, even after `noreply`: protocol.txt allows it, and a client
//!   that sent a malformed line is better served by the error than by silence.
//! - Keys containing ASCII control characters are refused with memcached's
//!   `CLIENT_ERROR bad command line format`; memcached would store them but could not echo
//!   them back in a `VALUE` line without corrupting the stream.
//! - `shutdown` and memcached's operator commands (`slabs`, `lru_crawler`, `watch`, …) are
//!   unknown commands here and get `ERROR`.

mod admin;
mod arith;
mod base64;
mod crawler;
mod delete;
pub mod meta;
mod response;
mod retrieval;
mod storage;
mod tokens;
mod touch;

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::{AfterError, Decoded, Limits};
pub use admin::WatchKinds;
pub use crawler::{
    BAD_CLASS, CrawlTarget, CrawlerRequest, MAX_CLASS_ID, MAX_CRAWLER_SLEEP_MICROS, MetadumpEntry,
    decode_metadump_entry, encode_metadump_entry, uri_encode,
};
pub use meta::{
    MetaArith, MetaArithFlag, MetaArithMode, MetaDebugResponse, MetaDelete, MetaDeleteFlag,
    MetaGet, MetaGetFlag, MetaResponse, MetaSet, MetaSetFlag, MetaSetMode, MetaStatus, ReturnFlag,
    encode_reply as encode_meta_reply, encode_reply_head as encode_meta_reply_head,
};
pub use response::{
    MAX_RESPONSE_LINE, ResponseError, decode_response, encode_response, encode_value,
    encode_value_head,
};
pub use retrieval::Keys;
use tokens::{LineScan, Tokens};

/// One client request, decoded and owning its bytes.
///
/// The gateway matches on this to decide what to do, and `murakumo bench` builds these to
/// send, so every command memcached serves over text has one variant with typed fields.
/// Keys and values are `Bytes` copied out of the read buffer, so a request outlives the
/// buffer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get <key>*` (`cas: false`) and `gets <key>*` (`cas: true`).
    Get {
        /// The keys in request order; never empty.
        keys: Keys,
        /// Whether each `VALUE` line carries the CAS unique (`gets`).
        cas: bool,
    },
    /// `gat <exptime> <key>*` and `gats <exptime> <key>*`: fetch and set a new expiry.
    GetAndTouch {
        /// The new expiry, in memcached's relative-or-absolute form.
        exptime: i64,
        /// The keys in request order; never empty.
        keys: Keys,
        /// Whether each `VALUE` line carries the CAS unique (`gats`).
        cas: bool,
    },
    /// `set`, `add`, `replace`, `append`, `prepend` and `cas`, with their data block.
    Store {
        /// Which of the six storage commands.
        mode: StoreMode,
        /// The key.
        key: Bytes,
        /// Opaque client flags.
        flags: u32,
        /// Expiry, in memcached's relative-or-absolute form.
        exptime: i64,
        /// The data block, without its trailing `\r\n`.
        value: Bytes,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `incr <key> <delta>` (`incr: true`) and `decr <key> <delta>`.
    Arith {
        /// The key.
        key: Bytes,
        /// The amount to add or subtract.
        delta: u64,
        /// `incr` rather than `decr`.
        incr: bool,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `touch <key> <exptime>`.
    Touch {
        /// The key.
        key: Bytes,
        /// The new expiry.
        exptime: i64,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `delete <key>` (the legacy `delete <key> 0` is accepted and means the same).
    Delete {
        /// The key.
        key: Bytes,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `flush_all [delay]`.
    FlushAll {
        /// Seconds until the flush takes effect; 0 (or negative) means now.
        delay: i64,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `version`.
    Version,
    /// `verbosity <level>`.
    Verbosity {
        /// The requested level (memcached clamps it to its maximum).
        level: u32,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `cache_memlimit <megabytes> [noreply]`: change the memory limit.
    CacheMemlimit {
        /// The new limit in MiB.
        megabytes: u64,
        /// `noreply` was given.
        noreply: bool,
    },
    /// `stats [args]`.
    Stats {
        /// The arguments after `stats`, joined by single spaces (`settings`, `items`,
        /// `cluster`, `detail dump`, …); `None` for the general statistics.
        group: Option<Bytes>,
    },
    /// `lru_crawler crawl|metadump <classes>`.
    LruCrawler(CrawlerRequest),
    /// `shutdown [mode]`.
    Shutdown {
        /// The arguments after `shutdown` (`graceful`), joined by single spaces.
        mode: Option<Bytes>,
    },
    /// `watch [kinds]`: turn the connection into a stream of log lines.
    Watch(WatchKinds),
    /// `quit`: close the connection without a reply.
    Quit,
    /// `mg`.
    MetaGet(MetaGet),
    /// `ms`, with its data block.
    MetaSet(MetaSet),
    /// `md`.
    MetaDelete(MetaDelete),
    /// `ma`.
    MetaArith(MetaArith),
    /// `mn`: answered `MN`, used by clients to mark the end of a pipeline of quiet commands.
    MetaNoop,
    /// `me <key> [b]`: item metadata for debugging.
    MetaDebug {
        /// The key, base64-decoded if `base64`.
        key: Bytes,
        /// The key was sent in base64 (the `b` flag), so the reply must print it that way.
        base64: bool,
    },
}

/// Which storage command a [`Request::Store`] is; `cas` carries the unique it compares to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `set`: store unconditionally.
    Set,
    /// `add`: store only if the key is absent.
    Add,
    /// `replace`: store only if the key is present.
    Replace,
    /// `append`: add the data after the existing value.
    Append,
    /// `prepend`: add the data before the existing value.
    Prepend,
    /// `cas`: store only if the item's CAS unique still equals this one.
    Cas(u64),
}

impl StoreMode {
    /// The command word on the wire.
    pub fn command(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Add => "add",
            Self::Replace => "replace",
            Self::Append => "append",
            Self::Prepend => "prepend",
            Self::Cas(_) => "cas",
        }
    }
}

/// One server reply line (plus its data block, for `VALUE` and `VA`).
///
/// A multi-key retrieval is answered by several [`Response::Value`]s followed by
/// [`Response::End`]; `stats` by several [`Response::Stat`]s and an `End`. Keeping each
/// line separate lets the gateway stream replies without building the whole answer first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `STORED`.
    Stored,
    /// `NOT_STORED`.
    NotStored,
    /// `EXISTS`.
    Exists,
    /// `NOT_FOUND`.
    NotFound,
    /// `DELETED`.
    Deleted,
    /// `TOUCHED`.
    Touched,
    /// `OK`.
    Ok,
    /// `END`.
    End,
    /// `VALUE <key> <flags> <bytes> [<cas>]` and its data block.
    Value {
        /// The key.
        key: Bytes,
        /// The client flags.
        flags: u32,
        /// The CAS unique, for `gets`/`gats`.
        cas: Option<u64>,
        /// The data.
        data: Bytes,
    },
    /// The new value after `incr`/`decr`.
    Number(u64),
    /// `VERSION <version>`.
    Version(String),
    /// `STAT <name> <value>`.
    Stat {
        /// The statistic's name.
        name: String,
        /// Its value, as text.
        value: String,
    },
    /// `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`.
    Error(ErrorReply),
    /// A meta status line (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`, `MN`).
    Meta(MetaResponse),
    /// The `ME <key> <k>=<v>…` line answering `me` on a hit (a miss is `EN`).
    MetaDebug(MetaDebugResponse),
}

/// The three error replies of the memcached text protocol.
///
/// Messages are `Cow<'static, str>` because almost all of them are fixed strings from the
/// protocol, and the decoder of a client must still be able to carry an arbitrary one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorReply {
    /// `ERROR`: the command name is unknown (or the line has the wrong number of tokens).
    Error,
    /// `CLIENT_ERROR <msg>`: the input does not conform to the protocol.
    Client(Cow<'static, str>),
    /// `SERVER_ERROR <msg>`: the server cannot carry out a well-formed command.
    Server(Cow<'static, str>),
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error => f.write_str("ERROR"),
            Self::Client(m) => write!(f, "CLIENT_ERROR {m}"),
            Self::Server(m) => write!(f, "SERVER_ERROR {m}"),
        }
    }
}

/// A request the decoder refused: the reply to send and how to keep the stream in step.
///
/// A rejection is not a failure of the connection. It is a frame like any other, answered
/// with `reply`, after which the connection does what `after` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The error line to send.
    pub reply: ErrorReply,
    /// What to do with the bytes that follow.
    pub after: AfterError,
    /// The rejected line asked for `noreply`. memcached's noreply silences error replies
    /// too, so the connection sends nothing (but still applies `after`).
    pub noreply: bool,
    /// A key whose current value must be removed: a `set` of a value too large to store.
    /// memcached unlinks the old item then, so a stale value never outlives a set the
    /// client believes it attempted.
    pub invalidates: Option<Bytes>,
}

/// memcached's reply text for a value over the size limit.
pub const VALUE_TOO_LARGE: &str = "object too large for cache";

impl Rejection {
    /// Names the key whose current value the connection must remove.
    #[must_use]
    pub(crate) fn invalidating(mut self, key: Bytes) -> Self {
        self.invalidates = Some(key);
        self
    }

    /// Marks the rejection as silenced by the request's `noreply`.
    #[must_use]
    pub(crate) fn silenced_if(mut self, noreply: bool) -> Self {
        self.noreply = noreply;
        self
    }

    /// `ERROR`, and carry on.
    pub(crate) fn unknown() -> Self {
        Self {
            reply: ErrorReply::Error,
            after: AfterError::Continue,
            noreply: false,
            invalidates: None,
        }
    }

    /// `CLIENT_ERROR <msg>`, and carry on.
    pub(crate) fn client(msg: &'static str) -> Self {
        Self {
            reply: ErrorReply::Client(Cow::Borrowed(msg)),
            after: AfterError::Continue,
            noreply: false,
            invalidates: None,
        }
    }

    /// `SERVER_ERROR <msg>`, and carry on.
    pub(crate) fn server(msg: &'static str) -> Self {
        Self {
            reply: ErrorReply::Server(Cow::Borrowed(msg)),
            after: AfterError::Continue,
            noreply: false,
            invalidates: None,
        }
    }

    /// `SERVER_ERROR object too large for cache`: a value over the size limit.
    pub(crate) fn too_large() -> Self {
        Self::server(VALUE_TOO_LARGE)
    }

    /// Whether this refuses a value for its size (memcached's `store_too_large`).
    pub fn is_too_large(&self) -> bool {
        matches!(&self.reply, ErrorReply::Server(message) if message == VALUE_TOO_LARGE)
    }

    /// The same reply, followed by `after`.
    pub(crate) fn then(self, after: AfterError) -> Self {
        Self { after, ..self }
    }
}

/// What every per-command parser returns: a decoded frame or a rejection, or a request for
/// more bytes.
pub(crate) type Outcome = Decoded<Result<Request, Rejection>>;

/// The whole command line a parser works from: its tokens, the bytes it used, and what
/// follows it in the buffer (the data block, for storage commands).
pub(crate) struct Frame<'a> {
    pub(crate) tokens: Tokens<'a>,
    pub(crate) line_len: usize,
    pub(crate) buf: &'a [u8],
    /// `buf` as shared bytes, when the caller has them: a data block is then handed out
    /// as a slice of it instead of a copy (see [`decode_request_shared`]).
    pub(crate) shared: Option<&'a Bytes>,
    pub(crate) limits: &'a Limits,
}

impl Frame<'_> {
    /// A frame that is just the command line.
    pub(crate) fn line_only(&self, item: Result<Request, Rejection>) -> Outcome {
        Decoded::Done {
            item,
            consumed: self.line_len,
        }
    }
}

/// Looks for one whole request at the front of `buf`.
///
/// Returns `Incomplete` (consuming nothing) until the command line, and for storage commands
/// the data block, have arrived. A malformed request is `Done` with a [`Rejection`] whose
/// `consumed` covers the bad input. The buffer needed before an answer is bounded by
/// `max_line_len` plus, for storage commands, `max_value_len`.
pub fn decode_request(buf: &[u8], limits: &Limits) -> Decoded<Result<Request, Rejection>> {
    decode(buf, None, limits)
}

/// [`decode_request`] over shared bytes: a storage request's value is a slice of `buf`
/// rather than a copy, and keeps `buf`'s allocation alive while it lives. The answer is
/// the one `decode_request` gives for the same bytes.
///
/// Why: a connection that holds a whole large frame can split it off its read buffer and
/// decode it here; copying a 512 KiB value out of the buffer was one of the copies every
/// large `set` made before the engine's own.
pub fn decode_request_shared(buf: &Bytes, limits: &Limits) -> Decoded<Result<Request, Rejection>> {
    decode(buf, Some(buf), limits)
}

fn decode(
    buf: &[u8],
    shared: Option<&Bytes>,
    limits: &Limits,
) -> Decoded<Result<Request, Rejection>> {
    let (line, line_len) = match tokens::scan_line(buf, limits.max_line_len) {
        LineScan::Incomplete => return Decoded::Incomplete,
        LineScan::TooLong { consumed } => {
            return Decoded::Done {
                item: Err(Rejection::client("line too long").then(AfterError::Close)),
                consumed,
            };
        }
        LineScan::Line { content, consumed } => (content, consumed),
    };
    // Retrievals are most of the traffic and need nothing from the tokeniser but their
    // keys, so they are told apart from the command word alone.
    let command_start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let command_line = &line[command_start..];
    let command_len = command_line
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(command_line.len());
    let (command, after_command) = command_line.split_at(command_len);
    match command {
        b"get" => return retrieval::parse_get(after_command, line_len, limits, false),
        b"gets" => return retrieval::parse_get(after_command, line_len, limits, true),
        b"mg" => return meta::get::parse(after_command, line_len, limits),
        _ => {}
    }
    let frame = Frame {
        tokens: Tokens::new(line),
        line_len,
        buf,
        shared,
        limits,
    };
    let Some(command) = frame.tokens.get(0) else {
        return frame.line_only(Err(Rejection::unknown()));
    };
    match command {
        b"gat" => retrieval::parse_gat(&frame, false),
        b"gats" => retrieval::parse_gat(&frame, true),
        b"set" => storage::parse(&frame, storage::Kind::Set),
        b"add" => storage::parse(&frame, storage::Kind::Add),
        b"replace" => storage::parse(&frame, storage::Kind::Replace),
        b"append" => storage::parse(&frame, storage::Kind::Append),
        b"prepend" => storage::parse(&frame, storage::Kind::Prepend),
        b"cas" => storage::parse(&frame, storage::Kind::Cas),
        b"incr" => arith::parse(&frame, true),
        b"decr" => arith::parse(&frame, false),
        b"touch" => touch::parse(&frame),
        b"delete" => delete::parse(&frame),
        b"flush_all" => admin::parse_flush_all(&frame),
        b"version" => frame.line_only(Ok(Request::Version)),
        b"verbosity" => admin::parse_verbosity(&frame),
        b"cache_memlimit" => admin::parse_cache_memlimit(&frame),
        b"stats" => admin::parse_stats(&frame),
        b"lru_crawler" => crawler::parse(&frame),
        b"quit" => frame.line_only(Ok(Request::Quit)),
        b"shutdown" => admin::parse_shutdown(&frame),
        b"watch" => admin::parse_watch(&frame),
        b"ms" => meta::set::parse(&frame),
        b"md" => meta::delete::parse(&frame),
        b"ma" => meta::arith::parse(&frame),
        b"mn" => frame.line_only(Ok(Request::MetaNoop)),
        b"me" => meta::debug::parse(&frame),
        _ => frame.line_only(Err(Rejection::unknown())),
    }
}

/// The whole length of the request at the front of `buf`, once its command line has
/// arrived, if it is one whose data block [`decode_request`] will wait for (a storage
/// command or `ms` within `limits`); `None` for anything else.
///
/// Why: a read buffer that grows by doubling while a 512 KiB value arrives copies about
/// twice the value on the way and allocates six times; told the length, the caller can
/// make room for the rest at once.
pub fn expected_frame_len(buf: &[u8], limits: &Limits) -> Option<usize> {
    let LineScan::Line { content, consumed } = tokens::scan_line(buf, limits.max_line_len) else {
        return None;
    };
    let tokens = Tokens::new(content);
    let len_token = match tokens.get(0)? {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => storage::LEN_TOKEN,
        b"ms" => meta::set::LEN_TOKEN,
        _ => return None,
    };
    let len = tokens.get(len_token).and_then(tokens::parse_data_len)?;
    (len <= limits.max_value_len).then(|| consumed.saturating_add(len).saturating_add(2))
}

/// Appends the wire form of `req` to `out`, as a client sends it.
///
/// The caller is responsible for giving a request the decoder would accept (keys without
/// spaces or control characters, opaque tokens of at most 31 bytes); otherwise the server
/// will reject what this writes.
pub fn encode_request(req: &Request, out: &mut BytesMut) {
    match req {
        Request::Get { keys, cas } => retrieval::encode_get(keys, *cas, out),
        Request::GetAndTouch { exptime, keys, cas } => {
            retrieval::encode_gat(*exptime, keys, *cas, out);
        }
        Request::Store {
            mode,
            key,
            flags,
            exptime,
            value,
            noreply,
        } => storage::encode(*mode, key, *flags, *exptime, value, *noreply, out),
        Request::Arith {
            key,
            delta,
            incr,
            noreply,
        } => arith::encode(key, *delta, *incr, *noreply, out),
        Request::Touch {
            key,
            exptime,
            noreply,
        } => touch::encode(key, *exptime, *noreply, out),
        Request::Delete { key, noreply } => delete::encode(key, *noreply, out),
        Request::FlushAll { delay, noreply } => admin::encode_flush_all(*delay, *noreply, out),
        Request::Version => out.extend_from_slice(b"version\r\n"),
        Request::Verbosity { level, noreply } => admin::encode_verbosity(*level, *noreply, out),
        Request::CacheMemlimit { megabytes, noreply } => {
            admin::encode_cache_memlimit(*megabytes, *noreply, out);
        }
        Request::Stats { group } => admin::encode_stats(group.as_ref(), out),
        Request::LruCrawler(request) => crawler::encode(request, out),
        Request::Shutdown { mode } => admin::encode_shutdown(mode.as_ref(), out),
        Request::Watch(kinds) => admin::encode_watch(*kinds, out),
        Request::Quit => out.extend_from_slice(b"quit\r\n"),
        Request::MetaGet(m) => meta::get::encode(m, out),
        Request::MetaSet(m) => meta::set::encode(m, out),
        Request::MetaDelete(m) => meta::delete::encode(m, out),
        Request::MetaArith(m) => meta::arith::encode(m, out),
        Request::MetaNoop => out.extend_from_slice(b"mn\r\n"),
        Request::MetaDebug { key, base64 } => meta::debug::encode(key, *base64, out),
    }
}

/// The padded base64 form of `input`, as meta commands print a binary key (the `ME` line,
/// or a `k` flag built by hand).
pub fn base64_encode(input: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(base64::encoded_len(input.len()));
    base64::encode_into(input, &mut out);
    out.freeze()
}

/// Decodes a canonical padded base64 key; `None` for anything else or an empty result.
pub fn base64_decode(input: &[u8]) -> Option<Bytes> {
    base64::decode(input).map(Bytes::from)
}

/// Appends ` noreply` when asked to; shared by every command that takes it.
pub(crate) fn put_noreply(noreply: bool, out: &mut BytesMut) {
    if noreply {
        out.extend_from_slice(b" noreply");
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the unit tests of every command family.

    use super::*;

    /// Decodes with memcached's default limits.
    pub(crate) fn decode(buf: &[u8]) -> Outcome {
        decode_request(buf, &Limits::default())
    }

    /// Decodes `buf`, which must hold exactly one accepted request.
    pub(crate) fn ok(buf: &[u8]) -> Request {
        match decode(buf) {
            Decoded::Done {
                item: Ok(req),
                consumed,
            } => {
                assert_eq!(
                    consumed,
                    buf.len(),
                    "consumed for {:?}",
                    String::from_utf8_lossy(buf)
                );
                req
            }
            other => panic!("{:?} decoded to {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Decodes `buf`, which must be exactly one rejected request; returns the reply text
    /// and what follows.
    pub(crate) fn rejected(buf: &[u8]) -> (String, AfterError) {
        match decode(buf) {
            Decoded::Done {
                item: Err(rej),
                consumed,
            } => {
                assert_eq!(
                    consumed,
                    buf.len(),
                    "consumed for {:?}",
                    String::from_utf8_lossy(buf)
                );
                (rej.reply.to_string(), rej.after)
            }
            other => panic!("{:?} decoded to {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Encodes a request to a byte vector.
    pub(crate) fn encoded(req: &Request) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_request(req, &mut out);
        out.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{decode, ok, rejected};
    use super::*;

    #[test]
    fn unknown_and_empty_lines_are_error_and_continue() {
        for line in [
            &b"bogus\r\n"[..],
            b"\r\n",
            b"\n",
            b"   \r\n",
            b"slabs automove 1\r\n",
            b"GET foo\r\n",
            b"get\tfoo\r\n",
            b"mx foo\r\n",
            b"m\r\n",
        ] {
            assert_eq!(
                rejected(line),
                ("ERROR".to_owned(), AfterError::Continue),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn only_a_data_block_within_limits_announces_a_frame_length() {
        let limits = Limits::default();
        let expect = |buf: &[u8]| expected_frame_len(buf, &limits);
        assert_eq!(expect(b"set k 0 0 5\r\nhe"), Some(13 + 5 + 2));
        assert_eq!(expect(b"cas k 0 0 5 9 noreply\r\n"), Some(23 + 5 + 2));
        assert_eq!(expect(b"ms k 100 T0 F5\r\n"), Some(16 + 100 + 2));
        assert_eq!(expect(b"set k 0 0 1048576\r\n"), Some(19 + 1_048_576 + 2));
        // Not yet a whole line, no data block, or one that will be refused and swallowed.
        assert_eq!(expect(b"set k 0 0 5"), None);
        assert_eq!(expect(b"get k\r\n"), None);
        assert_eq!(expect(b"set k 0 0 1048577\r\n"), None);
        assert_eq!(expect(b"set k 0 0 2147483648\r\n"), None);
        assert_eq!(expect(b"set k 0 0 -1\r\n"), None);
        assert_eq!(expect(b"set k 0 0\r\n"), None);
        assert_eq!(expect(b""), None);
    }

    #[test]
    fn incomplete_until_newline() {
        assert_eq!(decode(b""), Decoded::Incomplete);
        assert_eq!(decode(b"get foo"), Decoded::Incomplete);
        assert_eq!(decode(b"get foo\r"), Decoded::Incomplete);
    }

    #[test]
    fn line_too_long_closes() {
        let limits = Limits {
            max_line_len: 16,
            ..Limits::default()
        };
        let endless = [b'a'; 100];
        match decode_request(&endless, &limits) {
            Decoded::Done {
                item: Err(rej),
                consumed,
            } => {
                assert_eq!(rej.reply.to_string(), "CLIENT_ERROR line too long");
                assert_eq!(rej.after, AfterError::Close);
                assert!(consumed > 0 && consumed <= endless.len());
            }
            other => panic!("{other:?}"),
        }
        // A short prefix of the same line is just incomplete.
        assert_eq!(decode_request(&endless[..10], &limits), Decoded::Incomplete);
    }

    #[test]
    fn pipelined_requests_decode_one_at_a_time() {
        let buf = b"get a\r\nversion\nquit\r\n";
        let Decoded::Done { consumed, .. } = decode(buf) else {
            panic!("first")
        };
        assert_eq!(consumed, 7);
        assert_eq!(ok(&buf[7..15]), Request::Version);
        assert_eq!(ok(&buf[15..]), Request::Quit);
    }

    #[test]
    fn version_quit_noop_ignore_arguments() {
        assert_eq!(ok(b"version\r\n"), Request::Version);
        assert_eq!(ok(b"version please\r\n"), Request::Version);
        assert_eq!(ok(b"quit\n"), Request::Quit);
        assert_eq!(ok(b"mn\r\n"), Request::MetaNoop);
    }

    #[test]
    fn public_base64_helpers() {
        assert_eq!(base64_encode(b"\x00k"), Bytes::from_static(b"AGs="));
        assert_eq!(base64_decode(b"AGs="), Some(Bytes::from_static(b"\x00k")));
        assert_eq!(base64_decode(b"AGs"), None);
    }

    #[test]
    fn error_reply_display_matches_the_wire() {
        assert_eq!(ErrorReply::Error.to_string(), "ERROR");
        assert_eq!(
            ErrorReply::Client("bad data chunk".into()).to_string(),
            "CLIENT_ERROR bad data chunk"
        );
        assert_eq!(
            ErrorReply::Server("out of memory".into()).to_string(),
            "SERVER_ERROR out of memory"
        );
    }
}
