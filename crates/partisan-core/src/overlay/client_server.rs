//! Client-server overlay: every node is a client or a server; clients connect to servers
//! only, servers connect to everyone. Messages between two clients are relayed by a server
//! (by the runtime's send path, not by this state machine).
//!
//! A node joins through any server: the server answers with the members the joiner must
//! connect to (a client gets the servers, a server gets everyone) and announces the joiner to
//! the other servers, which then greet it. A failed member stays a member and is redialed;
//! only `leave` and `remove` drop members.
//!
//! Every `period` (10 s by default) each member greets again every server it knows, and every
//! node it greeted that has not welcomed it yet: the contacts it joined through (until they
//! answer) and the nodes other members told it about (for [`GREET_PERIODS`] periods after the
//! last mention; servers mention every member in the answer to a server's greeting, so a node
//! some server knows keeps being greeted). A node that knows no server any more (the ones it
//! knew left) greets the contacts it ever joined through, every period, until one takes it
//! back. A lost Hello, Welcome or Announce is made good
//! within a period or two, and a server restarted with an empty member list relearns its
//! clients from their next greeting. A node that left tells its former members again every
//! period for [`GREET_PERIODS`] periods, and after that answers any greeting or new connection
//! from a node that still counts it a member, so a lost `Leaving` is made good too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Overlay, OverlayError, OverlayKind, OverlayMsg, OverlayOutput, OverlayTimer, PeerInfo,
};
use crate::id::{NodeName, NodeSpec};
use crate::time::Instant;

/// Most members a single client-server message may carry.
pub const MAX_MEMBERS_PER_MESSAGE: usize = 4096;

/// Role of a node in the client-server overlay (its tag: `client` or `server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Connects to servers only.
    Client,
    /// Connects to everyone, relays between clients.
    Server,
}

impl Role {
    /// The role a tag names.
    pub fn from_tag(tag: Option<&super::Tag>) -> Option<Role> {
        match tag.map(|t| t.as_str()) {
            Some("client") => Some(Role::Client),
            Some("server") => Some(Role::Server),
            _ => None,
        }
    }

    /// Whether a node of role `self` keeps a connection to one of role `other`.
    pub fn connects_to(self, other: Role) -> bool {
        self == Role::Server || other == Role::Server
    }
}

/// Messages of the client-server overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsMsg {
    /// "I am this role; add me." Answered by [`CsMsg::Welcome`] or [`CsMsg::Refused`].
    Hello {
        /// The sender's role.
        role: Role,
    },
    /// Accepts a Hello and lists the members the greeter should connect to.
    Welcome {
        /// The answering node's role.
        role: Role,
        /// Members to connect to, with their roles.
        members: Vec<(PeerInfo, Role)>,
    },
    /// A server tells another server about a node that joined it.
    Announce {
        /// The new member.
        peer: PeerInfo,
        /// Its role.
        role: Role,
    },
    /// Refuses a Hello (a client greeting a client).
    Refused {
        /// Why.
        reason: String,
    },
    /// The sender leaves the cluster.
    Leaving,
    /// The sender removed `node` from the cluster.
    Removed {
        /// The removed node.
        node: NodeName,
    },
}

fn cs(msg: CsMsg) -> OverlayMsg {
    OverlayMsg::ClientServer(msg)
}

/// Default interval between greetings of the known servers.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// Periods a node another member mentioned keeps being greeted without an answer.
pub const GREET_PERIODS: u32 = 6;

/// The client-server overlay.
pub struct ClientServer {
    local: PeerInfo,
    role: Role,
    period: Duration,
    members: BTreeMap<NodeName, (PeerInfo, Role)>,
    /// Nodes greeted that have not welcomed this node yet, with the periods left to greet them
    /// again (`u32::MAX`: a join contact, greeted until it answers).
    pending: BTreeMap<NodeName, (NodeSpec, u32)>,
    /// Every contact joined through since the last leave: greeted while no server is known.
    seeds: BTreeMap<NodeName, NodeSpec>,
    /// After a leave, the former members, with the periods left to tell them again.
    farewells: BTreeMap<NodeName, (NodeSpec, u32)>,
    left: bool,
}

impl ClientServer {
    /// A node of `role`, greeting its servers every [`DEFAULT_PERIOD`].
    pub fn new(local: PeerInfo, role: Role) -> Self {
        Self::with_period(local, role, DEFAULT_PERIOD)
    }

    /// A node of `role`, greeting its servers every `period`.
    pub fn with_period(local: PeerInfo, role: Role, period: Duration) -> Self {
        ClientServer {
            local,
            role,
            period: period.max(Duration::from_millis(1)),
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            seeds: BTreeMap::new(),
            farewells: BTreeMap::new(),
            left: false,
        }
    }

    /// Interval between greetings.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Role of a member.
    pub fn role_of(&self, node: &NodeName) -> Option<Role> {
        self.members.get(node).map(|(_, r)| *r)
    }

    /// Members that are servers, sorted.
    pub fn servers(&self) -> Vec<NodeName> {
        self.members
            .iter()
            .filter(|(_, (_, r))| *r == Role::Server)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn add(&mut self, peer: &PeerInfo, role: Role, out: &mut Vec<OverlayOutput>) -> bool {
        if peer.name() == self.local.name() || !self.role.connects_to(role) {
            return false;
        }
        let known = self.members.get(peer.name());
        let fresh = known.is_none();
        let newer = known.is_some_and(|(p, _)| peer.creation > p.creation);
        if fresh || newer {
            self.members
                .insert(peer.name().clone(), (peer.clone(), role));
            out.push(OverlayOutput::Connect(peer.spec.clone()));
            out.push(OverlayOutput::MembersChanged);
        }
        fresh
    }

    fn drop_member(&mut self, node: &NodeName, out: &mut Vec<OverlayOutput>) -> bool {
        if self.members.remove(node).is_some() {
            out.push(OverlayOutput::Disconnect(node.clone()));
            out.push(OverlayOutput::MembersChanged);
            true
        } else {
            false
        }
    }

    /// Greets a node another member told us about, and again every period for
    /// [`GREET_PERIODS`] periods unless it answers (a join contact keeps its endless budget).
    fn greet_mentioned(&mut self, to: &NodeSpec, out: &mut Vec<OverlayOutput>) {
        let entry = self
            .pending
            .entry(to.name().clone())
            .or_insert_with(|| (to.clone(), 0));
        entry.0 = to.clone();
        entry.1 = entry.1.max(GREET_PERIODS);
        self.greet(to, out);
    }

    fn greet(&self, to: &NodeSpec, out: &mut Vec<OverlayOutput>) {
        out.push(OverlayOutput::Send {
            to: to.clone(),
            msg: cs(CsMsg::Hello { role: self.role }),
        });
    }

    fn farewell(to: &NodeSpec, out: &mut Vec<OverlayOutput>) {
        out.push(OverlayOutput::Send {
            to: to.clone(),
            msg: cs(CsMsg::Leaving),
        });
    }
}

impl Overlay for ClientServer {
    fn kind(&self) -> OverlayKind {
        OverlayKind::ClientServer
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn start(&mut self, now: Instant, out: &mut Vec<OverlayOutput>) {
        out.push(OverlayOutput::MembersChanged);
        out.push(OverlayOutput::SetTimer {
            timer: OverlayTimer::Periodic,
            at: now + self.period,
        });
    }

    fn join(&mut self, contact: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        if self.left {
            self.left = false;
            self.farewells.clear();
            out.push(OverlayOutput::MembersChanged);
        }
        if contact.name() != self.local.name() {
            self.pending
                .insert(contact.name().clone(), (contact.spec.clone(), u32::MAX));
            self.seeds
                .insert(contact.name().clone(), contact.spec.clone());
        }
        self.greet(&contact.spec, out);
    }

    fn leave(&mut self, _now: Instant, out: &mut Vec<OverlayOutput>) {
        for (p, _) in self.members.values() {
            Self::farewell(&p.spec, out);
        }
        // Told again: the members, and the nodes greeted that may have added this one.
        self.farewells = self
            .members
            .iter()
            .map(|(n, (p, _))| (n, &p.spec))
            .chain(self.pending.iter().map(|(n, (spec, _))| (n, spec)))
            .map(|(n, spec)| (n.clone(), (spec.clone(), GREET_PERIODS)))
            .collect();
        let names: Vec<NodeName> = self.members.keys().cloned().collect();
        for n in names {
            self.drop_member(&n, out);
        }
        self.left = true;
        self.pending.clear();
        self.seeds.clear();
        out.push(OverlayOutput::MembersChanged);
    }

    fn remove(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>) {
        if node == self.local.name() {
            return self.leave(now, out);
        }
        let removed_spec = self.members.get(node).map(|(p, _)| p.spec.clone());
        if self.drop_member(node, out) {
            for (p, r) in self.members.values() {
                if *r == Role::Server {
                    out.push(OverlayOutput::Send {
                        to: p.spec.clone(),
                        msg: cs(CsMsg::Removed { node: node.clone() }),
                    });
                }
            }
            if let Some(spec) = removed_spec {
                out.push(OverlayOutput::Send {
                    to: spec,
                    msg: cs(CsMsg::Removed { node: node.clone() }),
                });
            }
        }
    }

    fn update_members(&mut self, specs: &[PeerInfo], now: Instant, out: &mut Vec<OverlayOutput>) {
        let wanted: BTreeMap<&NodeName, &PeerInfo> = specs
            .iter()
            .filter(|p| p.name() != self.local.name())
            .map(|p| (p.name(), p))
            .collect();
        let gone: Vec<NodeName> = self
            .members
            .keys()
            .filter(|n| !wanted.contains_key(n))
            .cloned()
            .collect();
        for n in gone {
            self.remove(&n, now, out);
        }
        for p in wanted.values() {
            if !self.members.contains_key(p.name()) {
                self.greet(&p.spec, out);
            }
        }
    }

    fn on_message(
        &mut self,
        from: &PeerInfo,
        msg: OverlayMsg,
        _now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) -> Result<(), OverlayError> {
        let OverlayMsg::ClientServer(msg) = msg else {
            return Err(OverlayError::rejected(
                "overlay message",
                format!("a {} message sent to a client-server node", msg.kind()),
            ));
        };
        if self.left {
            // A node greeting this one missed its Leaving.
            if matches!(msg, CsMsg::Hello { .. }) {
                Self::farewell(&from.spec, out);
            }
            return Ok(());
        }
        match msg {
            CsMsg::Hello { role } => {
                if !self.role.connects_to(role) {
                    out.push(OverlayOutput::Send {
                        to: from.spec.clone(),
                        msg: cs(CsMsg::Refused {
                            reason: "clients do not connect to clients; join a server".into(),
                        }),
                    });
                    self.pending.remove(from.name());
                    return Err(OverlayError::rejected(
                        "hello",
                        format!("{} is a client greeting a client", from.name()),
                    ));
                }
                let members: Vec<(PeerInfo, Role)> = self
                    .members
                    .values()
                    .filter(|(p, r)| p.name() != from.name() && role.connects_to(*r))
                    .take(MAX_MEMBERS_PER_MESSAGE)
                    .cloned()
                    .collect();
                self.pending.remove(from.name());
                let fresh = self.add(from, role, out);
                out.push(OverlayOutput::Send {
                    to: from.spec.clone(),
                    msg: cs(CsMsg::Welcome {
                        role: self.role,
                        members,
                    }),
                });
                if fresh && self.role == Role::Server {
                    for (p, r) in self.members.values() {
                        if *r == Role::Server && p.name() != from.name() {
                            out.push(OverlayOutput::Send {
                                to: p.spec.clone(),
                                msg: cs(CsMsg::Announce {
                                    peer: from.clone(),
                                    role,
                                }),
                            });
                        }
                    }
                }
            }
            CsMsg::Welcome { role, members } => {
                if members.len() > MAX_MEMBERS_PER_MESSAGE {
                    return Err(OverlayError::rejected("welcome", "too many members"));
                }
                self.pending.remove(from.name());
                self.add(from, role, out);
                for (p, r) in &members {
                    if self.role.connects_to(*r)
                        && p.name() != self.local.name()
                        && !self.members.contains_key(p.name())
                    {
                        self.greet_mentioned(&p.spec, out);
                    }
                }
            }
            CsMsg::Announce { peer, role } => {
                if self.role != Role::Server {
                    return Err(OverlayError::rejected("announce", "sent to a client"));
                }
                if peer.name() != self.local.name() && !self.members.contains_key(peer.name()) {
                    self.greet_mentioned(&peer.spec, out);
                }
                let _ = role;
            }
            CsMsg::Refused { reason } => {
                self.pending.remove(from.name());
                return Err(OverlayError::rejected(
                    "hello",
                    format!("{} refused us: {reason}", from.name()),
                ));
            }
            CsMsg::Leaving => {
                self.pending.remove(from.name());
                self.drop_member(from.name(), out);
            }
            CsMsg::Removed { node } => {
                if &node == self.local.name() {
                    // Removed from the cluster by a peer: drop everyone, stay alone.
                    let names: Vec<NodeName> = self.members.keys().cloned().collect();
                    for n in names {
                        self.drop_member(&n, out);
                    }
                } else {
                    self.drop_member(&node, out);
                }
            }
        }
        Ok(())
    }

    fn on_peer_up(&mut self, peer: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        // A node reaching this one after it left (it may have missed the Leaving).
        if self.left {
            Self::farewell(&peer.spec, out);
        }
    }

    fn on_peer_down(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_unreachable(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_timer(&mut self, timer: OverlayTimer, now: Instant, out: &mut Vec<OverlayOutput>) {
        if timer != OverlayTimer::Periodic {
            return;
        }
        out.push(OverlayOutput::SetTimer {
            timer: OverlayTimer::Periodic,
            at: now + self.period,
        });
        if self.left {
            for (spec, _) in self.farewells.values() {
                Self::farewell(spec, out);
            }
            self.farewells.retain(|_, (_, left)| {
                *left = left.saturating_sub(1);
                *left > 0
            });
            return;
        }
        let mut greet: BTreeMap<&NodeName, &NodeSpec> = self
            .members
            .iter()
            .filter(|(_, (_, r))| *r == Role::Server)
            .map(|(n, (p, _))| (n, &p.spec))
            .collect();
        let alone = greet.is_empty();
        for (n, (spec, _)) in &self.pending {
            greet.entry(n).or_insert(spec);
        }
        if alone {
            for (n, spec) in &self.seeds {
                greet.entry(n).or_insert(spec);
            }
        }
        for spec in greet.values() {
            self.greet(spec, out);
        }
        self.pending.retain(|_, (_, left)| {
            *left = left.saturating_sub(1);
            *left > 0
        });
    }

    fn members(&self) -> Vec<NodeName> {
        let mut v: Vec<NodeName> = self.members.keys().cloned().collect();
        if !self.left {
            v.push(self.local.name().clone());
        }
        v.sort();
        v
    }

    fn member_specs(&self) -> Vec<NodeSpec> {
        self.members.values().map(|(p, _)| p.spec.clone()).collect()
    }

    fn active_view(&self) -> Vec<NodeName> {
        self.members.keys().cloned().collect()
    }

    fn relays(&self) -> Vec<NodeName> {
        match self.role {
            Role::Client => self.servers(),
            Role::Server => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CsMsg, DEFAULT_PERIOD, GREET_PERIODS};
    use crate::overlay::OverlayMsg;
    use crate::testing::{Network, Setup};

    #[test]
    fn clients_reach_every_server_through_one_and_never_each_other() {
        // Servers n0, n1; clients n2, n3. n1 joins n0; each client joins n0 only.
        let seed = 7;
        println!("seed {seed}");
        let mut net = Network::new(Setup::client_server(4, seed, 2));
        let quiet = Duration::from_secs(5);
        net.join(1, 0);
        assert!(net.run_until_quiet(quiet));
        net.join(2, 0);
        net.join(3, 0);
        // Greetings cross: a frame put on the connection that loses a simultaneous-dial
        // tie-break may be lost (the network drops frames reaching an end that is closing),
        // which the next periodic greeting repairs. So wait up to two periods.
        let joined =
            |net: &Network| (0..4).all(|i| net.member_ids(i).len() == 3 + usize::from(i < 2));
        assert!(net.step_until(DEFAULT_PERIOD * 2, joined));
        assert_eq!(net.member_ids(0), [0, 1, 2, 3]);
        assert_eq!(net.member_ids(1), [0, 1, 2, 3]);
        assert_eq!(net.member_ids(2), [0, 1, 2]);
        assert_eq!(net.member_ids(3), [0, 1, 3]);
        for client in [2, 3] {
            assert!(net.linked(client, 0) && net.linked(client, 1));
        }
        // A client greeting a client is refused and nothing changes; the connection made for
        // the join lapses.
        net.join(2, 3);
        assert!(net.run_until_quiet(quiet));
        assert_eq!(net.member_ids(2), [0, 1, 2]);
        assert_eq!(net.member_ids(3), [0, 1, 3]);
        assert!(net.rejected > 0);
        net.run_for(net.setup().join_ttl * 2);
        assert!(!net.linked(2, 3) && !net.linked(3, 2));
        // A leaving client disappears everywhere.
        net.leave(3);
        assert!(net.run_until_quiet(quiet));
        assert_eq!(net.member_ids(0), [0, 1, 2]);
        assert_eq!(net.member_ids(1), [0, 1, 2]);
        assert_eq!(net.member_ids(2), [0, 1, 2]);
    }

    #[test]
    fn a_lost_leaving_is_told_again() {
        // Servers n0, n1, clients n2, n3, all joined.
        let seed = 5;
        println!("seed {seed}");
        let mut net = Network::new(Setup::client_server(4, seed, 2));
        net.join(1, 0);
        net.join(2, 0);
        net.join(3, 0);
        let joined =
            |net: &Network| (0..4).all(|i| net.member_ids(i).len() == 3 + usize::from(i < 2));
        assert!(net.step_until(DEFAULT_PERIOD * 2, joined));
        assert!(net.run_until_quiet(DEFAULT_PERIOD));
        let leaving = |from: u32| {
            move |f: &crate::testing::InFlight| {
                f.from == from && f.msg == OverlayMsg::ClientServer(CsMsg::Leaving)
            }
        };
        // Client n3 leaves and its Leaving is lost: the servers drop it at n3's next period,
        // when n3 tells them again.
        net.leave(3);
        assert_eq!(net.drop_in_flight_where(leaving(3)), 2);
        net.run_for(DEFAULT_PERIOD / 10);
        assert_eq!(net.member_ids(0), [0, 1, 2, 3], "the Leaving was lost");
        let dropped =
            |net: &Network| net.member_ids(0) == [0, 1, 2] && net.member_ids(1) == [0, 1, 2];
        assert!(net.step_until(DEFAULT_PERIOD * 2, dropped));
        // Server n1 leaves, and every Leaving it sends is lost until its farewells are spent:
        // it answers the next greeting of each node that still counts it a server.
        net.leave(1);
        let until = net.now + DEFAULT_PERIOD * (GREET_PERIODS + 1);
        let mut lost = 0;
        while net.now < until && net.step().is_some() {
            lost += net.drop_in_flight_where(leaving(1));
        }
        assert!(lost > 2 * GREET_PERIODS as usize, "{lost} Leaving lost");
        assert_eq!(net.member_ids(0), [0, 1, 2]);
        assert_eq!(net.member_ids(2), [0, 1, 2]);
        let gone = |net: &Network| net.member_ids(0) == [0, 2] && net.member_ids(2) == [0, 2];
        assert!(net.step_until(DEFAULT_PERIOD * 2, gone));
        assert!(net.member_ids(1).is_empty());
    }
}
