//! Signals between processes of different nodes: monitors, links, exit signals and liveness
//! queries, as a sans-IO table the engine owns.
//!
//! Processes live in the runtime; what crosses nodes lives here. For one node the table holds:
//!
//! - **monitors out**: a local watcher monitors a process of a peer. Keyed by the monitor's
//!   reference id (minted by this node), with the peer's incarnation at the time.
//! - **monitors in**: a peer's process monitors a local one. Keyed by (peer, reference id).
//! - **links**: a local process linked with a process of a peer, with the peer's incarnation.
//! - **liveness queries** waiting for a peer's answer.
//!
//! # Rules
//!
//! 1. A monitor, link or liveness query of a process on a peer that has no open lane (or whose
//!    connected incarnation is not the process's) is answered at once, locally: `Down` with
//!    [`ExitReason::NoConnection`] (or [`ExitReason::NoProc`] for a pid of another
//!    incarnation), an exit signal with the same reason for a link, "unknown" for a query.
//! 2. A peer's monitor or link of a process that does not exist is answered `Down`/exit signal
//!    [`ExitReason::NoProc`].
//! 3. When a local process that is monitored or linked across nodes ends, every peer that
//!    monitors it gets one `Down` with the reason, every linked peer process one link exit
//!    signal, and every monitor it held of a peer's process is withdrawn. The runtime reports
//!    the end with [`SignalTable::process_exited`].
//! 4. When the last lane to a peer goes down, or the peer comes back as another incarnation,
//!    every monitor of its processes fires `Down` [`ExitReason::NoConnection`] locally, every
//!    link with its processes delivers a link exit signal [`ExitReason::NoConnection`], and
//!    everything the peer held here is forgotten. The two nodes need not both see the loss
//!    (one may have opened a new lane before it noticed the old ones died), so each loss starts
//!    a new *session* with the peer, and the peer, told of it in the next frame it reads,
//!    fires every entry the loss took on this side (module `sessions`): no entry outlives the
//!    connection on either node, and none made after a node heard of the loss is fired for it.
//! 5. A `Down` is delivered at most once per monitor; after a demonitor none is delivered
//!    (a `Down` already handed to the runtime may still sit in the watcher's mailbox, which
//!    the runtime can flush). After an unlink, no exit signal of that link is delivered.
//!
//! Every entry is keyed by ordered collections, so iteration (and the order of outputs) is
//! the same for the same inputs.

mod sessions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::Waiter;
use crate::id::{Creation, NodeName, Pid, RemoteRef};
use crate::wire::Target;

use sessions::Sessions;

/// Most peers whose session numbers a table keeps by default (see [`SignalTable::new`]).
pub const DEFAULT_MAX_PEER_SESSIONS: usize = 65_536;

/// Longest reason text kept in an [`ExitReason`], in bytes; longer texts are cut (at a
/// character boundary) when the reason is made with [`ExitReason::error`] or
/// [`ExitReason::panic`].
pub const MAX_REASON_LEN: usize = 64 * 1024;

/// Why a process ended, or the reason an exit signal carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// Ended normally (its function returned). Not propagated over links.
    Normal,
    /// Stopped on request (a supervisor's shutdown, a node stopping).
    Shutdown,
    /// As an exit signal: ends the receiver unconditionally, even one trapping exits; it then
    /// ends with [`ExitReason::Killed`].
    Kill,
    /// Ended by a [`ExitReason::Kill`] signal.
    Killed,
    /// There was no such process (a monitor or link of a process that did not exist).
    NoProc,
    /// The connection to the process's node was lost (or never there).
    NoConnection,
    /// The process panicked; the panic message.
    Panic(String),
    /// A reason the process gave.
    Error(String),
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl ExitReason {
    /// A reason a process gives, cut to [`MAX_REASON_LEN`] bytes.
    pub fn error(text: impl Into<String>) -> ExitReason {
        ExitReason::Error(cut(text.into()))
    }

    /// A panic with its message, cut to [`MAX_REASON_LEN`] bytes.
    pub fn panic(message: impl Into<String>) -> ExitReason {
        ExitReason::Panic(cut(message.into()))
    }

    /// Whether this is [`ExitReason::Normal`]: the only reason that does not end linked
    /// processes.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::NoConnection => f.write_str("noconnection"),
            ExitReason::Panic(m) => write!(f, "panic: {m}"),
            ExitReason::Error(m) => write!(f, "{m}"),
        }
    }
}

/// Signals between the engines of two nodes about their processes. Pids and references are
/// ids within the sender's or receiver's current incarnation, which the connection pins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessMsg {
    /// The sender's process `watcher` monitors `target` on the receiver, under the sender's
    /// reference id `monitor`.
    Monitor {
        /// Reference id, minted by the sender.
        monitor: u64,
        /// The watching process (sender side).
        watcher: u64,
        /// The watched process (receiver side).
        target: Target,
    },
    /// The sender withdraws monitor `monitor`.
    Demonitor {
        /// Reference id, minted by the receiver.
        monitor: u64,
    },
    /// The process watched by the receiver's monitor `monitor` ended (or never existed).
    Down {
        /// Reference id, minted by the receiver.
        monitor: u64,
        /// Why it ended.
        reason: ExitReason,
    },
    /// The sender's process `from` links with the receiver's process `to`.
    Link {
        /// Sender-side process.
        from: u64,
        /// Receiver-side process.
        to: u64,
    },
    /// The sender's process `from` removes its link with the receiver's process `to`; the
    /// receiver answers [`ProcessMsg::UnlinkAck`] with the same `id`.
    Unlink {
        /// Sender-side process.
        from: u64,
        /// Receiver-side process.
        to: u64,
        /// Unlink id, minted by the sender.
        id: u64,
    },
    /// The receiver's unlink `id` of its process `to` from the sender's process `from` has
    /// been seen: the receiver may forget the link.
    UnlinkAck {
        /// Sender-side process.
        from: u64,
        /// Receiver-side process.
        to: u64,
        /// Unlink id, minted by the receiver.
        id: u64,
    },
    /// An exit signal from the sender's process `from` (none: from the node itself) to the
    /// receiver's process `to`. `link`: sent because a linked process ended (the link is
    /// gone with it), rather than by an explicit exit call.
    Exit {
        /// Sender-side process, if any.
        from: Option<u64>,
        /// Receiver-side process.
        to: u64,
        /// The reason.
        reason: ExitReason,
        /// Whether a link carried it.
        link: bool,
    },
    /// Is the receiver's process `pid` alive? Answered with [`ProcessMsg::Alive`].
    IsAlive {
        /// Query id, minted by the sender.
        query: u64,
        /// Receiver-side process.
        pid: u64,
    },
    /// The answer to [`ProcessMsg::IsAlive`].
    Alive {
        /// Query id, minted by the receiver.
        query: u64,
        /// Whether the process was alive when the query arrived.
        alive: bool,
    },
}

/// A process signal as it crosses the wire, with the session numbers that tell the receiver
/// whether the sender saw a loss of their connection it did not (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFrame {
    /// The sender's session with the receiver: new after each loss of the receiver.
    pub session: u64,
    /// The receiver's newest session the sender had heard.
    pub heard: u64,
    /// What `heard` was when `session` began.
    pub start: u64,
    /// The signal; `None` in a frame that only tells the sessions.
    pub msg: Option<ProcessMsg>,
}

/// The runtime's local processes, as the table needs them to accept a peer's monitor or link.
pub trait LocalProcesses {
    /// Resolves `target` to a live local process and marks it watched from another node, so
    /// that its end is reported with [`SignalTable::process_exited`]; `None` if there is no
    /// such process. The check and the mark must be atomic with respect to the process ending.
    fn watch(&mut self, target: &Target) -> Option<u64>;

    /// Whether local process `id` is alive.
    fn is_alive(&self, id: u64) -> bool;
}

/// What the table asks of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalOutput {
    /// Send `msg` to `to` (which has an open lane), in a frame from [`SignalTable::frame`].
    Send {
        /// The peer.
        to: NodeName,
        /// The message.
        msg: ProcessMsg,
    },
    /// Tell `to` this node's session: a frame from [`SignalTable::frame`] with no message.
    Tell {
        /// The peer.
        to: NodeName,
    },
    /// Deliver a `Down` to local process `watcher`.
    Down {
        /// The watching process.
        watcher: u64,
        /// The monitor's reference id (minted by this node).
        monitor: u64,
        /// What was monitored.
        target: RemoteRef,
        /// Why it is down.
        reason: ExitReason,
    },
    /// Deliver an exit signal to local process `to`.
    Exit {
        /// The receiving process.
        to: u64,
        /// The sending process, if any.
        from: Option<Pid>,
        /// The reason.
        reason: ExitReason,
        /// Whether a link carried it (the link is gone).
        link: bool,
    },
    /// The answer to a liveness query: `None` when the peer could not be asked or was lost.
    Alive {
        /// The waiter of the query.
        waiter: Waiter,
        /// The answer.
        alive: Option<bool>,
    },
}

/// Which node asked for an entry, with its session with the other when it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// This node, in its session.
    Here(u64),
    /// The peer, in its session.
    There(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct OutMonitor {
    watcher: u64,
    target: RemoteRef,
    creation: Creation,
    /// This node's session with the target's node when it asked.
    session: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkEntry {
    creation: Creation,
    asked: Asked,
    /// Unlinked here with this id, not yet acknowledged by the peer: the link is gone for the
    /// local process (no exit signal crosses it), and a `Link` the peer sent before it saw the
    /// unlink does not bring it back.
    unlinking: Option<u64>,
}

/// Which of a peer's entries fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fire {
    /// All of them: this node lost the peer.
    All,
    /// Those of other incarnations than this one.
    NotOf(Creation),
    /// The peer lost this node when it had heard this node's session `start`: it fired every
    /// entry it held, so here fire those it asked for and those asked for here that it may
    /// have seen before.
    PeerLost { start: u64 },
}

impl Fire {
    fn fires(self, creation: Creation, asked: Asked) -> bool {
        match self {
            Fire::All => true,
            Fire::NotOf(c) => creation != c,
            Fire::PeerLost { start } => match asked {
                Asked::Here(s) => s <= start,
                Asked::There(_) => true,
            },
        }
    }
}

/// Counts of the table's entries (for leak checks and `stats()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCounts {
    /// Monitors held by local processes of peers' processes.
    pub monitors_out: usize,
    /// Monitors held by peers' processes of local processes.
    pub monitors_in: usize,
    /// Links between local processes and peers' processes (with those unlinked here whose
    /// unlink the peer has not yet acknowledged).
    pub links: usize,
    /// Liveness queries waiting for an answer.
    pub queries: usize,
}

/// Counters of the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Signals from peers about monitors, links or queries no longer known (late or
    /// duplicate), ignored.
    pub stale: u64,
    /// Monitors and links a peer asked for before it heard that this node had lost it,
    /// refused (the peer fires them when it hears).
    pub refused_session: u64,
    /// Losses of a peer this node saw (each starts a new session with it).
    pub sessions_lost: u64,
    /// Losses a peer saw that this node had not, learnt from its frames.
    pub sessions_heard: u64,
    /// Monitors or links refused because the table was full.
    pub refused_full: u64,
}

/// The cross-node monitors, links and queries of one node. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct SignalTable {
    /// Monitor reference id -> monitor (this node's watchers).
    out: BTreeMap<u64, OutMonitor>,
    out_by_node: BTreeSet<(NodeName, u64)>,
    out_by_watcher: BTreeSet<(u64, u64)>,
    /// (peer, its monitor reference id) -> (local target, the peer's incarnation, the peer's
    /// session when it asked).
    inbound: BTreeMap<(NodeName, u64), (u64, Creation, u64)>,
    /// Local target -> (peer, its monitor reference id).
    in_by_target: BTreeMap<u64, BTreeSet<(NodeName, u64)>>,
    /// Local process -> (peer, remote process id) -> the link.
    links: BTreeMap<u64, BTreeMap<(NodeName, u64), LinkEntry>>,
    /// (peer, remote process id, local process): the links by peer.
    links_by_node: BTreeSet<(NodeName, u64, u64)>,
    /// Query id -> (peer, waiter, this node's session with the peer when it asked).
    queries: BTreeMap<u64, (NodeName, Waiter, u64)>,
    next_query: u64,
    next_unlink: u64,
    max_entries: usize,
    sessions: Sessions,
    stats: SignalStats,
}

/// Where the peer of a signal stands: its connected incarnation, if any lane is open.
pub type PeerState = Option<Creation>;

impl SignalTable {
    /// A table holding at most `max_entries` monitors plus links (further ones are refused as
    /// if the peer were unreachable, and counted), and the session numbers of at most
    /// `max_peers` peers. Past that, the peers lost longest ago (with no lane since) are
    /// forgotten; a peer forgotten that comes back has its monitors and links made before it
    /// heard this node's new session refused (they fire `noconnection` on its side).
    pub fn new(max_entries: usize, max_peers: usize) -> SignalTable {
        SignalTable {
            max_entries,
            sessions: Sessions::new(max_peers),
            ..SignalTable::default()
        }
    }

    /// Peers whose session numbers the table keeps, and how many it forgot because it was full.
    pub fn peer_sessions(&self) -> (usize, u64) {
        (self.sessions.len(), self.sessions.forgotten())
    }

    /// A frame to `to` carrying `msg` (none: only the sessions), stamped with this node's
    /// session numbers with `to`.
    pub fn frame(&self, to: &NodeName, msg: Option<ProcessMsg>) -> ProcessFrame {
        let s = self.sessions.get(to);
        ProcessFrame {
            session: s.map_or(0, |s| s.mine),
            heard: s.map_or(0, |s| s.heard),
            start: s.map_or(0, |s| s.start),
            msg,
        }
    }

    /// This node's session with `node` and the newest of the peer's it heard, if it keeps
    /// them (for checkers: a change in either means a loss one of the two nodes saw).
    pub fn session_of(&self, node: &NodeName) -> Option<(u64, u64)> {
        self.sessions.get(node).map(|s| (s.mine, s.heard))
    }

    /// Whether local process `local` holds a link with process `remote` of `node` (one being
    /// unlinked included).
    pub fn holds_link(&self, local: u64, node: &NodeName, remote: u64) -> bool {
        self.link_entry(local, node, remote).is_some()
    }

    /// Links not being unlinked.
    #[cfg(test)]
    fn active_links(&self) -> usize {
        self.links
            .values()
            .flat_map(|l| l.values())
            .filter(|e| e.unlinking.is_none())
            .count()
    }

    fn session_mine(&self, node: &NodeName) -> u64 {
        self.sessions.get(node).map_or(0, |s| s.mine)
    }

    /// Entry counts.
    pub fn counts(&self) -> SignalCounts {
        SignalCounts {
            monitors_out: self.out.len(),
            monitors_in: self.inbound.len(),
            links: self.links_by_node.len(),
            queries: self.queries.len(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SignalStats {
        &self.stats
    }

    /// Whether the table holds nothing about `node`.
    pub fn is_clear_of(&self, node: &NodeName) -> bool {
        let none_out = self
            .out_by_node
            .range((node.clone(), 0)..)
            .next()
            .map(|(n, _)| n)
            != Some(node);
        let none_in = self
            .inbound
            .range((node.clone(), 0)..)
            .next()
            .map(|((n, _), _)| n)
            != Some(node);
        let none_links = self
            .links_by_node
            .range((node.clone(), 0, 0)..)
            .next()
            .map(|(n, _, _)| n)
            != Some(node);
        none_out && none_in && none_links && !self.queries.values().any(|(n, _, _)| n == node)
    }

    fn full(&self) -> bool {
        self.out.len() + self.inbound.len() + self.links_by_node.len() >= self.max_entries
    }

    /// Local process `watcher` monitors `target` (a process of `peer`, whose state is given)
    /// under reference id `monitor`.
    pub fn monitor(
        &mut self,
        watcher: u64,
        monitor: u64,
        target: RemoteRef,
        peer: PeerState,
        out: &mut Vec<SignalOutput>,
    ) {
        let node = target.node().clone();
        let wanted_creation = match &target {
            RemoteRef::Pid(p) => Some(p.creation),
            RemoteRef::Ref(r) => Some(r.creation),
            RemoteRef::Name(_) => None,
        };
        let down = |reason| SignalOutput::Down {
            watcher,
            monitor,
            target: target.clone(),
            reason,
        };
        let Some(creation) = peer else {
            out.push(down(ExitReason::NoConnection));
            return;
        };
        if wanted_creation.is_some_and(|c| c != creation) {
            out.push(down(ExitReason::NoProc));
            return;
        }
        if self.full() || self.out.contains_key(&monitor) {
            self.stats.refused_full += 1;
            out.push(down(ExitReason::NoConnection));
            return;
        }
        let session = self.session_mine(&node);
        let wire_target = match &target {
            RemoteRef::Pid(p) => Target::Pid(p.id),
            RemoteRef::Ref(r) => Target::Ref(r.id),
            RemoteRef::Name(n) => Target::Name(n.name.clone()),
        };
        self.out.insert(
            monitor,
            OutMonitor {
                watcher,
                target,
                creation,
                session,
            },
        );
        self.out_by_node.insert((node.clone(), monitor));
        self.out_by_watcher.insert((watcher, monitor));
        out.push(SignalOutput::Send {
            to: node,
            msg: ProcessMsg::Monitor {
                monitor,
                watcher,
                target: wire_target,
            },
        });
    }

    /// Withdraws monitor `monitor` (if this node holds it of a peer's process). Returns whether
    /// it was held.
    pub fn demonitor(&mut self, monitor: u64, out: &mut Vec<SignalOutput>) -> bool {
        let Some(m) = self.remove_out(monitor) else {
            return false;
        };
        out.push(SignalOutput::Send {
            to: m.target.node().clone(),
            msg: ProcessMsg::Demonitor { monitor },
        });
        true
    }

    fn remove_out(&mut self, monitor: u64) -> Option<OutMonitor> {
        let m = self.out.remove(&monitor)?;
        self.out_by_node.remove(&(m.target.node().clone(), monitor));
        self.out_by_watcher.remove(&(m.watcher, monitor));
        Some(m)
    }

    /// Links local process `local` with `remote` (a process of a peer in the given state).
    pub fn link(&mut self, local: u64, remote: Pid, peer: PeerState, out: &mut Vec<SignalOutput>) {
        let refuse = |reason| SignalOutput::Exit {
            to: local,
            from: Some(remote.clone()),
            reason,
            link: true,
        };
        let Some(creation) = peer else {
            out.push(refuse(ExitReason::NoConnection));
            return;
        };
        if creation != remote.creation {
            out.push(refuse(ExitReason::NoProc));
            return;
        }
        let asked = Asked::Here(self.session_mine(&remote.node));
        match self.link_entry(local, &remote.node, remote.id) {
            Some(e) if e.unlinking.is_none() => return,
            // Linked again before the peer acknowledged the unlink: the peer reads the unlink
            // first, then this link.
            Some(_) => self.set_link(local, &remote.node, remote.id, |e| {
                e.unlinking = None;
                e.asked = asked;
            }),
            None if self.full() => {
                self.stats.refused_full += 1;
                out.push(refuse(ExitReason::NoConnection));
                return;
            }
            None => self.insert_link(local, &remote.node, remote.id, creation, asked),
        }
        out.push(SignalOutput::Send {
            to: remote.node,
            msg: ProcessMsg::Link {
                from: local,
                to: remote.id,
            },
        });
    }

    /// Removes the link between `local` and `remote`, on both nodes. The entry stays here,
    /// inert, until the peer acknowledges the unlink, so that a link and an unlink crossing
    /// each other end the same on both nodes.
    pub fn unlink(&mut self, local: u64, remote: &Pid, out: &mut Vec<SignalOutput>) {
        let active = self
            .link_entry(local, &remote.node, remote.id)
            .is_some_and(|e| e.unlinking.is_none());
        if !active {
            return;
        }
        self.next_unlink += 1;
        let id = self.next_unlink;
        self.set_link(local, &remote.node, remote.id, |e| e.unlinking = Some(id));
        out.push(SignalOutput::Send {
            to: remote.node.clone(),
            msg: ProcessMsg::Unlink {
                from: local,
                to: remote.id,
                id,
            },
        });
    }

    fn set_link(
        &mut self,
        local: u64,
        node: &NodeName,
        remote: u64,
        change: impl FnOnce(&mut LinkEntry),
    ) {
        if let Some(e) = self
            .links
            .get_mut(&local)
            .and_then(|l| l.get_mut(&(node.clone(), remote)))
        {
            change(e);
        }
    }

    fn link_entry(&self, local: u64, node: &NodeName, remote: u64) -> Option<LinkEntry> {
        self.links
            .get(&local)?
            .get(&(node.clone(), remote))
            .copied()
    }

    fn insert_link(
        &mut self,
        local: u64,
        node: &NodeName,
        remote: u64,
        creation: Creation,
        asked: Asked,
    ) {
        self.links.entry(local).or_default().insert(
            (node.clone(), remote),
            LinkEntry {
                creation,
                asked,
                unlinking: None,
            },
        );
        self.links_by_node.insert((node.clone(), remote, local));
    }

    fn remove_link(&mut self, local: u64, node: &NodeName, remote: u64) -> bool {
        let Some(of_local) = self.links.get_mut(&local) else {
            return false;
        };
        if of_local.remove(&(node.clone(), remote)).is_none() {
            return false;
        }
        if of_local.is_empty() {
            self.links.remove(&local);
        }
        self.links_by_node.remove(&(node.clone(), remote, local));
        true
    }

    fn insert_inbound(
        &mut self,
        node: &NodeName,
        creation: Creation,
        session: u64,
        monitor: u64,
        target: u64,
    ) {
        self.inbound
            .insert((node.clone(), monitor), (target, creation, session));
        self.in_by_target
            .entry(target)
            .or_default()
            .insert((node.clone(), monitor));
    }

    fn remove_inbound(&mut self, node: &NodeName, monitor: u64) -> bool {
        let Some((target, _, _)) = self.inbound.remove(&(node.clone(), monitor)) else {
            return false;
        };
        if let Some(set) = self.in_by_target.get_mut(&target) {
            set.remove(&(node.clone(), monitor));
            if set.is_empty() {
                self.in_by_target.remove(&target);
            }
        }
        true
    }

    /// Sends an exit signal from local process `from` (or the node) to `to`, a process of a
    /// peer in the given state. Dropped when the peer is not connected or `to` belongs to
    /// another incarnation (there is nothing left to signal); returns whether it was sent.
    pub fn exit(
        &mut self,
        from: Option<u64>,
        to: &Pid,
        reason: ExitReason,
        peer: PeerState,
        out: &mut Vec<SignalOutput>,
    ) -> bool {
        if peer != Some(to.creation) {
            return false;
        }
        out.push(SignalOutput::Send {
            to: to.node.clone(),
            msg: ProcessMsg::Exit {
                from,
                to: to.id,
                reason,
                link: false,
            },
        });
        true
    }

    /// Asks whether `pid` (of a peer in the given state) is alive; answered with
    /// [`SignalOutput::Alive`] for `waiter`.
    pub fn is_alive(
        &mut self,
        pid: &Pid,
        waiter: Waiter,
        peer: PeerState,
        out: &mut Vec<SignalOutput>,
    ) {
        match peer {
            None => out.push(SignalOutput::Alive {
                waiter,
                alive: None,
            }),
            Some(c) if c != pid.creation => out.push(SignalOutput::Alive {
                waiter,
                alive: Some(false),
            }),
            Some(_) => {
                self.next_query += 1;
                let query = self.next_query;
                let session = self.session_mine(&pid.node);
                self.queries
                    .insert(query, (pid.node.clone(), waiter, session));
                out.push(SignalOutput::Send {
                    to: pid.node.clone(),
                    msg: ProcessMsg::IsAlive { query, pid: pid.id },
                });
            }
        }
    }

    /// Local process `id` ended with `reason` (rule 3). Harmless for a process the table does
    /// not know.
    pub fn process_exited(&mut self, id: u64, reason: &ExitReason, out: &mut Vec<SignalOutput>) {
        let watched = self.in_by_target.remove(&id).unwrap_or_default();
        for (node, monitor) in watched {
            self.inbound.remove(&(node.clone(), monitor));
            out.push(SignalOutput::Send {
                to: node,
                msg: ProcessMsg::Down {
                    monitor,
                    reason: reason.clone(),
                },
            });
        }
        let held: Vec<u64> = self
            .out_by_watcher
            .range((id, 0)..)
            .take_while(|(w, _)| *w == id)
            .map(|(_, m)| *m)
            .collect();
        for monitor in held {
            self.demonitor(monitor, out);
        }
        let linked = self.links.remove(&id).unwrap_or_default();
        for ((node, remote), entry) in linked {
            self.links_by_node.remove(&(node.clone(), remote, id));
            if entry.unlinking.is_some() {
                continue;
            }
            out.push(SignalOutput::Send {
                to: node,
                msg: ProcessMsg::Exit {
                    from: Some(id),
                    to: remote,
                    reason: reason.clone(),
                    link: true,
                },
            });
        }
    }

    /// The last lane to `node` went down (rule 4): every entry with it fires, and this node
    /// starts a new session with it, told to the peer on the lanes that open next.
    pub fn peer_down(&mut self, node: &NodeName, out: &mut Vec<SignalOutput>) {
        self.lose(node, false, out);
    }

    /// This node loses `node` (rule 4) while `connected` says whether a lane to it stays open
    /// (then the caller tells the new session on each: [`SignalTable::frame`] with no message).
    pub fn lose(&mut self, node: &NodeName, connected: bool, out: &mut Vec<SignalOutput>) {
        self.fire(node, Fire::All, out);
        if self.sessions.get(node).is_some() {
            self.stats.sessions_lost += 1;
            self.sessions.lose(node, connected);
        }
    }

    /// `node` is up as incarnation `creation`: the entries of its other incarnations fire
    /// (rule 4).
    pub fn peer_up(&mut self, node: &NodeName, creation: Creation, out: &mut Vec<SignalOutput>) {
        self.fire(node, Fire::NotOf(creation), out);
    }

    /// A lane to incarnation `creation` of `node` opened. Returns the frame to put first on it
    /// when the peer has not yet shown it heard this node's session.
    pub fn lane_up(&mut self, node: &NodeName, creation: Creation) -> Option<ProcessFrame> {
        let acked = self.sessions.of(node, creation).acked;
        self.sessions.lane_up(node);
        (!acked).then(|| self.frame(node, None))
    }

    /// Fires the entries with `node` that `which` selects (rule 4).
    fn fire(&mut self, node: &NodeName, which: Fire, out: &mut Vec<SignalOutput>) {
        let monitors: Vec<u64> = self
            .out_by_node
            .range((node.clone(), 0)..)
            .take_while(|(n, _)| n == node)
            .map(|(_, m)| *m)
            .filter(|m| {
                self.out
                    .get(m)
                    .is_some_and(|m| which.fires(m.creation, Asked::Here(m.session)))
            })
            .collect();
        for monitor in monitors {
            let Some(m) = self.remove_out(monitor) else {
                continue;
            };
            out.push(SignalOutput::Down {
                watcher: m.watcher,
                monitor,
                target: m.target,
                reason: ExitReason::NoConnection,
            });
        }
        // The peer's monitors of local processes: nobody is left to tell.
        let held: Vec<u64> = self
            .inbound
            .range((node.clone(), 0)..)
            .take_while(|((n, _), _)| n == node)
            .filter(|(_, (_, c, s))| which.fires(*c, Asked::There(*s)))
            .map(|((_, m), _)| *m)
            .collect();
        for monitor in held {
            self.remove_inbound(node, monitor);
        }
        let queries: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, (n, _, s))| {
                // A query has no incarnation: one pending when a peer comes up (as another
                // incarnation) was to the old one.
                n == node
                    && match which {
                        Fire::All | Fire::NotOf(_) => true,
                        Fire::PeerLost { start } => *s <= start,
                    }
            })
            .map(|(q, _)| *q)
            .collect();
        for q in queries {
            if let Some((_, waiter, _)) = self.queries.remove(&q) {
                out.push(SignalOutput::Alive {
                    waiter,
                    alive: None,
                });
            }
        }
        let links: Vec<(u64, u64, LinkEntry)> = self
            .links_by_node
            .range((node.clone(), 0, 0)..)
            .take_while(|(n, _, _)| n == node)
            .filter_map(|(_, r, l)| Some((*r, *l, self.link_entry(*l, node, *r)?)))
            .filter(|(_, _, e)| which.fires(e.creation, e.asked))
            .collect();
        for (remote, local, entry) in links {
            self.remove_link(local, node, remote);
            if entry.unlinking.is_some() {
                continue;
            }
            out.push(SignalOutput::Exit {
                to: local,
                from: Some(Pid {
                    node: node.clone(),
                    creation: entry.creation,
                    id: remote,
                }),
                reason: ExitReason::NoConnection,
                link: true,
            });
        }
    }

    /// A frame from `peer`, read on a lane of its incarnation `creation`; `connected`: whether
    /// a lane to the peer is open (one that is closing may still be read).
    ///
    /// The frame's sessions are looked at first. A newer session of the peer's than heard so
    /// far means the peer lost this node and fired everything it held: the entries it asked
    /// for fire here, and so do those asked for here that it had heard of then (its `start`
    /// tells). A monitor or link the peer asked for is accepted only if the peer had heard this
    /// node's current session, or asked in a session of its own that began after this one
    /// (else this node's loss took it, and the peer fires it when it hears), and only while a
    /// lane is open (else this node loses the peer now, so that the peer hears of it).
    pub fn handle(
        &mut self,
        peer: &NodeName,
        creation: Creation,
        frame: ProcessFrame,
        connected: bool,
        procs: &mut dyn LocalProcesses,
        out: &mut Vec<SignalOutput>,
    ) {
        let s = *self.sessions.of(peer, creation);
        if frame.session > s.heard {
            self.stats.sessions_heard += 1;
            self.fire(peer, Fire::PeerLost { start: frame.start }, out);
        }
        // Firing leaves the sessions as they were: update them once.
        let heard = s.heard.max(frame.session);
        let entry = self.sessions.of(peer, creation);
        entry.heard = heard;
        entry.acked |= frame.heard == s.mine;
        let Some(msg) = frame.msg else {
            if frame.heard != s.mine {
                out.push(SignalOutput::Tell { to: peer.clone() });
            }
            return;
        };
        if matches!(msg, ProcessMsg::Monitor { .. } | ProcessMsg::Link { .. }) {
            let current =
                frame.session == heard && (frame.heard == s.mine || frame.session > s.start);
            if !current {
                self.stats.refused_session += 1;
                return;
            }
            if !connected {
                self.stats.refused_session += 1;
                self.lose(peer, false, out);
                return;
            }
        }
        self.apply(peer, creation, frame.session, msg, procs, out);
    }

    /// A signal from `peer` (connected as incarnation `creation`, asking in its `session`).
    fn apply(
        &mut self,
        peer: &NodeName,
        creation: Creation,
        session: u64,
        msg: ProcessMsg,
        procs: &mut dyn LocalProcesses,
        out: &mut Vec<SignalOutput>,
    ) {
        match msg {
            ProcessMsg::Monitor {
                monitor,
                watcher: _,
                target,
            } => {
                let key = (peer.clone(), monitor);
                if self.inbound.contains_key(&key) {
                    self.stats.stale += 1;
                    return;
                }
                let resolved = if self.full() {
                    self.stats.refused_full += 1;
                    None
                } else {
                    procs.watch(&target)
                };
                match resolved {
                    Some(id) => self.insert_inbound(peer, creation, session, monitor, id),
                    None => out.push(SignalOutput::Send {
                        to: peer.clone(),
                        msg: ProcessMsg::Down {
                            monitor,
                            reason: ExitReason::NoProc,
                        },
                    }),
                }
            }
            ProcessMsg::Demonitor { monitor } => {
                if !self.remove_inbound(peer, monitor) {
                    self.stats.stale += 1;
                }
            }
            ProcessMsg::Down { monitor, reason } => {
                let ours = self
                    .out
                    .get(&monitor)
                    .is_some_and(|m| m.target.node() == peer && m.creation == creation);
                if !ours {
                    self.stats.stale += 1;
                    return;
                }
                let Some(m) = self.remove_out(monitor) else {
                    return;
                };
                out.push(SignalOutput::Down {
                    watcher: m.watcher,
                    monitor,
                    target: m.target,
                    reason,
                });
            }
            ProcessMsg::Link { from, to } => {
                if let Some(entry) = self.link_entry(to, peer, from) {
                    if entry.unlinking.is_none() {
                        // Both asked at once: the link now stands as the peer asked for it,
                        // which is how the peer holds it too.
                        self.set_link(to, peer, from, |e| e.asked = Asked::There(session));
                    }
                    // Unlinking: the peer sent this before it read the unlink, which removes
                    // its side when it does.
                    return;
                }
                let alive = if self.full() {
                    self.stats.refused_full += 1;
                    false
                } else {
                    procs.watch(&Target::Pid(to)) == Some(to)
                };
                if alive {
                    self.insert_link(to, peer, from, creation, Asked::There(session));
                } else {
                    out.push(SignalOutput::Send {
                        to: peer.clone(),
                        msg: ProcessMsg::Exit {
                            from: Some(to),
                            to: from,
                            reason: ExitReason::NoProc,
                            link: true,
                        },
                    });
                }
            }
            ProcessMsg::Unlink { from, to, id } => {
                match self.link_entry(to, peer, from) {
                    Some(e) if e.unlinking.is_none() => {
                        self.remove_link(to, peer, from);
                    }
                    // Both unlinked at once: this side's entry goes with the peer's answer.
                    Some(_) => {}
                    None => self.stats.stale += 1,
                }
                out.push(SignalOutput::Send {
                    to: peer.clone(),
                    msg: ProcessMsg::UnlinkAck {
                        from: to,
                        to: from,
                        id,
                    },
                });
            }
            ProcessMsg::UnlinkAck { from, to, id } => {
                if self
                    .link_entry(to, peer, from)
                    .is_some_and(|e| e.unlinking == Some(id))
                {
                    self.remove_link(to, peer, from);
                } else {
                    self.stats.stale += 1;
                }
            }
            ProcessMsg::Exit {
                from,
                to,
                reason,
                link,
            } => {
                // A link exit signal for a link already removed (unlinked, or refused) is
                // not delivered (rule 5).
                let link_gone = match from {
                    Some(f) if link => {
                        let active = self
                            .link_entry(to, peer, f)
                            .is_some_and(|e| e.unlinking.is_none());
                        // An unlinking entry waits for the peer's acknowledgement, which the
                        // peer sends when it reads the unlink.
                        !(active && self.remove_link(to, peer, f))
                    }
                    _ => link,
                };
                if link_gone {
                    self.stats.stale += 1;
                    return;
                }
                out.push(SignalOutput::Exit {
                    to,
                    from: from.map(|id| Pid {
                        node: peer.clone(),
                        creation,
                        id,
                    }),
                    reason,
                    link,
                });
            }
            ProcessMsg::IsAlive { query, pid } => out.push(SignalOutput::Send {
                to: peer.clone(),
                msg: ProcessMsg::Alive {
                    query,
                    alive: procs.is_alive(pid),
                },
            }),
            ProcessMsg::Alive { query, alive } => match self.queries.get(&query) {
                Some((n, _, _)) if n == peer => {
                    if let Some((_, waiter, _)) = self.queries.remove(&query) {
                        out.push(SignalOutput::Alive {
                            waiter,
                            alive: Some(alive),
                        });
                    }
                }
                _ => self.stats.stale += 1,
            },
        }
    }
}
