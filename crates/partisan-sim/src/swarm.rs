//! Swarm testing: random scenarios derived from one seed, over every overlay, with invariants
//! checked after every event, then a healing phase that must converge within a bound.
//!
//! A scenario picks an overlay (HyParView, full mesh, client-server with 1 to 3 servers,
//! static), a family, sizes, protocol timers, keepalive timing and a network model (latency,
//! loss, duplication, silent or loud crashes, how late a node learns that a connection ended),
//! then runs joins and faults:
//!
//! - `chaos`: crashes, restarts, partitions one way and both ways, splits of the cluster in
//!   two, heals, leaves and rejoins.
//! - `churn`: no crash nor partition, but frequent leaves and rejoins, short-lived temporary
//!   connections, and a long delay before a node learns a connection ended, so overlay messages
//!   keep meeting lanes that are closing, held messages meet lanes that open while others
//!   close, and temporary wants lapse on lanes the peer still uses.
//! - `long-split` and `loss` ([`crate::swarm_families`]): the cluster split in two for 10 to
//!   100 overlay periods, on every overlay; overlay frames lost at a high rate on client-server
//!   and static while nodes crash, restart, leave (some for good) and rejoin.
//!
//! Invariants after every event, on the node it touched:
//! - overlay state: HyParView views within their bounds, without the node itself, active and
//!   passive disjoint; full mesh membership holding the node itself unless it left;
//! - no overlay message rejected, no control frame that fails to decode;
//! - known identities only of peers wanted or with a lane (bounded by wanted + connected);
//! - overlay messages held only for peers with no open lane (none stranded);
//! - every overlay message accounted for (on a lane, held, or dropped for a stated reason), and
//!   none dropped for a full queue when the network loses nothing;
//! - no node closes as unwanted a lane its peer dialed (the peer still relies on it).
//!
//! Once healed (faults stopped, crashed nodes restarted, leavers rejoined), per overlay:
//! HyParView active views symmetric, free of dead nodes and one connected graph; full mesh
//! membership identical everywhere and equal to all nodes; client-server servers connected to
//! everyone and clients to every server, each client with a connected relay; static: every
//! node connected to every other. Nodes that left for good (the loss family) are members of
//! nobody. And for every overlay: exactly one connection per (pair, channel, lane) the overlay
//! keeps, with every lane of it up.
//!
//! Half the scenarios also broadcast (Plumtree, a handler that keeps every message and runs
//! anti-entropy) from random live nodes during the faults. Once the overlay has healed, a
//! member broadcasts once more, and within a bound every member must hold every message any
//! member holds (the last one included): what the tree, grafts and anti-entropy together
//! promise. Every broadcast frame crosses the network encoded and meets the same faults.
//!
//! Half the scenarios (drawn independently) also run processes
//! ([`crate::swarm_processes`]): a few on every node once joins are done, then 50 to 200
//! random actions during the faults (spawn, monitor by pid or name, link, demonitor, unlink,
//! end with any reason, exit signals, liveness queries), with what they receive and what the
//! signal tables hold checked after every event. The network of those scenarios loses and
//! duplicates nothing (process signals rely on the ordered, lossless connection TCP gives).
//! Once the overlay has healed (and broadcasts spread), every monitor and link owed a `Down`
//! or exit signal must have it; then every process ends, in rounds, and every signal table
//! must empty. `PARTISAN_SWARM_DEBUG` prints each scenario's setup and every process action
//! and signal; `PARTISAN_SWARM_KEEP_LOSS` keeps loss and duplication in those scenarios.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use partisan_core::broadcast::{BroadcastHandler, PlumtreeConfig};
use partisan_core::engine::Keepalive;
use partisan_core::id::{ChannelName, ChannelOpts, NodeName};
use partisan_core::overlay::{
    ClientServer, FullMesh, FullMeshConfig, HyParView, HyParViewConfig, Overlay, PeerInfo,
};
use partisan_core::testing::Recorder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::graph::Graph;
use crate::swarm_families::Special;
use crate::swarm_processes::{ProcessBook, ProcessFigures};
use crate::{derive_seed, NetConfig, Network, NodeId, OverlayChoice};

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
    /// Family of faults (`chaos`, `churn`, `long-split` or `loss`).
    pub family: String,
    /// Nodes.
    pub nodes: u32,
    /// Faults injected.
    pub faults: u32,
    /// Events processed.
    pub events: u64,
    /// Virtual seconds the healing phase took to converge.
    pub heal_secs: f64,
    /// The period healing is checked at and bounded in (the overlay's, or a quarter of the
    /// keepalive's detection time if longer), in seconds.
    pub period_secs: f64,
    /// Virtual seconds the cluster stayed split in two (`long-split`; 0 otherwise).
    pub split_secs: f64,
    /// Trace hash.
    pub trace_hash: String,
    /// Messages broadcast (0 when the scenario does not broadcast).
    pub broadcasts: u32,
    /// What its processes did, when it has some.
    pub processes: Option<ProcessFigures>,
}

/// The share of scenarios with processes (monitors and links).
const PROCESS_SHARE: f64 = 0.5;

/// The broadcast handler of swarm scenarios.
const LOG: &str = "log";

/// Messages every member holds, or why not: every member must hold every message some member
/// holds.
fn broadcast_converged(sim: &Network, members: &[NodeId]) -> Result<(), String> {
    let held = |i: NodeId| {
        sim.engine(i)
            .broadcast_handler::<Recorder>(LOG)
            .map(|r| {
                r.deliveries()
                    .keys()
                    .cloned()
                    .collect::<BTreeSet<Vec<u8>>>()
            })
            .unwrap_or_default()
    };
    let sets: Vec<(NodeId, BTreeSet<Vec<u8>>)> = members.iter().map(|&i| (i, held(i))).collect();
    let all: BTreeSet<&Vec<u8>> = sets.iter().flat_map(|(_, s)| s.iter()).collect();
    for (i, set) in &sets {
        if set.len() < all.len() {
            let delivered_twice = sim
                .engine(*i)
                .broadcast_handler::<Recorder>(LOG)
                .map(|r| r.deliveries().values().filter(|d| d.delivered > 1).count())
                .unwrap_or(0);
            return Err(format!(
                "n{i} holds {} of the {} broadcast messages (delivered twice: {delivered_twice})",
                set.len(),
                all.len()
            ));
        }
    }
    Ok(())
}

/// A failing scenario and how to replay it.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("seed {seed}: {reason} (reproduce: {command})")]
pub struct ScenarioFailure {
    /// Seed.
    pub seed: u64,
    /// Overlay.
    pub overlay: String,
    /// Family of faults.
    pub family: String,
    /// What went wrong, and when.
    pub reason: String,
    /// The command that replays this exact run.
    pub command: String,
}

/// Families of scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Chaos,
    Churn,
    LongSplit,
    Loss,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Chaos => "chaos",
            Family::Churn => "churn",
            Family::LongSplit => "long-split",
            Family::Loss => "loss",
        }
    }
}

/// The invariants checked after every event on node `n`.
pub fn check_node(sim: &Network, n: NodeId) -> Result<(), String> {
    if sim.rejected > 0 {
        return Err(format!("an overlay message was rejected (at node n{n})"));
    }
    if sim.decode_errors > 0 {
        return Err("a control frame failed to decode".into());
    }
    if sim.peer_lanes_closed > 0 {
        return Err(format!(
            "a node closed as unwanted a lane its peer dialed (at node n{n})"
        ));
    }
    let node = sim.node(n);
    if !node.alive {
        return Ok(());
    }
    let e = &node.engine;
    let me = node.info.name();
    if let Some(h) = e.overlay_as::<HyParView>() {
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
    if let Some(f) = e.overlay_as::<FullMesh>() {
        let members = f.members();
        if !f.has_left() && !members.contains(me) {
            return Err(format!("{me}: not in its own membership"));
        }
        if members.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("{me}: members not sorted and unique"));
        }
    }
    if let Some(p) = e.unneeded_identity() {
        return Err(format!(
            "{me}: keeps the identity of {p}, neither wanted nor connected"
        ));
    }
    for p in e.peers_with_held() {
        if e.is_connected(p) {
            return Err(format!(
                "{me}: {} overlay messages stranded for {p}, which has an open lane",
                e.held_for(p)
            ));
        }
    }
    let s = e.stats();
    let unaccounted = s.overlay_unaccounted(e.held());
    if unaccounted != 0 {
        return Err(format!(
            "{me}: {unaccounted} overlay messages unaccounted for ({s:?}, {} held)",
            e.held()
        ));
    }
    if s.overlay_dropped_full > 0 {
        return Err(format!(
            "{me}: {} overlay messages dropped for a full queue (the network has none)",
            s.overlay_dropped_full
        ));
    }
    Ok(())
}

/// The check after every event: [`check_node`], and with processes what the book checks.
fn checker(
    book: &mut Option<ProcessBook>,
) -> impl FnMut(&Network, NodeId) -> Result<(), String> + '_ {
    move |sim, n| {
        check_node(sim, n)?;
        match book {
            Some(b) => b.observe(sim, n),
            None => Ok(()),
        }
    }
}

/// [`Network::run_checked`] with [`checker`], after reading what the commands given since
/// the last event did on every node (a leave, say, fires monitors and links at once).
fn run_checked(
    sim: &mut Network,
    book: &mut Option<ProcessBook>,
    until: partisan_core::time::Instant,
) -> Result<(), String> {
    if let Some(b) = book {
        for v in sim.live() {
            b.observe(sim, v)?;
        }
    }
    sim.run_checked(until, checker(book))
}

/// Runs until `what` holds (checked every second), at most `limit`; its last answer.
fn run_until_ok(
    sim: &mut Network,
    book: &mut Option<ProcessBook>,
    limit: Duration,
    what: impl Fn(&ProcessBook, &Network) -> Result<(), String>,
) -> Result<(), String> {
    let deadline = sim.now + limit;
    loop {
        let last = match book {
            Some(b) => what(b, sim),
            None => return Ok(()),
        };
        if last.is_ok() || sim.now >= deadline {
            return last;
        }
        let until = sim.now + Duration::from_secs(1);
        run_checked(sim, book, until)?;
    }
}

/// The peers node `i` keeps connected for its overlay (every lane of each).
fn kept_peers(sim: &Network, i: NodeId) -> Vec<NodeName> {
    let e = sim.engine(i);
    e.overlay().active_view()
}

/// One connection per (pair, channel, lane), and every lane of every kept peer up.
fn connections_settled(sim: &Network) -> Result<(), String> {
    let mut slots: BTreeMap<(NodeId, NodeId, ChannelName, u16), u32> = BTreeMap::new();
    for (d, a, ch, lane) in sim.open_connections() {
        *slots.entry((d.min(a), d.max(a), ch, lane)).or_default() += 1;
    }
    if let Some(((a, b, ch, lane), k)) = slots.iter().find(|(_, k)| **k > 1) {
        return Err(format!("{k} connections n{a}-n{b} on {ch}/{lane}"));
    }
    for i in sim.live() {
        for peer in kept_peers(sim, i) {
            let Some(j) = sim.id_of(&peer) else {
                continue;
            };
            let spec = &sim.node(j).info.spec;
            for (ch, lane) in spec.lanes() {
                if !slots.contains_key(&(i.min(j), i.max(j), ch.clone(), lane)) {
                    return Err(format!(
                        "n{i} keeps n{j} but lane {ch}/{lane} is not up\n  n{i} of n{j}: {}\n  n{j} of n{i}: {}",
                        sim.engine(i).describe_peer(&peer),
                        sim.engine(j).describe_peer(sim.name_of(i))
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether the overlay healed, or why not; `gone` left for good (no member may keep them).
fn healed(sim: &Network, choice: &OverlayChoice, gone: &BTreeSet<NodeId>) -> Result<(), String> {
    let n = sim.len();
    let staying = |i: &NodeId| !gone.contains(i);
    match choice {
        OverlayChoice::HyParView(_) => {
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
        }
        OverlayChoice::FullMesh(_) => {
            let mut hashes = BTreeSet::new();
            for node in sim.nodes() {
                let Some(f) = node.engine.overlay_as::<FullMesh>() else {
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
        }
        OverlayChoice::ClientServer { servers } => {
            for i in sim.live().into_iter().filter(staying) {
                let e = sim.engine(i);
                let members = e.overlay().members();
                let mut expect: Vec<NodeName> = (0..n as NodeId)
                    .filter(staying)
                    .filter(|j| *j == i || i < *servers || *j < *servers)
                    .map(|j| sim.name_of(j).clone())
                    .collect();
                expect.sort();
                if members != expect {
                    return Err(format!(
                        "n{i} has members {} instead of {}",
                        short(&members),
                        short(&expect)
                    ));
                }
                if i >= *servers {
                    let cs = e
                        .overlay_as::<ClientServer>()
                        .ok_or_else(|| "mixed overlays".to_string())?;
                    let relays = cs.servers();
                    if !relays.iter().any(|r| e.is_connected(r)) {
                        return Err(format!("client n{i} has no connected relay"));
                    }
                }
            }
        }
        OverlayChoice::Static => {
            let mut expect: Vec<NodeName> = (0..n as NodeId)
                .filter(staying)
                .map(|j| sim.name_of(j).clone())
                .collect();
            expect.sort();
            for i in sim.live().into_iter().filter(staying) {
                let members = sim.engine(i).overlay().members();
                if members != expect {
                    return Err(format!(
                        "n{i} has members {} instead of {}",
                        short(&members),
                        short(&expect)
                    ));
                }
            }
        }
    }
    connections_settled(sim)
}

fn short(v: &[NodeName]) -> String {
    v.iter()
        .map(|x| x.short_name().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// For a failure: each node's views or memberships, to see why the overlay did not heal.
fn describe(sim: &Network) -> String {
    if sim.len() > 64 {
        return String::new();
    }
    let mut s = String::from("\n  nodes (node: members or active | passive | lanes to):");
    for i in 0..sim.len() as NodeId {
        let node = sim.node(i);
        let o = node.engine.overlay();
        let view = if node.engine.overlay_as::<HyParView>().is_some() {
            format!("{} | {}", short(&o.active_view()), short(&o.passive_view()))
        } else {
            short(&o.members())
        };
        let lanes: Vec<NodeName> = node.engine.connected_peers().cloned().collect();
        s.push_str(&format!(
            "\n  n{i}{}: {view} | {}",
            if node.alive { "" } else { " (dead)" },
            short(&lanes)
        ));
    }
    s
}

struct Scenario {
    choice: OverlayChoice,
    family: Family,
    nodes: u32,
}

fn generate(g: &mut ChaCha8Rng, limits: SwarmLimits) -> (Scenario, NetConfig, Keepalive) {
    let nodes = g.gen_range(limits.min_nodes..=limits.max_nodes.max(limits.min_nodes));
    let choice = match g.gen_range(0..4) {
        0 => {
            let active_max = g.gen_range(3..=6);
            OverlayChoice::HyParView(HyParViewConfig {
                active_max,
                active_min: g.gen_range(1..=active_max.min(3)),
                passive_max: g.gen_range(5..=30),
                shuffle_interval: Duration::from_millis(g.gen_range(2_000..=10_000)),
                random_promotion_interval: Duration::from_millis(g.gen_range(1_000..=5_000)),
                ..HyParViewConfig::default()
            })
        }
        1 => OverlayChoice::FullMesh(FullMeshConfig {
            periodic_interval: Duration::from_millis(g.gen_range(1_000..=10_000)),
            fanout: g.gen_range(1..=5),
            ..FullMeshConfig::default()
        }),
        2 => OverlayChoice::ClientServer {
            servers: g.gen_range(1..=3),
        },
        _ => OverlayChoice::Static,
    };
    let family = if g.gen_bool(0.7) {
        Family::Chaos
    } else {
        Family::Churn
    };
    let lat_min = g.gen_range(1..=5);
    let net = NetConfig {
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
        overlay_loss: 0.0,
        connect_timeout: Duration::from_millis(g.gen_range(200..=2_000)),
        silent_crashes: g.gen_bool(0.3),
        notice_delay: Duration::from_millis(match family {
            Family::Chaos => g.gen_range(0..=20),
            // (The newer families are drawn afterwards, from their own stream.)
            Family::Churn | Family::LongSplit | Family::Loss => g.gen_range(20..=300),
        }),
        encode: true,
    };
    let keepalive = Keepalive {
        idle: Duration::from_millis(g.gen_range(1_000..=10_000)),
        timeout: Duration::from_millis(g.gen_range(500..=3_000)),
        max_attempts: g.gen_range(1..=5),
    };
    (
        Scenario {
            choice,
            family,
            nodes,
        },
        net,
        keepalive,
    )
}

/// A contact for node `v` to join through, among `live` (never itself): a server for
/// client-server, anyone for the others, but never a full-mesh node whose own join is still
/// unanswered (two such nodes joining through each other form an island: seed 604 with any
/// contact allowed; merging islands is the "Membership that heals" issue). `None` when there
/// is none.
fn contact(
    g: &mut ChaCha8Rng,
    sim: &Network,
    choice: &OverlayChoice,
    v: NodeId,
    live: &[NodeId],
) -> Option<NodeId> {
    let settled = |x: NodeId| {
        sim.engine(x)
            .overlay_as::<FullMesh>()
            .is_none_or(|f| !f.is_joining() && !f.has_left())
    };
    let eligible: Vec<NodeId> = live
        .iter()
        .copied()
        .filter(|x| {
            *x != v
                && (!matches!(choice, OverlayChoice::ClientServer { .. }) || choice.is_server(*x))
        })
        .collect();
    let settled_ones: Vec<NodeId> = eligible.iter().copied().filter(|x| settled(*x)).collect();
    // With no settled node to choose from (the heal's rejoins), any will do.
    let ok = if settled_ones.is_empty() {
        eligible
    } else {
        settled_ones
    };
    (!ok.is_empty()).then(|| ok[g.gen_range(0..ok.len())])
}

/// Partitions every node of the `true` side from every node of the other (and back when
/// `both`).
fn split(sim: &mut Network, book: &mut Option<ProcessBook>, side: &[bool], both: bool) {
    let nodes = side.len() as NodeId;
    for a in 0..nodes {
        for b in 0..nodes {
            if side[a as usize] && !side[b as usize] {
                sim.partition(a, b, both);
                if let Some(book) = book {
                    book.partition(sim, a, b, both);
                }
            }
        }
    }
}

/// The overlay and the family (`chaos`, `churn`, `long-split` or `loss`) of the scenario of
/// `seed`, without running it.
pub fn overlay_and_family(seed: u64, limits: SwarmLimits) -> (&'static str, &'static str) {
    let mut g = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0x5_4a11));
    let (sc, _, _) = generate(&mut g, limits);
    let mut gf = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0xfa_3111));
    let family = match crate::swarm_families::draw(&mut gf, &sc.choice) {
        Some(Special::LongSplit { .. }) => Family::LongSplit,
        Some(Special::Loss { .. }) => Family::Loss,
        None => sc.family,
    };
    (sc.choice.name(), family.name())
}

/// Runs the scenario of `seed`.
pub fn run_scenario(seed: u64, limits: SwarmLimits) -> Result<ScenarioReport, ScenarioFailure> {
    let mut g = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0x5_4a11));
    let (mut sc, mut faulty, keepalive) = generate(&mut g, limits);
    let choice = sc.choice.clone();
    // The newer families likewise come from their own stream (see `crate::swarm_families`).
    let mut gf = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0xfa_3111));
    let special = crate::swarm_families::draw(&mut gf, &choice);
    match special {
        Some(Special::LongSplit { .. }) => sc.family = Family::LongSplit,
        Some(Special::Loss { rate }) => {
            sc.family = Family::Loss;
            faulty.overlay_loss = rate;
        }
        None => {}
    }
    let fail = |reason: String| ScenarioFailure {
        seed,
        overlay: choice.name().into(),
        family: sc.family.name().into(),
        reason,
        command: format!("partisan sim swarm --seed {seed}"),
    };
    let nodes = sc.nodes;
    // Broadcast decisions come from their own stream, so scenarios without broadcast are the
    // ones they were before broadcast existed.
    let mut gb = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0xb_10ad));
    let broadcasting = gb.gen_bool(0.5);
    // Processes (monitors, links) likewise.
    let mut gp = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0x9_20c5));
    let with_processes = gp.gen_bool(PROCESS_SHARE);
    let mut setup = choice.setup(nodes, derive_seed(seed, 1));
    if broadcasting {
        let pcfg = PlumtreeConfig {
            exchange_tick: Duration::from_secs(2),
            ..PlumtreeConfig::default()
        };
        setup.broadcast = Some(std::sync::Arc::new(move |_: NodeId, me: &PeerInfo| {
            vec![(
                Box::new(Recorder::of_incarnation(
                    LOG,
                    me.name().clone(),
                    me.creation,
                    true,
                )) as Box<dyn BroadcastHandler>,
                pcfg.clone(),
            )]
        }));
    }
    setup.net = faulty.clone();
    if with_processes && std::env::var("PARTISAN_SWARM_KEEP_LOSS").is_err() {
        setup.net.loss = 0.0;
        setup.net.duplicate = 0.0;
    }
    if std::env::var("PARTISAN_SWARM_DEBUG").is_ok() {
        eprintln!(
            "seed {seed}: {} {} of {nodes} nodes, processes {with_processes}, {:?}, {keepalive:?}",
            sc.family.name(),
            choice.name(),
            setup.net
        );
    }
    setup.keepalive = Some(keepalive);
    if g.gen_bool(0.3) {
        // A data channel of several lanes: more slots per pair to settle.
        setup.channels.insert(
            ChannelName::new("data").expect("valid channel"),
            ChannelOpts::with_parallelism(g.gen_range(2..=3)),
        );
    }
    if sc.family == Family::Churn {
        setup.transient_ttl = Duration::from_millis(g.gen_range(500..=3_000));
    }
    let clean = NetConfig {
        loss: 0.0,
        overlay_loss: 0.0,
        duplicate: 0.0,
        ..faulty.clone()
    };
    let mut sim = Network::new(setup);
    let mut book = with_processes.then(|| ProcessBook::new(nodes));
    let static_overlay = matches!(choice, OverlayChoice::Static);

    // Joins within the first 5 s, each through a random earlier node (a server for
    // client-server; static nodes know each other from their configuration).
    let mut joins: Vec<(u64, NodeId, NodeId)> = Vec::new();
    if !static_overlay {
        for i in 1..nodes {
            let earlier: Vec<NodeId> = (0..i).collect();
            if let Some(c) = contact(&mut g, &sim, &choice, i, &earlier) {
                joins.push((g.gen_range(0..5_000_000), i, c));
            }
        }
    }
    joins.sort_unstable();
    let chaos = special.map_or(limits.chaos, |s| s.window(limits.chaos));
    let chaos = chaos.as_micros() as u64;
    let n_faults = match sc.family {
        Family::Chaos | Family::Loss => g.gen_range(0..=limits.max_faults),
        Family::Churn => g.gen_range(limits.max_faults / 2..=limits.max_faults * 2),
        Family::LongSplit => 1,
    };
    let mut faults: Vec<(u64, u32)> = match special {
        // The one split, healed when the faulty phase ends.
        Some(Special::LongSplit { after, .. }) => vec![(5_000_000 + after.as_micros() as u64, 0)],
        _ => (0..n_faults)
            .map(|k| (g.gen_range(5_000_000..5_000_000 + chaos), k))
            .collect(),
    };
    faults.sort_unstable();
    let mut plan: Vec<(u64, Option<(NodeId, NodeId)>)> =
        joins.iter().map(|&(t, i, c)| (t, Some((i, c)))).collect();
    plan.extend(faults.iter().map(|&(t, _)| (t, None)));
    plan.sort_by_key(|(t, j)| (*t, j.is_none()));
    let mut casts: Vec<u64> = if broadcasting {
        (0..gb.gen_range(1..=20))
            .map(|_| gb.gen_range(2_000_000..5_000_000 + chaos))
            .collect()
    } else {
        Vec::new()
    };
    casts.sort_unstable();
    let mut casts = casts.into_iter().peekable();
    let mut broadcasts = 0u32;
    // Process actions: the first spawns a few processes on every node (once joins are done),
    // the others are random.
    let mut acts: Vec<u64> = if with_processes {
        (0..gp.gen_range(50..=200))
            .map(|_| gp.gen_range(5_000_000..5_000_000 + chaos))
            .collect()
    } else {
        Vec::new()
    };
    acts.sort_unstable();
    if with_processes {
        acts.insert(0, 5_000_000);
    }
    let mut acts = acts.into_iter().enumerate().peekable();

    let mut crashed: BTreeSet<NodeId> = BTreeSet::new();
    let mut log: Vec<String> = Vec::new();
    let mut left: BTreeSet<NodeId> = BTreeSet::new();
    let mut unjoined: BTreeSet<NodeId> = BTreeSet::new();
    // Nodes that left for good (the loss family).
    let mut gone: BTreeSet<NodeId> = BTreeSet::new();
    let start = sim.now;
    let secs = |sim: &Network| sim.now.0 as f64 / 1e6;
    for (t, join) in plan {
        loop {
            // The next broadcast or process action due by `t`, in time order.
            let cast = casts.peek().copied().filter(|c| *c <= t);
            let act = acts.peek().map(|(_, a)| *a).filter(|a| *a <= t);
            let (at, is_cast) = match (cast, act) {
                (Some(c), Some(a)) => (c.min(a), c <= a),
                (Some(c), None) => (c, true),
                (None, Some(a)) => (a, false),
                (None, None) => break,
            };
            let at = start + Duration::from_micros(at);
            run_checked(&mut sim, &mut book, at)
                .map_err(|e| fail(format!("at {:.3}s: {e}", at.0 as f64 / 1e6)))?;
            if is_cast {
                casts.next();
                let live: Vec<NodeId> = sim.live();
                let v = live[gb.gen_range(0..live.len())];
                if sim.broadcast(v, LOG, b"m").is_ok() {
                    broadcasts += 1;
                    log.push(format!("{:.1}s broadcast from n{v}", secs(&sim)));
                }
                continue;
            }
            let (k, _) = acts.next().expect("peeked");
            let b = book.as_mut().expect("process actions only with processes");
            let done = if k == 0 {
                sim.live().into_iter().try_for_each(|v| {
                    for _ in 0..gp.gen_range(1..=3) {
                        let named = gp.gen_bool(0.4).then(|| gp.gen_range(0..3));
                        b.spawn(&mut sim, v, named);
                    }
                    Ok(())
                })
            } else {
                b.act(&mut gp, &mut sim)
            };
            done.map_err(|e| fail(format!("at {:.3}s: {e}", secs(&sim))))?;
        }
        let at = start + Duration::from_micros(t);
        run_checked(&mut sim, &mut book, at)
            .map_err(|e| fail(format!("at {:.3}s: {e}", at.0 as f64 / 1e6)))?;
        if let Some((i, c)) = join {
            sim.join(i, c);
            continue;
        }
        let live: Vec<NodeId> = sim
            .live()
            .into_iter()
            .filter(|x| !left.contains(x) && !gone.contains(x))
            .collect();
        let pick = |g: &mut ChaCha8Rng, v: &[NodeId]| v[g.gen_range(0..v.len())];
        let kind = match sc.family {
            Family::Chaos => g.gen_range(0..7),
            Family::Churn => [5, 6][g.gen_range(0..2)],
            Family::LongSplit => 8,
            Family::Loss if static_overlay => [0, 1, 7][g.gen_range(0..3)],
            Family::Loss => [0, 1, 5, 6, 7][g.gen_range(0..5)],
        };
        match kind {
            0 if live.len() > (nodes as usize).div_ceil(2) => {
                // The loss family crashes client-server servers half the time.
                let servers: Vec<NodeId> = live
                    .iter()
                    .copied()
                    .filter(|x| choice.is_server(*x))
                    .collect();
                let v = if sc.family == Family::Loss && !servers.is_empty() && g.gen_bool(0.5) {
                    pick(&mut g, &servers)
                } else {
                    pick(&mut g, &live)
                };
                unjoined.remove(&v);
                match &mut book {
                    Some(b) => b
                        .crash(&mut sim, v)
                        .map_err(|e| fail(format!("at {:.3}s: {e}", secs(&sim))))?,
                    None => sim.crash(v),
                }
                log.push(format!("{:.1}s crash n{v}", secs(&sim)));
                crashed.insert(v);
            }
            1 if !crashed.is_empty() => {
                let v = *crashed
                    .iter()
                    .nth(g.gen_range(0..crashed.len()))
                    .expect("non-empty");
                crashed.remove(&v);
                sim.restart(v);
                log.push(format!("{:.1}s restart n{v}", secs(&sim)));
                // A restarted server that another server still knows (or, when it is the only
                // server, a client) may stay put, as one with no seeds configured would: it
                // must relearn everyone from the greetings of those who know it.
                let alone = matches!(choice, OverlayChoice::ClientServer { servers: 1 });
                let known = |sim: &Network| {
                    live.iter().any(|&x| {
                        x != v
                            && (choice.is_server(x) || alone)
                            && sim.engine(x).overlay().members().contains(sim.name_of(v))
                    })
                };
                if sc.family == Family::Loss
                    && choice.is_server(v)
                    && known(&sim)
                    && g.gen_bool(0.7)
                {
                    log.push(format!("{:.1}s n{v} waits to be greeted", secs(&sim)));
                } else if !static_overlay {
                    match contact(&mut g, &sim, &choice, v, &live) {
                        Some(c) => {
                            sim.join(v, c);
                            log.push(format!("{:.1}s join n{v} via n{c}", secs(&sim)));
                        }
                        // Nobody to join through now: it joins when healing starts.
                        None => {
                            unjoined.insert(v);
                        }
                    }
                }
            }
            2 => {
                let (a, b) = (g.gen_range(0..nodes), g.gen_range(0..nodes));
                if a != b {
                    let both = g.gen_bool(0.5);
                    sim.partition(a, b, both);
                    if let Some(book) = &mut book {
                        book.partition(&sim, a, b, both);
                    }
                    log.push(format!(
                        "{:.1}s partition n{a}-n{b} both={both}",
                        secs(&sim)
                    ));
                }
            }
            3 => {
                // Split the cluster in two groups.
                let both = g.gen_bool(0.7);
                let side: Vec<bool> = (0..nodes).map(|_| g.gen_bool(0.5)).collect();
                log.push(format!("{:.1}s split both={both}", secs(&sim)));
                split(&mut sim, &mut book, &side, both);
            }
            8 => {
                let side = crate::swarm_families::sides(&mut g, nodes);
                let first = side.iter().filter(|s| **s).count();
                log.push(format!(
                    "{:.1}s long split {first} | {}",
                    secs(&sim),
                    nodes as usize - first
                ));
                split(&mut sim, &mut book, &side, true);
            }
            4 => {
                sim.heal();
                if let Some(book) = &mut book {
                    book.heal();
                }
                log.push(format!("{:.1}s heal", secs(&sim)));
            }
            5 if live.len() > 2 && !static_overlay => {
                let v = pick(&mut g, &live);
                // Client-server: the last server member stays (nobody could be joined again).
                let servers_left = live
                    .iter()
                    .filter(|x| **x != v && choice.is_server(**x))
                    .count();
                if choice.is_server(v) && servers_left == 0 {
                    continue;
                }
                sim.leave(v);
                log.push(format!("{:.1}s leave n{v}", secs(&sim)));
                left.insert(v);
            }
            6 if !left.is_empty() => {
                let v = *left
                    .iter()
                    .nth(g.gen_range(0..left.len()))
                    .expect("non-empty");
                if let Some(c) = contact(&mut g, &sim, &choice, v, &live) {
                    left.remove(&v);
                    sim.join(v, c);
                    log.push(format!("{:.1}s join n{v} via n{c}", secs(&sim)));
                }
            }
            // Leave for good (at most a quarter of the nodes), a client on client-server: a
            // server gone for good may be the only contact of a client it never welcomed,
            // which then has no way in.
            7 if live.len() > 2 && gone.len() < nodes as usize / 4 => {
                let clients: Vec<NodeId> = live
                    .iter()
                    .copied()
                    .filter(|x| !choice.is_server(*x))
                    .collect();
                if clients.is_empty() {
                    continue;
                }
                let v = pick(&mut g, &clients);
                sim.leave(v);
                log.push(format!("{:.1}s leave n{v} for good", secs(&sim)));
                unjoined.remove(&v);
                gone.insert(v);
            }
            _ => {}
        }
    }
    run_checked(
        &mut sim,
        &mut book,
        start + Duration::from_micros(5_000_000 + chaos),
    )
    .map_err(|e| fail(format!("during chaos: {e}")))?;

    // Heal: no more faults; crashed nodes restart and leavers rejoin through live members.
    sim.heal();
    if let Some(book) = &mut book {
        book.heal();
    }
    sim.set_net(clean);
    for &v in &crashed {
        sim.restart(v);
        log.push(format!("{:.1}s restart n{v}", secs(&sim)));
    }
    let members: Vec<NodeId> = sim
        .live()
        .into_iter()
        .filter(|x| !left.contains(x) && !gone.contains(x))
        .collect();
    if !static_overlay {
        let rejoin: BTreeSet<NodeId> = crashed
            .iter()
            .chain(&left)
            .chain(&unjoined)
            .copied()
            .collect();
        for v in rejoin {
            if let Some(c) = contact(&mut g, &sim, &choice, v, &members) {
                sim.join(v, c);
                log.push(format!("{:.1}s join n{v} via n{c}", secs(&sim)));
            }
        }
    }
    let period = choice
        .period()
        .max(keepalive.detection_time() / 4)
        .max(Duration::from_secs(1));
    let heal_start = sim.now;
    // 40 periods, and at least 10 more than the longest redial delay: a member unreachable
    // for long (a split of the cluster) is redialed every `outage_max` (±25 %) by then, so the
    // network may heal just after a failed dial. (Long splits on full mesh, client-server and
    // static heal in up to 80 s, whatever their period; see `crate::swarm_families`.)
    let outage = sim.setup().backoff.outage_max * 5 / 4;
    let mut bound = 40.max(outage.div_duration_f64(period).ceil() as u32 + 10);
    if sc.family == Family::LongSplit && matches!(choice, OverlayChoice::HyParView(_)) {
        bound = bound.max(crate::swarm_families::HYPARVIEW_MERGE_PERIODS);
    }
    let mut last = Err(String::new());
    for _ in 0..bound {
        let until = sim.now + period;
        run_checked(&mut sim, &mut book, until).map_err(|e| fail(format!("while healing: {e}")))?;
        last = healed(&sim, &choice, &gone);
        if last.is_ok() {
            break;
        }
    }
    if let Err(e) = last {
        return Err(fail(format!(
            "{} {}: not healed within {bound} periods ({:.0}s): {e}{}\n  faults: {}",
            sc.family.name(),
            choice.name(),
            (sim.now - heal_start).as_secs_f64(),
            describe(&sim),
            log.join("; ")
        )));
    }
    if broadcasting {
        // One more broadcast on the healed overlay; then everyone has everything within 30
        // exchange ticks (each member exchanges with one neighbour per tick).
        let v = members[gb.gen_range(0..members.len())];
        sim.broadcast(v, LOG, b"after")
            .map_err(|e| fail(format!("broadcast after healing from n{v}: {e}")))?;
        broadcasts += 1;
        let deadline = sim.now + Duration::from_secs(60);
        let mut last = broadcast_converged(&sim, &members);
        while last.is_err() && sim.now < deadline {
            let until = sim.now + Duration::from_secs(1);
            run_checked(&mut sim, &mut book, until)
                .map_err(|e| fail(format!("while spreading broadcasts: {e}")))?;
            last = broadcast_converged(&sim, &members);
        }
        if let Err(e) = last {
            return Err(fail(format!(
                "{} {}: broadcasts not everywhere 60 s after healing: {e}\n  faults: {}",
                sc.family.name(),
                choice.name(),
                log.join("; ")
            )));
        }
    }
    if book.is_some() {
        // Every monitor and link owed something has it; then every process ends, in rounds
        // (those watching nothing still owed first, so the others' monitors fire while they
        // live), and every signal table empties.
        let limit = keepalive.detection_time() * 2 + Duration::from_secs(30);
        let failed = |what: &str, e: String| {
            fail(format!(
                "{} {}: {what}: {e}\n  faults: {}",
                sc.family.name(),
                choice.name(),
                log.join("; ")
            ))
        };
        run_until_ok(&mut sim, &mut book, limit, ProcessBook::owed)
            .map_err(|e| failed("after healing", e))?;
        for round in 1.. {
            let b = book.as_mut().expect("processes");
            let ending = b.ending_round();
            if ending.is_empty() {
                break;
            }
            for (n, _, id) in ending {
                let reason = crate::swarm_processes::random_reason(&mut gp);
                b.end(&mut sim, n, id, reason)
                    .map_err(|e| failed("ending processes", e))?;
            }
            run_until_ok(&mut sim, &mut book, limit, ProcessBook::owed)
                .map_err(|e| failed(&format!("ending round {round}"), e))?;
        }
        run_until_ok(&mut sim, &mut book, limit, ProcessBook::tables_empty)
            .map_err(|e| failed("every process ended", e))?;
    }
    Ok(ScenarioReport {
        seed,
        overlay: choice.name().into(),
        family: sc.family.name().into(),
        nodes,
        faults: n_faults,
        events: sim.events,
        heal_secs: (sim.now - heal_start).as_secs_f64(),
        period_secs: period.as_secs_f64(),
        split_secs: match special {
            Some(Special::LongSplit {
                period, periods, ..
            }) => (period * periods).as_secs_f64(),
            _ => 0.0,
        },
        trace_hash: format!("{:016x}", sim.trace.value()),
        broadcasts,
        processes: book.map(|b| b.figures()),
    })
}
