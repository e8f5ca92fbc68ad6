//! Simulated processes of one node, for monitor and link tests: live ids and names, the
//! signals delivered to them, and the rule that a process receiving an exit signal other than
//! `normal` ends with that reason (none of them traps exits).

use std::collections::{BTreeMap, BTreeSet};

use crate::id::{Pid, ProcessName, RemoteRef};
use crate::signals::{ExitReason, LocalProcesses};
use crate::wire::Target;

/// A `Down` delivered to a simulated process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownRecord {
    /// The watching process.
    pub watcher: u64,
    /// The monitor's reference id.
    pub monitor: u64,
    /// What was monitored.
    pub target: RemoteRef,
    /// Why it is down.
    pub reason: ExitReason,
}

/// An exit signal delivered to a simulated process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// The receiving process.
    pub to: u64,
    /// The sender, if any.
    pub from: Option<Pid>,
    /// The reason.
    pub reason: ExitReason,
    /// Whether a link carried it.
    pub link: bool,
}

/// The processes of one simulated node (reset when it crashes).
#[derive(Clone, Debug, Default)]
pub struct SimProcesses {
    next: u64,
    next_ref: u64,
    live: BTreeSet<u64>,
    names: BTreeMap<ProcessName, u64>,
    /// Every `Down` delivered, in order.
    pub downs: Vec<DownRecord>,
    /// Every exit signal delivered, in order.
    pub exits: Vec<ExitRecord>,
    /// Processes that ended, with their reason, in order.
    pub ended: Vec<(u64, ExitReason)>,
    /// For each process that ended: how many `Down`s and exit signals had been delivered on
    /// this node when it did (so a check can tell what was delivered after).
    pub end_marks: BTreeMap<u64, (usize, usize)>,
}

impl SimProcesses {
    /// A new live process; its id.
    pub fn spawn(&mut self) -> u64 {
        self.next += 1;
        self.live.insert(self.next);
        self.next
    }

    /// A fresh reference id.
    pub fn make_ref(&mut self) -> u64 {
        self.next_ref += 1;
        self.next_ref
    }

    /// Registers `name` for live process `id`.
    pub fn register(&mut self, name: ProcessName, id: u64) -> bool {
        if !self.live.contains(&id) || self.names.contains_key(&name) {
            return false;
        }
        self.names.insert(name, id);
        true
    }

    /// Ends process `id`; whether it was alive.
    pub fn end(&mut self, id: u64, reason: ExitReason) -> bool {
        if !self.live.remove(&id) {
            return false;
        }
        self.names.retain(|_, v| *v != id);
        self.ended.push((id, reason));
        self.end_marks
            .insert(id, (self.downs.len(), self.exits.len()));
        true
    }

    /// Live process ids, in order.
    pub fn live(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.iter().copied()
    }

    /// Whether `id` is alive.
    pub fn alive(&self, id: u64) -> bool {
        self.live.contains(&id)
    }

    /// How many processes are alive.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The live process registered as `name`, if any.
    pub fn whereis(&self, name: &ProcessName) -> Option<u64> {
        self.names.get(name).copied()
    }
}

impl LocalProcesses for SimProcesses {
    fn watch(&mut self, target: &Target) -> Option<u64> {
        let id = match target {
            Target::Pid(id) => *id,
            Target::Ref(_) => return None,
            Target::Name(n) => *self.names.get(n)?,
        };
        self.live.contains(&id).then_some(id)
    }

    fn is_alive(&self, id: u64) -> bool {
        self.live.contains(&id)
    }
}
