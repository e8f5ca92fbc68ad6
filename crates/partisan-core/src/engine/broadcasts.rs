//! The engine's Plumtree instances, one per registered broadcast handler: registration,
//! routing of their messages on the handler's channel, their timers, and the broadcast
//! neighbours they are fed (the overlay's broadcast members that are up).

use std::collections::{BTreeMap, BTreeSet};

use super::{Engine, TimerKey};
use crate::broadcast::{
    validate_handler_name, BroadcastBody, BroadcastError, BroadcastHandler, BroadcastMsg,
    ExchangeSelector, Plumtree, PlumtreeConfig, PlumtreeOutput, PlumtreeTimer,
};
use crate::connection_plan::ConnId;
use crate::id::{ChannelName, NodeName};
use crate::time::Instant;
use crate::wire::{Control, Message};

/// The Plumtrees of one engine.
#[derive(Default)]
pub(crate) struct Broadcasts {
    trees: Vec<(Plumtree, ChannelName)>,
    by_name: BTreeMap<String, usize>,
    out: Vec<PlumtreeOutput>,
}

impl Broadcasts {
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }
}

impl Engine {
    /// Registers a broadcast handler: from now on this node takes part in its Plumtree, over
    /// the handler's channel. Fails if the name is invalid or taken, or the channel is not
    /// configured on this node.
    pub fn register_broadcast(
        &mut self,
        handler: Box<dyn BroadcastHandler>,
        cfg: PlumtreeConfig,
        now: Instant,
    ) -> Result<(), BroadcastError> {
        let name = handler.name().to_string();
        validate_handler_name(&name).map_err(BroadcastError::InvalidName)?;
        if self.broadcasts.by_name.contains_key(&name) {
            return Err(BroadcastError::DuplicateHandler(name));
        }
        let channel = handler
            .channel()
            .unwrap_or_else(ChannelName::default_channel);
        if self.cfg.identity.spec.channel(&channel).is_none() {
            return Err(BroadcastError::UnknownChannel {
                handler: name,
                channel: channel.to_string(),
            });
        }
        let seed = rand::RngCore::next_u64(&mut self.rng);
        let mut tree = Plumtree::new(self.local.name().clone(), handler, cfg, seed);
        tree.set_neighbours(
            self.broadcast_members().into_iter().collect(),
            now,
            &mut self.broadcasts.out,
        );
        tree.start(now, &mut self.broadcasts.out);
        let idx = self.broadcasts.trees.len();
        self.broadcasts.trees.push((tree, channel));
        self.broadcasts.by_name.insert(name, idx);
        self.apply_broadcast(idx);
        self.apply(now);
        Ok(())
    }

    /// Peers the overlay spreads broadcasts to that are up, sorted: the whole cluster on full
    /// mesh and static, the active view on HyParView, servers and a server's own clients on
    /// client-server.
    pub fn broadcast_members(&self) -> Vec<NodeName> {
        self.overlay
            .active_view()
            .into_iter()
            .filter(|n| n != self.local.name() && self.lanes.is_connected(n))
            .collect()
    }

    /// The Plumtree of handler `name`, to read its trees, exchanges and counters.
    pub fn plumtree(&self, name: &str) -> Option<&Plumtree> {
        let i = self.broadcasts.index(name)?;
        Some(&self.broadcasts.trees[i].0)
    }

    /// Every registered handler's Plumtree, in registration order.
    pub fn plumtrees(&self) -> impl Iterator<Item = &Plumtree> {
        self.broadcasts.trees.iter().map(|(t, _)| t)
    }

    /// The handler registered as `name`, if it is an `H`.
    pub fn broadcast_handler<H: BroadcastHandler>(&self, name: &str) -> Option<&H> {
        self.plumtree(name)?.handler().as_any().downcast_ref::<H>()
    }

    /// The handler registered as `name`, mutably, if it is an `H` (changes made through it
    /// are not broadcast; anti-entropy spreads them if the handler exchanges).
    pub fn broadcast_handler_mut<H: BroadcastHandler>(&mut self, name: &str) -> Option<&mut H> {
        let i = self.broadcasts.index(name)?;
        self.broadcasts.trees[i]
            .0
            .handler_mut()
            .as_any_mut()
            .downcast_mut::<H>()
    }

    /// Cancels running anti-entropy exchanges of handler `name` (every handler if `None`);
    /// returns how many.
    pub fn cancel_exchanges(&mut self, name: Option<&str>, which: &ExchangeSelector) -> usize {
        self.broadcasts
            .trees
            .iter_mut()
            .filter(|(t, _)| name.is_none_or(|n| n == t.name()))
            .map(|(t, _)| t.cancel_exchanges(which))
            .sum()
    }

    pub(crate) fn broadcast_command(
        &mut self,
        name: &str,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), BroadcastError> {
        if self.shutdown.is_some() {
            return Err(BroadcastError::ShuttingDown);
        }
        let idx = self
            .broadcasts
            .index(name)
            .ok_or_else(|| BroadcastError::UnknownHandler(name.to_string()))?;
        let r = self.broadcasts.trees[idx]
            .0
            .broadcast(msg, now, &mut self.broadcasts.out);
        self.apply_broadcast(idx);
        r
    }

    pub(crate) fn broadcast_message(&mut self, from: &NodeName, msg: BroadcastMsg, now: Instant) {
        let Some(idx) = self.broadcasts.index(&msg.handler) else {
            self.stats.broadcast_unknown_handler += 1;
            return;
        };
        self.broadcasts.trees[idx]
            .0
            .on_message(from, msg.body, now, &mut self.broadcasts.out);
        self.apply_broadcast(idx);
    }

    pub(crate) fn broadcast_timer(&mut self, idx: usize, timer: PlumtreeTimer, now: Instant) {
        let Some((tree, _)) = self.broadcasts.trees.get_mut(idx) else {
            return;
        };
        tree.on_timer(timer, now, &mut self.broadcasts.out);
        self.apply_broadcast(idx);
    }

    /// Feeds every Plumtree the current broadcast members (after a membership change).
    pub(crate) fn refresh_broadcast_neighbours(&mut self, now: Instant) {
        if self.broadcasts.is_empty() {
            return;
        }
        let members: BTreeSet<NodeName> = self.broadcast_members().into_iter().collect();
        for idx in 0..self.broadcasts.trees.len() {
            let t = &mut self.broadcasts.trees[idx].0;
            if t.neighbours() != &members {
                t.set_neighbours(members.clone(), now, &mut self.broadcasts.out);
                self.apply_broadcast(idx);
            }
        }
    }

    /// Carries out what Plumtree `idx` asked for.
    fn apply_broadcast(&mut self, idx: usize) {
        for o in std::mem::take(&mut self.broadcasts.out) {
            match o {
                PlumtreeOutput::Send { to, body } => self.send_broadcast(idx, to, body),
                PlumtreeOutput::SetTimer { timer, at } => {
                    if self.shutdown.is_none() {
                        self.timers.arm(TimerKey::Broadcast(idx, timer), at);
                    }
                }
            }
        }
    }

    /// Puts a Plumtree message on the handler's channel to `to` (another open lane if that
    /// channel has none); without an open lane it is dropped and counted: Plumtree only talks
    /// to neighbours that are up, and grafts and anti-entropy repair what is lost.
    fn send_broadcast(&mut self, idx: usize, to: NodeName, body: BroadcastBody) {
        let (tree, channel) = &self.broadcasts.trees[idx];
        let conn: Option<ConnId> = self
            .lanes
            .channel_route(&to, channel)
            .or_else(|| self.lanes.control_route(&to));
        let Some(conn) = conn else {
            self.stats.broadcast_dropped_unreachable += 1;
            return;
        };
        self.stats.broadcast_handed += 1;
        let msg = BroadcastMsg {
            handler: tree.name().to_string(),
            body,
        };
        self.outputs.push_back(super::Output::Transmit {
            conn,
            msg: Message::Control(Control::Broadcast(msg)),
        });
    }
}
