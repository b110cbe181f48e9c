//! Fuzzes the binary request decoder the way a connection drives it: decode at the front of
//! the buffer, advance by what was consumed (plus any swallowed body), repeat.
//!
//! Invariants: no panic; `Done` consumes at least one byte and no more than it was given;
//! the decoder only waits for frames the limits allow; decoded keys respect the key limit; a
//! decoded request re-encodes to exactly its bytes; rejections echo the opcode and carry
//! memcached's error text; a frame length announced in advance (`expected_frame_len`) is
//! within the limits and is what the frame consumes; decoding the same bytes as shared
//! `Bytes` gives the same answer.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use murakumo_protocol::binary::{
    Command, HEADER_LEN, Rejection, decode_request, decode_request_shared, encode_request,
    expected_frame_len, max_request_len,
};
use murakumo_protocol::{AfterError, Decoded, Limits};

fn drive(data: &[u8], limits: &Limits) {
    let mut at = 0;
    while at < data.len() {
        let buf = &data[at..];
        let expected = expected_frame_len(buf, limits);
        if let Some(len) = expected {
            assert!(len <= max_request_len(limits), "expected {len} bytes");
        }
        let decoded = decode_request(buf, limits);
        assert_eq!(
            decode_request_shared(&Bytes::copy_from_slice(buf), limits),
            decoded,
            "decoding shared bytes answered differently"
        );
        match decoded {
            Decoded::Incomplete => {
                assert!(
                    buf.len() < max_request_len(limits),
                    "waited on a full buffer"
                );
                return;
            }
            Decoded::Done { item, consumed } => {
                assert!(
                    consumed > 0 && consumed <= buf.len(),
                    "bad consumed {consumed}"
                );
                if expected.is_some() {
                    assert_eq!(
                        expected,
                        Some(consumed),
                        "the frame was not as long as expected"
                    );
                }
                match item {
                    Ok(req) => {
                        assert!(consumed >= HEADER_LEN);
                        assert_eq!(req.header.opcode, req.command.opcode());
                        if let Some(key) = req.command.item_key() {
                            assert!(!key.is_empty() && key.len() <= limits.max_key_len);
                        }
                        if !matches!(req.command, Command::Unknown { .. }) {
                            let mut again = BytesMut::new();
                            encode_request(&req, &mut again);
                            assert_eq!(&again[..], &buf[..consumed], "re-encoding differs");
                        }
                        at += consumed;
                    }
                    Err(Rejection { response, after }) => {
                        assert!(response.status.is_error());
                        assert_eq!(&response.value[..], response.status.message().as_bytes());
                        if buf[0] == 0x80 {
                            assert_eq!(response.opcode, buf[1]);
                        }
                        match after {
                            AfterError::Close => {
                                assert_ne!(buf[0], 0x80, "closed on a request magic");
                                return;
                            }
                            AfterError::Continue => at += consumed,
                            AfterError::Swallow(n) => {
                                assert_eq!(consumed, HEADER_LEN);
                                let n = usize::try_from(n).unwrap_or(usize::MAX);
                                at = at.saturating_add(consumed).saturating_add(n);
                            }
                        }
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drive(data, &Limits::default());
    // Small limits reach the too-large and key-too-long paths with small inputs.
    drive(
        data,
        &Limits {
            max_key_len: 8,
            max_value_len: 32,
            ..Limits::default()
        },
    );
});
