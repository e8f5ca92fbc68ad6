//! Exits, monitors, links and node monitors across nodes (ports of Partisan's monitor cases,
//! after OTP's `monitor_SUITE`), each on loopback TCP and on the in-memory transport.

mod support;

use std::time::Duration;

use partisan::{
    Down, ExitReason, ExitSignal, Node, Pid, Process, RemoteRef, SendError, SendOptions, Signal,
};
use support::{eventually, node, pair, tables_empty, Net};

const WAIT: Duration = Duration::from_secs(20);

/// The next signal in `p`'s mailbox (skipping nothing: a user message fails the test).
async fn signal(p: &mut Process) -> Signal {
    let env = p.recv_timeout(WAIT).await.expect("a signal in time");
    env.signal().cloned().expect("a signal, not a message")
}

async fn down(p: &mut Process) -> Down {
    match signal(p).await {
        Signal::Down(d) => d,
        other => panic!("expected a Down, got {other:?}"),
    }
}

/// Nothing waits in `p`'s mailbox (after giving in-flight signals a moment to land).
async fn quiet(p: &mut Process) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(p.try_recv().is_none(), "unexpected message or signal");
}

/// A process on `n` that waits for one message, then ends with the reason it names.
fn ender(n: &Node, name: Option<&str>) -> Pid {
    let f = |mut me: Process| async move {
        match me.recv().await {
            Some(m) => ExitReason::error(String::from_utf8_lossy(&m.payload).to_string()),
            None => ExitReason::Normal,
        }
    };
    match name {
        Some(name) => n.spawn_named(name, f).unwrap(),
        None => n.spawn(f),
    }
}

on_both_transports!(down_on_remote_exit_by_pid_and_by_name_then_tables_empty);
async fn down_on_remote_exit_by_pid_and_by_name_then_tables_empty(net: Net) {
    let (a, b) = pair(&net, "mx").await;
    let target = ender(&b, Some("target"));
    let mut w = a.process();
    let by_pid = w.monitor(&target).await;
    let name = Node::name_on(b.name(), "target").unwrap();
    let by_name = w.monitor(&name).await;
    let (bb, aa) = (b.clone(), a.clone());
    eventually("monitors recorded on both nodes", move || {
        bb.stats().processes.remote_monitors_in == 2
            && aa.stats().processes.remote_monitors_out == 2
    })
    .await;
    a.send(&target, "boom", &SendOptions::default())
        .await
        .unwrap();
    let d1 = down(&mut w).await;
    let d2 = down(&mut w).await;
    let mut got = vec![
        (d1.monitor.clone(), d1.target, d1.reason),
        (d2.monitor.clone(), d2.target, d2.reason),
    ];
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            (
                by_pid,
                RemoteRef::Pid(target.clone()),
                ExitReason::error("boom")
            ),
            (by_name, RemoteRef::Name(name), ExitReason::error("boom")),
        ]
    );
    quiet(&mut w).await;
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(noproc_for_missing_process_local_and_remote);
async fn noproc_for_missing_process_local_and_remote(net: Net) {
    let (a, b) = pair(&net, "np").await;
    let mut w = a.process();
    // A process that has ended, on the other node and on this one.
    let gone_remote = {
        let p = b.process();
        p.pid().clone()
    };
    let gone_local = {
        let p = a.process();
        p.pid().clone()
    };
    for dest in [
        RemoteRef::Pid(gone_remote),
        RemoteRef::Pid(gone_local),
        RemoteRef::Name(Node::name_on(b.name(), "nobody").unwrap()),
        RemoteRef::Name(Node::name_on(a.name(), "nobody").unwrap()),
    ] {
        let r = w.monitor(&dest).await;
        let d = down(&mut w).await;
        assert_eq!(
            (d.monitor, d.target, d.reason),
            (r, dest, ExitReason::NoProc)
        );
    }
    quiet(&mut w).await;
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(noconnection_at_once_for_an_unconnected_node);
async fn noconnection_at_once_for_an_unconnected_node(net: Net) {
    let a = node(&net, "nc-a").await;
    let b = node(&net, "nc-b").await;
    let target = ender(&b, None);
    let mut w = a.process();
    let r = w.monitor(&target).await;
    let d = down(&mut w).await;
    assert_eq!((d.monitor, d.reason), (r, ExitReason::NoConnection));
    // Linking to it: an exit signal noconnection, which a trapping process receives.
    w.trap_exits(true);
    w.link(&target).await;
    match signal(&mut w).await {
        Signal::Exit(ExitSignal { from, reason, link }) => {
            assert_eq!(
                (from, reason, link),
                (Some(target.clone()), ExitReason::NoConnection, true)
            );
        }
        other => panic!("expected an exit signal, got {other:?}"),
    }
    assert!(matches!(
        a.exit(&target, ExitReason::Kill).await,
        Err(SendError::NotConnected(_))
    ));
    assert!(matches!(
        a.is_alive(&target).await,
        Err(SendError::NotConnected(_))
    ));
    tables_empty(&a).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(noconnection_when_the_remote_node_stops_and_tables_empty);
async fn noconnection_when_the_remote_node_stops_and_tables_empty(net: Net) {
    let (a, b) = pair(&net, "ns").await;
    let target = ender(&b, None);
    // b monitors a's process too: a's table must forget b's entries once b is gone.
    let a_target = ender(&a, None);
    let bw = b.process();
    bw.monitor(&a_target).await;
    let mut w = a.process();
    let r = w.monitor(&target).await;
    let aa = a.clone();
    eventually("both monitors recorded", move || {
        let p = aa.stats().processes;
        p.remote_monitors_out == 1 && p.remote_monitors_in == 1
    })
    .await;
    b.shutdown().await;
    let d = down(&mut w).await;
    assert_eq!((d.monitor, d.reason), (r, ExitReason::NoConnection));
    quiet(&mut w).await;
    tables_empty(&a).await;
    // The loss is counted, and no lane was cut for a stalled signal. (A lane judged not
    // cleanly closed while others stay counts a loss of its own, and the other side's such
    // loss may be heard: seen once in a loaded CI run, so no exact figures.)
    let p = a.stats().processes;
    assert!(p.peers_lost >= 1, "{p:?}");
    assert_eq!(p.signal_lanes_cut, 0, "{p:?}");
    drop(bw);
    a.shutdown().await;
}

on_both_transports!(demonitor_before_down_double_demonitor_and_flush);
async fn demonitor_before_down_double_demonitor_and_flush(net: Net) {
    let (a, b) = pair(&net, "dm").await;
    let target = ender(&b, None);
    let mut w = a.process();
    let r = w.monitor(&target).await;
    assert!(w.demonitor(&r).await);
    assert!(!w.demonitor(&r).await, "a second demonitor finds nothing");
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.send(&target, "late", &SendOptions::default())
        .await
        .unwrap();
    let (bb, t) = (b.clone(), target.clone());
    eventually("target ended", move || !bb_alive(&bb, &t)).await;
    quiet(&mut w).await;

    // Flush: the Down is already in the mailbox when the demonitor comes.
    let target = ender(&b, None);
    let r = w.monitor(&target).await;
    let aa = a.clone();
    eventually("monitor recorded", move || {
        aa.stats().processes.remote_monitors_out == 1
    })
    .await;
    a.send(&target, "x", &SendOptions::default()).await.unwrap();
    let aa = a.clone();
    eventually("Down delivered", move || {
        aa.stats().processes.remote_downs >= 1
    })
    .await;
    assert!(!w.demonitor_flush(&r).await, "the monitor had fired");
    quiet(&mut w).await;

    // A local monitor, flushed the same way; and demonitor of a foreign reference.
    let local = ender(&a, None);
    let r = w.monitor(&local).await;
    a.send(&local, "y", &SendOptions::default()).await.unwrap();
    let (aa, l) = (a.clone(), local.clone());
    eventually("local target ended", move || !bb_alive(&aa, &l)).await;
    assert!(!w.demonitor_flush(&r).await);
    let foreign = b.make_ref();
    assert!(!w.demonitor(&foreign).await);
    quiet(&mut w).await;
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Whether local `pid` is alive, for `eventually` (a local `is_alive` answers at once, so it
/// is polled once, without an executor).
fn bb_alive(n: &Node, pid: &Pid) -> bool {
    let fut = n.is_alive(pid);
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(r) => r.expect("a local pid is answered at once"),
        std::task::Poll::Pending => panic!("a local is_alive must not wait"),
    }
}

use std::future::Future;

on_both_transports!(large_exit_reason_kill_and_panic_reasons_cross_nodes);
async fn large_exit_reason_kill_and_panic_reasons_cross_nodes(net: Net) {
    let (a, b) = pair(&net, "lr").await;
    let mut w = a.process();
    // A large reason (100 KiB asked, cut to 64 KiB).
    let target = ender(&b, None);
    w.monitor(&target).await;
    let big = "r".repeat(100 * 1024);
    a.send(&target, big.clone(), &SendOptions::default())
        .await
        .unwrap();
    let d = down(&mut w).await;
    assert_eq!(d.reason, ExitReason::error(big));
    // Kill ends even a process trapping exits.
    let trapper = b.spawn(|mut me: Process| async move {
        me.trap_exits(true);
        while me.recv().await.is_some() {}
    });
    w.monitor(&trapper).await;
    let (bb, t) = (b.clone(), trapper.clone());
    eventually("trapper alive", move || bb_alive(&bb, &t)).await;
    a.exit(&trapper, ExitReason::Kill).await.unwrap();
    assert_eq!(down(&mut w).await.reason, ExitReason::Killed);
    // A panic is captured with its message, and the node keeps serving.
    let panicker = b.spawn(|mut me: Process| async move {
        if me.recv().await.is_some() {
            panic!("deliberate failure {}", 42);
        }
    });
    w.monitor(&panicker).await;
    a.send(&panicker, "go", &SendOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down(&mut w).await.reason,
        ExitReason::panic("deliberate failure 42")
    );
    assert_eq!(b.stats().processes.panicked, 1);
    assert!(a.is_alive(&w.pid().clone()).await.unwrap());
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(links_propagate_abnormal_exits_both_ways_and_trapped_exits_arrive);
async fn links_propagate_abnormal_exits_both_ways_and_trapped_exits_arrive(net: Net) {
    let (a, b) = pair(&net, "ln").await;
    let mut w = a.process();
    // a's x linked with b's y; y ends abnormally: x is ended with the same reason.
    let y = ender(&b, None);
    let x = a.spawn({
        let y = y.clone();
        move |mut me: Process| async move {
            me.link(&y).await;
            while me.recv().await.is_some() {}
        }
    });
    w.monitor(&x).await;
    let bb = b.clone();
    eventually("link recorded at b", move || {
        bb.stats().processes.remote_links == 1
    })
    .await;
    a.send(&y, "crash", &SendOptions::default()).await.unwrap();
    assert_eq!(down(&mut w).await.reason, ExitReason::error("crash"));

    // The other way: x on a ends abnormally, y on b is ended.
    let y = b.spawn(|mut me: Process| async move { while me.recv().await.is_some() {} });
    let x = ender(&a, None);
    let mut linker = a.process();
    let _ = &mut linker;
    w.monitor(&y).await;
    // x links to y from its side (a process may link on behalf of itself only: use a helper
    // process that links, then ends abnormally).
    let helper = a.spawn({
        let y = y.clone();
        move |mut me: Process| async move {
            me.link(&y).await;
            me.recv().await;
            ExitReason::error("helper failed")
        }
    });
    let bb = b.clone();
    eventually("link recorded at b", move || {
        bb.stats().processes.remote_links == 1
    })
    .await;
    a.send(&helper, "go", &SendOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down(&mut w).await.reason,
        ExitReason::error("helper failed")
    );
    drop(x);

    // A trapping process gets the exit as a message and lives on; a normal exit does not
    // end a linked process that does not trap.
    let mut t = a.process();
    t.trap_exits(true);
    let y = ender(&b, None);
    t.link(&y).await;
    let bb = b.clone();
    eventually("link recorded", move || {
        bb.stats().processes.remote_links == 1
    })
    .await;
    a.send(&y, "trapped", &SendOptions::default())
        .await
        .unwrap();
    match signal(&mut t).await {
        Signal::Exit(e) => assert_eq!(
            e,
            ExitSignal {
                from: Some(y.clone()),
                reason: ExitReason::error("trapped"),
                link: true
            }
        ),
        other => panic!("expected an exit signal, got {other:?}"),
    }
    let normal = b.spawn(|mut me: Process| async move {
        me.recv().await;
    });
    let plain = a.spawn({
        let n = normal.clone();
        move |mut me: Process| async move {
            me.link(&n).await;
            while me.recv().await.is_some() {}
        }
    });
    let bb = b.clone();
    eventually("link recorded", move || {
        bb.stats().processes.remote_links == 1
    })
    .await;
    a.send(&normal, "bye", &SendOptions::default())
        .await
        .unwrap();
    let (bb, n) = (b.clone(), normal.clone());
    eventually("normal ended", move || !bb_alive(&bb, &n)).await;
    quiet(&mut t).await;
    assert!(
        a.is_alive(&plain).await.unwrap(),
        "a normal exit does not propagate"
    );
    a.exit(&plain, ExitReason::Kill).await.unwrap();
    drop(t);
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(node_loss_propagates_over_links_as_noconnection);
async fn node_loss_propagates_over_links_as_noconnection(net: Net) {
    let (a, b) = pair(&net, "nl").await;
    let mut t = a.process();
    t.trap_exits(true);
    let y = b.spawn(|mut me: Process| async move { while me.recv().await.is_some() {} });
    t.link(&y).await;
    let mut w = a.process();
    let x = a.spawn({
        let y = y.clone();
        move |mut me: Process| async move {
            me.link(&y).await;
            while me.recv().await.is_some() {}
        }
    });
    w.monitor(&x).await;
    let bb = b.clone();
    eventually("links recorded", move || {
        bb.stats().processes.remote_links == 2
    })
    .await;
    b.shutdown().await;
    match signal(&mut t).await {
        Signal::Exit(e) => assert_eq!((e.reason, e.link), (ExitReason::NoConnection, true)),
        other => panic!("expected an exit signal, got {other:?}"),
    }
    assert_eq!(down(&mut w).await.reason, ExitReason::NoConnection);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(local_monitors_links_and_exit_signals);
async fn local_monitors_links_and_exit_signals(net: Net) {
    let a = node(&net, "lo").await;
    let mut w = a.process();
    let x = ender(&a, Some("x"));
    let r1 = w.monitor(&x).await;
    let r2 = w.monitor(&Node::name_on(a.name(), "x").unwrap()).await;
    assert_eq!(a.stats().processes.local_monitors, 2);
    a.send(&x, "done", &SendOptions::default()).await.unwrap();
    let mut ds = [down(&mut w).await, down(&mut w).await];
    ds.sort_by(|p, q| p.monitor.cmp(&q.monitor));
    assert_eq!((ds[0].monitor.clone(), ds[1].monitor.clone()), (r1, r2));
    assert!(ds.iter().all(|d| d.reason == ExitReason::error("done")));
    // Links between local processes; an explicit exit signal with a reason.
    let mut t = a.process();
    t.trap_exits(true);
    let y = ender(&a, None);
    t.link(&y).await;
    assert_eq!(a.stats().processes.local_links, 2);
    a.exit(&y, ExitReason::Shutdown).await.unwrap();
    match signal(&mut t).await {
        Signal::Exit(e) => assert_eq!((e.from, e.reason), (Some(y), ExitReason::Shutdown)),
        other => panic!("expected an exit signal, got {other:?}"),
    }
    // A normal signal to a process not trapping exits does nothing.
    let z = ender(&a, None);
    a.exit(&z, ExitReason::Normal).await.unwrap();
    assert!(a.is_alive(&z).await.unwrap());
    a.exit(&z, ExitReason::Kill).await.unwrap();
    assert!(!a.is_alive(&z).await.unwrap());
    drop(t);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(is_alive_remote_and_send_after_with_cancel);
async fn is_alive_remote_and_send_after_with_cancel(net: Net) {
    let (a, b) = pair(&net, "ia").await;
    let y = ender(&b, None);
    assert!(a.is_alive(&y).await.unwrap());
    a.send(&y, "x", &SendOptions::default()).await.unwrap();
    let (aa, yy) = (a.clone(), y.clone());
    let mut ended = false;
    for _ in 0..200 {
        if !aa.is_alive(&yy).await.unwrap() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ended, "remote process seen ended");
    let mut me = a.process();
    let t1 = a.send_after(
        me.pid(),
        "first",
        Duration::from_millis(50),
        &SendOptions::default(),
    );
    let t2 = a.send_after(
        me.pid(),
        "never",
        Duration::from_secs(3600),
        &SendOptions::default(),
    );
    assert!(t2.cancel());
    assert!(!t2.cancel());
    let got = me.recv_timeout(WAIT).await.unwrap();
    assert_eq!(&got.payload[..], b"first");
    assert!(!t1.is_pending());
    assert!(!t1.cancel(), "already sent");
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(node_monitors_follow_membership_events);
async fn node_monitors_follow_membership_events(net: Net) {
    let (a, b) = pair(&net, "nm").await;
    let c = node(&net, "nm-c").await;
    let mut once = a.process();
    once.monitor_node(b.name());
    // A node not up: NodeDown at once.
    once.monitor_node(c.name());
    match signal(&mut once).await {
        Signal::NodeDown { node, reason, .. } => {
            assert_eq!((node, reason), (c.name().clone(), ExitReason::NoConnection));
        }
        other => panic!("expected NodeDown, got {other:?}"),
    }
    let mut all = a.process();
    all.monitor_nodes();
    c.join_and_wait(a.listen_addrs()[0], WAIT).await.unwrap();
    match signal(&mut all).await {
        Signal::NodeUp { node, channel } => assert_eq!((node, channel), (c.name().clone(), None)),
        other => panic!("expected NodeUp, got {other:?}"),
    }
    b.shutdown().await;
    match signal(&mut once).await {
        Signal::NodeDown { node, .. } => assert_eq!(node, b.name().clone()),
        other => panic!("expected NodeDown, got {other:?}"),
    }
    match signal(&mut all).await {
        Signal::NodeDown { node, .. } => assert_eq!(node, b.name().clone()),
        other => panic!("expected NodeDown, got {other:?}"),
    }
    assert_eq!(
        a.stats().processes.node_monitors,
        1,
        "the one-shot monitor is gone"
    );
    assert!(all.demonitor_nodes());
    assert_eq!(a.stats().processes.node_monitors, 0);
    c.shutdown().await;
    quiet(&mut all).await;
    a.shutdown().await;
}

on_both_transports!(an_ended_process_links_and_monitors_nothing);
async fn an_ended_process_links_and_monitors_nothing(net: Net) {
    let a = node(&net, "en").await;
    let mut w = a.process();
    let p = a.process();
    a.exit(p.pid(), ExitReason::Kill).await.unwrap();
    // A child spawned linked to an ended process gets `noproc`, as a link to a missing one.
    let child = p.spawn_link(|mut me: Process| async move { while me.recv().await.is_some() {} });
    w.monitor(&child).await;
    let d = down(&mut w).await;
    assert!(
        d.reason == ExitReason::NoProc,
        "child ended with {:?}",
        d.reason
    );
    let t = ender(&a, None);
    p.link(&t).await;
    p.monitor(&t).await;
    assert_eq!(a.stats().processes.table_entries(), 0, "nothing recorded");
    a.exit(&t, ExitReason::Kill).await.unwrap();
    tables_empty(&a).await;
    a.shutdown().await;
}
