//! `partisan bench`: transport benchmarks between this process and a peer node run as a second
//! OS process on loopback.
//!
//! * `oneway`: fire-and-forget messages, counted by sink processes on the peer;
//! * `echo`: request/response between caller processes here and echo processes there;
//! * `rpc`: closed-loop RPC calls to an echo handler on the peer;
//! * `hol`: a 64 B echo probe, first alone, then while another process streams large messages
//!   to the same peer (on its own channel unless `--same-channel`).
//!
//! Results are a table, or with `--json` one JSON object per line. Pin both processes with
//! `taskset -c CPUS partisan bench ...` (the peer inherits the affinity).

mod echo;
mod harness;
mod hol;
mod latency;
mod oneway;
mod peer;
mod peer_child;
mod progress;
mod protocol;
mod report;
mod rpc;
mod sizes;

use std::time::Duration;

use partisan::{ChannelConfig, NodeBuilder};

pub use peer::{run as run_peer, PeerArgs};
use sizes::Size;

/// Options of `partisan bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(clap::Subcommand, Debug)]
enum Workload {
    /// Fire-and-forget messages counted at the receiver: msgs_per_sec, mb_per_sec.
    Oneway(oneway::OnewayArgs),
    /// Request/response between processes on the two nodes: ops_per_sec, p50/p99/p999 latency.
    Echo(echo::EchoArgs),
    /// Head-of-line blocking: 64 B echo latency idle and while a stream of large messages runs.
    Hol(hol::HolArgs),
    /// RPC calls to an echo handler on the peer: ops_per_sec, p50/p99/p999 latency.
    Rpc(rpc::RpcArgs),
}

/// Options every workload has.
#[derive(clap::Args, Debug, Clone)]
struct CommonArgs {
    /// Time measured per result, after the warm-up (`5s`, `500ms`; a bare number is seconds).
    #[arg(long, default_value = "5s", value_parser = crate::duration_arg::secs)]
    duration: Duration,
    /// Warm-up before each measurement (`1s`, `200ms`; a bare number is seconds) [default: a
    /// fifth of --duration, at most 1 s].
    #[arg(long, value_parser = crate::duration_arg::secs)]
    warmup: Option<Duration>,
    /// One JSON object per result line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    net: NetArgs,
}

impl CommonArgs {
    fn duration(&self) -> Duration {
        self.duration.max(Duration::from_millis(10))
    }

    fn warmup(&self) -> Duration {
        self.warmup
            .unwrap_or(self.duration / 5)
            .min(Duration::from_secs(1))
    }
}

/// How both nodes are set up (the driver passes these to the peer).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Lanes (TCP connections) per peer of the `default` channel, on both nodes.
    #[arg(long, default_value_t = 1)]
    parallelism: u16,
    /// Carry the workload on this channel, NAME:PARALLELISM, instead of `default`.
    #[arg(long, value_parser = parse_channel)]
    channel: Option<(String, u16)>,
    /// Tokio worker threads of each node process; 0 (the default) runs each node on one
    /// thread with a current-thread runtime, so the two nodes take one vCPU each.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Bound of each lane's send queue in bytes [default: the node default, 4 MiB].
    #[arg(long)]
    queue_bytes: Option<usize>,
    /// `write_chunk` of the `bulk` channel (the hol stream's) on both nodes, in bytes
    /// [default: 256 KiB]: smaller trades stream throughput for probe latency.
    #[arg(long)]
    bulk_chunk: Option<usize>,
}

impl NetArgs {
    /// The same options as command-line arguments, for the peer process.
    fn push_args(&self, cmd: &mut std::process::Command) {
        cmd.arg("--parallelism").arg(self.parallelism.to_string());
        if let Some((name, par)) = &self.channel {
            cmd.arg("--channel").arg(format!("{name}:{par}"));
        }
        cmd.arg("--threads").arg(self.threads.to_string());
        if let Some(q) = self.queue_bytes {
            cmd.arg("--queue-bytes").arg(q.to_string());
        }
        if let Some(w) = self.bulk_chunk {
            cmd.arg("--bulk-chunk").arg(w.to_string());
        }
    }

    /// The workload's channel name.
    fn channel_name(&self) -> &str {
        self.channel
            .as_ref()
            .map_or(partisan::ChannelName::DEFAULT, |(n, _)| n.as_str())
    }

    /// How the runtime is set up, for reports.
    fn threads_label(&self) -> String {
        match self.threads {
            0 => "1 (current-thread)".to_string(),
            n => n.to_string(),
        }
    }
}

fn parse_channel(s: &str) -> Result<(String, u16), String> {
    let (name, par) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME:PARALLELISM"))?;
    partisan::ChannelName::new(name).map_err(|e| e.to_string())?;
    let par: u16 = par
        .parse()
        .map_err(|_| format!("{s:?}: parallelism {par:?} is not a number"))?;
    Ok((name.to_string(), par))
}

/// The runtime a benchmark node runs on.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// A node configured for benchmarks: the workload channel, the control channel and the bulk
/// channel of the head-of-line stream.
fn node_builder(name: &str, cookie: &str, net: &NetArgs) -> anyhow::Result<NodeBuilder> {
    let mut b = NodeBuilder::new(name)
        .listen("127.0.0.1:0")
        .cookie(cookie)
        .parallelism(net.parallelism)
        .channel(protocol::CTL_CHANNEL, 1)
        .channel(protocol::BULK_CHANNEL, 1);
    if let Some((name, par)) = &net.channel {
        b = b.configure(|c| {
            c.channels.insert(
                name.clone(),
                ChannelConfig {
                    parallelism: Some(*par),
                    monotonic: false,
                    ..Default::default()
                },
            );
        });
    }
    if let Some(q) = net.queue_bytes {
        b = b.configure(|c| c.send_queue_bytes = q);
    }
    if let Some(w) = net.bulk_chunk {
        b = b.configure(|c| {
            if let Some(bulk) = c.channels.get_mut(protocol::BULK_CHANNEL) {
                bulk.write_chunk = Some(w);
            }
        });
    }
    b.config().validate()?;
    Ok(b)
}

/// Runs `partisan bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let net = match &args.workload {
        Workload::Oneway(a) => &a.common.net,
        Workload::Echo(a) => &a.common.net,
        Workload::Hol(a) => &a.common.net,
        Workload::Rpc(a) => &a.common.net,
    };
    let rt = runtime(net.threads)?;
    rt.block_on(async move {
        match args.workload {
            Workload::Oneway(a) => oneway::run(a).await,
            Workload::Echo(a) => echo::run(a).await,
            Workload::Hol(a) => hol::run(a).await,
            Workload::Rpc(a) => rpc::run(a).await,
        }
    })
}

/// Comma-separated sizes, e.g. `64,1K,64K,1M`.
fn parse_size(s: &str) -> Result<Size, String> {
    s.parse()
}
