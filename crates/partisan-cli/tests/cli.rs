//! The `partisan` binary: demo output, node processes, signals, bad flags.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_partisan"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn demo_json_reports_a_fully_connected_cluster_that_delivered_everything() {
    let out = bin()
        .args(["demo", "--json", "--nodes", "3", "--messages", "50"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["messages_sent"], v["messages_delivered"]);
    // 3 channels sent on (default, data, gossip) x 2 peers x 3 nodes x 50.
    assert_eq!(v["messages_sent"], 900);
    assert_eq!(v["channels"]["data"], 4);
    assert_eq!(v["lanes_up"], v["lanes_expected"]);
    assert_eq!(v["lanes_up"], 3 * 2 * (4 + 2 + 1 + 1));
    assert_eq!(v["fully_connected"], true);
}

/// Reads a child's stderr lines on a thread.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
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

fn wait_line(rx: &mpsc::Receiver<String>, pat: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(pat) => return l,
            Ok(_) => {}
            Err(_) => panic!("no line containing {pat:?}"),
        }
    }
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_node_processes_connect_and_stop_cleanly_on_sigterm() {
    let mut a = bin()
        .args([
            "node",
            "--name",
            "cli_a@127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            "k",
            "--channel",
            "data:2",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a_lines = lines(&mut a);
    let l = wait_line(&a_lines, "listening on");
    let addr = l.rsplit(' ').next().unwrap().to_string();
    let mut b = bin()
        .args([
            "node",
            "--name",
            "cli_b@127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            "k",
            "--channel",
            "data:2",
            "--connect",
            &addr,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b_lines = lines(&mut b);
    wait_line(&b_lines, "connected");
    wait_line(&a_lines, "peer up");
    assert!(sigterm_and_wait(&mut b).success());
    wait_line(&b_lines, "node stopped");
    assert!(sigterm_and_wait(&mut a).success());
}

#[test]
fn bad_flags_and_config_keys_exit_with_a_message_naming_them() {
    let out = bin()
        .args([
            "node",
            "--name",
            "x@127.0.0.1",
            "--cookie",
            "c",
            "--channel",
            "v:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("channels.v.parallelism"), "{err}");

    let dir = std::env::temp_dir().join(format!("partisan-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "name = \"x@127.0.0.1\"\ncookie = \"c\"\nparalelism = 2\n",
    )
    .unwrap();
    let out = bin()
        .args(["node", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paralelism"), "{err}");
    // Flags override the file.
    std::fs::write(
        &file,
        "name = \"x@127.0.0.1\"\ncookie = \"c\"\nparallelism = 0\n",
    )
    .unwrap();
    let out = bin()
        .args([
            "node",
            "--config",
            file.to_str().unwrap(),
            "--parallelism",
            "300",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`parallelism`") && err.contains("300"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
