//! Peer liveness probing (see [`crate::liveness`]): one probe per period in a shuffled
//! round-robin over connected peers, pings repeated until answered or given up, suspicion
//! passed on to a few peers, lanes cut only on this node's own evidence.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;

use crate::connection_plan::CloseReason;
use crate::id::{Creation, NodeName};
use crate::liveness::{Liveness, LivenessMsg};
use crate::time::Instant;
use crate::wire::{Control, Message};

use super::{Engine, Event, LaneActivity, Output, TimerKey};

/// How long a rumour is remembered (so it is passed on once).
const RUMOUR_MEMORY: std::time::Duration = std::time::Duration::from_secs(30);
/// Most rumours remembered; past that the oldest are forgotten first.
const MAX_RUMOURS: usize = 4096;

/// A probe of one peer under way.
#[derive(Debug, Clone)]
struct Probe {
    /// The run of the peer probed.
    creation: Creation,
    /// When the first ping went out: anything heard from the peer since answers it.
    since: Instant,
    /// Pings sent.
    pings: u32,
    /// Whether the suspicion was passed on.
    told: bool,
}

/// Probing state of one engine.
#[derive(Debug, Default)]
pub(crate) struct LivenessState {
    /// Peers still to probe in this round, last first.
    order: Vec<NodeName>,
    probes: BTreeMap<NodeName, Probe>,
    /// Rumours seen, with when they are forgotten.
    rumours: BTreeMap<(NodeName, Creation), Instant>,
    rumours_by_time: BTreeSet<(Instant, NodeName, Creation)>,
    next_ping: u64,
}

impl Engine {
    /// Arms the first probing tick (when probing is on).
    pub(super) fn start_liveness(&mut self, now: Instant) {
        if let Some(l) = self.cfg.liveness {
            self.timers.arm(TimerKey::Liveness, now + l.period);
        }
    }

    /// The probing tick: probe the next peer in the round unless it spoke lately.
    pub(super) fn liveness_tick(&mut self, now: Instant, activity: &dyn LaneActivity) {
        let Some(l) = self.cfg.liveness else {
            return;
        };
        self.timers.arm(TimerKey::Liveness, now + l.period);
        if self.shutdown.is_some() {
            return;
        }
        let mut rebuilt = false;
        loop {
            let Some(peer) = self.live.order.pop() else {
                if rebuilt {
                    return;
                }
                rebuilt = true;
                let mut peers: Vec<NodeName> = self.lanes.connected().cloned().collect();
                peers.shuffle(&mut self.rng);
                self.live.order = peers;
                continue;
            };
            if !self.lanes.is_connected(&peer) || self.live.probes.contains_key(&peer) {
                continue;
            }
            let heard = self.last_heard(&peer, activity);
            if heard.is_some_and(|t| t + l.period > now) {
                // Spoke within the period: alive, no probe needed this time.
                return;
            }
            self.start_probe(&peer, now, l);
            return;
        }
    }

    /// When anything was last received from `peer` on any open lane (a lane's opening counts).
    fn last_heard(&self, peer: &NodeName, activity: &dyn LaneActivity) -> Option<Instant> {
        self.lanes
            .open_conns(peer)
            .into_iter()
            .filter_map(|c| {
                Some(super::keepalive::last_heard(
                    c,
                    self.lanes.get(c)?,
                    activity,
                ))
            })
            .max()
    }

    fn start_probe(&mut self, peer: &NodeName, now: Instant, l: Liveness) {
        let Some(creation) = self.identities.get(peer).map(|i| i.creation) else {
            return;
        };
        if !self.ping(peer) {
            return;
        }
        self.live.probes.insert(
            peer.clone(),
            Probe {
                creation,
                since: now,
                pings: 1,
                told: false,
            },
        );
        self.timers
            .arm(TimerKey::Probe(peer.clone()), now + l.timeout);
    }

    /// Pings `peer` on its control lane; false when it has none open.
    fn ping(&mut self, peer: &NodeName) -> bool {
        let Some(conn) = self.lanes.control_route(peer) else {
            return false;
        };
        self.live.next_ping += 1;
        self.stats.liveness_pings += 1;
        self.outputs.push_back(Output::Transmit {
            conn,
            msg: Message::Ping(self.live.next_ping),
        });
        true
    }

    /// A probe's wait is over: the peer answered, or is pinged again, or is taken for gone.
    pub(super) fn probe_check(
        &mut self,
        peer: &NodeName,
        now: Instant,
        activity: &dyn LaneActivity,
    ) {
        let Some(l) = self.cfg.liveness else {
            return;
        };
        let Some(probe) = self.live.probes.get(peer).cloned() else {
            return;
        };
        let current = self.identities.get(peer).map(|i| i.creation) == Some(probe.creation);
        if !self.lanes.is_connected(peer) || !current || self.shutdown.is_some() {
            self.live.probes.remove(peer);
            return;
        }
        if self
            .last_heard(peer, activity)
            .is_some_and(|t| t >= probe.since)
        {
            self.live.probes.remove(peer);
            return;
        }
        if probe.pings < l.attempts {
            if !probe.told && self.first_hearing(peer, probe.creation, now) {
                self.tell_suspect(peer, probe.creation, None, l);
            }
            self.ping(peer);
            if let Some(p) = self.live.probes.get_mut(peer) {
                p.pings += 1;
                p.told = true;
            }
            self.timers
                .arm(TimerKey::Probe(peer.clone()), now + l.timeout);
            return;
        }
        self.live.probes.remove(peer);
        self.stats.liveness_failures += 1;
        self.events.push_back(Event::Unresponsive {
            node: peer.clone(),
            after: now.saturating_since(probe.since),
        });
        for conn in self.lanes.open_conns(peer) {
            self.close(conn, CloseReason::KeepaliveTimeout);
        }
    }

    /// Passes a suspicion on to `fanout` random connected peers other than the suspect and
    /// `from` (who told this node), remembering it so it is passed on once.
    fn tell_suspect(
        &mut self,
        node: &NodeName,
        creation: Creation,
        from: Option<&NodeName>,
        l: Liveness,
    ) {
        let mut peers: Vec<NodeName> = self
            .lanes
            .connected()
            .filter(|p| *p != node && Some(*p) != from)
            .cloned()
            .collect();
        peers.shuffle(&mut self.rng);
        peers.truncate(l.fanout);
        for p in peers {
            let Some(conn) = self.lanes.control_route(&p) else {
                continue;
            };
            self.stats.liveness_rumours_sent += 1;
            self.outputs.push_back(Output::Transmit {
                conn,
                msg: Message::Control(Control::Liveness(LivenessMsg::Suspect {
                    node: node.clone(),
                    creation,
                })),
            });
        }
    }

    /// Whether the rumour about `node`'s run `creation` is new here (and remembers it).
    fn first_hearing(&mut self, node: &NodeName, creation: Creation, now: Instant) -> bool {
        while let Some((at, n, c)) = self.live.rumours_by_time.first().cloned() {
            if at > now && self.live.rumours.len() < MAX_RUMOURS {
                break;
            }
            self.live.rumours_by_time.pop_first();
            self.live.rumours.remove(&(n, c));
        }
        let key = (node.clone(), creation);
        if self.live.rumours.contains_key(&key) {
            return false;
        }
        let until = now + RUMOUR_MEMORY;
        self.live.rumours.insert(key, until);
        self.live
            .rumours_by_time
            .insert((until, node.clone(), creation));
        true
    }

    /// A liveness message from `from`.
    pub(super) fn liveness_message(&mut self, from: &NodeName, msg: LivenessMsg, now: Instant) {
        let Some(l) = self.cfg.liveness else {
            return;
        };
        match msg {
            LivenessMsg::Suspect { node, creation } => {
                self.stats.liveness_rumours_received += 1;
                if &node == self.local.name() || !self.first_hearing(&node, creation, now) {
                    return;
                }
                self.tell_suspect(&node, creation, Some(from), l);
                let current = self.identities.get(&node).map(|i| i.creation) == Some(creation);
                if current
                    && self.lanes.is_connected(&node)
                    && !self.live.probes.contains_key(&node)
                {
                    self.start_probe(&node, now, l);
                }
            }
        }
    }
}
