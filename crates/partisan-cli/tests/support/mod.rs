//! `partisan node` child processes for the integration tests that need real OS processes.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a child gets to print a line it is waited for.
pub const LINE_WAIT: Duration = Duration::from_secs(30);

/// Reads a child's stderr lines on a thread (the child must have been spawned with a piped
/// stderr).
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// A started `partisan node` and its stderr lines; resumed (if stopped) and killed on drop.
pub struct NodeProc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProc {
    /// `partisan node --name NAME --listen 127.0.0.1:0 --cookie COOKIE EXTRA...`.
    pub fn start(name: &str, cookie: &str, extra: &[&str]) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_partisan"))
            .env_remove("RUST_LOG")
            .args([
                "node",
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
                "--cookie",
                cookie,
            ])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stderr_lines(&mut child);
        NodeProc { child, lines }
    }

    /// The next stderr line containing `pat`; fails after [`LINE_WAIT`].
    pub fn wait_line(&self, pat: &str) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(pat) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line containing {pat:?}"),
            }
        }
    }

    /// The address the node printed it listens on.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        let l = self.wait_line("listening on");
        l.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Sends `sig` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{sig} failed");
    }
}
