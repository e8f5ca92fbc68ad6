//! Per-peer session numbers: how two nodes agree on which of their signal entries survived a
//! loss of the connection that only one of them saw.
//!
//! Each node keeps, for each peer, three numbers:
//!
//! - `mine`: this node's session with the peer. It takes a new value (from one node-wide
//!   counter, so it only grows) each time this node loses the peer: the last lane to it went
//!   down, or a request of it had to be refused while no lane was open. At that moment every
//!   entry with the peer fires here.
//! - `heard`: the newest session of the peer's that this node has heard in the peer's frames.
//! - `start`: what `heard` was when `mine` last changed: which of this node's requests the peer
//!   may have seen before this node forgot everything.
//!
//! Every process frame carries the sender's three numbers. A receiver that finds a newer
//! session than it had heard learns that the peer lost it and fired everything it held; it then
//! fires what it holds that the peer did not keep (see `SignalTable::handle`). A session is told
//! on every lane that opens to the peer until the peer has shown it heard it, so a peer that
//! keeps a lane open always learns.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::{Creation, NodeName};

/// What a node knows of its session with one peer (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PeerSession {
    /// The peer's incarnation these numbers are about.
    pub creation: Creation,
    /// This node's session with the peer.
    pub mine: u64,
    /// The newest session of the peer's heard.
    pub heard: u64,
    /// `heard` when `mine` last changed ([`UNKNOWN_START`] after the book forgot the peer).
    pub start: u64,
    /// Whether the peer has shown it heard `mine`.
    pub acked: bool,
}

/// The `start` of a session made for a peer that may have been forgotten: no request of the
/// peer's made before it heard the new session is accepted, and the peer fires every entry it
/// asked for when it hears it.
pub(super) const UNKNOWN_START: u64 = u64::MAX;

impl PeerSession {
    fn fresh(creation: Creation) -> PeerSession {
        PeerSession {
            creation,
            mine: 0,
            heard: 0,
            start: 0,
            acked: true,
        }
    }
}

/// The sessions of every peer, bounded: past `max` peers, the ones lost longest ago without a
/// lane since are forgotten.
#[derive(Clone, Debug, Default)]
pub(super) struct Sessions {
    peers: BTreeMap<NodeName, PeerSession>,
    /// Peers with no lane open, by the session they were lost in (oldest first).
    down: BTreeSet<(u64, NodeName)>,
    /// The last session number handed out.
    counter: u64,
    /// Whether any peer was forgotten: a peer not in the book may then have known an earlier
    /// session of this node's.
    forgot_any: bool,
    max: usize,
    forgotten: u64,
}

impl Sessions {
    pub(super) fn new(max: usize) -> Sessions {
        Sessions {
            max: max.max(1),
            ..Sessions::default()
        }
    }

    /// Peers in the book.
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Peers forgotten because the book was full.
    pub(super) fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// The session with `node`, if it is in the book.
    pub(super) fn get(&self, node: &NodeName) -> Option<PeerSession> {
        self.peers.get(node).copied()
    }

    /// The session with incarnation `creation` of `node`, made if the book has none for that
    /// incarnation. A new incarnation has heard nothing from this node, so its session starts
    /// at zero, unless the book ever forgot a peer (it may be that one).
    pub(super) fn of(&mut self, node: &NodeName, creation: Creation) -> &mut PeerSession {
        let current = self.peers.get(node).map(|s| (s.creation, s.mine));
        match current {
            Some((c, _)) if c == creation => {}
            Some((_, mine)) => {
                self.down.remove(&(mine, node.clone()));
                self.peers
                    .insert(node.clone(), PeerSession::fresh(creation));
            }
            None => {
                self.trim(self.max.saturating_sub(1));
                let s = if self.forgot_any {
                    self.counter += 1;
                    PeerSession {
                        creation,
                        mine: self.counter,
                        heard: 0,
                        start: UNKNOWN_START,
                        acked: false,
                    }
                } else {
                    PeerSession::fresh(creation)
                };
                self.peers.insert(node.clone(), s);
            }
        }
        self.peers.get_mut(node).expect("just made")
    }

    /// This node lost `node`: a new session, not yet heard by the peer. `connected` says
    /// whether a lane to it stays open (one may have opened in the meantime).
    pub(super) fn lose(&mut self, node: &NodeName, connected: bool) {
        let Some(s) = self.peers.get_mut(node) else {
            return;
        };
        self.down.remove(&(s.mine, node.clone()));
        self.counter += 1;
        s.mine = self.counter;
        s.start = s.heard;
        s.acked = false;
        if !connected {
            self.down.insert((s.mine, node.clone()));
        }
        self.trim(self.max);
    }

    /// A lane to `node` opened: it is not forgotten while one is.
    pub(super) fn lane_up(&mut self, node: &NodeName) {
        if let Some(s) = self.peers.get(node) {
            self.down.remove(&(s.mine, node.clone()));
        }
    }

    /// Forgets the peers lost longest ago until at most `keep` are left (or none is lost).
    fn trim(&mut self, keep: usize) {
        while self.peers.len() > keep {
            let Some((_, node)) = self.down.pop_first() else {
                return;
            };
            self.peers.remove(&node);
            self.forgot_any = true;
            self.forgotten += 1;
        }
    }
}
