//! `partisan node`: run one node from the shell.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use partisan::{ChannelConfig, Config, ConfigError, NodeBuilder};

/// Options of `partisan node`. Flags override the values of `--config`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// TOML configuration file (same keys as `partisan::Config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node name, name@host.
    #[arg(long)]
    name: Option<String>,
    /// Address to listen on, IP:PORT (repeatable; port 0 picks one).
    #[arg(long = "listen")]
    listen: Vec<String>,
    /// Peer to connect to and keep connected, IP:PORT (repeatable).
    #[arg(long = "connect")]
    connect: Vec<SocketAddr>,
    /// Channel as NAME:PARALLELISM, optionally NAME:PARALLELISM:monotonic (repeatable).
    #[arg(long = "channel", value_parser = parse_channel)]
    channel: Vec<(String, ChannelConfig)>,
    /// Default lanes per peer for channels that do not set their own.
    #[arg(long)]
    parallelism: Option<u16>,
    /// Cluster cookie.
    #[arg(long, conflicts_with = "cookie_file")]
    cookie: Option<String>,
    /// File holding the cluster cookie.
    #[arg(long)]
    cookie_file: Option<PathBuf>,
    /// File remembering this node's last creation, so a restart is always the newer run even
    /// if the clock went back (read and rewritten at start).
    #[arg(long)]
    creation_file: Option<PathBuf>,
    /// Overlay: full-mesh, hyparview, client-server or static.
    #[arg(long)]
    overlay: Option<String>,
    /// Join the cluster through the node at IP:PORT (repeatable: tried until one answers).
    #[arg(long = "join")]
    join: Vec<String>,
    /// Tag of this node (client or server for client-server; HyParView reservations).
    #[arg(long)]
    tag: Option<String>,
    /// Serve `GET /status` (JSON) and the replicated map (`PUT`, `GET`, `DELETE /kv/KEY`,
    /// `GET /kv`) over HTTP on this IP:PORT.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Seed of the node's protocol randomness, to replay a run (printed at start; random when
    /// unset).
    #[arg(long)]
    rng_seed: Option<u64>,
}

fn parse_channel(s: &str) -> Result<(String, ChannelConfig), String> {
    let mut parts = s.split(':');
    let name = parts.next().filter(|n| !n.is_empty());
    let par = parts.next();
    let flag = parts.next();
    let (Some(name), Some(par)) = (name, par) else {
        return Err(format!("{s:?}: expected NAME:PARALLELISM[:monotonic]"));
    };
    let parallelism: u16 = par
        .parse()
        .map_err(|_| format!("{s:?}: parallelism {par:?} is not a number"))?;
    let monotonic = match flag {
        None => false,
        Some("monotonic") => true,
        Some(other) => return Err(format!("{s:?}: unknown channel flag {other:?}")),
    };
    if parts.next().is_some() {
        return Err(format!("{s:?}: expected NAME:PARALLELISM[:monotonic]"));
    }
    Ok((
        name.to_string(),
        ChannelConfig {
            parallelism: Some(parallelism),
            monotonic,
            ..Default::default()
        },
    ))
}

/// The configuration the flags describe, on top of `--config`.
pub fn config_from(args: &NodeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(n) = &args.name {
        cfg.name = Some(n.clone());
    }
    if !args.listen.is_empty() {
        cfg.listen_addrs = args.listen.clone();
    }
    for (name, c) in &args.channel {
        cfg.channels.insert(name.clone(), c.clone());
    }
    if let Some(p) = args.parallelism {
        cfg.parallelism = p;
    }
    if let Some(c) = &args.cookie {
        cfg.cookie = Some(c.clone());
        cfg.cookie_file = None;
    }
    if let Some(f) = &args.cookie_file {
        cfg.cookie_file = Some(f.clone());
        cfg.cookie = None;
    }
    if let Some(f) = &args.creation_file {
        cfg.creation_file = Some(f.clone());
    }
    if let Some(o) = &args.overlay {
        cfg.overlay = o.clone();
    }
    let file_seeds = cfg.seeds.len();
    if !args.join.is_empty() {
        cfg.seeds.extend(args.join.iter().cloned());
    }
    if let Some(t) = &args.tag {
        cfg.tag = Some(t.clone());
    }
    if let Some(seed) = args.rng_seed {
        cfg.rng_seed = Some(seed);
    }
    if cfg.name.is_none() {
        bail!("config key `name`: required (--name or name in --config)");
    }
    cfg.validate()
        .map_err(|e| in_flag_terms(e, args, file_seeds))?;
    Ok(cfg)
}

/// A configuration error about a value the user gave as a flag, named as that flag (`--join
/// X` rather than `seeds[2]`); errors about the file's own keys stay as they are. A cookie's
/// value is never repeated.
fn in_flag_terms(e: ConfigError, args: &NodeArgs, file_seeds: usize) -> anyhow::Error {
    let ConfigError::Invalid { key, reason } = &e else {
        return e.into();
    };
    let indexed = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|k| k.strip_suffix(']'))
            .and_then(|i| i.parse::<usize>().ok())
    };
    let flag = if let Some(i) = indexed("seeds[") {
        i.checked_sub(file_seeds)
            .and_then(|j| args.join.get(j))
            .map(|v| format!("--join {v}"))
    } else if let Some(i) = indexed("listen_addrs[") {
        args.listen.get(i).map(|v| format!("--listen {v}"))
    } else {
        match key.as_str() {
            "name" => args.name.as_ref().map(|v| format!("--name {v}")),
            "overlay" => args.overlay.as_ref().map(|v| format!("--overlay {v}")),
            "tag" => args.tag.as_ref().map(|v| format!("--tag {v}")),
            "parallelism" => args.parallelism.map(|v| format!("--parallelism {v}")),
            "cookie" => args.cookie.as_ref().map(|_| "--cookie".to_string()),
            "cookie_file" => {
                (args.cookie_file.as_ref()).map(|p| format!("--cookie-file {}", p.display()))
            }
            k => k.strip_prefix("channels.").and_then(|rest| {
                let (name, field) = rest.split_once('.').unwrap_or((rest, ""));
                let (_, c) = args.channel.iter().find(|(n, _)| n == name)?;
                let par = c.parallelism.map(|p| format!(":{p}")).unwrap_or_default();
                let mono = if c.monotonic { ":monotonic" } else { "" };
                let field = if field.is_empty() {
                    String::new()
                } else {
                    format!(" ({field})")
                };
                Some(format!("--channel {name}{par}{mono}{field}"))
            }),
        }
    };
    match flag {
        Some(flag) => anyhow::anyhow!("{flag}: {reason}"),
        None => e.into(),
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let cfg = config_from(&args)?;
    // Every node carries the replicated key-value map ("kv", on the default channel), so a
    // cluster can be used from the shell through the admin endpoint; `[broadcast]` in the
    // config file sets its Plumtree and tombstone settings (checked by `validate`).
    let plumtree = cfg.broadcast.plumtree()?;
    let kv = cfg.broadcast.kv()?;
    // The admin port is bound first: a busy one stops the command before the node joins.
    let admin = match args.admin {
        Some(addr) => Some(
            crate::admin::bind(addr)
                .await
                .with_context(|| format!("--admin {addr}: cannot listen"))?,
        ),
        None => None,
    };
    let node = NodeBuilder::from_config(cfg)
        .kv_map(kv, plumtree)
        .start()
        .await
        .context("starting node")?;
    eprintln!("rng seed {} (replay with --rng-seed)", node.rng_seed());
    eprintln!(
        "node {} ({} overlay) listening on {}",
        node.name(),
        node.overlay(),
        node.listen_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for addr in &args.connect {
        let (node, addr) = (node.clone(), *addr);
        // Connects keep retrying in the background; report the first outcome only.
        tokio::spawn(async move {
            match node.connect(addr).await {
                Ok(peer) => tracing::info!(%addr, %peer, "connected"),
                Err(e) => tracing::warn!(%addr, error = %e, "connect"),
            }
        });
    }
    if let Some(listener) = admin {
        let bound = crate::admin::serve(node.clone(), listener).context("admin endpoint")?;
        eprintln!("admin endpoint: http://{bound}/status");
        eprintln!("replicated map: http://{bound}/kv");
    }
    wait_for_signal().await?;
    tracing::info!("signal received: leaving the cluster and shutting down");
    node.leave().await;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_flags_parse_and_bad_ones_explain() {
        let (n, c) = parse_channel("vnode:4").unwrap();
        assert_eq!(
            (n.as_str(), c.parallelism, c.monotonic),
            ("vnode", Some(4), false)
        );
        assert!(parse_channel("state:2:monotonic").unwrap().1.monotonic);
        assert!(parse_channel("vnode")
            .unwrap_err()
            .contains("NAME:PARALLELISM"));
        assert!(parse_channel("vnode:x")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_channel("v:1:fast").unwrap_err().contains("fast"));
    }

    fn args(flags: &[&str]) -> NodeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let argv = std::iter::once("partisan").chain(flags.iter().copied());
        <Cli as clap::Parser>::parse_from(argv).node
    }

    #[test]
    fn config_errors_about_flags_name_the_flags() {
        let base = ["--name", "a@127.0.0.1", "--cookie", "s3cret-cookie-value"];
        let err = |extra: &[&str]| {
            let flags: Vec<&str> = base.iter().chain(extra).copied().collect();
            format!("{:#}", config_from(&args(&flags)).unwrap_err())
        };
        let e = err(&["--join", "127.0.0.1:1", "--join", "db.local:4369"]);
        assert!(e.starts_with("--join db.local:4369: "), "{e}");
        assert!(e.contains("not IP:PORT"), "{e}");
        assert!(!e.contains("seeds["), "{e}");
        let e = err(&["--overlay", "ring"]);
        assert!(e.starts_with("--overlay ring: "), "{e}");
        let e = err(&["--listen", "localhost:0"]);
        assert!(e.starts_with("--listen localhost:0: "), "{e}");
        let e = format!(
            "{:#}",
            config_from(&args(&["--name", "a@127.0.0.1", "--cookie", ""])).unwrap_err()
        );
        assert!(e.starts_with("--cookie: "), "{e}");
    }
}
