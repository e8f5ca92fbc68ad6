//! Callers waiting for a connect or a join to reach its node, by the token they gave.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::id::{NodeName, NodeSpec};

use super::Waiter;

/// Waiting connects and pending joins. A join key present with no waiter is still a pending
/// join (a configured seed): the overlay joins through the node once it is reached.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    pub(crate) connect_addr: BTreeMap<SocketAddr, Vec<Waiter>>,
    pub(crate) connect_node: BTreeMap<NodeName, Vec<Waiter>>,
    pub(crate) join_addr: BTreeMap<SocketAddr, Vec<Waiter>>,
    /// Pending joins by contact node, with the contact's spec (to dial it again).
    pub(crate) join_node: BTreeMap<NodeName, (NodeSpec, Vec<Waiter>)>,
}

impl Waiters {
    /// Everyone waiting on `addr`, connects and joins, and the join it was (if any) dropped.
    pub(crate) fn take_addr(&mut self, addr: &SocketAddr) -> Vec<Waiter> {
        let mut w = self.connect_addr.remove(addr).unwrap_or_default();
        w.extend(self.join_addr.remove(addr).unwrap_or_default());
        w
    }

    /// Everyone waiting on `node`, connects and joins, and the join it was (if any) dropped.
    pub(crate) fn take_node(&mut self, node: &NodeName) -> Vec<Waiter> {
        let mut w = self.connect_node.remove(node).unwrap_or_default();
        w.extend(
            self.join_node
                .remove(node)
                .map(|(_, v)| v)
                .unwrap_or_default(),
        );
        w
    }

    /// Every waiter, every pending join dropped.
    pub(crate) fn take_all(&mut self) -> Vec<Waiter> {
        let mut w = Vec::new();
        for (_, v) in std::mem::take(&mut self.connect_addr) {
            w.extend(v);
        }
        for (_, v) in std::mem::take(&mut self.connect_node) {
            w.extend(v);
        }
        w.extend(self.take_joins());
        w
    }

    /// Waiters of pending joins, every pending join dropped.
    pub(crate) fn take_joins(&mut self) -> Vec<Waiter> {
        let mut w = Vec::new();
        for (_, v) in std::mem::take(&mut self.join_addr) {
            w.extend(v);
        }
        for (_, (_, v)) in std::mem::take(&mut self.join_node) {
            w.extend(v);
        }
        w
    }
}
