//! Driving a network by hand: the control frames in flight (deliver one early, lose it,
//! duplicate it), frames handed straight to an engine, overlay timers fired at once, and runs
//! that stop on a condition or once the network is quiet.
//!
//! Everything here goes through the nodes' real engines, as frames arriving from the network
//! would; nothing reaches into an engine's state.

use std::time::Duration;

use crate::overlay::{OverlayMsg, OverlayTimer};
use crate::time::Instant;
use crate::wire::{Control, Message};

use super::{EndState, Ev, Network, NodeId};

/// A control frame in flight, as [`Network::in_flight`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: OverlayMsg,
    /// When it is due.
    pub at: Instant,
}

impl Network {
    /// Runs overlay timer `timer` of node `i` now, whatever its deadline.
    pub fn fire_overlay_timer(&mut self, i: NodeId, timer: OverlayTimer) {
        if !self.nodes[i as usize].alive {
            return;
        }
        let now = self.now;
        self.nodes[i as usize].engine.fire_overlay_timer(timer, now);
        self.drain(i);
    }

    /// Runs events until `done` holds, checking it before every event; gives up once `within`
    /// of virtual time has passed (the clock then stands at that limit). Returns whether `done`
    /// holds.
    pub fn step_until(&mut self, within: Duration, mut done: impl FnMut(&Network) -> bool) -> bool {
        let until = self.now + within;
        loop {
            if done(self) {
                return true;
            }
            if self.next_time().is_none_or(|t| t > until) {
                self.now = self.now.max(until);
                return done(self);
            }
            self.step();
        }
    }

    /// Whether nothing is under way but keepalive: no control frame in flight, no dial,
    /// handshake or close in progress, no overlay message held for a peer not reached yet, and
    /// no overlay news waiting to be pushed ([`OverlayTimer::Push`] armed). Periodic overlay
    /// timers, keepalive probes and idle lanes do not count.
    pub fn is_quiet(&self) -> bool {
        let network = self.queue.sorted().into_iter().all(|(_, ev)| {
            matches!(
                ev,
                Ev::Wake { .. }
                    | Ev::Frame {
                        msg: Message::Ping(_) | Message::Pong(_),
                        ..
                    }
            )
        });
        network
            && self.nodes.iter().filter(|n| n.alive).all(|n| {
                n.engine.held() == 0
                    && n.engine.dials_in_flight() == 0
                    && n.engine.overlay_timer(OverlayTimer::Push).is_none()
            })
    }

    /// Runs until the network [is quiet](Network::is_quiet), for at most `within` of virtual
    /// time; returns whether it got quiet.
    pub fn run_until_quiet(&mut self, within: Duration) -> bool {
        self.step_until(within, Network::is_quiet)
    }

    /// Overlay frames in flight, in the order they are due.
    pub fn in_flight(&self) -> Vec<InFlight> {
        self.queue
            .sorted()
            .into_iter()
            .filter_map(|((at, _), ev)| match ev {
                Ev::Frame {
                    conn,
                    to,
                    msg: Message::Control(Control::Overlay(m)),
                } => {
                    let c = self.conns.get(conn)?;
                    Some(InFlight {
                        from: c.ends[1 - *to].node,
                        to: c.ends[*to].node,
                        msg: m.clone(),
                        at,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// The queue key of the `k`-th in-flight overlay frame (as [`Network::in_flight`] lists
    /// them), or of broadcast frames with `broadcast`.
    fn in_flight_key_of(&self, k: usize, broadcast: bool) -> Option<(Instant, u64)> {
        self.queue
            .sorted()
            .into_iter()
            .filter(|(_, ev)| match ev {
                Ev::Frame {
                    msg: Message::Control(c),
                    ..
                } => matches!(c, Control::Broadcast(_)) == broadcast,
                _ => false,
            })
            .nth(k)
            .map(|(key, _)| key)
    }

    fn in_flight_key(&self, k: usize) -> Option<(Instant, u64)> {
        self.in_flight_key_of(k, false)
    }

    /// Broadcast (Plumtree) frames in flight.
    pub fn broadcasts_in_flight(&self) -> usize {
        self.queue
            .sorted()
            .into_iter()
            .filter(|(_, ev)| {
                matches!(
                    ev,
                    Ev::Frame {
                        msg: Message::Control(Control::Broadcast(_)),
                        ..
                    }
                )
            })
            .count()
    }

    /// Delivers the `k`-th in-flight broadcast frame now, ahead of its turn (`lose`: drops it
    /// instead; `copy`: delivers a copy and keeps it in flight). Returns whether there was one.
    pub fn meddle_broadcast(&mut self, k: usize, lose: bool, copy: bool) -> bool {
        let Some(key) = self.in_flight_key_of(k, true) else {
            return false;
        };
        if lose {
            self.queue.remove(key);
            return true;
        }
        let ev = if copy {
            match self.queue.get(key).expect("key just found") {
                Ev::Frame { conn, to, msg } => Ev::Frame {
                    conn: *conn,
                    to: *to,
                    msg: msg.clone(),
                },
                _ => return false,
            }
        } else {
            self.queue.remove(key).expect("key just found")
        };
        self.events += 1;
        self.process(ev);
        true
    }

    /// Delivers the `k`-th in-flight overlay frame now, ahead of its turn.
    pub fn deliver_now(&mut self, k: usize) -> bool {
        let Some(key) = self.in_flight_key(k) else {
            return false;
        };
        let ev = self.queue.remove(key).expect("key just found");
        self.events += 1;
        if !self.watch.is_empty() {
            self.print_watched(&ev);
        }
        self.process(ev);
        true
    }

    /// Loses the `k`-th in-flight overlay frame.
    pub fn drop_in_flight(&mut self, k: usize) -> bool {
        let Some(key) = self.in_flight_key(k) else {
            return false;
        };
        self.queue.remove(key);
        true
    }

    /// Delivers a copy of the `k`-th in-flight overlay frame now, keeping the original.
    pub fn duplicate_in_flight(&mut self, k: usize) -> bool {
        let Some(key) = self.in_flight_key(k) else {
            return false;
        };
        let copy = match self.queue.get(key).expect("key just found") {
            Ev::Frame { conn, to, msg } => Ev::Frame {
                conn: *conn,
                to: *to,
                msg: msg.clone(),
            },
            _ => return false,
        };
        self.events += 1;
        self.process(copy);
        true
    }

    /// Loses every in-flight control frame for which `lost` holds; returns how many.
    pub fn drop_in_flight_where(&mut self, mut lost: impl FnMut(&InFlight) -> bool) -> usize {
        let doomed: Vec<usize> = self
            .in_flight()
            .iter()
            .enumerate()
            .filter(|(_, f)| lost(f))
            .map(|(k, _)| k)
            .collect();
        // From the last: dropping one does not move the frames before it.
        for &k in doomed.iter().rev() {
            self.drop_in_flight(k);
        }
        doomed.len()
    }

    /// Hands node `to`'s engine `msg` now, as a control frame from `from` read on a lane
    /// between them that its engine still holds (open, or closing while it says goodbye): a
    /// frame that lingered in flight, or one the test wrote. It crosses the wire encoded when
    /// the network encodes. Returns `false`, doing nothing, when `to` is down or holds no such
    /// lane (make one first, e.g. with a user `Connect`).
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: OverlayMsg) -> bool {
        let node = &self.nodes[to as usize];
        if !node.alive {
            return false;
        }
        let end = self.by_node[to as usize].iter().find_map(|c| {
            let conn = self.conns.get(c)?;
            let side = conn.ends.iter().position(|e| e.node == to)?;
            let (mine, theirs) = (&conn.ends[side], &conn.ends[1 - side]);
            let held = matches!(
                mine.state,
                EndState::Open | EndState::Closing | EndState::Broken
            ) && mine.inc == node.incarnation
                && node.engine.lane(mine.id).is_some();
            (theirs.node == from && held).then_some(mine.id)
        });
        let Some(end) = end else {
            return false;
        };
        let mut msg = Message::Control(Control::Overlay(msg));
        if self.net.encode {
            match self.round_trip(&msg) {
                (_, Some(decoded)) => msg = decoded,
                (_, None) => return false,
            }
        }
        let Message::Control(ctl) = msg else {
            return false;
        };
        let code = super::control_code(&ctl);
        let now = self.now;
        self.trace
            .mix(&[9, now.0, u64::from(from), u64::from(to), code]);
        self.events += 1;
        let node = &mut self.nodes[to as usize];
        node.engine
            .handle_control(end, ctl, now, &mut node.processes);
        self.drain(to);
        true
    }
}
