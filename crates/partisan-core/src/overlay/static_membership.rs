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
    use super::*;
    use crate::overlay::test_net::peer;

    #[test]
    fn configured_members_are_connected_and_leavers_dropped() {
        let me = peer("a", 1);
        let b = peer("b", 2);
        let c = peer("c", 3);
        let mut s = StaticMembership::new(me.clone(), vec![b.spec.clone(), me.spec.clone()]);
        let mut out = vec![];
        s.start(Instant::ZERO, &mut out);
        assert_eq!(out[0], OverlayOutput::Connect(b.spec.clone()));
        assert_eq!(s.members().len(), 2);
        out.clear();
        s.join(&c, Instant::ZERO, &mut out);
        assert!(out.contains(&OverlayOutput::Connect(c.spec.clone())));
        assert_eq!(s.members().len(), 3);
        out.clear();
        s.on_message(
            &b,
            OverlayMsg::Static(StaticMsg::Leaving),
            Instant::ZERO,
            &mut out,
        )
        .unwrap();
        assert!(out.contains(&OverlayOutput::Disconnect(b.name().clone())));
        assert_eq!(s.members(), vec![me.name().clone(), c.name().clone()]);
        // A failure is not a leave.
        s.on_peer_down(c.name(), Instant::ZERO, &mut out);
        assert_eq!(s.members().len(), 2);
        assert!(s
            .on_message(
                &c,
                OverlayMsg::ClientServer(crate::overlay::CsMsg::Leaving),
                Instant::ZERO,
                &mut out
            )
            .is_err());
    }
}
