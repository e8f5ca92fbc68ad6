//! An established connection: a reader task that hands user messages straight to local
//! mailboxes, and a writer task that drains the lane's queue in coalesced batches.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use partisan_core::connection_plan::ConnId;
use partisan_core::id::{ChannelName, Creation, NodeName, Pid};
use partisan_core::wire::{FrameDecoder, Message, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::driver::DriverCmd;
use crate::lane_queue::LaneQueue;
use crate::node::Shared;
use crate::registry::{Envelope, LocalTarget};
use crate::stats::ChannelStats;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes handed to one vectored write.
const MAX_IOV: usize = 64;

/// Everything a connection's tasks need.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: ConnId,
    pub(crate) peer: NodeName,
    pub(crate) peer_creation: Creation,
    pub(crate) channel: ChannelName,
    pub(crate) lane: u16,
    pub(crate) queue: Arc<LaneQueue>,
    pub(crate) stats: Arc<ChannelStats>,
    pub(crate) cancel: CancellationToken,
}

/// Why a connection ended, for the log.
enum End {
    Local,
    PeerGoodbye,
    Eof,
    Io(std::io::Error),
    BadFrame(String),
    KeepaliveTimeout,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Local => f.write_str("closed locally"),
            End::PeerGoodbye => f.write_str("peer said goodbye"),
            End::Eof => f.write_str("peer closed the connection"),
            End::Io(e) => write!(f, "i/o error: {e}"),
            End::BadFrame(r) => write!(f, "bad frame: {r}"),
            End::KeepaliveTimeout => f.write_str("keepalive unanswered"),
        }
    }
}

/// Starts the reader and writer tasks of an established connection.
pub(crate) fn run(ctx: Arc<ConnCtx>, stream: TcpStream, leftover: BytesMut) {
    let (rd, wr) = stream.into_split();
    let tasks = ctx.shared.tasks.clone();
    let writer = tasks.spawn(write_loop(ctx.clone(), wr));
    tasks.spawn(async move {
        let end = read_loop(&ctx, rd, leftover).await;
        ctx.cancel.cancel();
        ctx.queue.close();
        let _ = writer.await;
        match &end {
            End::Local | End::PeerGoodbye => tracing::debug!(
                peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, reason = %end,
                "connection closed"
            ),
            End::BadFrame(reason) => tracing::warn!(
                peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, %reason,
                "closing connection: peer sent a bad frame"
            ),
            _ => tracing::info!(
                peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, reason = %end,
                "connection lost"
            ),
        }
        ctx.shared
            .stats
            .node
            .connections_closed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = ctx
            .shared
            .driver
            .send(DriverCmd::Closed {
                conn: ctx.conn,
                node: ctx.peer.clone(),
                channel: ctx.channel.clone(),
                lane: ctx.lane,
            })
            .await;
    });
}

async fn read_loop(ctx: &ConnCtx, mut rd: OwnedReadHalf, mut buf: BytesMut) -> End {
    let decoder = FrameDecoder::new(ctx.shared.cfg.max_frame_len);
    let ping = ctx.shared.cfg.ping;
    let mut last_rx = Instant::now();
    let mut attempts = 0u32;
    let mut last_probe = last_rx;
    let far = || Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let deadline = |last_rx: Instant, attempts: u32, last_probe: Instant| match ping {
        Some(p) if attempts == 0 => last_rx + p.idle,
        Some(p) => last_probe + p.timeout,
        None => far(),
    };
    let sleep = tokio::time::sleep_until(deadline(last_rx, attempts, last_probe));
    tokio::pin!(sleep);
    loop {
        // Frames already buffered (the handshake may leave some) are handled before reading.
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    ctx.stats.received(1, (frame.len() + 4) as u64);
                    match Message::decode(frame) {
                        Ok(Message::User { header, payload }) => {
                            deliver(ctx, header.to, header.from, payload).await;
                        }
                        Ok(Message::Ping(id)) => {
                            let _ = ctx.queue.push_control(&Message::Pong(id));
                        }
                        Ok(Message::Pong(_)) => {}
                        Ok(Message::Goodbye) => return End::PeerGoodbye,
                        Ok(Message::Control(c)) => ctx.shared.on_control(ctx, c).await,
                        Ok(Message::Relay { header, payload }) => {
                            ctx.shared.on_relay(ctx, header, payload).await
                        }
                        Err(e) => {
                            bad_frame(ctx);
                            return End::BadFrame(e.to_string());
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bad_frame(ctx);
                    return End::BadFrame(e.to_string());
                }
            }
        }
        let want = decoder.wanted(&buf);
        buf.reserve(want.saturating_sub(buf.len()).max(READ_CHUNK));
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return End::Local,
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return End::Eof,
                Ok(_) => {
                    last_rx = Instant::now();
                    attempts = 0;
                }
                Err(e) => return End::Io(e),
            },
            _ = &mut sleep => {
                let now = Instant::now();
                if now >= deadline(last_rx, attempts, last_probe) {
                    let p = ping.expect("the timer only fires with keepalive on");
                    if attempts >= p.max_attempts {
                        return End::KeepaliveTimeout;
                    }
                    attempts += 1;
                    last_probe = now;
                    let _ = ctx.queue.push_control(&Message::Ping(u64::from(attempts)));
                }
                sleep.as_mut().reset(deadline(last_rx, attempts, last_probe));
            }
        }
    }
}

fn bad_frame(ctx: &ConnCtx) {
    ctx.shared
        .stats
        .node
        .bad_frames
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

async fn deliver(ctx: &ConnCtx, to: Target, from: Option<u64>, payload: Bytes) {
    let env = Envelope {
        from: from.map(|id| Pid {
            node: ctx.peer.clone(),
            creation: ctx.peer_creation,
            id,
        }),
        via: match &to {
            Target::Ref(id) => Some(partisan_core::id::Ref {
                node: ctx.shared.spec.name().clone(),
                creation: ctx.shared.creation,
                id: *id,
            }),
            _ => None,
        },
        payload,
    };
    let target = match &to {
        Target::Pid(id) => LocalTarget::Pid(*id),
        Target::Ref(r) => LocalTarget::Ref(*r),
        Target::Name(n) => LocalTarget::Name(n),
    };
    if let Err(e) = ctx.shared.deliver_local(target, env).await {
        tracing::debug!(peer = %ctx.peer, target = ?to, error = %e, "dropping undeliverable message");
    }
}

async fn write_loop(ctx: Arc<ConnCtx>, mut wr: OwnedWriteHalf) {
    let mut spare: Vec<Bytes> = Vec::new();
    loop {
        let batch = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return,
            b = ctx.queue.take(std::mem::take(&mut spare)) => b,
        };
        let Some(mut batch) = batch else {
            // Closed on purpose and flushed: say goodbye so the peer does not count a failure.
            let mut bye = BytesMut::new();
            let _ = Message::Goodbye.encode_frame(&mut bye, 64);
            let _ = wr.write_all(&bye).await;
            let _ = wr.shutdown().await;
            return;
        };
        let r = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return,
            r = write_chunks(&mut wr, &batch.chunks) => r,
        };
        if let Err(e) = r {
            tracing::debug!(peer = %ctx.peer, error = %e, "write failed");
            ctx.cancel.cancel();
            return;
        }
        ctx.stats.sent(batch.frames, batch.bytes as u64);
        batch.chunks.clear();
        spare = batch.chunks;
    }
}

/// Writes every chunk, in order, with as few syscalls as the kernel allows.
async fn write_chunks(wr: &mut OwnedWriteHalf, chunks: &[Bytes]) -> std::io::Result<()> {
    if let [one] = chunks {
        return wr.write_all(one).await;
    }
    let (mut idx, mut off) = (0usize, 0usize);
    while idx < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[idx..]
            .iter()
            .take(MAX_IOV)
            .enumerate()
            .map(|(i, c)| IoSlice::new(if i == 0 { &c[off..] } else { c }))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = chunks[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        while idx < chunks.len() && chunks[idx].len() == off {
            idx += 1;
            off = 0;
        }
    }
    Ok(())
}
