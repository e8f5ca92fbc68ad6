//! The supervisor process: starts its children, restarts them by its strategy, answers calls,
//! and shuts its children down in reverse start order.
//!
//! It traps exits, so the end of a child arrives as an exit signal message. While it waits for
//! a child to end (a shutdown), every other message is set aside in `saved` and handled
//! afterwards, in arrival order: the mailbox has no selective receive.

use std::collections::VecDeque;

use partisan_core::id::{Pid, Ref};
use partisan_core::signals::ExitReason;
use tokio::time::Instant;

use super::client::{self, Reply, Request};
use super::{
    call_start, ChildCounts, ChildInfo, ChildType, Restart, Shutdown, Strategy, Supervisor,
    SupervisorError, REACHED_MAX_RESTART_INTENSITY,
};
use crate::process::registry::Envelope;
use crate::process::signal::{ExitSignal, Signal};
use crate::process::Process;
use crate::send::SendOptions;

/// Something to handle: a message, or a queued retry of a failed restart.
enum Event {
    Msg(Envelope),
    Retry(String),
}

/// A child as the supervisor holds it.
struct Child {
    spec: super::ChildSpec,
    pid: Option<Pid>,
    /// Its restart failed; a retry is queued.
    restarting: bool,
}

/// How waiting for a child's end came out.
enum Wait {
    Down(ExitReason),
    TimedOut,
    /// The mailbox closed: the node is stopping (or the supervisor was killed).
    Closed,
}

pub(super) struct Server {
    me: Process,
    parent: Option<Pid>,
    config: Supervisor,
    children: Vec<Child>,
    /// When the restarts of the last period happened, oldest first.
    restarts: VecDeque<Instant>,
    saved: VecDeque<Event>,
    /// The start's failure, kept for the exit reason.
    start_error: Option<SupervisorError>,
    closed: bool,
}

impl Server {
    pub(super) fn new(me: Process, config: Supervisor, parent: Option<Pid>) -> Self {
        Server {
            me,
            parent,
            config,
            children: Vec::new(),
            restarts: VecDeque::new(),
            saved: VecDeque::new(),
            start_error: None,
            closed: false,
        }
    }

    /// Before the task runs: traps exits, registers the name, starts the children in order
    /// (stopping at the first failure; those started are in `children`).
    pub(super) fn init(&mut self) -> Result<(), SupervisorError> {
        self.me.trap_exits(true);
        if let Some(name) = &self.config.name {
            if let Err(e) = self.me.register(name) {
                let err = SupervisorError::Name {
                    name: name.clone(),
                    reason: e.to_string(),
                };
                self.start_error = Some(err.clone());
                return Err(err);
            }
        }
        for spec in self.config.children.clone() {
            match call_start(&spec, &self.me) {
                Ok(pid) => self.children.push(Child {
                    spec,
                    pid: Some(pid),
                    restarting: false,
                }),
                Err(e) => {
                    tracing::warn!(supervisor = %self.me.pid(), error = %e, "supervisor start failed");
                    self.start_error = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// After a failed start: leaves the parent (so it gets no exit signal), shuts down the
    /// children started, and ends.
    pub(super) async fn abandon_start(mut self) -> ExitReason {
        if let Some(parent) = self.parent.take() {
            self.me.unlink(&parent).await;
        }
        self.terminate_all().await;
        let error = self
            .start_error
            .take()
            .map(|e| e.to_string())
            .unwrap_or_default();
        ExitReason::error(format!("supervisor start failed: {error}"))
    }

    /// The supervisor's life after a successful start; returns its exit reason.
    pub(super) async fn run(mut self) -> ExitReason {
        // Link with every child even if its start function did not (a second link is none).
        for i in 0..self.children.len() {
            if let Some(pid) = self.children[i].pid.clone() {
                self.me.link(&pid).await;
            }
        }
        loop {
            let event = match self.saved.pop_front() {
                Some(e) => e,
                None => match self.me.recv().await {
                    Some(env) => Event::Msg(env),
                    None => return ExitReason::Shutdown,
                },
            };
            let stop = match event {
                Event::Retry(id) => self.retry(&id).await,
                Event::Msg(env) => self.handle(env).await,
            };
            if let Some(reason) = stop {
                return reason;
            }
            if self.closed {
                return ExitReason::Shutdown;
            }
        }
    }

    /// Handles one message; `Some(reason)` when the supervisor is to end with it (its children
    /// already shut down).
    async fn handle(&mut self, env: Envelope) -> Option<ExitReason> {
        match env.signal() {
            Some(Signal::Exit(ExitSignal { from, reason, link })) => {
                let (from, reason, link) = (from.clone(), reason.clone(), *link);
                self.on_exit(from, reason, link).await
            }
            // A Down of a shutdown that was already over, or a node notice: nothing to do.
            Some(_) => None,
            None => match client::decode::<Request>(&env.payload) {
                Some(req) => self.on_request(req, &env).await,
                None => {
                    tracing::debug!(supervisor = %self.me.pid(), "supervisor ignores a message it does not understand");
                    None
                }
            },
        }
    }

    async fn on_exit(
        &mut self,
        from: Option<Pid>,
        reason: ExitReason,
        link: bool,
    ) -> Option<ExitReason> {
        if let Some(pid) = &from {
            if link {
                if let Some(i) = self.index_of_pid(pid) {
                    return self.child_exited(i, reason).await;
                }
            }
            if Some(pid) == self.parent.as_ref() {
                return Some(self.stop(reason).await);
            }
        }
        if !link && !reason.is_normal() {
            return Some(self.stop(reason).await);
        }
        // A link of a process that is no longer a child (it ended while being shut down, or
        // was replaced): nothing to do.
        None
    }

    /// Child `i` ended with `reason`: restarts it (and others) if its restart type says so.
    async fn child_exited(&mut self, i: usize, reason: ExitReason) -> Option<ExitReason> {
        let pid = self.children[i].pid.take();
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !matches!(reason, ExitReason::Normal | ExitReason::Shutdown),
            Restart::Temporary => false,
        };
        if !restart {
            if self.children[i].spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
            return None;
        }
        tracing::info!(
            supervisor = %self.me.pid(),
            child = %self.children[i].spec.id,
            pid = ?pid,
            %reason,
            "child ended; restarting"
        );
        self.restart(i).await
    }

    /// Counts a restart; `true` if that is one too many for the period.
    fn add_restart(&mut self) -> bool {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(t) = self.restarts.front() {
            if now.duration_since(*t) > self.config.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len() > self.config.intensity as usize
    }

    /// Restarts child `i` (not running) by the strategy; ends the supervisor if the intensity
    /// is exceeded.
    async fn restart(&mut self, i: usize) -> Option<ExitReason> {
        if self.add_restart() {
            tracing::error!(
                supervisor = %self.me.pid(),
                intensity = self.config.intensity,
                period = ?self.config.period,
                "supervisor reached its maximum restart intensity; shutting down"
            );
            return Some(
                self.stop(ExitReason::error(REACHED_MAX_RESTART_INTENSITY))
                    .await,
            );
        }
        let id = self.children[i].spec.id.clone();
        match self.config.strategy {
            Strategy::OneForOne => self.start_from(i, Some(i + 1)).await,
            Strategy::OneForAll => {
                self.terminate_from(0).await;
                self.drop_temporaries();
                if !self.closed {
                    self.start_from(0, None).await;
                }
            }
            Strategy::RestForOne => {
                self.terminate_from(i + 1).await;
                self.drop_temporaries();
                match self.index_of_id(&id) {
                    Some(i) if !self.closed => self.start_from(i, None).await,
                    _ => {}
                }
            }
        }
        None
    }

    /// A queued retry of a failed restart of child `id`.
    async fn retry(&mut self, id: &str) -> Option<ExitReason> {
        match self.index_of_id(id) {
            Some(i) if self.children[i].restarting => self.restart(i).await,
            _ => None,
        }
    }

    /// Starts the children not running in `from..to` (to the end when `to` is `None`), in
    /// order. On a failure the child is marked restarting, a retry queued behind the messages
    /// waiting now, and the later ones stay stopped.
    async fn start_from(&mut self, from: usize, to: Option<usize>) {
        let to = to.unwrap_or(self.children.len()).min(self.children.len());
        for i in from..to {
            if self.children[i].pid.is_some() {
                continue;
            }
            match call_start(&self.children[i].spec, &self.me) {
                Ok(pid) => {
                    self.children[i].pid = Some(pid.clone());
                    self.children[i].restarting = false;
                    self.me.link(&pid).await;
                }
                Err(e) => {
                    tracing::warn!(supervisor = %self.me.pid(), error = %e, "restart failed; trying again");
                    self.children[i].restarting = true;
                    let id = self.children[i].spec.id.clone();
                    while let Some(env) = self.me.try_recv() {
                        self.saved.push_back(Event::Msg(env));
                    }
                    self.saved.push_back(Event::Retry(id));
                    return;
                }
            }
        }
    }

    /// Removes the temporary children that are not running (shut down by a restart).
    fn drop_temporaries(&mut self) {
        self.children
            .retain(|c| c.pid.is_some() || c.spec.restart != Restart::Temporary);
    }

    /// Shuts down the running children from index `from` on, last started first.
    async fn terminate_from(&mut self, from: usize) {
        for i in (from..self.children.len()).rev() {
            if self.closed {
                return;
            }
            self.shutdown_child(i).await;
        }
    }

    async fn terminate_all(&mut self) {
        self.terminate_from(0).await;
    }

    /// Shuts every child down (reverse start order) and returns `reason`, to end with.
    async fn stop(&mut self, reason: ExitReason) -> ExitReason {
        self.terminate_all().await;
        reason
    }

    /// Stops child `i` if it runs, as its shutdown says, and waits for its end.
    async fn shutdown_child(&mut self, i: usize) {
        self.children[i].restarting = false;
        let Some(pid) = self.children[i].pid.take() else {
            return;
        };
        let how = self.children[i].spec.shutdown;
        let monitor = self.me.monitor(&pid).await;
        self.me.unlink(&pid).await;
        let first = match how {
            Shutdown::BrutalKill => ExitReason::Kill,
            Shutdown::Timeout(_) | Shutdown::Infinity => ExitReason::Shutdown,
        };
        // A child on a node that is gone: its Down (noconnection) comes anyway.
        let _ = self.me.exit(&pid, first).await;
        let deadline = match how {
            Shutdown::Timeout(t) => Some(Instant::now() + t),
            _ => None,
        };
        let reason = match self.await_down(&monitor, deadline).await {
            Wait::Down(r) => r,
            Wait::Closed => return,
            Wait::TimedOut => {
                tracing::warn!(supervisor = %self.me.pid(), child = %self.children[i].spec.id, "child did not stop in time; killing it");
                let _ = self.me.exit(&pid, ExitReason::Kill).await;
                match self.await_down(&monitor, None).await {
                    Wait::Down(r) => r,
                    _ => return,
                }
            }
        };
        tracing::debug!(supervisor = %self.me.pid(), child = %self.children[i].spec.id, %reason, "child shut down");
    }

    /// Waits for the `Down` of `monitor`, setting every other message aside.
    async fn await_down(&mut self, monitor: &Ref, deadline: Option<Instant>) -> Wait {
        loop {
            let next = match deadline {
                None => self.me.recv().await,
                Some(d) => match tokio::time::timeout_at(d, self.me.recv()).await {
                    Ok(next) => next,
                    Err(_) => return Wait::TimedOut,
                },
            };
            let Some(env) = next else {
                self.closed = true;
                return Wait::Closed;
            };
            if let Some(Signal::Down(d)) = env.signal() {
                if d.monitor == *monitor {
                    return Wait::Down(d.reason.clone());
                }
            }
            self.saved.push_back(Event::Msg(env));
        }
    }

    fn index_of_pid(&self, pid: &Pid) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.pid.as_ref() == Some(pid))
    }

    fn index_of_id(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    async fn on_request(&mut self, req: Request, env: &Envelope) -> Option<ExitReason> {
        let reply = match req {
            Request::WhichChildren => Reply::Children(
                self.children
                    .iter()
                    .map(|c| ChildInfo {
                        id: c.spec.id.clone(),
                        pid: c.pid.clone(),
                        restarting: c.restarting,
                        child_type: c.spec.child_type,
                        restart: c.spec.restart,
                    })
                    .collect(),
            ),
            Request::CountChildren => Reply::Counts(self.count()),
            Request::TerminateChild(id) => Reply::Done(self.terminate_child(&id).await),
            Request::RestartChild(id) => Reply::Started(self.restart_child(&id).await),
            Request::DeleteChild(id) => Reply::Done(self.delete_child(&id)),
            Request::StartChild(key) => Reply::Started(self.start_child(key).await),
            Request::Stop => return Some(self.stop(ExitReason::Normal).await),
        };
        if env.from.is_some() {
            let _ = self
                .me
                .reply(env, client::encode(&reply), &SendOptions::default())
                .await;
        }
        None
    }

    fn count(&self) -> ChildCounts {
        let mut c = ChildCounts {
            specs: self.children.len(),
            ..ChildCounts::default()
        };
        for child in &self.children {
            if child.pid.is_some() {
                c.active += 1;
            }
            match child.spec.child_type {
                ChildType::Worker => c.workers += 1,
                ChildType::Supervisor => c.supervisors += 1,
            }
        }
        c
    }

    async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let i = self
            .index_of_id(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))?;
        self.shutdown_child(i).await;
        if self.children[i].spec.restart == Restart::Temporary {
            self.children.remove(i);
        }
        Ok(())
    }

    async fn restart_child(&mut self, id: &str) -> Result<Pid, SupervisorError> {
        let i = self
            .index_of_id(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))?;
        let child = &self.children[i];
        if child.pid.is_some() {
            return Err(SupervisorError::Running(id.to_string()));
        }
        if child.restarting {
            return Err(SupervisorError::Restarting(id.to_string()));
        }
        let pid = call_start(&child.spec, &self.me)?;
        self.children[i].pid = Some(pid.clone());
        self.me.link(&pid).await;
        Ok(pid)
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let i = self
            .index_of_id(id)
            .ok_or_else(|| SupervisorError::NotFound(id.to_string()))?;
        let child = &self.children[i];
        if child.pid.is_some() {
            return Err(SupervisorError::Running(id.to_string()));
        }
        if child.restarting {
            return Err(SupervisorError::Restarting(id.to_string()));
        }
        self.children.remove(i);
        Ok(())
    }

    async fn start_child(&mut self, key: u64) -> Result<Pid, SupervisorError> {
        let spec = client::take_pending(key).ok_or(SupervisorError::NotLocal)?;
        if let Some(i) = self.index_of_id(&spec.id) {
            return Err(match &self.children[i].pid {
                Some(pid) => SupervisorError::AlreadyStarted {
                    id: spec.id.clone(),
                    pid: pid.clone(),
                },
                None => SupervisorError::AlreadyPresent(spec.id.clone()),
            });
        }
        let pid = call_start(&spec, &self.me)?;
        self.children.push(Child {
            spec,
            pid: Some(pid.clone()),
            restarting: false,
        });
        self.me.link(&pid).await;
        Ok(pid)
    }
}
