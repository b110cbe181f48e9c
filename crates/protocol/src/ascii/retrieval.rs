//! `get`, `gets`, `gat`, `gats`: the multi-key retrievals.

use std::fmt;

use bytes::BytesMut;
use smallvec::SmallVec;

use super::tokens::{BAD_FORMAT, parse_i64, put_i64, split};
use super::{Frame, Outcome, Rejection, Request};
use crate::{Decoded, Limits};

/// The keys of one multi-key retrieval (`get`, `gets`, `gat`, `gats`), in request order.
///
/// A get is most of a cache's traffic, and holding its keys as a vector of separately
/// allocated keys cost two allocations and two frees per request. The keys are instead
/// kept as the stretch of the command line they came from (space-separated; a key never
/// holds a space), inline up to [`Keys::INLINE`] bytes, so a typical get allocates
/// nothing for its keys.
#[derive(Clone, Default)]
pub struct Keys {
    /// The keys separated by one or more spaces, exactly as they appeared on the line.
    text: SmallVec<[u8; Keys::INLINE]>,
    count: usize,
}

impl Keys {
    /// Bytes of keys held without a heap allocation.
    pub const INLINE: usize = 64;

    /// Builds the list from keys that are each acceptable text-protocol keys (no spaces or
    /// control characters), as a client does before sending them. A key with a space in
    /// it would read back as several keys.
    #[must_use]
    pub fn from_keys<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut list = Self::default();
        for key in keys {
            if list.count > 0 {
                list.text.push(b' ');
            }
            list.text.extend_from_slice(key.as_ref());
            list.count += 1;
        }
        list
    }

    /// Number of keys; never zero in a decoded request.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no keys (only possible for a list built by hand).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The keys in request order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        split(&self.text)
    }
}

/// Lists are equal when they hold the same keys in the same order, however many spaces
/// separated them on the line.
impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Keys {}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// Validates the keys of `text` (the part of a command line that holds only keys) and
/// takes them as one copy, refusing the whole request if any key is bad, as memcached
/// drops the values it had already queued and answers only the error.
///
/// One pass over the bytes does the splitting, the checks of
/// [`key_ok`](super::tokens::key_ok) and the count: this runs for every get, and going
/// through the general tokeniser first cost more than the rest of the parse.
fn scan_keys(text: &[u8], max_key_len: usize) -> Result<Keys, Rejection> {
    let mut count = 0;
    let mut span: Option<(usize, usize)> = None;
    let mut token_start: Option<usize> = None;
    let mut end_token = |start: usize, end: usize| {
        if end - start > max_key_len {
            return Err(Rejection::client(BAD_FORMAT));
        }
        span = Some(span.map_or((start, end), |(first, _)| (first, end)));
        count += 1;
        Ok(())
    };
    for (i, &byte) in text.iter().enumerate() {
        if byte == b' ' {
            if let Some(start) = token_start.take() {
                end_token(start, i)?;
            }
        } else if byte < b' ' || byte == 0x7f {
            return Err(Rejection::client(BAD_FORMAT));
        } else if token_start.is_none() {
            token_start = Some(i);
        }
    }
    if let Some(start) = token_start {
        end_token(start, text.len())?;
    }
    let text = span.map_or(&[][..], |(start, end)| &text[start..end]);
    Ok(Keys {
        text: SmallVec::from_slice(text),
        count,
    })
}

/// `get <key>*` / `gets <key>*`, given what follows the command word. Dispatched before
/// the general tokeniser runs, since nothing else about the line needs it.
pub(super) fn parse_get(keys_text: &[u8], frame_len: usize, limits: &Limits, cas: bool) -> Outcome {
    let item = match scan_keys(keys_text, limits.max_key_len) {
        Ok(keys) if keys.is_empty() => Err(Rejection::unknown()),
        Ok(keys) => Ok(Request::Get { keys, cas }),
        Err(rejection) => Err(rejection),
    };
    Decoded::Done {
        item,
        consumed: frame_len,
    }
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
    frame.line_only(
        scan_keys(frame.tokens.line_from(2), frame.limits.max_key_len)
            .map(|keys| Request::GetAndTouch { exptime, keys, cas }),
    )
}

fn put_keys(keys: &Keys, out: &mut BytesMut) {
    for key in keys.iter() {
        out.extend_from_slice(b" ");
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"\r\n");
}

pub(super) fn encode_get(keys: &Keys, cas: bool, out: &mut BytesMut) {
    out.extend_from_slice(if cas { b"gets" } else { b"get" });
    put_keys(keys, out);
}

pub(super) fn encode_gat(exptime: i64, keys: &Keys, cas: bool, out: &mut BytesMut) {
    out.extend_from_slice(if cas { b"gats " } else { b"gat " });
    put_i64(out, exptime);
    put_keys(keys, out);
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;
    use crate::AfterError;

    fn k(keys: &[&str]) -> Keys {
        Keys::from_keys(keys)
    }

    #[test]
    fn get_and_gets() {
        assert_eq!(
            ok(b"get foo\r\n"),
            Request::Get {
                keys: k(&["foo"]),
                cas: false
            }
        );
        assert_eq!(
            ok(b"gets  a b  c\n"),
            Request::Get {
                keys: k(&["a", "b", "c"]),
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
        assert_eq!(got.iter().nth(99), Some(&b"key99"[..]));
        assert_eq!(got, Keys::from_keys(&keys));
    }

    #[test]
    fn get_keys_however_spaced() {
        assert_eq!(
            ok(b"  get   a  b \r\n"),
            Request::Get {
                keys: k(&["a", "b"]),
                cas: false
            }
        );
        assert_ne!(k(&["a", "b"]), k(&["ab"]));
        assert_ne!(k(&["a", "b"]), k(&["a", "b", "c"]));
    }

    #[test]
    fn get_refuses_control_characters_and_long_last_keys() {
        for line in [&b"get a\tb\r\n"[..], b"get ok\x7f\r\n", b"gets ok \x00\r\n"] {
            assert_eq!(rejected(line).0, "CLIENT_ERROR bad command line format");
        }
        let long_last = format!("get a {}\r\n", "k".repeat(251));
        assert_eq!(
            rejected(long_last.as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
        let max_keys = format!("gets {0} {0}\r\n", "k".repeat(250));
        assert!(
            matches!(ok(max_keys.as_bytes()), Request::Get { keys, cas: true } if keys.len() == 2)
        );
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
                keys: k(&["foo", "bar"]),
                cas: false
            }
        );
        assert_eq!(
            ok(b"gats -1 foo\r\n"),
            Request::GetAndTouch {
                exptime: -1,
                keys: k(&["foo"]),
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
                keys: k(&["a", "b"]),
                cas: false
            }),
            b"get a b\r\n"
        );
        assert_eq!(
            encoded(&Request::GetAndTouch {
                exptime: -5,
                keys: k(&["a"]),
                cas: true
            }),
            b"gats -5 a\r\n"
        );
    }
}
