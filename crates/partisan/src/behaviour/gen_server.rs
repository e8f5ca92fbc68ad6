//! GenServer: a process that serves calls and casts with async handlers over its own state,
//! after Erlang/OTP's `gen_server`. Its calls work the same from this node and from others.
//!
//! ```no_run
//! use std::time::Duration;
//! use partisan::gen_server::{self, CallResponse, GenServer};
//! use partisan::{Process, ReplyTo};
//! use serde::{Deserialize, Serialize};
//!
//! struct Counter(u64);
//!
//! #[derive(Serialize, Deserialize)]
//! enum Req { Add(u64), Get }
//!
//! impl GenServer for Counter {
//!     type Call = Req;
//!     type Reply = u64;
//!     type Cast = u64;
//!
//!     async fn handle_call(&mut self, req: Req, _from: ReplyTo<u64>, _me: &mut Process)
//!         -> CallResponse<u64> {
//!         if let Req::Add(n) = req { self.0 += n; }
//!         CallResponse::Reply(self.0)
//!     }
//! }
//!
//! # async fn f(a: partisan::Node, b: partisan::Node) -> Result<(), Box<dyn std::error::Error>> {
//! gen_server::start_named(&b, "counter", Counter(0)).await?;
//! let counter = partisan::Node::name_on(b.name(), "counter")?;
//! let n: u64 = gen_server::call(&a, &counter, &Req::Add(2), Duration::from_secs(1)).await?;
//! gen_server::cast(&a, &counter, &5u64).await?;
//! # Ok(()) }
//! ```

use std::future::Future;

use partisan_core::id::Pid;
use partisan_core::signals::ExitReason;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call::{receive, reply_quietly, Incoming};
use super::{catch, Launch};
use crate::node::Node;
use crate::process::registry::Envelope;
use crate::process::Process;

pub use super::call::{call, cast, stop, CallError, Endpoint, ReplyTo};
pub use super::ServerStartError;

/// What a [`GenServer::handle_call`] does with its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResponse<R> {
    /// Replies now and goes on.
    Reply(R),
    /// Goes on without replying: the handler kept the [`ReplyTo`] and it (or any process it
    /// was handed to, on any node) replies later with [`ReplyTo::reply`]. If nobody does,
    /// the caller times out.
    NoReply,
    /// Replies (if `reply` is given) and then stops: `terminate` runs and the server ends
    /// with `reason`. The reply reaches the caller before the server's end does.
    Stop {
        /// The server's exit reason.
        reason: ExitReason,
        /// The reply to send first, if any.
        reply: Option<R>,
    },
}

/// Whether a server goes on after a cast or info handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Goes on serving.
    Continue,
    /// Stops: `terminate` runs and the server ends with this reason.
    Stop(ExitReason),
}

/// A server's callbacks. The implementing value is the server's state; it runs in a spawned
/// process, one message at a time, in the order messages arrive in its mailbox. Calls,
/// replies and casts are postcard-encoded, so the same types work locally and remotely.
///
/// Handlers are async and receive the server's own [`Process`] (its pid, node, sends,
/// monitors, links). They may `await` anything; the server handles nothing else meanwhile.
/// A handler that panics ends the server with [`ExitReason::Panic`] after `terminate`.
///
/// Implement the handlers with `async fn` in the `impl` block; their futures must be `Send`.
pub trait GenServer: Send + Sized + 'static {
    /// The requests of calls.
    type Call: DeserializeOwned + Send + 'static;
    /// The replies to calls.
    type Reply: Serialize + Send + Sync + 'static;
    /// The messages of casts.
    type Cast: DeserializeOwned + Send + 'static;

    /// Runs first, before any message is handled. An error ends the server with that reason
    /// ([`start`] then returns it). By default, does nothing.
    fn init(&mut self, me: &mut Process) -> impl Future<Output = Result<(), ExitReason>> + Send {
        let _ = me;
        async { Ok(()) }
    }

    /// Handles a call: reply now, later ([`CallResponse::NoReply`], keeping `from`), or stop.
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo<Self::Reply>,
        me: &mut Process,
    ) -> impl Future<Output = CallResponse<Self::Reply>> + Send;

    /// Handles a cast. By default, ignores it.
    fn handle_cast(
        &mut self,
        message: Self::Cast,
        me: &mut Process,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (message, me);
        async { Flow::Continue }
    }

    /// Handles any other message or signal: plain messages, `Down`s of the server's
    /// monitors, trapped exit signals (except its parent's, which stop the server), node
    /// monitor notices. By default, ignores it.
    fn handle_info(
        &mut self,
        message: Envelope,
        me: &mut Process,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (message, me);
        async { Flow::Continue }
    }

    /// Runs once when the server stops on its own account (a handler's stop, a panic in a
    /// handler, [`stop`], its parent's trapped exit signal with that reason, the node shutting
    /// down with [`ExitReason::Shutdown`]). It does not run when the server is killed by an
    /// exit signal it does not trap. By default, does nothing.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        me: &mut Process,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, me);
        async {}
    }
}

/// Starts `server` in a new process on `node` and waits for its `init`: its pid, or
/// [`ServerStartError::Init`] with the reason `init` failed with (the process has ended).
pub async fn start<S: GenServer>(node: &Node, server: S) -> Result<Pid, ServerStartError> {
    super::start(node, None, move |p, launch| serve(p, server, launch)).await
}

/// [`start`], with the server registered under `name` before `init` runs (so it can be
/// called by name as soon as this returns, from any node). A taken name is
/// [`ServerStartError::Name`], and nothing is started.
pub async fn start_named<S: GenServer>(
    node: &Node,
    name: &str,
    server: S,
) -> Result<Pid, ServerStartError> {
    super::start(node, Some(name), move |p, launch| serve(p, server, launch)).await
}

/// Starts `server` in a new process linked with `parent` (with [`Process::spawn_link`]: the
/// link exists before `init` runs) and returns its pid at once, without waiting for `init`;
/// messages sent to it meanwhile wait in its mailbox. An `init` failure ends the server with
/// its reason, which reaches `parent` over the link. If the server traps exits
/// ([`Process::trap_exits`], e.g. in `init`), an exit signal from `parent` stops it after
/// `terminate`, with the signal's reason; otherwise that signal ends it at once.
///
/// Its shape fits a supervisor's child start function: `move |p| start_link(p, Server::new())`.
pub fn start_link<S: GenServer>(parent: &Process, server: S) -> Result<Pid, ServerStartError> {
    super::start_link(parent, None, move |p, launch| serve(p, server, launch))
}

/// [`start_link`], with the server registered under `name` before `init` runs; a taken name
/// is [`ServerStartError::Name`], and nothing is started (or linked).
pub fn start_link_named<S: GenServer>(
    parent: &Process,
    name: &str,
    server: S,
) -> Result<Pid, ServerStartError> {
    super::start_link(parent, Some(name), move |p, launch| {
        serve(p, server, launch)
    })
}

/// The server's process: `init`, then one message at a time until a stop.
async fn serve<S: GenServer>(mut me: Process, mut server: S, mut launch: Launch) -> ExitReason {
    let init = match catch(server.init(&mut me)).await {
        Ok(r) => r,
        Err(panic) => Err(ExitReason::panic(panic)),
    };
    launch.init_done(init.as_ref().map(|_| ()));
    if let Err(reason) = init {
        return reason;
    }
    loop {
        let Some(env) = me.recv().await else {
            // The node is shutting down.
            return finish(&mut server, &mut me, ExitReason::Shutdown).await;
        };
        let Some(incoming) = receive::<S::Call, S::Cast, S::Reply>(&me, env).await else {
            continue;
        };
        let flow = match incoming {
            Incoming::Call(request, from) => {
                let handled = catch(server.handle_call(request, from.clone(), &mut me)).await;
                match handled {
                    Ok(CallResponse::Reply(r)) => {
                        reply_quietly(&me, &from, &r).await;
                        Ok(Flow::Continue)
                    }
                    Ok(CallResponse::NoReply) => Ok(Flow::Continue),
                    Ok(CallResponse::Stop { reason, reply }) => {
                        if let Some(r) = reply {
                            reply_quietly(&me, &from, &r).await;
                        }
                        Ok(Flow::Stop(reason))
                    }
                    Err(panic) => Err(panic),
                }
            }
            Incoming::Cast(message) => catch(server.handle_cast(message, &mut me)).await,
            Incoming::Stop(reason) => Ok(Flow::Stop(reason)),
            Incoming::Info(env) => match launch.parent_exit(&env) {
                Some(reason) => Ok(Flow::Stop(reason)),
                None => catch(server.handle_info(env, &mut me)).await,
            },
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop(reason)) => return finish(&mut server, &mut me, reason).await,
            Err(panic) => {
                tracing::warn!(server = %me.pid(), %panic, "GenServer handler panicked");
                return finish(&mut server, &mut me, ExitReason::panic(panic)).await;
            }
        }
    }
}

/// Runs `terminate`; the server's exit reason (a panic in `terminate` replaces it).
async fn finish<S: GenServer>(server: &mut S, me: &mut Process, reason: ExitReason) -> ExitReason {
    match catch(server.terminate(&reason, me)).await {
        Ok(()) => reason,
        Err(panic) => {
            tracing::warn!(server = %me.pid(), %panic, "GenServer terminate panicked");
            ExitReason::panic(panic)
        }
    }
}
