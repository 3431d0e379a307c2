"""Protocol, commands, pipelining and bad input, driven with redis-py, redis-cli and raw sockets."""
import socket
import subprocess
import threading
import time

from harness import MEM, DaemonTest, node, recv_until


class CoreTest(DaemonTest):
    def body(self):
        return MEM + node("item", "item:{id}", loader=self.loader("/items/{id}")) + \
            node("plain", "plain:{id}")

    def test_get_loads_then_hits_local(self):
        d = self.daemon(self.body())
        c = d.client()
        v1 = c.get("item:1")
        self.assertEqual(v1, b'{"path": "/items/1", "n": 1}')
        self.assertEqual(c.get("item:1"), v1)
        self.assertEqual(self.origin.count("/items/1"), 1)
        st = c.execute_command("STATS", "item")
        flat = dict(zip(st[1][::2], st[1][1::2]))
        self.assertEqual(flat[b"request_count"], 2)
        self.assertEqual(flat[b"hit_count"], 1)
        self.assertEqual(flat[b"local_hit_count"], 1)
        self.assertEqual(flat[b"miss_count"], 1)
        self.assertEqual(flat[b"load_success_count"], 1)

    def test_no_node_and_unknown_command(self):
        d = self.daemon(self.body())
        c = d.client()
        with self.assertRaisesRegex(Exception, "no node matches key 'nope'"):
            c.get("nope")
        with self.assertRaisesRegex(Exception, "unknown command 'FLUSHALL'"):
            c.execute_command("FLUSHALL")
        with self.assertRaisesRegex(Exception, "wrong number of arguments for 'get' command"):
            c.execute_command("GET")

    def test_set_ex_del_and_nodes(self):
        d = self.daemon(self.body())
        c = d.client()
        self.assertTrue(c.set("plain:1", b"v\x00\r\nx"))
        self.assertEqual(c.get("plain:1"), b"v\x00\r\nx")
        self.assertIsNone(c.get("plain:2"))   # no loader: nil
        self.assertTrue(c.set("plain:3", "x", px=150))
        self.assertEqual(c.get("plain:3"), b"x")
        time.sleep(0.3)
        self.assertIsNone(c.get("plain:3"))   # expired locally
        self.assertEqual(c.delete("plain:1", "nope", "plain:9"), 2)
        self.assertIsNone(c.get("plain:1"))
        self.assertEqual(c.execute_command("NODES"), [b"item", b"plain"])
        with self.assertRaisesRegex(Exception, "invalid expire time"):
            c.execute_command("SET", "plain:1", "x", "EX", "0")
        with self.assertRaisesRegex(Exception, "syntax error"):
            c.execute_command("SET", "plain:1", "x", "NX")

    def test_mget_mixed_nodes_and_duplicates(self):
        d = self.daemon(self.body())
        c = d.client()
        c.set("plain:1", "p1")
        vals = c.mget("item:1", "plain:1", "item:2", "item:1", "plain:2")
        self.assertEqual(vals, [b'{"path": "/items/1", "n": 1}', b"p1",
                                b'{"path": "/items/2", "n": 1}', b'{"path": "/items/1", "n": 1}',
                                None])
        self.assertEqual(self.origin.count("/items/1"), 1)

    def test_refresh_loads_again(self):
        d = self.daemon(self.body())
        c = d.client()
        self.assertEqual(c.get("item:5"), b'{"path": "/items/5", "n": 1}')
        self.assertEqual(c.execute_command("REFRESH", "item:5"), [b'{"path": "/items/5", "n": 2}'])
        self.assertEqual(c.get("item:5"), b'{"path": "/items/5", "n": 2}')

    def test_connection_commands(self):
        d = self.daemon(self.body())
        c = d.client()
        self.assertTrue(c.ping())
        self.assertEqual(c.echo("hi"), b"hi")
        self.assertTrue(c.execute_command("SELECT", 0))
        with self.assertRaisesRegex(Exception, "DB index is out of range"):
            c.execute_command("SELECT", 1)
        self.assertTrue(c.client_setname("worker1"))
        self.assertEqual(c.client_getname(), "worker1")
        self.assertIsInstance(c.client_id(), int)
        self.assertTrue(c.execute_command("CLIENT", "SETINFO", "lib-name", "x"))
        info = c.info()
        self.assertEqual(info["redis_version"], "7.0.0")
        self.assertIn("connected_clients", info)
        self.assertEqual(c.dbsize(), 0)
        c.get("item:1")
        self.assertEqual(c.dbsize(), 1)
        s = d.raw()
        s.sendall(b"COMMAND COUNT\r\nCOMMAND DOCS\r\nINFO nodes\r\n")
        out = recv_until(s, terminator=b"node_plain:")
        self.assertTrue(out.startswith(b":19\r\n*0\r\n$"), out[:40])
        self.assertIn(b"node_item:request_count=1,hit_count=0,miss_count=1", out)
        s.close()

    def test_client_timeout_closes_idle_clients(self):
        d = self.daemon(self.body(), server_extra="client_timeout = 1s")
        idle = d.raw()
        busy = d.raw()
        t0 = time.time()
        for _ in range(6):
            busy.sendall(b"PING\r\n")
            self.assertEqual(recv_until(busy, terminator=b"\r\n"), b"+PONG\r\n")
            time.sleep(0.3)
        self.assertEqual(recv_until(idle, timeout=5), b"")   # closed by the server
        self.assertGreater(time.time() - t0, 0.9)
        busy.sendall(b"PING\r\n")
        self.assertEqual(recv_until(busy, terminator=b"\r\n"), b"+PONG\r\n")

    def test_metrics_endpoint(self):
        import urllib.request
        from harness import free_port
        mport = free_port()
        d = self.daemon(self.body(), server_extra="metrics_listen = 127.0.0.1:%d" % mport)
        c = d.client()
        c.get("item:1")
        c.get("item:1")
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            text = r.read().decode()
        self.assertIn('cachemed_node_request_count{node="item"} 2\n', text)
        self.assertIn('cachemed_node_local_hit_count{node="item"} 1\n', text)
        self.assertIn('cachemed_storage_hits_total{storage="mem",type="lru"} 1\n', text)
        self.assertRegex(text, r"cachemed_commands_total [1-9]")

    def test_stats_reset_and_unknown_node(self):
        d = self.daemon(self.body())
        c = d.client()
        c.get("item:1")
        self.assertTrue(c.execute_command("STATS", "RESET"))
        st = c.execute_command("STATS")
        self.assertEqual(st[0], b"item")
        flat = dict(zip(st[1][::2], st[1][1::2]))
        self.assertEqual(flat[b"request_count"], 0)
        self.assertEqual(flat[b"hit_rate"], b"0")
        with self.assertRaisesRegex(Exception, "no such node 'zzz'"):
            c.execute_command("STATS", "zzz")

    def test_auth(self):
        d = self.daemon(self.body(), server_extra="requirepass = s3cret")
        c = d.client()
        with self.assertRaisesRegex(Exception, "Authentication required"):
            c.get("item:1")
        with self.assertRaisesRegex(Exception, "WRONGPASS"):
            d.client(password="bad").ping()
        self.assertTrue(d.client(password="s3cret").ping())
        s = d.raw()
        s.sendall(b"HELLO 3 AUTH default s3cret\r\nGET plain:1\r\n")
        out = recv_until(s, terminator=b"_\r\n")
        self.assertIn(b"%7\r\n", out)
        self.assertTrue(out.endswith(b"_\r\n"))
        s.close()

    def test_hello_resp3_and_noproto(self):
        d = self.daemon(self.body())
        s = d.raw()
        s.sendall(b"HELLO 4\r\n")
        self.assertEqual(recv_until(s, terminator=b"\r\n"), b"-NOPROTO unsupported protocol version\r\n")
        s.sendall(b"HELLO 3\r\nGET plain:404\r\nSTATS plain\r\n")
        out = recv_until(s, terminator=b"breaker_state\r\n:0\r\n")
        self.assertIn(b"\r\n_\r\n%1\r\n$5\r\nplain\r\n%21\r\n", out)
        self.assertIn(b"$8\r\nhit_rate\r\n,0", out)
        s.close()

    def test_pipeline_1000_in_order(self):
        d = self.daemon(self.body())
        d.client().set("plain:0", "zero")
        s = d.raw()
        reqs = []
        expect = []
        for i in range(1000):
            if i % 3 == 0:
                reqs.append(b"GET item:%d\r\n" % (i % 50))
                path = b"/items/%d" % (i % 50)
                expect.append(b'{"path": "' + path + b'", "n": 1}')
            elif i % 3 == 1:
                reqs.append(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%d\r\n" % (len(str(i)), i))
                expect.append(b"%d" % i)
            else:
                reqs.append(b"GET plain:0\r\n")
                expect.append(b"zero")
        s.sendall(b"".join(reqs))
        want = b"".join(b"$%d\r\n%s\r\n" % (len(e), e) for e in expect)
        got = recv_until(s, n_bytes=len(want), timeout=30)
        self.assertEqual(got, want)
        s.close()

    def test_pipeline_out_of_order_completion(self):
        """A slow load first, fast answers after it: replies still in request order."""
        d = self.daemon(self.body())
        self.origin.rule("/items/slow", delay_ms=400)
        s = d.raw()
        s.sendall(b"GET item:slow\r\nPING\r\nGET item:fast\r\nECHO x\r\n")
        got = recv_until(s, terminator=b"$1\r\nx\r\n", timeout=10)
        self.assertEqual(got, b'$31\r\n{"path": "/items/slow", "n": 1}\r\n+PONG\r\n'
                              b'$31\r\n{"path": "/items/fast", "n": 1}\r\n$1\r\nx\r\n')
        s.close()

    def test_malformed_resp_closes_only_that_client(self):
        d = self.daemon(self.body())
        good = d.client()
        good.set("plain:1", "ok")
        cases = [
            (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*1\r\n$-10\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n+foo\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
            (b"*1\r\n$600000000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"GET \"unbalanced\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
            (b"x" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
        ]
        for payload, want in cases:
            s = d.raw()
            s.sendall(b"PING\r\n" + payload)
            out = recv_until(s, timeout=10)   # until the server closes
            self.assertEqual(out, b"+PONG\r\n" + want, payload[:30])
            s.close()
            self.assertEqual(good.get("plain:1"), b"ok")

    def test_negative_multibulk_is_an_empty_request(self):
        d = self.daemon(self.body())
        s = d.raw()
        s.sendall(b"*-10\r\n*0\r\nPING\r\n")   # like Redis: skipped, connection kept
        self.assertEqual(recv_until(s, terminator=b"\r\n"), b"+PONG\r\n")
        s.close()

    def test_client_disconnect_with_requests_in_flight(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/slowgone", delay_ms=300)
        for _ in range(5):
            s = d.raw()
            s.sendall(b"GET item:slowgone\r\n" * 20 + b"GET item:x\r\n")
            s.close()
        time.sleep(0.6)
        c = d.client()
        self.assertEqual(c.get("item:slowgone"), b'{"path": "/items/slowgone", "n": 1}')
        self.assertEqual(self.origin.count("/items/slowgone"), 1)

    def test_redis_cli_and_inline(self):
        d = self.daemon(self.body())
        out = subprocess.run(["redis-cli", "-p", str(d.port), "GET", "item:7"], capture_output=True,
                             text=True, timeout=10).stdout
        self.assertEqual(out.strip(), '{"path": "/items/7", "n": 1}')
        s = d.raw()
        s.sendall(b"ECHO 'a b'\r\n\r\nPING\n")
        self.assertEqual(recv_until(s, terminator=b"+PONG\r\n"), b"$3\r\na b\r\n+PONG\r\n")
        s.close()

    def test_quit_and_max_clients(self):
        d = self.daemon(self.body(), server_extra="max_clients = 3")
        socks = [d.raw() for _ in range(3)]
        for s in socks:
            s.sendall(b"PING\r\n")
            self.assertEqual(recv_until(s, terminator=b"\r\n"), b"+PONG\r\n")
        extra = d.raw()
        self.assertEqual(recv_until(extra), b"-ERR max number of clients reached\r\n")
        extra.close()
        socks[0].sendall(b"QUIT\r\n")
        self.assertEqual(recv_until(socks[0]), b"+OK\r\n")
        socks[0].close()
        time.sleep(0.2)
        s = d.raw()
        s.sendall(b"PING\r\n")
        self.assertEqual(recv_until(s, terminator=b"\r\n"), b"+PONG\r\n")
        for x in socks[1:] + [s]:
            x.close()

    def test_unix_socket_listener(self):
        import os
        import tempfile
        path = os.path.join(tempfile.mkdtemp(), "cm.sock")
        d = self.daemon(self.body(), server_extra="listen = unix:%s" % path)
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"GET item:u\r\n")
        self.assertEqual(recv_until(s, terminator=b"}\r\n"), b'$28\r\n{"path": "/items/u", "n": 1}\r\n')
        s.close()

    def test_concurrent_clients_threads(self):
        d = self.daemon(self.body())
        errors = []

        def worker(i):
            try:
                c = d.client()
                for k in range(50):
                    v = c.get("item:%d" % (k % 10))
                    if v != b'{"path": "/items/%d", "n": 1}' % (k % 10):
                        errors.append(v)
            except Exception as e:   # noqa: BLE001
                errors.append(e)
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        for k in range(10):
            self.assertEqual(self.origin.count("/items/%d" % k), 1)
