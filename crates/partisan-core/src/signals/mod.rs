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
//!    everything the peer held here is forgotten. The peer does the same on its side, so no
//!    entry outlives the connection on either node.
//! 5. A `Down` is delivered at most once per monitor; after a demonitor none is delivered
//!    (a `Down` already handed to the runtime may still sit in the watcher's mailbox, which
//!    the runtime can flush). After an unlink, no exit signal of that link is delivered.
//!
//! Every entry is keyed by ordered collections, so iteration (and the order of outputs) is
//! the same for the same inputs.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::Waiter;
use crate::id::{Creation, NodeName, Pid, RemoteRef};
use crate::wire::Target;

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
    /// The sender's process `from` removes its link with the receiver's process `to`.
    Unlink {
        /// Sender-side process.
        from: u64,
        /// Receiver-side process.
        to: u64,
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
    /// Send `msg` to `to` (which has an open lane).
    Send {
        /// The peer.
        to: NodeName,
        /// The message.
        msg: ProcessMsg,
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

#[derive(Clone, Debug, PartialEq, Eq)]
struct OutMonitor {
    watcher: u64,
    target: RemoteRef,
    creation: Creation,
}

/// Counts of the table's entries (for leak checks and `stats()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCounts {
    /// Monitors held by local processes of peers' processes.
    pub monitors_out: usize,
    /// Monitors held by peers' processes of local processes.
    pub monitors_in: usize,
    /// Links between local processes and peers' processes.
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
    /// Monitors or links refused because the table was full.
    pub refused_full: u64,
}

/// The cross-node monitors, links and queries of one node. See the module documentation.
#[derive(Debug, Default)]
pub struct SignalTable {
    /// Monitor reference id -> monitor (this node's watchers).
    out: BTreeMap<u64, OutMonitor>,
    out_by_node: BTreeSet<(NodeName, u64)>,
    out_by_watcher: BTreeSet<(u64, u64)>,
    /// (peer, its monitor reference id) -> (local target, the peer's incarnation).
    inbound: BTreeMap<(NodeName, u64), (u64, Creation)>,
    /// Local target -> (peer, its monitor reference id).
    in_by_target: BTreeMap<u64, BTreeSet<(NodeName, u64)>>,
    /// Local process -> (peer, remote process id) -> the peer's incarnation.
    links: BTreeMap<u64, BTreeMap<(NodeName, u64), Creation>>,
    /// (peer, remote process id, local process): the links by peer.
    links_by_node: BTreeSet<(NodeName, u64, u64)>,
    queries: BTreeMap<u64, (NodeName, Waiter)>,
    next_query: u64,
    max_entries: usize,
    stats: SignalStats,
}

/// Where the peer of a signal stands: its connected incarnation, if any lane is open.
pub type PeerState = Option<Creation>;

impl SignalTable {
    /// A table holding at most `max_entries` monitors plus links (further ones are refused as
    /// if the peer were unreachable, and counted).
    pub fn new(max_entries: usize) -> SignalTable {
        SignalTable {
            max_entries,
            ..SignalTable::default()
        }
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
        none_out && none_in && none_links && !self.queries.values().any(|(n, _)| n == node)
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
        if self.has_link(local, &remote.node, remote.id) {
            return;
        }
        if self.full() {
            self.stats.refused_full += 1;
            out.push(refuse(ExitReason::NoConnection));
            return;
        }
        self.insert_link(local, &remote.node, remote.id, creation);
        out.push(SignalOutput::Send {
            to: remote.node,
            msg: ProcessMsg::Link {
                from: local,
                to: remote.id,
            },
        });
    }

    /// Removes the link between `local` and `remote`, on both nodes.
    pub fn unlink(&mut self, local: u64, remote: &Pid, out: &mut Vec<SignalOutput>) {
        if self.remove_link(local, &remote.node, remote.id) {
            out.push(SignalOutput::Send {
                to: remote.node.clone(),
                msg: ProcessMsg::Unlink {
                    from: local,
                    to: remote.id,
                },
            });
        }
    }

    fn has_link(&self, local: u64, node: &NodeName, remote: u64) -> bool {
        self.links
            .get(&local)
            .is_some_and(|l| l.contains_key(&(node.clone(), remote)))
    }

    fn link_creation(&self, local: u64, node: &NodeName, remote: u64) -> Option<Creation> {
        self.links
            .get(&local)?
            .get(&(node.clone(), remote))
            .copied()
    }

    fn insert_link(&mut self, local: u64, node: &NodeName, remote: u64, creation: Creation) {
        self.links
            .entry(local)
            .or_default()
            .insert((node.clone(), remote), creation);
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

    fn insert_inbound(&mut self, node: &NodeName, creation: Creation, monitor: u64, target: u64) {
        self.inbound
            .insert((node.clone(), monitor), (target, creation));
        self.in_by_target
            .entry(target)
            .or_default()
            .insert((node.clone(), monitor));
    }

    fn remove_inbound(&mut self, node: &NodeName, monitor: u64) -> bool {
        let Some((target, _)) = self.inbound.remove(&(node.clone(), monitor)) else {
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
                self.queries.insert(query, (pid.node.clone(), waiter));
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
        for (node, remote) in linked.into_keys() {
            self.links_by_node.remove(&(node.clone(), remote, id));
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

    /// The last lane to `node` went down, or it came back as another incarnation than the
    /// entries were made with (`now_creation`): rule 4. Entries made with `now_creation` are
    /// kept.
    pub fn peer_lost(
        &mut self,
        node: &NodeName,
        now_creation: Option<Creation>,
        out: &mut Vec<SignalOutput>,
    ) {
        let monitors: Vec<u64> = self
            .out_by_node
            .range((node.clone(), 0)..)
            .take_while(|(n, _)| n == node)
            .map(|(_, m)| *m)
            .collect();
        for monitor in monitors {
            if self.out.get(&monitor).map(|m| m.creation) == now_creation {
                continue;
            }
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
        // The old incarnation's monitors of local processes: nobody is left to tell.
        let held: Vec<u64> = self
            .inbound
            .range((node.clone(), 0)..)
            .take_while(|((n, _), _)| n == node)
            .filter(|(_, (_, c))| Some(*c) != now_creation)
            .map(|((_, m), _)| *m)
            .collect();
        for monitor in held {
            self.remove_inbound(node, monitor);
        }
        {
            let queries: Vec<u64> = self
                .queries
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(q, _)| *q)
                .collect();
            for q in queries {
                if let Some((_, waiter)) = self.queries.remove(&q) {
                    out.push(SignalOutput::Alive {
                        waiter,
                        alive: None,
                    });
                }
            }
        }
        let links: Vec<(u64, u64)> = self
            .links_by_node
            .range((node.clone(), 0, 0)..)
            .take_while(|(n, _, _)| n == node)
            .map(|(_, r, l)| (*r, *l))
            .collect();
        for (remote, local) in links {
            let creation = self.link_creation(local, node, remote);
            if creation == now_creation {
                continue;
            }
            self.remove_link(local, node, remote);
            out.push(SignalOutput::Exit {
                to: local,
                from: creation.map(|c| Pid {
                    node: node.clone(),
                    creation: c,
                    id: remote,
                }),
                reason: ExitReason::NoConnection,
                link: true,
            });
        }
    }

    /// A signal from `peer` (connected as incarnation `creation`).
    pub fn handle(
        &mut self,
        peer: &NodeName,
        creation: Creation,
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
                    Some(id) => self.insert_inbound(peer, creation, monitor, id),
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
                if self.has_link(to, peer, from) {
                    return;
                }
                let alive = if self.full() {
                    self.stats.refused_full += 1;
                    false
                } else {
                    procs.watch(&Target::Pid(to)) == Some(to)
                };
                if alive {
                    self.insert_link(to, peer, from, creation);
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
            ProcessMsg::Unlink { from, to } => {
                if !self.remove_link(to, peer, from) {
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
                    Some(f) if link => !self.remove_link(to, peer, f),
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
                Some((n, _)) if n == peer => {
                    if let Some((_, waiter)) = self.queries.remove(&query) {
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
