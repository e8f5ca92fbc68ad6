//! `partisan bench oneway`: fire-and-forget messages, counted by sinks on the peer.
//!
//! Each sender is a task sending to its own sink process on the peer as fast as the lane's
//! bounded send queue lets it (a full queue makes `send` wait). The rate is the sinks' count
//! over the peer's clock between two readings taken after the warm-up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::harness::{join_all, Harness, Watchdog};
use super::progress::Progress;
use super::protocol::{CounterSet, Request};
use super::report::{grouped, round1, Meta, Printer, Row};
use super::sizes::Size;
use super::{parse_size, CommonArgs};

/// Options of `partisan bench oneway`.
#[derive(clap::Args, Debug)]
pub struct OnewayArgs {
    /// Payload sizes, comma-separated (e.g. 64,1K,64K,1M); each is a result.
    #[arg(long, value_delimiter = ',', default_value = "64", value_parser = parse_size)]
    payload: Vec<Size>,
    /// Numbers of sending processes, comma-separated; each is a result.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    senders: Vec<usize>,
    #[command(flatten)]
    pub(super) common: CommonArgs,
}

/// One result line.
#[derive(Debug, Serialize)]
struct OnewayResult {
    #[serde(flatten)]
    meta: Meta,
    payload: usize,
    senders: usize,
    /// Messages counted at the receiver during the measurement.
    messages: u64,
    msgs_per_sec: f64,
    /// Payload megabytes (10^6 bytes) per second at the receiver.
    mb_per_sec: f64,
    /// Largest number of bytes seen queued on the workload channel's lanes (sampled).
    max_queued_bytes: u64,
}

impl Row for OnewayResult {
    fn header() -> Vec<&'static str> {
        vec![
            "payload",
            "senders",
            "lanes",
            "msgs/s",
            "MB/s",
            "max queued",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            Size(self.payload).to_string(),
            self.senders.to_string(),
            self.meta.parallelism.to_string(),
            grouped(self.msgs_per_sec),
            format!("{:.1}", self.mb_per_sec),
            format!("{:.1} KiB", self.max_queued_bytes as f64 / 1024.0),
        ]
    }
}

/// Runs every payload x senders combination against one peer process.
pub async fn run(args: OnewayArgs) -> anyhow::Result<()> {
    let h = Harness::start(&args.common.net).await?;
    let printer = Printer::new::<OnewayResult>(
        args.common.json,
        "one-way: fire-and-forget messages counted at the receiver",
    );
    for &payload in &args.payload {
        for &senders in &args.senders {
            let r = measure(&h, &args.common, payload, senders.max(1)).await?;
            printer.print(&r)?;
        }
    }
    h.stop().await
}

async fn measure(
    h: &Harness,
    common: &CommonArgs,
    payload: Size,
    senders: usize,
) -> anyhow::Result<OnewayResult> {
    let mut sinks = Vec::with_capacity(senders);
    for _ in 0..senders {
        let req = Request::Sink {
            counter: CounterSet::Oneway,
        };
        sinks.push(h.spawn_remote_here(&req).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let wd = Watchdog::new();
    let data = Bytes::from(vec![0xa5u8; payload.0]);
    let tasks: Vec<_> = sinks
        .into_iter()
        .map(|sink| {
            let (node, opts, data) = (h.node.clone(), h.work.clone(), data.clone());
            let (stop, done) = (stop.clone(), wd.done.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    node.send(&sink, data.clone(), &opts).await?;
                    n += 1;
                    if n % 1024 == 0 {
                        done.fetch_add(1024, Relaxed);
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let label = format!("oneway {payload} x{senders}");
    let mut progress = Progress::new(label, (common.warmup() + common.duration()).as_secs_f64());
    wd.wait_until(Instant::now() + common.warmup(), &mut progress)
        .await?;
    let c0 = h.counts().await?;
    let sampling = Arc::new(AtomicBool::new(true));
    let max_queued = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (node, sampling, max_queued) = (h.node.clone(), sampling.clone(), max_queued.clone());
        let channel = common.net.channel_name().to_string();
        tokio::spawn(async move {
            while sampling.load(Relaxed) {
                let q = node
                    .stats()
                    .channels
                    .get(&channel)
                    .map_or(0, |c| c.queued_bytes);
                max_queued.fetch_max(q, Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wd.wait_until(Instant::now() + common.duration(), &mut progress)
        .await?;
    let c1 = h.counts().await?;
    stop.store(true, Relaxed);
    sampling.store(false, Relaxed);
    join_all(tasks).await?;
    let _ = sampler.await;
    let secs = c1.secs_since(&c0).max(1e-9);
    let messages = c1.msgs - c0.msgs;
    Ok(OnewayResult {
        meta: Meta::new("oneway", common),
        payload: payload.0,
        senders,
        messages,
        msgs_per_sec: round1(messages as f64 / secs),
        mb_per_sec: round1((c1.bytes - c0.bytes) as f64 / secs / 1e6),
        max_queued_bytes: max_queued.load(Relaxed),
    })
}
