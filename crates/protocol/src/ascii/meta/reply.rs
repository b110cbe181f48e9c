//! Meta replies: `<status> <flags>*` lines (with a data block for `VA`) and the `ME` line.

use bytes::{Bytes, BytesMut};

use super::super::response::ResponseError;
use super::super::tokens::{parse_i64, parse_u32, parse_u64, put_i64, put_u64, split};
use super::super::{Response, base64};
use super::put_flag_bytes;
use crate::Decoded;

/// The two-letter status that starts every meta reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaStatus {
    /// `HD`: success, no value.
    Hd,
    /// `VA <size>`: success, a value follows.
    Va,
    /// `EN`: miss.
    En,
    /// `NS`: not stored (add on a present key, replace on a missing one, …).
    Ns,
    /// `EX`: the CAS did not match.
    Ex,
    /// `NF`: not found.
    Nf,
    /// `MN`: the answer to `mn`.
    Mn,
}

impl MetaStatus {
    fn word(self) -> &'static [u8] {
        match self {
            Self::Hd => b"HD",
            Self::Va => b"VA",
            Self::En => b"EN",
            Self::Ns => b"NS",
            Self::Ex => b"EX",
            Self::Nf => b"NF",
            Self::Mn => b"MN",
        }
    }

    pub(crate) fn from_word(word: &[u8]) -> Option<Self> {
        Some(match word {
            b"HD" => Self::Hd,
            b"VA" => Self::Va,
            b"EN" => Self::En,
            b"NS" => Self::Ns,
            b"EX" => Self::Ex,
            b"NF" => Self::Nf,
            b"MN" => Self::Mn,
            _ => return None,
        })
    }
}

/// One meta reply line, with its return flags in the order the request asked for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaResponse {
    /// The status.
    pub status: MetaStatus,
    /// The return flags, in request order (then `W`, `X`, `Z`, which memcached appends).
    pub flags: Vec<ReturnFlag>,
    /// The value, for [`MetaStatus::Va`]; ignored for every other status.
    pub data: Option<Bytes>,
}

impl MetaResponse {
    /// A reply with no flags and no value.
    pub fn new(status: MetaStatus) -> Self {
        Self {
            status,
            flags: Vec::new(),
            data: None,
        }
    }
}

/// A return flag in a meta reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnFlag {
    /// `c<cas>`
    Cas(u64),
    /// `f<flags>`
    ClientFlags(u32),
    /// `h0` / `h1`: whether the item had been fetched before.
    Hit(bool),
    /// `k<key>`, followed by ` b` when the key is binary: then the key is printed in
    /// base64, and `key` holds the decoded bytes.
    Key {
        /// The key.
        key: Bytes,
        /// Print it in base64 and add the `b` flag.
        base64: bool,
    },
    /// `l<seconds>` since the last access.
    LastAccess(u64),
    /// `O<opaque>`, echoed from the request.
    Opaque(Bytes),
    /// `s<size>` of the value.
    Size(u64),
    /// `t<seconds>` of TTL left, `-1` for none.
    Ttl(i64),
    /// `W`: this client won the right to recache.
    Won,
    /// `X`: the item is stale.
    Stale,
    /// `Z`: another client already won the recache.
    AlreadyWon,
}

/// The `ME` reply to `me` on a hit: the key and memcached's `name=value` pairs
/// (`exp`, `la`, `cas`, `fetch`, `cls`, `size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaDebugResponse {
    /// The key as printed: base64 if the request used `b`.
    pub key: Bytes,
    /// The pairs, in order.
    pub fields: Vec<(String, String)>,
}

pub(crate) fn encode(m: &MetaResponse, out: &mut BytesMut) {
    encode_reply(m.status, &m.flags, m.data.as_deref(), out);
}

/// Appends a meta reply from its parts: what [`MetaResponse`] holds, with the value
/// borrowed. A server answering `mg` from its own buffers writes the value straight from
/// them this way, and keeps its flag list for the next reply; building a `MetaResponse`
/// would cost an allocation for each.
///
/// `value` is written only for `VA` (as an empty value if it is `None`).
pub fn encode_reply(
    status: MetaStatus,
    flags: &[ReturnFlag],
    value: Option<&[u8]>,
    out: &mut BytesMut,
) {
    let data = value.filter(|_| status == MetaStatus::Va);
    out.reserve(32 + data.map_or(0, <[u8]>::len));
    encode_reply_head(status, flags, data.map_or(0, <[u8]>::len), out);
    if status == MetaStatus::Va {
        if let Some(d) = data {
            out.extend_from_slice(d);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends the line of [`encode_reply`] alone, for a server that sends a large value from
/// where it is stored: after a [`MetaStatus::Va`] line the caller sends `data_len` bytes
/// and `\r\n`; other statuses have no data block and ignore `data_len`.
pub fn encode_reply_head(
    status: MetaStatus,
    flags: &[ReturnFlag],
    data_len: usize,
    out: &mut BytesMut,
) {
    out.extend_from_slice(status.word());
    if status == MetaStatus::Va {
        out.extend_from_slice(b" ");
        put_u64(out, data_len as u64);
    }
    for flag in flags {
        encode_flag(flag, out);
    }
    out.extend_from_slice(b"\r\n");
}

fn encode_flag(flag: &ReturnFlag, out: &mut BytesMut) {
    match flag {
        ReturnFlag::Cas(v) => {
            out.extend_from_slice(b" c");
            put_u64(out, *v);
        }
        ReturnFlag::ClientFlags(v) => {
            out.extend_from_slice(b" f");
            put_u64(out, u64::from(*v));
        }
        ReturnFlag::Hit(hit) => out.extend_from_slice(if *hit { b" h1" } else { b" h0" }),
        ReturnFlag::Key { key, base64: false } => put_flag_bytes(b'k', key, out),
        ReturnFlag::Key { key, base64: true } => {
            out.extend_from_slice(b" k");
            base64::encode_into(key, out);
            out.extend_from_slice(b" b");
        }
        ReturnFlag::LastAccess(v) => {
            out.extend_from_slice(b" l");
            put_u64(out, *v);
        }
        ReturnFlag::Opaque(o) => put_flag_bytes(b'O', o, out),
        ReturnFlag::Size(v) => {
            out.extend_from_slice(b" s");
            put_u64(out, *v);
        }
        ReturnFlag::Ttl(v) => {
            out.extend_from_slice(b" t");
            put_i64(out, *v);
        }
        ReturnFlag::Won => out.extend_from_slice(b" W"),
        ReturnFlag::Stale => out.extend_from_slice(b" X"),
        ReturnFlag::AlreadyWon => out.extend_from_slice(b" Z"),
    }
}

pub(crate) fn encode_debug(d: &MetaDebugResponse, out: &mut BytesMut) {
    out.extend_from_slice(b"ME ");
    out.extend_from_slice(&d.key);
    for (name, value) in &d.fields {
        out.extend_from_slice(b" ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

const MALFORMED: ResponseError = ResponseError::Malformed { what: "meta" };

fn decode_flag(token: &[u8], flags: &mut Vec<ReturnFlag>) -> Result<(), ResponseError> {
    let Some((&letter, arg)) = token.split_first() else {
        return Err(MALFORMED);
    };
    let flag = match (letter, arg) {
        (b'c', _) => ReturnFlag::Cas(parse_u64(arg).ok_or(MALFORMED)?),
        (b'f', _) => ReturnFlag::ClientFlags(parse_u32(arg).ok_or(MALFORMED)?),
        (b'h', b"0") => ReturnFlag::Hit(false),
        (b'h', b"1") => ReturnFlag::Hit(true),
        (b'k', _) if !arg.is_empty() => ReturnFlag::Key {
            key: Bytes::copy_from_slice(arg),
            base64: false,
        },
        (b'b', b"") => {
            // `b` qualifies the key flag just before it.
            let Some(ReturnFlag::Key { key, base64 }) = flags.last_mut() else {
                return Err(MALFORMED);
            };
            if *base64 {
                return Err(MALFORMED);
            }
            *key = Bytes::from(base64::decode(key).ok_or(MALFORMED)?);
            *base64 = true;
            return Ok(());
        }
        (b'l', _) => ReturnFlag::LastAccess(parse_u64(arg).ok_or(MALFORMED)?),
        (b'O', _) => ReturnFlag::Opaque(Bytes::copy_from_slice(arg)),
        (b's', _) => ReturnFlag::Size(parse_u64(arg).ok_or(MALFORMED)?),
        (b't', _) => ReturnFlag::Ttl(parse_i64(arg).ok_or(MALFORMED)?),
        (b'W', b"") => ReturnFlag::Won,
        (b'X', b"") => ReturnFlag::Stale,
        (b'Z', b"") => ReturnFlag::AlreadyWon,
        _ => return Err(MALFORMED),
    };
    flags.push(flag);
    Ok(())
}

/// Decodes a meta reply whose status word was `status`; `rest` is the line after it and
/// `line_len` the bytes of the line, terminator included.
pub(crate) fn decode(
    status: MetaStatus,
    rest: &[u8],
    buf: &[u8],
    line_len: usize,
) -> Decoded<Result<Response, ResponseError>> {
    let done = |item, consumed| Decoded::Done { item, consumed };
    let mut tokens = split(rest);
    let size = if status == MetaStatus::Va {
        match tokens
            .next()
            .and_then(parse_u64)
            .and_then(|n| usize::try_from(n).ok())
        {
            Some(n) => Some(n),
            None => return done(Err(MALFORMED), line_len),
        }
    } else {
        None
    };
    let mut flags = Vec::new();
    for token in tokens {
        if let Err(e) = decode_flag(token, &mut flags) {
            return done(Err(e), line_len);
        }
    }
    let Some(size) = size else {
        return done(
            Ok(Response::Meta(MetaResponse {
                status,
                flags,
                data: None,
            })),
            line_len,
        );
    };
    match super::super::response::data_block(buf, line_len, size) {
        Decoded::Incomplete => Decoded::Incomplete,
        Decoded::Done { item, consumed } => done(
            item.map(|data| {
                Response::Meta(MetaResponse {
                    status,
                    flags,
                    data: Some(data),
                })
            }),
            consumed,
        ),
    }
}

/// Decodes an `ME` line; `rest` is the line after `ME`.
pub(crate) fn decode_debug(rest: &[u8]) -> Result<Response, ResponseError> {
    const BAD: ResponseError = ResponseError::Malformed { what: "ME" };
    let mut tokens = split(rest);
    let key = tokens.next().ok_or(BAD)?;
    let fields = tokens
        .map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=').ok_or(BAD)?;
            Ok((
                String::from_utf8_lossy(&pair[..eq]).into_owned(),
                String::from_utf8_lossy(&pair[eq + 1..]).into_owned(),
            ))
        })
        .collect::<Result<_, ResponseError>>()?;
    Ok(Response::MetaDebug(MetaDebugResponse {
        key: Bytes::copy_from_slice(key),
        fields,
    }))
}
