//! Behaviours: processes with a standard shape, after Erlang/OTP's `gen_server` and
//! `gen_statem`, whose calls work the same on one node and across nodes.
//!
//! - [`gen_server`]: a [`GenServer`](gen_server::GenServer) answers calls, casts and other
//!   messages with async handlers over its own state.
//! - [`gen_statem`]: a [`GenStatem`](gen_statem::GenStatem) is a state machine whose
//!   `handle_event` returns the next state and actions (replies, postpone, next events,
//!   state, event and named timeouts), with optional state enter calls.
//!
//! Both run as a spawned process and share the call mechanics (`call.rs`): a call is made from
//! a temporary process that monitors the server and gives the request a fresh alias as its
//! reply tag, so a call ends with the reply, the server's `Down`, or its timeout, and a reply
//! arriving after its call ended is dropped. Requests, replies and casts are postcard values
//! sent on the `default` channel's first lane, where monitor signals travel too: a request
//! follows the monitor made for it, and a reply sent before the server ended arrives before
//! that end's `Down`. See `docs/semantics.md`, "GenServer and GenStatem".

pub(crate) mod call;
pub mod gen_server;
pub mod gen_statem;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

use partisan_core::id::{Pid, ProcessName};
use partisan_core::signals::ExitReason;
use tokio::sync::oneshot;

use crate::error::RegisterError;
use crate::node::Node;
use crate::process::Process;

pub use call::{CallError, Endpoint, ReplyTo};

/// Why a [`GenServer`](gen_server::GenServer) or [`GenStatem`](gen_statem::GenStatem) did
/// not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerStartError {
    /// Its `init` returned this reason (or panicked: [`ExitReason::Panic`]), or the process
    /// was ended before `init` completed. The process has ended with this reason.
    #[error("init failed: {0}")]
    Init(ExitReason),
    /// The name could not be registered (taken or malformed); nothing was started.
    #[error(transparent)]
    Name(#[from] RegisterError),
}

/// How a behaviour process was started: who to tell when `init` is done, and its parent.
pub(crate) struct Launch {
    /// The process that started it linked ([`gen_server::start_link`]): an exit signal from
    /// it, when trapped, ends the behaviour (after `terminate`) with the signal's reason.
    pub(crate) parent: Option<Pid>,
    /// Waits for the outcome of `init` ([`gen_server::start`]).
    ack: Option<oneshot::Sender<Result<(), ExitReason>>>,
}

impl Launch {
    /// Reports the outcome of `init` to the starter, if it waits for it.
    pub(crate) fn init_done(&mut self, outcome: Result<(), &ExitReason>) {
        if let Some(tx) = self.ack.take() {
            let _ = tx.send(outcome.map_err(Clone::clone));
        }
    }

    /// Whether `env` is an exit signal from the parent (which ends a trapping behaviour).
    pub(crate) fn parent_exit(&self, env: &crate::Envelope) -> Option<ExitReason> {
        match env.signal() {
            Some(crate::Signal::Exit(e)) if e.from.is_some() && e.from == self.parent => {
                Some(e.reason.clone())
            }
            _ => None,
        }
    }
}

/// Spawns `body` on `node` (registered as `name` if given) and waits for its `init`.
pub(crate) async fn start<F, Fut>(
    node: &Node,
    name: Option<&str>,
    body: F,
) -> Result<Pid, ServerStartError>
where
    F: FnOnce(Process, Launch) -> Fut,
    Fut: Future<Output = ExitReason> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let launch = Launch {
        parent: None,
        ack: Some(tx),
    };
    let pid = match name {
        Some(name) => node.spawn_named(name, move |p| body(p, launch))?,
        None => node.spawn(move |p| body(p, launch)),
    };
    match rx.await {
        Ok(Ok(())) => Ok(pid),
        Ok(Err(reason)) => Err(ServerStartError::Init(reason)),
        Err(_) => Err(ServerStartError::Init(ExitReason::error(
            "ended before its init completed",
        ))),
    }
}

/// Spawns `body` linked with `parent` (registered as `name` if given) without waiting.
pub(crate) fn start_link<F, Fut>(
    parent: &Process,
    name: Option<&str>,
    body: F,
) -> Result<Pid, ServerStartError>
where
    F: FnOnce(Process, Launch) -> Fut + Send + 'static,
    Fut: Future<Output = ExitReason> + Send + 'static,
{
    let launch = Launch {
        parent: Some(parent.pid().clone()),
        ack: None,
    };
    let Some(name) = name else {
        return Ok(parent.spawn_link(move |p| body(p, launch)));
    };
    ProcessName::new(name).map_err(RegisterError::from)?;
    // The child waits until its name is registered; if registration fails it is unlinked
    // and ends without running, so the parent hears nothing of it.
    let (go, gate) = oneshot::channel::<()>();
    let pid = parent.spawn_link(move |p| async move {
        if gate.await.is_err() {
            return ExitReason::Normal;
        }
        body(p, launch).await
    });
    match parent.node().register(name, &pid) {
        Ok(()) => {
            let _ = go.send(());
            Ok(pid)
        }
        Err(e) => {
            parent
                .node()
                .shared
                .registry
                .unlink(parent.pid().id, pid.id);
            drop(go);
            Err(e.into())
        }
    }
}

/// The instant `after` from now; a delay too large to represent (`Duration::MAX` as "no
/// timeout") is about thirty years.
pub(crate) fn deadline(after: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(30 * 365 * 24 * 3600))
}

/// Runs `f`, turning a panic in it into `Err` with the panic's message.
pub(crate) async fn catch<F: Future>(f: F) -> Result<F::Output, String> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(crate::process::task::panic_message(payload.as_ref()))),
        }
    })
    .await
}
