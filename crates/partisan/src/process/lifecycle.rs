//! How processes end, and what their end does: local monitors get their `Down`, linked
//! processes their exit signal, and the engine hears of the ends it must tell peers about.

use std::sync::atomic::Ordering::Relaxed;

use partisan_core::engine::Command;
use partisan_core::id::{Pid, Ref, RemoteRef};
use partisan_core::signals::ExitReason;

use crate::driver::DriverCmd;
use crate::node::Shared;
use crate::process::registry::Disposition;
use crate::process::signal::{Down, ExitSignal, Signal};

impl Shared {
    /// This node's pid of local process `id`.
    pub(crate) fn local_pid(&self, id: u64) -> Pid {
        Pid {
            node: self.spec.name().clone(),
            creation: self.creation,
            id,
        }
    }

    /// This node's reference of id `id`.
    pub(crate) fn local_ref(&self, id: u64) -> Ref {
        Ref {
            node: self.spec.name().clone(),
            creation: self.creation,
            id,
        }
    }

    /// Ends local process `id` with `reason`, once (later calls do nothing): its mailbox
    /// closes, its names and aliases go, its task (if spawned) is cancelled, watchers get a
    /// `Down`, linked processes an exit signal, and the engine is told when peers relate to it.
    pub(crate) fn end_process(&self, id: u64, reason: ExitReason) {
        let Some(ended) = self.registry.end(id) else {
            return;
        };
        self.stats.node.processes_ended.fetch_add(1, Relaxed);
        if matches!(reason, ExitReason::Panic(_)) {
            self.stats.node.process_panics.fetch_add(1, Relaxed);
        }
        let rel = ended.rel;
        for w in rel.watchers {
            self.registry.drop_watcher_record(w.watcher, w.monitor);
            self.registry.push_signal(
                w.watcher,
                Signal::Down(Down {
                    monitor: self.local_ref(w.monitor),
                    target: w.target,
                    reason: reason.clone(),
                }),
            );
        }
        // Its monitors of local processes go; those of remote ones go with the engine's
        // `ProcessExited` below.
        for (monitor, target) in rel.monitors {
            if let Some(t) = target {
                self.registry.remove_watcher(t, monitor);
            }
        }
        if rel.node_monitors {
            self.node_monitors.lock().remove_watcher(id);
        }
        let me = self.local_pid(id);
        for l in rel.links {
            self.registry.unlink(l, id);
            self.exit_signal(l, Some(me.clone()), reason.clone(), true);
        }
        if rel.remote {
            self.signal_command(Command::ProcessExited {
                id,
                reason: reason.clone(),
            });
        }
        if let Some(task) = ended.task {
            task.abort();
        }
    }

    /// Delivers an exit signal to local process `to`: a message if it traps exits, nothing for
    /// a `normal` signal otherwise, else its end (`kill` ends even a trapping process).
    pub(crate) fn exit_signal(&self, to: u64, from: Option<Pid>, reason: ExitReason, link: bool) {
        match self.registry.disposition(to, &reason) {
            Disposition::Ignore => {}
            Disposition::Trap(mailbox) => {
                mailbox.push_signal(crate::process::registry::Envelope::of_signal(Signal::Exit(
                    ExitSignal { from, reason, link },
                )));
            }
            Disposition::End(r) => self.end_process(to, r),
        }
    }

    /// Delivers the engine's `Down` for a remote monitor held by `watcher`.
    pub(crate) fn remote_down(
        &self,
        watcher: u64,
        monitor: u64,
        target: RemoteRef,
        reason: ExitReason,
    ) {
        self.registry.drop_watcher_record(watcher, monitor);
        self.registry.push_signal(
            watcher,
            Signal::Down(Down {
                monitor: self.local_ref(monitor),
                target,
                reason,
            }),
        );
    }

    /// Hands a process command to the engine and waits until it was carried out (its frames
    /// queued on their lanes, so a message the caller sends next on the same lane follows
    /// them). `false` if the node is stopping.
    pub(crate) async fn signal_command_wait(&self, cmd: Command) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .driver
            .send(DriverCmd::Signal(cmd, Some(tx)))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.is_ok()
    }

    /// Hands a process command to the engine, in order with this task's earlier commands; from
    /// a context that cannot wait (a drop), through a task when the driver's queue is full.
    pub(crate) fn signal_command(&self, cmd: Command) {
        match self.driver.try_send(DriverCmd::Signal(cmd, None)) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(cmd)) => {
                let driver = self.driver.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = driver.send(cmd).await;
                    });
                }
            }
            // The node stopped: peers see its connections go, which fires their monitors.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
