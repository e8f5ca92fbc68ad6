//! `partisan demo`: a small cluster in one process, on loopback, over real TCP, formed through
//! the chosen overlay; processes then message every overlay neighbour on every channel, and
//! nodes picked at random broadcast through Plumtree to the whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use partisan::{
    BroadcastHandler, ChannelConfig, ChannelName, GraftReply, Node, NodeBuilder, NodeName,
    OverlayKind, PlumtreeConfig, Receipt, SendError, SendOptions,
};
use serde::{Deserialize, Serialize};

/// Options of `partisan demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=256))]
    nodes: u16,
    /// Overlay: full-mesh, hyparview, client-server or static.
    #[arg(long, default_value = "full-mesh")]
    overlay: String,
    /// Messages each node sends to each overlay neighbour on each channel.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Channels as NAME:PARALLELISM (repeatable); `default` and `membership` always exist.
    #[arg(long = "channel", default_values = ["data:4", "gossip:2"])]
    channels: Vec<String>,
    /// Broadcasts sent through Plumtree, each from a node picked at random (0: none).
    #[arg(long, default_value_t = 200)]
    broadcasts: u64,
    /// Pause between two broadcasts (`5ms`, `1s`; a bare number is milliseconds; 0: all at
    /// once).
    #[arg(long, alias = "broadcast-interval-ms", default_value = "5ms", value_parser = crate::duration_arg::millis)]
    broadcast_interval: Duration,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Time allowed for forming the cluster and for delivery (`60s`, `2m`; a bare number is
    /// seconds).
    #[arg(long, default_value = "60s", value_parser = crate::duration_arg::secs)]
    timeout: Duration,
}

#[derive(Serialize, Deserialize)]
struct DemoMsg {
    channel: String,
    seq: u64,
}

#[derive(Serialize)]
struct Report {
    nodes: usize,
    overlay: String,
    node_names: Vec<String>,
    channels: BTreeMap<String, u16>,
    /// Lanes up to overlay neighbours, counted at both ends.
    lanes_up: usize,
    /// Lanes up to other nodes (temporary connections of joins, shuffles and walks, closed
    /// after a while), counted at both ends.
    transient_lanes: usize,
    /// Lanes every overlay edge calls for, counted at both ends.
    lanes_expected: usize,
    /// Every overlay edge has all its lanes up.
    fully_connected: bool,
    /// The graph of overlay edges over the live nodes is connected.
    connected: bool,
    /// Every overlay edge is mutual (a in b's view iff b in a's).
    symmetric: bool,
    members_min: usize,
    members_max: usize,
    messages_sent: u64,
    messages_delivered: u64,
    form_ms: u128,
    deliver_ms: u128,
    per_channel: BTreeMap<String, ChannelLine>,
    /// Broadcasts sent (each from a random node).
    broadcasts_sent: u64,
    /// Mean over the broadcasts of the fraction of nodes that delivered it (null without
    /// broadcasts).
    broadcast_reliability: Option<f64>,
    /// Least fraction of nodes that delivered one broadcast.
    broadcast_reliability_min: Option<f64>,
    /// Relative message redundancy over the last half of the broadcasts: per broadcast
    /// m / (n - 1) - 1, with m the payload copies received by all nodes and n the nodes that
    /// delivered it, averaged (null without broadcasts delivered by two nodes or more).
    broadcast_rmr: Option<f64>,
    /// From the first broadcast to the last delivery (or giving up).
    broadcast_ms: u128,
}

#[derive(Serialize)]
struct ChannelLine {
    messages_delivered: u64,
    frames_sent: u64,
    bytes_sent: u64,
}

fn parse_channels(specs: &[String]) -> anyhow::Result<BTreeMap<String, u16>> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (name, par) = s
            .split_once(':')
            .with_context(|| format!("--channel {s:?}: expected NAME:PARALLELISM"))?;
        ChannelName::new(name).with_context(|| format!("--channel {s:?}"))?;
        let par: u16 = par
            .parse()
            .with_context(|| format!("--channel {s:?}: parallelism is not a number"))?;
        out.insert(name.to_string(), par);
    }
    Ok(out)
}

/// Overlay edges as each node sees them.
fn edges(nodes: &[Node]) -> BTreeMap<NodeName, Vec<NodeName>> {
    nodes
        .iter()
        .map(|n| (n.name().clone(), n.active_view()))
        .collect()
}

fn is_symmetric(e: &BTreeMap<NodeName, Vec<NodeName>>) -> bool {
    e.iter().all(|(a, peers)| {
        peers
            .iter()
            .all(|b| e.get(b).is_some_and(|bp| bp.contains(a)))
    })
}

/// Whether the undirected graph of edges reaches every node (client-server clients are
/// reached through servers, so edges are taken in both directions).
fn is_connected(e: &BTreeMap<NodeName, Vec<NodeName>>) -> bool {
    let Some(first) = e.keys().next() else {
        return true;
    };
    let mut adj: BTreeMap<&NodeName, BTreeSet<&NodeName>> = BTreeMap::new();
    for (a, peers) in e {
        for b in peers {
            adj.entry(a).or_default().insert(b);
            adj.entry(b).or_default().insert(a);
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![first];
    while let Some(x) = todo.pop() {
        if seen.insert(x) {
            todo.extend(adj.get(x).into_iter().flatten());
        }
    }
    seen.len() == e.len()
}

fn settled(nodes: &[Node], overlay: OverlayKind) -> bool {
    let e = edges(nodes);
    let edges_up = e.iter().all(|(a, peers)| {
        let node = nodes
            .iter()
            .find(|n| n.name() == a)
            .expect("node of its own edge");
        !peers.is_empty() && peers.iter().all(|p| node.is_fully_connected(p))
    });
    let members_ok = match overlay {
        OverlayKind::FullMesh | OverlayKind::Static => {
            nodes.iter().all(|n| n.members().len() == nodes.len())
        }
        _ => true,
    };
    edges_up && members_ok && is_symmetric(&e) && is_connected(&e)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let channels = parse_channels(&args.channels)?;
    let overlay = OverlayKind::parse(&args.overlay).with_context(|| {
        format!(
            "--overlay {:?}: expected full-mesh, hyparview, client-server or static",
            args.overlay
        )
    })?;
    let timeout = args.timeout;
    let cookie = format!("demo-{}", std::process::id());
    let n = args.nodes as usize;
    let servers = (n / 4).max(1);
    let mut nodes = Vec::new();
    // Every node binds port 0 (no port is chosen ahead and raced for).
    for i in 0..n {
        let mut b = NodeBuilder::new(&format!("demo{i}@127.0.0.1"))
            .listen("127.0.0.1:0")
            .cookie(&cookie);
        for (name, par) in &channels {
            b = b.configure(|c| {
                c.channels.insert(
                    name.clone(),
                    ChannelConfig {
                        parallelism: Some(*par),
                        monotonic: false,
                        ..Default::default()
                    },
                );
            });
        }
        b = b.configure(|c| {
            c.overlay = overlay.as_str().to_string();
            // Demo timings: settle in seconds rather than Partisan's production periods.
            c.periodic_interval = 500;
            c.hyparview.shuffle_interval = 1_000;
            c.hyparview.random_promotion_interval = 300;
            if overlay == OverlayKind::ClientServer {
                c.tag = Some(if i < servers { "server" } else { "client" }.into());
            }
        });
        b = b.broadcast_handler(
            |n: &NodeName| Counter::new(n.clone()),
            PlumtreeConfig {
                lazy_tick: Duration::from_millis(200),
                graft_timeout: Duration::from_millis(500),
                graft_retry: Duration::from_millis(250),
                ..PlumtreeConfig::default()
            },
        );
        nodes.push(b.start().await.context("starting demo node")?);
    }

    // Everyone joins through node 0 (Partisan's test layout). Static membership is handed the
    // specs the nodes actually bound, as an operator's list would be.
    let t0 = Instant::now();
    if overlay == OverlayKind::Static {
        let specs: Vec<_> = nodes.iter().map(|n| n.spec().clone()).collect();
        for node in &nodes {
            node.update_members(specs.clone()).await;
        }
    } else {
        let seed = nodes[0].listen_addrs()[0];
        for node in &nodes[1..] {
            node.join_timeout(seed, timeout)
                .await
                .with_context(|| format!("{} joining through demo0", node.name()))?;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let show_progress = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    while !settled(&nodes, overlay) {
        if tokio::time::Instant::now() >= deadline {
            bail!("overlay did not settle within {timeout:?}");
        }
        if show_progress {
            let up: usize = nodes.iter().map(|n| n.active_view().len()).sum();
            eprint!("\rforming {overlay} overlay: {up} directed edges...");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if show_progress {
        eprintln!();
    }
    let form_ms = t0.elapsed().as_millis();

    // One inbox per node counting what it receives, per channel name carried in the message.
    let mut send_channels: Vec<String> = vec![ChannelName::DEFAULT.to_string()];
    send_channels.extend(channels.keys().cloned());
    let delivered: Arc<BTreeMap<String, AtomicU64>> = Arc::new(
        send_channels
            .iter()
            .map(|c| (c.clone(), AtomicU64::new(0)))
            .collect(),
    );
    for n in &nodes {
        let delivered = delivered.clone();
        n.spawn_named("inbox", move |mut p| async move {
            while let Some(env) = p.recv().await {
                if let Ok(m) = env.decode::<DemoMsg>() {
                    if let Some(c) = delivered.get(&m.channel) {
                        c.fetch_add(1, Relaxed);
                    }
                }
            }
        })?;
    }

    // Every node sends to each overlay neighbour on every channel; half of the messages carry
    // a partition key (per-key order), half are spread over the lanes.
    let t1 = Instant::now();
    let sent_count = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for a in &nodes {
        let targets: Vec<_> = a
            .active_view()
            .iter()
            .map(|b| Node::name_on(b, "inbox"))
            .collect::<Result<_, _>>()?;
        let (a, chans, count) = (a.clone(), send_channels.clone(), args.messages);
        let sent_count = sent_count.clone();
        senders.push(tokio::spawn(async move {
            let me = a.process();
            'target: for to in &targets {
                for c in &chans {
                    let ch = ChannelName::new(c)?;
                    for seq in 0..count {
                        let opts = if seq % 2 == 0 {
                            SendOptions::on(&ch).with_key(seq / 2)
                        } else {
                            SendOptions::on(&ch)
                        };
                        let msg = DemoMsg {
                            channel: c.clone(),
                            seq,
                        };
                        match me.send_typed(to, &msg, &opts).await {
                            Ok(()) => sent_count.fetch_add(1, Relaxed),
                            // The overlay replaced this neighbour since it settled (a rewiring):
                            // it is no longer a target.
                            Err(SendError::NotConnected(_)) => continue 'target,
                            Err(e) => return Err(e.into()),
                        };
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let sent = sent_count.load(Relaxed);
    let total = |d: &BTreeMap<String, AtomicU64>| d.values().map(|c| c.load(Relaxed)).sum::<u64>();
    let deliver_deadline = tokio::time::Instant::now() + timeout;
    while total(&delivered) < sent && tokio::time::Instant::now() < deliver_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deliver_ms = t1.elapsed().as_millis();

    let e = edges(&nodes);
    let (mut lanes_up, mut transient_lanes) = (0, 0);
    for n in &nodes {
        let neighbours: Vec<String> = e[n.name()].iter().map(|p| p.to_string()).collect();
        for l in n.lanes() {
            if neighbours.contains(&l.node) {
                lanes_up += l.up;
            } else {
                transient_lanes += l.up;
            }
        }
    }
    let lanes_expected: usize = nodes
        .iter()
        .map(|n| n.spec().total_lanes() * e[n.name()].len())
        .sum();
    let mut per_channel = BTreeMap::new();
    for c in &send_channels {
        let (frames, bytes) = nodes.iter().fold((0, 0), |(f, b), n| {
            let s = n.stats();
            let ch = s.channels.get(c).cloned().unwrap_or_default();
            (f + ch.frames_sent, b + ch.bytes_sent)
        });
        per_channel.insert(
            c.clone(),
            ChannelLine {
                messages_delivered: delivered[c].load(Relaxed),
                frames_sent: frames,
                bytes_sent: bytes,
            },
        );
    }
    let bcast = broadcast_phase(&nodes, &args, timeout, show_progress).await?;
    let member_counts: Vec<usize> = nodes.iter().map(|n| n.members().len()).collect();
    let report = Report {
        nodes: nodes.len(),
        overlay: overlay.to_string(),
        node_names: nodes.iter().map(|n| n.name().to_string()).collect(),
        channels: nodes[0]
            .spec()
            .channels()
            .iter()
            .map(|(k, v)| (k.to_string(), v.parallelism))
            .collect(),
        lanes_up,
        transient_lanes,
        lanes_expected,
        fully_connected: settled(&nodes, overlay),
        connected: is_connected(&e),
        symmetric: is_symmetric(&e),
        members_min: member_counts.iter().copied().min().unwrap_or(0),
        members_max: member_counts.iter().copied().max().unwrap_or(0),
        messages_sent: sent,
        messages_delivered: total(&delivered),
        form_ms,
        deliver_ms,
        per_channel,
        broadcasts_sent: bcast.sent,
        broadcast_reliability: bcast.reliability,
        broadcast_reliability_min: bcast.reliability_min,
        broadcast_rmr: bcast.rmr,
        broadcast_ms: bcast.ms,
    };
    for n in &nodes {
        n.shutdown().await;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&report);
    }
    if report.messages_delivered != report.messages_sent {
        bail!(
            "{} of {} messages delivered",
            report.messages_delivered,
            report.messages_sent
        );
    }
    if report.broadcast_reliability_min.is_some_and(|r| r < 1.0) {
        bail!(
            "some of the {} broadcasts did not reach every node",
            report.broadcasts_sent
        );
    }
    Ok(())
}

fn print_summary(r: &Report) {
    println!(
        "partisan demo: {} nodes, {} overlay, one process, loopback TCP, cookie-authenticated",
        r.nodes, r.overlay
    );
    if r.nodes <= 8 {
        println!("  nodes:     {}", r.node_names.join(", "));
    }
    let chans: Vec<String> = r
        .channels
        .iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect();
    println!("  channels:  {} (lanes per peer)", chans.join(", "));
    println!(
        "  overlay:   formed in {} ms; members per node {}..{}; graph {}; views {}",
        r.form_ms,
        r.members_min,
        r.members_max,
        if r.connected {
            "connected"
        } else {
            "NOT connected"
        },
        if r.symmetric {
            "symmetric"
        } else {
            "NOT symmetric"
        }
    );
    println!(
        "  lanes up:  {} of {} expected, counted at both ends (one TCP connection per lane, both directions)",
        r.lanes_up, r.lanes_expected
    );
    if r.transient_lanes > 0 {
        println!(
            "             and {} of temporary connections (joins, shuffles), closed after a while",
            r.transient_lanes
        );
    }
    let rate = r.messages_delivered as f64 / (r.deliver_ms.max(1) as f64 / 1000.0);
    println!(
        "  messages:  {} sent, {} delivered in {} ms ({:.0} msg/s)",
        r.messages_sent, r.messages_delivered, r.deliver_ms, rate
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>12}",
        "channel", "delivered", "frames", "bytes"
    );
    for (c, l) in &r.per_channel {
        println!(
            "  {:<12} {:>10} {:>10} {:>12}",
            c, l.messages_delivered, l.frames_sent, l.bytes_sent
        );
    }
    if let (Some(rel), Some(min)) = (r.broadcast_reliability, r.broadcast_reliability_min) {
        println!(
            "  broadcast: {} Plumtree broadcasts from random nodes, done in {} ms",
            r.broadcasts_sent, r.broadcast_ms
        );
        println!(
            "             reliability {rel:.3} (mean fraction of nodes delivering each; least {min:.3})"
        );
        match r.broadcast_rmr {
            Some(rmr) => println!(
                "             relative message redundancy {rmr:.3} over the last half (0: one copy per delivery)"
            ),
            None => println!("             relative message redundancy: n/a"),
        }
    }
}

/// The demo's broadcast handler: the message is its own id (the broadcast's number, 8 bytes);
/// it keeps every payload (for grafts) and counts, per message, the payload copies that came
/// from neighbours. It does no anti-entropy: what the demo measures is the tree.
struct Counter {
    node: NodeName,
    seen: BTreeMap<Vec<u8>, Seen>,
}

struct Seen {
    payload: Vec<u8>,
    copies: u32,
}

/// The demo handler's name.
const COUNTER: &str = "demo-count";

impl Counter {
    fn new(node: NodeName) -> Self {
        Counter {
            node,
            seen: BTreeMap::new(),
        }
    }

    /// (broadcast number, payload copies received) of every delivered message.
    fn tally(&self) -> Vec<(u64, u32)> {
        self.seen
            .iter()
            .filter_map(|(id, s)| {
                Some((u64::from_be_bytes(id.as_slice().try_into().ok()?), s.copies))
            })
            .collect()
    }
}

impl BroadcastHandler for Counter {
    fn name(&self) -> &str {
        COUNTER
    }

    fn broadcast_data(&mut self, msg: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        if msg.len() != 8 {
            return Err("demo broadcasts are 8-byte numbers".into());
        }
        Ok((msg.to_vec(), msg.to_vec()))
    }

    fn merge(&mut self, id: &[u8], payload: &[u8], receipt: Receipt<'_>) -> bool {
        let copy = u32::from(receipt.from != &self.node);
        match self.seen.get_mut(id) {
            Some(s) => {
                s.copies += copy;
                false
            }
            None => {
                self.seen.insert(
                    id.to_vec(),
                    Seen {
                        payload: payload.to_vec(),
                        copies: copy,
                    },
                );
                true
            }
        }
    }

    fn is_stale(&self, id: &[u8]) -> bool {
        self.seen.contains_key(id)
    }

    fn graft(&self, id: &[u8]) -> GraftReply {
        match self.seen.get(id) {
            Some(s) => GraftReply::Payload(s.payload.clone()),
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

/// What the broadcast phase measured.
struct BroadcastOutcome {
    sent: u64,
    reliability: Option<f64>,
    reliability_min: Option<f64>,
    rmr: Option<f64>,
    ms: u128,
}

/// A small non-cryptographic generator (splitmix64) for picking broadcasting nodes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Every node's tally of delivered broadcasts.
async fn tallies(nodes: &[Node]) -> anyhow::Result<Vec<Vec<(u64, u32)>>> {
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        out.push(
            n.with_broadcast_handler(COUNTER, |c: &Counter| c.tally())
                .await
                .with_context(|| format!("reading {}'s broadcasts", n.name()))?,
        );
    }
    Ok(out)
}

/// Broadcasts `--broadcasts` numbered messages, each from a random node, then waits until
/// every node delivered every one (or `timeout` passes, or nothing was delivered for 5 s)
/// and measures reliability and redundancy.
async fn broadcast_phase(
    nodes: &[Node],
    args: &DemoArgs,
    timeout: Duration,
    show_progress: bool,
) -> anyhow::Result<BroadcastOutcome> {
    let count = args.broadcasts;
    let t0 = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = SplitMix(seed);
    for k in 0..count {
        let from = &nodes[(rng.next() % nodes.len() as u64) as usize];
        from.broadcast(COUNTER, &k.to_be_bytes())
            .await
            .with_context(|| format!("broadcast {k} from {}", from.name()))?;
        if !args.broadcast_interval.is_zero() {
            tokio::time::sleep(args.broadcast_interval).await;
        }
    }
    let want = count as usize * nodes.len();
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut last, mut last_change) = (0usize, tokio::time::Instant::now());
    let t = loop {
        let t = tallies(nodes).await?;
        let have: usize = t.iter().map(Vec::len).sum();
        let now = tokio::time::Instant::now();
        if have != last {
            (last, last_change) = (have, now);
        }
        if have >= want || now >= deadline || now - last_change >= Duration::from_secs(5) {
            break t;
        }
        if show_progress {
            eprint!("\rbroadcasts: {have} of {want} deliveries...");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if show_progress && count > 0 {
        eprintln!();
    }
    let ms = t0.elapsed().as_millis();
    // Per broadcast: nodes that delivered it, and payload copies all nodes received.
    let mut per: Vec<(u64, u64)> = vec![(0, 0); count as usize];
    for node in &t {
        for &(k, copies) in node {
            if let Some(p) = per.get_mut(k as usize) {
                p.0 += 1;
                p.1 += u64::from(copies);
            }
        }
    }
    let n = nodes.len() as f64;
    let fractions: Vec<f64> = per.iter().map(|(d, _)| *d as f64 / n).collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let rmrs: Vec<f64> = per[per.len() / 2..]
        .iter()
        .filter(|(d, _)| *d > 1)
        .map(|(d, m)| *m as f64 / (*d - 1) as f64 - 1.0)
        .collect();
    Ok(BroadcastOutcome {
        sent: count,
        reliability: mean(&fractions),
        reliability_min: fractions.iter().copied().reduce(f64::min),
        rmr: mean(&rmrs),
        ms,
    })
}
