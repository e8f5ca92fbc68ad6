//! Keepalive and failure detection: a lane silent for `idle` (less up to a quarter, at random,
//! so both ends rarely probe at once) is probed every `timeout` and closed after
//! `max_attempts` unanswered probes. The transport answers probes and records
//! when each lane last received anything; the engine only reads that ([`LaneActivity`]).

use crate::connection_plan::{CloseReason, ConnId};
use crate::time::Instant;
use crate::wire::Message;

use super::{Engine, Event, Lane, LaneActivity, Output, TimerKey};

/// When lane `conn` last received anything (its opening counts as hearing from the peer).
pub(super) fn last_heard(conn: ConnId, lane: &Lane, activity: &dyn LaneActivity) -> Instant {
    activity
        .last_received(conn)
        .unwrap_or(lane.opened)
        .max(lane.opened)
}

impl Engine {
    /// A keepalive check of `conn` came due: probe it if it has been silent long enough, close
    /// it if too many probes went unanswered, else check again later.
    pub(super) fn keepalive_check(
        &mut self,
        conn: ConnId,
        now: Instant,
        activity: &dyn LaneActivity,
    ) {
        let Some(ka) = self.cfg.keepalive else {
            return;
        };
        let Some(lane) = self.lanes.get(conn) else {
            return;
        };
        if !lane.is_open() {
            return;
        }
        let last = last_heard(conn, lane, activity);
        // Anything received at or after the probe answers it (a probe goes out only once the
        // lane has been silent for a while, so nothing received at its very instant predates
        // it in practice; a paused test clock delivers the answer at that same instant).
        let answered = lane.probes > 0 && last >= lane.last_probe;
        let probes = if answered { 0 } else { lane.probes };
        if probes == 0 {
            // Silent for less than the shortest idle period drawn: look again when it would be.
            let shortest = last + (ka.idle - ka.idle / 4);
            if now < shortest {
                let due = self.idle_deadline(last, ka);
                self.timers.arm(TimerKey::Keepalive(conn), due);
                if let Some(lane) = self.lanes.get_mut(conn) {
                    lane.probes = 0;
                }
                return;
            }
        } else {
            let due = lane.last_probe + ka.timeout;
            if now < due {
                self.timers.arm(TimerKey::Keepalive(conn), due);
                return;
            }
            if probes >= ka.max_attempts {
                let node = lane.peer.clone();
                self.stats.keepalive_timeouts += 1;
                self.events
                    .push_back(Event::KeepaliveTimeout { conn, node });
                self.close(conn, CloseReason::KeepaliveTimeout);
                return;
            }
        }
        let Some(lane) = self.lanes.get_mut(conn) else {
            return;
        };
        lane.probes = probes + 1;
        lane.last_probe = now;
        let id = u64::from(lane.probes);
        self.stats.probes_sent += 1;
        self.outputs.push_back(Output::Transmit {
            conn,
            msg: Message::Ping(id),
        });
        self.timers.arm(TimerKey::Keepalive(conn), now + ka.timeout);
    }
}
