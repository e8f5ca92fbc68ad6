//! Smoke run of `partisan bench rpc`: short, and assertions only that results come out and
//! are sane (never on timing).

use std::process::Command;

use serde_json::Value;

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}

#[test]
fn rpc_reports_call_rates_and_ordered_latency_quantiles_per_callers_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_partisan"))
        .env_remove("RUST_LOG")
        .args([
            "bench",
            "rpc",
            "--json",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--payload",
            "64",
            "--callers",
            "1,8",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "partisan bench rpc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 2, "one line per callers value");
    for (v, callers) in lines.iter().zip([1, 8]) {
        assert_eq!(v["system"], "partisan");
        assert_eq!(v["bench"], "rpc");
        assert_eq!(v["channel"], "default");
        assert_eq!(v["payload"], 64);
        assert_eq!(v["callers"], callers);
        for f in ["ops", "ops_per_sec", "p50_us", "p99_us", "p999_us"] {
            assert!(num(v, f) > 0.0, "{f} is not positive in {v}");
        }
        for w in ["p50_us", "p99_us", "p999_us", "max_us"].windows(2) {
            assert!(num(v, w[0]) <= num(v, w[1]), "{} > {} in {v}", w[0], w[1]);
        }
    }
}

#[test]
fn rpc_refuses_another_channel() {
    let out = Command::new(env!("CARGO_BIN_EXE_partisan"))
        .env_remove("RUST_LOG")
        .args(["bench", "rpc", "--channel", "data:2", "--duration", "100ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--parallelism"), "{err}");
}
