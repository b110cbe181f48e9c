//! Requests: typed commands, their decoder (server side) and encoder (client side).

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{FramedLens, HEADER_LEN, RawHeader};
use super::opcode;
use super::response::Response;
use super::status::Status;
use crate::{AfterError, BINARY_REQUEST_MAGIC, Decoded, Limits};

/// Longest SASL mechanism name memcached accepts (`MAX_SASL_MECH_LEN`); longer names are
/// rejected with "Invalid arguments" before any SASL code sees them.
pub const MAX_SASL_MECHANISM_LEN: usize = 32;

/// Largest body of a rejected or unknown frame that the decoder waits for, so it can consume
/// the whole frame and answer [`AfterError::Continue`].
///
/// Bodies beyond this are answered from the header alone and left to the connection to
/// discard ([`AfterError::Swallow`]), so a hostile length (a 2 GiB "value" on a `Get`) is
/// never buffered. 4 KiB covers every malformed frame a confused client plausibly sends (a
/// key or extras of the wrong size), and costs nothing to hold. With limits so small that an
/// accepted frame could not be this long, the smaller bound applies, so that a rejected frame
/// never needs more buffer than an accepted one.
pub const REJECTED_BODY_WAIT_LIMIT: u32 = 4096;

/// The fields of a request header that outlive decoding.
///
/// The lengths are gone (they are implied by the [`Command`]); what remains is what the reply
/// must echo (opcode, opaque) and what the command may use (cas). `datatype` and `vbucket` are
/// kept only so a decoded request re-encodes to the same bytes; memcached ignores both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestHeader {
    /// The opcode byte as received; the response echoes it, quiet variants included.
    pub opcode: u8,
    /// Data type; always 0 (raw bytes) in memcached's protocol, not interpreted.
    pub datatype: u8,
    /// vbucket id (memcached calls it "reserved"); not interpreted.
    pub vbucket: u16,
    /// Opaque token the client uses to match replies to requests; echoed in the reply.
    pub opaque: u32,
    /// Compare-and-swap value: non-zero makes a store, delete, incr or decr conditional.
    pub cas: u64,
}

impl RequestHeader {
    fn from_raw(raw: &RawHeader) -> Self {
        Self {
            opcode: raw.opcode,
            datatype: raw.datatype,
            vbucket: raw.vbucket_or_status,
            opaque: raw.opaque,
            cas: raw.cas,
        }
    }
}

/// One decoded binary request.
///
/// The header and the command travel together because the reply needs both: the command
/// decides what to do, the header what to echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Opcode, opaque, cas and the uninterpreted header fields.
    pub header: RequestHeader,
    /// What the client asked for, with its extras decoded.
    pub command: Command,
}

impl Request {
    /// A request for `command`, with the header's opcode taken from the command and the
    /// uninterpreted fields zero. This is how clients build requests.
    pub fn new(command: Command, opaque: u32, cas: u64) -> Self {
        Self {
            header: RequestHeader {
                opcode: command.opcode(),
                datatype: 0,
                vbucket: 0,
                opaque,
                cas,
            },
            command,
        }
    }
}

/// A binary-protocol command with its extras decoded into typed fields.
///
/// Quiet variants (`GetQ`, `SetQ`, …) and key-returning variants (`GetK`, `GATK`, …) are
/// flags on the base command rather than variants of their own, so the gateway handles
/// `Get` once and asks [`is_quiet`](Self::is_quiet) and [`returns_key`](Self::returns_key)
/// when it replies. [`opcode`](Self::opcode) recovers the exact opcode byte.
///
/// Expiry times are carried exactly as sent: applying memcached's relative/absolute rule
/// needs the clock, which is the caller's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `Get`, `GetQ`, `GetK`, `GetKQ`. A hit replies with the flags in 4 bytes of extras and
    /// the value; a quiet miss sends nothing.
    Get {
        /// The item key.
        key: Bytes,
        /// `GetQ`/`GetKQ`: send nothing on a miss.
        quiet: bool,
        /// `GetK`/`GetKQ`: put the key in the reply (including a miss reply).
        return_key: bool,
    },
    /// `GAT`, `GATQ`, `GATK`, `GATKQ`: get and set a new expiry in one step.
    GetAndTouch {
        /// The item key.
        key: Bytes,
        /// New expiry, as sent.
        exptime: u32,
        /// `GATQ`/`GATKQ`: send nothing on a miss.
        quiet: bool,
        /// `GATK`/`GATKQ`: put the key in the reply.
        return_key: bool,
    },
    /// `Touch`: set a new expiry; a hit replies with the flags but no value.
    Touch {
        /// The item key.
        key: Bytes,
        /// New expiry, as sent.
        exptime: u32,
    },
    /// `Set`/`SetQ`: store unconditionally, or under CAS if the header's cas is non-zero.
    Set {
        /// The item key.
        key: Bytes,
        /// Opaque client flags stored with the item.
        flags: u32,
        /// Expiry, as sent.
        exptime: u32,
        /// The data.
        value: Bytes,
        /// `SetQ`: reply only on failure.
        quiet: bool,
    },
    /// `Add`/`AddQ`: store only if the key is absent ("Data exists for key." otherwise).
    Add {
        /// The item key.
        key: Bytes,
        /// Opaque client flags stored with the item.
        flags: u32,
        /// Expiry, as sent.
        exptime: u32,
        /// The data.
        value: Bytes,
        /// `AddQ`: reply only on failure.
        quiet: bool,
    },
    /// `Replace`/`ReplaceQ`: store only if the key is present ("Not found" otherwise).
    Replace {
        /// The item key.
        key: Bytes,
        /// Opaque client flags stored with the item.
        flags: u32,
        /// Expiry, as sent.
        exptime: u32,
        /// The data.
        value: Bytes,
        /// `ReplaceQ`: reply only on failure.
        quiet: bool,
    },
    /// `Append`/`AppendQ`: add data after an existing value ("Not stored." if absent).
    Append {
        /// The item key.
        key: Bytes,
        /// The data to append.
        value: Bytes,
        /// `AppendQ`: reply only on failure.
        quiet: bool,
    },
    /// `Prepend`/`PrependQ`: add data before an existing value ("Not stored." if absent).
    Prepend {
        /// The item key.
        key: Bytes,
        /// The data to prepend.
        value: Bytes,
        /// `PrependQ`: reply only on failure.
        quiet: bool,
    },
    /// `Delete`/`DeleteQ`: remove the key, under CAS if the header's cas is non-zero.
    Delete {
        /// The item key.
        key: Bytes,
        /// `DeleteQ`: reply only on failure.
        quiet: bool,
    },
    /// `Increment`/`IncrementQ`. The reply's value is the new counter as 8 big-endian bytes.
    Increment {
        /// The item key.
        key: Bytes,
        /// Amount to add (wrapping at 2^64, as memcached does).
        delta: u64,
        /// Value to create the counter with when the key is absent.
        initial: u64,
        /// Expiry for a created counter; `0xffff_ffff` means "do not create, answer Not found".
        exptime: u32,
        /// `IncrementQ`: reply only on failure.
        quiet: bool,
    },
    /// `Decrement`/`DecrementQ`. Counters stop at zero rather than wrap.
    Decrement {
        /// The item key.
        key: Bytes,
        /// Amount to subtract.
        delta: u64,
        /// Value to create the counter with when the key is absent.
        initial: u64,
        /// Expiry for a created counter; `0xffff_ffff` means "do not create, answer Not found".
        exptime: u32,
        /// `DecrementQ`: reply only on failure.
        quiet: bool,
    },
    /// `Quit`/`QuitQ`: reply (unless quiet), then close the connection.
    Quit {
        /// `QuitQ`: close without replying.
        quiet: bool,
    },
    /// `Flush`/`FlushQ`: invalidate every item, now or at `exptime`.
    Flush {
        /// The optional 4-byte extras: `None` when absent, which memcached treats like 0.
        exptime: Option<u32>,
        /// `FlushQ`: reply only on failure.
        quiet: bool,
    },
    /// `No-op`: reply at once; clients send it after a run of quiet commands to learn that
    /// all of them were processed.
    Noop,
    /// `Version`: reply with the version string as the value.
    Version,
    /// `Stat`: reply with one packet per statistic (key = name, value = value), then a packet
    /// with an empty key.
    Stat {
        /// The statistics group ("settings", "items", …); empty for the general set.
        group: Bytes,
    },
    /// `Verbosity`: set the logging level. (memcached 1.6 no longer serves it; it is decoded so
    /// the gateway can choose.)
    Verbosity {
        /// The requested level.
        level: u32,
    },
    /// `SASL list mechs`: reply with the mechanism names, space separated.
    SaslListMechs,
    /// `SASL Auth`: the first step of an authentication.
    SaslAuth {
        /// The mechanism name, e.g. `PLAIN`.
        mechanism: Bytes,
        /// The client's initial response (for PLAIN, see [`parse_sasl_plain`](super::parse_sasl_plain)).
        data: Bytes,
    },
    /// `SASL Step`: a further step of a multi-step authentication.
    SaslStep {
        /// The mechanism name.
        mechanism: Bytes,
        /// The client's response to the last challenge.
        data: Bytes,
    },
    /// An opcode memcached does not serve. The gateway answers
    /// [`Status::UnknownCommand`] and carries on; the body, if any, has been consumed.
    Unknown {
        /// The opcode byte, for the reply to echo.
        opcode: u8,
    },
}

impl Command {
    /// The opcode byte that frames this command, quiet and key-returning variants included.
    pub fn opcode(&self) -> u8 {
        match self {
            Command::Get {
                quiet, return_key, ..
            } => match (*quiet, *return_key) {
                (false, false) => opcode::GET,
                (true, false) => opcode::GETQ,
                (false, true) => opcode::GETK,
                (true, true) => opcode::GETKQ,
            },
            Command::GetAndTouch {
                quiet, return_key, ..
            } => match (*quiet, *return_key) {
                (false, false) => opcode::GAT,
                (true, false) => opcode::GATQ,
                (false, true) => opcode::GATK,
                (true, true) => opcode::GATKQ,
            },
            Command::Touch { .. } => opcode::TOUCH,
            Command::Set { quiet, .. } => pick(*quiet, opcode::SET, opcode::SETQ),
            Command::Add { quiet, .. } => pick(*quiet, opcode::ADD, opcode::ADDQ),
            Command::Replace { quiet, .. } => pick(*quiet, opcode::REPLACE, opcode::REPLACEQ),
            Command::Append { quiet, .. } => pick(*quiet, opcode::APPEND, opcode::APPENDQ),
            Command::Prepend { quiet, .. } => pick(*quiet, opcode::PREPEND, opcode::PREPENDQ),
            Command::Delete { quiet, .. } => pick(*quiet, opcode::DELETE, opcode::DELETEQ),
            Command::Increment { quiet, .. } => pick(*quiet, opcode::INCREMENT, opcode::INCREMENTQ),
            Command::Decrement { quiet, .. } => pick(*quiet, opcode::DECREMENT, opcode::DECREMENTQ),
            Command::Quit { quiet } => pick(*quiet, opcode::QUIT, opcode::QUITQ),
            Command::Flush { quiet, .. } => pick(*quiet, opcode::FLUSH, opcode::FLUSHQ),
            Command::Noop => opcode::NOOP,
            Command::Version => opcode::VERSION,
            Command::Stat { .. } => opcode::STAT,
            Command::Verbosity { .. } => opcode::VERBOSITY,
            Command::SaslListMechs => opcode::SASL_LIST_MECHS,
            Command::SaslAuth { .. } => opcode::SASL_AUTH,
            Command::SaslStep { .. } => opcode::SASL_STEP,
            Command::Unknown { opcode } => *opcode,
        }
    }

    /// Whether this is a quiet variant.
    ///
    /// memcached's rule: a quiet get sends nothing on a miss; any other quiet command sends
    /// nothing on success. Errors are always sent.
    pub fn is_quiet(&self) -> bool {
        match self {
            Command::Get { quiet, .. }
            | Command::GetAndTouch { quiet, .. }
            | Command::Set { quiet, .. }
            | Command::Add { quiet, .. }
            | Command::Replace { quiet, .. }
            | Command::Append { quiet, .. }
            | Command::Prepend { quiet, .. }
            | Command::Delete { quiet, .. }
            | Command::Increment { quiet, .. }
            | Command::Decrement { quiet, .. }
            | Command::Quit { quiet }
            | Command::Flush { quiet, .. } => *quiet,
            Command::Touch { .. }
            | Command::Noop
            | Command::Version
            | Command::Stat { .. }
            | Command::Verbosity { .. }
            | Command::SaslListMechs
            | Command::SaslAuth { .. }
            | Command::SaslStep { .. }
            | Command::Unknown { .. } => false,
        }
    }

    /// Whether the reply carries the key (`GetK`, `GetKQ`, `GATK`, `GATKQ`), on a hit and on a
    /// miss alike.
    pub fn returns_key(&self) -> bool {
        match self {
            Command::Get { return_key, .. } | Command::GetAndTouch { return_key, .. } => {
                *return_key
            }
            _ => false,
        }
    }

    /// The key of the item this command reads or writes, for routing; `None` for commands
    /// that address no item (the key field of `Stat` and SASL frames means something else).
    pub fn item_key(&self) -> Option<&Bytes> {
        match self {
            Command::Get { key, .. }
            | Command::GetAndTouch { key, .. }
            | Command::Touch { key, .. }
            | Command::Set { key, .. }
            | Command::Add { key, .. }
            | Command::Replace { key, .. }
            | Command::Append { key, .. }
            | Command::Prepend { key, .. }
            | Command::Delete { key, .. }
            | Command::Increment { key, .. }
            | Command::Decrement { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The bytes framed in the key field.
    fn wire_key(&self) -> &[u8] {
        match self {
            Command::Stat { group } => group,
            Command::SaslAuth { mechanism, .. } | Command::SaslStep { mechanism, .. } => mechanism,
            other => other.item_key().map_or(&[], |k| &k[..]),
        }
    }

    /// The bytes framed in the value field.
    fn wire_value(&self) -> &[u8] {
        match self {
            Command::Set { value, .. }
            | Command::Add { value, .. }
            | Command::Replace { value, .. }
            | Command::Append { value, .. }
            | Command::Prepend { value, .. } => value,
            Command::SaslAuth { data, .. } | Command::SaslStep { data, .. } => data,
            _ => &[],
        }
    }

    /// Length of the extras this command frames; always one the decoder accepts.
    fn extras_len(&self) -> usize {
        match self {
            Command::Set { .. } | Command::Add { .. } | Command::Replace { .. } => 8,
            Command::Increment { .. } | Command::Decrement { .. } => 20,
            Command::GetAndTouch { .. }
            | Command::Touch { .. }
            | Command::Verbosity { .. }
            | Command::Flush {
                exptime: Some(_), ..
            } => 4,
            _ => 0,
        }
    }

    fn put_extras(&self, out: &mut BytesMut) {
        match self {
            Command::Set { flags, exptime, .. }
            | Command::Add { flags, exptime, .. }
            | Command::Replace { flags, exptime, .. } => {
                out.put_u32(*flags);
                out.put_u32(*exptime);
            }
            Command::Increment {
                delta,
                initial,
                exptime,
                ..
            }
            | Command::Decrement {
                delta,
                initial,
                exptime,
                ..
            } => {
                out.put_u64(*delta);
                out.put_u64(*initial);
                out.put_u32(*exptime);
            }
            Command::GetAndTouch { exptime, .. }
            | Command::Touch { exptime, .. }
            | Command::Flush {
                exptime: Some(exptime),
                ..
            } => out.put_u32(*exptime),
            Command::Verbosity { level } => out.put_u32(*level),
            _ => {}
        }
    }
}

fn pick(quiet: bool, loud: u8, silent: u8) -> u8 {
    if quiet { silent } else { loud }
}

/// What a connection does with a request the decoder refused.
///
/// The decoder, not the connection, decides the reply, because only it knows why the frame
/// was refused; and it decides what happens to the unread body, because only it knows how
/// much of the frame it consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reply to send: memcached's status and error text, echoing opcode and opaque.
    pub response: Response,
    /// What to do after sending it.
    pub after: AfterError,
}

/// The commands memcached serves, grouped by how their frames are shaped and built.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Get { quiet: bool, return_key: bool },
    GetAndTouch { quiet: bool, return_key: bool },
    Touch,
    Set { quiet: bool },
    Add { quiet: bool },
    Replace { quiet: bool },
    Append { quiet: bool },
    Prepend { quiet: bool },
    Delete { quiet: bool },
    Increment { quiet: bool },
    Decrement { quiet: bool },
    Quit { quiet: bool },
    Flush { quiet: bool },
    Noop,
    Version,
    Stat,
    Verbosity,
    SaslListMechs,
    SaslAuth,
    SaslStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRule {
    Required,
    Forbidden,
    Optional,
}

/// What a command's frame must look like: memcached's per-opcode checks in
/// `dispatch_bin_command`, tightened where memcached would lose sync (see `Kind::shape`).
struct Shape {
    extras: &'static [u8],
    key: KeyRule,
    value: bool,
}

impl Kind {
    fn of(op: u8) -> Option<Self> {
        let get = |quiet, return_key| Kind::Get { quiet, return_key };
        let gat = |quiet, return_key| Kind::GetAndTouch { quiet, return_key };
        Some(match op {
            opcode::GET => get(false, false),
            opcode::GETQ => get(true, false),
            opcode::GETK => get(false, true),
            opcode::GETKQ => get(true, true),
            opcode::GAT => gat(false, false),
            opcode::GATQ => gat(true, false),
            opcode::GATK => gat(false, true),
            opcode::GATKQ => gat(true, true),
            opcode::TOUCH => Kind::Touch,
            opcode::SET | opcode::SETQ => Kind::Set {
                quiet: op == opcode::SETQ,
            },
            opcode::ADD | opcode::ADDQ => Kind::Add {
                quiet: op == opcode::ADDQ,
            },
            opcode::REPLACE | opcode::REPLACEQ => Kind::Replace {
                quiet: op == opcode::REPLACEQ,
            },
            opcode::APPEND | opcode::APPENDQ => Kind::Append {
                quiet: op == opcode::APPENDQ,
            },
            opcode::PREPEND | opcode::PREPENDQ => Kind::Prepend {
                quiet: op == opcode::PREPENDQ,
            },
            opcode::DELETE | opcode::DELETEQ => Kind::Delete {
                quiet: op == opcode::DELETEQ,
            },
            opcode::INCREMENT | opcode::INCREMENTQ => Kind::Increment {
                quiet: op == opcode::INCREMENTQ,
            },
            opcode::DECREMENT | opcode::DECREMENTQ => Kind::Decrement {
                quiet: op == opcode::DECREMENTQ,
            },
            opcode::QUIT | opcode::QUITQ => Kind::Quit {
                quiet: op == opcode::QUITQ,
            },
            opcode::FLUSH | opcode::FLUSHQ => Kind::Flush {
                quiet: op == opcode::FLUSHQ,
            },
            opcode::NOOP => Kind::Noop,
            opcode::VERSION => Kind::Version,
            opcode::STAT => Kind::Stat,
            opcode::VERBOSITY => Kind::Verbosity,
            opcode::SASL_LIST_MECHS => Kind::SaslListMechs,
            opcode::SASL_AUTH => Kind::SaslAuth,
            opcode::SASL_STEP => Kind::SaslStep,
            _ => return None,
        })
    }

    /// The frame shape each command requires.
    ///
    /// memcached does not check the body length of `Touch`, `GAT*` and `Stat`: a value sent
    /// with them is read as the start of the next command. We refuse the value instead, which
    /// keeps the stream in step.
    fn shape(self) -> Shape {
        use KeyRule::{Forbidden, Optional, Required};
        let shape = |extras, key, value| Shape { extras, key, value };
        match self {
            Kind::Get { .. } | Kind::Delete { .. } => shape(&[0], Required, false),
            Kind::GetAndTouch { .. } | Kind::Touch => shape(&[4], Required, false),
            Kind::Set { .. } | Kind::Add { .. } | Kind::Replace { .. } => {
                shape(&[8], Required, true)
            }
            Kind::Append { .. } | Kind::Prepend { .. } | Kind::SaslAuth | Kind::SaslStep => {
                shape(&[0], Required, true)
            }
            Kind::Increment { .. } | Kind::Decrement { .. } => shape(&[20], Required, false),
            Kind::Flush { .. } => shape(&[0, 4], Forbidden, false),
            Kind::Verbosity => shape(&[4], Forbidden, false),
            Kind::Stat => shape(&[0], Optional, false),
            Kind::Quit { .. } | Kind::Noop | Kind::Version | Kind::SaslListMechs => {
                shape(&[0], Forbidden, false)
            }
        }
    }

    /// Builds the command from a frame whose shape has been checked; `value` is the
    /// frame's value, already copied or sliced out (see [`decode_request_shared`]).
    fn build(self, extras: &[u8], key: &[u8], value: Bytes) -> Command {
        let key_bytes = || Bytes::copy_from_slice(key);
        match self {
            Kind::Get { quiet, return_key } => Command::Get {
                key: key_bytes(),
                quiet,
                return_key,
            },
            Kind::GetAndTouch { quiet, return_key } => Command::GetAndTouch {
                key: key_bytes(),
                exptime: be_u32(extras, 0),
                quiet,
                return_key,
            },
            Kind::Touch => Command::Touch {
                key: key_bytes(),
                exptime: be_u32(extras, 0),
            },
            Kind::Set { quiet } => Command::Set {
                key: key_bytes(),
                flags: be_u32(extras, 0),
                exptime: be_u32(extras, 4),
                value,
                quiet,
            },
            Kind::Add { quiet } => Command::Add {
                key: key_bytes(),
                flags: be_u32(extras, 0),
                exptime: be_u32(extras, 4),
                value,
                quiet,
            },
            Kind::Replace { quiet } => Command::Replace {
                key: key_bytes(),
                flags: be_u32(extras, 0),
                exptime: be_u32(extras, 4),
                value,
                quiet,
            },
            Kind::Append { quiet } => Command::Append {
                key: key_bytes(),
                value,
                quiet,
            },
            Kind::Prepend { quiet } => Command::Prepend {
                key: key_bytes(),
                value,
                quiet,
            },
            Kind::Delete { quiet } => Command::Delete {
                key: key_bytes(),
                quiet,
            },
            Kind::Increment { quiet } => Command::Increment {
                key: key_bytes(),
                delta: be_u64(extras, 0),
                initial: be_u64(extras, 8),
                exptime: be_u32(extras, 16),
                quiet,
            },
            Kind::Decrement { quiet } => Command::Decrement {
                key: key_bytes(),
                delta: be_u64(extras, 0),
                initial: be_u64(extras, 8),
                exptime: be_u32(extras, 16),
                quiet,
            },
            Kind::Quit { quiet } => Command::Quit { quiet },
            Kind::Flush { quiet } => Command::Flush {
                exptime: (extras.len() == 4).then(|| be_u32(extras, 0)),
                quiet,
            },
            Kind::Noop => Command::Noop,
            Kind::Version => Command::Version,
            Kind::Stat => Command::Stat { group: key_bytes() },
            Kind::Verbosity => Command::Verbosity {
                level: be_u32(extras, 0),
            },
            Kind::SaslListMechs => Command::SaslListMechs,
            Kind::SaslAuth => Command::SaslAuth {
                mechanism: key_bytes(),
                data: value,
            },
            Kind::SaslStep => Command::SaslStep {
                mechanism: key_bytes(),
                data: value,
            },
        }
    }
}

/// Reads a big-endian u32 at `at`. Callers have checked the extras length; a short slice
/// reads as 0 rather than panicking.
fn be_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_be_bytes)
}

/// Reads a big-endian u64 at `at`; see [`be_u32`].
fn be_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The decoder's judgement of a header, made before any of the body is needed.
enum Verdict {
    Accept(Kind),
    Unknown,
    Reject(Status),
}

/// Checks a header in memcached's order: lengths, key size, opcode, shape, value size.
fn judge(raw: &RawHeader, limits: &Limits) -> Verdict {
    if !raw.lengths_consistent() || usize::from(raw.key_len) > limits.max_key_len {
        return Verdict::Reject(Status::InvalidArguments);
    }
    let Some(kind) = Kind::of(raw.opcode) else {
        return Verdict::Unknown;
    };
    let shape = kind.shape();
    let key_ok = match shape.key {
        KeyRule::Required => raw.key_len > 0,
        KeyRule::Forbidden => raw.key_len == 0,
        KeyRule::Optional => true,
    };
    let value_len = raw.value_len();
    if !shape.extras.contains(&raw.extras_len) || !key_ok || (!shape.value && value_len > 0) {
        return Verdict::Reject(Status::InvalidArguments);
    }
    if matches!(kind, Kind::SaslAuth | Kind::SaslStep)
        && usize::from(raw.key_len) > MAX_SASL_MECHANISM_LEN
    {
        return Verdict::Reject(Status::InvalidArguments);
    }
    if value_len as usize > limits.max_value_len {
        return Verdict::Reject(Status::ValueTooLarge);
    }
    Verdict::Accept(kind)
}

/// Decodes one request from the front of `buf` (server side).
///
/// - `Incomplete`: more bytes are needed; nothing is consumed.
/// - `Done { item: Ok(request), consumed }`: a whole frame, `consumed` = 24 + body length.
///   Unknown opcodes decode to [`Command::Unknown`] when their body is small.
/// - `Done { item: Err(rejection), consumed }`: send `rejection.response`, then follow
///   `rejection.after`. A bad magic byte closes. A malformed or oversized frame whose body
///   is at most [`REJECTED_BODY_WAIT_LIMIT`] (or what `limits` allow a valid frame, if less)
///   is waited for and consumed whole (`Continue`); a larger one consumes only the header
///   and asks to `Swallow` the body, which is never buffered.
///
/// The decoder never answers `Incomplete` to a buffer of [`max_request_len`] bytes, so a
/// connection's read buffer need never grow beyond that.
pub fn decode_request(buf: &[u8], limits: &Limits) -> Decoded<Result<Request, Rejection>> {
    decode(buf, None, limits)
}

/// [`decode_request`] over shared bytes: a value is a slice of `buf` rather than a copy.
/// The answer is the one `decode_request` gives for the same bytes. See
/// `ascii::decode_request_shared` for why.
pub fn decode_request_shared(buf: &Bytes, limits: &Limits) -> Decoded<Result<Request, Rejection>> {
    decode(buf, Some(buf), limits)
}

fn decode(
    buf: &[u8],
    shared: Option<&Bytes>,
    limits: &Limits,
) -> Decoded<Result<Request, Rejection>> {
    let Some(&magic) = buf.first() else {
        return Decoded::Incomplete;
    };
    if magic != BINARY_REQUEST_MAGIC {
        // memcached closes silently. Nothing after this byte can be framed, so there is no
        // opcode or opaque to echo; the reply only tells a human with a packet dump why.
        return Decoded::Done {
            item: Err(Rejection {
                response: Response::for_request(
                    &RequestHeader::default(),
                    Status::InvalidArguments,
                ),
                after: AfterError::Close,
            }),
            consumed: 1,
        };
    }
    let Some(raw) = RawHeader::parse(buf) else {
        return Decoded::Incomplete;
    };
    let header = RequestHeader::from_raw(&raw);
    match judge(&raw, limits) {
        Verdict::Accept(kind) => {
            let frame_len = HEADER_LEN.saturating_add(raw.body_len as usize);
            let Some(body) = buf.get(HEADER_LEN..frame_len) else {
                return Decoded::Incomplete;
            };
            let Some((extras, key, value)) = raw.split_body(body) else {
                // `judge` has checked the lengths; should that ever change, this is still
                // just an inconsistent frame.
                return reject(buf, &raw, &header, limits, Status::InvalidArguments);
            };
            let value = match shared {
                Some(shared) => shared.slice(frame_len - value.len()..frame_len),
                None => Bytes::copy_from_slice(value),
            };
            Decoded::Done {
                item: Ok(Request {
                    header,
                    command: kind.build(extras, key, value),
                }),
                consumed: frame_len,
            }
        }
        Verdict::Unknown if raw.body_len <= wait_limit(limits) => {
            let frame_len = HEADER_LEN + raw.body_len as usize;
            if buf.len() < frame_len {
                return Decoded::Incomplete;
            }
            Decoded::Done {
                item: Ok(Request {
                    header,
                    command: Command::Unknown { opcode: raw.opcode },
                }),
                consumed: frame_len,
            }
        }
        Verdict::Unknown => reject(buf, &raw, &header, limits, Status::UnknownCommand),
        Verdict::Reject(status) => reject(buf, &raw, &header, limits, status),
    }
}

/// The whole length of the request at the front of `buf`, once its header has arrived, if
/// [`decode_request`] will wait for all of it (an accepted frame); `None` otherwise. See
/// `ascii::expected_frame_len` for why a caller wants it.
pub fn expected_frame_len(buf: &[u8], limits: &Limits) -> Option<usize> {
    if buf.first() != Some(&BINARY_REQUEST_MAGIC) {
        return None;
    }
    let raw = RawHeader::parse(buf)?;
    match judge(&raw, limits) {
        Verdict::Accept(_) => Some(HEADER_LEN.saturating_add(raw.body_len as usize)),
        Verdict::Unknown | Verdict::Reject(_) => None,
    }
}

/// The largest body an accepted frame can have under `limits`: the longest extras (an
/// incr/decr's 20 bytes), the longest key and the largest value.
fn max_accepted_body(limits: &Limits) -> usize {
    20_usize
        .saturating_add(limits.max_key_len)
        .saturating_add(limits.max_value_len)
}

/// The longest frame [`decode_request`] ever waits for under `limits`: a read buffer this
/// large always holds enough to decode or reject the request at its front.
pub fn max_request_len(limits: &Limits) -> usize {
    HEADER_LEN.saturating_add(max_accepted_body(limits))
}

/// See [`REJECTED_BODY_WAIT_LIMIT`].
fn wait_limit(limits: &Limits) -> u32 {
    let accepted = u32::try_from(max_accepted_body(limits)).unwrap_or(u32::MAX);
    REJECTED_BODY_WAIT_LIMIT.min(accepted)
}

fn reject(
    buf: &[u8],
    raw: &RawHeader,
    header: &RequestHeader,
    limits: &Limits,
    status: Status,
) -> Decoded<Result<Request, Rejection>> {
    let response = Response::for_request(header, status);
    if raw.body_len <= wait_limit(limits) {
        let frame_len = HEADER_LEN + raw.body_len as usize;
        if buf.len() < frame_len {
            return Decoded::Incomplete;
        }
        Decoded::Done {
            item: Err(Rejection {
                response,
                after: AfterError::Continue,
            }),
            consumed: frame_len,
        }
    } else {
        Decoded::Done {
            item: Err(Rejection {
                response,
                after: AfterError::Swallow(u64::from(raw.body_len)),
            }),
            consumed: HEADER_LEN,
        }
    }
}

/// Appends the wire form of `req` to `out` (client side: tests and `murakumo bench`).
///
/// The opcode comes from the command, so quiet and key-returning variants frame as such
/// whatever `req.header.opcode` says. A key over 65,535 bytes or a body over 4 GiB cannot be
/// described by the header and is truncated to fit, keeping the stream framed.
pub fn encode_request(req: &Request, out: &mut BytesMut) {
    let cmd = &req.command;
    let key = cmd.wire_key();
    let value = cmd.wire_value();
    let lens = FramedLens::fit(cmd.extras_len(), key.len(), value.len());
    out.reserve(HEADER_LEN + lens.body() as usize);
    RawHeader {
        magic: BINARY_REQUEST_MAGIC,
        opcode: cmd.opcode(),
        key_len: lens.key as u16,
        extras_len: lens.extras as u8,
        datatype: req.header.datatype,
        vbucket_or_status: req.header.vbucket,
        body_len: lens.body(),
        opaque: req.header.opaque,
        cas: req.header.cas,
    }
    .write(out);
    cmd.put_extras(out);
    out.extend_from_slice(&key[..lens.key]);
    out.extend_from_slice(&value[..lens.value]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames a request by hand, so the tests check the decoder against the wire format
    /// rather than against our own encoder.
    fn frame(op: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = extras.len() + key.len() + value.len();
        let mut v = vec![0x80, op];
        v.extend_from_slice(&(key.len() as u16).to_be_bytes());
        v.push(extras.len() as u8);
        v.push(0);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&(body as u32).to_be_bytes());
        v.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
        v.extend_from_slice(&0x0102_0304_0506_0708_u64.to_be_bytes());
        v.extend_from_slice(extras);
        v.extend_from_slice(key);
        v.extend_from_slice(value);
        v
    }

    /// A header claiming `body_len` with the given extras and key lengths, and no body bytes.
    fn header_only(op: u8, extras_len: u8, key_len: u16, body_len: u32) -> Vec<u8> {
        let mut v = vec![0x80, op];
        v.extend_from_slice(&key_len.to_be_bytes());
        v.push(extras_len);
        v.push(0);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&body_len.to_be_bytes());
        v.extend_from_slice(&7_u32.to_be_bytes());
        v.extend_from_slice(&0_u64.to_be_bytes());
        v
    }

    fn ok(buf: &[u8]) -> Request {
        match decode_request(buf, &Limits::default()) {
            Decoded::Done {
                item: Ok(req),
                consumed,
            } => {
                assert_eq!(consumed, buf.len());
                assert_eq!(req.header.opcode, buf[1]);
                assert_eq!(req.header.opaque, 0xdead_beef);
                assert_eq!(req.header.cas, 0x0102_0304_0506_0708);
                assert_eq!(req.command.opcode(), buf[1]);
                req
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn rejected(buf: &[u8], limits: &Limits) -> (Rejection, usize) {
        match decode_request(buf, limits) {
            Decoded::Done {
                item: Err(rej),
                consumed,
            } => (rej, consumed),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn invalid(buf: &[u8]) {
        let (rej, consumed) = rejected(buf, &Limits::default());
        assert_eq!(rej.response.status, Status::InvalidArguments);
        assert_eq!(&rej.response.value[..], b"Invalid arguments");
        assert_eq!(rej.response.opcode, buf[1]);
        assert_eq!(rej.after, AfterError::Continue);
        assert_eq!(consumed, buf.len());
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn get_family() {
        for (op, quiet, return_key) in [
            (opcode::GET, false, false),
            (opcode::GETQ, true, false),
            (opcode::GETK, false, true),
            (opcode::GETKQ, true, true),
        ] {
            let req = ok(&frame(op, &[], b"foo", &[]));
            assert_eq!(
                req.command,
                Command::Get {
                    key: b("foo"),
                    quiet,
                    return_key
                }
            );
            assert_eq!(req.command.is_quiet(), quiet);
            assert_eq!(req.command.returns_key(), return_key);
            assert_eq!(req.command.item_key(), Some(&b("foo")));
            invalid(&frame(op, &[], b"", &[]));
            invalid(&frame(op, &[0; 4], b"foo", &[]));
            invalid(&frame(op, &[], b"foo", b"v"));
        }
    }

    #[test]
    fn gat_family_and_touch() {
        let exp = 0x0000_0e10_u32.to_be_bytes();
        for (op, quiet, return_key) in [
            (opcode::GAT, false, false),
            (opcode::GATQ, true, false),
            (opcode::GATK, false, true),
            (opcode::GATKQ, true, true),
        ] {
            let req = ok(&frame(op, &exp, b"k", &[]));
            assert_eq!(
                req.command,
                Command::GetAndTouch {
                    key: b("k"),
                    exptime: 3600,
                    quiet,
                    return_key
                }
            );
            invalid(&frame(op, &[], b"k", &[]));
            invalid(&frame(op, &exp, b"", &[]));
            invalid(&frame(op, &exp, b"k", b"v"));
        }
        let req = ok(&frame(opcode::TOUCH, &exp, b"k", &[]));
        assert_eq!(
            req.command,
            Command::Touch {
                key: b("k"),
                exptime: 3600
            }
        );
        assert!(!req.command.is_quiet());
        invalid(&frame(opcode::TOUCH, &[0; 8], b"k", &[]));
        invalid(&frame(opcode::TOUCH, &exp, b"", &[]));
    }

    #[test]
    fn storage_family() {
        let mut extras = 0xcafe_u32.to_be_bytes().to_vec();
        extras.extend_from_slice(&100_u32.to_be_bytes());
        let cases: [(u8, MakeStore, bool); 6] = [
            (opcode::SET, set, false),
            (opcode::SETQ, set, true),
            (opcode::ADD, add, false),
            (opcode::ADDQ, add, true),
            (opcode::REPLACE, replace, false),
            (opcode::REPLACEQ, replace, true),
        ];
        for (op, make, quiet) in cases {
            let req = ok(&frame(op, &extras, b"key", b"value"));
            assert_eq!(req.command, make(b("key"), b("value"), quiet));
            assert_eq!(req.command.is_quiet(), quiet);
            // An empty value is a valid value.
            let req = ok(&frame(op, &extras, b"key", b""));
            assert_eq!(req.command, make(b("key"), Bytes::new(), quiet));
            invalid(&frame(op, &extras[..4], b"key", b"value"));
            invalid(&frame(op, &[], b"key", b"value"));
            invalid(&frame(op, &extras, b"", b"value"));
        }
    }

    type MakeStore = fn(Bytes, Bytes, bool) -> Command;

    fn set(key: Bytes, value: Bytes, quiet: bool) -> Command {
        Command::Set {
            key,
            flags: 0xcafe,
            exptime: 100,
            value,
            quiet,
        }
    }
    fn add(key: Bytes, value: Bytes, quiet: bool) -> Command {
        Command::Add {
            key,
            flags: 0xcafe,
            exptime: 100,
            value,
            quiet,
        }
    }
    fn replace(key: Bytes, value: Bytes, quiet: bool) -> Command {
        Command::Replace {
            key,
            flags: 0xcafe,
            exptime: 100,
            value,
            quiet,
        }
    }

    #[test]
    fn append_prepend() {
        for (op, quiet) in [(opcode::APPEND, false), (opcode::APPENDQ, true)] {
            let req = ok(&frame(op, &[], b"k", b" world"));
            assert_eq!(
                req.command,
                Command::Append {
                    key: b("k"),
                    value: b(" world"),
                    quiet
                }
            );
            invalid(&frame(op, &[0; 8], b"k", b"v"));
            invalid(&frame(op, &[], b"", b"v"));
        }
        for (op, quiet) in [(opcode::PREPEND, false), (opcode::PREPENDQ, true)] {
            let req = ok(&frame(op, &[], b"k", b"hello"));
            assert_eq!(
                req.command,
                Command::Prepend {
                    key: b("k"),
                    value: b("hello"),
                    quiet
                }
            );
            invalid(&frame(op, &[0; 8], b"k", b"v"));
        }
    }

    #[test]
    fn delete() {
        for (op, quiet) in [(opcode::DELETE, false), (opcode::DELETEQ, true)] {
            let req = ok(&frame(op, &[], b"gone", &[]));
            assert_eq!(
                req.command,
                Command::Delete {
                    key: b("gone"),
                    quiet
                }
            );
            invalid(&frame(op, &[], b"", &[]));
            invalid(&frame(op, &[0; 4], b"gone", &[]));
            invalid(&frame(op, &[], b"gone", b"v"));
        }
    }

    #[test]
    fn counters() {
        let mut extras = 5_u64.to_be_bytes().to_vec();
        extras.extend_from_slice(&u64::MAX.to_be_bytes());
        extras.extend_from_slice(&0xffff_ffff_u32.to_be_bytes());
        for (op, quiet) in [(opcode::INCREMENT, false), (opcode::INCREMENTQ, true)] {
            let req = ok(&frame(op, &extras, b"n", &[]));
            assert_eq!(
                req.command,
                Command::Increment {
                    key: b("n"),
                    delta: 5,
                    initial: u64::MAX,
                    exptime: 0xffff_ffff,
                    quiet
                }
            );
        }
        for (op, quiet) in [(opcode::DECREMENT, false), (opcode::DECREMENTQ, true)] {
            let req = ok(&frame(op, &extras, b"n", &[]));
            assert_eq!(
                req.command,
                Command::Decrement {
                    key: b("n"),
                    delta: 5,
                    initial: u64::MAX,
                    exptime: 0xffff_ffff,
                    quiet
                }
            );
        }
        for op in [
            opcode::INCREMENT,
            opcode::INCREMENTQ,
            opcode::DECREMENT,
            opcode::DECREMENTQ,
        ] {
            invalid(&frame(op, &extras[..8], b"n", &[]));
            invalid(&frame(op, &extras, b"", &[]));
            invalid(&frame(op, &extras, b"n", b"1"));
        }
    }

    #[test]
    fn no_argument_commands() {
        let cases = [
            (opcode::QUIT, Command::Quit { quiet: false }),
            (opcode::QUITQ, Command::Quit { quiet: true }),
            (opcode::NOOP, Command::Noop),
            (opcode::VERSION, Command::Version),
            (opcode::SASL_LIST_MECHS, Command::SaslListMechs),
        ];
        for (op, expected) in cases {
            let req = ok(&frame(op, &[], &[], &[]));
            assert_eq!(req.command, expected);
            assert_eq!(req.command.item_key(), None);
            invalid(&frame(op, &[], b"k", &[]));
            invalid(&frame(op, &[0; 4], &[], &[]));
            invalid(&frame(op, &[], &[], b"v"));
        }
        assert!(Command::Quit { quiet: true }.is_quiet());
    }

    #[test]
    fn flush_with_and_without_delay() {
        for (op, quiet) in [(opcode::FLUSH, false), (opcode::FLUSHQ, true)] {
            let req = ok(&frame(op, &[], &[], &[]));
            assert_eq!(
                req.command,
                Command::Flush {
                    exptime: None,
                    quiet
                }
            );
            let req = ok(&frame(op, &10_u32.to_be_bytes(), &[], &[]));
            assert_eq!(
                req.command,
                Command::Flush {
                    exptime: Some(10),
                    quiet
                }
            );
            invalid(&frame(op, &[0; 8], &[], &[]));
            invalid(&frame(op, &[], b"k", &[]));
            invalid(&frame(op, &[0; 4], &[], b"v"));
        }
    }

    #[test]
    fn stat_with_and_without_group() {
        let req = ok(&frame(opcode::STAT, &[], &[], &[]));
        assert_eq!(
            req.command,
            Command::Stat {
                group: Bytes::new()
            }
        );
        let req = ok(&frame(opcode::STAT, &[], b"settings", &[]));
        assert_eq!(
            req.command,
            Command::Stat {
                group: b("settings")
            }
        );
        assert_eq!(req.command.item_key(), None);
        invalid(&frame(opcode::STAT, &[0; 4], &[], &[]));
        invalid(&frame(opcode::STAT, &[], b"items", b"x"));
    }

    #[test]
    fn verbosity() {
        let req = ok(&frame(opcode::VERBOSITY, &2_u32.to_be_bytes(), &[], &[]));
        assert_eq!(req.command, Command::Verbosity { level: 2 });
        invalid(&frame(opcode::VERBOSITY, &[], &[], &[]));
        invalid(&frame(opcode::VERBOSITY, &[0; 4], b"k", &[]));
    }

    #[test]
    fn sasl_auth_and_step() {
        let req = ok(&frame(opcode::SASL_AUTH, &[], b"PLAIN", b"\0user\0pass"));
        assert_eq!(
            req.command,
            Command::SaslAuth {
                mechanism: b("PLAIN"),
                data: b("\0user\0pass")
            }
        );
        assert_eq!(req.command.item_key(), None);
        let req = ok(&frame(opcode::SASL_STEP, &[], b"PLAIN", b""));
        assert_eq!(
            req.command,
            Command::SaslStep {
                mechanism: b("PLAIN"),
                data: Bytes::new()
            }
        );
        for op in [opcode::SASL_AUTH, opcode::SASL_STEP] {
            invalid(&frame(op, &[], b"", b"data"));
            invalid(&frame(op, &[0; 4], b"PLAIN", b"data"));
            invalid(&frame(
                op,
                &[],
                &[b'M'; MAX_SASL_MECHANISM_LEN + 1],
                b"data",
            ));
            ok(&frame(op, &[], &[b'M'; MAX_SASL_MECHANISM_LEN], b"data"));
        }
    }

    #[test]
    fn unknown_opcode_decodes_with_its_body_consumed() {
        for op in [0x1f, 0x25, 0x2e, 0x30, 0xff] {
            let req = ok(&frame(op, &[], &[], &[]));
            assert_eq!(req.command, Command::Unknown { opcode: op });
            let req = ok(&frame(op, &[1, 2], b"key", b"value"));
            assert_eq!(req.command, Command::Unknown { opcode: op });
            assert_eq!(opcode::name(op), None);
        }
    }

    #[test]
    fn unknown_opcode_with_huge_body_is_swallowed() {
        let buf = header_only(0x99, 0, 0, 1 << 30);
        let (rej, consumed) = rejected(&buf, &Limits::default());
        assert_eq!(consumed, HEADER_LEN);
        assert_eq!(rej.response.status, Status::UnknownCommand);
        assert_eq!(&rej.response.value[..], b"Unknown command");
        assert_eq!(rej.response.opcode, 0x99);
        assert_eq!(rej.response.opaque, 7);
        assert_eq!(rej.after, AfterError::Swallow(1 << 30));
    }

    #[test]
    fn bad_magic_closes_at_once() {
        for first in [0x00, 0x81, b'g', 0xff] {
            let (rej, consumed) = rejected(&[first], &Limits::default());
            assert_eq!(consumed, 1);
            assert_eq!(rej.after, AfterError::Close);
            assert_eq!(rej.response.status, Status::InvalidArguments);
        }
    }

    #[test]
    fn partial_frames_are_incomplete() {
        assert_eq!(decode_request(&[], &Limits::default()), Decoded::Incomplete);
        let buf = frame(opcode::SET, &[0; 8], b"key", b"value");
        for cut in 1..buf.len() {
            assert_eq!(
                decode_request(&buf[..cut], &Limits::default()),
                Decoded::Incomplete,
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_left_for_the_next_frame() {
        let mut buf = frame(opcode::NOOP, &[], &[], &[]);
        buf.extend_from_slice(&frame(opcode::VERSION, &[], &[], &[]));
        match decode_request(&buf, &Limits::default()) {
            Decoded::Done {
                item: Ok(req),
                consumed,
            } => {
                assert_eq!(req.command, Command::Noop);
                assert_eq!(consumed, HEADER_LEN);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extras_and_key_longer_than_body() {
        // Small declared body: wait for it, consume it, carry on.
        let mut buf = header_only(opcode::GET, 0, 10, 4);
        assert_eq!(
            decode_request(&buf, &Limits::default()),
            Decoded::Incomplete
        );
        buf.extend_from_slice(b"abcd");
        invalid(&buf);
        let buf = header_only(opcode::SET, 8, 0, 7);
        assert!(matches!(
            decode_request(&buf, &Limits::default()),
            Decoded::Incomplete
        ));
    }

    #[test]
    fn key_over_limit_is_invalid() {
        let limits = Limits::default();
        ok(&frame(opcode::GET, &[], &[b'k'; 250], &[]));
        invalid(&frame(opcode::GET, &[], &[b'k'; 251], &[]));
        // memcached checks the key before the opcode, so this holds for unknown opcodes too.
        invalid(&frame(0x42, &[], &[b'k'; 251], &[]));
        // A long key with a body too large to hold is answered at once and swallowed.
        let buf = header_only(opcode::SET, 8, 1000, 8 + 1000 + 100_000);
        let (rej, consumed) = rejected(&buf, &limits);
        assert_eq!(rej.response.status, Status::InvalidArguments);
        assert_eq!(consumed, HEADER_LEN);
        assert_eq!(rej.after, AfterError::Swallow(8 + 1000 + 100_000));
    }

    #[test]
    fn value_over_limit_is_too_large_and_swallowed() {
        let limits = Limits::default();
        let body = 8 + 3 + (2_u32 << 30);
        let buf = header_only(opcode::SET, 8, 3, body);
        let (rej, consumed) = rejected(&buf, &limits);
        assert_eq!(consumed, HEADER_LEN);
        assert_eq!(rej.response.status, Status::ValueTooLarge);
        assert_eq!(&rej.response.value[..], b"Too large.");
        assert_eq!(rej.response.opcode, opcode::SET);
        assert_eq!(rej.response.opaque, 7);
        assert_eq!(rej.response.cas, 0);
        assert_eq!(rej.after, AfterError::Swallow(u64::from(body)));

        // Exactly at the limit is fine (and waited for).
        let at_limit = 8 + 3 + limits.max_value_len as u32;
        let buf = header_only(opcode::APPEND, 0, 3, at_limit - 8);
        assert_eq!(decode_request(&buf, &limits), Decoded::Incomplete);
        let buf = header_only(opcode::SET, 8, 3, at_limit + 1);
        let (rej, _) = rejected(&buf, &limits);
        assert_eq!(rej.response.status, Status::ValueTooLarge);
    }

    #[test]
    fn small_oversized_value_is_consumed_whole() {
        let limits = Limits {
            max_value_len: 4,
            ..Limits::default()
        };
        let buf = frame(opcode::SETQ, &[0; 8], b"k", b"12345");
        let (rej, consumed) = rejected(&buf, &limits);
        assert_eq!(rej.response.status, Status::ValueTooLarge);
        assert_eq!(rej.after, AfterError::Continue);
        assert_eq!(consumed, buf.len());
        assert_eq!(
            decode_request(&buf[..buf.len() - 1], &limits),
            Decoded::Incomplete
        );
    }

    #[test]
    fn huge_body_on_a_get_is_swallowed_not_buffered() {
        let buf = header_only(opcode::GET, 0, 3, u32::MAX);
        let (rej, consumed) = rejected(&buf, &Limits::default());
        assert_eq!(consumed, HEADER_LEN);
        assert_eq!(rej.response.status, Status::InvalidArguments);
        assert_eq!(rej.after, AfterError::Swallow(u64::from(u32::MAX)));
    }

    #[test]
    fn encode_frames_exactly_like_the_wire_format() {
        let cmd = set(b("key"), b("value"), true);
        let mut req = Request::new(cmd, 0xdead_beef, 0x0102_0304_0506_0708);
        let mut out = BytesMut::new();
        encode_request(&req, &mut out);
        let mut extras = 0xcafe_u32.to_be_bytes().to_vec();
        extras.extend_from_slice(&100_u32.to_be_bytes());
        assert_eq!(
            &out[..],
            &frame(opcode::SETQ, &extras, b"key", b"value")[..]
        );
        // The command decides the opcode.
        req.header.opcode = opcode::GET;
        let mut again = BytesMut::new();
        encode_request(&req, &mut again);
        assert_eq!(out, again);
    }

    #[test]
    fn encode_truncates_an_unframeable_key_consistently() {
        let key = Bytes::from(vec![b'k'; 70_000]);
        let req = Request::new(Command::Delete { key, quiet: false }, 1, 0);
        let mut out = BytesMut::new();
        encode_request(&req, &mut out);
        let raw = RawHeader::parse(&out).unwrap();
        assert_eq!(raw.key_len, u16::MAX);
        assert_eq!(out.len(), HEADER_LEN + usize::from(u16::MAX));
        // The frame stays well formed: a server rejects the key and stays in sync.
        let limits = Limits::default();
        let (rej, consumed) = rejected(&out, &limits);
        assert_eq!(rej.response.status, Status::InvalidArguments);
        assert_eq!(consumed, HEADER_LEN);
        assert_eq!(rej.after, AfterError::Swallow(u64::from(u16::MAX)));
    }
}
