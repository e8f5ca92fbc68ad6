//! The engine's part in process signals: commands into the [`SignalTable`], signals from
//! peers, peers lost, and the table's outputs carried out (frames on lanes, events).

use crate::id::{Creation, NodeName};
use crate::signals::{LocalProcesses, ProcessFrame, ProcessMsg, SignalOutput};
use crate::wire::{Control, Message};

use super::{Answer, Command, ConnId, Engine, Event};

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

    /// A signal frame from `peer`'s lane of incarnation `creation`. One read on a lane that is
    /// closing after the peer's last open lane went may still answer or end entries, but adds
    /// none (see [`SignalTable::handle`](crate::signals::SignalTable::handle)).
    pub(super) fn signal_message(
        &mut self,
        peer: &NodeName,
        creation: Creation,
        frame: ProcessFrame,
        procs: &mut dyn LocalProcesses,
    ) {
        let connected = self.lanes.is_connected(peer);
        let mut out = std::mem::take(&mut self.signal_out);
        self.signals
            .handle(peer, creation, frame, connected, procs, &mut out);
        self.signal_out = out;
        self.carry_out_signals();
    }

    /// `node` lost its last lane: every entry with it fires, and a new session with it begins.
    pub(super) fn signal_peer_down(&mut self, node: &NodeName) {
        let mut out = std::mem::take(&mut self.signal_out);
        self.signals.peer_down(node, &mut out);
        self.signal_out = out;
        self.carry_out_signals();
    }

    /// This node loses `node` while lanes to it may stay open (a signal could not be queued):
    /// every entry with it fires, and the new session is told on every open lane to it.
    pub(super) fn signal_lose(&mut self, node: &NodeName) {
        let conns = self.lanes.open_conns(node);
        let mut out = std::mem::take(&mut self.signal_out);
        self.signals.lose(node, !conns.is_empty(), &mut out);
        self.signal_out = out;
        self.carry_out_signals();
        for conn in conns {
            let frame = self.signals.frame(node, None);
            self.transmit_signal(conn, frame);
        }
    }

    /// `node` came up as incarnation `creation`: entries of any other incarnation fire.
    pub(super) fn signal_peer_up(&mut self, node: &NodeName, creation: Creation) {
        let mut out = std::mem::take(&mut self.signal_out);
        self.signals.peer_up(node, creation, &mut out);
        self.signal_out = out;
        self.carry_out_signals();
    }

    /// Lane `conn` to the current incarnation `creation` of `node` opened: the first frame on
    /// it tells this node's session, while the peer has not shown it heard it.
    pub(super) fn signal_lane_up(&mut self, conn: ConnId, node: &NodeName, creation: Creation) {
        if let Some(frame) = self.signals.lane_up(node, creation) {
            self.transmit_signal(conn, frame);
        }
    }

    fn carry_out_signals(&mut self) {
        for o in std::mem::take(&mut self.signal_out) {
            match o {
                SignalOutput::Send { to, msg } => self.send_signal(&to, Some(msg)),
                SignalOutput::Tell { to } => self.send_signal(&to, None),
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

    /// Puts a signal (none: only the sessions) on the peer's signal lane, stamped with this
    /// node's sessions; with none open it is dropped and counted (the peer's loss fires every
    /// entry it concerned).
    pub(super) fn send_signal(&mut self, to: &NodeName, msg: Option<ProcessMsg>) {
        match self.lanes.signal_route(to) {
            Some(conn) => {
                let frame = self.signals.frame(to, msg);
                self.transmit_signal(conn, frame);
            }
            None => self.stats.signals_dropped += 1,
        }
    }

    /// Puts a process frame on lane `conn`; one carrying a signal marks the lane as having
    /// carried signals (its break then loses the peer).
    fn transmit_signal(&mut self, conn: ConnId, frame: ProcessFrame) {
        self.stats.signals_handed += 1;
        if frame.msg.is_some() {
            if let Some(l) = self.lanes.get_mut(conn) {
                l.carried_signals = true;
            }
        }
        self.outputs.push_back(super::Output::Transmit {
            conn,
            msg: Message::Control(Control::Process(frame)),
        });
    }
}
