//! The driver's side of a benchmark: a local node connected to a peer process, and the
//! requests that set up processes on the peer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use partisan::{ChannelName, Node, NodeName, Pid, Process, RegisteredName, SendOptions};

use super::peer_child::PeerChild;
use super::progress::Progress;
use super::protocol::{Counts, Reply, Request, BULK_CHANNEL, CTL_CHANNEL, CTL_NAME};
use super::{node_builder, NetArgs};

/// How long set-up steps (connecting, spawning remote processes, reading counters) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A local node, the peer process and what is needed to talk to it.
pub struct Harness {
    /// The local node.
    pub node: Node,
    /// Options of workload sends (the workload channel).
    pub work: SendOptions,
    /// Options of the head-of-line stream (the bulk channel).
    pub bulk: SendOptions,
    ctl: RegisteredName,
    ctl_opts: SendOptions,
    peer: Option<PeerChild>,
}

impl Harness {
    /// Starts the peer process and a local node, and connects every lane.
    pub async fn start(net: &NetArgs) -> anyhow::Result<Harness> {
        let cookie = format!(
            "bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let peer = PeerChild::spawn(&cookie, net)?;
        let node = node_builder("bench_driver@127.0.0.1", &cookie, net)?
            .start()
            .await
            .context("starting the local node")?;
        let peer_name: NodeName = node
            .connect_timeout(peer.addr, SETUP_TIMEOUT)
            .await
            .context("connecting to the peer process")?;
        if !node.wait_fully_connected(&peer_name, SETUP_TIMEOUT).await {
            bail!("not every lane to the peer came up");
        }
        let ctl = Node::name_on(&peer_name, CTL_NAME)?;
        Ok(Harness {
            work: SendOptions::on(&ChannelName::new(net.channel_name())?),
            bulk: SendOptions::on(&ChannelName::new(BULK_CHANNEL)?),
            ctl_opts: SendOptions::on(&ChannelName::new(CTL_CHANNEL)?),
            node,
            ctl,
            peer: Some(peer),
        })
    }

    /// Asks the peer for a process (an echo or a sink) that announces itself to `requester`;
    /// returns its pid.
    pub async fn spawn_remote(
        &self,
        requester: &mut Process,
        req: &Request,
    ) -> anyhow::Result<Pid> {
        requester
            .send_typed(&self.ctl, req, &self.ctl_opts)
            .await
            .context("asking the peer for a process")?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let env = requester
                .recv_timeout(left)
                .await
                .context("waiting for the peer's process")?;
            if let (Ok(Reply::Ready), Some(pid)) = (env.decode::<Reply>(), env.from) {
                return Ok(pid);
            }
        }
    }

    /// Asks the peer for a process announced to a short-lived local process.
    pub async fn spawn_remote_here(&self, req: &Request) -> anyhow::Result<Pid> {
        self.spawn_remote(&mut self.node.process(), req).await
    }

    /// The peer's sink counters now.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let mut me = self.node.process();
        me.send_typed(&self.ctl, &Request::Counts, &self.ctl_opts)
            .await
            .context("asking the peer for its counters")?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let env = me
                .recv_timeout(left)
                .await
                .context("waiting for the peer's counters")?;
            if let Ok(Reply::Counts(c)) = env.decode::<Reply>() {
                return Ok(c);
            }
        }
    }

    /// Shuts the local node down and stops the peer process.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.node.shutdown().await;
        match self.peer.take() {
            Some(p) => tokio::task::spawn_blocking(move || p.stop()).await?,
            None => Ok(()),
        }
    }
}

/// Fails when workers stop making progress (a lost message would otherwise hang a caller).
pub struct Watchdog {
    /// Operations completed so far, by all workers.
    pub done: Arc<AtomicU64>,
}

impl Watchdog {
    /// A watchdog over a fresh progress counter.
    pub fn new() -> Self {
        Watchdog {
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Waits until `until`, failing if no operation completes for [`SETUP_TIMEOUT`].
    pub async fn wait_until(&self, until: Instant, progress: &mut Progress) -> anyhow::Result<()> {
        let mut last = self.done.load(Relaxed);
        let mut last_change = Instant::now();
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            progress.tick();
            tokio::time::sleep((until - now).min(Duration::from_millis(200))).await;
            let d = self.done.load(Relaxed);
            if d != last {
                (last, last_change) = (d, Instant::now());
            } else if last_change.elapsed() > SETUP_TIMEOUT {
                bail!("no progress for {SETUP_TIMEOUT:?}: a message was lost or the peer stalled");
            }
        }
    }
}

/// Waits for every task (each at most [`SETUP_TIMEOUT`]); the first failure aborts the rest.
pub async fn join_all<T: Send + 'static>(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<T>>>,
) -> anyhow::Result<Vec<T>> {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let mut out = Vec::with_capacity(tasks.len());
    let mut failure = None;
    for t in tasks {
        match tokio::time::timeout(SETUP_TIMEOUT, t).await {
            Ok(Ok(Ok(v))) => out.push(v),
            Ok(Ok(Err(e))) => failure = Some(e),
            Ok(Err(e)) => failure = Some(anyhow::anyhow!("worker task failed: {e}")),
            Err(_) => failure = Some(anyhow::anyhow!("a worker did not finish in time")),
        }
        if failure.is_some() {
            break;
        }
    }
    match failure {
        Some(e) => {
            for a in aborts {
                a.abort();
            }
            Err(e)
        }
        None => Ok(out),
    }
}
