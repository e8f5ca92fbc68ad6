//! Node configuration: a plain value, loadable from TOML, validated with errors that name the
//! offending key. Names and defaults follow Partisan's where Partisan has the option
//! (`name`, `listen_addrs`, `parallelism`, `channels`, `channel_fallback`, `connection_ping`,
//! `periodic_interval`, `fanout`, `tag`, `reservations`, the `hyparview` table); durations are
//! integer milliseconds, as in Partisan. Partisan's `peer_service_manager` is `overlay` here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use partisan_core::auth::Cookie;
use partisan_core::broadcast::kv_map::KvConfig;
use partisan_core::broadcast::PlumtreeConfig;
use partisan_core::engine::Keepalive;
use partisan_core::id::{ChannelName, ChannelOpts, NodeName, NodeSpec, MAX_PARALLELISM};
use partisan_core::overlay::{HyParViewConfig, OverlayKind, Role, Tag};
use partisan_core::wire::{DEFAULT_MAX_FRAME_LEN, MIN_MAX_FRAME_LEN};
use serde::{Deserialize, Serialize};

/// Why a configuration was rejected. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has a bad value.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `channels.vnode.parallelism`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The TOML text does not parse or has an unknown key / a value of the wrong type.
    #[error("config file {path}: {message}")]
    Toml {
        /// File the text came from (`<string>` when parsed from a string).
        path: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Options of one channel in a [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Lanes per peer; defaults to the node-wide `parallelism`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u16>,
    /// Latest-value-wins channel (see `docs/semantics.md`).
    #[serde(default)]
    pub monotonic: bool,
    /// Bytes a connection of this channel reads or writes before letting the other
    /// connections on its thread run, and the most one write carries (4 KiB to 16 MiB;
    /// default 256 KiB; a single read may be larger, up to 1 MiB). Smaller makes a bulk
    /// channel delay other channels' messages less, at some cost to its own throughput; this
    /// node's setting governs its own side of the channel's connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_chunk: Option<usize>,
}

/// Default of [`ChannelConfig::write_chunk`].
pub const DEFAULT_WRITE_CHUNK: usize = 256 * 1024;

/// Application-level keepalive of every idle connection (Partisan's `connection_ping`). Off
/// by default: [`LivenessConfig`] finds a vanished host sooner, at a cost that does not grow
/// with the number of connections; turn this on to also probe each idle lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PingConfig {
    /// Whether idle connections are probed at all.
    pub enabled: bool,
    /// Milliseconds without inbound traffic before a probe is sent.
    pub idle_timeout: u64,
    /// Milliseconds to wait for an answer before probing again.
    pub timeout: u64,
    /// Unanswered probes after which the connection is closed as dead.
    pub max_attempts: u32,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            enabled: false,
            idle_timeout: 20_000,
            timeout: 10_000,
            max_attempts: 5,
        }
    }
}

/// Peer liveness probing (SWIM-style; not in Partisan): each `period` one connected peer that
/// was silent for that long is pinged on its control lane; one that answers none of
/// `attempts` pings `timeout` apart has its lanes cut (and is redialed like any lost peer).
/// The first unanswered ping is told to `fanout` peers, which probe the suspect themselves.
/// Defaults find a silently vanished host in under 10 s at about one ping per node per second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// Whether peers are probed at all.
    pub enabled: bool,
    /// Milliseconds between two probes started by this node.
    pub period: u64,
    /// Milliseconds to wait for an answer before pinging again.
    pub timeout: u64,
    /// Unanswered pings after which the peer's lanes are cut.
    pub attempts: u32,
    /// Peers told of a suspicion.
    pub fanout: usize,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        let d = partisan_core::liveness::Liveness::default();
        LivenessConfig {
            enabled: true,
            period: d.period.as_millis() as u64,
            timeout: d.timeout.as_millis() as u64,
            attempts: d.attempts,
            fanout: d.fanout,
        }
    }
}

/// HyParView parameters (Partisan's `hyparview` map; same names and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HyParViewSection {
    /// Largest active view.
    pub active_max_size: usize,
    /// Below this many active peers, passive ones are promoted.
    pub active_min_size: usize,
    /// Largest passive view.
    pub passive_max_size: usize,
    /// Active random walk length (ARWL).
    pub active_rwl: u8,
    /// Passive random walk length (PRWL).
    pub passive_rwl: u8,
    /// Milliseconds between shuffles.
    pub shuffle_interval: u64,
    /// Active peers in a shuffle sample.
    pub shuffle_k_active: usize,
    /// Passive peers in a shuffle sample.
    pub shuffle_k_passive: usize,
    /// Whether passive peers are promoted periodically while below `active_min_size`.
    pub random_promotion: bool,
    /// Milliseconds between promotion rounds.
    pub random_promotion_interval: u64,
    /// Mean milliseconds between rewirings of a node with a full active view (merges
    /// overlays after a partition heals; 0 disables).
    pub rewire_interval: u64,
}

impl Default for HyParViewSection {
    fn default() -> Self {
        let d = HyParViewConfig::default();
        HyParViewSection {
            active_max_size: d.active_max,
            active_min_size: d.active_min,
            passive_max_size: d.passive_max,
            active_rwl: d.arwl,
            passive_rwl: d.prwl,
            shuffle_interval: d.shuffle_interval.as_millis() as u64,
            shuffle_k_active: d.shuffle_k_active,
            shuffle_k_passive: d.shuffle_k_passive,
            random_promotion: d.random_promotion,
            random_promotion_interval: d.random_promotion_interval.as_millis() as u64,
            rewire_interval: d.rewire_interval.as_millis() as u64,
        }
    }
}

/// Plumtree settings of every broadcast handler the node registers from its configuration
/// (the `partisan node` replicated map), in milliseconds; Partisan's names where it has the
/// option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BroadcastSection {
    /// Milliseconds between two batches of announcements to lazy peers.
    pub lazy_tick_period: u64,
    /// Milliseconds between two anti-entropy exchanges started by this node.
    pub exchange_tick_period: u64,
    /// Exchanges running at once, at most.
    pub broadcast_start_exchange_limit: usize,
    /// Milliseconds after which an unfinished exchange is given up.
    pub exchange_timeout: u64,
    /// Milliseconds after the first announcement of a missing message before it is grafted
    /// (plus up to half of it at random).
    pub graft_timeout: u64,
    /// Milliseconds before the next announcer is asked.
    pub graft_retry: u64,
    /// The paper's optimisation threshold, in hops (0: off).
    pub optimize_threshold: u32,
    /// Announcements queued per lazy peer between two lazy ticks.
    pub max_outstanding_per_peer: usize,
    /// Missing messages tracked at once.
    pub max_missing: usize,
    /// Roots with their own shortcut links, at most.
    pub max_trees: usize,
    /// Milliseconds a deleted key of the replicated map is remembered (a node away longer can
    /// bring it back).
    pub kv_tombstone_grace: u64,
}

impl Default for BroadcastSection {
    fn default() -> Self {
        let d = PlumtreeConfig::default();
        BroadcastSection {
            lazy_tick_period: d.lazy_tick.as_millis() as u64,
            exchange_tick_period: d.exchange_tick.as_millis() as u64,
            broadcast_start_exchange_limit: d.max_exchanges,
            exchange_timeout: d.exchange_timeout.as_millis() as u64,
            graft_timeout: d.graft_timeout.as_millis() as u64,
            graft_retry: d.graft_retry.as_millis() as u64,
            optimize_threshold: d.optimize_threshold,
            max_outstanding_per_peer: d.max_outstanding_per_peer,
            max_missing: d.max_missing,
            max_trees: d.max_trees,
            kv_tombstone_grace: KvConfig::default().tombstone_grace_micros / 1_000,
        }
    }
}

impl BroadcastSection {
    /// The Plumtree settings, checked; the error names the key (`broadcast.KEY`).
    pub fn plumtree(&self) -> Result<PlumtreeConfig, ConfigError> {
        let ms = |key: &str, v: u64, lo: u64| -> Result<Duration, ConfigError> {
            check_range(&format!("broadcast.{key}"), v, lo, 86_400_000)?;
            Ok(Duration::from_millis(v))
        };
        let count = |key: &str, v: usize| -> Result<usize, ConfigError> {
            check_range(&format!("broadcast.{key}"), v as u64, 1, 1 << 24)?;
            Ok(v)
        };
        check_range(
            "broadcast.optimize_threshold",
            u64::from(self.optimize_threshold),
            0,
            1_000,
        )?;
        Ok(PlumtreeConfig {
            lazy_tick: ms("lazy_tick_period", self.lazy_tick_period, 1)?,
            exchange_tick: ms("exchange_tick_period", self.exchange_tick_period, 1)?,
            max_exchanges: count(
                "broadcast_start_exchange_limit",
                self.broadcast_start_exchange_limit,
            )?,
            exchange_timeout: ms("exchange_timeout", self.exchange_timeout, 1)?,
            graft_timeout: ms("graft_timeout", self.graft_timeout, 1)?,
            graft_retry: ms("graft_retry", self.graft_retry, 1)?,
            optimize_threshold: self.optimize_threshold,
            max_outstanding_per_peer: count(
                "max_outstanding_per_peer",
                self.max_outstanding_per_peer,
            )?,
            max_missing: count("max_missing", self.max_missing)?,
            max_trees: count("max_trees", self.max_trees)?,
            ..PlumtreeConfig::default()
        })
    }

    /// The replicated map's settings, checked.
    pub fn kv(&self) -> Result<KvConfig, ConfigError> {
        check_range(
            "broadcast.kv_tombstone_grace",
            self.kv_tombstone_grace,
            1,
            u64::MAX / 1_000,
        )?;
        Ok(KvConfig {
            tombstone_grace_micros: self.kv_tombstone_grace * 1_000,
        })
    }
}

/// Everything needed to start a node. Build it in code, or load it with
/// [`Config::from_toml_str`] / [`Config::from_file`]; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Node name, `name@host` (required).
    pub name: Option<String>,
    /// Addresses to listen on, `HOST:PORT`; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen_addrs: Vec<String>,
    /// Default lanes per peer for channels that do not set their own (Partisan default 1).
    pub parallelism: u16,
    /// Channels besides `default` and `membership`, by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// The cluster cookie (prefer `cookie_file`; exactly one of the two is required).
    pub cookie: Option<String>,
    /// File holding the cluster cookie (surrounding whitespace is ignored).
    pub cookie_file: Option<PathBuf>,
    /// File keeping this node's last creation (incarnation number), read and rewritten at
    /// start so every run gets a higher creation than the one before even when the wall clock
    /// went back (a device that boots before its clock is set). Without it the creation is the
    /// wall clock in microseconds, and a run started with the clock behind the previous run's
    /// start is refused by peers that knew that run. One file per node.
    pub creation_file: Option<PathBuf>,
    /// Send on the default channel when the requested one does not exist at the peer.
    pub channel_fallback: bool,
    /// Milliseconds allowed for a dial (a TCP connect, or the transport's equivalent).
    pub connect_timeout: u64,
    /// Milliseconds allowed for a whole handshake.
    pub handshake_timeout: u64,
    /// Milliseconds before the first redial of a lost connection (then doubling).
    pub reconnect_min: u64,
    /// Upper bound, in milliseconds, of the redial backoff while other lanes to the peer are
    /// up.
    pub reconnect_max: u64,
    /// Upper bound, in milliseconds, of the redial backoff of a member whose every lane is
    /// down (it is `unreachable`): the delay keeps doubling past `reconnect_max` up to this.
    /// Default 60 s.
    pub reconnect_outage_max: u64,
    /// Milliseconds a member may stay unreachable before this node removes it from the
    /// membership (full mesh: cluster-wide). 0, the default (as in Partisan), never removes it.
    pub down_after: u64,
    /// Keepalive of each idle lane (off by default).
    pub connection_ping: PingConfig,
    /// Peer liveness probing (on by default).
    pub liveness: LivenessConfig,
    /// Largest frame body accepted or sent, in bytes (at least 4096).
    pub max_frame_size: usize,
    /// Bound of each lane's send queue, in bytes.
    pub send_queue_bytes: usize,
    /// Bound of each process mailbox, in messages.
    pub mailbox_capacity: usize,
    /// Bound of each process mailbox, in payload bytes (a larger single message is admitted
    /// into an empty mailbox).
    pub mailbox_bytes: usize,
    /// RPC handlers run at once on this node, at most (requests beyond wait in the RPC
    /// server's mailbox, bounded by `mailbox_capacity`).
    pub rpc_concurrency: usize,
    /// Overlay: `full-mesh` (default), `hyparview`, `client-server` or `static`.
    pub overlay: String,
    /// Addresses (`IP:PORT`) to join at start, tried until one answers.
    pub seeds: Vec<String>,
    /// This node's tag: `client` or `server` in the client-server overlay; matched against
    /// HyParView reservations.
    pub tag: Option<String>,
    /// HyParView reserved active-view slots, by tag.
    pub reservations: Vec<String>,
    /// Members of the static overlay: `name@IP:PORT` (the host is the IP) or
    /// `name@host=IP:PORT`.
    pub static_members: Vec<String>,
    /// Full mesh: milliseconds between anti-entropy rounds (digest to one random member).
    pub periodic_interval: u64,
    /// Full mesh: members each membership change is pushed to.
    pub fanout: usize,
    /// HyParView parameters.
    pub hyparview: HyParViewSection,
    /// Plumtree and replicated-map settings of the handlers the node registers from its
    /// configuration.
    pub broadcast: BroadcastSection,
    /// Seed of the node's protocol randomness (overlay choices, redial and keepalive jitter),
    /// to replay a run; random when unset. It is logged at start either way. Handshake nonces
    /// never come from it.
    pub rng_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: None,
            listen_addrs: vec!["127.0.0.1:0".to_string()],
            parallelism: 1,
            channels: BTreeMap::new(),
            cookie: None,
            cookie_file: None,
            creation_file: None,
            channel_fallback: true,
            connect_timeout: 1_000,
            handshake_timeout: 5_000,
            reconnect_min: 100,
            reconnect_max: 5_000,
            reconnect_outage_max: 60_000,
            down_after: 0,
            connection_ping: PingConfig::default(),
            liveness: LivenessConfig::default(),
            max_frame_size: DEFAULT_MAX_FRAME_LEN,
            send_queue_bytes: 4 * 1024 * 1024,
            mailbox_capacity: 4096,
            mailbox_bytes: 64 * 1024 * 1024,
            rpc_concurrency: 256,
            overlay: OverlayKind::FullMesh.as_str().to_string(),
            seeds: Vec::new(),
            tag: None,
            reservations: Vec::new(),
            static_members: Vec::new(),
            periodic_interval: 10_000,
            fanout: 5,
            hyparview: HyParViewSection::default(),
            broadcast: BroadcastSection::default(),
            rng_seed: None,
        }
    }
}

/// Overlay settings, validated.
#[derive(Debug, Clone)]
pub(crate) enum OverlaySettings {
    FullMesh {
        periodic_interval: Duration,
        fanout: usize,
    },
    HyParView(HyParViewConfig),
    ClientServer(Role),
    Static(Vec<NodeSpec>),
}

impl OverlaySettings {
    pub(crate) fn kind(&self) -> OverlayKind {
        match self {
            OverlaySettings::FullMesh { .. } => OverlayKind::FullMesh,
            OverlaySettings::HyParView(_) => OverlayKind::HyParView,
            OverlaySettings::ClientServer(_) => OverlayKind::ClientServer,
            OverlaySettings::Static(_) => OverlayKind::Static,
        }
    }
}

/// Parses a static member: `name@host=IP:PORT`, or `name@IP:PORT` (the host is the IP).
fn parse_member(s: &str) -> Result<NodeSpec, String> {
    let (name, addr) = match s.split_once('=') {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => {
            let (n, port) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected name@IP:PORT or name@host=IP:PORT"))?;
            let host = n.split_once('@').map(|(_, h)| h).unwrap_or("");
            (n.to_string(), format!("{host}:{port}"))
        }
    };
    let name = NodeName::new(&name).map_err(|e| e.to_string())?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not IP:PORT"))?;
    NodeSpec::new(name, vec![addr], BTreeMap::new()).map_err(|e| e.to_string())
}

/// A configuration that passed validation, in the types the runtime uses.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) name: NodeName,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) channels: BTreeMap<ChannelName, ChannelOpts>,
    pub(crate) cookie: Cookie,
    pub(crate) creation_file: Option<PathBuf>,
    /// Channels whose `write_chunk` is not the default.
    pub(crate) write_chunk: BTreeMap<ChannelName, usize>,
    pub(crate) channel_fallback: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) reconnect_outage_max: Duration,
    pub(crate) down_after: Option<Duration>,
    pub(crate) ping: Option<Keepalive>,
    pub(crate) liveness: Option<partisan_core::liveness::Liveness>,
    pub(crate) rng_seed: Option<u64>,
    pub(crate) max_frame_len: usize,
    pub(crate) send_queue_bytes: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) mailbox_bytes: usize,
    pub(crate) rpc_concurrency: usize,
    pub(crate) overlay: OverlaySettings,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) tag: Option<Tag>,
}

impl Config {
    /// Parses TOML text. Unknown keys and values of the wrong type are errors naming the key.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<string>")
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Checks every key; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    /// The node spec this configuration advertises, with the listen addresses as configured
    /// (port 0 is replaced by the bound port once the node starts).
    pub fn node_spec(&self) -> Result<NodeSpec, ConfigError> {
        let r = self.resolve()?;
        NodeSpec::new(r.name, r.listen, r.channels).map_err(|e| invalid("channels", e.to_string()))
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, ConfigError> {
        self.broadcast.plumtree()?;
        self.broadcast.kv()?;
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| invalid("name", "required (name@host)"))?;
        let name = NodeName::new(name).map_err(|e| invalid("name", e.to_string()))?;
        if self.listen_addrs.is_empty() {
            return Err(invalid("listen_addrs", "at least one address is required"));
        }
        let mut listen = Vec::new();
        for (i, a) in self.listen_addrs.iter().enumerate() {
            let addr: SocketAddr = a.parse().map_err(|_| {
                invalid(
                    format!("listen_addrs[{i}]"),
                    format!("{a:?} is not HOST:PORT with an IP address host"),
                )
            })?;
            listen.push(addr);
        }
        check_range(
            "parallelism",
            self.parallelism as u64,
            1,
            MAX_PARALLELISM as u64,
        )?;
        let mut channels = BTreeMap::new();
        let mut write_chunk = BTreeMap::new();
        for (cname, c) in &self.channels {
            let key = format!("channels.{cname}");
            let ch = ChannelName::new(cname).map_err(|e| invalid(&key, e.to_string()))?;
            let parallelism = c.parallelism.unwrap_or(self.parallelism);
            check_range(
                &format!("{key}.parallelism"),
                parallelism as u64,
                1,
                MAX_PARALLELISM as u64,
            )?;
            if ch.as_str() == ChannelName::MEMBERSHIP && c.monotonic {
                return Err(invalid(
                    format!("{key}.monotonic"),
                    "the membership channel cannot be monotonic",
                ));
            }
            if let Some(w) = c.write_chunk {
                check_range(&format!("{key}.write_chunk"), w as u64, 4096, 16 << 20)?;
                write_chunk.insert(ch.clone(), w);
            }
            channels.insert(
                ch,
                ChannelOpts {
                    parallelism,
                    monotonic: c.monotonic,
                },
            );
        }
        // Like Partisan, the default channel follows the node-wide parallelism unless set.
        channels
            .entry(ChannelName::default_channel())
            .or_insert(ChannelOpts::with_parallelism(self.parallelism));
        if channels.len() > partisan_core::id::MAX_CHANNELS {
            return Err(invalid("channels", "at most 64 channels"));
        }
        let cookie = match (&self.cookie, &self.cookie_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "cookie",
                    "give either cookie or cookie_file, not both",
                ))
            }
            (None, None) => return Err(invalid("cookie", "required (or cookie_file)")),
            (Some(c), None) => {
                Cookie::new(c.as_bytes()).map_err(|e| invalid("cookie", e.to_string()))?
            }
            (None, Some(p)) => {
                let text = std::fs::read(p).map_err(|e| {
                    invalid("cookie_file", format!("cannot read {}: {e}", p.display()))
                })?;
                let trimmed = text.trim_ascii();
                Cookie::new(trimmed).map_err(|e| invalid("cookie_file", e.to_string()))?
            }
        };
        check_range("connect_timeout", self.connect_timeout, 1, 600_000)?;
        check_range("handshake_timeout", self.handshake_timeout, 1, 600_000)?;
        check_range("reconnect_min", self.reconnect_min, 1, 3_600_000)?;
        check_range(
            "reconnect_max",
            self.reconnect_max,
            self.reconnect_min,
            3_600_000,
        )?;
        check_range(
            "reconnect_outage_max",
            self.reconnect_outage_max,
            self.reconnect_max,
            3_600_000,
        )?;
        check_range("down_after", self.down_after, 0, 30 * 86_400_000)?;
        let p = &self.connection_ping;
        let ping = if p.enabled {
            check_range(
                "connection_ping.idle_timeout",
                p.idle_timeout,
                1,
                86_400_000,
            )?;
            check_range("connection_ping.timeout", p.timeout, 1, 86_400_000)?;
            check_range(
                "connection_ping.max_attempts",
                p.max_attempts as u64,
                1,
                1_000,
            )?;
            Some(Keepalive {
                idle: Duration::from_millis(p.idle_timeout),
                timeout: Duration::from_millis(p.timeout),
                max_attempts: p.max_attempts,
            })
        } else {
            None
        };
        let l = &self.liveness;
        let liveness = if l.enabled {
            check_range("liveness.period", l.period, 10, 3_600_000)?;
            check_range("liveness.timeout", l.timeout, 10, 3_600_000)?;
            check_range("liveness.attempts", l.attempts as u64, 1, 100)?;
            check_range("liveness.fanout", l.fanout as u64, 0, 64)?;
            Some(partisan_core::liveness::Liveness {
                period: Duration::from_millis(l.period),
                timeout: Duration::from_millis(l.timeout),
                attempts: l.attempts,
                fanout: l.fanout,
            })
        } else {
            None
        };
        check_range(
            "max_frame_size",
            self.max_frame_size as u64,
            MIN_MAX_FRAME_LEN as u64,
            (u32::MAX >> 1) as u64,
        )?;
        check_range(
            "send_queue_bytes",
            self.send_queue_bytes as u64,
            1024,
            1 << 40,
        )?;
        check_range("mailbox_capacity", self.mailbox_capacity as u64, 1, 1 << 24)?;
        check_range("mailbox_bytes", self.mailbox_bytes as u64, 1024, 1 << 40)?;
        check_range("rpc_concurrency", self.rpc_concurrency as u64, 1, 1 << 20)?;
        let tag = match &self.tag {
            Some(t) => Some(Tag::new(t).map_err(|e| invalid("tag", e))?),
            None => None,
        };
        let mut reservations = Vec::new();
        for (i, t) in self.reservations.iter().enumerate() {
            reservations.push(Tag::new(t).map_err(|e| invalid(format!("reservations[{i}]"), e))?);
        }
        let mut seeds = Vec::new();
        for (i, a) in self.seeds.iter().enumerate() {
            seeds
                .push(a.parse::<SocketAddr>().map_err(|_| {
                    invalid(format!("seeds[{i}]"), format!("{a:?} is not IP:PORT"))
                })?);
        }
        let kind = OverlayKind::parse(&self.overlay).ok_or_else(|| {
            invalid(
                "overlay",
                format!(
                    "{:?}: expected full-mesh, hyparview, client-server or static",
                    self.overlay
                ),
            )
        })?;
        let overlay = match kind {
            OverlayKind::FullMesh => {
                check_range("periodic_interval", self.periodic_interval, 1, 86_400_000)?;
                check_range("fanout", self.fanout as u64, 0, 1_000)?;
                OverlaySettings::FullMesh {
                    periodic_interval: Duration::from_millis(self.periodic_interval),
                    fanout: self.fanout,
                }
            }
            OverlayKind::HyParView => {
                let h = &self.hyparview;
                check_range(
                    "hyparview.active_max_size",
                    h.active_max_size as u64,
                    1,
                    1_000,
                )?;
                check_range(
                    "hyparview.active_min_size",
                    h.active_min_size as u64,
                    0,
                    h.active_max_size as u64,
                )?;
                check_range(
                    "hyparview.passive_max_size",
                    h.passive_max_size as u64,
                    0,
                    100_000,
                )?;
                check_range(
                    "hyparview.shuffle_interval",
                    h.shuffle_interval,
                    1,
                    86_400_000,
                )?;
                check_range(
                    "hyparview.random_promotion_interval",
                    h.random_promotion_interval,
                    1,
                    86_400_000,
                )?;
                check_range(
                    "hyparview.shuffle_k_active",
                    h.shuffle_k_active as u64,
                    0,
                    100,
                )?;
                check_range(
                    "hyparview.shuffle_k_passive",
                    h.shuffle_k_passive as u64,
                    0,
                    100,
                )?;
                if reservations.len() > h.active_max_size {
                    return Err(invalid(
                        "reservations",
                        "more reservations than hyparview.active_max_size",
                    ));
                }
                OverlaySettings::HyParView(HyParViewConfig {
                    active_max: h.active_max_size,
                    active_min: h.active_min_size,
                    passive_max: h.passive_max_size,
                    arwl: h.active_rwl,
                    prwl: h.passive_rwl,
                    shuffle_interval: Duration::from_millis(h.shuffle_interval),
                    shuffle_k_active: h.shuffle_k_active,
                    shuffle_k_passive: h.shuffle_k_passive,
                    random_promotion: h.random_promotion,
                    random_promotion_interval: Duration::from_millis(h.random_promotion_interval),
                    reservations: reservations.clone(),
                    rewire_interval: Duration::from_millis(h.rewire_interval),
                })
            }
            OverlayKind::ClientServer => {
                let role = Role::from_tag(tag.as_ref()).ok_or_else(|| {
                    invalid(
                        "tag",
                        "the client-server overlay needs tag = \"client\" or \"server\"",
                    )
                })?;
                OverlaySettings::ClientServer(role)
            }
            OverlayKind::Static => {
                let mut members = Vec::new();
                for (i, m) in self.static_members.iter().enumerate() {
                    members.push(
                        parse_member(m).map_err(|e| invalid(format!("static_members[{i}]"), e))?,
                    );
                }
                OverlaySettings::Static(members)
            }
        };
        Ok(Resolved {
            name,
            listen,
            channels,
            cookie,
            creation_file: self.creation_file.clone(),
            write_chunk,
            channel_fallback: self.channel_fallback,
            connect_timeout: Duration::from_millis(self.connect_timeout),
            handshake_timeout: Duration::from_millis(self.handshake_timeout),
            reconnect_min: Duration::from_millis(self.reconnect_min),
            reconnect_max: Duration::from_millis(self.reconnect_max),
            reconnect_outage_max: Duration::from_millis(self.reconnect_outage_max),
            down_after: (self.down_after > 0).then(|| Duration::from_millis(self.down_after)),
            ping,
            liveness,
            rng_seed: self.rng_seed,
            max_frame_len: self.max_frame_size,
            send_queue_bytes: self.send_queue_bytes,
            mailbox_capacity: self.mailbox_capacity,
            mailbox_bytes: self.mailbox_bytes,
            rpc_concurrency: self.rpc_concurrency,
            overlay,
            seeds,
            tag,
        })
    }
}

fn check_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(key, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config {
            name: Some("a@127.0.0.1".into()),
            cookie: Some("c".into()),
            ..Config::default()
        }
    }

    #[test]
    fn toml_with_channels_parses_and_resolves() {
        let c = Config::from_toml_str(
            r#"
            name = "n1@127.0.0.1"
            listen_addrs = ["127.0.0.1:0"]
            cookie = "secret"
            parallelism = 2
            [channels.vnode]
            parallelism = 4
            [channels.state]
            monotonic = true
            [connection_ping]
            enabled = true
            idle_timeout = 500
            [liveness]
            timeout = 800
            "#,
        )
        .unwrap();
        let r = c.resolve().unwrap();
        let get = |n: &str| r.channels[&ChannelName::new(n).unwrap()];
        assert_eq!(get("vnode").parallelism, 4);
        assert_eq!(get("state").parallelism, 2);
        assert!(get("state").monotonic);
        assert_eq!(get("default").parallelism, 2);
        assert_eq!(r.ping.unwrap().idle, Duration::from_millis(500));
        assert_eq!(r.ping.unwrap().max_attempts, 5);
        let l = r.liveness.unwrap();
        assert_eq!(l.timeout, Duration::from_millis(800));
        assert_eq!(l.attempts, 3);
        // Defaults: liveness probing on, per-lane keepalive off.
        let d = base().resolve().unwrap();
        assert!(d.liveness.is_some() && d.ping.is_none());
        let mut off = base();
        off.liveness.attempts = 0;
        let err = off.resolve().unwrap_err().to_string();
        assert!(err.contains("liveness.attempts"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::from_toml_str("nmae = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nmae"), "{e}");
        let e = Config::from_toml_str("[channels.x]\nparalelism = 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("paralelism"), "{e}");
        let e = Config::from_toml_str("parallelism = \"four\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("parallelism"), "{e}");
        let mut c = base();
        c.channels.insert(
            "vnode".into(),
            ChannelConfig {
                parallelism: Some(0),
                ..Default::default()
            },
        );
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("channels.vnode.parallelism"), "{e}");
        let mut c = base();
        c.channels.insert(
            "bulk".into(),
            ChannelConfig {
                write_chunk: Some(100),
                ..Default::default()
            },
        );
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("channels.bulk.write_chunk"), "{e}");
        let mut c = base();
        c.listen_addrs = vec!["localhost:80".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("listen_addrs[0]"));
        let mut c = base();
        c.name = Some("nohost".into());
        assert!(c.validate().unwrap_err().to_string().contains("`name`"));
        let mut c = base();
        c.cookie = None;
        assert!(c.validate().unwrap_err().to_string().contains("`cookie`"));
        let mut c = base();
        c.max_frame_size = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_frame_size"));
    }

    #[test]
    fn overlay_keys_parse_and_bad_ones_are_named() {
        let c = Config::from_toml_str(
            r#"
            name = "n1@127.0.0.1"
            cookie = "s"
            overlay = "hyparview"
            seeds = ["127.0.0.1:4000"]
            reservations = ["db"]
            [hyparview]
            active_max_size = 5
            shuffle_interval = 2000
            "#,
        )
        .unwrap();
        let r = c.resolve().unwrap();
        let OverlaySettings::HyParView(h) = r.overlay else {
            panic!("hyparview expected")
        };
        assert_eq!((h.active_max, h.active_min, h.passive_max), (5, 3, 30));
        assert_eq!(h.shuffle_interval, Duration::from_secs(2));
        assert_eq!(h.reservations.len(), 1);
        assert_eq!(r.seeds.len(), 1);

        let named = |c: Config, key: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key} not named in: {e}");
        };
        let mut c = base();
        c.overlay = "hyperview".into();
        named(c, "`overlay`");
        let mut c = base();
        c.overlay = "client-server".into();
        named(c, "`tag`");
        let mut c = base();
        c.overlay = "hyparview".into();
        c.hyparview.active_min_size = 9;
        named(c, "hyparview.active_min_size");
        let mut c = base();
        c.overlay = "static".into();
        c.static_members = vec!["n2@127.0.0.1:4001".into(), "oops".into()];
        named(c, "static_members[1]");
        let mut c = base();
        c.seeds = vec!["nowhere".into()];
        named(c, "seeds[0]");
        let mut c = base();
        c.broadcast.lazy_tick_period = 0;
        named(c, "broadcast.lazy_tick_period");
        let mut c = base();
        c.broadcast.max_missing = 0;
        named(c, "broadcast.max_missing");
        let c = Config::from_toml_str(
            "[broadcast]\nexchange_tick_period = 500\noptimize_threshold = 3\nkv_tombstone_grace = 60000",
        )
        .unwrap();
        let p = c.broadcast.plumtree().unwrap();
        assert_eq!(p.exchange_tick, Duration::from_millis(500));
        assert_eq!(p.optimize_threshold, 3);
        assert_eq!(c.broadcast.kv().unwrap().tombstone_grace_micros, 60_000_000);
        let e = Config::from_toml_str("[hyparview]\nactive_max = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("active_max"), "{e}");
        // Static members in both accepted forms.
        let mut c = base();
        c.overlay = "static".into();
        c.static_members = vec!["n2@127.0.0.1:4001".into(), "n3@host=127.0.0.1:4002".into()];
        let OverlaySettings::Static(m) = c.resolve().unwrap().overlay else {
            panic!("static expected")
        };
        assert_eq!(m[1].name().as_str(), "n3@host");
        assert_eq!(m[1].listen_addrs()[0].port(), 4002);
    }
}
