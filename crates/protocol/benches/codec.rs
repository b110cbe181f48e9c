//! How long parsing a request and composing a reply take, per protocol, for the requests
//! a cache sees most: single-key gets and 100-byte sets.
//!
//! Why: on a pipelined load the connection threads spend their own time (outside the
//! kernel) mostly here and in the item cache, so a change to a parser shows up here first,
//! in nanoseconds, long before it moves `murakumo bench`. Run with `cargo bench -p
//! murakumo-protocol`; criterion compares each run with the previous one.

#![allow(missing_docs)] // criterion's macros generate undocumented items.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use murakumo_protocol::{Decoded, Limits, ascii, binary};

const KEY: &[u8] = b"bench:12345";
const VALUE: &[u8] = &[b'x'; 100];

/// A binary request frame: header, then extras, key and value.
fn binary_frame(opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut frame = vec![0x80, opcode];
    frame.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
    frame.push(u8::try_from(extras.len()).unwrap_or(u8::MAX));
    frame.extend_from_slice(&[0, 0, 0]); // data type, vbucket
    frame.extend_from_slice(&u32::try_from(body).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&[0; 12]); // opaque, cas
    frame.extend_from_slice(extras);
    frame.extend_from_slice(key);
    frame.extend_from_slice(value);
    frame
}

fn set_line() -> Vec<u8> {
    let mut line = b"set bench:12345 0 0 100\r\n".to_vec();
    line.extend_from_slice(VALUE);
    line.extend_from_slice(b"\r\n");
    line
}

fn meta_set_line() -> Vec<u8> {
    let mut line = b"ms bench:12345 100 F0\r\n".to_vec();
    line.extend_from_slice(VALUE);
    line.extend_from_slice(b"\r\n");
    line
}

/// The request a decoder made of one whole frame, checked to be accepted, so that a
/// parser that started rejecting the input could not look fast.
fn accepted<R, E: std::fmt::Debug>(decoded: Decoded<Result<R, E>>) -> R {
    match decoded {
        Decoded::Done {
            item: Ok(request), ..
        } => request,
        Decoded::Done { item: Err(e), .. } => panic!("rejected: {e:?}"),
        Decoded::Incomplete => panic!("not a whole request"),
    }
}

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let ten_keys: Vec<u8> = {
        let mut line = b"get".to_vec();
        for i in 0..10 {
            line.extend_from_slice(format!(" bench:{}", 12_340 + i).as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        line
    };
    let cases: [(&str, Vec<u8>); 6] = [
        ("text get, 1 key", b"get bench:12345\r\n".to_vec()),
        ("text get, 10 keys", ten_keys),
        ("text set, 100 B", set_line()),
        ("meta mg k f v", b"mg bench:12345 k f v\r\n".to_vec()),
        ("meta ms, 100 B", meta_set_line()),
        (
            "meta mg with 7 flags",
            b"mg bench:12345 k f v c t s O123456\r\n".to_vec(),
        ),
    ];
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| accepted(ascii::decode_request(black_box(frame), &limits)));
        });
    }
    let get = binary_frame(0x00, &[], KEY, &[]);
    group.bench_function("binary get", |b| {
        b.iter(|| accepted(binary::decode_request(black_box(&get), &limits)));
    });
    let set = binary_frame(0x01, &[0; 8], KEY, VALUE);
    group.bench_function("binary set, 100 B", |b| {
        b.iter(|| accepted(binary::decode_request(black_box(&set), &limits)));
    });
    group.finish();
}

fn compose(c: &mut Criterion) {
    let mut group = c.benchmark_group("compose");
    group.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(64 * 1024);
    group.bench_function("text VALUE, 100 B", |b| {
        b.iter(|| {
            out.clear();
            ascii::encode_value(black_box(KEY), 0, None, black_box(VALUE), &mut out);
        });
    });
    group.bench_function("text VALUE with cas, 100 B", |b| {
        b.iter(|| {
            out.clear();
            ascii::encode_value(black_box(KEY), 0, Some(1 << 40), black_box(VALUE), &mut out);
        });
    });
    group.finish();
}

criterion_group!(benches, parse, compose);
criterion_main!(benches);
