//! Asking a peer whether one of its processes is alive.

use partisan_core::id::Pid;
use tokio::sync::oneshot;

use crate::driver::DriverCmd;
use crate::error::SendError;
use crate::node::Shared;

/// Asks `pid`'s node whether it is alive (through the engine).
pub(crate) async fn ask(shared: &Shared, pid: &Pid) -> Result<bool, SendError> {
    let (tx, rx) = oneshot::channel();
    shared
        .driver
        .send(DriverCmd::IsAlive {
            pid: pid.clone(),
            reply: tx,
        })
        .await
        .map_err(|_| SendError::Closed)?;
    match rx.await {
        Ok(Some(alive)) => Ok(alive),
        Ok(None) => Err(SendError::NotConnected(pid.node.clone())),
        Err(_) => Err(SendError::Closed),
    }
}
