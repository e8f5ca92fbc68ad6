//! Plumtree epidemic broadcast (Leitao, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS
//! 2007), one independent instance per registered handler.
//!
//! A [`BroadcastHandler`] owns the data: it gives every broadcast an id, says whether a
//! received one is new ([`BroadcastHandler::merge`]), whether an announced id is already known
//! ([`BroadcastHandler::is_stale`]), hands a payload back for a graft
//! ([`BroadcastHandler::graft`]) and runs anti-entropy sessions with a peer
//! ([`BroadcastHandler::exchange_start`] / [`BroadcastHandler::exchange_step`]). The
//! [`Plumtree`] state machine around it decides who gets what: eager push along one spanning
//! tree per root, lazy announcements ([`BroadcastBody::IHave`]) to the other neighbours batched
//! per lazy tick, [`BroadcastBody::Prune`] on duplicates and [`BroadcastBody::Graft`] when a
//! missing message's timer expires. The [`Engine`](crate::engine::Engine) owns one [`Plumtree`]
//! per handler, feeds it the overlay's broadcast members that are up, and routes its messages
//! on the handler's channel.
//!
//! Handlers are called synchronously by the engine: they must not block (a slow handler slows
//! the control plane of its node, not the network of other handlers' channels).

pub mod kv_map;
mod plumtree;
#[cfg(test)]
mod tests;

use std::any::Any;

use serde::{Deserialize, Serialize};

use crate::id::{ChannelName, NodeName};

pub use plumtree::{
    BroadcastStats, ExchangeInfo, Plumtree, PlumtreeConfig, PlumtreeOutput, PlumtreeTimer,
};

/// Longest handler name, in bytes.
pub const MAX_HANDLER_NAME_LEN: usize = 64;

/// Checks a handler name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
pub fn validate_handler_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_HANDLER_NAME_LEN
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
    {
        return Err(format!(
            "invalid broadcast handler name {:?}: 1 to 64 ASCII letters, digits, '_', '-' or '.'",
            name.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// Where a delivered broadcast came from, for handlers that want it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt<'a> {
    /// The neighbour that sent this copy (this node for a local broadcast).
    pub from: &'a NodeName,
    /// The node that broadcast it (the root of its tree).
    pub root: &'a NodeName,
    /// Hops from the root (0 at the root).
    pub round: u32,
}

/// What a handler answers to a graft (a neighbour asking for a payload it missed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraftReply {
    /// The payload to send.
    Payload(Vec<u8>),
    /// The id has been superseded; nothing need be sent.
    Stale,
    /// The handler does not have it (any more).
    Missing,
}

/// The data side of one broadcast: Partisan's `partisan_plumtree_broadcast_handler`.
///
/// Ids and payloads are opaque bytes the handler encodes as it likes. Every method is called
/// by the engine of the node that registered the handler, on its control-plane task: keep them
/// quick and never block.
pub trait BroadcastHandler: Send + 'static {
    /// The handler's name, unique on a node and the same on every node (1 to 64 ASCII letters,
    /// digits, `_`, `-`, `.`).
    fn name(&self) -> &str;

    /// The channel its broadcast and anti-entropy traffic goes on (the default channel if
    /// `None`). The channel must be configured on the node.
    fn channel(&self) -> Option<ChannelName> {
        None
    }

    /// Turns a message given to `broadcast` into the id and payload to spread. The local node
    /// then merges it like any received payload. `Err` refuses the broadcast with that reason.
    fn broadcast_data(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String>;

    /// A payload arrived (or was broadcast here). `true`: it is new, it has been delivered,
    /// and it is passed on; `false`: already seen or stale, the sender is pruned.
    fn merge(&mut self, id: &[u8], payload: &[u8], receipt: Receipt<'_>) -> bool;

    /// Whether the message `id` announced by a neighbour is already known (or superseded), so
    /// need not be grafted.
    fn is_stale(&self, id: &[u8]) -> bool;

    /// The payload of `id`, for a neighbour that missed it.
    fn graft(&self, id: &[u8]) -> GraftReply;

    /// Starts one anti-entropy session with `peer`: the first message to send it, or `None`
    /// when this handler does no anti-entropy.
    fn exchange_start(&mut self, _peer: &NodeName) -> Option<Vec<u8>> {
        None
    }

    /// A message of an anti-entropy session from `peer` (`initiated_here`: this node started
    /// the session): what to answer, and whether the session goes on.
    fn exchange_step(
        &mut self,
        _peer: &NodeName,
        _msg: &[u8],
        _initiated_here: bool,
    ) -> ExchangeStep {
        ExchangeStep::Finish(None)
    }

    /// The handler as `Any`, so its owner can read its state through the engine.
    fn as_any(&self) -> &dyn Any;

    /// The handler as mutable `Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A handler's answer to one message of an anti-entropy session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeStep {
    /// Send this and wait for the peer's answer.
    Continue(Vec<u8>),
    /// Send this (if anything) and end the session.
    Finish(Option<Vec<u8>>),
}

/// One announced message in an [`BroadcastBody::IHave`] batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The message id.
    pub id: Vec<u8>,
    /// Its root.
    pub root: NodeName,
    /// Hops from the root at the announcing node.
    pub round: u32,
}

/// A Plumtree protocol message between two nodes, for one handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastMsg {
    /// The handler it belongs to.
    pub handler: String,
    /// What it says.
    pub body: BroadcastBody,
}

/// What a [`BroadcastMsg`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BroadcastBody {
    /// Eager push of a payload (the paper's Gossip).
    Gossip {
        /// Message id.
        id: Vec<u8>,
        /// Payload.
        payload: Vec<u8>,
        /// The broadcasting node.
        root: NodeName,
        /// Hops from the root at the sender.
        round: u32,
    },
    /// Lazy push: ids the sender has, batched.
    IHave(Vec<Announcement>),
    /// The sender got a duplicate through this link (or, with `shortcut`, found a shorter
    /// path from `root`): move it to lazy for `root`'s tree.
    Prune {
        /// Tree root.
        root: NodeName,
        /// Part of the paper's optimisation: the change is for `root`'s own tree only.
        shortcut: bool,
    },
    /// The sender misses `id` (or, with `id` empty, takes this link as a shortcut from
    /// `root`): send it and move the sender to eager for `root`'s tree (with `id` empty, in
    /// `root`'s own tree only).
    Graft {
        /// Message id (empty: no payload wanted).
        id: Vec<u8>,
        /// Tree root.
        root: NodeName,
        /// Round of the announcement.
        round: u32,
    },
    /// A message of an anti-entropy session.
    Exchange {
        /// The session, numbered by its initiator.
        session: u64,
        /// Whether the initiator sent it.
        from_initiator: bool,
        /// Handler-defined content.
        data: Vec<u8>,
    },
}

impl BroadcastBody {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            BroadcastBody::Gossip { .. } => "gossip",
            BroadcastBody::IHave(_) => "ihave",
            BroadcastBody::Prune { .. } => "prune",
            BroadcastBody::Graft { .. } => "graft",
            BroadcastBody::Exchange { .. } => "exchange",
        }
    }
}

/// Which running exchanges [`Plumtree::cancel_exchanges`] cancels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeSelector {
    /// All of them.
    All,
    /// Those with this peer.
    Peer(NodeName),
}

/// Why a broadcast call was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    /// No handler of that name is registered on this node.
    #[error("no broadcast handler named {0:?} is registered on this node")]
    UnknownHandler(String),
    /// A handler of that name is already registered.
    #[error("a broadcast handler named {0:?} is already registered")]
    DuplicateHandler(String),
    /// The handler's name is not valid.
    #[error("{0}")]
    InvalidName(String),
    /// The handler's channel is not configured on this node.
    #[error("broadcast handler {handler:?} uses channel {channel:?}, which this node does not configure")]
    UnknownChannel {
        /// The handler.
        handler: String,
        /// Its channel.
        channel: String,
    },
    /// The handler refused the message.
    #[error("broadcast handler {handler:?} refused the message: {reason}")]
    Refused {
        /// The handler.
        handler: String,
        /// Its reason.
        reason: String,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}
