"""Real clients, unmodified: ioredis 6 and node-redis 6 in their default RESP3 mode (HELLO 3),
redis-benchmark, redis-cli, and redis-py with the hiredis parser."""
import os
import subprocess

from harness import MEM, ROOT, DaemonTest, node


class ClientsTest(DaemonTest):
    def body(self):
        return MEM + node("item", "item:{id}", loader=self.loader("/items/{id}")) + \
            node("plain", "plain:{id}") + node("key", "key:{id}")

    def test_node_clients_resp3(self):
        mods = os.path.join(ROOT, "tests", "clients", "node_modules")
        self.assertTrue(os.path.isdir(mods), "run scripts/install-deps.sh (npm install in tests/clients)")
        d = self.daemon(self.body())
        r = subprocess.run(["node", os.path.join(ROOT, "tests", "clients", "resp3.mjs"), str(d.port)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.split(), ["ok", "ioredis", "ok", "node-redis"])

    def test_redis_benchmark(self):
        d = self.daemon(self.body())
        r = subprocess.run(["redis-benchmark", "-p", str(d.port), "-t", "set,get", "-n", "20000",
                            "-r", "1000", "-c", "20", "-P", "4", "-q"],
                           capture_output=True, text=True, timeout=120)
        out = r.stdout.replace("\r", "\n")
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out, r"SET: [0-9.]+ requests per second")
        self.assertRegex(out, r"GET: [0-9.]+ requests per second")
        c = d.client()
        self.assertEqual(len(c.get("key:000000000001")), 3)   # its 3-byte random payload

    def test_redis_py_uses_hiredis_parser(self):
        import redis.connection
        self.assertTrue(redis.connection.HIREDIS_AVAILABLE)
        d = self.daemon(self.body())
        c = d.client()
        c.set("plain:h", b"\x00\xff" * 1000)
        self.assertEqual(c.get("plain:h"), b"\x00\xff" * 1000)
        p = c.pipeline(transaction=False)
        for i in range(200):
            p.get("item:%d" % (i % 7))
        vals = p.execute()
        self.assertEqual(vals[7], vals[0])
        self.assertEqual(self.origin.stats()["total"], 7)
