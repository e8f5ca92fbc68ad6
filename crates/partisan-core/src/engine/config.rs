//! Settings of an engine.

use std::time::Duration;

use crate::connection_plan::Backoff;
use crate::wire::handshake::Identity;

/// Keepalive of every lane (Partisan's `connection_ping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Time without inbound traffic before a lane is probed.
    pub idle: Duration,
    /// Time to wait for an answer before probing again.
    pub timeout: Duration,
    /// Unanswered probes after which the lane is closed as dead.
    pub max_attempts: u32,
}

impl Default for Keepalive {
    /// Partisan's defaults: probe after 20 s idle, every 10 s, give up after 5 (about 70 s).
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
            max_attempts: 5,
        }
    }
}

impl Keepalive {
    /// How long a lane whose peer vanished stays up: `idle + max_attempts * timeout`.
    pub fn detection_time(&self) -> Duration {
        self.idle + self.timeout * self.max_attempts
    }
}

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How this node presents itself in handshakes (spec, creation, overlay, tag, frame limit).
    pub identity: Identity,
    /// Redial backoff.
    pub backoff: Backoff,
    /// Keepalive of each idle lane (Partisan's `connection_ping`); `None` (the default, as
    /// peer liveness probing finds vanished hosts sooner at a constant cost) leaves a lane up
    /// until the transport or liveness probing reports its peer gone.
    pub keepalive: Option<Keepalive>,
    /// Peer liveness probing (SWIM-style, see [`crate::liveness`]); `None` disables it.
    pub liveness: Option<crate::liveness::Liveness>,
    /// How long a temporary connection (made to deliver overlay messages) lasts after its last
    /// use.
    pub transient_ttl: Duration,
    /// How long a node reached through `join` stays connected while the overlay decides whether
    /// to keep it.
    pub join_ttl: Duration,
    /// Overlay messages held per peer while a connection to it is made.
    pub pending_per_peer: usize,
    /// Most monitors plus links across nodes the node holds (both directions); further ones
    /// fire at once with `noconnection` and are counted.
    pub max_signal_entries: usize,
    /// Most peers whose signal session numbers the node keeps (see
    /// [`SignalTable::new`](crate::signals::SignalTable::new)); past that, the peers lost
    /// longest ago are forgotten and counted.
    pub max_peer_sessions: usize,
    /// A member unreachable this long (every lane down, dials failing) is removed from the
    /// membership (`Overlay::remove`: cluster-wide on full mesh). `None` (the default, as in
    /// Partisan) keeps it a member, redialed with backoff up to `backoff.outage_max`.
    pub down_after: Option<Duration>,
}

impl EngineConfig {
    /// Defaults for everything but the identity.
    pub fn new(identity: Identity) -> Self {
        EngineConfig {
            identity,
            backoff: Backoff::default(),
            keepalive: None,
            liveness: Some(crate::liveness::Liveness::default()),
            transient_ttl: Duration::from_secs(10),
            join_ttl: Duration::from_secs(30),
            pending_per_peer: 256,
            max_signal_entries: 1 << 20,
            max_peer_sessions: crate::signals::DEFAULT_MAX_PEER_SESSIONS,
            down_after: None,
        }
    }
}
