//! Peer liveness probing (SWIM-style): how a silently vanished host is found in seconds, at a
//! cost per node that does not grow with the cluster.
//!
//! Each period a node probes one connected peer, taken in a shuffled round-robin order, unless
//! that peer was heard from during the last period (any frame on any lane counts). A probe is
//! a keepalive ping on the peer's control lane; a peer that sends nothing back within
//! `timeout` is pinged again, up to `attempts` times, and then taken for gone: every lane to
//! it is cut, and the connection planner redials it as for any lost peer.
//!
//! Suspicion spreads: at the first unanswered ping, the prober tells `fanout` random connected
//! peers ([`LivenessMsg::Suspect`]); each passes the rumour on once to `fanout` others and
//! probes the suspect itself if it is connected to it. No node acts on a rumour alone: each
//! cuts its lanes only after its own pings went unanswered, so a node whose own network is
//! broken cannot make the cluster drop a healthy peer. A false rumour costs each node a few
//! frames and one ping.
//!
//! The state machine lives in the engine (`engine/liveness.rs`); this module holds the
//! settings and the wire message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{Creation, NodeName};

/// Settings of liveness probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// One peer is probed per period (fewer if peers are heard from anyway).
    pub period: Duration,
    /// Time to wait for a peer to answer a ping before pinging again.
    pub timeout: Duration,
    /// Unanswered pings after which the peer is taken for gone.
    pub attempts: u32,
    /// Peers told of a suspicion, by its first prober and by each node passing it on.
    pub fanout: usize,
}

impl Default for Liveness {
    /// A probe a second, three pings a second and a half apart, suspicion told to three
    /// peers: a vanished host is cut by the first node to probe it 4.5 s after that probe.
    fn default() -> Self {
        Liveness {
            period: Duration::from_secs(1),
            timeout: Duration::from_millis(1500),
            attempts: 3,
            fanout: 3,
        }
    }
}

impl Liveness {
    /// How long a peer stays connected after it fell silent, once a node probes it:
    /// `attempts * timeout`.
    pub fn confirmation_time(&self) -> Duration {
        self.timeout * self.attempts
    }

    /// Checks the settings, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.period.is_zero() {
            return Err("liveness period must be positive".into());
        }
        if self.timeout.is_zero() {
            return Err("liveness timeout must be positive".into());
        }
        if self.attempts == 0 {
            return Err("liveness attempts must be at least 1".into());
        }
        if self.fanout > 64 {
            return Err("liveness fanout must be at most 64".into());
        }
        Ok(())
    }
}

/// A liveness message between the engines of two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LivenessMsg {
    /// `node` (in its run `creation`) did not answer a ping: probe it yourself.
    Suspect {
        /// The suspect.
        node: NodeName,
        /// Its run, as the suspecting node knows it.
        creation: Creation,
    },
}
