#!/usr/bin/python3
"""Test origin for cachemed: a small HTTP/1.1 server (keep-alive) with per-path behaviour rules
and exact request counters. Standard library only; run with /usr/bin/python3.

usage: origin.py [--port P] [--unix PATH] [--host 127.0.0.1] [--default-delay-ms N]

Prints "origin listening PORT" (TCP; the real port for --port 0) or "origin listening PATH"
(--unix only) on stdout once ready.

Any path: 200 application/json {"path": "<raw target>", "n": <times this exact target was asked>}.
/uid/<n> answers the bare body <n>. Control endpoints (paths starting with /__; they are not
counted and not logged):
  GET  /__stats     {"total", "paths": {target: count}, "connections", "active", "max_active"}
  GET  /__requests  JSON list of raw targets in arrival order (the first 1,000,000)
  GET  /__reset     clears counters, rules and the request log (not the default delay)
  POST /__rule      JSON {"path", "delay_ms", "status", "body", "size", "close", "prefix",
                    "chunked", "raw", "close_after", "reused_close_ms"}
                    chunked: send "size" bytes with Transfer-Encoding: chunked
                    close: close the connection (after delay_ms) without answering
                    raw: after delay_ms send exactly these bytes (latin-1) and close, e.g. a
                      response cut short: "HTTP/1.1 200 OK\r\nCont"
                    close_after: answer, then close the kept-alive connection (no
                      "Connection: close" header: the client learns it only from the close)
                    reused_close_ms: on a connection that already served a request, wait this
                      long, then close it without answering (a kept-alive connection that dies
                      under a request); a first request on a connection is served as usual
  GET  /__rule?path=...&delay_ms=...&status=...&body=...&size=...&close=1&prefix=1 (same keys)
  GET  /__default?delay_ms=N   default delay for every path without a rule
"""

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import sys
from urllib.parse import parse_qs, urlsplit

MAX_LOG = 1_000_000
MAX_HEADER = 1 << 20
CHUNK = 1 << 20
UID_RE = re.compile(r"^/uid/(\d+)$")
REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


class Origin:
    """All state lives on the one asyncio thread, so plain counters are exact."""

    def __init__(self, default_delay_ms):
        self.default_delay_ms = default_delay_ms
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.reset()

    def reset(self):
        self.total = 0
        self.paths = {}
        self.log = []
        self.rules = {}          # exact path -> rule
        self.prefix_rules = []   # (path, rule), longest first
        self.connections = 0
        self.max_active = self.active

    def rule_for(self, target):
        rule = self.rules.get(target)
        if rule is not None:
            return rule
        path = target.split("?", 1)[0]
        rule = self.rules.get(path)
        if rule is not None:
            return rule
        for prefix, prule in self.prefix_rules:
            if target.startswith(prefix):
                return prule
        return None

    def add_rule(self, spec):
        path = spec.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("rule needs a \"path\" starting with /")
        rule = {
            "delay_ms": float(spec.get("delay_ms") or 0),
            "status": int(spec.get("status") or 200),
            "body": spec.get("body"),
            "size": None if spec.get("size") in (None, "") else int(spec["size"]),
            "close": truthy(spec.get("close")),
            "chunked": truthy(spec.get("chunked")),
            "raw": spec.get("raw"),
            "close_after": truthy(spec.get("close_after")),
            "reused_close_ms": float(spec.get("reused_close_ms") or 0),
        }
        if rule["raw"] is not None and not isinstance(rule["raw"], str):
            raise ValueError("\"raw\" must be a string")
        if rule["body"] is not None and not isinstance(rule["body"], str):
            rule["body"] = json.dumps(rule["body"])
        self.rules.pop(path, None)
        self.prefix_rules = [(p, r) for p, r in self.prefix_rules if p != path]
        if truthy(spec.get("prefix")):
            self.prefix_rules.append((path, rule))
            self.prefix_rules.sort(key=lambda pr: -len(pr[0]))
        else:
            self.rules[path] = rule
        return rule


def truthy(v):
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


def query_dict(target):
    q = urlsplit(target).query
    return {k: v[-1] for k, v in parse_qs(q, keep_blank_values=True).items()}


def response(status, body, ctype="application/json", close=False):
    if isinstance(body, str):
        body = body.encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


async def control(origin, method, target, body):
    """Answers a /__ endpoint; returns the response bytes."""
    path = target.split("?", 1)[0]
    if path == "/__stats":
        return response(200, json.dumps({
            "total": origin.total, "paths": origin.paths, "connections": origin.connections,
            "active": origin.active, "max_active": origin.max_active}))
    if path == "/__requests":
        return response(200, json.dumps(origin.log))
    if path == "/__reset":
        origin.reset()
        return response(200, '{"ok": true}')
    if path == "/__rule":
        try:
            spec = json.loads(body or b"{}") if method == "POST" else query_dict(target)
            if not isinstance(spec, dict):
                raise ValueError("rule must be a JSON object")
            rule = origin.add_rule(spec)
        except (ValueError, TypeError) as e:
            return response(400, json.dumps({"error": str(e)}))
        return response(200, json.dumps({"ok": True, "rule": rule}))
    if path == "/__default":
        try:
            origin.default_delay_ms = float(query_dict(target).get("delay_ms") or 0)
        except ValueError as e:
            return response(400, json.dumps({"error": str(e)}))
        return response(200, json.dumps({"ok": True, "delay_ms": origin.default_delay_ms}))
    return response(404, json.dumps({"error": "unknown control endpoint " + path}))


async def send_size(writer, status, size, chunked, close):
    """Sends size bytes of 'x', with a Content-Length or (chunked) without one."""
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    writer.write((f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
                  f"Content-Type: application/octet-stream\r\n{length}\r\n"
                  + ("Connection: close\r\n" if close else "") + "\r\n").encode())
    chunk = b"x" * min(size, CHUNK)
    while size > 0:
        n = min(size, CHUNK)
        if chunked:
            writer.write(b"%x\r\n" % n + chunk[:n] + b"\r\n")
        else:
            writer.write(chunk[:n])
        size -= n
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def serve(origin, target, writer, close, served):
    """Answers an ordinary request (served: requests this connection answered before); returns
    False when the connection must be dropped."""
    origin.total += 1
    n = origin.paths.get(target, 0) + 1
    origin.paths[target] = n
    if len(origin.log) < MAX_LOG:
        origin.log.append(target)
    origin.active += 1
    origin.max_active = max(origin.max_active, origin.active)
    try:
        rule = origin.rule_for(target)
        if rule and rule["reused_close_ms"] > 0 and served > 0:
            await asyncio.sleep(rule["reused_close_ms"] / 1000.0)
            return False
        delay = rule["delay_ms"] if rule else origin.default_delay_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if rule and rule["close"]:
            return False
        if rule and rule["raw"] is not None:
            writer.write(rule["raw"].encode("latin-1"))
            await writer.drain()
            return False
        status = rule["status"] if rule else 200
        if rule and rule["size"] is not None:
            await send_size(writer, status, rule["size"], rule["chunked"], close)
            return not rule["close_after"]
        if rule and rule["body"] is not None:
            body = rule["body"]
        else:
            m = UID_RE.match(target.split("?", 1)[0])
            body = m.group(1) if m else json.dumps({"path": target, "n": n})
        writer.write(response(status, body, close=close))
        await writer.drain()
        return not (rule and rule["close_after"])
    finally:
        origin.active -= 1


async def handle(origin, reader, writer):
    origin.connections += 1
    served = 0
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(response(400, '{"error": "bad request line"}', close=True))
                return
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = b""
            clen = headers.get("content-length")
            if clen:
                try:
                    body = await reader.readexactly(int(clen))
                except (ValueError, asyncio.IncompleteReadError, ConnectionError):
                    return
            conn_hdr = headers.get("connection", "").lower()
            close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
            if target.startswith("/__"):
                writer.write(await control(origin, method, target, body))
                await writer.drain()
            else:
                if not await serve(origin, target, writer, close, served):
                    return
                served += 1
            if close:
                return
    except ConnectionError:
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def main():
    ap = argparse.ArgumentParser(description="cachemed test origin")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--unix", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--default-delay-ms", type=float, default=0)
    args = ap.parse_args()
    if args.port is None and args.unix is None:
        args.port = 8000
    raise_nofile()
    origin = Origin(args.default_delay_ms)

    def cb(r, w):
        return handle(origin, r, w)

    servers = []
    if args.port is not None:
        srv = await asyncio.start_server(cb, args.host, args.port, backlog=4096, limit=MAX_HEADER,
                                         reuse_address=True)
        servers.append(srv)
        print("origin listening", srv.sockets[0].getsockname()[1], flush=True)
    if args.unix is not None:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        srv = await asyncio.start_unix_server(cb, args.unix, backlog=4096, limit=MAX_HEADER)
        servers.append(srv)
        if args.port is None:
            print("origin listening", args.unix, flush=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(0))
    await stop
    for srv in servers:
        srv.close()
    if args.unix is not None:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.exit(0)
