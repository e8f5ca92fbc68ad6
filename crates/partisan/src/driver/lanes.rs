//! Carrying out what the engine asks of connections: dials, admissions, lanes opened and
//! closed, control frames and probes put on lane queues.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use partisan_core::connection_plan::{CloseReason, ConnId, DialRequest};
use partisan_core::engine::{DialId, DialResult, Output, TransmitFailure};
use partisan_core::wire::handshake::{PeerHello, RefuseCode};
use partisan_core::wire::{Control, Message, MIN_MAX_FRAME_LEN};
use tokio::sync::oneshot;

use super::{Driver, DriverCmd};
use crate::connection::lane_queue::{LaneQueue, Overflow, PushError};
use crate::connection::table::LaneHandle;
use crate::connection::{self, ConnCtx};
use crate::transport::handshake;

/// How long a stopping node lets a dial under way finish, to let it go with a goodbye.
const HANDSHAKE_FINISH: Duration = Duration::from_millis(500);

/// Time a connection closed on purpose gets to flush and say goodbye before it is cut.
const LINGER: Duration = Duration::from_secs(2);

impl Driver {
    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        peer: PeerHello,
        welcome: bytes::Bytes,
        reply: oneshot::Sender<Result<Arc<ConnCtx>, RefuseCode>>,
    ) {
        let now = self.shared.now();
        match self.engine.handle_accept(conn, &peer, now) {
            Ok(()) => {
                let ctx = self.open_lane(conn, &peer);
                // The verdict goes first on the wire, ahead of any frame the engine asks for.
                ctx.queue.push_raw(&welcome);
                if reply.send(Ok(ctx)).is_err() {
                    self.abandon(conn);
                }
            }
            Err(code) => {
                let _ = reply.send(Err(code));
            }
        }
    }

    pub(super) fn established(
        &mut self,
        dial: DialId,
        conn: ConnId,
        peer: PeerHello,
        reply: oneshot::Sender<Option<Arc<ConnCtx>>>,
    ) {
        let now = self.shared.now();
        let hello = peer.clone();
        match self
            .engine
            .handle_dial_result(dial, DialResult::Established { conn, hello }, now)
        {
            Ok(()) => {
                let ctx = self.open_lane(conn, &peer);
                if reply.send(Some(ctx)).is_err() {
                    self.abandon(conn);
                }
            }
            Err(reason) => {
                tracing::debug!(peer = %peer.spec().name(), ?reason, "dropping established dial");
                let _ = reply.send(None);
            }
        }
    }

    /// A lane opened for a connection whose task is gone (it gave up waiting for us): no task
    /// will report it down, so it is reported here.
    fn abandon(&mut self, conn: ConnId) {
        if let Some(ctx) = self.conns.get(&conn) {
            ctx.queue.close();
            ctx.cancel.cancel();
            self.shared
                .stats
                .node
                .connections_closed
                .fetch_add(1, Relaxed);
        }
        self.lane_down(conn, false);
    }

    /// A lane ended (`clean`: by a goodbye after its queue was flushed): it leaves the table
    /// and the engine is told.
    pub(super) fn lane_down(&mut self, conn: ConnId, clean: bool) {
        if let Some(ctx) = self.conns.remove(&conn) {
            self.shared
                .table
                .remove(&ctx.peer, &ctx.channel, ctx.lane, conn);
        }
        let now = self.shared.now();
        self.engine.handle_lane_down(conn, clean, now);
    }

    /// The queue, tasks' context and routing entry of a lane the engine just took.
    fn open_lane(&mut self, conn: ConnId, peer: &PeerHello) -> Arc<ConnCtx> {
        let cfg = &self.shared.cfg;
        let monotonic = self
            .shared
            .spec
            .channel(&peer.channel)
            .or_else(|| peer.spec().channel(&peer.channel))
            .is_some_and(|o| o.monotonic);
        let stats = self.shared.stats.channel(&peer.channel).clone();
        // Nothing larger than the peer accepts is sent (a node's limit is at least the floor
        // its config allows, whatever it claims).
        let theirs = (peer.identity.max_frame as usize).max(MIN_MAX_FRAME_LEN);
        let queue = Arc::new(LaneQueue::new(
            cfg.send_queue_bytes,
            if monotonic {
                Overflow::DropOldest
            } else {
                Overflow::Block
            },
            cfg.max_frame_len.min(theirs),
            stats.clone(),
        ));
        let ctx = Arc::new(ConnCtx {
            shared: self.shared.clone(),
            conn,
            peer: peer.spec().name().clone(),
            peer_creation: peer.creation(),
            peer_relays: partisan_core::overlay::client_server::Role::from_tag(
                peer.identity.tag.as_ref(),
            ) == Some(partisan_core::overlay::client_server::Role::Server),
            channel: peer.channel.clone(),
            lane: peer.lane,
            queue,
            stats,
            cancel: self.shared.shutdown_conns.child_token(),
            fair_share: cfg
                .write_chunk
                .get(&peer.channel)
                .copied()
                .unwrap_or(crate::config::DEFAULT_WRITE_CHUNK),
            last_rx: AtomicU64::new(self.shared.now().0),
        });
        self.conns.insert(conn, ctx.clone());
        self.shared
            .stats
            .node
            .connections_opened
            .fetch_add(1, Relaxed);
        self.shared.table.install(
            peer.spec(),
            peer.creation(),
            &peer.channel,
            peer.lane,
            Arc::new(LaneHandle {
                conn,
                queue: ctx.queue.clone(),
            }),
        );
        ctx
    }

    /// Closes a lane the engine let go: it leaves the routing table at once, then flushes and
    /// says goodbye (cut after [`LINGER`]), or is cut at once when its peer stopped answering.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(ctx) = self.conns.get(&conn).cloned() else {
            return;
        };
        tracing::debug!(peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, ?reason, "closing connection");
        self.shared
            .table
            .remove(&ctx.peer, &ctx.channel, ctx.lane, conn);
        ctx.queue.close();
        if reason.is_abrupt() {
            ctx.cancel.cancel();
            return;
        }
        let cancel = ctx.cancel.clone();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(LINGER) => cancel.cancel(),
            }
        });
    }

    /// Puts a frame the engine asked for on a lane's queue; a failure goes back to the engine.
    fn transmit(&mut self, conn: ConnId, msg: Message) {
        let why = match self.conns.get(&conn) {
            Some(ctx) => match if matches!(msg, Message::Control(Control::Process(_))) {
                ctx.queue.push_in_order(&msg)
            } else {
                ctx.queue.push_control(&msg)
            } {
                Ok(()) => return,
                Err(PushError::Full) => TransmitFailure::Full,
                Err(PushError::Closed) => TransmitFailure::Closed,
                Err(e) => {
                    tracing::warn!(peer = %ctx.peer, error = ?e, "control frame cannot be framed");
                    TransmitFailure::Full
                }
            },
            None => TransmitFailure::Closed,
        };
        let now = self.shared.now();
        self.engine.handle_transmit_failed(conn, msg, why, now);
    }

    /// Carries out everything the engine asks for, then publishes what changed.
    pub(super) fn carry_out(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Dial { id, req } => self.spawn_dial(id, req),
                Output::Close { conn, reason } => self.close(conn, reason),
                Output::Transmit { conn, msg } => self.transmit(conn, msg),
            }
        }
        self.publish();
        // Process commands are answered once their frames are on their lanes, so what the
        // caller sends next on the same lane comes after them.
        for ack in self.signal_acks.drain(..) {
            let _ = ack.send(());
        }
    }

    fn spawn_dial(&self, dial: DialId, req: DialRequest) {
        let shared = self.shared.clone();
        let conn = shared.next_conn_id();
        self.shared.tasks.spawn(async move {
            let attempt = handshake::dial(&shared, &req);
            tokio::pin!(attempt);
            let result = tokio::select! {
                _ = shared.shutdown_conns.cancelled() => {
                    // Stopping mid-handshake: the peer may have admitted the connection
                    // already, so one that completes soon is let go with a goodbye (a graceful
                    // close to the peer) rather than dropped (a lost connection).
                    if let Ok(Ok(d)) = tokio::time::timeout(HANDSHAKE_FINISH, &mut attempt).await {
                        connection::decline(d.stream).await;
                    }
                    return;
                }
                r = &mut attempt => r,
            };
            match result {
                Ok(dialed) => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = DriverCmd::Established {
                        dial,
                        conn,
                        peer: dialed.peer.clone(),
                        reply: tx,
                    };
                    // Not taken (unwanted, or the node stopped meanwhile): the peer admitted
                    // it already, so it is let go with a goodbye.
                    let taken = match shared.driver.send(cmd).await {
                        Ok(()) => rx.await.ok().flatten(),
                        Err(_) => None,
                    };
                    match taken {
                        Some(ctx) => connection::run(ctx, dialed.stream, dialed.leftover),
                        None => connection::decline(dialed.stream).await,
                    }
                }
                Err(e) => {
                    e.count(&shared.stats);
                    // Said at DEBUG only: the engine reports failing targets at WARN, once for
                    // a target it gives up on and at the 1st, 10th, 100th, ... failure of one it
                    // keeps dialing.
                    tracing::debug!(target = ?req.target, channel = %req.channel, lane = req.lane, error = %e, "dial failed");
                    let failure = e.as_dial_failure(req.expect.as_ref());
                    let _ = shared
                        .driver
                        .send(DriverCmd::DialFailed { dial, failure })
                        .await;
                }
            }
        });
    }
}
