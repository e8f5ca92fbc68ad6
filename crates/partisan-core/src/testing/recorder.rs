//! A broadcast handler for tests and the simulator: it keeps every message, and records for
//! each how it was first delivered and how many payload copies arrived.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::broadcast::{BroadcastHandler, ExchangeStep, GraftReply, Receipt};
use crate::id::NodeName;

/// How a message reached a [`Recorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Hops from its root when first delivered (`None`: through anti-entropy).
    pub round: Option<u32>,
    /// Payload copies received through the tree (eager pushes and graft answers).
    pub copies: u32,
    /// Times it was delivered (merged as new): exactly once unless something is wrong.
    pub delivered: u32,
}

#[derive(Serialize, Deserialize)]
enum Ae {
    Digest(Vec<Vec<u8>>),
    Reply {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        want: Vec<Vec<u8>>,
    },
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
}

/// Keeps every message (id: the broadcasting node and a sequence number); anti-entropy sends
/// the ids it has, and the peer answers with what either side lacks.
pub struct Recorder {
    name: String,
    node: NodeName,
    creation: u64,
    seq: u64,
    store: BTreeMap<Vec<u8>, Vec<u8>>,
    deliveries: BTreeMap<Vec<u8>, Delivery>,
    exchange: bool,
}

impl Recorder {
    /// A recorder named `name` on `node`, doing anti-entropy if `exchange`.
    pub fn new(name: &str, node: NodeName, exchange: bool) -> Recorder {
        Recorder::of_incarnation(name, node, 0, exchange)
    }

    /// A recorder of one incarnation of a node: its ids name the creation too, so a restarted
    /// node's messages are not taken for its earlier run's.
    pub fn of_incarnation(name: &str, node: NodeName, creation: u64, exchange: bool) -> Recorder {
        Recorder {
            name: name.to_string(),
            node,
            creation,
            seq: 0,
            store: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            exchange,
        }
    }

    /// The id the `seq`-th broadcast (from 1) of `node` gets (creation 0).
    pub fn id_of(node: &NodeName, seq: u64) -> Vec<u8> {
        Recorder::id_of_incarnation(node, 0, seq)
    }

    /// The id the `seq`-th broadcast (from 1) of `node` in its run `creation` gets.
    pub fn id_of_incarnation(node: &NodeName, creation: u64, seq: u64) -> Vec<u8> {
        postcard::to_allocvec(&(node, creation, seq)).expect("serializable")
    }

    /// How each known message was delivered, by id.
    pub fn deliveries(&self) -> &BTreeMap<Vec<u8>, Delivery> {
        &self.deliveries
    }

    /// Whether the message `id` is known.
    pub fn has(&self, id: &[u8]) -> bool {
        self.store.contains_key(id)
    }

    /// Messages known.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no message is known.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    fn take_new(&mut self, id: &[u8], payload: &[u8]) -> bool {
        if self.store.contains_key(id) {
            return false;
        }
        self.store.insert(id.to_vec(), payload.to_vec());
        let d = self.deliveries.entry(id.to_vec()).or_insert(Delivery {
            round: None,
            copies: 0,
            delivered: 0,
        });
        d.delivered += 1;
        true
    }
}

impl BroadcastHandler for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn broadcast_data(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        self.seq += 1;
        Ok((
            Recorder::id_of_incarnation(&self.node, self.creation, self.seq),
            msg.to_vec(),
        ))
    }

    fn merge(&mut self, id: &[u8], payload: &[u8], receipt: Receipt<'_>) -> bool {
        let local = receipt.round == 0;
        if !local {
            self.deliveries
                .entry(id.to_vec())
                .or_insert(Delivery {
                    round: None,
                    copies: 0,
                    delivered: 0,
                })
                .copies += 1;
        }
        if !self.take_new(id, payload) {
            return false;
        }
        if let Some(d) = self.deliveries.get_mut(id) {
            d.round = Some(receipt.round);
        }
        true
    }

    fn is_stale(&self, id: &[u8]) -> bool {
        self.store.contains_key(id)
    }

    fn graft(&self, id: &[u8]) -> GraftReply {
        match self.store.get(id) {
            Some(p) => GraftReply::Payload(p.clone()),
            None => GraftReply::Missing,
        }
    }

    fn exchange_start(&mut self, _peer: &NodeName) -> Option<Vec<u8>> {
        if !self.exchange {
            return None;
        }
        let ids: Vec<Vec<u8>> = self.store.keys().cloned().collect();
        postcard::to_allocvec(&Ae::Digest(ids)).ok()
    }

    fn exchange_step(&mut self, _peer: &NodeName, msg: &[u8], _here: bool) -> ExchangeStep {
        let Ok(ae) = postcard::from_bytes::<Ae>(msg) else {
            return ExchangeStep::Finish(None);
        };
        match ae {
            Ae::Digest(ids) => {
                let theirs: BTreeSet<Vec<u8>> = ids.into_iter().collect();
                let entries = self
                    .store
                    .iter()
                    .filter(|(k, _)| !theirs.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let want = theirs
                    .into_iter()
                    .filter(|k| !self.store.contains_key(k))
                    .collect();
                let reply = Ae::Reply { entries, want };
                match postcard::to_allocvec(&reply) {
                    Ok(r) => ExchangeStep::Continue(r),
                    Err(_) => ExchangeStep::Finish(None),
                }
            }
            Ae::Reply { entries, want } => {
                for (k, v) in entries {
                    self.take_new(&k, &v);
                }
                let back: Vec<(Vec<u8>, Vec<u8>)> = want
                    .into_iter()
                    .filter_map(|k| self.store.get(&k).map(|v| (k, v.clone())))
                    .collect();
                ExchangeStep::Finish(postcard::to_allocvec(&Ae::Entries(back)).ok())
            }
            Ae::Entries(entries) => {
                for (k, v) in entries {
                    self.take_new(&k, &v);
                }
                ExchangeStep::Finish(None)
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
