//! Identities: node names, node specs and channels, process ids, references and names.

mod node_name;
mod process;
mod spec;

pub use node_name::{NodeName, MAX_NODE_NAME_LEN};
pub use process::{
    Creation, Pid, ProcessName, Ref, RegisteredName, RemoteRef, MAX_PROCESS_NAME_LEN,
};
pub use spec::{
    ChannelName, ChannelOpts, NodeSpec, MAX_CHANNELS, MAX_CHANNEL_NAME_LEN, MAX_LISTEN_ADDRS,
    MAX_PARALLELISM,
};

/// Why an identifier or spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A node name is malformed.
    #[error("invalid node name {name:?}: {reason}")]
    NodeName {
        /// The offending name (truncated when long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A channel name is malformed.
    #[error("invalid channel name {name:?}: {reason}")]
    ChannelName {
        /// The offending name (truncated when long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A registered process name is malformed.
    #[error("invalid process name {name:?}: {reason}")]
    ProcessName {
        /// The offending name (truncated when long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A remote-reference URI is malformed.
    #[error("invalid remote reference {uri:?}: {reason}")]
    Uri {
        /// The offending URI (truncated when long).
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A node spec breaks one of its invariants.
    #[error("invalid node spec: {0}")]
    Spec(&'static str),
}
