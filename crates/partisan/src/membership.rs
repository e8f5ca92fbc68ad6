//! Membership as users see it: a snapshot readable without locks, and up/down events (the
//! engine's [`MembershipEvent`]).

use partisan_core::id::{NodeName, NodeSpec};

pub use partisan_core::engine::MembershipEvent;

/// The overlay's view at one moment, published by the driver after every change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub(crate) members: Vec<NodeName>,
    pub(crate) member_specs: Vec<NodeSpec>,
    pub(crate) active: Vec<NodeName>,
    pub(crate) passive: Vec<NodeName>,
    /// Nodes that relay for this one (client-server: a client's servers), sorted.
    pub(crate) relays: Vec<NodeName>,
    /// Peers the Plumtrees spread broadcasts to (the overlay's broadcast members that are up),
    /// sorted.
    pub(crate) broadcast_members: Vec<NodeName>,
    /// Members whose every lane is down and that could not be dialed since, sorted.
    pub(crate) unreachable: Vec<NodeName>,
}
