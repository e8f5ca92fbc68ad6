//! Property test of Plumtree broadcast on the shared testing network (real engines, real
//! overlays, every frame encoded as on the wire).
//!
//! A settled cluster of 4 to 12 nodes (full mesh or HyParView) takes a random mix of
//! broadcasts from random nodes, broadcast frames delivered out of order, duplicated or lost,
//! and time passing. Once the faults stop, every node must deliver every broadcast exactly
//! once, through the tree, a graft or anti-entropy.

use std::collections::BTreeSet;
use std::time::Duration;

use partisan_core::broadcast::PlumtreeConfig;
use partisan_core::overlay::{FullMeshConfig, HyParViewConfig};
use partisan_core::testing::{Network, NodeId, Recorder, Setup};
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    Broadcast(usize),
    /// Deliver the broadcast frame in flight at this index (modulo their number) now.
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Run(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..12usize).prop_map(Op::Broadcast),
        6 => (0..4096usize).prop_map(Op::Deliver),
        2 => (0..4096usize).prop_map(Op::Duplicate),
        2 => (0..4096usize).prop_map(Op::Drop),
        4 => (1..1500u64).prop_map(Op::Run),
    ]
}

fn network(n: u32, seed: u64, hyparview: bool) -> Network {
    let mut setup = if hyparview {
        Setup::hyparview(n, seed, HyParViewConfig::default())
    } else {
        Setup::full_mesh(n, seed, FullMeshConfig::default())
    };
    setup.broadcast = Some(Arc::new(
        |i: NodeId, _: &partisan_core::overlay::PeerInfo| {
            let name = partisan_core::testing::node_name(i);
            vec![(
                Box::new(Recorder::new("log", name, true)) as _,
                PlumtreeConfig::default(),
            )]
        },
    ));
    let mut net = Network::new(setup);
    for i in 1..n {
        net.join(i, 0);
    }
    net.run_for(Duration::from_secs(30));
    net
}

fn recorder(net: &Network, i: NodeId) -> &Recorder {
    net.engine(i).broadcast_handler::<Recorder>("log").unwrap()
}

fn run(n: u32, seed: u64, hyparview: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    eprintln!("plumtree property: {n} nodes, seed {seed}, hyparview {hyparview}");
    let mut net = network(n, seed, hyparview);
    let mut sent: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut seqs = vec![0u64; n as usize];
    for op in ops {
        match *op {
            Op::Broadcast(i) => {
                let i = (i % n as usize) as NodeId;
                net.broadcast(i, "log", b"payload").unwrap();
                seqs[i as usize] += 1;
                sent.insert(Recorder::id_of(net.name_of(i), seqs[i as usize]));
            }
            Op::Deliver(k) | Op::Duplicate(k) | Op::Drop(k) => {
                let len = net.broadcasts_in_flight();
                if len == 0 {
                    net.step();
                    continue;
                }
                let lose = matches!(op, Op::Drop(_));
                let copy = matches!(op, Op::Duplicate(_));
                net.meddle_broadcast(k % len, lose, copy);
            }
            Op::Run(ms) => net.run_for(Duration::from_millis(ms)),
        }
    }
    // Faults stop: a few anti-entropy rounds later everyone has everything.
    let done = net.step_until(Duration::from_secs(600), |net| {
        (0..n).all(|i| recorder(net, i).len() == sent.len())
    });
    for i in 0..n {
        let r = recorder(&net, i);
        let missing = sent.iter().filter(|id| !r.has(id)).count();
        prop_assert!(
            done && missing == 0,
            "node {i} misses {missing} of {} broadcasts (seed {seed})",
            sent.len()
        );
        prop_assert_eq!(r.len(), sent.len(), "node {} knows unsent ids", i);
        for (id, d) in r.deliveries() {
            prop_assert_eq!(
                d.delivered,
                1,
                "node {} delivered {:?} {} times",
                i,
                id,
                d.delivered
            );
        }
        let stats = net.engine(i).plumtree("log").unwrap().stats();
        prop_assert!(stats.delivered <= sent.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_node_delivers_every_broadcast_exactly_once_once_faults_stop(
        n in 4u32..12,
        seed in any::<u64>(),
        hyparview in any::<bool>(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run(n, seed, hyparview, &ops)?;
    }
}

/// Without faults, the tree alone delivers: no anti-entropy needed, and after the first
/// broadcasts prune the gossip into a tree, each later broadcast costs about one payload copy
/// per node.
#[test]
fn without_faults_the_tree_delivers_and_settles_to_few_duplicates() {
    for hyparview in [false, true] {
        let seed = 11;
        eprintln!("seed {seed}, hyparview {hyparview}");
        let n = 24u32;
        let mut net = network(n, seed, hyparview);
        let rounds = 40u64;
        for _ in 0..rounds {
            net.broadcast(0, "log", b"x").unwrap();
            net.run_for(Duration::from_millis(200));
        }
        net.run_for(Duration::from_secs(3));
        // The first broadcast is pure gossip (every neighbour eager) and prunes the rest into
        // a tree; from the third on, nearly one copy per node.
        let mut copies_after = 0u64;
        for i in 0..n {
            let r = recorder(&net, i);
            assert_eq!(r.len() as u64, rounds, "node {i} (seed {seed})");
            for seq in 3..=rounds {
                if i != 0 {
                    copies_after +=
                        u64::from(r.deliveries()[&Recorder::id_of(net.name_of(0), seq)].copies);
                }
            }
        }
        let ideal = u64::from(n - 1) * (rounds - 2);
        assert!(
            copies_after as f64 <= ideal as f64 * 1.05,
            "{copies_after} copies for {ideal} deliveries (hyparview {hyparview})"
        );
        let last = Recorder::id_of(net.name_of(0), rounds);
        let copies: u32 = (1..n)
            .map(|i| recorder(&net, i).deliveries()[&last].copies)
            .sum();
        assert_eq!(
            copies,
            n - 1,
            "the last broadcast took one copy per node (hyparview {hyparview})"
        );
    }
}
