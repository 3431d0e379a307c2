#!/usr/bin/python3
"""Soak driver for cachemed (issue 14 B; run through bench/soak.sh, which starts the backends).

Starts the test origin (tests/origin.py) and cachemed, then for --secs drives ~200 clients with
mixed commands (GET, MGET, SET, DEL, REFRESH, STATS, PING) over four nodes (local-only,
[local, redis], redis-only, SQL) while faults are injected on a 60 s schedule: Redis SIGSTOP/
SIGCONT and kill/restart, origin 500s, hangs and slowness, clients that stop reading (then resume
or disconnect) and clients that disconnect with requests in flight.

Every reply is matched to its request by order on its connection and checked: its shape (PING
+PONG, GET a bulk/nil/error, MGET an array of one element per key, ...) and its value (an origin
body names its key's path, a SET value names its key), so a reply delivered to the wrong request
shows up as a wrong value. Prints sent/answered per client role, errors by kind, cachemed's RSS
every 30 s and its slope after warm-up, and exits non-zero on an unanswered request (a client that
stayed), a wrong or malformed reply, a crash (daemon gone, exit status on SIGTERM not 0, a
sanitizer report in its log) or an RSS slope above --max-slope KB/min.

/usr/bin/python3, standard library only. Loopback only; every loop is bounded by the run's end.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import http.client

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PY = "/usr/bin/python3"

# node -> (caches, serializer): local-only, [local, redis], redis-only, SQL
NODES = {"loc": ("tl:30s", "raw"), "lr": ("mem:5s, shared:60s", "msgpack"),
         "ro": ("shared:30s", "json"), "sq": ("sql:60s", "json")}
BIG = 200 * 1024                     # bytes of a loc:big<n> value
CYCLE = 60                           # seconds of one fault schedule
STALL_SECS = 15                      # a reply later than this is reported as a stall
LOADER_TIMEOUT = "1s"
HANG_MS = 1500                       # > LOADER_TIMEOUT: a hang is a load timeout (short: the
                                     # origin holds a connection as long, one Python thread)


class UnixHTTP(http.client.HTTPConnection):
    """HTTP over the origin's Unix socket: control requests do not queue behind the thousands of
    loader connections its TCP port may have waiting to be accepted."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class EOFFromServer(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# RESP

def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Incomplete(Exception):
    pass


def parse(buf, pos):
    """One RESP2 value of buf at pos: (value, next pos), or raises Incomplete. Values: ("+", str),
    ("-", str), (":", int), ("$", bytes | None), ("*", list | None)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete()
    t = buf[pos:pos + 1]
    line = bytes(buf[pos + 1:end])
    pos = end + 2
    if t == b"+":
        return ("+", line.decode("latin-1")), pos
    if t == b"-":
        return ("-", line.decode("latin-1")), pos
    if t == b":":
        return (":", int(line)), pos
    if t == b"$":
        n = int(line)
        if n < 0:
            return ("$", None), pos
        if len(buf) < pos + n + 2:
            raise Incomplete()
        if buf[pos + n:pos + n + 2] != b"\r\n":
            raise ValueError("bulk not followed by CRLF")
        return ("$", bytes(buf[pos:pos + n])), pos + n + 2
    if t == b"*":
        n = int(line)
        if n < 0:
            return ("*", None), pos
        items = []
        for _ in range(n):
            v, pos = parse(buf, pos)
            items.append(v)
        return ("*", items), pos
    raise ValueError("unknown RESP type byte %r" % t)


def error_kind(msg):
    """The class of an error text: quoted parts (keys) and numbers folded."""
    msg = re.sub(r"'[^']*'", "'K'", msg)
    return re.sub(r"\d+", "N", msg)[:120]


# ------------------------------------------------------------------------------------------------
# Counters

class Stats:
    def __init__(self):
        self.sent = collections.Counter()        # role -> requests written
        self.answered = collections.Counter()    # role -> replies matched
        self.cmds = collections.Counter()        # command -> requests written
        self.errors = collections.Counter()      # error kind -> count (top level and MGET slots)
        self.nil = collections.Counter()         # command -> nil replies / slots
        self.bad = collections.Counter()         # what was wrong -> count (wrong value, shape)
        self.bad_samples = []
        self.abandoned = 0                       # requests in flight on connections we dropped
        self.dropped_conns = 0                   # connections we dropped on purpose
        self.server_closed = collections.Counter()    # role -> connections the server closed
        self.server_closed_unanswered = 0
        self.stalls = 0                          # replies that took > STALL_SECS
        self.max_latency = (0.0, "", [])         # slowest reply to a client that reads
        self.late = 0                            # replies to such clients after --max-latency
        self.connect_errors = collections.Counter()
        self.stay_conns = []                     # every connection that was not dropped on purpose

    def bad_reply(self, what, detail):
        self.bad[what] += 1
        if len(self.bad_samples) < 20:
            self.bad_samples.append("%s: %s" % (what, detail[:300]))


class Conn:
    """One client connection: requests in flight in order, replies matched to them."""

    def __init__(self, run, role):
        self.run = run
        self.role = role
        self.pending = collections.deque()   # (cmd, keys)
        self.buf = bytearray()
        self.sent = 0
        self.answered = 0
        self.dropped = False                 # we closed it on purpose
        self.server_closed = False
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.run.port, limit=1 << 20)
        self.run.stats.stay_conns.append(self)

    def send(self, reqs):
        """reqs: list of (cmd, args, keys). Writes them in one write."""
        self.writer.write(b"".join(encode(args) for _, args, _ in reqs))
        st = self.run.stats
        now = time.monotonic()
        for cmd, _, keys in reqs:
            self.pending.append((cmd, keys, now))
            st.cmds[cmd] += 1
        self.sent += len(reqs)
        st.sent[self.role] += len(reqs)

    async def read_some(self, timeout=None):
        """Reads once and matches every complete reply; EOFFromServer when the server closed."""
        try:
            if timeout is None:
                data = await self.reader.read(1 << 18)
            else:
                data = await asyncio.wait_for(self.reader.read(1 << 18), timeout)
        except asyncio.TimeoutError:
            raise   # (a TimeoutError is an OSError since Python 3.11: not a closed connection)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.server_closed = True
            raise EOFFromServer()
        self.buf += data
        pos = 0
        try:
            while True:
                try:
                    val, pos = parse(self.buf, pos)
                except Incomplete:
                    break
                if not self.pending:
                    self.run.stats.bad_reply("reply with no request", repr(val))
                    continue
                cmd, keys, t_sent = self.pending.popleft()
                lat = time.monotonic() - t_sent
                if self.role != "slow":
                    # (a slow reader's replies wait for it on purpose)
                    if lat > self.run.stats.max_latency[0]:
                        self.run.stats.max_latency = (lat, cmd, keys[:3])
                    if lat > self.run.args.max_latency:
                        self.run.stats.late += 1
                self.answered += 1
                self.run.stats.answered[self.role] += 1
                self.run.check(cmd, keys, val)
        except ValueError as e:
            self.run.stats.bad_reply("malformed RESP", "%s: %r" % (e, bytes(self.buf[pos:pos + 80])))
            self.buf.clear()
            raise EOFFromServer()
        del self.buf[:pos]

    async def drain_replies(self, deadline):
        """Reads until every request is answered; reports a stall per STALL_SECS without a reply.
        Returns False when the deadline passed first."""
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await self.read_some(min(left, STALL_SECS))
            except asyncio.TimeoutError:
                if deadline - time.monotonic() > 0:
                    self.run.stats.stalls += 1
                    if self.run.stats.stalls <= 30:
                        self.run.log("stall: %s client, %d requests unanswered for %ds, first %s %s"
                                     % (self.role, len(self.pending), STALL_SECS,
                                        self.pending[0][0], self.pending[0][1][:3]))
        return True

    async def write_drain(self, timeout):
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def drop(self, rst):
        """Closes the connection on purpose, requests in flight or not (rst: RST instead of FIN)."""
        self.dropped = True
        st = self.run.stats
        st.abandoned += len(self.pending)
        st.dropped_conns += 1
        if self.writer is None:
            return
        sock = self.writer.get_extra_info("socket")
        if rst and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
        self.writer.transport.abort()

    def lost(self):
        """The server closed it: what was in flight is unanswered."""
        st = self.run.stats
        st.server_closed[self.role] += 1
        st.server_closed_unanswered += len(self.pending)
        if sum(st.server_closed.values()) <= 30:
            self.run.log("server closed a %s connection with %d requests in flight"
                         % (self.role, len(self.pending)))
        if self.writer is not None:
            self.writer.transport.abort()


# ------------------------------------------------------------------------------------------------
# The run

class Run:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.t0 = time.monotonic()
        self.stop = asyncio.Event()         # no new requests
        self.crashed = None
        self.rss = []                       # (seconds since start, KB)
        self.faults_active = set()
        self.redis_stopped = False
        self.ctl_retries = 0                # origin control requests that had to be retried
        self.work = args.dir
        self.port = None
        self.origin = self.daemon = None
        self.keys = args.keys
        self.rng = random.Random(args.seed)

    def log(self, msg):
        print("[%6.1fs] %s" % (time.monotonic() - self.t0, msg), flush=True)

    # ---- processes ------------------------------------------------------------------------------

    def record_pid(self, pid):
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write("%d\n" % pid)

    def start_origin(self):
        self.ctl_sock = os.path.join(self.work, "origin.sock")
        self.origin_log = open(os.path.join(self.work, "origin.log"), "w")
        self.origin = subprocess.Popen(
            [PY, os.path.join(ROOT, "tests", "origin.py"), "--port", "0", "--unix", self.ctl_sock],
            stdout=subprocess.PIPE, stderr=self.origin_log, text=True)
        self.record_pid(self.origin.pid)
        line = self.origin.stdout.readline().split()
        if not line or line[0] != "origin":
            raise RuntimeError("origin did not start")
        self.origin_port = int(line[-1])

    def origin_ctl(self, path, body=None, secs=60):
        """One control request; retried for up to secs: when the daemon's loader opens thousands
        of connections to it, the origin (one Python thread) can be unresponsive for seconds."""
        deadline = time.monotonic() + secs
        while True:
            try:
                return self.origin_ctl_once(path, body)
            except (OSError, ValueError, http.client.HTTPException):
                self.ctl_retries += 1
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def origin_ctl_once(self, path, body):
        c = UnixHTTP(self.ctl_sock, 5)
        try:
            if body is None:
                c.request("GET", path)
            else:
                c.request("POST", path, json.dumps(body).encode())
            return json.loads(c.getresponse().read() or b"null")
        finally:
            c.close()

    def base_rules(self):
        """Every node's path answers after a short delay (flights overlap), big values, keys that
        always hang or fail."""
        for n in NODES:
            self.origin_ctl("/__rule", {"path": "/%s/" % n, "prefix": 1, "delay_ms": 5})
        self.origin_ctl("/__rule", {"path": "/loc/big", "prefix": 1, "size": BIG, "delay_ms": 5})
        self.origin_ctl("/__rule", {"path": "/lr/hang", "prefix": 1, "delay_ms": HANG_MS})
        self.origin_ctl("/__rule", {"path": "/ro/err", "prefix": 1, "status": 500})

    def config(self):
        o = "http://127.0.0.1:%d" % self.origin_port
        if self.args.sql == "sqlite":
            sql = "url = sqlite://%s\ncreate_table = yes\n" % os.path.join(self.work, "soak.db")
        else:
            sql = "url = %s\ncreate_table = yes\npool_size = 8\n" % os.environ["CM_TEST_PG_URL"]
        return f"""[server]
listen = 127.0.0.1:{self.port}
shutdown_timeout = 5s
log_level = {self.args.log_level}

[storage mem]
url = local://lru
size = 4000

[storage tl]
url = local://tlfu
size = 2000

[storage shared]
url = {os.environ["CM_TEST_REDIS_URL"]}
pool_size = 8
timeout = 500ms

[storage sql]
{sql}timeout = 1s

""" + "".join(
            "[node %s]\nkey = %s:{id}\nversion = v1\ncaches = %s\nserializer = %s\n"
            "loader = %s/%s/{id}\nloader_timeout = %s\n\n"
            % (n, n, caches, ser, o, n, LOADER_TIMEOUT) for n, (caches, ser) in NODES.items())

    def start_daemon(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(self.work, "cachemed.conf")
        with open(conf, "w") as f:
            f.write(self.config())
        self.daemon_log_path = os.path.join(self.work, "cachemed.log")
        self.daemon_log = open(self.daemon_log_path, "w")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.daemon = subprocess.Popen([self.args.bin, "-c", conf], stdout=self.daemon_log,
                                       stderr=subprocess.STDOUT, env=env)
        self.record_pid(self.daemon.pid)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError("cachemed exited %d at start:\n%s"
                                   % (self.daemon.returncode, self.log_tail()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("cachemed did not answer PING in 30 s")

    def log_tail(self, n=40):
        try:
            with open(self.daemon_log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def rss_kb(self):
        try:
            with open("/proc/%d/status" % self.daemon.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def sockets(self):
        """cachemed's TCP connections by peer: clients, origin, other ports (ss -tnp)."""
        try:
            out = subprocess.run(["ss", "-Htnp"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        c = collections.Counter()
        for line in out.splitlines():
            f = line.split()
            if len(f) < 6 or "pid=%d," % self.daemon.pid not in f[5]:
                continue
            local, peer = f[3].rsplit(":", 1)[1], f[4].rsplit(":", 1)[1]
            c["clients" if local == str(self.port) else
              "origin" if peer == str(self.origin_port) else "port " + peer] += 1
        return dict(c)

    @staticmethod
    def cpu_secs(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def nfds(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.daemon.pid))
        except OSError:
            return None

    # ---- requests -------------------------------------------------------------------------------

    def key(self, node=None):
        rng = self.rng
        node = node or rng.choice(list(NODES))
        r = rng.random()
        if node == "loc" and r < 0.02:
            return "loc:big%d" % rng.randrange(20)
        if node == "lr" and r < 0.02:
            return "lr:hang%d" % rng.randrange(50)
        if node == "ro" and r < 0.02:
            return "ro:err%d" % rng.randrange(50)
        # skewed: low ids are hot
        return "%s:%d" % (node, int(self.keys * rng.random() ** 2))

    def request(self, mix="normal"):
        """One (cmd, args, keys); a command of --without is sent as a GET instead."""
        req = self.request_any(mix)
        if req[0] in self.args.without:
            k = self.key()
            return ("GET", ["GET", k], [k])
        return req

    def request_any(self, mix):
        rng = self.rng
        r = rng.random()
        if mix == "hostile":   # what disconnecting clients send: slow things, supersedes
            r = rng.choice((0.0, 0.55, 0.66, 0.74, 0.82, 0.3))
        if r < 0.50:
            k = self.key() if rng.random() > 0.003 else "nomatch:%d" % rng.randrange(100)
            return ("GET", ["GET", k], [k])
        if r < 0.62:
            keys = [self.key() for _ in range(rng.choice((2, 3, 5, 10, 20)))]
            if rng.random() < 0.2:
                keys.append(keys[0])      # duplicate keys: answered once each, in order
            return ("MGET", ["MGET"] + keys, keys)
        if r < 0.72:
            k = self.key(rng.choice(list(NODES)))
            val = json.dumps({"k": k, "s": rng.randrange(1 << 30)})
            args = ["SET", k, val]
            if rng.random() < 0.3:
                args += ["EX", str(rng.randrange(1, 60))]
            elif rng.random() < 0.1:
                args += ["PX", str(rng.randrange(100, 60000))]
            return ("SET", args, [k])
        if r < 0.78:
            keys = [self.key() for _ in range(rng.choice((1, 1, 2, 4)))]
            return ("DEL", ["DEL"] + keys, keys)
        if r < 0.83:
            keys = [self.key() for _ in range(rng.choice((1, 1, 1, 3)))]
            return ("REFRESH", ["REFRESH"] + keys, keys)
        if r < 0.85:
            return ("STATS", ["STATS"], [])
        return ("PING", ["PING"], [])

    def batch(self, mix="normal"):
        n = self.rng.choice((1, 1, 1, 1, 2, 3, 5, 8, 16))
        reqs = [self.request(mix) for _ in range(n)]
        if self.rng.random() < 0.05 and "REFRESH" not in self.args.without:
            # one key asked, refreshed and superseded in one write (issue 14 defect 1's shape)
            k = self.key(self.rng.choice(list(NODES)))
            reqs += [("GET", ["GET", k], [k]), ("REFRESH", ["REFRESH", k], [k]),
                     self.rng.choice((("DEL", ["DEL", k], [k]),
                                      ("SET", ["SET", k, json.dumps({"k": k, "s": 0})], [k])))]
        return reqs

    def value_ok(self, key, v):
        node, _, kid = key.partition(":")
        if key.startswith("loc:big"):
            if len(v) == BIG and v[:1] == b"x" and v[-1:] == b"x":
                return True
        try:
            d = json.loads(v)
        except ValueError:
            return False
        if not isinstance(d, dict):
            return False
        return d.get("path") == "/%s/%s" % (node, kid) or d.get("k") == key

    def check_value(self, cmd, key, val):
        st = self.stats
        t, v = val
        if t == "-":
            st.errors[error_kind(v)] += 1
        elif t == "$" and v is None:
            st.nil[cmd] += 1
        elif t == "$":
            if not self.value_ok(key, v):
                st.bad_reply("wrong value", "%s %s -> %r" % (cmd, key, v[:200]))
        else:
            st.bad_reply("bad element type", "%s %s -> %r" % (cmd, key, val))

    def check(self, cmd, keys, val):
        """Checks one reply against its request."""
        st = self.stats
        t, v = val
        if t == "-":
            st.errors[error_kind(v)] += 1
            return
        if cmd == "PING":
            ok = val == ("+", "PONG")
        elif cmd == "GET":
            self.check_value(cmd, keys[0], val)
            return
        elif cmd in ("MGET", "REFRESH"):
            ok = t == "*" and v is not None and len(v) == len(keys)
            if ok:
                for k, item in zip(keys, v):
                    self.check_value(cmd, k, item)
        elif cmd == "SET":
            ok = val == ("+", "OK")
        elif cmd == "DEL":
            ok = t == ":" and 0 <= v <= len(keys)
        elif cmd == "STATS":
            ok = t == "*" and v is not None and len(v) == 2 * len(NODES)
        else:
            ok = False
        if not ok:
            st.bad_reply("bad %s reply" % cmd, "%s -> %r" % (keys[:3], val)[:300])

    # ---- clients --------------------------------------------------------------------------------

    async def connect(self, role):
        c = Conn(self, role)
        for _ in range(50):
            try:
                await c.open()
                return c
            except OSError as e:
                self.stats.connect_errors[type(e).__name__] += 1
                if self.stop.is_set():
                    return None
                await asyncio.sleep(0.2)
        raise RuntimeError("cannot connect to cachemed")

    async def normal_client(self):
        """Batches of 1-16 pipelined requests, each batch answered before the next."""
        c = await self.connect("normal")
        while c is not None and not self.stop.is_set():
            c.send(self.batch())
            try:
                await c.write_drain(STALL_SECS)
                await c.drain_replies(self.drain_deadline())
            except EOFFromServer:
                c.lost()
                c = await self.connect("normal")
                continue
            await asyncio.sleep(self.rng.uniform(0, 2 * self.args.think))

    async def slow_reader(self):
        """Reads normally for a while, then stops reading while it keeps sending (big values too),
        then either resumes (all must be answered) or disconnects."""
        c = await self.connect("slow")
        rng = self.rng
        while c is not None and not self.stop.is_set():
            try:
                until = time.monotonic() + rng.uniform(3, 15)
                while time.monotonic() < until and not self.stop.is_set():
                    c.send(self.batch())
                    await c.write_drain(STALL_SECS)
                    await c.drain_replies(self.drain_deadline())
                    await asyncio.sleep(rng.uniform(0, 2 * self.args.think))
                if self.stop.is_set():
                    break
                until = time.monotonic() + rng.uniform(5, 25)
                while time.monotonic() < until and not self.stop.is_set():
                    reqs = [("GET", ["GET", k], [k]) for k in
                            ("loc:big%d" % rng.randrange(20) if rng.random() < 0.4 else self.key()
                             for _ in range(rng.randrange(5, 30)))]
                    c.send(reqs)
                    # the daemon stops reading us once our replies pile up: so do our writes
                    await c.write_drain(max(0.0, until - time.monotonic()))
                    await asyncio.sleep(rng.uniform(0.1, 0.5))
                if rng.random() < 0.5 and not self.stop.is_set():
                    c.drop(rst=rng.random() < 0.5)
                    c = await self.connect("slow")
                else:
                    # resumes: a client that stayed, every request answered
                    await c.write_drain(STALL_SECS)
                    await c.drain_replies(self.drain_deadline())
            except EOFFromServer:
                c.lost()
                c = await self.connect("slow")

    async def disconnector(self):
        """Sends slow and superseding requests and leaves mid-flight (FIN or RST)."""
        rng = self.rng
        while not self.stop.is_set():
            c = await self.connect("disconnect")
            if c is None:
                return
            reqs = []
            for _ in range(rng.randrange(1, 30)):
                reqs.append(self.request("hostile"))
            if rng.random() < 0.5 and "REFRESH" not in self.args.without:
                k = self.key(rng.choice(list(NODES)))
                reqs += [("REFRESH", ["REFRESH", k], [k]), ("SET", ["SET", k, json.dumps({"k": k})], [k])]
            c.send(reqs)
            try:
                wait = rng.uniform(0, 1.5)
                until = time.monotonic() + wait
                while c.pending and time.monotonic() < until:
                    try:
                        await c.read_some(max(0.001, until - time.monotonic()))
                    except asyncio.TimeoutError:
                        break
                if c.pending:
                    c.drop(rst=rng.random() < 0.5)
                else:
                    c.dropped = True       # all answered; it leaves
                    c.writer.transport.abort()
            except EOFFromServer:
                c.lost()
            await asyncio.sleep(rng.uniform(0.05, 0.5))

    def drain_deadline(self):
        # Before the end a reply may take as long as it takes (stalls are reported); after it,
        # --drain seconds at most.
        return self.end + self.args.drain

    # ---- faults ---------------------------------------------------------------------------------

    def redis_pid(self):
        base = os.environ["CM_TEST_SRV_BASE"]
        try:
            with open(os.path.join(base, "redis.pids")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    async def backends(self, *args):
        p = await asyncio.create_subprocess_exec(
            os.path.join(ROOT, "scripts", "backends.sh"), *args, os.environ["CM_TEST_SRV_BASE"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await p.communicate()
        if p.returncode != 0:
            self.log("backends.sh %s failed: %s" % (" ".join(args), err.decode()[-300:]))

    async def origin_rule(self, **rule):
        await asyncio.to_thread(self.origin_ctl, "/__rule", rule)

    async def fault(self, name, start, stop, secs):
        self.log("fault on: " + name)
        self.faults_active.add(name)
        try:
            await start()
            await self.sleep_until_stop(secs)
        finally:
            try:
                await stop()
                self.log("fault off: " + name)
            finally:
                self.faults_active.discard(name)

    async def sleep_until_stop(self, secs):
        try:
            await asyncio.wait_for(self.stop.wait(), secs)
        except asyncio.TimeoutError:
            pass

    async def redis_sigstop(self):
        pid = self.redis_pid()

        async def start():
            if pid:
                os.kill(pid, signal.SIGSTOP)
                self.redis_stopped = pid

        async def stop():
            if pid:
                os.kill(pid, signal.SIGCONT)
                self.redis_stopped = False
        await self.fault("redis SIGSTOP (pid %s)" % pid, start, stop, 5)

    async def redis_kill(self, cycle):
        pid = self.redis_pid()
        if cycle % 2 == 0 and pid:
            self.log("fault: redis SIGKILL (pid %d), start again" % pid)
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(2)
            await self.backends("start", "redis")
        else:
            self.log("fault: redis restart (SIGTERM, start)")
            await self.backends("restart", "redis")
        self.log("redis back (pid %s)" % self.redis_pid())

    def origin_fault(self, node, secs, **rule):
        async def start():
            await self.origin_rule(path="/%s/" % node, prefix=1, **rule)

        async def stop():
            await self.origin_rule(path="/%s/" % node, prefix=1, delay_ms=5)
        return self.fault("origin /%s/ %s" % (node, rule), start, stop, secs)

    async def faults(self):
        """Runs the schedule; a failed control request is logged, not fatal."""
        while not self.stop.is_set():
            try:
                await self.fault_schedule()
            except (OSError, ValueError, http.client.HTTPException) as e:
                self.log("fault schedule: %r (retried in 5 s)" % e)
                await self.sleep_until_stop(5)

    async def fault_schedule(self):
        """The schedule, every CYCLE seconds (offsets in seconds)."""
        cycle = 0
        while not self.stop.is_set():
            c0 = time.monotonic()

            async def at(offset):
                await self.sleep_until_stop(c0 + offset - time.monotonic())
                return not self.stop.is_set()

            # The origin's request log and counters grow with every request: start each cycle
            # with empty ones (the reset clears the rules too).
            await asyncio.to_thread(self.origin_ctl, "/__reset")
            await asyncio.to_thread(self.base_rules)
            if not self.args.faults:
                await self.sleep_until_stop(CYCLE)
                continue
            if await at(5):
                await self.origin_fault("lr", 10, status=500)
            if await at(15):
                await self.redis_sigstop()
            if await at(22):
                await self.origin_fault("ro", 10, delay_ms=HANG_MS)
            if await at(33):
                await self.origin_fault("loc", 8, delay_ms=400)
            if await at(42):
                await self.redis_kill(cycle)
            if await at(48):
                await self.origin_fault("sq", 6, status=500)
            await at(CYCLE)
            cycle += 1

    # ---- monitor --------------------------------------------------------------------------------

    async def monitor(self):
        """RSS every 5 s (printed every 30 s), crash check every second, until the end."""
        last_print = -30.0
        last_sent = 0
        while True:
            t = time.monotonic() - self.t0
            if self.daemon.poll() is not None:
                self.crashed = "cachemed exited %d during the run at %.0fs" % (
                    self.daemon.returncode, t)
                self.log(self.crashed)
                self.stop.set()
                return
            if not self.rss or t - self.rss[-1][0] >= 5:
                kb = self.rss_kb()
                if kb is not None:
                    self.rss.append((t, kb))
                if kb is not None and t - last_print >= 30:
                    sent = sum(self.stats.sent.values())
                    rate = (sent - last_sent) / max(t - last_print, 1.0) if last_print >= 0 else 0
                    self.log("rss %d KB, fds %s, sent %d, answered %d, %.0f req/s, faults: %s"
                             % (kb, self.nfds(), sent, sum(self.stats.answered.values()), rate,
                                ", ".join(sorted(self.faults_active)) or "-"))
                    last_print, last_sent = t, sent
            if self.stop.is_set():
                return
            await asyncio.sleep(1)

    async def main(self):
        a = self.args
        self.end = self.t0 + a.secs
        nslow = a.clients // 10 if a.slow is None else a.slow
        ndisc = a.clients // 10 if a.disconnectors is None else a.disconnectors
        nnormal = max(0, a.clients - nslow - ndisc)
        roles = [self.normal_client] * nnormal + [self.slow_reader] * nslow + \
            [self.disconnector] * ndisc
        self.log("cachemed pid %d on port %d (%s), origin port %d, %d clients "
                 "(%d normal, %d slow readers, %d disconnectors), %ds, faults %s"
                 % (self.daemon.pid, self.port, a.bin, self.origin_port, len(roles),
                    nnormal, nslow, ndisc, a.secs, "on" if a.faults else "off"))
        self.fds0 = self.nfds()
        self.fds_open = self.fds_closed = None
        self.fds_closed_secs = 0.0
        self.cpu = (None, None, None)
        self.socks_closed = {}
        mon = asyncio.create_task(self.monitor())
        faults = asyncio.create_task(self.faults())
        clients = [asyncio.create_task(r()) for r in roles]
        await self.sleep_until_stop(a.secs)
        self.stop.set()
        self.log("end of load: draining replies (at most %ds)" % a.drain)
        await faults
        done, pending = await asyncio.wait(clients, timeout=a.drain + STALL_SECS)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None and not isinstance(t.exception(), asyncio.CancelledError):
                self.stats.bad_reply("client task failed", repr(t.exception()))
        await mon
        t = os.times()
        self.cpu = (self.cpu_secs(self.daemon.pid), self.cpu_secs(self.origin.pid),
                    t.user + t.system)
        # Descriptors with our connections open, then once they are all closed (a leak shows).
        self.fds_open = self.nfds()
        for c in self.stats.stay_conns:
            if c.writer is not None and not c.writer.transport.is_closing():
                c.writer.transport.abort()
        t = time.monotonic()
        while time.monotonic() - t < 20:
            await asyncio.sleep(0.5)
            self.fds_closed = self.nfds()
            if self.fds_closed is None or self.fds_closed <= self.fds0:
                break
        self.fds_closed_secs = time.monotonic() - t
        self.socks_closed = self.sockets()

    # ---- the end --------------------------------------------------------------------------------

    def final_checks(self):
        """SIGTERM: exit status and sanitizer reports."""
        res = {"fds_start": self.fds0, "fds_end_open": self.fds_open,
               "fds_end_closed": self.fds_closed}
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
                res["sigterm"] = "did not exit within 60 s of SIGTERM (killed)"
        res["exit"] = self.daemon.returncode
        log = open(self.daemon_log_path, errors="replace").read()
        res["sanitizer"] = len(re.findall(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                                          r"runtime error:", log))
        res["log_bytes"] = len(log)
        return res

    def slope(self):
        """KB/min of a least-squares line through the RSS samples after warm-up."""
        pts = [(t, kb) for t, kb in self.rss if t >= self.args.warmup]
        if len(pts) < 3:
            return None
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mk = sum(k for _, k in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var == 0:
            return None
        return sum((t - mt) * (k - mk) for t, k in pts) / var * 60

    def report(self, fin):
        st, a = self.stats, self.args
        print("\n==== soak report (%ds, %d clients, %s) ====" % (a.secs, a.clients, a.bin))
        stayed = [c for c in st.stay_conns if not c.dropped]
        unanswered = sum(c.sent - c.answered for c in stayed)
        for role in ("normal", "slow", "disconnect"):
            print("%-11s sent %9d  answered %9d" % (role, st.sent[role], st.answered[role]))
        sent_stay = sum(c.sent for c in stayed)
        ans_stay = sum(c.answered for c in stayed)
        print("clients that stayed (%d connections): sent %d, answered %d, UNANSWERED %d"
              % (len(stayed), sent_stay, ans_stay, unanswered))
        print("  of which on connections the server closed: %d requests (connections: %s)"
              % (st.server_closed_unanswered, dict(st.server_closed) or 0))
        print("dropped on purpose: %d connections with %d requests in flight"
              % (st.dropped_conns, st.abandoned))
        print("commands: " + ", ".join("%s %d" % kv for kv in st.cmds.most_common()))
        print("stalls (no reply for %ds while one was due): %d; slowest reply to a reading client: "
              "%.1f s (%s %s); LATE replies (after %ds): %d" % (STALL_SECS, st.stalls,
                                                                *st.max_latency, a.max_latency,
                                                                st.late))
        print("errors by kind:")
        for kind, n in st.errors.most_common(25):
            print("  %8d  %s" % (n, kind))
        if not st.errors:
            print("  none")
        print("nil replies: " + (", ".join("%s %d" % kv for kv in st.nil.items()) or "none"))
        nbad = sum(st.bad.values())
        print("wrong or malformed replies: %d %s" % (nbad, dict(st.bad) if nbad else ""))
        for s in st.bad_samples:
            print("  " + s)
        if st.connect_errors:
            print("connect errors: %s" % dict(st.connect_errors))
        print("RSS (KB) every 30 s:")
        printed = -30
        for t, kb in self.rss:
            if t - printed >= 29.5:
                print("  %5.0fs %8d" % (t, kb))
                printed = t
        slope = self.slope()
        print("RSS slope after %ds warm-up: %s KB/min (limit %d)"
              % (a.warmup, "n/a" if slope is None else "%.1f" % slope, a.max_slope))
        print("descriptors: %s at start, %s at the end with clients open, %s %.1f s after they "
              "closed" % (fin.get("fds_start"), fin.get("fds_end_open"), fin.get("fds_end_closed"),
                          self.fds_closed_secs))
        print("  cachemed's TCP connections then: %s" % self.socks_closed)
        crash = self.crashed or fin.get("sigterm") or ""
        if not crash and fin["exit"] != 0:
            crash = "exit status %s on SIGTERM" % fin["exit"]
        if fin["sanitizer"]:
            crash += " %d sanitizer report(s) in the log" % fin["sanitizer"]
        print("crashes: %s" % (crash or "0 (alive at the end, exit 0 on SIGTERM, no sanitizer "
                                        "report)"))
        print("CPU seconds: cachemed %s, origin %s, this driver %.0f" % self.cpu)
        print("origin control requests retried (origin unresponsive for 5 s): %d" % self.ctl_retries)
        print("cachemed log: %d bytes (%s)" % (fin["log_bytes"], self.daemon_log_path))
        if crash:
            print("---- end of cachemed log ----\n" + self.log_tail(60))
        fails = []
        if unanswered or st.server_closed_unanswered:
            fails.append("%d unanswered" % (unanswered))
        if crash:
            fails.append("crash")
        if nbad:
            fails.append("%d wrong/malformed replies" % nbad)
        if st.late:
            fails.append("%d replies later than %ds" % (st.late, a.max_latency))
        if slope is None or slope > a.max_slope:
            fails.append("RSS slope %s" % ("n/a" if slope is None else "%.1f KB/min" % slope))
        print("RESULT: " + ("FAIL (" + "; ".join(fails) + ")" if fails else "PASS"))
        return 1 if fails else 0


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=env("SOAK_BIN", os.path.join(ROOT, "build", "cachemed")))
    ap.add_argument("--secs", type=int, default=int(env("SOAK_SECS", "600")))
    ap.add_argument("--clients", type=int, default=int(env("SOAK_CLIENTS", "200")))
    ap.add_argument("--keys", type=int, default=int(env("SOAK_KEYS", "1000")),
                    help="ids per node")
    ap.add_argument("--think", type=float, default=float(env("SOAK_THINK", "0.05")),
                    help="mean seconds a client waits between batches")
    ap.add_argument("--warmup", type=int, default=None, help="default: min(120, secs / 3)")
    ap.add_argument("--max-slope", type=int, default=int(env("SOAK_MAX_SLOPE", "1024")),
                    help="KB/min")
    ap.add_argument("--max-latency", type=int, default=int(env("SOAK_MAX_LATENCY", "15")),
                    help="seconds: a later reply to a client that reads fails the run (a load "
                    "ends within its loader_timeout, 1 s here, storage ops within 0.5-1 s)")
    ap.add_argument("--drain", type=int, default=30, help="seconds for the last replies")
    ap.add_argument("--sql", choices=("pg", "sqlite"), default=env("SOAK_SQL", "pg"))
    ap.add_argument("--log-level", default=env("SOAK_LOG_LEVEL", "info"))
    ap.add_argument("--seed", type=int, default=int(env("SOAK_SEED", "1")))
    ap.add_argument("--without", default=env("SOAK_WITHOUT", ""),
                    help="commands left out of the mix, comma-separated (say REFRESH)")
    ap.add_argument("--slow", type=int, default=None if env("SOAK_SLOW") is None else
                    int(env("SOAK_SLOW")), help="slow readers (default: a tenth of the clients)")
    ap.add_argument("--disconnectors", type=int, default=None if env("SOAK_DISC") is None else
                    int(env("SOAK_DISC")), help="disconnecting clients (default: a tenth)")
    ap.add_argument("--faults", type=int, default=int(env("SOAK_FAULTS", "1")),
                    help="0: no Redis or origin faults")
    ap.add_argument("--dir", required=True, help="work dir (config, logs, pids)")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = min(120, args.secs // 3)
    args.bin = os.path.abspath(args.bin)
    args.without = {w.strip().upper() for w in args.without.split(",") if w.strip()}
    run = Run(args)
    rc = 1
    try:
        run.start_origin()
        run.base_rules()
        run.start_daemon()
        loop = asyncio.new_event_loop()
        try:
            def on_signal():
                run.log("interrupted: stopping")
                run.end = time.monotonic()
                args.drain = 3
                run.stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            loop.run_until_complete(run.main())
        finally:
            if run.redis_stopped:
                os.kill(run.redis_stopped, signal.SIGCONT)
            loop.close()
        rc = run.report(run.final_checks())
    finally:
        for p in (run.daemon, run.origin):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    return rc


if __name__ == "__main__":
    sys.exit(main())
