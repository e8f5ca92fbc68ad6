//! Swarm testing: random scenarios (overlay, size, latency, loss, duplication, partitions one
//! way and both ways, crashes, restarts, leaves) derived from one seed, invariants checked
//! after every event, then a healing phase that must converge within a bound.
//!
//! Invariants after every event: HyParView views within their bounds, without self, active
//! and passive disjoint; full mesh membership holding the node itself unless it left; no
//! overlay message rejected. Once healed (faults stopped, crashed nodes restarted, leavers
//! rejoined): HyParView active views symmetric, free of dead nodes and forming one connected
//! graph; full mesh membership identical on every node and equal to all nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use partisan_core::overlay::{FullMeshConfig, HyParViewConfig, Overlay};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::engine::{derive_seed, NetConfig, NodeId, OverlayChoice, Sim, SimOverlay};
use crate::graph::Graph;

/// Sizes of generated scenarios.
#[derive(Debug, Clone, Copy)]
pub struct SwarmLimits {
    /// Fewest nodes.
    pub min_nodes: u32,
    /// Most nodes.
    pub max_nodes: u32,
    /// Virtual time of the faulty phase.
    pub chaos: Duration,
    /// Faults injected during the faulty phase (at most).
    pub max_faults: u32,
}

impl Default for SwarmLimits {
    fn default() -> Self {
        SwarmLimits {
            min_nodes: 10,
            max_nodes: 50,
            chaos: Duration::from_secs(60),
            max_faults: 20,
        }
    }
}

/// What a passing scenario did.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Seed.
    pub seed: u64,
    /// Overlay.
    pub overlay: String,
    /// Nodes.
    pub nodes: u32,
    /// Faults injected.
    pub faults: u32,
    /// Events processed.
    pub events: u64,
    /// Virtual seconds the healing phase took to converge.
    pub heal_secs: f64,
    /// Trace hash.
    pub trace_hash: String,
}

/// A failing scenario and how to replay it.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("seed {seed}: {reason} (reproduce: {command})")]
pub struct ScenarioFailure {
    /// Seed.
    pub seed: u64,
    /// What went wrong, and when.
    pub reason: String,
    /// The command that replays this exact run.
    pub command: String,
}

fn check_node(sim: &Sim, n: NodeId) -> Result<(), String> {
    if sim.rejected > 0 {
        return Err(format!("an overlay message was rejected (at node {n})"));
    }
    let node = &sim.nodes[n as usize];
    if !node.alive {
        return Ok(());
    }
    let me = node.info.name();
    match &node.overlay {
        SimOverlay::HyParView(h) => {
            let (active, passive) = (h.active_view(), h.passive_view());
            let cfg = h.config();
            if active.len() > cfg.active_max {
                return Err(format!(
                    "{me}: active view {} > {}",
                    active.len(),
                    cfg.active_max
                ));
            }
            if passive.len() > cfg.passive_max {
                return Err(format!(
                    "{me}: passive view {} > {}",
                    passive.len(),
                    cfg.passive_max
                ));
            }
            if active.contains(me) || passive.contains(me) {
                return Err(format!("{me}: itself in a view"));
            }
            if let Some(x) = active.iter().find(|a| passive.contains(a)) {
                return Err(format!("{me}: {x} both active and passive"));
            }
        }
        SimOverlay::FullMesh(f) => {
            let members = f.members();
            if !f.has_left() && !members.contains(me) {
                return Err(format!("{me}: not in its own membership"));
            }
            if members.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{me}: members not sorted and unique"));
            }
        }
    }
    Ok(())
}

fn healed(sim: &Sim) -> Result<(), String> {
    match &sim.nodes[0].overlay {
        SimOverlay::HyParView(_) => {
            let g = Graph::of(sim);
            if g.dead_edges > 0 {
                return Err(format!("{} active entries name dead nodes", g.dead_edges));
            }
            if g.symmetry() < 1.0 {
                return Err(format!("active views not symmetric ({:.3})", g.symmetry()));
            }
            if g.largest_component() != g.live.len() {
                return Err(format!(
                    "overlay not connected: largest component {} of {}",
                    g.largest_component(),
                    g.live.len()
                ));
            }
            Ok(())
        }
        SimOverlay::FullMesh(_) => {
            let n = sim.nodes.len();
            let mut hashes = BTreeSet::new();
            for node in &sim.nodes {
                let SimOverlay::FullMesh(f) = &node.overlay else {
                    return Err("mixed overlays".into());
                };
                if f.members().len() != n {
                    return Err(format!(
                        "{} sees {} of {n} members",
                        node.info.name(),
                        f.members().len()
                    ));
                }
                hashes.insert(f.membership().hash());
            }
            if hashes.len() != 1 {
                return Err(format!("{} different memberships", hashes.len()));
            }
            Ok(())
        }
    }
}

/// For a HyParView failure: each node's views, to see why the overlay did not heal.
fn describe(sim: &Sim) -> String {
    if sim.nodes.len() > 64 {
        return String::new();
    }
    if matches!(sim.nodes[0].overlay, SimOverlay::FullMesh(_)) {
        let all: BTreeSet<_> = sim.nodes.iter().map(|n| n.info.name().clone()).collect();
        let mut s = String::from("\n  memberships (node: missing):");
        for n in &sim.nodes {
            let SimOverlay::FullMesh(f) = &n.overlay else {
                continue;
            };
            let have: BTreeSet<_> = f.members().into_iter().collect();
            let missing: Vec<_> = all
                .difference(&have)
                .map(|x| x.short_name().to_string())
                .collect();
            s.push_str(&format!(
                "\n  {}{}{}: {}",
                n.info.name().short_name(),
                if f.has_left() { " (left)" } else { "" },
                if f.is_isolated() { " (isolated)" } else { "" },
                missing.join(",")
            ));
        }
        return s;
    }
    let mut s = String::from("\n  views (node: active | passive):");
    for (i, n) in sim.nodes.iter().enumerate() {
        let o = n.overlay.as_dyn();
        let short = |v: Vec<partisan_core::id::NodeName>| {
            v.iter()
                .map(|x| x.short_name().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        s.push_str(&format!(
            "\n  n{i}{}: {} | {}",
            if n.alive { "" } else { " (dead)" },
            short(o.active_view()),
            short(o.passive_view())
        ));
    }
    s
}

/// Runs the scenario of `seed`.
pub fn run_scenario(seed: u64, limits: SwarmLimits) -> Result<ScenarioReport, ScenarioFailure> {
    let fail = |reason: String| ScenarioFailure {
        seed,
        reason,
        command: format!("partisan sim swarm --seed {seed}"),
    };
    let mut g = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0x5_4a11));
    let nodes = g.gen_range(limits.min_nodes..=limits.max_nodes.max(limits.min_nodes));
    let hyparview = g.gen_bool(0.5);
    let choice = if hyparview {
        let active_max = g.gen_range(3..=6);
        OverlayChoice::HyParView(HyParViewConfig {
            active_max,
            active_min: g.gen_range(1..=active_max.min(3)),
            passive_max: g.gen_range(5..=30),
            shuffle_interval: Duration::from_millis(g.gen_range(2_000..=10_000)),
            random_promotion_interval: Duration::from_millis(g.gen_range(1_000..=5_000)),
            ..HyParViewConfig::default()
        })
    } else {
        OverlayChoice::FullMesh(FullMeshConfig {
            periodic_interval: Duration::from_millis(g.gen_range(1_000..=10_000)),
            fanout: g.gen_range(1..=5),
            ..FullMeshConfig::default()
        })
    };
    let lat_min = g.gen_range(1..=5);
    let faulty = NetConfig {
        latency_min: Duration::from_millis(lat_min),
        latency_max: Duration::from_millis(g.gen_range(lat_min..=100)),
        loss: if g.gen_bool(0.5) {
            g.gen_range(0.0..0.05)
        } else {
            0.0
        },
        duplicate: if g.gen_bool(0.5) {
            g.gen_range(0.0..0.05)
        } else {
            0.0
        },
        detect_delay: Duration::from_millis(g.gen_range(1_000..=10_000)),
        connect_timeout: Duration::from_millis(g.gen_range(200..=2_000)),
        silent_crashes: g.gen_bool(0.3),
    };
    let clean = NetConfig {
        loss: 0.0,
        duplicate: 0.0,
        ..faulty.clone()
    };
    let mut sim = Sim::new(nodes, &choice, faulty, derive_seed(seed, 1));
    let overlay_name = if hyparview { "hyparview" } else { "full-mesh" };

    // Joins within the first 5 s, each through a random earlier node.
    let mut joins: Vec<(u64, NodeId, NodeId)> = (1..nodes)
        .map(|i| (g.gen_range(0..5_000_000), i, g.gen_range(0..i)))
        .collect();
    joins.sort_unstable();
    // Faults during the chaos phase.
    let chaos = limits.chaos.as_micros() as u64;
    let n_faults = g.gen_range(0..=limits.max_faults);
    let mut faults: Vec<(u64, u32)> = (0..n_faults)
        .map(|k| (g.gen_range(5_000_000..5_000_000 + chaos), k))
        .collect();
    faults.sort_unstable();
    let mut plan: Vec<(u64, Option<(NodeId, NodeId)>)> =
        joins.iter().map(|&(t, i, c)| (t, Some((i, c)))).collect();
    plan.extend(faults.iter().map(|&(t, _)| (t, None)));
    plan.sort_by_key(|(t, j)| (*t, j.is_none()));

    let mut crashed: BTreeSet<NodeId> = BTreeSet::new();
    let mut log: Vec<String> = Vec::new();
    let mut left: BTreeSet<NodeId> = BTreeSet::new();
    let start = sim.now;
    let checker = |s: &Sim, n: NodeId| check_node(s, n);
    for (t, join) in plan {
        let at = start + Duration::from_micros(t);
        sim.run_checked(at, checker)
            .map_err(|e| fail(format!("at {:.3}s: {e}", at.0 as f64 / 1e6)))?;
        if let Some((i, c)) = join {
            sim.join(i, c);
            continue;
        }
        let live: Vec<NodeId> = sim
            .live()
            .into_iter()
            .filter(|x| !left.contains(x))
            .collect();
        let pick = |g: &mut ChaCha8Rng, v: &[NodeId]| v[g.gen_range(0..v.len())];
        match g.gen_range(0..7) {
            0 if live.len() > (nodes as usize).div_ceil(2) => {
                let v = pick(&mut g, &live);
                sim.crash(v);
                log.push(format!("{:.1}s crash n{v}", sim.now.0 as f64 / 1e6));
                crashed.insert(v);
            }
            1 if !crashed.is_empty() => {
                let v = *crashed
                    .iter()
                    .nth(g.gen_range(0..crashed.len()))
                    .expect("non-empty");
                crashed.remove(&v);
                sim.restart(v, &choice);
                log.push(format!("{:.1}s restart n{v}", sim.now.0 as f64 / 1e6));
                let c = pick(&mut g, &live);
                sim.join(v, c);
                log.push(format!("{:.1}s join n{v} via n{c}", sim.now.0 as f64 / 1e6));
            }
            2 => {
                let (a, b) = (g.gen_range(0..nodes), g.gen_range(0..nodes));
                if a != b {
                    let both = g.gen_bool(0.5);
                    sim.partition(a, b, both);
                    log.push(format!(
                        "{:.1}s partition n{a}-n{b} both={both}",
                        sim.now.0 as f64 / 1e6
                    ));
                }
            }
            3 => {
                // Split the cluster in two groups.
                let both = g.gen_bool(0.7);
                let side: Vec<bool> = (0..nodes).map(|_| g.gen_bool(0.5)).collect();
                log.push(format!("{:.1}s split both={both}", sim.now.0 as f64 / 1e6));
                for a in 0..nodes {
                    for b in 0..nodes {
                        if side[a as usize] && !side[b as usize] {
                            sim.partition(a, b, both);
                        }
                    }
                }
            }
            4 => {
                sim.heal();
                log.push(format!("{:.1}s heal", sim.now.0 as f64 / 1e6));
            }
            5 if live.len() > 2 => {
                let v = pick(&mut g, &live);
                sim.leave(v);
                log.push(format!("{:.1}s leave n{v}", sim.now.0 as f64 / 1e6));
                left.insert(v);
            }
            6 if !left.is_empty() => {
                let v = *left
                    .iter()
                    .nth(g.gen_range(0..left.len()))
                    .expect("non-empty");
                left.remove(&v);
                let c = pick(&mut g, &live);
                sim.join(v, c);
                log.push(format!("{:.1}s join n{v} via n{c}", sim.now.0 as f64 / 1e6));
            }
            _ => {}
        }
    }
    sim.run_checked(start + Duration::from_micros(5_000_000 + chaos), checker)
        .map_err(|e| fail(format!("during chaos: {e}")))?;

    // Heal: no more faults; crashed nodes restart and leavers rejoin through live members.
    sim.heal();
    sim.set_net(clean);
    let members: Vec<NodeId> = sim
        .live()
        .into_iter()
        .filter(|x| !left.contains(x))
        .collect();
    for v in crashed {
        sim.restart(v, &choice);
        log.push(format!("{:.1}s restart n{v}", sim.now.0 as f64 / 1e6));
        let c = members[g.gen_range(0..members.len())];
        sim.join(v, c);
        log.push(format!("{:.1}s join n{v} via n{c}", sim.now.0 as f64 / 1e6));
    }
    for v in left {
        let c = members[g.gen_range(0..members.len())];
        sim.join(v, c);
        log.push(format!("{:.1}s join n{v} via n{c}", sim.now.0 as f64 / 1e6));
    }
    let period = match &choice {
        OverlayChoice::HyParView(h) => h.shuffle_interval,
        OverlayChoice::FullMesh(f) => f.periodic_interval,
    };
    let heal_start = sim.now;
    let bound = 40;
    let mut last = Err(String::new());
    for _ in 0..bound {
        let until = sim.now + period;
        sim.run_checked(until, checker)
            .map_err(|e| fail(format!("while healing: {e}")))?;
        last = healed(&sim);
        if last.is_ok() {
            break;
        }
    }
    if let Err(e) = last {
        return Err(fail(format!(
            "not healed within {bound} periods ({:.0}s): {e}{}\n  faults: {}",
            (sim.now - heal_start).as_secs_f64(),
            describe(&sim),
            log.join("; ")
        )));
    }
    Ok(ScenarioReport {
        seed,
        overlay: overlay_name.into(),
        nodes,
        faults: n_faults,
        events: sim.events,
        heal_secs: (sim.now - heal_start).as_secs_f64(),
        trace_hash: format!("{:016x}", sim.trace.value()),
    })
}
