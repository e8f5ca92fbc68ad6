//! Engine tests, on the shared testing network (real engines end to end).

use std::time::Duration;

use crate::engine::{Answer, Command, Keepalive, Target, Waiter};
use crate::overlay::{FullMesh, FullMeshConfig, HyParViewConfig, Overlay, OverlayKind};
use crate::testing::{NetConfig, Network, Setup};
use crate::time::Instant;

fn full_mesh(nodes: u32, seed: u64) -> Setup {
    println!("seed {seed}");
    Setup::full_mesh(nodes, seed, FullMeshConfig::default())
}

fn hyparview(nodes: u32, seed: u64) -> Setup {
    println!("seed {seed}");
    Setup::hyparview(nodes, seed, HyParViewConfig::default())
}

/// Every pair of engines with a lane up holds exactly one per (channel, lane) slot, and both
/// ends agree.
fn one_connection_per_slot(net: &Network) -> Result<(), String> {
    let mut slots = std::collections::BTreeMap::new();
    for (d, a, ch, lane) in net.open_connections() {
        let key = (d.min(a), d.max(a), ch.to_string(), lane);
        *slots.entry(key).or_insert(0) += 1;
    }
    match slots.iter().find(|(_, n)| **n > 1) {
        Some((k, n)) => Err(format!("{n} connections for slot {k:?}")),
        None => Ok(()),
    }
}

#[test]
fn two_nodes_join_over_one_connection_per_lane_and_agree() {
    let mut net = Network::new(full_mesh(2, 1));
    net.command(
        1,
        Command::Join {
            target: Target::Spec(net.node(0).info.spec.clone()),
            waiter: Some(Waiter(7)),
        },
    );
    net.run_for(Duration::from_secs(2));
    let names = |i| net.engine(i).overlay().members();
    assert_eq!(names(0), names(1));
    assert_eq!(names(0).len(), 2);
    assert_eq!(
        net.node(1).answers,
        vec![(Waiter(7), Answer::Reached(net.name_of(0).clone()))]
    );
    one_connection_per_slot(&net).unwrap();
    // default and membership, one lane each.
    assert_eq!(net.open_connections().len(), 2);
    assert_eq!(net.engine(0).overlay().kind(), OverlayKind::FullMesh);
}

#[test]
fn a_silent_crash_is_detected_at_the_keepalive_timing() {
    let ka = Keepalive {
        idle: Duration::from_secs(4),
        timeout: Duration::from_secs(2),
        max_attempts: 3,
    };
    let mut setup = full_mesh(2, 2);
    setup.keepalive = Some(ka);
    setup.liveness = None;
    setup.net = NetConfig {
        silent_crashes: true,
        ..NetConfig::default()
    };
    let mut net = Network::new(setup);
    net.join(1, 0);
    net.run_for(Duration::from_secs(30));
    assert!(net.linked(0, 1));
    let crash = net.now;
    net.crash(1);
    let mut detected = None;
    while net.now < crash + Duration::from_secs(60) {
        net.run_for(Duration::from_millis(100));
        if !net.linked(0, 1) {
            detected = Some(net.now - crash);
            break;
        }
    }
    let took = detected.expect("the crash was never detected");
    // Last traffic was at most one idle period before the crash (probes answered), so the
    // lane closes between detection_time - idle and detection_time after it.
    assert!(
        took <= ka.detection_time() + Duration::from_millis(200),
        "{took:?}"
    );
    assert!(took >= ka.detection_time() - ka.idle, "{took:?}");
    assert!(net.engine(0).stats().keepalive_timeouts >= 1);
}

/// Waits (virtual time, polling every 100 ms) until no live node has an open lane to `gone`;
/// returns how long that took, or `None` after `within`.
fn until_cut_off(net: &mut Network, gone: u32, within: Duration) -> Option<Duration> {
    let start = net.now;
    while net.now < start + within {
        if net.live().iter().all(|&i| !net.linked(i, gone)) {
            return Some(net.now - start);
        }
        net.run_for(Duration::from_millis(100));
    }
    None
}

#[test]
fn liveness_finds_a_silently_vanished_host_within_ten_seconds() {
    for seed in 1..=5 {
        println!("seed {seed}");
        let mut setup = full_mesh(12, seed);
        setup.net = NetConfig {
            silent_crashes: true,
            ..NetConfig::default()
        };
        let mut net = Network::new(setup);
        for i in 1..12 {
            net.join(i, 0);
        }
        net.run_for(Duration::from_secs(30));
        assert!(
            (0..11).all(|i| net.linked(i, 11)),
            "seed {seed}: not settled"
        );
        net.crash(11);
        let took = until_cut_off(&mut net, 11, Duration::from_secs(30));
        let took = took.unwrap_or_else(|| panic!("seed {seed}: the vanished host kept lanes"));
        println!("seed {seed}: every survivor cut the vanished host after {took:?}");
        assert!(took <= Duration::from_secs(10), "seed {seed}: {took:?}");
        // Each survivor cut it on its own evidence (a rumour alone cuts nothing).
        let failures: u64 = (0..11)
            .map(|i| net.engine(i).stats().liveness_failures)
            .sum();
        assert!(failures >= 11, "seed {seed}: {failures}");
    }
}

#[test]
fn liveness_keeps_idle_healthy_peers_at_about_one_ping_per_node_per_period() {
    let mut net = Network::new(full_mesh(12, 7));
    for i in 1..12 {
        net.join(i, 0);
    }
    net.run_for(Duration::from_secs(30));
    let before: Vec<u64> = (0..12)
        .map(|i| net.engine(i).stats().liveness_pings)
        .collect();
    net.run_for(Duration::from_secs(120));
    for i in 0..12u32 {
        let s = net.engine(i).stats();
        assert_eq!(s.liveness_failures, 0, "n{i} cut a healthy peer");
        assert!((0..12).filter(|&j| j != i).all(|j| net.linked(i, j)));
        let pings = s.liveness_pings - before[i as usize];
        // One probe per 1 s period at most, fewer when peers spoke anyway.
        assert!(pings <= 121, "n{i}: {pings} pings in 120 s");
    }
}

#[test]
fn a_node_that_cannot_hear_a_peer_cuts_it_but_its_suspicion_cuts_no_one_else() {
    let mut net = Network::new(full_mesh(6, 9));
    for i in 1..6 {
        net.join(i, 0);
    }
    net.run_for(Duration::from_secs(30));
    // n1's frames no longer reach n0; everyone else hears n1 fine.
    net.partition(1, 0, false);
    net.run_for(Duration::from_secs(30));
    assert!(net.engine(0).stats().liveness_failures >= 1);
    let told: u64 = (2..6)
        .map(|i| net.engine(i).stats().liveness_rumours_received)
        .sum();
    assert!(told > 0, "n0 told no one");
    for i in 2..6u32 {
        assert_eq!(
            net.engine(i).stats().liveness_failures,
            0,
            "n{i} believed the rumour"
        );
        assert!(net.linked(i, 1), "n{i} lost n1");
    }
}

#[test]
fn keepalive_keeps_an_idle_healthy_lane_up() {
    let mut setup = full_mesh(2, 3);
    setup.keepalive = Some(Keepalive {
        idle: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        max_attempts: 2,
    });
    let mut net = Network::new(setup);
    net.join(1, 0);
    net.run_for(Duration::from_secs(120));
    assert!(net.linked(0, 1) && net.linked(1, 0));
    assert_eq!(net.engine(0).stats().keepalive_timeouts, 0);
    assert!(net.engine(0).stats().probes_sent > 0);
}

#[test]
fn identities_stay_bounded_by_wanted_and_connected_peers() {
    let mut net = Network::new(hyparview(40, 4));
    for i in 1..40 {
        net.join(i, i % 3);
        net.run_for(Duration::from_millis(200));
    }
    for _ in 0..60 {
        net.run_for(Duration::from_secs(5));
        for i in net.live() {
            let e = net.engine(i);
            for p in e.known_peers() {
                assert!(
                    e.is_wanted(p) || e.lanes().any(|(_, l)| &l.peer == p),
                    "n{i} keeps the identity of {p}, neither wanted nor connected"
                );
            }
        }
    }
    one_connection_per_slot(&net).unwrap();
}

#[test]
fn shutdown_answers_once_every_lane_is_down_and_fails_waiters() {
    let mut net = Network::new(full_mesh(3, 5));
    net.join(1, 0);
    net.join(2, 0);
    net.run_for(Duration::from_secs(5));
    assert!(net.engine(0).lanes().count() >= 4);
    net.command(
        0,
        Command::Connect {
            target: Target::Addr("10.9.9.9:1".parse().unwrap()),
            waiter: Some(Waiter(1)),
        },
    );
    net.command(
        0,
        Command::Shutdown {
            waiter: Some(Waiter(2)),
        },
    );
    assert!(net
        .node(0)
        .answers
        .iter()
        .any(|(w, a)| *w == Waiter(1) && matches!(a, Answer::Failed(_))));
    net.run_for(Duration::from_secs(5));
    assert!(net.engine(0).is_shut_down());
    assert_eq!(net.node(0).answers.last(), Some(&(Waiter(2), Answer::Done)));
    // The others learned it from the goodbyes.
    assert!(!net.linked(1, 0) && !net.linked(2, 0));
    let _ = Instant::ZERO;
}

#[test]
fn removing_this_node_drops_its_pending_joins_like_leave() {
    let mut net = Network::new(full_mesh(2, 6));
    // n1 asks to join n0, then removes itself before n0 is reached.
    net.join(1, 0);
    let me = net.name_of(1).clone();
    net.command(
        1,
        Command::Remove {
            node: me,
            waiter: None,
        },
    );
    net.run_for(Duration::from_secs(5));
    let overlay = net.engine(1).overlay_as::<FullMesh>().unwrap();
    assert!(overlay.has_left(), "n1 is back in {:?}", overlay.members());
}

#[test]
fn leaving_drops_pending_joins() {
    let mut net = Network::new(full_mesh(2, 6));
    // n1 asks to join n0, then leaves before n0 is reached.
    net.join(1, 0);
    net.leave(1);
    net.run_for(Duration::from_secs(5));
    let overlay = net.engine(1).overlay_as::<FullMesh>().unwrap();
    assert!(overlay.has_left(), "n1 is back in {:?}", overlay.members());
    assert_eq!(net.engine(0).overlay().members(), [net.name_of(0).clone()]);
}

/// One engine fed by hand: a full-mesh node `a` with lanes from `b` admitted on the
/// membership and default channels.
mod by_hand {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use rand::SeedableRng;

    use crate::connection_plan::{ConnId, DialRequest};
    use crate::engine::{
        Command, DialId, DialResult, Engine, EngineConfig, Output, Target, TransmitFailure,
    };
    use crate::id::{ChannelName, NodeName, NodeSpec};
    use crate::overlay::{FullMesh, FullMeshConfig, OverlayKind, PeerInfo};
    use crate::time::Instant;
    use crate::wire::handshake::{Identity, PeerHello};
    use crate::wire::Message;

    fn identity(name: &str, port: u16) -> Identity {
        Identity {
            spec: NodeSpec::new(
                NodeName::new(name).unwrap(),
                vec![SocketAddr::from(([127, 0, 0, 1], port))],
                BTreeMap::new(),
            )
            .unwrap(),
            creation: 1,
            overlay: OverlayKind::FullMesh,
            tag: None,
            max_frame: 1 << 20,
        }
    }

    fn engine() -> (Engine, Identity) {
        let a = identity("a@h", 1);
        let info = PeerInfo {
            spec: a.spec.clone(),
            creation: 1,
            tag: None,
        };
        let rng = |s| Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(s));
        let overlay = Box::new(FullMesh::new(info, FullMeshConfig::default(), rng(1)));
        let e = Engine::new(EngineConfig::new(a), overlay, rng(2), Instant::ZERO);
        (e, identity("b@h", 2))
    }

    fn hello(b: &Identity, channel: ChannelName) -> PeerHello {
        PeerHello {
            identity: b.clone(),
            channel,
            lane: 0,
        }
    }

    /// Control frames the engine asked for (other outputs are dropped, dials kept aside).
    fn transmits(e: &mut Engine) -> Vec<(ConnId, Message)> {
        transmits_and_dials(e).0
    }

    type Sent = Vec<(ConnId, Message)>;
    type Dials = Vec<(DialId, DialRequest)>;

    fn transmits_and_dials(e: &mut Engine) -> (Sent, Dials) {
        let (mut v, mut d) = (Vec::new(), Vec::new());
        while let Some(o) = e.poll_output() {
            match o {
                Output::Transmit { conn, msg } if matches!(msg, Message::Control(_)) => {
                    v.push((conn, msg));
                }
                Output::Dial { id, req } => d.push((id, req)),
                _ => {}
            }
        }
        (v, d)
    }

    #[test]
    fn a_message_handed_to_a_closing_lane_goes_out_on_another() {
        let (mut e, b) = engine();
        let now = Instant(1_000);
        e.handle_accept(ConnId(1), &hello(&b, ChannelName::membership()), now)
            .unwrap();
        e.handle_accept(ConnId(2), &hello(&b, ChannelName::default_channel()), now)
            .unwrap();
        transmits(&mut e);
        e.handle_command(
            Command::Join {
                target: Target::Spec(b.spec.clone()),
                waiter: None,
            },
            now,
        );
        let sent = transmits(&mut e);
        let (conn, msg) = sent.first().cloned().expect("the join goes to b");
        assert_eq!(conn, ConnId(1), "control frames prefer the membership lane");
        // The membership lane turns out to be closing: the message goes on the default lane.
        e.handle_transmit_failed(conn, msg.clone(), TransmitFailure::Closed, now);
        assert_eq!(transmits(&mut e), vec![(ConnId(2), msg)]);
        assert_eq!(e.stats().overlay_unaccounted(e.held()), 0);
    }

    #[test]
    fn held_messages_go_out_on_the_first_lane_that_opens_even_if_the_peer_never_went_down() {
        let (mut e, b) = engine();
        let now = Instant(1_000);
        e.handle_accept(ConnId(1), &hello(&b, ChannelName::membership()), now)
            .unwrap();
        transmits(&mut e);
        e.handle_command(
            Command::Join {
                target: Target::Spec(b.spec.clone()),
                waiter: None,
            },
            now,
        );
        let (mut sent, dials) = transmits_and_dials(&mut e);
        let (conn, msg) = sent.remove(0);
        // Its only lane is closing but not reported down: the message is held, nothing lost.
        e.handle_transmit_failed(conn, msg.clone(), TransmitFailure::Closed, now);
        assert!(transmits(&mut e).is_empty());
        assert_eq!(e.held_for(b.spec.name()), 1);
        // Another lane opens (the overlay's dial of the default channel) while the first is
        // still up for the planner (no peer-up): the held message goes out on it.
        let (dial, _) = dials
            .iter()
            .find(|(_, r)| r.channel.is_default())
            .expect("the overlay dials every lane of b");
        let established = DialResult::Established {
            conn: ConnId(3),
            hello: hello(&b, ChannelName::default_channel()),
        };
        e.handle_dial_result(*dial, established, now).unwrap();
        let out = transmits(&mut e);
        assert!(out.contains(&(ConnId(3), msg)), "{out:?}");
        assert_eq!(e.held(), 0);
        assert_eq!(e.stats().overlay_unaccounted(e.held()), 0);
    }
}

#[test]
fn a_signal_that_cannot_be_queued_cuts_its_lane_and_both_nodes_forget_the_peers_entries() {
    use crate::id::RemoteRef;
    use crate::signals::{ExitReason, ProcessMsg, SignalCounts};
    let mut net = Network::new(full_mesh(2, 11));
    net.join(1, 0);
    net.run_for(Duration::from_secs(5));
    assert!(net.linked(0, 1));
    let w = net.spawn_process(0);
    let t = net.spawn_process(1);
    net.monitor(0, w.id, RemoteRef::Pid(t.clone()));
    net.monitor(1, t.id, RemoteRef::Pid(w.clone()));
    net.run_for(Duration::from_secs(1));
    let held = SignalCounts {
        monitors_out: 1,
        monitors_in: 1,
        ..SignalCounts::default()
    };
    assert_eq!(net.engine(0).signal_counts(), held);
    assert_eq!(net.engine(1).signal_counts(), held);
    // Node 0's lane to node 1 is far past its bound when a signal (here a demonitor of a
    // monitor it does not hold) must go on it.
    assert!(net.stall_signal(0, 1, ProcessMsg::Demonitor { monitor: 999 }));
    assert_eq!(net.engine(0).stats().signal_lanes_cut, 1);
    assert_eq!(net.engine(0).signal_counts(), SignalCounts::default());
    let downs = |net: &Network, i| -> Vec<ExitReason> {
        let node = &net.node(i).processes;
        node.downs.iter().map(|d| d.reason.clone()).collect()
    };
    assert_eq!(downs(&net, 0), vec![ExitReason::NoConnection]);
    // Node 1 keeps its other lane (membership) open throughout, so it never sees node 0
    // down: it learns of the loss from node 0's frames.
    let deadline = net.now + Duration::from_secs(30);
    while net.engine(1).signal_counts() != SignalCounts::default() && net.now < deadline {
        net.run_for(Duration::from_millis(100));
    }
    assert_eq!(net.engine(1).signal_counts(), SignalCounts::default());
    assert_eq!(downs(&net, 1), vec![ExitReason::NoConnection]);
    let heard = net.engine(1).signal_stats();
    assert_eq!((heard.sessions_heard, heard.sessions_lost), (1, 0));
    net.run_for(Duration::from_secs(10));
    assert!(net.linked(0, 1), "the lane is made again");
}

#[test]
fn a_lane_that_carried_signals_breaking_while_another_stays_makes_both_nodes_forget() {
    use crate::id::{ChannelName, RemoteRef};
    use crate::signals::{ExitReason, SignalCounts};
    let mut net = Network::new(full_mesh(2, 12));
    net.join(1, 0);
    net.run_for(Duration::from_secs(5));
    assert!(net.linked(0, 1));
    let w = net.spawn_process(0);
    let t = net.spawn_process(1);
    // The monitor's frame is in flight on the default lane when that lane breaks: it is lost,
    // and the membership lane keeps the two nodes connected.
    net.monitor(0, w.id, RemoteRef::Pid(t));
    assert_eq!(net.engine(0).signal_counts().monitors_out, 1);
    assert!(net.break_connection(0, 1, &ChannelName::default_channel(), 0));
    let deadline = net.now + Duration::from_secs(30);
    while net.engine(0).signal_counts() != SignalCounts::default() && net.now < deadline {
        net.run_for(Duration::from_millis(100));
    }
    assert_eq!(net.engine(0).signal_counts(), SignalCounts::default());
    assert_eq!(net.engine(1).signal_counts(), SignalCounts::default());
    let downs: Vec<ExitReason> = (net.node(0).processes.downs.iter())
        .map(|d| d.reason.clone())
        .collect();
    assert_eq!(downs, vec![ExitReason::NoConnection]);
    assert_eq!(net.engine(0).stats().signal_lanes_broken, 1);
    assert!(net.linked(0, 1), "the membership lane stayed up");
}
