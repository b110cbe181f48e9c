//! The ascii decoder driven the way a connection drives it: bytes arrive in arbitrary
//! chunks, every `Done` is dropped from the buffer, and rejections are followed by what their
//! `AfterError` says. These tests check the promises a connection loop relies on: rejected
//! data blocks are never run as commands, chunking does not change the outcome, and the
//! buffer stays bounded whatever the peer sends.

use bytes::BytesMut;
use murakumo_protocol::ascii::{Request, StoreMode, decode_request, encode_request};
use murakumo_protocol::{AfterError, Decoded, Limits};
use proptest::prelude::*;

/// What the connection saw: a request, or the error line it would send.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Request(Box<Request>),
    Reply(String),
}

/// A minimal connection loop over the decoder.
struct Conn {
    limits: Limits,
    buf: Vec<u8>,
    swallow: u64,
    closed: bool,
    events: Vec<Event>,
    /// The most bytes the buffer ever held after a feed was processed.
    high_water: usize,
}

impl Conn {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            swallow: 0,
            closed: false,
            events: Vec::new(),
            high_water: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            if self.swallow > 0 {
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(self.swallow).unwrap_or(usize::MAX));
                self.buf.drain(..n);
                self.swallow -= n as u64;
                if self.swallow > 0 {
                    break;
                }
            }
            match decode_request(&self.buf, &self.limits) {
                Decoded::Incomplete => break,
                Decoded::Done { item, consumed } => {
                    assert!(consumed > 0 && consumed <= self.buf.len());
                    self.buf.drain(..consumed);
                    match item {
                        Ok(req) => self.events.push(Event::Request(Box::new(req))),
                        Err(rej) => {
                            self.events.push(Event::Reply(rej.reply.to_string()));
                            match rej.after {
                                AfterError::Continue => {}
                                AfterError::Swallow(n) => self.swallow = n,
                                AfterError::Close => {
                                    self.closed = true;
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
        self.high_water = self.high_water.max(self.buf.len());
    }
}

fn run(input: &[u8], chunk: usize) -> Conn {
    let mut conn = Conn::new(Limits::default());
    for part in input.chunks(chunk.max(1)) {
        conn.feed(part);
    }
    conn
}

fn reply(s: &str) -> Event {
    Event::Reply(s.to_owned())
}

fn is_request(e: &Event, pred: impl Fn(&Request) -> bool) -> bool {
    matches!(e, Event::Request(r) if pred(r))
}

#[test]
fn rejected_data_block_is_not_run_as_a_command() {
    for line in [
        &b"set k abc 0 15\r\n"[..],
        b"set k 0 0 15 noreply extra\r\n",
        b"add k\x02 0 0 15\r\n",
        b"ms k 15 Tbad\r\n",
        b"ms k 15 MZ\r\n",
    ] {
        let mut input = line.to_vec();
        input.extend_from_slice(b"delete victim\r\n\r\nversion\r\n");
        for chunk in [1, 3, 7, input.len()] {
            let conn = run(&input, chunk);
            assert_eq!(
                conn.events.len(),
                2,
                "{:?}: {:?}",
                String::from_utf8_lossy(line),
                conn.events
            );
            assert!(matches!(&conn.events[0], Event::Reply(r) if r.contains("ERROR")));
            assert_eq!(conn.events[1], Event::Request(Box::new(Request::Version)));
        }
    }
}

#[test]
fn too_large_value_is_swallowed_as_it_streams() {
    let limits = Limits::default();
    let declared = limits.max_value_len + 1;
    let mut conn = Conn::new(limits);
    conn.feed(format!("set big 0 0 {declared}\r\n").as_bytes());
    assert_eq!(
        conn.events,
        vec![reply("SERVER_ERROR object too large for cache")]
    );
    // The value is full of things that look like commands; none of them may run.
    let block = b"delete victim\r\n".repeat(declared / 15 + 1);
    let mut sent = 0;
    for part in block[..declared].chunks(4096) {
        conn.feed(part);
        sent += part.len();
        assert!(
            conn.buf.len() <= 4096,
            "buffer held {} after {sent}",
            conn.buf.len()
        );
    }
    conn.feed(b"\r\nversion\r\n");
    assert_eq!(conn.events.len(), 2);
    assert_eq!(conn.events[1], Event::Request(Box::new(Request::Version)));
}

#[test]
fn two_gib_declared_length_is_a_client_error() {
    let conn = run(b"set k 0 0 2147483648\r\nversion\r\n", 5);
    assert_eq!(
        conn.events,
        vec![
            reply("CLIENT_ERROR bad command line format"),
            Event::Request(Box::new(Request::Version))
        ]
    );
}

#[test]
fn endless_line_closes_with_bounded_buffer() {
    let limits = Limits {
        max_line_len: 1024,
        ..Limits::default()
    };
    let mut conn = Conn::new(limits);
    let junk = [b'x'; 100];
    let mut fed = 0;
    while !conn.closed {
        conn.feed(&junk);
        fed += junk.len();
        assert!(fed < 10_000, "never closed");
        assert!(conn.high_water <= 1024 + 2 + junk.len());
    }
    assert_eq!(conn.events, vec![reply("CLIENT_ERROR line too long")]);
}

#[test]
fn binary_garbage_gets_errors_not_panics() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for chunk in [1, 13, 512, garbage.len()] {
        let conn = run(&garbage, chunk);
        assert!(conn.events.iter().all(|e| matches!(e, Event::Reply(_))));
    }
}

#[test]
fn bad_data_chunk_costs_one_reply() {
    // Declared 3 bytes, sent 5: one CLIENT_ERROR, and the next command still runs.
    let conn = run(b"set k 0 0 3\r\nhello\r\nget k\r\n", 2);
    assert_eq!(conn.events.len(), 2);
    assert_eq!(conn.events[0], reply("CLIENT_ERROR bad data chunk"));
    assert!(is_request(&conn.events[1], |r| matches!(
        r,
        Request::Get { .. }
    )));
    // A client that ends data with a bare `\n` gets an error per set but stays in step.
    let conn = run(b"set k 0 0 3\r\nabc\nset k 0 0 3\r\nabc\r\n", 1);
    assert_eq!(conn.events[0], reply("CLIENT_ERROR bad data chunk"));
    assert!(is_request(&conn.events[1], |r| matches!(
        r,
        Request::Store {
            mode: StoreMode::Set,
            ..
        }
    )));
}

/// A mix of valid requests and rejected ones, as bytes, for the chunking property.
fn pipeline() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"get a b\r\n".to_vec()),
        Just(b"set k 0 0 5\r\nhello\r\n".to_vec()),
        Just(b"set k bad 0 5\r\nhello\r\n".to_vec()),
        Just(b"set k 0 0 3\r\nhello\r\n".to_vec()),
        Just(b"ms k 2 T5 c\r\nhi\r\n".to_vec()),
        Just(b"ms k 2 Tx\r\nhi\r\n".to_vec()),
        Just(b"mg k v k O1\r\n".to_vec()),
        Just(b"bogus\r\n".to_vec()),
        Just(b"incr k x\n".to_vec()),
        Just(b"delete k 5\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"mn\r\n".to_vec()),
    ];
    prop::collection::vec(piece, 1..12).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn chunking_does_not_change_the_outcome(input in pipeline(), chunk in 1usize..40) {
        let whole = run(&input, input.len());
        let pieces = run(&input, chunk);
        prop_assert_eq!(&whole.events, &pieces.events);
        prop_assert!(whole.buf.is_empty() && pieces.buf.is_empty());
    }

    #[test]
    fn encoded_requests_survive_any_chunking(chunk in 1usize..64, n in 1usize..20) {
        let mut wire = BytesMut::new();
        let reqs: Vec<Request> = (0..n)
            .map(|i| Request::Store {
                mode: StoreMode::Set,
                key: format!("k{i}").into_bytes().into(),
                flags: 0,
                exptime: 0,
                value: vec![b'\n'; i].into(),
                noreply: i % 2 == 0,
            })
            .collect();
        for r in &reqs {
            encode_request(r, &mut wire);
        }
        let conn = run(&wire, chunk);
        let expected: Vec<Event> = reqs.into_iter().map(|req| Event::Request(Box::new(req))).collect();
        prop_assert_eq!(conn.events, expected);
    }
}
