//! The calling side of RPC: one client process per node (its pid is where every reply goes),
//! the table of calls waiting for their reply (request id -> the caller's oneshot, also
//! indexed by node), the reader routing replies by id, and the watcher failing the calls to a
//! node as soon as that node is seen to go down.
//!
//! A reply is taken only by the call whose id it carries, and only if it comes from the node
//! that call went to; any other reply (its call timed out, failed or was dropped) is counted
//! as late and dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use parking_lot::Mutex;
use partisan_core::id::{Creation, NodeName};
use tokio::sync::{broadcast, oneshot};

use super::wire::{ReplyHeader, Status};
use super::RpcCounters;
use crate::connection::table::ConnTable;
use crate::membership::MembershipEvent;
use crate::node::Node;
use crate::process::registry::{Envelope, KeyHash};
use crate::process::Process;

/// Replies taken from the client's mailbox at once.
const BATCH: usize = 64;

/// How a call ended, as the reader or the watcher hands it to the caller.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The handler's encoded result.
    Ok(Bytes),
    /// The callee has no handler by that name.
    UnknownName,
    /// The handler panicked.
    Panicked(String),
    /// The callee could not decode the arguments.
    BadArgs(String),
    /// The callee could not encode the result.
    BadResult(String),
    /// The callee's node went down (or its connection was lost) before it answered.
    NodeDown,
    /// This node is shutting down.
    Stopped,
}

/// One call waiting for its reply.
struct Waiting {
    node: NodeName,
    tx: oneshot::Sender<Outcome>,
}

/// The calls waiting on one node.
#[derive(Default)]
struct PerNode {
    ids: HashSet<u64, KeyHash>,
    /// The incarnation of the node the calls went to over a direct connection; `None` when
    /// none did (this node itself, or a node reached through a relay).
    creation: Option<Creation>,
}

#[derive(Default)]
struct Table {
    calls: HashMap<u64, Waiting, KeyHash>,
    by_node: HashMap<NodeName, PerNode, KeyHash>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let w = self.calls.remove(&id)?;
        if let Some(per) = self.by_node.get_mut(&w.node) {
            per.ids.remove(&id);
            if per.ids.is_empty() {
                self.by_node.remove(&w.node);
            }
        }
        Some(w)
    }

    /// Takes every call waiting on `node`.
    fn take_node(&mut self, node: &NodeName) -> Vec<oneshot::Sender<Outcome>> {
        let Some(per) = self.by_node.remove(node) else {
            return Vec::new();
        };
        per.ids
            .iter()
            .filter_map(|id| self.calls.remove(id))
            .map(|w| w.tx)
            .collect()
    }
}

/// The calls of a node waiting for their replies.
#[derive(Default)]
pub(super) struct Pending {
    table: Mutex<Table>,
}

impl Pending {
    /// Records call `id` to `node`, sent while the node's incarnation `creation` was directly
    /// connected (`None`: not directly). Calls still waiting on an older incarnation of the
    /// node can no longer be answered: they fail with [`Outcome::NodeDown`].
    pub(super) fn insert(
        &self,
        counters: &RpcCounters,
        id: u64,
        node: &NodeName,
        creation: Option<Creation>,
        tx: oneshot::Sender<Outcome>,
    ) {
        let mut doomed = Vec::new();
        {
            let mut t = self.table.lock();
            let per = t.by_node.entry(node.clone()).or_default();
            if let Some(new) = creation {
                if per.creation.is_some_and(|old| old != new) {
                    doomed = std::mem::take(&mut per.ids).into_iter().collect();
                }
                per.creation = Some(new);
            }
            per.ids.insert(id);
            let mut lost = Vec::with_capacity(doomed.len());
            for old in &doomed {
                if let Some(w) = t.calls.remove(old) {
                    lost.push(w.tx);
                }
            }
            t.calls.insert(
                id,
                Waiting {
                    node: node.clone(),
                    tx,
                },
            );
            counters.pending.store(t.calls.len() as u64, Relaxed);
            drop(t);
            fail(counters, lost, || Outcome::NodeDown);
        }
    }

    /// Forgets call `id`; whether it was still waiting.
    pub(super) fn remove(&self, counters: &RpcCounters, id: u64) -> bool {
        let mut t = self.table.lock();
        let found = t.remove(id).is_some();
        counters.pending.store(t.calls.len() as u64, Relaxed);
        found
    }

    /// Fails every call waiting on `node` with [`Outcome::NodeDown`].
    pub(super) fn node_down(&self, counters: &RpcCounters, node: &NodeName) {
        let lost = {
            let mut t = self.table.lock();
            let lost = t.take_node(node);
            counters.pending.store(t.calls.len() as u64, Relaxed);
            lost
        };
        if !lost.is_empty() {
            tracing::debug!(peer = %node, calls = lost.len(), "RPC calls failed: node down");
        }
        fail(counters, lost, || Outcome::NodeDown);
    }

    /// Fails the calls to every node whose directly connected incarnation is no longer the
    /// one the calls went to (the connection was lost, or the node restarted).
    fn check(&self, counters: &RpcCounters, conns: &ConnTable) {
        let down: Vec<NodeName> = {
            let t = self.table.lock();
            t.by_node
                .iter()
                .filter(|(n, p)| p.creation.is_some() && conns.creation_of(n) != p.creation)
                .map(|(n, _)| n.clone())
                .collect()
        };
        for n in down {
            self.node_down(counters, &n);
        }
    }

    /// Fails every waiting call with [`Outcome::Stopped`].
    fn stop_all(&self, counters: &RpcCounters) {
        let lost: Vec<_> = {
            let mut t = self.table.lock();
            t.by_node.clear();
            let lost = t.calls.drain().map(|(_, w)| w.tx).collect();
            counters.pending.store(0, Relaxed);
            lost
        };
        for tx in lost {
            let _ = tx.send(Outcome::Stopped);
        }
    }

    /// Hands a reply to the call it answers, if that call still waits and went to the node
    /// the reply comes from; `false` otherwise.
    fn answer(&self, counters: &RpcCounters, id: u64, from: &NodeName, o: Outcome) -> bool {
        let w = {
            let mut t = self.table.lock();
            match t.calls.get(&id) {
                Some(w) if &w.node == from => {}
                _ => return false,
            }
            let w = t.remove(id);
            counters.pending.store(t.calls.len() as u64, Relaxed);
            w
        };
        match w {
            // The caller may have given up between the lookup and now: then the reply is late.
            Some(w) => w.tx.send(o).is_ok(),
            None => false,
        }
    }
}

/// Sends `make()` to every caller in `lost`, counting node-down failures.
fn fail(counters: &RpcCounters, lost: Vec<oneshot::Sender<Outcome>>, make: impl Fn() -> Outcome) {
    for tx in lost {
        counters.node_down.fetch_add(1, Relaxed);
        let _ = tx.send(make());
    }
}

/// The client process: routes every reply to its call until the node stops, then fails
/// whatever still waits. Starts the watcher.
pub(super) async fn run(mut me: Process) {
    let node = me.node().clone();
    tokio::spawn(watch(node.clone()));
    let shared = &node.shared;
    let counters = &shared.stats.rpc;
    let mut buf = Vec::with_capacity(BATCH);
    while me.recv_many(&mut buf, BATCH).await > 0 {
        for env in buf.drain(..) {
            on_reply(&node, env);
        }
    }
    shared.rpc.pending.stop_all(counters);
}

fn on_reply(node: &Node, env: Envelope) {
    let shared = &node.shared;
    let counters = &shared.stats.rpc;
    let Envelope { from, payload, .. } = env;
    let (header, body_at) = match postcard::take_from_bytes::<ReplyHeader>(&payload) {
        Ok((h, rest)) => (h, payload.len() - rest.len()),
        Err(_) => {
            counters.bad_messages.fetch_add(1, Relaxed);
            tracing::debug!(?from, "dropping a malformed RPC reply");
            return;
        }
    };
    let Some(from) = from else {
        counters.bad_messages.fetch_add(1, Relaxed);
        return;
    };
    let outcome = match header.status {
        Status::Ok => Outcome::Ok(payload.slice(body_at..)),
        Status::UnknownName => Outcome::UnknownName,
        Status::Panicked(m) => Outcome::Panicked(m.to_string()),
        Status::BadArgs(m) => Outcome::BadArgs(m.to_string()),
        Status::BadResult(m) => Outcome::BadResult(m.to_string()),
    };
    if !shared
        .rpc
        .pending
        .answer(counters, header.id, &from.node, outcome)
    {
        counters.late_replies.fetch_add(1, Relaxed);
        tracing::debug!(id = header.id, from = %from, "dropping a late RPC reply");
    }
}

/// Fails calls at a membership `NodeDown` event (a relayed node, reached through another);
/// the loss of a directly connected node's last lane is reported by the driver itself
/// ([`super::Rpc::peer_down`]). A lagging event stream checks every node's connection.
async fn watch(node: Node) {
    let shared = &node.shared;
    let pending = &shared.rpc.pending;
    let counters = &shared.stats.rpc;
    let mut events = node.events();
    let stop = shared.shutdown_conns.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(MembershipEvent::NodeDown(n)) => pending.node_down(counters, &n),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    pending.check(counters, &shared.table);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
