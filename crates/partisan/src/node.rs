//! The node: builder, handle, and the public API for connections and sends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use partisan_core::broadcast::kv_map::KvConfig;
use partisan_core::broadcast::{BroadcastHandler, PlumtreeConfig};
use partisan_core::connection_plan::{ConnId, DialTarget};
use partisan_core::id::{
    ChannelName, Creation, NodeName, NodeSpec, Pid, ProcessName, Ref, RegisteredName,
};
use partisan_core::time::Instant as CoreInstant;
use partisan_core::wire::{Target, UserHeader};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Resolved};
use crate::connection::lane_queue::PushError;
use crate::connection::table::ConnTable;
use crate::driver::{ConnectTarget, Driver, DriverCmd};
use crate::error::{ConnectError, RegisterError, SendError, StartError};
use crate::process::registry::{DeliverFail, Envelope, LocalTarget, RegisterFail, Registry};
use crate::process::{Process, ProcessExit};
use crate::send::{Dest, Destination, SendOptions};
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::accept;
use crate::transport::{TcpTransport, Transport};

/// What a send does after looking its lane up.
enum Step {
    /// The destination names another incarnation of the peer.
    Stale,
    /// Queued, or refused for good.
    Done(Result<(), PushError>),
    /// The queue is full and the sender waits for room.
    Wait(Arc<crate::connection::lane_queue::LaneQueue>, UserHeader),
}

/// What is left of a send whose first attempt could not finish at once.
enum Later {
    /// Wait for room in a local mailbox.
    Local(Waiting),
    /// Wait for room in a lane's queue.
    Push(
        Arc<crate::connection::lane_queue::LaneQueue>,
        UserHeader,
        Bytes,
    ),
    /// Not connected to the destination: try a relay.
    Relay(Bytes),
    /// The lane closed under the push: look up once more.
    Retry(Bytes),
}

/// Bound of the driver's command queue (control events only; data never passes there).
const DRIVER_QUEUE: usize = 4096;
/// Membership events kept for slow subscribers before they see `Lagged`.
const EVENT_RING: usize = 1024;

/// State shared by every task of a node.
pub(crate) struct Shared {
    pub(crate) spec: NodeSpec,
    /// How this node presents itself in handshakes.
    pub(crate) identity: partisan_core::wire::handshake::Identity,
    pub(crate) creation: Creation,
    pub(crate) cfg: Resolved,
    /// How connections are dialed (and were listened for).
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) registry: Registry,
    /// Node monitors of local processes.
    pub(crate) node_monitors: parking_lot::Mutex<crate::process::node_monitor::NodeMonitors>,
    pub(crate) rpc: crate::rpc::Rpc,
    pub(crate) table: ConnTable,
    pub(crate) stats: Stats,
    pub(crate) driver: mpsc::Sender<DriverCmd>,
    /// Cancelled at shutdown once connections had their chance to close cleanly.
    pub(crate) shutdown_conns: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) origin: tokio::time::Instant,
    /// Seed of the node's protocol randomness (`rng_seed`, or drawn at start).
    pub(crate) rng_seed: u64,
    /// Membership as last published by the driver.
    pub(crate) membership: arc_swap::ArcSwap<crate::membership::Snapshot>,
    /// Up/down events (bounded ring; slow receivers see `Lagged`).
    pub(crate) events: tokio::sync::broadcast::Sender<crate::membership::MembershipEvent>,
    pub(crate) default_channel: ChannelName,
    next_conn: AtomicU64,
    stopped: AtomicBool,
}

impl Shared {
    /// Now, as the core sees time: microseconds since the node started.
    pub(crate) fn now(&self) -> CoreInstant {
        CoreInstant(self.origin.elapsed().as_micros() as u64)
    }

    /// Whether the node is stopping or stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Relaxed))
    }

    /// Hands an envelope to a local mailbox, waiting while it is full.
    ///
    /// Every received message passes here, and a future is moved (copied) as a whole when it
    /// is created and awaited: the waiting path is boxed so this one stays a few words.
    pub(crate) async fn deliver_local(
        &self,
        target: LocalTarget<'_>,
        env: Envelope,
    ) -> Result<(), SendError> {
        // Described only on failure: formatting a name on every delivery cost more than the
        // delivery itself.
        let name = match &target {
            LocalTarget::Name(n) => Some(*n),
            _ => None,
        };
        let delivered = match self.deliver_now(target, env, true) {
            Delivery::Done => true,
            Delivery::Wait(w) => Box::pin(self.deliver_waiting(w)).await,
            Delivery::Full | Delivery::NoProcess => false,
        };
        if delivered {
            return Ok(());
        }
        Err(SendError::NoProcess(match name {
            Some(n) => format!("name {n}"),
            None => "process".to_string(),
        }))
    }

    /// Delivers into a local mailbox without waiting, counting the outcome; with `wait`, a
    /// full mailbox yields what waiting for room needs instead of failing.
    pub(crate) fn deliver_now(
        &self,
        target: LocalTarget<'_>,
        env: Envelope,
        wait: bool,
    ) -> Delivery {
        match self.registry.try_deliver(target, env) {
            Ok(()) => {
                self.stats.node.delivered.fetch_add(1, Relaxed);
                Delivery::Done
            }
            Err(DeliverFail::Full { mailbox, env }) if wait => {
                Delivery::Wait(Waiting { mailbox, env })
            }
            Err(DeliverFail::Full { .. }) => Delivery::Full,
            Err(DeliverFail::NoProcess) => {
                self.stats.node.undeliverable.fetch_add(1, Relaxed);
                Delivery::NoProcess
            }
        }
    }

    /// Waits for room in a full mailbox, then delivers; `false` (counted as undeliverable)
    /// when the process ended meanwhile.
    pub(crate) async fn deliver_waiting(&self, w: Waiting) -> bool {
        match w.mailbox.push(w.env).await {
            Ok(()) => {
                self.stats.node.delivered.fetch_add(1, Relaxed);
                true
            }
            Err(_) => {
                self.stats.node.undeliverable.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// The send path shared by nodes and processes.
    ///
    /// The first attempt runs without awaiting anything ([`Shared::send_now`]); only a send
    /// that must wait (for room, or for a relay) or try again continues in a boxed future. A
    /// future is moved (copied) whole when it is created and awaited, so every send's future
    /// stays a few words.
    pub(crate) async fn send(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        payload: Bytes,
        opts: &SendOptions,
        wait: bool,
    ) -> Result<(), SendError> {
        match self.send_now(from, dest, payload, opts, wait) {
            Ok(done) => done,
            Err(later) => Box::pin(self.send_later(from, dest, opts, wait, later)).await,
        }
    }

    /// The first attempt of [`Shared::send`]: done (`Ok`), or what is left to do.
    fn send_now(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        payload: Bytes,
        opts: &SendOptions,
        wait: bool,
    ) -> Result<Result<(), SendError>, Later> {
        if self.stopped.load(Relaxed) {
            return Ok(Err(SendError::Closed));
        }
        let node = dest.node();
        if node == self.spec.name() {
            return match self.send_local(from, dest, payload, wait) {
                Err(e) => Ok(Err(e)),
                Ok(Delivery::Done) => Ok(Ok(())),
                Ok(Delivery::Wait(w)) => Err(Later::Local(w)),
                Ok(Delivery::Full) => Ok(Err(SendError::Full(self.spec.name().clone()))),
                Ok(Delivery::NoProcess) => {
                    Ok(Err(SendError::NoProcess(dest.to_remote_ref().to_string())))
                }
            };
        }
        match self.route_step(from, dest, &payload, opts, wait) {
            Ok(Step::Stale) => Ok(self.stale(dest)),
            Ok(Step::Done(Ok(()))) => Ok(Ok(())),
            // A lane being replaced may close between lookup and push: look up once more.
            Ok(Step::Done(Err(PushError::Closed))) => Err(Later::Retry(payload)),
            Ok(Step::Done(Err(e))) => Ok(Err(e.into_send_error(node))),
            Ok(Step::Wait(queue, header)) => Err(Later::Push(queue, header, payload)),
            // A pid of another run is stale even while the new run's lanes come up.
            Err(SendError::NotConnected(_) | SendError::LaneDown { .. })
                if self.is_stale_for_peer(dest) =>
            {
                Ok(self.stale(dest))
            }
            // Not connected: a relay (a client's server) may reach it.
            Err(SendError::NotConnected(_)) => Err(Later::Relay(payload)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// What is left of a send after [`Shared::send_now`].
    async fn send_later(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        opts: &SendOptions,
        wait: bool,
        later: Later,
    ) -> Result<(), SendError> {
        let node = dest.node();
        match later {
            Later::Local(w) => {
                if self.deliver_waiting(w).await {
                    Ok(())
                } else {
                    Err(SendError::NoProcess(dest.to_remote_ref().to_string()))
                }
            }
            Later::Relay(payload) => self.send_relayed(from, dest, payload, opts, wait).await,
            Later::Push(queue, header, payload) => {
                match queue.push((&header).into(), &payload).await {
                    Ok(()) => Ok(()),
                    Err(PushError::Closed) => {
                        self.send_again(from, dest, payload, opts, wait).await
                    }
                    Err(e) => Err(e.into_send_error(node)),
                }
            }
            Later::Retry(payload) => self.send_again(from, dest, payload, opts, wait).await,
        }
    }

    /// The second and last attempt of a remote send whose lane closed under it.
    async fn send_again(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        payload: Bytes,
        opts: &SendOptions,
        wait: bool,
    ) -> Result<(), SendError> {
        let r = match self.route_step(from, dest, &payload, opts, wait) {
            Ok(Step::Stale) => return self.stale(dest),
            Ok(Step::Done(r)) => r,
            Ok(Step::Wait(queue, header)) => queue.push((&header).into(), &payload).await,
            Err(SendError::NotConnected(_) | SendError::LaneDown { .. })
                if self.is_stale_for_peer(dest) =>
            {
                return self.stale(dest);
            }
            Err(e) => return Err(e),
        };
        r.map_err(|e| e.into_send_error(dest.node()))
    }

    /// Looks the lane up and pushes onto it if there is room. The common case (room in the
    /// queue) pushes while the table snapshot is loaded, without taking a reference to the
    /// lane; only a sender that must wait takes one.
    fn route_step(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        payload: &Bytes,
        opts: &SendOptions,
        wait: bool,
    ) -> Result<Step, SendError> {
        let channel = opts.channel.as_ref().unwrap_or(&self.default_channel);
        self.table.with_route_cached(
            dest.node(),
            channel,
            opts.partition_key,
            self.cfg.channel_fallback,
            |lane, creation| {
                let to = match dest {
                    Dest::Pid(p) if p.creation != creation => return Step::Stale,
                    Dest::Ref(r) if r.creation != creation => return Step::Stale,
                    Dest::Pid(p) => Target::Pid(p.id),
                    Dest::Ref(r) => Target::Ref(r.id),
                    Dest::Name(n) => Target::Name(n.name.clone()),
                };
                let header = UserHeader { to, from };
                match lane.queue.try_push((&header).into(), payload) {
                    Err(PushError::Full) if wait => Step::Wait(lane.queue.clone(), header),
                    r => Step::Done(r),
                }
            },
        )
    }

    /// Whether `dest` is a pid or reference of another run than the peer's connected one.
    fn is_stale_for_peer(&self, dest: Dest<'_>) -> bool {
        let creation = match dest {
            Dest::Pid(p) => p.creation,
            Dest::Ref(r) => r.creation,
            Dest::Name(_) => return false,
        };
        self.table
            .creation_of(dest.node())
            .is_some_and(|c| c != creation)
    }

    fn stale(&self, dest: Dest<'_>) -> Result<(), SendError> {
        Err(self.stale_err(dest))
    }

    /// Counts and describes a send to a pid or reference of another run.
    fn stale_err(&self, dest: Dest<'_>) -> SendError {
        self.stats.node.stale_pid.fetch_add(1, Relaxed);
        SendError::Stale(dest.to_remote_ref())
    }

    /// A send to this node, up to the wait for mailbox room (see [`Shared::deliver_now`]).
    fn send_local(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        payload: Bytes,
        wait: bool,
    ) -> Result<Delivery, SendError> {
        let (target, via) = match dest {
            Dest::Pid(p) if p.creation != self.creation => return Err(self.stale_err(dest)),
            Dest::Ref(r) if r.creation != self.creation => return Err(self.stale_err(dest)),
            Dest::Pid(p) => (LocalTarget::Pid(p.id), None),
            Dest::Ref(r) => (LocalTarget::Ref(r.id), Some(r.clone())),
            Dest::Name(n) => (LocalTarget::Name(&n.name), None),
        };
        let env = Envelope {
            from: from.map(|id| Pid {
                node: self.spec.name().clone(),
                creation: self.creation,
                id,
            }),
            via,
            payload,
            signal: None,
        };
        Ok(self.deliver_now(target, env, wait))
    }
}

/// What [`Shared::deliver_now`] did.
pub(crate) enum Delivery {
    Done,
    /// The mailbox is full; not waiting.
    Full,
    NoProcess,
    /// The mailbox is full and the sender waits for room.
    Wait(Waiting),
}

/// What waiting for room in a full mailbox needs.
pub(crate) struct Waiting {
    mailbox: Arc<crate::process::mailbox::Mailbox>,
    env: Envelope,
}

impl Shared {
    /// A control message from a peer (overlay traffic).
    pub(crate) async fn on_control(
        &self,
        ctx: &crate::connection::ConnCtx,
        c: partisan_core::wire::Control,
    ) {
        // A peer's monitor or link names a local process: resolve (and mark) it now, before
        // this reader delivers the messages that follow it, which may end that process.
        let resolved = match &c {
            partisan_core::wire::Control::Process(f) => {
                f.msg.as_ref().and_then(|m| self.registry.pre_resolve(m))
            }
            _ => None,
        };
        // Control traffic is small and rate-limited by its protocols; waiting here when the
        // driver is busy pushes back on the peer through this lane only.
        let _ = self
            .driver
            .send(DriverCmd::Control {
                conn: ctx.conn,
                msg: c,
                resolved,
            })
            .await;
    }
}

/// Builds and starts a [`Node`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let node = partisan::NodeBuilder::new("a@127.0.0.1")
///     .listen("127.0.0.1:0")
///     .channel("vnode", 4)
///     .cookie("secret")
///     .start()
///     .await?;
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    config: Config,
    transport: Arc<dyn Transport>,
    broadcasts: Vec<crate::broadcast::Registration>,
}

impl NodeBuilder {
    /// A builder for node `name` (`name@host`) with every other option at its default.
    pub fn new(name: &str) -> Self {
        NodeBuilder::from_config(Config {
            name: Some(name.to_string()),
            listen_addrs: Vec::new(),
            ..Config::default()
        })
    }

    /// A builder starting from a whole configuration.
    pub fn from_config(config: Config) -> Self {
        NodeBuilder {
            config,
            transport: Arc::new(TcpTransport),
            broadcasts: Vec::new(),
        }
    }

    /// Listens and dials over `transport` instead of TCP (the default): for instance a
    /// [`MemoryTransport`](crate::MemoryTransport) shared by the nodes of a test. Not part of
    /// the [`Config`]: the configuration stays a plain value.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Arc::new(transport);
        self
    }

    /// Adds a listen address (`IP:PORT`; port 0 picks a free port). Without any, the node
    /// listens on `127.0.0.1:0`.
    pub fn listen(mut self, addr: &str) -> Self {
        self.config.listen_addrs.push(addr.to_string());
        self
    }

    /// Adds a channel with `parallelism` lanes per peer, or sets an existing one's lanes and
    /// makes it ordinary (its other settings, such as `write_chunk`, are kept).
    pub fn channel(mut self, name: &str, parallelism: u16) -> Self {
        let c = self.config.channels.entry(name.to_string()).or_default();
        c.parallelism = Some(parallelism);
        c.monotonic = false;
        self
    }

    /// Adds a monotonic (latest-value-wins) channel, or makes an existing one monotonic with
    /// `parallelism` lanes (its other settings are kept).
    pub fn monotonic_channel(mut self, name: &str, parallelism: u16) -> Self {
        let c = self.config.channels.entry(name.to_string()).or_default();
        c.parallelism = Some(parallelism);
        c.monotonic = true;
        self
    }

    /// Default lanes per peer for channels that do not set their own.
    pub fn parallelism(mut self, n: u16) -> Self {
        self.config.parallelism = n;
        self
    }

    /// The cluster cookie.
    pub fn cookie(mut self, cookie: &str) -> Self {
        self.config.cookie = Some(cookie.to_string());
        self.config.cookie_file = None;
        self
    }

    /// Changes any other option.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a broadcast handler when the node starts: `make` is called with the node's
    /// name at every [`NodeBuilder::start`] (so each run of the node, a restart from a clone of
    /// this builder included, starts with fresh handler state and catches up by anti-entropy),
    /// and the node takes part in the handler's Plumtree with `cfg` from its start on.
    ///
    /// `start` fails with [`StartError::Broadcast`], naming the handler, if its name is invalid
    /// (1 to 64 ASCII letters, digits, `_`, `-`, `.`) or taken by another handler, or if its
    /// channel is not configured on this node. Every node of a cluster must register the same
    /// handlers (by name) for them to reach each other; a Plumtree message for a handler a
    /// node lacks is dropped and counted there.
    pub fn broadcast_handler<H, F>(mut self, make: F, cfg: PlumtreeConfig) -> Self
    where
        H: BroadcastHandler,
        F: Fn(&NodeName) -> H + Send + Sync + 'static,
    {
        self.broadcasts
            .push(crate::broadcast::Registration::new(make, cfg));
        self
    }

    /// Registers the replicated key-value map ([`KvMap`](crate::KvMap), handler name `"kv"`,
    /// default channel), read and written through [`Node::kv`]; `kv` sets its tombstone grace
    /// period, `cfg` its Plumtree (the default ticks: lazy 1 s, exchange 10 s).
    pub fn kv_map(mut self, kv: KvConfig, cfg: PlumtreeConfig) -> Self {
        self.broadcasts
            .push(crate::broadcast::kv_registration(kv, cfg));
        self
    }

    /// Validates the configuration, binds the listen addresses and starts the node's tasks.
    /// Must be called inside a tokio runtime.
    pub async fn start(mut self) -> Result<Node, StartError> {
        if self.config.listen_addrs.is_empty() {
            self.config.listen_addrs = Config::default().listen_addrs;
        }
        let cfg = self.config.resolve()?;
        let channels = cfg.channels.keys().cloned().collect();
        let handlers = crate::broadcast::make_handlers(&self.broadcasts, &cfg.name, &channels)?;
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for addr in &cfg.listen {
            let l = self
                .transport
                .listen(*addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
            bound.push(l.local_addr());
            listeners.push(l);
        }
        let spec = NodeSpec::new(cfg.name.clone(), bound, cfg.channels.clone()).map_err(|e| {
            crate::config::ConfigError::Invalid {
                key: "channels".into(),
                reason: e.to_string(),
            }
        })?;
        let creation = match cfg.creation_file.clone() {
            // File I/O and fsync off the async thread (slow storage must not stall it).
            Some(path) => tokio::task::spawn_blocking(move || crate::creation::next(Some(&path)))
                .await
                .map_err(|e| StartError::CreationFile {
                    path: cfg.creation_file.clone().unwrap_or_default(),
                    reason: e.to_string(),
                })??,
            None => crate::creation::next(None)?,
        };
        let (tx, rx) = mpsc::channel(DRIVER_QUEUE);
        let identity = partisan_core::wire::handshake::Identity {
            spec: spec.clone(),
            creation,
            overlay: cfg.overlay.kind(),
            tag: cfg.tag.clone(),
            max_frame: u32::try_from(cfg.max_frame_len).unwrap_or(u32::MAX),
        };
        let cfg_rng_seed = cfg.rng_seed.unwrap_or_else(rand::random);
        let shared = Arc::new(Shared {
            identity,
            stats: Stats::new(spec.name().as_str(), spec.channels().keys()),
            table: ConnTable::new(spec.clone()),
            registry: Registry::new(cfg.mailbox_capacity, cfg.mailbox_bytes),
            node_monitors: Default::default(),
            rpc: crate::rpc::Rpc::new(cfg.rpc_concurrency),
            spec,
            creation,
            cfg,
            transport: self.transport,
            driver: tx,
            shutdown_conns: CancellationToken::new(),
            tasks: TaskTracker::new(),
            origin: tokio::time::Instant::now(),
            rng_seed: cfg_rng_seed,
            membership: arc_swap::ArcSwap::from_pointee(Default::default()),
            events: tokio::sync::broadcast::channel(EVENT_RING).0,
            default_channel: ChannelName::default_channel(),
            next_conn: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
        });
        let rng_seed = shared.rng_seed;
        let mut driver = Driver::new(shared.clone(), rx, rng_seed);
        if let Err(e) = driver.register_broadcasts(handlers) {
            // Nothing was spawned: the listeners close as they are dropped.
            shared.stopped.store(true, Relaxed);
            return Err(e);
        }
        shared.tasks.spawn(driver.run());
        for l in listeners {
            shared.tasks.spawn(accept::accept_loop(shared.clone(), l));
        }
        tracing::info!(
            node = %shared.spec.name(),
            creation,
            listen = ?shared.spec.listen_addrs(),
            rng_seed,
            "node started"
        );
        let stop_on_drop = Arc::new(StopOnDrop(shared.clone()));
        let node = Node {
            shared,
            _stop_on_drop: Some(stop_on_drop),
        };
        crate::rpc::start(&node);
        Ok(node)
    }
}

/// A running node. Cheap to clone; every clone is the same node.
///
/// The node runs until [`Node::shutdown`], or until the last handle is dropped (every clone,
/// and every [`Process`] made with [`Node::process`] or [`Node::process_named`], which holds
/// one): then it shuts down the same way in the background (on the Tokio runtime current at the
/// drop; without one, connections are cut without a goodbye). Processes started with
/// [`Node::spawn`] belong to the node and do not keep it running: their mailboxes end when it
/// stops (nor do clones of their [`Process::node`] handle, or processes made from it). Call
/// `shutdown().await` to know when it is done.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<Shared>,
    /// `None` on the handles of spawned processes, which must not keep their node alive.
    _stop_on_drop: Option<Arc<StopOnDrop>>,
}

/// Shuts the node down when the last user handle goes (the node's own tasks hold `Shared`,
/// not this, so they never keep it alive).
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.stopped.load(Relaxed) {
            return;
        }
        let shared = self.0.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(stop(shared));
            }
            Err(_) => {
                shared.stopped.store(true, Relaxed);
                shared.shutdown_conns.cancel();
                shared.registry.clear();
                shared.tasks.close();
            }
        }
    }
}

/// The shutdown sequence of [`Node::shutdown`].
async fn stop(shared: Arc<Shared>) {
    if shared.stopped.swap(true, Relaxed) {
        shared.tasks.wait().await;
        return;
    }
    let (tx, rx) = oneshot::channel();
    if shared
        .driver
        .send(DriverCmd::Shutdown { reply: tx })
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
    }
    shared.shutdown_conns.cancel();
    shared.registry.clear();
    shared.tasks.close();
    shared.tasks.wait().await;
    tracing::info!(node = %shared.spec.name(), "node stopped");
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", self.name())
            .field("creation", &self.creation())
            .finish()
    }
}

/// What to connect to: an address (the node is learned at the handshake) or a node spec.
#[derive(Debug, Clone)]
pub enum PeerTarget {
    /// Whatever node listens there.
    Addr(SocketAddr),
    /// That node, at the addresses of its spec.
    Spec(NodeSpec),
}

impl From<SocketAddr> for PeerTarget {
    fn from(a: SocketAddr) -> Self {
        PeerTarget::Addr(a)
    }
}

impl From<NodeSpec> for PeerTarget {
    fn from(s: NodeSpec) -> Self {
        PeerTarget::Spec(s)
    }
}

impl From<&NodeSpec> for PeerTarget {
    fn from(s: &NodeSpec) -> Self {
        PeerTarget::Spec(s.clone())
    }
}

/// Lanes up to one peer on one channel, for status output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LaneStatus {
    /// Peer node.
    pub node: String,
    /// Channel.
    pub channel: String,
    /// Lanes up.
    pub up: usize,
}

impl Node {
    /// This node's name.
    pub fn name(&self) -> &NodeName {
        self.shared.spec.name()
    }

    /// This node's spec, with the addresses it actually listens on.
    pub fn spec(&self) -> &NodeSpec {
        &self.shared.spec
    }

    /// This run's creation (incarnation).
    pub fn creation(&self) -> Creation {
        self.shared.creation
    }

    /// The seed of this node's protocol randomness (overlay choices, redial and keepalive
    /// jitter): the configured `rng_seed`, or the one drawn at start. Starting a node with it
    /// replays the same protocol choices given the same inputs; handshake nonces never derive
    /// from it.
    pub fn rng_seed(&self) -> u64 {
        self.shared.rng_seed
    }

    /// Addresses the node listens on.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        self.shared.spec.listen_addrs()
    }

    /// Connects to a peer and keeps every lane of every channel of its spec up, redialing with
    /// backoff when a connection is lost, until [`Node::disconnect`]. Returns the peer's name
    /// once every lane is up. A target never reached that cannot be fixed by retrying (wrong
    /// cookie, overlay, version, name in use, another node at the address) fails at once with
    /// that cause and is no longer dialed. Otherwise, after `connect_timeout` x 10, the call
    /// returns the latest failure or [`ConnectError::TimedOut`] and the peer stays wanted and
    /// redialed ([`ConnectError::is_retrying`]): [`Node::cancel_connect`] stops an address
    /// nobody answered at, [`Node::disconnect`] a node.
    pub async fn connect(&self, target: impl Into<PeerTarget>) -> Result<NodeName, ConnectError> {
        let timeout = (self.shared.cfg.connect_timeout * 10).max(Duration::from_secs(5));
        self.connect_timeout(target, timeout).await
    }

    /// [`Node::connect`] with an explicit timeout.
    pub async fn connect_timeout(
        &self,
        target: impl Into<PeerTarget>,
        timeout: Duration,
    ) -> Result<NodeName, ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let target = match target.into() {
            PeerTarget::Addr(a) => ConnectTarget::Addr(a),
            PeerTarget::Spec(s) => ConnectTarget::Spec(s),
        };
        let dial_target = target.dial_target();
        let (tx, rx) = oneshot::channel();
        self.shared
            .driver
            .send(DriverCmd::Connect { target, reply: tx })
            .await
            .map_err(|_| ConnectError::ShuttingDown)?;
        let name = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ConnectError::ShuttingDown),
            Err(_) => return Err(self.timed_out(dial_target, timeout).await),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if self.wait_fully_connected(&name, left).await {
            Ok(name)
        } else {
            Err(self.timed_out(DialTarget::Node(name), timeout).await)
        }
    }

    /// The error of a connect or join to `target` that did not complete within `timeout`:
    /// the latest dial failure, or [`ConnectError::TimedOut`] when no dial has failed.
    pub(crate) async fn timed_out(&self, target: DialTarget, timeout: Duration) -> ConnectError {
        let last = self
            .on_engine(move |e| e.last_dial_failure(&target).cloned())
            .await
            .ok()
            .flatten();
        match last {
            Some(f) => ConnectError::from_dial(f, timeout),
            None => ConnectError::TimedOut(timeout),
        }
    }

    /// Stops dialing `addr` when it was given by address (`connect`, `join`, seeds) and no node
    /// has answered there yet; callers still waiting on it get [`ConnectError::GaveUp`].
    /// Returns whether such an attempt was pending. Once a node answered, use
    /// [`Node::disconnect`] with its name.
    pub async fn cancel_connect(&self, addr: SocketAddr) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .shared
            .driver
            .send(DriverCmd::CancelAddr { addr, reply: tx })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Stops wanting `node`: the connections this node dialed to it are closed cleanly and not
    /// redialed. Connections the peer dialed stay while it wants us (closing them would only
    /// make it redial, and look like a failure to its overlay).
    pub async fn disconnect(&self, node: &NodeName) {
        let _ = self
            .shared
            .driver
            .send(DriverCmd::Disconnect { node: node.clone() })
            .await;
    }

    /// Waits until every lane of every channel of `node`'s spec is up, polling the table.
    /// Returns whether that happened within `timeout`.
    #[must_use = "false means the lanes were not all up within the timeout"]
    pub async fn wait_fully_connected(&self, node: &NodeName, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_fully_connected(node) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Nodes with at least one lane up, sorted. Lock-free.
    pub fn nodes(&self) -> Vec<NodeName> {
        self.shared.table.nodes()
    }

    /// Whether at least one lane to `node` is up. Lock-free.
    pub fn is_connected(&self, node: &NodeName) -> bool {
        node == self.name() || self.shared.table.is_connected(node)
    }

    /// Whether at least one lane of `channel` to `node` is up. Lock-free.
    pub fn is_connected_on(&self, node: &NodeName, channel: &ChannelName) -> bool {
        node == self.name() || self.shared.table.is_connected_on(node, channel)
    }

    /// Whether every lane of every channel of `node`'s spec is up. Lock-free.
    ///
    /// The lanes counted are the peer's, which this node dials when it wants the peer (a
    /// `connect`, or the overlay). A peer that only dialed us opens the lanes of *our* spec, so
    /// when the two specs differ this can stay false on the accepting side while the dialing
    /// side reports true; ask on the side that connected.
    pub fn is_fully_connected(&self, node: &NodeName) -> bool {
        node == self.name() || self.shared.table.is_fully_connected(node)
    }

    /// Creation of the connected incarnation of `node`, if connected.
    pub fn peer_creation(&self, node: &NodeName) -> Option<Creation> {
        self.shared.table.creation_of(node)
    }

    /// Lanes up per peer and channel.
    pub fn lanes(&self) -> Vec<LaneStatus> {
        self.shared
            .table
            .lanes_up()
            .into_iter()
            .map(|(n, c, up)| LaneStatus {
                node: n.to_string(),
                channel: c.to_string(),
                up,
            })
            .collect()
    }

    /// A new process with a mailbox, not registered under any name. The process ends (its pid
    /// stops receiving) when the returned handle is dropped.
    pub fn process(&self) -> Process {
        self.process_on(self.clone())
    }

    /// A new process whose handle to the node is `node` (guarding or not).
    fn process_on(&self, node: Node) -> Process {
        let (id, mailbox) = self.shared.registry.create();
        Process::new(node, self.shared.local_pid(id), mailbox)
    }

    /// A new process registered under `name`.
    pub fn process_named(&self, name: &str) -> Result<Process, RegisterError> {
        let p = self.process();
        self.register(name, p.pid())?;
        Ok(p)
    }

    /// A handle that does not keep the node running (for the node's own tasks).
    pub(crate) fn detached_handle(&self) -> Node {
        self.detached()
    }

    /// A handle that does not keep the node running (for the node's own processes).
    fn detached(&self) -> Node {
        Node {
            shared: self.shared.clone(),
            _stop_on_drop: None,
        }
    }

    /// Spawns `f` as a task owning a new process; returns its pid. The process ends when `f`'s
    /// future completes, with the reason it returns (`()` is [`ExitReason::Normal`]; see
    /// [`ProcessExit`]), or [`ExitReason::Panic`] with the message if it panics, or when it is
    /// killed by an exit signal (its task is then cancelled at its next await). The task's
    /// mailbox also ends at node shutdown ([`Process::recv`] returns `None`). The process
    /// belongs to the node: its handle ([`Process::node`]) does not keep the node running once
    /// every other handle is dropped.
    ///
    /// [`ExitReason::Normal`]: crate::ExitReason::Normal
    /// [`ExitReason::Panic`]: crate::ExitReason::Panic
    pub fn spawn<F, Fut>(&self, f: F) -> Pid
    where
        F: FnOnce(Process) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: ProcessExit,
    {
        let p = self.process_on(self.detached());
        self.start_process(p, f)
    }

    /// Spawns `f` as a task owning a new process registered under `name` (see
    /// [`Node::spawn`]).
    pub fn spawn_named<F, Fut>(&self, name: &str, f: F) -> Result<Pid, RegisterError>
    where
        F: FnOnce(Process) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: ProcessExit,
    {
        let p = self.process_on(self.detached());
        self.register(name, p.pid())?;
        Ok(self.start_process(p, f))
    }

    /// Runs `f` with process `p` as its task.
    pub(crate) fn start_process<F, Fut>(&self, mut p: Process, f: F) -> Pid
    where
        F: FnOnce(Process) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: ProcessExit,
    {
        p.set_spawned();
        let pid = p.pid().clone();
        let shared = self.shared.clone();
        let id = pid.id;
        let run = crate::process::task::CatchPanic::new(f(p));
        let handle = tokio::spawn(async move {
            let reason = match run.await {
                Ok(out) => out.into_exit_reason(),
                Err(message) => {
                    tracing::warn!(pid = %shared.local_pid(id), %message, "process panicked");
                    crate::ExitReason::panic(message)
                }
            };
            shared.end_process(id, reason);
        });
        if !self.shared.registry.set_task(id, handle.abort_handle()) {
            handle.abort();
        }
        pid
    }

    /// Registers a live local process under `name`.
    pub fn register(&self, name: &str, pid: &Pid) -> Result<(), RegisterError> {
        let name = ProcessName::new(name)?;
        if &pid.node != self.name() || pid.creation != self.creation() {
            return Err(RegisterError::NoProcess(pid.clone()));
        }
        self.shared
            .registry
            .register(name.clone(), pid.id)
            .map_err(|e| match e {
                RegisterFail::NoProcess => RegisterError::NoProcess(pid.clone()),
                RegisterFail::Taken => RegisterError::Taken(name),
            })
    }

    /// Removes a registered name; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        ProcessName::new(name).is_ok_and(|n| self.shared.registry.unregister(&n))
    }

    /// The local pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let n = ProcessName::new(name).ok()?;
        self.shared
            .registry
            .whereis(&n)
            .map(|id| self.shared.local_pid(id))
    }

    /// Whether `pid` is alive, on this node or another: for a local pid, at once; for a
    /// remote one, asked of its node. A pid of another incarnation is not alive. Errors with
    /// [`SendError::NotConnected`] when its node is not connected (or is lost before it
    /// answers).
    pub async fn is_alive(&self, pid: &Pid) -> Result<bool, SendError> {
        if &pid.node == self.name() {
            return Ok(pid.creation == self.creation() && self.shared.registry.is_alive(pid.id));
        }
        crate::process::alive::ask(&self.shared, pid).await
    }

    /// A fresh unique reference minted by this node.
    pub fn make_ref(&self) -> Ref {
        self.shared.local_ref(self.shared.registry.make_ref())
    }

    /// The registered name `name` on `node`, as a destination.
    pub fn name_on(node: &NodeName, name: &str) -> Result<RegisteredName, RegisterError> {
        Ok(RegisteredName {
            node: node.clone(),
            name: ProcessName::new(name)?,
        })
    }

    /// Sends `payload` to `dest` without a sender pid. A local destination is delivered
    /// directly (never through the network); a remote one is queued on a lane of the chosen
    /// channel, waiting while that lane's queue is full. `Ok` means queued, not delivered:
    /// delivery to a remote process is best effort (see `docs/semantics.md`).
    pub async fn send(
        &self,
        dest: impl Destination,
        payload: impl Into<Bytes>,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        self.shared
            .send(None, dest.dest(), payload.into(), opts, true)
            .await
    }

    /// Like [`Node::send`] but never waits: a full queue or mailbox is [`SendError::Full`].
    pub fn try_send(
        &self,
        dest: impl Destination,
        payload: impl Into<Bytes>,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        let fut = self
            .shared
            .send(None, dest.dest(), payload.into(), opts, false);
        crate::send::now_or_never(fut)
    }

    /// Sends a value encoded with postcard; decode with [`Envelope::decode`].
    pub async fn send_typed<T: Serialize>(
        &self,
        dest: impl Destination,
        msg: &T,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        let bytes = postcard::to_allocvec(msg).map_err(|e| SendError::Encode(e.to_string()))?;
        self.send(dest, bytes, opts).await
    }

    /// Counters of this node.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.shared.stats.snapshot();
        let (monitors, links) = self.shared.registry.relation_counts();
        s.processes.local_monitors = monitors as u64;
        s.processes.local_links = links as u64;
        s.processes.node_monitors = self.shared.node_monitors.lock().len() as u64;
        s
    }

    /// Number of live local processes.
    pub fn process_count(&self) -> usize {
        self.shared.registry.len()
    }

    /// Stops the node: refuses new connections, flushes and closes every connection with a
    /// goodbye (cut after 2 s if a peer does not answer), ends every mailbox, and waits for the
    /// node's own tasks. Idempotent.
    pub async fn shutdown(&self) {
        stop(self.shared.clone()).await;
    }
}
