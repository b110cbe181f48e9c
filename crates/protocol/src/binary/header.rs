//! The fixed 24-byte header shared by requests and responses.

use bytes::{BufMut, BytesMut};

/// Length of every binary-protocol header, request or response.
pub const HEADER_LEN: usize = 24;

/// The first byte of every binary-protocol response.
pub const RESPONSE_MAGIC: u8 = 0x81;

/// A header as it sits on the wire, before we know whether its lengths make sense.
///
/// Requests and responses differ only in what bytes 6..8 mean (vbucket id versus status), so
/// both are read through this one type and interpreted by their own decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub datatype: u8,
    /// vbucket id in a request, status in a response.
    pub vbucket_or_status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl RawHeader {
    /// Reads a header from the front of `buf`, or `None` if fewer than 24 bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            magic: h[0],
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]),
            extras_len: h[4],
            datatype: h[5],
            vbucket_or_status: u16::from_be_bytes([h[6], h[7]]),
            body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        })
    }

    /// Whether extras and key fit inside the declared body. When they do not, the frame's
    /// parts cannot be located, though its total length is still known.
    pub fn lengths_consistent(&self) -> bool {
        u32::from(self.extras_len) + u32::from(self.key_len) <= self.body_len
    }

    /// Length of the value: the body minus extras and key. Only meaningful when
    /// [`lengths_consistent`](Self::lengths_consistent) holds; saturates otherwise.
    pub fn value_len(&self) -> u32 {
        self.body_len
            .saturating_sub(u32::from(self.extras_len) + u32::from(self.key_len))
    }

    /// Splits a body of this header's length into extras, key and value; `None` when the
    /// header's lengths do not fit the body.
    pub fn split_body<'a>(&self, body: &'a [u8]) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
        let (extras, rest) = body.split_at_checked(usize::from(self.extras_len))?;
        let (key, value) = rest.split_at_checked(usize::from(self.key_len))?;
        Some((extras, key, value))
    }

    pub fn write(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN);
        out.put_u8(self.magic);
        out.put_u8(self.opcode);
        out.put_u16(self.key_len);
        out.put_u8(self.extras_len);
        out.put_u8(self.datatype);
        out.put_u16(self.vbucket_or_status);
        out.put_u32(self.body_len);
        out.put_u32(self.opaque);
        out.put_u64(self.cas);
    }
}

/// The lengths of a frame's three body parts, cut down so that the header can describe them.
///
/// Encoders take caller data of any size, but the header has 8 bits for extras, 16 for the key
/// and 32 for the whole body. Rather than panic, or write a header that disagrees with the
/// bytes that follow (which would desynchronise the stream), an oversized part is truncated.
/// Real frames never come near these sizes: memcached keys stop at 250 bytes and values at a
/// few MiB.
pub(crate) struct FramedLens {
    pub extras: usize,
    pub key: usize,
    pub value: usize,
}

impl FramedLens {
    pub fn fit(extras: usize, key: usize, value: usize) -> Self {
        let extras = extras.min(usize::from(u8::MAX));
        let key = key.min(usize::from(u16::MAX));
        let room = (u32::MAX as usize).saturating_sub(extras + key);
        Self {
            extras,
            key,
            value: value.min(room),
        }
    }

    pub fn body(&self) -> u32 {
        // `fit` keeps the sum within u32.
        (self.extras + self.key + self.value) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_then_write_is_identity() {
        let bytes: Vec<u8> = (1..=24).collect();
        let h = RawHeader::parse(&bytes).unwrap();
        assert_eq!(h.magic, 1);
        assert_eq!(h.opcode, 2);
        assert_eq!(h.key_len, 0x0304);
        assert_eq!(h.extras_len, 5);
        assert_eq!(h.datatype, 6);
        assert_eq!(h.vbucket_or_status, 0x0708);
        assert_eq!(h.body_len, 0x090a_0b0c);
        assert_eq!(h.opaque, 0x0d0e_0f10);
        assert_eq!(h.cas, 0x1112_1314_1516_1718);
        let mut out = BytesMut::new();
        h.write(&mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn short_buffer_has_no_header() {
        assert!(RawHeader::parse(&[0x80; 23]).is_none());
    }

    #[test]
    fn consistency_and_value_len() {
        let mut h = RawHeader::parse(&[0; 24]).unwrap();
        h.extras_len = 8;
        h.key_len = 3;
        h.body_len = 10;
        assert!(!h.lengths_consistent());
        assert_eq!(h.value_len(), 0);
        h.body_len = 16;
        assert!(h.lengths_consistent());
        assert_eq!(h.value_len(), 5);
        let body: Vec<u8> = (0..16).collect();
        let (extras, key, value) = h.split_body(&body).unwrap();
        assert_eq!(
            (extras.len(), key, value),
            (8, &[8, 9, 10][..], &[11, 12, 13, 14, 15][..])
        );
        assert!(h.split_body(&body[..10]).is_none());
    }

    #[test]
    fn framed_lens_truncate_to_header_capacity() {
        let l = FramedLens::fit(300, 70_000, 10);
        assert_eq!(l.extras, 255);
        assert_eq!(l.key, 65_535);
        assert_eq!(l.value, 10);
        assert_eq!(l.body(), 255 + 65_535 + 10);
    }
}
