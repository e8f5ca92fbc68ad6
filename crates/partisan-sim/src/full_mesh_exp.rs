//! The full-mesh membership experiment: a join storm (every node joins through one contact
//! within a short window), the time until every node holds the same membership of all nodes,
//! then the background membership traffic per node once the cluster is quiet.

use std::time::Duration;

use partisan_core::overlay::{FullMesh, FullMeshConfig};
use rand::Rng;
use serde::Serialize;

use crate::progress::Progress;
use crate::{NetConfig, Network, NodeId, OverlayChoice};

/// Parameters of the experiment.
#[derive(Debug, Clone)]
pub struct FullMeshOpts {
    /// Number of nodes.
    pub nodes: u32,
    /// Seed of the run.
    pub seed: u64,
    /// Joins are spread uniformly over this window.
    pub storm: Duration,
    /// Give up waiting for convergence after this long.
    pub converge_limit: Duration,
    /// Virtual time over which quiet traffic is measured.
    pub quiet_window: Duration,
    /// Full-mesh parameters (Partisan's defaults by default).
    pub config: FullMeshConfig,
    /// Network model.
    pub net: NetConfig,
}

impl Default for FullMeshOpts {
    fn default() -> Self {
        FullMeshOpts {
            nodes: 1000,
            seed: 1,
            storm: Duration::from_secs(1),
            converge_limit: Duration::from_secs(600),
            quiet_window: Duration::from_secs(60),
            config: FullMeshConfig::default(),
            net: NetConfig::default(),
        }
    }
}

/// Result of the experiment.
#[derive(Debug, Clone, Serialize)]
pub struct FullMeshReport {
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Virtual milliseconds from the first join until every node holds the same membership of
    /// all nodes (`None` if that did not happen within the limit).
    pub convergence_ms: Option<u64>,
    /// Membership bytes sent per node during the storm, until convergence.
    pub storm_bytes_per_node: f64,
    /// Membership bytes sent per node per second once quiet.
    pub bytes_per_node_per_sec: f64,
    /// Membership messages sent per node per second once quiet.
    pub messages_per_node_per_sec: f64,
    /// Bytes of one message carrying the whole membership (what Partisan gossips).
    pub full_state_bytes: u64,
    /// What Partisan's full-state gossip would cost per node per second at this size: the
    /// whole membership to every other member every period. Computed from `full_state_bytes`
    /// measured in this run, as the baseline of `bytes_per_node_per_sec`.
    pub partisan_style_bytes_per_node_per_sec: f64,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Hash of the event trace.
    pub trace_hash: String,
    /// Overlay messages rejected (0 unless a protocol bug).
    pub rejected: u64,
    /// Peak resident memory in MiB, where the OS reports it.
    pub peak_rss_mib: Option<f64>,
}

/// Whether every node holds the same membership of all `n` nodes.
fn converged(sim: &Network, n: usize) -> bool {
    let mut first = None;
    for node in sim.nodes() {
        let Some(fm) = node.engine.overlay_as::<FullMesh>() else {
            return false;
        };
        let h = fm.membership().hash();
        match first {
            None => first = Some(h),
            Some(f) if f != h => return false,
            _ => {}
        }
    }
    sim.engine(0)
        .overlay_as::<FullMesh>()
        .is_some_and(|fm| fm.membership().members().len() == n)
}

fn totals(sim: &Network) -> (u64, u64) {
    sim.nodes()
        .iter()
        .fold((0, 0), |(b, m), n| (b + n.bytes_sent, m + n.messages_sent))
}

/// Runs the experiment.
pub fn run(opts: &FullMeshOpts, progress: &mut dyn Progress) -> FullMeshReport {
    let wall = std::time::Instant::now();
    let n = opts.nodes.max(2);
    let choice = OverlayChoice::FullMesh(opts.config.clone());
    let mut setup = choice.setup(n, opts.seed);
    setup.net = NetConfig {
        encode: true,
        ..opts.net.clone()
    };
    let mut sim = Network::new(setup);
    let window = opts.storm.as_micros() as u64;
    let mut joins: Vec<(u64, NodeId)> = (1..n)
        .map(|i| {
            let at = if window > 0 {
                sim.rng().gen_range(0..window)
            } else {
                0
            };
            (at, i)
        })
        .collect();
    joins.sort_unstable();
    let start = sim.now;
    for (at, i) in &joins {
        sim.run_until(start + Duration::from_micros(*at));
        sim.join(*i, 0);
    }
    let step = Duration::from_millis(50);
    let mut convergence = None;
    while sim.now - start < opts.converge_limit {
        if converged(&sim, n as usize) {
            convergence = Some((sim.now - start).as_millis() as u64);
            break;
        }
        progress.phase("waiting for convergence", sim.now, sim.events);
        sim.run_for(step);
    }
    let (storm_bytes, _) = totals(&sim);
    // Quiet: let two periods pass, then measure over the window.
    sim.run_for(opts.config.periodic_interval * 2);
    let (b0, m0) = totals(&sim);
    let t0 = sim.now;
    let window = opts.quiet_window.max(Duration::from_secs(1));
    let slices = 10u32;
    for k in 0..slices {
        progress.phase(
            &format!("measuring quiet traffic {}/{slices}", k + 1),
            sim.now,
            sim.events,
        );
        sim.run_for(window / slices);
    }
    let (b1, m1) = totals(&sim);
    let secs = (sim.now - t0).as_secs_f64();
    let full_state_bytes = sim.engine(0).overlay_as::<FullMesh>().map_or(0, |fm| {
        let delta = fm
            .membership()
            .delta_for(&partisan_core::membership::CausalContext::new());
        postcard::serialize_with_flavor(&delta, postcard::ser_flavors::Size::default()).unwrap_or(0)
            as u64
            + 8
    });
    let period = opts.config.periodic_interval.as_secs_f64();
    FullMeshReport {
        seed: opts.seed,
        nodes: n,
        convergence_ms: convergence,
        storm_bytes_per_node: storm_bytes as f64 / f64::from(n),
        bytes_per_node_per_sec: (b1 - b0) as f64 / f64::from(n) / secs,
        messages_per_node_per_sec: (m1 - m0) as f64 / f64::from(n) / secs,
        full_state_bytes,
        partisan_style_bytes_per_node_per_sec: f64::from(n - 1) * full_state_bytes as f64 / period,
        wall_secs: wall.elapsed().as_secs_f64(),
        events: sim.events,
        trace_hash: format!("{:016x}", sim.trace.value()),
        rejected: sim.rejected,
        peak_rss_mib: crate::progress::peak_rss_mib(),
    }
}
