//! Monitors, links and exit signals of a process, on this node or any other.
//!
//! A monitor of a process on this node is kept in the registry; one of a process on another
//! node lives in the engine (`partisan_core::signals`), which tells the peer and fires on the
//! peer's loss. Links likewise. See `docs/semantics.md` for what is guaranteed.

use partisan_core::engine::Command;
use partisan_core::id::{Pid, Ref, RemoteRef};
use partisan_core::signals::ExitReason;
use partisan_core::wire::Target;

use crate::error::SendError;
use crate::node::{Node, Shared};
use crate::process::registry::{LinkOutcome, Watcher};
use crate::process::signal::{Down, Signal};
use crate::process::Process;
use crate::send::{Dest, Destination};

/// A destination on this node, as a registry target; `None` for another incarnation's pid or
/// reference (which names no live process here).
fn local_target(shared: &Shared, dest: Dest<'_>) -> Option<Target> {
    match dest {
        Dest::Pid(p) if p.creation == shared.creation => Some(Target::Pid(p.id)),
        Dest::Ref(r) if r.creation == shared.creation => Some(Target::Ref(r.id)),
        Dest::Name(n) => Some(Target::Name(n.name.clone())),
        _ => None,
    }
}

impl Process {
    /// Monitors `dest` (a pid, alias or registered name, on any node): exactly one
    /// [`Signal::Down`] with the returned reference arrives in this mailbox when it ends (its
    /// exit reason), if it does not exist ([`ExitReason::NoProc`], at once), or when its
    /// node is or becomes unreachable ([`ExitReason::NoConnection`], at once if not
    /// connected now), unless [`Process::demonitor`] comes first. A registered name is
    /// resolved when the monitor is made.
    pub async fn monitor(&self, dest: impl Destination) -> Ref {
        let shared = &self.node().shared;
        let dest = dest.dest();
        let me = self.pid().id;
        let monitor = shared.registry.make_ref();
        let target = dest.to_remote_ref();
        if dest.node() == shared.spec.name() {
            let resolved = local_target(shared, dest).and_then(|t| shared.registry.resolve(&t));
            let added = resolved.is_some_and(|t| {
                shared.registry.add_watcher(
                    t,
                    Watcher {
                        monitor,
                        watcher: me,
                        target: target.clone(),
                    },
                )
            });
            if !added {
                shared.registry.push_signal(
                    me,
                    Signal::Down(Down {
                        monitor: shared.local_ref(monitor),
                        target,
                        reason: ExitReason::NoProc,
                    }),
                );
            }
        } else if shared.registry.add_remote_monitor(me, monitor) {
            let sent = shared
                .signal_command_wait(Command::Monitor {
                    watcher: me,
                    monitor,
                    target: target.clone(),
                })
                .await;
            if !sent {
                shared.registry.drop_watcher_record(me, monitor);
                shared.registry.push_signal(
                    me,
                    Signal::Down(Down {
                        monitor: shared.local_ref(monitor),
                        target,
                        reason: ExitReason::NoConnection,
                    }),
                );
            }
        }
        shared.local_ref(monitor)
    }

    /// Withdraws a monitor this process made: no `Down` of it is delivered after this returns
    /// (one already in the mailbox stays: see [`Process::demonitor_flush`]). Returns whether
    /// the monitor was still active. Harmless for any other reference.
    pub async fn demonitor(&self, monitor: &Ref) -> bool {
        let shared = &self.node().shared;
        if monitor.node != *shared.spec.name() || monitor.creation != shared.creation {
            return false;
        }
        match shared.registry.remove_monitor(self.pid().id, monitor.id) {
            None => false,
            Some(Some(_local)) => true,
            Some(None) => {
                shared
                    .signal_command_wait(Command::Demonitor {
                        monitor: monitor.id,
                    })
                    .await;
                true
            }
        }
    }

    /// [`Process::demonitor`], then removes that monitor's `Down` from the mailbox if one is
    /// already there; returns whether the monitor was still active.
    pub async fn demonitor_flush(&mut self, monitor: &Ref) -> bool {
        let active = self.demonitor(monitor).await;
        if let Some(mailbox) = self.node().shared.registry.mailbox(self.pid().id) {
            mailbox.remove_where(
                |e| matches!(e.signal(), Some(Signal::Down(d)) if d.monitor == *monitor),
            );
        }
        active
    }

    /// Links this process with `pid` (on any node): when either ends with a reason other than
    /// [`ExitReason::Normal`], the other gets an exit signal with that reason, which ends it
    /// unless it traps exits ([`Process::trap_exits`]); the loss of the other's node counts as
    /// [`ExitReason::NoConnection`]. Linking a process that does not exist sends this one an
    /// exit signal [`ExitReason::NoProc`] (and [`ExitReason::NoConnection`] for an
    /// unreachable node). Linking twice is one link.
    pub async fn link(&self, pid: &Pid) {
        let shared = &self.node().shared;
        let me = self.pid().id;
        if pid.node == *shared.spec.name() {
            let outcome = if pid.creation == shared.creation {
                shared.registry.link(me, pid.id)
            } else {
                LinkOutcome::TargetEnded
            };
            if outcome == LinkOutcome::TargetEnded {
                shared.exit_signal(me, Some(pid.clone()), ExitReason::NoProc, true);
            }
            return;
        }
        if !shared.registry.mark_remote(me) {
            return;
        }
        let sent = shared
            .signal_command_wait(Command::Link {
                local: me,
                remote: pid.clone(),
            })
            .await;
        if !sent {
            shared.exit_signal(me, Some(pid.clone()), ExitReason::NoConnection, true);
        }
    }

    /// Removes the link with `pid`, on both sides: no exit signal of it arrives after this
    /// returns.
    pub async fn unlink(&self, pid: &Pid) {
        let shared = &self.node().shared;
        let me = self.pid().id;
        if pid.node == *shared.spec.name() {
            if pid.creation == shared.creation {
                shared.registry.unlink(me, pid.id);
            }
            return;
        }
        shared
            .signal_command_wait(Command::Unlink {
                local: me,
                remote: pid.clone(),
            })
            .await;
    }

    /// Whether exit signals become messages ([`Signal::Exit`]) instead of ending this
    /// process. [`ExitReason::Kill`] ends it regardless.
    pub fn trap_exits(&self, on: bool) {
        self.node()
            .shared
            .registry
            .set_trap_exits(self.pid().id, on);
    }

    /// Sends an exit signal with `reason` from this process to `pid` (see [`Node::exit`]).
    pub async fn exit(&self, pid: &Pid, reason: ExitReason) -> Result<(), SendError> {
        self.node()
            .exit_from(Some(self.pid().clone()), pid, reason)
            .await
    }

    /// Ends this process now with `reason`: its mailbox closes, and its monitors and links
    /// fire with that reason.
    pub fn stop(self, reason: ExitReason) {
        self.node().shared.end_process(self.pid().id, reason);
    }
}

impl Node {
    /// Sends an exit signal with `reason` to `pid`, on any node, from no process: the target
    /// ends with that reason unless it traps exits (then it gets a [`Signal::Exit`]) or the
    /// reason is [`ExitReason::Normal`] (then nothing happens to a process not trapping
    /// exits); [`ExitReason::Kill`] ends it regardless, as [`ExitReason::Killed`]. Errors
    /// when the pid's node is not connected, or the pid belongs to another incarnation.
    pub async fn exit(&self, pid: &Pid, reason: ExitReason) -> Result<(), SendError> {
        self.exit_from(None, pid, reason).await
    }

    pub(crate) async fn exit_from(
        &self,
        from: Option<Pid>,
        pid: &Pid,
        reason: ExitReason,
    ) -> Result<(), SendError> {
        let shared = &self.shared;
        if pid.node == *shared.spec.name() {
            if pid.creation != shared.creation {
                return Err(SendError::Stale(RemoteRef::Pid(pid.clone())));
            }
            shared.exit_signal(pid.id, from, reason, false);
            return Ok(());
        }
        match shared.table.creation_of(&pid.node) {
            None => return Err(SendError::NotConnected(pid.node.clone())),
            Some(c) if c != pid.creation => {
                return Err(SendError::Stale(RemoteRef::Pid(pid.clone())))
            }
            Some(_) => {}
        }
        let from = match from {
            Some(p) if p.node == *shared.spec.name() => Some(p.id),
            _ => None,
        };
        if shared
            .signal_command_wait(Command::Exit {
                from,
                to: pid.clone(),
                reason,
            })
            .await
        {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }
}
