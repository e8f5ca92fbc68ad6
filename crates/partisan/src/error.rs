//! Errors returned by the runtime's public API.

use std::net::SocketAddr;

use partisan_core::connection_plan::DialFailure;
use partisan_core::id::{ChannelName, IdError, NodeName, Pid, ProcessName, RemoteRef};
use partisan_core::overlay::OverlayKind;

use crate::config::ConfigError;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The `creation_file` could not be read, parsed or rewritten.
    #[error("creation_file {path}: {reason}")]
    CreationFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A broadcast handler could not be registered (invalid or duplicate name, channel not
    /// configured on the node).
    #[error("broadcast handler {handler:?}")]
    Broadcast {
        /// The handler's name.
        handler: String,
        /// Why.
        source: partisan_core::broadcast::BroadcastError,
    },
}

/// Why a message was not sent. A send never panics and never loses a message silently on the
/// sending node: either it was queued (local mailbox or connection) or one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No lane of the channel (or of the default channel, with fallback) is up to that node.
    #[error("not connected to {0}")]
    NotConnected(NodeName),
    /// The lane the partition key maps to is down (per-key order forbids another lane).
    #[error("lane {lane} of channel {channel} to {node} is down")]
    LaneDown {
        /// Destination node.
        node: NodeName,
        /// Channel.
        channel: ChannelName,
        /// Lane the key maps to.
        lane: u16,
    },
    /// The channel exists neither here nor (with fallback off) at the peer.
    #[error("unknown channel {0}")]
    UnknownChannel(ChannelName),
    /// The destination pid or reference belongs to another incarnation (creation) of its node.
    #[error("{0} belongs to another run of its node")]
    Stale(RemoteRef),
    /// No local process has this pid, alias or name.
    #[error("no local process {0}")]
    NoProcess(String),
    /// The message is larger than the frame limit.
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The lane's queue is full (only from non-waiting sends).
    #[error("send queue to {0} is full")]
    Full(NodeName),
    /// This node is shutting down or stopped.
    #[error("connection or node closed")]
    Closed,
    /// A typed payload could not be encoded.
    #[error("cannot encode payload: {0}")]
    Encode(String),
}

/// Why a connect or a join did not complete.
///
/// A target never reached that fails in a way retrying cannot help ([`ConnectError::BadCookie`],
/// [`ConnectError::NameInUse`], [`ConnectError::OverlayMismatch`],
/// [`ConnectError::VersionMismatch`], [`ConnectError::WrongNode`]) is answered at once and no
/// longer dialed. Other failures are retried with backoff in the background; the call returns
/// the latest of them when its timeout elapses ([`ConnectError::is_retrying`]). A member reached
/// before is redialed whatever the failure, since it may come back fixed (a restart).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The peer holds another cookie: the cookie challenge failed.
    #[error("the peer holds another cookie (the cookie challenge failed); not retrying")]
    BadCookie,
    /// Another node already runs under this node's name.
    #[error(
        "another node is already running as {0} (node names must be unique in a cluster); \
         not retrying"
    )]
    NameInUse(NodeName),
    /// The peer runs another overlay: the two nodes cannot form one cluster.
    #[error(
        "this node runs the {ours} overlay and the peer runs {theirs}: they cannot form one \
         cluster; not retrying"
    )]
    OverlayMismatch {
        /// This node's overlay.
        ours: OverlayKind,
        /// The peer's overlay.
        theirs: OverlayKind,
    },
    /// The peer speaks another version of the wire protocol.
    #[error("this node speaks protocol version {ours} and the peer speaks {theirs}; not retrying")]
    VersionMismatch {
        /// This node's version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// Another node than the one named answered at its address.
    #[error(
        "another node than {expected} answered at its address{}; not retrying",
        answered(got)
    )]
    WrongNode {
        /// The node dialed for.
        expected: NodeName,
        /// The node that answered, when it said (it may refuse before naming itself).
        got: Option<NodeName>,
    },
    /// No connection could be made within the timeout: the latest dial failed with this i/o
    /// error (connection refused, reset, no route). Still retrying in the background; call
    /// [`crate::Node::cancel_connect`] or [`crate::Node::disconnect`] to stop.
    #[error("cannot reach the peer: {detail}; still retrying in the background")]
    Unreachable {
        /// The operating system's classification of the latest failure.
        kind: std::io::ErrorKind,
        /// What happened.
        detail: String,
    },
    /// Nothing answered within the timeout (no dial failed, none completed). Still retrying in
    /// the background.
    #[error(
        "no connection within {0:?}: the peer did not answer; still retrying in the background"
    )]
    TimedOut(std::time::Duration),
    /// The peer refused the latest attempt for a passing reason (it was shutting down, it had
    /// no such lane, ...). Still retrying in the background.
    #[error("{0}; still retrying in the background")]
    Refused(String),
    /// The target cannot be connected to for another reason, said in the text (the attempt was
    /// cancelled, the node left the cluster, the address reaches this node, ...).
    #[error("gave up: {0}")]
    GaveUp(String),
    /// The address is one of this node's own.
    #[error("{0} is this node's own address")]
    SelfConnect(SocketAddr),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// " (N answered)", when the node that answered is known.
fn answered(got: &Option<NodeName>) -> String {
    got.as_ref()
        .map(|n| format!(" ({n} answered)"))
        .unwrap_or_default()
}

impl ConnectError {
    /// Whether the target is still dialed in the background (the error only says what the
    /// latest attempt met).
    pub fn is_retrying(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. } | ConnectError::TimedOut(_) | ConnectError::Refused(_)
        )
    }

    /// The error a dial failure means to a caller; `timeout` is the caller's, for a failure
    /// that was only silence.
    pub(crate) fn from_dial(f: DialFailure, timeout: std::time::Duration) -> ConnectError {
        match f {
            DialFailure::BadCookie => ConnectError::BadCookie,
            DialFailure::NameInUse(n) => ConnectError::NameInUse(n),
            DialFailure::OverlayMismatch { ours, theirs } => {
                ConnectError::OverlayMismatch { ours, theirs }
            }
            DialFailure::VersionMismatch { ours, theirs } => {
                ConnectError::VersionMismatch { ours, theirs }
            }
            DialFailure::WrongNode { expected, got } => ConnectError::WrongNode { expected, got },
            DialFailure::Unreachable { kind, detail } => ConnectError::Unreachable { kind, detail },
            DialFailure::TimedOut => ConnectError::TimedOut(timeout),
            f @ DialFailure::SelfConnect => ConnectError::GaveUp(f.to_string()),
            f @ (DialFailure::Refused { .. } | DialFailure::Protocol(_)) => {
                if f.is_permanent() {
                    ConnectError::GaveUp(f.to_string())
                } else {
                    ConnectError::Refused(f.to_string())
                }
            }
        }
    }
}

/// Why a name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another live process holds the name.
    #[error("name {0} is already registered")]
    Taken(ProcessName),
    /// The pid is not a live local process.
    #[error("{0} is not a live local process")]
    NoProcess(Pid),
    /// The name is malformed.
    #[error(transparent)]
    Invalid(#[from] IdError),
}
