//! Property tests for the ascii codec: compose-then-parse round trips for requests and
//! replies, prefixes of valid encodings are incomplete, and the request decoder keeps its
//! invariants on any input.

use bytes::{Bytes, BytesMut};
use murakumo_protocol::ascii::{
    CrawlTarget, CrawlerRequest, MAX_CLASS_ID, MAX_CRAWLER_SLEEP_MICROS, MetadumpEntry,
    decode_metadump_entry, encode_metadump_entry,
};
use murakumo_protocol::ascii::{
    ErrorReply, Keys, MetaArith, MetaArithFlag, MetaArithMode, MetaDebugResponse, MetaDelete,
    MetaDeleteFlag, MetaGet, MetaGetFlag, MetaResponse, MetaSet, MetaSetFlag, MetaSetMode,
    MetaStatus, Rejection, Request, Response, ReturnFlag, StoreMode, WatchKinds, decode_request,
    decode_request_shared, decode_response, encode_request, encode_response, expected_frame_len,
};
use murakumo_protocol::{AfterError, Decoded, Limits};
use proptest::prelude::*;
use std::mem::discriminant;

/// A byte that may appear in a text key or any other token: printable, not a space.
fn token_byte() -> impl Strategy<Value = u8> {
    prop_oneof![9 => 0x21u8..=0x7e, 1 => 0x80u8..=0xff]
}

fn token(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(token_byte(), 1..=max)
}

/// Keys of every legal length, mostly short, with a few that look like keywords.
fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => token(16),
        1 => token(250),
        1 => prop::sample::select(vec![&b"noreply"[..], b"0", b"b", b"k", b"-1"])
            .prop_map(<[u8]>::to_vec),
    ]
    .prop_map(Bytes::from)
}

/// A binary key for a meta command's `b` flag: any bytes, short enough that their base64
/// fits in 250 bytes.
fn binary_key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..=186).prop_map(Bytes::from)
}

fn meta_key() -> impl Strategy<Value = (Bytes, bool)> {
    prop_oneof![
        key().prop_map(|k| (k, false)),
        binary_key().prop_map(|k| (k, true))
    ]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn opaque() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(token_byte(), 0..=31).prop_map(Bytes::from)
}

/// Printable text without control characters, for reply messages.
fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

/// Keeps the first flag of each kind: memcached refuses repeated flags.
fn unique<T>(flags: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for f in flags {
        if !out.iter().any(|g| discriminant(g) == discriminant(&f)) {
            out.push(f);
        }
    }
    out
}

fn mg_flag() -> impl Strategy<Value = MetaGetFlag> {
    use MetaGetFlag as F;
    prop_oneof![
        Just(F::ReturnCas),
        Just(F::ReturnClientFlags),
        Just(F::ReturnHit),
        Just(F::ReturnKey),
        Just(F::ReturnLastAccess),
        opaque().prop_map(F::Opaque),
        Just(F::Quiet),
        Just(F::ReturnSize),
        Just(F::ReturnTtl),
        Just(F::NoBump),
        Just(F::ReturnValue),
        any::<u64>().prop_map(F::NewCas),
        any::<i64>().prop_map(F::Vivify),
        any::<i64>().prop_map(F::Recache),
        any::<i64>().prop_map(F::Touch),
    ]
}

fn ms_flag() -> impl Strategy<Value = MetaSetFlag> {
    use MetaSetFlag as F;
    prop_oneof![
        Just(F::ReturnCas),
        any::<u64>().prop_map(F::CompareCas),
        any::<u64>().prop_map(F::NewCas),
        any::<u32>().prop_map(F::ClientFlags),
        Just(F::Invalidate),
        Just(F::ReturnKey),
        opaque().prop_map(F::Opaque),
        Just(F::Quiet),
        Just(F::ReturnSize),
        any::<i64>().prop_map(F::Ttl),
        prop::sample::select(vec![
            MetaSetMode::Set,
            MetaSetMode::Add,
            MetaSetMode::Replace,
            MetaSetMode::Append,
            MetaSetMode::Prepend,
        ])
        .prop_map(F::Mode),
        any::<i64>().prop_map(F::Vivify),
    ]
}

fn md_flag() -> impl Strategy<Value = MetaDeleteFlag> {
    use MetaDeleteFlag as F;
    prop_oneof![
        any::<u64>().prop_map(F::CompareCas),
        any::<u64>().prop_map(F::NewCas),
        Just(F::Invalidate),
        Just(F::ReturnKey),
        opaque().prop_map(F::Opaque),
        Just(F::Quiet),
        any::<i64>().prop_map(F::Ttl),
        Just(F::RemoveValue),
    ]
}

fn ma_flag() -> impl Strategy<Value = MetaArithFlag> {
    use MetaArithFlag as F;
    prop_oneof![
        any::<u64>().prop_map(F::CompareCas),
        any::<u64>().prop_map(F::NewCas),
        any::<i64>().prop_map(F::Vivify),
        any::<u64>().prop_map(F::Initial),
        any::<u64>().prop_map(F::Delta),
        any::<i64>().prop_map(F::Ttl),
        prop::sample::select(vec![MetaArithMode::Incr, MetaArithMode::Decr]).prop_map(F::Mode),
        opaque().prop_map(F::Opaque),
        Just(F::Quiet),
        Just(F::ReturnTtl),
        Just(F::ReturnCas),
        Just(F::ReturnValue),
        Just(F::ReturnKey),
    ]
}

fn store_mode() -> impl Strategy<Value = StoreMode> {
    prop_oneof![
        Just(StoreMode::Set),
        Just(StoreMode::Add),
        Just(StoreMode::Replace),
        Just(StoreMode::Append),
        Just(StoreMode::Prepend),
        any::<u64>().prop_map(StoreMode::Cas),
    ]
}

fn classic_request() -> impl Strategy<Value = Request> {
    let keys = || prop::collection::vec(key(), 1..8).prop_map(Keys::from_keys);
    prop_oneof![
        (keys(), any::<bool>()).prop_map(|(keys, cas)| Request::Get { keys, cas }),
        (any::<i64>(), keys(), any::<bool>())
            .prop_map(|(exptime, keys, cas)| Request::GetAndTouch { exptime, keys, cas }),
        (
            store_mode(),
            key(),
            any::<u32>(),
            any::<i64>(),
            value(),
            any::<bool>()
        )
            .prop_map(
                |(mode, key, flags, exptime, value, noreply)| Request::Store {
                    mode,
                    key,
                    flags,
                    exptime,
                    value,
                    noreply,
                }
            ),
        (key(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, delta, incr, noreply)| Request::Arith {
                key,
                delta,
                incr,
                noreply
            }
        ),
        (key(), any::<i64>(), any::<bool>()).prop_map(|(key, exptime, noreply)| {
            Request::Touch {
                key,
                exptime,
                noreply,
            }
        }),
        (key(), any::<bool>()).prop_map(|(key, noreply)| Request::Delete { key, noreply }),
        (any::<i64>(), any::<bool>())
            .prop_map(|(delay, noreply)| Request::FlushAll { delay, noreply }),
        Just(Request::Version),
        (any::<u32>(), any::<bool>())
            .prop_map(|(level, noreply)| Request::Verbosity { level, noreply }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(megabytes, noreply)| Request::CacheMemlimit { megabytes, noreply }),
        prop::option::of(prop::collection::vec(token(12), 1..4)).prop_map(|group| {
            Request::Stats {
                group: group.map(|words| Bytes::from(words.join(&b' '))),
            }
        }),
        Just(Request::Quit),
        // Any non-empty set of kinds: an empty one is sent as plain `watch` (fetchers).
        (1u8..16).prop_map(|bits| Request::Watch(WatchKinds::from_bits(bits))),
        prop::option::of(token(12)).prop_map(|mode| Request::Shutdown {
            mode: mode.map(Bytes::from),
        }),
        crawler_request(),
    ]
}

fn crawl_target(hash_allowed: bool) -> impl Strategy<Value = CrawlTarget> {
    let bad = prop::sample::select(vec![&b"0"[..], b"64", b"x", b"1,y", b",", b"hash"])
        .prop_filter("hash is a valid dump target", move |bad| {
            !(hash_allowed && *bad == b"hash")
        })
        .prop_map(|bad| CrawlTarget::BadClass(Bytes::from_static(bad)));
    prop_oneof![
        Just(CrawlTarget::All),
        Just(if hash_allowed {
            CrawlTarget::Hash
        } else {
            CrawlTarget::All
        }),
        prop::collection::vec(1..=MAX_CLASS_ID, 1..5).prop_map(CrawlTarget::Classes),
        bad,
    ]
}

fn crawler_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        crawl_target(false).prop_map(|t| Request::LruCrawler(CrawlerRequest::Crawl(t))),
        crawl_target(true).prop_map(|t| Request::LruCrawler(CrawlerRequest::Metadump(t))),
        Just(Request::LruCrawler(CrawlerRequest::Enable)),
        Just(Request::LruCrawler(CrawlerRequest::Disable)),
        (0..=MAX_CRAWLER_SLEEP_MICROS).prop_map(|n| Request::LruCrawler(CrawlerRequest::Sleep(n))),
        any::<u32>().prop_map(|n| Request::LruCrawler(CrawlerRequest::ToCrawl(n))),
    ]
}

fn meta_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (meta_key(), prop::collection::vec(mg_flag(), 0..20)).prop_map(|((key, base64), f)| {
            Request::MetaGet(MetaGet {
                key,
                base64,
                flags: unique(f).into(),
            })
        }),
        (meta_key(), prop::collection::vec(ms_flag(), 0..20), value()).prop_map(
            |((key, base64), f, value)| Request::MetaSet(MetaSet {
                key,
                base64,
                flags: unique(f).into(),
                value,
            })
        ),
        (meta_key(), prop::collection::vec(md_flag(), 0..12)).prop_map(|((key, base64), f)| {
            Request::MetaDelete(MetaDelete {
                key,
                base64,
                flags: unique(f).into(),
            })
        }),
        (meta_key(), prop::collection::vec(ma_flag(), 0..20)).prop_map(|((key, base64), f)| {
            Request::MetaArith(MetaArith {
                key,
                base64,
                flags: unique(f).into(),
            })
        }),
        Just(Request::MetaNoop),
        meta_key().prop_map(|(key, base64)| Request::MetaDebug { key, base64 }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![classic_request(), meta_request()]
}

fn return_flag() -> impl Strategy<Value = ReturnFlag> {
    prop_oneof![
        any::<u64>().prop_map(ReturnFlag::Cas),
        any::<u32>().prop_map(ReturnFlag::ClientFlags),
        any::<bool>().prop_map(ReturnFlag::Hit),
        meta_key().prop_map(|(key, base64)| ReturnFlag::Key { key, base64 }),
        any::<u64>().prop_map(ReturnFlag::LastAccess),
        opaque().prop_map(ReturnFlag::Opaque),
        any::<u64>().prop_map(ReturnFlag::Size),
        any::<i64>().prop_map(ReturnFlag::Ttl),
        Just(ReturnFlag::Won),
        Just(ReturnFlag::Stale),
        Just(ReturnFlag::AlreadyWon),
    ]
}

fn meta_response() -> impl Strategy<Value = MetaResponse> {
    let status = prop::sample::select(vec![
        MetaStatus::Hd,
        MetaStatus::Va,
        MetaStatus::En,
        MetaStatus::Ns,
        MetaStatus::Ex,
        MetaStatus::Nf,
        MetaStatus::Mn,
    ]);
    (status, prop::collection::vec(return_flag(), 0..8), value()).prop_map(
        |(status, flags, data)| MetaResponse {
            status,
            flags,
            data: (status == MetaStatus::Va).then_some(data),
        },
    )
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Stored),
        Just(Response::NotStored),
        Just(Response::Exists),
        Just(Response::NotFound),
        Just(Response::Deleted),
        Just(Response::Touched),
        Just(Response::Ok),
        Just(Response::End),
        (key(), any::<u32>(), prop::option::of(any::<u64>()), value()).prop_map(
            |(key, flags, cas, data)| Response::Value {
                key,
                flags,
                cas,
                data
            }
        ),
        any::<u64>().prop_map(Response::Number),
        text().prop_map(Response::Version),
        ("[!-~]{1,20}", text()).prop_map(|(name, value)| Response::Stat { name, value }),
        Just(Response::Error(ErrorReply::Error)),
        text().prop_map(|m| Response::Error(ErrorReply::Client(m.into()))),
        text().prop_map(|m| Response::Error(ErrorReply::Server(m.into()))),
        meta_response().prop_map(Response::Meta),
        (
            key(),
            prop::collection::vec(("[!-<>-~]{0,8}", "[!-~]{0,12}"), 0..6)
        )
            .prop_map(|(key, fields)| Response::MetaDebug(MetaDebugResponse { key, fields })),
    ]
}

fn encode_req(req: &Request) -> BytesMut {
    let mut out = BytesMut::new();
    encode_request(req, &mut out);
    out
}

fn encode_resp(resp: &Response) -> BytesMut {
    let mut out = BytesMut::new();
    encode_response(resp, &mut out);
    out
}

/// Every key a request carries, with whether it is a binary (base64) meta key.
fn keys_of(req: &Request) -> Vec<(&[u8], bool)> {
    match req {
        Request::Get { keys, .. } | Request::GetAndTouch { keys, .. } => {
            keys.iter().map(|k| (k, false)).collect()
        }
        Request::Store { key, .. }
        | Request::Arith { key, .. }
        | Request::Touch { key, .. }
        | Request::Delete { key, .. } => vec![(key, false)],
        Request::MetaGet(m) => vec![(&m.key, m.base64)],
        Request::MetaSet(m) => vec![(&m.key, m.base64)],
        Request::MetaDelete(m) => vec![(&m.key, m.base64)],
        Request::MetaArith(m) => vec![(&m.key, m.base64)],
        Request::MetaDebug { key, base64 } => vec![(key, *base64)],
        Request::FlushAll { .. }
        | Request::Version
        | Request::Verbosity { .. }
        | Request::CacheMemlimit { .. }
        | Request::Stats { .. }
        | Request::LruCrawler(_)
        | Request::Shutdown { .. }
        | Request::Watch(_)
        | Request::Quit
        | Request::MetaNoop => Vec::new(),
    }
}

/// The invariants every decoder answer must keep, whatever the input.
fn check_invariants(buf: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let decoded = decode_request(buf, limits);
    // Over shared bytes the answer is the same; only where a value lives differs.
    prop_assert_eq!(
        &decode_request_shared(&Bytes::copy_from_slice(buf), limits),
        &decoded
    );
    let Decoded::Done { item, consumed } = decoded else {
        return Ok(());
    };
    prop_assert!(consumed > 0, "Done must consume something");
    prop_assert!(
        consumed <= buf.len(),
        "consumed {consumed} of {}",
        buf.len()
    );
    match item {
        Ok(req) => {
            for (key, binary) in keys_of(&req) {
                prop_assert!(!key.is_empty() && key.len() <= limits.max_key_len);
                if !binary {
                    prop_assert!(key.iter().all(|&b| b > b' ' && b != 0x7f), "key {key:?}");
                }
            }
            if let Request::Get { keys, .. } | Request::GetAndTouch { keys, .. } = &req {
                prop_assert!(!keys.is_empty());
            }
            // What we accepted, we can say again, and it means the same.
            let again = encode_req(&req);
            prop_assert_eq!(
                decode_request(&again, limits),
                Decoded::Done {
                    item: Ok(req),
                    consumed: again.len()
                }
            );
        }
        Err(Rejection { after, .. }) => {
            if let AfterError::Swallow(n) = after {
                prop_assert!(n >= 2);
            }
        }
    }
    Ok(())
}

/// Fragments that make up plausible and implausible command lines.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        prop::sample::select(vec![
            &b"get"[..],
            b"gets",
            b"gat",
            b"gats",
            b"set",
            b"add",
            b"cas",
            b"append",
            b"incr",
            b"decr",
            b"touch",
            b"delete",
            b"flush_all",
            b"verbosity",
            b"stats",
            b"version",
            b"quit",
            b"mg",
            b"ms",
            b"md",
            b"ma",
            b"mn",
            b"me",
            b"noreply",
            b"0",
            b"1",
            b"5",
            b"-1",
            b"2147483647",
            b"18446744073709551616",
            b"k",
            b"Zm9v",
            b"b",
            b"v",
            b"q",
            b"k",
            b"T10",
            b"O123",
            b"MA",
            b"MX",
            b"D",
            b"N5",
            b"hello",
            b" ",
            b"  ",
            b"\r\n",
            b"\n",
            b"\r",
            b"\t",
            b"\0",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (1usize..300, 0usize..100, 1usize..400).prop_map(
        |(max_key_len, max_value_len, max_line_len)| Limits {
            max_key_len,
            max_value_len,
            max_line_len,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn metadump_entries_round_trip(
        key in prop::collection::vec(any::<u8>(), 1..=250),
        exp in prop_oneof![Just(-1i64), any::<u32>().prop_map(i64::from)],
        last_access in any::<u32>(),
        cas in any::<u64>(),
        fetched in any::<bool>(),
        size in any::<u64>(),
    ) {
        let entry = MetadumpEntry {
            key: Bytes::from(key),
            exp,
            last_access: u64::from(last_access),
            cas,
            fetched,
            class: 1,
            size,
        };
        let mut line = BytesMut::new();
        encode_metadump_entry(&entry, &mut line);
        prop_assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        // Whatever the key holds, the line is seven space-separated printable fields.
        prop_assert!(!body.iter().any(u8::is_ascii_control));
        prop_assert_eq!(body.split(|&b| b == b' ').count(), 7);
        prop_assert_eq!(decode_metadump_entry(body), Some(entry));
    }

    #[test]
    fn request_round_trips(req in request()) {
        let wire = encode_req(&req);
        prop_assert_eq!(
            decode_request(&wire, &Limits::default()),
            Decoded::Done { item: Ok(req), consumed: wire.len() }
        );
    }

    #[test]
    fn request_prefixes_are_incomplete(req in request()) {
        let wire = encode_req(&req);
        for cut in 0..wire.len() {
            prop_assert_eq!(
                decode_request(&wire[..cut], &Limits::default()),
                Decoded::Incomplete,
                "prefix of {} bytes of {:?}", cut, String::from_utf8_lossy(&wire)
            );
        }
    }

    /// Over shared bytes a request decodes the same, and a stored value is a slice of
    /// those bytes, not a copy.
    #[test]
    fn shared_decoding_slices_values_out_of_the_buffer(req in request()) {
        let wire = encode_req(&req).freeze();
        let decoded = decode_request_shared(&wire, &Limits::default());
        prop_assert_eq!(&decoded, &decode_request(&wire, &Limits::default()));
        let value = match &decoded {
            Decoded::Done { item: Ok(Request::Store { value, .. }), .. } => Some(value),
            Decoded::Done { item: Ok(Request::MetaSet(m)), .. } => Some(&m.value),
            _ => None,
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let within = wire.as_ptr_range();
            prop_assert!(
                within.contains(&value.as_ptr()),
                "the value was copied, not sliced"
            );
        }
    }

    /// Once its command line is in, a request with a data block announces its whole
    /// length; nothing else announces one.
    #[test]
    fn data_carrying_requests_announce_their_length(req in request()) {
        let wire = encode_req(&req);
        let carries_data = matches!(req, Request::Store { .. } | Request::MetaSet(_));
        let line_end = wire.iter().position(|&b| b == b'\n').unwrap_or(wire.len()) + 1;
        for cut in 0..=wire.len() {
            prop_assert_eq!(
                expected_frame_len(&wire[..cut], &Limits::default()),
                (carries_data && cut >= line_end).then_some(wire.len()),
                "prefix of {} bytes of {:?}", cut, String::from_utf8_lossy(&wire)
            );
        }
    }

    #[test]
    fn pipelined_requests_decode_in_order(reqs in prop::collection::vec(request(), 1..6)) {
        let mut wire = BytesMut::new();
        for r in &reqs {
            encode_request(r, &mut wire);
        }
        let mut at = 0;
        for r in reqs {
            match decode_request(&wire[at..], &Limits::default()) {
                Decoded::Done { item, consumed } => {
                    prop_assert_eq!(item, Ok(r));
                    at += consumed;
                }
                Decoded::Incomplete => prop_assert!(false, "incomplete at {}", at),
            }
        }
        prop_assert_eq!(at, wire.len());
    }

    #[test]
    fn response_round_trips(resp in response()) {
        let wire = encode_resp(&resp);
        prop_assert_eq!(
            decode_response(&wire),
            Decoded::Done { item: Ok(resp), consumed: wire.len() }
        );
    }

    #[test]
    fn response_prefixes_are_incomplete(resp in response()) {
        let wire = encode_resp(&resp);
        for cut in 0..wire.len() {
            prop_assert_eq!(decode_response(&wire[..cut]), Decoded::Incomplete);
        }
    }

    #[test]
    fn decoder_invariants_on_arbitrary_bytes(
        buf in prop::collection::vec(any::<u8>(), 0..512),
        limits in small_limits(),
    ) {
        check_invariants(&buf, &limits)?;
        check_invariants(&buf, &Limits::default())?;
    }

    #[test]
    fn decoder_invariants_on_token_soup(buf in soup(), limits in small_limits()) {
        check_invariants(&buf, &limits)?;
        check_invariants(&buf, &Limits::default())?;
    }

    #[test]
    fn response_decoder_never_panics(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Decoded::Done { consumed, .. } = decode_response(&buf) {
            prop_assert!(consumed > 0 && consumed <= buf.len());
        }
    }
}
