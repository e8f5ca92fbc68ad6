//! Node monitors: processes told when nodes come up and go down, as messages, consistent with
//! the membership events ([`crate::MembershipEvent`]): a node is up while it is a member with
//! a lane open; a channel-scoped monitor looks at that channel's lanes instead.
//!
//! - [`Process::monitor_node`]: one `NodeDown` when that node goes down (at once if it is not
//!   up), then the monitor is gone.
//! - [`Process::monitor_nodes`]: every `NodeUp` and `NodeDown` of every node from now on,
//!   until [`Process::demonitor_nodes`] or the end of the process.

use std::collections::{BTreeMap, BTreeSet};

use partisan_core::engine::MembershipEvent;
use partisan_core::id::{ChannelName, NodeName};
use partisan_core::signals::ExitReason;

use crate::process::signal::Signal;
use crate::process::Process;

/// The node monitors of one node, and the up state they are judged against. Only the driver
/// changes the up state (from the events it publishes), under the same lock that registers
/// monitors, so a monitor never misses a transition.
#[derive(Default)]
pub(crate) struct NodeMonitors {
    /// Members with a lane open, as of the last published event.
    up: BTreeSet<NodeName>,
    /// (node, channel) with a lane of the channel open, for the channels monitors look at.
    channel_up: BTreeSet<(NodeName, ChannelName)>,
    /// One-shot monitors: node -> (watcher, scope).
    once: BTreeMap<NodeName, Vec<(u64, Option<ChannelName>)>>,
    /// Subscribers to every node: watcher -> scopes.
    all: BTreeMap<u64, Vec<Option<ChannelName>>>,
}

/// A signal for a watcher.
pub(crate) type Notice = (u64, Signal);

fn down(node: &NodeName, channel: Option<ChannelName>) -> Signal {
    Signal::NodeDown {
        node: node.clone(),
        channel,
        reason: ExitReason::NoConnection,
    }
}

impl NodeMonitors {
    /// How many monitors are held (one-shot plus subscriptions).
    pub(crate) fn len(&self) -> usize {
        self.once.values().map(Vec::len).sum::<usize>()
            + self.all.values().map(Vec::len).sum::<usize>()
    }

    fn is_up(
        &self,
        node: &NodeName,
        channel: &Option<ChannelName>,
        connected_on: &dyn Fn(&NodeName, &ChannelName) -> bool,
    ) -> bool {
        match channel {
            None => self.up.contains(node),
            Some(c) => self.up.contains(node) && connected_on(node, c),
        }
    }

    /// Adds a one-shot monitor of `node`; the `NodeDown` to deliver at once if it is not up.
    pub(crate) fn monitor_node(
        &mut self,
        watcher: u64,
        node: &NodeName,
        channel: Option<ChannelName>,
        connected_on: &dyn Fn(&NodeName, &ChannelName) -> bool,
    ) -> Option<Signal> {
        if !self.is_up(node, &channel, connected_on) {
            return Some(down(node, channel));
        }
        if let Some(c) = &channel {
            self.channel_up.insert((node.clone(), c.clone()));
        }
        self.once
            .entry(node.clone())
            .or_default()
            .push((watcher, channel));
        None
    }

    /// Removes `watcher`'s one-shot monitors of `node`; how many.
    pub(crate) fn demonitor_node(&mut self, watcher: u64, node: &NodeName) -> usize {
        let Some(list) = self.once.get_mut(node) else {
            return 0;
        };
        let before = list.len();
        list.retain(|(w, _)| *w != watcher);
        let removed = before - list.len();
        if list.is_empty() {
            self.once.remove(node);
        }
        removed
    }

    /// Subscribes `watcher` to every node's transitions (scoped to `channel`, if given).
    pub(crate) fn monitor_nodes(
        &mut self,
        watcher: u64,
        channel: Option<ChannelName>,
        connected_on: &dyn Fn(&NodeName, &ChannelName) -> bool,
    ) {
        if let Some(c) = &channel {
            let ups: Vec<NodeName> = self
                .up
                .iter()
                .filter(|n| connected_on(n, c))
                .cloned()
                .collect();
            for n in ups {
                self.channel_up.insert((n, c.clone()));
            }
        }
        self.all.entry(watcher).or_default().push(channel);
    }

    /// Ends `watcher`'s subscriptions; whether it had any.
    pub(crate) fn demonitor_nodes(&mut self, watcher: u64) -> bool {
        self.all.remove(&watcher).is_some()
    }

    /// Forgets everything `watcher` held (it ended).
    pub(crate) fn remove_watcher(&mut self, watcher: u64) {
        self.all.remove(&watcher);
        self.once.retain(|_, list| {
            list.retain(|(w, _)| *w != watcher);
            !list.is_empty()
        });
    }

    fn scoped_channels(&self) -> BTreeSet<ChannelName> {
        self.once
            .values()
            .flatten()
            .filter_map(|(_, c)| c.clone())
            .chain(self.all.values().flatten().filter_map(Clone::clone))
            .collect()
    }

    /// Applies published membership events and the channels' lane states; returns the
    /// notices to deliver, in order.
    pub(crate) fn apply(
        &mut self,
        events: &[MembershipEvent],
        connected_on: &dyn Fn(&NodeName, &ChannelName) -> bool,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        for e in events {
            match e {
                MembershipEvent::NodeUp(n) => {
                    self.up.insert(n.clone());
                }
                MembershipEvent::NodeDown(n) => {
                    self.up.remove(n);
                }
            }
        }
        // Node-level transitions.
        for e in events {
            let (node, is_up) = match e {
                MembershipEvent::NodeUp(n) => (n, true),
                MembershipEvent::NodeDown(n) => (n, false),
            };
            if !is_up {
                if let Some(list) = self.once.get_mut(node) {
                    let mut kept = Vec::new();
                    for (w, c) in std::mem::take(list) {
                        match c {
                            None => out.push((w, down(node, None))),
                            Some(c) => kept.push((w, Some(c))),
                        }
                    }
                    *list = kept;
                    if list.is_empty() {
                        self.once.remove(node);
                    }
                }
            }
            for (w, scopes) in &self.all {
                if scopes.iter().any(Option::is_none) {
                    out.push((
                        *w,
                        if is_up {
                            Signal::NodeUp {
                                node: node.clone(),
                                channel: None,
                            }
                        } else {
                            down(node, None)
                        },
                    ));
                }
            }
        }
        // Channel-level transitions, only for channels some monitor looks at.
        for c in self.scoped_channels() {
            let candidates: BTreeSet<NodeName> = self
                .up
                .iter()
                .cloned()
                .chain(
                    self.channel_up
                        .iter()
                        .filter(|(_, ch)| *ch == c)
                        .map(|(n, _)| n.clone()),
                )
                .collect();
            for n in candidates {
                let now = self.up.contains(&n) && connected_on(&n, &c);
                let key = (n.clone(), c.clone());
                let was = self.channel_up.contains(&key);
                if now == was {
                    continue;
                }
                if now {
                    self.channel_up.insert(key);
                } else {
                    self.channel_up.remove(&key);
                    if let Some(list) = self.once.get_mut(&n) {
                        let mut kept = Vec::new();
                        for (w, sc) in std::mem::take(list) {
                            if sc.as_ref() == Some(&c) {
                                out.push((w, down(&n, Some(c.clone()))));
                            } else {
                                kept.push((w, sc));
                            }
                        }
                        *list = kept;
                        if list.is_empty() {
                            self.once.remove(&n);
                        }
                    }
                }
                for (w, scopes) in &self.all {
                    if scopes.iter().any(|s| s.as_ref() == Some(&c)) {
                        out.push((
                            *w,
                            if now {
                                Signal::NodeUp {
                                    node: n.clone(),
                                    channel: Some(c.clone()),
                                }
                            } else {
                                down(&n, Some(c.clone()))
                            },
                        ));
                    }
                }
            }
        }
        out
    }
}

impl Process {
    /// Monitors `node`: one [`Signal::NodeDown`] arrives when it goes down (its last lane
    /// closes, or it leaves or is removed), at once if it is not up now; then the monitor is
    /// gone. Consistent with [`crate::Node::events`].
    pub fn monitor_node(&self, node: &NodeName) {
        self.monitor_node_scoped(node, None);
    }

    /// [`Process::monitor_node`] scoped to `channel`: the `NodeDown` comes when the node's
    /// last lane of that channel closes.
    pub fn monitor_node_on(&self, node: &NodeName, channel: &ChannelName) {
        self.monitor_node_scoped(node, Some(channel.clone()));
    }

    fn monitor_node_scoped(&self, node: &NodeName, channel: Option<ChannelName>) {
        let shared = &self.node().shared;
        if !shared.registry.mark_node_monitors(self.pid().id) {
            return;
        }
        let table = &shared.table;
        let on = |n: &NodeName, c: &ChannelName| table.is_connected_on(n, c);
        let now = shared
            .node_monitors
            .lock()
            .monitor_node(self.pid().id, node, channel, &on);
        if let Some(signal) = now {
            shared.registry.push_signal(self.pid().id, signal);
        }
    }

    /// Withdraws this process's one-shot monitors of `node`; how many there were.
    pub fn demonitor_node(&self, node: &NodeName) -> usize {
        self.node()
            .shared
            .node_monitors
            .lock()
            .demonitor_node(self.pid().id, node)
    }

    /// Subscribes this process to every node's [`Signal::NodeUp`] and [`Signal::NodeDown`]
    /// from now on (nodes already up are not announced).
    pub fn monitor_nodes(&self) {
        self.monitor_nodes_scoped(None);
    }

    /// [`Process::monitor_nodes`] scoped to `channel`: up while a lane of that channel is.
    pub fn monitor_nodes_on(&self, channel: &ChannelName) {
        self.monitor_nodes_scoped(Some(channel.clone()));
    }

    fn monitor_nodes_scoped(&self, channel: Option<ChannelName>) {
        let shared = &self.node().shared;
        if !shared.registry.mark_node_monitors(self.pid().id) {
            return;
        }
        let table = &shared.table;
        let on = |n: &NodeName, c: &ChannelName| table.is_connected_on(n, c);
        shared
            .node_monitors
            .lock()
            .monitor_nodes(self.pid().id, channel, &on);
    }

    /// Ends this process's subscriptions of [`Process::monitor_nodes`]; whether it had any.
    pub fn demonitor_nodes(&self) -> bool {
        self.node()
            .shared
            .node_monitors
            .lock()
            .demonitor_nodes(self.pid().id)
    }
}
