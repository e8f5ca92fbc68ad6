//! Static overlay: the members come from configuration (and explicit joins); the node keeps a
//! connection to every one of them.
//!
//! A node that leaves tells its members (`Leaving`), and tells them again every
//! [`FAREWELL_PERIOD`] for [`FAREWELLS`] periods, then answers with it any node that connects
//! to it while it is out (one that missed it, or restarted with a configuration that lists
//! it): a lost `Leaving` is made good.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Overlay, OverlayError, OverlayKind, OverlayMsg, OverlayOutput, OverlayTimer, PeerInfo,
};
use crate::id::{NodeName, NodeSpec};
use crate::time::Instant;

/// Messages of the static overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaticMsg {
    /// The sender leaves the cluster: drop it from the member list.
    Leaving,
}

/// Interval between the repeats of a `Leaving`.
pub const FAREWELL_PERIOD: Duration = Duration::from_secs(10);

/// Times a `Leaving` is repeated after a leave.
pub const FAREWELLS: u32 = 6;

/// The static overlay. Membership changes only by configuration, `join`, `remove`,
/// `update_members` and peers that announce they leave; a member that fails stays a member and
/// is redialed.
pub struct StaticMembership {
    local: PeerInfo,
    members: BTreeMap<NodeName, NodeSpec>,
    /// After a leave, the former members, with the times left to tell them again.
    farewells: BTreeMap<NodeName, (NodeSpec, u32)>,
    left: bool,
}

impl StaticMembership {
    /// A static overlay for `local` with the configured members (the local node is ignored if
    /// listed).
    pub fn new(local: PeerInfo, configured: Vec<NodeSpec>) -> Self {
        let members = configured
            .into_iter()
            .filter(|s| s.name() != local.name())
            .map(|s| (s.name().clone(), s))
            .collect();
        StaticMembership {
            local,
            members,
            farewells: BTreeMap::new(),
            left: false,
        }
    }

    fn farewell(to: &NodeSpec, out: &mut Vec<OverlayOutput>) {
        out.push(OverlayOutput::Send {
            to: to.clone(),
            msg: OverlayMsg::Static(StaticMsg::Leaving),
        });
    }

    fn add(&mut self, spec: &NodeSpec, out: &mut Vec<OverlayOutput>) {
        if spec.name() == self.local.name() {
            return;
        }
        let changed = self.members.get(spec.name()) != Some(spec);
        let new = !self.members.contains_key(spec.name());
        if changed {
            self.members.insert(spec.name().clone(), spec.clone());
            out.push(OverlayOutput::Connect(spec.clone()));
        }
        if new {
            out.push(OverlayOutput::MembersChanged);
        }
    }

    fn drop_member(&mut self, node: &NodeName, out: &mut Vec<OverlayOutput>) {
        if self.members.remove(node).is_some() {
            out.push(OverlayOutput::Disconnect(node.clone()));
            out.push(OverlayOutput::MembersChanged);
        }
    }
}

impl Overlay for StaticMembership {
    fn kind(&self) -> OverlayKind {
        OverlayKind::Static
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn start(&mut self, _now: Instant, out: &mut Vec<OverlayOutput>) {
        for spec in self.members.values() {
            out.push(OverlayOutput::Connect(spec.clone()));
        }
        out.push(OverlayOutput::MembersChanged);
    }

    fn join(&mut self, contact: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        if self.left {
            self.left = false;
            self.farewells.clear();
            out.push(OverlayOutput::MembersChanged);
        }
        self.add(&contact.spec, out);
    }

    fn leave(&mut self, now: Instant, out: &mut Vec<OverlayOutput>) {
        for spec in self.members.values() {
            Self::farewell(spec, out);
        }
        self.farewells = self
            .members
            .iter()
            .map(|(n, spec)| (n.clone(), (spec.clone(), FAREWELLS)))
            .collect();
        out.push(OverlayOutput::SetTimer {
            timer: OverlayTimer::Periodic,
            at: now + FAREWELL_PERIOD,
        });
        let names: Vec<NodeName> = self.members.keys().cloned().collect();
        for n in names {
            self.drop_member(&n, out);
        }
        self.left = true;
        out.push(OverlayOutput::MembersChanged);
    }

    fn remove(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>) {
        if node == self.local.name() {
            return self.leave(now, out);
        }
        self.drop_member(node, out);
    }

    fn update_members(&mut self, specs: &[PeerInfo], _now: Instant, out: &mut Vec<OverlayOutput>) {
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
            self.drop_member(&n, out);
        }
        for p in wanted.values() {
            self.add(&p.spec, out);
        }
    }

    fn on_message(
        &mut self,
        from: &PeerInfo,
        msg: OverlayMsg,
        _now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) -> Result<(), OverlayError> {
        match msg {
            OverlayMsg::Static(StaticMsg::Leaving) => {
                self.drop_member(from.name(), out);
                Ok(())
            }
            other => Err(OverlayError::rejected(
                "overlay message",
                format!("a {} message sent to a static node", other.kind()),
            )),
        }
    }

    fn on_peer_up(&mut self, peer: &PeerInfo, _now: Instant, out: &mut Vec<OverlayOutput>) {
        if self.left {
            Self::farewell(&peer.spec, out);
        }
    }

    fn on_peer_down(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_unreachable(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_timer(&mut self, timer: OverlayTimer, now: Instant, out: &mut Vec<OverlayOutput>) {
        if timer != OverlayTimer::Periodic || !self.left {
            return;
        }
        for (spec, _) in self.farewells.values() {
            Self::farewell(spec, out);
        }
        self.farewells.retain(|_, (_, left)| {
            *left = left.saturating_sub(1);
            *left > 0
        });
        if !self.farewells.is_empty() {
            out.push(OverlayOutput::SetTimer {
                timer: OverlayTimer::Periodic,
                at: now + FAREWELL_PERIOD,
            });
        }
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
        self.members.values().cloned().collect()
    }

    fn active_view(&self) -> Vec<NodeName> {
        self.members.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::overlay::CsMsg;
    use crate::testing::{node_addr, node_name, Network, NodeId, Setup};

    fn spec(i: NodeId) -> NodeSpec {
        NodeSpec::new(node_name(i), vec![node_addr(i)], Default::default()).unwrap()
    }

    #[test]
    fn configured_members_are_connected_and_leavers_dropped() {
        // n0 is configured with n1 and itself, n1 with n0, n2 with nobody.
        let seed = 11;
        println!("seed {seed}");
        let mut net = Network::new(Setup::new(
            3,
            seed,
            Arc::new(|i, info: &PeerInfo, _| {
                let configured = match i {
                    0 => vec![spec(1), info.spec.clone()],
                    1 => vec![spec(0)],
                    _ => vec![],
                };
                Box::new(StaticMembership::new(info.clone(), configured)) as Box<dyn Overlay>
            }),
        ));
        assert!(net.run_until_quiet(Duration::from_secs(5)));
        assert!(net.linked(0, 1) && net.linked(1, 0));
        assert_eq!(net.member_ids(0), [0, 1]);
        // A join adds the contact and connects it.
        net.join(0, 2);
        assert!(net.run_until_quiet(Duration::from_secs(5)));
        assert_eq!(net.member_ids(0), [0, 1, 2]);
        assert!(net.linked(0, 2));
        // A member that leaves is dropped and disconnected.
        net.leave(1);
        assert!(net.run_until_quiet(Duration::from_secs(5)));
        assert_eq!(net.member_ids(0), [0, 2]);
        assert!(net.member_ids(1).is_empty());
        assert!(!net.linked(0, 1) && !net.linked(1, 0));
        // A failure is not a leave: the member stays and is redialed once it is back.
        net.crash(2);
        net.run_for(Duration::from_secs(10));
        assert_eq!(net.member_ids(0), [0, 2]);
        assert!(!net.linked(0, 2));
        net.restart(2);
        assert!(net.step_until(Duration::from_secs(60), |net| net.linked(0, 2)));
        assert_eq!(net.member_ids(0), [0, 2]);
        // Another overlay's message is rejected and changes nothing.
        assert_eq!(net.rejected, 0);
        assert!(net.inject(2, 0, OverlayMsg::ClientServer(CsMsg::Leaving)));
        assert_eq!(net.rejected, 1);
        assert_eq!(net.member_ids(0), [0, 2]);
    }

    #[test]
    fn a_lost_leaving_is_told_again_and_to_whoever_connects_later() {
        let seed = 13;
        println!("seed {seed}");
        let mut net = Network::new(Setup::static_members(3, seed));
        assert!(net.step_until(Duration::from_secs(10), |net| {
            net.linked(0, 1) && net.linked(0, 2) && net.linked(1, 2)
        }));
        assert!(net.run_until_quiet(Duration::from_secs(5)));
        // n1 leaves; its Leaving to n0 is lost. n0 drops it when n1 tells it again.
        net.leave(1);
        let lost = net.drop_in_flight_where(|f| {
            f.from == 1 && f.to == 0 && f.msg == OverlayMsg::Static(StaticMsg::Leaving)
        });
        assert_eq!(lost, 1);
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.member_ids(0), [0, 1, 2], "the Leaving was lost");
        assert_eq!(net.member_ids(2), [0, 2]);
        assert!(net.step_until(FAREWELL_PERIOD * 2, |net| net.member_ids(0) == [0, 2]));
        // Its farewells spent, n1 still tells a node that connects to it: n2 restarts with
        // a configuration that lists n1, dials it, and drops it.
        net.run_for(FAREWELL_PERIOD * (FAREWELLS + 1));
        net.crash(2);
        net.restart(2);
        assert!(net.step_until(Duration::from_secs(10), |net| net.member_ids(2) == [0, 2]));
        assert!(net.run_until_quiet(Duration::from_secs(10)));
        assert_eq!(net.member_ids(2), [0, 2]);
        assert!(net.member_ids(1).is_empty());
        assert!(!net.linked(1, 2) && !net.linked(2, 1));
    }
}
