//! An established connection: a reader task that hands user messages straight to local
//! mailboxes, and a writer task that drains the lane's queue in coalesced batches.

pub(crate) mod lane_queue;
pub(crate) mod table;

use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use partisan_core::connection_plan::ConnId;
use partisan_core::id::{ChannelName, Creation, NodeName, Pid};
use partisan_core::wire::{FrameDecoder, Message, Target, UserHeader, LEN_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::lane_queue::LaneQueue;
use crate::driver::DriverCmd;
use crate::node::{Delivery, Shared};
use crate::process::registry::{Envelope, LocalTarget};
use crate::stats::ChannelStats;
use crate::transport::{Stream, StreamReader, StreamWriter};

/// Smallest read: what the read buffer always has room for.
const READ_MIN: usize = 64 * 1024;
/// Largest read. A read that fills the room it had doubles the room for the next one (bulk
/// traffic then takes few syscalls and drains the socket quickly, which keeps the peer's TCP
/// window open); reads much smaller than the room halve it again.
const READ_MAX: usize = 1024 * 1024;
/// How long frames queued on a lane the peer said goodbye on get to go out.
const GOODBYE_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);
/// Most buffers handed to one vectored write.
const MAX_IOV: usize = 64;

/// Everything a connection's tasks need.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: ConnId,
    pub(crate) peer: NodeName,
    pub(crate) peer_creation: Creation,
    /// The peer relays for others (a client-server `server`): it may hand us relayed messages
    /// whose origin is another node.
    pub(crate) peer_relays: bool,
    pub(crate) channel: ChannelName,
    pub(crate) lane: u16,
    pub(crate) queue: Arc<LaneQueue>,
    pub(crate) stats: Arc<ChannelStats>,
    pub(crate) cancel: CancellationToken,
    /// Bytes the reader or writer moves before it lets the other tasks of its thread run (and
    /// the runtime poll for I/O), and the most one write syscall carries: a bulk stream on one
    /// lane then delays the messages of another lane by about that much work, not by a whole
    /// burst (which, on a single-threaded runtime, starved them for tens of milliseconds). The
    /// channel's `write_chunk`.
    pub(crate) fair_share: usize,
    /// When the reader last received anything, in microseconds of the node's clock (what the
    /// engine's keepalive reads): one relaxed store per read.
    pub(crate) last_rx: AtomicU64,
}

impl ConnCtx {
    /// Records that the lane was heard from now.
    pub(crate) fn touch(&self) {
        self.last_rx.store(self.shared.now().0, Relaxed);
    }
}

/// Why a connection ended, for the log.
enum End {
    Local,
    PeerGoodbye,
    Eof,
    Io(std::io::Error),
    BadFrame(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Local => f.write_str("closed locally"),
            End::PeerGoodbye => f.write_str("peer said goodbye"),
            End::Eof => f.write_str("peer closed the connection"),
            End::Io(e) => write!(f, "i/o error: {e}"),
            End::BadFrame(r) => write!(f, "bad frame: {r}"),
        }
    }
}

/// Starts the reader and writer tasks of an established connection.
pub(crate) fn run(ctx: Arc<ConnCtx>, stream: Stream, leftover: BytesMut) {
    let Stream {
        reader: rd,
        writer: wr,
    } = stream;
    let tasks = ctx.shared.tasks.clone();
    let mut writer = tasks.spawn(write_loop(ctx.clone(), wr));
    tasks.spawn(async move {
        let end = read_loop(&ctx, rd, leftover).await;
        ctx.queue.close();
        // The peer let this lane go on purpose (it was replaced, or is no longer wanted) and
        // reads on until it hears our goodbye: what is already queued here still goes out.
        let flushed = matches!(end, End::PeerGoodbye)
            && tokio::time::timeout(GOODBYE_FLUSH, &mut writer)
                .await
                .is_ok();
        ctx.cancel.cancel();
        if !flushed {
            let _ = writer.await;
        }
        // Whether everything queued here reached the peer: it said goodbye (it reads on until
        // ours) and the queue was flushed, with our goodbye, after. Whichever side closed
        // first, a graceful close ends so on both; a cut, a reset or the linger does not.
        let clean = flushed;
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
                clean,
            })
            .await;
    });
}

/// Lets go of an established connection this node does not want (a dial that lost to another
/// lane, or was no longer wanted when it completed) the way a lane is closed: a goodbye, then
/// reading until the peer's goodbye or end of stream, so the peer logs a graceful close
/// instead of a lost connection.
pub(crate) async fn decline(stream: Stream) {
    let Stream {
        reader: mut rd,
        writer: mut wr,
    } = stream;
    let mut bye = BytesMut::new();
    let _ = Message::Goodbye.encode_frame(&mut bye, 64);
    let drain = async {
        wr.write_all(&bye).await?;
        wr.shutdown().await?;
        let mut sink = [0u8; 4096];
        while rd.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(GOODBYE_FLUSH, drain).await;
}

async fn read_loop(ctx: &ConnCtx, mut rd: StreamReader, mut buf: BytesMut) -> End {
    let decoder = FrameDecoder::new(ctx.shared.cfg.max_frame_len);
    let mut room = READ_MIN;
    let mut moved = 0usize;
    let mut pipelining = Pipelining::new();
    loop {
        // Counted once per read rather than once per frame (the counters are shared by every
        // connection of the channel), but before any of these frames is delivered.
        let (frames, bytes) = complete_frames(&buf, decoder.max_frame_len());
        if frames > 0 {
            ctx.stats.received(frames, bytes);
        }
        pipelining.plan(frames);
        // Frames already buffered (the handshake may leave some) are handled before reading.
        loop {
            match take_small_user(&decoder, &mut buf) {
                Some(Ok((header, payload))) => {
                    if let Some(work) = deliver(ctx, header.to, header.from, payload) {
                        if blocking(ctx, work).await.is_none() {
                            return End::Local;
                        }
                    }
                    if pipelining.delivered() {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                Some(Err(reason)) => {
                    bad_frame(ctx);
                    return End::BadFrame(reason);
                }
                None => {}
            }
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => match Message::decode(frame) {
                    Ok(Message::User { header, payload }) => {
                        let payload = unpinned(payload);
                        if let Some(work) = deliver(ctx, header.to, header.from, payload) {
                            if blocking(ctx, work).await.is_none() {
                                return End::Local;
                            }
                        }
                    }
                    Ok(Message::Ping(id)) => {
                        let _ = ctx.queue.push_control(&Message::Pong(id));
                    }
                    Ok(Message::Pong(_)) => {}
                    Ok(Message::Goodbye) => return End::PeerGoodbye,
                    Ok(Message::Control(c)) => {
                        if blocking(ctx, ctx.shared.on_control(ctx, c)).await.is_none() {
                            return End::Local;
                        }
                    }
                    Ok(Message::Relay { header, payload }) => {
                        let work = ctx.shared.on_relay(ctx, header, payload);
                        if blocking(ctx, work).await.is_none() {
                            return End::Local;
                        }
                    }
                    Err(e) => {
                        bad_frame(ctx);
                        return End::BadFrame(e.to_string());
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    bad_frame(ctx);
                    return End::BadFrame(e.to_string());
                }
            }
        }
        let want = decoder.wanted(&buf);
        buf.reserve(want.saturating_sub(buf.len()).max(room));
        let spare = buf.capacity() - buf.len();
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return End::Local,
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return End::Eof,
                Ok(n) => {
                    if n >= spare {
                        room = (room * 2).min(READ_MAX);
                    } else if n < room / 8 {
                        room = (room / 2).max(READ_MIN);
                    }
                    ctx.touch();
                    moved += n;
                    if moved >= ctx.fair_share {
                        moved = 0;
                        tokio::task::yield_now().await;
                    }
                }
                Err(e) => return End::Io(e),
            },
        }
    }
}

/// Seeds pipelining between two nodes that answer each other's messages.
///
/// A reader delivers everything one read brought before the processes it woke run, and their
/// answers leave in one write after all of them: right for throughput on a busy machine, but
/// two nodes exchanging requests and answers then settle into lockstep, a whole burst crossing
/// at a time while the other node idles (on 2 vCPUs, each process about half busy). Splitting a
/// large burst once, handing the CPU over halfway through it, puts two half-bursts in flight:
/// each node then works on one while the other works on the other, and the split persists by
/// itself as long as both nodes keep up; on a saturated machine the halves merge again in one
/// read, and lockstep (fewer, larger writes) resumes. So a split is only tried now and then:
/// on a burst of at least [`SPLIT_MIN_FRAMES`] small messages, at most once per
/// [`SPLIT_EVERY`] per connection.
struct Pipelining {
    /// When the next split may happen.
    next: Option<Instant>,
    /// Messages left to deliver before yielding (0: no split planned).
    left: u64,
}

/// A burst smaller than this is delivered whole (halves of fewer than 16 messages would cost
/// more in writes than the overlap gains).
const SPLIT_MIN_FRAMES: u64 = 32;
/// Least time between two splits on one connection: on a saturated machine, where the halves
/// merge again, trying costs one extra write per connection this often.
const SPLIT_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

impl Pipelining {
    fn new() -> Self {
        Pipelining {
            next: None,
            left: 0,
        }
    }

    /// A read left `frames` complete frames in the buffer.
    fn plan(&mut self, frames: u64) {
        self.left = 0;
        if frames < SPLIT_MIN_FRAMES {
            return;
        }
        let now = Instant::now();
        if self.next.is_some_and(|next| now < next) {
            return;
        }
        self.next = Some(now + SPLIT_EVERY);
        self.left = frames / 2;
    }

    /// One small message was delivered: whether to yield now.
    fn delivered(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        self.left == 0
    }
}

/// Runs `work`, which may wait (for room in a full mailbox, or in the driver's queue): the
/// reader then stops reading, so TCP pushes back on the peer. While it waits, the connection
/// keeps telling the peer it is alive (the peer's keepalive or liveness probing would otherwise
/// count the silence as a dead link and drop the connection with whatever it carries), counts
/// as heard from on this side too (the silence is ours, not the peer's), and a local close
/// still ends it.
/// `None` when the connection closed meanwhile.
async fn blocking<F: std::future::Future>(ctx: &ConnCtx, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    // Most work completes at once: skip the timer and the cancel wait for it.
    let first = std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    if first.is_some() {
        return first;
    }
    // Often enough for the peer's keepalive (half its idle time) and its liveness probes
    // (half their answer timeout): the peer then always hears from this side in time.
    let cfg = &ctx.shared.cfg;
    let every = [
        cfg.ping.map(|p| p.idle / 2),
        cfg.liveness.map(|l| l.timeout / 2),
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or(std::time::Duration::from_secs(86_400), |d| {
        d.max(std::time::Duration::from_millis(10))
    });
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return None,
            out = work.as_mut() => return Some(out),
            _ = tick.tick() => {
                ctx.touch();
                probe += 1;
                let _ = ctx.queue.push_control(&Message::Ping(u64::MAX - probe));
            }
        }
    }
}

/// Complete frames at the front of `buf` and their bytes (length prefixes included), stopping
/// at the first partial or oversized one.
fn complete_frames(buf: &[u8], max_frame_len: usize) -> (u64, u64) {
    let (mut frames, mut at) = (0u64, 0usize);
    while let Some(prefix) = buf.get(at..at + 4) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > max_frame_len || buf.len() - at - 4 < len {
            break;
        }
        frames += 1;
        at += 4 + len;
    }
    (frames, at as u64)
}

fn target(to: &Target) -> LocalTarget<'_> {
    match to {
        Target::Pid(id) => LocalTarget::Pid(*id),
        Target::Ref(r) => LocalTarget::Ref(*r),
        Target::Name(n) => LocalTarget::Name(n),
    }
}

fn bad_frame(ctx: &ConnCtx) {
    ctx.shared
        .stats
        .node
        .bad_frames
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Received payloads up to this size are copied out of the read buffer before delivery.
/// Larger ones are delivered as slices of it (no copy); a small one kept as a slice would pin
/// the whole read buffer (64 KiB and up) for as long as it lives, so a mailbox backlog or an
/// application keeping small values could hold far more memory than the bytes it counts.
const COPY_PAYLOAD_MAX: usize = 1024;

/// A received payload as it is delivered: small ones copied out of the read buffer.
pub(crate) fn unpinned(payload: Bytes) -> Bytes {
    if payload.len() <= COPY_PAYLOAD_MAX {
        Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// Takes the frame at the front of `buf` if it is a user message with a payload of at most
/// [`COPY_PAYLOAD_MAX`] bytes (every message between processes, in the common case): decoded in
/// place, its payload copied out, so no reference to the read buffer is taken and given back
/// per message. `None` leaves anything else (another kind, a large payload, a partial frame)
/// to the general decoder; an error is a bad frame.
fn take_small_user(
    decoder: &FrameDecoder,
    buf: &mut BytesMut,
) -> Option<Result<(UserHeader, Bytes), String>> {
    let body = match decoder.peek(buf) {
        Ok(Some(body)) => body,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let taken = match Message::decode_user(body)? {
        Ok((header, payload)) if payload.len() <= COPY_PAYLOAD_MAX => {
            (header, Bytes::copy_from_slice(payload))
        }
        Ok(_) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let len = LEN_PREFIX + body.len();
    buf.advance(len);
    Some(Ok(taken))
}

/// Hands a received user message to its local process (`payload` already unpinned), at once
/// unless the mailbox is full: then what is left, the wait for room, comes back for the reader
/// to run (every message would otherwise pay for building and polling that future).
fn deliver(
    ctx: &ConnCtx,
    to: Target,
    from: Option<u64>,
    payload: Bytes,
) -> Option<impl std::future::Future<Output = ()> + '_> {
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
        signal: None,
    };
    match ctx.shared.deliver_now(target(&to), env, true) {
        Delivery::Done => None,
        Delivery::Wait(w) => Some(async move {
            if !ctx.shared.deliver_waiting(w).await {
                undeliverable(ctx, &to);
            }
        }),
        Delivery::Full | Delivery::NoProcess => {
            undeliverable(ctx, &to);
            None
        }
    }
}

fn undeliverable(ctx: &ConnCtx, to: &Target) {
    tracing::debug!(peer = %ctx.peer, target = ?to, "dropping undeliverable message: no such process");
}

async fn write_loop(ctx: Arc<ConnCtx>, mut wr: StreamWriter) {
    let mut spare: Vec<Bytes> = Vec::new();
    let mut moved = 0usize;
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
            r = write_chunks(&mut wr, &batch.chunks, &mut moved, ctx.fair_share) => r,
        };
        if let Err(e) = r {
            tracing::info!(
                peer = %ctx.peer, channel = %ctx.channel, lane = ctx.lane, error = %e,
                "connection lost: write failed"
            );
            ctx.queue.close();
            ctx.cancel.cancel();
            return;
        }
        ctx.stats.sent(batch.frames, batch.bytes as u64);
        batch.chunks.clear();
        spare = batch.chunks;
    }
}

/// Writes every chunk, in order, with as few syscalls as the kernel allows, but at most
/// `fair_share` bytes per syscall; `moved` counts bytes since the writer last let the other
/// tasks of its thread run.
async fn write_chunks(
    wr: &mut StreamWriter,
    chunks: &[Bytes],
    moved: &mut usize,
    fair_share: usize,
) -> std::io::Result<()> {
    let (mut idx, mut off) = (0usize, 0usize);
    while idx < chunks.len() {
        if *moved >= fair_share {
            *moved = 0;
            tokio::task::yield_now().await;
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let (mut used, mut total) = (0, 0usize);
        for (slot, c) in slices.iter_mut().zip(&chunks[idx..]) {
            let start = if used == 0 { off } else { 0 };
            let take = (c.len() - start).min(fair_share - total);
            *slot = IoSlice::new(&c[start..start + take]);
            used += 1;
            total += take;
            if total >= fair_share {
                break;
            }
        }
        let mut n = wr.write_vectored(&slices[..used]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *moved += n;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_large_burst_is_split_once_in_a_while() {
        let mut p = Pipelining::new();
        let yields = |p: &mut Pipelining, frames: u64| {
            p.plan(frames);
            (1..=frames).filter(|_| p.delivered()).count()
        };
        let at = |p: &mut Pipelining, frames: u64| {
            p.plan(frames);
            (1..=frames).position(|_| p.delivered()).map(|i| i + 1)
        };
        assert_eq!(yields(&mut p, SPLIT_MIN_FRAMES - 1), 0);
        assert_eq!(at(&mut p, 64), Some(32));
        assert_eq!(yields(&mut p, 64), 0, "not again so soon");
        tokio::time::advance(SPLIT_EVERY).await;
        assert_eq!(at(&mut p, 40), Some(20));
        // A split planned for a burst and not reached is dropped at the next read.
        tokio::time::advance(SPLIT_EVERY).await;
        p.plan(100);
        assert!(!p.delivered());
        assert_eq!(yields(&mut p, 10), 0);
    }

    #[test]
    fn only_complete_frames_within_the_limit_are_counted() {
        let mut wire = Vec::new();
        for body in [&b"abc"[..], b"", b"0123456789"] {
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        assert_eq!(complete_frames(&wire, 64), (3, wire.len() as u64));
        assert_eq!(complete_frames(&wire[..wire.len() - 1], 64), (2, 11));
        assert_eq!(complete_frames(&wire[..2], 64), (0, 0));
        assert_eq!(complete_frames(&wire, 5), (2, 11));
    }
}
