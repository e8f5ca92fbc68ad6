//! Static overlay: the members come from configuration (and explicit joins); the node keeps a
//! connection to every one of them.

use std::collections::BTreeMap;

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

/// The static overlay. Membership changes only by configuration, `join`, `remove`,
/// `update_members` and peers that announce they leave; a member that fails stays a member and
/// is redialed.
pub struct StaticMembership {
    local: PeerInfo,
    members: BTreeMap<NodeName, NodeSpec>,
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
            left: false,
        }
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
            out.push(OverlayOutput::MembersChanged);
        }
        self.add(&contact.spec, out);
    }

    fn leave(&mut self, _now: Instant, out: &mut Vec<OverlayOutput>) {
        for spec in self.members.values() {
            out.push(OverlayOutput::Send {
                to: spec.clone(),
                msg: OverlayMsg::Static(StaticMsg::Leaving),
            });
        }
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

    fn on_peer_up(&mut self, _peer: &PeerInfo, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_peer_down(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_unreachable(&mut self, _node: &NodeName, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

    fn on_timer(&mut self, _timer: OverlayTimer, _now: Instant, _out: &mut Vec<OverlayOutput>) {}

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
}
