//! Smoke runs of every `partisan bench` workload: short, small payloads, and assertions only
//! that results come out and are sane (never on timing).

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_partisan"))
        .env_remove("RUST_LOG")
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "partisan bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}

fn positive(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(num(v, f) > 0.0, "{f} is not positive in {v}");
    }
}

fn ordered(v: &Value, fields: &[&str]) {
    for w in fields.windows(2) {
        assert!(num(v, w[0]) <= num(v, w[1]), "{} > {} in {v}", w[0], w[1]);
    }
}

#[test]
fn oneway_counts_messages_at_the_receiver_with_the_sender_held_back_by_the_queue_bound() {
    let lines = bench(&[
        "oneway",
        "--json",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--payload",
        "64,1K",
        "--senders",
        "2",
        "--channel",
        "data:2",
        "--queue-bytes",
        "65536",
    ]);
    assert_eq!(lines.len(), 2, "one line per payload");
    for (v, payload) in lines.iter().zip([64, 1024]) {
        assert_eq!(v["system"], "partisan");
        assert_eq!(v["bench"], "oneway");
        assert_eq!(v["channel"], "data");
        assert_eq!(v["parallelism"], 2);
        assert_eq!(v["payload"], payload);
        positive(v, &["messages", "msgs_per_sec", "mb_per_sec"]);
        // Two lanes, each bounded at 64 KiB (one message may overshoot an empty queue).
        assert!(
            num(v, "max_queued_bytes") <= 2.0 * (65536.0 + payload as f64 + 64.0),
            "{v}"
        );
    }
}

#[test]
fn echo_reports_rates_and_ordered_latency_quantiles() {
    let lines = bench(&[
        "echo",
        "--json",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--payload",
        "64",
        "--callers",
        "1,8",
        "--parallelism",
        "2",
    ]);
    assert_eq!(lines.len(), 2, "one line per callers value");
    for (v, callers) in lines.iter().zip([1, 8]) {
        assert_eq!(v["bench"], "echo");
        assert_eq!(v["callers"], callers);
        assert_eq!(v["parallelism"], 2);
        positive(
            v,
            &[
                "ops",
                "ops_per_sec",
                "mb_per_sec",
                "p50_us",
                "p99_us",
                "p999_us",
            ],
        );
        ordered(v, &["p50_us", "p99_us", "p999_us", "max_us"]);
    }
}

#[test]
fn hol_reports_idle_and_loaded_probe_latency_and_the_stream_rate() {
    let lines = bench(&[
        "hol",
        "--json",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--stream-payload",
        "64K",
        "--stream-rate",
        "20",
        "--threads",
        "2",
    ]);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(v["bench"], "hol");
    assert_eq!(v["same_channel"], false);
    assert_eq!(v["stream_rate"], 20.0);
    positive(
        v,
        &[
            "idle_p50_us",
            "idle_p99_us",
            "loaded_p50_us",
            "loaded_p99_us",
            "loaded_p999_us",
            "stream_mb_per_sec",
            "idle_probes",
            "loaded_probes",
        ],
    );
    ordered(v, &["idle_p50_us", "idle_p99_us"]);
    ordered(v, &["loaded_p50_us", "loaded_p99_us", "loaded_p999_us"]);
}

#[test]
fn hol_on_the_same_channel_and_table_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_partisan"))
        .env_remove("RUST_LOG")
        .args([
            "bench",
            "hol",
            "--same-channel",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--stream-payload",
            "64K",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "title, header and one row: {text}");
    assert!(lines[1].contains("loaded p99"), "{text}");
    assert!(lines[2].trim_start().starts_with("same"), "{text}");
}
