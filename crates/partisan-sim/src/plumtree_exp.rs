//! The Plumtree experiment (after the paper's): HyParView nodes join and settle, then random
//! live nodes broadcast one message each at a steady pace; optionally a fraction of the nodes
//! crashes at once and the broadcasts go on. Each broadcast is measured once its phase has
//! drained: reliability (fraction of live nodes that delivered it), relative message
//! redundancy (RMR: `m / (n - 1) - 1`, `m` the payload copies received by all nodes, `n` the
//! nodes that delivered it) and last delivery hop (LDH: hops from the root to the last node).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::broadcast::{BroadcastHandler, GraftReply, PlumtreeConfig, Receipt};
use partisan_core::engine::Keepalive;
use partisan_core::overlay::HyParViewConfig;
use rand::Rng;
use serde::Serialize;

use crate::hyparview_exp::join_and_settle;
use crate::progress::Progress;
use crate::{NetConfig, Network, NodeId, OverlayChoice};

/// The handler's name in the experiment.
pub const HANDLER: &str = "sim";

/// Parameters of the experiment.
#[derive(Debug, Clone)]
pub struct PlumtreeOpts {
    /// Number of nodes.
    pub nodes: u32,
    /// Broadcasts per phase (settled, then after the crash).
    pub broadcasts: u32,
    /// Fraction of nodes crashed at once after the settled phase (0: no crash phase).
    pub crash: f64,
    /// Seed of the whole run.
    pub seed: u64,
    /// Broadcasting nodes: this many, chosen at random at the start (0: a random live node
    /// for each broadcast). One by default: the paper's measure of one tree. The crash spares
    /// them.
    pub sources: u32,
    /// Time between two broadcasts.
    pub interval: Duration,
    /// Time each phase gets after its last broadcast (grafts, lazy ticks).
    pub drain: Duration,
    /// Contact nodes everyone joins through.
    pub contacts: u32,
    /// Joins are spread uniformly over this window.
    pub join_window: Duration,
    /// Shuffle periods the overlay gets to settle after the last join.
    pub settle_rounds: u32,
    /// HyParView parameters (Partisan's defaults by default).
    pub config: HyParViewConfig,
    /// Plumtree parameters (the runtime's defaults by default).
    pub plumtree: PlumtreeConfig,
    /// Network model.
    pub net: NetConfig,
    /// Keepalive of every lane.
    pub keepalive: Option<Keepalive>,
}

impl Default for PlumtreeOpts {
    fn default() -> Self {
        PlumtreeOpts {
            nodes: 1000,
            broadcasts: 200,
            crash: 0.0,
            seed: 1,
            sources: 1,
            interval: Duration::from_millis(250),
            drain: Duration::from_secs(10),
            contacts: 5,
            join_window: Duration::from_secs(10),
            settle_rounds: 10,
            config: HyParViewConfig::default(),
            plumtree: PlumtreeConfig::default(),
            net: NetConfig {
                encode: false,
                ..NetConfig::default()
            },
            keepalive: Some(Keepalive::default()),
        }
    }
}

/// Measures of one broadcast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BroadcastMeasure {
    /// Number of the broadcast in the run, from 1.
    pub index: u32,
    /// Whether it was sent after the crash.
    pub after_crash: bool,
    /// Fraction of the live nodes that delivered it.
    pub reliability: f64,
    /// Relative message redundancy.
    pub rmr: f64,
    /// Last delivery hop.
    pub ldh: u32,
}

/// Summary of one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseReport {
    /// Broadcasts in the phase.
    pub broadcasts: u32,
    /// Live nodes during the phase.
    pub live: usize,
    /// Mean reliability over the phase's broadcasts.
    pub reliability_mean: f64,
    /// Lowest reliability of one broadcast.
    pub reliability_min: f64,
    /// Mean RMR over the last half of the phase's broadcasts.
    pub rmr: f64,
    /// Mean RMR over all of them.
    pub rmr_all: f64,
    /// Mean LDH over the last half.
    pub ldh: f64,
    /// Largest LDH of the last half.
    pub ldh_max: u32,
    /// Eager links per live node in the tree of the phase's last root (mean): about 2 in a
    /// spanning tree, the overlay's degree when everything is eager.
    pub eager_in_degree_mean: f64,
    /// Most eager links of one node in that tree.
    pub eager_in_degree_max: usize,
}

/// Result of the experiment.
#[derive(Debug, Clone, Serialize)]
pub struct PlumtreeReport {
    /// Seed.
    pub seed: u64,
    /// Nodes started.
    pub nodes: u32,
    /// Fraction crashed.
    pub crash: f64,
    /// Whether crashes were silent.
    pub silent_crashes: bool,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Hash of the event trace (same seed, same hash).
    pub trace_hash: String,
    /// The settled phase.
    pub settled: PhaseReport,
    /// The phase after the crash, if any.
    pub after_crash: Option<PhaseReport>,
    /// Broadcasts after the crash until one has an RMR at or under 0.05 (`None`: never).
    pub broadcasts_to_settle_after_crash: Option<u32>,
    /// Every broadcast, in order.
    pub series: Vec<BroadcastMeasure>,
    /// Plumtree counters summed over the live nodes.
    pub totals: BTreeMap<String, u64>,
    /// Peak resident memory of the process, in MiB, where the OS reports it.
    pub peak_rss_mib: Option<f64>,
}

/// What one node saw of one broadcast: first delivery hop and payload copies.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    round: u32,
    copies: u32,
}

/// A lean handler: ids are broadcast numbers (4 bytes, also the payload); it keeps what it saw
/// of each. No anti-entropy: the experiment measures the trees and grafts.
struct Tally {
    seen: BTreeMap<u32, Seen>,
}

fn number(id: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(id.try_into().ok()?))
}

impl BroadcastHandler for Tally {
    fn name(&self) -> &str {
        HANDLER
    }

    fn broadcast_data(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        Ok((msg.to_vec(), msg.to_vec()))
    }

    fn merge(&mut self, id: &[u8], _payload: &[u8], receipt: Receipt<'_>) -> bool {
        let Some(k) = number(id) else {
            return false;
        };
        let copy = u32::from(receipt.round > 0);
        match self.seen.get_mut(&k) {
            Some(s) => {
                s.copies += copy;
                false
            }
            None => {
                self.seen.insert(
                    k,
                    Seen {
                        round: receipt.round,
                        copies: copy,
                    },
                );
                true
            }
        }
    }

    fn is_stale(&self, id: &[u8]) -> bool {
        number(id).is_some_and(|k| self.seen.contains_key(&k))
    }

    fn graft(&self, id: &[u8]) -> GraftReply {
        if self.is_stale(id) {
            GraftReply::Payload(id.to_vec())
        } else {
            GraftReply::Missing
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

fn tally(sim: &Network, i: NodeId) -> &Tally {
    sim.engine(i)
        .broadcast_handler::<Tally>(HANDLER)
        .expect("every node registers the tally")
}

/// Sends `count` broadcasts from random live nodes, numbered from `first`, one per interval;
/// returns their sources.
fn broadcast_phase(
    sim: &mut Network,
    opts: &PlumtreeOpts,
    first: u32,
    count: u32,
    label: &str,
    pool: &[NodeId],
    progress: &mut dyn Progress,
) -> Vec<NodeId> {
    let alive = sim.live();
    let chosen: Vec<NodeId> = pool.iter().copied().filter(|i| alive.contains(i)).collect();
    let live = if chosen.is_empty() { alive } else { chosen };
    let mut sources = Vec::new();
    for k in 0..count {
        let src = live[sim.rng().gen_range(0..live.len())];
        let index = first + k;
        sim.broadcast(src, HANDLER, &index.to_le_bytes())
            .expect("a live node broadcasts");
        sources.push(src);
        sim.run_for(opts.interval);
        if k % 20 == 0 {
            progress.phase(
                &format!("{label}: broadcast {k}/{count}"),
                sim.now,
                sim.events,
            );
        }
    }
    progress.phase(&format!("{label}: draining"), sim.now, sim.events);
    sim.run_for(opts.drain);
    sources
}

fn measure(
    sim: &Network,
    first: u32,
    count: u32,
    after_crash: bool,
    last_root: NodeId,
) -> (Vec<BroadcastMeasure>, PhaseReport) {
    let live = sim.live();
    let mut series = Vec::new();
    for index in first..first + count {
        let mut delivered = 0usize;
        let mut copies = 0u64;
        let mut ldh = 0u32;
        for &i in &live {
            if let Some(s) = tally(sim, i).seen.get(&index) {
                delivered += 1;
                copies += u64::from(s.copies);
                ldh = ldh.max(s.round);
            }
        }
        let rmr = if delivered > 1 {
            copies as f64 / (delivered - 1) as f64 - 1.0
        } else {
            0.0
        };
        series.push(BroadcastMeasure {
            index,
            after_crash,
            reliability: delivered as f64 / live.len().max(1) as f64,
            rmr,
            ldh,
        });
    }
    let half = &series[series.len() / 2..];
    let mean = |v: &[BroadcastMeasure], f: fn(&BroadcastMeasure) -> f64| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(f).sum::<f64>() / v.len() as f64
        }
    };
    // Eager links per node in the last root's tree.
    let root = sim.name_of(last_root).clone();
    let mut degree: BTreeMap<NodeId, usize> = live.iter().map(|&i| (i, 0)).collect();
    for &i in &live {
        if let Some((eager, _)) = sim.engine(i).plumtree(HANDLER).map(|t| t.tree(&root)) {
            for p in eager {
                if let Some(j) = sim.id_of(&p) {
                    if let Some(d) = degree.get_mut(&j) {
                        *d += 1;
                    }
                }
            }
        }
    }
    let report = PhaseReport {
        broadcasts: count,
        live: live.len(),
        reliability_mean: mean(&series, |m| m.reliability),
        reliability_min: series.iter().map(|m| m.reliability).fold(1.0, f64::min),
        rmr: mean(half, |m| m.rmr),
        rmr_all: mean(&series, |m| m.rmr),
        ldh: mean(half, |m| f64::from(m.ldh)),
        ldh_max: half.iter().map(|m| m.ldh).max().unwrap_or(0),
        eager_in_degree_mean: degree.values().sum::<usize>() as f64 / degree.len().max(1) as f64,
        eager_in_degree_max: degree.values().copied().max().unwrap_or(0),
    };
    (series, report)
}

/// Runs the experiment. `progress` is told what phase the run is in.
pub fn run(opts: &PlumtreeOpts, progress: &mut dyn Progress) -> PlumtreeReport {
    let wall = std::time::Instant::now();
    let n = opts.nodes.max(2);
    let mut setup = OverlayChoice::HyParView(opts.config.clone()).setup(n, opts.seed);
    setup.net = opts.net.clone();
    setup.keepalive = opts.keepalive;
    let pcfg = opts.plumtree.clone();
    setup.broadcast = Some(Arc::new(
        move |_i: NodeId, _: &partisan_core::overlay::PeerInfo| {
            vec![(
                Box::new(Tally {
                    seen: BTreeMap::new(),
                }) as Box<dyn BroadcastHandler>,
                pcfg.clone(),
            )]
        },
    ));
    let mut sim = Network::new(setup);
    join_and_settle(
        &mut sim,
        opts.contacts,
        opts.join_window,
        opts.settle_rounds,
        opts.config.shuffle_interval,
        progress,
    );
    let b = opts.broadcasts.max(1);
    let mut pool: Vec<NodeId> = Vec::new();
    while (pool.len() as u32) < opts.sources.min(n) {
        let i = sim.rng().gen_range(0..n);
        if !pool.contains(&i) {
            pool.push(i);
        }
    }
    let sources = broadcast_phase(&mut sim, opts, 1, b, "settled", &pool, progress);
    let (mut series, settled) = measure(&sim, 1, b, false, *sources.last().expect("b >= 1"));

    let mut after_crash = None;
    let mut to_settle = None;
    if opts.crash > 0.0 {
        // The broadcasting nodes survive: the phase measures how their trees heal.
        let mut ids: Vec<NodeId> = sim
            .live()
            .into_iter()
            .filter(|i| !pool.contains(i))
            .collect();
        let k = ((f64::from(n) * opts.crash).floor() as usize).min(ids.len().saturating_sub(1));
        for i in 0..k {
            let j = sim.rng().gen_range(i..ids.len());
            ids.swap(i, j);
        }
        for &victim in &ids[..k] {
            sim.crash(victim);
        }
        let sources = broadcast_phase(&mut sim, opts, b + 1, b, "after crash", &pool, progress);
        let (s, report) = measure(&sim, b + 1, b, true, *sources.last().expect("b >= 1"));
        to_settle = s.iter().position(|m| m.rmr <= 0.05).map(|p| p as u32 + 1);
        series.extend(s);
        after_crash = Some(report);
    }
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for i in sim.live() {
        if let Some(t) = sim.engine(i).plumtree(HANDLER) {
            let s = t.stats();
            for (k, v) in [
                ("delivered", s.delivered),
                ("gossip_received", s.gossip_received),
                ("duplicates", s.duplicates),
                ("prunes_sent", s.prunes_sent),
                ("grafts_sent", s.grafts_sent),
                ("ihaves_sent", s.ihaves_sent),
                ("missing_expired", s.missing_expired),
                ("optimizations", s.optimizations),
                ("neighbours_up", s.neighbours_up),
                ("neighbours_down", s.neighbours_down),
                ("from_non_neighbours", s.from_non_neighbours),
            ] {
                *totals.entry(k.to_string()).or_default() += v;
            }
        }
    }
    PlumtreeReport {
        seed: opts.seed,
        nodes: n,
        crash: opts.crash,
        silent_crashes: opts.net.silent_crashes,
        wall_secs: wall.elapsed().as_secs_f64(),
        events: sim.events,
        trace_hash: format!("{:016x}", sim.trace.value()),
        settled,
        after_crash,
        broadcasts_to_settle_after_crash: to_settle,
        series,
        totals,
        peak_rss_mib: crate::progress::peak_rss_mib(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Quiet;

    #[test]
    fn a_small_cluster_delivers_everything_and_settles_into_a_tree() {
        let opts = PlumtreeOpts {
            nodes: 200,
            broadcasts: 40,
            crash: 0.3,
            seed: 3,
            sources: 0,
            ..PlumtreeOpts::default()
        };
        eprintln!("seed {}", opts.seed);
        let r = run(&opts, &mut Quiet);
        eprintln!("{:?}\n{:?}\n{:?}", r.settled, r.after_crash, r.totals);
        assert_eq!(r.settled.reliability_min, 1.0, "{:?}", r.settled);
        assert!(r.settled.rmr <= 0.05, "{:?}", r.settled);
        let after = r.after_crash.clone().unwrap();
        assert!(after.reliability_mean >= 0.99, "{after:?}");
        assert!(r.broadcasts_to_settle_after_crash.is_some(), "{r:?}");
        // Same seed, same run.
        let again = run(&opts, &mut Quiet);
        assert_eq!(again.trace_hash, r.trace_hash);
    }

    #[test]
    fn the_optimisation_shortens_the_paths_of_a_steady_broadcaster() {
        let base = PlumtreeOpts {
            nodes: 300,
            broadcasts: 60,
            sources: 1,
            seed: 5,
            ..PlumtreeOpts::default()
        };
        eprintln!("seed {}", base.seed);
        let off = run(&base, &mut Quiet);
        let mut on = base.clone();
        on.plumtree.optimize_threshold = 3;
        let on = run(&on, &mut Quiet);
        eprintln!("off {:?}\non {:?}", off.settled, on.settled);
        assert_eq!(on.settled.reliability_min, 1.0);
        assert!(on.totals["optimizations"] > 0);
        assert!(
            on.settled.ldh < off.settled.ldh,
            "{:?} vs {:?}",
            on.settled,
            off.settled
        );
        assert!(on.settled.rmr <= 0.05, "{:?}", on.settled);
    }
}
