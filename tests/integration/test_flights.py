"""Flights and the loader: coalescing, failures and timeouts reaching every waiter, supersession,
percent-encoding, Unix-socket loaders, size caps."""
import os
import socket
import tempfile
import time

from harness import MEM, DaemonTest, Origin, node, recv_until


def fan_out(d, n, payload):
    """Sends payload on n fresh connections at once; returns each connection's first reply line
    and the seconds until the last one arrived."""
    socks = [d.raw(timeout=20) for _ in range(n)]
    t0 = time.time()
    for s in socks:
        s.sendall(payload)
    out = []
    for s in socks:
        out.append(recv_until(s, terminator=b"\r\n", timeout=20))
        s.close()
    return out, time.time() - t0


class FlightTest(DaemonTest):
    def body(self, extra_node=""):
        return MEM + node("item", "item:{id}", loader=self.loader("/items/{id}"),
                          extra="loader_timeout = 500ms\n") + extra_node

    def test_500_concurrent_gets_one_load(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/cold", delay_ms=300)
        out, _ = fan_out(d, 500, b"GET item:cold\r\n")
        self.assertEqual(set(out), {b'$31\r\n{"path": "/items/cold", "n": 1}\r\n'})
        self.assertEqual(self.origin.count("/items/cold"), 1)
        st = d.client().execute_command("STATS", "item")
        flat = dict(zip(st[1][::2], st[1][1::2]))
        self.assertEqual(flat[b"request_count"], 500)
        self.assertEqual(flat[b"load_count"], 1)
        self.assertEqual(flat[b"coalesced_count"], 499)
        self.assertEqual(flat[b"miss_count"], 500)

    def test_loader_failure_reaches_every_waiter_and_is_not_cached(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/bad", delay_ms=200, status=503)
        out, elapsed = fan_out(d, 50, b"GET item:bad\r\n")
        self.assertEqual(set(out), {b"-ERR load failed for 'item:bad': status 503\r\n"})
        self.assertLess(elapsed, 3)
        self.assertEqual(self.origin.count("/items/bad"), 1)
        # nothing cached: the next GET loads again
        self.origin.rule("/items/bad", status=200)
        self.assertEqual(d.client().get("item:bad"), b'{"path": "/items/bad", "n": 2}')

    def test_loader_timeout_reaches_every_waiter_promptly(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/slow", delay_ms=3000)
        out, elapsed = fan_out(d, 50, b"GET item:slow\r\n")
        self.assertEqual(set(out), {b"-ERR load failed for 'item:slow': timeout after 500 ms\r\n"})
        self.assertLess(elapsed, 2.0)
        self.assertEqual(d.client().dbsize(), 0)

    def test_404_is_nil_and_not_cached(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/gone", status=404)
        c = d.client()
        self.assertIsNone(c.get("item:gone"))
        self.assertIsNone(c.get("item:gone"))
        self.assertEqual(self.origin.count("/items/gone"), 2)

    def test_oversize_body_is_a_load_failure(self):
        d = self.daemon(self.body(), server_extra="max_value_size = 1kb")
        self.origin.rule("/items/big", size=5000)
        self.origin.rule("/items/small", size=1024)
        c = d.client()
        with self.assertRaisesRegex(Exception, r"load failed for 'item:big': response larger"):
            c.get("item:big")
        self.assertEqual(len(c.get("item:small")), 1024)

    def test_del_supersedes_flight_in_progress(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/race", delay_ms=400)
        s = d.raw()
        s.sendall(b"GET item:race\r\n")
        time.sleep(0.1)
        c = d.client()
        self.assertEqual(c.delete("item:race"), 1)
        # the waiter still gets the value it asked for...
        self.assertEqual(recv_until(s, terminator=b"}\r\n"), b'$31\r\n{"path": "/items/race", "n": 1}\r\n')
        s.close()
        time.sleep(0.1)
        # ...but it was not written back after the DEL: the next GET loads again
        self.assertEqual(c.get("item:race"), b'{"path": "/items/race", "n": 2}')

    def test_set_supersedes_flight_in_progress(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/race2", delay_ms=400)
        s = d.raw()
        s.sendall(b"GET item:race2\r\n")
        time.sleep(0.1)
        c = d.client()
        c.set("item:race2", "mine")
        recv_until(s, terminator=b"}\r\n")
        s.close()
        time.sleep(0.1)
        self.assertEqual(c.get("item:race2"), b"mine")

    def test_parameters_are_percent_encoded_in_one_segment(self):
        d = self.daemon(self.body())
        c = d.client()
        keys = {
            "item:../admin": "/items/..%2Fadmin",
            "item:a b": "/items/a%20b",
            "item:q?x=1": "/items/q%3Fx%3D1",
            "item:h#frag": "/items/h%23frag",
            "item:100%": "/items/100%25",
            "item:..": "/items/%2E%2E",
            "item:é/ü": "/items/%C3%A9%2F%C3%BC",
        }
        for k in keys:
            c.get(k)
        self.assertEqual(self.origin.requests(), list(keys.values()))

    def test_mget_loads_misses_concurrently_once_each(self):
        d = self.daemon(self.body())
        self.origin.rule("/items/", prefix=True, delay_ms=300)
        t0 = time.time()
        vals = d.client().mget(["item:%d" % i for i in range(20)] + ["item:3"])
        self.assertLess(time.time() - t0, 2.0)   # concurrent, not 20 x 300 ms
        self.assertEqual(vals[3], vals[20])
        self.assertEqual(self.origin.stats()["total"], 20)

    def test_unix_socket_loader(self):
        path = os.path.join(tempfile.mkdtemp(), "origin.sock")
        uo = Origin(unix=path)
        try:
            d = self.daemon(MEM + node("u", "u:{id}", loader="http://localhost/users/{id}",
                                       extra="loader_socket = %s\n" % path))
            c = d.client()
            self.assertEqual(c.get("u:1"), b'{"path": "/users/1", "n": 1}')
            self.assertEqual(c.get("u:1"), b'{"path": "/users/1", "n": 1}')
        finally:
            uo.stop()

    def test_json_node_rejects_invalid_json(self):
        d = self.daemon(MEM + node("j", "j:{id}", loader=self.loader("/j/{id}"),
                                   serializer="json"))
        self.origin.rule("/j/bad", body="{not json")
        c = d.client()
        with self.assertRaisesRegex(Exception, "load failed for 'j:bad'"):
            c.get("j:bad")
        self.assertEqual(c.get("j:ok"), b'{"path": "/j/ok", "n": 1}')
        with self.assertRaisesRegex(Exception, "takes JSON values"):
            c.set("j:x", "nope{")

    def test_doorkeeper_caches_on_second_load(self):
        d = self.daemon(MEM + node("dk", "dk:{id}", loader=self.loader("/dk/{id}"),
                                   extra="doorkeeper = 1000, 0.01\n"))
        c = d.client()
        c.get("dk:1")   # first load: not cached
        c.get("dk:1")   # second load: cached
        c.get("dk:1")   # hit
        self.assertEqual(self.origin.count("/dk/1"), 2)
        st = c.execute_command("STATS", "dk")
        flat = dict(zip(st[1][::2], st[1][1::2]))
        self.assertEqual(flat[b"doorkeeper_reject_count"], 1)
        self.assertEqual(flat[b"hit_count"], 1)

    def test_sigterm_waits_for_flights(self):
        d = self.daemon(self.body(), server_extra="shutdown_timeout = 3s")
        self.origin.rule("/items/last", delay_ms=300)
        s = d.raw()
        s.sendall(b"GET item:last\r\n")
        time.sleep(0.1)
        d.proc.send_signal(15)
        self.assertEqual(recv_until(s, terminator=b"}\r\n"), b'$31\r\n{"path": "/items/last", "n": 1}\r\n')
        s.close()
        d.proc.wait(5)
        self.assertEqual(d.proc.returncode, 0)
