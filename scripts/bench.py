#!/usr/bin/env python3
"""Side-by-side proxy benchmark (called by scripts/bench.sh).

Layout on a 2-core machine: wrk (one thread) and the backend (nginx, one
worker, `return 200` of 12 bytes) share core 0; each proxy runs alone on
core 1. Subjects alternate within each round (A B C D A B C D ...) and the
report gives medians over rounds: requests/s, p50/p99 latency, the proxy's
own CPU microseconds per request (utime+stime of its process tree from /proc,
before and after the run) and its RSS. A subject that answers non-2xx or has
socket errors fails the whole run: a fast wrong answer is not a result.
Everything listens on 127.0.0.1 only; every run is bounded by --duration.
"""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RINGWAY = os.environ.get("RINGWAY_BIN") or os.path.join(ROOT, "target", "release", "ringway")
# Subject "ringway-base": another ringway build (e.g. the commit before a
# change) measured in the same rounds, for A/B ratios (it must support the
# scenarios asked for: TLS ones need a build with TLS).
RINGWAY_BASE = os.environ.get("RINGWAY_BASE_BIN")
WRK_DIR = os.path.join(ROOT, "scripts", "wrk")
OUT_DIR = os.path.join(ROOT, "bench-results")
TICK = os.sysconf("SC_CLK_TCK")

SCENARIOS = {
    # name: (path, connections, wrk script, routes)
    "small": ("/", 50, None, 1),
    "4k": ("/4k", 50, None, 1),
    "64k": ("/64k", 50, None, 1),
    "post4k": ("/post", 50, "post4k.lua", 1),
    "c1000": ("/", 1000, None, 1),
    "newconn": ("/", 50, "close.lua", 1),
    "routes10k": ("/", 50, "hosts.lua", 10000),
    # The same request stream as routes10k (wrk's Lua host rotation, which
    # slows the client) against one catch-all route: routes10k ÷ hosts1 is
    # what 10,000 routes cost, with nothing else changed.
    "hosts1": ("/", 50, "hosts.lua", 1),
    # TLS (ECDSA P-256 certificate, TLS 1.3, keep-alive upstreams):
    "https": ("/", 50, None, 1),        # HTTPS keep-alive with wrk
    "tlsnew": ("/", 1, None, 1),        # a full handshake per request (openssl s_time -new: no resumption)
    "h2": ("/", 10, None, 1),           # HTTP/2 over TLS: h2load -c10 -m10 (ALPN h2)
}
TLS_SCENARIOS = {"https", "tlsnew", "h2"}
# Policy scenarios: small GETs through a route with one policy (ringway
# only: CPU per request against "small", the same request with none).
# name: (the route's policy fields, wrk request headers)
BENCH_PASSWORD_HASH = "$2b$10$wy.PHUgTcUo/ejgCA59ho.aUHZKztwiFpibMgdi3OSFNIifthaEPe"  # "bench-pass", cost 10
POLICIES = {
    "pol-bearer": ({"auth": {"type": "bearer",
                             "tokens": ["7137e16f75a1d75b6fd65930672814806cdc1a0d6e0aa38611afc996a402258b"]}},
                   ["Authorization: Bearer bench-token"]),
    "pol-basic": ({"auth": {"type": "basic", "users": {"bench": BENCH_PASSWORD_HASH}}},
                  ["Authorization: Basic YmVuY2g6YmVuY2gtcGFzcw=="]),
    "pol-rate": ({"rateLimit": {"requestsPerSecond": 1000000, "burst": 1000000}}, []),
    "pol-cors": ({"cors": {"allowOrigins": ["https://app.example.com"]}}, ["Origin: https://app.example.com"]),
}
for _name in POLICIES:
    SCENARIOS[_name] = ("/", 50, None, 1)
# Cache hits: 4 KiB answers served from each proxy's response cache
# (ringway "cache", nginx proxy_cache, HAProxy's cache); the backend sees
# one request per proxy.
SCENARIOS["cache"] = ("/4k", 50, None, 1)
SUBJECTS = ["ringway", "nginx", "haproxy", "haproxy-tcp"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def tree_pids(pid):
    pids = [pid]
    i = 0
    while i < len(pids):
        p = pids[i]
        i += 1
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def cpu_ticks(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


def rss_kb(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def core_busy(core):
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return sum(v) - idle, sum(v)
    return 0, 1


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


S_TIME_CLIENTS = 8


def run_s_time(port, path, duration):
    """Full TLS handshakes, one request each, no session resumption:
    S_TIME_CLIENTS `openssl s_time -new` clients at once (one alone leaves
    the proxy idle between connections, measuring wake-ups, not handshakes)."""
    cmd = ["taskset", "-c", "0", "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
           "-time", str(duration), "-www", path]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(S_TIME_CLIENTS)]
    n, outs = 0, []
    for p in procs:
        out, _ = p.communicate(timeout=duration + 30)
        outs.append(out)
        m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
        n += int(m.group(1)) if m else 0
    return {"raw": "\n".join(outs), "requests": n, "rps": n / max(duration, 1), "p50_us": None, "p99_us": None,
            "non2xx": 0, "socket_errors": 0}


def run_h2load(port, path, conns, duration):
    """HTTP/2 over TLS: `conns` connections, 10 streams at once on each."""
    cmd = ["taskset", "-c", "0", "h2load", f"-c{conns}", "-m10", "-D", str(duration),
           f"https://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    res = {"raw": out, "p50_us": None, "p99_us": None}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    res["requests"] = int(m.group(2)) if m else 0
    res["socket_errors"] = int(m.group(4)) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res["non2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    res["p50_us"] = parse_latency(m.group(1)) if m else None  # h2load gives the mean, not percentiles
    return res


def run_wrk(port, path, conns, script, duration, tls=False, headers=()):
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", os.path.join(WRK_DIR, script)]
    cmd.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    res = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}_us"] = parse_latency(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


class Backend:
    """nginx, one worker on core 0, serving 12 B, 4 KiB and 64 KiB."""

    def __init__(self, tmp):
        self.port = free_port()
        root = os.path.join(tmp, "www")
        os.makedirs(root, exist_ok=True)
        # nginx workers run as an unprivileged user: the files must be readable.
        os.chmod(tmp, 0o755)
        os.chmod(root, 0o755)
        for name, size in (("4k", 4096), ("64k", 65536)):
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"x" * size)
            os.chmod(os.path.join(root, name), 0o644)
        conf = os.path.join(tmp, "backend.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {tmp}/backend.pid; error_log {tmp}/backend.err warn;
events {{ worker_connections 9000; }}
http {{ access_log off; keepalive_requests 10000000; keepalive_timeout 120s;
  server {{ listen 127.0.0.1:{self.port} backlog=8192 reuseport; root {root};
    location = / {{ return 200 "hello world\\n"; }}
    location = /post {{ client_body_buffer_size 64k; return 200 "hello world\\n"; }}
    location / {{ }} }} }}
""")
        self.proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", tmp, "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def stop(self):
        stop(self.proc)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def hosts(n):
    return [f"h{i}.bench.local" for i in range(n)] if n > 1 else []


def make_cert(tmp):
    """One ECDSA P-256 certificate for every subject (and a combined PEM for HAProxy)."""
    cert, key, both = (os.path.join(tmp, n) for n in ("cert.pem", "key.pem", "both.pem"))
    if not os.path.exists(both):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=bench.local",
                        "-addext", "subjectAltName=DNS:bench.local,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=30)
        with open(both, "w") as f:
            f.write(open(cert).read() + open(key).read())
        for p in (cert, key, both):
            os.chmod(p, 0o644)
    return cert, key, both


HAPROXY_CACHE = "cache c\n  total-max-size 64\n  max-object-size 1048576\n  max-age 300"
HAPROXY_CACHE_USE = "http-request cache-use c\n  http-response cache-store c"


def start_subject(name, tmp, backend_port, routes, driver, tls=False, policy=None, cache=False, admin=None):
    """Starts a proxy; returns (process, port), the port being the TLS one when `tls`.
    With `admin` (a port), ringway also serves its API there and keeps a state file."""
    port = free_port()
    tls_port = free_port() if tls else None
    cert, key, both = make_cert(tmp) if tls else (None, None, None)
    names = hosts(routes)
    if name.startswith("ringway"):
        if names:
            rs = [{"vHost": h, "backends": [{"hostname": "127.0.0.1", "port": backend_port}],
                   "health": {"intervalMs": 0}} for h in names]
        else:
            rs = [{"vHost": "*", "backends": [{"hostname": "127.0.0.1", "port": backend_port}],
                   "health": {"intervalMs": 0}, **(policy or {})}]
        conf = os.path.join(tmp, "ringway.json")
        cfg = {"listen": [f"127.0.0.1:{port}"], "workers": 1, "routes": rs, "limits": {"maxConnections": 9000}}
        if admin:
            cfg["admin"] = {"listen": f"127.0.0.1:{admin}"}
        if tls:
            cfg["tls"] = {"listen": [f"127.0.0.1:{tls_port}"], "minVersion": "1.3",
                          "certificates": [{"cert": cert, "key": key, "default": True}]}
        with open(conf, "w") as f:
            json.dump(cfg, f)
        binary = RINGWAY_BASE if name == "ringway-base" else RINGWAY
        if not binary:
            raise SystemExit("bench: ringway-base needs RINGWAY_BASE_BIN")
        cmd = ["taskset", "-c", "1", binary, "run", "--config", conf, "--workers", "1", "--driver", driver]
        env = dict(os.environ, RINGWAY_LOG="warn")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "ringway.err"), "w"), env=env)
    elif name == "nginx":
        conf = os.path.join(tmp, "proxy-nginx.conf")
        tls_listen = (f"listen 127.0.0.1:{tls_port} ssl http2; ssl_certificate {cert}; ssl_certificate_key {key}; "
                      f"ssl_protocols TLSv1.3; ssl_session_cache shared:SSL:10m;") if tls else ""
        server_name = ""
        if names:
            server_name = "server_name " + " ".join(names) + ";"
        cache_path = f"proxy_cache_path {tmp}/nginx-cache keys_zone=c:10m max_size=64m;" if cache else ""
        cache_use = "proxy_cache c; proxy_cache_valid 200 5m;" if cache else ""
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {tmp}/proxy-nginx.pid; error_log {tmp}/proxy-nginx.err warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 9000; }}
http {{ access_log off; keepalive_requests 10000000; server_names_hash_max_size 65536; server_names_hash_bucket_size 128;
  upstream be {{ server 127.0.0.1:{backend_port}; keepalive 256; keepalive_requests 10000000; }} {cache_path}
  server {{ listen 127.0.0.1:{port} backlog=8192; {tls_listen} {server_name}
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; {cache_use} }} }} }}
""")
        proc = subprocess.Popen(["taskset", "-c", "1", "nginx", "-p", tmp, "-c", conf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        tcp = name == "haproxy-tcp"
        conf = os.path.join(tmp, "haproxy.cfg")
        route = "default_backend be"
        if names and not tcp:
            mp = os.path.join(tmp, "hosts.map")
            with open(mp, "w") as f:
                f.writelines(f"{h} be\n" for h in names)
            route = f"use_backend %[req.hdr(host),lower,map({mp},none)]"
        with open(conf, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 9000
defaults
  mode {"tcp" if tcp else "http"}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  {"" if tcp else "http-reuse always"}
frontend fe
  bind 127.0.0.1:{port}
  {f"bind 127.0.0.1:{tls_port} ssl crt {both} ssl-min-ver TLSv1.3 alpn h2,http/1.1" if tls else ""}
  {route}
{HAPROXY_CACHE if cache else ""}
backend be
  {HAPROXY_CACHE_USE if cache else ""}
  server s1 127.0.0.1:{backend_port}
backend none
""")
        proc = subprocess.Popen(["taskset", "-c", "1", "haproxy", "-f", conf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    if admin:
        wait_port(admin, proc)
    if tls:
        wait_port(tls_port, proc)
        return proc, tls_port
    return proc, port


def api_call(port, method, path, body=b""):
    """One admin API call; returns (status, seconds)."""
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), time.perf_counter() - t


def routes_memory(subjects, routes, writes):
    """RSS with `routes` routes (one backend each), after start and, for
    ringway, after `writes` API writes (each durable in its state file and
    acked by the worker), beside nginx and HAProxy with as many server
    names; and the API write latency as a client sees it."""
    tmp = tempfile.mkdtemp(prefix="ringway-routes-")
    backend = Backend(tmp)
    rows = []
    try:
        for subject in subjects:
            admin = free_port() if subject.startswith("ringway") else None
            proc, port = start_subject(subject, tmp, backend.port, routes, "uring", admin=admin)
            try:
                # One request, so each has served before it is measured.
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"GET / HTTP/1.1\r\nHost: h0.bench.local\r\nConnection: close\r\n\r\n")
                    if not c.recv(4096).startswith(b"HTTP/1.1 200"):
                        raise SystemExit(f"routes-memory: {subject} did not answer 200")
                time.sleep(1.0)
                row = {"subject": subject, "routes": routes, "rss_start_kb": rss_kb(proc.pid)}
                if admin:
                    times = []
                    add = json.dumps({"id": "x", "hostname": "127.0.0.1", "port": backend.port}).encode()
                    for i in range(writes):
                        if i % 2 == 0:
                            st, dt = api_call(admin, "POST", "/api/v1/routes/h0.bench.local/backends", add)
                        else:
                            st, dt = api_call(admin, "DELETE", "/api/v1/routes/h0.bench.local/backends/x")
                        if st not in (201, 204):
                            raise SystemExit(f"routes-memory: API write {i} answered {st}")
                        times.append(dt * 1e3)
                    times.sort()
                    time.sleep(1.0)
                    row.update(writes=writes, rss_after_writes_kb=rss_kb(proc.pid),
                               write_p50_ms=times[len(times) // 2], write_p99_ms=times[int(len(times) * 0.99)],
                               write_max_ms=times[-1])
                    # A restart: it resumes from the state file the writes made.
                    stop(proc)
                    proc, port = start_subject(subject, tmp, backend.port, routes, "uring", admin=free_port())
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                        c.sendall(b"GET / HTTP/1.1\r\nHost: h0.bench.local\r\nConnection: close\r\n\r\n")
                        if not c.recv(4096).startswith(b"HTTP/1.1 200"):
                            raise SystemExit(f"routes-memory: {subject} did not answer 200 after a restart")
                    time.sleep(1.0)
                    row.update(rss_after_restart_kb=rss_kb(proc.pid))
                rows.append(row)
                extra = (f" -> {row['rss_after_writes_kb'] / 1024:.1f} MiB after {writes} writes "
                         f"(write p50 {row['write_p50_ms']:.2f} ms, p99 {row['write_p99_ms']:.2f} ms)"
                         f" -> {row['rss_after_restart_kb'] / 1024:.1f} MiB after a restart") if admin else ""
                print(f"  {subject:13} {routes} routes: RSS {row['rss_start_kb'] / 1024:.1f} MiB{extra}", flush=True)
            finally:
                stop(proc)
    finally:
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = next((r for r in rows if r["subject"] == "nginx"), None)
    for r in rows:
        r["vs_nginx"] = r["rss_start_kb"] / base["rss_start_kb"] if base else None
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "routes-memory.json"), "w") as f:
        json.dump(rows, f, indent=1)


def run_one(subject, scenario, tmp, backend_port, duration, driver):
    path, conns, script, routes = SCENARIOS[scenario]
    tls = scenario in TLS_SCENARIOS
    policy, headers = POLICIES.get(scenario, (None, []))
    cache = scenario == "cache"
    if cache:
        policy = {"cache": {"ttlMs": 300000}}
    proc, port = start_subject(subject, tmp, backend_port, routes, driver, tls, policy, cache)
    try:
        # Warm up (pools, caches), then measure.
        run_wrk(port, path, min(conns, 50), script, 1, tls, headers)
        c0 = cpu_ticks(proc.pid)
        b0 = core_busy(0)
        if scenario == "tlsnew":
            r = run_s_time(port, path, duration)
        elif scenario == "h2":
            r = run_h2load(port, path, conns, duration)
        else:
            r = run_wrk(port, path, conns, script, duration, tls, headers)
        b1 = core_busy(0)
        c1 = cpu_ticks(proc.pid)
        r["rss_kb"] = rss_kb(proc.pid)
    finally:
        stop(proc)
    if r["requests"] == 0 or r["non2xx"] or r["socket_errors"]:
        sys.stderr.write(r["raw"])
        raise SystemExit(f"bench: {subject} failed {scenario}: {r['requests']} requests, "
                         f"{r['non2xx']} non-2xx, {r['socket_errors']} socket errors")
    r["cpu_us_per_req"] = (c1 - c0) / TICK * 1e6 / r["requests"]
    r["core0_util"] = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
    del r["raw"]
    return r


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def chart(scenario, rows):
    dat = os.path.join(OUT_DIR, f"{scenario}.dat")
    with open(dat, "w") as f:
        for row in rows:
            f.write(f"{row['subject']} {row['rps']:.0f} {row['cpu_us_per_req']:.2f}\n")
    png = os.path.join(OUT_DIR, f"{scenario}.png")
    script = f"""set terminal pngcairo size 900,420 font ",10"
set output "{png}"
set multiplot layout 1,2 title "{scenario}: median of rounds"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set xtics font ",8"
set title "requests/s (higher is better)"
plot "{dat}" using 0:2:xtic(1) with boxes notitle
set title "proxy CPU us per request (lower is better)"
plot "{dat}" using 0:3:xtic(1) with boxes notitle
unset multiplot
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        try:
            subprocess.run(["gnuplot"], input=script.replace("pngcairo", "png"), text=True, check=True,
                           capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            print(f"bench: no chart for {scenario}: {e}", file=sys.stderr)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def h2_get(c):
    """One HTTP/2 GET / on a fresh connection (ALPN h2); returns once its
    stream has ended. HPACK: static-table :method GET, :path /, :scheme
    https, and a literal :authority."""
    block = b"\x82\x84\x87\x41" + bytes([len(b"bench.local")]) + b"bench.local"
    c.sendall(H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, block))
    buf = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        data = c.recv(65536)
        if not data:
            return False
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + n:]
            if ftype == 4 and not flags & 1:
                c.sendall(h2_frame(4, 1, 0))  # ACK the server's SETTINGS
            if stream == 1 and ftype in (0, 1) and flags & 1:
                return True
    return False


def idle_memory(subjects, conns, tls=False, h2=False):
    """RSS growth per idle keep-alive client connection: open `conns`
    connections, one request each, keep them open, measure. With `tls`,
    TLS 1.3 connections (full handshake each) to each subject's TLS port;
    with `h2`, HTTP/2 over them (ALPN h2, one stream each)."""
    import selectors
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if h2:
        tls = True
        ctx.set_alpn_protocols(["h2"])

    def connect(port):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        return ctx.wrap_socket(c, server_hostname="bench.local") if tls else c
    tmp = tempfile.mkdtemp(prefix="ringway-idle-")
    backend = Backend(tmp)
    rows = []
    req = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n"
    try:
        for subject in subjects:
            driver = "epoll" if subject == "ringway-epoll" else "uring"
            proc, port = start_subject(subject, tmp, backend.port, 1, driver, tls)
            socks = []
            try:
                # Warm the proxy (pools, first buffers) before the baseline.
                for _ in range(20):
                    with connect(port) as c:
                        if h2:
                            h2_get(c)
                        else:
                            c.sendall(req)
                            c.recv(4096)
                time.sleep(0.3)
                before = rss_kb(proc.pid)
                for _ in range(conns):
                    c = connect(port)
                    if h2:
                        if c.selected_alpn_protocol() != "h2" or not h2_get(c):
                            raise SystemExit(f"idle-memory: {subject}: HTTP/2 request failed")
                        socks.append(c)
                        continue
                    c.sendall(req)
                    if tls:
                        # One at a time: a TLS response read is simplest blocking.
                        if not c.recv(4096).startswith(b"HTTP/1.1 200"):
                            raise SystemExit(f"idle-memory: {subject}: TLS request failed")
                    socks.append(c)
                if tls:
                    socks_pending = []
                else:
                    socks_pending = socks
                sel = selectors.DefaultSelector()
                pending = {c.fileno(): c for c in socks_pending}
                for c in socks_pending:
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
                deadline = time.time() + 60
                while pending and time.time() < deadline:
                    for key, _ in sel.select(timeout=1):
                        data = key.fileobj.recv(4096)
                        if data.startswith(b"HTTP/1.1 200") or not data:
                            sel.unregister(key.fileobj)
                            pending.pop(key.fileobj.fileno(), None)
                if pending:
                    raise SystemExit(f"idle-memory: {subject}: {len(pending)} connections got no response")
                # Idle means idle: let pools and timers settle before reading RSS.
                time.sleep(3.0)
                after = rss_kb(proc.pid)
                per = (after - before) * 1024 / conns
                rows.append({"subject": subject, "connections": conns, "rss_before_kb": before,
                             "rss_after_kb": after, "bytes_per_connection": per})
                print(f"  {subject:13} {per:8.0f} bytes per idle connection ({before} -> {after} KiB)", flush=True)
            finally:
                for c in socks:
                    c.close()
                stop(proc)
    finally:
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = next((r for r in rows if r["subject"] == "nginx"), None)
    for r in rows:
        r["vs_nginx"] = r["bytes_per_connection"] / base["bytes_per_connection"] if base and base["bytes_per_connection"] else None
    os.makedirs(OUT_DIR, exist_ok=True)
    name = "idle-memory-h2.json" if h2 else "idle-memory-tls.json" if tls else "idle-memory.json"
    with open(os.path.join(OUT_DIR, name), "w") as f:
        json.dump(rows, f, indent=1)
    print()
    print("| subject | bytes per idle connection | ÷ nginx |")
    print("|---|---:|---:|")
    for r in rows:
        ratio = f"{r['vs_nginx']:.2f}" if r["vs_nginx"] else "-"
        print(f"| {r['subject']} | {r['bytes_per_connection']:.0f} | {ratio} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle-memory", type=int, default=0, help="measure memory per idle connection with N connections")
    ap.add_argument("--tls", action="store_true", help="with --idle-memory: TLS connections")
    ap.add_argument("--h2", action="store_true", help="with --idle-memory: HTTP/2 over TLS connections")
    ap.add_argument("--routes-memory", type=int, default=0,
                    help="RSS with N routes after start and after --writes API writes (ringway), beside nginx/HAProxy")
    ap.add_argument("--writes", type=int, default=1000, help="with --routes-memory: API writes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--subjects", default=",".join(SUBJECTS + ["ringway-epoll"]))
    ap.add_argument("--interleave", action="store_true",
                    help="run every scenario in each round (pairs scenarios by round, e.g. small vs routes10k)")
    args = ap.parse_args()
    if args.routes_memory:
        subs = [x for x in args.subjects.split(",") if x and x not in ("haproxy-tcp", "ringway-epoll")]
        routes_memory(subs, args.routes_memory, args.writes)
        return
    if args.idle_memory:
        subs = [x for x in args.subjects.split(",") if x and x != "haproxy-tcp"]
        idle_memory(subs, args.idle_memory, args.tls, args.h2)
        return
    scenarios = [s for s in args.scenarios.split(",") if s]
    subjects = [s for s in args.subjects.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s}")
    os.makedirs(OUT_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ringway-bench-")
    results = []
    backend = Backend(tmp)
    try:
        def subjects_of(scenario):
            return [s for s in subjects
                    if not ((scenario in ("routes10k", "hosts1", "cache") or scenario in TLS_SCENARIOS) and s == "haproxy-tcp")
                    and not (scenario in POLICIES and not s.startswith("ringway"))]

        def measure(scenario, rnd, runs):
            for s in subjects_of(scenario):
                driver = "epoll" if s == "ringway-epoll" else "uring"
                r = run_one(s, scenario, tmp, backend.port, args.duration, driver)
                runs[s].append(r)
                print(f"  {scenario:9} round {rnd + 1} {s:13} {r['rps']:9.0f} req/s "
                      f"{r['cpu_us_per_req']:6.2f} us/req p99 {r['p99_us'] or 0:8.0f} us", flush=True)

        all_runs = {sc: {s: [] for s in subjects_of(sc)} for sc in scenarios}
        if args.interleave:
            for rnd in range(args.rounds):
                for scenario in scenarios:
                    measure(scenario, rnd, all_runs[scenario])
        for scenario in scenarios:
            subs = subjects_of(scenario)
            runs = all_runs[scenario]
            if not args.interleave:
                for rnd in range(args.rounds):
                    measure(scenario, rnd, runs)
            rows = []
            for s in subs:
                rs = runs[s]
                rows.append({
                    "scenario": scenario, "subject": s, "rounds": len(rs),
                    "rps": median(r["rps"] for r in rs),
                    "p50_us": median(r["p50_us"] for r in rs),
                    "p99_us": median(r["p99_us"] for r in rs),
                    "cpu_us_per_req": median(r["cpu_us_per_req"] for r in rs),
                    "rss_kb": median(r["rss_kb"] for r in rs),
                    "core0_util": median(r["core0_util"] for r in rs),
                })
            # Ratios pair each subject with nginx in the same round (they
            # run back to back), then take the median over rounds: on a VM
            # whose speed drifts between rounds this is steadier than a
            # ratio of two medians taken at different moments.
            base = runs.get("nginx")
            for r in rows:
                rs = runs[r["subject"]]
                r["cpu_per_round"] = [round(x["cpu_us_per_req"], 2) for x in rs]
                r["rps_per_round"] = [round(x["rps"]) for x in rs]
                if base:
                    r["rps_vs_nginx"] = median(a["rps"] / b["rps"] for a, b in zip(rs, base))
                    r["cpu_vs_nginx"] = median(a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in zip(rs, base))
                else:
                    r["rps_vs_nginx"] = r["cpu_vs_nginx"] = None
            results.extend(rows)
            chart(scenario, rows)
        for one, what in (("small", "1 route (small: plain wrk)"), ("hosts1", "1 route (hosts1: the same wrk script)")):
            if not (args.interleave and one in all_runs and "routes10k" in all_runs):
                continue
            for s in all_runs["routes10k"]:
                pairs = list(zip(all_runs["routes10k"][s], all_runs[one].get(s, [])))
                if pairs:
                    ratio = median(a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in pairs)
                    print(f"  {s}: CPU per request with 10,000 routes ÷ {what}, median of paired rounds: {ratio:.3f}")
    finally:
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"machine": f"{os.cpu_count()} cores, {os.uname().release}", "rounds": args.rounds,
            "duration_s": args.duration, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # Keep earlier results for scenarios this run did not measure, so a
    # partial re-run (--scenarios) refreshes only what it ran.
    try:
        with open(os.path.join(OUT_DIR, "summary.json")) as f:
            old = json.load(f).get("results", [])
        kept = [r for r in old if r.get("scenario") not in scenarios]
        order = list(SCENARIOS)
        results = sorted(kept + results, key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else 99)
    except (OSError, ValueError):
        pass
    with open(os.path.join(OUT_DIR, "summary.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    cols = ["scenario", "subject", "rps", "p50_us", "p99_us", "cpu_us_per_req", "rss_kb", "core0_util",
            "rps_vs_nginx", "cpu_vs_nginx"]
    with open(os.path.join(OUT_DIR, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(results)
    lines = ["| scenario | subject | req/s | p50 µs | p99 µs | CPU µs/req | RSS MiB | core0 | req/s ÷ nginx | CPU ÷ nginx |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"
        lines.append(f"| {r['scenario']} | {r['subject']} | {fmt(r['rps'], '.0f')} | {fmt(r['p50_us'], '.0f')} | "
                     f"{fmt(r['p99_us'], '.0f')} | {fmt(r['cpu_us_per_req'], '.2f')} | {fmt(r['rss_kb'] / 1024, '.1f')} | "
                     f"{fmt(r['core0_util'] * 100, '.0f')}% | {fmt(r['rps_vs_nginx'], '.2f')} | {fmt(r['cpu_vs_nginx'], '.2f')} |")
    table = "\n".join(lines)
    with open(os.path.join(OUT_DIR, "summary.md"), "w") as f:
        f.write(f"{meta['time']} · {meta['machine']} · medians of {args.rounds} rounds × {args.duration} s "
                f"(ratios: median over rounds of each round's ratio to nginx)\n\n{table}\n")
    print()
    print(table)


if __name__ == "__main__":
    main()
