//! Counters: per channel and per node, readable through [`crate::Node::stats`] and exported
//! through the `metrics` facade (so any installed recorder, e.g. a Prometheus exporter, sees
//! them under the names below).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use partisan_core::broadcast::BroadcastStats;
use partisan_core::id::ChannelName;
use serde::Serialize;

/// Live counters of one channel, summed over all peers and lanes.
#[derive(Debug)]
pub(crate) struct ChannelStats {
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    queued_bytes: AtomicI64,
    dropped: AtomicU64,
    m_frames_out: metrics::Counter,
    m_bytes_out: metrics::Counter,
    m_frames_in: metrics::Counter,
    m_bytes_in: metrics::Counter,
    m_queued: metrics::Gauge,
    m_dropped: metrics::Counter,
}

impl ChannelStats {
    pub(crate) fn new(node: &str, channel: &ChannelName) -> Self {
        let labels = [
            ("node", node.to_string()),
            ("channel", channel.as_str().to_string()),
        ];
        ChannelStats {
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            queued_bytes: AtomicI64::new(0),
            dropped: AtomicU64::new(0),
            m_frames_out: metrics::counter!("partisan_frames_sent_total", &labels),
            m_bytes_out: metrics::counter!("partisan_bytes_sent_total", &labels),
            m_frames_in: metrics::counter!("partisan_frames_received_total", &labels),
            m_bytes_in: metrics::counter!("partisan_bytes_received_total", &labels),
            m_queued: metrics::gauge!("partisan_send_queue_bytes", &labels),
            m_dropped: metrics::counter!("partisan_monotonic_dropped_total", &labels),
        }
    }

    pub(crate) fn sent(&self, frames: u64, bytes: u64) {
        self.frames_out.fetch_add(frames, Relaxed);
        self.bytes_out.fetch_add(bytes, Relaxed);
        self.m_frames_out.increment(frames);
        self.m_bytes_out.increment(bytes);
    }

    pub(crate) fn received(&self, frames: u64, bytes: u64) {
        self.frames_in.fetch_add(frames, Relaxed);
        self.bytes_in.fetch_add(bytes, Relaxed);
        self.m_frames_in.increment(frames);
        self.m_bytes_in.increment(bytes);
    }

    pub(crate) fn queued(&self, delta: i64) {
        let now = self.queued_bytes.fetch_add(delta, Relaxed) + delta;
        self.m_queued.set(now as f64);
    }

    pub(crate) fn dropped(&self, frames: u64) {
        self.dropped.fetch_add(frames, Relaxed);
        self.m_dropped.increment(frames);
    }

    #[cfg(test)]
    pub(crate) fn dropped_count(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> ChannelSnapshot {
        ChannelSnapshot {
            frames_sent: self.frames_out.load(Relaxed),
            bytes_sent: self.bytes_out.load(Relaxed),
            frames_received: self.frames_in.load(Relaxed),
            bytes_received: self.bytes_in.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed).max(0) as u64,
            monotonic_dropped: self.dropped.load(Relaxed),
        }
    }
}

/// Node-wide counters of events that are not tied to one channel.
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) undeliverable: AtomicU64,
    pub(crate) stale_pid: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) handshakes_raced: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) overlay_rejected: AtomicU64,
    pub(crate) overlay_dropped: AtomicU64,
    pub(crate) peers_known: AtomicU64,
    pub(crate) broadcast_sent: AtomicU64,
    pub(crate) broadcast_dropped: AtomicU64,
    pub(crate) broadcast_unknown_handler: AtomicU64,
    pub(crate) processes_ended: AtomicU64,
    pub(crate) process_panics: AtomicU64,
    /// The engine's signal table and counters, as the driver last published them.
    pub(crate) monitors_out: AtomicU64,
    pub(crate) monitors_in: AtomicU64,
    pub(crate) remote_links: AtomicU64,
    pub(crate) alive_queries: AtomicU64,
    pub(crate) signals_sent: AtomicU64,
    pub(crate) signals_dropped: AtomicU64,
    pub(crate) signal_lanes_cut: AtomicU64,
    pub(crate) members_downed: AtomicU64,
    pub(crate) liveness_pings: AtomicU64,
    pub(crate) peers_unresponsive: AtomicU64,
    pub(crate) peers_lost: AtomicU64,
    pub(crate) peer_losses_heard: AtomicU64,
    pub(crate) downs: AtomicU64,
    pub(crate) exit_signals: AtomicU64,
}

/// Every counter of a node.
#[derive(Debug)]
pub(crate) struct Stats {
    channels: BTreeMap<ChannelName, Arc<ChannelStats>>,
    /// Lanes of channels only a peer declares are counted here, under the label `other`.
    other: Arc<ChannelStats>,
    pub(crate) node: NodeCounters,
    /// Per broadcast handler, as the driver last published them.
    pub(crate) broadcast: arc_swap::ArcSwap<BTreeMap<String, BroadcastSnapshot>>,
    pub(crate) rpc: RpcCounters,
}

impl Stats {
    pub(crate) fn new<'a>(node: &str, channels: impl Iterator<Item = &'a ChannelName>) -> Self {
        let other = ChannelName::new("other").expect("valid channel name");
        Stats {
            channels: channels
                .map(|c| (c.clone(), Arc::new(ChannelStats::new(node, c))))
                .collect(),
            other: Arc::new(ChannelStats::new(node, &other)),
            node: NodeCounters::default(),
            broadcast: Default::default(),
            rpc: Default::default(),
        }
    }

    /// Counters of `channel` (those of `other` for a channel this node does not declare).
    pub(crate) fn channel(&self, channel: &ChannelName) -> &Arc<ChannelStats> {
        self.channels.get(channel).unwrap_or(&self.other)
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let n = &self.node;
        StatsSnapshot {
            channels: self
                .channels
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.snapshot()))
                .chain(
                    Some(self.other.snapshot())
                        .filter(|o| *o != ChannelSnapshot::default())
                        .map(|o| ("other".to_string(), o)),
                )
                .collect(),
            delivered: n.delivered.load(Relaxed),
            undeliverable: n.undeliverable.load(Relaxed),
            stale_pid_rejected: n.stale_pid.load(Relaxed),
            bad_frames: n.bad_frames.load(Relaxed),
            handshakes_refused: n.handshakes_refused.load(Relaxed),
            handshakes_failed: n.handshakes_failed.load(Relaxed),
            handshakes_raced: n.handshakes_raced.load(Relaxed),
            members_downed: n.members_downed.load(Relaxed),
            liveness_pings: n.liveness_pings.load(Relaxed),
            peers_unresponsive: n.peers_unresponsive.load(Relaxed),
            connections_opened: n.connections_opened.load(Relaxed),
            connections_closed: n.connections_closed.load(Relaxed),
            overlay_rejected: n.overlay_rejected.load(Relaxed),
            overlay_dropped: n.overlay_dropped.load(Relaxed),
            peers_known: n.peers_known.load(Relaxed),
            broadcast_messages_sent: n.broadcast_sent.load(Relaxed),
            broadcast_messages_dropped: n.broadcast_dropped.load(Relaxed),
            broadcast_unknown_handler: n.broadcast_unknown_handler.load(Relaxed),
            broadcast: (**self.broadcast.load()).clone(),
            rpc: self.rpc.snapshot(),
            processes: ProcessStats {
                ended: n.processes_ended.load(Relaxed),
                panicked: n.process_panics.load(Relaxed),
                remote_monitors_out: n.monitors_out.load(Relaxed),
                remote_monitors_in: n.monitors_in.load(Relaxed),
                remote_links: n.remote_links.load(Relaxed),
                alive_queries: n.alive_queries.load(Relaxed),
                signals_sent: n.signals_sent.load(Relaxed),
                signals_dropped: n.signals_dropped.load(Relaxed),
                signal_lanes_cut: n.signal_lanes_cut.load(Relaxed),
                peers_lost: n.peers_lost.load(Relaxed),
                peer_losses_heard: n.peer_losses_heard.load(Relaxed),
                remote_downs: n.downs.load(Relaxed),
                remote_exit_signals: n.exit_signals.load(Relaxed),
                ..ProcessStats::default()
            },
        }
    }
}

/// Processes, monitors and links of a node. The `remote_*` tables are the engine's, as last
/// published (after every input it handled); the local ones are read when the snapshot is
/// taken. Once every process that monitored or linked has ended or withdrawn, and every peer
/// concerned is gone or told, all the table sizes are 0: nothing leaks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcessStats {
    /// Processes that ended, for any reason.
    pub ended: u64,
    /// Processes that ended by a panic.
    pub panicked: u64,
    /// Monitors held by local processes of local processes.
    pub local_monitors: u64,
    /// Links between local processes (each counted at both ends).
    pub local_links: u64,
    /// Processes holding node monitors, and their monitors.
    pub node_monitors: u64,
    /// Monitors held by local processes of other nodes' processes.
    pub remote_monitors_out: u64,
    /// Monitors held by other nodes' processes of local processes.
    pub remote_monitors_in: u64,
    /// Links between local processes and other nodes' processes.
    pub remote_links: u64,
    /// Liveness queries to other nodes waiting for an answer.
    pub alive_queries: u64,
    /// Signals (monitor, demonitor, down, link, unlink, exit, liveness) put on lanes.
    pub signals_sent: u64,
    /// Signals dropped (lane far past its bound, or no lane left to the peer).
    pub signals_dropped: u64,
    /// Lanes cut because a signal could not be queued on them (far past their bound): the
    /// peer is lost, so the dropped signal's monitors and links end on both nodes.
    pub signal_lanes_cut: u64,
    /// Times this node lost a peer (its last lane went down, or a lane was cut as above): its
    /// monitors and links with the peer's processes fired `noconnection`.
    pub peers_lost: u64,
    /// Losses of this node that a peer saw and this node did not (it still had a lane open),
    /// learnt from the peer's signals: the monitors and links they took fired here too.
    pub peer_losses_heard: u64,
    /// `Down`s of remote monitors delivered.
    pub remote_downs: u64,
    /// Exit signals from other nodes (or their loss) delivered.
    pub remote_exit_signals: u64,
}

impl ProcessStats {
    /// Entries in every monitor and link table, local and remote (0 when nothing leaks).
    pub fn table_entries(&self) -> u64 {
        self.local_monitors
            + self.local_links
            + self.node_monitors
            + self.remote_monitors_out
            + self.remote_monitors_in
            + self.remote_links
            + self.alive_queries
    }
}

/// Counters of one channel at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// Frames written to connections of this channel.
    pub frames_sent: u64,
    /// Bytes written (length prefixes included).
    pub bytes_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Bytes read (length prefixes included).
    pub bytes_received: u64,
    /// Bytes waiting in the send queues of this channel's lanes.
    pub queued_bytes: u64,
    /// Messages dropped by monotonic (latest-value-wins) overflow.
    pub monotonic_dropped: u64,
}

/// Counters of a node at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Per channel, by name.
    pub channels: BTreeMap<String, ChannelSnapshot>,
    /// Messages delivered into local mailboxes (local and remote senders).
    pub delivered: u64,
    /// Remote messages dropped because no local process matched their destination.
    pub undeliverable: u64,
    /// Messages refused because they named a pid of another incarnation.
    pub stale_pid_rejected: u64,
    /// Connections closed because a peer sent a malformed or oversized frame.
    pub bad_frames: u64,
    /// Handshakes refused by this node or by the peer (cookie, version, name, overlay, ...).
    pub handshakes_refused: u64,
    /// Handshakes that failed for I/O reasons or timed out.
    pub handshakes_failed: u64,
    /// Handshakes that lost a race, working as designed: the losing side of a simultaneous
    /// dial (both nodes dialed the same lane at once), or a peer that was shutting down.
    pub handshakes_raced: u64,
    /// Members this node removed because they were unreachable for `down_after`.
    pub members_downed: u64,
    /// Liveness pings sent (one peer probed per `liveness.period` at most).
    pub liveness_pings: u64,
    /// Peers that answered no liveness ping for `liveness.attempts` pings: their lanes were
    /// cut.
    pub peers_unresponsive: u64,
    /// Connections established.
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Overlay messages from peers dropped as malformed or inconsistent (state unchanged), and
    /// relayed messages whose origin the sending peer cannot vouch for.
    pub overlay_rejected: u64,
    /// Overlay messages dropped: the peer could not be reached in time, or its control queue
    /// was full when the message was handed to it.
    pub overlay_dropped: u64,
    /// Peers whose handshake identity this node keeps: those connected or still wanted. A
    /// peer that is neither is forgotten, so churn of peers does not grow memory.
    pub peers_known: u64,
    /// Plumtree messages (every handler) put on a lane.
    pub broadcast_messages_sent: u64,
    /// Plumtree messages dropped: no open lane to the neighbour, or its queue was full or
    /// closing (grafts and anti-entropy repair what they carried).
    pub broadcast_messages_dropped: u64,
    /// Plumtree messages received for a handler not registered on this node, dropped.
    pub broadcast_unknown_handler: u64,
    /// Per broadcast handler, by name.
    pub broadcast: BTreeMap<String, BroadcastSnapshot>,
    /// RPC calls, casts and handlers of this node.
    pub rpc: RpcStats,
    /// Processes, monitors and links.
    pub processes: ProcessStats,
}

/// Counters and gauges of one broadcast handler's Plumtree at one moment (see
/// [`crate::Node::broadcast_stats`]). The counters are the engine's, monotonic for the node's
/// run; in JSON they sit beside the gauges.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BroadcastSnapshot {
    /// The Plumtree's counters (delivered, duplicates, prunes, grafts, announcements,
    /// exchanges, caught handler panics, ...).
    #[serde(flatten)]
    pub counters: BroadcastStats,
    /// Gauge: broadcast neighbours now.
    pub neighbours: u64,
    /// Gauge: roots with links of their own (the others use the shared tree).
    pub own_trees: u64,
    /// Gauge: messages announced and not received yet.
    pub missing: u64,
    /// Gauge: announcements queued for lazy peers.
    pub outstanding: u64,
    /// Gauge: exchanges started here and still running.
    pub exchanges_running: u64,
}

impl BroadcastSnapshot {
    /// The counters and gauges of `t` now.
    pub(crate) fn of(t: &partisan_core::broadcast::Plumtree) -> Self {
        BroadcastSnapshot {
            counters: *t.stats(),
            neighbours: t.neighbours().len() as u64,
            own_trees: t.own_roots().count() as u64,
            missing: t.missing() as u64,
            outstanding: t.outstanding() as u64,
            exchanges_running: t.exchanges().count() as u64,
        }
    }
}

/// RPC counters of a node (in [`StatsSnapshot::rpc`](crate::StatsSnapshot::rpc) and
/// [`crate::Node::rpc_stats`]). Counters are cumulative over the node's run; `pending` and `running`
/// are gauges.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RpcStats {
    /// Calls sent from this node (multicall: one per node).
    pub calls: u64,
    /// Casts sent from this node.
    pub casts: u64,
    /// Calls of this node that ended at their timeout.
    pub timeouts: u64,
    /// Calls of this node failed because their node went down or its connection was lost.
    pub node_down: u64,
    /// Replies that arrived for no waiting call (after its timeout or failure, or from
    /// another node than the call went to), dropped.
    pub late_replies: u64,
    /// Gauge: calls of this node waiting for their reply.
    pub pending: u64,
    /// Requests this node's server ran a handler for (calls and casts).
    pub served: u64,
    /// Gauge: handlers running on this node.
    pub running: u64,
    /// Handlers of this node that panicked (caught; answered as [`crate::RpcError::Panicked`]).
    pub handler_panics: u64,
    /// Requests to this node naming no registered handler.
    pub unknown_name: u64,
    /// Malformed RPC requests or replies received, dropped.
    pub bad_messages: u64,
    /// Replies this node's server could not queue back to their caller, dropped.
    pub replies_unsent: u64,
}

/// The live counters behind [`RpcStats`].
#[derive(Debug, Default)]
pub(crate) struct RpcCounters {
    pub(crate) calls: AtomicU64,
    pub(crate) casts: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) node_down: AtomicU64,
    pub(crate) late_replies: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) served: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) unknown_name: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) replies_unsent: AtomicU64,
}

impl RpcCounters {
    pub(crate) fn snapshot(&self) -> RpcStats {
        RpcStats {
            calls: self.calls.load(Relaxed),
            casts: self.casts.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            node_down: self.node_down.load(Relaxed),
            late_replies: self.late_replies.load(Relaxed),
            pending: self.pending.load(Relaxed),
            served: self.served.load(Relaxed),
            running: self.running.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            unknown_name: self.unknown_name.load(Relaxed),
            bad_messages: self.bad_messages.load(Relaxed),
            replies_unsent: self.replies_unsent.load(Relaxed),
        }
    }
}
