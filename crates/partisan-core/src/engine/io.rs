//! What goes into an engine and what comes out: commands, dial results, outputs, events,
//! answers to waiters, and counters.

use std::net::SocketAddr;

use crate::broadcast::BroadcastError;
use crate::connection_plan::{CloseReason, ConnId, DialFailure, DialRequest, DialTarget};
use crate::id::{Creation, NodeName, NodeSpec, Pid, RemoteRef};
use crate::overlay::{OverlayError, Tag};
use crate::signals::ExitReason;
use crate::time::Instant;
use crate::wire::handshake::PeerHello;
use crate::wire::Message;

/// A caller's token for a command whose answer comes later, as an [`Event::Answer`]. Chosen
/// by the caller; the engine hands it back exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Waiter(pub u64);

/// Identifies one dial the engine asked for; the caller reports its outcome with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialId(pub u64);

/// Who a connect or a join is aimed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Whatever node answers at this address.
    Addr(SocketAddr),
    /// That node, at the addresses of its spec.
    Spec(NodeSpec),
}

/// What the user asks of the control plane.
#[derive(Clone, Debug)]
pub enum Command {
    /// Keep every lane to a node up until [`Command::Disconnect`]; the waiter is answered
    /// [`Answer::Reached`] once a lane to it is up (or [`Answer::Failed`]).
    Connect {
        /// The node.
        target: Target,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Withdraw the user's want of a node.
    Disconnect {
        /// The node.
        node: NodeName,
    },
    /// Stop dialing an address no node answered at yet; answered [`Answer::Cancelled`] with
    /// whether such a dial was pending, and its waiters get [`ConnectFailure::Cancelled`].
    CancelConnect {
        /// The address.
        addr: SocketAddr,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Join the cluster through a node: it is dialed (with backoff) and the overlay joins
    /// through it once reached; answered [`Answer::Reached`].
    Join {
        /// The contact.
        target: Target,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Leave the cluster gracefully; answered [`Answer::Done`].
    Leave {
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Remove another node from the cluster; answered [`Answer::Done`].
    Remove {
        /// The node.
        node: NodeName,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Replace the membership; answered [`Answer::Done`].
    UpdateMembers {
        /// The new members.
        specs: Vec<NodeSpec>,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Reserve a HyParView active-view slot; answered [`Answer::Reserved`].
    Reserve {
        /// Tag the slot is for.
        tag: Tag,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Close everything and refuse what comes; answered [`Answer::Done`] once every lane is
    /// down.
    Shutdown {
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Broadcast `msg` with the handler registered as `handler`; answered
    /// [`Answer::Broadcast`] once it is delivered here and handed to the neighbours.
    Broadcast {
        /// The handler's name.
        handler: String,
        /// The message, as the handler's `broadcast_data` takes it.
        msg: Vec<u8>,
        /// Who waits.
        waiter: Option<Waiter>,
    },
    /// Local process `watcher` monitors `target`, a process of a peer, under this node's
    /// reference id `monitor`: exactly one [`Event::Down`] follows, unless
    /// [`Command::Demonitor`] comes first.
    Monitor {
        /// The watching local process.
        watcher: u64,
        /// Reference id, minted by this node.
        monitor: u64,
        /// The watched process, on another node.
        target: RemoteRef,
    },
    /// Withdraws a monitor made with [`Command::Monitor`]; no `Down` of it is delivered after.
    Demonitor {
        /// Reference id.
        monitor: u64,
    },
    /// Links local process `local` with `remote`, a process of a peer.
    Link {
        /// The local process.
        local: u64,
        /// The peer's process.
        remote: Pid,
    },
    /// Removes a link made with [`Command::Link`] (or by the peer), on both nodes.
    Unlink {
        /// The local process.
        local: u64,
        /// The peer's process.
        remote: Pid,
    },
    /// Sends an exit signal to `to`, a process of a peer, from local process `from` (or from
    /// the node).
    Exit {
        /// The sending local process, if any.
        from: Option<u64>,
        /// The receiving process.
        to: Pid,
        /// The reason.
        reason: ExitReason,
    },
    /// Local process `id` ended with `reason`: peers monitoring or linked to it are told, and
    /// its monitors of peers' processes withdrawn. Required for every process the runtime's
    /// [`LocalProcesses::watch`](crate::signals::LocalProcesses::watch) marked, and for every
    /// process that monitored or linked a peer's process; harmless for any other.
    ProcessExited {
        /// The process.
        id: u64,
        /// Why it ended.
        reason: ExitReason,
    },
    /// Whether `pid`, a process of a peer, is alive; answered [`Answer::Alive`].
    IsAlive {
        /// The process.
        pid: Pid,
        /// Who waits.
        waiter: Waiter,
    },
}

/// Why a connect or a join failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// The address is one of this node's own.
    #[error("{0} is this node's own address")]
    SelfConnect(SocketAddr),
    /// A dial to the target failed in a way retrying cannot help (wrong cookie, overlay or
    /// version, a name in use, ...): the target is no longer dialed.
    #[error(transparent)]
    Dial(DialFailure),
    /// The target cannot be connected to for another reason, said in the text.
    #[error("gave up: {0}")]
    GaveUp(String),
    /// The attempt was cancelled with [`Command::CancelConnect`].
    #[error("connection attempt to {0} cancelled")]
    Cancelled(SocketAddr),
    /// The node left the cluster while the join was pending.
    #[error("left the cluster")]
    LeftCluster,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// The answer to a command with a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A connect or join reached this node.
    Reached(NodeName),
    /// A connect or join failed.
    Failed(ConnectFailure),
    /// Leave, remove, update or shutdown carried out.
    Done,
    /// Whether a cancelled address was still pending.
    Cancelled(bool),
    /// The outcome of a reservation.
    Reserved(Result<(), OverlayError>),
    /// The outcome of a broadcast.
    Broadcast(Result<(), BroadcastError>),
    /// Whether a peer's process is alive: `None` when its node is not connected (or was lost
    /// before it answered).
    Alive(Option<bool>),
}

/// The outcome of a dial.
#[derive(Clone, Debug)]
pub enum DialResult {
    /// The peer admitted the connection.
    Established {
        /// The id the caller gives the connection (never reused).
        conn: ConnId,
        /// Who answered.
        hello: PeerHello,
    },
    /// The dial failed before being admitted.
    Failed(DialFailure),
}

/// Why a frame could not be put on a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransmitFailure {
    /// The lane's queue is full.
    Full,
    /// The lane is closed (it failed, and its end has not been reported yet).
    Closed,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a connection, and report the outcome with [`Engine::handle_dial_result`](super::Engine::handle_dial_result).
    Dial {
        /// The dial's id.
        id: DialId,
        /// What to dial.
        req: DialRequest,
    },
    /// Close a lane: flush and say goodbye, except for [`CloseReason::KeepaliveTimeout`] (cut
    /// at once). Report it down when it is.
    Close {
        /// Which.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Put a frame (control or keepalive probe) on a lane's queue; report a failure with
    /// [`Engine::handle_transmit_failed`](super::Engine::handle_transmit_failed).
    Transmit {
        /// Which lane.
        conn: ConnId,
        /// The frame.
        msg: Message,
    },
}

/// What happened, for the API and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The answer to a command's waiter.
    Answer {
        /// The waiter.
        waiter: Waiter,
        /// The answer.
        answer: Answer,
    },
    /// The first lane to a peer is up.
    PeerUp {
        /// The peer.
        node: NodeName,
        /// Its creation.
        creation: Creation,
    },
    /// The last lane to a peer is down.
    PeerDown {
        /// The peer.
        node: NodeName,
    },
    /// A node could not be reached; `dropped` overlay messages held for it were dropped.
    Unreachable {
        /// The node.
        node: NodeName,
        /// Messages dropped.
        dropped: usize,
    },
    /// A connect or join target was given up on: it failed in a way retrying cannot help.
    GaveUp {
        /// The target.
        target: DialTarget,
        /// Why.
        reason: DialFailure,
    },
    /// Dials to a target keep failing and are retried with backoff; told at the 1st, 10th,
    /// 100th, ... consecutive failure.
    DialFailing {
        /// The target.
        target: DialTarget,
        /// The latest failure.
        failure: DialFailure,
        /// Consecutive failures so far.
        failures: u32,
    },
    /// A member unreachable for `down_after` was removed from the membership.
    Downed {
        /// The member.
        node: NodeName,
        /// How long it had been unreachable.
        after: std::time::Duration,
    },
    /// A peer did not answer liveness pings for `after`: every lane to it was cut (it is
    /// redialed like any lost peer).
    Unresponsive {
        /// The peer.
        node: NodeName,
        /// From the first unanswered ping to the decision.
        after: std::time::Duration,
    },
    /// A lane was closed because its peer stopped answering keepalive probes.
    KeepaliveTimeout {
        /// The lane.
        conn: ConnId,
        /// Its peer.
        node: NodeName,
    },
    /// An overlay message from a peer was rejected.
    OverlayRejected {
        /// The peer.
        node: NodeName,
        /// Why.
        error: OverlayError,
    },
    /// A monitor of a peer's process fired: deliver a `Down` to local process `watcher`.
    /// Exactly one per [`Command::Monitor`] not withdrawn first.
    Down {
        /// The watching local process.
        watcher: u64,
        /// The monitor's reference id (minted by this node).
        monitor: u64,
        /// What was monitored.
        target: RemoteRef,
        /// Why it is down.
        reason: ExitReason,
    },
    /// An exit signal for local process `to`, from a peer's process (or from a peer node, or
    /// from the loss of a linked process's node).
    Exit {
        /// The receiving local process.
        to: u64,
        /// The sending process, if any.
        from: Option<Pid>,
        /// The reason.
        reason: ExitReason,
        /// Whether a link carried it (the link is gone).
        link: bool,
    },
    /// Members, specs, views or connectivity may have changed: read them again, and take
    /// the up/down transitions with [`Engine::membership_events`](super::Engine::membership_events).
    MembershipChanged,
}

/// When each lane last received anything, as the transport saw it.
pub trait LaneActivity {
    /// The last time `conn` received a frame (any frame, probes and answers included); `None`
    /// when unknown (counted from when the lane opened).
    fn last_received(&self, conn: ConnId) -> Option<Instant>;
}

/// No activity known for any lane: every lane counts as silent since it opened.
impl LaneActivity for () {
    fn last_received(&self, _conn: ConnId) -> Option<Instant> {
        None
    }
}

/// Counters of an engine.
///
/// Overlay messages are kept in a ledger: every message the overlay sends, and every one the
/// caller hands back ([`TransmitFailure`]), ends up put on a lane, held for a peer, or dropped
/// for a stated reason. [`EngineStats::overlay_unaccounted`] is the difference, always 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Members removed because they were unreachable for `down_after`.
    pub members_downed: u64,
    /// Overlay messages the overlay asked to send.
    pub overlay_sent: u64,
    /// Overlay messages handed back by the caller (lane full or found closed).
    pub overlay_returned: u64,
    /// Overlay messages put on a lane (once per attempt).
    pub overlay_handed: u64,
    /// Overlay messages dropped because the lane's queue was full.
    pub overlay_dropped_full: u64,
    /// Overlay messages dropped to make room in a full hold queue (the oldest go).
    pub overlay_dropped_overflow: u64,
    /// Overlay messages held for a peer found unreachable (or whose node is unknown), dropped.
    pub overlay_dropped_unreachable: u64,
    /// Overlay messages from peers that the overlay rejected.
    pub overlay_rejected: u64,
    /// Control frames from an unknown lane or another run of its peer, dropped.
    pub control_stale: u64,
    /// Lanes closed because their peer stopped answering keepalive probes.
    pub keepalive_timeouts: u64,
    /// Keepalive probes sent.
    pub probes_sent: u64,
    /// Liveness pings sent (peer probing).
    pub liveness_pings: u64,
    /// Peers taken for gone by liveness probing (their lanes cut).
    pub liveness_failures: u64,
    /// Suspicions passed on to peers.
    pub liveness_rumours_sent: u64,
    /// Suspicions received from peers.
    pub liveness_rumours_received: u64,
    /// Broadcast (Plumtree) messages put on a lane.
    pub broadcast_handed: u64,
    /// Broadcast messages handed back by the caller (lane full or closed), dropped.
    pub broadcast_returned: u64,
    /// Broadcast messages for a neighbour with no open lane, dropped.
    pub broadcast_dropped_unreachable: u64,
    /// Broadcast messages for a handler not registered here, dropped.
    pub broadcast_unknown_handler: u64,
    /// Process signals (monitor, link, exit, down, liveness) put on a lane.
    pub signals_handed: u64,
    /// Process signals handed back by the caller on a full lane, or with no open lane left,
    /// dropped.
    pub signals_dropped: u64,
    /// Lanes cut because a process signal could not be queued on them (far past their bound):
    /// the peer is lost, so that the dropped signal's entries end on both nodes.
    pub signal_lanes_cut: u64,
    /// Lanes that carried process signals and broke (no clean goodbye) while other lanes to
    /// the peer stayed open: the peer is lost, as those signals may be.
    pub signal_lanes_broken: u64,
    /// `Down`s handed to the runtime for local watchers.
    pub downs: u64,
    /// Exit signals handed to the runtime for local processes.
    pub exit_signals: u64,
}

impl EngineStats {
    /// Overlay messages dropped, for every reason.
    pub fn overlay_dropped(&self) -> u64 {
        self.overlay_dropped_full + self.overlay_dropped_overflow + self.overlay_dropped_unreachable
    }

    /// Overlay messages neither on a lane, held (`held`, the engine's current count) nor
    /// dropped for a stated reason: 0 unless a message vanished.
    pub fn overlay_unaccounted(&self, held: usize) -> i128 {
        i128::from(self.overlay_sent) + i128::from(self.overlay_returned)
            - i128::from(self.overlay_handed)
            - held as i128
            - i128::from(self.overlay_dropped())
    }
}
