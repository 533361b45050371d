#!/usr/bin/env python3
"""Cluster convergence benchmark: how long a config change made on one
ringway node takes to be applied on every node (cluster mode, etcd).

Starts one etcd (/usr/bin/etcd by default) and three ringway nodes (a, b,
c; `--workers 1` each, every one with its own config in a temp dir, an
admin listener, health checks off) on free 127.0.0.1 ports, all sharing one
etcd prefix. Then makes --changes API writes on node a, alternating "POST a
new route" and "DELETE it", and measures convergence two ways:

  * wait=cluster: the write is sent with `?wait=cluster`, which answers only
    once every live node applied its revision; the figure is the request's
    latency (send to answer). Writes whose report names laggards are counted.
  * poll: for --poll-sample of the changes (spread evenly), the write is
    sent without `?wait=cluster` while two threads poll nodes b and c in
    tight loops (`GET /api/v1/info`, a new connection each); a node has
    converged at the first answer whose `generation` (its applied etcd
    revision) reaches the write's ETag. The figure is from sending the write
    to the latest of: a's answer (a answers once it applied the change) and
    b's and c's first converged answers — an upper bound by one poll.

Prints p50/p90/p99/max in ms for both and writes a JSON summary (default
bench-results/cluster-convergence.json). Every HTTP call has a timeout and
the whole run a time cap (--max-seconds; what was measured by then is
reported, marked truncated). Everything it starts is stopped at the end,
on failure and on SIGINT/SIGTERM (children also get SIGKILL if this process
dies: PR_SET_PDEATHSIG). Needs a build with cluster mode:
`cargo build --release --features cluster`.
"""

import argparse
import ctypes
import http.client
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HTTP_TIMEOUT = 10.0
NODE_IDS = ("a", "b", "c")
PREFIX = "/ringway/bench"


def stop_process(proc, graceful):
    """Stops `proc` (SIGTERM first when `graceful`, then SIGKILL), waiting
    at most 5 s for each."""
    for sig in ([proc.terminate] if graceful else []) + [proc.kill]:
        if proc.poll() is not None:
            return
        sig()
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass


def set_pdeathsig():
    """SIGKILL this process when its parent goes (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_ports(n):
    """n distinct free loopback ports (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def request(addr, method, path, body=None, timeout=HTTP_TIMEOUT):
    """One HTTP/1.1 request on a fresh connection: (status, headers, body)."""
    host, port = addr
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def get_json(addr, path, timeout=HTTP_TIMEOUT):
    status, _, payload = request(addr, "GET", path, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {path} on {addr}: {status} {payload[:200]!r}")
    return json.loads(payload)


def etag_revision(etag):
    """`"12"` (or W/"12") → 12; None when absent or malformed."""
    if not etag:
        return None
    t = etag.strip()
    if t.startswith("W/"):
        t = t[2:]
    try:
        return int(t.strip('"'))
    except ValueError:
        return None


def wait_until(what, timeout, probe, interval=0.05):
    """Polls probe() until it returns a true value; raises after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = probe()
            if v:
                return v
        except (OSError, ValueError, RuntimeError, http.client.HTTPException) as e:
            last = e
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what}: not within {timeout} s (last error: {last})")
        time.sleep(interval)


def percentiles(values):
    """count, p50/p90/p99/max/mean in ms (nearest rank), or None when empty."""
    if not values:
        return None
    s = sorted(values)

    def rank(p):
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {
        "count": len(s),
        "p50Ms": round(rank(50), 3),
        "p90Ms": round(rank(90), 3),
        "p99Ms": round(rank(99), 3),
        "maxMs": round(s[-1], 3),
        "meanMs": round(sum(s) / len(s), 3),
    }


def tail(path, n=3000):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

class Etcd:
    def __init__(self, binary, workdir):
        self.client_port, self.peer_port = free_ports(2)
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log_path = os.path.join(workdir, "etcd.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--name", "default", "--data-dir", os.path.join(workdir, "etcd-data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"default={peer}", "--logger", "zap", "--log-outputs", "stderr"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, preexec_fn=set_pdeathsig)

    def wait_ready(self):
        def healthy():
            if self.proc.poll() is not None:
                raise SystemExit(f"etcd exited ({self.proc.returncode}):\n{tail(self.log_path)}")
            status, _, body = request(("127.0.0.1", self.client_port), "GET", "/health", timeout=2)
            return status == 200 and json.loads(body).get("health") == "true"
        wait_until("etcd healthy", 20, healthy)

    def stop(self):
        stop_process(self.proc, graceful=False)
        self.log.close()


class Node:
    def __init__(self, binary, workdir, node_id, etcd_endpoint, backend_port):
        self.id = node_id
        self.config_path = os.path.join(workdir, f"{node_id}.json")
        cfg = {
            "listen": ["127.0.0.1:0"],
            "health": {"intervalMs": 0},
            "admin": {"listen": "127.0.0.1:0"},
            "routes": [{"vHost": "seed.test", "strategy": "ROUND_ROBIN",
                        "backends": [{"id": "seed", "hostname": "127.0.0.1", "port": backend_port}]}],
            "cluster": {"etcd": {"endpoints": [etcd_endpoint], "prefix": PREFIX, "dialMs": 2000},
                        "nodeId": node_id},
        }
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.log_path = os.path.join(workdir, f"{node_id}.log")
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, RINGWAY_LOG="warn")
        self.proc = subprocess.Popen(
            [binary, "run", "--config", self.config_path, "--workers", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, env=env,
            preexec_fn=set_pdeathsig)
        self.lines = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.admin = None

    def _read_stdout(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_listening(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise SystemExit(f"node {self.id} did not start (exit {self.proc.poll()}):\n{tail(self.log_path)}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if not line.startswith("listening proxy="):
                continue
            for word in line.split(" ")[1:]:
                if word.startswith("admin=") and word != "admin=-":
                    host, port = word[len("admin="):].rsplit(":", 1)
                    self.admin = (host, int(port))
            if self.admin is None:
                raise SystemExit(f"node {self.id}: no admin listener on {line!r}")
            return

    def generation(self, timeout=2.0):
        return get_json(self.admin, "/api/v1/info", timeout=timeout)["generation"]

    def stop(self):
        stop_process(self.proc, graceful=True)
        self.log.close()


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

class Poller(threading.Thread):
    """Polls a node's applied revision in a tight loop until it reaches the
    target (set once the write's ETag is known) or the deadline passes.
    Records when the first answer at or past the target arrived."""

    def __init__(self, node, deadline):
        super().__init__(daemon=True)
        self.node = node
        self.deadline = deadline
        self.target = None  # set from the main thread
        self.observations = []  # (perf_counter at the answer, generation)
        self.errors = 0

    def run(self):
        while time.perf_counter() < self.deadline:
            try:
                g = self.node.generation()
            except (OSError, ValueError, RuntimeError, KeyError, http.client.HTTPException):
                self.errors += 1
                continue
            self.observations.append((time.perf_counter(), g))
            target = self.target
            if target is not None and g >= target:
                return

    def reached_at(self):
        target = self.target
        if target is None:
            return None
        for t, g in self.observations:
            if g >= target:
                return t
        return None


def change(i):
    """The i-th change: (method, path, body) — POST a route, then DELETE it."""
    vhost = f"bench-{i // 2}.test"
    if i % 2 == 0:
        body = {"vHost": vhost, "strategy": "ROUND_ROBIN",
                "backends": [{"id": "b1", "hostname": "127.0.0.1", "port": 9}]}
        return "POST", "/api/v1/routes", body
    return "DELETE", f"/api/v1/routes/{vhost}", None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "ringway"),
                    help="ringway built with --features cluster (default target/release/ringway)")
    ap.add_argument("--etcd", default="/usr/bin/etcd", help="the etcd binary")
    ap.add_argument("--changes", type=int, default=1000, help="API writes on node a (default 1000)")
    ap.add_argument("--poll-sample", type=int, default=100,
                    help="how many of the changes are measured by polling instead of ?wait=cluster (default 100)")
    ap.add_argument("--poll-timeout", type=float, default=10.0, help="seconds a polled change may take")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="cap on the whole measurement")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results", "cluster-convergence.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()

    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no ringway binary at {binary} (cargo build --release --features cluster)")
    if not os.access(args.etcd, os.X_OK):
        sys.exit(f"no etcd at {args.etcd}")
    if args.changes < 1:
        sys.exit("--changes must be at least 1")

    # SIGTERM runs the cleanup below like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="ringway-cluster-bench-")
    etcd = None
    nodes = []
    failed = True
    try:
        etcd = Etcd(args.etcd, workdir)
        etcd.wait_ready()
        etcd_version = subprocess.run([args.etcd, "--version"], capture_output=True, text=True,
                                      timeout=10).stdout.splitlines()[:1]
        backend_port = free_ports(1)[0]  # nothing listens: no traffic is sent
        t_start = time.monotonic()
        # Node a first: it seeds etcd with its config's routes.
        for node_id in NODE_IDS:
            n = Node(binary, workdir, node_id, etcd.endpoint, backend_port)
            nodes.append(n)
            n.wait_listening()
        a, b, c = nodes

        def formed():
            for n in nodes:
                s = get_json(n.admin, "/api/v1/cluster", timeout=2)
                ids = sorted(m.get("nodeId") for m in s.get("nodes", []))
                if s.get("connected") is not True or ids != sorted(NODE_IDS):
                    return False
            return True
        wait_until("every node connected and listing a, b, c", 20, formed)
        print(f"etcd and 3 nodes up in {time.monotonic() - t_start:.1f} s (workdir {workdir})", file=sys.stderr)

        sample = min(args.poll_sample, args.changes)
        # Spread evenly, odd k shifted by one so both POSTs and DELETEs are sampled.
        if sample >= args.changes:
            polled = set(range(args.changes))
        else:
            polled = {min(args.changes - 1, int(k * args.changes / sample) + k % 2) for k in range(sample)}
        wait_ms, poll_ms, answer_ms = [], [], []
        laggard_writes = 0
        missing_report = 0
        poll_timeouts = 0
        errors = []
        truncated = False
        done = 0
        t0_all = time.monotonic()
        for i in range(args.changes):
            if time.monotonic() - t0_all > args.max_seconds:
                truncated = True
                break
            method, path, body = change(i)
            if i in polled:
                deadline = time.perf_counter() + args.poll_timeout
                pollers = [Poller(b, deadline), Poller(c, deadline)]
                for p in pollers:
                    p.start()
                t0 = time.perf_counter()
                try:
                    status, headers, payload = request(a.admin, method, path, body)
                except (OSError, http.client.HTTPException) as e:
                    status, headers, payload = 0, {}, str(e).encode()
                t_answer = time.perf_counter()
                if not 200 <= status < 300:
                    for p in pollers:
                        p.deadline = 0  # stop them
                    errors.append(f"change {i}: {method} {path}: {status} {payload[:200]!r}")
                else:
                    target = etag_revision(headers.get("etag"))
                    if target is None:
                        try:
                            target = a.generation()  # a answered once it applied the change
                        except (OSError, ValueError, RuntimeError, KeyError, http.client.HTTPException) as e:
                            errors.append(f"change {i}: no ETag, and a's generation is unknown: {e}")
                            status = 0
                            for p in pollers:
                                p.deadline = 0
                    for p in pollers:
                        p.target = target
                for p in pollers:
                    p.join(args.poll_timeout + HTTP_TIMEOUT + 1)
                if 200 <= status < 300:
                    reached = [p.reached_at() for p in pollers]
                    if any(r is None for r in reached):
                        poll_timeouts += 1
                        errors.append(f"change {i}: b or c did not reach revision {pollers[0].target} "
                                      f"within {args.poll_timeout} s")
                    else:
                        poll_ms.append((max([t_answer] + reached) - t0) * 1000)
                        answer_ms.append((t_answer - t0) * 1000)
            else:
                sep = "&" if "?" in path else "?"
                t0 = time.perf_counter()
                try:
                    status, _, payload = request(a.admin, method, f"{path}{sep}wait=cluster", body)
                except (OSError, http.client.HTTPException) as e:
                    status, payload = 0, str(e).encode()
                dt = (time.perf_counter() - t0) * 1000
                if not 200 <= status < 300:
                    errors.append(f"change {i}: {method} {path}?wait=cluster: {status} {payload[:200]!r}")
                else:
                    wait_ms.append(dt)
                    report = None
                    if payload:
                        try:
                            report = json.loads(payload).get("cluster")
                        except (ValueError, AttributeError):
                            report = None
                    if report is None:
                        missing_report += 1
                    elif report.get("laggards"):
                        laggard_writes += 1
            done += 1
            if len(errors) >= 20:
                print("20 errors: stopping", file=sys.stderr)
                break
            if done % 100 == 0:
                print(f"  {done}/{args.changes} changes", file=sys.stderr)
        elapsed = time.monotonic() - t0_all

        # Every node ends with the same routes.
        def same_routes():
            views = [sorted(r["vHost"] for r in get_json(n.admin, "/api/v1/routes")) for n in nodes]
            return all(v == views[0] for v in views)
        try:
            consistent = bool(wait_until("every node at the same routes", 10, same_routes))
        except RuntimeError as e:
            errors.append(str(e))
            consistent = False

        summary = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bin": binary,
            "etcd": etcd_version[0] if etcd_version else None,
            "nodes": len(nodes),
            "workersPerNode": 1,
            "changesRequested": args.changes,
            "changesDone": done,
            "truncated": truncated,
            "seconds": round(elapsed, 2),
            "waitCluster": dict(percentiles(wait_ms) or {"count": 0},
                                laggardWrites=laggard_writes, missingClusterReport=missing_report,
                                method="latency of a write sent with ?wait=cluster"),
            "poll": dict(percentiles(poll_ms) or {"count": 0}, timeouts=poll_timeouts,
                         method="send to the last of: a's answer, b's and c's first /api/v1/info "
                                "generation >= the write's ETag (tight polling)"),
            "writeAnswerNoWait": percentiles(answer_ms),
            "consistentAtEnd": consistent,
            "errors": errors[:20],
        }
        print(f"\n{done} changes on node a in {elapsed:.1f} s{' (truncated)' if truncated else ''}")
        for name, stats in (("wait=cluster latency", summary["waitCluster"]),
                            ("poll-based convergence", summary["poll"]),
                            ("write answer (no wait)", summary["writeAnswerNoWait"] or {"count": 0})):
            if stats.get("count"):
                print(f"  {name:24} n={stats['count']:5}  p50 {stats['p50Ms']:8.2f} ms  p90 {stats['p90Ms']:8.2f} ms"
                      f"  p99 {stats['p99Ms']:8.2f} ms  max {stats['maxMs']:8.2f} ms")
            else:
                print(f"  {name:24} n=0")
        print(f"  writes with laggards: {laggard_writes}; without a cluster report: {missing_report}; "
              f"poll timeouts: {poll_timeouts}; consistent at the end: {consistent}")
        for e in errors[:20]:
            print(f"  error: {e}", file=sys.stderr)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        print(f"wrote {args.out}")
        failed = bool(errors) or not consistent
    finally:
        for n in nodes:
            n.stop()
        if etcd is not None:
            etcd.stop()
        if failed:
            for n in nodes:
                print(f"--- node {n.id} log (end) ---\n{tail(n.log_path)}", file=sys.stderr)
        if args.keep or failed:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
