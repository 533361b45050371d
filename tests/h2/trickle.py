"""An HTTP/2 client that writes its bytes to the socket one at a time.

usage: trickle.py HOST:PORT tls|h2c AUTHORITY [CAFILE] [REQUESTS]

Sends the preface, SETTINGS and REQUESTS GET requests (one stream each,
in turn), every byte in its own write with a pause after it, so the
server reads partial frames, and over TLS partial records; each request
goes out only after the previous answer arrived, so the server also
meets a connection that idles between trickles. Prints one line per
answer, "stream N status S body-bytes B", and exits 0 once all came back
complete; 1 on anything else. Standard library only: the TLS side is
ssl.SSLObject over memory BIOs, so the ciphertext's bytes are ours to
pace.
"""
import socket
import ssl
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY, RST = 0, 1, 4, 6, 7, 3
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
DEADLINE = time.time() + 30


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal(name, value):
    # Literal header field without indexing, new name, no Huffman.
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request(stream, authority, path):
    block = b"\x82"  # :method GET (static table entry 2)
    block += literal(b":scheme", SCHEME) + literal(b":path", path) + literal(b":authority", authority)
    return frame(HEADERS, END_STREAM | END_HEADERS, stream, block)


class Conn:
    def __init__(self, addr, tls, cafile):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = None
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.check_hostname = False
            ctx.set_alpn_protocols(["h2"])
            self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=AUTHORITY.decode())
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self.flush(trickle=False)
                    self.feed()
            self.flush(trickle=False)
            if self.tls.selected_alpn_protocol() != "h2":
                fail(f"ALPN chose {self.tls.selected_alpn_protocol()!r}")
        self.buf = b""

    def flush(self, trickle):
        data = self.out.read()
        self.raw_send(data, trickle)

    def raw_send(self, data, trickle):
        if not trickle:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(0.001)

    def send(self, data):
        if self.tls:
            # One record per call: small writes, each trickled byte by byte.
            self.tls.write(data)
            self.flush(trickle=True)
        else:
            self.raw_send(data, trickle=True)

    def feed(self):
        got = self.sock.recv(65536)
        if not got:
            fail("connection closed")
        self.inc.write(got)

    def read_some(self):
        if not self.tls:
            got = self.sock.recv(65536)
            if not got:
                fail("connection closed")
            return got
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.feed()

    def frame(self):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            if time.time() > DEADLINE:
                fail("timed out")
            self.buf += self.read_some()
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        if kind == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        if kind == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        return kind, flags, stream, payload


def fail(why):
    print("FAIL:", why, flush=True)
    sys.exit(1)


addr, mode, AUTHORITY = sys.argv[1], sys.argv[2], sys.argv[3].encode()
cafile = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
requests = int(sys.argv[5]) if len(sys.argv) > 5 else 2
SCHEME = b"https" if mode == "tls" else b"http"
c = Conn(addr, mode == "tls", cafile)
c.send(PREFACE + frame(SETTINGS, 0, 0))
for k in range(requests):
    stream = 1 + 2 * k
    c.send(request(stream, AUTHORITY, f"/trickle/{k}".encode()))
    status, body, ended = None, 0, False
    while not ended:
        kind, flags, s, payload = c.frame()
        if kind in (GOAWAY, RST):
            fail(f"frame type {kind} on stream {s}: {payload.hex()}")
        if s != stream:
            continue
        if kind == HEADERS and status is None:
            # ringway's :status 200 is the static table's entry 8.
            status = 200 if payload[:1] == b"\x88" else payload[:1].hex()
        if kind == DATA:
            body += len(payload)
        ended = bool(flags & END_STREAM)
    print(f"stream {stream} status {status} body-bytes {body}", flush=True)
    if status != 200 or body == 0:
        fail(f"stream {stream}: status {status}, {body} body bytes")
sys.exit(0)
