//! `partisan bench-peer`: the far end of a benchmark, run as its own OS process by the driver.
//!
//! It starts a node, prints one JSON line `{"listen": ADDR, "name": NODE}` on stdout, and
//! serves until its standard input closes: a control process (registered as
//! [`CTL_NAME`]) spawns echo and sink processes on request and reports the sinks' counters.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use partisan::{ChannelName, Envelope, Node, Pid, Process, SendOptions};

use super::protocol::{CounterSet, Counts, Reply, Request, CTL_CHANNEL, CTL_NAME};
use super::{node_builder, runtime, NetArgs};

/// Options of the hidden `partisan bench-peer` command (set by the driver).
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// Cluster cookie shared with the driver.
    #[arg(long)]
    cookie: String,
    #[command(flatten)]
    net: NetArgs,
}

/// Counters the sinks add to.
#[derive(Default)]
struct Counters {
    msgs: AtomicU64,
    bytes: AtomicU64,
    stream_msgs: AtomicU64,
    stream_bytes: AtomicU64,
}

impl Counters {
    fn of(&self, set: CounterSet) -> (&AtomicU64, &AtomicU64) {
        match set {
            CounterSet::Oneway => (&self.msgs, &self.bytes),
            CounterSet::Stream => (&self.stream_msgs, &self.stream_bytes),
        }
    }

    fn read(&self, origin: Instant) -> Counts {
        Counts {
            msgs: self.msgs.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            stream_msgs: self.stream_msgs.load(Relaxed),
            stream_bytes: self.stream_bytes.load(Relaxed),
            at_ns: origin.elapsed().as_nanos() as u64,
        }
    }
}

/// Runs the peer until standard input closes.
pub fn run(args: PeerArgs) -> anyhow::Result<()> {
    let rt = runtime(args.net.threads)?;
    rt.block_on(async move {
        let node = node_builder("bench_peer@127.0.0.1", &args.cookie, &args.net)?
            .start()
            .await
            .context("starting the peer node")?;
        let ctl = node.process_named(CTL_NAME)?;
        super::rpc::register_echo(&node)?;
        tokio::spawn(control(node.clone(), ctl, Arc::new(Counters::default())));
        let ready = serde_json::json!({
            "listen": node.listen_addrs()[0].to_string(),
            "name": node.name().to_string(),
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
        drop(out);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
        let _ = rx.await;
        node.shutdown().await;
        anyhow::Ok(())
    })
}

async fn control(node: Node, mut ctl: Process, counters: Arc<Counters>) {
    let origin = Instant::now();
    let ctl_opts = SendOptions::on(&ChannelName::new(CTL_CHANNEL).expect("valid channel name"));
    while let Some(env) = ctl.recv().await {
        let Some(from) = env.from.clone() else {
            continue;
        };
        match env.decode::<Request>() {
            Ok(Request::Echo { channel }) => match ChannelName::new(&channel) {
                Ok(ch) => {
                    let (opts, ctl_opts) = (SendOptions::on(&ch), ctl_opts.clone());
                    node.spawn(move |p| echo(p, from, opts, ctl_opts));
                }
                Err(e) => tracing::warn!(error = %e, "bad echo channel"),
            },
            Ok(Request::Sink { counter }) => {
                let (counters, ctl_opts) = (counters.clone(), ctl_opts.clone());
                node.spawn(move |p| sink(p, from, counters, counter, ctl_opts));
            }
            Ok(Request::Counts) => {
                let reply = Reply::Counts(counters.read(origin));
                if let Err(e) = ctl.send_typed(&from, &reply, &ctl_opts).await {
                    tracing::warn!(error = %e, "cannot answer a counts request");
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable control message"),
        }
    }
}

/// Sends every message back to its sender, in arrival order.
async fn echo(mut p: Process, requester: Pid, opts: SendOptions, ctl_opts: SendOptions) {
    if p.send_typed(&requester, &Reply::Ready, &ctl_opts)
        .await
        .is_err()
    {
        return;
    }
    let mut buf = Vec::with_capacity(64);
    while p.recv_many(&mut buf, 64).await > 0 {
        for Envelope { from, payload, .. } in buf.drain(..) {
            if let Some(from) = from {
                if p.send(&from, payload, &opts).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts messages and payload bytes.
async fn sink(
    mut p: Process,
    requester: Pid,
    counters: Arc<Counters>,
    set: CounterSet,
    ctl_opts: SendOptions,
) {
    if p.send_typed(&requester, &Reply::Ready, &ctl_opts)
        .await
        .is_err()
    {
        return;
    }
    let (msgs, bytes) = counters.of(set);
    let mut buf = Vec::with_capacity(256);
    loop {
        let n = p.recv_many(&mut buf, 256).await;
        if n == 0 {
            return;
        }
        let b: usize = buf.iter().map(|e| e.payload.len()).sum();
        msgs.fetch_add(n as u64, Relaxed);
        bytes.fetch_add(b as u64, Relaxed);
        buf.clear();
    }
}
