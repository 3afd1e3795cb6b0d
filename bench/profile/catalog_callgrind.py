#!/usr/bin/env python3
"""Instructions per registry event in the gateway's catalog, under callgrind.

R13 (docs/benchmarks.md, "Cost at scale") times the gateway's CPU per registry
event with /proc ticks, which a busy machine inflates; this counts instructions,
which it does not:

    cargo build --profile profiling -p micro-cli
    python3 bench/profile/catalog_callgrind.py --bin target/profiling/micro

Starts etcd on free loopback ports, writes SERVICES x 5 entries shaped like
R13's (go-micro's greeter entry with four endpoints and metadata) through
etcd's JSON API, starts `micro api --handler=rpc` under
`valgrind --tool=callgrind`, waits for its readiness, zeroes the counters,
dumps after an idle window, then after EVENTS registry events (a node
registered and deregistered, about 100 events per second). Instructions per
event = the second dump's total / EVENTS (the idle dump shows what the
window costs without events). With --annotate, the hottest functions.

Every process is stopped by its PID; the temporary directory is removed.
"""

import argparse
import base64
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(text):
    return base64.b64encode(text.encode()).decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=os.path.join(REPO, "target/profiling/micro"))
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--annotate", action="store_true")
    args = parser.parse_args()

    value = json.load(open(os.path.join(REPO, "testdata/go-micro-v2/etcd/value.json")))
    endpoint = value["endpoints"][0]
    value["endpoints"] = [dict(endpoint, name=f"Greeter.M{i}") for i in range(4)]
    value["metadata"] = {"team": "core", "owner": "bench"}

    def entry(name, node):
        v = dict(value, name=name)
        v["nodes"] = [dict(value["nodes"][0], id=node, address="127.0.0.1:4242")]
        return json.dumps(v, separators=(",", ":"))

    tmp = tempfile.mkdtemp(prefix="catalog-callgrind-")
    procs = []
    try:
        client, peer = free_port(), free_port()
        etcd = subprocess.Popen(
            ["etcd", "--data-dir", f"{tmp}/etcd",
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(etcd)
        base = f"http://127.0.0.1:{client}"

        def call(path, body):
            request = urllib.request.Request(
                base + path, data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})
            return urllib.request.urlopen(request, timeout=5).read()

        for _ in range(400):
            try:
                call("/v3/kv/range", {"key": b64("x")})
                break
            except OSError:
                time.sleep(0.05)
        for s in range(args.services):
            name = f"go.micro.srv.scale{s:05d}"
            for n in range(NODES):
                node = f"{name}-{n}"
                call("/v3/kv/put", {"key": b64(f"/micro/registry/{name}/{node}"),
                                    "value": b64(entry(name, node))})
        print(f"etcd holds {args.services * NODES} entries", flush=True)

        admin = f"127.0.0.1:{free_port()}"
        out = os.path.join(tmp, "callgrind.out")
        gateway = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
             args.bin, "--registry=etcd", f"--registry_address=127.0.0.1:{client}",
             f"--admin_address={admin}", "api", "--handler=rpc",
             "--namespace=go.micro.srv", f"--address=127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"))
        procs.append(gateway)
        deadline = time.time() + 300
        while True:
            try:
                if urllib.request.urlopen(f"http://{admin}/health/ready", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("the gateway was not ready within 300 s")
            time.sleep(0.2)
        time.sleep(3)

        def control(flag):
            subprocess.run(["callgrind_control", flag, str(gateway.pid)],
                           stdout=subprocess.DEVNULL, check=True)

        control("-z")
        time.sleep(10)
        control("-d")
        start = time.time()
        sent = 0
        while sent < args.events:
            name = f"go.micro.srv.churn{sent // 2:05d}"
            key = b64(f"/micro/registry/{name}/{name}-0")
            call("/v3/kv/put", {"key": key, "value": b64(entry(name, f"{name}-0"))})
            call("/v3/kv/deleterange", {"key": key})
            sent += 2
            pause = start + sent / 100.0 - time.time()
            if pause > 0:
                time.sleep(pause)
        time.sleep(1)
        control("-d")
        dumps = sorted(glob.glob(f"{out}.{gateway.pid}.*"), key=lambda p: int(p.rsplit(".", 1)[1]))

        def total(path):
            for line in open(path):
                if line.startswith("totals:"):
                    return int(line.split()[1])
            raise SystemExit(f"{path}: no totals")

        idle, churn = total(dumps[-2]), total(dumps[-1])
        print(f"idle 10 s: {idle:,} instructions; {args.events} events: {churn:,} "
              f"= {churn / args.events:,.0f} per event")
        if args.annotate:
            subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", dumps[-1]])
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
