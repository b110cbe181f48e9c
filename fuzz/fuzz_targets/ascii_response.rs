//! Fuzzes the ascii reply decoder (what `murakumo bench` and the tests use to read a
//! server), reply after reply.
//!
//! Invariants: no panic; `Done` consumes at least one byte and no more than it was given;
//! an accepted reply encodes to bytes that decode back to the same reply.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use murakumo_protocol::Decoded;
use murakumo_protocol::ascii::{decode_response, encode_response};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        let buf = &data[at..];
        let Decoded::Done { item, consumed } = decode_response(buf) else {
            return;
        };
        assert!(
            consumed > 0 && consumed <= buf.len(),
            "bad consumed {consumed}"
        );
        at += consumed;
        if let Ok(resp) = item {
            let mut again = BytesMut::new();
            encode_response(&resp, &mut again);
            assert_eq!(
                decode_response(&again),
                Decoded::Done {
                    item: Ok(resp),
                    consumed: again.len()
                },
                "re-encoding decodes differently"
            );
        }
    }
});
