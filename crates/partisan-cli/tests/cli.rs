//! The `partisan` binary: demo output, node processes, signals, bad flags.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::stderr_lines;

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

fn demo_json(overlay: &str, nodes: &str) -> serde_json::Value {
    let out = bin()
        .args([
            "demo",
            "--json",
            "--overlay",
            overlay,
            "--nodes",
            nodes,
            "--messages",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn demo_hyparview_and_full_mesh_sixteen_nodes_are_connected_and_symmetric() {
    let v = demo_json("hyparview", "16");
    assert_eq!(v["overlay"], "hyparview");
    assert_eq!(v["connected"], true);
    assert_eq!(v["symmetric"], true);
    let (min, max) = (
        v["members_min"].as_u64().unwrap(),
        v["members_max"].as_u64().unwrap(),
    );
    // Self plus an active view of at least one and at most 6 (the default maximum).
    assert!(min >= 2 && max <= 7 && min <= max, "{min}..{max}");
    assert_eq!(v["messages_sent"], v["messages_delivered"]);
    // Lanes of temporary connections (joins, shuffles) are counted apart from the overlay's.
    assert_eq!(v["lanes_up"], v["lanes_expected"], "{v}");
    assert!(v["transient_lanes"].is_u64(), "{v}");
    let v = demo_json("full-mesh", "16");
    assert_eq!(v["members_min"], 16);
    assert_eq!(v["members_max"], 16);
    assert_eq!(v["connected"], true);
    assert_eq!(v["symmetric"], true);
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
    let a_lines = stderr_lines(&mut a);
    wait_line(&a_lines, "rng seed");
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
    let b_lines = stderr_lines(&mut b);
    wait_line(&b_lines, "connected");
    wait_line(&a_lines, "peer up");
    assert!(sigterm_and_wait(&mut b).success());
    wait_line(&b_lines, "node stopped");
    assert!(sigterm_and_wait(&mut a).success());
}

/// A plain HTTP GET on loopback.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn hyparview_nodes_join_and_serve_their_status_over_http() {
    let mut a = bin()
        .args([
            "node",
            "--name",
            "hv_a@127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            "k",
            "--overlay",
            "hyparview",
            "--admin",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a_lines = stderr_lines(&mut a);
    let l = wait_line(&a_lines, "listening on");
    let addr = l.rsplit(' ').next().unwrap().to_string();
    // The admin endpoint binds port 0 too and prints the address it got.
    let admin_line = wait_line(&a_lines, "admin endpoint:");
    let admin = admin_line
        .rsplit("http://")
        .next()
        .and_then(|s| s.strip_suffix("/status"))
        .unwrap()
        .to_string();
    let mut b = bin()
        .args([
            "node",
            "--name",
            "hv_b@127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            "k",
            "--overlay",
            "hyparview",
            "--join",
            &addr,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b_lines = stderr_lines(&mut b);
    wait_line(&b_lines, "NodeUp");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let resp = http_get(&admin, "/status");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["active"].as_array().is_some_and(|a| a.len() == 1) {
            break v;
        }
        assert!(Instant::now() < deadline, "b never became active at a: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["name"], "hv_a@127.0.0.1");
    assert_eq!(status["overlay"], "hyparview");
    assert_eq!(status["active"][0], "hv_b@127.0.0.1");
    assert!(status["passive"].is_array());
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    assert!(status["connections"]["hv_b@127.0.0.1"]["membership"].as_u64() >= Some(1));
    // b is an overlay neighbour, not a temporary connection.
    assert_eq!(status["transient"], serde_json::json!([]), "{status}");
    let pretty = http_get(&admin, "/status?pretty");
    assert!(
        pretty.contains("\n  \"name\": \"hv_a@127.0.0.1\""),
        "{pretty}"
    );
    assert!(status["stats"]["connections_opened"].as_u64() >= Some(1));
    assert_eq!(status["stats"]["peers_known"], 1);
    assert!(http_get(&admin, "/nope").starts_with("HTTP/1.1 404"));
    // SIGTERM on b: it leaves gracefully, a learns at once and drops it from its views.
    assert!(sigterm_and_wait(&mut b).success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http_get(&admin, "/status");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["active"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "a kept b after it left: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    // Named as typed: the flag and its value, with the field at fault.
    assert!(err.contains("--channel v:0 (parallelism)"), "{err}");

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
    // The flag overrides the file's value, and the error names the flag as typed.
    assert!(err.contains("--parallelism 300: 300 is outside"), "{err}");
    // A creation file that does not hold a creation stops the node with a message naming it.
    let creation = dir.join("creation");
    std::fs::write(&creation, "garbage").unwrap();
    let out = bin()
        .args([
            "node",
            "--name",
            "x@127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--cookie",
            "c",
            "--creation-file",
            creation.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("creation_file") && err.contains("creation number"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn sim_json(args: &[&str]) -> serde_json::Value {
    let out = bin().arg("sim").args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("seed"), "the seed is printed first: {err}");
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn sim_hyparview_reports_rounds_and_the_same_seed_gives_the_same_trace() {
    let args = [
        "hyparview",
        "--nodes",
        "300",
        "--crash",
        "0.5",
        "--seed",
        "7",
        "--rounds",
        "3",
    ];
    let v = sim_json(&args);
    assert_eq!(v["seed"], 7);
    assert_eq!(v["nodes"], 300);
    assert_eq!(v["crash"], 0.5);
    assert!(v["wall_secs"].as_f64().unwrap() > 0.0);
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 4);
    for r in rounds {
        let rel = r["flood_reliability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rel));
        assert!(r["largest_component"].as_u64().unwrap() <= 150);
    }
    assert!(v.get("rounds_to_full").is_some());
    assert!(v["symmetric"].is_boolean());
    let again = sim_json(&args);
    assert_eq!(v["trace_hash"], again["trace_hash"]);
}

#[test]
fn sim_full_mesh_and_swarm_report_their_fields() {
    let v = sim_json(&["full-mesh", "--nodes", "40", "--seed", "3"]);
    assert_eq!(v["nodes"], 40);
    assert!(v["convergence_ms"].as_u64().is_some());
    assert!(v["bytes_per_node_per_sec"].as_f64().unwrap() > 0.0);
    let v = sim_json(&["swarm", "--seeds", "8", "--first", "11"]);
    assert_eq!(v["seeds"], 8);
    assert_eq!(v["failures"], 0, "{v}");
    assert_eq!(v["failing"].as_array().unwrap().len(), 0);
    for by in ["overlays", "families"] {
        let per: u64 = v[by]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(per, 8, "every scenario is counted in {by}: {v}");
    }
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 8);
}

#[test]
fn sim_plot_writes_an_svg() {
    let dir = std::env::temp_dir().join(format!("partisan-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fig.svg");
    let out = bin()
        .args([
            "sim",
            "hyparview",
            "--nodes",
            "100",
            "--rounds",
            "2",
            "--fractions",
            "0.3",
        ])
        .arg("--plot")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_admin_port_stops_the_node_before_it_starts_and_says_so_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut child = bin()
        .args([
            "node",
            "--name",
            "x@127.0.0.1",
            "--cookie",
            "cookie-for-a-test",
        ])
        .args(["--admin", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node kept running with its admin port taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(&format!("--admin {addr}: cannot listen")),
        "{err}"
    );
    assert_eq!(
        err.matches("os error").count(),
        1,
        "the OS error once: {err}"
    );
    assert!(
        !err.contains("listening on"),
        "found before the node started: {err}"
    );
    // A busy listen address: the node's error, with the OS error once.
    let out = bin()
        .args([
            "node",
            "--name",
            "x@127.0.0.1",
            "--cookie",
            "cookie-for-a-test",
        ])
        .args(["--listen", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("cannot listen on {addr}: ")), "{err}");
    assert_eq!(
        err.matches("os error").count(),
        1,
        "the OS error once: {err}"
    );
    drop(busy);
}
