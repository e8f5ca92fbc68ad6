//! The bounded send queue of one connection (lane).
//!
//! Senders encode straight into the queue's tail buffer under a short lock, so small messages
//! cost no allocation of their own and the writer takes everything queued in one swap and
//! writes it with one (vectored) syscall: that is the coalescing. Large payloads (16 KiB and
//! more) are queued by reference, never copied.
//!
//! Bound: `capacity` bytes. Overflow: on an ordinary lane the sender waits (async `push`) or
//! gets [`PushError::Full`] (`try_push`); on a monotonic lane the oldest queued messages are
//! dropped to make room (latest value wins) and counted. A single message larger than the
//! capacity is accepted only into an empty queue. Metric: `partisan_send_queue_bytes`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use partisan_core::wire::{
    encode_relay_head, encode_user_head, EncodeError, Message, RelayHeader, Target, UserHeader,
};
use tokio::sync::Notify;

use crate::stats::ChannelStats;

/// Bound of a lane's queued control frames, in bytes.
pub(crate) const CONTROL_CAPACITY: usize = 16 * 1024 * 1024;

/// The channel's `queued_bytes` gauge (shared by every lane of the channel) is brought up to
/// date when a batch is taken, when a push wakes the writer, and otherwise once a lane's
/// unreported change reaches this many bytes: one shared atomic per batch rather than per
/// message, and the gauge never lags a lane by more than this.
const REPORT_EVERY: i64 = 64 * 1024;

/// Payloads at least this large are queued by reference instead of copied.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// The addressing part of a queued application frame.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FrameHead<'a> {
    /// A message for a process on the peer.
    User(&'a UserHeader),
    /// A message the peer relays (or delivers, when it is the destination).
    Relay(&'a RelayHeader),
}

impl<'a> From<&'a UserHeader> for FrameHead<'a> {
    fn from(h: &'a UserHeader) -> Self {
        FrameHead::User(h)
    }
}

impl FrameHead<'_> {
    fn encode(self, out: &mut BytesMut, payload_len: usize, max: usize) -> Result<(), EncodeError> {
        match self {
            FrameHead::User(h) => encode_user_head(out, h, payload_len, max),
            FrameHead::Relay(h) => encode_relay_head(out, h, payload_len, max),
        }
    }

    /// Upper bound of the encoded head, for the capacity check.
    fn max_len(self) -> usize {
        match self {
            FrameHead::User(h) => {
                32 + match &h.to {
                    Target::Name(n) => n.as_str().len(),
                    _ => 0,
                }
            }
            FrameHead::Relay(h) => {
                64 + h.origin.as_str().len()
                    + h.dest.as_str().len()
                    + match &h.to {
                        partisan_core::wire::RelayTarget::Name(n) => n.as_str().len(),
                        _ => 0,
                    }
            }
        }
    }
}

/// What happens when a lane's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The sender waits for room.
    Block,
    /// The oldest queued messages are dropped (monotonic channels).
    DropOldest,
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue is full (ordinary lane, non-waiting push).
    Full,
    /// The connection is closing or closed.
    Closed,
    /// The message is larger than the frame limit.
    TooLarge(EncodeError),
}

struct Inner {
    /// Control frames (handshake verdict, keepalive): written before anything else in the next
    /// batch, never dropped, not counted against the capacity.
    control: BytesMut,
    /// Frozen data in send order: earlier tails and by-reference payloads.
    chunks: VecDeque<Bytes>,
    /// Where small frames are appended.
    tail: BytesMut,
    bytes: usize,
    frames: u64,
    /// Change of `bytes` not yet added to the channel's `queued_bytes` gauge (see
    /// [`REPORT_EVERY`]).
    unreported: i64,
    closed: bool,
    senders_waiting: bool,
    /// The writer is waiting for data and nobody has woken it yet: the next push must.
    writer_idle: bool,
}

/// One lane's send queue. See the module documentation.
pub(crate) struct LaneQueue {
    inner: Mutex<Inner>,
    writer: Notify,
    space: Notify,
    capacity: usize,
    overflow: Overflow,
    max_frame_len: usize,
    stats: Arc<ChannelStats>,
}

/// A batch taken by the writer.
pub(crate) struct Batch {
    /// Data to write, in order.
    pub(crate) chunks: Vec<Bytes>,
    /// Frames in the batch.
    pub(crate) frames: u64,
    /// Bytes in the batch.
    pub(crate) bytes: usize,
}

impl LaneQueue {
    pub(crate) fn new(
        capacity: usize,
        overflow: Overflow,
        max_frame_len: usize,
        stats: Arc<ChannelStats>,
    ) -> Self {
        LaneQueue {
            inner: Mutex::new(Inner {
                control: BytesMut::new(),
                chunks: VecDeque::new(),
                tail: BytesMut::new(),
                bytes: 0,
                frames: 0,
                unreported: 0,
                closed: false,
                senders_waiting: false,
                writer_idle: false,
            }),
            writer: Notify::new(),
            space: Notify::new(),
            capacity,
            overflow,
            max_frame_len,
            stats,
        }
    }

    /// Queues a user message without waiting.
    pub(crate) fn try_push(&self, head: FrameHead<'_>, payload: &Bytes) -> Result<(), PushError> {
        if self.overflow == Overflow::DropOldest {
            return self.push_latest(head, payload);
        }
        let mut g = self.inner.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        // Upper bound of the encoded size, for the capacity check.
        let approx = payload.len() + head.max_len();
        if g.bytes > 0 && g.bytes + approx > self.capacity {
            // Too large for any frame: say so at once, not after waiting for room (with room,
            // the encoder below refuses it exactly).
            if payload.len() >= self.max_frame_len {
                return Err(PushError::TooLarge(EncodeError::TooLarge {
                    len: payload.len(),
                    max: self.max_frame_len,
                }));
            }
            g.senders_waiting = true;
            return Err(PushError::Full);
        }
        let before = g.tail.len();
        if payload.len() < ZERO_COPY_MIN {
            head.encode(&mut g.tail, payload.len(), self.max_frame_len)
                .map_err(PushError::TooLarge)?;
            g.tail.extend_from_slice(payload);
            let len = g.tail.len() - before;
            self.account(&mut g, len);
        } else {
            head.encode(&mut g.tail, payload.len(), self.max_frame_len)
                .map_err(PushError::TooLarge)?;
            let head = g.tail.split().freeze();
            let len = head.len() + payload.len();
            g.chunks.push_back(head);
            g.chunks.push_back(payload.clone());
            self.account(&mut g, len);
        }
        let wake = std::mem::take(&mut g.writer_idle);
        drop(g);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Monotonic lanes: one chunk per frame; the oldest frames make room for the newest.
    fn push_latest(&self, head: FrameHead<'_>, payload: &Bytes) -> Result<(), PushError> {
        let mut frame = BytesMut::with_capacity(payload.len() + head.max_len());
        head.encode(&mut frame, payload.len(), self.max_frame_len)
            .map_err(PushError::TooLarge)?;
        frame.extend_from_slice(payload);
        let len = frame.len();
        let mut g = self.inner.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        let mut dropped = 0;
        while g.bytes > 0 && g.bytes + len > self.capacity {
            let Some(old) = g.chunks.pop_front() else {
                break;
            };
            g.bytes -= old.len();
            g.frames -= 1;
            dropped += 1;
            g.unreported -= old.len() as i64;
        }
        if dropped > 0 {
            self.stats.dropped(dropped);
        }
        g.chunks.push_back(frame.freeze());
        self.account(&mut g, len);
        let wake = std::mem::take(&mut g.writer_idle);
        drop(g);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    fn account(&self, g: &mut Inner, len: usize) {
        g.bytes += len;
        g.frames += 1;
        g.unreported += len as i64;
        if g.writer_idle || g.unreported.abs() >= REPORT_EVERY {
            self.stats.queued(std::mem::take(&mut g.unreported));
        }
    }

    /// Queues a user message, waiting for room on an ordinary lane.
    pub(crate) async fn push(&self, head: FrameHead<'_>, payload: &Bytes) -> Result<(), PushError> {
        loop {
            match self.try_push(head, payload) {
                Err(PushError::Full) => {}
                r => return r,
            }
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Room may have appeared between the failed attempt and enabling the waiter.
            match self.try_push(head, payload) {
                Err(PushError::Full) => notified.await,
                r => return r,
            }
        }
    }

    /// Queues a control frame (keepalive, overlay protocol) ahead of queued user data. Control
    /// traffic has its own bound, [`CONTROL_CAPACITY`] bytes, independent of the user-data
    /// bound so it never waits behind a stalled stream; beyond it the frame is refused with
    /// [`PushError::Full`] (the caller keeps or drops it; overlay protocols tolerate loss).
    pub(crate) fn push_control(&self, msg: &Message) -> Result<(), PushError> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        if g.control.len() >= CONTROL_CAPACITY {
            return Err(PushError::Full);
        }
        msg.encode_frame(&mut g.control, self.max_frame_len)
            .map_err(PushError::TooLarge)?;
        drop(g);
        self.writer.notify_one();
        Ok(())
    }

    /// Queues a control frame in order with user data (process signals: a `Down` must not
    /// overtake a reply sent before it). It does not wait: it may exceed the user-data bound by
    /// up to [`CONTROL_CAPACITY`] bytes, beyond which it is refused with [`PushError::Full`].
    pub(crate) fn push_in_order(&self, msg: &Message) -> Result<(), PushError> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(PushError::Closed);
        }
        if g.bytes >= self.capacity + CONTROL_CAPACITY {
            return Err(PushError::Full);
        }
        let before = g.tail.len();
        msg.encode_frame(&mut g.tail, self.max_frame_len)
            .map_err(PushError::TooLarge)?;
        let len = g.tail.len() - before;
        self.account(&mut g, len);
        let wake = std::mem::take(&mut g.writer_idle);
        drop(g);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Queues raw, already framed bytes (the handshake verdict) ahead of any user data.
    pub(crate) fn push_raw(&self, frame: &[u8]) {
        self.inner.lock().control.extend_from_slice(frame);
        self.writer.notify_one();
    }

    /// Stops accepting messages; what is queued is still handed to the writer, then
    /// [`LaneQueue::take`] returns `None`.
    pub(crate) fn close(&self) {
        self.inner.lock().closed = true;
        self.writer.notify_one();
        self.space.notify_waiters();
    }

    /// Waits for queued data and takes all of it; `None` once closed and empty.
    ///
    /// When it had to wait, the writer lets every other task that is ready to run go first, so
    /// that senders woken together (say, by one read that delivered many messages) all queue
    /// their frames before it takes them: one write for all instead of one each.
    pub(crate) async fn take(&self, chunks: Vec<Bytes>) -> Option<Batch> {
        let mut chunks = chunks;
        let mut waited = false;
        loop {
            if waited {
                BackOfQueue(false).await;
            }
            let notified = self.writer.notified();
            {
                let mut g = self.inner.lock();
                if g.bytes > 0 || !g.control.is_empty() {
                    g.writer_idle = false;
                    let control = g.control.len();
                    if control > 0 {
                        chunks.push(g.control.split().freeze());
                    }
                    chunks.extend(g.chunks.drain(..));
                    if !g.tail.is_empty() {
                        chunks.push(g.tail.split().freeze());
                    }
                    let batch = Batch {
                        chunks,
                        frames: g.frames,
                        bytes: g.bytes + control,
                    };
                    // What the gauge was told of these bytes, taken off it now.
                    let reported = g.bytes as i64 - std::mem::take(&mut g.unreported);
                    g.bytes = 0;
                    g.frames = 0;
                    let wake = std::mem::take(&mut g.senders_waiting);
                    drop(g);
                    if reported != 0 {
                        self.stats.queued(-reported);
                    }
                    if wake {
                        self.space.notify_waiters();
                    }
                    return Some(batch);
                }
                if g.closed {
                    return None;
                }
                g.writer_idle = true;
            }
            notified.await;
            waited = true;
        }
    }
}

/// Yields once by waking itself: the scheduler runs it again after the tasks already queued,
/// without polling for I/O first (unlike `tokio::task::yield_now`).
#[derive(Default)]
pub(crate) struct BackOfQueue(bool);

impl std::future::Future for BackOfQueue {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl PushError {
    /// The send error a caller sees for a push to a lane of `node` that failed this way.
    pub(crate) fn into_send_error(
        self,
        node: &partisan_core::id::NodeName,
    ) -> crate::error::SendError {
        use crate::error::SendError;
        match self {
            PushError::Closed => SendError::NotConnected(node.clone()),
            PushError::Full => SendError::Full(node.clone()),
            PushError::TooLarge(EncodeError::TooLarge { len, max }) => {
                SendError::TooLarge { len, max }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use partisan_core::id::ChannelName;
    use partisan_core::wire::{FrameDecoder, Target};

    fn queue(cap: usize, overflow: Overflow) -> LaneQueue {
        LaneQueue::new(
            cap,
            overflow,
            1 << 20,
            Arc::new(ChannelStats::new("t@h", &ChannelName::default_channel())),
        )
    }

    fn header(id: u64) -> UserHeader {
        UserHeader {
            to: Target::Pid(id),
            from: None,
        }
    }

    fn decode_all(batch: Batch) -> Vec<u64> {
        let mut buf = BytesMut::new();
        for c in batch.chunks {
            buf.extend_from_slice(&c);
        }
        let d = FrameDecoder::new(1 << 20);
        let mut ids = vec![];
        while let Some(f) = d.decode(&mut buf).unwrap() {
            if let Message::User { header, .. } = Message::decode(f).unwrap() {
                if let Target::Pid(id) = header.to {
                    ids.push(id);
                }
            }
        }
        ids
    }

    #[tokio::test]
    async fn a_message_over_the_frame_limit_fails_at_once_even_on_a_full_queue() {
        let q = queue(64 * 1024, Overflow::Block);
        q.try_push((&header(1)).into(), &Bytes::from(vec![0u8; 60 * 1024]))
            .unwrap();
        let big = Bytes::from(vec![0u8; 2 << 20]);
        // Would wait for room forever-ish if the size were checked after the capacity.
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            q.push((&header(2)).into(), &big),
        )
        .await
        .expect("push returned at once");
        assert!(matches!(r, Err(PushError::TooLarge(_))), "{r:?}");
    }

    #[tokio::test]
    async fn coalesces_small_and_large_frames_in_order() {
        let q = queue(1 << 20, Overflow::Block);
        q.try_push((&header(1)).into(), &Bytes::from_static(b"a"))
            .unwrap();
        q.try_push((&header(2)).into(), &Bytes::from(vec![7u8; 20_000]))
            .unwrap();
        q.try_push((&header(3)).into(), &Bytes::from_static(b"c"))
            .unwrap();
        let batch = q.take(Vec::new()).await.unwrap();
        assert_eq!(batch.frames, 3);
        assert_eq!(decode_all(batch), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn senders_woken_together_go_out_in_one_batch() {
        let q = Arc::new(queue(1 << 20, Overflow::Block));
        let writer = {
            let q = q.clone();
            tokio::spawn(async move { decode_all(q.take(Vec::new()).await.unwrap()) })
        };
        tokio::task::yield_now().await; // the writer now waits on the empty queue
        let go = Arc::new(tokio::sync::Notify::new());
        let senders: Vec<_> = (2..=3)
            .map(|id| {
                let (q, go) = (q.clone(), go.clone());
                tokio::spawn(async move {
                    go.notified().await;
                    q.try_push((&header(id)).into(), &Bytes::from_static(b"x"))
                        .unwrap();
                })
            })
            .collect();
        tokio::task::yield_now().await; // both senders wait for the signal
                                        // Wake the writer first, then two more senders: all three frames make one batch.
        q.try_push((&header(1)).into(), &Bytes::from_static(b"x"))
            .unwrap();
        go.notify_waiters();
        assert_eq!(writer.await.unwrap(), vec![1, 2, 3]);
        for s in senders {
            s.await.unwrap();
        }
    }

    #[tokio::test]
    async fn full_ordinary_lane_holds_the_sender_back_until_drained() {
        let q = Arc::new(queue(100, Overflow::Block));
        q.try_push((&header(1)).into(), &Bytes::from(vec![0u8; 90]))
            .unwrap();
        assert_eq!(
            q.try_push((&header(2)).into(), &Bytes::from(vec![0u8; 90])),
            Err(PushError::Full)
        );
        let q2 = q.clone();
        let pusher = tokio::spawn(async move {
            q2.push((&header(2)).into(), &Bytes::from(vec![0u8; 90]))
                .await
        });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        assert_eq!(decode_all(q.take(Vec::new()).await.unwrap()), vec![1]);
        pusher.await.unwrap().unwrap();
        assert_eq!(decode_all(q.take(Vec::new()).await.unwrap()), vec![2]);
    }

    #[tokio::test]
    async fn the_queued_bytes_gauge_lags_a_lane_by_less_than_its_reporting_step() {
        let q = queue(1 << 20, Overflow::Block);
        let queued = || q.stats.snapshot().queued_bytes as i64;
        for i in 0..2000 {
            q.try_push((&header(i)).into(), &Bytes::from(vec![0u8; 100]))
                .unwrap();
            let pushed = q.inner.lock().bytes as i64;
            assert!(pushed - queued() < REPORT_EVERY, "{pushed} {}", queued());
            assert!(queued() <= pushed);
        }
        q.take(Vec::new()).await.unwrap();
        assert_eq!(queued(), 0);
        let m = queue(1000, Overflow::DropOldest);
        for i in 0..100 {
            m.try_push((&header(i)).into(), &Bytes::from(vec![0u8; 300]))
                .unwrap();
        }
        m.take(Vec::new()).await.unwrap();
        assert_eq!(m.stats.snapshot().queued_bytes, 0);
    }

    #[tokio::test]
    async fn monotonic_lane_keeps_the_latest_messages() {
        let q = queue(100, Overflow::DropOldest);
        for i in 0..10 {
            q.try_push((&header(i)).into(), &Bytes::from(vec![0u8; 40]))
                .unwrap();
        }
        assert_eq!(decode_all(q.take(Vec::new()).await.unwrap()), vec![8, 9]);
        assert_eq!(q.stats.dropped_count(), 8);
    }

    #[tokio::test]
    async fn closed_queue_refuses_senders_and_ends_the_writer_after_flushing() {
        let q = queue(1000, Overflow::Block);
        q.try_push((&header(1)).into(), &Bytes::new()).unwrap();
        q.close();
        assert_eq!(
            q.try_push((&header(2)).into(), &Bytes::new()),
            Err(PushError::Closed)
        );
        assert_eq!(decode_all(q.take(Vec::new()).await.unwrap()), vec![1]);
        assert!(q.take(Vec::new()).await.is_none());
    }
}
