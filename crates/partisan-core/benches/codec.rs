//! Codec benchmarks: encoding and decoding a user message with a small and a large payload.
//!
//! * `encode/copy`: `encode_user_head` plus copying the payload into one reused `BytesMut`
//!   (what a writer that coalesces small messages does);
//! * `encode/head_only`: `encode_user_head` alone into a reused `BytesMut`, the payload being
//!   sent as a separate buffer (the zero-copy path for large payloads);
//! * `decode`: `FrameDecoder::decode` plus `Message::decode` of one prepared frame; the
//!   payload is a slice of the received buffer, so decode cost should not grow with its size.
//!
//! Throughput is reported in payload bytes per second.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use partisan_core::id::ProcessName;
use partisan_core::wire::{
    encode_user_head, FrameDecoder, Message, Target, UserHeader, DEFAULT_MAX_FRAME_LEN,
};

const SIZES: [(&str, usize); 2] = [("64B", 64), ("64KiB", 64 * 1024)];

fn header() -> UserHeader {
    UserHeader {
        to: Target::Name(ProcessName::new("bench_server").unwrap()),
        from: Some(123_456_789),
    }
}

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn encode(c: &mut Criterion) {
    let header = header();
    let mut group = c.benchmark_group("encode");
    for (label, len) in SIZES {
        let payload = payload(len);
        group.throughput(Throughput::Bytes(len as u64));

        let mut buf = BytesMut::with_capacity(len + 512);
        group.bench_function(format!("copy/{label}"), |b| {
            b.iter(|| {
                buf.clear();
                encode_user_head(
                    &mut buf,
                    black_box(&header),
                    payload.len(),
                    DEFAULT_MAX_FRAME_LEN,
                )
                .unwrap();
                buf.extend_from_slice(black_box(&payload));
                black_box(buf.len());
            })
        });

        let mut head = BytesMut::with_capacity(512);
        group.bench_function(format!("head_only/{label}"), |b| {
            b.iter(|| {
                head.clear();
                encode_user_head(
                    &mut head,
                    black_box(&header),
                    black_box(payload.len()),
                    DEFAULT_MAX_FRAME_LEN,
                )
                .unwrap();
                black_box(head.len());
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut group = c.benchmark_group("decode");
    for (label, len) in SIZES {
        let mut frame = BytesMut::new();
        Message::User {
            header: header(),
            payload: payload(len),
        }
        .encode_frame(&mut frame, DEFAULT_MAX_FRAME_LEN)
        .unwrap();
        let frame = frame.freeze();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(label, |b| {
            // Each iteration consumes its buffer, so fresh copies are made outside the timing;
            // a fixed batch size bounds the memory held by prepared copies of the large frame.
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buf| {
                    let body = decoder.decode(buf).unwrap().unwrap();
                    Message::decode(body).unwrap()
                },
                BatchSize::NumIterations(256),
            )
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
