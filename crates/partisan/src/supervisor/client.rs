//! Calls to a supervisor: a request message from a short-lived process that monitors the
//! supervisor, answered by a reply message or ended by the monitor's `Down`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use partisan_core::id::Pid;
use partisan_core::signals::ExitReason;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ChildCounts, ChildInfo, ChildSpec, Supervisor, SupervisorError};
use crate::error::SendError;
use crate::node::Node;
use crate::process::signal::Signal;
use crate::send::{Destination, SendOptions};

/// Marks the supervisor protocol's messages, so a stray message is not taken for a request.
const MAGIC: u64 = 0x7061_7274_6973_7570;

#[derive(Serialize, Deserialize)]
struct Tagged<T> {
    magic: u64,
    body: T,
}

/// A request to a supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    WhichChildren,
    CountChildren,
    TerminateChild(String),
    RestartChild(String),
    DeleteChild(String),
    /// The key of a specification left in [`PENDING`] (specifications hold functions).
    StartChild(u64),
    Stop,
}

/// A supervisor's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    Children(Vec<ChildInfo>),
    Counts(ChildCounts),
    Done(Result<(), SupervisorError>),
    Started(Result<Pid, SupervisorError>),
}

pub(super) fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    postcard::to_allocvec(&Tagged { magic: MAGIC, body }).expect("supervisor messages encode")
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes::<Tagged<T>>(bytes)
        .ok()
        .filter(|t| t.magic == MAGIC)
        .map(|t| t.body)
}

/// Child specifications on their way to a supervisor of this OS process, by key.
static PENDING: Mutex<BTreeMap<u64, ChildSpec>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A specification in [`PENDING`]; removed on drop unless the supervisor took it.
struct PendingSpec(u64);

impl PendingSpec {
    fn put(spec: ChildSpec) -> Self {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        PENDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, spec);
        PendingSpec(key)
    }
}

impl Drop for PendingSpec {
    fn drop(&mut self) {
        take_pending(self.0);
    }
}

pub(super) fn take_pending(key: u64) -> Option<ChildSpec> {
    PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key)
}

/// How a call ended.
enum Answer {
    Reply(Reply),
    /// The supervisor ended (or was not there): the `Down`'s reason.
    Down(ExitReason),
}

/// Sends `req` to `sup` from a new process of `node` monitoring it, and waits for the reply or
/// the `Down`. Dropping the future ends that process, and with it the monitor.
async fn call(node: &Node, sup: impl Destination, req: Request) -> Result<Answer, SupervisorError> {
    let target = sup.dest().to_remote_ref();
    let mut me = node.process();
    let monitor = me.monitor(&target).await;
    if let Err(e) = me
        .send(&target, encode(&req), &SendOptions::default())
        .await
    {
        return Err(match e {
            SendError::NoProcess(_) | SendError::Stale(_) => {
                SupervisorError::NotAlive(ExitReason::NoProc)
            }
            SendError::NotConnected(_) => SupervisorError::NotAlive(ExitReason::NoConnection),
            e => SupervisorError::Call(e.to_string()),
        });
    }
    loop {
        let Some(env) = me.recv().await else {
            return Err(SupervisorError::Call(SendError::Closed.to_string()));
        };
        match env.signal() {
            Some(Signal::Down(d)) if d.monitor == monitor => {
                return Ok(Answer::Down(d.reason.clone()))
            }
            Some(_) => {}
            None => {
                if let Some(reply) = decode::<Reply>(&env.payload) {
                    me.demonitor(&monitor).await;
                    return Ok(Answer::Reply(reply));
                }
            }
        }
    }
}

/// A call that expects a reply.
async fn ask(node: &Node, sup: impl Destination, req: Request) -> Result<Reply, SupervisorError> {
    match call(node, sup, req).await? {
        Answer::Reply(r) => Ok(r),
        Answer::Down(reason) => Err(SupervisorError::NotAlive(reason)),
    }
}

fn unexpected(r: Reply) -> SupervisorError {
    SupervisorError::Call(format!("unexpected reply {r:?}"))
}

/// Calls to a running supervisor, from `node` (any process's [`crate::Process::node`]), to the
/// supervisor `sup` by pid or registered name, on that node or another (except
/// [`Supervisor::start_child`]). Each call waits, without a timeout, until the supervisor
/// answers (after a shutdown it carries out, if any) or ends; it fails with
/// [`SupervisorError::NotAlive`] when the supervisor does not exist, its node is unreachable,
/// or it ends first. Wrap a call in `tokio::time::timeout` to bound it: the dropped call
/// leaves nothing behind.
impl Supervisor {
    /// The children, in start order, running or not (temporary children only while they run).
    pub async fn which_children(
        node: &Node,
        sup: impl Destination,
    ) -> Result<Vec<ChildInfo>, SupervisorError> {
        match ask(node, sup, Request::WhichChildren).await? {
            Reply::Children(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }

    /// How many children it holds, runs, and of which type.
    pub async fn count_children(
        node: &Node,
        sup: impl Destination,
    ) -> Result<ChildCounts, SupervisorError> {
        match ask(node, sup, Request::CountChildren).await? {
            Reply::Counts(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }

    /// Stops child `id` as its [`super::Shutdown`] says and returns once it has ended; it is
    /// not restarted. Its specification stays (not running; see
    /// [`Supervisor::restart_child`], [`Supervisor::delete_child`]), except a temporary
    /// child's, which is removed. Succeeds for a child already not running (and cancels a
    /// queued restart of it). Fails with [`SupervisorError::NotFound`] for an unknown id.
    pub async fn terminate_child(
        node: &Node,
        sup: impl Destination,
        id: &str,
    ) -> Result<(), SupervisorError> {
        match ask(node, sup, Request::TerminateChild(id.to_string())).await? {
            Reply::Done(r) => r,
            r => Err(unexpected(r)),
        }
    }

    /// Starts child `id` again, which must not be running; returns its new pid. Fails with
    /// [`SupervisorError::Running`], [`SupervisorError::Restarting`],
    /// [`SupervisorError::NotFound`], or [`SupervisorError::StartFailed`] (the child then stays
    /// not running). Does not count towards the restart intensity.
    pub async fn restart_child(
        node: &Node,
        sup: impl Destination,
        id: &str,
    ) -> Result<Pid, SupervisorError> {
        match ask(node, sup, Request::RestartChild(id.to_string())).await? {
            Reply::Started(r) => r,
            r => Err(unexpected(r)),
        }
    }

    /// Removes the specification of child `id`, which must not be running
    /// ([`SupervisorError::Running`], [`SupervisorError::Restarting`],
    /// [`SupervisorError::NotFound`] otherwise).
    pub async fn delete_child(
        node: &Node,
        sup: impl Destination,
        id: &str,
    ) -> Result<(), SupervisorError> {
        match ask(node, sup, Request::DeleteChild(id.to_string())).await? {
            Reply::Done(r) => r,
            r => Err(unexpected(r)),
        }
    }

    /// Adds `spec` as the last child and starts it; returns its pid. The supervisor must be on
    /// `node` ([`SupervisorError::NotLocal`] otherwise). Fails with
    /// [`SupervisorError::AlreadyStarted`] or [`SupervisorError::AlreadyPresent`] if the id is
    /// taken, and with [`SupervisorError::StartFailed`] (the specification is then not kept).
    pub async fn start_child(
        node: &Node,
        sup: impl Destination,
        spec: ChildSpec,
    ) -> Result<Pid, SupervisorError> {
        if sup.dest().node() != node.name() {
            return Err(SupervisorError::NotLocal);
        }
        let pending = PendingSpec::put(spec);
        match ask(node, sup, Request::StartChild(pending.0)).await? {
            Reply::Started(r) => r,
            r => Err(unexpected(r)),
        }
    }

    /// Stops the supervisor: it shuts its children down in reverse start order and ends with
    /// [`ExitReason::Normal`]; returns once it has ended.
    pub async fn stop(node: &Node, sup: impl Destination) -> Result<(), SupervisorError> {
        match call(node, sup, Request::Stop).await? {
            Answer::Down(ExitReason::Normal) => Ok(()),
            Answer::Down(reason) => Err(SupervisorError::NotAlive(reason)),
            Answer::Reply(r) => Err(unexpected(r)),
        }
    }
}
