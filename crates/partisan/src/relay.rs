//! Relayed messages: a client of the client-server overlay reaches another client through a
//! server it is connected to. The origin and the destination pid's creation travel in the
//! frame (the origin cannot check the creation itself); each hop keeps the channel and the
//! partition key, so per-key order holds end to end while the relay's lanes stay up.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use partisan_core::id::{NodeName, Pid, Ref};
use partisan_core::wire::{RelayHeader, RelayTarget, MAX_RELAY_HOPS};

use crate::connection::lane_queue::{FrameHead, PushError};
use crate::connection::ConnCtx;
use crate::error::SendError;
use crate::node::Shared;
use crate::process::registry::{Envelope, LocalTarget};
use crate::send::{Dest, SendOptions};

impl Shared {
    /// Sends through a relay when `dest`'s node is not connected; `NotConnected` when no relay
    /// is connected either.
    pub(crate) async fn send_relayed(
        &self,
        from: Option<u64>,
        dest: Dest<'_>,
        payload: Bytes,
        opts: &SendOptions,
        wait: bool,
    ) -> Result<(), SendError> {
        let node = dest.node().clone();
        let to = match dest {
            Dest::Pid(p) => RelayTarget::Pid {
                creation: p.creation,
                id: p.id,
            },
            Dest::Ref(r) => RelayTarget::Ref {
                creation: r.creation,
                id: r.id,
            },
            Dest::Name(n) => RelayTarget::Name(n.name.clone()),
        };
        let header = RelayHeader {
            origin: self.spec.name().clone(),
            origin_creation: self.creation,
            dest: node.clone(),
            to,
            from,
            partition_key: opts.partition_key,
            hops: 1,
        };
        let relays = self.membership.load().relays.clone();
        if relays.is_empty() {
            return Err(SendError::NotConnected(node));
        }
        // Spread destinations over the relays, stably per destination.
        let start = node.as_str().bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let channel = opts.channel.as_ref().unwrap_or(&self.default_channel);
        for i in 0..relays.len() {
            let relay = &relays[(start + i) % relays.len()];
            let Ok(route) = self.table.route(
                relay,
                channel,
                opts.partition_key,
                self.cfg.channel_fallback,
            ) else {
                continue;
            };
            let head = FrameHead::Relay(&header);
            let r = if wait {
                route.lane.queue.push(head, &payload).await
            } else {
                route.lane.queue.try_push(head, &payload)
            };
            return r.map_err(|e| match e {
                // The relay's lane closed: the destination is not reachable through it.
                PushError::Closed => SendError::NotConnected(node.clone()),
                other => other.into_send_error(relay),
            });
        }
        Err(SendError::NotConnected(node))
    }

    /// A relayed message read from a connection: deliver it here or pass it on.
    pub(crate) async fn on_relay(&self, ctx: &ConnCtx, header: RelayHeader, payload: Bytes) {
        // The origin is only as good as the hop that vouches for it: a first hop must come
        // from the origin itself (its run included); later hops only from a relay.
        let direct = header.origin == ctx.peer && header.origin_creation == ctx.peer_creation;
        if !(direct || (ctx.peer_relays && header.hops > 1)) {
            self.stats.node.overlay_rejected.fetch_add(1, Relaxed);
            tracing::warn!(
                peer = %ctx.peer,
                origin = %header.origin,
                hops = header.hops,
                "relayed message dropped: origin not vouched for by the sending peer"
            );
            return;
        }
        if &header.dest == self.spec.name() {
            return self.deliver_relayed(header, payload).await;
        }
        if header.hops >= MAX_RELAY_HOPS {
            self.stats.node.undeliverable.fetch_add(1, Relaxed);
            tracing::debug!(peer = %ctx.peer, dest = %header.dest, "relay hop limit reached");
            return;
        }
        let mut next = header;
        next.hops += 1;
        let dest: NodeName = next.dest.clone();
        let route = self.table.route(
            &dest,
            &ctx.channel,
            next.partition_key,
            self.cfg.channel_fallback,
        );
        let Ok(route) = route else {
            self.stats.node.undeliverable.fetch_add(1, Relaxed);
            tracing::debug!(peer = %ctx.peer, %dest, "cannot relay: destination not connected");
            return;
        };
        // Waiting here pushes back on the lane the message came in on.
        if let Err(e) = route
            .lane
            .queue
            .push(FrameHead::Relay(&next), &payload)
            .await
        {
            self.stats.node.undeliverable.fetch_add(1, Relaxed);
            tracing::debug!(%dest, error = ?e, "relay push failed");
        }
    }

    async fn deliver_relayed(&self, header: RelayHeader, payload: Bytes) {
        let stale = match &header.to {
            RelayTarget::Pid { creation, .. } | RelayTarget::Ref { creation, .. } => {
                *creation != self.creation
            }
            RelayTarget::Name(_) => false,
        };
        if stale {
            self.stats.node.stale_pid.fetch_add(1, Relaxed);
            tracing::debug!(origin = %header.origin, "relayed message for another run dropped");
            return;
        }
        let via = match &header.to {
            RelayTarget::Ref { id, .. } => Some(Ref {
                node: self.spec.name().clone(),
                creation: self.creation,
                id: *id,
            }),
            _ => None,
        };
        let env = Envelope {
            from: header.from.map(|id| Pid {
                node: header.origin.clone(),
                creation: header.origin_creation,
                id,
            }),
            via,
            payload: crate::connection::unpinned(payload),
            signal: None,
        };
        let target = match &header.to {
            RelayTarget::Pid { id, .. } => LocalTarget::Pid(*id),
            RelayTarget::Ref { id, .. } => LocalTarget::Ref(*id),
            RelayTarget::Name(n) => LocalTarget::Name(n),
        };
        if let Err(e) = self.deliver_local(target, env).await {
            tracing::debug!(origin = %header.origin, error = %e, "dropping undeliverable relayed message");
        }
    }
}
