//! A process's mailbox: a bounded queue of envelopes with one receiver.
//!
//! One short lock per message on each side: the sender appends and takes the receiver's waker,
//! the receiver pops (or drains a batch) and gives the room back. Both bounds, in messages and
//! in payload bytes, are checked under the same lock, so a message is admitted or refused as a
//! whole (no reservation to give back). It replaces a tokio channel plus an atomic byte
//! counter, which cost several atomic operations and a mutex per message on each side.
//!
//! Bound: `cap_msgs` messages and `cap_bytes` payload bytes (a single larger message enters an
//! empty mailbox). Overflow: [`Mailbox::try_push`] refuses, [`Mailbox::push`] waits for room.
//! Receiving takes part in tokio's cooperative budget, as a tokio channel does, so a process
//! that always finds a message waiting still lets the other tasks of its thread run.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::process::registry::Envelope;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Mailbox {
    inner: Mutex<Slots>,
    /// Senders waiting for room.
    room: Notify,
    cap_msgs: usize,
    cap_bytes: usize,
}

#[derive(Debug)]
struct Slots {
    queue: VecDeque<Envelope>,
    /// Payload bytes queued (each message counts at least one).
    bytes: usize,
    /// The process ended or the node stopped: nothing more is admitted; the receiver drains
    /// what is queued, then sees the end.
    closed: bool,
    /// The receiver, when it found the mailbox empty.
    rx: Option<Waker>,
    /// A sender was refused for lack of room since the receiver last made room.
    senders_waiting: bool,
}

/// Why [`Mailbox::try_push`] did not queue a message; the message comes back.
#[derive(Debug)]
pub(crate) enum Refused {
    /// No room (in messages or bytes).
    Full(Envelope),
    /// The mailbox is closed.
    Closed(Envelope),
}

fn cost(payload: &Bytes) -> usize {
    payload.len().max(1)
}

impl Mailbox {
    /// An open, empty mailbox.
    pub(crate) fn new(cap_msgs: usize, cap_bytes: usize) -> Self {
        Mailbox {
            inner: Mutex::new(Slots {
                queue: VecDeque::new(),
                bytes: 0,
                closed: false,
                rx: None,
                senders_waiting: false,
            }),
            room: Notify::new(),
            cap_msgs: cap_msgs.max(1),
            cap_bytes,
        }
    }

    /// Queues `env` if there is room, waking the receiver.
    pub(crate) fn try_push(&self, env: Envelope) -> Result<(), Refused> {
        let len = cost(&env.payload);
        let mut g = self.inner.lock();
        if g.closed {
            return Err(Refused::Closed(env));
        }
        if g.queue.len() >= self.cap_msgs || (g.bytes > 0 && g.bytes + len > self.cap_bytes) {
            g.senders_waiting = true;
            return Err(Refused::Full(env));
        }
        g.queue.push_back(env);
        g.bytes += len;
        let rx = g.rx.take();
        drop(g);
        if let Some(w) = rx {
            w.wake();
        }
        Ok(())
    }

    /// Queues a signal past the bound (signals are bounded by the monitors and links that
    /// make them); `false` if the mailbox is closed.
    pub(crate) fn push_signal(&self, env: Envelope) -> bool {
        let mut g = self.inner.lock();
        if g.closed {
            return false;
        }
        g.bytes += cost(&env.payload);
        g.queue.push_back(env);
        let rx = g.rx.take();
        drop(g);
        if let Some(w) = rx {
            w.wake();
        }
        true
    }

    /// Removes every queued message `pred` picks; how many.
    pub(crate) fn remove_where(&self, mut pred: impl FnMut(&Envelope) -> bool) -> usize {
        let mut g = self.inner.lock();
        let before = g.queue.len();
        let mut freed = 0;
        g.queue.retain(|e| {
            let drop = pred(e);
            if drop {
                freed += cost(&e.payload);
            }
            !drop
        });
        g.bytes -= freed;
        let removed = before - g.queue.len();
        self.made_room(g);
        removed
    }

    /// Queues `env`, waiting for room; gives it back if the mailbox closes first.
    pub(crate) async fn push(&self, mut env: Envelope) -> Result<(), Envelope> {
        loop {
            env = match self.try_push(env) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(env)) => return Err(env),
                Err(Refused::Full(env)) => env,
            };
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Room may have appeared between the refusal and enabling the waiter.
            env = match self.try_push(env) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(env)) => return Err(env),
                Err(Refused::Full(env)) => env,
            };
            notified.await;
        }
    }

    /// The next message; `Ready(None)` once closed and drained.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut g = self.inner.lock();
        if let Some(env) = g.queue.pop_front() {
            g.bytes -= cost(&env.payload);
            self.made_room(g);
            coop.made_progress();
            return Poll::Ready(Some(env));
        }
        if g.closed {
            coop.made_progress();
            return Poll::Ready(None);
        }
        Self::park(&mut g, cx);
        Poll::Pending
    }

    /// Up to `limit` waiting messages appended to `buf` (at least one, waiting for it);
    /// `Ready(0)` once closed and drained.
    pub(crate) fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        buf: &mut Vec<Envelope>,
        limit: usize,
    ) -> Poll<usize> {
        if limit == 0 {
            return Poll::Ready(0);
        }
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut g = self.inner.lock();
        let n = g.queue.len().min(limit);
        if n > 0 {
            let mut freed = 0;
            for env in g.queue.drain(..n) {
                freed += cost(&env.payload);
                buf.push(env);
            }
            g.bytes -= freed;
            self.made_room(g);
            coop.made_progress();
            return Poll::Ready(n);
        }
        if g.closed {
            coop.made_progress();
            return Poll::Ready(0);
        }
        Self::park(&mut g, cx);
        Poll::Pending
    }

    /// The next message if one is waiting (`None` also when closed and drained).
    pub(crate) fn try_recv(&self) -> Option<Envelope> {
        let mut g = self.inner.lock();
        let env = g.queue.pop_front()?;
        g.bytes -= cost(&env.payload);
        self.made_room(g);
        Some(env)
    }

    /// Stops admitting messages and wakes everyone waiting: the receiver drains what is
    /// queued, then sees the end; waiting senders give up.
    pub(crate) fn close(&self) {
        let rx = {
            let mut g = self.inner.lock();
            g.closed = true;
            g.rx.take()
        };
        if let Some(w) = rx {
            w.wake();
        }
        self.room.notify_waiters();
    }

    /// Messages queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Wakes refused senders, if any, once the lock is released.
    fn made_room(&self, mut g: parking_lot::MutexGuard<'_, Slots>) {
        let wake = std::mem::take(&mut g.senders_waiting);
        drop(g);
        if wake {
            self.room.notify_waiters();
        }
    }

    /// Registers the receiver's waker (cloned only when it changed).
    fn park(g: &mut Slots, cx: &mut Context<'_>) {
        match &g.rx {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => g.rx = Some(cx.waker().clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(len: usize) -> Envelope {
        Envelope {
            from: None,
            via: None,
            payload: Bytes::from(vec![0u8; len]),
            signal: None,
        }
    }

    fn recv_now(m: &Mailbox) -> Poll<Option<Envelope>> {
        m.poll_recv(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn bounded_in_messages_and_bytes_and_one_large_message_fits_an_empty_mailbox() {
        let m = Mailbox::new(2, 100);
        m.try_push(env(10)).unwrap();
        m.try_push(env(10)).unwrap();
        assert!(matches!(m.try_push(env(1)), Err(Refused::Full(_))));
        assert!(matches!(recv_now(&m), Poll::Ready(Some(_))));
        assert!(matches!(m.try_push(env(91)), Err(Refused::Full(_))));
        m.try_push(env(90)).unwrap();
        let mut buf = Vec::new();
        let r = m.poll_recv_many(&mut Context::from_waker(Waker::noop()), &mut buf, 10);
        assert_eq!((r, buf.len()), (Poll::Ready(2), 2));
        m.try_push(env(1000)).unwrap();
        assert!(matches!(m.try_push(env(0)), Err(Refused::Full(_))));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn closing_lets_the_receiver_drain_then_ends_it_and_refuses_senders() {
        let m = Mailbox::new(8, 1 << 20);
        m.try_push(env(3)).unwrap();
        m.close();
        assert!(matches!(m.try_push(env(1)), Err(Refused::Closed(_))));
        assert!(matches!(recv_now(&m), Poll::Ready(Some(_))));
        assert!(matches!(recv_now(&m), Poll::Ready(None)));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_in_once_the_receiver_makes_room_and_gives_up_on_close() {
        let m = std::sync::Arc::new(Mailbox::new(1, 1 << 20));
        m.try_push(env(1)).unwrap();
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { m2.push(env(2)).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(m.try_recv().map(|e| e.payload.len()), Some(1));
        assert!(waiter.await.unwrap());
        assert_eq!(m.try_recv().map(|e| e.payload.len()), Some(2));

        m.try_push(env(1)).unwrap();
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { m2.push(env(2)).await.is_ok() });
        tokio::task::yield_now().await;
        m.close();
        assert!(!waiter.await.unwrap());
    }
}
