//! The planner's dials, redials and lane slots, by hand.

use super::*;
use crate::id::ChannelOpts;
use rand::SeedableRng;

fn spec(name: &str, port: u16, data_lanes: u16) -> NodeSpec {
    let mut ch = BTreeMap::new();
    ch.insert(
        ChannelName::new("data").unwrap(),
        ChannelOpts::with_parallelism(data_lanes),
    );
    NodeSpec::new(
        NodeName::new(name).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ch,
    )
    .unwrap()
}

fn plan(local: NodeSpec) -> ConnectionPlan {
    ConnectionPlan::new(
        local,
        Backoff::default(),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(7)),
    )
}

fn dials(out: &[PlanOutput]) -> Vec<(String, u16)> {
    out.iter()
        .filter_map(|o| match o {
            PlanOutput::Dial(d) => Some((d.channel.to_string(), d.lane)),
            _ => None,
        })
        .collect()
}

fn hello(spec: &NodeSpec, creation: Creation, channel: &str, lane: u16) -> PeerHello {
    PeerHello {
        identity: crate::wire::handshake::Identity {
            spec: spec.clone(),
            creation,
            overlay: crate::overlay::OverlayKind::FullMesh,
            tag: None,
            max_frame: 1 << 20,
        },
        channel: ChannelName::new(channel).unwrap(),
        lane,
    }
}

#[test]
fn wanting_a_spec_dials_every_lane_of_it() {
    let mut p = plan(spec("a@h", 1, 1));
    let mut out = vec![];
    p.want(spec("b@h", 2, 3), Want::User, Instant::ZERO, &mut out);
    assert_eq!(
        dials(&out),
        vec![
            ("data".into(), 0),
            ("data".into(), 1),
            ("data".into(), 2),
            ("default".into(), 0),
            ("membership".into(), 0)
        ]
    );
}

#[test]
fn address_target_learns_the_spec_then_dials_the_rest() {
    let mut p = plan(spec("a@h", 1, 1));
    let b = spec("b@h", 2, 2);
    let mut out = vec![];
    assert!(p.want_addr(b.listen_addrs()[0], Want::User, Instant::ZERO, &mut out));
    assert_eq!(dials(&out), vec![("membership".into(), 0)]);
    out.clear();
    let target = DialTarget::Addr(b.listen_addrs()[0]);
    let r = p.on_established(
        ConnId(1),
        &target,
        &hello(&b, 5, "membership", 0),
        Instant::ZERO,
        &mut out,
    );
    assert_eq!(r, Ok(None));
    assert!(matches!(&out[0], PlanOutput::Resolved { hello, .. } if hello.spec() == &b));
    assert!(matches!(&out[1], PlanOutput::PeerUp { hello } if hello.creation() == 5));
    assert_eq!(
        dials(&out),
        vec![
            ("data".into(), 0),
            ("data".into(), 1),
            ("default".into(), 0)
        ]
    );
    assert!(p.is_wanted(b.name()));
    assert!(!p.want_addr(b.listen_addrs()[0], Want::User, Instant::ZERO, &mut out));
}

#[test]
fn simultaneous_dials_keep_the_smaller_names_connection() {
    // a < b. Both dial (data, 0) at once.
    let a_spec = spec("a@h", 1, 1);
    let b_spec = spec("b@h", 2, 1);
    let mut a = plan(a_spec.clone());
    let mut b = plan(b_spec.clone());
    let mut out = vec![];
    a.want(b_spec.clone(), Want::User, Instant::ZERO, &mut out);
    b.want(a_spec.clone(), Want::User, Instant::ZERO, &mut out);
    // b's dial reaches a, which is dialing the same slot and wins the tie-break.
    assert_eq!(
        a.admit(
            ConnId(10),
            &hello(&b_spec, 2, "data", 0),
            Instant::ZERO,
            &mut out
        ),
        Err(RefuseCode::Simultaneous)
    );
    // a's dial reaches b, which is dialing too but loses: it admits a's connection.
    assert_eq!(
        b.admit(
            ConnId(20),
            &hello(&a_spec, 1, "data", 0),
            Instant::ZERO,
            &mut out
        ),
        Ok(None)
    );
    // a learns its dial was admitted.
    let t = DialTarget::Node(b_spec.name().clone());
    assert_eq!(
        a.on_established(
            ConnId(11),
            &t,
            &hello(&b_spec, 2, "data", 0),
            Instant::ZERO,
            &mut out
        ),
        Ok(None)
    );
    // b's own dial was refused: the slot stays with a's connection, no redial scheduled.
    out.clear();
    b.on_dial_failed(
        &DialTarget::Node(a_spec.name().clone()),
        &ChannelName::new("data").unwrap(),
        0,
        DialFailure::TimedOut,
        Instant::ZERO,
        &mut out,
    );
    assert!(out.is_empty());
    let mut out = vec![];
    b.on_tick(Instant(10_000_000), &mut out);
    assert!(
        dials(&out).is_empty(),
        "slot is up, nothing to redial: {out:?}"
    );
}

#[test]
fn newer_creation_replaces_older_connections_and_older_is_refused() {
    let a_spec = spec("a@h", 1, 1);
    let b_spec = spec("b@h", 2, 2);
    let mut a = plan(a_spec);
    let mut out = vec![];
    a.admit(
        ConnId(1),
        &hello(&b_spec, 5, "data", 0),
        Instant::ZERO,
        &mut out,
    )
    .unwrap();
    a.admit(
        ConnId(2),
        &hello(&b_spec, 5, "data", 1),
        Instant::ZERO,
        &mut out,
    )
    .unwrap();
    out.clear();
    // b restarts (creation 6) and dials lane 0 again.
    assert_eq!(
        a.admit(
            ConnId(3),
            &hello(&b_spec, 6, "data", 0),
            Instant::ZERO,
            &mut out
        ),
        Ok(Some(ConnId(1)))
    );
    assert!(out.contains(&PlanOutput::Close {
        conn: ConnId(2),
        reason: CloseReason::StaleCreation
    }));
    assert_eq!(
        a.admit(
            ConnId(4),
            &hello(&b_spec, 5, "data", 1),
            Instant::ZERO,
            &mut out
        ),
        Err(RefuseCode::StaleCreation)
    );
}

#[test]
fn a_permanent_failure_gives_up_only_on_a_node_never_reached() {
    let (b_spec, c_spec) = (spec("b@h", 2, 1), spec("c@h", 3, 1));
    let mut a = plan(spec("a@h", 1, 1));
    let mut out = vec![];
    let data = ChannelName::new("data").unwrap();
    let n = |s: &str| NodeName::new(s).unwrap();
    let wrong = || DialFailure::WrongNode {
        expected: n("x@h"),
        got: Some(n("y@h")),
    };
    // c was never reached: a permanent failure gives it up.
    a.want(c_spec.clone(), Want::User, Instant::ZERO, &mut out);
    let tc = DialTarget::Node(c_spec.name().clone());
    out.clear();
    a.on_dial_failed(&tc, &data, 0, wrong(), Instant::ZERO, &mut out);
    assert!(
        out.iter().any(|o| matches!(o, PlanOutput::GaveUp { .. })),
        "{out:?}"
    );
    assert!(!a.is_wanted(c_spec.name()));
    // b was connected, then lost; its address now answers with another node: redialed.
    a.want(b_spec.clone(), Want::User, Instant::ZERO, &mut out);
    let tb = DialTarget::Node(b_spec.name().clone());
    a.on_established(
        ConnId(1),
        &tb,
        &hello(&b_spec, 1, "data", 0),
        Instant::ZERO,
        &mut out,
    )
    .unwrap();
    a.on_closed(ConnId(1), b_spec.name(), &data, 0, Instant::ZERO, &mut out);
    let at = a.next_deadline().unwrap();
    a.on_tick(at, &mut out);
    out.clear();
    a.on_dial_failed(&tb, &data, 0, wrong(), at, &mut out);
    assert!(
        !out.iter().any(|o| matches!(o, PlanOutput::GaveUp { .. })),
        "{out:?}"
    );
    assert!(a.is_wanted(b_spec.name()));
    let next = a.next_deadline().unwrap();
    assert!(next > at);
    a.on_tick(next, &mut out);
    assert_eq!(dials(&out), vec![("data".into(), 0)]);
}

#[test]
fn lost_lanes_are_redialed_with_growing_backoff_while_wanted() {
    let b_spec = spec("b@h", 2, 1);
    let mut a = plan(spec("a@h", 1, 1));
    let mut out = vec![];
    a.want(b_spec.clone(), Want::User, Instant::ZERO, &mut out);
    let t = DialTarget::Node(b_spec.name().clone());
    let data = ChannelName::new("data").unwrap();
    a.on_established(
        ConnId(1),
        &t,
        &hello(&b_spec, 1, "data", 0),
        Instant::ZERO,
        &mut out,
    )
    .unwrap();
    out.clear();
    a.on_closed(ConnId(1), b_spec.name(), &data, 0, Instant::ZERO, &mut out);
    let first = a.next_deadline().unwrap();
    assert!(first.0 >= 75_000 && first.0 <= 125_000, "{first:?}");
    a.on_tick(first, &mut out);
    assert_eq!(dials(&out), vec![("data".into(), 0)]);
    // Failing again backs off further.
    let mut last = first;
    for _ in 0..6 {
        a.on_dial_failed(&t, &data, 0, DialFailure::TimedOut, last, &mut out);
        let next = a.next_deadline().unwrap();
        assert!(next > last);
        last = next;
        a.on_tick(next, &mut out);
    }
    assert!(last - first <= Duration::from_secs(30));
    // Unwanted: nothing more is dialed.
    a.unwant(b_spec.name(), Want::User, &mut out);
    a.on_dial_failed(&t, &data, 0, DialFailure::TimedOut, last, &mut out);
    out.clear();
    a.on_tick(Instant(u64::MAX), &mut out);
    assert!(dials(&out).is_empty());
}

#[test]
fn own_address_is_not_a_target_and_permanent_failures_give_up() {
    let a_spec = spec("a@h", 1, 1);
    let mut a = plan(a_spec.clone());
    let mut out = vec![];
    assert!(!a.want_addr(
        a_spec.listen_addrs()[0],
        Want::User,
        Instant::ZERO,
        &mut out
    ));
    let addr: SocketAddr = "127.0.0.9:9".parse().unwrap();
    assert!(a.want_addr(addr, Want::User, Instant::ZERO, &mut out));
    out.clear();
    a.on_dial_failed(
        &DialTarget::Addr(addr),
        &ChannelName::default_channel(),
        0,
        DialFailure::SelfConnect,
        Instant::ZERO,
        &mut out,
    );
    assert!(matches!(out[0], PlanOutput::GaveUp { .. }));
    assert_eq!(a.pending_addrs().count(), 0);
}

#[test]
fn failing_dials_are_reported_at_the_first_and_every_tenfold_failure_with_the_last_cause() {
    let a_spec = spec("a@h", 1, 1);
    let mut a = plan(a_spec);
    let mut out = vec![];
    let addr: SocketAddr = "127.0.0.9:9".parse().unwrap();
    let target = DialTarget::Addr(addr);
    assert!(a.want_addr(addr, Want::User, Instant::ZERO, &mut out));
    assert_eq!(a.last_failure(&target), None);
    let refused = DialFailure::Unreachable {
        kind: std::io::ErrorKind::ConnectionRefused,
        detail: "connection refused".into(),
    };
    let mut reported = vec![];
    let mut now = Instant::ZERO;
    for _ in 0..120 {
        out.clear();
        let failure = if reported.len() >= 2 {
            DialFailure::TimedOut
        } else {
            refused.clone()
        };
        let lane = ChannelName::membership();
        a.on_dial_failed(&target, &lane, 0, failure, now, &mut out);
        for o in &out {
            if let PlanOutput::DialFailing { failures, .. } = o {
                reported.push(*failures);
            }
        }
        now = a.next_deadline().unwrap();
        a.on_tick(now, &mut out);
    }
    assert_eq!(reported, vec![1, 10, 100]);
    // The latest cause is kept for a connect that times out to report.
    assert_eq!(a.last_failure(&target), Some(&DialFailure::TimedOut));
    // A wrong cookie cannot heal: the address is given up at once, with the cause.
    out.clear();
    a.on_dial_failed(
        &target,
        &ChannelName::membership(),
        0,
        DialFailure::BadCookie,
        now,
        &mut out,
    );
    assert!(
        matches!(
            &out[..],
            [PlanOutput::GaveUp {
                reason: DialFailure::BadCookie,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(a.pending_addrs().count(), 0);
    assert_eq!(a.last_failure(&target), None);
}
