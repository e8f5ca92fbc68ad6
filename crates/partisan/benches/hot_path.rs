//! Hot-path micro-benchmarks of the runtime:
//!
//! * `local_send`: a send between two processes of one node (no network, no encoding):
//!   `try_send` to a pid, and the waiting `send` to a registered name, each with the receive;
//! * `route`: the connection-table lookup every remote send makes (lock-free snapshot load,
//!   peer and channel lookup, lane choice), round robin and by partition key;
//! * `lane_queue`: frame coalescing: 64 messages encoded into a lane's send queue, then taken
//!   by the writer as one batch (64 B payloads copied; 64 KiB payloads queued by reference).
//!
//! The connection table and lane queue are internal, so their source files are compiled into
//! this benchmark directly.

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use partisan::{ChannelName, ChannelOpts, NodeBuilder, NodeName, NodeSpec, SendOptions};
use partisan_core::connection_plan::ConnId;
use partisan_core::wire::{Target, UserHeader, DEFAULT_MAX_FRAME_LEN};

#[allow(dead_code, unused_imports)]
#[path = "../src/config.rs"]
mod config;
#[allow(dead_code, unused_imports)]
#[path = "../src/error.rs"]
mod error;
#[allow(dead_code, unused_imports)]
#[path = "../src/stats.rs"]
mod stats;
/// The runtime's `connection` and `process` folders, as far as the benchmark needs them (the
/// files refer to each other by these paths).
#[path = "../src/connection"]
mod connection {
    #[allow(dead_code, unused_imports)]
    pub mod lane_queue;
    #[allow(dead_code, unused_imports)]
    pub mod table;
}
#[path = "../src/process"]
mod process {
    #[allow(dead_code, unused_imports)]
    pub mod mailbox;
    #[allow(dead_code, unused_imports)]
    pub mod registry;
    #[allow(dead_code, unused_imports)]
    pub mod signal;
}

use connection::lane_queue::{LaneQueue, Overflow};
use connection::table::{ConnTable, LaneHandle};
use stats::ChannelStats;

/// Polls a future that is ready at once (the writer's take of a non-empty queue).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future not ready"),
    }
}

fn local_send(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let node = rt.block_on(async {
        NodeBuilder::new("bench@127.0.0.1")
            .cookie("bench")
            .start()
            .await
            .unwrap()
    });
    let _guard = rt.enter();
    let sender = node.process();
    let mut receiver = node.process_named("receiver").unwrap();
    let pid = receiver.pid().clone();
    let name = partisan::Node::name_on(node.name(), "receiver").unwrap();
    let opts = SendOptions::default();
    let payload = Bytes::from_static(&[7u8; 64]);

    let mut group = c.benchmark_group("local_send");
    group.throughput(Throughput::Elements(1));
    group.bench_function("try_send_pid", |b| {
        b.iter(|| {
            sender.try_send(&pid, payload.clone(), &opts).unwrap();
            black_box(receiver.try_recv().unwrap());
        })
    });
    group.bench_function("send_name", |b| {
        b.iter(|| {
            rt.block_on(sender.send(&name, payload.clone(), &opts))
                .unwrap();
            black_box(receiver.try_recv().unwrap());
        })
    });
    group.finish();
    drop((sender, receiver));
    rt.block_on(node.shutdown());
}

fn spec(name: &str, parallelism: u16) -> NodeSpec {
    let mut channels = BTreeMap::new();
    channels.insert(
        ChannelName::new("data").unwrap(),
        ChannelOpts::with_parallelism(parallelism),
    );
    NodeSpec::new(
        NodeName::new(name).unwrap(),
        vec!["127.0.0.1:1".parse().unwrap()],
        channels,
    )
    .unwrap()
}

fn queue(capacity: usize) -> LaneQueue {
    let stats = Arc::new(ChannelStats::new("a@h", &ChannelName::default_channel()));
    LaneQueue::new(capacity, Overflow::Block, DEFAULT_MAX_FRAME_LEN, stats)
}

fn route(c: &mut Criterion) {
    let table = ConnTable::new(spec("local@127.0.0.1", 4));
    // A few peers, so the lookup is not in a map of one.
    let mut peers = Vec::new();
    for i in 0..8u64 {
        let peer = spec(&format!("peer{i}@127.0.0.1"), 4);
        for lane in 0..4u16 {
            let handle = Arc::new(LaneHandle {
                conn: ConnId(i * 10 + u64::from(lane)),
                queue: Arc::new(queue(1 << 20)),
            });
            table.install(&peer, 1, &ChannelName::new("data").unwrap(), lane, handle);
        }
        peers.push(peer.name().clone());
    }
    let node = &peers[5];
    let data = ChannelName::new("data").unwrap();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    group.bench_function("round_robin", |b| {
        b.iter(|| {
            black_box(
                table
                    .with_route(black_box(node), &data, None, true, |l, c| (l.conn, c))
                    .unwrap(),
            )
        })
    });
    group.bench_function("partition_key", |b| {
        let mut k = 0u64;
        b.iter(|| {
            k += 1;
            black_box(
                table
                    .with_route(black_box(node), &data, Some(k), true, |l, c| (l.conn, c))
                    .unwrap(),
            )
        })
    });
    group.finish();
}

fn lane_queue(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let header = UserHeader {
        to: Target::Pid(42),
        from: Some(7),
    };
    let mut group = c.benchmark_group("lane_queue");
    for (label, len) in [("64B", 64usize), ("64KiB", 64 * 1024)] {
        let q = queue(64 << 20);
        let payload = Bytes::from(vec![1u8; len]);
        let mut spare = Vec::new();
        group.throughput(Throughput::Elements(BATCH));
        group.bench_function(format!("push_take_x64/{label}"), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    q.try_push((&header).into(), &payload).unwrap();
                }
                let mut batch = ready(q.take(std::mem::take(&mut spare))).unwrap();
                black_box(batch.bytes);
                batch.chunks.clear();
                spare = batch.chunks;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, local_send, route, lane_queue);
criterion_main!(benches);
