//! `ma <key> <flags>*`: meta arithmetic.

use bytes::{Bytes, BytesMut};

use super::super::tokens::{put_i64, put_u64};
use super::super::{Frame, Outcome, Rejection, Request};
use super::flags::{self, Flag};
use super::{RequestFlags, put_base64_flag, put_flag_bytes, put_key};

/// A meta arithmetic: increment or decrement a counter, optionally creating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaArith {
    /// The key, base64-decoded if `base64`.
    pub key: Bytes,
    /// The key was sent in base64 (`b`), so a returned key must be printed in base64.
    pub base64: bool,
    /// The flags `ma` acts on, in request order.
    pub flags: RequestFlags<MetaArithFlag>,
}

/// A flag of `ma`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaArithFlag {
    /// `C(token)`: apply only if the item's CAS equals this.
    CompareCas(u64),
    /// `E(token)`: use this as the new CAS value.
    NewCas(u64),
    /// `N(token)`: on a miss, create the item with this TTL.
    Vivify(i64),
    /// `J(token)`: the value of an item created by `N` (default 0).
    Initial(u64),
    /// `D(token)`: the delta (default 1).
    Delta(u64),
    /// `T(token)`: update the TTL on success.
    Ttl(i64),
    /// `M(token)`: increment or decrement.
    Mode(MetaArithMode),
    /// `O(token)`: echo this opaque token.
    Opaque(Bytes),
    /// `q`: quiet mode, suppress the `HD` of a success.
    Quiet,
    /// `t`: return the remaining TTL.
    ReturnTtl,
    /// `c`: return the CAS value.
    ReturnCas,
    /// `v`: return the new value (`VA` instead of `HD`).
    ReturnValue,
    /// `k`: return the key.
    ReturnKey,
}

/// The direction of `ma`, from its `M` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaArithMode {
    /// `MI` or `M+`: increment (the default).
    Incr,
    /// `MD` or `M-`: decrement, stopping at 0.
    Decr,
}

impl MetaArith {
    /// Whether `q` was given.
    pub fn is_quiet(&self) -> bool {
        self.flags.contains(&MetaArithFlag::Quiet)
    }

    /// The direction (`Incr` when no `M` flag was given).
    pub fn mode(&self) -> MetaArithMode {
        self.flags
            .iter()
            .find_map(|f| match f {
                MetaArithFlag::Mode(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(MetaArithMode::Incr)
    }

    /// The delta (1 when no `D` flag was given).
    pub fn delta(&self) -> u64 {
        self.flags
            .iter()
            .find_map(|f| match f {
                MetaArithFlag::Delta(d) => Some(*d),
                _ => None,
            })
            .unwrap_or(1)
    }

    /// The `O` token, if any.
    pub fn opaque(&self) -> Option<&Bytes> {
        self.flags.iter().find_map(|f| match f {
            MetaArithFlag::Opaque(o) => Some(o),
            _ => None,
        })
    }
}

fn typed(flag: Flag<'_>) -> Result<Option<MetaArithFlag>, Rejection> {
    Ok(Some(match flag {
        Flag::CompareCas(v) => MetaArithFlag::CompareCas(v),
        Flag::NewCas(v) => MetaArithFlag::NewCas(v),
        Flag::Vivify(v) => MetaArithFlag::Vivify(v),
        Flag::Initial(v) => MetaArithFlag::Initial(v),
        Flag::Delta(v) => MetaArithFlag::Delta(v),
        Flag::Ttl(v) => MetaArithFlag::Ttl(v),
        Flag::Mode(letter) => MetaArithFlag::Mode(match letter {
            b'I' | b'+' => MetaArithMode::Incr,
            b'D' | b'-' => MetaArithMode::Decr,
            _ => return Err(Rejection::client("invalid mode for ma M token")),
        }),
        Flag::Opaque(arg) => MetaArithFlag::Opaque(flags::opaque(arg)?),
        Flag::Quiet => MetaArithFlag::Quiet,
        Flag::ReturnTtl => MetaArithFlag::ReturnTtl,
        Flag::ReturnCas => MetaArithFlag::ReturnCas,
        Flag::ReturnValue => MetaArithFlag::ReturnValue,
        Flag::ReturnKey => MetaArithFlag::ReturnKey,
        Flag::Base64
        | Flag::ReturnClientFlags
        | Flag::ClientFlags(_)
        | Flag::ReturnHit
        | Flag::Invalidate
        | Flag::ReturnLastAccess
        | Flag::ProxyHint
        | Flag::Recache(_)
        | Flag::ReturnSize
        | Flag::NoBump
        | Flag::RemoveValue => return Ok(None),
    }))
}

pub(crate) fn parse(frame: &Frame<'_>) -> Outcome {
    let parsed = match flags::parse_line(frame, 2) {
        Ok(parsed) => parsed,
        Err(e) => return frame.line_only(Err(e.rejection_generic_flags())),
    };
    let out = match flags::typed_flags(parsed.flags, typed) {
        Ok(typed) => typed,
        Err(rej) => return frame.line_only(Err(rej)),
    };
    frame.line_only(Ok(Request::MetaArith(MetaArith {
        key: parsed.key,
        base64: parsed.base64,
        flags: out,
    })))
}

pub(crate) fn encode(m: &MetaArith, out: &mut BytesMut) {
    out.extend_from_slice(b"ma ");
    put_key(&m.key, m.base64, out);
    put_base64_flag(m.base64, out);
    for flag in &m.flags {
        match flag {
            MetaArithFlag::CompareCas(v) => {
                out.extend_from_slice(b" C");
                put_u64(out, *v);
            }
            MetaArithFlag::NewCas(v) => {
                out.extend_from_slice(b" E");
                put_u64(out, *v);
            }
            MetaArithFlag::Vivify(v) => {
                out.extend_from_slice(b" N");
                put_i64(out, *v);
            }
            MetaArithFlag::Initial(v) => {
                out.extend_from_slice(b" J");
                put_u64(out, *v);
            }
            MetaArithFlag::Delta(v) => {
                out.extend_from_slice(b" D");
                put_u64(out, *v);
            }
            MetaArithFlag::Ttl(v) => {
                out.extend_from_slice(b" T");
                put_i64(out, *v);
            }
            MetaArithFlag::Mode(MetaArithMode::Incr) => out.extend_from_slice(b" MI"),
            MetaArithFlag::Mode(MetaArithMode::Decr) => out.extend_from_slice(b" MD"),
            MetaArithFlag::Opaque(o) => put_flag_bytes(b'O', o, out),
            MetaArithFlag::Quiet => out.extend_from_slice(b" q"),
            MetaArithFlag::ReturnTtl => out.extend_from_slice(b" t"),
            MetaArithFlag::ReturnCas => out.extend_from_slice(b" c"),
            MetaArithFlag::ReturnValue => out.extend_from_slice(b" v"),
            MetaArithFlag::ReturnKey => out.extend_from_slice(b" k"),
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{encoded, ok, rejected};
    use super::*;

    #[test]
    fn every_ma_flag_in_order() {
        use MetaArithFlag as F;
        let wire = b"ma n v C1 E2 N3 J4 D5 T6 MD Oop q t c k\r\n";
        let req = ok(wire);
        let expected = MetaArith {
            key: Bytes::from_static(b"n"),
            base64: false,
            flags: smallvec::smallvec![
                F::ReturnValue,
                F::CompareCas(1),
                F::NewCas(2),
                F::Vivify(3),
                F::Initial(4),
                F::Delta(5),
                F::Ttl(6),
                F::Mode(MetaArithMode::Decr),
                F::Opaque(Bytes::from_static(b"op")),
                F::Quiet,
                F::ReturnTtl,
                F::ReturnCas,
                F::ReturnKey,
            ],
        };
        assert_eq!(req, Request::MetaArith(expected.clone()));
        assert_eq!(encoded(&req), wire);
        assert!(expected.is_quiet());
        assert_eq!(expected.delta(), 5);
        assert_eq!(expected.mode(), MetaArithMode::Decr);
        assert_eq!(expected.opaque(), Some(&Bytes::from_static(b"op")));
    }

    #[test]
    fn defaults_and_mode_spellings() {
        let Request::MetaArith(m) = ok(b"ma n\r\n") else {
            panic!("not ma")
        };
        assert_eq!((m.mode(), m.delta()), (MetaArithMode::Incr, 1));
        for (line, mode) in [
            (&b"ma n MI\r\n"[..], MetaArithMode::Incr),
            (b"ma n M+\r\n", MetaArithMode::Incr),
            (b"ma n MD\r\n", MetaArithMode::Decr),
            (b"ma n M-\r\n", MetaArithMode::Decr),
        ] {
            let Request::MetaArith(m) = ok(line) else {
                panic!("not ma")
            };
            assert_eq!(m.mode(), mode);
        }
    }

    #[test]
    fn errors() {
        assert_eq!(rejected(b"ma\r\n").0, "ERROR");
        assert_eq!(
            rejected(b"ma n MX\r\n").0,
            "CLIENT_ERROR invalid mode for ma M token"
        );
        for line in [
            &b"ma n Dx\r\n"[..],
            b"ma n Jx\r\n",
            b"ma n D1 D2\r\n",
            b"ma n y\r\n",
        ] {
            assert_eq!(rejected(line).0, "CLIENT_ERROR invalid or duplicate flag");
        }
    }
}
