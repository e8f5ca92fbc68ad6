//! Pluggable overlays: who connects to whom, and who the members are.
//!
//! Every overlay is a sans-IO state machine behind the [`Overlay`] trait. The driver (runtime or
//! simulator) feeds it commands (`join`, `leave`, ...), protocol messages from peers, connection
//! events and timer expiries; the overlay answers with [`OverlayOutput`]s: which peers to keep
//! connected ([`OverlayOutput::Connect`] / [`OverlayOutput::Disconnect`]), which protocol
//! messages to send, which timers to arm, and when its member set changed.
//!
//! Protocol messages are addressed to a [`NodeSpec`] so the driver can reach a node it is not
//! connected to (the paper's temporary connection, e.g. a shuffle reply); whether a peer stays
//! connected is decided only by `Connect`/`Disconnect`.

pub mod client_server;
pub mod full_mesh;
pub mod hyparview;
pub mod static_membership;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{Creation, NodeName, NodeSpec};
use crate::time::Instant;

pub use client_server::{ClientServer, CsMsg, Role};
pub use full_mesh::{FullMesh, FullMeshConfig, FullMeshMsg};
pub use hyparview::{HvMsg, HyParView, HyParViewConfig};
pub use static_membership::{StaticMembership, StaticMsg};

/// Which overlay a node runs. Part of the handshake: nodes running different overlays refuse
/// each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OverlayKind {
    /// Everyone connects to every member; membership is an add-wins CRDT map.
    FullMesh,
    /// HyParView partial views (active + passive).
    HyParView,
    /// Clients connect to servers, servers to everyone.
    ClientServer,
    /// Members come from configuration.
    Static,
}

impl OverlayKind {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlayKind::FullMesh => "full-mesh",
            OverlayKind::HyParView => "hyparview",
            OverlayKind::ClientServer => "client-server",
            OverlayKind::Static => "static",
        }
    }

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Option<OverlayKind> {
        Some(match s {
            "full-mesh" | "full_mesh" | "fullmesh" => OverlayKind::FullMesh,
            "hyparview" => OverlayKind::HyParView,
            "client-server" | "client_server" => OverlayKind::ClientServer,
            "static" => OverlayKind::Static,
            _ => return None,
        })
    }
}

impl fmt::Display for OverlayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest accepted tag (HyParView reservations, client/server role), in bytes.
pub const MAX_TAG_LEN: usize = 64;

/// A node's tag: 1 to 64 ASCII letters, digits, `_`, `-`, `.`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    /// Validates a tag.
    pub fn new(s: &str) -> Result<Tag, String> {
        if s.is_empty()
            || s.len() > MAX_TAG_LEN
            || !s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
        {
            return Err(format!(
                "invalid tag {s:?}: 1 to 64 ASCII letters, digits, '_', '-' or '.'"
            ));
        }
        Ok(Tag(s.to_string()))
    }

    /// The tag as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tag {
    type Error = String;
    fn try_from(s: String) -> Result<Tag, String> {
        Tag::new(&s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A peer as overlays exchange it: its spec, the creation it was seen with (0 if unknown) and
/// its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The node's spec.
    pub spec: NodeSpec,
    /// Creation the spec was seen with; 0 when unknown.
    pub creation: Creation,
    /// The node's tag, if any.
    pub tag: Option<Tag>,
}

impl PeerInfo {
    /// The node's name.
    pub fn name(&self) -> &NodeName {
        self.spec.name()
    }
}

/// A protocol message of one of the overlays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlayMsg {
    /// Full mesh.
    FullMesh(FullMeshMsg),
    /// HyParView.
    HyParView(HvMsg),
    /// Client-server.
    ClientServer(CsMsg),
    /// Static.
    Static(StaticMsg),
}

impl OverlayMsg {
    /// The overlay this message belongs to.
    pub fn kind(&self) -> OverlayKind {
        match self {
            OverlayMsg::FullMesh(_) => OverlayKind::FullMesh,
            OverlayMsg::HyParView(_) => OverlayKind::HyParView,
            OverlayMsg::ClientServer(_) => OverlayKind::ClientServer,
            OverlayMsg::Static(_) => OverlayKind::Static,
        }
    }
}

/// A timer an overlay arms. Arming a timer again replaces its previous deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OverlayTimer {
    /// Periodic anti-entropy (full mesh) or housekeeping.
    Periodic,
    /// Coalesced push of fresh membership changes (full mesh).
    Push,
    /// HyParView shuffle.
    Shuffle,
    /// HyParView random promotion / isolation check.
    Promotion,
}

/// What an overlay asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayOutput {
    /// Keep every lane to this node up (replaces a previously given spec of the same node).
    Connect(NodeSpec),
    /// Stop keeping this node connected (its queued messages are flushed first).
    Disconnect(NodeName),
    /// Deliver a protocol message, opening a temporary connection if none is up.
    Send {
        /// Destination.
        to: NodeSpec,
        /// The message.
        msg: OverlayMsg,
    },
    /// Call [`Overlay::on_timer`] with `timer` at `at`.
    SetTimer {
        /// Which timer.
        timer: OverlayTimer,
        /// When.
        at: Instant,
    },
    /// [`Overlay::members`] changed.
    MembersChanged,
}

/// Why an overlay refused a command or dropped a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// A message of another overlay, or one that contradicts the protocol.
    #[error("rejected {what}: {reason}")]
    Rejected {
        /// Which message.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A command that this overlay's configuration forbids (e.g. too many reservations).
    #[error("{0}")]
    Refused(String),
}

impl OverlayError {
    pub(crate) fn rejected(what: &'static str, reason: impl Into<String>) -> Self {
        OverlayError::Rejected {
            what,
            reason: reason.into(),
        }
    }
}

/// The interface every overlay implements. All methods take the current time; outputs are
/// appended to `out` in the order they must be carried out.
pub trait Overlay: Send + 'static {
    /// Which overlay this is.
    fn kind(&self) -> OverlayKind;

    /// The overlay as `Any`, so tools holding a `dyn Overlay` (the simulator's checks) can read
    /// the concrete state machine's own state.
    fn as_any(&self) -> &dyn std::any::Any;

    /// Arms the overlay's timers; called once before anything else.
    fn start(&mut self, now: Instant, out: &mut Vec<OverlayOutput>);

    /// Joins the cluster through `contact`, a node the driver has just reached.
    fn join(&mut self, contact: &PeerInfo, now: Instant, out: &mut Vec<OverlayOutput>);

    /// Leaves the cluster gracefully: peers are told at once, then every connection is dropped.
    fn leave(&mut self, now: Instant, out: &mut Vec<OverlayOutput>);

    /// Removes another node from the cluster.
    fn remove(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>);

    /// Replaces the membership with `specs` (joiners joined, leavers removed).
    fn update_members(&mut self, specs: &[PeerInfo], now: Instant, out: &mut Vec<OverlayOutput>);

    /// A protocol message from `from` (authenticated by the transport).
    fn on_message(
        &mut self,
        from: &PeerInfo,
        msg: OverlayMsg,
        now: Instant,
        out: &mut Vec<OverlayOutput>,
    ) -> Result<(), OverlayError>;

    /// The first lane to `peer` came up.
    fn on_peer_up(&mut self, peer: &PeerInfo, now: Instant, out: &mut Vec<OverlayOutput>);

    /// The last lane to `node` went down (failure, or a close by either side).
    fn on_peer_down(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>);

    /// A node could not be reached (dials failed; messages for it were dropped).
    fn on_unreachable(&mut self, node: &NodeName, now: Instant, out: &mut Vec<OverlayOutput>);

    /// A timer fired.
    fn on_timer(&mut self, timer: OverlayTimer, now: Instant, out: &mut Vec<OverlayOutput>);

    /// Member names, this node included while it is a member, sorted.
    fn members(&self) -> Vec<NodeName>;

    /// Specs of the members other than this node, sorted by name.
    fn member_specs(&self) -> Vec<NodeSpec>;

    /// Peers this overlay keeps connected (HyParView: the active view), sorted.
    fn active_view(&self) -> Vec<NodeName>;

    /// HyParView's passive view; empty for the other overlays.
    fn passive_view(&self) -> Vec<NodeName> {
        Vec::new()
    }

    /// Nodes that relay application messages for this one to nodes it is not connected to
    /// (client-server: a client's servers), sorted.
    fn relays(&self) -> Vec<NodeName> {
        Vec::new()
    }

    /// Reserves an active-view slot for a peer with `tag` (HyParView). Overlays that connect
    /// every member already keep a slot for everyone, so the reservation holds trivially.
    fn reserve(&mut self, _tag: Tag) -> Result<(), OverlayError> {
        Ok(())
    }
}
