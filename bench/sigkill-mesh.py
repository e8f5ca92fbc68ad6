#!/usr/bin/env python3
"""Issue 14's real-process check: a full mesh of N `partisan node` processes on loopback,
K of them killed with SIGKILL at once. Measures, from the survivors' `GET /status`:

- how long until every survivor lists every killed node as `unreachable`;
- with --down-after MS, how long until every survivor has dropped them from `members`;
- that the survivors stay fully connected to each other.

Prints progress on stderr and one JSON object on stdout. Ports: --base-port P uses P..P+N-1
for the nodes and P+N..P+2N-1 for their admin servers (all on 127.0.0.1).

    cargo build --release -p partisan-cli
    python3 bench/sigkill-mesh.py --nodes 100 --kill 30 --down-after 30000
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def status(admin_port):
    url = f"http://127.0.0.1:{admin_port}/status"
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


def poll(what, within, cond, every=0.5):
    """Polls cond() until it returns a true value or `within` seconds pass; returns
    (seconds taken, value) or (None, last value)."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < within:
        try:
            last = cond()
        except OSError:
            last = None
        if last:
            return time.monotonic() - start, last
        time.sleep(every)
    print(f"timed out waiting for {what}", file=sys.stderr)
    return None, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--kill", type=int, default=30)
    ap.add_argument("--down-after", type=int, default=0, help="ms; 0 leaves it off")
    ap.add_argument("--base-port", type=int, default=21000,
                    help="below the ephemeral port range, so no outgoing connection holds one")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", default="target/release/partisan")
    ap.add_argument("--settle-limit", type=float, default=300.0)
    a = ap.parse_args()
    if not 0 < a.kill < a.nodes:
        sys.exit("--kill must be between 1 and --nodes - 1")
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="sigkill-mesh-")
    config = os.path.join(tmp, "node.toml")
    with open(config, "w") as f:
        f.write(f"down_after = {a.down_after}\n")
    procs = []
    logs = []

    def port(i):
        return a.base_port + i

    def admin(i):
        return a.base_port + a.nodes + i

    try:
        for i in range(a.nodes):
            log = open(os.path.join(tmp, f"n{i}.log"), "w")
            logs.append(log)
            args = [
                a.bin, "node", "--config", config,
                "--name", f"n{i}@127.0.0.1",
                "--listen", f"127.0.0.1:{port(i)}",
                "--admin", f"127.0.0.1:{admin(i)}",
                "--cookie", "sigkill-mesh",
                "--overlay", "full-mesh",
            ]
            if i > 0:
                args += ["--join", f"127.0.0.1:{port(rng.randrange(i))}"]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log))
            if i == 0:
                poll("n0 to serve", 30, lambda: status(admin(0)))
        print(f"{a.nodes} nodes started; waiting for every one to see {a.nodes} members",
              file=sys.stderr)

        def settled():
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            if dead:
                sys.exit(f"nodes {dead} exited early; see their logs in {tmp}")
            return all(len(status(admin(i))["members"]) == a.nodes for i in range(a.nodes))

        settle_s, ok = poll("the mesh to settle", a.settle_limit, settled, every=2)
        if not ok:
            sys.exit("the mesh never settled")
        victims = sorted(rng.sample(range(1, a.nodes), a.kill))
        survivors = [i for i in range(a.nodes) if i not in victims]
        names = {f"n{i}@127.0.0.1" for i in victims}
        for i in victims:
            procs[i].send_signal(signal.SIGKILL)
        for i in victims:
            procs[i].wait()
        killed_at = time.monotonic()
        print(f"killed {a.kill} nodes: {victims}", file=sys.stderr)

        def all_unreachable():
            return all(names <= set(status(admin(i))["unreachable"]) for i in survivors)

        unreachable_s, _ = poll("every survivor to list every killed node unreachable", 120,
                                all_unreachable)
        removed_s = None
        if a.down_after > 0:
            def all_removed():
                return all(not (names & set(status(admin(i))["members"])) for i in survivors)

            removed_s, _ = poll("every survivor to drop the killed nodes", a.down_after / 1000 + 120,
                                all_removed)
            if removed_s is not None:
                removed_s += unreachable_s or 0
        after = {i: status(admin(i)) for i in survivors}
        connected = all(
            set(after[i]["connections"]) >= {f"n{j}@127.0.0.1" for j in survivors if j != i}
            for i in survivors
        )
        downed = sum(after[i]["stats"].get("members_downed", 0) for i in survivors)
        unresponsive = sum(after[i]["stats"].get("peers_unresponsive", 0) for i in survivors)
        report = {
            "nodes": a.nodes,
            "killed": a.kill,
            "down_after_ms": a.down_after,
            "settle_secs": round(settle_s, 1),
            "unreachable_everywhere_secs": None if unreachable_s is None else round(unreachable_s, 1),
            "removed_everywhere_secs": None if removed_s is None else round(removed_s, 1),
            "survivors_fully_connected": connected,
            "members_downed_total": downed,
            "peers_unresponsive_total": unresponsive,
            "since_kill_secs": round(time.monotonic() - killed_at, 1),
        }
        print(json.dumps(report))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


if __name__ == "__main__":
    main()
