//! The transport: lanes, channels, ordering, authentication, bad input, incarnations. Each
//! test runs over loopback TCP and over the in-memory transport with tokio's paused clock
//! (`on_both_transports!`). Every node binds port 0 unless it restarts on its own address;
//! every wait polls with a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use partisan::transport::Stream;
use partisan::{
    ChannelName, ConnectError, MemoryTransport, Node, NodeBuilder, Pid, RemoteRef, SendError,
    SendOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

mod support;
use support::{eventually, init_tracing, raw_handshake, Net, RawPeer};

async fn node(net: &Net, name: &str, cookie: &str) -> Node {
    init_tracing();
    net.builder(&format!("{name}@127.0.0.1"))
        .listen("127.0.0.1:0")
        .channel("data", 4)
        .channel("gossip", 4)
        .parallelism(4)
        .cookie(cookie)
        .configure(|c| c.reconnect_min = 20)
        .start()
        .await
        .expect("node starts")
}

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

on_both_transports!(three_nodes_fully_connect_and_message_on_every_channel);
async fn three_nodes_fully_connect_and_message_on_every_channel(net: Net) {
    let nodes = [
        node(&net, "n1", "c").await,
        node(&net, "n2", "c").await,
        node(&net, "n3", "c").await,
    ];
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let name = a.connect(b.listen_addrs()[0]).await.unwrap();
            assert_eq!(&name, b.name());
        }
    }
    for a in &nodes {
        for b in &nodes {
            if a.name() != b.name() {
                let (a, b) = (a.clone(), b.name().clone());
                eventually("all lanes up", || a.is_fully_connected(&b)).await;
            }
        }
    }
    // Every lane of every channel: 4 data + 4 gossip + 4 default + 1 membership = 13 per peer,
    // one connection each (no duplicates from both sides dialing).
    for a in &nodes {
        let lanes = a.lanes();
        let per_peer: BTreeMap<String, usize> = lanes.iter().fold(BTreeMap::new(), |mut m, l| {
            *m.entry(l.node.clone()).or_default() += l.up;
            m
        });
        assert_eq!(per_peer.len(), 2, "{lanes:?}");
        assert!(per_peer.values().all(|&n| n == 13), "{lanes:?}");
    }
    let mut inboxes: Vec<_> = nodes
        .iter()
        .map(|n| n.process_named("inbox").unwrap())
        .collect();
    let channels = ["default", "data", "gossip", "membership"];
    let per_pair = 50;
    for a in &nodes {
        let sender = a.process();
        for b in &nodes {
            if a.name() == b.name() {
                continue;
            }
            let to = Node::name_on(b.name(), "inbox").unwrap();
            for c in channels {
                for i in 0..per_pair {
                    let body = format!("{}|{}|{}", a.name(), c, i);
                    sender
                        .send(&to, body, &SendOptions::on(&ch(c)))
                        .await
                        .unwrap();
                }
            }
        }
    }
    for (inbox, me) in inboxes.iter_mut().zip(&nodes) {
        let mut got = BTreeMap::<(String, String), usize>::new();
        for _ in 0..(2 * channels.len() * per_pair) {
            let env = inbox.recv_timeout(WAIT).await.expect("message arrives");
            let text = String::from_utf8(env.payload.to_vec()).unwrap();
            let parts: Vec<&str> = text.split('|').collect();
            assert_eq!(
                env.from.as_ref().unwrap().node.as_str(),
                parts[0],
                "sender pid travels with the message"
            );
            *got.entry((parts[0].to_string(), parts[1].to_string()))
                .or_default() += 1;
        }
        assert_eq!(got.len(), 2 * channels.len(), "on {}: {got:?}", me.name());
        assert!(got.values().all(|&n| n == per_pair));
        // Traffic went over the channel it was sent on.
        let stats = me.stats();
        for c in channels {
            assert!(
                stats.channels[c].frames_received >= 2 * per_pair as u64,
                "{c}: {stats:?}"
            );
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

on_both_transports!(partition_key_keeps_per_key_order_over_ten_thousand_messages);
async fn partition_key_keeps_per_key_order_over_ten_thousand_messages(net: Net) {
    let a = node(&net, "pk_a", "c").await;
    let b = node(&net, "pk_b", "c").await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    assert!(a.wait_fully_connected(b.name(), WAIT).await);
    let mut inbox = b.process_named("sink").unwrap();
    let to = Node::name_on(b.name(), "sink").unwrap();
    let keys = 8u64;
    let total = 10_000u64;
    let data = ch("data");
    let sender = a.process();
    for i in 0..total {
        let key = i % keys;
        let mut body = key.to_be_bytes().to_vec();
        body.extend_from_slice(&i.to_be_bytes());
        sender
            .send(&to, body, &SendOptions::on(&data).with_key(key))
            .await
            .unwrap();
    }
    let mut last = vec![None::<u64>; keys as usize];
    for _ in 0..total {
        let env = inbox.recv_timeout(WAIT).await.unwrap();
        let key = u64::from_be_bytes(env.payload[..8].try_into().unwrap());
        let seq = u64::from_be_bytes(env.payload[8..16].try_into().unwrap());
        if let Some(prev) = last[key as usize] {
            assert!(seq > prev, "key {key}: {seq} arrived after {prev}");
        }
        last[key as usize] = Some(seq);
    }
    assert!(last.iter().all(|l| l.is_some()));
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(wrong_cookie_is_refused_and_the_node_keeps_serving);
async fn wrong_cookie_is_refused_and_the_node_keeps_serving(net: Net) {
    let a = node(&net, "ck_a", "right").await;
    let intruder = node(&net, "ck_x", "wrong").await;
    let friend = node(&net, "ck_b", "right").await;
    // Answered at once (not after the timeout), with the cause, and not retried: nothing is
    // left pending to cancel.
    let err = intruder
        .connect_timeout(a.listen_addrs()[0], WAIT * 3)
        .await
        .unwrap_err();
    assert_eq!(err, ConnectError::BadCookie);
    assert!(!err.is_retrying());
    assert!(!intruder.cancel_connect(a.listen_addrs()[0]).await);
    assert!(!a.is_connected(intruder.name()));
    assert!(a.nodes().is_empty());
    eventually("refusals counted", || a.stats().handshakes_refused > 0).await;
    // The node still serves peers holding the cookie.
    assert_eq!(
        &friend.connect(a.listen_addrs()[0]).await.unwrap(),
        a.name()
    );
    let mut inbox = a.process_named("inbox").unwrap();
    friend
        .send(
            &Node::name_on(a.name(), "inbox").unwrap(),
            "hi",
            &SendOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(&inbox.recv_timeout(WAIT).await.unwrap().payload[..], b"hi");
    for n in [a, intruder, friend] {
        n.shutdown().await;
    }
}

/// Opens a raw TCP connection, sends `bytes` (then half-closes it when `eof`), and waits until
/// the node closes it.
async fn raw_garbage(net: &Net, addr: std::net::SocketAddr, bytes: &[u8], eof: bool) {
    let mut s = net.dial(addr).await.unwrap();
    s.writer.write_all(bytes).await.unwrap();
    if eof {
        s.writer.shutdown().await.unwrap();
    }
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match s.reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "node must close a connection that sent {bytes:?}"
    );
}

on_both_transports!(bad_bytes_close_only_their_own_connection);
async fn bad_bytes_close_only_their_own_connection(net: Net) {
    let a = node(&net, "bad_a", "c").await;
    init_tracing();
    let b = net
        .builder("bad_b@127.0.0.1")
        .channel("data", 4)
        .cookie("c")
        .configure(|c| c.handshake_timeout = 300)
        .start()
        .await
        .unwrap();
    a.connect(b.listen_addrs()[0]).await.unwrap();
    assert!(a.wait_fully_connected(b.name(), WAIT).await);
    let mut inbox = b.process_named("inbox").unwrap();
    let to = Node::name_on(b.name(), "inbox").unwrap();
    let addr = b.listen_addrs()[0];

    // Random bytes, a truncated frame, an oversized length prefix, and a valid handshake
    // prefix followed by garbage.
    let mut rng_bytes = [0u8; 300];
    for (i, x) in rng_bytes.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    raw_garbage(&net, addr, &rng_bytes, false).await;
    // A truncated frame: closed at the peer's EOF, or at the handshake timeout if it lingers.
    raw_garbage(&net, addr, &[0, 0, 0, 50, b'P', b'T'], true).await;
    raw_garbage(&net, addr, &[0, 0, 0, 50, b'P', b'T'], false).await;
    raw_garbage(&net, addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3], false).await;
    raw_garbage(
        &net,
        addr,
        &[0, 0, 0, 8, b'P', b'T', b'S', b'N', 0, 1, 0xfe, 0xfe],
        false,
    )
    .await;

    // The established connections were not disturbed and the node still accepts new peers.
    assert!(a.is_fully_connected(b.name()));
    a.send(&to, "still here", &SendOptions::on(&ch("data")))
        .await
        .unwrap();
    assert_eq!(
        &inbox.recv_timeout(WAIT).await.unwrap().payload[..],
        b"still here"
    );
    let c = node(&net, "bad_c", "c").await;
    assert_eq!(&c.connect(addr).await.unwrap(), b.name());
    assert!(b.stats().handshakes_refused + b.stats().handshakes_failed >= 5);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A raw peer named `name` authenticated to `to` on `data` lane `lane`.
async fn raw_authenticated(net: &Net, to: &Node, name: &str, cookie: &str, lane: u16) -> Stream {
    raw_handshake(
        net,
        to.listen_addrs()[0],
        RawPeer {
            name: &format!("{name}@127.0.0.1"),
            cookie,
            overlay: partisan::OverlayKind::FullMesh,
            spec_of: Some(to.spec()),
            expect: Some(to.name().clone()),
            channel: ch("data"),
            lane,
        },
    )
    .await
}

/// Waits until the node closes `s` (EOF or reset), reading and discarding what it sends.
async fn closed_by_peer(mut s: Stream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

on_both_transports!(malformed_frame_after_handshake_closes_that_connection_only);
async fn malformed_frame_after_handshake_closes_that_connection_only(net: Net) {
    // Authenticated peers that then send an oversized frame, and an undecodable one.
    let a = net
        .builder("mf_a@127.0.0.1")
        .listen("127.0.0.1:0")
        .cookie("c")
        .configure(|c| {
            c.max_frame_size = 4096;
            c.reconnect_min = 20;
        })
        .channel("data", 2)
        .start()
        .await
        .unwrap();
    let b = node(&net, "mf_b", "c").await;
    b.connect(a.listen_addrs()[0]).await.unwrap();
    assert!(b.wait_fully_connected(a.name(), WAIT).await);
    let mut inbox = a.process_named("inbox").unwrap();
    let to = Node::name_on(a.name(), "inbox").unwrap();

    let mut oversized = raw_authenticated(&net, &a, "mf_raw1", "c", 0).await;
    oversized
        .writer
        .write_all(&[0, 0, 0x27, 0x10, 1, 2, 3])
        .await
        .unwrap();
    assert!(
        closed_by_peer(oversized).await,
        "oversized frame not refused"
    );
    let mut garbage = raw_authenticated(&net, &a, "mf_raw2", "c", 1).await;
    garbage
        .writer
        .write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .await
        .unwrap();
    assert!(
        closed_by_peer(garbage).await,
        "undecodable frame not refused"
    );
    eventually("bad frames counted", || a.stats().bad_frames == 2).await;

    // The well-behaved peer's lanes were untouched and still deliver.
    assert!(b.is_fully_connected(a.name()));
    for key in 0..2u64 {
        b.send(&to, "ok", &SendOptions::on(&ch("data")).with_key(key))
            .await
            .unwrap();
        assert_eq!(&inbox.recv_timeout(WAIT).await.unwrap().payload[..], b"ok");
    }
    assert_eq!(b.stats().connections_closed, 0);
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_pid_from_a_restarted_nodes_earlier_creation_is_rejected);
async fn a_pid_from_a_restarted_nodes_earlier_creation_is_rejected(net: Net) {
    let a = node(&net, "re_a", "c").await;
    let b1 = node(&net, "re_b", "c").await;
    let addr = b1.listen_addrs()[0];
    a.connect(addr).await.unwrap();
    let p1 = b1.process();
    let old_pid: Pid = p1.pid().clone();
    a.send(&old_pid, "x", &SendOptions::default())
        .await
        .unwrap();
    b1.shutdown().await;
    drop(p1);
    // Same name, same address, new incarnation; a keeps redialing it.
    let b2 = net
        .builder("re_b@127.0.0.1")
        .listen(&addr.to_string())
        .channel("data", 4)
        .channel("gossip", 4)
        .parallelism(4)
        .cookie("c")
        .start()
        .await
        .unwrap();
    assert!(b2.creation() > old_pid.creation);
    let (a2, b2name, b2c) = (a.clone(), b2.name().clone(), b2.creation());
    eventually("reconnected to the new run", || {
        a2.peer_creation(&b2name) == Some(b2c)
    })
    .await;
    let err = a
        .send(&old_pid, "x", &SendOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err, SendError::Stale(RemoteRef::Pid(old_pid.clone())));
    // Locally too: the new run rejects the old pid without touching the network.
    let err = b2
        .send(&old_pid, "x", &SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Stale(_)));
    assert!(a.stats().stale_pid_rejected >= 1);
    a.shutdown().await;
    b2.shutdown().await;
}

on_both_transports!(simultaneous_connects_keep_exactly_one_connection_per_lane);
async fn simultaneous_connects_keep_exactly_one_connection_per_lane(net: Net) {
    let a = node(&net, "sim_a", "c").await;
    let b = node(&net, "sim_b", "c").await;
    let (ra, rb) = tokio::join!(a.connect(b.spec().clone()), b.connect(a.spec().clone()));
    ra.unwrap();
    rb.unwrap();
    assert!(
        a.wait_fully_connected(b.name(), WAIT).await,
        "{:?} {:?} {:?}",
        a.lanes(),
        a.spec(),
        b.spec()
    );
    assert!(b.wait_fully_connected(a.name(), WAIT).await);
    // Both sides agree: 13 lanes, and the surviving connections are the same 13 sockets.
    let up = |n: &Node| n.lanes().iter().map(|l| l.up).sum::<usize>();
    eventually("one connection per slot", || {
        up(&a) == 13
            && up(&b) == 13
            && a.stats().connections_opened - a.stats().connections_closed == 13
            && b.stats().connections_opened - b.stats().connections_closed == 13
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(local_sends_never_touch_the_network_and_replies_reach_the_sender);
async fn local_sends_never_touch_the_network_and_replies_reach_the_sender(net: Net) {
    let a = node(&net, "loc_a", "c").await;
    let b = node(&net, "loc_b", "c").await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let mut server = a.process_named("echo").unwrap();
    let mut client = a.process();
    client
        .send(
            &Node::name_on(a.name(), "echo").unwrap(),
            "ping",
            &SendOptions::default(),
        )
        .await
        .unwrap();
    let req = server.recv_timeout(WAIT).await.unwrap();
    assert_eq!(req.from.as_ref(), Some(client.pid()));
    server
        .reply(&req, "pong", &SendOptions::default())
        .await
        .unwrap();
    assert_eq!(
        &client.recv_timeout(WAIT).await.unwrap().payload[..],
        b"pong"
    );
    let sent: u64 = a.stats().channels.values().map(|c| c.frames_sent).sum();
    assert_eq!(
        sent, 0,
        "local traffic must not be written to any connection"
    );

    // Remote request/response with an alias as the reply tag.
    let mut remote = b.process_named("svc").unwrap();
    let tag = client.alias();
    client
        .send_typed(
            &Node::name_on(b.name(), "svc").unwrap(),
            &("question", tag.clone()),
            &SendOptions::default(),
        )
        .await
        .unwrap();
    let req = remote.recv_timeout(WAIT).await.unwrap();
    let (q, reply_to): (String, partisan::Ref) = req.decode().unwrap();
    assert_eq!(q, "question");
    remote
        .send(&reply_to, "answer", &SendOptions::default())
        .await
        .unwrap();
    let ans = client.recv_timeout(WAIT).await.unwrap();
    assert_eq!(ans.via.as_ref(), Some(&tag));
    assert_eq!(ans.from.as_ref(), Some(remote.pid()));
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(undeliverable_sends_return_errors);
async fn undeliverable_sends_return_errors(net: Net) {
    let a = node(&net, "err_a", "c").await;
    let nobody = partisan::NodeName::new("ghost@127.0.0.1").unwrap();
    let to = Node::name_on(&nobody, "x").unwrap();
    assert_eq!(
        a.send(&to, "x", &SendOptions::default()).await,
        Err(SendError::NotConnected(nobody.clone()))
    );
    let local = Node::name_on(a.name(), "missing").unwrap();
    assert!(matches!(
        a.send(&local, "x", &SendOptions::default()).await,
        Err(SendError::NoProcess(_))
    ));
    let b = node(&net, "err_b", "c").await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let remote = Node::name_on(b.name(), "x").unwrap();
    let huge = Bytes::from(vec![0u8; 9 * 1024 * 1024]);
    assert!(matches!(
        a.send(&remote, huge, &SendOptions::default()).await,
        Err(SendError::TooLarge { .. })
    ));
    let unknown = ch("nope");
    let opts = SendOptions::on(&unknown);
    // With fallback (default) an unknown channel goes over the default channel.
    a.send(&remote, "x", &opts).await.unwrap();
    // Connecting to our own address is refused at once.
    assert!(matches!(
        a.connect(a.listen_addrs()[0]).await,
        Err(ConnectError::SelfConnect(_))
    ));
    a.shutdown().await;
    // A stopped node refuses every send, local or remote, with one clear error.
    let here = Node::name_on(a.name(), "x").unwrap();
    for to in [&remote, &here] {
        assert!(matches!(
            a.send(to, "late", &SendOptions::default()).await,
            Err(SendError::Closed)
        ));
    }
    b.shutdown().await;
}

on_both_transports!(dialing_a_spec_whose_address_answers_with_another_name_gives_up);
async fn dialing_a_spec_whose_address_answers_with_another_name_gives_up(net: Net) {
    let a = node(&net, "wn_a", "c").await;
    let b = node(&net, "wn_b", "c").await;
    let liar = partisan::NodeSpec::new(
        partisan::NodeName::new("wn_z@127.0.0.1").unwrap(),
        b.listen_addrs().to_vec(),
        Default::default(),
    )
    .unwrap();
    let err = a.connect(liar).await.unwrap_err();
    assert_eq!(
        err,
        ConnectError::WrongNode {
            expected: partisan::NodeName::new("wn_z@127.0.0.1").unwrap(),
            got: None,
        }
    );
    assert!(a.nodes().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(another_protocol_version_is_refused_with_a_reason);
async fn another_protocol_version_is_refused_with_a_reason(net: Net) {
    let a = node(&net, "ver_a", "c").await;
    let mut s = net.dial(a.listen_addrs()[0]).await.unwrap();
    // A handshake frame of a future version 9: magic, version, then anything.
    let body = [b'P', b'T', b'S', b'N', 0, 9, 1, 2, 3];
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.writer.write_all(&frame).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, s.reader.read_to_end(&mut reply))
        .await
        .expect("node answers and closes")
        .unwrap();
    let err = partisan::partisan_core::wire::handshake::decode(&reply[4..]).unwrap_err();
    assert!(
        matches!(
            err,
            partisan::partisan_core::wire::handshake::HandshakeError::Refused {
                code: partisan::partisan_core::wire::handshake::RefuseCode::Version,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 9"), "{err}");
    assert_eq!(a.stats().handshakes_refused, 1);
    a.shutdown().await;
}

on_both_transports!(mailboxes_are_bounded_in_bytes_as_well_as_messages);
async fn mailboxes_are_bounded_in_bytes_as_well_as_messages(net: Net) {
    init_tracing();
    let a = net
        .builder("mb_a@127.0.0.1")
        .cookie("c")
        .configure(|c| c.mailbox_bytes = 1 << 20)
        .start()
        .await
        .unwrap();
    let mut inbox = a.process_named("big").unwrap();
    let to = Node::name_on(a.name(), "big").unwrap();
    let chunk = Bytes::from(vec![0u8; 300 * 1024]);
    for _ in 0..3 {
        a.try_send(&to, chunk.clone(), &SendOptions::default())
            .unwrap();
    }
    assert!(matches!(
        a.try_send(&to, chunk.clone(), &SendOptions::default()),
        Err(SendError::Full(_))
    ));
    // A waiting send completes once the process receives (bytes are given back on receipt).
    let (a2, to2, c2) = (a.clone(), to.clone(), chunk.clone());
    let waiting = tokio::spawn(async move { a2.send(&to2, c2, &SendOptions::default()).await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    inbox.recv_timeout(WAIT).await.unwrap();
    waiting.await.unwrap().unwrap();
    // One message larger than the whole bound still gets into an empty mailbox.
    for _ in 0..3 {
        inbox.recv_timeout(WAIT).await.unwrap();
    }
    a.send(
        &to,
        Bytes::from(vec![1u8; 3 << 20]),
        &SendOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        inbox.recv_timeout(WAIT).await.unwrap().payload.len(),
        3 << 20
    );
    // A sender waiting for room is released with an error when the process ends.
    for _ in 0..4 {
        let _ = a.try_send(&to, chunk.clone(), &SendOptions::default());
    }
    let (a3, to3, c3) = (a.clone(), to.clone(), chunk.clone());
    let blocked = tokio::spawn(async move { a3.send(&to3, c3, &SendOptions::default()).await });
    tokio::task::yield_now().await;
    assert!(!blocked.is_finished());
    drop(inbox);
    let res = tokio::time::timeout(WAIT, blocked)
        .await
        .expect("the waiting send ends with the process")
        .unwrap();
    assert!(res.is_err(), "{res:?}");
    a.shutdown().await;
}

on_both_transports!(a_receiver_blocked_on_a_full_mailbox_keeps_its_connection_alive);
async fn a_receiver_blocked_on_a_full_mailbox_keeps_its_connection_alive(net: Net) {
    init_tracing();
    // Keepalive declares a silent link dead after about 150 ms.
    let quick = |c: &mut partisan::Config| {
        c.connection_ping.idle_timeout = 50;
        c.connection_ping.timeout = 50;
        c.connection_ping.max_attempts = 2;
        c.mailbox_capacity = 4;
    };
    let start = |name: &str| {
        net.builder(&format!("{name}@127.0.0.1"))
            .listen("127.0.0.1:0")
            .cookie("slow")
            .configure(quick)
            .start()
    };
    let (a, b) = (
        start("slow_a").await.unwrap(),
        start("slow_b").await.unwrap(),
    );
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let mut inbox = b.process_named("slow").unwrap();
    let to = Node::name_on(b.name(), "slow").unwrap();
    let total = 64u32;
    let (a2, to2) = (a.clone(), to.clone());
    let sender = tokio::spawn(async move {
        for i in 0..total {
            let body = Bytes::copy_from_slice(&i.to_be_bytes());
            a2.send(&to2, body, &SendOptions::default()).await.unwrap();
        }
    });
    // The receiver does not read for many keepalive periods; its reader waits for mailbox
    // room meanwhile. This sleep is the condition under test, not a wait for one.
    let first = inbox.recv_timeout(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut got = vec![u32::from_be_bytes(first.payload[..].try_into().unwrap())];
    while got.len() < total as usize {
        let m = inbox.recv_timeout(WAIT).await.unwrap();
        got.push(u32::from_be_bytes(m.payload[..].try_into().unwrap()));
    }
    sender.await.unwrap();
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    assert_eq!(a.stats().connections_closed, 0, "{:?}", a.stats());
    assert_eq!(b.stats().connections_closed, 0, "{:?}", b.stats());
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_dial_skips_an_address_that_answers_with_another_node);
async fn a_dial_skips_an_address_that_answers_with_another_node(net: Net) {
    let a = node(&net, "skip_a", "c").await;
    let (x, y) = (
        node(&net, "skip_x", "c").await,
        node(&net, "skip_y", "c").await,
    );
    // Addresses are tried in order: the one listed first answers as another node.
    let (liar, target) = if x.listen_addrs()[0] < y.listen_addrs()[0] {
        (x, y)
    } else {
        (y, x)
    };
    let spec = partisan::NodeSpec::new(
        target.name().clone(),
        vec![liar.listen_addrs()[0], target.listen_addrs()[0]],
        target.spec().channels().clone(),
    )
    .unwrap();
    assert_eq!(spec.listen_addrs()[0], liar.listen_addrs()[0]);
    assert_eq!(&a.connect(spec).await.unwrap(), target.name());
    assert_eq!(a.nodes(), vec![target.name().clone()]);
    for n in [a, liar, target] {
        n.shutdown().await;
    }
}

on_both_transports!(nothing_larger_than_the_peer_accepts_is_sent);
async fn nothing_larger_than_the_peer_accepts_is_sent(net: Net) {
    init_tracing();
    let small = net
        .builder("frame_small@127.0.0.1")
        .listen("127.0.0.1:0")
        .cookie("c")
        .configure(|c| c.max_frame_size = 64 * 1024)
        .start()
        .await
        .unwrap();
    let big = node(&net, "frame_big", "c").await;
    big.connect(small.listen_addrs()[0]).await.unwrap();
    let mut inbox = small.process_named("in").unwrap();
    let to = Node::name_on(small.name(), "in").unwrap();
    // Within the big node's own limit, beyond the small node's: refused at the sender, and
    // the connection, with what else it carries, survives.
    let err = big
        .send(
            &to,
            Bytes::from(vec![0u8; 100 * 1024]),
            &SendOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SendError::TooLarge { max, .. } if max <= 64 * 1024),
        "{err:?}"
    );
    big.send(
        &to,
        Bytes::from(vec![1u8; 32 * 1024]),
        &SendOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        inbox.recv_timeout(WAIT).await.unwrap().payload.len(),
        32 * 1024
    );
    assert_eq!(small.stats().bad_frames, 0);
    assert_eq!(big.stats().connections_closed, 0);
    small.shutdown().await;
    big.shutdown().await;
}

on_both_transports!(dropping_every_handle_stops_the_node);
async fn dropping_every_handle_stops_the_node(net: Net) {
    let a = node(&net, "drop_a", "c").await;
    let b = node(&net, "drop_b", "c").await;
    let b_addr = b.listen_addrs()[0];
    a.connect(b_addr).await.unwrap();
    let b_name = b.name().clone();
    let process = b.process();
    let mut inbox = a.process_named("inbox").unwrap();
    let to = Node::name_on(a.name(), "inbox").unwrap();
    drop(b);
    // A process holds its node: still running, still sending.
    process
        .node()
        .send(&to, "alive", &SendOptions::default())
        .await
        .unwrap();
    assert_eq!(
        &inbox.recv_timeout(WAIT).await.unwrap().payload[..],
        b"alive"
    );
    assert!(a.is_connected(&b_name));
    drop(process);
    eventually("b's connections closed", || !a.is_connected(&b_name)).await;
    // Its listener is gone too: nothing answers there any more.
    let deadline = tokio::time::Instant::now() + WAIT;
    while net.dial(b_addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "b still listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
}

on_both_transports!(a_relayed_message_needs_a_peer_that_can_vouch_for_its_origin);
async fn a_relayed_message_needs_a_peer_that_can_vouch_for_its_origin(net: Net) {
    use partisan::partisan_core::wire::{encode_relay_head, RelayHeader, RelayTarget};
    let a = node(&net, "vouch_a", "c").await;
    let mut inbox = a.process_named("inbox").unwrap();
    let mut raw = raw_authenticated(&net, &a, "vouch_raw", "c", 0).await;
    let relay = |origin: &str, text: &'static [u8]| {
        let header = RelayHeader {
            origin: origin.parse().unwrap(),
            origin_creation: 1,
            dest: a.name().clone(),
            to: RelayTarget::Name(partisan::ProcessName::new("inbox").unwrap()),
            from: None,
            partition_key: None,
            hops: 1,
        };
        let mut out = bytes::BytesMut::new();
        encode_relay_head(&mut out, &header, text.len(), 1 << 20).unwrap();
        out.extend_from_slice(text);
        out
    };
    // A plain peer claiming to relay for another node: dropped and counted, connection kept.
    raw.writer
        .write_all(&relay("victim@127.0.0.1", b"forged"))
        .await
        .unwrap();
    eventually("forged relay rejected", || a.stats().overlay_rejected == 1).await;
    // The same peer relaying its own message (a first hop) is delivered.
    raw.writer
        .write_all(&relay("vouch_raw@127.0.0.1", b"genuine"))
        .await
        .unwrap();
    let got = inbox.recv_timeout(WAIT).await.unwrap();
    assert_eq!(&got.payload[..], b"genuine");
    assert_eq!(a.stats().bad_frames, 0);
    drop(raw);
    a.shutdown().await;
}

on_both_transports!(a_peer_neither_connected_nor_wanted_is_forgotten);
async fn a_peer_neither_connected_nor_wanted_is_forgotten(net: Net) {
    let a = node(&net, "forget_a", "c").await;
    let b = node(&net, "forget_b", "c").await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    assert!(a.wait_fully_connected(b.name(), WAIT).await);
    eventually("both know each other", || {
        a.stats().peers_known == 1 && b.stats().peers_known == 1
    })
    .await;
    // a lets go; b never wanted a: every lane closes and both forget the other.
    a.disconnect(b.name()).await;
    eventually("both forgot", || {
        a.stats().peers_known == 0 && b.stats().peers_known == 0
    })
    .await;
    assert!(a.nodes().is_empty() && b.nodes().is_empty());
    // A peer lost first and let go afterwards is forgotten too.
    let c = node(&net, "forget_c", "c").await;
    a.connect(c.listen_addrs()[0]).await.unwrap();
    eventually("a knows c", || a.stats().peers_known == 1).await;
    c.shutdown().await;
    eventually("c lost", || !a.is_connected(c.name())).await;
    // Still wanted (redialed): still known.
    assert_eq!(a.stats().peers_known, 1);
    a.disconnect(c.name()).await;
    eventually("c forgotten", || a.stats().peers_known == 0).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_small_received_payload_owns_its_memory);
async fn a_small_received_payload_owns_its_memory(net: Net) {
    let a = node(&net, "own_a", "c").await;
    let b = node(&net, "own_b", "c").await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let mut inbox = b.process_named("inbox").unwrap();
    let to = Node::name_on(b.name(), "inbox").unwrap();
    for i in 0..50u8 {
        a.send(&to, vec![i; 64], &SendOptions::default())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..50 {
        let m = inbox.recv_timeout(WAIT).await.unwrap();
        assert_eq!(m.payload.len(), 64);
        // Not a slice of the connection's read buffer, which it would keep alive.
        assert!(
            m.payload.is_unique(),
            "message {} shares its buffer",
            m.payload[0]
        );
        seen.push(m.payload[0]);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50u8).collect::<Vec<_>>());
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_connect_by_address_can_be_cancelled);
async fn a_connect_by_address_can_be_cancelled(net: Net) {
    let a = node(&net, "cancel_a", "c").await;
    // Nothing listens there, and no other test binds 127.0.0.78.
    let dead: std::net::SocketAddr = "127.0.0.78:9".parse().unwrap();
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.connect(dead).await })
    };
    // The attempt is registered once the driver has seen it; cancel until it says so.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !a.cancel_connect(dead).await {
        assert!(tokio::time::Instant::now() < deadline, "never pending");
        tokio::task::yield_now().await;
    }
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::GaveUp(_)), "{err:?}");
    // Nothing is left to cancel, and a live target is not affected.
    assert!(!a.cancel_connect(dead).await);
    let b = node(&net, "cancel_b", "c").await;
    assert_eq!(&a.connect(b.listen_addrs()[0]).await.unwrap(), b.name());
    assert!(!a.cancel_connect(b.listen_addrs()[0]).await);
    assert!(a.is_connected(b.name()));
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(spawned_processes_do_not_keep_their_node_running);
async fn spawned_processes_do_not_keep_their_node_running(net: Net) {
    let a = node(&net, "spawn_a", "c").await;
    let b = node(&net, "spawn_b", "c").await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // A server loop that would run for ever if its process kept the node alive.
    b.spawn_named("echo", move |mut p| async move {
        while let Some(m) = p.recv().await {
            if let Some(from) = m.from {
                let _ = p.send(&from, m.payload, &SendOptions::default()).await;
            }
        }
        let _ = done_tx.send(());
    })
    .unwrap();
    let mut me = a.process();
    let echo = Node::name_on(b.name(), "echo").unwrap();
    me.send(&echo, "ping", &SendOptions::default())
        .await
        .unwrap();
    assert_eq!(&me.recv_timeout(WAIT).await.unwrap().payload[..], b"ping");
    let b_name = b.name().clone();
    drop(b);
    // The node stopped: the spawned process's mailbox ended and b's connections closed.
    tokio::time::timeout(WAIT, done_rx)
        .await
        .expect("spawned process ended")
        .unwrap();
    eventually("b gone", || !a.is_connected(&b_name)).await;
    a.shutdown().await;
}

on_both_transports!(a_restart_with_the_clock_set_back_is_still_the_newer_run);
async fn a_restart_with_the_clock_set_back_is_still_the_newer_run(net: Net) {
    init_tracing();
    let dir = std::env::temp_dir().join(format!("partisan-creation-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("back_b.creation");
    // The previous run started with the clock far ahead of today's.
    let ahead = 4_000_000_000_000_000u64;
    std::fs::write(&file, ahead.to_string()).unwrap();
    let start_b = || {
        let file = file.clone();
        net.builder("back_b@127.0.0.1")
            .listen("127.0.0.1:0")
            .cookie("c")
            .configure(move |c| c.creation_file = Some(file))
            .start()
    };
    let a = node(&net, "back_a", "c").await;
    let b1 = start_b().await.unwrap();
    assert_eq!(b1.creation(), ahead + 1);
    a.connect(b1.listen_addrs()[0]).await.unwrap();
    b1.shutdown().await;
    // The next run is newer although the clock is still behind: a admits it.
    let b2 = start_b().await.unwrap();
    assert_eq!(b2.creation(), ahead + 2);
    assert_eq!(&a.connect(b2.listen_addrs()[0]).await.unwrap(), b2.name());
    assert_eq!(a.peer_creation(b2.name()), Some(ahead + 2));
    a.shutdown().await;
    b2.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_transports!(a_channel_with_a_small_write_chunk_still_carries_large_messages_intact);
async fn a_channel_with_a_small_write_chunk_still_carries_large_messages_intact(net: Net) {
    init_tracing();
    let start = |name: &str| {
        net.builder(&format!("{name}@127.0.0.1"))
            .listen("127.0.0.1:0")
            .cookie("c")
            .configure(|c| {
                c.channels.insert(
                    "bulk".into(),
                    partisan::ChannelConfig {
                        parallelism: Some(1),
                        write_chunk: Some(4096),
                        ..Default::default()
                    },
                );
            })
            .start()
    };
    let (a, b) = (
        start("chunk_a").await.unwrap(),
        start("chunk_b").await.unwrap(),
    );
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let mut inbox = b.process_named("inbox").unwrap();
    let to = Node::name_on(b.name(), "inbox").unwrap();
    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    for _ in 0..3 {
        a.send(&to, big.clone(), &SendOptions::on(&ch("bulk")))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(
            &inbox.recv_timeout(WAIT).await.unwrap().payload[..],
            &big[..]
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// The builder's transport carries the listening and the dialing both: nodes reach each other
/// within their memory network only, even where two networks use the same address.
#[tokio::test(start_paused = true)]
async fn nodes_reach_each_other_only_within_their_memory_network() {
    let (one, two) = (MemoryTransport::new(), MemoryTransport::new());
    let start = |name: &str, addr: &str, net: &MemoryTransport| {
        NodeBuilder::new(&format!("{name}@127.0.0.1"))
            .listen(addr)
            .cookie("c")
            .transport(net.clone())
            .start()
    };
    let a = start("iso_a", "127.0.0.1:7001", &one).await.unwrap();
    let b = start("iso_b", "127.0.0.1:7000", &one).await.unwrap();
    let c = start("iso_c", "127.0.0.1:7000", &two).await.unwrap();
    let d = start("iso_d", "127.0.0.1:7002", &two).await.unwrap();
    assert_eq!(b.listen_addrs(), c.listen_addrs());
    assert_eq!(&a.connect(b.listen_addrs()[0]).await.unwrap(), b.name());
    assert_eq!(&d.connect(c.listen_addrs()[0]).await.unwrap(), c.name());
    let err = d
        .connect_timeout(a.listen_addrs()[0], Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Unreachable {
                kind: std::io::ErrorKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(a.nodes(), vec![b.name().clone()]);
    assert_eq!(d.nodes(), vec![c.name().clone()]);
    for n in [a, b, c, d] {
        n.shutdown().await;
    }
}

on_both_transports!(a_second_node_under_a_name_in_use_is_refused_as_such);
async fn a_second_node_under_a_name_in_use_is_refused_as_such(net: Net) {
    let first = node(&net, "twin", "c").await;
    let second = node(&net, "twin", "c").await;
    let err = second.connect(first.listen_addrs()[0]).await.unwrap_err();
    // Not taken for a connection to itself: the error says another node runs under the name.
    assert_eq!(err, ConnectError::NameInUse(first.name().clone()));
    assert!(
        err.to_string()
            .contains("another node is already running as twin@127.0.0.1"),
        "{err}"
    );
    assert!(first.nodes().is_empty() && second.nodes().is_empty());
    first.shutdown().await;
    second.shutdown().await;
}

on_both_transports!(a_closed_port_is_reported_unreachable_and_still_retried);
async fn a_closed_port_is_reported_unreachable_and_still_retried(net: Net) {
    let a = node(&net, "closed_a", "c").await;
    // Nothing listens there, and no other test binds 127.0.0.79 (a freed port of 127.0.0.1
    // could be taken by a parallel test's node).
    let addr: std::net::SocketAddr = "127.0.0.79:9".parse().unwrap();
    let err = a
        .connect_timeout(addr, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConnectError::Unreachable {
                kind: std::io::ErrorKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retrying());
    assert!(err.to_string().contains("still retrying"), "{err}");
    // Still dialed in the background, until cancelled.
    assert!(a.cancel_connect(addr).await);
    a.shutdown().await;
}

on_both_transports!(a_node_of_another_protocol_version_is_reported_as_such);
async fn a_node_of_another_protocol_version_is_reported_as_such(net: Net) {
    let a = node(&net, "vm_a", "c").await;
    // A node of a future version 9: it answers any hello with a frame of its version.
    let mut listener = net.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    let future_node = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.reader.read(&mut buf).await;
            let body = [b'P', b'T', b'S', b'N', 0, 9, 1, 2, 3];
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            let _ = s.writer.write_all(&frame).await;
        }
    });
    let err = a.connect_timeout(addr, WAIT * 3).await.unwrap_err();
    assert_eq!(
        err,
        ConnectError::VersionMismatch {
            ours: partisan::partisan_core::wire::handshake::PROTOCOL_VERSION,
            theirs: 9
        }
    );
    assert!(!a.cancel_connect(addr).await, "not retried");
    future_node.abort();
    a.shutdown().await;
}
