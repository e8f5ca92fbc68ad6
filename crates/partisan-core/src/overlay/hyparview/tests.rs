//! HyParView tests: the paper's rules, one state machine at a time (`rule_4_x_...`, named
//! after the section they check), then random histories on the shared testing network.

use std::net::SocketAddr;

use super::*;
use crate::testing::{Network, NodeId, Setup};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A peer named `name@h` listening on 127.0.0.1:`port` with creation `port`.
fn peer(name: &str, port: u16) -> PeerInfo {
    PeerInfo {
        spec: NodeSpec::new(
            NodeName::new(&format!("{name}@h")).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], port))],
            Default::default(),
        )
        .unwrap(),
        creation: u64::from(port),
        tag: None,
    }
}

fn node(name: &str, port: u16, cfg: HyParViewConfig) -> HyParView {
    HyParView::new(
        peer(name, port),
        cfg,
        Box::new(ChaCha8Rng::seed_from_u64(port as u64)),
    )
}

fn sends(out: &[OverlayOutput]) -> Vec<(String, HvMsg)> {
    out.iter()
        .filter_map(|o| match o {
            OverlayOutput::Send {
                to,
                msg: OverlayMsg::HyParView(m),
            } => Some((to.name().short_name().to_string(), m.clone())),
            _ => None,
        })
        .collect()
}

fn names(v: Vec<NodeName>) -> Vec<String> {
    v.iter().map(|n| n.short_name().to_string()).collect()
}

fn msg(h: &mut HyParView, from: &PeerInfo, m: HvMsg) -> Vec<OverlayOutput> {
    let mut out = vec![];
    h.on_message(from, OverlayMsg::HyParView(m), Instant::ZERO, &mut out)
        .unwrap();
    out
}

/// A node whose active view holds `active` and passive view `passive` (by port).
fn with_views(active: &[u16], passive: &[u16], cfg: HyParViewConfig) -> HyParView {
    let mut h = node("me", 1, cfg);
    let mut out = vec![];
    for &p in active {
        h.add_active(&peer(&format!("a{p}"), p), &mut out);
    }
    for &p in passive {
        h.add_passive(&peer(&format!("p{p}"), p));
    }
    h
}

#[test]
fn rule_4_1_join_contact_adds_joiner_and_forwards_join_to_other_active_peers() {
    let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
    let j = peer("joiner", 50);
    let out = msg(&mut h, &j, HvMsg::Join { peer: j.clone() });
    assert!(h.active.contains_key(j.name()));
    assert!(out.contains(&OverlayOutput::Connect(j.spec.clone())));
    let fj: Vec<_> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, HvMsg::ForwardJoin { ttl: 6, .. }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(fj, vec!["a10", "a11"]);
}

#[test]
fn rule_4_1_joiner_adds_its_contact_at_once() {
    let mut h = node("me", 1, HyParViewConfig::default());
    let c = peer("contact", 2);
    let mut out = vec![];
    h.join(&c, Instant::ZERO, &mut out);
    assert_eq!(names(h.active_view()), vec!["contact"]);
    assert!(matches!(sends(&out)[0].1, HvMsg::Join { .. }));
}

#[test]
fn rule_4_1_forward_join_with_ttl_zero_joins_the_active_view_and_tells_the_joiner() {
    let mut h = with_views(&[10, 11, 12], &[], HyParViewConfig::default());
    let j = peer("joiner", 50);
    let out = msg(
        &mut h,
        &peer("a10", 10),
        HvMsg::ForwardJoin {
            peer: j.clone(),
            ttl: 0,
        },
    );
    assert!(h.active.contains_key(j.name()));
    assert_eq!(
        sends(&out),
        vec![("joiner".into(), HvMsg::ForwardJoinAccepted)]
    );
}

#[test]
fn rule_4_1_forward_join_with_a_single_active_peer_is_accepted() {
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let j = peer("joiner", 50);
    msg(
        &mut h,
        &peer("a10", 10),
        HvMsg::ForwardJoin {
            peer: j.clone(),
            ttl: 4,
        },
    );
    assert!(h.active.contains_key(j.name()));
}

#[test]
fn rule_4_1_forward_join_at_prwl_goes_to_passive_and_walks_on_excluding_the_sender() {
    let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
    let j = peer("joiner", 50);
    let out = msg(
        &mut h,
        &peer("a10", 10),
        HvMsg::ForwardJoin {
            peer: j.clone(),
            ttl: 6,
        },
    );
    assert!(h.passive.contains_key(j.name()));
    assert!(!h.active.contains_key(j.name()));
    assert_eq!(
        sends(&out),
        vec![(
            "a11".into(),
            HvMsg::ForwardJoin {
                peer: j.clone(),
                ttl: 5
            }
        )]
    );
    // Below PRWL it only walks.
    let j2 = peer("joiner2", 51);
    msg(
        &mut h,
        &peer("a10", 10),
        HvMsg::ForwardJoin {
            peer: j2.clone(),
            ttl: 3,
        },
    );
    assert!(!h.passive.contains_key(j2.name()));
}

#[test]
fn rule_4_1_full_active_view_evicts_a_random_peer_with_a_disconnect() {
    let cfg = HyParViewConfig {
        active_max: 3,
        ..Default::default()
    };
    let mut h = with_views(&[10, 11, 12], &[], cfg);
    let j = peer("joiner", 50);
    let out = msg(&mut h, &j, HvMsg::Join { peer: j.clone() });
    assert_eq!(h.active.len(), 3);
    assert!(h.active.contains_key(j.name()));
    let evicted: Vec<_> = sends(&out)
        .into_iter()
        .filter(|(_, m)| *m == HvMsg::Disconnect)
        .collect();
    assert_eq!(evicted.len(), 1);
    let victim = NodeName::new(&format!("{}@h", evicted[0].0)).unwrap();
    assert!(
        h.passive.contains_key(&victim),
        "evicted peer is kept as passive"
    );
    assert!(out.contains(&OverlayOutput::Disconnect(victim)));
}

#[test]
fn rule_4_1_disconnect_moves_the_sender_to_the_passive_view() {
    let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
    let a10 = peer("a10", 10);
    let out = msg(&mut h, &a10, HvMsg::Disconnect);
    assert!(!h.active.contains_key(a10.name()));
    assert!(h.passive.contains_key(a10.name()));
    assert!(out.contains(&OverlayOutput::Disconnect(a10.name().clone())));
}

#[test]
fn rule_4_2_failed_active_peer_is_replaced_from_the_passive_view() {
    let mut h = with_views(&[10, 11], &[20, 21, 22], HyParViewConfig::default());
    let mut out = vec![];
    h.on_peer_down(peer("a10", 10).name(), Instant::ZERO, &mut out);
    assert!(!h.active.contains_key(peer("a10", 10).name()));
    assert!(
        h.passive.contains_key(peer("a10", 10).name()),
        "a lost neighbor stays a candidate (a partition may end) until found unreachable"
    );
    let reqs: Vec<_> = sends(&out)
        .into_iter()
        .filter(|(_, m)| *m == HvMsg::NeighborRequest { high: false })
        .collect();
    // One active peer left, min 3: two low-priority requests out.
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|(to, _)| to.starts_with('p')));
}

#[test]
fn rule_4_2_an_empty_active_view_asks_with_high_priority() {
    let mut h = with_views(&[10], &[20], HyParViewConfig::default());
    let mut out = vec![];
    h.on_peer_down(peer("a10", 10).name(), Instant::ZERO, &mut out);
    // The lost neighbour is told it was dropped (it may have been re-added just as its old
    // lanes closed), and stays a passive candidate.
    assert_eq!(
        sends(&out),
        vec![
            ("a10".into(), HvMsg::Disconnect),
            ("p20".into(), HvMsg::NeighborRequest { high: true })
        ]
    );
    assert!(names(h.passive_view()).contains(&"a10".to_string()));
}

#[test]
fn rule_4_2_low_priority_requests_need_room_high_ones_always_succeed() {
    let cfg = HyParViewConfig {
        active_max: 2,
        ..Default::default()
    };
    let mut h = with_views(&[10, 11], &[], cfg);
    let r = peer("req", 30);
    let out = msg(&mut h, &r, HvMsg::NeighborRequest { high: false });
    assert_eq!(
        sends(&out),
        vec![("req".into(), HvMsg::NeighborReply { accepted: false })]
    );
    assert!(!h.active.contains_key(r.name()));
    let out = msg(&mut h, &r, HvMsg::NeighborRequest { high: true });
    assert!(sends(&out).contains(&("req".into(), HvMsg::NeighborReply { accepted: true })));
    assert!(h.active.contains_key(r.name()));
    assert_eq!(h.active.len(), 2);
}

#[test]
fn rule_4_2_a_rejected_or_unreachable_candidate_makes_room_for_the_next_one() {
    let mut h = with_views(&[10, 11], &[20, 21], HyParViewConfig::default());
    let mut out = vec![];
    h.promote(&mut out);
    let first = sends(&out)[0].0.clone();
    let first_peer = peer(&first, first[1..].parse().unwrap());
    let out = msg(
        &mut h,
        &first_peer,
        HvMsg::NeighborReply { accepted: false },
    );
    let next = sends(&out);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].0, first);
    // The other candidate is unreachable: it leaves the passive view, nothing left to try.
    let other = peer(&next[0].0, next[0].0[1..].parse().unwrap());
    let mut out = vec![];
    h.on_unreachable(other.name(), Instant::ZERO, &mut out);
    assert!(!h.passive.contains_key(other.name()));
    // An accepted reply makes the candidate active.
    let out = msg(&mut h, &first_peer, HvMsg::NeighborRequest { high: false });
    assert!(sends(&out).contains(&(first.clone(), HvMsg::NeighborReply { accepted: true })));
    assert_eq!(h.active.len(), 3);
}

#[test]
fn rule_4_3_shuffle_sample_is_self_k_active_and_k_passive() {
    let mut h = with_views(
        &[10, 11, 12, 13, 14],
        &[20, 21, 22, 23, 24, 25],
        HyParViewConfig::default(),
    );
    let mut out = vec![];
    h.on_timer(OverlayTimer::Shuffle, Instant::ZERO, &mut out);
    let shuffles: Vec<_> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            HvMsg::Shuffle {
                origin,
                ttl,
                sample,
            } => Some((to, origin, ttl, sample)),
            _ => None,
        })
        .collect();
    assert_eq!(shuffles.len(), 1);
    let (to, origin, ttl, sample) = &shuffles[0];
    assert!(to.starts_with('a'));
    assert_eq!(origin.name(), h.me());
    assert_eq!(*ttl, 6);
    assert_eq!(sample.len(), 1 + 3 + 4);
    assert_eq!(sample[0].name(), h.me());
    let a = sample
        .iter()
        .filter(|p| p.name().short_name().starts_with('a'))
        .count();
    assert_eq!(a, 3);
    // Every active peer also gets a KeepActive.
    assert_eq!(
        sends(&out)
            .iter()
            .filter(|(_, m)| *m == HvMsg::KeepActive)
            .count(),
        5
    );
}

#[test]
fn rule_4_3_shuffle_walks_while_ttl_and_active_peers_remain() {
    let mut h = with_views(&[10, 11], &[], HyParViewConfig::default());
    let o = peer("origin", 40);
    let out = msg(
        &mut h,
        &peer("a10", 10),
        HvMsg::Shuffle {
            origin: o.clone(),
            ttl: 3,
            sample: vec![o.clone()],
        },
    );
    assert!(matches!(&sends(&out)[..], [(to, HvMsg::Shuffle { ttl: 2, .. })] if to == "a11"));
    assert!(h.passive.is_empty());
}

#[test]
fn rule_4_3_accepted_shuffle_replies_to_the_origin_and_evicts_sent_entries_first() {
    let cfg = HyParViewConfig {
        passive_max: 3,
        ..Default::default()
    };
    let mut h = with_views(&[10], &[20, 21, 22], cfg);
    let o = peer("origin", 40);
    let s1 = peer("s1", 41);
    let out = msg(
        &mut h,
        &peer("a10", 10),
        HvMsg::Shuffle {
            origin: o.clone(),
            ttl: 1,
            sample: vec![o.clone(), s1.clone()],
        },
    );
    let reply = sends(&out);
    let HvMsg::ShuffleReply { sample } = &reply[0].1 else {
        panic!("expected a shuffle reply, got {reply:?}")
    };
    assert_eq!(reply[0].0, "origin");
    assert_eq!(sample.len(), 2);
    // The two passive peers sent away made room for the two received.
    assert!(h.passive.contains_key(o.name()) && h.passive.contains_key(s1.name()));
    for p in sample {
        assert!(
            !h.passive.contains_key(p.name()),
            "{} was sent and should be evicted",
            p.name()
        );
    }
    assert_eq!(h.passive.len(), 3);
}

#[test]
fn rule_4_3_passive_view_never_holds_self_or_active_peers() {
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let me = h.local.clone();
    h.integrate(
        &[me.clone(), peer("a10", 10), peer("x", 60)],
        &BTreeSet::new(),
    );
    assert_eq!(names(h.passive_view()), vec!["x"]);
}

#[test]
fn explicit_leave_drops_the_leaver_everywhere_and_promotes() {
    let mut h = with_views(&[10, 11], &[20], HyParViewConfig::default());
    let leave = HvMsg::Leave { handover: vec![] };
    let out = msg(&mut h, &peer("a10", 10), leave);
    assert!(!h.active.contains_key(peer("a10", 10).name()));
    assert!(!h.passive.contains_key(peer("a10", 10).name()));
    assert!(sends(&out)
        .iter()
        .any(|(_, m)| matches!(m, HvMsg::NeighborRequest { .. })));
    // The leaving side tells its active peers and empties its views.
    let mut out = vec![];
    h.leave(Instant::ZERO, &mut out);
    let sent = sends(&out);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|(_, m)| matches!(m, HvMsg::Leave { .. })));
    assert!(h.active.is_empty() && h.passive.is_empty());
    assert!(h.members().is_empty());
}

#[test]
fn a_leaver_hands_each_neighbor_its_other_peers() {
    let mut h = with_views(&[10, 11, 12], &[20, 21], HyParViewConfig::default());
    let mut out = vec![];
    h.leave(Instant::ZERO, &mut out);
    let sent = sends(&out);
    assert_eq!(sent.len(), 3);
    for (to, m) in sent {
        let HvMsg::Leave { handover } = m else {
            panic!("{m:?}")
        };
        let mut got: Vec<String> = handover
            .iter()
            .map(|p| p.name().short_name().to_string())
            .collect();
        got.sort();
        let mut want: Vec<String> = ["a10", "a11", "a12", "p20", "p21"]
            .iter()
            .filter(|n| **n != to)
            .map(|n| n.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want, "handover to {to}");
    }
}

#[test]
fn a_neighbor_left_with_nobody_else_takes_the_handover_and_asks_it() {
    // A joiner whose only link was its contact: the contact leaves before any walk landed.
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let handover = vec![peer("x", 30), peer("me", 1), peer("a10", 10)];
    let out = msg(&mut h, &peer("a10", 10), HvMsg::Leave { handover });
    // Neither itself nor the leaver became candidates; the handed-over peer is asked with
    // high priority at once (the active view is empty).
    assert_eq!(names(h.passive_view()), vec!["x"]);
    assert_eq!(
        sends(&out),
        vec![("x".into(), HvMsg::NeighborRequest { high: true })]
    );
    // An oversized handover is refused whole.
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let huge = vec![peer("z", 70); MAX_SAMPLE + 1];
    let mut out = vec![];
    let r = h.on_message(
        &peer("a10", 10),
        OverlayMsg::HyParView(HvMsg::Leave { handover: huge }),
        Instant::ZERO,
        &mut out,
    );
    assert!(r.is_err() && out.is_empty());
    assert_eq!(names(h.active_view()), vec!["a10"]);
}

#[test]
fn a_removed_neighbor_is_not_brought_back_as_a_last_resort() {
    // a10 was an active neighbour (so among the recent ones kept for isolation).
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let mut out = vec![];
    h.remove(peer("a10", 10).name(), Instant::ZERO, &mut out);
    let mut out = vec![];
    h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
    assert!(h.passive_view().is_empty(), "{:?}", h.passive_view());
    assert!(
        !sends(&out).iter().any(|(to, _)| to == "a10"),
        "{:?}",
        sends(&out)
    );
}

#[test]
fn a_node_that_left_takes_no_handover() {
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let mut out = vec![];
    h.leave(Instant::ZERO, &mut out);
    let handover = vec![peer("x", 30)];
    let out = msg(&mut h, &peer("a11", 11), HvMsg::Leave { handover });
    assert!(h.passive_view().is_empty() && h.active_view().is_empty());
    assert!(sends(&out).is_empty());
}

#[test]
fn keep_active_repairs_an_asymmetric_view() {
    let cfg = HyParViewConfig {
        active_max: 2,
        ..Default::default()
    };
    let mut room = with_views(&[10], &[], cfg.clone());
    let x = peer("x", 60);
    msg(&mut room, &x, HvMsg::KeepActive);
    assert!(
        room.active.contains_key(x.name()),
        "added back when there is room"
    );
    let mut full = with_views(&[10, 11], &[], cfg);
    let out = msg(&mut full, &x, HvMsg::KeepActive);
    assert_eq!(sends(&out), vec![("x".into(), HvMsg::Disconnect)]);
}

#[test]
fn an_isolated_node_rejoins_through_its_contact() {
    let mut h = node("me", 1, HyParViewConfig::default());
    let c = peer("contact", 2);
    let mut out = vec![];
    h.join(&c, Instant::ZERO, &mut out);
    out.clear();
    h.on_peer_down(c.name(), Instant::ZERO, &mut out);
    assert!(h.active.is_empty());
    // The lost contact is a passive candidate: asked with high priority at the next tick.
    out.clear();
    h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
    assert_eq!(
        sends(&out),
        vec![("contact".into(), HvMsg::NeighborRequest { high: true })]
    );
    // Found unreachable, it leaves the passive view but, being the only contact, comes
    // back as the last-resort candidate, tried again at the next tick (not in a loop).
    out.clear();
    h.on_unreachable(c.name(), Instant::ZERO, &mut out);
    assert!(sends(&out).is_empty(), "no immediate retry: {out:?}");
    h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
    assert_eq!(
        sends(&out),
        vec![("contact".into(), HvMsg::NeighborRequest { high: true })]
    );
}

#[test]
fn an_opportunistic_acceptance_arriving_on_a_full_view_is_undone_not_evicting() {
    let cfg = HyParViewConfig {
        active_max: 2,
        active_min: 1,
        ..Default::default()
    };
    let mut h = with_views(&[10], &[20], cfg);
    let mut out = vec![];
    h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
    assert_eq!(
        sends(&out),
        vec![("p20".into(), HvMsg::NeighborRequest { high: false })]
    );
    // Meanwhile another peer takes the last slot.
    msg(
        &mut h,
        &peer("x", 30),
        HvMsg::NeighborRequest { high: false },
    );
    assert_eq!(h.active.len(), 2);
    let out = msg(
        &mut h,
        &peer("p20", 20),
        HvMsg::NeighborReply { accepted: true },
    );
    assert_eq!(sends(&out), vec![("p20".into(), HvMsg::Disconnect)]);
    assert_eq!(names(h.active_view()), vec!["a10", "x"], "nobody evicted");
    assert!(h.passive.contains_key(peer("p20", 20).name()));
}

#[test]
fn a_node_that_lost_everything_falls_back_on_its_former_neighbors() {
    let mut h = with_views(&[10], &[], HyParViewConfig::default());
    let mut out = vec![];
    let a10 = peer("a10", 10);
    h.on_unreachable(a10.name(), Instant::ZERO, &mut out);
    assert!(h.active.is_empty() && h.contacts.is_empty());
    assert!(sends(&out).is_empty(), "not retried in the same tick");
    out.clear();
    h.on_timer(OverlayTimer::Promotion, Instant::ZERO, &mut out);
    assert_eq!(
        sends(&out),
        vec![("a10".into(), HvMsg::NeighborRequest { high: true })]
    );
}

#[test]
fn reserved_slots_are_kept_for_their_tag_and_never_evicted() {
    let cfg = HyParViewConfig {
        active_max: 2,
        reservations: vec![Tag::new("db").unwrap()],
        ..Default::default()
    };
    let mut h = with_views(&[10], &[], cfg);
    // One slot used, one reserved: full for untagged peers.
    let out = msg(
        &mut h,
        &peer("x", 60),
        HvMsg::NeighborRequest { high: false },
    );
    assert_eq!(
        sends(&out),
        vec![("x".into(), HvMsg::NeighborReply { accepted: false })]
    );
    let mut db = peer("db1", 61);
    db.tag = Some(Tag::new("db").unwrap());
    let out = msg(&mut h, &db, HvMsg::NeighborRequest { high: false });
    assert!(sends(&out).contains(&("db1".into(), HvMsg::NeighborReply { accepted: true })));
    // A high-priority request evicts the unreserved peer, never the reserved one.
    let out = msg(
        &mut h,
        &peer("y", 62),
        HvMsg::NeighborRequest { high: true },
    );
    assert!(h.active.contains_key(db.name()));
    assert!(sends(&out)
        .iter()
        .any(|(to, m)| to == "a10" && *m == HvMsg::Disconnect));
    let mut limited = node(
        "l",
        3,
        HyParViewConfig {
            active_max: 1,
            ..Default::default()
        },
    );
    limited.reserve(Tag::new("a").unwrap()).unwrap();
    assert!(limited.reserve(Tag::new("b").unwrap()).is_err());
}

#[test]
fn bad_messages_are_rejected_without_changing_state() {
    let mut h = with_views(&[10], &[20], HyParViewConfig::default());
    let before = (h.active_view(), h.passive_view());
    let mut out = vec![];
    let huge = vec![peer("z", 70); MAX_SAMPLE + 1];
    assert!(h
        .on_message(
            &peer("a10", 10),
            OverlayMsg::HyParView(HvMsg::ShuffleReply { sample: huge }),
            Instant::ZERO,
            &mut out
        )
        .is_err());
    let spoof = HvMsg::Join {
        peer: peer("victim", 71),
    };
    assert!(h
        .on_message(
            &peer("a10", 10),
            OverlayMsg::HyParView(spoof),
            Instant::ZERO,
            &mut out
        )
        .is_err());
    assert!(h
        .on_message(
            &peer("a10", 10),
            OverlayMsg::Static(crate::overlay::StaticMsg::Leaving),
            Instant::ZERO,
            &mut out
        )
        .is_err());
    assert_eq!((h.active_view(), h.passive_view()), before);
    assert!(out.is_empty());
}

// ---- property test: random joins, leaves, crashes, shuffles and timers ----

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize),
    Leave(usize),
    Crash(usize),
    /// Runs this many events, each time delivering a random control frame in flight ahead of
    /// its turn when there is one (reordering), else the next event.
    Deliver(usize),
    /// Loses the oldest control frame in flight.
    Drop,
    /// Lets this many milliseconds pass.
    Advance(u64),
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n, 0..n).prop_map(|(a, b)| Op::Join(a, b)),
        1 => (0..n).prop_map(Op::Leave),
        1 => (0..n).prop_map(Op::Crash),
        6 => (1..40usize).prop_map(Op::Deliver),
        1 => Just(Op::Drop),
        3 => (100..12_000u64).prop_map(Op::Advance),
    ]
}

/// The view invariants of node `i`, whatever is in flight.
fn check_views(net: &Network, i: NodeId, cfg: &HyParViewConfig) -> Result<(), String> {
    if !net.node(i).alive {
        return Ok(());
    }
    let overlay = net.engine(i).overlay();
    let me = net.name_of(i);
    let active = overlay.active_view();
    let passive = overlay.passive_view();
    let fail = |what: &str| Err(format!("seed {}: n{i}: {what}", net.seed()));
    if active.len() > cfg.active_max {
        return fail("active view over max");
    }
    if passive.len() > cfg.passive_max {
        return fail("passive view over max");
    }
    if active.contains(me) || passive.contains(me) {
        return fail("self in a view");
    }
    if active.iter().any(|a| passive.contains(a)) {
        return fail("active and passive overlap");
    }
    Ok(())
}

fn check_all(net: &Network, cfg: &HyParViewConfig) -> Result<(), TestCaseError> {
    for i in 0..net.len() as NodeId {
        check_views(net, i, cfg).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn random_histories_keep_the_view_invariants_and_heal_symmetric(
        seed in any::<u64>(),
        n in 4usize..9,
        ops in proptest::collection::vec(op(8), 1..120),
    ) {
        println!("seed {seed}");
        let cfg = HyParViewConfig { active_max: 3, active_min: 2, passive_max: 5, ..Default::default() };
        let mut net = Network::new(Setup::hyparview(n as u32, seed, cfg.clone()));
        let alive = |net: &Network, a: usize| net.node(a as NodeId).alive;
        for op in ops {
            match op {
                Op::Join(a, b) if a < n && b < n && a != b && alive(&net, a) && alive(&net, b) => {
                    net.join(a as NodeId, b as NodeId)
                }
                Op::Leave(a) if a < n && alive(&net, a) => net.leave(a as NodeId),
                Op::Crash(a) if a < n && net.live().len() > 2 => net.crash(a as NodeId),
                Op::Deliver(k) => {
                    for _ in 0..k {
                        let in_flight = net.in_flight().len();
                        if in_flight > 0 {
                            let pick = rand::Rng::gen_range(net.rng(), 0..in_flight);
                            net.deliver_now(pick);
                        } else {
                            net.step();
                        }
                    }
                }
                Op::Drop => {
                    net.drop_in_flight(0);
                }
                Op::Advance(ms) => {
                    let until = net.now + Duration::from_millis(ms);
                    net.run_checked(until, |net, i| check_views(net, i, &cfg))
                        .map_err(TestCaseError::fail)?;
                }
                _ => {}
            }
            check_all(&net, &cfg)?;
        }
        // Heal: no more faults; let several shuffle periods pass (KeepActive repairs
        // asymmetry, promotion refills views), checking the views after every event.
        for _ in 0..8 {
            let until = net.now + Duration::from_secs(11);
            net.run_checked(until, |net, i| check_views(net, i, &cfg))
                .map_err(TestCaseError::fail)?;
        }
        for i in net.live() {
            for b in net.engine(i).overlay().active_view() {
                let j = net.id_of(&b).expect("a node of the network");
                let (me, seed) = (net.name_of(i), net.seed());
                prop_assert!(net.node(j).alive, "seed {seed}: {me} keeps crashed {b} active");
                // A rewiring started by the last periodic tick is one-sided while its reply
                // travels: `b` asked this node and has not heard back yet.
                let asking = net
                    .engine(j)
                    .overlay()
                    .as_any()
                    .downcast_ref::<HyParView>()
                    .is_some_and(|h| h.pending.contains(me));
                prop_assert!(
                    net.engine(j).overlay().active_view().contains(me) || asking,
                    "seed {seed}: asymmetric: {me} has {b} but not the reverse"
                );
                prop_assert!(net.linked(i, j), "seed {seed}: {me} has {b} active, not connected");
            }
        }
        prop_assert_eq!(net.rejected, 0, "seed {}: messages rejected", seed);
    }
}

/// A node with enough neighbours that sees no failure tries one node at periods 1, 3, 7, 15,
/// ... after its last trouble, then at most every MAX_EVERY periods.
fn assert_calm(e: &mut explore::Explorer, rng: &mut ChaCha8Rng) {
    let mut tries = 0;
    for _ in 0..1000 {
        tries += e.tick(false, |_| false, &mut *rng).len();
    }
    let bound = 8 * 5 + 1000 / explore::MAX_EVERY as usize + 1;
    assert!(tries <= bound, "{tries} tries in 1000 calm periods");
}

#[test]
fn the_remembered_sample_is_bounded_and_a_healthy_node_explores_rarely() {
    let mut e = explore::Explorer::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for p in 0..1000u16 {
        e.remember(&peer(&format!("n{p}"), 2000 + p), &mut rng);
    }
    assert_eq!(e.len(), explore::REMEMBERED);
    // Enough neighbours and no failure: one node tried at periods 1, 3, 7, 15, ... then at
    // most every MAX_EVERY periods.
    assert_calm(&mut e, &mut rng);
}

#[test]
fn a_troubled_node_tries_every_remembered_node_soon_and_backs_off_the_dead() {
    let mut e = explore::Explorer::default();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for p in 0..64u16 {
        e.remember(&peer(&format!("n{p}"), 2000 + p), &mut rng);
    }
    // Below active_min: every remembered node gets a try within eight periods.
    let mut seen = BTreeSet::new();
    for _ in 0..8 {
        for p in e.tick(true, |_| false, &mut rng) {
            // Every try fails (the node is dead); its failure does not count as a new loss.
            e.failed(p.name());
            seen.insert(p.name().clone());
        }
    }
    assert_eq!(seen.len(), 64);
    // Nodes in the views are not explored.
    let mut e = explore::Explorer::default();
    e.remember(&peer("v", 3000), &mut rng);
    assert!(e.tick(true, |n| n.short_name() == "v", &mut rng).is_empty());
}

#[test]
fn an_isolated_node_bridges_to_the_node_that_answers_its_exploration() {
    let mut h = node("me", 1, HyParViewConfig::default());
    let far = peer("far", 9);
    // Heard of once (a shuffle sample), then forgotten by the passive view.
    h.integrate(std::slice::from_ref(&far), &BTreeSet::new());
    h.passive.clear();
    let mut out = vec![];
    h.explore(&mut out);
    let sent = sends(&out);
    assert!(
        matches!(&sent[..], [(to, HvMsg::Shuffle { ttl: 1, .. })] if to == "far"),
        "{sent:?}"
    );
    // It answers: with an empty active view, this node asks it to be a neighbour, with
    // priority, and knows it as a passive candidate.
    let out = msg(&mut h, &far, HvMsg::ShuffleReply { sample: vec![] });
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| to == "far" && *m == HvMsg::NeighborRequest { high: true }),
        "{out:?}"
    );
}

#[test]
fn one_loss_makes_a_healthy_node_try_everything_it_remembers_once_more() {
    // After a mass failure the survivors refill their views in a period or two; the nodes
    // left isolated are found only if each survivor goes through all it remembers.
    let mut e = explore::Explorer::default();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for p in 0..explore::REMEMBERED as u16 {
        e.remember(&peer(&format!("n{p}"), 2000 + p), &mut rng);
    }
    for _ in 0..500 {
        e.tick(false, |_| false, &mut rng);
    }
    // A neighbour is lost once; the node is never short of neighbours.
    e.failed(&NodeName::new("gone@h").unwrap());
    let mut seen = BTreeSet::new();
    for _ in 0..explore::REMEMBERED / 8 + 1 {
        for p in e.tick(false, |_| false, &mut rng) {
            seen.insert(p.name().clone());
        }
    }
    assert_eq!(seen.len(), explore::REMEMBERED);
    // Then it calms down again.
    assert_calm(&mut e, &mut rng);
}
