//! Calls, casts, stops and replies of behaviours, and how a behaviour process tells them
//! apart from other messages.
//!
//! A call is made from a temporary process of the caller's node: it monitors the server,
//! makes an alias as the reply tag, sends the request (from the calling process when there is
//! one, so the server sees the caller's pid), and takes the first of: a message to the alias
//! (the reply), the monitor's `Down` (the call fails with its reason), the deadline. It then
//! demonitors with flush and ends, which removes the alias: a reply that comes later finds no
//! process and is dropped at the caller's node (counted as `undeliverable`), so it can never
//! be taken for another call's answer.
//!
//! Wire form (postcard values behind a 4-byte marker, so a behaviour tells them apart from
//! other messages, which go to its info handler):
//!
//! ```text
//! call:  "\0gen" 1 Ref(tag) Request
//! cast:  "\0gen" 2 Message
//! stop:  "\0gen" 3 ExitReason
//! reply: 0 Reply            (to the tag)
//!        1 text             (the server could not decode the request)
//! ```
//!
//! Every one of them goes on the `default` channel with partition key 0, the lane monitor
//! signals travel on.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use partisan_core::id::{NodeName, Pid, Ref, RemoteRef};
use partisan_core::signals::ExitReason;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::SendError;
use crate::node::Node;
use crate::process::registry::Envelope;
use crate::process::signal::Signal;
use crate::process::Process;
use crate::send::{Dest, Destination, SendOptions};

const MARKER: &[u8; 4] = b"\0gen";
const KIND_CALL: u8 = 1;
const KIND_CAST: u8 = 2;
const KIND_STOP: u8 = 3;
const REPLY_OK: u8 = 0;
const REPLY_BAD_REQUEST: u8 = 1;

/// Requests, casts and replies go on the `default` channel's first lane, with the monitor
/// signals: a request follows its call's monitor, a reply precedes its server's `Down`.
fn opts() -> SendOptions {
    SendOptions::default().with_key(0)
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Node {}
    impl Sealed for crate::Process {}
}

/// Where calls, casts, stops and replies are sent from: a [`Node`] (no sender pid) or a
/// [`Process`] (its pid is the sender). Implemented for both; not for other types.
pub trait Endpoint: sealed::Sealed + Sync {
    /// The node the messages leave from.
    fn node(&self) -> &Node;
    /// The process they are sent from, if any.
    fn process(&self) -> Option<&Process>;
}

impl Endpoint for Node {
    fn node(&self) -> &Node {
        self
    }

    fn process(&self) -> Option<&Process> {
        None
    }
}

impl Endpoint for Process {
    fn node(&self) -> &Node {
        Process::node(self)
    }

    fn process(&self) -> Option<&Process> {
        Some(self)
    }
}

async fn send_from<E: Endpoint + ?Sized, D: Destination>(
    from: &E,
    dest: D,
    payload: Vec<u8>,
) -> Result<(), SendError> {
    let payload = Bytes::from(payload);
    match from.process() {
        Some(p) => p.send(dest, payload, &opts()).await,
        None => from.node().send(dest, payload, &opts()).await,
    }
}

fn header(kind: u8) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(MARKER);
    buf.push(kind);
    buf
}

fn encode_into<T: Serialize + ?Sized>(value: &T, buf: Vec<u8>) -> Result<Vec<u8>, SendError> {
    postcard::to_extend(value, buf).map_err(|e| SendError::Encode(e.to_string()))
}

/// Why a call returned no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply and no `Down` within the timeout. The server may still handle the request;
    /// its reply, if it comes, is dropped.
    #[error("no reply within the timeout")]
    Timeout,
    /// The server did not exist (or had ended) when the call was made, or ended with
    /// [`ExitReason::NoProc`].
    #[error("no such process")]
    NoProc,
    /// The server's node is not connected, or was lost before the reply arrived.
    #[error("node {0} is down")]
    NodeDown(NodeName),
    /// The server ended with this reason before replying (a panic is
    /// [`ExitReason::Panic`]).
    #[error("the server ended: {0}")]
    Exit(ExitReason),
    /// The request could not be sent (encoding, a full local mailbox that closed, the
    /// node shutting down, ...).
    #[error("cannot send the request: {0}")]
    Send(SendError),
    /// The server could not decode the request as its call type.
    #[error("the server could not decode the request: {0}")]
    BadRequest(String),
    /// The reply could not be decoded as the type asked for.
    #[error("cannot decode the reply: {0}")]
    BadReply(String),
    /// A process called itself (it could never answer).
    #[error("a process cannot call itself")]
    CallingSelf,
}

impl CallError {
    /// The error of a call whose server's `Down` came with `reason`.
    fn from_down(reason: ExitReason, node: &NodeName) -> CallError {
        match reason {
            ExitReason::NoProc => CallError::NoProc,
            ExitReason::NoConnection => CallError::NodeDown(node.clone()),
            other => CallError::Exit(other),
        }
    }

    /// The error of a call whose request could not be sent.
    fn from_send(e: SendError) -> CallError {
        match e {
            SendError::NoProcess(_) => CallError::NoProc,
            SendError::NotConnected(n) => CallError::NodeDown(n),
            other => CallError::Send(other),
        }
    }
}

/// Where the reply of one call goes: the caller's reply tag (an alias of the caller's
/// temporary process) and the caller's pid. Cheap to clone; serializable, so it can be handed
/// to any process, on any node, which may then reply in the server's place. The caller takes
/// the first reply and only while it waits: a reply after the call ended (timeout, `Down`) is
/// dropped, never seen by another call.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ReplyTo<R> {
    tag: Ref,
    caller: Option<Pid>,
    #[serde(skip)]
    _reply: PhantomData<fn(R) -> R>,
}

impl<R> Clone for ReplyTo<R> {
    fn clone(&self) -> Self {
        ReplyTo {
            tag: self.tag.clone(),
            caller: self.caller.clone(),
            _reply: PhantomData,
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("tag", &self.tag)
            .field("caller", &self.caller)
            .finish()
    }
}

impl<R> PartialEq for ReplyTo<R> {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag
    }
}

impl<R> Eq for ReplyTo<R> {}

impl<R> ReplyTo<R> {
    /// The calling process: the process the call was made from, or the call's temporary
    /// process when it was made from a [`Node`]. `None` if the request had no sender.
    pub fn caller(&self) -> Option<&Pid> {
        self.caller.as_ref()
    }

    /// The reply tag (an alias reference on the caller's node), unique to this call.
    pub fn tag(&self) -> &Ref {
        &self.tag
    }
}

impl<R: Serialize> ReplyTo<R> {
    /// Sends `value` as the call's reply, from `from` (the server, or any process or node
    /// that was handed this `ReplyTo`). `Ok` means queued, as for any send: a caller on
    /// another node that has given up drops it; a local one that has given up makes this
    /// [`SendError::NoProcess`]. Behaviours ignore that error when they reply for you.
    pub async fn reply<E: Endpoint + ?Sized>(&self, from: &E, value: &R) -> Result<(), SendError> {
        let buf = encode_into(value, vec![REPLY_OK])?;
        send_from(from, &self.tag, buf).await
    }
}

/// Replies `value`, logging (not failing on) a reply that cannot be sent.
pub(crate) async fn reply_quietly<R: Serialize>(me: &Process, to: &ReplyTo<R>, value: &R) {
    if let Err(e) = to.reply(me, value).await {
        tracing::debug!(server = %me.pid(), tag = %to.tag, error = %e, "reply not sent");
    }
}

/// What a behaviour process received.
pub(crate) enum Incoming<C, M, R> {
    /// A call it could decode.
    Call(C, ReplyTo<R>),
    /// A cast it could decode.
    Cast(M),
    /// A request to stop with this reason.
    Stop(ExitReason),
    /// Anything else: a message without the marker, or a signal.
    Info(Envelope),
}

/// Sorts a message a behaviour process received; answers a call it cannot decode (the caller
/// gets [`CallError::BadRequest`]) and drops a cast it cannot decode (logged), returning
/// `None` for those.
pub(crate) async fn receive<C, M, R>(me: &Process, env: Envelope) -> Option<Incoming<C, M, R>>
where
    C: DeserializeOwned,
    M: DeserializeOwned,
{
    if env.signal.is_some()
        || env.payload.len() < MARKER.len() + 1
        || !env.payload.starts_with(MARKER)
    {
        return Some(Incoming::Info(env));
    }
    let body = &env.payload[MARKER.len() + 1..];
    match env.payload[MARKER.len()] {
        KIND_CALL => {
            let (tag, request) = match postcard::take_from_bytes::<Ref>(body) {
                Ok(v) => v,
                Err(_) => return Some(Incoming::Info(env)),
            };
            let to = ReplyTo {
                tag,
                caller: env.from.clone(),
                _reply: PhantomData,
            };
            match postcard::from_bytes::<C>(request) {
                Ok(c) => Some(Incoming::Call(c, to)),
                Err(e) => {
                    let mut buf = vec![REPLY_BAD_REQUEST];
                    buf.extend_from_slice(e.to_string().as_bytes());
                    if let Err(e) = me.send(&to.tag, buf, &opts()).await {
                        tracing::debug!(server = %me.pid(), error = %e, "reply not sent");
                    }
                    None
                }
            }
        }
        KIND_CAST => match postcard::from_bytes::<M>(body) {
            Ok(m) => Some(Incoming::Cast(m)),
            Err(e) => {
                tracing::warn!(server = %me.pid(), from = ?env.from, error = %e,
                    "dropping a cast the server cannot decode");
                None
            }
        },
        KIND_STOP => match postcard::from_bytes::<ExitReason>(body) {
            Ok(reason) => Some(Incoming::Stop(reason)),
            Err(_) => Some(Incoming::Info(env)),
        },
        _ => Some(Incoming::Info(env)),
    }
}

/// The caller's side of one call: a temporary process with a monitor of the server and an
/// alias as the reply tag.
struct Pending {
    tmp: Process,
    tag: Ref,
    monitor: Ref,
    server_node: NodeName,
}

impl Pending {
    async fn open<E: Endpoint + ?Sized>(from: &E, server: &RemoteRef) -> Pending {
        let tmp = from.node().process();
        let tag = tmp.alias();
        let monitor = tmp.monitor(server).await;
        Pending {
            tmp,
            tag,
            monitor,
            server_node: server.dest().node().clone(),
        }
    }

    /// Waits until `deadline` for the reply or the server's `Down`.
    async fn wait(&mut self, deadline: Instant) -> Result<Bytes, CallError> {
        loop {
            match tokio::time::timeout_at(deadline, self.tmp.recv()).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(None) => return Err(CallError::Send(SendError::Closed)),
                Ok(Some(env)) => {
                    if env.via.as_ref() == Some(&self.tag) {
                        return Ok(env.payload);
                    }
                    if let Some(Signal::Down(d)) = env.signal() {
                        if d.monitor == self.monitor {
                            return Err(CallError::from_down(d.reason.clone(), &self.server_node));
                        }
                    }
                    // Nothing else is addressed to the temporary process; ignore strays.
                }
            }
        }
    }

    /// Demonitors with flush and ends the temporary process (its alias goes with it).
    async fn close(mut self) {
        self.tmp.demonitor_flush(&self.monitor).await;
        self.tmp.unalias(&self.tag);
    }
}

/// Whether `server` names the calling process itself.
fn is_self<E: Endpoint + ?Sized>(from: &E, server: Dest<'_>) -> bool {
    let Some(p) = from.process() else {
        return false;
    };
    match server {
        Dest::Pid(pid) => pid == p.pid(),
        Dest::Name(n) => {
            &n.node == p.node().name()
                && p.node().whereis(n.name.as_str()).as_ref() == Some(p.pid())
        }
        Dest::Ref(_) => false,
    }
}

/// Calls `server` (a pid, registered name or alias of a [`GenServer`] or [`GenStatem`], on
/// this node or another) with `request`, from `from` (a [`Node`] or a [`Process`]), and waits
/// at most `timeout` for the reply (`Duration::MAX`: no limit in practice).
///
/// Guarantees: the call ends with exactly one outcome; it fails as soon as the caller learns
/// that the server is gone, with the reason of its `Down`: [`CallError::NoProc`] (no such
/// process, at once), [`CallError::NodeDown`] (its node not connected, at once, or lost during
/// the call), [`CallError::Exit`] (it ended with that reason, a panic included); a reply the
/// server sent before ending (a stop with a reply) still arrives first. A reply arriving after
/// the call ended is dropped, never returned by another call. The monitor is removed before
/// this returns, whatever the outcome. Calls and casts from one sender to one server are
/// handled in the order they were sent.
///
/// [`GenServer`]: crate::gen_server::GenServer
/// [`GenStatem`]: crate::gen_statem::GenStatem
pub async fn call<Rep, Req, E, D>(
    from: &E,
    server: D,
    request: &Req,
    timeout: Duration,
) -> Result<Rep, CallError>
where
    Rep: DeserializeOwned,
    Req: Serialize + ?Sized,
    E: Endpoint + ?Sized,
    D: Destination,
{
    let deadline = super::deadline(timeout);
    if is_self(from, server.dest()) {
        return Err(CallError::CallingSelf);
    }
    let server = server.dest().to_remote_ref();
    let server = &server;
    let mut pending = Pending::open(from, server).await;
    let sent = async {
        let buf = encode_into(&pending.tag, header(KIND_CALL))?;
        let buf = encode_into(request, buf)?;
        match from.process() {
            Some(_) => send_from(from, server, buf).await,
            // From a node, the request leaves from the temporary process: the server sees a
            // caller pid that lives as long as the call.
            None => send_from(&pending.tmp, server, buf).await,
        }
    };
    let outcome = match tokio::time::timeout_at(deadline, sent).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(e)) => Err(CallError::from_send(e)),
        Ok(Ok(())) => pending.wait(deadline).await,
    };
    pending.close().await;
    let payload = outcome?;
    match payload.first() {
        Some(&REPLY_OK) => {
            postcard::from_bytes(&payload[1..]).map_err(|e| CallError::BadReply(e.to_string()))
        }
        Some(&REPLY_BAD_REQUEST) => Err(CallError::BadRequest(
            String::from_utf8_lossy(&payload[1..]).into_owned(),
        )),
        _ => Err(CallError::BadReply("malformed reply".into())),
    }
}

/// Sends `message` to `server`'s cast handler, from `from`, without waiting for anything.
/// Fails only when the message cannot be queued (see [`SendError`]; a local server that does
/// not exist is [`SendError::NoProcess`], a remote one drops it). A server that cannot decode
/// it as its cast type drops it (logged).
pub async fn cast<M, E, D>(from: &E, server: D, message: &M) -> Result<(), SendError>
where
    M: Serialize + ?Sized,
    E: Endpoint + ?Sized,
    D: Destination,
{
    let buf = encode_into(message, header(KIND_CAST))?;
    send_from(from, server, buf).await
}

/// Asks `server` to stop with `reason` and waits (at most `timeout`) until it has ended: it
/// finishes the message it is handling, runs its `terminate`, and ends with `reason`.
/// `Ok` once its `Down` came with that reason; otherwise the call's errors
/// ([`CallError::NoProc`], [`CallError::NodeDown`], [`CallError::Exit`] with the reason it
/// ended with instead, [`CallError::Timeout`]).
pub async fn stop<E, D>(
    from: &E,
    server: D,
    reason: ExitReason,
    timeout: Duration,
) -> Result<(), CallError>
where
    E: Endpoint + ?Sized,
    D: Destination,
{
    let deadline = super::deadline(timeout);
    if is_self(from, server.dest()) {
        return Err(CallError::CallingSelf);
    }
    let server = server.dest().to_remote_ref();
    let server = &server;
    let mut pending = Pending::open(from, server).await;
    let sent = async {
        let buf = encode_into(&reason, header(KIND_STOP))?;
        send_from(from, server, buf).await
    };
    let outcome = match tokio::time::timeout_at(deadline, sent).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(e)) => Err(CallError::from_send(e)),
        Ok(Ok(())) => loop {
            match pending.wait(deadline).await {
                // Nothing replies to a stop; a stray message to the tag is ignored.
                Ok(_) => continue,
                Err(CallError::Exit(r)) if r == reason => break Ok(()),
                Err(e) => break Err(e),
            }
        },
    };
    pending.close().await;
    outcome
}
