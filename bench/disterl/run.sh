#!/usr/bin/env bash
# Runs one Distributed Erlang workload: compiles disterl_bench.erl (into bench/disterl/ebin,
# ignored by git) and starts the driver node, which starts the peer node as a second OS process.
# Both nodes listen on 127.0.0.1 only; prints one JSON line per result on stdout.
#
#   bench/disterl/run.sh oneway --payload 64 --senders 1 --duration 5
#   bench/disterl/run.sh echo --payload 64,64K --callers 1,8,64 --duration 5
#   bench/disterl/run.sh hol --duration 5 [--stream-rate 500]
#   bench/disterl/run.sh rpc --payload 64 --callers 1,64 --duration 5   (erpc:call)
#
# Pin both nodes with: taskset -c 0 bench/disterl/run.sh echo ...
# Needs erlc/erl (Debian: apt-get install erlang-nox).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ebin="${DISTERL_EBIN:-$here/ebin}"
mkdir -p "$ebin"
if [[ ! -f "$ebin/disterl_bench.beam" || "$here/disterl_bench.erl" -nt "$ebin/disterl_bench.beam" ]]; then
  erlc -o "$ebin" "$here/disterl_bench.erl"
fi
export ERL_EPMD_ADDRESS=127.0.0.1
cookie="disterl-$$-$RANDOM$RANDOM"
exec erl -noshell -name "bench_driver_$$@127.0.0.1" -setcookie "$cookie" -pa "$ebin" \
  -kernel inet_dist_use_interface '{127,0,0,1}' \
  -run disterl_bench main -extra "$@"
