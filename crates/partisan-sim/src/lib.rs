//! Deterministic simulator for partisan.
//!
//! Thousands of nodes running the real `partisan-core` engine (planner, overlay, held
//! messages, keepalive, timers: the code the runtime drives) in one process, over the shared
//! in-memory network of `partisan_core::testing`, in virtual time, with one printed seed that
//! derives every node's RNG and every network and fault decision. The same seed gives the same
//! trace. Adding a protocol is adding an experiment module that drives the network.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod full_mesh_exp;
pub mod graph;
pub mod hyparview_exp;
pub mod overlays;
pub mod plot;
pub mod plumtree_exp;
pub mod progress;
pub mod swarm;
pub mod swarm_families;
pub mod swarm_processes;

pub use overlays::OverlayChoice;
pub use partisan_core::testing::{
    derive_seed, NetConfig, Network, NodeId, Setup, Stepped, TraceHash,
};
