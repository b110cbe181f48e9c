//! The memcached binary protocol: 24-byte headers, typed commands, memcached's replies.
//!
//! Every frame, request or response, is a fixed header followed by a body made of three
//! parts in this order: extras (command-specific fixed fields), key, value. The header says
//! how long the extras and key are and how long the whole body is; the value is whatever is
//! left. All integers are big-endian.
//!
//! The server side is [`decode_request`] and [`encode_response`]; the client side (tests,
//! `murakumo bench`) is [`encode_request`] and [`decode_response`]. Decoding never buffers
//! more than a frame the [`Limits`](crate::Limits) allow: an oversized or malformed frame is
//! answered from its header and its body is left to the connection to discard
//! ([`AfterError::Swallow`](crate::AfterError::Swallow)), the way memcached's `conn_swallow`
//! state does.
//!
//! Where memcached closes the connection after a malformed frame whose length is still known
//! (bad lengths, a key over 250 bytes), we answer the same error and keep the connection,
//! because the stream is still in step and DESIGN.md §7 asks us to keep connections wherever
//! the protocol allows. Only a bad magic byte, after which nothing can be trusted, closes.

mod header;
pub mod opcode;
mod request;
mod response;
mod sasl;
mod status;

pub use header::{HEADER_LEN, RESPONSE_MAGIC};
pub use request::{
    Command, MAX_SASL_MECHANISM_LEN, REJECTED_BODY_WAIT_LIMIT, Rejection, Request, RequestHeader,
    decode_request, decode_request_shared, encode_request, expected_frame_len, max_request_len,
};
pub use response::{
    Response, ResponseError, decode_response, encode_response, encode_response_head,
};
pub use sasl::parse_sasl_plain;
pub use status::Status;
