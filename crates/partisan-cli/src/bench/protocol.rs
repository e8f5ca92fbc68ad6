//! Control messages between the benchmark driver and its peer process (postcard-encoded,
//! carried on their own channel so they never queue behind the measured traffic).

use serde::{Deserialize, Serialize};

/// Registered name of the peer's control process.
pub const CTL_NAME: &str = "bench_ctl";
/// Channel carrying control messages.
pub const CTL_CHANNEL: &str = "bench_ctl";
/// Channel carrying the head-of-line stream unless it shares the probe's channel.
pub const BULK_CHANNEL: &str = "bulk";

/// What the driver asks the peer's control process.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Spawn a process that sends every message back to its sender on `channel`. It announces
    /// itself to the requester with [`Reply::Ready`] (so the requester learns its pid).
    Echo {
        /// Channel the answers go on.
        channel: String,
    },
    /// Spawn a process that counts what it receives into the `counter` set, announced the same
    /// way.
    Sink {
        /// Which counters it adds to.
        counter: CounterSet,
    },
    /// Answer with [`Reply::Counts`].
    Counts,
}

/// Which counters a sink adds to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum CounterSet {
    /// One-way messages.
    Oneway,
    /// The head-of-line stream.
    Stream,
}

/// What the peer answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// A spawned process is ready; its pid is the message's sender.
    Ready,
    /// Counters at one moment of the peer's clock.
    Counts(Counts),
}

/// Messages and payload bytes received by the peer's sinks, cumulative.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counts {
    /// One-way messages.
    pub msgs: u64,
    /// One-way payload bytes.
    pub bytes: u64,
    /// Stream messages.
    pub stream_msgs: u64,
    /// Stream payload bytes.
    pub stream_bytes: u64,
    /// When the counters were read: nanoseconds since the peer started.
    pub at_ns: u64,
}

impl Counts {
    /// Seconds between two readings.
    pub fn secs_since(&self, earlier: &Counts) -> f64 {
        self.at_ns.saturating_sub(earlier.at_ns) as f64 / 1e9
    }
}
