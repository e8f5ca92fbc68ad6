//! The HyParView resilience experiment: nodes join concurrently through a few contacts, the
//! overlay settles, a fraction crashes at once, and every round (one shuffle period) a flood
//! over the active views measures how many live nodes it reaches.
//!
//! Round `r` (r >= 1) is a broadcast `r` shuffle periods after the crash. Round 0 is a
//! broadcast one second after the crash: nodes have noticed the lost connections (one
//! latency) and have started promoting passive peers, as they would in a real cluster. The
//! reach at the very instant of the crash, before anyone noticed, is reported separately
//! (`at_crash`): it is pure percolation of the pre-crash graph.

use std::collections::BTreeMap;
use std::time::Duration;

use partisan_core::engine::Keepalive;
use partisan_core::liveness::Liveness;
use partisan_core::overlay::HyParViewConfig;
use rand::Rng;
use serde::Serialize;

use crate::graph::Graph;
use crate::progress::Progress;
use crate::{NetConfig, Network, NodeId, OverlayChoice};

/// Parameters of the experiment.
#[derive(Debug, Clone)]
pub struct HyParViewOpts {
    /// Number of nodes.
    pub nodes: u32,
    /// Fraction of nodes crashed at once.
    pub crash: f64,
    /// Seed of the whole run.
    pub seed: u64,
    /// Rounds measured after the crash.
    pub rounds: u32,
    /// Contact nodes everyone joins through.
    pub contacts: u32,
    /// Joins are spread uniformly over this window.
    pub join_window: Duration,
    /// Shuffle periods the overlay gets to settle after the last join.
    pub settle_rounds: u32,
    /// HyParView parameters (Partisan's defaults by default).
    pub config: HyParViewConfig,
    /// Network model.
    pub net: NetConfig,
    /// Keepalive of every idle lane (off, the runtime's default).
    pub keepalive: Option<Keepalive>,
    /// Peer liveness probing (on, the runtime's default: a vanished peer is noticed within
    /// seconds).
    pub liveness: Option<Liveness>,
}

impl Default for HyParViewOpts {
    fn default() -> Self {
        HyParViewOpts {
            nodes: 1000,
            crash: 0.5,
            seed: 1,
            rounds: 12,
            contacts: 5,
            join_window: Duration::from_secs(10),
            settle_rounds: 10,
            config: HyParViewConfig::default(),
            // Frames stay in memory (the swarm checks the codec; this measures the overlay).
            net: NetConfig {
                encode: false,
                ..NetConfig::default()
            },
            keepalive: None,
            liveness: Some(Liveness::default()),
        }
    }
}

/// Measures of one round.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundReport {
    /// Round number (0 = one second after the crash).
    pub round: u32,
    /// Virtual seconds since the crash.
    pub at_secs: f64,
    /// Fraction of live nodes a flood over active views reaches, averaged over floods from 20
    /// random live nodes.
    pub flood_reliability: f64,
    /// Largest connected component of live nodes.
    pub largest_component: usize,
    /// Fraction of active-view edges that are mutual.
    pub symmetry: f64,
    /// Active-view entries still naming a crashed node.
    pub dead_in_views: usize,
    /// Sizes of the components other than the largest (islands), largest first.
    pub islands: Vec<usize>,
}

/// Result of the experiment.
#[derive(Debug, Clone, Serialize)]
pub struct HyParViewReport {
    /// Seed.
    pub seed: u64,
    /// Nodes started.
    pub nodes: u32,
    /// Fraction crashed.
    pub crash: f64,
    /// Whether crashes were silent (noticed by keepalive).
    pub silent_crashes: bool,
    /// Seconds after which keepalive closes a lane whose peer vanished (idle + attempts x
    /// timeout), if keepalive is on.
    pub keepalive_detection_secs: Option<f64>,
    /// Seconds from a node's first unanswered liveness ping to its cutting the lanes
    /// (attempts x timeout), if liveness probing is on.
    pub liveness_confirmation_secs: Option<f64>,
    /// Nodes alive after the crash.
    pub live: usize,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Hash of the event trace (same seed, same hash).
    pub trace_hash: String,
    /// Measures just before the crash.
    pub before: RoundReport,
    /// Reach of floods (mean of 20 sources) at the instant of the crash, before any node noticed.
    pub at_crash: f64,
    /// One entry per round after the crash.
    pub rounds: Vec<RoundReport>,
    /// First round whose flood reached every live node.
    pub rounds_to_full: Option<u32>,
    /// Every active-view edge mutual at the last round.
    pub symmetric: bool,
    /// In-degree distribution before the crash: degree -> nodes.
    pub in_degree_before: BTreeMap<usize, usize>,
    /// In-degree distribution at the last round.
    pub in_degree_after: BTreeMap<usize, usize>,
    /// Overlay messages rejected (0 unless a protocol bug).
    pub rejected: u64,
    /// Peak resident memory of the process, in MiB, where the OS reports it.
    pub peak_rss_mib: Option<f64>,
}

/// Broadcasts averaged per measure: the reach of one flood depends on where it starts when the
/// graph is fragmented.
const SOURCES: usize = 20;

/// Mean fraction of live nodes reached by floods from `SOURCES` random live nodes.
fn reliability(sim: &mut Network, g: &Graph) -> f64 {
    if g.live.is_empty() {
        return 1.0;
    }
    let mut sum = 0.0;
    for _ in 0..SOURCES {
        let src = sim.rng().gen_range(0..g.live.len());
        sum += g.flood_reach(src);
    }
    sum / SOURCES as f64
}

fn measure(sim: &mut Network, round: u32, at_secs: f64) -> RoundReport {
    let g = Graph::of(sim);
    RoundReport {
        round,
        at_secs,
        flood_reliability: reliability(sim, &g),
        largest_component: g.largest_component(),
        symmetry: g.symmetry(),
        dead_in_views: g.dead_edges,
        islands: g.components().into_iter().skip(1).collect(),
    }
}

/// Runs the experiment. `progress` is told what phase the run is in.
pub fn run(opts: &HyParViewOpts, progress: &mut dyn Progress) -> HyParViewReport {
    let wall = std::time::Instant::now();
    let choice = OverlayChoice::HyParView(opts.config.clone());
    let n = opts.nodes.max(2);
    let mut setup = choice.setup(n, opts.seed);
    setup.net = opts.net.clone();
    setup.keepalive = opts.keepalive;
    setup.liveness = opts.liveness;
    let mut sim = Network::new(setup);
    join_and_settle(
        &mut sim,
        opts.contacts,
        opts.join_window,
        opts.settle_rounds,
        opts.config.shuffle_interval,
        progress,
    );
    let period = opts.config.shuffle_interval;
    let before = measure(&mut sim, 0, 0.0);
    let in_degree_before = Graph::of(&sim).in_degrees();

    // Crash a random fraction at once.
    let mut ids: Vec<NodeId> = (0..n).collect();
    let k = ((f64::from(n) * opts.crash).floor() as usize).min(n as usize - 1);
    for i in 0..k {
        let j = sim.rng().gen_range(i..ids.len());
        ids.swap(i, j);
    }
    for &victim in &ids[..k] {
        sim.crash(victim);
    }
    let crash_time = sim.now;
    let at_crash = {
        let g = Graph::of(&sim);
        reliability(&mut sim, &g)
    };
    let mut rounds = Vec::new();
    sim.run_for(Duration::from_secs(1));
    rounds.push(measure(&mut sim, 0, 1.0));
    for r in 1..=opts.rounds {
        progress.phase(
            &format!("after crash, round {r}/{}", opts.rounds),
            sim.now,
            sim.events,
        );
        sim.run_until(crash_time + period * r);
        let at = (sim.now - crash_time).as_secs_f64();
        rounds.push(measure(&mut sim, r, at));
    }
    let rounds_to_full = rounds
        .iter()
        .find(|r| r.flood_reliability >= 1.0)
        .map(|r| r.round);
    let last = Graph::of(&sim);
    HyParViewReport {
        seed: opts.seed,
        nodes: n,
        crash: opts.crash,
        silent_crashes: opts.net.silent_crashes,
        keepalive_detection_secs: opts.keepalive.map(|k| k.detection_time().as_secs_f64()),
        liveness_confirmation_secs: opts.liveness.map(|l| l.confirmation_time().as_secs_f64()),
        live: last.live.len(),
        wall_secs: wall.elapsed().as_secs_f64(),
        events: sim.events,
        trace_hash: format!("{:016x}", sim.trace.value()),
        before,
        at_crash,
        symmetric: rounds.last().is_some_and(|r| r.symmetry >= 1.0),
        rounds,
        rounds_to_full,
        in_degree_before,
        in_degree_after: last.in_degrees(),
        rejected: sim.rejected,
        peak_rss_mib: crate::progress::peak_rss_mib(),
    }
}

/// Joins every node of `sim`: contacts `1..contacts` join node 0 at once, every other node
/// joins a random contact at a random time in `window`; then `settle_rounds` periods pass.
pub fn join_and_settle(
    sim: &mut Network,
    contacts: u32,
    window: Duration,
    settle_rounds: u32,
    period: Duration,
    progress: &mut dyn Progress,
) {
    let n = sim.len() as u32;
    let contacts = contacts.clamp(1, n);
    // Contacts join the first one at once; everyone else joins a random contact at a random
    // time in the join window.
    for c in 1..contacts {
        sim.join(c, 0);
    }
    let window = window.as_micros() as u64;
    let mut joins: Vec<(u64, NodeId, NodeId)> = (contacts..n)
        .map(|i| {
            let at = if window > 0 {
                sim.rng().gen_range(0..window)
            } else {
                0
            };
            let c = sim.rng().gen_range(0..contacts);
            (at, i, c)
        })
        .collect();
    joins.sort_unstable();
    let start = sim.now;
    for (k, (at, i, c)) in joins.iter().enumerate() {
        sim.run_until(start + Duration::from_micros(*at));
        sim.join(*i, *c);
        if k % 1000 == 0 {
            progress.phase(&format!("joining {k}/{}", joins.len()), sim.now, sim.events);
        }
    }
    for r in 0..settle_rounds {
        progress.phase(
            &format!("settling, round {}/{}", r + 1, settle_rounds),
            sim.now,
            sim.events,
        );
        sim.run_for(period);
    }
}
