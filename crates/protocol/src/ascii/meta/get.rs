//! `mg <key> <flags>*`: meta get.

use bytes::{Bytes, BytesMut};

use super::super::tokens::{put_i64, put_u64};
use super::super::{Outcome, Rejection, Request};
use super::flags::{self, Flag};
use super::{RequestFlags, put_base64_flag, put_flag_bytes, put_key};
use crate::{Decoded, Limits};

/// A meta get: fetch (and optionally touch, vivify or race for a recache of) one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaGet {
    /// The key, base64-decoded if `base64`.
    pub key: Bytes,
    /// The key was sent in base64 (`b`), so a returned key must be printed in base64.
    pub base64: bool,
    /// The flags `mg` acts on, in request order.
    pub flags: RequestFlags<MetaGetFlag>,
}

/// A flag of `mg`. The ones named `Return…` ask for a return flag in the reply, in this
/// order; the others change how the item is read or modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaGetFlag {
    /// `c`: return the CAS value.
    ReturnCas,
    /// `f`: return the client flags.
    ReturnClientFlags,
    /// `h`: return whether the item was fetched before (`h0`/`h1`).
    ReturnHit,
    /// `k`: return the key.
    ReturnKey,
    /// `l`: return the seconds since the item was last accessed.
    ReturnLastAccess,
    /// `O(token)`: echo this opaque token.
    Opaque(Bytes),
    /// `q`: quiet mode, suppress the `EN` of a miss.
    Quiet,
    /// `s`: return the value's size.
    ReturnSize,
    /// `t`: return the remaining TTL in seconds (`-1` for none).
    ReturnTtl,
    /// `u`: do not bump the item in the LRU.
    NoBump,
    /// `v`: return the value (`VA` instead of `HD`).
    ReturnValue,
    /// `E(token)`: use this as the new CAS value if the item is modified.
    NewCas(u64),
    /// `N(token)`: on a miss, create an empty item with this TTL and win the recache.
    Vivify(i64),
    /// `R(token)`: win the recache if the remaining TTL is below this.
    Recache(i64),
    /// `T(token)`: update the TTL.
    Touch(i64),
}

impl MetaGet {
    /// Whether `q` was given.
    pub fn is_quiet(&self) -> bool {
        self.flags.contains(&MetaGetFlag::Quiet)
    }

    /// Whether `v` was given.
    pub fn wants_value(&self) -> bool {
        self.flags.contains(&MetaGetFlag::ReturnValue)
    }

    /// The `O` token, if any.
    pub fn opaque(&self) -> Option<&Bytes> {
        self.flags.iter().find_map(|f| match f {
            MetaGetFlag::Opaque(o) => Some(o),
            _ => None,
        })
    }
}

/// `mg <key> <flags>*`, from the text after `mg`; `line_len` is what the line consumes.
/// It is decoded without the general tokeniser, as `get` is: it is as common.
pub(crate) fn parse(args: &[u8], line_len: usize, limits: &Limits) -> Outcome {
    let line_only = |item| Decoded::Done {
        item,
        consumed: line_len,
    };
    let parsed = match flags::parse_args(args, limits) {
        Ok(parsed) => parsed,
        Err(e) => return line_only(Err(e.rejection())),
    };
    let mut out = RequestFlags::with_capacity(parsed.flags.len());
    for flag in parsed.flags {
        let typed = match flag {
            Flag::ReturnCas => MetaGetFlag::ReturnCas,
            Flag::ReturnClientFlags => MetaGetFlag::ReturnClientFlags,
            Flag::ReturnHit => MetaGetFlag::ReturnHit,
            Flag::ReturnKey => MetaGetFlag::ReturnKey,
            Flag::ReturnLastAccess => MetaGetFlag::ReturnLastAccess,
            Flag::Opaque(arg) => match flags::opaque(arg) {
                Ok(o) => MetaGetFlag::Opaque(o),
                Err(rej) => return line_only(Err(rej)),
            },
            Flag::Quiet => MetaGetFlag::Quiet,
            Flag::ReturnSize => MetaGetFlag::ReturnSize,
            Flag::ReturnTtl => MetaGetFlag::ReturnTtl,
            Flag::NoBump => MetaGetFlag::NoBump,
            Flag::ReturnValue => MetaGetFlag::ReturnValue,
            Flag::NewCas(v) => MetaGetFlag::NewCas(v),
            Flag::Vivify(v) => MetaGetFlag::Vivify(v),
            Flag::Recache(v) => MetaGetFlag::Recache(v),
            Flag::Ttl(v) => MetaGetFlag::Touch(v),
            Flag::Base64
            | Flag::CompareCas(_)
            | Flag::Delta(_)
            | Flag::ClientFlags(_)
            | Flag::Invalidate
            | Flag::Initial(_)
            | Flag::Mode(_)
            | Flag::ProxyHint
            | Flag::RemoveValue => continue,
        };
        out.push(typed);
    }
    line_only(Ok::<_, Rejection>(Request::MetaGet(MetaGet {
        key: parsed.key,
        base64: parsed.base64,
        flags: out,
    })))
}

pub(crate) fn encode(m: &MetaGet, out: &mut BytesMut) {
    out.extend_from_slice(b"mg ");
    put_key(&m.key, m.base64, out);
    put_base64_flag(m.base64, out);
    for flag in &m.flags {
        let (letter, number) = match flag {
            MetaGetFlag::ReturnCas => (b'c', None),
            MetaGetFlag::ReturnClientFlags => (b'f', None),
            MetaGetFlag::ReturnHit => (b'h', None),
            MetaGetFlag::ReturnKey => (b'k', None),
            MetaGetFlag::ReturnLastAccess => (b'l', None),
            MetaGetFlag::Opaque(o) => {
                put_flag_bytes(b'O', o, out);
                continue;
            }
            MetaGetFlag::Quiet => (b'q', None),
            MetaGetFlag::ReturnSize => (b's', None),
            MetaGetFlag::ReturnTtl => (b't', None),
            MetaGetFlag::NoBump => (b'u', None),
            MetaGetFlag::ReturnValue => (b'v', None),
            MetaGetFlag::NewCas(v) => {
                out.extend_from_slice(b" E");
                put_u64(out, *v);
                continue;
            }
            MetaGetFlag::Vivify(v) => (b'N', Some(*v)),
            MetaGetFlag::Recache(v) => (b'R', Some(*v)),
            MetaGetFlag::Touch(v) => (b'T', Some(*v)),
        };
        out.extend_from_slice(&[b' ', letter]);
        if let Some(n) = number {
            put_i64(out, n);
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{encoded, ok, rejected};
    use super::*;
    use crate::AfterError;

    fn mg(key: &str, flags: Vec<MetaGetFlag>) -> Request {
        Request::MetaGet(MetaGet {
            key: Bytes::copy_from_slice(key.as_bytes()),
            base64: false,
            flags: flags.into(),
        })
    }

    #[test]
    fn every_mg_flag_in_order() {
        use MetaGetFlag as F;
        let req = ok(b"mg foo v t c f h k l Oabc q s u E99 N30 R10 T-1\r\n");
        assert_eq!(
            req,
            mg(
                "foo",
                vec![
                    F::ReturnValue,
                    F::ReturnTtl,
                    F::ReturnCas,
                    F::ReturnClientFlags,
                    F::ReturnHit,
                    F::ReturnKey,
                    F::ReturnLastAccess,
                    F::Opaque(Bytes::from_static(b"abc")),
                    F::Quiet,
                    F::ReturnSize,
                    F::NoBump,
                    F::NewCas(99),
                    F::Vivify(30),
                    F::Recache(10),
                    F::Touch(-1),
                ]
            )
        );
        assert_eq!(
            encoded(&req),
            b"mg foo v t c f h k l Oabc q s u E99 N30 R10 T-1\r\n"
        );
        let Request::MetaGet(m) = req else {
            panic!("not mg")
        };
        assert!(m.is_quiet() && m.wants_value());
        assert_eq!(m.opaque(), Some(&Bytes::from_static(b"abc")));
    }

    #[test]
    fn bare_mg_and_known_flags_of_other_commands() {
        assert_eq!(ok(b"mg foo\r\n"), mg("foo", vec![]));
        // memcached validates and then ignores flags mg does not use.
        assert_eq!(
            ok(b"mg foo D5 F1 I x P L v\r\n"),
            mg("foo", vec![MetaGetFlag::ReturnValue])
        );
    }

    #[test]
    fn base64_key() {
        let req = ok(b"mg Zm9v b v\r\n");
        assert_eq!(
            req,
            Request::MetaGet(MetaGet {
                key: Bytes::from_static(b"foo"),
                base64: true,
                flags: smallvec::smallvec![MetaGetFlag::ReturnValue],
            })
        );
        assert_eq!(encoded(&req), b"mg Zm9v b v\r\n");
        // A binary key with bytes no text key may contain.
        let Request::MetaGet(m) = ok(b"mg AAEgCg== b\r\n") else {
            panic!("not mg")
        };
        assert_eq!(&m.key[..], b"\x00\x01 \n");
        assert_eq!(
            rejected(b"mg Zm9 b\r\n"),
            (
                "CLIENT_ERROR error decoding key".into(),
                AfterError::Continue
            )
        );
    }

    #[test]
    fn errors_in_memcached_words() {
        assert_eq!(rejected(b"mg\r\n").0, "ERROR");
        let cases: [(&[u8], &str); 12] = [
            (b"mg foo v v\r\n", "CLIENT_ERROR duplicate flag"),
            (b"mg foo \xc3\xa9\r\n", "CLIENT_ERROR duplicate flag"),
            (b"mg foo z\r\n", "CLIENT_ERROR invalid flag"),
            (
                b"mg foo Tabc\r\n",
                "CLIENT_ERROR bad token in command line format",
            ),
            (
                b"mg foo N\r\n",
                "CLIENT_ERROR bad token in command line format",
            ),
            (
                b"mg foo E-1\r\n",
                "CLIENT_ERROR bad token in command line format",
            ),
            (b"mg foo Dx\r\n", "CLIENT_ERROR invalid numeric delta value"),
            (
                b"mg foo Jx\r\n",
                "CLIENT_ERROR invalid numeric initial value",
            ),
            (
                b"mg foo MEE\r\n",
                "CLIENT_ERROR incorrect length for M token",
            ),
            (b"mg foo Fx\r\n", "CLIENT_ERROR bad command line format"),
            (
                b"mg foo Tx Dx\r\n",
                "CLIENT_ERROR invalid numeric delta value",
            ),
            (
                b"mg foo O0123456789012345678901234567890123\r\n",
                "CLIENT_ERROR opaque token too long",
            ),
        ];
        for (line, reply) in cases {
            assert_eq!(
                rejected(line).0,
                reply,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            rejected(format!("mg {} v\r\n", "k".repeat(251)).as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
        // 17 flags is the most memcached allows on an mg line.
        let seventeen = b"mg foo c f h k l O1 q s t u v E1 N1 R1 T1 x P";
        assert!(matches!(
            ok(&[&seventeen[..], b"\r\n"].concat()),
            Request::MetaGet(_)
        ));
        assert_eq!(
            rejected(&[&seventeen[..], b" L\r\n"].concat()).0,
            "CLIENT_ERROR options flags are too long"
        );
    }

    #[test]
    fn opaque_of_31_bytes_is_the_longest() {
        let line = format!("mg foo O{}\r\n", "o".repeat(31));
        assert!(matches!(ok(line.as_bytes()), Request::MetaGet(_)));
    }
}
