//! Deterministic simulator for partisan.
//!
//! Thousands of nodes running the real `partisan-core` state machines in one process, with
//! virtual time, one event queue ordered by (time, sequence), and one printed seed that derives
//! every node's RNG and every network and fault decision. The same seed gives the same trace
//! (see [`trace::TraceHash`]). Adding a protocol is adding an experiment module that drives the
//! [`engine::Sim`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod full_mesh_exp;
pub mod graph;
pub mod hyparview_exp;
pub mod plot;
pub mod progress;
pub mod swarm;
pub mod trace;
