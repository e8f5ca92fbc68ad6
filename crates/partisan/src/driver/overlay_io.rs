//! The overlay's side of the driver: commands, protocol messages, timers, membership events.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use partisan_core::connection_plan::Want;
use partisan_core::id::{ChannelName, Creation, NodeName, NodeSpec};
use partisan_core::overlay::{
    ClientServer, FullMesh, FullMeshConfig, HyParView, Overlay, OverlayMsg, OverlayOutput,
    PeerInfo, StaticMembership,
};
use partisan_core::wire::handshake::Identity;
use partisan_core::wire::{Control, Message};
use rand::SeedableRng;

use super::{ConnectReply, ConnectTarget, Driver, JOIN_TTL, PENDING_PER_PEER, TRANSIENT_TTL};
use crate::config::OverlaySettings;
use crate::error::ConnectError;
use crate::membership::Snapshot;
use crate::node::Shared;

/// The overlay state machine the configuration asks for.
pub(super) fn build(shared: &Shared) -> Box<dyn Overlay> {
    let local = peer_info(&shared.identity);
    let rng = Box::new(rand::rngs::StdRng::from_entropy());
    match &shared.cfg.overlay {
        OverlaySettings::FullMesh {
            periodic_interval,
            fanout,
        } => Box::new(FullMesh::new(
            local,
            FullMeshConfig {
                periodic_interval: *periodic_interval,
                fanout: *fanout,
                ..FullMeshConfig::default()
            },
            rng,
        )),
        OverlaySettings::HyParView(cfg) => Box::new(HyParView::new(local, cfg.clone(), rng)),
        OverlaySettings::ClientServer(role) => Box::new(ClientServer::new(local, *role)),
        OverlaySettings::Static(members) => Box::new(StaticMembership::new(local, members.clone())),
    }
}

/// A handshake identity as overlays see peers.
pub(crate) fn peer_info(id: &Identity) -> PeerInfo {
    PeerInfo {
        spec: id.spec.clone(),
        creation: id.creation,
        tag: id.tag.clone(),
    }
}

impl Driver {
    pub(super) fn join(&mut self, target: ConnectTarget, reply: Option<ConnectReply>) {
        if self.shutting_down.is_some() {
            if let Some(r) = reply {
                let _ = r.send(Err(ConnectError::ShuttingDown));
            }
            return;
        }
        let now = self.shared.now();
        let transient = Want::Transient { ttl: JOIN_TTL };
        match target {
            ConnectTarget::Addr(addr) => {
                if self.shared.spec.listen_addrs().contains(&addr) {
                    if let Some(r) = reply {
                        let _ = r.send(Err(ConnectError::SelfConnect(addr)));
                    }
                    return;
                }
                if self.plan.want_addr(addr, transient, now, &mut self.out) {
                    let waiters = self.join_addrs.entry(addr).or_default();
                    waiters.extend(reply);
                    return;
                }
                match self.peer_at(addr) {
                    Some(spec) => self.join_connected(spec.name().clone(), reply),
                    None => {
                        if let Some(r) = reply {
                            let _ = r.send(Err(ConnectError::GaveUp(format!(
                                "{addr} cannot be joined"
                            ))));
                        }
                    }
                }
            }
            ConnectTarget::Spec(spec) => {
                let name = spec.name().clone();
                if &name == self.shared.spec.name() {
                    if let Some(r) = reply {
                        let _ = r.send(Err(ConnectError::GaveUp("that is this node".into())));
                    }
                    return;
                }
                self.plan.want(spec, transient, now, &mut self.out);
                if self.shared.table.is_connected(&name) {
                    self.join_connected(name, reply);
                } else {
                    self.join_nodes.entry(name).or_default().extend(reply);
                }
            }
        }
    }

    fn join_connected(&mut self, name: NodeName, reply: Option<ConnectReply>) {
        let now = self.shared.now();
        if let Some(id) = self.identities.get(&name) {
            let info = peer_info(id);
            self.overlay.join(&info, now, &mut self.overlay_out);
        }
        if let Some(r) = reply {
            let _ = r.send(Ok(name));
        }
    }

    pub(super) fn leave(&mut self) {
        let now = self.shared.now();
        for addr in self.join_addrs.keys() {
            self.plan.unwant_addr(addr);
        }
        let waiters: Vec<ConnectReply> = self
            .join_addrs
            .drain()
            .flat_map(|(_, w)| w)
            .chain(self.join_nodes.drain().flat_map(|(_, w)| w))
            .collect();
        for w in waiters {
            let _ = w.send(Err(ConnectError::GaveUp("left the cluster".into())));
        }
        self.overlay.leave(now, &mut self.overlay_out);
    }

    pub(super) fn update_members(&mut self, specs: Vec<NodeSpec>) {
        let now = self.shared.now();
        let infos: Vec<PeerInfo> = specs
            .into_iter()
            .map(|spec| {
                let known = self.identities.get(spec.name());
                PeerInfo {
                    creation: known.map_or(0, |i| i.creation),
                    tag: known.and_then(|i| i.tag.clone()),
                    spec,
                }
            })
            .collect();
        self.overlay
            .update_members(&infos, now, &mut self.overlay_out);
    }

    pub(super) fn on_control(&mut self, from: NodeName, creation: Creation, msg: Control) {
        let Some(id) = self.identities.get(&from) else {
            tracing::debug!(peer = %from, "control message from an unknown peer dropped");
            return;
        };
        if id.creation != creation {
            tracing::debug!(peer = %from, "control message from another run of the peer dropped");
            return;
        }
        let info = peer_info(id);
        let now = self.shared.now();
        match msg {
            Control::Overlay(m) => {
                if let Err(e) = self
                    .overlay
                    .on_message(&info, m, now, &mut self.overlay_out)
                {
                    self.shared
                        .stats
                        .node
                        .overlay_rejected
                        .fetch_add(1, Relaxed);
                    tracing::warn!(peer = %from, reason = %e, "dropped overlay message");
                }
            }
        }
    }

    pub(super) fn apply_overlay(&mut self, o: OverlayOutput) {
        let now = self.shared.now();
        match o {
            OverlayOutput::Connect(spec) => {
                // A member's spec may have changed (new address) without the names changing.
                self.membership_dirty = true;
                self.plan.want(spec, Want::Overlay, now, &mut self.out)
            }
            OverlayOutput::Disconnect(node) => {
                self.plan.unwant(&node, Want::Overlay, &mut self.out)
            }
            OverlayOutput::Send { to, msg } => self.send_overlay(to, msg),
            OverlayOutput::SetTimer { timer, at } => {
                self.timers.insert(timer, at);
            }
            OverlayOutput::MembersChanged => self.membership_dirty = true,
        }
    }

    /// Sends a protocol message, through a temporary connection when none is up.
    fn send_overlay(&mut self, to: NodeSpec, msg: OverlayMsg) {
        let name = to.name().clone();
        if &name == self.shared.spec.name() {
            return;
        }
        match self.push_control(&name, &msg) {
            Pushed::Queued => return,
            Pushed::Dropped => {
                // Connected but its control queue is full: overlay protocols are periodic and
                // tolerate loss, so drop it rather than keep a message that could arrive stale
                // on some later connection.
                tracing::debug!(peer = %name, "overlay message dropped: control queue full");
                self.shared.stats.node.overlay_dropped.fetch_add(1, Relaxed);
                return;
            }
            Pushed::NotConnected => {}
        }
        let q = self.pending.entry(name.clone()).or_default();
        if q.len() >= PENDING_PER_PEER {
            q.pop_front();
            self.shared.stats.node.overlay_dropped.fetch_add(1, Relaxed);
        }
        q.push_back(msg);
        let now = self.shared.now();
        self.plan.want(
            to,
            Want::Transient { ttl: TRANSIENT_TTL },
            now,
            &mut self.out,
        );
    }

    /// Queues a control frame on a lane to `node`: the membership channel's, else (absent, or
    /// closing but not yet out of the table) the default channel's.
    fn push_control(&self, node: &NodeName, msg: &OverlayMsg) -> Pushed {
        use crate::lane_queue::PushError;
        let table = &self.shared.table;
        let frame = Message::Control(Control::Overlay(msg.clone()));
        let membership = table.route(node, &ChannelName::membership(), None, false);
        let first = match &membership {
            Ok(route) => route.lane.queue.push_control(&frame),
            Err(_) => Err(PushError::Closed),
        };
        let r = match first {
            Err(PushError::Closed) => {
                match table.route(node, &ChannelName::default_channel(), None, true) {
                    Ok(route) => route.lane.queue.push_control(&frame),
                    Err(_) => Err(PushError::Closed),
                }
            }
            r => r,
        };
        match r {
            Ok(()) => Pushed::Queued,
            // No open lane: kept for the next connection, as a lost connection would have it.
            Err(PushError::Closed) => Pushed::NotConnected,
            Err(PushError::Full) => Pushed::Dropped,
            Err(e) => {
                tracing::warn!(peer = %node, error = ?e, "overlay message cannot be framed");
                Pushed::Dropped
            }
        }
    }

    pub(super) fn flush_pending(&mut self, node: &NodeName) {
        let Some(q) = self.pending.remove(node) else {
            return;
        };
        let mut q = q.into_iter();
        while let Some(m) = q.next() {
            match self.push_control(node, &m) {
                Pushed::Queued => {}
                Pushed::Dropped => {
                    self.shared.stats.node.overlay_dropped.fetch_add(1, Relaxed);
                }
                Pushed::NotConnected => {
                    // Lane went away again: keep the rest for the next connection.
                    let rest: std::collections::VecDeque<OverlayMsg> =
                        std::iter::once(m).chain(q).collect();
                    self.pending.insert(node.clone(), rest);
                    return;
                }
            }
        }
    }

    pub(super) fn publish_membership(&mut self) {
        let members = self.overlay.members();
        let me = self.shared.spec.name().clone();
        let table = &self.shared.table;
        let events = self.up.update(&members, &me, |n| table.is_connected(n));
        let snapshot = Snapshot {
            member_specs: self.overlay.member_specs(),
            active: self.overlay.active_view(),
            passive: self.overlay.passive_view(),
            relays: self.overlay.relays(),
            members,
        };
        self.shared.membership.store(Arc::new(snapshot));
        for e in events {
            tracing::info!(event = ?e, "membership");
            // No receiver is fine: events are a broadcast with a bounded ring.
            let _ = self.shared.events.send(e);
        }
    }
}

/// What became of an overlay message handed to a peer's lane.
enum Pushed {
    /// On a lane queue.
    Queued,
    /// The peer is connected but its control queue is full; counted as dropped.
    Dropped,
    /// No lane to the peer: kept pending while a connection is made.
    NotConnected,
}
