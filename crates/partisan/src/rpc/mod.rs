//! Remote procedure calls between nodes: handlers registered by name, typed with serde, and
//! [`Node::call`], [`Node::cast`] and [`Node::multicall`] to run them on any node, this one
//! included.
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn f(a: partisan::Node, b: partisan::Node) -> Result<(), Box<dyn std::error::Error>> {
//! b.rpc_register("add", |(x, y): (i64, i64)| async move { x + y })?;
//! let sum: i64 = a.call(b.name(), "add", &(2, 3), Duration::from_secs(1)).await?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```
//!
//! How it works: requests and replies are ordinary user messages (postcard) on the `default`
//! channel. Every node runs an RPC server process registered as [`SERVER_NAME`] from its
//! start; it runs each handler in a task of its own, at most `rpc_concurrency` at once
//! (requests beyond wait in its bounded mailbox). Calls leave from one client process per
//! node, created at the first call, whose pid is where replies come back; each request
//! carries an id, and a reply is handed only to the waiting call with that id (see
//! `docs/semantics.md`, "RPC").

mod client;
mod server;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use partisan_core::id::{NodeName, Pid, ProcessName, RegisteredName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::SendError;
use crate::node::Node;
use crate::send::{Dest, SendOptions};
pub(crate) use crate::stats::RpcCounters;
pub use crate::stats::RpcStats;
use client::Outcome;

/// The registered name of every node's RPC server process (reserved: a node registers it at
/// start, so no other process can take it).
pub const SERVER_NAME: &str = "partisan.rpc";

/// Why an RPC did not return a result. Each failure has its own variant: a caller can tell
/// a missing handler, a crashed handler, a slow one and a lost node apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The callee has no handler registered under that name. The callee answered so: this
    /// arrives in one round trip, not at the timeout.
    #[error("{node} has no RPC handler named {name:?}")]
    UnknownName {
        /// The callee.
        node: NodeName,
        /// The name called.
        name: String,
    },
    /// The handler panicked. The callee caught it and goes on serving.
    #[error("RPC handler {name:?} on {node} panicked: {message}")]
    Panicked {
        /// The callee.
        node: NodeName,
        /// The handler.
        name: String,
        /// The panic message (at most 4 KiB of it).
        message: String,
    },
    /// No reply came within the timeout. The handler may still have run, or still be
    /// running; a reply arriving later is dropped (counted as `late_replies`).
    #[error("RPC {name:?} on {node}: no reply within {timeout:?}")]
    Timeout {
        /// The callee.
        node: NodeName,
        /// The handler.
        name: String,
        /// The timeout of the call.
        timeout: Duration,
    },
    /// The callee's node went down, or this node's connection to it was lost, before it
    /// replied. The handler may or may not have run.
    #[error("{node} went down during the RPC {name:?}")]
    NodeDown {
        /// The callee.
        node: NodeName,
        /// The handler.
        name: String,
    },
    /// No connection to the callee's node (nor a relay to it): nothing was sent.
    #[error("not connected to {node}")]
    NotConnected {
        /// The callee.
        node: NodeName,
    },
    /// The request could not be queued for another reason (too large for a frame, ...):
    /// nothing was sent.
    #[error("cannot send an RPC to {node}")]
    Send {
        /// The callee.
        node: NodeName,
        /// Why.
        source: SendError,
    },
    /// The arguments could not be encoded here (nothing was sent), or the handler's result
    /// could not be encoded at the callee; `reason` says which.
    #[error("RPC {name:?} on {node}: cannot encode {reason}")]
    Encode {
        /// The callee.
        node: NodeName,
        /// The handler.
        name: String,
        /// What failed, and why.
        reason: String,
    },
    /// The callee could not decode the arguments into its handler's argument type (the
    /// handler did not run), or the reply could not be decoded here into the expected result
    /// type; `reason` says which.
    #[error("RPC {name:?} on {node}: cannot decode {reason}")]
    Decode {
        /// The callee.
        node: NodeName,
        /// The handler.
        name: String,
        /// What failed, and why.
        reason: String,
    },
    /// This node is shutting down.
    #[error("node is shutting down")]
    Stopped,
}

/// Why a handler could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcRegisterError {
    /// A handler is already registered under that name on this node.
    #[error("an RPC handler named {0:?} is already registered")]
    Taken(String),
    /// The name is empty or longer than 255 bytes.
    #[error("RPC handler name {0:?} must be 1 to 255 bytes")]
    InvalidName(String),
}

/// What a handler may learn about the request it serves.
#[derive(Debug, Clone)]
pub struct RpcContext {
    caller: Pid,
    cast: bool,
}

impl RpcContext {
    /// The node the request came from.
    pub fn caller_node(&self) -> &NodeName {
        &self.caller.node
    }

    /// The process the request came from: the calling node's RPC client, where replies go
    /// (not the task that called).
    pub fn caller(&self) -> &Pid {
        &self.caller
    }

    /// Whether the request is a cast (nobody waits for the result).
    pub fn is_cast(&self) -> bool {
        self.cast
    }
}

/// Why a type-erased handler gave no result (besides a panic).
#[derive(Debug)]
enum HandlerFault {
    /// The arguments did not decode.
    BadArgs(String),
    /// The result did not encode.
    BadResult(String),
}

/// A handler with its types erased: arguments and, for a call, the request id in; the
/// encoded reply (empty for a cast) out.
type ErasedHandler = Box<
    dyn Fn(
            RpcContext,
            Bytes,
            Option<u64>,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, HandlerFault>> + Send>>
        + Send
        + Sync,
>;

/// A registered handler.
struct HandlerEntry {
    name: Arc<str>,
    run: ErasedHandler,
}

/// The RPC state of a node (one per node, in its shared state).
pub(crate) struct Rpc {
    /// Handlers by name; read on every request without a lock, replaced whole on change.
    handlers: ArcSwap<HashMap<String, Arc<HandlerEntry>>>,
    /// Serialises registrations.
    register: Mutex<()>,
    /// Handler slots (`rpc_concurrency`).
    slots: Arc<Semaphore>,
    /// The servers' registered name, as a destination.
    server_name: ProcessName,
    /// Pid id of this node's client process, once created.
    client: OnceLock<u64>,
    next_id: AtomicU64,
    pending: client::Pending,
}

impl Rpc {
    /// The last lane to `node` went down (the driver reports it as the engine does): every
    /// call waiting on it fails with [`RpcError::NodeDown`] at once.
    pub(crate) fn peer_down(&self, counters: &RpcCounters, node: &NodeName) {
        self.pending.node_down(counters, node);
    }

    /// The RPC state of a node running at most `concurrency` handlers at once.
    pub(crate) fn new(concurrency: usize) -> Self {
        Rpc {
            handlers: ArcSwap::from_pointee(HashMap::new()),
            register: Mutex::new(()),
            slots: Arc::new(Semaphore::new(concurrency.clamp(1, Semaphore::MAX_PERMITS))),
            server_name: ProcessName::new(SERVER_NAME).expect("valid reserved name"),
            client: OnceLock::new(),
            next_id: AtomicU64::new(1),
            pending: client::Pending::default(),
        }
    }

    fn handler(&self, name: &str) -> Option<Arc<HandlerEntry>> {
        self.handlers.load().get(name).cloned()
    }
}

/// Starts the node's RPC server (at node start).
pub(crate) fn start(node: &Node) {
    if let Err(e) = node.spawn_named(SERVER_NAME, server::serve) {
        tracing::error!(error = %e, "cannot start the RPC server");
    }
}

/// The instant `timeout` from now; one too far to represent (`Duration::MAX` as "no
/// timeout") is about thirty years away.
fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

/// `SendError` as the RPC error of a request to `node`.
fn send_error(node: &NodeName, e: SendError) -> RpcError {
    match e {
        SendError::NotConnected(_) => RpcError::NotConnected { node: node.clone() },
        SendError::Closed => RpcError::Stopped,
        source => RpcError::Send {
            node: node.clone(),
            source,
        },
    }
}

/// A call sent and waiting for its reply; dropping it forgets the call.
struct Call<'a> {
    node: &'a Node,
    callee: NodeName,
    name: &'a str,
    id: u64,
    rx: oneshot::Receiver<Outcome>,
    /// The table no longer holds the call.
    done: bool,
}

impl Call<'_> {
    /// Waits for the reply until `deadline` and decodes it.
    async fn finish<R: DeserializeOwned>(
        mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<R, RpcError> {
        match tokio::time::timeout_at(deadline, &mut self.rx).await {
            Ok(o) => self.decode(o.unwrap_or(Outcome::Stopped)),
            Err(_) => self.timed_out(timeout),
        }
    }

    /// The call's deadline passed: forget it, unless its answer came in meanwhile.
    fn timed_out<R: DeserializeOwned>(mut self, timeout: Duration) -> Result<R, RpcError> {
        let counters = &self.node.shared.stats.rpc;
        if self.node.shared.rpc.pending.remove(counters, self.id) {
            self.done = true;
            counters.timeouts.fetch_add(1, Relaxed);
            return Err(RpcError::Timeout {
                node: self.callee.clone(),
                name: self.name.to_string(),
                timeout,
            });
        }
        // Answered between the deadline and now: take the answer.
        let o = self.rx.try_recv().unwrap_or(Outcome::Stopped);
        self.decode(o)
    }

    /// The call's result from how it ended (the table no longer holds it).
    fn decode<R: DeserializeOwned>(mut self, outcome: Outcome) -> Result<R, RpcError> {
        self.done = true;
        let (node, name) = (self.callee.clone(), self.name.to_string());
        match outcome {
            Outcome::Ok(bytes) => postcard::from_bytes(&bytes).map_err(|e| RpcError::Decode {
                node,
                name,
                reason: format!("the result: {e}"),
            }),
            Outcome::UnknownName => Err(RpcError::UnknownName { node, name }),
            Outcome::Panicked(message) => Err(RpcError::Panicked {
                node,
                name,
                message,
            }),
            Outcome::BadArgs(m) => Err(RpcError::Decode {
                reason: format!("the {m} (at {node})"),
                node,
                name,
            }),
            Outcome::BadResult(m) => Err(RpcError::Encode {
                reason: format!("the {m} (at {node})"),
                node,
                name,
            }),
            Outcome::NodeDown => Err(RpcError::NodeDown { node, name }),
            Outcome::Stopped => Err(RpcError::Stopped),
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.node
                .shared
                .rpc
                .pending
                .remove(&self.node.shared.stats.rpc, self.id);
        }
    }
}

/// Request header `h` followed by `args`, both postcard.
fn request<A: Serialize + ?Sized>(
    h: &wire::Request<'_>,
    args: &A,
    node: &NodeName,
    name: &str,
) -> Result<Bytes, RpcError> {
    wire::encode(h, args)
        .map(Bytes::from)
        .map_err(|e| RpcError::Encode {
            node: node.clone(),
            name: name.to_string(),
            reason: format!("the arguments: {e}"),
        })
}

impl Node {
    /// Registers `handler` as the RPC handler `name` on this node. A request decodes its
    /// arguments into `A` (postcard), awaits `handler(args)` in a task of its own and
    /// answers with the encoded `R`. See [`Node::rpc_register_with`] for a handler that
    /// learns who called.
    ///
    /// ```no_run
    /// # fn f(node: &partisan::Node) -> Result<(), partisan::RpcRegisterError> {
    /// node.rpc_register("add", |args: (i64, i64)| async move { args.0 + args.1 })?;
    /// # Ok(()) }
    /// ```
    ///
    /// Fails with [`RpcRegisterError::Taken`] if `name` is already registered here, and with
    /// [`RpcRegisterError::InvalidName`] unless it is 1 to 255 bytes.
    pub fn rpc_register<A, R, F, Fut>(&self, name: &str, handler: F) -> Result<(), RpcRegisterError>
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        self.rpc_register_with(name, move |_: RpcContext, args: A| handler(args))
    }

    /// Like [`Node::rpc_register`], for a handler that is also given the request's
    /// [`RpcContext`] (the calling node, whether it is a cast).
    ///
    /// Handlers run concurrently, each in its own task, at most `rpc_concurrency` (config,
    /// default 256) at once on this node; a panic in a handler is caught and answered as
    /// [`RpcError::Panicked`]. A handler that never finishes holds its slot for good.
    pub fn rpc_register_with<A, R, F, Fut>(
        &self,
        name: &str,
        handler: F,
    ) -> Result<(), RpcRegisterError>
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(RpcContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        if name.is_empty() || name.len() > wire::MAX_NAME_LEN {
            return Err(RpcRegisterError::InvalidName(
                name.chars().take(40).collect(),
            ));
        }
        let rpc = &self.shared.rpc;
        let _g = rpc.register.lock();
        let current = rpc.handlers.load_full();
        if current.contains_key(name) {
            return Err(RpcRegisterError::Taken(name.to_string()));
        }
        let mut next = HashMap::clone(&current);
        next.insert(
            name.to_string(),
            Arc::new(HandlerEntry {
                name: Arc::from(name),
                run: server::erase(handler),
            }),
        );
        rpc.handlers.store(Arc::new(next));
        Ok(())
    }

    /// Removes the RPC handler `name`; returns whether it was registered. Requests already
    /// running finish; later ones get [`RpcError::UnknownName`].
    pub fn rpc_unregister(&self, name: &str) -> bool {
        let rpc = &self.shared.rpc;
        let _g = rpc.register.lock();
        let current = rpc.handlers.load_full();
        if !current.contains_key(name) {
            return false;
        }
        let mut next = HashMap::clone(&current);
        next.remove(name);
        rpc.handlers.store(Arc::new(next));
        true
    }

    /// Names of the RPC handlers registered on this node, sorted.
    pub fn rpc_handlers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.rpc.handlers.load().keys().cloned().collect();
        v.sort();
        v
    }

    /// Calls the RPC handler `name` on `node` (this node's own name works too) with `args`,
    /// and waits at most `timeout` for its result (`Duration::MAX`: no limit in practice).
    ///
    /// Guarantees: the result is the answer to this request (requests carry an id; an
    /// answer to an earlier call that timed out is never taken for this one's). The call
    /// fails at once with [`RpcError::NotConnected`] when `node` is not connected (nor
    /// reachable through a relay); with [`RpcError::UnknownName`] in one round trip when the
    /// callee has no such handler; with [`RpcError::NodeDown`] as soon as `node` goes down or
    /// this node's last connection to it is lost (at once), not at the timeout;
    /// otherwise with [`RpcError::Timeout`] once `timeout` has passed (queueing the request
    /// counts against it). A call fails rather than panics, whatever the peer sends. The
    /// request is delivered at most once: after `Timeout` or `NodeDown` the handler may or
    /// may not have run.
    pub async fn call<A, R>(
        &self,
        node: &NodeName,
        name: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        // One timer for the whole call: queueing the request, then waiting for the reply.
        let deadline = deadline(timeout);
        let mut call = None;
        let waited = tokio::time::timeout_at(deadline, async {
            let c = call.insert(self.start_call(node, name, args).await?);
            Ok::<_, RpcError>((&mut c.rx).await.unwrap_or(Outcome::Stopped))
        })
        .await;
        match (waited, call) {
            (Ok(Err(e)), _) => Err(e),
            (Ok(Ok(o)), Some(c)) => c.decode(o),
            (Err(_), Some(c)) => c.timed_out(timeout),
            // The request could not even be queued in time.
            (Err(_), None) => {
                self.shared.stats.rpc.timeouts.fetch_add(1, Relaxed);
                Err(RpcError::Timeout {
                    node: node.clone(),
                    name: name.to_string(),
                    timeout,
                })
            }
            (Ok(Ok(_)), None) => Err(RpcError::Stopped), // unreachable: the call was stored
        }
    }

    /// Runs the RPC handler `name` on `node` with `args` without waiting for it: `Ok` means
    /// the request was queued (as [`Node::send`]), not that it ran. Errors only if it cannot
    /// be sent ([`RpcError::NotConnected`], [`RpcError::Send`], [`RpcError::Encode`],
    /// [`RpcError::Stopped`]). A cast to an unknown name, or whose handler fails, is dropped
    /// and counted at the callee. Waits while the lane's queue is full.
    pub async fn cast<A>(&self, node: &NodeName, name: &str, args: &A) -> Result<(), RpcError>
    where
        A: Serialize + ?Sized,
    {
        let client = self.rpc_client()?;
        let payload = request(&wire::Request::Cast { name }, args, node, name)?;
        self.send_request(client, node, payload).await?;
        self.shared.stats.rpc.casts.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Calls the RPC handler `name` on every node of `nodes` at once, and waits at most
    /// `timeout` in all. Returns one result per node, in the order of `nodes`, each as
    /// [`Node::call`] would give it: a node that is down or not connected fails its own
    /// entry only.
    pub async fn multicall<A, R>(
        &self,
        nodes: &[NodeName],
        name: &str,
        args: &A,
        timeout: Duration,
    ) -> Vec<(NodeName, Result<R, RpcError>)>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let deadline = deadline(timeout);
        let mut calls = Vec::with_capacity(nodes.len());
        for n in nodes {
            let started = tokio::time::timeout_at(deadline, self.start_call(n, name, args)).await;
            calls.push(started.unwrap_or_else(|_| {
                self.shared.stats.rpc.timeouts.fetch_add(1, Relaxed);
                Err(RpcError::Timeout {
                    node: n.clone(),
                    name: name.to_string(),
                    timeout,
                })
            }));
        }
        let mut out = Vec::with_capacity(nodes.len());
        for (n, c) in nodes.iter().zip(calls) {
            let r = match c {
                Ok(call) => call.finish(deadline, timeout).await,
                Err(e) => Err(e),
            };
            out.push((n.clone(), r));
        }
        out
    }

    /// This node's RPC counters.
    pub fn rpc_stats(&self) -> RpcStats {
        self.shared.stats.rpc.snapshot()
    }

    /// Sends one call's request and records it as waiting.
    async fn start_call<'a, A: Serialize + ?Sized>(
        &'a self,
        node: &NodeName,
        name: &'a str,
        args: &A,
    ) -> Result<Call<'a>, RpcError> {
        let shared = &self.shared;
        let client = self.rpc_client()?;
        let id = shared.rpc.next_id.fetch_add(1, Relaxed);
        let payload = request(&wire::Request::Call { id, name }, args, node, name)?;
        let (tx, rx) = oneshot::channel();
        let creation = if node == self.name() {
            None
        } else {
            shared.table.creation_of(node)
        };
        shared
            .rpc
            .pending
            .insert(&shared.stats.rpc, id, node, creation, tx);
        let call = Call {
            node: self,
            callee: node.clone(),
            name,
            id,
            rx,
            done: false,
        };
        self.send_request(client, node, payload).await?;
        shared.stats.rpc.calls.fetch_add(1, Relaxed);
        Ok(call)
    }

    /// Queues a request to `node`'s RPC server from this node's client process.
    async fn send_request(
        &self,
        client: u64,
        node: &NodeName,
        payload: Bytes,
    ) -> Result<(), RpcError> {
        let dest = RegisteredName {
            node: node.clone(),
            name: self.shared.rpc.server_name.clone(),
        };
        self.shared
            .send(
                Some(client),
                Dest::Name(&dest),
                payload,
                &SendOptions::default(),
                true,
            )
            .await
            .map_err(|e| send_error(node, e))
    }

    /// The pid id of this node's RPC client process, created at the first use.
    fn rpc_client(&self) -> Result<u64, RpcError> {
        let rpc = &self.shared.rpc;
        if let Some(id) = rpc.client.get() {
            return Ok(*id);
        }
        if self.shared.shutdown_conns.is_cancelled() {
            return Err(RpcError::Stopped);
        }
        Ok(*rpc.client.get_or_init(|| self.spawn(client::run).id))
    }
}
