"""Integration-test harness: starts the test origin and cachemed with a generated config, and
gives tests real clients (redis-py, raw sockets, redis-cli). /usr/bin/python3, stdlib + Debian's
python3-redis only."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("CACHEMED_BIN", os.path.join(ROOT, "build", "cachemed"))
PY = "/usr/bin/python3"

import redis  # noqa: E402  (Debian's python3-redis)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, step=0.02, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


class Origin:
    """tests/origin.py on a free port (or a Unix socket)."""

    def __init__(self, unix=None, default_delay_ms=0):
        args = [PY, os.path.join(ROOT, "tests", "origin.py"), "--port", "0"]
        if unix:
            args = [PY, os.path.join(ROOT, "tests", "origin.py"), "--unix", unix]
        if default_delay_ms:
            args += ["--default-delay-ms", str(default_delay_ms)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "origin":
            raise RuntimeError("origin did not start")
        self.unix = unix
        self.port = None if unix else int(line[-1])
        self.ctl_port = self.port

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _get(self, path, data=None):
        if self.unix:
            raise RuntimeError("control over a unix origin: use a TCP one")
        req = urllib.request.Request(self.url(path), data=data)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def stats(self):
        return self._get("/__stats")

    def requests(self):
        return self._get("/__requests")

    def count(self, path):
        return self.stats()["paths"].get(path, 0)

    def reset(self):
        self._get("/__reset")

    def rule(self, path, **kw):
        kw["path"] = path
        self._get("/__rule", data=json.dumps(kw).encode())

    def default_delay(self, ms):
        self._get("/__default?delay_ms=%d" % ms)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class Daemon:
    """cachemed with a generated config. server_extra: more [server] lines; body: storages and
    nodes."""

    def __init__(self, body, server_extra="", port=None, check_exit=True):
        self.dir = tempfile.mkdtemp(prefix="cm-it-")
        self.port = port or free_port()
        self.conf = os.path.join(self.dir, "cachemed.conf")
        with open(self.conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1:%d\n%s\n%s\n" % (self.port, server_extra, body))
        self.log = os.path.join(self.dir, "cachemed.log")
        self.check_exit = check_exit
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen([BIN, "-c", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for(self._up, 15, what="cachemed to listen")
        except AssertionError:
            self.proc.kill()
            raise AssertionError("cachemed did not start:\n" + self.read_log())

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError("cachemed exited %d:\n%s" % (self.proc.returncode, self.read_log()))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG\r\n", b"-NOAUTH"))
        except OSError:
            return False

    def read_log(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def client(self, **kw):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, **kw)

    def raw(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def stop(self):
        """SIGTERM; asserts a clean exit 0 (ASan leak reports make it non-zero)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("cachemed did not stop on SIGTERM:\n" + self.read_log())
        self.logf.close()
        if self.check_exit and self.proc.returncode != 0:
            raise AssertionError("cachemed exited %d:\n%s" % (self.proc.returncode,
                                                              self.read_log()[-6000:]))


def recv_until(sock, n_bytes=None, terminator=None, timeout=10):
    """Reads until n_bytes were read or terminator is seen."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        if n_bytes is not None and len(buf) >= n_bytes:
            return buf
        if terminator is not None and terminator in buf:
            return buf
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def node(name, key, caches="mem:60s", loader=None, serializer="raw", extra=""):
    s = "[node %s]\nkey = %s\nversion = v1\ncaches = %s\nserializer = %s\n" % (
        name, key, caches, serializer)
    if loader:
        s += "loader = %s\n" % loader
    return s + extra + "\n"


MEM = "[storage mem]\nurl = local://lru\nsize = 10000\n\n"


class DaemonTest(unittest.TestCase):
    """One origin per class; each test starts its own daemon through self.daemon(...)."""

    origin_delay = 0

    @classmethod
    def setUpClass(cls):
        cls.origin = Origin(default_delay_ms=cls.origin_delay)

    @classmethod
    def tearDownClass(cls):
        cls.origin.stop()

    def setUp(self):
        self.origin.reset()
        self._daemons = []

    def tearDown(self):
        errors = []
        for d in self._daemons:
            try:
                d.stop()
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            self.fail("\n".join(errors))

    def daemon(self, body, **kw):
        d = Daemon(body, **kw)
        self._daemons.append(d)
        return d

    def loader(self, path="/items/{id}"):
        return self.origin.url(path)
