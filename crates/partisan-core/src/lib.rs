//! Sans-IO protocol engine of partisan.
//!
//! Everything here is plain data and state machines: no async runtime, no sockets, no clock
//! reads and no global randomness. Drivers (the `partisan` runtime and the simulator) feed
//! inputs with the current [`time::Instant`] and carry out the outputs. Iterated collections
//! are ordered, so the same inputs and seed always give the same outputs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod broadcast;
pub mod connection_plan;
pub mod dial_failure;
pub mod engine;
pub mod id;
pub mod liveness;
pub mod membership;
pub mod overlay;
pub mod signals;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod wire;

pub use bytes;
