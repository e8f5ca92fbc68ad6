//! Errors returned by the runtime's public API.

use std::net::SocketAddr;

use partisan_core::id::{ChannelName, IdError, NodeName, Pid, ProcessName, RemoteRef};

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

/// Why a connect did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No lane came up within the timeout. The target stays wanted and is still redialed
    /// with backoff; call [`crate::Node::disconnect`] to stop.
    #[error("no connection within {0:?}; still retrying in the background")]
    Timeout(std::time::Duration),
    /// The target answered in a way retrying cannot fix (it is this node, or another node).
    #[error("gave up: {0}")]
    GaveUp(String),
    /// The address is one of this node's own.
    #[error("{0} is this node's own address")]
    SelfConnect(SocketAddr),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
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
