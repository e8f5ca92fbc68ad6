//! Supervisors: processes that start other processes, watch them, and restart them when they
//! end, as OTP's `supervisor` does.
//!
//! A [`Supervisor`] is built from a [`Strategy`], a restart intensity and period, and
//! [`ChildSpec`]s. Started ([`Supervisor::start`], [`Supervisor::start_link`]), it is a process
//! of its own that traps exits and is linked with each child. A child is anything a start
//! function (`Fn(&Process) -> Result<Pid, E>`, given the supervisor's process) starts linked
//! with the supervisor: a plain process (`sup.spawn_link(..)`, or [`ChildSpec::process`]), a
//! GenServer or GenStatem ([`crate::gen_server::start_link`],
//! [`crate::gen_statem::start_link`]), or another supervisor ([`Supervisor::child_spec`]). The supervisor answers calls from any process, on any node
//! ([`Supervisor::which_children`] and the others); see `docs/semantics.md`.

mod client;
mod server;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::id::Pid;
use partisan_core::signals::ExitReason;
use serde::{Deserialize, Serialize};

use crate::node::Node;
use crate::process::Process;

/// The reason text a supervisor ends with ([`ExitReason::Error`]) when more than its
/// intensity of restarts happened within its period. It is an abnormal reason: a parent
/// supervisor restarts such a child even if it is transient (OTP ends with `shutdown`
/// instead).
pub const REACHED_MAX_RESTART_INTENSITY: &str = "reached_max_restart_intensity";

/// Which children a supervisor restarts when one of them must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Only the child that ended.
    OneForOne,
    /// Every child: the others are shut down (in reverse start order), then all are started
    /// again in start order.
    OneForAll,
    /// The child that ended and those started after it: the later ones are shut down (in
    /// reverse start order), then all of them are started again in start order.
    RestForOne,
}

/// When a child that ended is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal end: any reason but [`ExitReason::Normal`] and
    /// [`ExitReason::Shutdown`]. After a normal end its specification stays (not running), so
    /// [`Supervisor::restart_child`] can start it again.
    Transient,
    /// Never; its specification is removed when it ends (or is shut down), and it is not
    /// started again by a one-for-all or rest-for-one restart either.
    Temporary,
}

/// How a child is stopped: when the supervisor stops, when a one-for-all or rest-for-one
/// restart stops it, and by [`Supervisor::terminate_child`]. The supervisor first unlinks
/// and monitors the child, and waits for its end before stopping the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shutdown {
    /// Sent [`ExitReason::Kill`] at once (it ends as [`ExitReason::Killed`]).
    BrutalKill,
    /// Sent [`ExitReason::Shutdown`] (which a process trapping exits receives as a message
    /// and may act on), then [`ExitReason::Kill`] if it has not ended after this long.
    Timeout(Duration),
    /// Sent [`ExitReason::Shutdown`], and waited for as long as it takes (the default for a
    /// supervisor child, which needs time to stop its own children).
    Infinity,
}

/// What a child is, as [`Supervisor::count_children`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildType {
    /// Any process that is not a supervisor.
    Worker,
    /// A supervisor.
    Supervisor,
}

/// A start function as stored: errors as text.
type StartFn = Arc<dyn Fn(&Process) -> Result<Pid, String> + Send + Sync>;

/// How a supervisor starts, restarts and stops one child.
///
/// The start function is called by the supervisor process with itself as the argument, each
/// time the child is (re)started. It must start the child linked with that process (as
/// [`Process::spawn_link`] does) and return its pid; the supervisor also links with the
/// returned pid, so a child it can no longer reach is noticed. An error or a panic of the
/// start function is a failed start.
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    start: StartFn,
    restart: Restart,
    shutdown: Shutdown,
    child_type: ChildType,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("child_type", &self.child_type)
            .finish_non_exhaustive()
    }
}

/// A worker's default shutdown: [`Shutdown::Timeout`] of 5 seconds, as in OTP.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

impl ChildSpec {
    fn with_type<F, E>(id: impl Into<String>, start: F, child_type: ChildType) -> Self
    where
        F: Fn(&Process) -> Result<Pid, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        ChildSpec {
            id: id.into(),
            start: Arc::new(move |sup: &Process| start(sup).map_err(|e| e.to_string())),
            restart: Restart::Permanent,
            shutdown: match child_type {
                ChildType::Worker => Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
                ChildType::Supervisor => Shutdown::Infinity,
            },
            child_type,
        }
    }

    /// A worker child `id` (unique within its supervisor), started by `start`: permanent,
    /// shut down with [`Shutdown::Timeout`] of [`DEFAULT_WORKER_SHUTDOWN`].
    pub fn worker<F, E>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(&Process) -> Result<Pid, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        Self::with_type(id, start, ChildType::Worker)
    }

    /// A supervisor child `id`, started by `start` (for instance
    /// `|sup| inner.start_link(sup)`; [`Supervisor::child_spec`] makes this one): permanent,
    /// shut down with [`Shutdown::Infinity`].
    pub fn supervisor<F, E>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(&Process) -> Result<Pid, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        Self::with_type(id, start, ChildType::Supervisor)
    }

    /// A worker child `id` that is a plain process running `f`, spawned linked with the
    /// supervisor (`f` is called once per start).
    pub fn process<F, Fut>(id: impl Into<String>, f: F) -> Self
    where
        F: Fn(Process) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: crate::process::ProcessExit,
    {
        Self::worker(id, move |sup: &Process| {
            Ok::<_, std::convert::Infallible>(sup.spawn_link(&f))
        })
    }

    /// This specification with restart type `restart`.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// This specification with shutdown `shutdown`.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its restart type.
    pub fn restart_type(&self) -> Restart {
        self.restart
    }

    /// How it is shut down.
    pub fn shutdown_kind(&self) -> Shutdown {
        self.shutdown
    }

    /// Worker or supervisor.
    pub fn child_type(&self) -> ChildType {
        self.child_type
    }
}

/// One child as [`Supervisor::which_children`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its pid while it runs; `None` when it is not running (a transient child that ended
    /// normally, one stopped with [`Supervisor::terminate_child`], or one whose restart failed
    /// and is to be tried again).
    pub pid: Option<Pid>,
    /// Its restart failed and another attempt is queued (OTP's `restarting`).
    pub restarting: bool,
    /// Worker or supervisor.
    pub child_type: ChildType,
    /// Its restart type.
    pub restart: Restart,
}

/// Counts of a supervisor's children ([`Supervisor::count_children`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Child specifications held, running or not.
    pub specs: usize,
    /// Children running.
    pub active: usize,
    /// Specifications of supervisor children.
    pub supervisors: usize,
    /// Specifications of worker children.
    pub workers: usize,
}

/// Why starting a supervisor or a call to one failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SupervisorError {
    /// Two child specifications have this id (at start).
    #[error("two children have the id {0:?}")]
    DuplicateChild(String),
    /// The supervisor's name could not be registered (taken, or malformed).
    #[error("cannot register the supervisor as {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A child's start function returned an error or panicked.
    #[error("child {id:?} failed to start: {reason}")]
    StartFailed {
        /// The child's id.
        id: String,
        /// The error's text, or the panic's message.
        reason: String,
    },
    /// No child has this id.
    #[error("no child {0:?}")]
    NotFound(String),
    /// The child is running (it cannot be restarted or deleted).
    #[error("child {0:?} is running")]
    Running(String),
    /// The child's restart failed and another attempt is queued.
    #[error("child {0:?} is waiting to be restarted")]
    Restarting(String),
    /// A child with this id runs already.
    #[error("child {id:?} is already running as {pid}")]
    AlreadyStarted {
        /// The id.
        id: String,
        /// Its pid.
        pid: Pid,
    },
    /// A specification with this id is held, its child not running.
    #[error("child {0:?} is already present (not running)")]
    AlreadyPresent(String),
    /// [`Supervisor::start_child`] was given a supervisor on another node (a child
    /// specification holds a function, which cannot travel).
    #[error("start_child needs a supervisor on the caller's node")]
    NotLocal,
    /// The supervisor did not exist ([`ExitReason::NoProc`]), its node is not reachable
    /// ([`ExitReason::NoConnection`]), or it ended during the call (its reason).
    #[error("the supervisor is not alive: {0}")]
    NotAlive(ExitReason),
    /// The request could not be sent, or the answer was not understood.
    #[error("supervisor call failed: {0}")]
    Call(String),
}

/// A supervisor's configuration: how it restarts, how often it may, and its children in start
/// order. Start it with [`Supervisor::start`] or [`Supervisor::start_link`] (as many times as
/// wanted: each start is a new supervisor process).
///
/// ```no_run
/// use std::time::Duration;
/// use partisan::{ChildSpec, Restart, Strategy, Supervisor};
/// # fn f(node: &partisan::Node) -> Result<(), partisan::SupervisorError> {
/// let sup = Supervisor::new(Strategy::OneForOne)
///     .intensity(3, Duration::from_secs(5))
///     .child(ChildSpec::process("worker", |mut me| async move {
///         while let Some(_msg) = me.recv().await {}
///     }))
///     .start(node)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Supervisor {
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    name: Option<String>,
    children: Vec<ChildSpec>,
}

impl Supervisor {
    /// A supervisor with `strategy`, no children, and OTP's default intensity: at most 1
    /// restart in 5 seconds.
    pub fn new(strategy: Strategy) -> Self {
        Supervisor {
            strategy,
            intensity: 1,
            period: Duration::from_secs(5),
            name: None,
            children: Vec::new(),
        }
    }

    /// At most `max_restarts` restarts within any `period`: one more ends the supervisor
    /// (after it shut its children down in reverse start order) with reason
    /// [`ExitReason::Error`] of [`REACHED_MAX_RESTART_INTENSITY`]. Every restart counts,
    /// including each retry of a restart whose start function failed; restarts asked for with
    /// [`Supervisor::restart_child`] do not.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = max_restarts;
        self.period = period;
        self
    }

    /// Registers the supervisor process under `name` (before its children start).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Adds a child, started after those added before it.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Adds children, in order.
    pub fn children(mut self, specs: impl IntoIterator<Item = ChildSpec>) -> Self {
        self.children.extend(specs);
        self
    }

    /// Starts the supervisor on `node`, not linked with any process: it runs until stopped
    /// ([`Supervisor::stop`], an exit signal other than `normal`, or the intensity limit). See
    /// [`Supervisor::start_link`] for what starting does.
    pub fn start(&self, node: &Node) -> Result<Pid, SupervisorError> {
        self.spawn(node, None)
    }

    /// Starts the supervisor linked with `parent` and returns its pid once every child's start
    /// function returned a pid, in order. If one fails, the supervisor unlinks from `parent`,
    /// shuts down the children it started (in reverse order) and ends, and this returns the
    /// error ([`SupervisorError::StartFailed`]); `parent` gets no exit signal.
    ///
    /// An exit signal from `parent` (its end, with any reason) stops the supervisor with that
    /// reason after it shut its children down. This has the shape of a child's start
    /// function, so a supervisor can be the child of another ([`Supervisor::child_spec`]).
    pub fn start_link(&self, parent: &Process) -> Result<Pid, SupervisorError> {
        self.spawn(parent.node(), Some(parent))
    }

    /// A [`ChildSpec::supervisor`] `id` that starts this supervisor linked with its parent.
    pub fn child_spec(&self, id: impl Into<String>) -> ChildSpec {
        let sup = self.clone();
        ChildSpec::supervisor(id, move |parent: &Process| sup.start_link(parent))
    }

    fn spawn(&self, node: &Node, parent: Option<&Process>) -> Result<Pid, SupervisorError> {
        for (i, c) in self.children.iter().enumerate() {
            if self.children[..i].iter().any(|d| d.id == c.id) {
                return Err(SupervisorError::DuplicateChild(c.id.clone()));
            }
        }
        let mut outcome = Ok(());
        let config = self.clone();
        let parent_pid = parent.map(|p| p.pid().clone());
        // The process's function runs here, before the process's task starts: the children
        // are started (by their synchronous start functions) before this returns.
        let run = |me: Process| {
            let mut server = server::Server::new(me, config, parent_pid);
            outcome = server.init();
            let failed = outcome.is_err();
            async move {
                if failed {
                    server.abandon_start().await
                } else {
                    server.run().await
                }
            }
        };
        let pid = match parent {
            Some(p) => p.spawn_link(run),
            None => node.spawn(run),
        };
        outcome.map(|()| pid)
    }
}

/// Calls a start function, a panic in it being a failed start with its message.
fn call_start(spec: &ChildSpec, sup: &Process) -> Result<Pid, SupervisorError> {
    let start = spec.start.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(sup))) {
        Ok(Ok(pid)) => Ok(pid),
        Ok(Err(reason)) => Err(SupervisorError::StartFailed {
            id: spec.id.clone(),
            reason,
        }),
        Err(payload) => Err(SupervisorError::StartFailed {
            id: spec.id.clone(),
            reason: format!(
                "panic: {}",
                crate::process::task::panic_message(payload.as_ref())
            ),
        }),
    }
}
