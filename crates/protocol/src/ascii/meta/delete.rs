//! `md <key> <flags>*`: meta delete.

use bytes::{Bytes, BytesMut};

use super::super::tokens::{put_i64, put_u64};
use super::super::{Frame, Outcome, Rejection, Request};
use super::flags::{self, Flag};
use super::{RequestFlags, put_base64_flag, put_flag_bytes, put_key};

/// A meta delete: remove an item, or mark it stale, or drop just its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaDelete {
    /// The key, base64-decoded if `base64`.
    pub key: Bytes,
    /// The key was sent in base64 (`b`), so a returned key must be printed in base64.
    pub base64: bool,
    /// The flags `md` acts on, in request order.
    pub flags: RequestFlags<MetaDeleteFlag>,
}

/// A flag of `md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaDeleteFlag {
    /// `C(token)`: delete only if the item's CAS equals this.
    CompareCas(u64),
    /// `E(token)`: use this as the new CAS value (with `I` or `x`).
    NewCas(u64),
    /// `I`: invalidate: mark the item stale and bump its CAS instead of removing it.
    Invalidate,
    /// `k`: return the key.
    ReturnKey,
    /// `O(token)`: echo this opaque token.
    Opaque(Bytes),
    /// `q`: quiet mode, suppress the `HD` of a success.
    Quiet,
    /// `T(token)`: with `I`, the item's new TTL.
    Ttl(i64),
    /// `x`: remove the value but keep the item.
    RemoveValue,
}

impl MetaDelete {
    /// Whether `q` was given.
    pub fn is_quiet(&self) -> bool {
        self.flags.contains(&MetaDeleteFlag::Quiet)
    }

    /// The `O` token, if any.
    pub fn opaque(&self) -> Option<&Bytes> {
        self.flags.iter().find_map(|f| match f {
            MetaDeleteFlag::Opaque(o) => Some(o),
            _ => None,
        })
    }
}

fn typed(flag: Flag<'_>) -> Result<Option<MetaDeleteFlag>, Rejection> {
    Ok(Some(match flag {
        Flag::CompareCas(v) => MetaDeleteFlag::CompareCas(v),
        Flag::NewCas(v) => MetaDeleteFlag::NewCas(v),
        Flag::Invalidate => MetaDeleteFlag::Invalidate,
        Flag::ReturnKey => MetaDeleteFlag::ReturnKey,
        Flag::Opaque(arg) => MetaDeleteFlag::Opaque(flags::opaque(arg)?),
        Flag::Quiet => MetaDeleteFlag::Quiet,
        Flag::Ttl(v) => MetaDeleteFlag::Ttl(v),
        Flag::RemoveValue => MetaDeleteFlag::RemoveValue,
        Flag::Base64
        | Flag::ReturnCas
        | Flag::Delta(_)
        | Flag::ReturnClientFlags
        | Flag::ClientFlags(_)
        | Flag::ReturnHit
        | Flag::Initial(_)
        | Flag::ReturnLastAccess
        | Flag::Mode(_)
        | Flag::Vivify(_)
        | Flag::ProxyHint
        | Flag::Recache(_)
        | Flag::ReturnSize
        | Flag::ReturnTtl
        | Flag::NoBump
        | Flag::ReturnValue => return Ok(None),
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
    frame.line_only(Ok(Request::MetaDelete(MetaDelete {
        key: parsed.key,
        base64: parsed.base64,
        flags: out,
    })))
}

pub(crate) fn encode(m: &MetaDelete, out: &mut BytesMut) {
    out.extend_from_slice(b"md ");
    put_key(&m.key, m.base64, out);
    put_base64_flag(m.base64, out);
    for flag in &m.flags {
        match flag {
            MetaDeleteFlag::CompareCas(v) => {
                out.extend_from_slice(b" C");
                put_u64(out, *v);
            }
            MetaDeleteFlag::NewCas(v) => {
                out.extend_from_slice(b" E");
                put_u64(out, *v);
            }
            MetaDeleteFlag::Invalidate => out.extend_from_slice(b" I"),
            MetaDeleteFlag::ReturnKey => out.extend_from_slice(b" k"),
            MetaDeleteFlag::Opaque(o) => put_flag_bytes(b'O', o, out),
            MetaDeleteFlag::Quiet => out.extend_from_slice(b" q"),
            MetaDeleteFlag::Ttl(v) => {
                out.extend_from_slice(b" T");
                put_i64(out, *v);
            }
            MetaDeleteFlag::RemoveValue => out.extend_from_slice(b" x"),
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{encoded, ok, rejected};
    use super::*;

    #[test]
    fn every_md_flag_in_order() {
        use MetaDeleteFlag as F;
        let wire = b"md foo q C10 E11 I k O1 T30 x\r\n";
        let req = ok(wire);
        let expected = MetaDelete {
            key: Bytes::from_static(b"foo"),
            base64: false,
            flags: smallvec::smallvec![
                F::Quiet,
                F::CompareCas(10),
                F::NewCas(11),
                F::Invalidate,
                F::ReturnKey,
                F::Opaque(Bytes::from_static(b"1")),
                F::Ttl(30),
                F::RemoveValue,
            ],
        };
        assert_eq!(req, Request::MetaDelete(expected.clone()));
        assert_eq!(encoded(&req), wire);
        assert!(expected.is_quiet());
        assert_eq!(expected.opaque(), Some(&Bytes::from_static(b"1")));
    }

    #[test]
    fn base64_and_ignored_flags() {
        let req = ok(b"md Zm9vYg== b v t\r\n");
        assert_eq!(
            req,
            Request::MetaDelete(MetaDelete {
                key: Bytes::from_static(b"foob"),
                base64: true,
                flags: RequestFlags::new(),
            })
        );
        assert_eq!(encoded(&req), b"md Zm9vYg== b\r\n");
    }

    #[test]
    fn md_words_every_flag_error_alike() {
        assert_eq!(rejected(b"md\r\n").0, "ERROR");
        for line in [
            &b"md foo q q\r\n"[..],
            b"md foo z\r\n",
            b"md foo Cx\r\n",
            b"md foo b\r\n",
        ] {
            assert_eq!(
                rejected(line).0,
                "CLIENT_ERROR invalid or duplicate flag",
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            rejected(format!("md {}\r\n", "k".repeat(251)).as_bytes()).0,
            "CLIENT_ERROR bad command line format"
        );
        assert_eq!(
            rejected(format!("md k O{}\r\n", "o".repeat(32)).as_bytes()).0,
            "CLIENT_ERROR opaque token too long"
        );
    }
}
