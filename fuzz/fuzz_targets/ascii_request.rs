//! Fuzzes the ascii request decoder the way a connection drives it: decode at the front of
//! the buffer, drop what was consumed, then follow the rejection's `AfterError` (swallow the
//! announced data block, or stop on `Close`).
//!
//! Invariants: no panic; `Done` consumes at least one byte and no more than it was given;
//! `Incomplete` only while the buffer is shorter than the longest frame the limits allow (so
//! a connection's memory stays bounded); every key is 1..=`max_key_len` bytes and, unless it
//! is a base64 meta key, has no spaces or control characters; an accepted request encodes
//! to bytes that decode back to the same request; a frame length announced in advance
//! (`expected_frame_len`) is within the limits, and is what an accepted frame consumes;
//! decoding the same bytes as shared `Bytes` gives the same answer.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use murakumo_protocol::ascii::{
    Request, decode_request, decode_request_shared, encode_request, expected_frame_len,
};
use murakumo_protocol::{AfterError, Decoded, Limits};

/// Every key a request carries, with whether it is a binary (base64) meta key.
fn keys_of(req: &Request) -> Vec<(&[u8], bool)> {
    match req {
        Request::Get { keys, .. } | Request::GetAndTouch { keys, .. } => {
            assert!(!keys.is_empty(), "retrieval without keys");
            keys.iter().map(|k| (k, false)).collect()
        }
        Request::Store { key, .. }
        | Request::Arith { key, .. }
        | Request::Touch { key, .. }
        | Request::Delete { key, .. } => vec![(&key[..], false)],
        Request::MetaGet(m) => vec![(&m.key[..], m.base64)],
        Request::MetaSet(m) => vec![(&m.key[..], m.base64)],
        Request::MetaDelete(m) => vec![(&m.key[..], m.base64)],
        Request::MetaArith(m) => vec![(&m.key[..], m.base64)],
        Request::MetaDebug { key, base64 } => vec![(&key[..], *base64)],
        _ => Vec::new(),
    }
}

fn drive(data: &[u8], limits: &Limits) {
    // A command line, its data block, and the tail of a bad data chunk, each with a
    // terminator: nothing longer may ever be waited for.
    let longest = 2 * (limits.max_line_len + 2) + limits.max_value_len + 2;
    let mut at = 0;
    while at < data.len() {
        let buf = &data[at..];
        let expected = expected_frame_len(buf, limits);
        if let Some(len) = expected {
            assert!(len < longest, "expected a frame of {len} bytes");
        }
        let decoded = decode_request(buf, limits);
        assert_eq!(
            decode_request_shared(&Bytes::copy_from_slice(buf), limits),
            decoded,
            "decoding shared bytes answered differently"
        );
        match decoded {
            Decoded::Incomplete => {
                assert!(buf.len() < longest, "waited on {} bytes", buf.len());
                return;
            }
            Decoded::Done { item, consumed } => {
                assert!(
                    consumed > 0 && consumed <= buf.len(),
                    "bad consumed {consumed}"
                );
                if item.is_ok() && expected.is_some() {
                    assert_eq!(
                        expected,
                        Some(consumed),
                        "the frame was not as long as expected"
                    );
                }
                at += consumed;
                match item {
                    Ok(req) => {
                        for (key, binary) in keys_of(&req) {
                            assert!(!key.is_empty() && key.len() <= limits.max_key_len);
                            if !binary {
                                assert!(key.iter().all(|&b| b > b' ' && b != 0x7f));
                            }
                        }
                        let mut again = BytesMut::new();
                        encode_request(&req, &mut again);
                        assert_eq!(
                            decode_request(&again, limits),
                            Decoded::Done {
                                item: Ok(req),
                                consumed: again.len()
                            },
                            "re-encoding decodes differently"
                        );
                    }
                    Err(rejection) => match rejection.after {
                        AfterError::Continue => {}
                        AfterError::Swallow(n) => {
                            assert!(n >= 2);
                            at = at.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                        }
                        AfterError::Close => return,
                    },
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drive(data, &Limits::default());
    // Small limits, chosen by the input, reach the limit checks with short inputs.
    if let [k, v, l, rest @ ..] = data {
        let limits = Limits {
            max_key_len: usize::from(*k) + 1,
            max_value_len: usize::from(*v) * 4,
            max_line_len: usize::from(*l) * 8 + 1,
        };
        drive(rest, &limits);
    }
});
