//! The Rust snippets of the README, compiled (and the first one run) by the test suite.
//!
//! Each ```rust block of `README.md` sits verbatim below as the body of an `async fn` whose
//! parameters are what the snippet assumes (`timeout`, `node`, ...).
//! [`readme_rust_snippets_are_the_ones_compiled_here`] fails when a block of the README is
//! not found here line for line, so the README cannot drift from code that compiles.
//! The snippet functions are `#[rustfmt::skip]`: they must stay as the README shows them.

use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use partisan::gen_server::{CallResponse, GenServer};
use partisan::{
    BroadcastHandler, GraftReply, Node, NodeBuilder, NodeName, NodeSpec, Process, Receipt, ReplyTo,
    SendOptions,
};
use serde::{Deserialize, Serialize};

type Res = Result<(), Box<dyn Error>>;

/// The first snippet: two nodes, a message and its reply, then a spawned server.
#[rustfmt::skip]
async fn two_nodes_a_message_and_its_reply() -> Res {
    use std::time::Duration;
    use partisan::{ChannelName, Node, NodeBuilder, SendOptions};

    let timeout = Duration::from_secs(5);
    let a = NodeBuilder::new("a@127.0.0.1").cookie("secret").channel("vnode", 4).start().await?;
    let b = NodeBuilder::new("b@127.0.0.1").cookie("secret").channel("vnode", 4).start().await?;

    let mut inbox = b.process_named("inbox")?;          // a process with a bounded mailbox
    a.connect(b.listen_addrs()[0]).await?;              // or a.connect(b.spec().clone())
    assert!(a.wait_fully_connected(b.name(), timeout).await);   // every lane of every channel up

    let mut me = a.process();                           // messages from it carry its pid
    let to = Node::name_on(b.name(), "inbox")?;         // partisan:name:b@127.0.0.1:inbox
    let vnode = ChannelName::new("vnode")?;
    me.send(&to, "hello", &SendOptions::on(&vnode).with_key(42)).await?;   // per-key FIFO lane
    let msg = inbox.recv().await.unwrap();              // None once b has shut down
    inbox.reply(&msg, "hi back", &SendOptions::default()).await?;           // msg.from is me's pid
    let answer = me.recv_timeout(timeout).await?;       // Err(RecvError::Timeout) if none came
    assert_eq!(&answer.payload[..], b"hi back");

    // A server is a spawned process: its task runs until its future ends (here, at b's shutdown).
    b.spawn_named("echo", |mut server| async move {
        while let Some(msg) = server.recv().await {
            let _ = server.reply(&msg, msg.payload.clone(), &SendOptions::default()).await;
        }
    })?;
    me.send(&Node::name_on(b.name(), "echo")?, "ping", &SendOptions::default()).await?;
    assert_eq!(&me.recv_timeout(timeout).await?.payload[..], b"ping");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// Membership and cluster events.
#[rustfmt::skip]
#[allow(dead_code, unused_variables, unused_mut)]
async fn cluster(seed_addr: SocketAddr, timeout: Duration, other: NodeName, specs: Vec<NodeSpec>) -> Res {
    use partisan::{NodeBuilder, NodeFilter};

    let node = NodeBuilder::new("c1@127.0.0.1").cookie("secret")
        .configure(|c| c.overlay = "hyparview".into()).start().await?;
    node.join_and_wait(seed_addr, timeout).await?;      // or `seeds = [...]` in the config
    node.members();                                      // lock-free snapshot; HyParView: self + active view
    node.on_down(NodeFilter::Any, |n| eprintln!("{n} down"));
    let mut events = node.events();                      // NodeUp / NodeDown stream
    node.active_view(); node.passive_view(); node.reserve("db").await?;
    node.remove(&other).await; node.update_members(specs).await;
    node.leave().await;                                  // peers learn it at once
    Ok(())
}

/// Plumtree broadcast with a handler of the test's own ([`MyLog`]) and the replicated map.
#[rustfmt::skip]
async fn broadcast(root: NodeName) -> Res {
    use partisan::{KvConfig, NodeBuilder, PlumtreeConfig};

    let node = NodeBuilder::new("a@127.0.0.1").cookie("secret")
        .broadcast_handler(MyLog::new, PlumtreeConfig::default())              // your BroadcastHandler
        .kv_map(KvConfig::default(), PlumtreeConfig::default())                 // the replicated map "kv"
        .start().await?;
    node.broadcast("log", b"event").await?;             // delivered here, then along the tree
    node.kv().put("color", b"blue").await?;             // last writer wins (hybrid logical clock)
    node.kv().get("color").await?;                      // Some(b"blue") on every node, eventually
    node.broadcast_members(); node.broadcast_stats("log");
    node.broadcast_tree("log", &root).await?; node.exchanges("log").await?;
    Ok(())
}

/// RPC between three nodes.
#[rustfmt::skip]
#[allow(unused_variables)]
async fn rpc(a: Node, b: Node, c: Node, timeout: Duration) -> Res {
    b.rpc_register("add", |(x, y): (i64, i64)| async move { x + y })?;  // rpc_register_with: |ctx, args|
    let sum: i64 = a.call(b.name(), "add", &(2, 3), timeout).await?;     // RpcError: UnknownName, Panicked,
    a.cast(b.name(), "add", &(2, 3)).await?;                             // Timeout, NodeDown, NotConnected, ..
    let sums = a.multicall::<_, i64>(&[b.name().clone(), c.name().clone()], "add", &(1, 1), timeout).await;
    Ok(())
}

/// Spawned processes, monitors, links, exit signals, node monitors and timers.
#[rustfmt::skip]
#[allow(dead_code, unused_variables)]
async fn processes(node: Node, other_node: Node, opts: SendOptions) -> Res {
    use std::time::Duration;
    use partisan::{ExitReason, Node, Signal};

    let server = node.spawn_named("db", |mut me| async move {      // ends when the future does:
        while let Some(msg) = me.recv().await { /* ... */ }          // () = normal, ExitReason, Err(e),
        ExitReason::Shutdown                                          // or a panic (captured)
    })?;
    let mut me = other_node.process();
    let mref = me.monitor(&Node::name_on(node.name(), "db")?).await;   // by pid or name, any node
    if let Some(Signal::Down(d)) = me.recv().await.unwrap().signal() {   // d.monitor == mref
        println!("{} down: {}", d.target, d.reason);    // exit reason, noproc, or noconnection
    }
    me.trap_exits(true); me.link(&server).await;        // abnormal exits propagate over links
    node.exit(&server, ExitReason::Kill).await?;         // exit signals to any pid
    me.monitor_nodes();                                  // NodeUp / NodeDown as messages
    node.send_after(me.pid(), "tick", Duration::from_secs(1), &opts).cancel();
    Ok(())
}

/// GenServer and Supervisor, with the test's [`Counter`].
#[rustfmt::skip]
#[allow(unused_variables)]
async fn behaviours(a: Node, b: Node, timeout: Duration) -> Res {
    use std::time::Duration;
    use partisan::{gen_server, ChildSpec, Node, Strategy, Supervisor};

    let counter = gen_server::start_named(&a, "counter", Counter::default()).await?;
    let n: u64 = gen_server::call(&b, &Node::name_on(a.name(), "counter")?, &Inc(1), timeout).await?;
    let sup = Supervisor::new(Strategy::OneForOne).intensity(3, Duration::from_secs(5))
        .child(ChildSpec::worker("counter", |sup| gen_server::start_link(sup, Counter::default())))
        .start(&a)?;
    Ok(())
}

/// The broadcast handler the broadcast snippet registers as "your BroadcastHandler": an
/// append-only log, each message identified by its origin and a sequence number.
struct MyLog {
    origin: NodeName,
    next: u64,
    delivered: HashMap<Vec<u8>, Vec<u8>>,
}

impl MyLog {
    fn new(me: &NodeName) -> Self {
        MyLog {
            origin: me.clone(),
            next: 0,
            delivered: HashMap::new(),
        }
    }
}

impl BroadcastHandler for MyLog {
    fn name(&self) -> &str {
        "log"
    }

    fn broadcast_data(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        self.next += 1;
        let id = format!("{}/{}", self.origin, self.next).into_bytes();
        Ok((id, msg.to_vec()))
    }

    fn merge(&mut self, id: &[u8], payload: &[u8], _receipt: Receipt<'_>) -> bool {
        if self.delivered.contains_key(id) {
            return false;
        }
        self.delivered.insert(id.to_vec(), payload.to_vec());
        true
    }

    fn is_stale(&self, id: &[u8]) -> bool {
        self.delivered.contains_key(id)
    }

    fn graft(&self, id: &[u8]) -> GraftReply {
        match self.delivered.get(id) {
            Some(payload) => GraftReply::Payload(payload.clone()),
            None => GraftReply::Missing,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The GenServer of the behaviours snippet: a counter that adds what it is called with.
#[derive(Default)]
struct Counter {
    value: u64,
}

/// The counter's call: add this much and answer the new value.
#[derive(Serialize, Deserialize)]
struct Inc(u64);

impl GenServer for Counter {
    type Call = Inc;
    type Reply = u64;
    type Cast = ();

    async fn handle_call(
        &mut self,
        Inc(n): Inc,
        _from: ReplyTo<u64>,
        _me: &mut Process,
    ) -> CallResponse<u64> {
        self.value += n;
        CallResponse::Reply(self.value)
    }
}

/// Longest a run of snippets may take; their own waits are bounded by `TIMEOUT`.
const DEADLINE: Duration = Duration::from_secs(60);

/// The `timeout` given to the snippets that take one.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `run` to its end, failing the test if it errs or outlives [`DEADLINE`].
async fn within_deadline(what: &str, run: impl Future<Output = Res>) {
    match tokio::time::timeout(DEADLINE, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what} failed: {e}"),
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// A node on loopback TCP (default `listen_addrs`: `127.0.0.1:0`, a free port).
async fn tcp_node(name: &str) -> Result<Node, Box<dyn Error>> {
    Ok(NodeBuilder::new(name).cookie("readme").start().await?)
}

/// Connects `from` to `to` and waits until every lane is up.
async fn connect(from: &Node, to: &Node) -> Res {
    from.connect(to.listen_addrs()[0]).await?;
    assert!(
        from.wait_fully_connected(to.name(), TIMEOUT).await,
        "{} not fully connected to {} within {TIMEOUT:?}",
        from.name(),
        to.name()
    );
    Ok(())
}

/// The first snippet, run: two nodes over loopback TCP (each on port 0), a message on a
/// keyed lane and its reply (asserted by the snippet), an echo server spawned by name and
/// answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_first_snippet_runs_over_loopback_tcp() {
    within_deadline(
        "the README's first snippet",
        two_nodes_a_message_and_its_reply(),
    )
    .await;
}

/// The broadcast snippet, run on one node: the broadcast is delivered to its own handler,
/// and the map's write reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_broadcast_snippet_runs_on_one_node() {
    within_deadline("the README's broadcast snippet", async {
        broadcast(NodeName::new("a@127.0.0.1")?).await
    })
    .await;
}

/// The RPC and behaviour snippets, run: three nodes over loopback TCP, `a` connected to the
/// two others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_rpc_and_behaviour_snippets_run_over_loopback_tcp() {
    within_deadline("the README's RPC and behaviour snippets", async {
        let a = tcp_node("ra@127.0.0.1").await?;
        let b = tcp_node("rb@127.0.0.1").await?;
        let c = tcp_node("rc@127.0.0.1").await?;
        connect(&a, &b).await?;
        connect(&a, &c).await?;
        rpc(a.clone(), b.clone(), c.clone(), TIMEOUT).await?;
        behaviours(a.clone(), b.clone(), TIMEOUT).await?;
        for node in [a, b, c] {
            node.shutdown().await;
        }
        Ok(())
    })
    .await;
}

/// One ```rust block of the README: where it starts and its non-blank lines, trimmed.
struct Block {
    line: usize,
    lines: Vec<String>,
}

fn rust_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, raw) in readme.lines().enumerate() {
        let line = raw.trim();
        match open.as_mut() {
            None if line == "```rust" => {
                open = Some(Block {
                    line: i + 1,
                    lines: Vec::new(),
                })
            }
            None => {}
            Some(_) if line == "```" => blocks.extend(open.take()),
            Some(block) if !line.is_empty() => block.lines.push(line.to_string()),
            Some(_) => {}
        }
    }
    assert!(
        open.is_none(),
        "README.md: the ```rust block opened at line {} is never closed",
        open.map_or(0, |b| b.line)
    );
    blocks
}

/// Whether `needle` occurs in `haystack` as a contiguous run.
fn contains_run(haystack: &[&str], needle: &[String]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.iter().zip(needle).all(|(h, n)| *h == n))
}

#[test]
fn readme_rust_snippets_are_the_ones_compiled_here() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let here: Vec<&str> = include_str!("readme.rs")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let blocks = rust_blocks(&readme);
    assert!(
        blocks.len() >= 6,
        "expected the README's six ```rust blocks, found {}",
        blocks.len()
    );
    let missing: Vec<String> = blocks
        .iter()
        .filter(|b| !contains_run(&here, &b.lines))
        .map(|b| {
            format!(
                "README.md line {}: `{}`",
                b.line,
                b.lines.first().map_or("", String::as_str)
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these ```rust blocks of README.md are not copied verbatim (as contiguous lines) into \
         crates/partisan/tests/readme.rs, so the test suite does not compile them:\n{}",
        missing.join("\n")
    );
}

#[test]
fn block_extraction_and_matching_see_a_changed_line() {
    let readme = "text\n```rust\nlet x = 1;\n\n  let y = x;\n```\n```sh\nls\n```\n";
    let blocks = rust_blocks(readme);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].line, 2);
    assert_eq!(blocks[0].lines, ["let x = 1;", "let y = x;"]);
    assert!(contains_run(
        &["fn f() {", "let x = 1;", "let y = x;", "}"],
        &blocks[0].lines
    ));
    assert!(!contains_run(
        &["let x = 1;", "let z = 0;", "let y = x;"],
        &blocks[0].lines
    ));
    assert!(!contains_run(
        &["let x = 2;", "let y = x;"],
        &blocks[0].lines
    ));
}
