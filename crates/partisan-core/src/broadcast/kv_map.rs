//! A ready-made replicated key-value map on Plumtree: [`KvMap`], registered as the
//! [`KV_HANDLER`] broadcast handler.
//!
//! # Model
//!
//! Keys are UTF-8 strings of 1 to [`MAX_KEY_LEN`] bytes, values byte strings of at most
//! [`MAX_VALUE_LEN`] bytes. Every write (put or delete) is stamped with a hybrid logical clock
//! ([`Hlc`]) and the map keeps, per key, the write with the greatest stamp: last writer wins,
//! and since stamps are totally ordered (ties between nodes are broken by node name) every node
//! that has seen the same writes holds the same map, whatever the order it saw them in.
//!
//! The core never reads a clock: a write is handed to the broadcast as an operation built by
//! [`encode_put`] or [`encode_delete`] with the caller's wall time, and
//! [`BroadcastHandler::broadcast_data`] stamps it with `max(wall time, map clock)` (the
//! counter breaking ties). Every entry received is observed by the clock, so a local write
//! made after receiving an entry is ordered after it even when the local wall clock lags.
//!
//! # Deletes
//!
//! A delete is stored as a tombstone (an entry without value) so that an older put arriving
//! later cannot bring the key back. Tombstones are purged once their stamp is older than the
//! map clock's wall time minus [`KvConfig::tombstone_grace_micros`] (whenever an anti-entropy
//! exchange starts, on either side, and on [`KvMap::purge_tombstones`]); a received tombstone
//! already that old is not stored for a key the map does not hold.
//!
//! **Caveat:** a node that missed a delete and stays away (or partitioned) for longer than the
//! grace period can bring a purged key back with its older value, through an exchange or a
//! re-broadcast. Choose a grace period longer than any partition you want to heal from.
//! Likewise the map trusts the stamps it receives: a peer whose wall clock runs far ahead
//! drags every clock ahead with it (later writes carry its wall time, tombstones are purged
//! early). A node that restarts empty must be given wall times past those it stamped before,
//! or a new write may reuse a stamp of an old one and replicas can disagree on that key.
//!
//! # Anti-entropy
//!
//! An exchange compares a page of the key space by digest (key and stamp, no values):
//!
//! 1. the initiator sends the stamps of at most [`EXCHANGE_MAX_KEYS`] keys (and at most about
//!    [`EXCHANGE_MAX_BYTES`]) from its cursor on, with the key range `[start, end)` the page
//!    covers; its cursor then moves to `end`, wrapping to the first key after the last page,
//!    so that successive exchanges cover the whole key space;
//! 2. the responder compares that range only: it answers
//!    ([`ExchangeStep::Continue`]) with its entries the initiator lacks or holds older, and the
//!    keys of the range where the initiator is newer or the responder lacks them. When that
//!    answer would exceed the same bounds it covers a prefix `[start, cut)` of the range only
//!    and says so; the initiator's next exchange then starts at `cut`;
//! 3. the initiator merges those entries and answers with the wanted ones
//!    ([`ExchangeStep::Finish`] with a message);
//! 4. the responder merges them and ends the session.
//!
//! Tombstones are exchanged like any entry. Malformed messages end the session; malformed
//! operations, ids and payloads are refused, never a panic.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BroadcastHandler, ExchangeStep, GraftReply, Receipt};
use crate::id::NodeName;

/// The name [`KvMap::new`] registers under.
pub const KV_HANDLER: &str = "kv";

/// Longest key, in bytes (keys are 1 to this many bytes of UTF-8).
pub const MAX_KEY_LEN: usize = 1024;

/// Largest value, in bytes (1 MiB).
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Most keys compared by one exchange (the digest page), and most entries sent in one
/// exchange message.
pub const EXCHANGE_MAX_KEYS: usize = 4096;

/// Soft size bound of one exchange message, in bytes (4 MiB): a message stops growing before
/// it would pass this bound, but always carries at least one item, so no message is larger
/// than about `max(EXCHANGE_MAX_BYTES, MAX_KEY_LEN + MAX_VALUE_LEN)` plus small overhead.
pub const EXCHANGE_MAX_BYTES: usize = 4 << 20;

/// The default [`KvConfig::tombstone_grace_micros`]: one hour.
pub const DEFAULT_TOMBSTONE_GRACE_MICROS: u64 = 3_600_000_000;

/// A hybrid logical clock stamp: wall time, a counter for writes within one wall tick, and the
/// writing node.
///
/// Stamps are totally ordered by `(wall, counter, node)` (the derived order follows the field
/// order); two writes from different nodes never compare equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Microseconds since the Unix epoch (the greatest wall time seen, not necessarily now).
    pub wall: u64,
    /// Orders stamps with the same wall time.
    pub counter: u32,
    /// The node that made the stamp.
    pub node: NodeName,
}

/// Settings of a [`KvMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// How long a tombstone is kept, in microseconds of the map clock's wall time
    /// (default [`DEFAULT_TOMBSTONE_GRACE_MICROS`], one hour).
    pub tombstone_grace_micros: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            tombstone_grace_micros: DEFAULT_TOMBSTONE_GRACE_MICROS,
        }
    }
}

/// Counters of a [`KvMap`], monotonic since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Broadcast payloads that were newer than the stored entry and were stored (local writes
    /// included: the local node merges its own broadcasts).
    pub merged_broadcast: u64,
    /// Entries received by anti-entropy exchange that were newer and were stored.
    pub merged_exchange: u64,
    /// Well-formed entries received (broadcast or exchange) that were not newer than the
    /// stored one, or were tombstones already past the grace period.
    pub stale: u64,
    /// Tombstones purged after the grace period.
    pub purged: u64,
}

/// Checks a key: 1 to [`MAX_KEY_LEN`] bytes (a `&str` is UTF-8 already).
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("kv key must not be empty".to_string());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "kv key is {} bytes long, at most {MAX_KEY_LEN} allowed",
            key.len()
        ));
    }
    Ok(())
}

/// Checks a value: at most [`MAX_VALUE_LEN`] bytes.
pub fn validate_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "kv value is {} bytes long, at most {MAX_VALUE_LEN} allowed",
            value.len()
        ));
    }
    Ok(())
}

/// The operation "set `key` to `value`", written at `wall_micros` (microseconds since the Unix
/// epoch, read by the caller), to give to the broadcast of a [`KvMap`]. Never fails: the map
/// validates the key and value when the operation is broadcast and refuses invalid ones.
pub fn encode_put(key: &str, value: &[u8], wall_micros: u64) -> Vec<u8> {
    encode(&OpWire::Put {
        key,
        value: Raw(value),
        wall: wall_micros,
    })
    .unwrap_or_default()
}

/// The operation "delete `key`", written at `wall_micros`, to give to the broadcast of a
/// [`KvMap`]. Never fails: the map validates the key when the operation is broadcast.
pub fn encode_delete(key: &str, wall_micros: u64) -> Vec<u8> {
    encode(&OpWire::Delete {
        key,
        wall: wall_micros,
    })
    .unwrap_or_default()
}

/// A replicated last-writer-wins key-value map, as a Plumtree [`BroadcastHandler`].
///
/// Writes go through the broadcast (see [`encode_put`], [`encode_delete`]); reads are local
/// ([`KvMap::get`], [`KvMap::entries`]) and see a write once it has been merged here.
/// Replicas that have merged the same writes hold the same entries. Reach it through the
/// engine with [`BroadcastHandler::as_any`] and `downcast_ref::<KvMap>()`.
pub struct KvMap {
    name: String,
    config: KvConfig,
    clock: Hlc,
    entries: BTreeMap<String, Stored>,
    /// `(stamp wall time, key)` of every tombstone, oldest first.
    tombstones: BTreeSet<(u64, String)>,
    /// Where the next digest page starts (`None`: the first key).
    cursor: Option<String>,
    stats: KvStats,
}

#[derive(Clone, Debug)]
struct Stored {
    hlc: Hlc,
    /// `None`: a tombstone.
    value: Option<Vec<u8>>,
}

impl fmt::Debug for KvMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvMap")
            .field("name", &self.name)
            .field("clock", &self.clock)
            .field("len", &self.len())
            .field("tombstones", &self.tombstones.len())
            .field("stats", &self.stats)
            .finish()
    }
}

enum Applied {
    New,
    Old,
    Invalid,
}

impl KvMap {
    /// An empty map of node `node`, registered as [`KV_HANDLER`]. Its clock starts at wall
    /// time 0.
    pub fn new(node: NodeName, config: KvConfig) -> Self {
        Self::with_name(KV_HANDLER, node, config)
    }

    /// An empty map registered under `name` instead, for a second map on the same nodes
    /// (every node must use the same name for the same map). The engine refuses an invalid
    /// name when the handler is registered.
    pub fn with_name(name: &str, node: NodeName, config: KvConfig) -> Self {
        KvMap {
            name: name.to_string(),
            config,
            clock: Hlc {
                wall: 0,
                counter: 0,
                node,
            },
            entries: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            cursor: None,
            stats: KvStats::default(),
        }
    }

    /// The value of `key`, or `None` if it is absent or deleted.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).and_then(|s| s.value.as_deref())
    }

    /// The stamp of the latest write of `key` merged here (a delete included), or `None` if
    /// the map holds nothing for it.
    pub fn timestamp(&self, key: &str) -> Option<&Hlc> {
        self.entries.get(key).map(|s| &s.hlc)
    }

    /// The live (not deleted) entries, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.entries
            .iter()
            .filter_map(|(k, s)| s.value.as_deref().map(|v| (k.as_str(), v)))
    }

    /// How many live keys the map holds.
    pub fn len(&self) -> usize {
        // Every tombstone is an entry: this never saturates.
        self.entries.len().saturating_sub(self.tombstones.len())
    }

    /// Whether the map holds no live key (it may hold tombstones).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tombstones (deleted keys not yet purged) the map holds.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// The map clock: the greatest stamp made or seen here, with this node's name. The next
    /// local write is stamped strictly after it.
    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    /// The counters.
    pub fn stats(&self) -> &KvStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Removes the tombstones whose stamp's wall time is older than the clock's wall time
    /// minus the grace period; returns how many. Exchanges call it as they start.
    pub fn purge_tombstones(&mut self) -> usize {
        let cutoff = self.purge_cutoff();
        let mut n = 0;
        while let Some((wall, _)) = self.tombstones.first() {
            if *wall >= cutoff {
                break;
            }
            if let Some((_, key)) = self.tombstones.pop_first() {
                self.entries.remove(&key);
                n += 1;
            }
        }
        self.stats.purged += n as u64;
        n
    }

    /// Tombstones stamped before this wall time are past the grace period.
    fn purge_cutoff(&self) -> u64 {
        self.clock
            .wall
            .saturating_sub(self.config.tombstone_grace_micros)
    }

    /// A stamp for a local write at wall time `wall`, after every stamp made or seen here.
    fn tick(&mut self, wall: u64) -> Result<Hlc, String> {
        let c = &mut self.clock;
        if wall > c.wall {
            c.wall = wall;
            c.counter = 0;
        } else if c.counter < u32::MAX {
            c.counter += 1;
        } else if c.wall < u64::MAX {
            c.wall += 1;
            c.counter = 0;
        } else {
            return Err(format!(
                "kv map {:?}: the clock cannot advance past {:?}",
                self.name, c
            ));
        }
        Ok(self.clock.clone())
    }

    /// Moves the clock to at least `h`'s wall time and counter.
    fn observe(&mut self, h: &Hlc) {
        let c = &mut self.clock;
        if (h.wall, h.counter) > (c.wall, c.counter) {
            c.wall = h.wall;
            c.counter = h.counter;
        }
    }

    /// Stores a received entry if it is newer than the stored one.
    fn apply(&mut self, e: EntryWire<'_>) -> Applied {
        if validate_key(e.key).is_err() || e.value.is_some_and(|v| validate_value(v.0).is_err()) {
            return Applied::Invalid;
        }
        self.observe(&e.hlc);
        let new = Stored {
            hlc: e.hlc,
            value: e.value.map(|v| v.0.to_vec()),
        };
        match self.entries.get_mut(e.key) {
            Some(old) if old.hlc >= new.hlc => return Applied::Old,
            Some(old) => {
                if old.value.is_none() {
                    self.tombstones.remove(&(old.hlc.wall, e.key.to_string()));
                }
                if new.value.is_none() {
                    self.tombstones.insert((new.hlc.wall, e.key.to_string()));
                }
                *old = new;
            }
            None => {
                if new.value.is_none() {
                    if new.hlc.wall < self.purge_cutoff() {
                        // Already past the grace period: as good as purged.
                        return Applied::Old;
                    }
                    self.tombstones.insert((new.hlc.wall, e.key.to_string()));
                }
                self.entries.insert(e.key.to_string(), new);
            }
        }
        Applied::New
    }

    /// Applies entries received by exchange, counting them.
    fn apply_exchanged(&mut self, entries: Vec<EntryWire<'_>>) {
        for e in entries {
            match self.apply(e) {
                Applied::New => self.stats.merged_exchange += 1,
                Applied::Old => self.stats.stale += 1,
                Applied::Invalid => {}
            }
        }
    }

    fn entry_wire<'a>(key: &'a str, s: &'a Stored) -> EntryWire<'a> {
        EntryWire {
            key,
            hlc: s.hlc.clone(),
            value: s.value.as_deref().map(Raw),
        }
    }

    /// The responder's side: compare the initiator's digest with this range.
    fn on_digest(
        &mut self,
        start: Option<&str>,
        end: Option<&str>,
        keys: Vec<IdWire<'_>>,
    ) -> ExchangeStep {
        if keys.len() > EXCHANGE_MAX_KEYS || !valid_range(start, end) {
            return ExchangeStep::Finish(None);
        }
        self.purge_tombstones();
        let mut theirs: BTreeMap<&str, Hlc> = BTreeMap::new();
        for k in keys {
            if in_range(k.key, start, end) {
                match theirs.get(k.key) {
                    Some(h) if *h >= k.hlc => {}
                    _ => {
                        theirs.insert(k.key, k.hlc);
                    }
                }
            }
        }

        // Walk both sorted key sets of the range together.
        let mut mine = self.entries.range::<str, _>(bounds(start, end)).peekable();
        let mut other = theirs.iter().peekable();
        let mut entries = Vec::new();
        let mut want = Vec::new();
        let mut bytes = 0usize;
        let mut cut = None;
        loop {
            // (key, entry to send, whether it is wanted)
            let (key, send, wanted): (&str, Option<&Stored>, bool) =
                match (mine.peek().copied(), other.peek().copied()) {
                    (None, None) => break,
                    (Some((mk, ms)), None) => (mk.as_str(), Some(ms), false),
                    (None, Some((tk, _))) => (*tk, None, true),
                    (Some((mk, ms)), Some((tk, th))) => match mk.as_str().cmp(*tk) {
                        std::cmp::Ordering::Less => (mk.as_str(), Some(ms), false),
                        std::cmp::Ordering::Greater => (*tk, None, true),
                        std::cmp::Ordering::Equal => {
                            if ms.hlc > *th {
                                (mk.as_str(), Some(ms), false)
                            } else {
                                (mk.as_str(), None, ms.hlc < *th)
                            }
                        }
                    },
                };
            let size = match send {
                Some(s) => entry_size(key, s),
                None if wanted => key.len() + 4,
                None => 0,
            };
            if size > 0 {
                let full = (send.is_some() && entries.len() >= EXCHANGE_MAX_KEYS)
                    || (bytes > 0 && bytes + size > EXCHANGE_MAX_BYTES);
                if full {
                    cut = Some(key);
                    break;
                }
                bytes += size;
                match send {
                    Some(s) => entries.push(Self::entry_wire(key, s)),
                    None => want.push(key),
                }
            }
            if mine.peek().is_some_and(|(mk, _)| mk.as_str() == key) {
                mine.next();
            }
            if other.peek().is_some_and(|(tk, _)| **tk == key) {
                other.next();
            }
        }
        match encode(&ExchangeWire::Reply {
            start,
            end,
            cut,
            entries,
            want,
        }) {
            Some(m) => ExchangeStep::Continue(m),
            None => ExchangeStep::Finish(None),
        }
    }

    /// The initiator's side: merge the responder's entries, send the ones it wants.
    fn on_reply(
        &mut self,
        start: Option<&str>,
        end: Option<&str>,
        cut: Option<&str>,
        entries: Vec<EntryWire<'_>>,
        want: Vec<&str>,
    ) -> ExchangeStep {
        self.apply_exchanged(entries);
        if let Some(cut) = cut {
            // The responder covered [start, cut) only: the next page starts at `cut`, unless
            // another exchange has moved the cursor meanwhile.
            if valid_range(start, Some(cut))
                && valid_range(Some(cut), end)
                && self.cursor.as_deref() == end
            {
                self.cursor = Some(cut.to_string());
            }
        }
        let cutoff = self.purge_cutoff();
        let want: BTreeSet<&str> = want.into_iter().collect();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for key in want {
            let Some((k, s)) = self.entries.get_key_value(key) else {
                continue;
            };
            if s.value.is_none() && s.hlc.wall < cutoff {
                continue;
            }
            let size = entry_size(k, s);
            if out.len() >= EXCHANGE_MAX_KEYS || (bytes > 0 && bytes + size > EXCHANGE_MAX_BYTES) {
                break;
            }
            bytes += size;
            out.push(Self::entry_wire(k, s));
        }
        ExchangeStep::Finish(encode(&ExchangeWire::Entries { entries: out }))
    }
}

impl BroadcastHandler for KvMap {
    fn name(&self) -> &str {
        &self.name
    }

    /// Refuses malformed operations, invalid keys and values, with the reason. Does not store
    /// the write: the engine merges the returned payload next, like a received one.
    fn broadcast_data(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let op: OpWire<'_> = decode(msg).ok_or_else(|| {
            format!(
                "kv map {:?}: malformed operation (build it with encode_put or encode_delete)",
                self.name
            )
        })?;
        let (key, value, wall) = match op {
            OpWire::Put { key, value, wall } => (key, Some(value), wall),
            OpWire::Delete { key, wall } => (key, None, wall),
        };
        validate_key(key)?;
        if let Some(v) = value {
            validate_value(v.0)?;
        }
        let hlc = self.tick(wall)?;
        let id = encode(&IdWire {
            key,
            hlc: hlc.clone(),
        });
        let payload = encode(&EntryWire { key, hlc, value });
        match (id, payload) {
            (Some(id), Some(payload)) => Ok((id, payload)),
            _ => Err(format!("kv map {:?}: cannot encode the entry", self.name)),
        }
    }

    /// New iff well-formed, its id matches, and its stamp is greater than the stored one.
    fn merge(&mut self, id: &[u8], payload: &[u8], _receipt: Receipt<'_>) -> bool {
        let (Some(id), Some(entry)) = (decode::<IdWire<'_>>(id), decode::<EntryWire<'_>>(payload))
        else {
            return false;
        };
        if id.key != entry.key || id.hlc != entry.hlc {
            return false;
        }
        match self.apply(entry) {
            Applied::New => {
                self.stats.merged_broadcast += 1;
                true
            }
            Applied::Old => {
                self.stats.stale += 1;
                false
            }
            Applied::Invalid => false,
        }
    }

    /// Stale iff the stored stamp of the key is at least the id's; a malformed id is stale
    /// (there is nothing to graft for it).
    fn is_stale(&self, id: &[u8]) -> bool {
        let Some(id) = decode::<IdWire<'_>>(id) else {
            return true;
        };
        self.entries.get(id.key).is_some_and(|s| s.hlc >= id.hlc)
    }

    /// The payload if the stored entry has exactly the id's stamp, `Stale` if it is newer,
    /// `Missing` otherwise (or for a malformed id).
    fn graft(&self, id: &[u8]) -> GraftReply {
        let Some(id) = decode::<IdWire<'_>>(id) else {
            return GraftReply::Missing;
        };
        let Some((k, s)) = self.entries.get_key_value(id.key) else {
            return GraftReply::Missing;
        };
        if s.hlc == id.hlc {
            match encode(&Self::entry_wire(k, s)) {
                Some(p) => GraftReply::Payload(p),
                None => GraftReply::Missing,
            }
        } else if s.hlc > id.hlc {
            GraftReply::Stale
        } else {
            GraftReply::Missing
        }
    }

    /// Purges old tombstones, then sends the digest of the next page of keys.
    fn exchange_start(&mut self, _peer: &NodeName) -> Option<Vec<u8>> {
        self.purge_tombstones();
        let start = self.cursor.take();
        let range = self.entries.range::<str, _>(bounds(start.as_deref(), None));
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        let mut end = None;
        for (k, s) in range {
            let size = k.len() + s.hlc.node.as_str().len() + 24;
            if keys.len() >= EXCHANGE_MAX_KEYS || (bytes > 0 && bytes + size > EXCHANGE_MAX_BYTES) {
                end = Some(k.as_str());
                break;
            }
            bytes += size;
            keys.push(IdWire {
                key: k,
                hlc: s.hlc.clone(),
            });
        }
        let msg = encode(&ExchangeWire::Digest {
            start: start.as_deref(),
            end,
            keys,
        });
        self.cursor = end.map(str::to_string);
        msg
    }

    /// Answers a digest (responder), a reply (initiator) or the final entries (responder);
    /// anything malformed or out of turn ends the session.
    fn exchange_step(
        &mut self,
        _peer: &NodeName,
        msg: &[u8],
        initiated_here: bool,
    ) -> ExchangeStep {
        let Some(m) = decode::<ExchangeWire<'_>>(msg) else {
            return ExchangeStep::Finish(None);
        };
        match (m, initiated_here) {
            (ExchangeWire::Digest { start, end, keys }, false) => self.on_digest(start, end, keys),
            (
                ExchangeWire::Reply {
                    start,
                    end,
                    cut,
                    entries,
                    want,
                },
                true,
            ) => self.on_reply(start, end, cut, entries, want),
            (ExchangeWire::Entries { entries }, false) => {
                self.apply_exchanged(entries);
                ExchangeStep::Finish(None)
            }
            _ => ExchangeStep::Finish(None),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Rough encoded size of an entry in an exchange message.
fn entry_size(key: &str, s: &Stored) -> usize {
    key.len() + s.value.as_ref().map_or(0, Vec::len) + s.hlc.node.as_str().len() + 32
}

/// Whether `[start, end)` is a non-empty range (`None`: unbounded).
fn valid_range(start: Option<&str>, end: Option<&str>) -> bool {
    match (start, end) {
        (Some(s), Some(e)) => s < e,
        _ => true,
    }
}

fn in_range(key: &str, start: Option<&str>, end: Option<&str>) -> bool {
    start.is_none_or(|s| key >= s) && end.is_none_or(|e| key < e)
}

fn bounds<'a>(start: Option<&'a str>, end: Option<&'a str>) -> (Bound<&'a str>, Bound<&'a str>) {
    (
        start.map_or(Bound::Unbounded, Bound::Included),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

fn encode<T: Serialize>(v: &T) -> Option<Vec<u8>> {
    postcard::to_allocvec(v).ok()
}

/// Decodes the whole of `bytes` (trailing bytes are malformed).
fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

/// A borrowed byte string, encoded as bytes (not as a sequence of numbers).
#[derive(Clone, Copy)]
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Raw)
    }
}

/// An operation given to the broadcast.
#[derive(Serialize, Deserialize)]
enum OpWire<'a> {
    Put {
        key: &'a str,
        #[serde(borrow)]
        value: Raw<'a>,
        wall: u64,
    },
    Delete {
        key: &'a str,
        wall: u64,
    },
}

/// A broadcast id, and one item of a digest.
#[derive(Serialize, Deserialize)]
struct IdWire<'a> {
    key: &'a str,
    hlc: Hlc,
}

/// A broadcast payload, and one entry of an exchange.
#[derive(Serialize, Deserialize)]
struct EntryWire<'a> {
    key: &'a str,
    hlc: Hlc,
    /// `None`: a tombstone.
    #[serde(borrow)]
    value: Option<Raw<'a>>,
}

/// A message of an exchange session.
#[derive(Serialize, Deserialize)]
enum ExchangeWire<'a> {
    /// Initiator to responder: the stamps of its keys in `[start, end)` (`None`: unbounded).
    Digest {
        #[serde(borrow)]
        start: Option<&'a str>,
        #[serde(borrow)]
        end: Option<&'a str>,
        #[serde(borrow)]
        keys: Vec<IdWire<'a>>,
    },
    /// Responder to initiator: the digest's range (echoed), how far it was covered (`cut`:
    /// only `[start, cut)`), the responder's newer entries and the keys it wants.
    Reply {
        #[serde(borrow)]
        start: Option<&'a str>,
        #[serde(borrow)]
        end: Option<&'a str>,
        #[serde(borrow)]
        cut: Option<&'a str>,
        #[serde(borrow)]
        entries: Vec<EntryWire<'a>>,
        #[serde(borrow)]
        want: Vec<&'a str>,
    },
    /// Initiator to responder: the wanted entries; ends the session.
    Entries {
        #[serde(borrow)]
        entries: Vec<EntryWire<'a>>,
    },
}

#[cfg(test)]
mod tests;
