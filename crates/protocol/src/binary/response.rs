//! Responses: the server's encoder, the client's decoder, and constructors for memcached's
//! reply shapes.

use bytes::{Bytes, BytesMut};

use super::header::{FramedLens, HEADER_LEN, RESPONSE_MAGIC, RawHeader};
use super::request::RequestHeader;
use super::status::Status;
use crate::Decoded;

/// One binary response packet.
///
/// It is a plain record of the wire fields rather than a typed enum because replies vary
/// less by command than by outcome, and because `Stat` answers with many packets; the
/// constructors below encode memcached's conventions for each outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's opcode byte, echoed (quiet variants included).
    pub opcode: u8,
    /// Outcome.
    pub status: Status,
    /// The request's opaque token, echoed.
    pub opaque: u32,
    /// The item's CAS after the operation; 0 in error replies, as memcached sends.
    pub cas: u64,
    /// Extras: 4 bytes of flags in get/touch hits, otherwise empty.
    pub extras: Bytes,
    /// Key: present in `GetK`/`GATK` replies and `Stat` packets.
    pub key: Bytes,
    /// Value: the item's data, a counter, a version, or memcached's error text.
    pub value: Bytes,
}

impl Response {
    /// The reply to `header` with `status` and nothing else but, for an error, memcached's
    /// error text as the value. This is memcached's `write_bin_error` (and, for success, the
    /// empty reply to a store, delete, flush, noop or quit).
    pub fn for_request(header: &RequestHeader, status: Status) -> Self {
        Self {
            opcode: header.opcode,
            status,
            opaque: header.opaque,
            cas: 0,
            extras: Bytes::new(),
            key: Bytes::new(),
            value: Bytes::from_static(status.message().as_bytes()),
        }
    }

    /// An empty success reply to `header`; add a CAS with [`with_cas`](Self::with_cas).
    pub fn ok(header: &RequestHeader) -> Self {
        Self::for_request(header, Status::NoError)
    }

    /// A get, get-and-touch or touch hit: the flags go in 4 bytes of extras.
    ///
    /// Pass the key for `GetK`/`GATK` ([`Command::returns_key`](super::Command::returns_key)),
    /// and an empty value for `Touch`, which memcached answers with the flags only.
    pub fn item(
        header: &RequestHeader,
        flags: u32,
        cas: u64,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Self {
        Self {
            opcode: header.opcode,
            status: Status::NoError,
            opaque: header.opaque,
            cas,
            extras: Bytes::copy_from_slice(&flags.to_be_bytes()),
            key: key.unwrap_or_default(),
            value,
        }
    }

    /// A get miss. memcached answers a key-returning miss with the key and no text, and any
    /// other miss with "Not found".
    pub fn miss(header: &RequestHeader, key: Option<Bytes>) -> Self {
        match key {
            Some(key) => Self {
                key,
                value: Bytes::new(),
                ..Self::for_request(header, Status::KeyNotFound)
            },
            None => Self::for_request(header, Status::KeyNotFound),
        }
    }

    /// An increment or decrement result: the counter as 8 big-endian bytes of value.
    pub fn counter(header: &RequestHeader, value: u64, cas: u64) -> Self {
        Self {
            cas,
            value: Bytes::copy_from_slice(&value.to_be_bytes()),
            ..Self::ok(header)
        }
    }

    /// One statistic of a `Stat` reply. End the series with [`ok`](Self::ok), whose empty
    /// key is the terminator clients wait for.
    pub fn stat(header: &RequestHeader, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: name.into(),
            value: value.into(),
            ..Self::ok(header)
        }
    }

    /// A success reply carrying `value` as its body: `Version`, `SASL list mechs`, or a SASL
    /// "Authenticated".
    pub fn with_body(header: &RequestHeader, value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            ..Self::ok(header)
        }
    }

    /// Replaces the CAS.
    #[must_use]
    pub fn with_cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }

    /// Replaces the extras.
    #[must_use]
    pub fn with_extras(mut self, extras: impl Into<Bytes>) -> Self {
        self.extras = extras.into();
        self
    }

    /// Replaces the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = key.into();
        self
    }

    /// Replaces the value.
    #[must_use]
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = value.into();
        self
    }

    /// The number of bytes [`encode_response`] appends for this response.
    pub fn encoded_len(&self) -> usize {
        let lens = FramedLens::fit(self.extras.len(), self.key.len(), self.value.len());
        HEADER_LEN + lens.body() as usize
    }
}

/// Why a byte stream could not be read as binary responses.
///
/// Only clients decode responses; every variant means the server (or the stream) is not
/// speaking memcached's binary protocol, so the client should close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The first byte of a frame is not 0x81.
    #[error("bad response magic byte {0:#04x}, expected 0x81")]
    BadMagic(u8),
    /// The header's extras and key lengths exceed its body length.
    #[error(
        "response extras ({extras} bytes) and key ({key} bytes) exceed its body ({body} bytes)"
    )]
    LengthMismatch {
        /// Declared extras length.
        extras: u8,
        /// Declared key length.
        key: u16,
        /// Declared body length.
        body: u32,
    },
    /// The status code is not one memcached defines. The whole frame has been consumed.
    #[error("unknown response status {0:#06x}")]
    UnknownStatus(u16),
}

/// Decodes one response from the front of `buf` (client side).
///
/// A response is waited for whole, however long; clients trust their server for that. On a
/// `ResponseError` the `consumed` count only moves past the bad part and the client should
/// close.
pub fn decode_response(buf: &[u8]) -> Decoded<Result<Response, ResponseError>> {
    let Some(&magic) = buf.first() else {
        return Decoded::Incomplete;
    };
    if magic != RESPONSE_MAGIC {
        return Decoded::Done {
            item: Err(ResponseError::BadMagic(magic)),
            consumed: 1,
        };
    }
    let Some(raw) = RawHeader::parse(buf) else {
        return Decoded::Incomplete;
    };
    let mismatch = Decoded::Done {
        item: Err(ResponseError::LengthMismatch {
            extras: raw.extras_len,
            key: raw.key_len,
            body: raw.body_len,
        }),
        consumed: HEADER_LEN,
    };
    if !raw.lengths_consistent() {
        return mismatch;
    }
    let frame_len = HEADER_LEN.saturating_add(raw.body_len as usize);
    let Some(body) = buf.get(HEADER_LEN..frame_len) else {
        return Decoded::Incomplete;
    };
    let Some(status) = Status::from_code(raw.vbucket_or_status) else {
        return Decoded::Done {
            item: Err(ResponseError::UnknownStatus(raw.vbucket_or_status)),
            consumed: frame_len,
        };
    };
    let Some((extras, key, value)) = raw.split_body(body) else {
        return mismatch;
    };
    Decoded::Done {
        item: Ok(Response {
            opcode: raw.opcode,
            status,
            opaque: raw.opaque,
            cas: raw.cas,
            extras: Bytes::copy_from_slice(extras),
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        }),
        consumed: frame_len,
    }
}

/// Appends the wire form of `resp` to `out` (server side).
///
/// Extras over 255 bytes, a key over 65,535 bytes or a body over 4 GiB cannot be described by
/// the header and are truncated to fit, so the stream stays framed.
pub fn encode_response(resp: &Response, out: &mut BytesMut) {
    out.reserve(HEADER_LEN + resp.extras.len() + resp.key.len() + resp.value.len());
    let value_len = encode_response_head(resp, resp.value.len(), out);
    out.extend_from_slice(&resp.value[..value_len]);
}

/// Appends the header, extras and key of `resp`, framed for a value of `value_len` bytes
/// that the caller sends next from where it is stored (`resp.value` is not written), and
/// returns how many of those bytes the frame has room for (see [`encode_response`]).
pub fn encode_response_head(resp: &Response, value_len: usize, out: &mut BytesMut) -> usize {
    let lens = FramedLens::fit(resp.extras.len(), resp.key.len(), value_len);
    out.reserve(HEADER_LEN + lens.extras + lens.key);
    RawHeader {
        magic: RESPONSE_MAGIC,
        opcode: resp.opcode,
        key_len: lens.key as u16,
        extras_len: lens.extras as u8,
        datatype: 0,
        vbucket_or_status: resp.status.code(),
        body_len: lens.body(),
        opaque: resp.opaque,
        cas: resp.cas,
    }
    .write(out);
    out.extend_from_slice(&resp.extras[..lens.extras]);
    out.extend_from_slice(&resp.key[..lens.key]);
    lens.value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::opcode;

    #[test]
    fn a_head_frames_the_value_its_caller_sends() {
        let response = Response::item(
            &header(opcode::GETK),
            7,
            42,
            Some(Bytes::from_static(b"key")),
            Bytes::from(vec![5u8; 70_000]),
        );
        let mut whole = BytesMut::new();
        encode_response(&response, &mut whole);
        let mut parts = BytesMut::new();
        let value_len = encode_response_head(&response, response.value.len(), &mut parts);
        assert_eq!(value_len, response.value.len());
        parts.extend_from_slice(&response.value);
        assert_eq!(parts, whole);
    }

    fn header(op: u8) -> RequestHeader {
        RequestHeader {
            opcode: op,
            opaque: 0xdead_beef,
            cas: 99,
            ..RequestHeader::default()
        }
    }

    fn encode(resp: &Response) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_response(resp, &mut out);
        assert_eq!(out.len(), resp.encoded_len());
        out.to_vec()
    }

    #[test]
    fn error_reply_matches_memcached_bytes() {
        // memcached's reply to a Get miss: status 1, body "Not found", cas 0.
        let bytes = encode(&Response::for_request(
            &header(opcode::GET),
            Status::KeyNotFound,
        ));
        let mut expected = vec![0x81, 0x00, 0, 0, 0, 0, 0x00, 0x01, 0, 0, 0, 9];
        expected.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(b"Not found");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn constructors_follow_memcached() {
        let h = header(opcode::GETK);
        let hit = Response::item(&h, 0xabcd, 7, Some(Bytes::from_static(b"k")), "v".into());
        assert_eq!(&hit.extras[..], &0xabcd_u32.to_be_bytes());
        assert_eq!(
            (&hit.key[..], &hit.value[..], hit.cas),
            (&b"k"[..], &b"v"[..], 7)
        );

        let miss = Response::miss(&h, Some(Bytes::from_static(b"k")));
        assert_eq!(miss.status, Status::KeyNotFound);
        assert_eq!((&miss.key[..], &miss.value[..]), (&b"k"[..], &b""[..]));
        let miss = Response::miss(&header(opcode::GET), None);
        assert_eq!(&miss.value[..], b"Not found");

        let counter = Response::counter(&header(opcode::INCREMENT), 10, 3);
        assert_eq!(&counter.value[..], &10_u64.to_be_bytes());
        assert_eq!(
            (counter.status, counter.cas, counter.extras.len()),
            (Status::NoError, 3, 0)
        );

        let stat = Response::stat(&header(opcode::STAT), "pid", "42");
        assert_eq!((&stat.key[..], &stat.value[..]), (&b"pid"[..], &b"42"[..]));
        let end = Response::ok(&header(opcode::STAT));
        assert!(end.key.is_empty() && end.value.is_empty() && end.cas == 0);

        let version = Response::with_body(&header(opcode::VERSION), "1.6.21");
        assert_eq!(&version.value[..], b"1.6.21");
        let r = Response::ok(&h)
            .with_cas(5)
            .with_extras(vec![1])
            .with_key("a")
            .with_value("b");
        assert_eq!(
            (r.cas, &r.extras[..], &r.key[..], &r.value[..]),
            (5, &[1_u8][..], &b"a"[..], &b"b"[..])
        );
    }

    #[test]
    fn decode_reads_what_encode_wrote() {
        let resp = Response::item(
            &header(opcode::GATKQ),
            1,
            2,
            Some("key".into()),
            "value".into(),
        );
        let bytes = encode(&resp);
        assert_eq!(
            decode_response(&bytes),
            Decoded::Done {
                item: Ok(resp),
                consumed: bytes.len()
            }
        );
        for cut in 0..bytes.len() {
            assert_eq!(decode_response(&bytes[..cut]), Decoded::Incomplete);
        }
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            decode_response(&[0x80]),
            Decoded::Done {
                item: Err(ResponseError::BadMagic(0x80)),
                consumed: 1
            }
        );
        let mut bad_lengths = encode(&Response::ok(&header(opcode::NOOP)));
        bad_lengths[4] = 4; // extras length 4 with an empty body
        assert_eq!(
            decode_response(&bad_lengths),
            Decoded::Done {
                item: Err(ResponseError::LengthMismatch {
                    extras: 4,
                    key: 0,
                    body: 0
                }),
                consumed: HEADER_LEN
            }
        );
        let mut bad_status = encode(&Response::for_request(
            &header(opcode::GET),
            Status::KeyNotFound,
        ));
        bad_status[7] = 0x07;
        assert_eq!(
            decode_response(&bad_status),
            Decoded::Done {
                item: Err(ResponseError::UnknownStatus(0x07)),
                consumed: bad_status.len()
            }
        );
    }
}
