//! Broadcast from the shell: `partisan demo --broadcasts` and the replicated map served by
//! `partisan node --admin`.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::NodeProc;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_partisan"));
    c.env_remove("RUST_LOG");
    c
}

fn demo(overlay: &str) -> serde_json::Value {
    let out = bin()
        .args([
            "demo",
            "--overlay",
            overlay,
            "--nodes",
            "16",
            "--broadcasts",
            "200",
            "--messages",
            "1",
            "--json",
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
fn demo_broadcasts_reach_every_node_on_hyparview_and_full_mesh() {
    for overlay in ["hyparview", "full-mesh"] {
        let v = demo(overlay);
        assert_eq!(v["broadcasts_sent"], 200, "{v}");
        assert_eq!(v["broadcast_reliability"], 1.0, "{v}");
        assert_eq!(v["broadcast_reliability_min"], 1.0, "{v}");
        // Every delivery but the root's takes at least one copy.
        let rmr = v["broadcast_rmr"].as_f64().expect("rmr is a number");
        assert!(rmr >= 0.0, "{v}");
    }
    let out = bin()
        .args([
            "demo",
            "--nodes",
            "3",
            "--messages",
            "1",
            "--broadcasts",
            "20",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20 Plumtree broadcasts"), "{text}");
    assert!(text.contains("reliability 1.000"), "{text}");
}

fn node(name: &str, extra: &[&str]) -> NodeProc {
    let args = [&["--admin", "127.0.0.1:0"][..], extra].concat();
    NodeProc::start(name, "kv", &args)
}

impl NodeProc {
    /// (listen address, admin address)
    fn addrs(&self) -> (String, String) {
        let l = self.wait_line("listening on");
        let listen = l.rsplit(' ').next().unwrap().to_string();
        let a = self.wait_line("admin endpoint:");
        let admin = a
            .rsplit("http://")
            .next()
            .and_then(|s| s.strip_suffix("/status"))
            .unwrap()
            .to_string();
        (listen, admin)
    }
}

/// One HTTP request; returns (status code, body).
fn http(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    // An interim `100 Continue` comes first when asked for.
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    if out.starts_with(interim) {
        out.drain(..interim.len());
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, out[end + 4..].to_vec())
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

/// Polls `cond` every 50 ms for 30 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn node_admin_serves_the_replicated_map() {
    let a = node("kv_a@127.0.0.1", &[]);
    let (a_listen, a_admin) = a.addrs();
    let b = node("kv_b@127.0.0.1", &["--join", &a_listen]);
    let (_, b_admin) = b.addrs();
    eventually("b to be a broadcast member at a", || {
        let (_, body) = http(&a_admin, "GET", "/status", "", b"");
        json(&body)["broadcast_members"] == serde_json::json!(["kv_b@127.0.0.1"])
    });

    // A write on a is read on b.
    assert_eq!(http(&a_admin, "PUT", "/kv/greeting", "", b"hello").0, 204);
    assert_eq!(
        http(&a_admin, "GET", "/kv/greeting", "", b""),
        (200, b"hello".to_vec())
    );
    eventually("the write to reach b", || {
        http(&b_admin, "GET", "/kv/greeting", "", b"") == (200, b"hello".to_vec())
    });
    // Keys are percent-decoded; values are any bytes.
    assert_eq!(
        http(&b_admin, "PUT", "/kv/caf%C3%A9%20bin", "", &[0xff, 0x00]).0,
        204
    );
    eventually("the binary write to reach a", || {
        let (code, body) = http(&a_admin, "GET", "/kv", "", b"");
        code == 200
            && json(&body)
                == serde_json::json!({"café bin": {"base64": "/wA="}, "greeting": "hello"})
    });
    // Delete on b: gone on a.
    assert_eq!(http(&b_admin, "DELETE", "/kv/greeting", "", b"").0, 204);
    eventually("the delete to reach a", || {
        http(&a_admin, "GET", "/kv/greeting", "", b"").0 == 404
    });
    let (code, body) = http(&a_admin, "GET", "/kv/greeting", "", b"");
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (404, Some("no such key"))
    );

    // Bad requests.
    let long = format!("/kv/{}", "k".repeat(1025));
    let (code, body) = http(&a_admin, "PUT", &long, "", b"x");
    assert_eq!(code, 400);
    assert!(json(&body)["error"].as_str().unwrap().contains("1024"));
    assert_eq!(http(&a_admin, "GET", "/kv/bad%zz", "", b"").0, 400);
    assert_eq!(http(&a_admin, "POST", "/kv/x", "", b"").0, 405);
    assert_eq!(http(&a_admin, "PUT", "/kv", "", b"").0, 405);
    assert_eq!(http(&a_admin, "GET", "/nope", "", b"").0, 404);
    // A body over 1 MiB is refused from its head; chunked bodies are not taken.
    {
        let mut s = std::net::TcpStream::connect(&a_admin).unwrap();
        write!(
            s,
            "PUT /kv/big HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
            (1 << 20) + 1
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    }
    {
        let mut s = std::net::TcpStream::connect(&a_admin).unwrap();
        write!(
            s,
            "PUT /kv/c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 411"), "{out}");
    }
    // A 1 MiB value with `Expect: 100-continue` goes through.
    let big = vec![b'v'; 1 << 20];
    let (code, _) = http(&a_admin, "PUT", "/kv/big", "expect: 100-continue\r\n", &big);
    assert_eq!(code, 204);
    eventually("the big value to reach b", || {
        http(&b_admin, "GET", "/kv/big", "", b"").1.len() == 1 << 20
    });

    // The status carries the map's broadcast counters.
    let (_, body) = http(&b_admin, "GET", "/status", "", b"");
    let s = json(&body);
    assert!(
        s["stats"]["broadcast"]["kv"]["delivered"].as_u64() >= Some(4),
        "{s}"
    );
    assert_eq!(
        s["broadcast_members"],
        serde_json::json!(["kv_a@127.0.0.1"])
    );
}
