//! The lanes (established connections) an engine knows of, and each one's keepalive state.

use std::collections::{BTreeMap, BTreeSet};

use crate::connection_plan::ConnId;
use crate::id::{ChannelName, Creation, NodeName};
use crate::time::Instant;

/// Where a lane is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneState {
    /// Carries traffic both ways.
    Open,
    /// The engine asked for it to be closed, or a send on it found it closed; it is no longer
    /// used and waits for the driver to report it down.
    Closing,
}

/// One established connection, as the engine sees it.
#[derive(Clone, Debug)]
pub struct Lane {
    /// The peer.
    pub peer: NodeName,
    /// The peer's creation, as sent in its handshake.
    pub creation: Creation,
    /// Channel of the connection.
    pub channel: ChannelName,
    /// Lane within the channel.
    pub lane: u16,
    /// Whether this node dialed it (else the peer did).
    pub dialed: bool,
    /// Open or closing.
    pub state: LaneState,
    /// When it came up.
    pub opened: Instant,
    /// Keepalive probes sent since traffic was last seen (0: none outstanding).
    pub(crate) probes: u32,
    /// When the last probe was sent.
    pub(crate) last_probe: Instant,
    /// Whether a process signal was put on it: if it breaks, that signal may be lost.
    pub(crate) carried_signals: bool,
    /// Whether the engine cut it (no flush, no goodbye).
    pub(crate) cut: bool,
}

impl Lane {
    /// Whether the lane is open.
    pub fn is_open(&self) -> bool {
        self.state == LaneState::Open
    }
}

/// Lanes by connection and by peer.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    by_conn: BTreeMap<ConnId, Lane>,
    by_peer: BTreeMap<NodeName, BTreeSet<ConnId>>,
}

impl Lanes {
    /// Records a lane that just came up; returns whether it is the peer's first open lane.
    pub(crate) fn insert(&mut self, conn: ConnId, lane: Lane) -> bool {
        let first = !self.is_connected(&lane.peer);
        self.by_peer
            .entry(lane.peer.clone())
            .or_default()
            .insert(conn);
        self.by_conn.insert(conn, lane);
        first
    }

    /// Marks a lane closing; returns its peer if that was the peer's last open lane.
    pub(crate) fn set_closing(&mut self, conn: ConnId) -> Option<NodeName> {
        let lane = self.by_conn.get_mut(&conn)?;
        if lane.state == LaneState::Closing {
            return None;
        }
        lane.state = LaneState::Closing;
        let peer = lane.peer.clone();
        (!self.is_connected(&peer)).then_some(peer)
    }

    /// Forgets a lane that went down; returns it and whether its peer has no open lane left
    /// (and had one before).
    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<(Lane, bool)> {
        let lane = self.by_conn.remove(&conn)?;
        if let Some(set) = self.by_peer.get_mut(&lane.peer) {
            set.remove(&conn);
            if set.is_empty() {
                self.by_peer.remove(&lane.peer);
            }
        }
        let last = lane.is_open() && !self.is_connected(&lane.peer);
        Some((lane, last))
    }

    pub(crate) fn get(&self, conn: ConnId) -> Option<&Lane> {
        self.by_conn.get(&conn)
    }

    pub(crate) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Lane> {
        self.by_conn.get_mut(&conn)
    }

    /// Open lanes to `peer`, by connection id.
    fn open_of<'a>(&'a self, peer: &NodeName) -> impl Iterator<Item = (ConnId, &'a Lane)> + 'a {
        self.by_peer
            .get(peer)
            .into_iter()
            .flatten()
            .map(|c| (*c, &self.by_conn[c]))
            .filter(|(_, l)| l.is_open())
    }

    /// Whether at least one lane to `peer` is open.
    /// The open lanes to `peer`.
    pub(crate) fn open_conns(&self, peer: &NodeName) -> Vec<ConnId> {
        self.open_of(peer).map(|(c, _)| c).collect()
    }

    pub(crate) fn is_connected(&self, peer: &NodeName) -> bool {
        self.open_of(peer).next().is_some()
    }

    /// Whether any lane to `peer` is known, open or closing.
    pub(crate) fn has_any(&self, peer: &NodeName) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// Peers with any lane (open or closing), sorted.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &NodeName> {
        self.by_peer.keys()
    }

    /// Peers with at least one open lane, sorted.
    pub(crate) fn connected(&self) -> impl Iterator<Item = &NodeName> {
        self.by_peer.keys().filter(|p| self.is_connected(p))
    }

    /// The open lane to carry a process signal to `peer`: the default channel's first lane (so
    /// a message sent there before a process ended arrives before its `Down`), else the
    /// control route.
    pub(crate) fn signal_route(&self, peer: &NodeName) -> Option<ConnId> {
        self.open_of(peer)
            .filter(|(_, l)| l.channel.is_default())
            .min_by_key(|(c, l)| (l.lane, *c))
            .map(|(c, _)| c)
            .or_else(|| self.control_route(peer))
    }

    /// The open lane to carry a control frame to `peer`: the membership channel's first lane,
    /// else another membership lane, else a lane of the default channel, else any open lane.
    pub(crate) fn control_route(&self, peer: &NodeName) -> Option<ConnId> {
        let rank = |l: &Lane| {
            if l.channel.is_membership() {
                u32::from(l.lane > 0)
            } else if l.channel.is_default() {
                2
            } else {
                3
            }
        };
        self.open_of(peer)
            .min_by_key(|(c, l)| (rank(l), *c))
            .map(|(c, _)| c)
    }

    /// The open lane to `peer` on `channel` with the lowest lane index, for traffic that
    /// belongs on that channel.
    pub(crate) fn channel_route(&self, peer: &NodeName, channel: &ChannelName) -> Option<ConnId> {
        self.open_of(peer)
            .filter(|(_, l)| &l.channel == channel)
            .min_by_key(|(c, l)| (l.lane, *c))
            .map(|(c, _)| c)
    }

    /// Every lane, by connection id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &Lane)> {
        self.by_conn.iter().map(|(c, l)| (*c, l))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_conn.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}
