//! Starting the peer process (`partisan bench-peer`, the current executable run again) and
//! stopping it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::NetArgs;

/// How long the peer gets to print its address, and to exit once told to.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// A running peer process. Dropping it kills the process if it is still running.
pub struct PeerChild {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where the peer node listens.
    pub addr: SocketAddr,
}

impl PeerChild {
    /// Starts the peer and waits for its address.
    pub fn spawn(cookie: &str, net: &NetArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the partisan executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("bench-peer").arg("--cookie").arg(cookie);
        net.push_args(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting the peer process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("peer stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the peer never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(PEER_TIMEOUT) {
            Ok(Some(Ok(l))) => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the peer process did not report its address");
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("peer said {line:?}"))?;
        let addr = v["listen"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("peer said {line:?}"))?;
        Ok(PeerChild { child, stdin, addr })
    }

    /// Tells the peer to stop (closes its standard input) and waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + PEER_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the peer process exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the peer process did not exit when told to");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PeerChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
