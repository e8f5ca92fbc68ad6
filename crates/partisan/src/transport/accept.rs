//! Accepting connections: handshake, then admission by the driver.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use partisan_core::wire::handshake::RefuseCode;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::connection;
use crate::driver::DriverCmd;
use crate::node::Shared;
use crate::transport::handshake;
use crate::transport::{Listener, Stream};

/// Handshakes in progress at once; more inbound connections are closed at once, so
/// unauthenticated peers cannot pile up tasks and buffers.
const MAX_PENDING_HANDSHAKES: usize = 256;

pub(crate) async fn accept_loop(shared: Arc<Shared>, mut listener: Box<dyn Listener>) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown_conns.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, from) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%from, "too many handshakes in progress; closing");
            continue;
        };
        shared
            .tasks
            .spawn(inbound(shared.clone(), stream, from, permit));
    }
}

async fn inbound(
    shared: Arc<Shared>,
    mut stream: Stream,
    from: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let accepted = tokio::select! {
        _ = shared.shutdown_conns.cancelled() => {
            // Stopping mid-handshake: the dialer hears why (a refusal it takes for a race)
            // instead of a connection dropped under it.
            handshake::send_refusal(&mut stream, RefuseCode::ShuttingDown, "shutting down").await;
            return;
        }
        r = handshake::accept(&shared, &mut stream, shared.cfg.handshake_timeout) => r,
    };
    drop(permit);
    let (peer, welcome, leftover) = match accepted {
        Ok(x) => x,
        Err(e) => {
            e.count(&shared.stats);
            if e.is_refusal() {
                tracing::warn!(%from, reason = %e, "refused inbound connection");
            } else {
                tracing::debug!(%from, reason = %e, "inbound handshake failed");
            }
            return;
        }
    };
    let (tx, rx) = oneshot::channel();
    let conn = shared.next_conn_id();
    let cmd = DriverCmd::Admit {
        conn,
        peer: peer.clone(),
        welcome,
        reply: tx,
    };
    if shared.driver.send(cmd).await.is_err() {
        handshake::send_refusal(&mut stream, RefuseCode::ShuttingDown, "shutting down").await;
        return;
    }
    match rx.await {
        Ok(Ok(ctx)) => connection::run(ctx, stream, leftover),
        Ok(Err(code)) => {
            let counter = match code {
                RefuseCode::Simultaneous | RefuseCode::ShuttingDown => {
                    &shared.stats.node.handshakes_raced
                }
                _ => &shared.stats.node.handshakes_refused,
            };
            counter.fetch_add(1, Relaxed);
            if code == RefuseCode::Simultaneous {
                tracing::debug!(%from, peer = %peer.spec().name(), "refusing the losing side of a simultaneous dial");
            } else {
                tracing::info!(%from, peer = %peer.spec().name(), ?code, "refused inbound connection");
            }
            handshake::send_refusal(&mut stream, code, &format!("{code:?}")).await;
        }
        Err(_) => {
            handshake::send_refusal(&mut stream, RefuseCode::ShuttingDown, "shutting down").await
        }
    }
}
