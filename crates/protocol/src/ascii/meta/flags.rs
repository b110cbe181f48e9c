//! The flag pre-parse shared by `mg`, `ms`, `md` and `ma`.
//!
//! memcached validates every flag it knows on every meta command (an `mg` with a malformed
//! `D` token is an error even though `mg` ignores `D`), rejects repeats, decodes a base64 key,
//! and only then lets each command pick the flags it uses. We do the same in two steps: this
//! module turns tokens into [`Flag`]s with memcached's error wording, and each command maps
//! the ones it understands into its own typed flag list, keeping their order.

use bytes::Bytes;
use smallvec::SmallVec;

use super::super::base64;
use super::super::tokens::{BAD_FORMAT, Tokens, key_ok, parse_i64, parse_u32, parse_u64, split};
use super::super::{Frame, Rejection};
use super::RequestFlags;
use crate::Limits;

/// memcached's `MFLAG_MAX_OPT_LENGTH`: a meta line may have at most 19 tokens (20 counting
/// its tokenizer's terminator).
const MAX_META_TOKENS: usize = 19;

/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`, which counts the `O` itself.
const MAX_OPAQUE_TOKEN: usize = 32;

/// One flag token, recognised and with its argument parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag<'a> {
    /// `b`: the key is base64 (already decoded into [`Parsed::key`]).
    Base64,
    /// `c`
    ReturnCas,
    /// `C(token)`
    CompareCas(u64),
    /// `D(token)`
    Delta(u64),
    /// `E(token)`
    NewCas(u64),
    /// `f`
    ReturnClientFlags,
    /// `F(token)`
    ClientFlags(u32),
    /// `h`
    ReturnHit,
    /// `I`
    Invalidate,
    /// `J(token)`
    Initial(u64),
    /// `k`
    ReturnKey,
    /// `l`
    ReturnLastAccess,
    /// `M(token)`: the mode character, validated by the command that uses it.
    Mode(u8),
    /// `N(token)`
    Vivify(i64),
    /// `O(token)`
    Opaque(&'a [u8]),
    /// `P` and `L`, which memcached's proxy uses and its server accepts and ignores.
    ProxyHint,
    /// `q`
    Quiet,
    /// `R(token)`
    Recache(i64),
    /// `s`
    ReturnSize,
    /// `T(token)`
    Ttl(i64),
    /// `t`
    ReturnTtl,
    /// `u`
    NoBump,
    /// `v`
    ReturnValue,
    /// `x`
    RemoveValue,
}

/// Flags kept inline by the pre-parse: more than clients send to a command, so the
/// pre-parse allocates nothing (it runs for every meta request).
const INLINE_FLAGS: usize = 8;

/// The flags of one meta line, in request order.
pub(crate) type Flags<'a> = SmallVec<[Flag<'a>; INLINE_FLAGS]>;

/// The key and flags of a meta command line, validated.
pub(crate) struct Parsed<'a> {
    /// The key, base64-decoded if `base64`.
    pub(crate) key: Bytes,
    /// The `b` flag was given.
    pub(crate) base64: bool,
    /// Every flag, in request order.
    pub(crate) flags: Flags<'a>,
}

/// Why a meta line was refused, before the command-specific wording is chosen.
pub(crate) enum MetaError {
    /// `ERROR`: too few tokens for the command.
    Unknown,
    /// A `CLIENT_ERROR` from the key or token-count checks, which every command words alike.
    Line(&'static str),
    /// A `CLIENT_ERROR` from the flag pre-parse; `md` and `ma` replace its wording.
    Flags(&'static str),
}

impl MetaError {
    /// The rejection `mg` and `ms` send, which keep the pre-parse wording.
    pub(crate) fn rejection(self) -> Rejection {
        match self {
            Self::Unknown => Rejection::unknown(),
            Self::Line(msg) | Self::Flags(msg) => Rejection::client(msg),
        }
    }

    /// The rejection `md` and `ma` send: memcached words every flag problem alike for them.
    pub(crate) fn rejection_generic_flags(self) -> Rejection {
        match self {
            Self::Flags(_) => Rejection::client("invalid or duplicate flag"),
            other => other.rejection(),
        }
    }
}

/// Checks the arity, the key and the flags of a meta command whose flags start at token
/// `first_flag` (2, or 3 for `ms` whose token 2 is the data length).
pub(crate) fn parse_line<'a>(
    frame: &Frame<'a>,
    first_flag: usize,
) -> Result<Parsed<'a>, MetaError> {
    let toks: &Tokens<'a> = &frame.tokens;
    let flag_tokens = (first_flag..toks.len()).filter_map(|i| toks.get(i));
    check(toks.get(1), toks.len(), flag_tokens, frame.limits)
}

/// [`parse_line`] for a command whose flags follow its key (`mg`), from the text after
/// the command word: the same checks without the line's tokeniser, which is most of the
/// work for a line this short.
pub(crate) fn parse_args<'a>(args: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, MetaError> {
    let mut tokens = split(args);
    let key = tokens.next();
    // The command and the key, then the flags.
    let token_count = 1 + usize::from(key.is_some()) + tokens.clone().count();
    check(key, token_count, tokens, limits)
}

/// The checks of every meta line, in memcached's order: a key at all, a valid key, at most
/// [`MAX_META_TOKENS`] tokens (`token_count` includes the command), then the flags.
fn check<'a>(
    key: Option<&'a [u8]>,
    token_count: usize,
    flag_tokens: impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
) -> Result<Parsed<'a>, MetaError> {
    let Some(key) = key else {
        return Err(MetaError::Unknown);
    };
    if !key_ok(key, limits.max_key_len) {
        return Err(MetaError::Line(BAD_FORMAT));
    }
    if token_count > MAX_META_TOKENS {
        return Err(MetaError::Line("options flags are too long"));
    }
    preparse(key, flag_tokens).map_err(MetaError::Flags)
}

/// The pre-parse's error state, as memcached keeps it: one message that later soft errors
/// overwrite (its default being the generic one), and whether any error happened at all.
struct SoftErrors {
    failed: bool,
    message: &'static str,
}

impl SoftErrors {
    /// Records a soft error, replacing the message if one is given; yields no flag.
    fn fail<'a>(&mut self, message: Option<&'static str>) -> Option<Flag<'a>> {
        if let Some(message) = message {
            self.message = message;
        }
        self.failed = true;
        None
    }
}

const BAD_TOKEN: Option<&str> = Some("bad token in command line format");

/// memcached's `_meta_flag_preparse`: hard errors (a repeat, an unknown flag) stop at once;
/// soft errors (a bad number) are remembered and the last message wins.
fn preparse<'a>(
    key_token: &'a [u8],
    tokens: impl Iterator<Item = &'a [u8]>,
) -> Result<Parsed<'a>, &'static str> {
    let mut seen = [false; 128];
    let mut errors = SoftErrors {
        failed: false,
        message: BAD_FORMAT,
    };
    let mut key = None;
    let mut flags = Flags::new();
    for token in tokens {
        let Some((&letter, arg)) = token.split_first() else {
            continue;
        };
        // memcached reports a non-ASCII flag byte as a duplicate; we keep its words.
        match seen.get_mut(usize::from(letter)) {
            Some(slot) if !*slot => *slot = true,
            _ => return Err("duplicate flag"),
        }
        let flag = match letter {
            b'b' => {
                key = base64::decode(key_token).map(Bytes::from);
                if key.is_none() {
                    errors.fail(Some("error decoding key"));
                }
                Some(Flag::Base64)
            }
            b'N' => parse_i64(arg)
                .map(Flag::Vivify)
                .or_else(|| errors.fail(BAD_TOKEN)),
            b'T' => parse_i64(arg)
                .map(Flag::Ttl)
                .or_else(|| errors.fail(BAD_TOKEN)),
            b'R' => parse_i64(arg)
                .map(Flag::Recache)
                .or_else(|| errors.fail(BAD_TOKEN)),
            b'C' => parse_u64(arg)
                .map(Flag::CompareCas)
                .or_else(|| errors.fail(BAD_TOKEN)),
            b'E' => parse_u64(arg)
                .map(Flag::NewCas)
                .or_else(|| errors.fail(BAD_TOKEN)),
            // memcached flags a bad `F` without changing the message.
            b'F' => parse_u32(arg)
                .map(Flag::ClientFlags)
                .or_else(|| errors.fail(None)),
            b'J' => parse_u64(arg)
                .map(Flag::Initial)
                .or_else(|| errors.fail(Some("invalid numeric initial value"))),
            b'D' => parse_u64(arg)
                .map(Flag::Delta)
                .or_else(|| errors.fail(Some("invalid numeric delta value"))),
            b'M' => match arg {
                [mode] => Some(Flag::Mode(*mode)),
                _ => errors.fail(Some("incorrect length for M token")),
            },
            b'O' => Some(Flag::Opaque(arg)),
            b'P' | b'L' => Some(Flag::ProxyHint),
            b'c' => Some(Flag::ReturnCas),
            b'f' => Some(Flag::ReturnClientFlags),
            b'h' => Some(Flag::ReturnHit),
            b'I' => Some(Flag::Invalidate),
            b'k' => Some(Flag::ReturnKey),
            b'l' => Some(Flag::ReturnLastAccess),
            b'q' => Some(Flag::Quiet),
            b's' => Some(Flag::ReturnSize),
            b't' => Some(Flag::ReturnTtl),
            b'u' => Some(Flag::NoBump),
            b'v' => Some(Flag::ReturnValue),
            b'x' => Some(Flag::RemoveValue),
            _ => return Err("invalid flag"),
        };
        if let Some(flag) = flag {
            flags.push(flag);
        }
    }
    if errors.failed {
        return Err(errors.message);
    }
    let base64 = key.is_some();
    Ok(Parsed {
        key: key.unwrap_or_else(|| Bytes::copy_from_slice(key_token)),
        base64,
        flags,
    })
}

/// The opaque token as owned bytes, refusing one longer than memcached echoes.
pub(crate) fn opaque(arg: &[u8]) -> Result<Bytes, Rejection> {
    if arg.len() + 1 > MAX_OPAQUE_TOKEN {
        Err(Rejection::client("opaque token too long"))
    } else {
        Ok(Bytes::copy_from_slice(arg))
    }
}

/// Turns a command's parsed flags into its typed flags with `typed`, which answers
/// `Ok(None)` for a flag the command accepts but ignores (as memcached does) and a
/// rejection for one it refuses. The first rejection wins.
pub(crate) fn typed_flags<T>(
    flags: Flags<'_>,
    typed: impl Fn(Flag<'_>) -> Result<Option<T>, Rejection>,
) -> Result<RequestFlags<T>, Rejection> {
    let mut out = RequestFlags::with_capacity(flags.len());
    for flag in flags {
        if let Some(flag) = typed(flag)? {
            out.push(flag);
        }
    }
    Ok(out)
}
