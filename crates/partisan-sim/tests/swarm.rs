//! The swarm over many seeds, and determinism. Each failing seed prints the command that
//! replays it.

use partisan_sim::swarm::{run_scenario, ScenarioFailure, ScenarioReport, SwarmLimits};

#[test]
fn swarm_of_two_hundred_seeds_keeps_every_invariant_and_heals() {
    let first: u64 = std::env::var("PARTISAN_SWARM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let count: u64 = std::env::var("PARTISAN_SWARM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("swarm seeds {first}..{}", first + count);
    let seeds: Vec<u64> = (first..first + count).collect();
    // One chunk of seeds per core.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let halves: Vec<Vec<u64>> = seeds
        .chunks(seeds.len().div_ceil(threads).max(1))
        .map(|c| c.to_vec())
        .collect();
    let handles: Vec<_> = halves
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                chunk
                    .into_iter()
                    .map(|s| run_scenario(s, SwarmLimits::default()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Result<ScenarioReport, ScenarioFailure>> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("swarm thread"))
        .collect();
    // Every family ran (seeds 1 to 200 hold 10 long splits and 14 scenarios of loss).
    let mut families: std::collections::BTreeMap<&str, u32> =
        ["chaos", "churn", "long-split", "loss"]
            .into_iter()
            .map(|f| (f, 0))
            .collect();
    for r in &results {
        let f = match r {
            Ok(r) => &r.family,
            Err(f) => &f.family,
        };
        *families.entry(f.as_str()).or_default() += 1;
    }
    println!("families: {families:?}");
    if count >= 200 {
        assert!(
            families.values().all(|n| *n > 0),
            "a family never ran: {families:?}"
        );
    }
    // What the scenarios with processes did.
    let with: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.processes)
        .collect();
    let sum = |f: fn(&partisan_sim::swarm_processes::ProcessFigures) -> u32| -> u32 {
        with.iter().map(f).sum()
    };
    println!(
        "{} scenarios with processes: {} processes, {} monitors ({} by name, {} demonitored), \
         {} Downs ({} noconnection, {} noproc), {} links ({} unlinked), {} link exit signals, \
         {} processes ended by a signal, {} liveness queries; {} monitors and links exposed to \
         a partition",
        with.len(),
        sum(|f| f.spawned),
        sum(|f| f.monitors),
        sum(|f| f.by_name),
        sum(|f| f.demonitors),
        sum(|f| f.downs),
        sum(|f| f.downs_noconnection),
        sum(|f| f.downs_noproc),
        sum(|f| f.links),
        sum(|f| f.unlinks),
        sum(|f| f.link_exits),
        sum(|f| f.killed_by_signal),
        sum(|f| f.queries),
        sum(|f| f.exposed),
    );
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed",
        failures.len()
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    // 50 is of the loss family, 75 a long split.
    for seed in [3u64, 17, 4242, 50, 75] {
        let a = run_scenario(seed, SwarmLimits::default());
        let b = run_scenario(seed, SwarmLimits::default());
        println!("seed {seed}");
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.trace_hash, b.trace_hash);
                assert_eq!(a.events, b.events);
            }
            (Err(a), Err(b)) => assert_eq!(a.reason, b.reason),
            (a, b) => panic!("seed {seed} diverged: {a:?} vs {b:?}"),
        }
    }
}
