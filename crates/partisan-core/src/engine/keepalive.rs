//! Keepalive and failure detection: a lane silent for `idle` is probed every `timeout` and
//! closed after `max_attempts` unanswered probes. The transport answers probes and records
//! when each lane last received anything; the engine only reads that ([`LaneActivity`]).

use crate::connection_plan::{CloseReason, ConnId};
use crate::time::Instant;
use crate::wire::Message;

use super::{Engine, Event, LaneActivity, Output, TimerKey};

impl Engine {
    pub(super) fn keepalive_check(
        &mut self,
        conn: ConnId,
        now: Instant,
        activity: &dyn LaneActivity,
    ) {
        let Some(ka) = self.cfg.keepalive else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(conn) else {
            return;
        };
        if !lane.is_open() {
            return;
        }
        let last = activity
            .last_received(conn)
            .unwrap_or(lane.opened)
            .max(lane.opened);
        if lane.probes > 0 && last > lane.last_probe {
            // Answered (or any traffic since the probe).
            lane.probes = 0;
        }
        if lane.probes == 0 {
            let due = last + ka.idle;
            if now < due {
                self.timers.arm(TimerKey::Keepalive(conn), due);
                return;
            }
        } else {
            let due = lane.last_probe + ka.timeout;
            if now < due {
                self.timers.arm(TimerKey::Keepalive(conn), due);
                return;
            }
            if lane.probes >= ka.max_attempts {
                let node = lane.peer.clone();
                self.stats.keepalive_timeouts += 1;
                self.events
                    .push_back(Event::KeepaliveTimeout { conn, node });
                self.close(conn, CloseReason::KeepaliveTimeout);
                return;
            }
        }
        lane.probes += 1;
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
