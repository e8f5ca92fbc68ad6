//! The driver task: owns the connection planner and the overlay (both sans-IO, from
//! `partisan-core`), carries out their outputs, and keeps the connection table and the
//! membership snapshot in step with them. Only control traffic passes through here; user data
//! never does.
//!
//! - `connections`: admission, dials, lanes, closes (the planner's side).
//! - `overlay_io`: commands, protocol messages, timers and events (the overlay's side).

mod connections;
mod overlay_io;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::connection_plan::{
    Backoff, ConnId, ConnectionPlan, DialFailure, DialRequest, DialTarget, PlanOutput,
};
use partisan_core::id::{ChannelName, Creation, NodeName, NodeSpec};
use partisan_core::overlay::{Overlay, OverlayError, OverlayMsg, OverlayOutput, OverlayTimer, Tag};
use partisan_core::time::Instant;
use partisan_core::wire::handshake::{Identity, PeerHello, RefuseCode};
use partisan_core::wire::Control;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};

use crate::connection::ConnCtx;
use crate::error::ConnectError;
use crate::membership::UpTracker;
use crate::node::Shared;

/// What a connect or join is aimed at.
#[derive(Debug, Clone)]
pub(crate) enum ConnectTarget {
    Addr(SocketAddr),
    Spec(NodeSpec),
}

pub(crate) type ConnectReply = oneshot::Sender<Result<NodeName, ConnectError>>;

/// Messages to the driver.
pub(crate) enum DriverCmd {
    /// Transport-level connect (user want).
    Connect {
        target: ConnectTarget,
        reply: ConnectReply,
    },
    /// Drop the user's want of a node.
    Disconnect {
        node: NodeName,
    },
    /// Stop dialing an address that has not answered yet (connect or join by address).
    CancelAddr {
        addr: SocketAddr,
        reply: oneshot::Sender<bool>,
    },
    /// Join the cluster through a node.
    Join {
        target: ConnectTarget,
        reply: Option<ConnectReply>,
    },
    /// Leave the cluster gracefully.
    Leave {
        reply: oneshot::Sender<()>,
    },
    /// Remove another node from the cluster.
    Remove {
        node: NodeName,
        reply: oneshot::Sender<()>,
    },
    /// Replace the membership.
    UpdateMembers {
        specs: Vec<NodeSpec>,
        reply: oneshot::Sender<()>,
    },
    /// Reserve a HyParView slot.
    Reserve {
        tag: Tag,
        reply: oneshot::Sender<Result<(), OverlayError>>,
    },
    /// Control traffic read from a connection.
    Control {
        from: NodeName,
        creation: Creation,
        msg: Control,
    },
    /// An authenticated inbound connection asks to be admitted.
    Admit {
        conn: ConnId,
        peer: PeerHello,
        /// The Welcome frame (with our proof), sent first if the connection is admitted.
        welcome: bytes::Bytes,
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

/// Protocol messages held for a node while a temporary connection to it is being opened.
const PENDING_PER_PEER: usize = 256;
/// How long a temporary connection (to deliver protocol messages) is kept after its last use.
const TRANSIENT_TTL: Duration = Duration::from_secs(10);
/// How long a node reached through `join` stays connected while the overlay decides whether
/// to keep it.
const JOIN_TTL: Duration = Duration::from_secs(30);

pub(crate) struct Driver {
    shared: Arc<Shared>,
    plan: ConnectionPlan,
    overlay: Box<dyn Overlay>,
    out: Vec<PlanOutput>,
    overlay_out: Vec<OverlayOutput>,
    timers: BTreeMap<OverlayTimer, Instant>,
    conns: HashMap<ConnId, Arc<ConnCtx>>,
    /// Handshake identities of peers, by name (for the overlay's `PeerInfo`).
    identities: HashMap<NodeName, Identity>,
    /// Peers that went down: their identity is forgotten once they are neither connected nor
    /// wanted (often decided later than the PeerDown itself, e.g. by the overlay's reaction).
    lost: std::collections::BTreeSet<NodeName>,
    pending: HashMap<NodeName, VecDeque<OverlayMsg>>,
    addr_waiters: HashMap<SocketAddr, Vec<ConnectReply>>,
    node_waiters: HashMap<NodeName, Vec<ConnectReply>>,
    join_addrs: HashMap<SocketAddr, Vec<ConnectReply>>,
    join_nodes: HashMap<NodeName, Vec<ConnectReply>>,
    up: UpTracker,
    membership_dirty: bool,
    rx: mpsc::Receiver<DriverCmd>,
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
        let overlay = overlay_io::build(&shared);
        Driver {
            shared,
            plan,
            overlay,
            out: Vec::new(),
            overlay_out: Vec::new(),
            timers: BTreeMap::new(),
            conns: HashMap::new(),
            identities: HashMap::new(),
            lost: std::collections::BTreeSet::new(),
            pending: HashMap::new(),
            addr_waiters: HashMap::new(),
            node_waiters: HashMap::new(),
            join_addrs: HashMap::new(),
            join_nodes: HashMap::new(),
            up: UpTracker::default(),
            membership_dirty: true,
            rx,
            shutting_down: None,
        }
    }

    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        self.shared.origin + Duration::from_micros(t.as_micros())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let t = self.timers.values().min().copied();
        match (self.plan.next_deadline(), t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) async fn run(mut self) {
        let now = self.shared.now();
        self.overlay.start(now, &mut self.overlay_out);
        for seed in self.shared.cfg.seeds.clone() {
            self.join(ConnectTarget::Addr(seed), None);
        }
        self.apply();
        loop {
            let deadline = self.next_deadline().map(|t| self.to_tokio(t));
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
                _ = sleep => self.tick(),
                // Cut short: the graceful shutdown timed out, or the last handle was dropped
                // where no runtime could run it.
                _ = self.shared.shutdown_conns.cancelled() => break,
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

    fn tick(&mut self) {
        let now = self.shared.now();
        self.plan.on_tick(now, &mut self.out);
        let due: Vec<OverlayTimer> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            self.timers.remove(&t);
            if self.shutting_down.is_none() {
                self.overlay.on_timer(t, now, &mut self.overlay_out);
            }
        }
    }

    fn handle(&mut self, cmd: DriverCmd) {
        match cmd {
            DriverCmd::Connect { target, reply } => self.connect(target, reply),
            DriverCmd::Disconnect { node } => self.disconnect(&node),
            DriverCmd::CancelAddr { addr, reply } => {
                let _ = reply.send(self.cancel_addr(addr));
            }
            DriverCmd::Join { target, reply } => self.join(target, reply),
            DriverCmd::Leave { reply } => {
                self.leave();
                let _ = reply.send(());
            }
            DriverCmd::Remove { node, reply } => {
                let now = self.shared.now();
                self.overlay.remove(&node, now, &mut self.overlay_out);
                let _ = reply.send(());
            }
            DriverCmd::UpdateMembers { specs, reply } => {
                self.update_members(specs);
                let _ = reply.send(());
            }
            DriverCmd::Reserve { tag, reply } => {
                let _ = reply.send(self.overlay.reserve(tag));
            }
            DriverCmd::Control {
                from,
                creation,
                msg,
            } => self.on_control(from, creation, msg),
            DriverCmd::Admit {
                conn,
                peer,
                welcome,
                reply,
            } => self.admit(conn, peer, welcome, reply),
            DriverCmd::Established {
                conn,
                target,
                peer,
                reply,
            } => self.established(conn, target, peer, reply),
            DriverCmd::DialFailed { req, failure } => {
                let now = self.shared.now();
                self.plan.on_dial_failed(
                    &req.target,
                    &req.channel,
                    req.lane,
                    failure,
                    now,
                    &mut self.out,
                )
            }
            DriverCmd::Closed {
                conn,
                node,
                channel,
                lane,
            } => self.closed(conn, node, channel, lane),
            DriverCmd::Shutdown { reply } => self.shutdown(reply),
        }
    }

    /// Carries out planner and overlay outputs until neither has more, then publishes the
    /// membership if it changed.
    fn apply(&mut self) {
        loop {
            if self.out.is_empty() && self.overlay_out.is_empty() {
                break;
            }
            for o in std::mem::take(&mut self.out) {
                self.apply_plan(o);
            }
            for o in std::mem::take(&mut self.overlay_out) {
                self.apply_overlay(o);
            }
        }
        self.forget_lost_identities();
        if self.membership_dirty {
            self.membership_dirty = false;
            self.publish_membership();
        }
    }
}
