//! User commands that reach nodes: connect and join, and the shutdown.

use std::net::SocketAddr;

use crate::connection_plan::{CloseReason, ConnId, Want};
use crate::id::{NodeName, NodeSpec};
use crate::overlay::OverlayTimer;
use crate::time::Instant;

use super::{peer_info, Answer, ConnectFailure, Engine, Target, TimerKey, Waiter};

impl Engine {
    /// Answers a connect or join that cannot start (this node is shutting down, or the target
    /// is this node); returns whether it did.
    fn refused(&mut self, target: &Target, waiter: Option<Waiter>) -> bool {
        let failure = if self.shutdown.is_some() {
            ConnectFailure::ShuttingDown
        } else {
            match target {
                Target::Addr(addr) if self.local.spec.listen_addrs().contains(addr) => {
                    ConnectFailure::SelfConnect(*addr)
                }
                Target::Spec(spec) if spec.name() == self.local.name() => {
                    ConnectFailure::GaveUp("that is this node".into())
                }
                _ => return false,
            }
        };
        self.answer_opt(waiter, Answer::Failed(failure));
        true
    }

    pub(super) fn connect(&mut self, target: Target, waiter: Option<Waiter>, now: Instant) {
        if self.refused(&target, waiter) {
            return;
        }
        match target {
            Target::Spec(spec) => {
                let name = spec.name().clone();
                self.plan.want(spec, Want::User, now, &mut self.plan_out);
                if self.lanes.is_connected(&name) {
                    self.answer_opt(waiter, Answer::Reached(name));
                } else {
                    self.waiters
                        .connect_node
                        .entry(name)
                        .or_default()
                        .extend(waiter);
                }
            }
            Target::Addr(addr) => {
                if self
                    .plan
                    .want_addr(addr, Want::User, now, &mut self.plan_out)
                {
                    self.waiters
                        .connect_addr
                        .entry(addr)
                        .or_default()
                        .extend(waiter);
                    return;
                }
                // The address belongs to a connected peer.
                match self.peer_at(addr) {
                    Some(spec) => {
                        let name = spec.name().clone();
                        self.plan.want(spec, Want::User, now, &mut self.plan_out);
                        self.answer_opt(waiter, Answer::Reached(name));
                    }
                    None => self.answer_opt(
                        waiter,
                        Answer::Failed(ConnectFailure::GaveUp(format!(
                            "{addr} is not reachable as a new target"
                        ))),
                    ),
                }
            }
        }
    }

    /// The spec of a connected peer listening at `addr`.
    pub(super) fn peer_at(&self, addr: SocketAddr) -> Option<NodeSpec> {
        self.identities
            .values()
            .map(|i| &i.spec)
            .find(|s| s.listen_addrs().contains(&addr) && self.lanes.is_connected(s.name()))
            .cloned()
    }

    pub(super) fn join(&mut self, target: Target, waiter: Option<Waiter>, now: Instant) {
        if self.refused(&target, waiter) {
            return;
        }
        let transient = Want::Transient {
            ttl: self.cfg.join_ttl,
        };
        match target {
            Target::Addr(addr) => {
                if self
                    .plan
                    .want_addr(addr, transient, now, &mut self.plan_out)
                {
                    self.waiters
                        .join_addr
                        .entry(addr)
                        .or_default()
                        .extend(waiter);
                    return;
                }
                match self.peer_at(addr) {
                    Some(spec) => self.join_connected(spec.name().clone(), waiter, now),
                    None => self.answer_opt(
                        waiter,
                        Answer::Failed(ConnectFailure::GaveUp(format!("{addr} cannot be joined"))),
                    ),
                }
            }
            Target::Spec(spec) => {
                let name = spec.name().clone();
                self.plan
                    .want(spec.clone(), transient, now, &mut self.plan_out);
                if self.lanes.is_connected(&name) {
                    self.join_connected(name, waiter, now);
                } else {
                    let entry = self
                        .waiters
                        .join_node
                        .entry(name)
                        .or_insert_with(|| (spec.clone(), Vec::new()));
                    entry.0 = spec;
                    entry.1.extend(waiter);
                }
            }
        }
    }

    pub(super) fn join_connected(&mut self, name: NodeName, waiter: Option<Waiter>, now: Instant) {
        if let Some(id) = self.identities.get(&name) {
            let info = peer_info(id);
            self.overlay.join(&info, now, &mut self.overlay_out);
        }
        self.answer_opt(waiter, Answer::Reached(name));
    }

    pub(super) fn shut_down(&mut self, waiter: Option<Waiter>) {
        let waiters = self.shutdown.get_or_insert_with(Vec::new);
        waiters.extend(waiter);
        let wanted: Vec<NodeName> = self.plan.wanted().cloned().collect();
        for n in wanted {
            self.plan.forget(&n, &mut self.plan_out);
        }
        for a in self.plan.pending_addrs().copied().collect::<Vec<_>>() {
            self.plan.unwant_addr(&a);
        }
        let conns: Vec<ConnId> = self.lanes.iter().map(|(c, _)| c).collect();
        for c in conns {
            self.close(c, CloseReason::ShuttingDown);
        }
        for w in self.waiters.take_all() {
            self.answer(w, Answer::Failed(ConnectFailure::ShuttingDown));
        }
        let timers: Vec<OverlayTimer> = [
            OverlayTimer::Periodic,
            OverlayTimer::Push,
            OverlayTimer::Shuffle,
            OverlayTimer::Promotion,
        ]
        .into();
        for t in timers {
            self.timers.cancel(&TimerKey::Overlay(t));
        }
    }
}
