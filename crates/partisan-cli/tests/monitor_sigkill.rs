//! Partisan's monitor suite: a monitor of a process on a node that dies by SIGKILL (a child OS
//! process running `partisan node`) gets exactly one `Down` with `noconnection`, and a monitor
//! made while that node is gone gets `noconnection` at once. The monitored process is the RPC
//! server every node runs, registered as `partisan::RPC_SERVER_NAME`.

mod support;

use std::time::Duration;

use partisan::{ExitReason, Node, NodeBuilder, NodeName, Process, Signal, RPC_SERVER_NAME};
use support::NodeProc;

const WAIT: Duration = Duration::from_secs(30);

/// Polls `cond` every 10 ms until it holds; fails after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next signal in `w`'s mailbox, waiting at most `within`: must be a `Down` of `monitor`.
async fn down_reason(w: &mut Process, monitor: &partisan::Ref, within: Duration) -> ExitReason {
    let env = w.recv_timeout(within).await.expect("a Down in time");
    match env.signal() {
        Some(Signal::Down(d)) if d.monitor == *monitor => d.reason.clone(),
        other => panic!("expected the monitor's Down, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_remote_node_gives_noconnection_and_leaves_no_entry() {
    let remote = NodeProc::start("sigkill_remote@127.0.0.1", "sigkill", &[]);
    let addr = remote.listen_addr();
    let local = NodeBuilder::new("sigkill_local@127.0.0.1")
        .cookie("sigkill")
        .start()
        .await
        .unwrap();
    local.join_and_wait(addr, WAIT).await.unwrap();
    let remote_name = NodeName::new("sigkill_remote@127.0.0.1").unwrap();
    {
        let (n, r) = (local.clone(), remote_name.clone());
        eventually("the remote node connected", move || n.is_connected(&r)).await;
    }
    let target = Node::name_on(&remote_name, RPC_SERVER_NAME).unwrap();
    let mut w = local.process();
    let monitor = w.monitor(&target).await;
    {
        let n = local.clone();
        eventually("the monitor recorded", move || {
            n.stats().processes.remote_monitors_out == 1
        })
        .await;
    }
    // The process exists: after a round trip to its node (asking about a pid that does not
    // exist there), still no Down and the monitor still held.
    let creation = local.peer_creation(&remote_name).expect("connected");
    let nobody = partisan::Pid {
        node: remote_name.clone(),
        creation,
        id: u64::MAX,
    };
    assert!(!local.is_alive(&nobody).await.unwrap());
    assert!(w.try_recv().is_none(), "a Down before the kill");
    assert_eq!(local.stats().processes.remote_monitors_out, 1);

    let mut remote = remote;
    remote.child.kill().unwrap(); // SIGKILL
    remote.child.wait().unwrap();
    assert_eq!(
        down_reason(&mut w, &monitor, WAIT).await,
        ExitReason::NoConnection
    );
    {
        let n = local.clone();
        eventually("empty monitor and link tables", move || {
            n.stats().processes.table_entries() == 0
        })
        .await;
    }
    // The first lane that broke already fired the monitor (it carried signals); the others
    // go down as their resets are read.
    {
        let (n, r) = (local.clone(), remote_name.clone());
        eventually("every lane to the killed node down", move || {
            !n.is_connected(&r)
        })
        .await;
    }

    // A monitor made while the node is gone: noconnection at once (no connection attempt is
    // waited for).
    let started = tokio::time::Instant::now();
    let again = w.monitor(&target).await;
    assert_eq!(
        down_reason(&mut w, &again, Duration::from_secs(1)).await,
        ExitReason::NoConnection
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Exactly one Down per monitor.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(w.try_recv().is_none(), "a second Down");
    {
        let n = local.clone();
        eventually("empty tables again", move || {
            n.stats().processes.table_entries() == 0
        })
        .await;
    }
    drop(w);
    local.shutdown().await;
}
