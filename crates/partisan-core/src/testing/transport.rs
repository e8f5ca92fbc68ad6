//! The transport side of the network: connections from dial to close (handshake verdicts,
//! goodbyes, resets), and the control frames on them, in order, one latency each way.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;

use crate::connection_plan::{CloseReason, ConnId, DialFailure, DialRequest};
use crate::engine::{DialId, DialResult};
use crate::time::Instant;
use crate::wire::handshake::{HandshakeError, PeerHello, RefuseCode};
use crate::wire::{Control, FrameDecoder, Message, DEFAULT_MAX_FRAME_LEN};

use super::{
    control_code, Conn, End, EndState, Ev, Network, NodeId, Sent, Stepped, ACCEPTOR, DIALER, LINGER,
};

impl Network {
    pub(super) fn new_end(&mut self, node: NodeId, state: EndState) -> End {
        self.next_end += 1;
        End {
            node,
            inc: self.nodes[node as usize].incarnation,
            id: ConnId(self.next_end),
            state,
            last_rx: self.now,
            clean: false,
        }
    }

    /// Node `i` dials: a connection to whoever listens at the request's first address that
    /// belongs to a node, or a failure.
    pub(super) fn dial(&mut self, i: NodeId, id: DialId, req: DialRequest) {
        let inc = self.nodes[i as usize].incarnation;
        let target = req.addrs.iter().find_map(|a| self.addrs.get(a).copied());
        let fail = |net: &mut Network, after: Duration, failure: DialFailure| {
            let at = net.now + after;
            net.schedule(
                at,
                Ev::DialFailed {
                    node: i,
                    inc,
                    dial: id,
                    failure,
                },
            );
        };
        let Some(b) = target else {
            let rtt = self.latency() * 2;
            return fail(self, rtt, refused());
        };
        if b == i {
            let at = self.now + self.latency();
            return self.schedule(
                at,
                Ev::DialFailed {
                    node: i,
                    inc,
                    dial: id,
                    failure: DialFailure::SelfConnect,
                },
            );
        }
        if self.blocked(i, b) || self.blocked(b, i) {
            let t = self.net.connect_timeout;
            return fail(self, t, DialFailure::TimedOut);
        }
        if !self.nodes[b as usize].alive {
            if self.net.silent_crashes {
                let t = self.net.connect_timeout;
                return fail(self, t, DialFailure::TimedOut);
            }
            let rtt = self.latency() * 2;
            return fail(self, rtt, refused());
        }
        let dialer = self.new_end(i, EndState::Connecting);
        let acceptor = self.new_end(b, EndState::Connecting);
        self.next_conn += 1;
        let c = self.next_conn;
        self.ends.insert(dialer.id, (c, DIALER));
        self.ends.insert(acceptor.id, (c, ACCEPTOR));
        self.by_node[i as usize].insert(c);
        self.by_node[b as usize].insert(c);
        self.conns.insert(
            c,
            Conn {
                dial: id,
                req,
                ends: [dialer, acceptor],
                fifo: [Instant::ZERO; 2],
                goodbye_read: [false; 2],
            },
        );
        let at = self.now + self.latency() * 3;
        self.schedule(at, Ev::Accept { conn: c });
    }

    pub(super) fn hello_of(&self, node: NodeId, req: &DialRequest) -> PeerHello {
        PeerHello {
            identity: self.nodes[node as usize].engine.identity().clone(),
            channel: req.channel.clone(),
            lane: req.lane,
        }
    }

    /// Fails the dial of connection `c` at its dialer after `after`, and forgets it.
    pub(super) fn fail_conn(&mut self, c: u64, after: Duration, failure: DialFailure) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        let d = conn.ends[DIALER].clone();
        let dial = conn.dial;
        for e in &mut conn.ends {
            if e.state == EndState::Connecting {
                e.state = EndState::Gone;
            }
        }
        let at = self.now + after;
        self.schedule(
            at,
            Ev::DialFailed {
                node: d.node,
                inc: d.inc,
                dial,
                failure,
            },
        );
        self.reap(c);
    }

    pub(super) fn accept(&mut self, c: u64) -> Stepped {
        let Some(conn) = self.conns.get(&c) else {
            return Stepped::Other;
        };
        let (d, a) = (conn.ends[DIALER].clone(), conn.ends[ACCEPTOR].clone());
        let req = conn.req.clone();
        self.trace
            .mix(&[1, self.now.0, u64::from(d.node), u64::from(a.node)]);
        if !self.current(a.node, a.inc) {
            let after = if self.net.silent_crashes {
                self.net.connect_timeout
            } else {
                self.latency()
            };
            let reset = DialFailure::Unreachable {
                kind: io::ErrorKind::ConnectionReset,
                detail: "connection reset by peer".into(),
            };
            self.fail_conn(c, after, reset);
            return Stepped::Connection;
        }
        if self.blocked(d.node, a.node) || self.blocked(a.node, d.node) {
            let t = self.net.connect_timeout;
            self.fail_conn(c, t, DialFailure::TimedOut);
            return Stepped::Connection;
        }
        let acceptor_name = self.name_of(a.node).clone();
        if req.expect.as_ref().is_some_and(|e| *e != acceptor_name) {
            let l = self.latency();
            self.fail_conn(
                c,
                l,
                DialFailure::WrongNode {
                    expected: req.expect.clone().expect("checked above"),
                    got: Some(acceptor_name),
                },
            );
            return Stepped::Connection;
        }
        let hello = self.hello_of(d.node, &req);
        let theirs = self.nodes[a.node as usize].engine.identity().overlay;
        if hello.identity.overlay != theirs {
            let l = self.latency();
            let mismatch = DialFailure::OverlayMismatch {
                ours: hello.identity.overlay,
                theirs,
            };
            self.fail_conn(c, l, mismatch);
            return Stepped::Connection;
        }
        let now = self.now;
        let verdict = self.nodes[a.node as usize]
            .engine
            .handle_accept(a.id, &hello, now);
        let refused = match verdict {
            Ok(()) => {
                let conn = self.conns.get_mut(&c).expect("conn exists");
                conn.ends[ACCEPTOR].state = EndState::Open;
                conn.ends[ACCEPTOR].last_rx = now;
                None
            }
            Err(code) => {
                let conn = self.conns.get_mut(&c).expect("conn exists");
                conn.ends[ACCEPTOR].state = EndState::Gone;
                Some(code)
            }
        };
        // The verdict travels first on the connection: frames the acceptor sends next follow.
        let at = self.now + self.latency();
        self.conns.get_mut(&c).expect("conn exists").fifo[DIALER] = at;
        self.schedule(at, Ev::Verdict { conn: c, refused });
        self.drain(a.node);
        Stepped::Connection
    }

    pub(super) fn verdict(&mut self, c: u64, refused: Option<RefuseCode>) -> Stepped {
        let Some(conn) = self.conns.get(&c) else {
            return Stepped::Other;
        };
        let (d, a) = (conn.ends[DIALER].clone(), conn.ends[ACCEPTOR].clone());
        let dial = conn.dial;
        self.trace.mix(&[
            2,
            self.now.0,
            u64::from(d.node),
            u64::from(a.node),
            u64::from(refused.is_some()),
        ]);
        if !self.current(d.node, d.inc) {
            // The dialer died meanwhile: the acceptor's end is reset (or, silently, lingers).
            if let Some(conn) = self.conns.get_mut(&c) {
                conn.ends[DIALER].state = EndState::Gone;
            }
            if a.state == EndState::Open && !self.net.silent_crashes {
                let at = self.now + self.latency();
                self.schedule(
                    at,
                    Ev::Down {
                        conn: c,
                        side: ACCEPTOR,
                    },
                );
            }
            self.reap(c);
            return Stepped::Other;
        }
        if let Some(code) = refused {
            let failure = match code {
                RefuseCode::NameInUse => {
                    DialFailure::NameInUse(self.nodes[d.node as usize].engine.name().clone())
                }
                code => {
                    let refusal = HandshakeError::Refused {
                        code,
                        detail: format!("{code:?}"),
                    };
                    let expect = self.conns[&c].req.expect.clone();
                    DialFailure::from_handshake(&refusal, expect.as_ref())
                }
            };
            self.fail_conn(c, Duration::ZERO, failure);
            return Stepped::Connection;
        }
        if self.blocked(a.node, d.node) {
            // The welcome is lost: the dialer times out, the acceptor keeps a lane its
            // keepalive will close.
            if let Some(conn) = self.conns.get_mut(&c) {
                conn.ends[DIALER].state = EndState::Gone;
            }
            let at = self.now + self.net.connect_timeout;
            self.schedule(
                at,
                Ev::DialFailed {
                    node: d.node,
                    inc: d.inc,
                    dial,
                    failure: DialFailure::TimedOut,
                },
            );
            return Stepped::Connection;
        }
        let now = self.now;
        let hello = {
            let conn = &self.conns[&c];
            self.hello_of(a.node, &conn.req)
        };
        let verdict = self.nodes[d.node as usize].engine.handle_dial_result(
            dial,
            DialResult::Established { conn: d.id, hello },
            now,
        );
        match verdict {
            Ok(()) => {
                let conn = self.conns.get_mut(&c).expect("conn exists");
                conn.ends[DIALER].state = EndState::Open;
                conn.ends[DIALER].last_rx = now;
            }
            Err(_) => {
                // The dialer drops it: the acceptor's end learns with a goodbye.
                let conn = self.conns.get_mut(&c).expect("conn exists");
                conn.ends[DIALER].state = EndState::Gone;
                if a.state == EndState::Open {
                    self.send_frame(c, DIALER, Message::Goodbye);
                }
            }
        }
        self.drain(d.node);
        self.reap(c);
        Stepped::Connection
    }

    pub(super) fn dial_failed(
        &mut self,
        node: NodeId,
        inc: u32,
        dial: DialId,
        f: DialFailure,
    ) -> Stepped {
        if !self.current(node, inc) {
            return Stepped::Other;
        }
        self.trace.mix(&[3, self.now.0, u64::from(node), dial.0]);
        let now = self.now;
        let _ =
            self.nodes[node as usize]
                .engine
                .handle_dial_result(dial, DialResult::Failed(f), now);
        self.drain(node);
        Stepped::Connection
    }

    /// Node `i` puts `msg` on its end `end`.
    pub(super) fn transmit(&mut self, i: NodeId, end: ConnId, msg: Message) {
        let open = self.ends.get(&end).and_then(|(c, side)| {
            let e = &self.conns.get(c)?.ends[*side];
            (e.state == EndState::Open).then_some((*c, *side))
        });
        let Some((c, side)) = open else {
            let inc = self.nodes[i as usize].incarnation;
            let now = self.now;
            self.schedule(
                now,
                Ev::TransmitFailed {
                    node: i,
                    inc,
                    end,
                    msg,
                },
            );
            return;
        };
        let mut msg = msg;
        if let Message::Control(ctl) = &msg {
            let to = self.conns[&c].ends[1 - side].node;
            let node = &mut self.nodes[i as usize];
            node.messages_sent += 1;
            if let (Some(log), Control::Overlay(m)) = (&mut self.log, ctl) {
                log.push(Sent {
                    at: self.now,
                    from: i,
                    to,
                    msg: m.clone(),
                });
            }
            if self.net.encode {
                // Across the wire as bytes: counted, and decoded as the receiver will.
                let (size, decoded) = self.round_trip(&msg);
                self.nodes[i as usize].bytes_sent += size;
                match decoded {
                    Some(d) => msg = d,
                    None => return,
                }
            }
            if self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss) {
                return;
            }
            if self.net.overlay_loss > 0.0
                && matches!(msg, Message::Control(Control::Overlay(_)))
                && self.rng.gen_bool(self.net.overlay_loss)
            {
                return;
            }
            if self.net.duplicate > 0.0 && self.rng.gen_bool(self.net.duplicate) {
                self.send_frame(c, side, msg.clone());
            }
        } else if self.net.encode && matches!(msg, Message::Ping(_)) {
            // Probes count as traffic too (the background figure includes liveness).
            let (size, _) = self.round_trip(&msg);
            self.nodes[i as usize].bytes_sent += size;
        }
        self.send_frame(c, side, msg);
    }

    /// Schedules `msg` from side `from` of connection `c` to the other side, in order; lost
    /// across a partition.
    pub(super) fn send_frame(&mut self, c: u64, from: usize, msg: Message) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let to = 1 - from;
        let (a, b) = (conn.ends[from].node, conn.ends[to].node);
        if self.blocked(a, b) {
            return;
        }
        let prev = conn.fifo[to];
        let at = (self.now + self.latency()).max(prev);
        self.conns.get_mut(&c).expect("conn exists").fifo[to] = at;
        self.schedule(at, Ev::Frame { conn: c, to, msg });
    }

    /// Encodes a control frame and decodes it back, as the wire would: its size on the wire
    /// and what the receiver gets (`None`, counted as a decode error, if that fails).
    pub(super) fn round_trip(&mut self, msg: &Message) -> (u64, Option<Message>) {
        let mut buf = BytesMut::new();
        if msg.encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).is_err() {
            self.decode_errors += 1;
            return (0, None);
        }
        let size = buf.len() as u64;
        let decoded = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
            .decode(&mut buf)
            .ok()
            .flatten()
            .and_then(|body| Message::decode(body).ok());
        if decoded.as_ref() != Some(msg) {
            self.decode_errors += 1;
            return (size, None);
        }
        (size, decoded)
    }

    pub(super) fn frame(&mut self, c: u64, to: usize, msg: Message) -> Stepped {
        let Some(conn) = self.conns.get(&c) else {
            return Stepped::Other;
        };
        let end = conn.ends[to].clone();
        let from = conn.ends[1 - to].node;
        let reads = matches!(end.state, EndState::Open | EndState::Closing);
        if !reads || !self.current(end.node, end.inc) {
            return Stepped::Other;
        }
        self.conns.get_mut(&c).expect("conn exists").ends[to].last_rx = self.now;
        let now = self.now;
        match msg {
            Message::Control(ctl) => {
                let code = control_code(&ctl);
                self.trace
                    .mix(&[4, now.0, u64::from(from), u64::from(end.node), code]);
                let node = &mut self.nodes[end.node as usize];
                node.engine
                    .handle_control(end.id, ctl, now, &mut node.processes);
                self.drain(end.node);
                Stepped::Message
            }
            Message::Ping(id) => {
                // A closing end's queue is closed: its reader cannot answer.
                if end.state == EndState::Open {
                    if self.net.encode {
                        let (size, _) = self.round_trip(&Message::Pong(id));
                        self.nodes[end.node as usize].bytes_sent += size;
                    }
                    self.send_frame(c, to, Message::Pong(id));
                }
                Stepped::Other
            }
            Message::Goodbye => {
                self.trace.mix(&[5, now.0, u64::from(end.node), end.id.0]);
                if let Some(conn) = self.conns.get_mut(&c) {
                    conn.goodbye_read[1 - to] = true;
                }
                self.down(c, to, true)
            }
            _ => Stepped::Other,
        }
    }

    /// Node `i` closes its end `end`.
    pub(super) fn close_end(&mut self, i: NodeId, end: ConnId, reason: CloseReason) {
        let Some(&(c, side)) = self.ends.get(&end) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if conn.ends[side].state != EndState::Open {
            return;
        }
        conn.ends[side].state = if reason.is_abrupt() {
            EndState::Broken
        } else {
            EndState::Closing
        };
        let other = conn.ends[1 - side].clone();
        if reason == CloseReason::Unwanted
            && side == ACCEPTOR
            && !self.nodes[i as usize].engine.is_shutting_down()
        {
            self.peer_lanes_closed += 1;
        }
        let far_open = matches!(other.state, EndState::Open | EndState::Closing);
        let reachable = far_open && !self.blocked(i, other.node) && !self.blocked(other.node, i);
        let now = self.now;
        if reason.is_abrupt() {
            self.schedule(now, Ev::Down { conn: c, side });
            if far_open && !self.blocked(i, other.node) {
                let at = now + self.latency();
                self.schedule(
                    at,
                    Ev::Down {
                        conn: c,
                        side: 1 - side,
                    },
                );
            }
            return;
        }
        // Flush and say goodbye; this end is done once the peer answers in kind, or after the
        // linger.
        if far_open {
            self.send_frame(c, side, Message::Goodbye);
        }
        let at = if reachable {
            now + self.latency() * 2
        } else {
            now + LINGER
        };
        self.schedule(at, Ev::Down { conn: c, side });
    }

    /// End `side` of connection `c` learns it is down.
    pub(super) fn end_down(&mut self, c: u64, side: usize) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        let end = conn.ends[side].clone();
        if matches!(end.state, EndState::Gone | EndState::Connecting) {
            return;
        }
        conn.ends[side].state = EndState::Gone;
        if self.current(end.node, end.inc) {
            let now = self.now;
            self.nodes[end.node as usize]
                .engine
                .handle_lane_down(end.id, end.clean, now);
            self.drain(end.node);
        }
        self.reap(c);
    }

    /// End `side` of connection `c` fails, or ends after the peer's goodbye (`goodbye`).
    pub(super) fn down(&mut self, c: u64, side: usize, goodbye: bool) -> Stepped {
        let Some(conn) = self.conns.get(&c) else {
            return Stepped::Other;
        };
        let end = conn.ends[side].clone();
        if matches!(end.state, EndState::Gone | EndState::Connecting) {
            return Stepped::Other;
        }
        self.trace
            .mix(&[6, self.now.0, u64::from(end.node), end.id.0]);
        // The end fails: frames handed to it from now on come back to its engine, which is
        // told a moment later (the runtime's reader reports through the driver's queue).
        // Clean: it read the peer's goodbye, or it was closing and the peer read its goodbye
        // (so everything it sent before).
        let conn = self.conns.get_mut(&c).expect("conn exists");
        let said_bye = conn.goodbye_read[side];
        let e = &mut conn.ends[side];
        e.clean = goodbye || (e.state == EndState::Closing && said_bye);
        e.state = EndState::Broken;
        let lo = self.net.notice_delay.as_micros() as u64;
        let at = self.now + Duration::from_micros(self.rng.gen_range(0..=lo));
        self.schedule(at, Ev::LaneDown { conn: c, side });
        Stepped::Connection
    }

    /// Forgets a connection both of whose ends are gone.
    pub(super) fn reap(&mut self, c: u64) {
        let done = self
            .conns
            .get(&c)
            .is_some_and(|conn| conn.ends.iter().all(|e| e.state == EndState::Gone));
        if !done {
            return;
        }
        if let Some(conn) = self.conns.remove(&c) {
            for e in &conn.ends {
                self.ends.remove(&e.id);
                if let Some(set) = self.by_node.get_mut(e.node as usize) {
                    set.remove(&c);
                }
            }
        }
    }
}

/// What a dial to an address nobody listens at fails with.
fn refused() -> DialFailure {
    DialFailure::Unreachable {
        kind: io::ErrorKind::ConnectionRefused,
        detail: "connection refused".into(),
    }
}
