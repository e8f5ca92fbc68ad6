//! `partisan sim`: deterministic simulations of the real protocol state machines.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use partisan_core::time::Instant;
use partisan_sim::full_mesh_exp::{self, FullMeshOpts};
use partisan_sim::hyparview_exp::{self, HyParViewOpts, HyParViewReport};
use partisan_sim::plumtree_exp::{self, PhaseReport, PlumtreeOpts, PlumtreeReport};
use partisan_sim::progress::Progress;

/// Options of `partisan sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    experiment: Experiment,
}

#[derive(clap::Subcommand, Debug)]
enum Experiment {
    /// HyParView resilience: join, settle, crash a fraction at once, measure floods per round.
    Hyparview(HvArgs),
    /// Full-mesh membership: convergence after a join storm, then quiet traffic per node.
    FullMesh(FmArgs),
    /// Random fault scenarios with invariants after every event and a healing bound.
    Swarm(SwarmArgs),
    /// Plumtree broadcast on HyParView: reliability, redundancy (RMR) and last delivery hop
    /// per broadcast, settled and after a crash.
    Plumtree(PtArgs),
}

#[derive(clap::Args, Debug)]
struct PtArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Broadcasts per phase (settled, then after the crash).
    #[arg(long, default_value_t = 200)]
    broadcasts: u32,
    /// Fraction of nodes crashed at once after the settled phase (0: no crash phase).
    #[arg(long, default_value_t = 0.0)]
    crash: f64,
    /// Crashes are silent (hosts vanish; keepalive notices within 20 to 70 s).
    #[arg(long)]
    silent: bool,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Broadcasting nodes, chosen at random at the start (0: a random live node each time).
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// Time between two broadcasts (`250ms`, `1s`; a bare number is milliseconds).
    #[arg(long, alias = "interval-ms", default_value = "250ms", value_parser = crate::duration_arg::millis)]
    interval: Duration,
    /// The paper's optimisation threshold in hops (0: off, the default).
    #[arg(long, default_value_t = 0)]
    optimize_threshold: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw reliability and RMR per broadcast into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct SwarmArgs {
    /// Number of scenarios, seeds FIRST..FIRST+N.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Replay exactly this one seed (what a failing run prints).
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Fewest nodes per scenario.
    #[arg(long, default_value_t = 10)]
    min_nodes: u32,
    /// Most nodes per scenario.
    #[arg(long, default_value_t = 50)]
    max_nodes: u32,
    /// Run only the seeds of the range whose scenario is of this family.
    #[arg(long, value_parser = ["chaos", "churn", "long-split", "loss"], conflicts_with = "seed")]
    family: Option<String>,
    /// Run only the seeds of the range whose scenario runs this overlay.
    #[arg(long, value_parser = ["hyparview", "full-mesh", "client-server", "static"], conflicts_with = "seed")]
    overlay: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct FmArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Also run these cluster sizes and print how quiet traffic scales (e.g. 250,500,1000).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<u32>,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw quiet traffic per node against cluster size (needs --sizes) into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct HvArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Fraction of nodes crashed at once (0 to 0.95).
    #[arg(long, default_value_t = 0.5)]
    crash: f64,
    /// Seed of the run (every random choice derives from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rounds (shuffle periods) measured after the crash.
    #[arg(long, default_value_t = 12)]
    rounds: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw reliability against rounds for several crash fractions into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Crashes are silent (hosts vanish): peers notice only through liveness probing (the
    /// runtime's default: one silent peer pinged per second per node, its lanes cut after 3
    /// unanswered pings 1.5 s apart) or, with --ping, per-lane keepalive; dials time out
    /// after 1 s. By default a crash is a process dying: connections reset at once.
    #[arg(long)]
    silent: bool,
    /// Turn liveness probing off (the runtime's `liveness.enabled = false`).
    #[arg(long)]
    no_liveness: bool,
    /// Turn per-lane keepalive on, with --ping-idle, --ping-timeout and --ping-attempts (the
    /// runtime's `connection_ping`, off by default).
    #[arg(long)]
    ping: bool,
    /// Keepalive: silence before a lane is probed (`20s`; a bare number is milliseconds; the
    /// runtime's `connection_ping.idle_timeout`).
    #[arg(long, default_value = "20s", value_parser = crate::duration_arg::millis)]
    ping_idle: Duration,
    /// Keepalive: time between probes (`10s`; a bare number is milliseconds;
    /// `connection_ping.timeout`).
    #[arg(long, default_value = "10s", value_parser = crate::duration_arg::millis)]
    ping_timeout: Duration,
    /// Keepalive: unanswered probes that close a lane (`connection_ping.max_attempts`).
    #[arg(long, default_value_t = 5)]
    ping_attempts: u32,
    /// Crash fractions drawn by --plot (the --crash fraction is always included).
    #[arg(long, value_delimiter = ',', default_values_t = [0.2, 0.5, 0.8])]
    fractions: Vec<f64>,
}

/// Prints phases on one terminal line (stderr), nothing when stderr is not a terminal.
struct TermProgress {
    on: bool,
    started: std::time::Instant,
    label: String,
}

impl TermProgress {
    fn new(label: String) -> Self {
        TermProgress {
            on: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            label,
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

impl Progress for TermProgress {
    fn phase(&mut self, phase: &str, now: Instant, events: u64) {
        if self.on {
            eprint!(
                "\r\x1b[2K[{}] {phase} | virtual {:.0}s | {events} events | {:.1}s",
                self.label,
                Duration::from_micros(now.0).as_secs_f64(),
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.experiment {
        Experiment::Hyparview(a) => hyparview(a),
        Experiment::FullMesh(a) => full_mesh(a),
        Experiment::Swarm(a) => swarm(a),
        Experiment::Plumtree(a) => plumtree(a),
    }
}

fn plumtree(a: PtArgs) -> anyhow::Result<()> {
    if !(0.0..=0.95).contains(&a.crash) {
        bail!("--crash {}: must be between 0 and 0.95", a.crash);
    }
    if a.nodes < 2 {
        bail!("--nodes {}: at least 2", a.nodes);
    }
    if a.broadcasts == 0 {
        bail!("--broadcasts: at least 1");
    }
    if a.interval < Duration::from_millis(1) {
        bail!("--interval {:?}: at least 1ms", a.interval);
    }
    say_seed(a.seed, a.json);
    let mut opts = PlumtreeOpts {
        nodes: a.nodes,
        broadcasts: a.broadcasts,
        crash: a.crash,
        seed: a.seed,
        sources: a.sources,
        interval: a.interval,
        ..PlumtreeOpts::default()
    };
    opts.net.silent_crashes = a.silent;
    opts.plumtree.optimize_threshold = a.optimize_threshold;
    let mut progress = TermProgress::new(format!("plumtree n={}", a.nodes));
    let report = plumtree_exp::run(&opts, &mut progress);
    progress.done();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_plumtree(&report);
    }
    if let Some(path) = &a.plot {
        let pick = |f: fn(&plumtree_exp::BroadcastMeasure) -> f64| -> Vec<(f64, f64)> {
            report
                .series
                .iter()
                .map(|m| (f64::from(m.index), f(m)))
                .collect()
        };
        let series = vec![
            ("reliability".to_string(), pick(|m| m.reliability)),
            ("RMR".to_string(), pick(|m| m.rmr)),
        ];
        let crash = if report.crash > 0.0 {
            format!(
                ", {:.0}% {}crashed after broadcast {}",
                report.crash * 100.0,
                if report.silent_crashes {
                    "silently "
                } else {
                    ""
                },
                report.settled.broadcasts
            )
        } else {
            String::new()
        };
        let svg = partisan_sim::plot::line_chart(
            &format!(
                "Plumtree on HyParView, {} nodes{crash} (seed {})",
                report.nodes, report.seed
            ),
            "broadcast",
            "reliability (fraction of live nodes) / RMR",
            &series,
            partisan_sim::plot::Axes {
                y_min: Some(0.0),
                y_max: Some(1.0),
                ..Default::default()
            },
        );
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

fn print_phase(name: &str, p: &PhaseReport) {
    println!(
        "  {name}: {} broadcasts over {} live nodes: reliability mean {:.4} min {:.4}, RMR {:.3} (last half; {:.3} all), LDH {:.1} (max {}), eager links per node {:.2} (max {})",
        p.broadcasts,
        p.live,
        p.reliability_mean,
        p.reliability_min,
        p.rmr,
        p.rmr_all,
        p.ldh,
        p.ldh_max,
        p.eager_in_degree_mean,
        p.eager_in_degree_max
    );
}

fn print_plumtree(r: &PlumtreeReport) {
    println!("seed {}", r.seed);
    println!("Plumtree on HyParView: {} nodes", r.nodes);
    print_phase("settled", &r.settled);
    if let Some(p) = &r.after_crash {
        print_phase(
            &format!(
                "after a {}crash of {:.0}%",
                if r.silent_crashes { "silent " } else { "" },
                r.crash * 100.0
            ),
            p,
        );
        match r.broadcasts_to_settle_after_crash {
            Some(k) => println!("  RMR back at or under 0.05 at broadcast {k} after the crash"),
            None => println!("  RMR never back at or under 0.05 after the crash"),
        }
    }
    let totals: Vec<String> = r.totals.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  totals: {}", totals.join(", "));
    println!(
        "  {} events in {:.1}s wall, peak memory {}, trace {}",
        r.events,
        r.wall_secs,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into()),
        r.trace_hash
    );
}

fn hyparview(a: HvArgs) -> anyhow::Result<()> {
    if !(0.0..=0.95).contains(&a.crash) {
        bail!("--crash {}: must be between 0 and 0.95", a.crash);
    }
    if a.nodes < 2 {
        bail!("--nodes {}: at least 2", a.nodes);
    }
    say_seed(a.seed, a.json);
    let mut opts = HyParViewOpts {
        nodes: a.nodes,
        crash: a.crash,
        seed: a.seed,
        rounds: a.rounds,
        ..HyParViewOpts::default()
    };
    opts.net.silent_crashes = a.silent;
    let ms = Duration::from_millis(1);
    if a.ping_idle < ms || a.ping_timeout < ms || a.ping_attempts == 0 {
        bail!("--ping-idle and --ping-timeout must be at least 1ms, --ping-attempts at least 1");
    }
    opts.keepalive = a.ping.then_some(partisan_core::engine::Keepalive {
        idle: a.ping_idle,
        timeout: a.ping_timeout,
        max_attempts: a.ping_attempts,
    });
    if a.no_liveness {
        opts.liveness = None;
    }
    let mut progress = TermProgress::new(format!("hyparview n={} crash={}", a.nodes, a.crash));
    let report = hyparview_exp::run(&opts, &mut progress);
    progress.done();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_hyparview(&report);
    }
    if let Some(path) = &a.plot {
        let started = std::time::Instant::now();
        let mut fractions = a.fractions.clone();
        if !fractions.iter().any(|f| (f - a.crash).abs() < 1e-9) {
            fractions.push(a.crash);
        }
        fractions.sort_by(|x, y| x.partial_cmp(y).expect("fractions are numbers"));
        let more: Vec<String> = fractions
            .iter()
            .filter(|f| (**f - a.crash).abs() >= 1e-9)
            .map(|f| f.to_string())
            .collect();
        if !more.is_empty() {
            eprintln!(
                "--plot: also running crash fractions {} (--fractions)",
                more.join(", ")
            );
        }
        let runs = fractions.len();
        let mut series = Vec::new();
        for f in fractions {
            let r = if (f - a.crash).abs() < 1e-9 {
                report.clone()
            } else {
                let mut p = TermProgress::new(format!("hyparview n={} crash={f}", a.nodes));
                let r = hyparview_exp::run(
                    &HyParViewOpts {
                        crash: f,
                        ..opts.clone()
                    },
                    &mut p,
                );
                p.done();
                r
            };
            series.push((
                format!("{:.0}% crashed", f * 100.0),
                r.rounds
                    .iter()
                    .map(|x| (f64::from(x.round), x.flood_reliability))
                    .collect::<Vec<_>>(),
            ));
        }
        let svg = partisan_sim::plot::line_chart(
            &format!(
                "HyParView, {} nodes: flood reliability after a {}crash (seed {})",
                a.nodes,
                if a.silent { "silent " } else { "" },
                a.seed
            ),
            "rounds after the crash (shuffle periods; 0 = one second after)",
            "fraction of live nodes reached",
            &series,
            partisan_sim::plot::Axes {
                y_min: Some(0.0),
                y_max: Some(1.0),
                ..Default::default()
            },
        );
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "plot written to {} ({runs} runs: {:.1}s wall for this one and {:.1}s for the \
             others)",
            path.display(),
            report.wall_secs,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Prints the seed on stderr at the start (so a run that hangs can be replayed), unless the
/// summary that prints it too goes to the same terminal.
fn say_seed(seed: u64, json: bool) {
    use std::io::IsTerminal;
    if json || !std::io::stdout().is_terminal() {
        eprintln!("seed {seed}");
    }
}

fn full_mesh(a: FmArgs) -> anyhow::Result<()> {
    if a.nodes < 2 || a.sizes.iter().any(|s| *s < 2) {
        bail!("--nodes/--sizes: at least 2 nodes");
    }
    say_seed(a.seed, a.json);
    let mut sizes = a.sizes.clone();
    if !sizes.contains(&a.nodes) {
        sizes.push(a.nodes);
    }
    sizes.sort_unstable();
    let mut reports = Vec::new();
    for n in &sizes {
        let opts = FullMeshOpts {
            nodes: *n,
            seed: a.seed,
            ..FullMeshOpts::default()
        };
        let mut progress = TermProgress::new(format!("full-mesh n={n}"));
        let r = full_mesh_exp::run(&opts, &mut progress);
        progress.done();
        reports.push(r);
    }
    let main = reports
        .iter()
        .find(|r| r.nodes == a.nodes)
        .expect("the main size was run")
        .clone();
    if a.json {
        let mut v = serde_json::to_value(&main)?;
        if a.sizes.len() > 1 || !a.sizes.is_empty() {
            v["scaling"] = serde_json::to_value(&reports)?;
        }
        println!("{v}");
    } else {
        println!("seed {}", a.seed);
        println!(
            "  {:>6} {:>14} {:>14} {:>14} {:>10} {:>18} {:>9}",
            "nodes",
            "converge (ms)",
            "storm B/node",
            "quiet B/node/s",
            "msgs/n/s",
            "Partisan-style B/s",
            "wall (s)"
        );
        for r in &reports {
            println!(
                "  {:>6} {:>14} {:>14.0} {:>14.2} {:>10.3} {:>18.0} {:>9.1}",
                r.nodes,
                r.convergence_ms
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "never".into()),
                r.storm_bytes_per_node,
                r.bytes_per_node_per_sec,
                r.messages_per_node_per_sec,
                r.partisan_style_bytes_per_node_per_sec,
                r.wall_secs
            );
        }
        println!("  trace {} (n={})", main.trace_hash, main.nodes);
    }
    if let Some(path) = &a.plot {
        let series = vec![
            (
                "partisan: a digest to one member per period".to_string(),
                reports
                    .iter()
                    .map(|r| (f64::from(r.nodes), r.bytes_per_node_per_sec))
                    .collect::<Vec<_>>(),
            ),
            (
                "Partisan (Erlang): whole membership to every member".to_string(),
                reports
                    .iter()
                    .map(|r| (f64::from(r.nodes), r.partisan_style_bytes_per_node_per_sec))
                    .collect::<Vec<_>>(),
            ),
        ];
        let svg = partisan_sim::plot::line_chart(
            &format!(
                "Full mesh, quiet cluster: membership bytes per node per second (seed {})",
                a.seed
            ),
            "cluster size (nodes)",
            "bytes per node per second (log scale)",
            &series,
            partisan_sim::plot::Axes {
                log_y: true,
                ..Default::default()
            },
        );
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    if main.convergence_ms.is_none() {
        bail!("membership did not converge");
    }
    Ok(())
}

fn swarm(a: SwarmArgs) -> anyhow::Result<()> {
    use partisan_sim::swarm::{run_scenario, ScenarioFailure, ScenarioReport, SwarmLimits};
    if a.min_nodes < 2 || a.max_nodes < a.min_nodes {
        bail!("--min-nodes/--max-nodes: need 2 <= min <= max");
    }
    let limits = SwarmLimits {
        min_nodes: a.min_nodes,
        max_nodes: a.max_nodes,
        ..SwarmLimits::default()
    };
    let seeds: Vec<u64> = match a.seed {
        Some(s) => vec![s],
        None => (a.first..a.first.saturating_add(a.seeds))
            .filter(|s| {
                if a.family.is_none() && a.overlay.is_none() {
                    return true;
                }
                let (o, f) = partisan_sim::swarm::overlay_and_family(*s, limits);
                a.family.as_deref().is_none_or(|x| x == f)
                    && a.overlay.as_deref().is_none_or(|x| x == o)
            })
            .collect(),
    };
    if seeds.is_empty() {
        bail!("no seed in that range has that family and overlay");
    }
    eprintln!(
        "seeds {}..{}{}",
        seeds[0],
        seeds.last().copied().unwrap_or(seeds[0]) + 1,
        if a.family.is_some() || a.overlay.is_some() {
            format!(" ({} of them)", seeds.len())
        } else {
            String::new()
        }
    );
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal() && !a.json;
    // Scenarios run on every core; results come back in seed order.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<ScenarioReport, ScenarioFailure>>>> =
        seeds.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(seeds.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(seed) = seeds.get(k) else {
                    return;
                };
                let r = run_scenario(*seed, limits);
                if let Err(f) = &r {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !a.json {
                        eprintln!("\r\x1b[2KFAILED {f}");
                    }
                }
                *results[k].lock().expect("no poisoned result") = Some(r);
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if tty {
                    eprint!(
                        "\r\x1b[2K[swarm] {d}/{} seeds, {} failed, {:.1}s",
                        seeds.len(),
                        failed.load(std::sync::atomic::Ordering::Relaxed),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    if tty {
        eprintln!();
    }
    let mut passed = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r.into_inner().expect("no poisoned result") {
            Some(Ok(r)) => passed.push(r),
            Some(Err(f)) => failures.push(f),
            None => {}
        }
    }
    // Scenarios per overlay and per family, every name listed even at 0.
    let tally = |names: [&str; 4], of: fn(&str, &str) -> String| {
        let mut n: std::collections::BTreeMap<String, usize> =
            names.iter().map(|x| (x.to_string(), 0)).collect();
        for (o, f) in passed
            .iter()
            .map(|r| (&r.overlay, &r.family))
            .chain(failures.iter().map(|f| (&f.overlay, &f.family)))
        {
            *n.entry(of(o, f)).or_default() += 1;
        }
        n
    };
    let overlays = tally(
        ["hyparview", "full-mesh", "client-server", "static"],
        |o, _| o.to_string(),
    );
    let families = tally(["chaos", "churn", "long-split", "loss"], |_, f| {
        f.to_string()
    });
    let events: u64 = passed.iter().map(|r| r.events).sum();
    if a.json {
        let v = serde_json::json!({
            "seeds": seeds.len(),
            "first": seeds[0],
            "passed": passed.len(),
            "overlays": overlays,
            "families": families,
            "failures": failures.len(),
            "failing": failures,
            "events": events,
            "wall_secs": started.elapsed().as_secs_f64(),
            "scenarios": serde_json::to_value(&passed)?,
        });
        println!("{v}");
    } else {
        let worst = passed.iter().map(|r| r.heal_secs).fold(0.0f64, f64::max);
        let per: Vec<String> = overlays.iter().map(|(o, n)| format!("{n} {o}")).collect();
        let kinds: Vec<String> = families.iter().map(|(f, n)| format!("{n} {f}")).collect();
        println!(
            "swarm: {} seeds ({}; {}), {} failed, {} events, longest heal {:.0}s virtual, {:.1}s wall",
            seeds.len(),
            per.join(", "),
            kinds.join(", "),
            failures.len(),
            events,
            worst,
            started.elapsed().as_secs_f64()
        );
        if let (Some(s), [r]) = (a.seed, passed.as_slice()) {
            println!("seed {s}: trace {}", r.trace_hash);
        }
        for f in &failures {
            println!(
                "FAILED seed {}: {}",
                f.seed,
                f.reason.lines().next().unwrap_or("")
            );
            println!("  reproduce: {}", f.command);
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} scenarios failed", failures.len(), seeds.len());
    }
    Ok(())
}

fn print_hyparview(r: &HyParViewReport) {
    println!("seed {}", r.seed);
    println!(
        "HyParView: {} nodes, {:.0}% crashed at once ({} live){}",
        r.nodes,
        r.crash * 100.0,
        r.live,
        match (
            r.silent_crashes,
            r.liveness_confirmation_secs,
            r.keepalive_detection_secs
        ) {
            (true, Some(d), _) => format!(
                ", silent crashes (liveness probing cuts a silent peer {d:.1} s after its first probe)"
            ),
            (true, None, Some(d)) =>
                format!(", silent crashes (keepalive closes a silent lane within {d:.0} s)"),
            (true, None, None) => ", silent crashes (no liveness probing, no keepalive)".to_string(),
            _ => String::new(),
        }
    );
    println!(
        "  before the crash: reliability {:.4}, largest component {}, symmetry {:.4}",
        r.before.flood_reliability, r.before.largest_component, r.before.symmetry
    );
    println!(
        "  at the crash instant (nobody noticed yet): reliability {:.4}",
        r.at_crash
    );
    println!(
        "  {:>5} {:>8} {:>12} {:>10} {:>9} {:>6}",
        "round", "t (s)", "reliability", "component", "symmetry", "dead"
    );
    for x in &r.rounds {
        println!(
            "  {:>5} {:>8.1} {:>12.4} {:>10} {:>9.4} {:>6}",
            x.round,
            x.at_secs,
            x.flood_reliability,
            x.largest_component,
            x.symmetry,
            x.dead_in_views
        );
    }
    match r.rounds_to_full {
        Some(k) => println!("  every live node reached again at round {k}"),
        None => println!("  NOT every live node reached within the measured rounds"),
    }
    println!(
        "  {} events in {:.1}s wall, peak memory {}, trace {}",
        r.events,
        r.wall_secs,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into()),
        r.trace_hash
    );
}
