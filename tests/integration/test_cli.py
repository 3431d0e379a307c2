"""The command line: --check, exit codes, config errors with FILE:LINE, every error reported."""
import os
import subprocess
import tempfile
import unittest

from harness import BIN, ROOT


def run(*args):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=30)


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
