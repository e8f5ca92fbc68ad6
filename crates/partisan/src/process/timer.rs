//! Messages sent later: [`Node::send_after`] and its cancellable [`TimerRef`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::node::Node;
use crate::send::{Destination, SendOptions};

/// A message scheduled with [`Node::send_after`]; cancel it with [`TimerRef::cancel`].
/// Dropping the reference does not cancel the message.
#[derive(Debug)]
pub struct TimerRef {
    done: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

impl TimerRef {
    /// Cancels the message; `true` if it had not been sent yet (it never will be), `false`
    /// if it was already sent (or its send failed).
    pub fn cancel(&self) -> bool {
        let was_pending = !self.done.swap(true, Ordering::AcqRel);
        if was_pending {
            self.task.abort();
        }
        was_pending
    }

    /// Whether the message is still waiting to be sent.
    pub fn is_pending(&self) -> bool {
        !self.done.load(Ordering::Acquire)
    }
}

impl Node {
    /// Sends `payload` to `dest` after `delay` (as [`Node::send`] would then, without a
    /// sender pid), unless [`TimerRef::cancel`] comes first. A failed send is logged at debug
    /// level and otherwise dropped, as a send to a process that ended is.
    pub fn send_after(
        &self,
        dest: impl Destination,
        payload: impl Into<Bytes>,
        delay: Duration,
        opts: &SendOptions,
    ) -> TimerRef {
        let dest = dest.dest().to_remote_ref();
        let payload = payload.into();
        let opts = opts.clone();
        let node = self.detached_handle();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if flag.swap(true, Ordering::AcqRel) {
                return;
            }
            if let Err(e) = node.send(&dest, payload, &opts).await {
                tracing::debug!(%dest, error = %e, "send_after could not send");
            }
        });
        TimerRef {
            done,
            task: task.abort_handle(),
        }
    }
}
