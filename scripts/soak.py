#!/usr/bin/env python3
"""Soak test for ringway (called by scripts/soak.sh).

Starts its own backends (Python subprocesses on 127.0.0.1 that answer GET,
POST — Content-Length or chunked — and WebSocket upgrades with an echo) and
a ringway on a generated config (port 0 everywhere, an admin listener with a
token, active health checks with a short downIntervalMs). Then, for the
duration, at a modest rate (a soak, not a benchmark):

  * load, on stable routes only: keep-alive GETs (plain, chunked responses,
    a stripPrefix path rule), a new connection per GET, POSTs with
    Content-Length bodies, chunked POSTs streamed in pieces, WebSocket
    sessions (upgrade, echoes of 0 B to 70 KB, ping, close);
  * API churn, on routes no load uses: add a route, add a backend,
    maintenance on/off, remove the backend, replace the route, remove it —
    each step checked with a request through the proxy;
  * every CYCLE (20 s): SIGKILL one of the stable routes' backends (s0..s3
    in turn), start it again on the same port 0.7 s later; then a quiet
    phase without load (4 s, longer until a sample has seen 2.2 s without
    any request in flight): the quiet points where buffers, in-flight
    counts and connections must be back at rest;
  * every second: ringway's VmRSS, open fds, CPU, and from GET /api/v1/stats
    openConnections, buffers.inUse, buffers.pooled, upstreamIdleConnections
    and the backends' inFlight (blank when the build has no such field),
    plus the client's counts, latency and the machine's CPU.

Writes a CSV (one row a second; default bench-results/soak-TIMESTAMP.csv),
beside it a PNG chart (pure Python: zlib and a 5x7 bitmap font; redraw one
with `soak.py --plot FILE.csv`), a log of every error and slow request, and
ringway's stderr. Fails (exit 1) on any unexpected error, on growth (RSS,
fds, buffers, upstream idle connections) from the second quarter to the
last, or on levels that do not fall back at quiet points and after the load
stops. Expected, and counted apart: a POST that gets 502 because it was in
flight when its backend was SIGKILLed or went out within KILL_WINDOW after
it (not retryable once its body is on the wire); a WebSocket session
through the backend that was SIGKILLed.

Everything it starts it stops (at the end, on failure, on SIGINT/SIGTERM;
children also get SIGKILL if this process dies: PR_SET_PDEATHSIG).
"""

import argparse
import base64
import collections
import csv
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
IO_TIMEOUT = 10.0
# A POST in flight at its backend's SIGKILL, or sent up to this long after
# it, may fail (502): ringway does not retry a non-idempotent request once
# its body is on the wire, and reuses a pooled connection that rested under
# 500 ms without checking it (src/upstream: PEEK_AFTER), so a streamed body
# can go out on a connection to the dead process. Later ones must succeed.
KILL_WINDOW = 1.0
# Seconds without load before a sample counts as a quiet point (ringway's
# workers flush their stats every second).
SETTLED = 2.2


def set_pdeathsig():
    """SIGKILL this process when its parent goes (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------
# HTTP/1.1 and WebSocket on raw sockets (shared by the backends and clients)
# ---------------------------------------------------------------------------

class CleanEOF(EOFError):
    """The peer closed before sending a byte of the next message."""


class Reader:
    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def until(self, sep, limit=1 << 20, clean_eof=False):
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("head too long")
            start = max(0, len(self.buf) - len(sep) + 1)
            try:
                self._fill()
            except EOFError:
                if clean_eof and not self.buf:
                    raise CleanEOF("closed before a byte") from None
                raise

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def to_eof(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
        out = bytes(self.buf)
        self.buf.clear()
        return out


def parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


def read_chunked(r):
    out = bytearray()
    while True:
        line = r.until(b"\r\n", limit=4096)
        size = int(line[:-2].split(b";")[0].strip(), 16)
        if size == 0:
            while r.until(b"\r\n", limit=8192) != b"\r\n":
                pass  # trailers
            return bytes(out)
        out += r.exact(size)
        if r.exact(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")


def read_body(r, headers, allow_until_close):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return read_chunked(r)
    if "content-length" in headers:
        return r.exact(int(headers["content-length"]))
    return r.to_eof() if allow_until_close else b""


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(op, payload, mask):
    n = len(payload)
    b0 = 0x80 | op
    m = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, m | n])
    elif n < 65536:
        hdr = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return hdr + key + ws_mask(payload, key)
    return hdr + payload


def ws_read(r):
    b0, b1 = r.exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", r.exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", r.exact(8))[0]
    key = r.exact(4) if b1 & 0x80 else None
    data = r.exact(n)
    if key:
        data = ws_mask(data, key)
    return bool(b0 & 0x80), b0 & 0x0F, key is not None, data


# ---------------------------------------------------------------------------
# Backend process: `soak.py --backend NAME PORT PARENT_PID`
# ---------------------------------------------------------------------------

def backend_main(name, port, parent):
    set_pdeathsig()
    if os.getppid() != parent:
        return  # the parent is already gone
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(120)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            r = Reader(s)
            try:
                while self.one(s, r):
                    pass
            except (OSError, EOFError, ValueError):
                pass

        def one(self, s, r):
            try:
                head = r.until(b"\r\n\r\n", limit=65536, clean_eof=True)
            except CleanEOF:
                return False
            first, h = parse_head(head)
            method, target, version = first.split(" ", 2)
            body = read_body(r, h, False)
            path, _, query = target.partition("?")
            q = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
            close = h.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            if "websocket" in h.get("upgrade", "").lower():
                s.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Accept: {ws_accept(h['sec-websocket-key'])}\r\n"
                           f"X-Served-By: {name}\r\n\r\n").encode())
                self.echo(s, r)
                return False
            if path == "/health":
                payload = b"ok\n"
            elif method == "POST":
                payload = f"{name} POST {path} {len(body)} {hashlib.sha1(body).hexdigest()}\n".encode()
            else:
                payload = f"{name} {method} {path}\n".encode() + b"x" * int(q.get("size", "0") or 0)
            hdr = f"HTTP/1.1 200 OK\r\nX-Served-By: {name}\r\nContent-Type: text/plain\r\n"
            if close:
                hdr += "Connection: close\r\n"
            if q.get("chunked") == "1" and len(payload) > 4:
                third = len(payload) // 3
                parts = [payload[:third], payload[third:2 * third], payload[2 * third:]]
                out = (hdr + "Transfer-Encoding: chunked\r\n\r\n").encode()
                out += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
            else:
                out = (hdr + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
            s.sendall(out)  # one write: a SIGKILL never leaves half a response
            return not close

        def echo(self, s, r):
            while True:
                fin, op, masked, data = ws_read(r)
                if not masked:
                    return  # a client frame must be masked (RFC 6455 5.1)
                if op == 8:
                    s.sendall(ws_frame(8, data[:2], False))
                    s.shutdown(socket.SHUT_WR)
                    return
                if op == 9:
                    s.sendall(ws_frame(10, data, False))
                elif op in (1, 2):
                    s.sendall(ws_frame(op, data, False))

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 256

    with Server(("127.0.0.1", port), Handler) as srv:
        srv.serve_forever(poll_interval=0.5)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def backend_port(taken):
    """A free port below the kernel's ephemeral range: a backend restarts on
    the same port, and there no outgoing connection or `bind(0)` of anyone
    on the machine can take it while the backend is down."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    lo, hi = (10000, low - 1) if low > 12000 else (low // 2, low - 1)
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(lo, hi)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def wait_port(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f} s")


def stop_proc(proc, timeout=5.0):
    """SIGTERM, bounded wait, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    return proc.returncode


class BackendProc:
    def __init__(self, name, port, tmp):
        self.name, self.port, self.tmp = name, port, tmp
        self.proc = None
        self.starts = 0

    def start(self):
        """Starts the backend; a bind that fails (the port briefly held by
        someone else) is tried again for about 5 s."""
        for attempt in range(6):
            err = open(os.path.join(self.tmp, f"backend-{self.name}.err"), "a")
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--backend", self.name, str(self.port), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            err.close()
            self.starts += 1
            try:
                wait_port(self.port, self.proc)
                return
            except RuntimeError as e:
                stop_proc(self.proc, timeout=2)
                if attempt == 5:
                    raise RuntimeError(f"backend {self.name} did not start on port {self.port}: {e}") from None
                time.sleep(1.0)

    def stderr(self):
        try:
            with open(os.path.join(self.tmp, f"backend-{self.name}.err"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self):
        if self.proc:
            stop_proc(self.proc, timeout=3)

    def config(self, bid=None):
        return {"id": bid or self.name, "hostname": "127.0.0.1", "port": self.port}


def ringway_preexec():
    set_pdeathsig()


class Ringway:
    def __init__(self, binary, cfg, tmp, workers):
        self.tmp = tmp
        self.cfg_path = os.path.join(tmp, "soak.json")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        self.out_path = os.path.join(tmp, "ringway.out")
        self.log_path = os.path.join(tmp, "ringway.log")
        out = open(self.out_path, "w")
        log = open(self.log_path, "w")
        env = dict(os.environ, RINGWAY_LOG=os.environ.get("RINGWAY_LOG", "warn"))
        self.proc = subprocess.Popen([binary, "run", "--config", self.cfg_path, "--workers", str(workers)],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=log, env=env,
                                     preexec_fn=ringway_preexec)
        out.close()
        log.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        line = None
        while time.monotonic() < deadline and line is None:
            if self.proc.poll() is not None:
                break
            with open(self.out_path) as f:
                for ln in f:
                    if ln.startswith("listening proxy="):
                        line = ln.strip()
            time.sleep(0.05)
        if line is None:
            stop_proc(self.proc)
            raise RuntimeError(f"ringway did not print its listening line within 20 s (exit {self.proc.returncode});"
                               f" log:\n{self.log()[-3000:]}")
        words = line.split(" ")
        self.proxy = words[1].split("=", 1)[1].split(",")[0]
        self.admin = next(w.split("=", 1)[1] for w in words if w.startswith("admin="))
        self.proxy_addr = (self.proxy.rsplit(":", 1)[0], int(self.proxy.rsplit(":", 1)[1]))
        self.admin_addr = (self.admin.rsplit(":", 1)[0], int(self.admin.rsplit(":", 1)[1]))

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None


# ---------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def host_cpu():
    """(busy, total) jiffies of every core, and the runnable task count."""
    busy = total = running = 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])
                busy = total - v[3] - v[4]
            elif line.startswith("procs_running"):
                running = int(line.split()[1])
    return busy, total, running


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# ---------------------------------------------------------------------------
# The soak
# ---------------------------------------------------------------------------

class Fail(Exception):
    pass


class Soak:
    LOADS = ["ka_get", "new_get", "post", "post_chunked", "ws_session", "ws_msg", "churn_get", "api"]
    ERROR_COLS = ["expected_post_kill", "expected_ws_kill", "err_status", "err_conn", "err_timeout",
                  "err_body", "err_ws", "err_api", "err_churn"]

    def __init__(self, args, rw, backends, churn_backends, token, errlog):
        self.args = args
        self.rw = rw
        self.backends = backends
        self.churn_backends = churn_backends
        self.token = token
        self.errlog = errlog
        self.lock = threading.Lock()
        self.ok = collections.Counter()
        self.err = collections.Counter()        # by column (ERROR_COLS)
        self.err_detail = collections.Counter()  # (expected?, load, kind, detail)
        self.unexpected = []                     # first few, for the summary
        self.n_unexpected = 0
        self.n_expected = 0
        self.kills = []                          # (monotonic time, backend name)
        self.stop = threading.Event()
        self.quiet = threading.Event()
        self.busy = 0
        self.last_busy = time.monotonic()
        self.client_open = 0
        self.lat = []                            # request durations since the last sample
        self.slow = 0
        self.post_after_kill = 0
        self.t0 = time.monotonic()
        self.rng_seed = args.seed

    # -- bookkeeping --------------------------------------------------------

    def now(self):
        return time.monotonic() - self.t0

    def count(self, load, started=None, what=None, who=None):
        with self.lock:
            self.ok[load] += 1
            if started is not None:
                d = time.monotonic() - started
                self.lat.append(d)
                if d >= self.args.slow:
                    # Not an error (a shared 2-core machine stalls now and
                    # then), but logged with the backend for a look.
                    self.slow += 1
                    self.errlog.write(f"{time.monotonic() - self.t0:9.3f} slow       {load:12} {d * 1000:7.0f} ms "
                                      f"[{started - self.t0:.3f}..] backend={who or '?'} {what or ''}\n")

    def error(self, load, kind, detail, t_start, t_end, backend=None):
        """Records a failure; decides whether it is one of the expected kinds."""
        col = None
        with self.lock:
            kills = list(self.kills)
        if load in ("post", "post_chunked") and kind == "status_502":
            hit = [tk for tk, _ in kills if t_start <= tk + KILL_WINDOW and t_end >= tk]
            if hit:
                col = "expected_post_kill"
                if t_start > hit[-1]:
                    # Sent after the kill: a streamed body went out on a pooled
                    # connection to the dead process (not retried once sent).
                    detail = "(started after the kill: pooled connection to the dead backend) " + detail
                    with self.lock:
                        self.post_after_kill += 1
        if load == "ws_session" and kind == "ws_broken" and backend:
            if any(name == backend and t_start - 0.1 <= tk <= t_end + 0.1 for tk, name in kills):
                col = "expected_ws_kill"
        expected = col is not None
        if col is None:
            col = {"status": "err_status", "conn": "err_conn", "truncated": "err_conn", "timeout": "err_timeout",
                   "body": "err_body", "ws_broken": "err_ws", "ws": "err_ws", "api": "err_api",
                   "churn": "err_churn"}.get(kind.split("_")[0] if kind.startswith("status") else kind, "err_conn")
        rel0, rel1 = t_start - self.t0, t_end - self.t0
        last_kill = max((tk for tk, _ in kills if tk <= t_end), default=None)
        since = f" {t_end - last_kill:.2f}s after kill" if last_kill is not None else ""
        line = (f"{rel1:9.3f} {'expected  ' if expected else 'UNEXPECTED'} {load:12} {kind:12} "
                f"[{rel0:.3f}..{rel1:.3f}]{since} backend={backend or '?'} {detail}")
        with self.lock:
            self.err[col] += 1
            self.err_detail[(expected, load, kind)] += 1
            if expected:
                self.n_expected += 1
            else:
                self.n_unexpected += 1
                if len(self.unexpected) < 20:
                    self.unexpected.append(line)
            self.errlog.write(line + "\n")
            self.errlog.flush()

    def gate(self):
        """Waits while a quiet phase lasts; False once the soak stops."""
        while self.quiet.is_set() and not self.stop.is_set():
            time.sleep(0.05)
        return not self.stop.is_set()

    def enter(self):
        with self.lock:
            self.busy += 1

    def leave(self):
        with self.lock:
            self.busy -= 1
            self.last_busy = time.monotonic()

    def opened(self, d):
        with self.lock:
            self.client_open += d

    def pace(self, started, interval):
        left = started + interval / self.args.rate - time.monotonic()
        if left > 0:
            self.stop.wait(left)

    # -- HTTP client ----------------------------------------------------------

    def connect(self):
        s = socket.create_connection(self.rw.proxy_addr, timeout=IO_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened(1)
        return s

    def close(self, s):
        if s is not None:
            try:
                s.close()
            finally:
                self.opened(-1)

    @staticmethod
    def request(s, r, method, path, host, body=None, chunks=None, close=False, trailer=False):
        """One request on `s`; returns (status, headers, body, server_closes)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-soak\r\n"
        if close:
            head += "Connection: close\r\n"
        if chunks is not None:
            head += "Transfer-Encoding: chunked\r\n"
            if trailer:
                head += "Trailer: X-Soak-Sum\r\n"
            s.sendall((head + "\r\n").encode())
            for i, c in enumerate(chunks):
                # Upper-case hex and an extension now and then: ringway
                # re-frames them canonically.
                size = f"{len(c):X}" if i % 2 else f"{len(c):x}"
                ext = ";soak=1" if i % 3 == 2 else ""
                s.sendall(f"{size}{ext}\r\n".encode() + c + b"\r\n")
                if i % 2 == 1:
                    time.sleep(0.002)
            s.sendall(b"0\r\n" + (b"X-Soak-Sum: 1\r\n" if trailer else b"") + b"\r\n")
        else:
            if body is not None:
                head += f"Content-Length: {len(body)}\r\n"
            s.sendall((head + "\r\n").encode() + (body or b""))
        raw = r.until(b"\r\n\r\n", limit=65536, clean_eof=True)
        first, headers = parse_head(raw)
        status = int(first.split(" ", 2)[1])
        closes = headers.get("connection", "").lower() == "close"
        data = read_body(r, headers, closes)
        return status, headers, data, closes

    def classify_exc(self, e, got_head):
        if isinstance(e, socket.timeout):
            return "timeout"
        if isinstance(e, CleanEOF) or (not got_head and isinstance(e, (ConnectionError, EOFError))):
            return "conn"
        if isinstance(e, (EOFError, ConnectionError)):
            return "truncated"
        if isinstance(e, ValueError):
            return "body"
        return "conn"

    # -- load -----------------------------------------------------------------

    def get_target(self, rng, i):
        """A GET on a stable route: (host, path, expected backend path, allowed backends, size)."""
        size = rng.choice([0, 0, 12, 512, 4000, 8000])
        chunked = rng.random() < 0.3
        q = f"?size={size}&chunked={1 if chunked else 0}&i={i}"
        pick = rng.random()
        if pick < 0.45:
            return "a.soak", f"/ka/{i}{q}", f"/ka/{i}", {"s0", "s1", "s2"}, size
        if pick < 0.7:
            return "a.soak", f"/api/item/{i}{q}", f"/item/{i}", {"s2", "s3"}, size
        return "b.soak", f"/b/{i}{q}", f"/b/{i}", {"s1", "s2", "s3"}, size

    def check_get(self, status, headers, body, bpath, allowed, size):
        who = headers.get("x-served-by")
        if status != 200:
            return f"status_{status}", f"status {status} body {body[:120]!r}", who
        want = f"{who} GET {bpath}\n".encode() + b"x" * size
        if who not in allowed or body != want:
            return "body", f"served by {who} (allowed {sorted(allowed)}), body {len(body)} B {body[:80]!r}", who
        return None, None, who

    def loop_keepalive_get(self, tid):
        rng = random.Random(self.rng_seed * 100 + tid)
        s = r = None
        i = 0
        try:
            while self.gate():
                started = time.monotonic()
                i += 1
                host, path, bpath, allowed, size = self.get_target(rng, i)
                got_head = False
                self.enter()
                try:
                    if s is None:
                        s = self.connect()
                        r = Reader(s)
                    status, headers, body, closes = self.request(s, r, "GET", path, host)
                    got_head = True
                    kind, detail, who = self.check_get(status, headers, body, bpath, allowed, size)
                    if kind:
                        self.error("ka_get", kind, f"GET {host}{path}: {detail}", started, time.monotonic(), who)
                    else:
                        self.count("ka_get", started, f"GET {host}{path}", who)
                    if closes or kind:
                        self.close(s)
                        s = None
                except (OSError, EOFError, ValueError) as e:
                    self.error("ka_get", self.classify_exc(e, got_head), f"GET {host}{path}: {e!r}",
                               started, time.monotonic())
                    self.close(s)
                    s = None
                finally:
                    self.leave()
                self.pace(started, 0.04)
        finally:
            self.close(s)

    def loop_new_get(self, tid):
        rng = random.Random(self.rng_seed * 100 + tid)
        i = 0
        while self.gate():
            started = time.monotonic()
            i += 1
            host, path, bpath, allowed, size = self.get_target(rng, i)
            got_head = False
            s = None
            self.enter()
            try:
                s = self.connect()
                status, headers, body, _ = self.request(s, Reader(s), "GET", path, host, close=True)
                got_head = True
                kind, detail, who = self.check_get(status, headers, body, bpath, allowed, size)
                if kind:
                    self.error("new_get", kind, f"GET {host}{path}: {detail}", started, time.monotonic(), who)
                else:
                    self.count("new_get", started, f"GET {host}{path}", who)
            except (OSError, EOFError, ValueError) as e:
                self.error("new_get", self.classify_exc(e, got_head), f"GET {host}{path}: {e!r}",
                           started, time.monotonic())
            finally:
                self.close(s)
                self.leave()
            self.pace(started, 0.08)

    def loop_post(self, tid, chunked):
        load = "post_chunked" if chunked else "post"
        rng = random.Random(self.rng_seed * 100 + tid)
        s = r = None
        i = 0
        try:
            while self.gate():
                started = time.monotonic()
                i += 1
                n = rng.choice([0, 1, 100, 3000, 16384, 65536]) if not chunked else rng.choice([1, 500, 5000, 40000])
                body = rng.randbytes(n)
                host = "a.soak" if i % 2 else "b.soak"
                path = f"/{load}/{i}"
                allowed = {"s0", "s1", "s2"} if host == "a.soak" else {"s1", "s2", "s3"}
                got_head = False
                self.enter()
                try:
                    if s is None:
                        s = self.connect()
                        r = Reader(s)
                    if chunked:
                        pieces, pos = [], 0
                        while pos < n:
                            step = rng.choice([1, 7, 100, 1000, 8192])
                            pieces.append(body[pos:pos + step])
                            pos += step
                        status, headers, data, closes = self.request(s, r, "POST", path, host, chunks=pieces,
                                                                     trailer=i % 4 == 0)
                    else:
                        status, headers, data, closes = self.request(s, r, "POST", path, host, body=body)
                    got_head = True
                    who = headers.get("x-served-by")
                    want = f"{who} POST {path} {n} {hashlib.sha1(body).hexdigest()}\n".encode()
                    if status != 200:
                        self.error(load, f"status_{status}", f"POST {host}{path} ({n} B): status {status} "
                                   f"{data[:120]!r}", started, time.monotonic(), who)
                        closes = True
                    elif who not in allowed or data != want:
                        self.error(load, "body", f"POST {host}{path} ({n} B): served by {who}, got {data[:120]!r}",
                                   started, time.monotonic(), who)
                        closes = True
                    else:
                        self.count(load, started, f"POST {host}{path} ({n} B)", who)
                    if closes:
                        self.close(s)
                        s = None
                except (OSError, EOFError, ValueError) as e:
                    self.error(load, self.classify_exc(e, got_head), f"POST {host}{path} ({n} B): {e!r}",
                               started, time.monotonic())
                    self.close(s)
                    s = None
                finally:
                    self.leave()
                self.pace(started, 0.1 if not chunked else 0.2)
        finally:
            self.close(s)

    def loop_ws(self, tid):
        rng = random.Random(self.rng_seed * 100 + tid)
        i = 0
        while self.gate():
            started = time.monotonic()
            i += 1
            self.enter()
            try:
                self.ws_session(rng, i, started)
            finally:
                self.leave()
            self.pace(started, 0.3)

    def ws_session(self, rng, i, started):
        """One WebSocket session: upgrade, echoes and a ping, close."""
        s = None
        who = None
        upgraded = False
        step = "connect"

        def bad(kind, detail):
            self.error("ws_session", kind, detail, started, time.monotonic(), who)
        try:
            s = self.connect()
            r = Reader(s)
            key = base64.b64encode(rng.randbytes(16)).decode()
            s.sendall((f"GET /ws/{i} HTTP/1.1\r\nHost: ws.soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            step = "upgrade"
            first, h = parse_head(r.until(b"\r\n\r\n", limit=65536, clean_eof=True))
            who = h.get("x-served-by")
            status = int(first.split(" ", 2)[1])
            if status != 101:
                body = read_body(r, h, h.get("connection", "").lower() == "close")
                return bad(f"status_{status}", f"upgrade: {first} {body[:120]!r}")
            if h.get("sec-websocket-accept") != ws_accept(key) or who not in ("s0", "s3"):
                return bad("ws", f"bad 101: accept {h.get('sec-websocket-accept')!r}, by {who}")
            upgraded = True
            for m in range(rng.randint(2, 6)):
                n = rng.choice([0, 5, 125, 126, 1000, 65535, 70000])
                op = rng.choice([1, 2])
                payload = (b"t" * n) if op == 1 else rng.randbytes(n)
                step = f"echo {m} ({n} B)"
                s.sendall(ws_frame(op, payload, True))
                fin, rop, masked, data = ws_read(r)
                if not fin or rop != op or masked or data != payload:
                    return bad("ws", f"{step}: got op {rop} fin {fin} masked {masked} {len(data)} B")
                self.count("ws_msg")
                if m == 1:
                    step = "ping"
                    s.sendall(ws_frame(9, b"soak-ping", True))
                    fin, rop, masked, data = ws_read(r)
                    if rop != 10 or data != b"soak-ping":
                        return bad("ws", f"ping: got op {rop} {data[:40]!r}")
                self.stop.wait(rng.uniform(0.02, 0.25))
            step = "close"
            s.sendall(ws_frame(8, struct.pack("!H", 1000), True))
            fin, rop, masked, data = ws_read(r)
            if rop != 8 or data[:2] != struct.pack("!H", 1000):
                return bad("ws", f"close: got op {rop} {data[:20]!r}")
            step = "eof after close"
            if r.to_eof():
                return bad("ws", "bytes after the close frame")
            self.count("ws_session")
        except (OSError, EOFError, ValueError) as e:
            kind = "ws_broken" if upgraded and not isinstance(e, socket.timeout) else self.classify_exc(e, False)
            bad(kind, f"{step}: {e!r}")
        finally:
            self.close(s)

    # -- admin API and churn --------------------------------------------------

    def api(self, method, path, body=None, timeout=IO_TIMEOUT):
        """One admin request; returns (status, parsed JSON or None, raw)."""
        s = socket.create_connection(self.rw.admin_addr, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            head = (f"{method} {path} HTTP/1.1\r\nHost: {self.rw.admin}\r\nAuthorization: Bearer {self.token}\r\n"
                    f"Connection: close\r\n")
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            s.sendall((head + "\r\n").encode() + data)
            r = Reader(s)
            first, h = parse_head(r.until(b"\r\n\r\n"))
            raw = read_body(r, h, True)
            status = int(first.split(" ", 2)[1])
            try:
                js = json.loads(raw) if raw.strip() and raw.strip()[:1] in (b"{", b"[") else None
            except ValueError:
                js = None
            return status, js, raw
        finally:
            s.close()

    def api_expect(self, method, path, want, body=None):
        started = time.monotonic()
        try:
            status, js, raw = self.api(method, path, body)
        except (OSError, EOFError, ValueError) as e:
            self.error("api", "api", f"{method} {path}: {e!r}", started, time.monotonic())
            return None
        if status != want:
            self.error("api", "api", f"{method} {path}: status {status} (want {want}) {raw[:200]!r}",
                       started, time.monotonic())
            return None
        self.count("api")
        return js if js is not None else {}

    def churn_get(self, host, i, allowed, want_status=200):
        started = time.monotonic()
        s = None
        path = f"/churn/{i}"
        try:
            s = socket.create_connection(self.rw.proxy_addr, timeout=IO_TIMEOUT)
            status, headers, body, _ = self.request(s, Reader(s), "GET", path, host, close=True)
        except (OSError, EOFError, ValueError) as e:
            self.error("churn_get", "churn", f"GET {host}{path}: {e!r}", started, time.monotonic())
            return
        finally:
            if s:
                s.close()
        who = headers.get("x-served-by")
        if status != want_status or (want_status == 200 and (who not in allowed or
                                                              body != f"{who} GET {path}\n".encode())):
            self.error("churn_get", "churn", f"GET {host}{path}: status {status} (want {want_status}) by {who} "
                       f"(allowed {sorted(allowed)}) {body[:100]!r}", started, time.monotonic(), who)
        else:
            self.count("churn_get")

    def loop_churn(self):
        state = {"n": 0, "step": 0, "bid": None, "i": 0}
        while self.gate():
            started = time.monotonic()
            self.enter()
            try:
                self.churn_step(state, started)
            finally:
                self.leave()
            # Not scaled by --rate (pace divides by it).
            self.pace(started, self.args.churn_every * self.args.rate)

    def churn_step(self, st, started):
        """One step of a churned route's life; `st` carries it to the next."""
        c0, c1 = self.churn_backends
        n, step, bid = st["n"], st["step"], st["bid"]
        st["i"] += 1
        i = st["i"]
        vhost = f"churn-{n}.soak"
        base = f"/api/v1/routes/{vhost}"
        if step == 0:
            route = {"vHost": vhost, "strategy": "ROUND_ROBIN", "backends": [c0.config("c0")],
                     "headers": {"X-Soak-Route": str(n)}}
            self.api_expect("POST", "/api/v1/routes?dryRun=true", 200, route)
            if self.api_expect("POST", "/api/v1/routes", 201, route) is not None:
                self.churn_get(vhost, i, {"c0"})
        elif step == 1:
            js = self.api_expect("POST", f"{base}/backends", 201, {"hostname": "127.0.0.1", "port": c1.port})
            st["bid"] = bid = js.get("id") if js else None
            for k in range(2):
                self.churn_get(vhost, f"{i}-{k}", {"c0", "c1"})
        elif step == 2 and bid:
            self.api_expect("POST", f"{base}/backends/{bid}/dead", 200)
            for k in range(3):
                self.churn_get(vhost, f"{i}-{k}", {"c0"})
        elif step == 3 and bid:
            self.api_expect("DELETE", f"{base}/backends/{bid}/dead", 200)
            self.churn_get(vhost, i, {"c0", "c1"})
        elif step == 4 and bid:
            self.api_expect("DELETE", f"{base}/backends/{bid}", 204)
            self.churn_get(vhost, i, {"c0"})
        elif step == 5:
            route = {"vHost": vhost, "strategy": "LEAST_CONNECTIONS", "backends": [c1.config("c1")]}
            if self.api_expect("PUT", base, 200, route) is not None:
                self.churn_get(vhost, i, {"c1"})
            self.api_expect("GET", f"/api/v1/stats/{vhost}", 200)
        elif step == 6:
            self.api_expect("DELETE", base, 204)
            self.churn_get(vhost, i, set(), want_status=404)
            routes = self.api_expect("GET", "/api/v1/routes", 200)
            if isinstance(routes, list) and any(r.get("vHost") == vhost for r in routes):
                self.error("api", "api", f"{vhost} still listed after DELETE", started, time.monotonic())
            if n % 5 == 0:
                self.api_expect("GET", "/metrics", 200)
                self.api_expect("GET", "/api/v1/config", 200)
            st["n"] = n + 1
        st["step"] = (step + 1) % 7

    # -- sampling ---------------------------------------------------------------

    def stats(self):
        try:
            status, js, raw = self.api("GET", "/api/v1/stats", timeout=5)
        except (OSError, EOFError, ValueError) as e:
            t = time.monotonic()
            self.error("api", "api", f"GET /api/v1/stats: {e!r}", t, t)
            return {}
        if status != 200 or not isinstance(js, dict):
            t = time.monotonic()
            self.error("api", "api", f"GET /api/v1/stats: status {status} {raw[:200]!r}", t, t)
            return {}
        return js


def fnum(v):
    return "" if v is None else v


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run(args):
    binary = os.environ.get("RINGWAY_BIN") or os.path.join(ROOT, "target", "debug", "ringway")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"soak: no ringway binary at {binary} (cargo build, or set RINGWAY_BIN)")
    duration = args.seconds
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_csv = args.out or os.path.join(ROOT, "bench-results", f"soak-{stamp}.csv")
    out_csv = os.path.abspath(out_csv)
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    base = out_csv[:-4] if out_csv.endswith(".csv") else out_csv
    out_png = base + ".png"
    out_err = base + "-errors.log"
    out_log = base + "-ringway.log"
    tmp = tempfile.mkdtemp(prefix="ringway-soak-")
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    names = ["s0", "s1", "s2", "s3"]
    taken = set()
    backends = {n: BackendProc(n, backend_port(taken), tmp) for n in names}
    churn = [BackendProc(n, backend_port(taken), tmp) for n in ("c0", "c1")]
    rw = None
    failures = []
    samples = []
    events = []  # (t, text)
    soak = None
    errlog = open(out_err, "w")
    csvf = open(out_csv, "w", newline="")
    threads = []
    print(f"soak: {duration:g} s against {binary}, {args.workers} workers, seed {args.seed}; CSV {out_csv}",
          flush=True)
    try:
        for b in list(backends.values()) + churn:
            b.start()
        s = backends
        cfg = {
            "listen": ["127.0.0.1:0"],
            "workers": args.workers,
            "admin": {"listen": "127.0.0.1:0", "token": token},
            "timeouts": {"connectMs": 1000, "upstreamMs": 10000, "clientHeadMs": 10000, "idleMs": 60000,
                         "drainMs": 3000},
            "limits": {"maxBodyBytes": 1 << 20},
            # Short downIntervalMs: a restarted backend is back within ~0.4 s.
            # A patient timeout and fall: Python backends on a shared 2-core
            # machine can stall for a second, which is no reason for a 503.
            "health": {"path": "/health", "intervalMs": 1000, "timeoutMs": 2000, "rise": 2, "fall": 3,
                       "downIntervalMs": 200},
            "routes": [
                {"id": "stable-a", "vHost": "a.soak", "strategy": "ROUND_ROBIN", "retries": 2,
                 "backends": [s["s0"].config(), s["s1"].config(), s["s2"].config()],
                 "paths": [{"prefix": "/api", "stripPrefix": True, "strategy": "LEAST_CONNECTIONS",
                            "backends": [s["s2"].config("p-s2"), s["s3"].config("p-s3")]}]},
                {"id": "stable-b", "vHost": "b.soak", "strategy": "LEAST_CONNECTIONS", "retries": 2,
                 "backends": [s["s1"].config(), s["s2"].config(), s["s3"].config()]},
                {"id": "ws", "vHost": "ws.soak", "strategy": "ROUND_ROBIN", "retries": 2,
                 "backends": [s["s0"].config(), s["s3"].config()]},
            ],
        }
        rw = Ringway(binary, cfg, tmp, args.workers)
        print(f"soak: ringway pid {rw.pid} proxy {rw.proxy} admin {rw.admin}; backends "
              + ", ".join(f"{b.name}:{b.port}" for b in list(backends.values()) + churn), flush=True)
        soak = Soak(args, rw, backends, churn, token, errlog)

        cols = ["t", "phase", "event", "rss_kb", "hwm_kb", "fds", "threads", "cpu_pct", "host_cpu_pct",
                "host_running", "open_connections", "buffers_in_use", "buffers_pooled", "upstream_idle",
                "backend_inflight", "ringway_requests", "client_open", "client_requests", "client_rps",
                "lat_p50_ms", "lat_p99_ms", "lat_max_ms", "slow_requests"]
        cols += ["ok_" + x for x in Soak.LOADS] + ["errors_expected", "errors_unexpected"] + Soak.ERROR_COLS
        writer = csv.DictWriter(csvf, fieldnames=cols)
        writer.writeheader()

        def spawn(fn, *a):
            t = threading.Thread(target=fn, args=a, daemon=True)
            t.start()
            threads.append(t)

        for k in range(2):
            spawn(soak.loop_keepalive_get, 1 + k)
        spawn(soak.loop_new_get, 10)
        spawn(soak.loop_post, 20, False)
        spawn(soak.loop_post, 21, True)
        for k in range(2):
            spawn(soak.loop_ws, 30 + k)
        spawn(soak.loop_churn)

        cycle = args.cycle
        kill_at, restart_after = 0.25 * cycle, 0.7
        # A quiet phase lasts --quiet seconds, longer (up to the cycle's end)
        # until a sample has seen no load for 2.2 s: stats flush every second.
        quiet_from = 0.6 * cycle
        quiet_min = quiet_from + args.quiet
        quiet_max = max(quiet_min, min(cycle - 0.5, quiet_min + 4))
        settled = set()  # cycles whose quiet phase has had a settled sample
        killed_cycles = set()
        pending = None  # (time, backend)
        rotation = list(names)
        last_cpu = (time.monotonic(), proc_cpu(rw.pid))
        last_host = list(host_cpu()[:2])
        last_req = 0
        next_sample = soak.t0 + 1.0
        event = []

        def sample(phase):
            nonlocal last_cpu, last_req
            t = soak.now()
            try:
                st = proc_status(rw.pid)
                fds = proc_fds(rw.pid)
                cpu = proc_cpu(rw.pid)
            except OSError:
                raise Fail("ringway is gone (reading /proc failed)")
            mono = time.monotonic()
            cpu_pct = 100.0 * (cpu - last_cpu[1]) / max(1e-3, mono - last_cpu[0])
            last_cpu = (mono, cpu)
            hb, ht, running = host_cpu()
            host_pct = 100.0 * (hb - last_host[0]) / max(1, ht - last_host[1])
            last_host[:] = [hb, ht]
            js = soak.stats()
            buffers = js.get("buffers") if isinstance(js.get("buffers"), dict) else {}
            inflight = None
            if isinstance(js.get("backends"), list):
                inflight = sum(int(b.get("inFlight", 0) or 0) for b in js["backends"])
            with soak.lock:
                ok = dict(soak.ok)
                errs = dict(soak.err)
                n_exp, n_unexp = soak.n_expected, soak.n_unexpected
                client_open = soak.client_open
                lat, soak.lat = sorted(soak.lat), []
                slow = soak.slow
                idle_for = mono - soak.last_busy if soak.busy == 0 else 0.0
            reqs = sum(ok.get(k, 0) for k in Soak.LOADS if k not in ("ws_msg",))
            row = {
                "t": round(t, 2), "phase": phase, "event": "; ".join(event), "rss_kb": st.get("VmRSS"),
                "hwm_kb": st.get("VmHWM"), "fds": fds, "threads": st.get("Threads"), "cpu_pct": round(cpu_pct, 1),
                "host_cpu_pct": round(host_pct, 1), "host_running": running, "slow_requests": slow,
                "open_connections": fnum(js.get("openConnections")),
                "buffers_in_use": fnum(buffers.get("inUse")), "buffers_pooled": fnum(buffers.get("pooled")),
                "upstream_idle": fnum(js.get("upstreamIdleConnections")), "backend_inflight": fnum(inflight),
                "ringway_requests": fnum((js.get("requests") or {}).get("total")),
                "client_open": client_open, "client_requests": reqs, "client_rps": reqs - last_req,
                "lat_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else "",
                "lat_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else "",
                "lat_max_ms": round(lat[-1] * 1000, 1) if lat else "",
                "errors_expected": n_exp, "errors_unexpected": n_unexp,
            }
            for k in Soak.LOADS:
                row["ok_" + k] = ok.get(k, 0)
            for k in Soak.ERROR_COLS:
                row[k] = errs.get(k, 0)
            last_req = reqs
            event.clear()
            writer.writerow(row)
            csvf.flush()
            row["_idle_for"] = idle_for
            if phase == "quiet" and idle_for >= SETTLED:
                settled.add(int(t // cycle))
            samples.append(row)
            return row

        end = soak.t0 + duration
        while True:
            mono = time.monotonic()
            if mono >= end:
                break
            if not rw.alive():
                raise Fail(f"ringway exited during the soak (status {rw.proc.returncode}); log:\n{rw.log()[-3000:]}")
            if soak.n_unexpected > args.max_errors:
                raise Fail(f"more than {args.max_errors} unexpected errors: stopping early")
            t = mono - soak.t0
            ci, ct = int(t // cycle), t % cycle
            # Quiet phase: no load, so the levels must fall back.
            want_quiet = (quiet_from <= ct < quiet_max and (ct < quiet_min or ci not in settled)
                          and mono + 1.0 < end)
            if want_quiet and not soak.quiet.is_set():
                soak.quiet.set()
                events.append((t, "quiet"))
            elif not want_quiet and soak.quiet.is_set():
                soak.quiet.clear()
                events.append((t, "load"))
            if ct >= kill_at and ci not in killed_cycles and pending is None and not soak.quiet.is_set():
                killed_cycles.add(ci)
                b = backends[rotation[len(killed_cycles) % len(rotation) - 1]]
                with soak.lock:
                    soak.kills.append((time.monotonic(), b.name))
                b.kill()
                events.append((t, f"kill {b.name}"))
                event.append(f"kill {b.name}")
                pending = (time.monotonic() + restart_after, b)
            if pending and mono >= pending[0]:
                b = pending[1]
                b.start()
                events.append((soak.now(), f"start {b.name}"))
                event.append(f"start {b.name}")
                pending = None
            for b in list(backends.values()) + churn:
                if b.proc.poll() is not None and not (pending and pending[1] is b):
                    raise Fail(f"backend {b.name} exited on its own (status {b.proc.returncode}): a soak fault, "
                               f"not ringway's; its stderr:\n{b.stderr()[-2000:]}")
            if mono >= next_sample:
                sample("quiet" if soak.quiet.is_set() else "load")
                next_sample += 1.0
                if next_sample < time.monotonic():
                    next_sample = time.monotonic() + 0.5
            nxt = min(next_sample, pending[0] if pending else end, end)
            time.sleep(max(0.0, min(0.1, nxt - time.monotonic())))

        # The end: stop the load, let every connection close, then watch the levels settle.
        if pending:
            pending[1].start()
            event.append(f"start {pending[1].name}")
            pending = None
        soak.quiet.clear()
        soak.stop.set()
        for t in threads:
            t.join(timeout=IO_TIMEOUT + 5)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            failures.append(f"load threads did not stop within {IO_TIMEOUT + 5:.0f} s: {stuck}")
        events.append((soak.now(), "stop"))
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end:
            time.sleep(max(0.0, min(1.0, settle_end - time.monotonic())))
            sample("final")

        failures += check(args, samples, soak)
        if not rw.alive():
            failures.append(f"ringway exited during the soak (status {rw.proc.returncode})")
    except Fail as e:
        failures.append(str(e))
    except KeyboardInterrupt:
        failures.append("interrupted")
    except SystemExit as e:
        failures.append(f"stopped by signal ({e.code})")
    except Exception as e:  # a bug or a backend that would not start: still clean up and report
        import traceback
        traceback.print_exc()
        failures.append(f"soak error: {e!r}")
    finally:
        if soak:
            soak.stop.set()
            soak.quiet.clear()
        exit_status = None
        if rw:
            t_stop = time.monotonic()
            exit_status = stop_proc(rw.proc, timeout=10)
            stop_s = time.monotonic() - t_stop
            if exit_status != 0 and not failures:
                failures.append(f"ringway exited with {exit_status} after SIGTERM (within {stop_s:.1f} s)")
        for b in list(backends.values()) + churn:
            b.stop()
        for t in threads:
            t.join(timeout=2)
        log = rw.log() if rw else ""
        if rw:
            try:
                shutil.copyfile(rw.log_path, out_log)
            except OSError:
                pass
        if failures:
            for b in list(backends.values()) + churn:
                if b.stderr().strip():
                    print(f"soak: backend {b.name} stderr (tail):\n{b.stderr()[-1500:]}", file=sys.stderr)
            if log.strip():
                print(f"soak: ringway log (tail):\n{log[-3000:]}", file=sys.stderr)
        csvf.close()
        errlog.close()
        shutil.rmtree(tmp, ignore_errors=True)

    panics = [ln for ln in log.splitlines() if "panic" in ln.lower()]
    if panics:
        failures.append(f"ringway panicked: {panics[:3]}")
    summary(args, samples, soak, events, failures, log, out_csv, out_err)
    try:
        if samples:
            plot(out_png, samples, events, duration, bool(failures))
            print(f"soak: chart {out_png}")
    except Exception as e:  # the chart is a convenience, never the verdict
        print(f"soak: no chart: {e!r}", file=sys.stderr)
    if failures:
        print("\nSOAK FAILED:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("\nsoak: PASS")
    return 0


# ---------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------

def num(v):
    return v if isinstance(v, (int, float)) else None


def check(args, samples, soak):
    """Growth and leak checks; returns failure messages."""
    out = []
    if soak.n_unexpected:
        out.append(f"{soak.n_unexpected} unexpected errors (first: {soak.unexpected[0].strip()})")
    dur = args.seconds
    run = [s for s in samples if s["phase"] != "final"]
    final = [s for s in samples if s["phase"] == "final"]
    has = {k: any(num(s[k]) is not None for s in samples)
           for k in ("open_connections", "buffers_in_use", "buffers_pooled", "upstream_idle", "backend_inflight")}
    missing = [k for k, v in has.items() if not v]
    if missing:
        print(f"soak: note: /api/v1/stats has no {', '.join(missing)} in this build: those checks are skipped")

    # 1. Growth: the last quarter against the second (the first is warm-up).
    q2 = [s for s in run if dur * 0.25 <= s["t"] < dur * 0.5]
    q4 = [s for s in run if s["t"] >= dur * 0.75]
    if dur < 40 or len(q2) < 5 or len(q4) < 5:
        print(f"soak: note: {dur:g} s is too short for the quarter-to-quarter growth checks")
    else:
        def vals(rows, k):
            return [num(r[k]) for r in rows if num(r[k]) is not None]
        r2, r4 = median(vals(q2, "rss_kb")), median(vals(q4, "rss_kb"))
        info = [f"RSS MiB {r2 / 1024:.1f} -> {r4 / 1024:.1f}"]
        if r4 > r2 * 1.2 + 8 * 1024:
            out.append(f"RSS grew: median {r2 / 1024:.1f} MiB in the 2nd quarter -> {r4 / 1024:.1f} MiB in the last "
                       f"(limit +20 % + 8 MiB)")
        f2, f4 = max(vals(q2, "fds")), median(vals(q4, "fds"))
        info.append(f"fds {f2} (max) -> {f4:g}")
        slack = max(16, int(f2 * 0.25))
        if f4 > f2 + slack:
            out.append(f"open fds grew: max {f2} in the 2nd quarter -> median {f4} in the last (slack {slack})")
        for k, name, lim in (("buffers_pooled", "buffers.pooled", lambda m: m * 2 + 8),
                             ("upstream_idle", "upstreamIdleConnections", lambda m: m * 2 + 16),
                             ("buffers_in_use", "buffers.inUse", lambda m: m * 2 + 8)):
            if has[k] and vals(q2, k) and vals(q4, k):
                m2, m4 = max(vals(q2, k)), median(vals(q4, k))
                info.append(f"{name} {m2} (max) -> {m4:g}")
                if m4 > lim(m2):
                    out.append(f"{name} grew: max {m2} in the 2nd quarter -> median {m4} in the last")
        soak.growth = "2nd quarter -> last quarter (median unless noted): " + ", ".join(info)

    # 2. Quiet points: no load for a while, so nothing may be lent out.
    quiet = [s for s in run if s["phase"] == "quiet" and s["_idle_for"] >= SETTLED]
    if not quiet:
        print("soak: note: no settled quiet point during the run (too short?)")
    else:
        def mx(k):
            v = [num(s[k]) for s in quiet if num(s[k]) is not None]
            return max(v) if v else "-"
        diff = [abs(s["open_connections"] - s["client_open"]) for s in quiet if num(s["open_connections"]) is not None]
        soak.quiet_info = (f"{len(quiet)} settled samples in {len({int(s['t'] // args.cycle) for s in quiet})} "
                           f"phases: buffers.inUse max {mx('buffers_in_use')}, backends' inFlight max "
                           f"{mx('backend_inflight')}, |openConnections - client's open| max "
                           f"{max(diff) if diff else '-'}")
    for s in quiet:
        if has["buffers_in_use"] and num(s["buffers_in_use"]) is not None and s["buffers_in_use"] > 1:
            out.append(f"t={s['t']:.0f}s quiet: buffers.inUse = {s['buffers_in_use']} (want ~0)")
        if has["backend_inflight"] and num(s["backend_inflight"]) not in (None, 0):
            out.append(f"t={s['t']:.0f}s quiet: backends' inFlight sum = {s['backend_inflight']} (want 0)")
        if has["open_connections"] and num(s["open_connections"]) is not None and \
                abs(s["open_connections"] - s["client_open"]) > 1:
            out.append(f"t={s['t']:.0f}s quiet: openConnections = {s['open_connections']}, the client holds "
                       f"{s['client_open']}")

    # 3. After the load: every client connection closed, nothing lent out,
    #    and the fds not explained by connections back at their level of the
    #    first quiet points.
    if not final:
        out.append("no sample after the load stopped")
    else:
        last = final[-1]
        if has["open_connections"] and last["open_connections"] != 0:
            out.append(f"after the load: openConnections = {last['open_connections']} (want 0)")
        if has["buffers_in_use"] and last["buffers_in_use"] != 0:
            out.append(f"after the load: buffers.inUse = {last['buffers_in_use']} (want 0)")
        if has["backend_inflight"] and num(last["backend_inflight"]) not in (None, 0):
            out.append(f"after the load: backends' inFlight sum = {last['backend_inflight']} (want 0)")

        def residue(s):
            if not has["open_connections"] or not has["upstream_idle"]:
                return None
            if num(s["open_connections"]) is None or num(s["upstream_idle"]) is None:
                return None
            return s["fds"] - s["open_connections"] - s["upstream_idle"]
        early = [residue(s) for s in quiet if s["t"] < dur * 0.6]
        early = [x for x in early if x is not None]
        res_last = residue(last)
        if early and res_last is not None and res_last > min(early) + 6:
            out.append(f"fds not explained by client or idle upstream connections grew: {min(early)} at the early "
                       f"quiet points -> {res_last} after the load (fds {last['fds']}, open "
                       f"{last['open_connections']}, upstream idle {last['upstream_idle']})")
        soak.residue = (min(early) if early else None, res_last)
    return out


def summary(args, samples, soak, events, failures, log, out_csv, out_err):
    print()
    print(f"soak summary ({args.seconds:g} s, {len(samples)} samples)")
    if not samples or not soak:
        return
    def rng(k, scale=1.0, fmt="{:.0f}"):
        v = [num(s[k]) for s in samples if num(s[k]) is not None]
        if not v:
            return "-"
        return f"min {fmt.format(min(v) / scale)} max {fmt.format(max(v) / scale)} last {fmt.format(v[-1] / scale)}"
    print(f"  RSS MiB            {rng('rss_kb', 1024, '{:.1f}')}")
    print(f"  open fds           {rng('fds')}")
    print(f"  threads            {rng('threads')}")
    print(f"  ringway CPU %      {rng('cpu_pct', 1, '{:.0f}')}  (mean "
          f"{statistics.mean(s['cpu_pct'] for s in samples):.1f})")
    print(f"  openConnections    {rng('open_connections')}")
    print(f"  buffers.inUse      {rng('buffers_in_use')}")
    print(f"  buffers.pooled     {rng('buffers_pooled')}")
    print(f"  upstream idle      {rng('upstream_idle')}")
    if getattr(soak, "quiet_info", None):
        print(f"  quiet points       {soak.quiet_info}")
    if getattr(soak, "growth", None):
        print(f"  growth             {soak.growth}")
    res = getattr(soak, "residue", None)
    if res and res[0] is not None:
        print(f"  fd residue         (fds - open - upstream idle) {res[0]} early quiet -> {res[1]} after the load")
    with soak.lock:
        ok = dict(soak.ok)
        details = sorted(soak.err_detail.items(), key=lambda kv: (kv[0][0], -kv[1]))
    reqs = sum(v for k, v in ok.items() if k != "ws_msg")
    proxied = reqs - ok.get("api", 0)
    failed = sum(n for (_, load, _), n in details if load not in ("api",))
    rw_total = next((s["ringway_requests"] for s in reversed(samples) if num(s["ringway_requests"]) is not None), None)
    print(f"  requests done      {reqs}: " + ", ".join(f"{k} {ok.get(k, 0)}" for k in Soak.LOADS))
    print(f"  through the proxy  {proxied} ok + {failed} failed; ringway's requests.total "
          f"{rw_total if rw_total is not None else '-'}")
    lat = [num(s["lat_p99_ms"]) for s in samples if num(s["lat_p99_ms"]) is not None]
    lmax = [num(s["lat_max_ms"]) for s in samples if num(s["lat_max_ms"]) is not None]
    if lat:
        print(f"  latency ms         per-second p99: median {median(lat):.1f}, worst {max(lat):.1f}; "
              f"slowest request {max(lmax):.0f}; {soak.slow} took over {args.slow:g} s (listed in the error log)")
    hosts = [num(s["host_cpu_pct"]) for s in samples]
    print(f"  machine CPU %      (all cores) median {median(hosts):.0f}, max {max(hosts):.0f}")
    t = os.times()
    c0 = getattr(args, "children_cpu0", 0.0)
    print(f"  soak's own CPU     client {t.user + t.system:.1f} s, backends and ringway "
          f"{t.children_user + t.children_system - c0:.1f} s (of {args.seconds:g} s)")
    kills = [e for e in events if e[1].startswith("kill")]
    shown = ", ".join(f"{t:.0f}s {x[5:]}" for t, x in kills[:6]) + (", ..." if len(kills) > 6 else "")
    print(f"  backend restarts   {len(kills)} (SIGKILL, start again 0.7 s later: {shown})")
    print(f"  errors             {soak.n_unexpected} unexpected, {soak.n_expected} expected")
    for (expected, load, kind), n in details:
        print(f"    {'expected  ' if expected else 'UNEXPECTED'} {load:12} {kind:14} {n}")
    if soak.post_after_kill:
        print(f"    ({soak.post_after_kill} of the expected POST 502s started after the SIGKILL, within "
              f"{KILL_WINDOW:g} s: sent on a pooled connection to the dead backend; see the error log)")
    for line in soak.unexpected[:10]:
        print(f"    > {line.strip()}")
    warns = [ln for ln in log.splitlines() if " WARN " in ln or " ERROR " in ln]
    if warns:
        kinds = collections.Counter(" ".join(w.split()[2:6]) for w in warns)
        print(f"  ringway log        {len(warns)} warn/error lines, e.g.:")
        for k, n in kinds.most_common(4):
            print(f"    {n:5} x {k[:110]}")
    print(f"  CSV {out_csv}; errors {out_err}; ringway's stderr {out_err[:-len('-errors.log')]}-ringway.log")


# ---------------------------------------------------------------------------
# PNG chart without third-party packages
# ---------------------------------------------------------------------------

FONT = {  # 5x7, rows top to bottom, bit 4 = leftmost column
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12), "A": (14, 17, 17, 17, 31, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28), "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16), "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17),
    "L": (16, 16, 16, 16, 16, 16, 31), "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13),
    "R": (30, 17, 17, 30, 20, 18, 17), "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10),
    "X": (17, 17, 10, 4, 10, 17, 17), "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    " ": (0,) * 7, ".": (0, 0, 0, 0, 0, 12, 12), "-": (0, 0, 0, 31, 0, 0, 0), "/": (0, 1, 2, 4, 8, 16, 0),
    ":": (0, 12, 12, 0, 12, 12, 0), "=": (0, 0, 31, 0, 31, 0, 0), "(": (2, 4, 8, 8, 8, 4, 2),
    ")": (8, 4, 2, 2, 2, 4, 8), ",": (0, 0, 0, 0, 12, 4, 8), "%": (24, 25, 2, 4, 8, 19, 3),
    "+": (0, 4, 4, 31, 4, 4, 0), "_": (0, 0, 0, 0, 0, 0, 31), "#": (10, 10, 31, 10, 31, 10, 10),
}

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (150, 150, 150), (236, 236, 236)
BLUE, RED, GREEN, ORANGE, PURPLE, QUIET = (31, 94, 200), (210, 40, 40), (30, 150, 60), (235, 140, 0), \
    (130, 60, 170), (222, 236, 250)


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(WHITE * (w * h))

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(c)

    def rect(self, x0, y0, x1, y1, c):
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        if x1 <= x0:
            return
        row = bytes(c) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i:i + len(row)] = row

    def line(self, x0, y0, x1, y1, c, thick=1, dash=0):
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        n = 0
        while True:
            if not dash or (n // dash) % 2 == 0:
                for t in range(thick):
                    self.set(x0, y0 + t, c)
            n += 1
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x, y, s, c=BLACK, scale=2):
        for ch in s.upper():
            g = FONT.get(ch, FONT["#"])
            for row, bits in enumerate(g):
                for col in range(5):
                    if bits & (16 >> col):
                        self.rect(x + col * scale, y + row * scale, x + (col + 1) * scale, y + (row + 1) * scale, c)
            x += 6 * scale
        return x

    @staticmethod
    def text_w(s, scale=2):
        return len(s) * 6 * scale

    def save(self, path):
        stride = self.w * 3
        raw = b"".join(b"\x00" + bytes(self.px[y * stride:(y + 1) * stride]) for y in range(self.h))

        def chunk(tag, data):
            return struct.pack("!I", len(data)) + tag + data + struct.pack("!I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)) \
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        with open(path, "wb") as f:
            f.write(png)


def nice_step(span, n=4):
    if span <= 0:
        return 1
    raw = span / n
    mag = 10 ** int(f"{raw:e}".split("e")[1])
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_tick(v):
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:g}K"
    return f"{v:g}" if v == int(v) else f"{v:.1f}"


def panel(cv, x0, y0, w, h, title, series, t_max, events, note=""):
    """A line chart: series = [(label, color, [(t, v)])]. Quiet phases are
    shaded and kills dashed, unless there are too many to tell apart (long
    runs): then kills are ticks on the top edge."""
    left, top = x0 + 80, y0 + 34
    pw, ph = w - 100, h - 64
    vals = [v for _, _, pts in series for _, v in pts if v is not None]
    vmax = max(vals) if vals else 1
    vmax = vmax * 1.1 if vmax > 0 else 1
    step = nice_step(vmax)
    vmax = step * max(1, -(-vmax // step))
    tx = lambda t: left + int(pw * t / max(1e-9, t_max))  # noqa: E731
    vy = lambda v: top + ph - int(ph * v / vmax)  # noqa: E731
    kills = [(t, what[5:]) for t, what in events if what.startswith("kill")]
    dense = len(kills) > 40
    q0 = None
    for t, what in events + [(t_max, "load")]:
        if dense:
            break
        if what == "quiet" and q0 is None:
            q0 = t
        elif what in ("load", "stop") and q0 is not None:
            cv.rect(tx(q0), top, tx(t), top + ph, QUIET)
            q0 = None
    v = 0.0
    while v <= vmax + 1e-9:
        y = vy(v)
        cv.line(left, y, left + pw, y, LIGHT)
        lab = fmt_tick(v)
        cv.text(left - 8 - Canvas.text_w(lab, 2), y - 7, lab, GREY, 2)
        v += step
    minutes = t_max >= 300
    tstep = nice_step(t_max / 60, 6) * 60 if minutes else nice_step(t_max, 6)
    k = 0
    while k * tstep <= t_max + 1e-9:
        t = k * tstep
        x = tx(t)
        cv.line(x, top + ph, x, top + ph + 5, GREY)
        lab = f"{t / 60:g}M" if minutes else f"{t:g}S"
        cv.text(x - Canvas.text_w(lab, 2) // 2, top + ph + 9, lab, GREY, 2)
        k += 1
    for t, name in kills:
        if dense:
            cv.line(tx(t), top, tx(t), top + 6, RED)
            continue
        cv.line(tx(t), top, tx(t), top + ph, RED, dash=4)
        if len(kills) <= 24:
            cv.text(tx(t) + 3, top + 2, name, RED, 1)
    for t, what in events:
        if what == "stop":
            cv.line(tx(t), top, tx(t), top + ph, BLACK, dash=2)
            lab = "LOAD STOPS"
            x = tx(t) + 3 if tx(t) + 3 + Canvas.text_w(lab, 1) < left + pw else tx(t) - 3 - Canvas.text_w(lab, 1)
            cv.text(x, top + 10, lab, BLACK, 1)
    cv.line(left, top, left, top + ph, BLACK)
    cv.line(left, top + ph, left + pw, top + ph, BLACK)
    for label, color, pts in series:
        prev = None
        for t, v in pts:
            if v is None:
                prev = None
                continue
            p = (tx(t), vy(v))
            if prev:
                cv.line(prev[0], prev[1], p[0], p[1], color, thick=2)
            prev = p
    cv.text(x0 + 10, y0 + 8, title, BLACK, 2)
    x = x0 + 20 + Canvas.text_w(title, 2) + 30
    for label, color, pts in series:
        cv.rect(x, y0 + 13, x + 18, y0 + 17, color)
        x = cv.text(x + 24, y0 + 8, label, color, 2) + 24
    if note:
        cv.text(x0 + w - 20 - Canvas.text_w(note, 2), y0 + 8, note, GREY, 2)


def span_note(pts, fmt="{:.0f}"):
    v = [x for _, x in pts if x is not None]
    if not v:
        return ""
    return "FIRST " + fmt.format(v[0]) + "  MAX " + fmt.format(max(v)) + "  LAST " + fmt.format(v[-1])


def plot(path, samples, events, duration, failed):
    """The chart: five panels over time, from the per-second samples."""
    t_max = max(s["t"] for s in samples)
    W, PH = 1200, 230
    cv = Canvas(W, 50 + 5 * PH)
    last = samples[-1]
    reqs, ne, nu = last["client_requests"], last["errors_expected"], last["errors_unexpected"]
    verdict = "FAIL" if failed else "PASS"
    cv.text(12, 14, f"RINGWAY SOAK {duration:g}S  {reqs} REQUESTS  ERRORS {nu} UNEXPECTED {ne} EXPECTED  {verdict}",
            RED if failed else GREEN, 2)
    n_kills = sum(1 for _, what in events if what.startswith("kill"))
    key = "SHADED: QUIET  RED DASHES: SIGKILL" if n_kills <= 40 else "RED TICKS: SIGKILL"
    cv.text(W - 12 - Canvas.text_w(key, 1), 18, key, GREY, 1)

    def ser(k, scale=1.0):
        return [(s["t"], (s[k] / scale) if num(s[k]) is not None else None) for s in samples]
    rss = ser("rss_kb", 1024)
    panel(cv, 0, 50, W, PH, "RSS MIB", [("RSS", BLUE, rss)], t_max, events, span_note(rss, "{:.1f}"))
    fds = ser("fds")
    panel(cv, 0, 50 + PH, W, PH, "OPEN FDS", [("FDS", BLUE, fds)], t_max, events, span_note(fds))
    panel(cv, 0, 50 + 2 * PH, W, PH, "CONNS BUFFERS",
          [("OPEN CONNS", BLUE, ser("open_connections")), ("BUF INUSE", RED, ser("buffers_in_use")),
           ("BUF POOLED", GREEN, ser("buffers_pooled")), ("UPSTREAM IDLE", ORANGE, ser("upstream_idle"))],
          t_max, events)
    panel(cv, 0, 50 + 3 * PH, W, PH, "LOAD ERRORS",
          [("REQ/S", BLUE, ser("client_rps")), ("RINGWAY CPU %", PURPLE, ser("cpu_pct")),
           ("MACHINE CPU %", GREY, ser("host_cpu_pct")),
           ("UNEXPECTED (TOTAL)", RED, ser("errors_unexpected")), ("EXPECTED (TOTAL)", ORANGE, ser("errors_expected"))],
          t_max, events)
    panel(cv, 0, 50 + 4 * PH, W, PH, "LATENCY MS",
          [("MAX", RED, ser("lat_max_ms")), ("P99", ORANGE, ser("lat_p99_ms")), ("P50", BLUE, ser("lat_p50_ms"))],
          t_max, events)
    cv.save(path)


# ---------------------------------------------------------------------------

def replot(csv_path):
    """`soak.py --plot FILE.csv`: the chart again, from a CSV alone."""
    samples, events = [], []
    phase = "load"
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k not in ("phase", "event"):
                    try:
                        row[k] = float(v) if "." in v else int(v)
                    except (TypeError, ValueError):
                        pass
            t = row["t"]
            if row["phase"] != phase:
                events.append((t - 1 if row["phase"] == "quiet" else t, {"quiet": "quiet", "final": "stop"}.get(
                    row["phase"], "load")))
                phase = row["phase"]
            for e in (row["event"] or "").split("; "):
                if e.startswith("kill"):
                    events.append((t, e))
            samples.append(row)
    out = csv_path[:-4] + ".png" if csv_path.endswith(".csv") else csv_path + ".png"
    ran = max((s["t"] for s in samples if s["phase"] != "final"), default=samples[-1]["t"])
    plot(out, samples, events, round(ran), samples[-1]["errors_unexpected"] != 0)
    print(f"soak: chart {out}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--backend":
        backend_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--plot":
        replot(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description="ringway soak test (see the module docstring)")
    ap.add_argument("minutes", nargs="?", type=float, default=None, help="duration in minutes (default 30)")
    ap.add_argument("--seconds", type=float, default=None, help="duration in seconds (instead of minutes)")
    ap.add_argument("--minutes", dest="minutes_opt", type=float, default=None)
    ap.add_argument("--out", help="CSV path (default bench-results/soak-TIMESTAMP.csv); the PNG and the error "
                                  "log go beside it")
    ap.add_argument("--workers", type=int, default=2, help="ringway workers (default 2)")
    ap.add_argument("--rate", type=float, default=1.0,
                    help="load multiplier (default 1: ~80 requests/s and 3 WebSocket sessions/s)")
    ap.add_argument("--cycle", type=float, default=20.0, help="seconds between backend restarts (default 20)")
    ap.add_argument("--quiet", type=float, default=4.0,
                    help="quiet seconds per cycle (default 4; longer until a settled sample)")
    ap.add_argument("--churn-every", type=float, default=2.0, help="seconds between API churn steps (default 2)")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds watched after the load stops (default 4)")
    ap.add_argument("--max-errors", type=int, default=200, help="stop early after this many unexpected errors")
    ap.add_argument("--slow", type=float, default=1.0, help="log requests slower than this many seconds")
    ap.add_argument("--seed", type=int, default=None, help="random seed of the load (default: a new one, printed)")
    args = ap.parse_args()
    if args.seconds is None:
        m = args.minutes_opt if args.minutes_opt is not None else args.minutes
        args.seconds = (m if m is not None else 30.0) * 60
    if args.seconds <= 0:
        ap.error("the duration must be positive")
    if args.rate <= 0:
        ap.error("--rate must be positive")
    t = os.times()
    args.children_cpu0 = t.children_user + t.children_system  # e.g. soak.sh's cargo build, before the exec
    if args.seed is None:
        args.seed = random.randrange(1, 1 << 30)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
