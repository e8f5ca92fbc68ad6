//! Processes: a pid with a bounded mailbox, an end with a reason, monitors and links.

pub(crate) mod alive;
pub(crate) mod lifecycle;
pub(crate) mod mailbox;
pub(crate) mod monitor;
pub(crate) mod node_monitor;
pub(crate) mod registry;
pub(crate) mod signal;
pub(crate) mod task;
pub(crate) mod timer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use partisan_core::id::{Pid, Ref};
use serde::Serialize;

use crate::error::{RegisterError, SendError};
use crate::node::Node;
use crate::process::mailbox::Mailbox;
use crate::process::registry::Envelope;
use crate::send::{Destination, SendOptions};

pub use signal::{Down, ExitReason, ExitSignal, Signal};
pub use task::ProcessExit;
pub use timer::TimerRef;

/// A process: owns a pid and its mailbox. Messages it sends carry its pid, so receivers can
/// answer. A process made with [`Node::process`] ends when its handle is dropped (reason
/// [`ExitReason::Normal`](crate::ExitReason::Normal)); a spawned one when its task ends (see
/// [`Node::spawn`]). Either way its pid, names and aliases stop receiving, and its monitors
/// and links fire.
pub struct Process {
    node: Node,
    pid: Pid,
    mailbox: Arc<Mailbox>,
    /// Run by a spawned task, which ends it with its reason (the handle's drop does not).
    spawned: bool,
}

/// Why [`Process::recv_timeout`] returned without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The node shut down.
    #[error("mailbox closed")]
    Closed,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).finish()
    }
}

impl Process {
    pub(crate) fn new(node: Node, pid: Pid, mailbox: Arc<Mailbox>) -> Self {
        Process {
            node,
            pid,
            mailbox,
            spawned: false,
        }
    }

    pub(crate) fn set_spawned(&mut self) {
        self.spawned = true;
    }

    /// Spawns `f` as a new process linked with this one (atomically: the link exists before
    /// `f` runs); returns its pid. See [`Node::spawn`].
    pub fn spawn_link<F, Fut>(&self, f: F) -> Pid
    where
        F: FnOnce(Process) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: ProcessExit,
    {
        let node = self.node.detached_handle();
        let child = node.process();
        let outcome = self.node.shared.registry.link(self.pid.id, child.pid.id);
        let child_id = child.pid.id;
        let pid = node.start_process(child, f);
        if outcome == registry::LinkOutcome::CallerEnded {
            // Linked to a process that has ended: as a link to a missing process, the child
            // gets an exit signal `noproc` (which ends it unless it traps exits).
            self.node.shared.exit_signal(
                child_id,
                Some(self.pid.clone()),
                partisan_core::signals::ExitReason::NoProc,
                true,
            );
        }
        pid
    }

    /// This process's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The node the process runs on. For a process started with [`Node::spawn`] this handle
    /// (and its clones) does not keep the node running; for one made with [`Node::process`] it
    /// does.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The next message; `None` once the node has shut down and the mailbox is drained (or,
    /// for a process made with [`Node::process`], once it was ended by an exit signal). A
    /// spawned process ended by an exit signal never sees `None`: its task is cancelled.
    pub async fn recv(&mut self) -> Option<Envelope> {
        match std::future::poll_fn(|cx| self.mailbox.poll_recv(cx)).await {
            Some(env) => Some(env),
            None => {
                self.ended_while_running().await;
                None
            }
        }
    }

    /// A spawned process whose mailbox closed because it was ended (killed) while the node
    /// runs is being cancelled: it waits here for the cancellation rather than run on as if
    /// its node were stopping.
    async fn ended_while_running(&self) {
        if self.spawned && !self.node.shared.is_stopped() {
            std::future::pending::<()>().await;
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        self.mailbox.try_recv()
    }

    /// The next message, waiting at most `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Envelope, RecvError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(RecvError::Closed),
            Err(_) => Err(RecvError::Timeout),
        }
    }

    /// Receives up to `limit` waiting messages into `buf` (at least one, waiting for it);
    /// returns how many, 0 once the mailbox is closed (or `limit` is 0).
    pub async fn recv_many(&mut self, buf: &mut Vec<Envelope>, limit: usize) -> usize {
        let n = std::future::poll_fn(|cx| self.mailbox.poll_recv_many(cx, buf, limit)).await;
        if n == 0 && limit > 0 {
            self.ended_while_running().await;
        }
        n
    }

    /// Sends from this process (the receiver sees this pid as `from`). See [`Node::send`].
    pub async fn send(
        &self,
        dest: impl Destination,
        payload: impl Into<Bytes>,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        self.node
            .shared
            .send(Some(self.pid.id), dest.dest(), payload.into(), opts, true)
            .await
    }

    /// Like [`Process::send`] but never waits.
    pub fn try_send(
        &self,
        dest: impl Destination,
        payload: impl Into<Bytes>,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        crate::send::now_or_never(self.node.shared.send(
            Some(self.pid.id),
            dest.dest(),
            payload.into(),
            opts,
            false,
        ))
    }

    /// Sends a postcard-encoded value from this process.
    pub async fn send_typed<T: Serialize>(
        &self,
        dest: impl Destination,
        msg: &T,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        let bytes = postcard::to_allocvec(msg).map_err(|e| SendError::Encode(e.to_string()))?;
        self.send(dest, bytes, opts).await
    }

    /// Answers the sender of `env` (from this process). Errors if `env` had no sender.
    pub async fn reply(
        &self,
        env: &Envelope,
        payload: impl Into<Bytes>,
        opts: &SendOptions,
    ) -> Result<(), SendError> {
        let to = env
            .from
            .as_ref()
            .ok_or_else(|| SendError::NoProcess("message had no sender".into()))?;
        self.send(to, payload, opts).await
    }

    /// A new reference that, until [`Process::unalias`] or the end of the process, delivers
    /// messages sent to it into this mailbox (with [`Envelope::via`] set).
    pub fn alias(&self) -> Ref {
        let r = self.node.make_ref();
        self.node.shared.registry.alias(r.id, self.pid.id);
        r
    }

    /// Removes an alias of this process; returns whether it was one.
    pub fn unalias(&self, r: &Ref) -> bool {
        &r.node == self.node.name()
            && r.creation == self.node.creation()
            && self.node.shared.registry.unalias(r.id)
    }

    /// Registers this process under `name`.
    pub fn register(&self, name: &str) -> Result<(), RegisterError> {
        self.node.register(name, &self.pid)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.spawned {
            self.node
                .shared
                .end_process(self.pid.id, partisan_core::signals::ExitReason::Normal);
        }
    }
}
