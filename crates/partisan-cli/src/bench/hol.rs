//! `partisan bench hol`: head-of-line blocking. A 64 B echo probe runs alone (idle), then
//! while another process streams large messages to a sink on the same peer, on the `bulk`
//! channel (its own connection) or, with `--same-channel`, on the probe's channel. The stream
//! goes as fast as its lane's bounded queue lets it, or paced with `--stream-rate`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::echo::{run_callers, Caller};
use super::harness::{join_all, Harness};
use super::protocol::{CounterSet, Request};
use super::report::{round1, Meta, Printer, Row};
use super::sizes::Size;
use super::{parse_size, CommonArgs};

/// Options of `partisan bench hol`.
#[derive(clap::Args, Debug)]
pub struct HolArgs {
    /// Stream on the probe's channel instead of the separate `bulk` channel.
    #[arg(long)]
    same_channel: bool,
    /// Pace the stream at this many MB/s (10^6 bytes) [default: as fast as it may].
    #[arg(long)]
    stream_rate: Option<f64>,
    /// Size of each stream message.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    stream_payload: Size,
    /// Size of each probe message.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    payload: Size,
    #[command(flatten)]
    pub(super) common: CommonArgs,
}

/// One result line.
#[derive(Debug, Serialize)]
struct HolResult {
    #[serde(flatten)]
    meta: Meta,
    payload: usize,
    stream_payload: usize,
    same_channel: bool,
    /// The pacing asked for, MB/s; absent when the stream goes as fast as it may.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_rate: Option<f64>,
    idle_p50_us: f64,
    idle_p99_us: f64,
    loaded_p50_us: f64,
    loaded_p99_us: f64,
    loaded_p999_us: f64,
    /// Stream payload megabytes (10^6 bytes) per second counted at the receiver.
    stream_mb_per_sec: f64,
    idle_probes: u64,
    loaded_probes: u64,
}

impl Row for HolResult {
    fn header() -> Vec<&'static str> {
        vec![
            "stream on",
            "pacing",
            "idle p50",
            "idle p99",
            "loaded p50",
            "loaded p99",
            "loaded p99.9",
            "stream MB/s",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            if self.same_channel {
                "same".to_string()
            } else {
                "own".to_string()
            },
            self.stream_rate
                .map_or("max".to_string(), |r| format!("{r} MB/s")),
            format!("{:.1}", self.idle_p50_us),
            format!("{:.1}", self.idle_p99_us),
            format!("{:.1}", self.loaded_p50_us),
            format!("{:.1}", self.loaded_p99_us),
            format!("{:.1}", self.loaded_p999_us),
            format!("{:.1}", self.stream_mb_per_sec),
        ]
    }
}

/// Runs the idle and the loaded phase against one peer process.
pub async fn run(args: HolArgs) -> anyhow::Result<()> {
    let h = Harness::start(&args.common.net).await?;
    let printer = Printer::new::<HolResult>(
        args.common.json,
        "head-of-line: echo probe latency (us), idle and under a stream to the same peer",
    );
    let r = measure(&h, &args).await?;
    printer.print(&r)?;
    h.stop().await
}

async fn measure(h: &Harness, args: &HolArgs) -> anyhow::Result<HolResult> {
    let common = &args.common;
    let probe = vec![Caller::new(h).await?];
    let data = Bytes::from(vec![0x5au8; args.payload.0]);
    let (probe, idle) = run_callers(h, probe, &data, common, "hol idle".into()).await?;

    let req = Request::Sink {
        counter: CounterSet::Stream,
    };
    let sink = h.spawn_remote_here(&req).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let opts = if args.same_channel {
            h.work.clone()
        } else {
            h.bulk.clone()
        };
        let (node, stop) = (h.node.clone(), stop.clone());
        let chunk = Bytes::from(vec![0xc3u8; args.stream_payload.0]);
        let period = args
            .stream_rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(chunk.len() as f64 / (r * 1e6)));
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            while !stop.load(Relaxed) {
                if let Some(p) = period {
                    next += p;
                    let now = tokio::time::Instant::now();
                    // After a stall, resume the pace instead of bursting to catch up.
                    if next + Duration::from_millis(50) < now {
                        next = now;
                    }
                    tokio::time::sleep_until(next).await;
                }
                node.send(&sink, chunk.clone(), &opts).await?;
            }
            anyhow::Ok(())
        })
    };
    // The probe's measurement window starts after the warm-up; read the stream's counters at
    // both ends of it.
    let counts = {
        let warmup = common.warmup();
        let duration = common.duration();
        async move {
            tokio::time::sleep(warmup).await;
            let c0 = h.counts().await?;
            tokio::time::sleep(duration).await;
            let c1 = h.counts().await?;
            anyhow::Ok((c0, c1))
        }
    };
    let loaded = run_callers(h, probe, &data, common, "hol loaded".into());
    let (counts, loaded) = tokio::join!(counts, loaded);
    let ((c0, c1), (_, loaded)) = (counts?, loaded?);
    stop.store(true, Relaxed);
    join_all(vec![streamer]).await?;
    let secs = c1.secs_since(&c0).max(1e-9);
    Ok(HolResult {
        meta: Meta::new("hol", common),
        payload: args.payload.0,
        stream_payload: args.stream_payload.0,
        same_channel: args.same_channel,
        stream_rate: args.stream_rate,
        idle_p50_us: round1(idle.quantile_us(0.50)),
        idle_p99_us: round1(idle.quantile_us(0.99)),
        loaded_p50_us: round1(loaded.quantile_us(0.50)),
        loaded_p99_us: round1(loaded.quantile_us(0.99)),
        loaded_p999_us: round1(loaded.quantile_us(0.999)),
        stream_mb_per_sec: round1((c1.stream_bytes - c0.stream_bytes) as f64 / secs / 1e6),
        idle_probes: idle.count(),
        loaded_probes: loaded.count(),
    })
}
