//! `flush_all`, `verbosity`, `stats` and `watch`: the commands about the server rather than
//! an item.
//! (`version` and `quit` take no arguments and are decoded in the dispatch.)

use bytes::{Bytes, BytesMut};

use super::tokens::{BAD_FORMAT, parse_i64, parse_u32, parse_u64, put_i64, put_u64};
use super::{Frame, Outcome, Rejection, Request, put_noreply};

/// `flush_all [delay] [noreply]`.
pub(super) fn parse_flush_all(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    if !(1..=3).contains(&toks.len()) {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let noreply = toks.len() > 1 && toks.last_is_noreply();
    let mut delay = 0;
    if toks.len() != if noreply { 2 } else { 1 } {
        match toks.get(1).and_then(parse_i64) {
            Some(d) => delay = d,
            None => return frame.line_only(Err(Rejection::client("invalid exptime argument"))),
        }
    }
    frame.line_only(Ok(Request::FlushAll { delay, noreply }))
}

/// `verbosity <level> [noreply]`.
pub(super) fn parse_verbosity(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    if toks.len() != 2 && toks.len() != 3 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let noreply = toks.last_is_noreply();
    let Some(level) = toks.get(1).and_then(parse_u32) else {
        // `verbosity noreply` is a bad level whose error memcached then silences.
        return frame.line_only(Err(Rejection::client(BAD_FORMAT).silenced_if(noreply)));
    };
    frame.line_only(Ok(Request::Verbosity { level, noreply }))
}

/// `stats [args…]`: the arguments are passed on joined by single spaces, since which groups
/// exist is the server's business, not the parser's.
pub(super) fn parse_stats(frame: &Frame<'_>) -> Outcome {
    frame.line_only(Ok(Request::Stats {
        group: joined_args(frame),
    }))
}

/// `shutdown [mode]`: as with `stats`, whether shutting down is allowed and which modes
/// exist is the server's business (memcached refuses any shutdown it was not started to
/// allow before it looks at the mode).
pub(super) fn parse_shutdown(frame: &Frame<'_>) -> Outcome {
    frame.line_only(Ok(Request::Shutdown {
        mode: joined_args(frame),
    }))
}

/// Kinds of events a `watch` connection is sent, one bit each (memcached's `watch`
/// arguments that a node has events for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchKinds(u8);

impl WatchKinds {
    /// `fetchers`: every key a client fetched, and whether it was found.
    pub const FETCHERS: Self = Self(1);
    /// `mutations`: every storage command, with its outcome.
    pub const MUTATIONS: Self = Self(1 << 1);
    /// `evictions`: live items dropped to make room.
    pub const EVICTIONS: Self = Self(1 << 2);
    /// `connevents`: connections opened and closed.
    pub const CONNEVENTS: Self = Self(1 << 3);

    const NAMES: [(&'static [u8], Self); 4] = [
        (b"fetchers", Self::FETCHERS),
        (b"mutations", Self::MUTATIONS),
        (b"evictions", Self::EVICTIONS),
        (b"connevents", Self::CONNEVENTS),
    ];

    /// The kind a `watch` argument names.
    pub fn named(name: &[u8]) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, kind)| *kind)
    }

    /// Both sets of kinds.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether any kind of `other` is among these.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// No kind at all.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as bits, for keeping in an atomic.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set from [`bits`](Self::bits); unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & Self::NAMES.iter().fold(0, |all, (_, kind)| all | kind.0))
    }
}

/// `watch [fetchers|mutations|evictions|connevents]…`: from here on the connection is sent
/// log lines instead of replies; fetchers when no kind is named, as in memcached. An
/// argument memcached has but a node has no events for (`rawcmds`, `sysevents`, the proxy
/// ones) is refused with memcached's reply to an unknown one.
pub(super) fn parse_watch(frame: &Frame<'_>) -> Outcome {
    let mut kinds = WatchKinds::default();
    for name in frame.tokens.all_from(1) {
        let Some(kind) = WatchKinds::named(name) else {
            return frame.line_only(Err(Rejection::unknown()));
        };
        kinds = kinds.union(kind);
    }
    if kinds.is_empty() {
        kinds = WatchKinds::FETCHERS;
    }
    frame.line_only(Ok(Request::Watch(kinds)))
}

pub(super) fn encode_watch(kinds: WatchKinds, out: &mut BytesMut) {
    out.extend_from_slice(b"watch");
    for (name, kind) in WatchKinds::NAMES {
        if kinds.intersects(kind) {
            out.extend_from_slice(b" ");
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The tokens after the command, joined by single spaces; `None` if there are none.
fn joined_args(frame: &Frame<'_>) -> Option<Bytes> {
    let mut args = frame.tokens.all_from(1);
    args.next().map(|first| {
        let mut joined = BytesMut::from(first);
        for arg in args {
            joined.extend_from_slice(b" ");
            joined.extend_from_slice(arg);
        }
        joined.freeze()
    })
}

pub(super) fn encode_flush_all(delay: i64, noreply: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"flush_all");
    if delay != 0 {
        out.extend_from_slice(b" ");
        put_i64(out, delay);
    }
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn encode_verbosity(level: u32, noreply: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"verbosity ");
    put_u64(out, u64::from(level));
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
}

/// `cache_memlimit <megabytes> [noreply]`. memcached answers a bad number with `ERROR`.
pub(super) fn parse_cache_memlimit(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    if toks.len() != 2 && toks.len() != 3 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let noreply = toks.last_is_noreply();
    if toks.len() == 3 && !noreply {
        return frame.line_only(Err(Rejection::unknown()));
    }
    match toks.get(1).and_then(parse_u64) {
        Some(megabytes) => frame.line_only(Ok(Request::CacheMemlimit { megabytes, noreply })),
        None => frame.line_only(Err(Rejection::unknown().silenced_if(noreply))),
    }
}

pub(super) fn encode_cache_memlimit(megabytes: u64, noreply: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"cache_memlimit ");
    put_u64(out, megabytes);
    put_noreply(noreply, out);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn encode_stats(group: Option<&Bytes>, out: &mut BytesMut) {
    encode_with_args(b"stats", group, out);
}

pub(super) fn encode_shutdown(mode: Option<&Bytes>, out: &mut BytesMut) {
    encode_with_args(b"shutdown", mode, out);
}

fn encode_with_args(command: &[u8], args: Option<&Bytes>, out: &mut BytesMut) {
    out.extend_from_slice(command);
    if let Some(args) = args {
        out.extend_from_slice(b" ");
        out.extend_from_slice(args);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;

    #[test]
    fn flush_all_forms() {
        assert_eq!(
            ok(b"flush_all\r\n"),
            Request::FlushAll {
                delay: 0,
                noreply: false
            }
        );
        assert_eq!(
            ok(b"flush_all 10\r\n"),
            Request::FlushAll {
                delay: 10,
                noreply: false
            }
        );
        assert_eq!(
            ok(b"flush_all noreply\r\n"),
            Request::FlushAll {
                delay: 0,
                noreply: true
            }
        );
        assert_eq!(
            ok(b"flush_all 10 noreply\r\n"),
            Request::FlushAll {
                delay: 10,
                noreply: true
            }
        );
        assert_eq!(
            ok(b"flush_all -1\r\n"),
            Request::FlushAll {
                delay: -1,
                noreply: false
            }
        );
    }

    #[test]
    fn flush_all_errors() {
        assert_eq!(
            rejected(b"flush_all soon\r\n").0,
            "CLIENT_ERROR invalid exptime argument"
        );
        assert_eq!(
            rejected(b"flush_all noreply 10\r\n").0,
            "CLIENT_ERROR invalid exptime argument"
        );
        assert_eq!(rejected(b"flush_all 1 2 3\r\n").0, "ERROR");
    }

    #[test]
    fn cache_memlimit_forms_and_errors() {
        assert_eq!(
            ok(b"cache_memlimit 64\r\n"),
            Request::CacheMemlimit {
                megabytes: 64,
                noreply: false
            }
        );
        assert_eq!(
            ok(b"cache_memlimit 64 noreply\r\n"),
            Request::CacheMemlimit {
                megabytes: 64,
                noreply: true
            }
        );
        assert_eq!(rejected(b"cache_memlimit\r\n").0, "ERROR");
        assert_eq!(rejected(b"cache_memlimit lots\r\n").0, "ERROR");
        assert_eq!(rejected(b"cache_memlimit 1 2\r\n").0, "ERROR");
    }

    #[test]
    fn verbosity_forms_and_errors() {
        assert_eq!(
            ok(b"verbosity 1\r\n"),
            Request::Verbosity {
                level: 1,
                noreply: false
            }
        );
        assert_eq!(
            ok(b"verbosity 2 noreply\r\n"),
            Request::Verbosity {
                level: 2,
                noreply: true
            }
        );
        assert_eq!(rejected(b"verbosity\r\n").0, "ERROR");
        assert_eq!(rejected(b"verbosity 1 2 3\r\n").0, "ERROR");
        assert_eq!(
            rejected(b"verbosity loud\r\n").0,
            "CLIENT_ERROR bad command line format"
        );
        assert_eq!(
            rejected(b"verbosity noreply\r\n").0,
            "CLIENT_ERROR bad command line format"
        );
        let crate::Decoded::Done {
            item: Err(rejection),
            ..
        } = crate::ascii::decode_request(b"verbosity noreply\r\n", &crate::Limits::default())
        else {
            panic!("verbosity noreply must be rejected");
        };
        assert!(
            rejection.noreply,
            "memcached answers nothing to `verbosity noreply`"
        );
    }

    #[test]
    fn shutdown_passes_its_mode_on() {
        assert_eq!(ok(b"shutdown\r\n"), Request::Shutdown { mode: None });
        assert_eq!(
            ok(b"shutdown  graceful\r\n"),
            Request::Shutdown {
                mode: Some(Bytes::from_static(b"graceful"))
            }
        );
        assert_eq!(
            encoded(&Request::Shutdown {
                mode: Some(Bytes::from_static(b"graceful"))
            }),
            b"shutdown graceful\r\n"
        );
    }

    #[test]
    fn stats_groups() {
        assert_eq!(ok(b"stats\r\n"), Request::Stats { group: None });
        assert_eq!(
            ok(b"stats settings\r\n"),
            Request::Stats {
                group: Some(Bytes::from_static(b"settings"))
            }
        );
        assert_eq!(
            ok(b"stats  detail   dump\r\n"),
            Request::Stats {
                group: Some(Bytes::from_static(b"detail dump"))
            }
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encoded(&Request::FlushAll {
                delay: 0,
                noreply: true
            }),
            b"flush_all noreply\r\n"
        );
        assert_eq!(
            encoded(&Request::FlushAll {
                delay: 9,
                noreply: false
            }),
            b"flush_all 9\r\n"
        );
        assert_eq!(
            encoded(&Request::Verbosity {
                level: 1,
                noreply: true
            }),
            b"verbosity 1 noreply\r\n"
        );
        assert_eq!(
            encoded(&Request::Stats {
                group: Some(Bytes::from_static(b"items"))
            }),
            b"stats items\r\n"
        );
        assert_eq!(encoded(&Request::Stats { group: None }), b"stats\r\n");
    }

    #[test]
    fn watch_kinds_and_refusals() {
        assert_eq!(ok(b"watch\r\n"), Request::Watch(WatchKinds::FETCHERS));
        assert_eq!(
            ok(b"watch mutations connevents\r\n"),
            Request::Watch(WatchKinds::MUTATIONS.union(WatchKinds::CONNEVENTS))
        );
        assert_eq!(
            encoded(&Request::Watch(
                WatchKinds::EVICTIONS.union(WatchKinds::FETCHERS)
            )),
            b"watch fetchers evictions\r\n"
        );
        // memcached has these, but a node has no such events to send.
        for line in [&b"watch rawcmds\r\n"[..], b"watch fetchers sysevents\r\n"] {
            assert_eq!(rejected(line).0, "ERROR");
        }
    }
}
