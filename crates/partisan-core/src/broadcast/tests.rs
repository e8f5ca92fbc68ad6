//! Each Plumtree rule, by hand-fed messages.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::testing::Recorder;
use crate::time::Instant;

fn n(s: &str) -> NodeName {
    NodeName::new(&format!("{s}@h")).unwrap()
}

fn set(names: &[&str]) -> BTreeSet<NodeName> {
    names.iter().map(|s| n(s)).collect()
}

fn tree_at(local: &str, neighbours: &[&str]) -> Plumtree {
    tree_with(local, neighbours, PlumtreeConfig::default())
}

fn tree_with(local: &str, neighbours: &[&str], cfg: PlumtreeConfig) -> Plumtree {
    let mut t = Plumtree::new(
        n(local),
        Box::new(Recorder::new("log", n(local), true)),
        cfg,
        1,
    );
    t.set_neighbours(set(neighbours), T0, &mut Vec::new());
    t
}

fn recorder(t: &Plumtree) -> &Recorder {
    t.handler().as_any().downcast_ref::<Recorder>().unwrap()
}

fn sends(out: &[PlumtreeOutput]) -> Vec<(NodeName, BroadcastBody)> {
    out.iter()
        .filter_map(|o| match o {
            PlumtreeOutput::Send { to, body } => Some((to.clone(), body.clone())),
            _ => None,
        })
        .collect()
}

fn timers(out: &[PlumtreeOutput]) -> Vec<(PlumtreeTimer, Instant)> {
    out.iter()
        .filter_map(|o| match o {
            PlumtreeOutput::SetTimer { timer, at } => Some((*timer, *at)),
            _ => None,
        })
        .collect()
}

fn gossip(id: &[u8], root: &str, round: u32) -> BroadcastBody {
    BroadcastBody::Gossip {
        id: id.to_vec(),
        payload: b"p".to_vec(),
        root: n(root),
        round,
    }
}

const T0: Instant = Instant(1_000_000);

#[test]
fn a_broadcast_is_delivered_here_and_pushed_eagerly_to_every_neighbour_at_first() {
    let mut t = tree_at("r", &["a", "b"]);
    let mut out = Vec::new();
    t.broadcast(b"hello", T0, &mut out).unwrap();
    let s = sends(&out);
    assert_eq!(s.len(), 2);
    for (to, body) in &s {
        assert!(set(&["a", "b"]).contains(to));
        match body {
            BroadcastBody::Gossip {
                payload,
                root,
                round,
                ..
            } => {
                assert_eq!(payload, b"hello");
                assert_eq!(root, &n("r"));
                assert_eq!(*round, 1);
            }
            other => panic!("expected gossip, got {other:?}"),
        }
    }
    assert_eq!(t.stats().delivered, 1);
    assert_eq!(recorder(&t).len(), 1);
    // Nobody is lazy yet: no announcement timer.
    assert!(timers(&out).is_empty());
}

#[test]
fn a_new_message_goes_on_to_the_other_eager_peers_with_one_more_hop() {
    let mut t = tree_at("x", &["a", "b", "c"]);
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"m1", "r", 2), T0, &mut out);
    let mut to: Vec<NodeName> = sends(&out).into_iter().map(|(p, _)| p).collect();
    to.sort();
    assert_eq!(to, vec![n("b"), n("c")]);
    assert!(sends(&out)
        .iter()
        .all(|(_, b)| matches!(b, BroadcastBody::Gossip { round: 3, .. })));
    let d = &recorder(&t).deliveries()[&b"m1".to_vec()];
    assert_eq!((d.round, d.copies, d.delivered), (Some(2), 1, 1));
}

#[test]
fn a_duplicate_prunes_its_sender_which_then_only_gets_announcements() {
    let mut t = tree_at("x", &["a", "b", "c"]);
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"m1", "r", 1), T0, &mut out);
    out.clear();
    t.on_message(&n("b"), gossip(b"m1", "r", 1), T0, &mut out);
    assert_eq!(
        sends(&out),
        vec![(
            n("b"),
            BroadcastBody::Prune {
                root: n("r"),
                shortcut: false
            }
        )]
    );
    assert_eq!(t.stats().duplicates, 1);
    let (eager, lazy) = t.tree(&n("r"));
    assert_eq!(lazy, set(&["b"]));
    assert_eq!(eager, set(&["a", "c"]));
    // The next message of that root: eager to c, announced to b at the lazy tick, batched.
    out.clear();
    t.on_message(&n("a"), gossip(b"m2", "r", 1), T0, &mut out);
    t.on_message(&n("a"), gossip(b"m3", "r", 1), T0, &mut out);
    let s = sends(&out);
    assert!(s.iter().all(|(p, _)| p == &n("c")), "{s:?}");
    let armed = timers(&out);
    assert_eq!(
        armed,
        vec![(PlumtreeTimer::Lazy, T0 + Duration::from_secs(1))]
    );
    out.clear();
    t.on_timer(PlumtreeTimer::Lazy, T0 + Duration::from_secs(1), &mut out);
    match &sends(&out)[..] {
        [(to, BroadcastBody::IHave(list))] => {
            assert_eq!(to, &n("b"));
            let ids: Vec<&[u8]> = list.iter().map(|a| a.id.as_slice()).collect();
            assert_eq!(ids, vec![b"m2".as_slice(), b"m3".as_slice()]);
            assert!(list.iter().all(|a| a.round == 2 && a.root == n("r")));
        }
        other => panic!("expected one batch of announcements, got {other:?}"),
    }
    assert_eq!(t.stats().ihaves_sent, 2);
}

#[test]
fn a_prune_moves_its_sender_to_lazy_and_a_graft_back_to_eager_with_the_payload() {
    let mut t = tree_at("r", &["a", "b"]);
    let mut out = Vec::new();
    t.broadcast(b"one", T0, &mut out).unwrap();
    let id = recorder(&t).deliveries().keys().next().unwrap().clone();
    t.on_message(
        &n("a"),
        BroadcastBody::Prune {
            root: n("r"),
            shortcut: false,
        },
        T0,
        &mut out,
    );
    assert_eq!(t.tree(&n("r")).1, set(&["a"]));
    out.clear();
    t.on_message(
        &n("a"),
        BroadcastBody::Graft {
            id: id.clone(),
            root: n("r"),
            round: 1,
        },
        T0,
        &mut out,
    );
    assert_eq!(t.tree(&n("r")).0, set(&["a", "b"]));
    assert_eq!(
        sends(&out),
        vec![(
            n("a"),
            BroadcastBody::Gossip {
                id,
                payload: b"one".to_vec(),
                root: n("r"),
                round: 1
            }
        )]
    );
    // A graft for something unknown is counted, not answered.
    out.clear();
    t.on_message(
        &n("b"),
        BroadcastBody::Graft {
            id: b"nope".to_vec(),
            root: n("r"),
            round: 1,
        },
        T0,
        &mut out,
    );
    assert!(sends(&out).is_empty());
    assert_eq!(t.stats().grafts_unanswered, 1);
}

fn ihave(id: &[u8], root: &str, round: u32) -> BroadcastBody {
    BroadcastBody::IHave(vec![Announcement {
        id: id.to_vec(),
        root: n(root),
        round,
    }])
}

#[test]
fn a_missing_message_is_grafted_when_its_timer_expires_not_at_the_announcement() {
    let mut t = tree_at("x", &["a", "b", "c"]);
    let mut out = Vec::new();
    t.on_message(&n("a"), ihave(b"m", "r", 3), T0, &mut out);
    t.on_message(&n("b"), ihave(b"m", "r", 4), T0, &mut out);
    assert!(sends(&out).is_empty(), "no graft at the announcement");
    // Due after the graft timeout, jittered by up to half of it.
    let due = match &timers(&out)[..] {
        [(PlumtreeTimer::Graft, at)] => *at,
        other => panic!("expected one graft timer, got {other:?}"),
    };
    assert!(due >= T0 + Duration::from_secs(1) && due <= T0 + Duration::from_millis(1500));
    assert_eq!(t.missing(), 1);
    // Not before it is due.
    let mut early = Vec::new();
    t.on_timer(
        PlumtreeTimer::Graft,
        T0 + Duration::from_millis(999),
        &mut early,
    );
    assert!(sends(&early).is_empty());
    out.clear();
    t.on_timer(PlumtreeTimer::Graft, due, &mut out);
    assert_eq!(
        sends(&out),
        vec![(
            n("a"),
            BroadcastBody::Graft {
                id: b"m".to_vec(),
                root: n("r"),
                round: 3
            }
        )]
    );
    assert!(t.tree(&n("r")).0.contains(&n("a")));
    // Still nothing after the retry delay: the next announcer is asked.
    let retry = due + Duration::from_millis(500);
    assert_eq!(timers(&out), vec![(PlumtreeTimer::Graft, retry)]);
    out.clear();
    t.on_timer(PlumtreeTimer::Graft, retry, &mut out);
    assert!(
        matches!(&sends(&out)[..], [(p, BroadcastBody::Graft { round: 4, .. })] if p == &n("b"))
    );
    // The payload arrives: the missing entry goes, no more grafts.
    out.clear();
    t.on_message(&n("b"), gossip(b"m", "r", 4), retry, &mut out);
    assert_eq!(t.missing(), 0);
    out.clear();
    t.on_timer(
        PlumtreeTimer::Graft,
        retry + Duration::from_secs(5),
        &mut out,
    );
    assert!(sends(&out).is_empty());
    assert_eq!(t.stats().grafts_sent, 2);
    assert_eq!(t.stats().missing_expired, 0);
}

#[test]
fn an_announcement_of_a_message_that_arrives_by_eager_push_in_time_is_never_grafted() {
    let mut t = tree_at("x", &["a", "b"]);
    let mut out = Vec::new();
    t.on_message(&n("b"), ihave(b"m", "r", 1), T0, &mut out);
    t.on_message(&n("a"), gossip(b"m", "r", 1), T0, &mut out);
    out.clear();
    t.on_timer(PlumtreeTimer::Graft, T0 + Duration::from_secs(2), &mut out);
    assert!(sends(&out).is_empty());
    // Announcing a known message again does nothing either.
    t.on_message(&n("b"), ihave(b"m", "r", 1), T0, &mut out);
    assert_eq!(t.missing(), 0);
}

#[test]
fn a_lazy_path_shorter_by_the_threshold_replaces_the_eager_one() {
    let cfg = PlumtreeConfig {
        optimize_threshold: 3,
        ..PlumtreeConfig::default()
    };
    let mut t = tree_with("x", &["a", "b"], cfg.clone());
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"m", "r", 6), T0, &mut out);
    out.clear();
    // b announces it at 2 hops: 6 >= 2 + 3.
    t.on_message(&n("b"), ihave(b"m", "r", 2), T0, &mut out);
    let s = sends(&out);
    assert!(s.contains(&(
        n("b"),
        BroadcastBody::Graft {
            id: Vec::new(),
            root: n("r"),
            round: 2
        }
    )));
    assert!(s.contains(&(
        n("a"),
        BroadcastBody::Prune {
            root: n("r"),
            shortcut: true
        }
    )));
    let (eager, lazy) = t.tree(&n("r"));
    assert_eq!((eager, lazy), (set(&["b"]), set(&["a"])));
    assert_eq!(t.stats().optimizations, 1);
    // Only in r's own links: other roots still use the shared tree.
    assert_eq!(t.tree(&n("q")).0, set(&["a", "b"]));
    assert_eq!(t.own_roots().collect::<Vec<_>>(), vec![&n("r")]);
    // Not when the gain is under the threshold, nor when the optimisation is off.
    let mut t = tree_with("x", &["a", "b"], cfg);
    t.on_message(&n("a"), gossip(b"m", "r", 4), T0, &mut out);
    out.clear();
    t.on_message(&n("b"), ihave(b"m", "r", 2), T0, &mut out);
    assert!(sends(&out).is_empty());
    let mut t = tree_at("x", &["a", "b"]);
    t.on_message(&n("a"), gossip(b"m", "r", 9), T0, &mut out);
    out.clear();
    t.on_message(&n("b"), ihave(b"m", "r", 2), T0, &mut out);
    assert!(sends(&out).is_empty());
}

#[test]
fn a_lost_neighbour_leaves_every_tree_and_its_announcements_and_exchanges_go() {
    let mut t = tree_at("x", &["a", "b"]);
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"m", "r", 1), T0, &mut out);
    t.on_message(&n("b"), gossip(b"m", "r", 1), T0, &mut out); // b lazy
    t.on_message(&n("a"), gossip(b"m2", "r", 1), T0, &mut out); // queued for b
    t.on_message(&n("b"), ihave(b"z", "q", 1), T0, &mut out);
    assert_eq!(t.outstanding(), 1);
    t.set_neighbours(set(&["a", "c"]), T0, &mut out);
    let (eager, lazy) = t.tree(&n("r"));
    assert_eq!((eager, lazy), (set(&["a", "c"]), BTreeSet::new()));
    // b's announcements went with it; the newcomer c is told of the recent messages.
    assert_eq!(t.outstanding(), 2);
    // The missing message has no announcer left: given up at its timer.
    out.clear();
    t.on_timer(PlumtreeTimer::Graft, T0 + Duration::from_secs(2), &mut out);
    assert!(sends(&out).is_empty());
    assert_eq!(t.missing(), 0);
    assert_eq!(t.stats().missing_expired, 1);
}

#[test]
fn a_new_neighbour_is_announced_the_recent_messages_only() {
    let mut t = tree_at("x", &["a"]);
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"old", "r", 1), T0, &mut out);
    let later = T0 + Duration::from_secs(5);
    t.on_message(&n("a"), gossip(b"new", "r", 2), later, &mut out);
    out.clear();
    t.set_neighbours(set(&["a", "c"]), later, &mut out);
    let tick = match &timers(&out)[..] {
        [(PlumtreeTimer::Lazy, at)] => *at,
        other => panic!("expected the lazy tick, got {other:?}"),
    };
    out.clear();
    t.on_timer(PlumtreeTimer::Lazy, tick, &mut out);
    assert_eq!(
        sends(&out),
        vec![(
            n("c"),
            BroadcastBody::IHave(vec![Announcement {
                id: b"new".to_vec(),
                root: n("r"),
                round: 3
            }])
        )]
    );
}

#[test]
fn queues_and_tables_are_bounded_and_count_what_they_drop() {
    let cfg = PlumtreeConfig {
        max_outstanding_per_peer: 2,
        max_missing: 1,
        ..PlumtreeConfig::default()
    };
    let mut t = tree_with("x", &["a", "b"], cfg);
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"m0", "r", 1), T0, &mut out);
    t.on_message(&n("b"), gossip(b"m0", "r", 1), T0, &mut out); // b lazy
    for i in 1..=3u8 {
        t.on_message(&n("a"), gossip(&[b'm', i], "r", 1), T0, &mut out);
    }
    assert_eq!(t.outstanding(), 2);
    assert_eq!(t.stats().ihaves_dropped, 1);
    t.on_message(&n("b"), ihave(b"y1", "q", 1), T0, &mut out);
    t.on_message(&n("b"), ihave(b"y2", "q", 1), T0, &mut out);
    assert_eq!(t.missing(), 1);
    assert_eq!(t.stats().missing_dropped, 1);
}

/// Runs an exchange between two Plumtrees by hand; returns the messages it took.
fn exchange(a: &mut Plumtree, an: &str, b: &mut Plumtree, bn: &str, now: Instant) -> usize {
    let mut out = Vec::new();
    a.on_timer(PlumtreeTimer::Exchange, now, &mut out);
    let mut msgs: Vec<(NodeName, NodeName, BroadcastBody)> = sends(&out)
        .into_iter()
        .map(|(to, body)| (n(an), to, body))
        .collect();
    let mut count = 0;
    while let Some((from, to, body)) = msgs.pop() {
        count += 1;
        let mut out = Vec::new();
        if to == n(bn) {
            b.on_message(&from, body, now, &mut out);
        } else {
            a.on_message(&from, body, now, &mut out);
        }
        msgs.extend(sends(&out).into_iter().map(|(t, bd)| (to.clone(), t, bd)));
    }
    count
}

#[test]
fn anti_entropy_exchanges_repair_both_sides_and_finish() {
    let mut a = tree_at("a", &["b"]);
    let mut b = tree_at("b", &["a"]);
    let mut out = Vec::new();
    a.broadcast(b"from a", T0, &mut out).unwrap();
    b.broadcast(b"from b", T0, &mut out).unwrap();
    assert_eq!((recorder(&a).len(), recorder(&b).len()), (1, 1));
    let msgs = exchange(&mut a, "a", &mut b, "b", T0);
    assert_eq!(msgs, 3, "digest, reply with entries, the entries asked for");
    assert_eq!((recorder(&a).len(), recorder(&b).len()), (2, 2));
    assert_eq!(a.stats().exchanges, 1);
    assert_eq!(a.stats().exchanges_completed, 1);
    assert_eq!(a.exchanges().count(), 0);
    // A late answer to a finished or cancelled session is ignored.
    let mut out = Vec::new();
    a.on_timer(PlumtreeTimer::Exchange, T0, &mut out);
    assert_eq!(a.exchanges().count(), 1);
    assert_eq!(a.cancel_exchanges(&ExchangeSelector::Peer(n("b"))), 1);
    let before = recorder(&a).len();
    let mut out2 = Vec::new();
    a.on_message(
        &n("b"),
        BroadcastBody::Exchange {
            session: 2,
            from_initiator: false,
            data: vec![1, 2, 3],
        },
        T0,
        &mut out2,
    );
    assert!(sends(&out2).is_empty());
    assert_eq!(recorder(&a).len(), before);
}

#[test]
fn exchanges_time_out_and_respect_the_limit() {
    let mut a = tree_at("a", &["b", "c"]);
    let mut out = Vec::new();
    a.on_timer(PlumtreeTimer::Exchange, T0, &mut out);
    assert_eq!(a.exchanges().count(), 1);
    out.clear();
    a.on_timer(
        PlumtreeTimer::Exchange,
        T0 + Duration::from_secs(10),
        &mut out,
    );
    assert_eq!(a.exchanges().count(), 1, "at most one at once by default");
    assert!(sends(&out).is_empty());
    a.on_timer(
        PlumtreeTimer::Exchange,
        T0 + Duration::from_secs(61),
        &mut out,
    );
    assert_eq!(a.stats().exchanges_failed, 1);
    assert_eq!(a.exchanges().count(), 1, "a new one started");
}

#[test]
fn messages_from_non_neighbours_deliver_but_shape_no_tree() {
    let mut t = tree_at("x", &["a"]);
    let mut out = Vec::new();
    t.on_message(&n("z"), gossip(b"m", "r", 1), T0, &mut out);
    assert_eq!(t.stats().delivered, 1);
    assert_eq!(t.stats().from_non_neighbours, 1);
    let (eager, lazy) = t.tree(&n("r"));
    assert_eq!((eager, lazy), (set(&["a"]), BTreeSet::new()));
    // A duplicate from it is not answered with a prune.
    out.clear();
    t.on_message(&n("z"), gossip(b"m", "r", 1), T0, &mut out);
    assert!(sends(&out).is_empty());
}

#[test]
fn handler_names_are_checked() {
    assert!(validate_handler_name("kv").is_ok());
    assert!(validate_handler_name("").is_err());
    assert!(validate_handler_name("a b").is_err());
    assert!(validate_handler_name(&"x".repeat(65)).is_err());
}

#[test]
fn every_root_uses_the_shared_tree_and_shortcuts_stay_with_their_root() {
    let mut t = tree_at("x", &["a", "b", "c"]);
    let mut out = Vec::new();
    t.on_message(&n("a"), gossip(b"m1", "r", 1), T0, &mut out);
    t.on_message(&n("b"), gossip(b"m1", "r", 1), T0, &mut out); // b pruned
    assert_eq!(t.shared_tree().1, &set(&["b"]));
    // A first message from another root is not pushed to b: no flood for a new broadcaster.
    out.clear();
    t.on_message(&n("a"), gossip(b"q1", "q", 1), T0, &mut out);
    let to: Vec<NodeName> = sends(&out).into_iter().map(|(p, _)| p).collect();
    assert_eq!(to, vec![n("c")]);
    assert_eq!(t.tree(&n("q")).1, set(&["b"]));
    // b takes the link as a shortcut from q: eager for q only.
    t.on_message(
        &n("b"),
        BroadcastBody::Graft {
            id: Vec::new(),
            root: n("q"),
            round: 1,
        },
        T0,
        &mut out,
    );
    assert!(t.tree(&n("q")).0.contains(&n("b")));
    assert!(t.shared_tree().1.contains(&n("b")));
    assert!(t.tree(&n("r")).1.contains(&n("b")));
    // A graft for a missing message changes the shared tree.
    t.on_message(
        &n("b"),
        BroadcastBody::Graft {
            id: b"m1".to_vec(),
            root: n("r"),
            round: 1,
        },
        T0,
        &mut out,
    );
    assert!(t.shared_tree().0.contains(&n("b")));
    // A shortcut prune too stays with its root.
    t.on_message(
        &n("c"),
        BroadcastBody::Prune {
            root: n("q"),
            shortcut: true,
        },
        T0,
        &mut out,
    );
    assert!(t.tree(&n("q")).1.contains(&n("c")));
    assert!(t.tree(&n("r")).0.contains(&n("c")));
}

/// A handler whose every callback panics.
struct Broken;

impl BroadcastHandler for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn broadcast_data(&mut self, _msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        panic!("broadcast_data")
    }
    fn merge(&mut self, _id: &[u8], _payload: &[u8], _receipt: Receipt<'_>) -> bool {
        panic!("merge")
    }
    fn is_stale(&self, _id: &[u8]) -> bool {
        panic!("is_stale")
    }
    fn graft(&self, _id: &[u8]) -> GraftReply {
        panic!("graft")
    }
    fn exchange_start(&mut self, _peer: &NodeName) -> Option<Vec<u8>> {
        panic!("exchange_start")
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn a_panicking_handler_is_caught_counted_and_costs_only_its_own_messages() {
    let mut t = Plumtree::new(n("x"), Box::new(Broken), PlumtreeConfig::default(), 1);
    t.set_neighbours(set(&["a", "b"]), T0, &mut Vec::new());
    let mut out = Vec::new();
    let e = t.broadcast(b"m", T0, &mut out).unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
    t.on_message(&n("a"), gossip(b"m", "r", 1), T0, &mut out);
    t.on_message(&n("a"), ihave(b"z", "r", 1), T0, &mut out);
    t.on_message(
        &n("b"),
        BroadcastBody::Graft {
            id: b"m".to_vec(),
            root: n("r"),
            round: 1,
        },
        T0,
        &mut out,
    );
    t.on_timer(PlumtreeTimer::Exchange, T0, &mut out);
    assert_eq!(t.stats().handler_panics, 5);
    assert_eq!(t.stats().delivered, 0);
    // Nothing was passed on for a message the handler could not merge.
    assert!(sends(&out)
        .iter()
        .all(|(_, b)| !matches!(b, BroadcastBody::Gossip { .. })));
    assert_eq!(t.missing(), 0, "a panicking is_stale counts as stale");
}
