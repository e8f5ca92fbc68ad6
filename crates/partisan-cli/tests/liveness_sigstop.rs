//! Liveness probing against a real host that goes silent: a `partisan node` child process
//! stopped with SIGSTOP keeps its TCP connections open (the kernel still acknowledges), so only
//! the application can tell it stopped answering. With the default settings its lanes are cut
//! within 10 s, and it is connected again once it resumes.

mod support;

use std::time::Duration;

use partisan::{NodeBuilder, NodeName};
use support::NodeProc;

const WAIT: Duration = Duration::from_secs(30);

/// Polls `cond` every 10 ms until it holds or `within` passed; returns how long it took.
async fn poll(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Some(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_cut_within_ten_seconds_and_reconnected_when_it_resumes() {
    let remote = NodeProc::start("sigstop_remote@127.0.0.1", "sigstop", &[]);
    let addr = remote.listen_addr();
    let local = NodeBuilder::new("sigstop_local@127.0.0.1")
        .cookie("sigstop")
        .start()
        .await
        .unwrap();
    local.join_and_wait(addr, WAIT).await.unwrap();
    let name = NodeName::new("sigstop_remote@127.0.0.1").unwrap();
    let (n, r) = (local.clone(), name.clone());
    poll(WAIT, move || n.is_connected(&r))
        .await
        .expect("the remote node connected");

    remote.signal("STOP");
    let (n, r) = (local.clone(), name.clone());
    let took = poll(WAIT, move || !n.is_connected(&r)).await;
    let took = took.expect("the stopped host's lanes were never cut");
    println!("stopped host cut after {took:?}");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    assert!(local.stats().peers_unresponsive >= 1);

    remote.signal("CONT");
    let (n, r) = (local.clone(), name.clone());
    poll(WAIT, move || n.is_connected(&r))
        .await
        .expect("connected again after the host resumed");
    local.shutdown().await;
}
