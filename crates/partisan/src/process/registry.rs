//! Local processes: pid allocation, mailboxes, registered names and reference aliases.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use partisan_core::id::{Pid, ProcessName, Ref, RemoteRef};
use partisan_core::signals::ExitReason;
use partisan_core::wire::Target;

use crate::process::mailbox::{Mailbox, Refused};
use crate::process::signal::Signal;

/// A message as delivered to a process.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The sending process, when the message was sent from one (remote or local).
    pub from: Option<Pid>,
    /// The alias reference the message was addressed to, when it was sent to one.
    pub via: Option<Ref>,
    /// The payload, exactly as sent (empty for a signal).
    pub payload: Bytes,
    /// Set when the runtime itself sent this (a monitor's `Down`, a trapped exit signal, a
    /// node monitor's notice); `None` for every message a process sent.
    pub signal: Option<Box<Signal>>,
}

impl Envelope {
    /// Decodes a payload sent with a typed send (postcard).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, postcard::Error> {
        postcard::from_bytes(&self.payload)
    }

    /// The runtime's signal this envelope carries, if it is one.
    pub fn signal(&self) -> Option<&Signal> {
        self.signal.as_deref()
    }

    /// An envelope carrying a signal.
    pub(crate) fn of_signal(signal: Signal) -> Envelope {
        Envelope {
            from: None,
            via: None,
            payload: Bytes::new(),
            signal: Some(Box::new(signal)),
        }
    }
}

/// A local monitor held by a watcher: the target's entry lists it.
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    pub(crate) monitor: u64,
    pub(crate) watcher: u64,
    /// As the watcher named it.
    pub(crate) target: RemoteRef,
}

/// What the process of an entry relates to, besides its mailbox.
#[derive(Default)]
pub(crate) struct Relations {
    /// Local processes monitoring this one.
    pub(crate) watchers: Vec<Watcher>,
    /// Monitors this process holds: reference id and, for a local target, its id (a remote
    /// target's monitor lives in the engine).
    pub(crate) monitors: Vec<(u64, Option<u64>)>,
    /// Local processes linked with this one.
    pub(crate) links: Vec<u64>,
    /// Monitored or linked across nodes (either way): its end must reach the engine.
    pub(crate) remote: bool,
    /// Holds node monitors.
    pub(crate) node_monitors: bool,
}

struct Entry {
    mailbox: Arc<Mailbox>,
    names: Vec<ProcessName>,
    aliases: Vec<u64>,
    rel: Relations,
    trap_exits: bool,
    /// The task running a spawned process, cancelled when it is killed.
    task: Option<tokio::task::AbortHandle>,
}

/// What ended a process left to carry out.
pub(crate) struct Ended {
    pub(crate) rel: Relations,
    pub(crate) task: Option<tokio::task::AbortHandle>,
}

/// What an exit signal does to its receiver.
pub(crate) enum Disposition {
    /// It traps exits: the signal becomes a message.
    Trap(Arc<Mailbox>),
    /// Nothing (a `normal` signal to a process not trapping exits, or no such process).
    Ignore,
    /// It ends with this reason.
    End(ExitReason),
}

/// Where a message for this node goes.
pub(crate) enum LocalTarget<'a> {
    Pid(u64),
    Ref(u64),
    Name(&'a ProcessName),
}

/// A fast hasher for the runtime's own keys (pid and reference ids, process, node and channel
/// names): a multiply-rotate mix over 8-byte words, as in rustc's FxHash. Every message looks
/// up at least one such key, and SipHash cost more than the rest of a lookup. Not resistant to
/// chosen collisions: its keys are minted locally or come from authenticated peers.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Spread the low bits into the high ones, which pick buckets and shards.
        self.0.rotate_left(26)
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type KeyHash = BuildHasherDefault<KeyHasher>;

/// The process table of one node.
pub(crate) struct Registry {
    next_pid: AtomicU64,
    next_ref: AtomicU64,
    procs: DashMap<u64, Entry, KeyHash>,
    names: DashMap<ProcessName, u64, KeyHash>,
    aliases: DashMap<u64, u64, KeyHash>,
    capacity: usize,
    bytes: usize,
}

impl Registry {
    /// Mailboxes hold at most `capacity` messages and `bytes` bytes of payload (a single
    /// larger message is admitted into an empty mailbox).
    pub(crate) fn new(capacity: usize, bytes: usize) -> Self {
        Registry {
            next_pid: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            procs: DashMap::default(),
            names: DashMap::default(),
            aliases: DashMap::default(),
            capacity,
            bytes,
        }
    }

    /// Creates a mailbox and returns its id and the mailbox.
    pub(crate) fn create(&self) -> (u64, Arc<Mailbox>) {
        let id = self.next_pid.fetch_add(1, Relaxed);
        let mailbox = Arc::new(Mailbox::new(self.capacity, self.bytes));
        self.procs.insert(
            id,
            Entry {
                mailbox: mailbox.clone(),
                names: Vec::new(),
                aliases: Vec::new(),
                rel: Relations::default(),
                trap_exits: false,
                task: None,
            },
        );
        (id, mailbox)
    }

    /// Records the task running process `id` (so a kill can cancel it). Returns `false` if the
    /// process already ended (the caller then cancels the task itself).
    pub(crate) fn set_task(&self, id: u64, task: tokio::task::AbortHandle) -> bool {
        match self.procs.get_mut(&id) {
            Some(mut e) => {
                e.task = Some(task);
                true
            }
            None => false,
        }
    }

    /// Ends process `id`: removes it with its names and aliases, closes its mailbox, and
    /// returns what it related to; `None` if it had already ended.
    pub(crate) fn end(&self, id: u64) -> Option<Ended> {
        let (_, e) = self.procs.remove(&id)?;
        // Cancel a spawned process's task before its mailbox closes: woken by the close, it
        // must not run on (as if its node were stopping) before the cancellation lands.
        if let Some(task) = &e.task {
            task.abort();
        }
        e.mailbox.close();
        for n in e.names {
            self.names.remove_if(&n, |_, v| *v == id);
        }
        for a in e.aliases {
            self.aliases.remove_if(&a, |_, v| *v == id);
        }
        Some(Ended {
            rel: e.rel,
            task: e.task,
        })
    }

    /// Resolves a destination on this node to a live process id.
    pub(crate) fn resolve(&self, target: &Target) -> Option<u64> {
        let id = match target {
            Target::Pid(id) => *id,
            Target::Ref(r) => *self.aliases.get(r)?,
            Target::Name(n) => *self.names.get(n)?,
        };
        self.procs.contains_key(&id).then_some(id)
    }

    /// Resolves `target` to a live process and marks it related across nodes, atomically with
    /// respect to its end.
    pub(crate) fn watch(&self, target: &Target) -> Option<u64> {
        let id = self.resolve(target)?;
        let mut e = self.procs.get_mut(&id)?;
        e.rel.remote = true;
        Some(id)
    }

    /// Marks process `id` related across nodes; `false` if it already ended.
    pub(crate) fn mark_remote(&self, id: u64) -> bool {
        match self.procs.get_mut(&id) {
            Some(mut e) => {
                e.rel.remote = true;
                true
            }
            None => false,
        }
    }

    /// Adds a local monitor of `target_id`; `false` (and nothing recorded) if the target is
    /// not alive. Nothing is left behind when the watcher has ended, or either side ends
    /// meanwhile.
    pub(crate) fn add_watcher(&self, target_id: u64, w: Watcher) -> bool {
        let (monitor, watcher) = (w.monitor, w.watcher);
        if !self.procs.contains_key(&watcher) {
            return self.procs.contains_key(&target_id);
        }
        match self.procs.get_mut(&target_id) {
            Some(mut e) => e.rel.watchers.push(w),
            None => return false,
        }
        let recorded = match self.procs.get_mut(&watcher) {
            Some(mut e) => {
                e.rel.monitors.push((monitor, Some(target_id)));
                true
            }
            None => false,
        };
        if !recorded {
            self.remove_watcher(target_id, monitor);
        } else if !self.procs.contains_key(&target_id) {
            // The target ended meanwhile; its end delivered the Down.
            self.drop_watcher_record(watcher, monitor);
        }
        true
    }

    /// Records that `watcher` holds remote monitor `monitor`; `false` if it already ended.
    pub(crate) fn add_remote_monitor(&self, watcher: u64, monitor: u64) -> bool {
        match self.procs.get_mut(&watcher) {
            Some(mut e) => {
                e.rel.remote = true;
                e.rel.monitors.push((monitor, None));
                true
            }
            None => false,
        }
    }

    /// Forgets monitor `monitor` held by `watcher`: `None` if it does not hold it, else
    /// whether its target is local (`Some(Some(target))`, removed there too) or remote.
    pub(crate) fn remove_monitor(&self, watcher: u64, monitor: u64) -> Option<Option<u64>> {
        let target = {
            let mut e = self.procs.get_mut(&watcher)?;
            let i = e.rel.monitors.iter().position(|(m, _)| *m == monitor)?;
            e.rel.monitors.swap_remove(i).1
        };
        if let Some(t) = target {
            if let Some(mut e) = self.procs.get_mut(&t) {
                e.rel.watchers.retain(|w| w.monitor != monitor);
            }
        }
        Some(target)
    }

    /// Removes monitor `monitor` from the watchers of local process `target`.
    pub(crate) fn remove_watcher(&self, target: u64, monitor: u64) {
        if let Some(mut e) = self.procs.get_mut(&target) {
            e.rel.watchers.retain(|w| w.monitor != monitor);
        }
    }

    /// Removes a local watcher's record of monitor `monitor` of `target` (the target ended).
    pub(crate) fn drop_watcher_record(&self, watcher: u64, monitor: u64) {
        if let Some(mut e) = self.procs.get_mut(&watcher) {
            e.rel.monitors.retain(|(m, _)| *m != monitor);
        }
    }

    /// Links local process `a` (the caller) with local process `b`. Nothing is recorded unless
    /// both are alive; a side that ends meanwhile leaves no record behind.
    pub(crate) fn link(&self, a: u64, b: u64) -> LinkOutcome {
        if !self.procs.contains_key(&a) {
            return LinkOutcome::CallerEnded;
        }
        if a == b {
            return LinkOutcome::Linked;
        }
        match self.procs.get_mut(&b) {
            Some(mut e) => {
                if !e.rel.links.contains(&a) {
                    e.rel.links.push(a);
                }
            }
            None => return LinkOutcome::TargetEnded,
        }
        let recorded = match self.procs.get_mut(&a) {
            Some(mut e) => {
                if !e.rel.links.contains(&b) {
                    e.rel.links.push(b);
                }
                true
            }
            None => false,
        };
        if !recorded {
            // `a` ended between the checks: its end did not see `b`; take the record back.
            self.unlink(a, b);
            return LinkOutcome::CallerEnded;
        }
        if !self.procs.contains_key(&b) {
            // `b` ended meanwhile and signalled `a` already (or will find no record): drop the
            // record on `a`'s side too.
            self.unlink(a, b);
        }
        LinkOutcome::Linked
    }

    /// Removes the link between local processes `a` and `b`, if any.
    pub(crate) fn unlink(&self, a: u64, b: u64) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(mut e) = self.procs.get_mut(&x) {
                e.rel.links.retain(|l| *l != y);
            }
        }
    }

    /// Sets whether process `id` traps exits; `false` if it ended.
    pub(crate) fn set_trap_exits(&self, id: u64, on: bool) -> bool {
        match self.procs.get_mut(&id) {
            Some(mut e) => {
                e.trap_exits = on;
                true
            }
            None => false,
        }
    }

    /// Marks process `id` as holding node monitors; `false` if it ended.
    pub(crate) fn mark_node_monitors(&self, id: u64) -> bool {
        match self.procs.get_mut(&id) {
            Some(mut e) => {
                e.rel.node_monitors = true;
                true
            }
            None => false,
        }
    }

    /// What an exit signal with `reason` does to process `id`.
    pub(crate) fn disposition(&self, id: u64, reason: &ExitReason) -> Disposition {
        let Some(e) = self.procs.get(&id) else {
            return Disposition::Ignore;
        };
        match reason {
            ExitReason::Kill => Disposition::End(ExitReason::Killed),
            _ if e.trap_exits => Disposition::Trap(e.mailbox.clone()),
            ExitReason::Normal => Disposition::Ignore,
            r => Disposition::End(r.clone()),
        }
    }

    /// Puts a signal in process `id`'s mailbox, past its bound (signals are bounded by the
    /// monitors and links that produce them); `false` if the process ended.
    pub(crate) fn push_signal(&self, id: u64, signal: Signal) -> bool {
        match self.procs.get(&id) {
            Some(e) => e.mailbox.push_signal(Envelope::of_signal(signal)),
            None => false,
        }
    }

    /// The mailbox of process `id`, if alive.
    pub(crate) fn mailbox(&self, id: u64) -> Option<Arc<Mailbox>> {
        self.procs.get(&id).map(|e| e.mailbox.clone())
    }

    /// Counts of local monitors and links held (each counted once, at the holder for
    /// monitors and at both ends for links).
    pub(crate) fn relation_counts(&self) -> (usize, usize) {
        let mut monitors = 0;
        let mut links = 0;
        for e in self.procs.iter() {
            monitors += e.rel.monitors.iter().filter(|(_, t)| t.is_some()).count();
            links += e.rel.links.len();
        }
        (monitors, links)
    }

    /// A fresh reference id.
    pub(crate) fn make_ref(&self) -> u64 {
        self.next_ref.fetch_add(1, Relaxed)
    }

    /// Registers `name` for process `id`. Fails if the name is held by a live process.
    pub(crate) fn register(&self, name: ProcessName, id: u64) -> Result<(), RegisterFail> {
        let mut entry = self.procs.get_mut(&id).ok_or(RegisterFail::NoProcess)?;
        match self.names.entry(name.clone()) {
            dashmap::Entry::Occupied(_) => Err(RegisterFail::Taken),
            dashmap::Entry::Vacant(v) => {
                v.insert(id);
                entry.names.push(name);
                Ok(())
            }
        }
    }

    /// Removes a registered name; returns whether it was registered.
    pub(crate) fn unregister(&self, name: &ProcessName) -> bool {
        match self.names.remove(name) {
            Some((_, id)) => {
                if let Some(mut e) = self.procs.get_mut(&id) {
                    e.names.retain(|n| n != name);
                }
                true
            }
            None => false,
        }
    }

    /// Pid id registered under `name`.
    pub(crate) fn whereis(&self, name: &ProcessName) -> Option<u64> {
        self.names.get(name).map(|v| *v)
    }

    /// Makes reference `r` an alias of process `id`.
    pub(crate) fn alias(&self, r: u64, id: u64) -> bool {
        let Some(mut e) = self.procs.get_mut(&id) else {
            return false;
        };
        e.aliases.push(r);
        self.aliases.insert(r, id);
        true
    }

    /// Removes an alias; returns whether it existed.
    pub(crate) fn unalias(&self, r: u64) -> bool {
        match self.aliases.remove(&r) {
            Some((_, id)) => {
                if let Some(mut e) = self.procs.get_mut(&id) {
                    e.aliases.retain(|a| *a != r);
                }
                true
            }
            None => false,
        }
    }

    /// Whether process `id` is alive.
    pub(crate) fn is_alive(&self, id: u64) -> bool {
        self.procs.contains_key(&id)
    }

    /// Tries to hand `env` to the mailbox of `target` without waiting. On a full mailbox the
    /// envelope comes back with the mailbox to wait on.
    pub(crate) fn try_deliver(
        &self,
        target: LocalTarget<'_>,
        env: Envelope,
    ) -> Result<(), DeliverFail> {
        let id = match target {
            LocalTarget::Pid(id) => id,
            LocalTarget::Ref(r) => match self.aliases.get(&r) {
                Some(id) => *id,
                None => return Err(DeliverFail::NoProcess),
            },
            LocalTarget::Name(n) => match self.names.get(n) {
                Some(id) => *id,
                None => return Err(DeliverFail::NoProcess),
            },
        };
        let Some(entry) = self.procs.get(&id) else {
            return Err(DeliverFail::NoProcess);
        };
        match entry.mailbox.try_push(env) {
            Ok(()) => Ok(()),
            Err(Refused::Full(env)) => Err(DeliverFail::Full {
                mailbox: entry.mailbox.clone(),
                env,
            }),
            Err(Refused::Closed(_)) => Err(DeliverFail::NoProcess),
        }
    }

    /// Drops every mailbox (node shutdown): receivers see the end of their mailbox.
    pub(crate) fn clear(&self) {
        self.names.clear();
        self.aliases.clear();
        for e in self.procs.iter() {
            e.mailbox.close();
        }
        self.procs.clear();
    }

    /// Number of live processes.
    pub(crate) fn len(&self) -> usize {
        self.procs.len()
    }
}

/// The registry as the engine sees local processes: peers' monitors and links resolve and
/// mark their targets here, or were resolved by the reader that received them
/// ([`Registry::pre_resolve`]).
pub(crate) struct Watching<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) resolved: Option<Option<u64>>,
}

impl partisan_core::signals::LocalProcesses for Watching<'_> {
    fn watch(&mut self, target: &Target) -> Option<u64> {
        match self.resolved.take() {
            Some(r) => r,
            None => self.registry.watch(target),
        }
    }

    fn is_alive(&self, id: u64) -> bool {
        self.registry.is_alive(id)
    }
}

impl Registry {
    /// For a peer's monitor or link, the local target resolved and marked now (the reader
    /// does this before delivering the messages after it); `None` for other signals.
    pub(crate) fn pre_resolve(
        &self,
        m: &partisan_core::signals::ProcessMsg,
    ) -> Option<Option<u64>> {
        use partisan_core::signals::ProcessMsg;
        match m {
            ProcessMsg::Monitor { target, .. } => Some(self.watch(target)),
            ProcessMsg::Link { to, .. } => Some(self.watch(&Target::Pid(*to))),
            _ => None,
        }
    }
}

/// What [`Registry::link`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkOutcome {
    Linked,
    /// The process to link with is not alive.
    TargetEnded,
    /// The process asking has ended.
    CallerEnded,
}

/// Why registration failed.
pub(crate) enum RegisterFail {
    NoProcess,
    Taken,
}

/// Why a delivery did not complete at once.
pub(crate) enum DeliverFail {
    /// No such process, alias or name.
    NoProcess,
    /// The mailbox is full: wait for room in it (or drop the message when not waiting).
    Full {
        mailbox: Arc<Mailbox>,
        env: Envelope,
    },
}
