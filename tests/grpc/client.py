"""Calls test.Echo through ringway (h2c, prior knowledge) and prints one
JSON object with what each kind of call returned. argv: TARGET [die]."""
import json
import sys

import grpc


def ident(b):
    return b


target = sys.argv[1]
out = {}
with grpc.insecure_channel(target) as ch:
    grpc.channel_ready_future(ch).result(timeout=10)
    unary = ch.unary_unary("/test.Echo/Unary", ident, ident)
    if len(sys.argv) > 2 and sys.argv[2].startswith("health="):
        ch.unary_unary("/test.Echo/SetHealth", ident, ident)(sys.argv[2][7:].encode(), timeout=10)
        print(json.dumps({"health": sys.argv[2][7:]}))
        sys.exit(0)
    if len(sys.argv) > 2 and sys.argv[2].startswith("parallel="):
        n = int(sys.argv[2][9:])
        calls = [unary.future(b"sleep", timeout=20) for _ in range(n)]
        results = []
        for c in calls:
            try:
                results.append(c.result().decode())
            except grpc.RpcError as e:
                results.append(f"{e.code().name}: {e.details()}")
        print(json.dumps({"parallel": results}))
        sys.exit(0)
    if len(sys.argv) > 2 and sys.argv[2] == "die":
        try:
            unary(b"die", timeout=10)
            out["die"] = "ok"
        except grpc.RpcError as e:
            out["die"] = e.code().name
        print(json.dumps(out))
        sys.exit(0)
    resp, call = unary.with_call(b"hello", timeout=10)
    out["unary"] = resp.decode()
    out["unary_trailers"] = dict(call.trailing_metadata() or ())
    try:
        unary(b"fail", timeout=10)
        out["fail"] = "ok"
    except grpc.RpcError as e:
        out["fail"] = [e.code().name, e.details()]
    ss = ch.unary_stream("/test.Echo/ServerStream", ident, ident)
    out["server_stream"] = [m.decode() for m in ss(b"5", timeout=10)]
    cs = ch.stream_unary("/test.Echo/ClientStream", ident, ident)
    out["client_stream"] = cs(iter([b"a", b"b", b"c"]), timeout=10).decode()
    bd = ch.stream_stream("/test.Echo/Bidi", ident, ident)
    out["bidi"] = [m.decode() for m in bd(iter([b"x", b"y", b"z"]), timeout=10)]
print(json.dumps(out))
