//! The engine's part in process signals: commands into the [`SignalTable`], signals from
//! peers, peers lost, and the table's outputs carried out (frames on lanes, events).

use crate::id::{Creation, NodeName};
use crate::signals::{LocalProcesses, ProcessMsg, SignalOutput};
use crate::wire::{Control, Message};

use super::{Answer, Command, Engine, Event};

impl Engine {
    /// The incarnation of `node` this node is connected to, if any lane to it is open.
    pub(crate) fn peer_state(&self, node: &NodeName) -> Option<Creation> {
        if !self.lanes.is_connected(node) {
            return None;
        }
        self.identities.get(node).map(|i| i.creation)
    }

    /// A process command (see [`Command::Monitor`] and the following ones).
    pub(super) fn signal_command(&mut self, cmd: Command) {
        let mut out = std::mem::take(&mut self.signal_out);
        match cmd {
            Command::Monitor {
                watcher,
                monitor,
                target,
            } => {
                let peer = self.peer_state(target.node());
                self.signals
                    .monitor(watcher, monitor, target, peer, &mut out);
            }
            Command::Demonitor { monitor } => {
                self.signals.demonitor(monitor, &mut out);
            }
            Command::Link { local, remote } => {
                let peer = self.peer_state(&remote.node);
                self.signals.link(local, remote, peer, &mut out);
            }
            Command::Unlink { local, remote } => self.signals.unlink(local, &remote, &mut out),
            Command::Exit { from, to, reason } => {
                let peer = self.peer_state(&to.node);
                self.signals.exit(from, &to, reason, peer, &mut out);
            }
            Command::ProcessExited { id, reason } => {
                self.signals.process_exited(id, &reason, &mut out);
            }
            Command::IsAlive { pid, waiter } => {
                let peer = self.peer_state(&pid.node);
                self.signals.is_alive(&pid, waiter, peer, &mut out);
            }
            _ => {}
        }
        self.signal_out = out;
        self.carry_out_signals();
    }

    /// A signal from `peer`'s lane of incarnation `creation`.
    pub(super) fn signal_message(
        &mut self,
        peer: &NodeName,
        creation: Creation,
        msg: ProcessMsg,
        procs: &mut dyn LocalProcesses,
    ) {
        if !self.lanes.is_connected(peer) {
            // Read on a lane that is closing after the peer's last open lane went: its loss
            // fired here (or will when the lane goes down) and fires on its side too, so
            // whatever the signal would add here could only outlive the connection.
            self.stats.control_stale += 1;
            return;
        }
        let mut out = std::mem::take(&mut self.signal_out);
        self.signals.handle(peer, creation, msg, procs, &mut out);
        self.signal_out = out;
        self.carry_out_signals();
    }

    /// `node` lost its last lane (`now_creation` `None`), or came up as incarnation
    /// `now_creation`: entries of any other incarnation fire and go.
    pub(super) fn signal_peer_lost(&mut self, node: &NodeName, now_creation: Option<Creation>) {
        let mut out = std::mem::take(&mut self.signal_out);
        self.signals.peer_lost(node, now_creation, &mut out);
        self.signal_out = out;
        self.carry_out_signals();
    }

    fn carry_out_signals(&mut self) {
        for o in std::mem::take(&mut self.signal_out) {
            match o {
                SignalOutput::Send { to, msg } => self.send_signal(&to, msg),
                SignalOutput::Down {
                    watcher,
                    monitor,
                    target,
                    reason,
                } => {
                    self.stats.downs += 1;
                    self.events.push_back(Event::Down {
                        watcher,
                        monitor,
                        target,
                        reason,
                    });
                }
                SignalOutput::Exit {
                    to,
                    from,
                    reason,
                    link,
                } => {
                    self.stats.exit_signals += 1;
                    self.events.push_back(Event::Exit {
                        to,
                        from,
                        reason,
                        link,
                    });
                }
                SignalOutput::Alive { waiter, alive } => {
                    self.answer(waiter, Answer::Alive(alive));
                }
            }
        }
    }

    /// Puts a signal on the peer's signal lane; with none open it is dropped and counted (the
    /// peer's loss fires every entry it concerned).
    pub(super) fn send_signal(&mut self, to: &NodeName, msg: ProcessMsg) {
        match self.lanes.signal_route(to) {
            Some(conn) => {
                self.stats.signals_handed += 1;
                self.outputs.push_back(super::Output::Transmit {
                    conn,
                    msg: Message::Control(Control::Process(msg)),
                });
            }
            None => self.stats.signals_dropped += 1,
        }
    }
}
