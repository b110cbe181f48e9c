//! Fuzzes the binary response decoder (the client side, used by `murakumo bench` and tests).
//!
//! Invariants: no panic; `Done` consumes at least one byte and no more than it was given; a
//! decoded response re-encodes to a frame that decodes to the same response.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use murakumo_protocol::Decoded;
use murakumo_protocol::binary::{decode_response, encode_response};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        let buf = &data[at..];
        match decode_response(buf) {
            Decoded::Incomplete => return,
            Decoded::Done { item, consumed } => {
                assert!(
                    consumed > 0 && consumed <= buf.len(),
                    "bad consumed {consumed}"
                );
                match item {
                    Ok(resp) => {
                        let mut again = BytesMut::new();
                        encode_response(&resp, &mut again);
                        assert_eq!(again.len(), consumed);
                        // Only the datatype byte, which we always send as 0, may differ.
                        assert_eq!(&again[..5], &buf[..5]);
                        assert_eq!(&again[6..], &buf[6..consumed]);
                        assert_eq!(
                            decode_response(&again),
                            Decoded::Done {
                                item: Ok(resp),
                                consumed
                            }
                        );
                    }
                    Err(_) => return,
                }
                at += consumed;
            }
        }
    }
});
