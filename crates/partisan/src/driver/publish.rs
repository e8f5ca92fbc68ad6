//! What the engine tells the API: answers to callers, the membership snapshot and up/down
//! events, counters, and the log.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use partisan_core::connection_plan::DialTarget;
use partisan_core::engine::{Answer, ConnectFailure, Event};

use super::{Driver, Reply};
use crate::error::ConnectError;
use crate::membership::Snapshot;
use crate::stats::BroadcastSnapshot;

impl From<ConnectFailure> for ConnectError {
    fn from(f: ConnectFailure) -> ConnectError {
        match f {
            ConnectFailure::SelfConnect(addr) => ConnectError::SelfConnect(addr),
            ConnectFailure::Dial(f) => ConnectError::from_dial(f, std::time::Duration::ZERO),
            ConnectFailure::GaveUp(reason) => ConnectError::GaveUp(reason),
            ConnectFailure::Cancelled(_) | ConnectFailure::LeftCluster => {
                ConnectError::GaveUp(f.to_string())
            }
            ConnectFailure::ShuttingDown => ConnectError::ShuttingDown,
        }
    }
}

impl Driver {
    /// Drains the engine's events, publishes membership and counters if they changed, then
    /// answers callers (who so see the membership their command left).
    pub(super) fn publish(&mut self) {
        let mut answers = Vec::new();
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Answer { waiter, answer } => {
                    if let Some(reply) = self.replies.remove(&waiter) {
                        answers.push((reply, answer));
                    }
                }
                Event::PeerUp { node, creation } => {
                    tracing::info!(peer = %node, creation, "peer up");
                }
                Event::PeerDown { node } => {
                    // At shutdown, waiting calls fail with `Stopped` instead.
                    if self.shared.is_stopped() {
                        tracing::debug!(peer = %node, "peer down (this node is stopping)");
                    } else {
                        tracing::info!(peer = %node, "peer down");
                        self.shared.rpc.peer_down(&self.shared.stats.rpc, &node);
                    }
                }
                Event::Unreachable { node, dropped } => {
                    tracing::debug!(peer = %node, dropped, "peer unreachable");
                }
                Event::GaveUp { target, reason } => {
                    tracing::warn!(
                        peer = %target_text(&target),
                        "cannot connect to {}: {reason}; not retrying",
                        target_text(&target)
                    );
                }
                Event::DialFailing {
                    target,
                    failure,
                    failures,
                } => {
                    tracing::warn!(
                        peer = %target_text(&target),
                        failures,
                        "cannot connect to {}: {failure}; retrying with backoff",
                        target_text(&target)
                    );
                }
                Event::Downed { node, after } => {
                    tracing::warn!(
                        peer = %node,
                        "removed member {node}: unreachable for {after:?} (down_after)"
                    );
                }
                Event::Unresponsive { node, after } => {
                    tracing::info!(
                        peer = %node,
                        "connection lost: {node} answered no liveness ping for {after:?}; its lanes are cut"
                    );
                }
                Event::KeepaliveTimeout { conn, node } => {
                    tracing::info!(peer = %node, conn = conn.0, "connection lost: keepalive unanswered");
                }
                Event::OverlayRejected { node, error } => {
                    tracing::warn!(peer = %node, reason = %error, "dropped overlay message");
                }
                Event::MembershipChanged => self.membership_dirty = true,
                Event::Down {
                    watcher,
                    monitor,
                    target,
                    reason,
                } => self.shared.remote_down(watcher, monitor, target, reason),
                Event::Exit {
                    to,
                    from,
                    reason,
                    link,
                } => self.shared.exit_signal(to, from, reason, link),
            }
        }
        if self.membership_dirty {
            self.membership_dirty = false;
            self.publish_membership();
        }
        let s = self.engine.stats();
        let node = &self.shared.stats.node;
        node.overlay_dropped.store(s.overlay_dropped(), Relaxed);
        // The relay path counts its own rejections in the same counter: add the engine's new
        // ones rather than overwrite.
        let rejected = s.overlay_rejected;
        node.overlay_rejected
            .fetch_add(rejected - self.rejected_published, Relaxed);
        self.rejected_published = rejected;
        node.peers_known
            .store(self.engine.known_identities() as u64, Relaxed);
        node.broadcast_sent.store(s.broadcast_handed, Relaxed);
        node.broadcast_dropped.store(
            s.broadcast_returned + s.broadcast_dropped_unreachable,
            Relaxed,
        );
        node.broadcast_unknown_handler
            .store(s.broadcast_unknown_handler, Relaxed);
        node.signals_sent.store(s.signals_handed, Relaxed);
        node.signals_dropped.store(s.signals_dropped, Relaxed);
        node.signal_lanes_cut.store(s.signal_lanes_cut, Relaxed);
        node.members_downed.store(s.members_downed, Relaxed);
        node.liveness_pings.store(s.liveness_pings, Relaxed);
        node.peers_unresponsive.store(s.liveness_failures, Relaxed);
        let sig = self.engine.signal_stats();
        node.peers_lost.store(sig.sessions_lost, Relaxed);
        node.peer_losses_heard.store(sig.sessions_heard, Relaxed);
        node.downs.store(s.downs, Relaxed);
        node.exit_signals.store(s.exit_signals, Relaxed);
        let c = self.engine.signal_counts();
        node.monitors_out.store(c.monitors_out as u64, Relaxed);
        node.monitors_in.store(c.monitors_in as u64, Relaxed);
        node.remote_links.store(c.links as u64, Relaxed);
        node.alive_queries.store(c.queries as u64, Relaxed);
        self.publish_broadcast();
        for (reply, answer) in answers {
            self.answer(reply, answer);
        }
    }

    fn answer(&mut self, reply: Reply, answer: Answer) {
        match (reply, answer) {
            (Reply::Connect(r), Answer::Reached(name)) => {
                let _ = r.send(Ok(name));
            }
            (Reply::Connect(r), Answer::Failed(f)) => {
                let _ = r.send(Err(f.into()));
            }
            (Reply::Cancel(r), Answer::Cancelled(pending)) => {
                let _ = r.send(pending);
            }
            (Reply::Done(r), Answer::Done) => {
                let _ = r.send(());
                if self.engine.is_shut_down() {
                    self.stopped = true;
                }
            }
            (Reply::Reserve(r), Answer::Reserved(res)) => {
                let _ = r.send(res);
            }
            (Reply::Broadcast(r), Answer::Broadcast(res)) => {
                let _ = r.send(res);
            }
            (Reply::Alive(r), Answer::Alive(alive)) => {
                let _ = r.send(alive);
            }
            (_, answer) => {
                tracing::error!(
                    ?answer,
                    "engine answered a command with the wrong kind of answer"
                );
            }
        }
    }

    /// Publishes every handler's counters if any changed (no allocation when none did).
    fn publish_broadcast(&mut self) {
        let mut changed = self.engine.plumtrees().count() != self.broadcast_published.len();
        if !changed {
            changed = self
                .engine
                .plumtrees()
                .zip(&self.broadcast_published)
                .any(|(t, old)| BroadcastSnapshot::of(t) != *old);
        }
        if !changed {
            return;
        }
        self.broadcast_published = self.engine.plumtrees().map(BroadcastSnapshot::of).collect();
        let by_name = self
            .engine
            .plumtrees()
            .map(|t| (t.name().to_string(), BroadcastSnapshot::of(t)))
            .collect();
        self.shared.stats.broadcast.store(Arc::new(by_name));
    }

    fn publish_membership(&mut self) {
        let o = self.engine.overlay();
        let snapshot = Snapshot {
            members: o.members(),
            member_specs: o.member_specs(),
            active: o.active_view(),
            passive: o.passive_view(),
            relays: o.relays(),
            broadcast_members: self.engine.broadcast_members(),
            unreachable: self.engine.unreachable_members(),
        };
        self.shared.membership.store(Arc::new(snapshot));
        let mut events = self.engine.membership_events();
        if self.shared.is_stopped() {
            // This node is the one going: its peers are not reported down (no `on_down`, no
            // `NodeDown` event) as its lanes close.
            events.retain(|e| !matches!(e, crate::MembershipEvent::NodeDown(_)));
        }
        for e in &events {
            tracing::info!(event = ?e, "membership");
            // No receiver is fine: events are a broadcast with a bounded ring.
            let _ = self.shared.events.send(e.clone());
        }
        let table = &self.shared.table;
        let on = |n: &partisan_core::id::NodeName, c: &partisan_core::id::ChannelName| {
            table.is_connected_on(n, c)
        };
        let notices = self.shared.node_monitors.lock().apply(&events, &on);
        for (watcher, signal) in notices {
            self.shared.registry.push_signal(watcher, signal);
        }
    }
}

/// A dial target as a log line names it: the node, or the address.
fn target_text(t: &DialTarget) -> String {
    match t {
        DialTarget::Node(n) => n.to_string(),
        DialTarget::Addr(a) => a.to_string(),
    }
}
