//! Local processes: pid allocation, mailboxes, registered names and reference aliases.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use partisan_core::id::{Pid, ProcessName, Ref};

use crate::process::mailbox::{Mailbox, Refused};

/// A message as delivered to a process.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The sending process, when the message was sent from one (remote or local).
    pub from: Option<Pid>,
    /// The alias reference the message was addressed to, when it was sent to one.
    pub via: Option<Ref>,
    /// The payload, exactly as sent.
    pub payload: Bytes,
}

impl Envelope {
    /// Decodes a payload sent with a typed send (postcard).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, postcard::Error> {
        postcard::from_bytes(&self.payload)
    }
}

struct Entry {
    mailbox: Arc<Mailbox>,
    names: Vec<ProcessName>,
    aliases: Vec<u64>,
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
            },
        );
        (id, mailbox)
    }

    /// A fresh reference id.
    pub(crate) fn make_ref(&self) -> u64 {
        self.next_ref.fetch_add(1, Relaxed)
    }

    /// Removes a process with its names and aliases.
    pub(crate) fn remove(&self, id: u64) {
        if let Some((_, e)) = self.procs.remove(&id) {
            e.mailbox.close();
            for n in e.names {
                self.names.remove_if(&n, |_, v| *v == id);
            }
            for a in e.aliases {
                self.aliases.remove_if(&a, |_, v| *v == id);
            }
        }
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
