//! The planner's side of the driver: admission, dials, lanes and closes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::connection_plan::{
    CloseReason, ConnId, DialRequest, DialTarget, PlanOutput, Want,
};
use partisan_core::id::{ChannelName, NodeName};
use partisan_core::wire::handshake::{PeerHello, RefuseCode};
use partisan_core::wire::MIN_MAX_FRAME_LEN;
use tokio::sync::oneshot;

use super::{ConnectReply, ConnectTarget, Driver, DriverCmd};
use crate::conn_table::LaneHandle;
use crate::connection::{self, ConnCtx};
use crate::error::ConnectError;
use crate::handshake_io;
use crate::lane_queue::{LaneQueue, Overflow};

/// Time a connection closed on purpose gets to flush and say goodbye before it is cut.
const LINGER: Duration = Duration::from_secs(2);

impl Driver {
    pub(super) fn connect(&mut self, target: ConnectTarget, reply: ConnectReply) {
        if self.shutting_down.is_some() {
            let _ = reply.send(Err(ConnectError::ShuttingDown));
            return;
        }
        let now = self.shared.now();
        match target {
            ConnectTarget::Spec(spec) => {
                let name = spec.name().clone();
                if &name == self.shared.spec.name() {
                    let _ = reply.send(Err(ConnectError::GaveUp("that is this node".into())));
                    return;
                }
                self.plan.want(spec, Want::User, now, &mut self.out);
                if self.shared.table.is_connected(&name) {
                    let _ = reply.send(Ok(name));
                } else {
                    self.node_waiters.entry(name).or_default().push(reply);
                }
            }
            ConnectTarget::Addr(addr) => {
                if self.shared.spec.listen_addrs().contains(&addr) {
                    let _ = reply.send(Err(ConnectError::SelfConnect(addr)));
                    return;
                }
                if self.plan.want_addr(addr, Want::User, now, &mut self.out) {
                    self.addr_waiters.entry(addr).or_default().push(reply);
                    return;
                }
                // The address belongs to a connected peer.
                match self.peer_at(addr) {
                    Some(spec) => {
                        let name = spec.name().clone();
                        self.plan.want(spec, Want::User, now, &mut self.out);
                        let _ = reply.send(Ok(name));
                    }
                    None => {
                        let _ = reply.send(Err(ConnectError::GaveUp(format!(
                            "{addr} is not reachable as a new target"
                        ))));
                    }
                }
            }
        }
    }

    /// The spec of a connected peer listening at `addr`.
    pub(super) fn peer_at(
        &self,
        addr: std::net::SocketAddr,
    ) -> Option<partisan_core::id::NodeSpec> {
        self.identities
            .values()
            .map(|i| &i.spec)
            .find(|s| s.listen_addrs().contains(&addr) && self.shared.table.is_connected(s.name()))
            .cloned()
    }

    pub(super) fn disconnect(&mut self, node: &NodeName) {
        self.plan.unwant(node, Want::User, &mut self.out);
    }

    /// Stops dialing `addr` if no node answered there yet; its waiters get `GaveUp`.
    pub(super) fn cancel_addr(&mut self, addr: std::net::SocketAddr) -> bool {
        let pending = self.plan.pending_addrs().any(|a| *a == addr);
        self.plan.unwant_addr(&addr);
        let waiters: Vec<ConnectReply> = self
            .addr_waiters
            .remove(&addr)
            .into_iter()
            .chain(self.join_addrs.remove(&addr))
            .flatten()
            .collect();
        for w in waiters {
            let _ = w.send(Err(ConnectError::GaveUp(format!(
                "connection attempt to {addr} cancelled"
            ))));
        }
        pending
    }

    fn remember_identity(&mut self, id: partisan_core::wire::handshake::Identity) {
        self.identities.insert(id.spec.name().clone(), id);
        self.publish_known();
    }

    /// Forgets the identity of every lost peer now neither connected nor wanted: nothing needs
    /// it any more (the overlay keeps what it needs in its own views). Runs after each batch
    /// of outputs; the set holds only peers lost and still wanted, so this stays cheap.
    pub(super) fn forget_lost_identities(&mut self) {
        if self.lost.is_empty() {
            return;
        }
        let lost = std::mem::take(&mut self.lost);
        let mut forgot = false;
        for node in lost {
            if self.shared.table.is_connected(&node) {
                continue;
            }
            if self.plan.is_wanted(&node) {
                self.lost.insert(node);
            } else {
                forgot |= self.identities.remove(&node).is_some();
            }
        }
        if forgot {
            self.publish_known();
        }
    }

    fn publish_known(&self) {
        self.shared.stats.node.peers_known.store(
            self.identities.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        peer: PeerHello,
        welcome: bytes::Bytes,
        reply: oneshot::Sender<Result<Arc<ConnCtx>, RefuseCode>>,
    ) {
        if self.shutting_down.is_some() {
            let _ = reply.send(Err(RefuseCode::ShuttingDown));
            return;
        }
        let now = self.shared.now();
        match self.plan.admit(conn, &peer, now, &mut self.out) {
            Ok(replaced) => {
                let ctx = self.open_lane(conn, &peer);
                // The verdict goes first on the wire, ahead of any user frame.
                ctx.queue.push_raw(&welcome);
                self.publish(&ctx, &peer);
                if let Some(old) = replaced {
                    self.close(old, CloseReason::Replaced);
                }
                if reply.send(Ok(ctx)).is_err() {
                    self.abandon(conn);
                }
            }
            Err(code) => {
                let _ = reply.send(Err(code));
            }
        }
    }

    pub(super) fn established(
        &mut self,
        conn: ConnId,
        target: DialTarget,
        peer: PeerHello,
        reply: oneshot::Sender<Option<Arc<ConnCtx>>>,
    ) {
        if self.shutting_down.is_some() {
            let _ = reply.send(None);
            return;
        }
        let now = self.shared.now();
        match self
            .plan
            .on_established(conn, &target, &peer, now, &mut self.out)
        {
            Ok(replaced) => {
                let ctx = self.open_lane(conn, &peer);
                self.publish(&ctx, &peer);
                if let Some(old) = replaced {
                    self.close(old, CloseReason::Replaced);
                }
                if reply.send(Some(ctx)).is_err() {
                    self.abandon(conn);
                }
            }
            Err(reason) => {
                tracing::debug!(peer = %peer.spec().name(), ?reason, "dropping established dial");
                let _ = reply.send(None);
            }
        }
    }

    /// A lane opened for a connection whose task is gone (it gave up waiting for us): no task
    /// will report it closed, so it is closed here.
    fn abandon(&mut self, conn: ConnId) {
        let Some(ctx) = self.conns.get(&conn).cloned() else {
            return;
        };
        ctx.queue.close();
        ctx.cancel.cancel();
        self.shared
            .stats
            .node
            .connections_closed
            .fetch_add(1, Relaxed);
        self.closed(conn, ctx.peer.clone(), ctx.channel.clone(), ctx.lane);
    }

    pub(super) fn closed(&mut self, conn: ConnId, node: NodeName, channel: ChannelName, lane: u16) {
        self.conns.remove(&conn);
        self.shared.table.remove(&node, &channel, lane, conn);
        let now = self.shared.now();
        self.plan
            .on_closed(conn, &node, &channel, lane, now, &mut self.out);
    }

    pub(super) fn shutdown(&mut self, reply: oneshot::Sender<()>) {
        self.shutting_down = Some(reply);
        let wanted: Vec<NodeName> = self.plan.wanted().cloned().collect();
        for n in wanted {
            self.plan.forget(&n, &mut self.out);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.close(c, CloseReason::Unwanted);
        }
        let waiters: Vec<ConnectReply> = self
            .addr_waiters
            .drain()
            .flat_map(|(_, w)| w)
            .chain(self.node_waiters.drain().flat_map(|(_, w)| w))
            .chain(self.join_addrs.drain().flat_map(|(_, w)| w))
            .chain(self.join_nodes.drain().flat_map(|(_, w)| w))
            .collect();
        for w in waiters {
            let _ = w.send(Err(ConnectError::ShuttingDown));
        }
    }

    fn open_lane(&mut self, conn: ConnId, peer: &PeerHello) -> Arc<ConnCtx> {
        let cfg = &self.shared.cfg;
        let monotonic = self
            .shared
            .spec
            .channel(&peer.channel)
            .or_else(|| peer.spec().channel(&peer.channel))
            .is_some_and(|o| o.monotonic);
        let stats = self.shared.stats.channel(&peer.channel).clone();
        // Nothing larger than the peer accepts is sent (a node's limit is at least the floor
        // its config allows, whatever it claims).
        let theirs = (peer.identity.max_frame as usize).max(MIN_MAX_FRAME_LEN);
        let queue = Arc::new(LaneQueue::new(
            cfg.send_queue_bytes,
            if monotonic {
                Overflow::DropOldest
            } else {
                Overflow::Block
            },
            cfg.max_frame_len.min(theirs),
            stats.clone(),
        ));
        let ctx = Arc::new(ConnCtx {
            shared: self.shared.clone(),
            conn,
            peer: peer.spec().name().clone(),
            peer_creation: peer.creation(),
            peer_relays: partisan_core::overlay::client_server::Role::from_tag(
                peer.identity.tag.as_ref(),
            ) == Some(partisan_core::overlay::client_server::Role::Server),
            channel: peer.channel.clone(),
            lane: peer.lane,
            queue,
            stats,
            cancel: self.shared.shutdown_conns.child_token(),
            fair_share: cfg
                .write_chunk
                .get(&peer.channel)
                .copied()
                .unwrap_or(crate::config::DEFAULT_WRITE_CHUNK),
        });
        self.conns.insert(conn, ctx.clone());
        self.remember_identity(peer.identity.clone());
        self.shared
            .stats
            .node
            .connections_opened
            .fetch_add(1, Relaxed);
        ctx
    }

    fn publish(&mut self, ctx: &Arc<ConnCtx>, peer: &PeerHello) {
        self.shared.table.install(
            peer.spec(),
            peer.creation(),
            &peer.channel,
            peer.lane,
            Arc::new(LaneHandle {
                conn: ctx.conn,
                queue: ctx.queue.clone(),
            }),
        );
        // Overlay messages kept while no lane was open go out on this one (a peer that lost
        // one lane and kept others never comes "up" again to flush them).
        self.flush_pending(peer.spec().name());
    }

    /// Closes a connection on purpose: flush, goodbye, then cut after [`LINGER`].
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(ctx) = self.conns.get(&conn).cloned() else {
            return;
        };
        tracing::debug!(peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, ?reason, "closing connection");
        self.shared
            .table
            .remove(&ctx.peer, &ctx.channel, ctx.lane, conn);
        ctx.queue.close();
        let cancel = ctx.cancel.clone();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(LINGER) => cancel.cancel(),
            }
        });
    }

    pub(super) fn apply_plan(&mut self, o: PlanOutput) {
        let now = self.shared.now();
        match o {
            PlanOutput::Dial(req) => self.spawn_dial(req),
            PlanOutput::Close { conn, reason } => self.close(conn, reason),
            PlanOutput::PeerUp { hello } => {
                let name = hello.spec().name().clone();
                tracing::info!(peer = %name, creation = hello.creation(), "peer up");
                self.remember_identity(hello.identity.clone());
                for w in self.node_waiters.remove(&name).unwrap_or_default() {
                    let _ = w.send(Ok(name.clone()));
                }
                self.flush_pending(&name);
                let info = super::overlay_io::peer_info(&hello.identity);
                if let Some(waiters) = self.join_nodes.remove(&name) {
                    self.overlay.join(&info, now, &mut self.overlay_out);
                    for w in waiters {
                        let _ = w.send(Ok(name.clone()));
                    }
                }
                self.overlay.on_peer_up(&info, now, &mut self.overlay_out);
                self.membership_dirty = true;
            }
            PlanOutput::PeerDown { node } => {
                tracing::info!(peer = %node, "peer down");
                self.overlay.on_peer_down(&node, now, &mut self.overlay_out);
                self.membership_dirty = true;
                self.lost.insert(node);
            }
            PlanOutput::Resolved { addr, hello } => {
                let name = hello.spec().name().clone();
                for w in self.addr_waiters.remove(&addr).unwrap_or_default() {
                    let _ = w.send(Ok(name.clone()));
                }
                if let Some(waiters) = self.join_addrs.remove(&addr) {
                    let info = super::overlay_io::peer_info(&hello.identity);
                    self.overlay.join(&info, now, &mut self.overlay_out);
                    for w in waiters {
                        let _ = w.send(Ok(name.clone()));
                    }
                }
            }
            PlanOutput::Unreachable { node } => {
                let dropped = self.pending.remove(&node).map_or(0, |q| q.len());
                self.shared
                    .stats
                    .node
                    .overlay_dropped
                    .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(peer = %node, dropped, "peer unreachable");
                self.overlay
                    .on_unreachable(&node, now, &mut self.overlay_out);
            }
            PlanOutput::Forgotten { .. } => {}
            PlanOutput::GaveUp { target, reason } => {
                tracing::warn!(?target, %reason, "giving up on connection target");
                let waiters: Vec<ConnectReply> = match &target {
                    DialTarget::Addr(a) => self
                        .addr_waiters
                        .remove(a)
                        .into_iter()
                        .chain(self.join_addrs.remove(a))
                        .flatten()
                        .collect(),
                    DialTarget::Node(n) => self
                        .node_waiters
                        .remove(n)
                        .into_iter()
                        .chain(self.join_nodes.remove(n))
                        .flatten()
                        .collect(),
                };
                for w in waiters {
                    let _ = w.send(Err(ConnectError::GaveUp(reason.clone())));
                }
                if let DialTarget::Node(n) = &target {
                    self.pending.remove(n);
                    self.overlay.on_unreachable(n, now, &mut self.overlay_out);
                }
            }
        }
    }

    fn spawn_dial(&self, req: DialRequest) {
        let shared = self.shared.clone();
        let conn = shared.next_conn_id();
        self.shared.tasks.spawn(async move {
            let result = tokio::select! {
                _ = shared.shutdown_conns.cancelled() => return,
                r = handshake_io::dial(&shared, &req) => r,
            };
            match result {
                Ok(dialed) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = DriverCmd::Established {
                        conn,
                        target: req.target.clone(),
                        peer: dialed.peer.clone(),
                        reply: tx,
                    };
                    if shared.driver.send(cmd).await.is_err() {
                        return;
                    }
                    if let Ok(Some(ctx)) = rx.await {
                        connection::run(ctx, dialed.stream, dialed.leftover);
                    }
                }
                Err(e) => {
                    e.count(&shared.stats);
                    tracing::debug!(target = ?req.target, channel = %req.channel, lane = req.lane, error = %e, "dial failed");
                    if e.is_refusal() && !e.is_race() {
                        tracing::warn!(target = ?req.target, error = %e, "connection refused at handshake");
                    }
                    let failure = e.as_dial_failure();
                    let _ = shared
                        .driver
                        .send(DriverCmd::DialFailed { req, failure })
                        .await;
                }
            }
        });
    }
}
