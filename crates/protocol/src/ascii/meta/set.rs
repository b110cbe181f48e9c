//! `ms <key> <datalen> <flags>*` and its data block: meta set.

use bytes::{Bytes, BytesMut};

use super::super::storage::finish;
use super::super::tokens::{BAD_FORMAT, parse_data_len, put_i64, put_u64};
use super::super::{Frame, Outcome, Rejection, Request};
use super::flags::{self, Flag};
use super::{RequestFlags, put_base64_flag, put_flag_bytes, put_key};
use crate::AfterError;

/// A meta set: store one value, in one of the classic storage modes, with options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaSet {
    /// The key, base64-decoded if `base64`.
    pub key: Bytes,
    /// The key was sent in base64 (`b`), so a returned key must be printed in base64.
    pub base64: bool,
    /// The flags `ms` acts on, in request order.
    pub flags: RequestFlags<MetaSetFlag>,
    /// The data block, without its trailing `\r\n`.
    pub value: Bytes,
}

/// A flag of `ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaSetFlag {
    /// `c`: return the CAS value of the stored item.
    ReturnCas,
    /// `C(token)`: store only if the item's CAS equals this.
    CompareCas(u64),
    /// `E(token)`: use this as the new CAS value.
    NewCas(u64),
    /// `F(token)`: the client flags.
    ClientFlags(u32),
    /// `I`: invalidate; with `C`, a CAS older than the item's marks it stale instead of
    /// failing.
    Invalidate,
    /// `k`: return the key.
    ReturnKey,
    /// `O(token)`: echo this opaque token.
    Opaque(Bytes),
    /// `q`: quiet mode, suppress the `HD` of a success.
    Quiet,
    /// `s`: return the size of the stored value (the new size after append/prepend).
    ReturnSize,
    /// `T(token)`: the TTL.
    Ttl(i64),
    /// `M(token)`: the storage mode.
    Mode(MetaSetMode),
    /// `N(token)`: in append/prepend mode, create the item with this TTL on a miss.
    Vivify(i64),
}

/// The storage mode of `ms`, from its `M` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaSetMode {
    /// `MS`: set (the default).
    Set,
    /// `ME`: add, only if absent.
    Add,
    /// `MR`: replace, only if present.
    Replace,
    /// `MA`: append to the existing value.
    Append,
    /// `MP`: prepend to the existing value.
    Prepend,
}

impl MetaSetMode {
    fn from_letter(letter: u8) -> Option<Self> {
        Some(match letter {
            b'S' => Self::Set,
            b'E' => Self::Add,
            b'R' => Self::Replace,
            b'A' => Self::Append,
            b'P' => Self::Prepend,
            _ => return None,
        })
    }

    fn letter(self) -> u8 {
        match self {
            Self::Set => b'S',
            Self::Add => b'E',
            Self::Replace => b'R',
            Self::Append => b'A',
            Self::Prepend => b'P',
        }
    }
}

impl MetaSet {
    /// Whether `q` was given.
    pub fn is_quiet(&self) -> bool {
        self.flags.contains(&MetaSetFlag::Quiet)
    }

    /// The storage mode (`Set` when no `M` flag was given).
    pub fn mode(&self) -> MetaSetMode {
        self.flags
            .iter()
            .find_map(|f| match f {
                MetaSetFlag::Mode(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(MetaSetMode::Set)
    }

    /// The `O` token, if any.
    pub fn opaque(&self) -> Option<&Bytes> {
        self.flags.iter().find_map(|f| match f {
            MetaSetFlag::Opaque(o) => Some(o),
            _ => None,
        })
    }
}

fn typed(flag: Flag<'_>) -> Result<Option<MetaSetFlag>, Rejection> {
    Ok(Some(match flag {
        Flag::ReturnCas => MetaSetFlag::ReturnCas,
        Flag::CompareCas(v) => MetaSetFlag::CompareCas(v),
        Flag::NewCas(v) => MetaSetFlag::NewCas(v),
        Flag::ClientFlags(v) => MetaSetFlag::ClientFlags(v),
        Flag::Invalidate => MetaSetFlag::Invalidate,
        Flag::ReturnKey => MetaSetFlag::ReturnKey,
        Flag::Opaque(arg) => MetaSetFlag::Opaque(flags::opaque(arg)?),
        Flag::Quiet => MetaSetFlag::Quiet,
        Flag::ReturnSize => MetaSetFlag::ReturnSize,
        Flag::Ttl(v) => MetaSetFlag::Ttl(v),
        Flag::Mode(letter) => MetaSetFlag::Mode(
            MetaSetMode::from_letter(letter)
                .ok_or_else(|| Rejection::client("invalid mode for ms M token"))?,
        ),
        Flag::Vivify(v) => MetaSetFlag::Vivify(v),
        Flag::Base64
        | Flag::Delta(_)
        | Flag::ReturnClientFlags
        | Flag::ReturnHit
        | Flag::Initial(_)
        | Flag::ReturnLastAccess
        | Flag::ProxyHint
        | Flag::Recache(_)
        | Flag::ReturnTtl
        | Flag::NoBump
        | Flag::ReturnValue
        | Flag::RemoveValue => return Ok(None),
    }))
}

/// Where the data length is on an `ms` line: `ms <key> <datalen> <flags>*`.
pub(crate) const LEN_TOKEN: usize = 2;

pub(crate) fn parse(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    if toks.len() < 2 {
        return frame.line_only(Err(Rejection::unknown()));
    }
    let Some(len) = toks.get(LEN_TOKEN).and_then(parse_data_len) else {
        return frame.line_only(Err(Rejection::client(BAD_FORMAT)));
    };
    let swallow = AfterError::Swallow(len as u64 + 2);
    let reject = |r: Rejection| frame.line_only(Err(r.then(swallow)));
    let parsed = match flags::parse_line(frame, 3) {
        Ok(parsed) => parsed,
        Err(e) => return reject(e.rejection()),
    };
    let typed_flags = match flags::typed_flags(parsed.flags, typed) {
        Ok(typed) => typed,
        Err(rej) => return reject(rej),
    };
    if len > frame.limits.max_value_len {
        let rejection = Rejection::too_large();
        let sets = typed_flags
            .iter()
            .all(|f| !matches!(f, MetaSetFlag::Mode(mode) if *mode != MetaSetMode::Set));
        return reject(if sets {
            rejection.invalidating(parsed.key)
        } else {
            rejection
        });
    }
    let (key, base64) = (parsed.key, parsed.base64);
    finish(frame, len, |value| {
        Request::MetaSet(MetaSet {
            key,
            base64,
            flags: typed_flags,
            value,
        })
    })
}

pub(crate) fn encode(m: &MetaSet, out: &mut BytesMut) {
    out.reserve(m.key.len() * 2 + m.value.len() + 64);
    out.extend_from_slice(b"ms ");
    put_key(&m.key, m.base64, out);
    out.extend_from_slice(b" ");
    put_u64(out, m.value.len() as u64);
    put_base64_flag(m.base64, out);
    for flag in &m.flags {
        match flag {
            MetaSetFlag::ReturnCas => out.extend_from_slice(b" c"),
            MetaSetFlag::CompareCas(v) => {
                out.extend_from_slice(b" C");
                put_u64(out, *v);
            }
            MetaSetFlag::NewCas(v) => {
                out.extend_from_slice(b" E");
                put_u64(out, *v);
            }
            MetaSetFlag::ClientFlags(v) => {
                out.extend_from_slice(b" F");
                put_u64(out, u64::from(*v));
            }
            MetaSetFlag::Invalidate => out.extend_from_slice(b" I"),
            MetaSetFlag::ReturnKey => out.extend_from_slice(b" k"),
            MetaSetFlag::Opaque(o) => put_flag_bytes(b'O', o, out),
            MetaSetFlag::Quiet => out.extend_from_slice(b" q"),
            MetaSetFlag::ReturnSize => out.extend_from_slice(b" s"),
            MetaSetFlag::Ttl(v) => {
                out.extend_from_slice(b" T");
                put_i64(out, *v);
            }
            MetaSetFlag::Mode(mode) => out.extend_from_slice(&[b' ', b'M', mode.letter()]),
            MetaSetFlag::Vivify(v) => {
                out.extend_from_slice(b" N");
                put_i64(out, *v);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&m.value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{decode, encoded, ok, rejected};
    use super::*;
    use crate::{Decoded, Limits};

    #[test]
    fn every_ms_flag_in_order() {
        use MetaSetFlag as F;
        let wire = b"ms foo 2 T90 F1 c C5 E6 I k Oxy q s MA N30\r\nhi\r\n";
        let req = ok(wire);
        let expected = MetaSet {
            key: Bytes::from_static(b"foo"),
            base64: false,
            flags: smallvec::smallvec![
                F::Ttl(90),
                F::ClientFlags(1),
                F::ReturnCas,
                F::CompareCas(5),
                F::NewCas(6),
                F::Invalidate,
                F::ReturnKey,
                F::Opaque(Bytes::from_static(b"xy")),
                F::Quiet,
                F::ReturnSize,
                F::Mode(MetaSetMode::Append),
                F::Vivify(30),
            ],
            value: Bytes::from_static(b"hi"),
        };
        assert_eq!(req, Request::MetaSet(expected.clone()));
        assert_eq!(encoded(&req), wire);
        assert!(expected.is_quiet());
        assert_eq!(expected.mode(), MetaSetMode::Append);
        assert_eq!(expected.opaque(), Some(&Bytes::from_static(b"xy")));
    }

    #[test]
    fn modes() {
        for (letter, mode) in [
            ('S', MetaSetMode::Set),
            ('E', MetaSetMode::Add),
            ('R', MetaSetMode::Replace),
            ('A', MetaSetMode::Append),
            ('P', MetaSetMode::Prepend),
        ] {
            let Request::MetaSet(m) = ok(format!("ms k 1 M{letter}\r\nx\r\n").as_bytes()) else {
                panic!("not ms")
            };
            assert_eq!(m.mode(), mode);
        }
        let Request::MetaSet(m) = ok(b"ms k 0\r\n\r\n") else {
            panic!("not ms")
        };
        assert_eq!(m.mode(), MetaSetMode::Set);
        assert!(m.value.is_empty());
    }

    #[test]
    fn base64_key() {
        let req = ok(b"ms Zm9v 1 b\r\nx\r\n");
        let Request::MetaSet(m) = &req else {
            panic!("not ms")
        };
        assert_eq!(&m.key[..], b"foo");
        assert!(m.base64);
        assert_eq!(encoded(&req), b"ms Zm9v 1 b\r\nx\r\n");
    }

    #[test]
    fn waits_for_data() {
        assert_eq!(decode(b"ms k 3 T1\r\nab"), Decoded::Incomplete);
    }

    #[test]
    fn arity_and_length_errors_cannot_swallow() {
        assert_eq!(rejected(b"ms\r\n"), ("ERROR".into(), AfterError::Continue));
        for line in [
            &b"ms k\r\n"[..],
            b"ms k x\r\n",
            b"ms k -1\r\n",
            b"ms k T1\r\n",
        ] {
            assert_eq!(
                rejected(line),
                (
                    "CLIENT_ERROR bad command line format".into(),
                    AfterError::Continue
                ),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn bad_flags_swallow_the_data() {
        let cases: [(&[u8], &str); 7] = [
            (b"ms k 2 MX\r\n", "CLIENT_ERROR invalid mode for ms M token"),
            (
                b"ms k 2 Tx\r\n",
                "CLIENT_ERROR bad token in command line format",
            ),
            (b"ms k 2 Fx\r\n", "CLIENT_ERROR bad command line format"),
            (b"ms k 2 T1 T2\r\n", "CLIENT_ERROR duplicate flag"),
            (b"ms k 2 w\r\n", "CLIENT_ERROR invalid flag"),
            (b"ms k 2 b\r\n", "CLIENT_ERROR error decoding key"),
            (
                b"ms k 2 O0123456789abcdef0123456789abcdef\r\n",
                "CLIENT_ERROR opaque token too long",
            ),
        ];
        for (line, reply) in cases {
            assert_eq!(
                rejected(line),
                (reply.to_owned(), AfterError::Swallow(4)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            rejected(format!("ms {} 2\r\n", "k".repeat(251)).as_bytes()),
            (
                "CLIENT_ERROR bad command line format".into(),
                AfterError::Swallow(4)
            )
        );
    }

    #[test]
    fn too_large_and_bad_chunk() {
        let limits = Limits {
            max_value_len: 4,
            ..Limits::default()
        };
        assert_eq!(
            super::super::super::decode_request(b"ms k 5\r\n", &limits),
            Decoded::Done {
                item: Err(Rejection::server("object too large for cache")
                    .then(AfterError::Swallow(7))
                    .invalidating(Bytes::from_static(b"k"))),
                consumed: 8,
            }
        );
        assert_eq!(
            rejected(b"ms k 2\r\nabc\r\n"),
            ("CLIENT_ERROR bad data chunk".into(), AfterError::Continue)
        );
    }
}
