//! The memcached wire protocols, as pure functions over byte buffers.
//!
//! This crate does no I/O. A connection loop owns the socket and a read buffer; it asks a
//! decoder whether the front of the buffer holds one whole frame, acts on the frame, and
//! advances the buffer by exactly the bytes the decoder consumed (the check–parse–advance
//! loop of mini-redis). Keeping the parsers free of I/O is what lets us fuzz them, property
//! test them, and reuse them on both sides of the wire: the gateway decodes requests and
//! composes responses, while `murakumo bench` and the tests compose requests and decode
//! responses.
//!
//! Two framings share one port, told apart by the first byte as memcached does:
//! - [`ascii`]: the classic text protocol and the meta protocol (`mg`, `ms`, …), which are
//!   line based and may be mixed on one connection;
//! - [`binary`]: the 24-byte-header binary protocol, first byte `0x80`.

pub mod ascii;
pub mod binary;

/// The first byte of every binary-protocol request; anything else is the ascii protocol.
pub const BINARY_REQUEST_MAGIC: u8 = 0x80;

/// Result of looking for one frame at the front of a buffer.
///
/// `Incomplete` is not an error: the caller reads more bytes and asks again. Decoders never
/// consume anything when they answer `Incomplete`, so the caller can retry from the same
/// buffer position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The buffer does not yet hold a whole frame.
    Incomplete,
    /// One frame (or one rejected frame) and the number of bytes it occupied.
    Done {
        /// What was decoded.
        item: T,
        /// How many bytes at the front of the buffer the frame used; the caller drops them.
        consumed: usize,
    },
}

/// Size limits that decoders enforce while parsing.
///
/// Limits live in the decoder, not after it, so that an oversized value is rejected from its
/// header and then swallowed as it streams in, instead of being buffered first. The defaults
/// are memcached's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key in bytes (memcached: 250).
    pub max_key_len: usize,
    /// Largest value in bytes (memcached's default item size: 1 MiB).
    pub max_value_len: usize,
    /// Longest ascii command line, excluding any data block. memcached allows long
    /// multi-key `get` lines, so this bounds memory rather than key count.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_len: 250,
            max_value_len: 1024 * 1024,
            max_line_len: 64 * 1024,
        }
    }
}

/// What a connection must do after a request was rejected, so that the byte stream stays in
/// step with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// The rejected frame has been consumed; carry on with the next one.
    Continue,
    /// Also discard this many bytes that follow the consumed part: the data block (and its
    /// trailing `\r\n`) of a value that will not be stored. They may not have arrived yet.
    Swallow(u64),
    /// The stream cannot be resynchronised (for example a line with no end in sight, or a
    /// binary header with a bad magic byte); send the reply, then close the connection.
    Close,
}
