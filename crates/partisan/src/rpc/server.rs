//! The RPC server of a node: a process registered as [`SERVER_NAME`](super::SERVER_NAME) that
//! reads requests from its mailbox and runs each handler in its own task, at most
//! `rpc_concurrency` at once.
//!
//! Back-pressure: the server takes the next request from its mailbox only once a slot is
//! free, so when every slot is busy requests wait in the mailbox, whose bound
//! (`mailbox_capacity`) in turn holds back the connections delivering into it. No queue of the
//! server is unbounded.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use partisan_core::id::Pid;

use super::wire::{self, ReplyHeader, Request, Status};
use super::{HandlerEntry, HandlerFault, RpcContext};
use crate::node::Node;
use crate::process::registry::Envelope;
use crate::process::Process;
use crate::send::{Dest, SendOptions};

/// Requests taken from the mailbox at once.
const BATCH: usize = 64;

/// Runs the server until the node stops (its mailbox closes).
pub(super) async fn serve(mut me: Process) {
    let node = me.node().clone();
    let server = me.pid().id;
    let mut buf = Vec::with_capacity(BATCH);
    while me.recv_many(&mut buf, BATCH).await > 0 {
        for env in buf.drain(..) {
            dispatch(&node, server, env).await;
        }
    }
}

/// Starts one request: answers an unknown name at once, otherwise waits for a slot and runs
/// the handler in a task of its own.
async fn dispatch(node: &Node, server: u64, env: Envelope) {
    let shared = &node.shared;
    let counters = &shared.stats.rpc;
    let Envelope { from, payload, .. } = env;
    let (req, args_at) = match postcard::take_from_bytes::<Request>(&payload) {
        Ok((req, rest)) => (req, payload.len() - rest.len()),
        Err(_) => {
            counters.bad_messages.fetch_add(1, Relaxed);
            tracing::debug!(?from, "dropping a malformed RPC request");
            return;
        }
    };
    // Every request comes from the caller's RPC client; without a sender there is nobody to
    // answer or to name as the caller.
    let Some(from) = from else {
        counters.bad_messages.fetch_add(1, Relaxed);
        tracing::debug!("dropping an RPC request without a sender");
        return;
    };
    let (id, name) = match req {
        Request::Call { id, name } => (Some(id), name),
        Request::Cast { name } => (None, name),
    };
    let Some(entry) = shared.rpc.handler(name) else {
        counters.unknown_name.fetch_add(1, Relaxed);
        if let Some(id) = id {
            send_reply(node, server, &from, wire::reply(id, Status::UnknownName)).await;
        } else {
            tracing::debug!(name, caller = %from.node, "cast to an unknown RPC handler dropped");
        }
        return;
    };
    let Ok(permit) = shared.rpc.slots.clone().acquire_owned().await else {
        // The semaphore is never closed; stay total anyway.
        return;
    };
    counters.served.fetch_add(1, Relaxed);
    let args = payload.slice(args_at..);
    let node = node.clone();
    tokio::spawn(async move {
        let counters = &node.shared.stats.rpc;
        counters.running.fetch_add(1, Relaxed);
        let ctx = RpcContext {
            caller: from.clone(),
            cast: id.is_none(),
        };
        let outcome = run(&entry, ctx, args, id).await;
        drop(permit);
        counters.running.fetch_sub(1, Relaxed);
        let reply = match outcome {
            Ok(reply) => id.map(|_| reply),
            Err(Fault::Panic(m)) => {
                counters.handler_panics.fetch_add(1, Relaxed);
                tracing::warn!(handler = %entry.name, caller = %from.node, panic = %m,
                    "RPC handler panicked");
                id.map(|id| wire::reply(id, Status::Panicked(wire::clip(&m))))
            }
            Err(Fault::Handler(fault)) => {
                tracing::debug!(handler = %entry.name, caller = %from.node, error = ?fault,
                    "RPC request failed");
                id.map(|id| {
                    wire::reply(
                        id,
                        match &fault {
                            HandlerFault::BadArgs(m) => Status::BadArgs(wire::clip(m)),
                            HandlerFault::BadResult(m) => Status::BadResult(wire::clip(m)),
                        },
                    )
                })
            }
        };
        if let Some(reply) = reply {
            send_reply(&node, server, &from, reply).await;
        }
    });
}

/// Why a handler gave no result.
enum Fault {
    /// It panicked, with this message.
    Panic(String),
    /// Its arguments or result did not fit the handler's types.
    Handler(HandlerFault),
}

/// Runs a handler to completion, catching a panic anywhere in it (argument decoding, the
/// handler's body, result encoding).
async fn run(
    entry: &HandlerEntry,
    ctx: RpcContext,
    args: Bytes,
    id: Option<u64>,
) -> Result<Vec<u8>, Fault> {
    let fut = match catch_unwind(AssertUnwindSafe(|| (entry.run)(ctx, args, id))) {
        Ok(fut) => fut,
        Err(p) => return Err(Fault::Panic(panic_message(p.as_ref()))),
    };
    match CatchUnwind(fut).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(fault)) => Err(Fault::Handler(fault)),
        Err(message) => Err(Fault::Panic(message)),
    }
}

/// A boxed future whose panics become `Err(message)`.
struct CatchUnwind<F>(Pin<Box<F>>)
where
    F: ?Sized;

impl<F, T> Future for CatchUnwind<F>
where
    F: Future<Output = T> + ?Sized,
{
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(panic_message(p.as_ref()))),
        }
    }
}

/// The message a panic was raised with.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Answers the caller's RPC client from the server's pid, on the default channel. A reply
/// that cannot be queued is dropped and logged: the caller's timeout or node-down detection
/// ends its call.
async fn send_reply(node: &Node, server: u64, to: &Pid, reply: Vec<u8>) {
    let r = node
        .shared
        .send(
            Some(server),
            Dest::Pid(to),
            Bytes::from(reply),
            &SendOptions::default(),
            true,
        )
        .await;
    if let Err(e) = r {
        node.shared.stats.rpc.replies_unsent.fetch_add(1, Relaxed);
        tracing::debug!(caller = %to, error = %e, "RPC reply not sent");
    }
}

/// Type-erases a typed handler: decode the arguments, run, and for a call (`id` given)
/// encode the reply: header and result, in a buffer of exactly their size. Everything
/// happens inside the returned future, so one panic guard covers it all.
pub(super) fn erase<A, R, F, Fut>(f: F) -> super::ErasedHandler
where
    A: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    F: Fn(RpcContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let f = Arc::new(f);
    Box::new(move |ctx: RpcContext, args: Bytes, id: Option<u64>| {
        let f = f.clone();
        Box::pin(async move {
            let a: A = postcard::from_bytes(&args)
                .map_err(|e| HandlerFault::BadArgs(format!("arguments: {e}")))?;
            let r = f(ctx, a).await;
            let Some(id) = id else {
                return Ok(Vec::new());
            };
            let header = ReplyHeader {
                id,
                status: Status::Ok,
            };
            wire::encode(&header, &r).map_err(|e| HandlerFault::BadResult(format!("result: {e}")))
        })
    })
}
