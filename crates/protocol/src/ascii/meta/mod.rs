//! The meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`) and their replies.
//!
//! Each command is `<cmd> <key> <flags>*`, where a flag is one letter optionally followed by
//! a token. Flags are kept as typed values in the order the client sent them, because
//! memcached answers with its return flags in request order and a gateway must do the same.
//! A base64 key (`b`) is decoded here; the command remembers that it was base64 so that a
//! `k` in the reply can print it the same way.
//!
//! memcached checks every flag it knows on every meta command and then ignores the ones a
//! command does not use; we do the same, so a flag in a command's typed list is one that
//! command acts on.

pub(crate) mod arith;
pub(crate) mod debug;
pub(crate) mod delete;
pub(crate) mod flags;
pub(crate) mod get;
pub(crate) mod reply;
pub(crate) mod set;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::base64;

/// A meta command's typed flags, in request order. Held inline up to
/// [`INLINE_REQUEST_FLAGS`]: clients send a handful (`k f v`, `s t v`, `T30 F0`), and a
/// heap list was one of the allocations every meta command paid (an `mg` made 3, now 1).
/// The price is size: a flag is 40 bytes (an `O` token is a `Bytes`), so a decoded
/// [`Request`](super::Request) is 248 bytes instead of 104; text gets, which move it
/// just as often, measured the same in alternating runs.
pub type RequestFlags<T> = SmallVec<[T; INLINE_REQUEST_FLAGS]>;

/// Flags a meta request holds without a heap allocation.
pub const INLINE_REQUEST_FLAGS: usize = 4;

pub use arith::{MetaArith, MetaArithFlag, MetaArithMode};
pub use delete::{MetaDelete, MetaDeleteFlag};
pub use get::{MetaGet, MetaGetFlag};
pub use reply::{
    MetaDebugResponse, MetaResponse, MetaStatus, ReturnFlag, encode_reply, encode_reply_head,
};
pub use set::{MetaSet, MetaSetFlag, MetaSetMode};

/// Writes the key token of a meta command: as is, or base64-encoded followed later by the
/// `b` flag, which [`put_base64_flag`] writes.
pub(crate) fn put_key(key: &[u8], base64: bool, out: &mut BytesMut) {
    if base64 {
        base64::encode_into(key, out);
    } else {
        out.extend_from_slice(key);
    }
}

/// Writes ` b` when the key was base64.
pub(crate) fn put_base64_flag(base64: bool, out: &mut BytesMut) {
    if base64 {
        out.extend_from_slice(b" b");
    }
}

/// Writes ` <letter><token>` for a flag with a token (opaque values and the like).
pub(crate) fn put_flag_bytes(letter: u8, token: &Bytes, out: &mut BytesMut) {
    out.extend_from_slice(&[b' ', letter]);
    out.extend_from_slice(token);
}
