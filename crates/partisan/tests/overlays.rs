//! Overlays, ported from Partisan's suite (basic, leave, self-leave, rejoin, on_down,
//! client-server, HyParView high/low active and 1+11) plus bad input. Each test runs over
//! loopback TCP and over the in-memory transport with tokio's paused clock
//! (`on_both_transports!`). Every node binds port 0; every wait polls with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use partisan::{Config, MembershipEvent, Node, NodeName, SendOptions};

const WAIT: Duration = Duration::from_secs(30);

mod support;
use support::{eventually, init_tracing, raw_handshake, Net, RawPeer};

fn fast(c: &mut Config) {
    c.reconnect_min = 20;
    c.reconnect_max = 500;
    c.periodic_interval = 200;
    c.hyparview.shuffle_interval = 300;
    c.hyparview.random_promotion_interval = 150;
}

async fn start(net: &Net, name: &str, overlay: &str, tweak: impl FnOnce(&mut Config)) -> Node {
    init_tracing();
    net.builder(&format!("{name}@127.0.0.1"))
        .cookie("overlay-tests")
        .channel("data", 2)
        .configure(|c| {
            c.overlay = overlay.to_string();
            fast(c);
            tweak(c);
        })
        .start()
        .await
        .expect("node starts")
}

fn names(nodes: &[Node]) -> Vec<NodeName> {
    let mut v: Vec<NodeName> = nodes.iter().map(|n| n.name().clone()).collect();
    v.sort();
    v
}

/// Every node messages every other node through a registered inbox.
async fn all_pairs_message(nodes: &[Node]) {
    let mut inboxes: Vec<_> = nodes
        .iter()
        .map(|n| n.process_named("pairs").unwrap())
        .collect();
    for a in nodes {
        for b in nodes {
            if a.name() != b.name() {
                let to = Node::name_on(b.name(), "pairs").unwrap();
                a.send(&to, a.name().to_string(), &SendOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("{} -> {}: {e}", a.name(), b.name()));
            }
        }
    }
    for (inbox, me) in inboxes.iter_mut().zip(nodes) {
        let mut from = BTreeSet::new();
        for _ in 1..nodes.len() {
            let env = inbox.recv_timeout(WAIT).await.expect("message arrives");
            from.insert(String::from_utf8(env.payload.to_vec()).unwrap());
        }
        assert_eq!(from.len(), nodes.len() - 1, "on {}", me.name());
    }
}

async fn full_mesh(net: &Net, n: usize, prefix: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start(net, &format!("{prefix}{i}"), "full-mesh", |_| {}).await);
    }
    let seed = nodes[0].listen_addrs()[0];
    for node in &nodes[1..] {
        node.join(seed).await.unwrap();
    }
    let all = names(&nodes);
    for node in &nodes {
        let (node, all) = (node.clone(), all.clone());
        eventually("full membership everywhere", move || node.members() == all).await;
    }
    nodes
}

on_both_transports!(full_mesh_basic_six_nodes_agree_and_every_pair_can_message);
async fn full_mesh_basic_six_nodes_agree_and_every_pair_can_message(net: Net) {
    let nodes = full_mesh(&net, 6, "fm").await;
    for a in &nodes {
        for b in &nodes {
            if a.name() != b.name() {
                let (a, b) = (a.clone(), b.name().clone());
                eventually("fully connected", move || a.is_fully_connected(&b)).await;
            }
        }
    }
    all_pairs_message(&nodes).await;
    for n in &nodes {
        let s = n.status();
        assert_eq!(s.overlay, "full-mesh");
        assert_eq!(s.members.len(), 6);
        assert_eq!(s.connections.len(), 5, "{s:?}");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

on_both_transports!(full_mesh_leave_self_leave_and_rejoin);
async fn full_mesh_leave_self_leave_and_rejoin(net: Net) {
    let nodes = full_mesh(&net, 5, "lv").await;
    // leave_test: node 1 removes the last node; everyone drops it, it ends alone.
    let last = nodes[4].clone();
    nodes[1].remove(last.name()).await;
    for n in &nodes[..4] {
        let (n, gone) = (n.clone(), last.name().clone());
        eventually("removed node dropped", move || !n.is_member(&gone)).await;
    }
    let l = last.clone();
    eventually("removed node alone", move || {
        l.members() == vec![l.name().clone()]
    })
    .await;

    // self_leave_test: node 2 leaves; others drop it; it is no member of anything.
    let leaver = nodes[2].clone();
    leaver.leave().await;
    for n in [&nodes[0], &nodes[1], &nodes[3]] {
        let (n, gone) = (n.clone(), leaver.name().clone());
        eventually("leaver dropped", move || !n.is_member(&gone)).await;
    }
    assert!(leaver.members().is_empty());
    // It is not re-added by gossip still in flight: it stays out while the remaining members
    // exchange several more anti-entropy rounds (one digest each a period, so three a period
    // between them, plus the removed node's join retries to its contact).
    let remaining = [&nodes[0], &nodes[1], &nodes[3]];
    let received = || -> u64 {
        remaining
            .iter()
            .map(|n| n.stats().channels["membership"].frames_received)
            .sum()
    };
    let before = received();
    eventually("several gossip rounds after the leave", || {
        received() >= before + 16
    })
    .await;
    for n in remaining {
        assert!(
            !n.is_member(leaver.name()),
            "{} re-added the leaver",
            n.name()
        );
    }

    // rejoin_test: the leaver joins again through node 0; membership reconverges.
    leaver.join(nodes[0].listen_addrs()[0]).await.unwrap();
    let expected = names(&[
        nodes[0].clone(),
        nodes[1].clone(),
        nodes[2].clone(),
        nodes[3].clone(),
    ]);
    for n in &nodes[..4] {
        let (n, e) = (n.clone(), expected.clone());
        eventually("rejoined membership", move || n.members() == e).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

on_both_transports!(on_down_fires_when_a_node_is_killed_and_events_stream);
async fn on_down_fires_when_a_node_is_killed_and_events_stream(net: Net) {
    let nodes = full_mesh(&net, 4, "od").await;
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let victim = nodes[3].name().clone();
    let mut events = nodes[2].events();
    let _sub = nodes[2].on_down(&victim, move |_| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    let any = Arc::new(AtomicUsize::new(0));
    let a = any.clone();
    let _sub_any = nodes[1].on_down(partisan::NodeFilter::Any, move |_| {
        a.fetch_add(1, Ordering::SeqCst);
    });
    // The node that stops is the one going: it reports none of its peers down.
    let own = Arc::new(AtomicUsize::new(0));
    let o = own.clone();
    let _sub_own = nodes[3].on_down(partisan::NodeFilter::Any, move |_| {
        o.fetch_add(1, Ordering::SeqCst);
    });
    let mut own_events = nodes[3].events();
    nodes[3].shutdown().await;
    let f = fired.clone();
    eventually("on_down callback", move || f.load(Ordering::SeqCst) == 1).await;
    let a = any.clone();
    eventually("on_down(any) callback", move || {
        a.load(Ordering::SeqCst) >= 1
    })
    .await;
    let ev = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(MembershipEvent::NodeDown(n)) = events.recv().await {
                return n;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev, victim);
    assert_eq!(
        own.load(Ordering::SeqCst),
        0,
        "on_down fired at its own shutdown"
    );
    while let Ok(e) = own_events.try_recv() {
        assert!(
            !matches!(e, MembershipEvent::NodeDown(_)),
            "NodeDown at its own shutdown: {e:?}"
        );
    }
    // A failure is not a leave: the killed node is still a member of the full mesh.
    assert!(nodes[2].is_member(&victim));
    for n in &nodes[..3] {
        n.shutdown().await;
    }
}

on_both_transports!(full_mesh_node_restarted_on_a_new_port_replaces_its_old_entry);
async fn full_mesh_node_restarted_on_a_new_port_replaces_its_old_entry(net: Net) {
    let nodes = full_mesh(&net, 3, "rs").await;
    let old_addr = nodes[2].listen_addrs()[0];
    let old_creation = nodes[2].creation();
    nodes[2].shutdown().await;
    let back = start(&net, "rs2", "full-mesh", |_| {}).await;
    assert_ne!(back.listen_addrs()[0], old_addr);
    back.join(nodes[0].listen_addrs()[0]).await.unwrap();
    for n in &nodes[..2] {
        let (m, name, addr) = (n.clone(), back.name().clone(), back.listen_addrs()[0]);
        eventually("new address replaces the old entry", move || {
            let n = &m;
            let specs = n.member_specs();
            let mine: Vec<_> = specs.iter().filter(|s| s.name() == &name).collect();
            mine.len() == 1 && mine[0].listen_addrs() == [addr] && n.is_fully_connected(&name)
        })
        .await;
        assert_eq!(n.members().len(), 3);
        assert!(n.peer_creation(back.name()).unwrap() > old_creation);
    }
    back.shutdown().await;
    for n in &nodes[..2] {
        n.shutdown().await;
    }
}

on_both_transports!(client_server_two_servers_three_clients);
async fn client_server_two_servers_three_clients(net: Net) {
    let tag = |t: &'static str| move |c: &mut Config| c.tag = Some(t.to_string());
    let s1 = start(&net, "cs_s1", "client-server", tag("server")).await;
    let s2 = start(&net, "cs_s2", "client-server", tag("server")).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(start(&net, &format!("cs_c{i}"), "client-server", tag("client")).await);
    }
    s2.join(s1.listen_addrs()[0]).await.unwrap();
    for c in &clients {
        c.join(s1.listen_addrs()[0]).await.unwrap();
    }
    let mut all: Vec<Node> = vec![s1.clone(), s2.clone()];
    all.extend(clients.iter().cloned());
    let everyone = names(&all);
    for s in [&s1, &s2] {
        let (s, e) = (s.clone(), everyone.clone());
        eventually("servers see everyone", move || s.members() == e).await;
    }
    for c in &clients {
        let expected = names(&[s1.clone(), s2.clone(), c.clone()]);
        let (c, e) = (c.clone(), expected);
        eventually("clients see servers and self", move || c.members() == e).await;
    }
    // Clients never connect to each other.
    assert!(!clients[0].is_connected(clients[1].name()));
    // Forwarding between connected pairs works (server <-> client, server <-> server).
    let (s, c) = (s2.clone(), clients[1].name().clone());
    eventually("server fully connected to client", move || {
        s.is_fully_connected(&c)
    })
    .await;
    let mut inbox = clients[1].process_named("in").unwrap();
    s2.send(
        &Node::name_on(clients[1].name(), "in").unwrap(),
        "from s2",
        &SendOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        &inbox.recv_timeout(WAIT).await.unwrap().payload[..],
        b"from s2"
    );
    // A message between two clients is relayed by a server; the answer finds its way back.
    let mut c1_inbox = clients[1].process_named("peer").unwrap();
    let c0 = clients[0].process();
    for i in 0..20u8 {
        c0.send(
            &Node::name_on(clients[1].name(), "peer").unwrap(),
            vec![i],
            &SendOptions::default().with_key(7),
        )
        .await
        .expect("relayed through a server");
    }
    for i in 0..20u8 {
        let env = c1_inbox.recv_timeout(WAIT).await.unwrap();
        assert_eq!(
            env.payload[..],
            [i],
            "per-key order holds through the relay"
        );
        assert_eq!(
            env.from.as_ref(),
            Some(c0.pid()),
            "the origin is the sender, not the relay"
        );
    }
    assert!(!clients[0].is_connected(clients[1].name()));
    let mut c0 = c0;
    let req = c1_inbox.try_recv();
    assert!(req.is_none());
    clients[1]
        .send(c0.pid(), "back", &SendOptions::default())
        .await
        .unwrap();
    assert_eq!(&c0.recv_timeout(WAIT).await.unwrap().payload[..], b"back");
    for n in all {
        n.shutdown().await;
    }
}

/// HyParView active views: symmetric, connected graph, no dead node in any view.
fn check_hyparview(nodes: &[Node], max: usize) -> Result<(), String> {
    let by_name: BTreeMap<NodeName, &Node> = nodes.iter().map(|n| (n.name().clone(), n)).collect();
    for n in nodes {
        let active = n.active_view();
        if active.len() > max {
            return Err(format!("{} active view {} > {max}", n.name(), active.len()));
        }
        for p in &active {
            let Some(peer) = by_name.get(p) else {
                return Err(format!("{} has unknown/dead {p} active", n.name()));
            };
            if !peer.active_view().contains(n.name()) {
                return Err(format!("asymmetric: {} -> {p}", n.name()));
            }
        }
    }
    // Connected: BFS over active views.
    let mut seen = BTreeSet::new();
    let mut todo = vec![nodes[0].name().clone()];
    while let Some(x) = todo.pop() {
        if seen.insert(x.clone()) {
            todo.extend(by_name[&x].active_view());
        }
    }
    if seen.len() != nodes.len() {
        return Err(format!(
            "graph not connected: {} of {}",
            seen.len(),
            nodes.len()
        ));
    }
    Ok(())
}

async fn hyparview_cluster(net: &Net, prefix: &str, clients: usize, max: usize) {
    let tweak = |c: &mut Config| {
        c.hyparview.active_max_size = max;
        c.hyparview.active_min_size = max.min(3);
    };
    let server = start(net, &format!("{prefix}s"), "hyparview", tweak).await;
    let mut nodes = vec![server.clone()];
    for i in 0..clients {
        let n = start(net, &format!("{prefix}c{i}"), "hyparview", tweak).await;
        n.join(server.listen_addrs()[0]).await.unwrap();
        nodes.push(n);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check_hyparview(&nodes, max) {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // Forwarding to active-view members works.
    for n in &nodes {
        let mut inbox = n.process_named("hv").unwrap();
        for p in n.active_view() {
            let sender = nodes.iter().find(|x| x.name() == &p).unwrap();
            let (s, me) = (sender.clone(), n.name().clone());
            eventually("active peers fully connected", move || {
                s.is_fully_connected(&me)
            })
            .await;
            sender
                .send(
                    &Node::name_on(n.name(), "hv").unwrap(),
                    "x",
                    &SendOptions::default(),
                )
                .await
                .unwrap();
            inbox.recv_timeout(WAIT).await.unwrap();
        }
    }
    // A killed node disappears from every view.
    let victim = nodes.remove(nodes.len() / 2);
    let victim_name = victim.name().clone();
    victim.shutdown().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let gone = nodes
            .iter()
            .all(|n| !n.active_view().contains(&victim_name));
        match (gone, check_hyparview(&nodes, max)) {
            (true, Ok(())) => break,
            (_, r) if tokio::time::Instant::now() >= deadline => {
                panic!("victim still in a view ({gone}) or views broken: {r:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}

on_both_transports!(hyparview_high_client_one_server_eleven_clients_active_max_5);
async fn hyparview_high_client_one_server_eleven_clients_active_max_5(net: Net) {
    hyparview_cluster(&net, "hh", 11, 5).await;
}

on_both_transports!(hyparview_low_active_one_server_eleven_clients_active_max_3);
async fn hyparview_low_active_one_server_eleven_clients_active_max_3(net: Net) {
    hyparview_cluster(&net, "hl", 11, 3).await;
}

on_both_transports!(joining_another_overlay_is_refused_on_both_sides);
async fn joining_another_overlay_is_refused_on_both_sides(net: Net) {
    let fm = start(&net, "mx_fm", "full-mesh", |_| {}).await;
    let hv = start(&net, "mx_hv", "hyparview", |_| {}).await;
    let err = hv.join(fm.listen_addrs()[0]).await.unwrap_err();
    assert_eq!(
        err,
        partisan::ConnectError::OverlayMismatch {
            ours: partisan::OverlayKind::HyParView,
            theirs: partisan::OverlayKind::FullMesh,
        }
    );
    assert!(!fm.is_member(hv.name()) && !hv.is_member(fm.name()));
    let fm2 = fm.clone();
    eventually("acceptor counted the refusal", move || {
        fm2.stats().handshakes_refused >= 1
    })
    .await;
    fm.shutdown().await;
    hv.shutdown().await;
}

on_both_transports!(an_unreachable_seed_times_out_and_the_node_keeps_trying_its_seeds);
async fn an_unreachable_seed_times_out_and_the_node_keeps_trying_its_seeds(net: Net) {
    // An address nothing listens on, and no other test binds (they all use 127.0.0.1), so a
    // freed port cannot be taken by a parallel test's node.
    let dead: std::net::SocketAddr = "127.0.0.77:9".parse().unwrap();
    let live = start(&net, "sd_live", "full-mesh", |_| {}).await;
    let live_addr = live.listen_addrs()[0].to_string();
    let node = start(&net, "sd_node", "full-mesh", |c| {
        c.seeds = vec![dead.to_string(), live_addr];
    })
    .await;
    let (n, l) = (node.clone(), live.name().clone());
    eventually("joined through the live seed", move || n.is_member(&l)).await;
    let err = node
        .join_timeout(dead, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            partisan::ConnectError::Unreachable {
                kind: std::io::ErrorKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(node.is_member(live.name()), "a failed join changes nothing");
    node.shutdown().await;
    live.shutdown().await;
}

/// A raw peer `name` running `overlay`, authenticated on the membership channel.
async fn raw_peer(
    net: &Net,
    addr: std::net::SocketAddr,
    name: &str,
    overlay: partisan::OverlayKind,
) -> partisan::transport::Stream {
    raw_handshake(
        net,
        addr,
        RawPeer {
            name,
            cookie: "overlay-tests",
            overlay,
            spec_of: None,
            expect: None,
            channel: partisan::ChannelName::membership(),
            lane: 0,
        },
    )
    .await
}

on_both_transports!(malformed_or_inconsistent_overlay_messages_are_dropped_without_changing_state);
async fn malformed_or_inconsistent_overlay_messages_are_dropped_without_changing_state(net: Net) {
    use partisan::partisan_core::bytes::BytesMut;
    use partisan::partisan_core::overlay::{HvMsg, OverlayMsg, PeerInfo};
    use partisan::partisan_core::wire::{Control, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = start(&net, "bad_hv_a", "hyparview", |_| {}).await;
    let b = start(&net, "bad_hv_b", "hyparview", |_| {}).await;
    b.join(a.listen_addrs()[0]).await.unwrap();
    let (a2, bn) = (a.clone(), b.name().clone());
    eventually("b active at a", move || {
        a2.active_view() == vec![bn.clone()]
    })
    .await;
    let before = (a.active_view(), a.passive_view());

    let mut raw = raw_peer(
        &net,
        a.listen_addrs()[0],
        "raw@127.0.0.1",
        partisan::OverlayKind::HyParView,
    )
    .await;
    let victim = PeerInfo {
        spec: b.spec().clone(),
        creation: b.creation(),
        tag: None,
    };
    let frames = [
        // A join claiming to come from someone else.
        HvMsg::Join {
            peer: victim.clone(),
        },
        // A shuffle reply far larger than any sample.
        HvMsg::ShuffleReply {
            sample: vec![victim; 300],
        },
    ];
    let mut out = BytesMut::new();
    for m in frames {
        Message::Control(Control::Overlay(OverlayMsg::HyParView(m)))
            .encode_frame(&mut out, 1 << 22)
            .unwrap();
    }
    raw.writer.write_all(&out).await.unwrap();
    let a2 = a.clone();
    eventually("both rejected", move || a2.stats().overlay_rejected == 2).await;
    assert_eq!(
        (a.active_view(), a.passive_view()),
        before,
        "state unchanged"
    );

    // A control frame that does not even decode closes that connection only.
    raw.writer
        .write_all(&[0, 0, 0, 3, 5, 0xff, 0xff])
        .await
        .unwrap();
    let mut sink = [0u8; 256];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match raw.reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    assert_eq!(a.stats().bad_frames, 1);
    assert!(
        a.is_fully_connected(b.name()),
        "other connections unaffected"
    );
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(the_rng_seed_is_the_configured_one_or_drawn_at_start);
async fn the_rng_seed_is_the_configured_one_or_drawn_at_start(net: Net) {
    let seeded = net
        .builder("seeded@127.0.0.1")
        .cookie("c")
        .configure(|c| c.rng_seed = Some(42))
        .start()
        .await
        .unwrap();
    assert_eq!(seeded.rng_seed(), 42);
    let (x, y) = (
        net.builder("drawn_x@127.0.0.1")
            .cookie("c")
            .start()
            .await
            .unwrap(),
        net.builder("drawn_y@127.0.0.1")
            .cookie("c")
            .start()
            .await
            .unwrap(),
    );
    assert_ne!(x.rng_seed(), y.rng_seed(), "two draws of 64 bits collided");
    for n in [seeded, x, y] {
        n.shutdown().await;
    }
}

on_both_transports!(a_healthy_start_counts_no_refused_or_failed_handshake);
async fn a_healthy_start_counts_no_refused_or_failed_handshake(net: Net) {
    // Tie-break refusals of simultaneous dials are counted apart (`handshakes_raced`): a
    // healthy cluster shows no refusal and no failure.
    let nodes = full_mesh(&net, 6, "hs").await;
    for n in &nodes {
        let (m, others) = (n.clone(), names(&nodes));
        eventually("every lane up", move || {
            others
                .iter()
                .filter(|o| *o != m.name())
                .all(|o| m.is_fully_connected(o))
        })
        .await;
    }
    for n in &nodes {
        let s = n.stats();
        assert_eq!(
            (s.handshakes_refused, s.handshakes_failed),
            (0, 0),
            "{}: raced {}",
            n.name(),
            s.handshakes_raced
        );
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

on_both_transports!(an_unreachable_member_is_reported_and_stays_a_member_by_default);
async fn an_unreachable_member_is_reported_and_stays_a_member_by_default(net: Net) {
    let nodes = full_mesh(&net, 3, "ur").await;
    assert!(nodes[0].unreachable().is_empty());
    // The third stops without leaving: a member the others cannot reach.
    let victim = nodes[2].name().clone();
    nodes[2].shutdown().await;
    for n in &nodes[..2] {
        let (n2, v) = (n.clone(), victim.clone());
        eventually("reported unreachable", move || {
            n2.unreachable() == vec![v.clone()]
        })
        .await;
        assert!(n.is_member(&victim), "kept a member without down_after");
        assert_eq!(n.status().unreachable, vec![victim.to_string()]);
    }
    for n in &nodes[..2] {
        n.shutdown().await;
    }
}

on_both_transports!(with_down_after_an_unreachable_member_is_removed_everywhere);
async fn with_down_after_an_unreachable_member_is_removed_everywhere(net: Net) {
    // a and b remove members unreachable for 300 ms; c is the node that vanishes.
    let down = |c: &mut Config| c.down_after = 300;
    let a = start(&net, "dn_a", "full-mesh", down).await;
    let b = start(&net, "dn_b", "full-mesh", down).await;
    let c = start(&net, "dn_c", "full-mesh", |_| {}).await;
    for n in [&b, &c] {
        n.join(a.listen_addrs()[0]).await.unwrap();
    }
    let all = names(&[a.clone(), b.clone(), c.clone()]);
    for n in [&a, &b, &c] {
        let (n, all) = (n.clone(), all.clone());
        eventually("full membership", move || n.members() == all).await;
    }
    assert!(a.unreachable().is_empty());
    // c stops without leaving: for a and b it is a member they cannot reach.
    let victim = c.name().clone();
    c.shutdown().await;
    // Removed from the membership everywhere, and no longer reported.
    for n in [&a, &b] {
        let (n, v) = (n.clone(), victim.clone());
        eventually("removed after down_after", move || {
            !n.is_member(&v) && n.unreachable().is_empty()
        })
        .await;
    }
    assert!(a.status().unreachable.is_empty());
    assert!(a.stats().members_downed + b.stats().members_downed >= 1);
    for n in [a, b] {
        n.shutdown().await;
    }
}
