#!/usr/bin/env python3
"""Prints the figures of bench/compare.sh and the ratios against issue 5's targets (markdown).

Usage: bench/ratios.py RESULTS.jsonl [--load START END]
"""
import json
import sys


def load(path):
    rows = {}
    for line in open(path):
        line = line.strip()
        if line:
            r = json.loads(line)
            rows.setdefault((r["case"], r["system"]), []).append(r)
    return rows


def fmt(v, unit=""):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M{unit}"
    if v >= 1e4:
        return f"{v / 1e3:.0f} k{unit}"
    if v >= 100:
        return f"{v:.0f}{unit}"
    return f"{v:.1f}{unit}"


def main():
    args = sys.argv[1:]
    rows = load(args[0])
    load_avg = args[args.index("--load") + 1:][:2] if "--load" in args else None

    def one(case, system, i=0):
        return rows[(case, system)][i]

    print("| workload | metric | partisan | Distributed Erlang |")
    print("| --- | --- | ---: | ---: |")
    figures = [
        ("one-way 64 B, 1 sender", "oneway_64", [("msgs/s", "msgs_per_sec", ""), ("MB/s", "mb_per_sec", "")]),
        ("echo 64 B, 1 caller, pinned to 1 vCPU", "echo_64_x1_pinned",
         [("p50 us", "p50_us", ""), ("p99 us", "p99_us", ""), ("p99.9 us", "p999_us", ""), ("ops/s", "ops_per_sec", "")]),
        ("echo 64 B, 64 callers", "echo_64_x64", [("ops/s", "ops_per_sec", ""), ("p50 us", "p50_us", ""), ("p99 us", "p99_us", "")]),
        ("echo 64 KiB, 8 callers", "echo_64k_x8", [("MB/s each way", "mb_per_sec", ""), ("ops/s", "ops_per_sec", ""), ("p99 us", "p99_us", "")]),
        ("hol: 1 MiB stream as fast as allowed", "hol_max",
         [("probe p99 idle us", "idle_p99_us", ""), ("probe p50 loaded us", "loaded_p50_us", ""),
          ("probe p99 loaded us", "loaded_p99_us", ""), ("stream MB/s", "stream_mb_per_sec", "")]),
        ("hol: 1 MiB stream paced at 500 MB/s", "hol_paced",
         [("probe p99 idle us", "idle_p99_us", ""), ("probe p50 loaded us", "loaded_p50_us", ""),
          ("probe p99 loaded us", "loaded_p99_us", ""), ("stream MB/s", "stream_mb_per_sec", "")]),
    ]
    for title, case, metrics in figures:
        for name, field, unit in metrics:
            pv = one(case, "partisan")[field]
            ev = one(case, "disterl")[field]
            print(f"| {title} | {name} | {fmt(pv, unit)} | {fmt(ev, unit)} |")

    print()
    print("| target | partisan / Erlang | target | met |")
    print("| --- | ---: | ---: | :---: |")
    targets = []

    def ratio(title, case, field, op, bound):
        r = one(case, "partisan")[field] / one(case, "disterl")[field]
        targets.append((title, r, op, bound))

    ratio("one-way 64 B msgs/s", "oneway_64", "msgs_per_sec", ">=", 4.0)
    ratio("echo 64 B x1 pinned, p50", "echo_64_x1_pinned", "p50_us", "<=", 0.8)
    ratio("echo 64 B x64, ops/s", "echo_64_x64", "ops_per_sec", ">=", 4.0)
    ratio("echo 64 KiB x8, MB/s", "echo_64k_x8", "mb_per_sec", ">=", 1.3)
    ratio("hol, stream on its own channel: probe p99 vs Erlang's under its stream",
          "hol_max", "loaded_p99_us", "<=", 0.2)
    for title, r, op, bound in targets:
        met = r >= bound if op == ">=" else r <= bound
        print(f"| {title} | {r:.2f}x | {op} {bound}x | {'yes' if met else 'NO'} |")
    paced = one("hol_paced", "partisan")
    r = paced["loaded_p99_us"] / paced["idle_p99_us"]
    er = one("hol_paced", "disterl")
    print(f"| hol, stream paced at 500 MB/s: partisan probe p99 loaded / idle "
          f"(Erlang: {er['loaded_p99_us'] / er['idle_p99_us']:.1f}x) | {r:.2f}x | <= 3x | "
          f"{'yes' if r <= 3 else 'NO'} |")

    rpc = [("RPC 64 B echo, 1 caller", "rpc_64_x1"), ("RPC 64 B echo, 64 callers", "rpc_64_x64")]
    if all((case, sys_) in rows for _, case in rpc for sys_ in ("partisan", "disterl")):
        print()
        print("| RPC (Erlang: `erpc:call`) | metric | partisan | Distributed Erlang | partisan / Erlang |")
        print("| --- | --- | ---: | ---: | ---: |")
        for title, case in rpc:
            for name, field in [("calls/s", "ops_per_sec"), ("p50 us", "p50_us"), ("p99 us", "p99_us")]:
                pv, ev = one(case, "partisan")[field], one(case, "disterl")[field]
                print(f"| {title} | {name} | {fmt(pv)} | {fmt(ev)} | {pv / ev:.2f}x |")

    lanes = [(k, v) for k, v in rows.items() if k[0].startswith("lanes_")]
    if lanes:
        print()
        print("| lanes (partisan) | 1 lane | 4 lanes |")
        print("| --- | ---: | ---: |")
        if ("lanes_oneway_64_x4", "partisan") in rows:
            a, b = rows[("lanes_oneway_64_x4", "partisan")][:2]
            print(f"| one-way 64 B, 4 senders, msgs/s | {fmt(a['msgs_per_sec'])} | {fmt(b['msgs_per_sec'])} |")
        if ("lanes_echo_64k_x8", "partisan") in rows:
            b = rows[("lanes_echo_64k_x8", "partisan")][0]
            a = one("echo_64k_x8", "partisan")
            print(f"| echo 64 KiB x8, MB/s | {fmt(a['mb_per_sec'])} | {fmt(b['mb_per_sec'])} |")
    if ("chunk_hol_paced", "partisan") in rows and ("chunk_hol_max", "partisan") in rows:
        print()
        print("| bulk channel `write_chunk` (partisan) | 256 KiB (default) | 64 KiB |")
        print("| --- | ---: | ---: |")
        a, b = one("hol_paced", "partisan"), one("chunk_hol_paced", "partisan")
        print(f"| hol paced 500 MB/s: probe p99 loaded / idle | "
              f"{a['loaded_p99_us'] / a['idle_p99_us']:.2f}x | "
              f"{b['loaded_p99_us'] / b['idle_p99_us']:.2f}x |")
        a, b = one("hol_max", "partisan"), one("chunk_hol_max", "partisan")
        print(f"| hol max: probe p99 loaded us | {a['loaded_p99_us']:.0f} | {b['loaded_p99_us']:.0f} |")
        print(f"| hol max: stream MB/s | {a['stream_mb_per_sec']:.0f} | {b['stream_mb_per_sec']:.0f} |")
    if load_avg:
        print()
        print(f"1-minute load average: {load_avg[0]} at the start, {load_avg[1]} at the end.")


if __name__ == "__main__":
    main()
