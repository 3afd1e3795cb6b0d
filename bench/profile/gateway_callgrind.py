#!/usr/bin/env python3
"""Instructions per request of a gateway, whole process, under callgrind.

The R3/R4 profile of docs/benchmarks.md ("R3/R4 profile"), rerunnable:

    cargo build --release -p micro-bench -p user-srv -p user-api -p micro-cli
    python3 bench/profile/gateway_callgrind.py --handler api   # R3
    python3 bench/profile/gateway_callgrind.py --handler rpc   # R4

Starts etcd, user-srv (and user-api for the api handler) from --bin-dir, then
for each gateway (`micro api --handler=...` and the minimal axum -> tonic
gateway of `micro-bench serve`) under `valgrind --tool=callgrind`: warm-up
requests, `callgrind_control -z`, N sequential requests over one keep-alive
connection, `callgrind_control -d`; instructions per request = the dump's
total / N. With --annotate, the hottest functions (inclusive) of each.

Every process is stopped by its PID; the temporary directory is removed.
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, args, log_dir):
        self.log = os.path.join(log_dir, name + ".log")
        log = open(self.log, "wb")
        env = dict(os.environ, RUST_LOG="warn")
        # stdin stays open: `micro-bench serve` stops when it closes.
        p = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_until(what, check, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"gave up waiting for {what} after {seconds} s")


def status(port, method, path, body):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(method, path, body=body, headers=HEADERS)
        response = conn.getresponse()
        answer = response.status
        status.last_body = response.read()
        conn.close()
        return answer
    except OSError:
        return 0


def answers(port, method, path, body):
    return status(port, method, path, body) == 200


KEEP = None  # --keep: where the dumps are copied

HEADERS = {"Content-Type": "application/json", "Accept": "*/*"}


def run_requests(port, method, path, body, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        conn.request(method, path, body=body, headers=HEADERS)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"{method} {path}: HTTP {response.status}")
    conn.close()


def total_instructions(out_file):
    events, summary = None, None
    with open(out_file) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:") or line.startswith("totals:"):
                summary = [int(x) for x in line.split()[1:]]
    return summary[events.index("Ir")]


def ready_port(log, seconds):
    """The port of the `READY <address>` line `micro-bench serve` prints."""
    found = []

    def check():
        with open(log) as f:
            for line in f:
                if line.startswith("READY "):
                    found.append(int(line.split()[1].rsplit(":", 1)[1]))
                    return True
        return False

    wait_until("READY", check, seconds)
    return found[0]


def profile(name, args, port, method, path, body, n, work, procs, annotate, setup=None):
    out = os.path.join(work, f"callgrind.{name}.out")
    p = procs.start(
        name,
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + args,
        work,
    )
    if port is None:
        port = ready_port(procs.log, 120)
    if setup:
        setup(port)
    def ready():
        if p.poll() is not None:
            sys.exit(f"{name} exited: {open(procs.log).read()[-2000:]}")
        return answers(port, method, path, body)

    try:
        wait_until(f"{name} to answer", ready, 120)
    except SystemExit:
        last = status(port, method, path, body)
        for log in sorted(glob.glob(os.path.join(work, "*.log"))):
            print(f"--- {log} (last answer {last} {status.last_body[:300]!r})\n{open(log).read()[-1500:]}", file=sys.stderr)
        raise
    run_requests(port, method, path, body, 200)
    subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
    run_requests(port, method, path, body, n)
    subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
    if not dumps:
        sys.exit(f"{name}: callgrind wrote no dump")
    per_request = total_instructions(dumps[-1]) / n
    if KEEP:
        os.makedirs(KEEP, exist_ok=True)
        shutil.copy(dumps[-1], os.path.join(KEEP, f"callgrind.{name}.out"))
    print(f"{name}: {per_request:,.0f} instructions / request ({n} requests)")
    if annotate:
        report = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=99", dumps[-1]],
            capture_output=True,
            text=True,
        ).stdout
        lines = [l for l in report.splitlines() if l.strip()][:annotate + 20]
        print("\n".join(lines))
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    return per_request


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handler", choices=["api", "rpc"], default="api")
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--annotate", type=int, default=0, help="print the N hottest functions")
    ap.add_argument("--only", choices=["micro"], help="profile micro api alone")
    ap.add_argument("--keep", help="copy each callgrind dump into this directory")
    a = ap.parse_args()
    global KEEP
    KEEP = a.keep
    bins = os.path.abspath(a.bin_dir)
    for tool in ["etcd", "valgrind", "callgrind_control"]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (scripts/test --install installs it)")
    work = tempfile.mkdtemp(prefix="gateway-callgrind-")
    procs = Procs()
    try:
        client, peer = free_port(), free_port()
        etcd = f"127.0.0.1:{client}"
        procs.start(
            "etcd",
            [
                "etcd",
                f"--data-dir={work}/etcd",
                f"--listen-client-urls=http://{etcd}",
                f"--advertise-client-urls=http://{etcd}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
            ],
            work,
        )
        wait_until("etcd", lambda: status(client, "GET", "/health", None) == 200, 60)
        registry = ["--registry=etcd", f"--registry_address={etcd}"]
        srv_port = free_port()
        os.makedirs(f"{work}/data")
        procs.start(
            "user-srv",
            [f"{bins}/user-srv"]
            + registry
            + [
                f"--server_address=127.0.0.1:{srv_port}",
                f"--data_dir={work}/data",
                "--auth_secret=bench-secret",
            ],
            work,
        )
        if a.handler == "api":
            api_port = free_port()
            procs.start(
                "user-api",
                [f"{bins}/user-api"] + registry + [f"--server_address=127.0.0.1:{api_port}"],
                work,
            )
            method, path, body = "GET", "/user/say/hello?name=huohuo", None
            mini_kind, upstream = "mini-gateway", api_port
            micro_extra = ["--handler=api"]
        else:
            method, path = "POST", "/user/user/query-user-by-name"
            body = json.dumps({"userName": "huohuo"})
            mini_kind, upstream = "mini-rpc-gateway", srv_port
            micro_extra = ["--handler=rpc", "--namespace=go.micro.srv"]
        if a.handler == "api":
            sign_up = ("/user/account/register",
                       {"username": "huohuo", "password": "correct horse battery"})
        else:
            sign_up = ("/user/user/register",
                       {"userName": "huohuo", "userPwd": "correct horse battery"})

        def register(port):
            """The user the request finds, registered once through micro api."""
            wait_until(
                "the register call",
                lambda: status(port, "POST", sign_up[0], json.dumps(sign_up[1])) in (200, 201, 409),
                120,
            )

        results = {}
        if a.only in (None, "micro"):
            port = free_port()
            results["micro"] = profile(
                f"micro-api-{a.handler}",
                [f"{bins}/micro"] + registry + ["api"] + micro_extra
                + [f"--address=127.0.0.1:{port}"],
                port, method, path, body, a.requests, work, procs, a.annotate,
                register,
            )
        if a.only in (None, "mini"):
            results["mini"] = profile(
                mini_kind,
                [f"{bins}/micro-bench", "serve", f"--kind={mini_kind}",
                 f"--upstream=127.0.0.1:{upstream}"],
                None, method, path, body, a.requests, work, procs, a.annotate,
            )
        if len(results) == 2:
            print(f"micro api / minimal: {results['micro'] / results['mini']:.2f}x instructions")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
