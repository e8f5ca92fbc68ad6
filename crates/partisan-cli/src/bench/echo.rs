//! `partisan bench echo`: request/response between caller processes on this node and echo
//! processes on the peer (one echo process per caller), closed loop: each caller sends, waits
//! for the answer, and records the round trip.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use partisan::{Pid, Process, SendOptions};
use serde::Serialize;

use super::harness::{join_all, Harness, Watchdog};
use super::latency::Latencies;
use super::progress::Progress;
use super::protocol::Request;
use super::report::{grouped, round1, Meta, Printer, Row};
use super::sizes::Size;
use super::{parse_size, CommonArgs};

/// Options of `partisan bench echo`.
#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// Payload sizes, comma-separated (e.g. 64,1K,64K,1M); each is a result.
    #[arg(long, value_delimiter = ',', default_value = "64", value_parser = parse_size)]
    payload: Vec<Size>,
    /// Numbers of concurrent callers, comma-separated (e.g. 1,8,64); each is a result.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    callers: Vec<usize>,
    #[command(flatten)]
    pub(super) common: CommonArgs,
}

/// One result line.
#[derive(Debug, Serialize)]
struct EchoResult {
    #[serde(flatten)]
    meta: Meta,
    payload: usize,
    callers: usize,
    /// Round trips completed during the measurement.
    ops: u64,
    ops_per_sec: f64,
    /// Payload megabytes (10^6 bytes) per second carried each way.
    mb_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

impl Row for EchoResult {
    fn header() -> Vec<&'static str> {
        vec![
            "payload", "callers", "lanes", "ops/s", "MB/s", "p50 us", "p99 us", "p99.9 us",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            Size(self.payload).to_string(),
            self.callers.to_string(),
            self.meta.parallelism.to_string(),
            grouped(self.ops_per_sec),
            format!("{:.1}", self.mb_per_sec),
            format!("{:.1}", self.p50_us),
            format!("{:.1}", self.p99_us),
            format!("{:.1}", self.p999_us),
        ]
    }
}

/// Runs every payload x callers combination against one peer process.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let h = Harness::start(&args.common.net).await?;
    let printer = Printer::new::<EchoResult>(
        args.common.json,
        "echo: request/response round trips between processes on the two nodes",
    );
    for &payload in &args.payload {
        for &callers in &args.callers {
            let r = measure(&h, &args.common, payload, callers.max(1)).await?;
            printer.print(&r)?;
        }
    }
    h.stop().await
}

/// A caller process paired with its echo process on the peer.
pub struct Caller {
    proc: Process,
    echo: Pid,
}

impl Caller {
    /// A new caller process and its echo process on the peer.
    pub async fn new(h: &Harness) -> anyhow::Result<Caller> {
        let mut proc = h.node.process();
        let channel = h
            .work
            .channel
            .as_ref()
            .map_or(partisan::ChannelName::DEFAULT.to_string(), |c| {
                c.to_string()
            });
        let echo = h
            .spawn_remote(&mut proc, &Request::Echo { channel })
            .await?;
        Ok(Caller { proc, echo })
    }

    /// Calls the echo process in a closed loop until `end`, recording the round trips that
    /// start at or after `start`.
    pub async fn run(
        mut self,
        payload: Bytes,
        opts: SendOptions,
        start: Instant,
        end: Instant,
        done: Arc<AtomicU64>,
    ) -> anyhow::Result<(Caller, Latencies)> {
        let mut lat = Latencies::default();
        loop {
            let t0 = Instant::now();
            if t0 >= end {
                break;
            }
            self.proc.send(&self.echo, payload.clone(), &opts).await?;
            if self.proc.recv().await.is_none() {
                bail!("the caller's mailbox closed");
            }
            if t0 >= start {
                lat.record(t0.elapsed());
            }
            done.fetch_add(1, Relaxed);
        }
        Ok((self, lat))
    }
}

/// Runs `callers` over `[now + warmup, + duration)` and merges their latencies.
pub async fn run_callers(
    h: &Harness,
    callers: Vec<Caller>,
    payload: &Bytes,
    common: &CommonArgs,
    label: String,
) -> anyhow::Result<(Vec<Caller>, Latencies)> {
    let start = Instant::now() + common.warmup();
    let end = start + common.duration();
    let wd = Watchdog::new();
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|c| tokio::spawn(c.run(payload.clone(), h.work.clone(), start, end, wd.done.clone())))
        .collect();
    let mut progress = Progress::new(label, (common.warmup() + common.duration()).as_secs_f64());
    wd.wait_until(end, &mut progress).await?;
    let mut lat = Latencies::default();
    let mut back = Vec::new();
    for (c, l) in join_all(tasks).await? {
        lat.merge(&l);
        back.push(c);
    }
    Ok((back, lat))
}

async fn measure(
    h: &Harness,
    common: &CommonArgs,
    payload: Size,
    callers: usize,
) -> anyhow::Result<EchoResult> {
    let mut cs = Vec::with_capacity(callers);
    for _ in 0..callers {
        cs.push(Caller::new(h).await?);
    }
    let data = Bytes::from(vec![0x5au8; payload.0]);
    let label = format!("echo {payload} x{callers}");
    let (_, lat) = run_callers(h, cs, &data, common, label).await?;
    let secs = common.duration().as_secs_f64();
    let ops = lat.count();
    Ok(EchoResult {
        meta: Meta::new("echo", common),
        payload: payload.0,
        callers,
        ops,
        ops_per_sec: round1(ops as f64 / secs),
        mb_per_sec: round1(ops as f64 * payload.0 as f64 / secs / 1e6),
        p50_us: round1(lat.quantile_us(0.50)),
        p99_us: round1(lat.quantile_us(0.99)),
        p999_us: round1(lat.quantile_us(0.999)),
        max_us: round1(lat.max_us()),
    })
}
