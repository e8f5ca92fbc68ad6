//! The membership API of a node: join, leave, members, events, views, status. One API for
//! every overlay; what each call means per overlay is stated on the call.

use std::collections::BTreeMap;
use std::time::Duration;

use partisan_core::connection_plan::DialTarget;
use partisan_core::id::{NodeName, NodeSpec};
use partisan_core::overlay::{OverlayError, OverlayKind, Tag};
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::driver::{ConnectTarget, DriverCmd};
use crate::error::ConnectError;
use crate::membership::MembershipEvent;
use crate::node::{Node, PeerTarget};

/// Which node(s) an `on_up`/`on_down` callback is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFilter {
    /// Any node.
    Any,
    /// One node.
    Node(NodeName),
}

impl From<NodeName> for NodeFilter {
    fn from(n: NodeName) -> Self {
        NodeFilter::Node(n)
    }
}

impl From<&NodeName> for NodeFilter {
    fn from(n: &NodeName) -> Self {
        NodeFilter::Node(n.clone())
    }
}

/// A registered `on_up`/`on_down` callback. It runs until [`Subscription::cancel`] or node
/// shutdown; dropping the handle does not cancel it.
#[derive(Debug)]
pub struct Subscription {
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Stops calling the callback.
    pub fn cancel(self) {
        self.task.abort();
    }
}

/// A node's view of the cluster, as `partisan node --admin` serves it at `GET /status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub name: String,
    /// Its creation.
    pub creation: u64,
    /// Overlay it runs.
    pub overlay: String,
    /// Member names (this node included while a member), sorted.
    pub members: Vec<String>,
    /// Peers the overlay keeps connected (HyParView's active view).
    pub active: Vec<String>,
    /// HyParView's passive view (empty for other overlays).
    pub passive: Vec<String>,
    /// Peers the node's Plumtrees spread broadcasts to (the overlay's broadcast members that
    /// are up), sorted.
    pub broadcast_members: Vec<String>,
    /// Lanes up: peer -> channel -> count.
    pub connections: BTreeMap<String, BTreeMap<String, usize>>,
    /// Peers in `connections` that the overlay does not keep (not in `active`): temporary
    /// connections of joins, shuffles, walks or relays, closed after a while. Sorted.
    pub transient: Vec<String>,
    /// Members whose every lane is down and that could not be dialed since (see
    /// [`Node::unreachable`]), sorted.
    pub unreachable: Vec<String>,
    /// The node's counters (messages, bytes and queues per channel, refusals, drops, and per
    /// broadcast handler under `broadcast`).
    pub stats: crate::stats::StatsSnapshot,
}

impl Node {
    /// Sends the driver a command built around a reply channel and waits for the reply;
    /// `None` when the node is shutting down.
    async fn ask_driver<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> DriverCmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.shared.driver.send(cmd(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The overlay this node runs.
    pub fn overlay(&self) -> OverlayKind {
        self.shared.identity.overlay
    }

    /// Joins the cluster through the node at `target` (an address or a spec). The target is
    /// dialed with backoff until it answers; this returns its name once it has and the overlay
    /// was told. A target that cannot be joined by retrying (wrong cookie, overlay, version,
    /// name in use) fails at once with that cause; otherwise, after `connect_timeout` x 10,
    /// the call returns the latest failure ([`ConnectError::Unreachable`],
    /// [`ConnectError::Refused`]) or [`ConnectError::TimedOut`], and the node keeps trying in
    /// the background, as it does for configured seeds.
    pub async fn join(&self, target: impl Into<PeerTarget>) -> Result<NodeName, ConnectError> {
        let timeout = (self.shared.cfg.connect_timeout * 10).max(Duration::from_secs(5));
        self.join_timeout(target, timeout).await
    }

    /// [`Node::join`] with an explicit timeout.
    pub async fn join_timeout(
        &self,
        target: impl Into<PeerTarget>,
        timeout: Duration,
    ) -> Result<NodeName, ConnectError> {
        let target = match target.into() {
            PeerTarget::Addr(a) => ConnectTarget::Addr(a),
            PeerTarget::Spec(s) => ConnectTarget::Spec(s),
        };
        let dial_target = target.dial_target();
        let (tx, rx) = oneshot::channel();
        self.shared
            .driver
            .send(DriverCmd::Join {
                target,
                reply: Some(tx),
            })
            .await
            .map_err(|_| ConnectError::ShuttingDown)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ConnectError::ShuttingDown),
            Err(_) => Err(self.timed_out(dial_target, timeout).await),
        }
    }

    /// Joins through `target` and waits until the contact is a member and every lane to it is
    /// up (Partisan's `sync_join`), within `timeout`.
    pub async fn join_and_wait(
        &self,
        target: impl Into<PeerTarget>,
        timeout: Duration,
    ) -> Result<NodeName, ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let name = self.join_timeout(target, timeout).await?;
        loop {
            if self.is_member(&name) && self.is_fully_connected(&name) {
                return Ok(name);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timed_out(DialTarget::Node(name), timeout).await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Leaves the cluster gracefully: peers are told at once (before connections close), then
    /// every overlay connection is dropped. The node keeps running alone and may `join` again.
    pub async fn leave(&self) {
        self.ask_driver(|reply| DriverCmd::Leave { reply }).await;
    }

    /// Removes another node from the cluster (this node: same as [`Node::leave`]). Full mesh:
    /// removed everywhere, and the node learns it; HyParView: dropped from both views here;
    /// client-server: dropped here and at the servers; static: dropped from the list here.
    pub async fn remove(&self, node: &NodeName) {
        let node = node.clone();
        self.ask_driver(|reply| DriverCmd::Remove { node, reply })
            .await;
    }

    /// Replaces the membership with `specs`: nodes not listed are removed, new ones joined
    /// (HyParView, as Partisan: they become passive candidates).
    pub async fn update_members(&self, specs: Vec<NodeSpec>) {
        self.ask_driver(|reply| DriverCmd::UpdateMembers { specs, reply })
            .await;
    }

    /// Member names, this node included while it is a member, sorted. Reads the snapshot the
    /// driver publishes after every change (no call into a task). HyParView: the active view.
    pub fn members(&self) -> Vec<NodeName> {
        self.shared.membership.load().members.clone()
    }

    /// Specs of the other members.
    pub fn member_specs(&self) -> Vec<NodeSpec> {
        self.shared.membership.load().member_specs.clone()
    }

    /// Whether `node` is a member.
    pub fn is_member(&self, node: &NodeName) -> bool {
        self.shared.membership.load().members.contains(node)
    }

    /// Peers the overlay keeps connected (HyParView's active view; the other members for the
    /// other overlays).
    pub fn active_view(&self) -> Vec<NodeName> {
        self.shared.membership.load().active.clone()
    }

    /// Members this node wants connected whose every lane is down and that could not be dialed
    /// since (a host that vanished, a partition), sorted. They stay members, redialed with a
    /// backoff growing to `reconnect_outage_max`, unless `down_after` removes them; one leaves
    /// this list as soon as a lane to it is up again.
    pub fn unreachable(&self) -> Vec<NodeName> {
        self.shared.membership.load().unreachable.clone()
    }

    /// HyParView's passive view (empty for the other overlays).
    pub fn passive_view(&self) -> Vec<NodeName> {
        self.shared.membership.load().passive.clone()
    }

    /// Reserves an active-view slot for a peer with `tag` (HyParView; the other overlays keep
    /// every member connected, so the reservation always holds there).
    pub async fn reserve(&self, tag: &str) -> Result<(), OverlayError> {
        let tag = Tag::new(tag).map_err(OverlayError::Refused)?;
        self.ask_driver(|reply| DriverCmd::Reserve { tag, reply })
            .await
            .unwrap_or_else(|| Err(OverlayError::Refused("node is shutting down".into())))
    }

    /// A stream of [`MembershipEvent`]s from now on. The stream is a bounded ring: a receiver
    /// that falls more than 1024 events behind gets `Lagged` and resumes from the oldest kept.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }

    /// Calls `f` each time a matching node comes up (member with a lane up).
    pub fn on_up(
        &self,
        filter: impl Into<NodeFilter>,
        f: impl Fn(&NodeName) + Send + Sync + 'static,
    ) -> Subscription {
        self.subscribe(filter.into(), true, f)
    }

    /// Calls `f` each time a matching node goes down (last lane lost, or it left / was
    /// removed).
    pub fn on_down(
        &self,
        filter: impl Into<NodeFilter>,
        f: impl Fn(&NodeName) + Send + Sync + 'static,
    ) -> Subscription {
        self.subscribe(filter.into(), false, f)
    }

    fn subscribe(
        &self,
        filter: NodeFilter,
        up: bool,
        f: impl Fn(&NodeName) + Send + Sync + 'static,
    ) -> Subscription {
        let mut rx = self.events();
        let stop = self.shared.shutdown_conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = rx.recv() => ev,
                };
                match ev {
                    Ok(ev) => {
                        let matches = matches!(
                            (&ev, up),
                            (MembershipEvent::NodeUp(_), true)
                                | (MembershipEvent::NodeDown(_), false)
                        );
                        let wanted = match &filter {
                            NodeFilter::Any => true,
                            NodeFilter::Node(n) => n == ev.node(),
                        };
                        if matches && wanted {
                            f(ev.node());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "membership callback fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Subscription { task }
    }

    /// This node's view of the cluster: members, views and lanes up.
    pub fn status(&self) -> NodeStatus {
        let snap = self.shared.membership.load();
        let mut connections: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for l in self.lanes() {
            if l.up > 0 {
                connections
                    .entry(l.node)
                    .or_default()
                    .insert(l.channel, l.up);
            }
        }
        let names = |v: &[NodeName]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let active = names(&snap.active);
        let transient = connections
            .keys()
            .filter(|p| !active.contains(p))
            .cloned()
            .collect();
        NodeStatus {
            name: self.name().to_string(),
            creation: self.creation(),
            overlay: self.overlay().to_string(),
            members: names(&snap.members),
            active,
            passive: names(&snap.passive),
            broadcast_members: names(&snap.broadcast_members),
            connections,
            transient,
            unreachable: names(&snap.unreachable),
            stats: self.stats(),
        }
    }
}
