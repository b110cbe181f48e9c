//! Property tests for the binary protocol codec: round trips, incremental decoding, and the
//! invariants that keep a server safe on hostile input (no panics, bounded buffering, keys
//! within limits, the stream kept in step).

use bytes::{Bytes, BytesMut};
use murakumo_protocol::binary::{
    Command, HEADER_LEN, REJECTED_BODY_WAIT_LIMIT, Rejection, Request, RequestHeader, Response,
    Status, decode_request, decode_request_shared, decode_response, encode_request,
    encode_response, expected_frame_len, max_request_len, opcode,
};
use murakumo_protocol::{AfterError, Decoded, Limits};
use proptest::collection::vec;
use proptest::prelude::*;

fn bytes(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), range).prop_map(Bytes::from)
}

fn key() -> impl Strategy<Value = Bytes> {
    bytes(1..=250)
}

fn value() -> impl Strategy<Value = Bytes> {
    bytes(0..=600)
}

/// Every command the decoder accepts under the default limits.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![item_command(), other_command()]
}

/// Commands that address an item.
fn item_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (key(), any::<bool>(), any::<bool>()).prop_map(|(key, quiet, return_key)| {
            Command::Get {
                key,
                quiet,
                return_key,
            }
        }),
        (key(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, exptime, quiet, return_key)| Command::GetAndTouch {
                key,
                exptime,
                quiet,
                return_key,
            }
        ),
        (key(), any::<u32>()).prop_map(|(key, exptime)| Command::Touch { key, exptime }),
        (
            key(),
            any::<u32>(),
            any::<u32>(),
            value(),
            any::<bool>(),
            0..3_u8
        )
            .prop_map(|(key, flags, exptime, value, quiet, which)| match which {
                0 => Command::Set {
                    key,
                    flags,
                    exptime,
                    value,
                    quiet,
                },
                1 => Command::Add {
                    key,
                    flags,
                    exptime,
                    value,
                    quiet,
                },
                _ => Command::Replace {
                    key,
                    flags,
                    exptime,
                    value,
                    quiet,
                },
            }),
        (key(), value(), any::<bool>(), any::<bool>()).prop_map(|(key, value, quiet, append)| {
            if append {
                Command::Append { key, value, quiet }
            } else {
                Command::Prepend { key, value, quiet }
            }
        }),
        (key(), any::<bool>()).prop_map(|(key, quiet)| Command::Delete { key, quiet }),
        counter_command(),
    ]
}

fn counter_command() -> impl Strategy<Value = Command> {
    (
        key(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(key, delta, initial, exptime, quiet, incr)| {
            if incr {
                Command::Increment {
                    key,
                    delta,
                    initial,
                    exptime,
                    quiet,
                }
            } else {
                Command::Decrement {
                    key,
                    delta,
                    initial,
                    exptime,
                    quiet,
                }
            }
        })
}

/// Commands that address no item, and unknown opcodes.
fn other_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        any::<bool>().prop_map(|quiet| Command::Quit { quiet }),
        (proptest::option::of(any::<u32>()), any::<bool>())
            .prop_map(|(exptime, quiet)| Command::Flush { exptime, quiet }),
        Just(Command::Noop),
        Just(Command::Version),
        bytes(0..=250).prop_map(|group| Command::Stat { group }),
        any::<u32>().prop_map(|level| Command::Verbosity { level }),
        Just(Command::SaslListMechs),
        (bytes(1..=32), value(), any::<bool>()).prop_map(|(mechanism, data, step)| {
            if step {
                Command::SaslStep { mechanism, data }
            } else {
                Command::SaslAuth { mechanism, data }
            }
        }),
        any::<u8>()
            .prop_filter("an opcode memcached does not serve", |op| opcode::name(*op)
                .is_none())
            .prop_map(|opcode| Command::Unknown { opcode }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        command(),
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(command, datatype, vbucket, opaque, cas)| Request {
            header: RequestHeader {
                opcode: command.opcode(),
                datatype,
                vbucket,
                opaque,
                cas,
            },
            command,
        })
}

fn response() -> impl Strategy<Value = Response> {
    (
        any::<u8>(),
        proptest::sample::select(Status::ALL.to_vec()),
        any::<u32>(),
        any::<u64>(),
        bytes(0..=255),
        bytes(0..=300),
        value(),
    )
        .prop_map(
            |(opcode, status, opaque, cas, extras, key, value)| Response {
                opcode,
                status,
                opaque,
                cas,
                extras,
                key,
                value,
            },
        )
}

fn encoded(req: &Request) -> BytesMut {
    let mut out = BytesMut::new();
    encode_request(req, &mut out);
    out
}

/// Byte strings that start like a binary request (right magic, plausible lengths) so that
/// the fuzzing reaches past the first checks; the tail is arbitrary.
fn request_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            proptest::sample::select((0x00..=0x24_u8).collect::<Vec<_>>()),
            any::<u8>()
        ],
        prop_oneof![Just(0_u16), 0..300_u16, any::<u16>()],
        prop_oneof![proptest::sample::select(vec![0_u8, 4, 8, 20]), any::<u8>()],
        prop_oneof![0..700_u32, 4000..5000_u32, any::<u32>()],
        vec(any::<u8>(), 0..800),
    )
        .prop_map(|(op, key_len, extras_len, body_len, tail)| {
            let mut v = vec![0x80, op];
            v.extend_from_slice(&key_len.to_be_bytes());
            v.push(extras_len);
            v.extend_from_slice(&[0, 0, 0]);
            v.extend_from_slice(&body_len.to_be_bytes());
            v.extend_from_slice(&[0; 12]);
            v.extend_from_slice(&tail);
            v
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (0..300_usize, 0..2000_usize).prop_map(|(max_key_len, max_value_len)| Limits {
            max_key_len,
            max_value_len,
            ..Limits::default()
        }),
    ]
}

/// The invariants every decode must satisfy, whatever the input.
fn check_decode_invariants(buf: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let decoded = decode_request(buf, limits);
    // Over shared bytes the answer is the same; only where a value lives differs.
    prop_assert_eq!(
        &decode_request_shared(&Bytes::copy_from_slice(buf), limits),
        &decoded
    );
    match decoded {
        Decoded::Incomplete => {
            // Waiting is only ever for a frame no longer than the limits allow.
            prop_assert!(buf.len() < max_request_len(limits));
        }
        Decoded::Done { item, consumed } => {
            prop_assert!(consumed > 0 && consumed <= buf.len());
            match item {
                Ok(req) => {
                    prop_assert!(consumed >= HEADER_LEN);
                    prop_assert!(consumed <= max_request_len(limits));
                    prop_assert_eq!(req.header.opcode, req.command.opcode());
                    if let Some(key) = req.command.item_key() {
                        prop_assert!(!key.is_empty() && key.len() <= limits.max_key_len);
                    }
                    // A decoded request re-encodes to exactly the bytes it came from.
                    if !matches!(req.command, Command::Unknown { .. }) {
                        prop_assert_eq!(&encoded(&req)[..], &buf[..consumed]);
                    }
                }
                Err(Rejection { response, after }) => {
                    prop_assert!(response.status.is_error());
                    prop_assert_eq!(&response.value[..], response.status.message().as_bytes());
                    prop_assert_eq!(response.cas, 0);
                    match after {
                        AfterError::Close => prop_assert_ne!(buf[0], 0x80),
                        AfterError::Continue => prop_assert!(consumed >= HEADER_LEN),
                        AfterError::Swallow(n) => {
                            prop_assert_eq!(consumed, HEADER_LEN);
                            let accepted_body = max_request_len(limits) - HEADER_LEN;
                            let wait = REJECTED_BODY_WAIT_LIMIT
                                .min(u32::try_from(accepted_body).unwrap_or(u32::MAX));
                            prop_assert!(n > u64::from(wait));
                        }
                    }
                    if buf[0] == 0x80 {
                        prop_assert_eq!(response.opcode, buf[1]);
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trip(req in request()) {
        let wire = encoded(&req);
        prop_assert_eq!(
            decode_request(&wire, &Limits::default()),
            Decoded::Done { item: Ok(req.clone()), consumed: wire.len() }
        );
        // Over shared bytes, the same request, with its value sliced out of them.
        let shared = wire.clone().freeze();
        let decoded = decode_request_shared(&shared, &Limits::default());
        prop_assert_eq!(&decoded, &Decoded::Done { item: Ok(req.clone()), consumed: wire.len() });
        if let Decoded::Done { item: Ok(Request { command, .. }), .. } = &decoded
            && let Command::Set { value, .. }
                | Command::Add { value, .. }
                | Command::Replace { value, .. }
                | Command::Append { value, .. }
                | Command::Prepend { value, .. } = command
            && !value.is_empty()
        {
            prop_assert!(
                shared.as_ptr_range().contains(&value.as_ptr()),
                "the value was copied, not sliced"
            );
        }
        for cut in 0..wire.len() {
            prop_assert_eq!(
                decode_request(&wire[..cut], &Limits::default()),
                Decoded::Incomplete,
                "prefix of {} bytes", cut
            );
            // Once its header is in, the frame announces its whole length.
            prop_assert_eq!(
                expected_frame_len(&wire[..cut], &Limits::default()),
                (cut >= HEADER_LEN).then_some(wire.len()),
                "prefix of {} bytes", cut
            );
        }
    }

    #[test]
    fn response_round_trip(resp in response()) {
        let mut wire = BytesMut::new();
        encode_response(&resp, &mut wire);
        prop_assert_eq!(wire.len(), resp.encoded_len());
        prop_assert_eq!(
            decode_response(&wire),
            Decoded::Done { item: Ok(resp.clone()), consumed: wire.len() }
        );
        for cut in 0..wire.len() {
            prop_assert_eq!(decode_response(&wire[..cut]), Decoded::Incomplete);
        }
    }

    #[test]
    fn pipelined_requests_decode_in_order(reqs in vec(request(), 1..8)) {
        let mut wire = BytesMut::new();
        for req in &reqs {
            encode_request(req, &mut wire);
        }
        let mut at = 0;
        for req in &reqs {
            match decode_request(&wire[at..], &Limits::default()) {
                Decoded::Done { item: Ok(got), consumed } => {
                    prop_assert_eq!(&got, req);
                    at += consumed;
                }
                other => prop_assert!(false, "expected {:?}, got {:?}", req, other),
            }
        }
        prop_assert_eq!(at, wire.len());
    }

    #[test]
    fn decode_request_survives_arbitrary_bytes(buf in vec(any::<u8>(), 0..600), limits in limits()) {
        check_decode_invariants(&buf, &limits)?;
    }

    #[test]
    fn decode_request_survives_request_like_bytes(buf in request_like_bytes(), limits in limits()) {
        check_decode_invariants(&buf, &limits)?;
    }

    /// The brief's bound: a body over max_value_len + 250 + 64 never makes the decoder wait
    /// for it, whatever the opcode and the other header fields.
    #[test]
    fn oversized_bodies_are_never_waited_for(
        header in request_like_bytes(),
        limits in limits(),
        extra in prop_oneof![1..5000_u32, 1..u32::MAX / 2],
    ) {
        let bound = limits.max_value_len + limits.max_key_len + 64;
        let body_len = u32::try_from(bound).unwrap().saturating_add(extra);
        let mut buf = header[..HEADER_LEN].to_vec();
        buf[8..12].copy_from_slice(&body_len.to_be_bytes());
        let waited = decode_request(&buf, &limits) == Decoded::Incomplete;
        prop_assert!(!waited, "waited for a body of {} bytes", body_len);
    }

    /// A rejection leaves the stream in step: after consuming and swallowing what the
    /// rejection says, the next request decodes intact.
    #[test]
    fn rejected_frames_keep_the_stream_in_step(
        bad in request_like_bytes(),
        next in request(),
        limits in limits(),
    ) {
        // Make `bad` a whole frame: header plus exactly its declared body.
        let body_len = u32::from_be_bytes([bad[8], bad[9], bad[10], bad[11]]) % 6000;
        let mut stream = bad[..HEADER_LEN].to_vec();
        stream[8..12].copy_from_slice(&body_len.to_be_bytes());
        stream.resize(HEADER_LEN + body_len as usize, 0xab);
        let bad_len = stream.len();
        let next_limits = Limits::default();
        stream.extend_from_slice(&encoded(&next));

        let skip = match decode_request(&stream, &limits) {
            Decoded::Done {
                item: Ok(_) | Err(Rejection { after: AfterError::Continue, .. }),
                consumed,
            } => consumed,
            Decoded::Done { item: Err(Rejection { after: AfterError::Swallow(n), .. }), consumed } => {
                consumed + usize::try_from(n).unwrap()
            }
            Decoded::Done { item: Err(Rejection { after: AfterError::Close, .. }), .. } => {
                return Err(TestCaseError::fail("a request with the right magic closed"));
            }
            Decoded::Incomplete => {
                return Err(TestCaseError::fail("a whole frame was incomplete"));
            }
        };
        prop_assert_eq!(skip, bad_len);
        let rest = &stream[skip..];
        prop_assert_eq!(
            decode_request(rest, &next_limits),
            Decoded::Done { item: Ok(next), consumed: rest.len() }
        );
    }

    #[test]
    fn decode_response_survives_arbitrary_bytes(buf in vec(any::<u8>(), 0..600)) {
        if let Decoded::Done { consumed, .. } = decode_response(&buf) {
            prop_assert!(consumed > 0 && consumed <= buf.len());
        }
        let mut tweaked = buf.clone();
        if let Some(first) = tweaked.first_mut() {
            *first = 0x81;
        }
        if let Decoded::Done { consumed, .. } = decode_response(&tweaked) {
            prop_assert!(consumed > 0 && consumed <= tweaked.len());
        }
    }
}
