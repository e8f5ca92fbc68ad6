#!/usr/bin/env bash
# Runs partisan and Distributed Erlang back to back on the workloads of issue 5 (and RPC,
# issue 10) and prints both systems' figures and the ratios against the targets (markdown,
# on stdout).
#
#   bench/compare.sh                 # 5 s per measurement, about 3 minutes in all
#   DURATION=10 bench/compare.sh     # longer measurements
#   OUT=results.jsonl bench/compare.sh   # keep the raw JSON lines
#
# Latency (echo 64 B, 1 caller) runs with both nodes of each system pinned to one vCPU
# (taskset -c $PIN_CPU, default 0: the peer process inherits the affinity); throughput and
# head-of-line runs are unpinned. Needs cargo, erl/erlc (Debian: apt-get install erlang-nox),
# taskset, jq and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-5}
pin=${PIN_CPU:-0}
out=${OUT:-$(mktemp --suffix=.jsonl)}
: >"$out"

cargo build --release --locked -q -p partisan-cli
p=target/release/partisan
e=bench/disterl/run.sh

run() {
  local case=$1
  shift
  echo "  $case: $*" >&2
  "$@" --duration "$duration" --json | jq -c --arg case "$case" '. + {case: $case}' >>"$out"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start_load=$(cut -d' ' -f1 /proc/loadavg)
run oneway_64 "$p" bench oneway --payload 64 --senders 1
run oneway_64 "$e" oneway --payload 64 --senders 1
run echo_64_x1_pinned taskset -c "$pin" "$p" bench echo --payload 64 --callers 1
run echo_64_x1_pinned taskset -c "$pin" "$e" echo --payload 64 --callers 1
run echo_64_x64 "$p" bench echo --payload 64 --callers 64
run echo_64_x64 "$e" echo --payload 64 --callers 64
run echo_64k_x8 "$p" bench echo --payload 64K --callers 8
run echo_64k_x8 "$e" echo --payload 64K --callers 8
run hol_max "$p" bench hol
run hol_max "$e" hol
run hol_paced "$p" bench hol --stream-rate 500
run hol_paced "$e" hol --stream-rate 500
# RPC: closed-loop calls of a 64 B echo handler (Erlang: erpc:call of an echo function).
run rpc_64_x1 "$p" bench rpc --payload 64 --callers 1
run rpc_64_x1 "$e" rpc --payload 64 --callers 1
run rpc_64_x64 "$p" bench rpc --payload 64 --callers 64
run rpc_64_x64 "$e" rpc --payload 64 --callers 64
# Lanes: the same workloads over 4 connections instead of 1 (partisan only).
run lanes_oneway_64_x4 "$p" bench oneway --payload 64 --senders 4 --parallelism 1
run lanes_oneway_64_x4 "$p" bench oneway --payload 64 --senders 4 --parallelism 4
run lanes_echo_64k_x8 "$p" bench echo --payload 64K --callers 8 --parallelism 4
# A polite bulk channel: its connections move 64 KiB, not 256 KiB, before yielding (partisan only).
run chunk_hol_max "$p" bench hol --bulk-chunk 65536
run chunk_hol_paced "$p" bench hol --stream-rate 500 --bulk-chunk 65536
end_load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 bench/ratios.py "$out" --load "$start_load" "$end_load"
echo "raw results: $out" >&2
