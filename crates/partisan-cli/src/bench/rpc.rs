//! `partisan bench rpc`: closed-loop RPC calls from caller tasks on this node to an echo
//! handler on the peer ([`ECHO`], registered by `partisan bench-peer`): each caller calls,
//! waits for the result, and records the round trip. The same workload as `erpc:call` of a
//! 64 B echo in `bench/disterl`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use partisan::{Node, NodeName};
use serde::Serialize;

use super::harness::{join_all, Harness, Watchdog};
use super::latency::Latencies;
use super::progress::Progress;
use super::report::{grouped, round1, Meta, Printer, Row};
use super::sizes::Size;
use super::{parse_size, CommonArgs};

/// Name of the peer's echo handler: returns its argument (bytes).
pub const ECHO: &str = "bench.echo";

/// Timeout of one call: far above any round trip, so a call that hits it is a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Registers the echo handler on the peer's node.
pub fn register_echo(node: &Node) -> anyhow::Result<()> {
    node.rpc_register(ECHO, |payload: Bytes| async move { payload })?;
    Ok(())
}

/// Options of `partisan bench rpc`.
#[derive(clap::Args, Debug)]
pub struct RpcArgs {
    /// Argument sizes in bytes, comma-separated (e.g. 64,1K); each is a result. The result
    /// is the argument, echoed.
    #[arg(long, value_delimiter = ',', default_value = "64", value_parser = parse_size)]
    payload: Vec<Size>,
    /// Numbers of concurrent callers, comma-separated (e.g. 1,64); each is a result.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    callers: Vec<usize>,
    #[command(flatten)]
    pub(super) common: CommonArgs,
}

/// One result line.
#[derive(Debug, Serialize)]
struct RpcResult {
    #[serde(flatten)]
    meta: Meta,
    payload: usize,
    callers: usize,
    /// Calls completed during the measurement.
    ops: u64,
    ops_per_sec: f64,
    /// Payload megabytes (10^6 bytes) per second carried each way.
    mb_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

impl Row for RpcResult {
    fn header() -> Vec<&'static str> {
        vec![
            "payload", "callers", "lanes", "calls/s", "p50 us", "p99 us", "p99.9 us",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            Size(self.payload).to_string(),
            self.callers.to_string(),
            self.meta.parallelism.to_string(),
            grouped(self.ops_per_sec),
            format!("{:.1}", self.p50_us),
            format!("{:.1}", self.p99_us),
            format!("{:.1}", self.p999_us),
        ]
    }
}

/// Runs every payload x callers combination against one peer process.
pub async fn run(args: RpcArgs) -> anyhow::Result<()> {
    if args.common.net.channel.is_some() {
        bail!("RPC runs on the default channel: set its lanes with --parallelism, not --channel");
    }
    let h = Harness::start(&args.common.net).await?;
    let peer = h
        .node
        .nodes()
        .into_iter()
        .next()
        .context("no peer connected")?;
    let printer = Printer::new::<RpcResult>(
        args.common.json,
        "rpc: closed-loop calls to an echo handler on the peer node",
    );
    for &payload in &args.payload {
        for &callers in &args.callers {
            let r = measure(&h, &peer, &args.common, payload, callers.max(1)).await?;
            printer.print(&r)?;
        }
    }
    h.stop().await
}

/// Calls the peer's echo handler in a closed loop until `end`, recording the calls that
/// start at or after `start`.
async fn caller(
    node: Node,
    peer: NodeName,
    payload: Bytes,
    start: Instant,
    end: Instant,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Latencies> {
    let mut lat = Latencies::default();
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let r: Bytes = node
            .call(&peer, ECHO, &payload, CALL_TIMEOUT)
            .await
            .context("RPC call failed")?;
        if r.len() != payload.len() {
            bail!("the echo returned {} bytes for {}", r.len(), payload.len());
        }
        if t0 >= start {
            lat.record(t0.elapsed());
        }
        done.fetch_add(1, Relaxed);
    }
    Ok(lat)
}

async fn measure(
    h: &Harness,
    peer: &NodeName,
    common: &CommonArgs,
    payload: Size,
    callers: usize,
) -> anyhow::Result<RpcResult> {
    let data = Bytes::from(vec![0x5au8; payload.0]);
    let start = Instant::now() + common.warmup();
    let end = start + common.duration();
    let wd = Watchdog::new();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            tokio::spawn(caller(
                h.node.clone(),
                peer.clone(),
                data.clone(),
                start,
                end,
                wd.done.clone(),
            ))
        })
        .collect();
    let mut progress = Progress::new(
        format!("rpc {payload} x{callers}"),
        (common.warmup() + common.duration()).as_secs_f64(),
    );
    wd.wait_until(end, &mut progress).await?;
    let mut lat = Latencies::default();
    for l in join_all(tasks).await? {
        lat.merge(&l);
    }
    let secs = common.duration().as_secs_f64();
    let ops = lat.count();
    Ok(RpcResult {
        meta: Meta::new("rpc", common),
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
