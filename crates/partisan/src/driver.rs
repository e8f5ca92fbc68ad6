//! The driver task: owns the connection planner, carries out its outputs, and keeps the
//! connection table in step with it. Only control events pass through here; data never does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::connection_plan::{
    Backoff, CloseReason, ConnId, ConnectionPlan, DialFailure, DialRequest, DialTarget, PlanOutput,
};
use partisan_core::id::{ChannelName, NodeName, NodeSpec};
use partisan_core::wire::handshake::{PeerHello, RefuseCode};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};

use crate::conn_table::LaneHandle;
use crate::connection::{self, ConnCtx};
use crate::error::ConnectError;
use crate::handshake_io;
use crate::lane_queue::{LaneQueue, Overflow};
use crate::node::Shared;

/// Time a connection closed on purpose gets to flush and say goodbye before it is cut.
const LINGER: Duration = Duration::from_secs(2);

/// What a connect waits for.
#[derive(Debug, Clone)]
pub(crate) enum ConnectTarget {
    Addr(SocketAddr),
    Spec(NodeSpec),
}

type ConnectReply = oneshot::Sender<Result<NodeName, ConnectError>>;

/// Messages to the driver.
pub(crate) enum DriverCmd {
    Connect {
        target: ConnectTarget,
        reply: ConnectReply,
    },
    Disconnect {
        node: NodeName,
    },
    /// An authenticated inbound connection asks to be admitted.
    Admit {
        conn: ConnId,
        peer: PeerHello,
        reply: oneshot::Sender<Result<Arc<ConnCtx>, RefuseCode>>,
    },
    /// One of our dials was admitted by the peer.
    Established {
        conn: ConnId,
        target: DialTarget,
        peer: PeerHello,
        reply: oneshot::Sender<Option<Arc<ConnCtx>>>,
    },
    DialFailed {
        req: DialRequest,
        failure: DialFailure,
    },
    Closed {
        conn: ConnId,
        node: NodeName,
        channel: ChannelName,
        lane: u16,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

struct ConnEntry {
    ctx: Arc<ConnCtx>,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    plan: ConnectionPlan,
    conns: HashMap<ConnId, ConnEntry>,
    addr_waiters: HashMap<SocketAddr, Vec<ConnectReply>>,
    node_waiters: HashMap<NodeName, Vec<ConnectReply>>,
    rx: mpsc::Receiver<DriverCmd>,
    out: Vec<PlanOutput>,
    shutting_down: Option<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>, rx: mpsc::Receiver<DriverCmd>) -> Self {
        let backoff = Backoff {
            initial: shared.cfg.reconnect_min,
            max: shared.cfg.reconnect_max,
        };
        let plan = ConnectionPlan::new(
            shared.spec.clone(),
            backoff,
            Box::new(rand::rngs::StdRng::from_entropy()),
        );
        Driver {
            shared,
            plan,
            conns: HashMap::new(),
            addr_waiters: HashMap::new(),
            node_waiters: HashMap::new(),
            rx,
            out: Vec::new(),
            shutting_down: None,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self
                .plan
                .next_deadline()
                .map(|t| self.shared.origin + Duration::from_micros(t.as_micros()));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                _ = sleep => {
                    let now = self.shared.now();
                    self.plan.on_tick(now, &mut self.out);
                }
            }
            self.apply();
            if self.shutting_down.is_some() && self.conns.is_empty() {
                break;
            }
        }
        if let Some(reply) = self.shutting_down.take() {
            let _ = reply.send(());
        }
    }

    fn handle(&mut self, cmd: DriverCmd) {
        let now = self.shared.now();
        match cmd {
            DriverCmd::Connect { target, reply } => self.connect(target, reply),
            DriverCmd::Disconnect { node } => self.plan.unwant(&node, &mut self.out),
            DriverCmd::Admit { conn, peer, reply } => {
                if self.shutting_down.is_some() {
                    let _ = reply.send(Err(RefuseCode::ShuttingDown));
                    return;
                }
                match self.plan.admit(conn, &peer, now, &mut self.out) {
                    Ok(replaced) => {
                        let ctx = self.open_lane(conn, &peer);
                        // The verdict goes first on the wire, ahead of any user frame.
                        ctx.queue.push_raw(&partisan_core::wire::handshake::encode(
                            &partisan_core::wire::handshake::HandshakeMsg::Welcome,
                        ));
                        self.publish(&ctx, &peer);
                        if let Some(old) = replaced {
                            self.close(old, CloseReason::Replaced);
                        }
                        if reply.send(Ok(ctx)).is_err() {
                            self.close(conn, CloseReason::Unwanted);
                        }
                    }
                    Err(code) => {
                        let _ = reply.send(Err(code));
                    }
                }
            }
            DriverCmd::Established {
                conn,
                target,
                peer,
                reply,
            } => {
                if self.shutting_down.is_some() {
                    let _ = reply.send(None);
                    return;
                }
                match self
                    .plan
                    .on_established(conn, &target, &peer, now, &mut self.out)
                {
                    Ok(replaced) => {
                        let ctx = self.open_lane(conn, &peer);
                        self.publish(&ctx, &peer);
                        if let Some(old) = replaced {
                            self.close(old, CloseReason::Replaced);
                        }
                        if reply.send(Some(ctx)).is_err() {
                            self.close(conn, CloseReason::Unwanted);
                        }
                    }
                    Err(reason) => {
                        tracing::debug!(peer = %peer.spec.name(), ?reason, "dropping established dial");
                        let _ = reply.send(None);
                    }
                }
            }
            DriverCmd::DialFailed { req, failure } => self.plan.on_dial_failed(
                &req.target,
                &req.channel,
                req.lane,
                failure,
                now,
                &mut self.out,
            ),
            DriverCmd::Closed {
                conn,
                node,
                channel,
                lane,
            } => {
                self.conns.remove(&conn);
                self.shared.table.remove(&node, &channel, lane, conn);
                self.plan
                    .on_closed(conn, &node, &channel, lane, now, &mut self.out);
            }
            DriverCmd::Shutdown { reply } => {
                self.shutting_down = Some(reply);
                let wanted: Vec<NodeName> = self.plan.wanted().cloned().collect();
                for n in wanted {
                    self.plan.unwant(&n, &mut self.out);
                }
                let conns: Vec<ConnId> = self.conns.keys().copied().collect();
                for c in conns {
                    self.close(c, CloseReason::Unwanted);
                }
                let waiters = self
                    .addr_waiters
                    .drain()
                    .flat_map(|(_, w)| w)
                    .chain(self.node_waiters.drain().flat_map(|(_, w)| w));
                {
                    for w in waiters {
                        let _ = w.send(Err(ConnectError::ShuttingDown));
                    }
                }
            }
        }
    }

    fn connect(&mut self, target: ConnectTarget, reply: ConnectReply) {
        if self.shutting_down.is_some() {
            let _ = reply.send(Err(ConnectError::ShuttingDown));
            return;
        }
        let now = self.shared.now();
        match target {
            ConnectTarget::Spec(spec) => {
                let name = spec.name().clone();
                if &name == self.shared.spec.name() {
                    let _ = reply.send(Err(ConnectError::GaveUp("that is this node".into())));
                    return;
                }
                if self.shared.table.is_connected(&name) {
                    let _ = reply.send(Ok(name));
                    return;
                }
                self.node_waiters.entry(name).or_default().push(reply);
                self.plan.want(spec, now, &mut self.out);
            }
            ConnectTarget::Addr(addr) => {
                if self.shared.spec.listen_addrs().contains(&addr) {
                    let _ = reply.send(Err(ConnectError::SelfConnect(addr)));
                    return;
                }
                if self.plan.want_addr(addr, now, &mut self.out) {
                    self.addr_waiters.entry(addr).or_default().push(reply);
                    return;
                }
                // The address belongs to a peer already wanted.
                let owner = self
                    .plan
                    .wanted()
                    .find(|n| {
                        self.shared
                            .table
                            .spec_of(n)
                            .is_some_and(|s| s.listen_addrs().contains(&addr))
                    })
                    .cloned();
                match owner {
                    Some(n) if self.shared.table.is_connected(&n) => {
                        let _ = reply.send(Ok(n));
                    }
                    Some(n) => self.node_waiters.entry(n).or_default().push(reply),
                    None => self.addr_waiters.entry(addr).or_default().push(reply),
                }
            }
        }
    }

    fn open_lane(&mut self, conn: ConnId, peer: &PeerHello) -> Arc<ConnCtx> {
        let cfg = &self.shared.cfg;
        let monotonic = self
            .shared
            .spec
            .channel(&peer.channel)
            .or_else(|| peer.spec.channel(&peer.channel))
            .is_some_and(|o| o.monotonic);
        let stats = self.shared.stats.channel(&peer.channel).clone();
        let queue = Arc::new(LaneQueue::new(
            cfg.send_queue_bytes,
            if monotonic {
                Overflow::DropOldest
            } else {
                Overflow::Block
            },
            cfg.max_frame_len,
            stats.clone(),
        ));
        let ctx = Arc::new(ConnCtx {
            shared: self.shared.clone(),
            conn,
            peer: peer.spec.name().clone(),
            peer_creation: peer.creation,
            channel: peer.channel.clone(),
            lane: peer.lane,
            queue,
            stats,
            cancel: self.shared.shutdown_conns.child_token(),
        });
        self.conns.insert(conn, ConnEntry { ctx: ctx.clone() });
        self.shared
            .stats
            .node
            .connections_opened
            .fetch_add(1, Relaxed);
        ctx
    }

    fn publish(&self, ctx: &Arc<ConnCtx>, peer: &PeerHello) {
        self.shared.table.install(
            &peer.spec,
            peer.creation,
            &peer.channel,
            peer.lane,
            Arc::new(LaneHandle {
                conn: ctx.conn,
                queue: ctx.queue.clone(),
            }),
        );
    }

    /// Closes a connection on purpose: flush, goodbye, then cut after [`LINGER`].
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let ctx = entry.ctx.clone();
        tracing::debug!(peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, ?reason, "closing connection");
        self.shared
            .table
            .remove(&ctx.peer, &ctx.channel, ctx.lane, conn);
        ctx.queue.close();
        let cancel = ctx.cancel.clone();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(LINGER) => cancel.cancel(),
            }
        });
    }

    fn apply(&mut self) {
        let outputs = std::mem::take(&mut self.out);
        for o in outputs {
            match o {
                PlanOutput::Dial(req) => self.spawn_dial(req),
                PlanOutput::Close { conn, reason } => self.close(conn, reason),
                PlanOutput::PeerUp { spec, creation } => {
                    tracing::info!(peer = %spec.name(), creation, "peer up");
                    for w in self.node_waiters.remove(spec.name()).unwrap_or_default() {
                        let _ = w.send(Ok(spec.name().clone()));
                    }
                }
                PlanOutput::PeerDown { node } => tracing::info!(peer = %node, "peer down"),
                PlanOutput::Resolved { addr, node } => {
                    for w in self.addr_waiters.remove(&addr).unwrap_or_default() {
                        let _ = w.send(Ok(node.clone()));
                    }
                }
                PlanOutput::GaveUp { target, reason } => {
                    tracing::warn!(?target, %reason, "giving up on connection target");
                    let waiters = match &target {
                        DialTarget::Addr(a) => self.addr_waiters.remove(a),
                        DialTarget::Node(n) => self.node_waiters.remove(n),
                    };
                    for w in waiters.unwrap_or_default() {
                        let _ = w.send(Err(ConnectError::GaveUp(reason.clone())));
                    }
                }
            }
        }
    }

    fn spawn_dial(&self, req: DialRequest) {
        let shared = self.shared.clone();
        let conn = shared.next_conn_id();
        self.shared.tasks.spawn(async move {
            let result = tokio::select! {
                _ = shared.shutdown_conns.cancelled() => return,
                r = handshake_io::dial(&shared, &req) => r,
            };
            match result {
                Ok(dialed) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = DriverCmd::Established {
                        conn,
                        target: req.target.clone(),
                        peer: dialed.peer.clone(),
                        reply: tx,
                    };
                    if shared.driver.send(cmd).await.is_err() {
                        return;
                    }
                    if let Ok(Some(ctx)) = rx.await {
                        connection::run(ctx, dialed.stream, dialed.leftover);
                    }
                }
                Err(e) => {
                    let counter = if e.is_refusal() {
                        &shared.stats.node.handshakes_refused
                    } else {
                        &shared.stats.node.handshakes_failed
                    };
                    counter.fetch_add(1, Relaxed);
                    tracing::debug!(target = ?req.target, channel = %req.channel, lane = req.lane, error = %e, "dial failed");
                    if e.is_refusal() && !e.is_race() {
                        tracing::warn!(target = ?req.target, error = %e, "connection refused at handshake");
                    }
                    let failure = e.as_dial_failure();
                    let _ = shared.driver.send(DriverCmd::DialFailed { req, failure }).await;
                }
            }
        });
    }
}
