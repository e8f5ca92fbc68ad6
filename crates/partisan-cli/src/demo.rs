//! `partisan demo`: a small cluster in one process, on loopback, over real TCP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use partisan::{ChannelConfig, ChannelName, Node, NodeBuilder, SendOptions};
use serde::{Deserialize, Serialize};

/// Options of `partisan demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
    nodes: u16,
    /// Messages each node sends to each other node on each channel.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Channels as NAME:PARALLELISM (repeatable); `default` and `membership` always exist.
    #[arg(long = "channel", default_values = ["data:4", "gossip:2"])]
    channels: Vec<String>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Seconds allowed for connecting and for delivery.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Serialize, Deserialize)]
struct DemoMsg {
    channel: String,
    seq: u64,
}

#[derive(Serialize)]
struct Report {
    nodes: usize,
    node_names: Vec<String>,
    channels: BTreeMap<String, u16>,
    lanes_up: usize,
    lanes_expected: usize,
    fully_connected: bool,
    messages_sent: u64,
    messages_delivered: u64,
    connect_ms: u128,
    deliver_ms: u128,
    per_channel: BTreeMap<String, ChannelLine>,
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

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let channels = parse_channels(&args.channels)?;
    let timeout = Duration::from_secs(args.timeout);
    let cookie = format!("demo-{}", std::process::id());
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
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
                    },
                );
            });
        }
        nodes.push(b.start().await.context("starting demo node")?);
    }

    // Connect every pair once (either side may dial; connections carry both directions).
    let t0 = Instant::now();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            a.connect_timeout(b.listen_addrs()[0], timeout)
                .await
                .with_context(|| format!("{} connecting to {}", a.name(), b.name()))?;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let fully = |nodes: &[Node]| {
        nodes.iter().all(|a| {
            nodes
                .iter()
                .all(|b| a.name() == b.name() || a.is_fully_connected(b.name()))
        })
    };
    while !fully(&nodes) {
        if tokio::time::Instant::now() >= deadline {
            bail!("cluster not fully connected within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_ms = t0.elapsed().as_millis();

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

    // Every node sends to every other node on every channel; half of the messages carry a
    // partition key (per-key order), half are spread over the lanes.
    let t1 = Instant::now();
    let mut sent = 0u64;
    let mut senders = Vec::new();
    for a in &nodes {
        let targets: Vec<_> = nodes
            .iter()
            .filter(|b| b.name() != a.name())
            .map(|b| Node::name_on(b.name(), "inbox"))
            .collect::<Result<_, _>>()?;
        let (a, chans, count) = (a.clone(), send_channels.clone(), args.messages);
        sent += count * targets.len() as u64 * chans.len() as u64;
        senders.push(tokio::spawn(async move {
            let me = a.process();
            for to in &targets {
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
                        me.send_typed(to, &msg, &opts).await?;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let total = |d: &BTreeMap<String, AtomicU64>| d.values().map(|c| c.load(Relaxed)).sum::<u64>();
    while total(&delivered) < sent {
        if tokio::time::Instant::now() >= deadline + timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deliver_ms = t1.elapsed().as_millis();

    let lanes_up: usize = nodes
        .iter()
        .map(|n| n.lanes().iter().map(|l| l.up).sum::<usize>())
        .sum();
    let lanes_expected: usize = nodes
        .iter()
        .map(|n| n.spec().total_lanes() * (nodes.len() - 1))
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
    let report = Report {
        nodes: nodes.len(),
        node_names: nodes.iter().map(|n| n.name().to_string()).collect(),
        channels: nodes[0]
            .spec()
            .channels()
            .iter()
            .map(|(k, v)| (k.to_string(), v.parallelism))
            .collect(),
        lanes_up,
        lanes_expected,
        fully_connected: fully(&nodes),
        messages_sent: sent,
        messages_delivered: total(&delivered),
        connect_ms,
        deliver_ms,
        per_channel,
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
    Ok(())
}

fn print_summary(r: &Report) {
    println!(
        "partisan demo: {} nodes in one process, loopback TCP, cookie-authenticated",
        r.nodes
    );
    println!("  nodes:     {}", r.node_names.join(", "));
    let chans: Vec<String> = r
        .channels
        .iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect();
    println!("  channels:  {} (lanes per peer)", chans.join(", "));
    println!(
        "  lanes up:  {}/{} counted at both ends ({} TCP connections, one per lane, each carrying both directions){}",
        r.lanes_up,
        r.lanes_expected,
        r.lanes_up / 2,
        if r.fully_connected {
            "; fully connected"
        } else {
            "; NOT fully connected"
        }
    );
    println!("  connected in {} ms", r.connect_ms);
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
}
