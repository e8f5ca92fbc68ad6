//! Membership as users see it: which members are up (a member with an open lane), and the
//! transitions between two looks.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::id::NodeName;

/// A change in which members are reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MembershipEvent {
    /// The node is a member and at least one lane to it is open.
    NodeUp(NodeName),
    /// The node was up and is not any more: its last lane went down, or it left or was
    /// removed.
    NodeDown(NodeName),
}

impl MembershipEvent {
    /// The node concerned.
    pub fn node(&self) -> &NodeName {
        match self {
            MembershipEvent::NodeUp(n) | MembershipEvent::NodeDown(n) => n,
        }
    }
}

/// Computes up/down transitions from members and connectivity.
#[derive(Debug, Default)]
pub(crate) struct UpTracker {
    up: BTreeSet<NodeName>,
}

impl UpTracker {
    /// Events turning the previous up set into `members ∩ connected` (without `me`): downs
    /// first, then ups, each in name order.
    pub(crate) fn update(
        &mut self,
        members: &[NodeName],
        me: &NodeName,
        connected: impl Fn(&NodeName) -> bool,
    ) -> Vec<MembershipEvent> {
        let now: BTreeSet<NodeName> = members
            .iter()
            .filter(|n| *n != me && connected(n))
            .cloned()
            .collect();
        let mut events: Vec<MembershipEvent> = self
            .up
            .difference(&now)
            .cloned()
            .map(MembershipEvent::NodeDown)
            .collect();
        events.extend(
            now.difference(&self.up)
                .cloned()
                .map(MembershipEvent::NodeUp),
        );
        self.up = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_means_member_and_connected() {
        let n = |s: &str| NodeName::new(&format!("{s}@h")).unwrap();
        let mut t = UpTracker::default();
        let members = vec![n("a"), n("b"), n("me")];
        let ev = t.update(&members, &n("me"), |x| *x == n("a"));
        assert_eq!(ev, vec![MembershipEvent::NodeUp(n("a"))]);
        let ev = t.update(&members, &n("me"), |_| true);
        assert_eq!(ev, vec![MembershipEvent::NodeUp(n("b"))]);
        let ev = t.update(&[n("b"), n("me")], &n("me"), |_| true);
        assert_eq!(ev, vec![MembershipEvent::NodeDown(n("a"))]);
        assert!(t.update(&[n("b"), n("me")], &n("me"), |_| true).is_empty());
    }
}
