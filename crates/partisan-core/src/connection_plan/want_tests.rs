//! The planner's wants (member, transient, join) and their lapsing, by hand.

use super::*;
use rand::SeedableRng;

fn spec(name: &str, port: u16) -> NodeSpec {
    let mut ch = BTreeMap::new();
    ch.insert(
        ChannelName::new("data").unwrap(),
        crate::id::ChannelOpts::with_parallelism(2),
    );
    NodeSpec::new(
        NodeName::new(name).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ch,
    )
    .unwrap()
}

fn plan() -> ConnectionPlan {
    ConnectionPlan::new(
        spec("a@h", 1),
        Backoff::default(),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)),
    )
}

fn dials(out: &[PlanOutput]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            PlanOutput::Dial(d) => Some(format!("{}/{}", d.channel, d.lane)),
            _ => None,
        })
        .collect()
}

fn hello(spec: &NodeSpec, channel: &str, lane: u16) -> PeerHello {
    PeerHello {
        identity: crate::wire::handshake::Identity {
            spec: spec.clone(),
            creation: 1,
            overlay: crate::overlay::OverlayKind::HyParView,
            tag: None,
            max_frame: 1 << 20,
        },
        channel: ChannelName::new(channel).unwrap(),
        lane,
    }
}

#[test]
fn transient_want_dials_one_membership_lane_and_lapses() {
    let mut p = plan();
    let b = spec("b@h", 2);
    let mut out = vec![];
    let ttl = Duration::from_secs(5);
    p.want(b.clone(), Want::Transient { ttl }, Instant::ZERO, &mut out);
    assert_eq!(dials(&out), vec!["membership/0"]);
    let t = DialTarget::Node(b.name().clone());
    out.clear();
    p.on_established(
        ConnId(1),
        &t,
        &hello(&b, "membership", 0),
        Instant::ZERO,
        &mut out,
    )
    .unwrap();
    assert!(
        dials(&out).is_empty(),
        "transient wants dial nothing more: {out:?}"
    );
    out.clear();
    p.on_tick(Instant::ZERO + ttl, &mut out);
    assert!(out.contains(&PlanOutput::Close {
        conn: ConnId(1),
        reason: CloseReason::Unwanted
    }));
    assert!(out.contains(&PlanOutput::PeerDown {
        node: b.name().clone()
    }));
    assert!(!p.is_wanted(b.name()));
}

#[test]
fn a_lapsing_want_closes_only_what_this_node_dialed() {
    // b wants us and dialed our data lanes; we reached it transiently (a shuffle reply).
    let mut p = plan();
    let b = spec("b@h", 2);
    let mut out = vec![];
    let ttl = Duration::from_secs(5);
    p.want(b.clone(), Want::Transient { ttl }, Instant::ZERO, &mut out);
    let t = DialTarget::Node(b.name().clone());
    let hm = hello(&b, "membership", 0);
    p.on_established(ConnId(1), &t, &hm, Instant::ZERO, &mut out)
        .unwrap();
    for lane in 0..2u16 {
        let h = hello(&b, "data", lane);
        p.admit(ConnId(10 + u64::from(lane)), &h, Instant::ZERO, &mut out)
            .unwrap();
    }
    out.clear();
    p.on_tick(Instant::ZERO + ttl, &mut out);
    // Only our dial closes: b keeps its lanes and sees no failure.
    assert_eq!(
        out,
        vec![PlanOutput::Close {
            conn: ConnId(1),
            reason: CloseReason::Unwanted
        }]
    );
    assert!(!p.is_wanted(b.name()));
    // b redials the lane it still wants: admitted, no stale dialing state refuses it.
    out.clear();
    assert_eq!(p.admit(ConnId(20), &hm, Instant::ZERO, &mut out), Ok(None));
    // forget closes everything, the peer's own dials included.
    out.clear();
    p.forget(b.name(), &mut out);
    let closed: Vec<ConnId> = out
        .iter()
        .filter_map(|o| match o {
            PlanOutput::Close { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![ConnId(10), ConnId(11), ConnId(20)]);
    assert!(out.contains(&PlanOutput::PeerDown {
        node: b.name().clone()
    }));
}

#[test]
fn overlay_want_upgrades_a_transient_one_and_reasons_are_independent() {
    let mut p = plan();
    let b = spec("b@h", 2);
    let mut out = vec![];
    p.want(
        b.clone(),
        Want::Transient {
            ttl: Duration::from_secs(1),
        },
        Instant::ZERO,
        &mut out,
    );
    p.want(b.clone(), Want::Overlay, Instant::ZERO, &mut out);
    p.want(b.clone(), Want::User, Instant::ZERO, &mut out);
    assert_eq!(
        dials(&out),
        vec!["membership/0", "data/0", "data/1", "default/0"]
    );
    out.clear();
    p.on_tick(Instant(2_000_000), &mut out);
    assert!(p.is_wanted(b.name()), "overlay and user still want it");
    p.unwant(b.name(), Want::Overlay, &mut out);
    assert!(p.is_wanted(b.name()), "the user still wants it");
    p.unwant(b.name(), Want::User, &mut out);
    assert!(!p.is_wanted(b.name()));
}

/// Fails the dial of every lane of b@h (spec `spec("b@h", 2)`) with `failure`.
fn fail_every_lane(p: &mut ConnectionPlan, failure: DialFailure, out: &mut Vec<PlanOutput>) {
    let t = DialTarget::Node(NodeName::new("b@h").unwrap());
    for lane in [("data", 0), ("data", 1), ("default", 0), ("membership", 0)] {
        let channel = ChannelName::new(lane.0).unwrap();
        p.on_dial_failed(&t, &channel, lane.1, failure.clone(), Instant::ZERO, out);
    }
}

#[test]
fn unreachable_is_reported_once_per_outage() {
    let mut p = plan();
    let b = spec("b@h", 2);
    let mut out = vec![];
    p.want(b.clone(), Want::Overlay, Instant::ZERO, &mut out);
    out.clear();
    fail_every_lane(&mut p, DialFailure::TimedOut, &mut out);
    let n = out
        .iter()
        .filter(|o| matches!(o, PlanOutput::Unreachable { .. }))
        .count();
    assert_eq!(n, 1);
}

#[test]
fn losing_a_simultaneous_dial_is_not_an_outage() {
    // Found by the HyParView history property: the loser of a simultaneous dial was reported
    // unreachable, which dropped the messages held for the peer (a Disconnect among them) and
    // its passive entry, although the peer's own dial was coming up.
    let mut p = plan();
    let b = spec("b@h", 2);
    let mut out = vec![];
    p.want(b.clone(), Want::Overlay, Instant::ZERO, &mut out);
    out.clear();
    let race = DialFailure::Refused {
        code: RefuseCode::Simultaneous,
        detail: "simultaneous".into(),
    };
    fail_every_lane(&mut p, race, &mut out);
    assert!(
        !out.iter()
            .any(|o| matches!(o, PlanOutput::Unreachable { .. })),
        "{out:?}"
    );
    assert_eq!(p.unreachable().count(), 0);
}

#[test]
fn a_message_for_a_peer_in_an_outage_redials_at_once_and_hears_of_the_failure() {
    // Found by `sim hyparview --crash 0.95`: a node held a neighbour request for a dead peer
    // whose outage had been reported already; the peer's redial was a minute away and its
    // failure would not be reported again, so the request stayed pending and the node
    // never asked anyone else.
    let mut p = plan();
    let b = spec("b@h", 2);
    let t = DialTarget::Node(b.name().clone());
    let ttl = Duration::from_secs(10);
    let membership = ChannelName::membership();
    let mut out = vec![];
    p.want(b.clone(), Want::Transient { ttl }, Instant::ZERO, &mut out);
    p.on_dial_failed(
        &t,
        &membership,
        0,
        DialFailure::TimedOut,
        Instant::ZERO,
        &mut out,
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, PlanOutput::Unreachable { .. })));
    // Another message while the outage lasts: dialed now, not at the backed-off redial.
    out.clear();
    let later = Instant(1_000_000);
    p.want(b.clone(), Want::Transient { ttl }, later, &mut out);
    assert!(
        out.iter()
            .any(|o| matches!(o, PlanOutput::Dial(d) if d.target == t)),
        "{out:?}"
    );
    out.clear();
    p.on_dial_failed(&t, &membership, 0, DialFailure::TimedOut, later, &mut out);
    assert!(
        out.iter()
            .any(|o| matches!(o, PlanOutput::StillUnreachable { .. })),
        "{out:?}"
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, PlanOutput::Unreachable { .. })));
}

#[test]
fn a_redial_due_while_the_lane_is_not_wanted_leaves_it_ready_for_the_next_want() {
    // Found by the swarm (seed 113): the overlay stopped wanting b while a temporary want
    // kept it; the pending redial of a data lane came due and was dropped, leaving the slot
    // idle with a stale redial time, so the next overlay want never dialed it again.
    let mut p = plan();
    let b = spec("b@h", 2);
    let mut out = vec![];
    p.want(b.clone(), Want::Overlay, Instant::ZERO, &mut out);
    let ttl = Duration::from_secs(60);
    p.want(b.clone(), Want::Transient { ttl }, Instant::ZERO, &mut out);
    let t = DialTarget::Node(b.name().clone());
    let data = ChannelName::new("data").unwrap();
    p.on_dial_failed(&t, &data, 0, DialFailure::TimedOut, Instant::ZERO, &mut out);
    p.unwant(b.name(), Want::Overlay, &mut out);
    assert!(p.is_wanted(b.name()), "the temporary want keeps it");
    let due = p.next_deadline().unwrap();
    out.clear();
    p.on_tick(due, &mut out);
    assert!(dials(&out).is_empty(), "not wanted: nothing dialed");
    p.want(b.clone(), Want::Overlay, due, &mut out);
    assert!(dials(&out).contains(&"data/0".to_string()), "{out:?}");
}

#[test]
fn a_new_spec_replaces_the_old_one_while_disconnected() {
    let mut p = plan();
    let old = spec("b@h", 2);
    let new = spec("b@h", 3);
    let mut out = vec![];
    p.want(old, Want::Overlay, Instant::ZERO, &mut out);
    out.clear();
    p.want(new.clone(), Want::Overlay, Instant::ZERO, &mut out);
    // Dials in flight keep their addresses; the next dials use the new spec.
    let t = DialTarget::Node(new.name().clone());
    p.on_dial_failed(
        &t,
        &ChannelName::default_channel(),
        0,
        DialFailure::TimedOut,
        Instant::ZERO,
        &mut out,
    );
    out.clear();
    p.on_tick(Instant(u64::MAX / 2), &mut out);
    let addrs: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            PlanOutput::Dial(d) => Some(d.addrs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(addrs, vec![new.listen_addrs().to_vec()]);
}
