//! What the runtime itself puts in a mailbox: `Down`s of monitors, exit signals of trapping
//! processes, and node up/down notices of node monitors.

use partisan_core::id::{ChannelName, NodeName, Pid, Ref, RemoteRef};
pub use partisan_core::signals::ExitReason;

/// A message from the runtime rather than from a process ([`crate::Envelope::signal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A monitored process ended, did not exist, or its node was lost.
    Down(Down),
    /// An exit signal, delivered as a message because the process traps exits.
    Exit(ExitSignal),
    /// A monitored node came up (a member with a lane open; for a channel-scoped monitor, a
    /// lane of that channel).
    NodeUp {
        /// The node.
        node: NodeName,
        /// The channel the monitor is scoped to, if any.
        channel: Option<ChannelName>,
    },
    /// A monitored node went down.
    NodeDown {
        /// The node.
        node: NodeName,
        /// The channel the monitor is scoped to, if any.
        channel: Option<ChannelName>,
        /// Why: [`ExitReason::NoConnection`] (its last lane went down, it left or was removed,
        /// or it was not up when the monitor was made).
        reason: ExitReason,
    },
}

/// The one notice a monitor gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The monitor's reference, as [`crate::Process::monitor`] returned it.
    pub monitor: Ref,
    /// What was monitored, as given (a pid, or a registered name).
    pub target: RemoteRef,
    /// The process's exit reason, [`ExitReason::NoProc`] if there was no such process, or
    /// [`ExitReason::NoConnection`] if its node was (or became) unreachable.
    pub reason: ExitReason,
}

/// An exit signal received by a process that traps exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitSignal {
    /// The sending (or linked, ended) process; `None` for a signal from a node itself.
    pub from: Option<Pid>,
    /// The reason.
    pub reason: ExitReason,
    /// Whether it came over a link (the linked process ended or was lost), rather than from
    /// an explicit [`crate::Node::exit`] / [`crate::Process::exit`].
    pub link: bool,
}
