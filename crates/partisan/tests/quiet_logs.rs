//! A healthy cluster looks healthy: 16 nodes started over loopback TCP, joined through one
//! of them, settle without a WARN or ERROR line, without an INFO line about a lost connection,
//! and with no failed handshake counted (races of simultaneous dials are counted apart). The
//! log is captured by a subscriber of this test binary's own, so the test runs alone in it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use partisan::{Node, NodeBuilder, NodeName};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const NODES: usize = 16;
const SETTLE: Duration = Duration::from_secs(60);

/// Keeps every log line a healthy cluster should not print.
#[derive(Clone, Default)]
struct Unwanted(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl<S: Subscriber> Layer<S> for Unwanted {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let lost = level == Level::INFO && msg.0.contains("connection lost");
        if level <= Level::WARN || lost {
            self.0.lock().unwrap().push(format!(
                "{level} {}: {}",
                event.metadata().target(),
                msg.0
            ));
        }
    }
}

impl Unwanted {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn cluster(overlay: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..NODES {
        let node = NodeBuilder::new(&format!("quiet_{overlay}_{i}@127.0.0.1"))
            .listen("127.0.0.1:0")
            .cookie("quiet")
            .channel("data", 2)
            .configure(|c| c.overlay = overlay.to_string())
            .start()
            .await
            .expect("node starts");
        if let Some(first) = nodes.first() {
            node.join(first.listen_addrs()[0]).await.expect("joins");
        }
        nodes.push(node);
    }
    nodes
}

/// Whether the overlay has settled: every full-mesh node fully connected to every other; every
/// HyParView active view non-empty, symmetric, fully connected, and spanning the cluster.
fn settled(nodes: &[Node], full_mesh: bool) -> bool {
    let names: Vec<NodeName> = nodes.iter().map(|n| n.name().clone()).collect();
    if full_mesh {
        return nodes.iter().all(|n| {
            names
                .iter()
                .all(|p| p == n.name() || (n.is_member(p) && n.is_fully_connected(p)))
        });
    }
    let view = |name: &NodeName| {
        nodes
            .iter()
            .find(|n| n.name() == name)
            .map(|n| n.active_view())
            .unwrap_or_default()
    };
    let symmetric = nodes.iter().all(|n| {
        let v = n.active_view();
        !v.is_empty()
            && v.iter()
                .all(|p| view(p).contains(n.name()) && n.is_fully_connected(p))
    });
    let mut reached = vec![names[0].clone()];
    let mut i = 0;
    while i < reached.len() {
        for p in view(&reached[i]) {
            if !reached.contains(&p) {
                reached.push(p);
            }
        }
        i += 1;
    }
    symmetric && reached.len() == nodes.len()
}

async fn check(overlay: &str, log: &Unwanted) {
    let nodes = cluster(overlay).await;
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !settled(&nodes, overlay == "full-mesh") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{overlay}: not settled within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unwanted = log.take();
    assert!(
        unwanted.is_empty(),
        "{overlay}: a healthy start logged:\n{}",
        unwanted.join("\n")
    );
    for n in &nodes {
        let s = n.stats();
        assert_eq!(
            (s.handshakes_failed, s.handshakes_refused),
            (0, 0),
            "{overlay}: {} counted failed or refused handshakes (races: {})",
            n.name(),
            s.handshakes_raced
        );
    }
    // Leaving then stopping, one node after the other, as `partisan node` does on SIGTERM.
    for n in &nodes {
        n.leave().await;
        n.shutdown().await;
    }
    let unwanted = log.take();
    assert!(
        unwanted.is_empty(),
        "{overlay}: nodes leaving and stopping logged:\n{}",
        unwanted.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_sixteen_node_start_is_quiet_on_hyparview_and_full_mesh() {
    let log = Unwanted::default();
    // `RUST_LOG` shows the whole log too, to see what led to an unwanted line.
    let shown = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        );
    let subscriber = tracing_subscriber::registry().with(log.clone()).with(shown);
    tracing::subscriber::set_global_default(subscriber)
        .expect("this test binary installs the only subscriber");
    for overlay in ["hyparview", "full-mesh"] {
        println!("{overlay}: starting {NODES} nodes");
        check(overlay, &log).await;
    }
}
