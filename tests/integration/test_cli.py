"""The command line: --check, exit codes, config errors with FILE:LINE, every error reported."""
import os
import socket
import subprocess
import tempfile
import unittest

from harness import BIN, ROOT, Daemon, free_port


def run(*args):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=30)


ST = "[storage m]\nurl = local://lru\n"
NODE = "[node n]\nkey = n:{id}\nversion = v1\ncaches = m\n"
P17 = ":".join("{a%d}" % i for i in range(1, 18))
P16 = ":".join("{a%d}" % i for i in range(1, 17))

# Defect 16 (issue 14): each passed --check, then failed to start with exit 1. (line, config)
FAILED_TO_START = [
    (4, ST + "[node n]\nkey = %s\nversion = v1\ncaches = m\n" % P17),
    (2, "[storage r]\nurl = redis://127.0.0.1:1/65536\n[node n]\nkey = n:{id}\nversion = v1\n"
        "caches = r\n"),
    (3, "[storage m]\nurl = local://lru\nsize = 2147483649\n" + NODE),
    (7, ST + NODE + "invalidate_channel = inv\n"),
    (3, "[server]\nlisten = 127.0.0.1:{p}\nlisten = 0.0.0.0:{p}\n" + ST + NODE),
    (3, "[server]\nlisten = 127.0.0.1:{p}\nmetrics_listen = 127.0.0.1:{p}\n" + ST + NODE),
    (3, "[server]\nlisten = 127.0.0.1:{p}\nmetrics_listen = 0.0.0.0:{p}\n" + ST + NODE),
    (3, "[storage p]\nurl = postgres://u@127.0.0.1/d\ntable = 1cache\n" + NODE.replace("= m", "= p")),
    (2, "[storage s]\nurl = sqlite://#x\n" + NODE.replace("= m", "= s")),
    (2, "[storage g]\nurl = mongodb://127.0.0.1/?replicaSet=\n" + NODE.replace("= m", "= g")),
]


class CliTest(unittest.TestCase):
    def write(self, text):
        fd, path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_example_checks_ok(self):
        r = run("--check", "-c", os.path.join(ROOT, "cachemed.conf.example"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration OK", r.stdout)

    def test_every_error_reported_with_file_and_line(self):
        path = self.write("[server]\nlisten = 127.0.0.1:6380\nbogus = 1\n\n"
                          "[storage a]\nurl = local://lru\nsize = 0\n\n"
                          "[node user]\nkey = user:{id}\nversion = v1\ncaches = redis2:10d\n"
                          "serializer = yaml\n")
        r = run("--check", "-c", path)
        self.assertEqual(r.returncode, 2)
        name = os.path.basename(path)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertGreaterEqual(len(lines), 4, r.stderr)
        for l in lines:
            self.assertTrue(l.startswith(path + ":") or l.startswith(name + ":"), l)
        self.assertRegex(r.stderr, r":3: .*bogus")
        self.assertRegex(r.stderr, r":7: .*size")
        self.assertRegex(r.stderr, r":12: .*unknown storage 'redis2'")
        self.assertRegex(r.stderr, r":13: .*serializer")

    def test_bad_config_does_not_start(self):
        path = self.write("[nodes x]\n")
        r = run("-c", path)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r":1: ")

    def test_usage_and_version(self):
        self.assertEqual(run().returncode, 2)
        self.assertEqual(run("--bogus").returncode, 2)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^cachemed \d+\.\d+\.\d+")
        self.assertEqual(run("--help").returncode, 0)
        self.assertEqual(run("-c", "/nonexistent/cachemed.conf").returncode, 2)

    def test_listen_failure_is_runtime_error(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        path = self.write("[server]\nlisten = 127.0.0.1:%d\n[storage m]\nurl = local://lru\n"
                          "[node n]\nkey = n:{id}\nversion = v1\ncaches = m\n" % port)
        r = run("-c", path)
        s.close()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("listen 127.0.0.1:%d" % port, r.stderr)

    def test_check_rejects_what_failed_to_start(self):
        """--check exits 2 with FILE:LINE on each, and starting it exits 2 the same way (both run
        cm_conf_load, the one validation)."""
        for i, (line, text) in enumerate(FAILED_TO_START):
            path = self.write(text.replace("{p}", str(free_port())))
            for args in (("--check", "-c", path), ("-c", path)):
                with self.subTest(case=i, args=args[0]):
                    r = run(*args)
                    self.assertEqual(r.returncode, 2, "%s\n%s\n%s" % (args, text, r.stderr))
                    self.assertIn("%s:%d: " % (path, line), r.stderr, text)

    def test_what_check_accepts_starts(self):
        """Configs at the edges of what --check accepts start and stop cleanly (each of these
        passed --check before, and some failed to start)."""
        cases = [
            ("metrics_listen = [::1]:%d\n" % free_port(), ST + NODE),  # getaddrinfo got "[::1]"
            ("", ST + "[node n]\nkey = %s\nversion = v1\ncaches = m\n" % P16),
            ("", ST + "[node n]\nkey = {a}:{b}\nversion = v1\ncaches = m\n"
                 "loader = http://127.0.0.1:1/{a}{b}?again={a}\n"),  # node.c refused {a}{b}
            ("", "[storage m]\nurl = local://lru\nsize = 2147483648\n"
                 "[storage r]\nurl = redis://127.0.0.1:1/65535\n"
                 "[node n]\nkey = n:{id}\nversion = v1\ncaches = m, r\n"
                 "invalidate_channel = inv\n"),
            ("listen = 127.0.0.2:{p}\n", ST + NODE + "grace = 5m\nbreaker = 5, 10s\n"
                 "loader = http://127.0.0.1:1/{id}\nloader_batch = http://127.0.0.1:1/?ids={id}\n"),
        ]
        try:
            socket.create_server(("::1", 0), family=socket.AF_INET6).close()
        except OSError:
            cases = cases[1:]  # no IPv6 loopback on this machine
        for i, (server, body) in enumerate(cases):
            with self.subTest(case=i):
                port = free_port()
                server = server.replace("{p}", str(port))
                path = self.write("[server]\nlisten = 127.0.0.1:%d\n%s%s" % (port, server, body))
                r = run("--check", "-c", path)
                self.assertEqual(r.returncode, 0, r.stderr)
                d = Daemon(body, server_extra=server, port=port)
                d.stop()

    def test_log_file_failure_is_runtime_error(self):
        """A log file that cannot be created is the machine's doing: --check accepts the config,
        start exits 1 naming the file (it exited 2, as for a bad config)."""
        path = self.write("[server]\nlisten = 127.0.0.1:%d\nlog_file = /nonexistent/dir/cm.log\n"
                          % free_port() + ST + NODE)
        self.assertEqual(run("--check", "-c", path).returncode, 0)
        r = run("-c", path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot open log file /nonexistent/dir/cm.log", r.stderr)
