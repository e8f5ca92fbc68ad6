//! Plumtree broadcast as users see it: handlers registered on the [`NodeBuilder`], broadcasts,
//! reads of a handler's trees, exchanges and state, and the replicated key-value map ([`Kv`]).
//!
//! The protocol runs in the node's engine (`partisan_core::broadcast`): one Plumtree per
//! handler over the overlay's broadcast members, on the handler's channel. Every call here
//! either reads a snapshot the driver publishes (lock-free: [`Node::broadcast_members`],
//! [`Node::broadcast_stats`]) or is one command to the driver, answered once the engine has
//! handled it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use partisan_core::broadcast::kv_map::{self, KvConfig, KvMap, KV_HANDLER};
use partisan_core::broadcast::{
    validate_handler_name, BroadcastError, BroadcastHandler, ExchangeInfo, ExchangeSelector,
    PlumtreeConfig,
};
use partisan_core::engine::Engine;
use partisan_core::id::{ChannelName, NodeName};
use tokio::sync::oneshot;

use crate::driver::DriverCmd;
use crate::node::Node;
use crate::stats::BroadcastSnapshot;

/// Makes a fresh handler for a run of the node named by the argument.
type MakeHandler = Arc<dyn Fn(&NodeName) -> Box<dyn BroadcastHandler> + Send + Sync>;

/// A handler to register when the node starts (see
/// [`NodeBuilder::broadcast_handler`](crate::NodeBuilder::broadcast_handler)).
#[derive(Clone)]
pub(crate) struct Registration {
    pub(crate) make: MakeHandler,
    pub(crate) cfg: PlumtreeConfig,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Registration {
    pub(crate) fn new<H, F>(make: F, cfg: PlumtreeConfig) -> Self
    where
        H: BroadcastHandler,
        F: Fn(&NodeName) -> H + Send + Sync + 'static,
    {
        Registration {
            make: Arc::new(move |n: &NodeName| Box::new(make(n)) as Box<dyn BroadcastHandler>),
            cfg,
        }
    }
}

/// A handler made for one run, with its settings.
pub(crate) type Handler = (Box<dyn BroadcastHandler>, PlumtreeConfig);

/// Makes the handlers of one run and checks them as the engine will (name, uniqueness,
/// channel), before the node binds anything.
pub(crate) fn make_handlers(
    regs: &[Registration],
    node: &NodeName,
    channels: &BTreeSet<ChannelName>,
) -> Result<Vec<Handler>, crate::StartError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(regs.len());
    for r in regs {
        let h = (r.make)(node);
        let name = h.name().to_string();
        let fail = |source| crate::StartError::Broadcast {
            handler: name.clone(),
            source,
        };
        validate_handler_name(&name).map_err(|e| fail(BroadcastError::InvalidName(e)))?;
        if !names.insert(name.clone()) {
            return Err(fail(BroadcastError::DuplicateHandler(name.clone())));
        }
        let channel = h.channel().unwrap_or_else(ChannelName::default_channel);
        if channel != ChannelName::default_channel() && !channels.contains(&channel) {
            return Err(fail(BroadcastError::UnknownChannel {
                handler: name.clone(),
                channel: channel.to_string(),
            }));
        }
        out.push((h, r.cfg.clone()));
    }
    Ok(out)
}

/// Why a read or control of a broadcast handler through [`Node`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// No handler of that name is registered on this node.
    #[error("no broadcast handler named {0:?} is registered on this node")]
    Unknown(String),
    /// The handler of that name is not of the type asked for.
    #[error("broadcast handler {handler:?} is not a {expected}")]
    WrongType {
        /// The handler.
        handler: String,
        /// The type asked for.
        expected: &'static str,
    },
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Why an operation on a replicated map ([`Kv`]) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key is empty or longer than `partisan_core::broadcast::kv_map::MAX_KEY_LEN` bytes.
    #[error("{0}")]
    InvalidKey(String),
    /// The value is larger than `partisan_core::broadcast::kv_map::MAX_VALUE_LEN` bytes.
    #[error("{0}")]
    InvalidValue(String),
    /// No replicated map of that name is registered on this node.
    #[error("no replicated map named {0:?} is registered on this node")]
    NotRegistered(String),
    /// The broadcast refused the write (the map's clock cannot advance, ...).
    #[error(transparent)]
    Broadcast(BroadcastError),
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Eager and lazy peers of one tree of a handler, as [`Node::broadcast_tree`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreePeers {
    /// Neighbours payloads are pushed to (and, for a tree seen from a child, its parent),
    /// sorted.
    pub eager: Vec<NodeName>,
    /// Neighbours that only get announcements, sorted.
    pub lazy: Vec<NodeName>,
}

/// The engine-side work of a driver command: runs on the driver task with the engine, whose
/// outputs are then carried out as after any input.
pub(crate) type EngineFn = Box<dyn FnOnce(&mut Engine) + Send>;

impl Node {
    /// Runs `f` on the node's engine (on its driver task) and returns what it gives;
    /// [`HandlerError::ShuttingDown`] once the driver is gone.
    pub(crate) async fn on_engine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, HandlerError> {
        let (tx, rx) = oneshot::channel();
        let run: EngineFn = Box::new(move |e: &mut Engine| {
            let _ = tx.send(f(e));
        });
        self.shared
            .driver
            .send(DriverCmd::Engine(run))
            .await
            .map_err(|_| HandlerError::ShuttingDown)?;
        rx.await.map_err(|_| HandlerError::ShuttingDown)
    }

    /// Broadcasts `msg` with the handler registered as `handler`: the handler turns it into a
    /// message id and payload (`BroadcastHandler::broadcast_data`), it is delivered here, then
    /// pushed along this node's tree. `Ok` once it is delivered here and handed to the
    /// neighbours' lanes: every member reachable through the overlay then delivers it once
    /// (members cut off get it by graft, or by anti-entropy if the handler exchanges). Errors:
    /// the handler is unknown, it refused the message, or the node is shutting down.
    pub async fn broadcast(&self, handler: &str, msg: &[u8]) -> Result<(), BroadcastError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .driver
            .send(DriverCmd::Broadcast {
                handler: handler.to_string(),
                msg: msg.to_vec(),
                reply: tx,
            })
            .await
            .map_err(|_| BroadcastError::ShuttingDown)?;
        rx.await.unwrap_or(Err(BroadcastError::ShuttingDown))
    }

    /// The peers this node's Plumtrees spread broadcasts to, sorted: the overlay's broadcast
    /// members that are up (the whole cluster on full mesh and static, the active view on
    /// HyParView, servers and a server's own clients on client-server). A lock-free snapshot,
    /// published with the membership.
    pub fn broadcast_members(&self) -> Vec<NodeName> {
        self.shared.membership.load().broadcast_members.clone()
    }

    /// Counters of handler `handler` (`None` if it is not registered), as published after
    /// the engine's last input. Lock-free; every counter is monotonic for the run.
    pub fn broadcast_stats(&self, handler: &str) -> Option<BroadcastSnapshot> {
        self.shared.stats.broadcast.load().get(handler).cloned()
    }

    /// Eager and lazy peers of handler `handler`'s tree rooted at `root` (the node that
    /// broadcast): the root's own tree if the handler keeps one for it, else the shared tree
    /// every other root uses. Only broadcast neighbours appear in either list.
    pub async fn broadcast_tree(
        &self,
        handler: &str,
        root: &NodeName,
    ) -> Result<TreePeers, HandlerError> {
        let (name, root) = (handler.to_string(), root.clone());
        self.on_engine(move |e| {
            let t = e
                .plumtree(&name)
                .ok_or_else(|| HandlerError::Unknown(name.clone()))?;
            let (eager, lazy) = t.tree(&root);
            Ok(TreePeers {
                eager: eager.into_iter().collect(),
                lazy: lazy.into_iter().collect(),
            })
        })
        .await?
    }

    /// The anti-entropy exchanges of handler `handler` that this node started and that are
    /// still running, by session (`started` is in microseconds since this node started).
    pub async fn exchanges(&self, handler: &str) -> Result<Vec<ExchangeInfo>, HandlerError> {
        let name = handler.to_string();
        self.on_engine(move |e| {
            let t = e
                .plumtree(&name)
                .ok_or_else(|| HandlerError::Unknown(name.clone()))?;
            Ok(t.exchanges().cloned().collect())
        })
        .await?
    }

    /// Cancels running exchanges of handler `handler` that this node started (all, or those
    /// with one peer); returns how many were cancelled (0 if the handler is unknown or the
    /// node is shutting down). Answers still arriving for them are ignored.
    pub async fn cancel_exchanges(&self, handler: &str, which: &ExchangeSelector) -> usize {
        let (name, which) = (handler.to_string(), which.clone());
        self.on_engine(move |e| e.cancel_exchanges(Some(&name), &which))
            .await
            .unwrap_or(0)
    }

    /// Reads the state of handler `name`, which must be an `H`: `f` runs on the node's
    /// control-plane task with the handler as it is after every input handled so far
    /// (broadcasts of this node answered before included), and what it returns is handed back.
    /// Keep `f` short: the node's control plane waits for it.
    pub async fn with_broadcast_handler<H, R>(
        &self,
        name: &str,
        f: impl FnOnce(&H) -> R + Send + 'static,
    ) -> Result<R, HandlerError>
    where
        H: BroadcastHandler,
        R: Send + 'static,
    {
        let name = name.to_string();
        self.on_engine(move |e| {
            let t = e
                .plumtree(&name)
                .ok_or_else(|| HandlerError::Unknown(name.clone()))?;
            match t.handler().as_any().downcast_ref::<H>() {
                Some(h) => Ok(f(h)),
                None => Err(HandlerError::WrongType {
                    handler: name.clone(),
                    expected: std::any::type_name::<H>(),
                }),
            }
        })
        .await?
    }

    /// The replicated key-value map registered as `"kv"` (see
    /// [`NodeBuilder::kv_map`](crate::NodeBuilder::kv_map)).
    pub fn kv(&self) -> Kv {
        self.kv_named(KV_HANDLER)
    }

    /// The replicated key-value map registered under `name` (a [`KvMap::with_name`]).
    pub fn kv_named(&self, name: &str) -> Kv {
        Kv {
            node: self.clone(),
            name: name.to_string(),
        }
    }
}

/// A handle on a replicated key-value map ([`KvMap`]) of a node: writes are broadcast, reads
/// are local.
///
/// Last writer wins per key, by a hybrid logical clock stamped from this node's wall clock
/// (`SystemTime`, microseconds since the Unix epoch) and every stamp seen; every node that
/// has merged the same writes holds the same entries, and anti-entropy brings a node that
/// missed writes (or restarted empty) up to date. Deletes are tombstones kept for the map's
/// grace period (an hour by default). A node reads its own writes at once; another node sees
/// a write once it is delivered there. The handle holds a [`Node`] clone, so it keeps the
/// node running.
#[derive(Debug, Clone)]
pub struct Kv {
    node: Node,
    name: String,
}

/// Microseconds since the Unix epoch by the wall clock (0 if it is before the epoch).
fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Kv {
    /// The map's handler name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn broadcast_err(&self, e: BroadcastError) -> KvError {
        match e {
            BroadcastError::UnknownHandler(_) => KvError::NotRegistered(self.name.clone()),
            BroadcastError::ShuttingDown => KvError::ShuttingDown,
            e => KvError::Broadcast(e),
        }
    }

    fn handler_err(&self, e: HandlerError) -> KvError {
        match e {
            HandlerError::ShuttingDown => KvError::ShuttingDown,
            HandlerError::Unknown(_) | HandlerError::WrongType { .. } => {
                KvError::NotRegistered(self.name.clone())
            }
        }
    }

    /// Sets `key` to `value` and broadcasts the write. `Ok` once it is merged here (a `get`
    /// on this node sees it, unless a later write of the key arrived meanwhile) and handed to
    /// the neighbours. Keys are 1 to 1024 bytes, values at most 1 MiB.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        kv_map::validate_key(key).map_err(KvError::InvalidKey)?;
        kv_map::validate_value(value).map_err(KvError::InvalidValue)?;
        let op = kv_map::encode_put(key, value, wall_micros());
        self.node
            .broadcast(&self.name, &op)
            .await
            .map_err(|e| self.broadcast_err(e))
    }

    /// Deletes `key` (a tombstone, broadcast like a put). Deleting an absent key is not an
    /// error: the tombstone still orders the delete after every write seen so far.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        kv_map::validate_key(key).map_err(KvError::InvalidKey)?;
        let op = kv_map::encode_delete(key, wall_micros());
        self.node
            .broadcast(&self.name, &op)
            .await
            .map_err(|e| self.broadcast_err(e))
    }

    /// The value of `key` on this node, `None` if absent or deleted.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        kv_map::validate_key(key).map_err(KvError::InvalidKey)?;
        let key = key.to_string();
        self.node
            .with_broadcast_handler(&self.name, move |m: &KvMap| m.get(&key).map(<[u8]>::to_vec))
            .await
            .map_err(|e| self.handler_err(e))
    }

    /// Every live key and its value on this node, in key order.
    pub async fn entries(&self) -> Result<Vec<(String, Vec<u8>)>, KvError> {
        self.node
            .with_broadcast_handler(&self.name, |m: &KvMap| {
                m.entries()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect()
            })
            .await
            .map_err(|e| self.handler_err(e))
    }

    /// How many live keys the map holds on this node.
    pub async fn len(&self) -> Result<usize, KvError> {
        self.node
            .with_broadcast_handler(&self.name, |m: &KvMap| m.len())
            .await
            .map_err(|e| self.handler_err(e))
    }

    /// Whether the map holds no live key on this node.
    pub async fn is_empty(&self) -> Result<bool, KvError> {
        Ok(self.len().await? == 0)
    }
}

/// The registration [`NodeBuilder::kv_map`](crate::NodeBuilder::kv_map) adds.
pub(crate) fn kv_registration(kv: KvConfig, cfg: PlumtreeConfig) -> Registration {
    Registration::new(move |n: &NodeName| KvMap::new(n.clone(), kv), cfg)
}
