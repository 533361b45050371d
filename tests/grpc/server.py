"""A gRPC backend for ringway's tests (grpcio, no generated code: raw
bytes in and out). Prints `port N` once serving on 127.0.0.1.

Methods of service test.Echo:
  Unary        echoes the request; a request b"fail" is answered with
               INVALID_ARGUMENT and a message; b"die" kills the process
               mid-call (the client must see an error, not a hang).
  ServerStream answers N messages, N = int(request), each b"msg-i".
  ClientStream answers the concatenation of what the client streamed.
  Bidi         echoes each message as it arrives, upper-cased.
  SetHealth    b"1": SERVING, b"0": NOT_SERVING, for
grpc.health.v1.Health/Check (raw protobuf: field 1 = status).
"""
import os
import sys
import time
from concurrent import futures

import grpc


def unary(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "asked to fail")
    if req == b"die":
        os._exit(3)
    if req == b"sleep":
        time.sleep(0.5)
    ctx.set_trailing_metadata((("x-trailer", "t1"),))
    return req


def server_stream(req, ctx):
    for i in range(int(req)):
        yield b"msg-%d" % i


def client_stream(it, ctx):
    return b"".join(it)


def bidi(it, ctx):
    for m in it:
        yield m.upper()


health = {"status": 1}


def set_health(req, ctx):
    health["status"] = 1 if req == b"1" else 2
    return req


def check(req, ctx):
    return bytes([0x08, health["status"]])


def ident(b):
    return b


handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
    "SetHealth": grpc.unary_unary_rpc_method_handler(set_health, ident, ident),
}
health_handlers = {"Check": grpc.unary_unary_rpc_method_handler(check, ident, ident)}

# At most 2 streams per connection: a client with more calls in flight
# must open more connections (or queue).
server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=[("grpc.max_concurrent_streams", 2)])
server.add_generic_rpc_handlers((
    grpc.method_handlers_generic_handler("test.Echo", handlers),
    grpc.method_handlers_generic_handler("grpc.health.v1.Health", health_handlers),
))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"port {port}", flush=True)
sys.stdin.read()  # until the test closes our stdin
server.stop(0)
