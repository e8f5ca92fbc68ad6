//! The driver task: the adapter between the node's sans-IO [`Engine`] (the whole control
//! plane, in `partisan-core`) and tokio. It owns the engine and moves bytes and time between
//! the connections and it: user commands, admissions, dial outcomes, lanes down and control
//! frames go in; dials, closes and control frames on lanes, answers and membership come out.
//! It decides nothing about the protocol. User data never passes through here.
//!
//! - `lanes`: carrying out what the engine asks of connections (dial, open, close, frames).
//! - `publish`: answers to callers, membership snapshots and events, counters, logs.

mod lanes;
mod publish;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::connection_plan::{Backoff, ConnId, DialFailure, DialTarget};
use partisan_core::engine::{
    Command, DialId, DialResult, Engine, EngineConfig, LaneActivity, Target, Waiter,
};
use partisan_core::id::{NodeName, NodeSpec};
use partisan_core::overlay::{
    ClientServer, FullMesh, FullMeshConfig, HyParView, Overlay, OverlayError, PeerInfo,
    StaticMembership, Tag,
};
use partisan_core::time::Instant;
use partisan_core::wire::handshake::{PeerHello, RefuseCode};
use partisan_core::wire::Control;
use rand::{RngCore, SeedableRng};
use tokio::sync::{mpsc, oneshot};

use partisan_core::broadcast::BroadcastError;

use crate::broadcast::EngineFn;
use crate::config::OverlaySettings;
use crate::connection::ConnCtx;
use crate::error::{ConnectError, StartError};
use crate::node::Shared;
use crate::stats::BroadcastSnapshot;

/// What a connect or join is aimed at.
#[derive(Debug, Clone)]
pub(crate) enum ConnectTarget {
    Addr(SocketAddr),
    Spec(NodeSpec),
}

impl ConnectTarget {
    /// Whom the planner dials for this target.
    pub(crate) fn dial_target(&self) -> DialTarget {
        match self {
            ConnectTarget::Addr(a) => DialTarget::Addr(*a),
            ConnectTarget::Spec(s) => DialTarget::Node(s.name().clone()),
        }
    }
}

impl From<ConnectTarget> for Target {
    fn from(t: ConnectTarget) -> Target {
        match t {
            ConnectTarget::Addr(a) => Target::Addr(a),
            ConnectTarget::Spec(s) => Target::Spec(s),
        }
    }
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
    Disconnect { node: NodeName },
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
    Leave { reply: oneshot::Sender<()> },
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
    /// A control frame read from a lane; for a peer's monitor or link, its target as the
    /// reader resolved it.
    Control {
        conn: ConnId,
        msg: Control,
        resolved: Option<Option<u64>>,
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
        dial: DialId,
        conn: ConnId,
        peer: PeerHello,
        reply: oneshot::Sender<Option<Arc<ConnCtx>>>,
    },
    /// One of our dials failed.
    DialFailed { dial: DialId, failure: DialFailure },
    /// A lane ended (either side, any reason).
    Closed {
        conn: ConnId,
        /// Ended by a goodbye after its queue was flushed (nothing put on it was lost).
        clean: bool,
    },
    /// Close everything, answer once every lane is down.
    Shutdown { reply: oneshot::Sender<()> },
    /// Broadcast with a registered handler.
    Broadcast {
        handler: String,
        msg: Vec<u8>,
        reply: oneshot::Sender<Result<(), BroadcastError>>,
    },
    /// Run a read (or control) of the API on the engine; its outputs are carried out after.
    Engine(EngineFn),
    /// A process command for the engine (monitor, link, exit, process ended), answered (if
    /// asked) once its frames are queued on their lanes.
    Signal(Command, Option<oneshot::Sender<()>>),
    /// Whether a peer's process is alive (`None`: its node is not connected).
    IsAlive {
        pid: partisan_core::id::Pid,
        reply: oneshot::Sender<Option<bool>>,
    },
}

/// A caller waiting for the engine's answer.
enum Reply {
    Connect(ConnectReply),
    Cancel(oneshot::Sender<bool>),
    Done(oneshot::Sender<()>),
    Reserve(oneshot::Sender<Result<(), OverlayError>>),
    Broadcast(oneshot::Sender<Result<(), BroadcastError>>),
    Alive(oneshot::Sender<Option<bool>>),
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    engine: Engine,
    /// Lanes the engine holds (open or closing), by connection.
    conns: HashMap<ConnId, Arc<ConnCtx>>,
    replies: HashMap<Waiter, Reply>,
    next_waiter: u64,
    membership_dirty: bool,
    /// Overlay rejections already added to the node's counter.
    rejected_published: u64,
    rx: mpsc::Receiver<DriverCmd>,
    /// Broadcast counters last published, per handler in registration order.
    broadcast_published: Vec<BroadcastSnapshot>,
    /// Set once the shutdown was answered: the loop ends.
    stopped: bool,
    /// Callers of process commands, answered after the next carry-out.
    signal_acks: Vec<oneshot::Sender<()>>,
}

/// Lane activity as the readers record it.
struct Activity<'a>(&'a HashMap<ConnId, Arc<ConnCtx>>);

impl LaneActivity for Activity<'_> {
    fn last_received(&self, conn: ConnId) -> Option<Instant> {
        self.0.get(&conn).map(|c| Instant(c.last_rx.load(Relaxed)))
    }
}

/// The overlay state machine the configuration asks for.
fn build_overlay(shared: &Shared, rng: Box<dyn RngCore + Send>) -> Box<dyn Overlay> {
    let local = PeerInfo {
        spec: shared.identity.spec.clone(),
        creation: shared.identity.creation,
        tag: shared.identity.tag.clone(),
    };
    match &shared.cfg.overlay {
        OverlaySettings::FullMesh {
            periodic_interval,
            fanout,
        } => Box::new(FullMesh::new(
            local,
            FullMeshConfig {
                periodic_interval: *periodic_interval,
                fanout: *fanout,
                ..FullMeshConfig::default()
            },
            rng,
        )),
        OverlaySettings::HyParView(cfg) => Box::new(HyParView::new(local, cfg.clone(), rng)),
        OverlaySettings::ClientServer(role) => Box::new(ClientServer::new(local, *role)),
        OverlaySettings::Static(members) => Box::new(StaticMembership::new(local, members.clone())),
    }
}

impl Driver {
    /// A driver for the node, its engine seeded with `seed`.
    pub(crate) fn new(shared: Arc<Shared>, rx: mpsc::Receiver<DriverCmd>, seed: u64) -> Self {
        let mut cfg = EngineConfig::new(shared.identity.clone());
        cfg.backoff = Backoff {
            initial: shared.cfg.reconnect_min,
            max: shared.cfg.reconnect_max,
            outage_max: shared.cfg.reconnect_outage_max,
        };
        cfg.down_after = shared.cfg.down_after;
        cfg.keepalive = shared.cfg.ping;
        cfg.liveness = shared.cfg.liveness;
        let mut seeds = rand::rngs::StdRng::seed_from_u64(seed);
        let overlay_rng = rand::rngs::StdRng::seed_from_u64(seeds.next_u64());
        let engine_rng = rand::rngs::StdRng::seed_from_u64(seeds.next_u64());
        let overlay = build_overlay(&shared, Box::new(overlay_rng));
        let engine = Engine::new(cfg, overlay, Box::new(engine_rng), shared.now());
        Driver {
            shared,
            engine,
            conns: HashMap::new(),
            replies: HashMap::new(),
            next_waiter: 0,
            membership_dirty: true,
            rejected_published: 0,
            rx,
            broadcast_published: Vec::new(),
            stopped: false,
            signal_acks: Vec::new(),
        }
    }

    /// Registers the node's broadcast handlers (before the driver runs).
    pub(crate) fn register_broadcasts(
        &mut self,
        handlers: Vec<crate::broadcast::Handler>,
    ) -> Result<(), StartError> {
        for (h, cfg) in handlers {
            let handler = h.name().to_string();
            let now = self.shared.now();
            self.engine
                .register_broadcast(h, cfg, now)
                .map_err(|source| StartError::Broadcast { handler, source })?;
        }
        Ok(())
    }

    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        self.shared.origin + Duration::from_micros(t.as_micros())
    }

    pub(crate) async fn run(mut self) {
        for seed in self.shared.cfg.seeds.clone() {
            let now = self.shared.now();
            self.engine.handle_command(
                Command::Join {
                    target: Target::Addr(seed),
                    waiter: None,
                },
                now,
            );
        }
        self.carry_out();
        while !self.stopped {
            let deadline = self.engine.poll_timeout().map(|t| self.to_tokio(t));
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
                    self.engine.handle_timeout(now, &Activity(&self.conns));
                }
                // Cut short: the graceful shutdown timed out, or the last handle was dropped
                // where no runtime could run it.
                _ = self.shared.shutdown_conns.cancelled() => break,
            }
            self.carry_out();
        }
        // Anyone still waiting hears the node is going away (dropped senders).
        self.replies.clear();
    }

    /// Registers a caller waiting for an answer; returns its token.
    fn wait(&mut self, reply: Reply) -> Waiter {
        self.next_waiter += 1;
        let w = Waiter(self.next_waiter);
        self.replies.insert(w, reply);
        w
    }

    fn handle(&mut self, cmd: DriverCmd) {
        let now = self.shared.now();
        let command = match cmd {
            DriverCmd::Connect { target, reply } => Command::Connect {
                target: target.into(),
                waiter: Some(self.wait(Reply::Connect(reply))),
            },
            DriverCmd::Disconnect { node } => Command::Disconnect { node },
            DriverCmd::CancelAddr { addr, reply } => Command::CancelConnect {
                addr,
                waiter: Some(self.wait(Reply::Cancel(reply))),
            },
            DriverCmd::Join { target, reply } => Command::Join {
                target: target.into(),
                waiter: reply.map(|r| self.wait(Reply::Connect(r))),
            },
            DriverCmd::Leave { reply } => Command::Leave {
                waiter: Some(self.wait(Reply::Done(reply))),
            },
            DriverCmd::Remove { node, reply } => Command::Remove {
                node,
                waiter: Some(self.wait(Reply::Done(reply))),
            },
            DriverCmd::UpdateMembers { specs, reply } => Command::UpdateMembers {
                specs,
                waiter: Some(self.wait(Reply::Done(reply))),
            },
            DriverCmd::Reserve { tag, reply } => Command::Reserve {
                tag,
                waiter: Some(self.wait(Reply::Reserve(reply))),
            },
            DriverCmd::Shutdown { reply } => Command::Shutdown {
                waiter: Some(self.wait(Reply::Done(reply))),
            },
            DriverCmd::Broadcast {
                handler,
                msg,
                reply,
            } => Command::Broadcast {
                handler,
                msg,
                waiter: Some(self.wait(Reply::Broadcast(reply))),
            },
            DriverCmd::Engine(f) => {
                f(&mut self.engine);
                return;
            }
            DriverCmd::Control {
                conn,
                msg,
                resolved,
            } => {
                let mut procs = crate::process::registry::Watching {
                    registry: &self.shared.registry,
                    resolved,
                };
                self.engine.handle_control(conn, msg, now, &mut procs);
                return;
            }
            DriverCmd::Signal(cmd, ack) => {
                if let Some(ack) = ack {
                    self.signal_acks.push(ack);
                }
                cmd
            }
            DriverCmd::IsAlive { pid, reply } => Command::IsAlive {
                pid,
                waiter: self.wait(Reply::Alive(reply)),
            },
            DriverCmd::Admit {
                conn,
                peer,
                welcome,
                reply,
            } => return self.admit(conn, peer, welcome, reply),
            DriverCmd::Established {
                dial,
                conn,
                peer,
                reply,
            } => return self.established(dial, conn, peer, reply),
            DriverCmd::DialFailed { dial, failure } => {
                let _ = self
                    .engine
                    .handle_dial_result(dial, DialResult::Failed(failure), now);
                return;
            }
            DriverCmd::Closed { conn, clean } => return self.lane_down(conn, clean),
        };
        self.engine.handle_command(command, now);
    }
}
