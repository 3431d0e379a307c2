"""The Redis storage chain through the daemon (issue #5 points 3, 5 and 6), with real clients and a
real redis-server: [local lru, redis] and [redis] alone, serializers msgpack, json and
compressed_*; Cacheme's wrapper read and written by Python itself; TTLs seen with TTL; remote hits
and backfills from a second daemon; one read per flight and one MGET per storage (counted by the
daemon's INFO storages and by the server's INFO commandstats); a server SIGSTOPped, killed and
started again mid-test.

Servers come from CM_TEST_REDIS_URL, CM_TEST_REDIS_PORT and CM_TEST_SRV_BASE (scripts/backends.sh
start-all); a missing variable fails the test with a message saying which. Keys carry a per-test
unique part, since the server is shared with other test files.
"""
import json
import os
import signal
import time
import unittest
import zlib
from datetime import datetime, timezone

import msgpack  # Debian's python3-msgpack
import redis

from harness import MEM, DaemonTest, node, recv_until, wait_for
from test_sql import backends, env, skey, stats

# node -> (caches, serializer); `shared` is the redis storage. Time to live in redis: 90 s.
NODES = {
    "lm": ("mem:30s, shared:90s", "msgpack"),
    "lj": ("mem:30s, shared:90s", "json"),
    "rm": ("shared:90s", "msgpack"),
    "rj": ("shared:90s", "json"),
    "cm": ("mem:30s, shared:90s", "compressed_msgpack"),
    "cj": ("shared:90s", "compressed_json"),
    "t1": ("mem:30s, shared:1000ms", "msgpack"),   # 1000 ms -> SETEX 1
    "t2": ("mem:30s, shared:1001ms", "json"),      # rounded up -> SETEX 2
}
LOCAL = {n for n, (caches, _) in NODES.items() if caches.startswith("mem")}
RESUME_SECS = 7.0   # SPEC §1: reconnect backoff capped at 5 s, plus connect and a request
DOWN_SECS = 7.0     # 100 ms doubling: 0.1+0.2+...+3.2 = 6.3 s, so the next wait is the 5 s cap


def redis_pid(r):
    return int(r.info("server")["process_id"])


def uniq():
    return "%x" % time.time_ns()


def st_info(c, storage):
    """The daemon's counters of one storage (INFO storages: reads, hits, writes, ...)."""
    return c.info("storages")["storage_" + storage]


def cmdstats(r):
    """calls per command on the redis server (INFO commandstats), e.g. {"get": 3, "mget": 1}."""
    return {k[len("cmdstat_"):]: v["calls"] for k, v in r.info("commandstats").items()}


def delta(before, after, cmd):
    return after.get(cmd, 0) - before.get(cmd, 0)


def wrap(doc, when=None):
    """Cacheme's record: {"value": doc, "updated_at": {datetime}}, in that key order."""
    when = when or datetime.now(timezone.utc)
    return {"value": doc,
            "updated_at": {"__class__": "datetime.datetime", "data": when.isoformat()}}


def encode(serializer, obj):
    """What Cacheme's serializer of that name writes to Redis."""
    if serializer.endswith("json"):
        data = json.dumps(obj).encode()
    else:
        data = msgpack.packb(obj, use_bin_type=True)
    return zlib.compress(data, 3) if serializer.startswith("compressed_") else data


def decode(serializer, data):
    """What Cacheme reads back (any mismatch in the format raises)."""
    if serializer.startswith("compressed_"):
        data = zlib.decompress(data)
    if serializer.endswith("json"):
        return json.loads(data)
    return msgpack.unpackb(data, raw=False)


class RedisChainTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        cls.url = env("CM_TEST_REDIS_URL")
        cls.port = int(env("CM_TEST_REDIS_PORT"))
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.u = uniq()
        self.r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def tearDown(self):
        try:
            self.r.close()
        finally:
            super().tearDown()

    def body(self, pool_size=4, timeout="2s", nodes=NODES, storages=None):
        s = MEM + "[storage shared]\nurl = %s\npool_size = %d\ntimeout = %s\n\n" % (
            self.url, pool_size, timeout)
        s += storages or ""
        for name, (caches, ser) in nodes.items():
            s += node(name, "%s:{id}" % name, caches=caches, serializer=ser,
                      loader=self.loader("/%s/{id}" % name))
        return s

    def key(self, name, part=""):
        """A client key of node `name` unique to this test (no character the loader URL
        percent-encodes, so path() is the loader's path)."""
        return "%s:%s%s" % (name, self.u, part.replace(":", "-"))

    def path(self, key):
        return "/%s/%s" % tuple(key.split(":", 1))

    def doc(self, key, n=1):
        return {"path": self.path(key), "n": n}

    def stored(self, key, r=None, timeout=5.0):
        """The bytes redis holds for client key `key`, waiting for the daemon's write."""
        r = r or self.r
        wait_for(lambda: r.exists(skey(key)), timeout, step=0.02, what="%s in redis" % skey(key))
        return r.get(skey(key))

    def assert_record(self, serializer, data, doc):
        """data is Cacheme's wrapper around doc, written about now."""
        if serializer.startswith("compressed_"):
            self.assertEqual(data[:2], b"\x78\x5e")   # zlib, level 3
        rec = decode(serializer, data)
        self.assertEqual(list(rec), ["value", "updated_at"])
        self.assertEqual(rec["value"], doc)
        upd = rec["updated_at"]
        self.assertEqual(list(upd), ["__class__", "data"])
        self.assertEqual(upd["__class__"], "datetime.datetime")
        when = datetime.fromisoformat(upd["data"])
        self.assertEqual(when.utcoffset().total_seconds(), 0, upd["data"])
        self.assertLess(abs((datetime.now(timezone.utc) - when).total_seconds()), 5, upd["data"])

    # ---------------------------------------------------------------------------------------
    # chain behaviour

    def test_chain_load_once_write_both_remote_hit_and_backfill(self):
        d1 = self.daemon(self.body())
        c1 = d1.client()
        names = ["lm", "lj", "rm", "rj", "cm", "cj"]
        for name in names:
            k = self.key(name)
            self.assertEqual(json.loads(c1.get(k)), self.doc(k))
            self.assertEqual(self.origin.count(self.path(k)), 1)
            self.assert_record(NODES[name][1], self.stored(k), self.doc(k))
            self.assertIn(self.r.ttl(skey(k)), (89, 90), k)
            self.assertEqual(json.loads(c1.get(k)), self.doc(k))   # no second load
            self.assertEqual(self.origin.count(self.path(k)), 1)
            st = stats(c1, name)
            self.assertEqual(st["request_count"], st["hit_count"] + st["miss_count"])
            self.assertEqual((st["request_count"], st["miss_count"], st["load_count"]), (2, 1, 1))
            if name in LOCAL:   # written to the local cache too: the second GET is a local hit
                self.assertEqual((st["local_hit_count"], st["remote_hit_count"]), (1, 0), k)
            else:
                self.assertEqual((st["local_hit_count"], st["remote_hit_count"]), (0, 1), k)
        self.assertEqual(st_info(c1, "mem")["writes"], len(LOCAL & set(names)))

        d2 = self.daemon(self.body())   # fresh local cache, same redis
        c2 = d2.client()
        for name in names:
            k = self.key(name)
            self.assertEqual(json.loads(c2.get(k)), self.doc(k))   # JSON text from any format
            st = stats(c2, name)
            self.assertEqual((st["remote_hit_count"], st["hit_count"], st["load_count"]),
                             (1, 1, 0), k)
            reads = st_info(c2, "shared")["reads"]
            self.assertEqual(json.loads(c2.get(k)), self.doc(k))
            st = stats(c2, name)
            if name in LOCAL:   # backfilled: the third GET is a local hit, redis is not read
                self.assertEqual((st["local_hit_count"], st["remote_hit_count"]), (1, 1), k)
                self.assertEqual(st_info(c2, "shared")["reads"], reads, k)
            else:
                self.assertEqual((st["local_hit_count"], st["remote_hit_count"]), (0, 2), k)
                self.assertEqual(st_info(c2, "shared")["reads"], reads + 1, k)
            self.assertEqual(st["request_count"], st["hit_count"] + st["miss_count"])
            self.assertEqual(self.origin.count(self.path(k)), 1)
        # a remote hit is not written back to the cache it came from
        self.assertEqual(st_info(c2, "shared")["writes"], 0)
        self.assertEqual(st_info(c2, "mem")["writes"], len(LOCAL & set(names)))

    def test_ttl_rounded_up_to_whole_seconds(self):
        d = self.daemon(self.body())
        c = d.client()
        k1, k2 = self.key("t1"), self.key("t2")
        c.get(k1)
        c.get(k2)
        self.stored(k1)
        self.stored(k2)
        self.assertEqual(self.r.ttl(skey(k1)), 1)   # shared:1000ms -> SETEX 1
        self.assertIn(self.r.ttl(skey(k2)), (1, 2))   # shared:1001ms -> SETEX 2
        self.assertGreater(self.r.pttl(skey(k2)), 1000)
        # the local copy outlives the remote one (mem:30s)
        time.sleep(1.1)
        self.assertIsNone(self.r.get(skey(k1)))
        self.assertEqual(json.loads(c.get(k1)), self.doc(k1))
        self.assertEqual(stats(c, "t1")["local_hit_count"], 1)
        # SET EX overrides the node's ttl for that write
        c.set(k1, '{"set": 1}', ex=300)
        wait_for(lambda: self.r.ttl(skey(k1)) in (299, 300), 5, what="SET EX 300 in redis")
        self.assert_record("msgpack", self.r.get(skey(k1)), {"set": 1})
        c.set(k2, '{"set": 2}', px=1500)   # PX rounds up too: SETEX 2
        wait_for(lambda: self.r.get(skey(k2)) is not None and decode(
            "json", self.r.get(skey(k2)))["value"] == {"set": 2}, 5, what="SET PX 1500 in redis")
        self.assertGreater(self.r.pttl(skey(k2)), 1500)

    def test_backfill_only_caches_that_missed_with_their_own_ttl(self):
        r1, r2 = (redis.Redis(host="127.0.0.1", port=self.port, db=db) for db in (1, 2))
        base = self.url.rsplit("/", 1)[0]
        storages = ("[storage r1]\nurl = %s/1\ntimeout = 2s\n\n"
                    "[storage r2]\nurl = %s/2\ntimeout = 2s\n\n" % (base, base))
        nodes = {"bf": ("mem:30s, r1:45s, r2:90s", "msgpack")}
        d = self.daemon(self.body(nodes=nodes, storages=storages))
        c = d.client()
        k = self.key("bf")
        doc = {"only": "r2", "u": self.u}
        r2.set(skey(k), encode("msgpack", wrap(doc)), ex=300)
        try:
            self.assertEqual(json.loads(c.get(k)), doc)
            self.assertEqual(self.origin.count(self.path(k)), 0)
            st = stats(c, "bf")
            self.assertEqual((st["remote_hit_count"], st["load_count"]), (1, 0))
            self.assert_record("msgpack", self.stored(k, r=r1), doc)
            self.assertIn(r1.ttl(skey(k)), (44, 45))      # r1's own ttl
            self.assertIn(r2.ttl(skey(k)), (299, 300))    # r2 hit: not rewritten
            self.assertGreater(r2.ttl(skey(k)), 290)
            self.assertIsNone(self.r.get(skey(k)))        # db 0 untouched
            info = c.info("storages")
            self.assertEqual([info["storage_%s" % s]["writes"] for s in ("mem", "r1", "r2")],
                             [1, 1, 0])
            self.assertEqual(json.loads(c.get(k)), doc)   # and in mem: a local hit
            self.assertEqual(stats(c, "bf")["local_hit_count"], 1)
            self.assertEqual(st_info(c, "r1")["reads"], 1)
            # a fresh daemon finds it in r1 now, and reads r2 no more
            d2 = self.daemon(self.body(nodes=nodes, storages=storages))
            c2 = d2.client()
            self.assertEqual(json.loads(c2.get(k)), doc)
            info = c2.info("storages")
            self.assertEqual([info["storage_%s" % s]["reads"] for s in ("mem", "r1", "r2")],
                             [1, 1, 0])
            self.assertEqual([info["storage_%s" % s]["writes"] for s in ("mem", "r1", "r2")],
                             [1, 0, 0])
        finally:
            r1.delete(skey(k))
            r2.delete(skey(k))
            r1.close()
            r2.close()

    # ---------------------------------------------------------------------------------------
    # one read per flight, one MGET per storage

    def test_200_concurrent_gets_one_load_one_redis_read(self):
        d = self.daemon(self.body())
        k = self.key("lm")
        self.origin.rule(self.path(k), delay_ms=300)
        socks = [d.raw(timeout=20) for _ in range(200)]
        c = d.client()
        c.ping()
        before = cmdstats(self.r)
        reads = st_info(c, "shared")["reads"]
        for s in socks:
            s.sendall(b"GET %s\r\n" % k.encode())
        want = json.dumps(self.doc(k)).encode()
        want = b"$%d\r\n%s\r\n" % (len(want), want)
        out = [recv_until(s, n_bytes=len(want), timeout=20) for s in socks]
        for s in socks:
            s.close()
        self.assertEqual(set(out), {want})
        wait_for(lambda: self.r.exists(skey(k)), 5, what="the write")   # EXISTS: not a read
        after = cmdstats(self.r)
        self.assertEqual(self.origin.count(self.path(k)), 1)
        self.assertEqual(st_info(c, "shared")["reads"] - reads, 1)
        self.assertEqual(delta(before, after, "get") + delta(before, after, "mget"), 1)
        self.assertEqual(delta(before, after, "setex"), 1)
        st = stats(c, "lm")
        self.assertEqual((st["request_count"], st["miss_count"], st["load_count"]), (200, 200, 1))
        self.assertEqual(st["coalesced_count"], 199)

    def stored_keys(self, names, n):
        """n keys alternating over nodes `names`, loaded through a first daemon into redis."""
        keys = [self.key(names[i % len(names)], ":%d" % i) for i in range(n)]
        d1 = self.daemon(self.body())
        self.assertEqual([json.loads(v) for v in d1.client().mget(keys)],
                         [self.doc(k) for k in keys])
        for k in keys:
            self.stored(k)
        return keys

    def mget_counted(self, keys):
        """A fresh daemon (pool_size 1: st_redis splits an MGET per pool connection) MGETs keys
        stored in redis plus a duplicate; returns the MGETs redis saw. Asserts no GET, no load,
        every value right, every key a remote hit."""
        d = self.daemon(self.body(pool_size=1))
        c = d.client()
        wait_for(lambda: c.info("storages")["storage_shared_redis_conns_ready"] == 1, 5,
                 what="the daemon's redis connection")
        loads = self.origin.stats()["total"]
        before = cmdstats(self.r)
        vals = c.mget(keys + keys[:1])
        after = cmdstats(self.r)
        self.assertEqual([json.loads(v) for v in vals], [self.doc(k) for k in keys + keys[:1]])
        self.assertEqual(self.origin.stats()["total"], loads)
        self.assertEqual(delta(before, after, "get"), 0)
        self.assertEqual(st_info(c, "shared")["reads"], len(keys))   # counted per key
        self.assertEqual(sum(stats(c, n)["remote_hit_count"] for n in NODES), len(keys) + 1)
        return delta(before, after, "mget")

    def test_waiters_answered_before_writes_and_flight_kept_until_written(self):
        # CLIENT PAUSE WRITE holds the daemon's SETEX in redis (reads still run): the first GET
        # is answered while its write is held; a second GET meanwhile joins the flight, which is
        # still registered, and touches no storage (otherwise: a redis miss and a second load).
        d = self.daemon(self.body(timeout="3s"))
        c, c2 = d.client(), d.client()
        k = self.key("rj")
        wait_for(lambda: c.info("storages")["storage_shared_redis_conns_ready"] >= 1, 5,
                 what="the daemon's redis connection")
        self.r.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        try:
            t0 = time.time()
            self.assertEqual(json.loads(c.get(k)), self.doc(k))
            first = time.time() - t0
            reads = st_info(c, "shared")["reads"]
            self.assertEqual(self.r.exists(skey(k)), 0)   # the write is held
            t0 = time.time()
            self.assertEqual(json.loads(c2.get(k)), self.doc(k))
            second = time.time() - t0
            self.assertEqual(self.r.exists(skey(k)), 0)   # still held: it was not read back
            self.assertEqual(st_info(c, "shared")["reads"], reads)
        finally:
            self.r.execute_command("CLIENT", "UNPAUSE")
        self.assertLess(first, 0.5)
        self.assertLess(second, 0.5)
        self.assertEqual(self.origin.count(self.path(k)), 1)
        st = stats(c, "rj")
        self.assertEqual((st["request_count"], st["load_count"], st["coalesced_count"]), (2, 1, 1))
        self.assertEqual(st["request_count"], st["hit_count"] + st["miss_count"])
        self.assert_record("json", self.stored(k), self.doc(k))
        # the flight ended with its write: the next GET reads redis
        wait_for(lambda: st_info(c, "shared")["writes"] == 1, 5, what="the write to finish")
        self.assertEqual(json.loads(c.get(k)), self.doc(k))
        self.assertEqual(st_info(c, "shared")["reads"], reads + 1)
        self.assertEqual(stats(c, "rj")["remote_hit_count"], 1)

    def test_mget_is_one_redis_mget(self):
        for names in (("rm",), ("lj",)):
            keys = self.stored_keys(names, 20)
            self.assertEqual(self.mget_counted(keys), 1, names)
        self.assertEqual(self.origin.stats()["total"], 40)

    # SPEC §6.7: "one multi-get per storage for all its keys"; MGET keys may belong to different
    # nodes: keys of two nodes on one redis storage cost one MGET.
    def test_mget_across_nodes_of_one_storage_is_one_redis_mget(self):
        keys = self.stored_keys(("rm", "lj"), 20)
        self.assertEqual(self.mget_counted(keys), 1)

    # Reads fill the pool's first connection before using the next (st_redis node_pick_read):
    # a single-threaded server gains nothing from more, and batches queued on one socket are read
    # and answered together. Spread by key hash (as before), 30 one-key reads used all 4.
    def test_reads_fill_the_first_connection(self):
        keys = self.stored_keys(("rm",), 30)
        before = {c["id"] for c in self.r.client_list()}
        d = self.daemon(self.body(pool_size=4))
        c = d.client()
        wait_for(lambda: c.info("storages")["storage_shared_redis_conns_ready"] == 4, 5,
                 what="the daemon's 4 redis connections")
        mine = [x["id"] for x in self.r.client_list() if x["id"] not in before]
        for k in keys:   # one at a time: each is a batch of one, a GET, with nothing outstanding
            self.assertEqual(json.loads(c.get(k)), self.doc(k))
        used = [x for x in self.r.client_list() if x["id"] in mine and x["cmd"] in ("get", "mget")]
        self.assertEqual(len(mine), 4)
        self.assertEqual(len(used), 1, used)

    def test_mget_mixing_stored_and_missing_keys(self):
        d = self.daemon(self.body(pool_size=1))
        c = d.client()
        stored = [self.key("rj", ":s%d" % i) for i in range(5)]
        for k in stored:
            self.r.set(skey(k), encode("json", wrap({"py": k})), ex=60)
        missing = [self.key("rj", ":m%d" % i) for i in range(5)]
        keys = [x for pair in zip(stored, missing) for x in pair]
        before = cmdstats(self.r)
        vals = c.mget(keys)
        self.assertEqual([json.loads(v) for v in vals],
                         [{"py": k} if k in stored else self.doc(k) for k in keys])
        wait_for(lambda: delta(before, cmdstats(self.r), "setex") == len(missing), 5,
                 what="the loaded keys' writes")
        after = cmdstats(self.r)
        self.assertEqual((delta(before, after, "mget"), delta(before, after, "get")), (1, 0))
        self.assertEqual(delta(before, after, "setex"), len(missing))
        self.assertEqual(self.origin.stats()["total"], len(missing))
        st = stats(c, "rj")
        self.assertEqual((st["request_count"], st["hit_count"], st["miss_count"],
                          st["load_count"]), (10, 5, 5, 5))

    # ---------------------------------------------------------------------------------------
    # interop with Python (Cacheme's format)

    def test_python_reads_what_cachemed_writes(self):
        d = self.daemon(self.body())
        c = d.client()
        for name in ("rm", "rj", "cm", "cj"):
            k = self.key(name, ":set")
            doc = {"name": name, "u": "é\"'\\ ☃ \U0001F600", "list": [1, 2.5, None, True, -7],
                   "big": 2 ** 40, "nested": {"a": {"b": []}}}
            self.assertTrue(c.set(k, json.dumps(doc)))
            self.assert_record(NODES[name][1], self.stored(k), doc)
            self.assertIn(self.r.ttl(skey(k)), (89, 90))

    def test_cachemed_serves_what_python_writes_without_loading(self):
        d = self.daemon(self.body())
        c = d.client()
        doc = {"from": "python", "u": "日本語 é", "f": 0.5, "n": [1, None, False], "e": {}}
        for name in ("rm", "rj", "cm", "cj", "lm", "lj"):
            k = self.key(name, ":py")
            self.r.set(skey(k), encode(NODES[name][1], wrap(dict(doc, node=name))), ex=60)
            self.assertEqual(json.loads(c.get(k)), dict(doc, node=name), name)
            st = stats(c, name)
            self.assertEqual((st["remote_hit_count"], st["load_count"]), (1, 0), name)
        self.assertEqual(self.origin.stats()["total"], 0)

    def test_only_value_is_read_any_json_type(self):
        d = self.daemon(self.body())
        c = d.client()
        when = {"__class__": "datetime.datetime", "data": datetime.now(timezone.utc).isoformat()}
        for i, v in enumerate(["str \U0001F600", 5, None, [1, {"a": 2.5}], True]):
            for name in ("rm", "rj"):
                k = self.key(name, ":t%d" % i)
                # updated_at first: Cacheme reads "value" only, so must cachemed
                self.r.set(skey(k), encode(NODES[name][1], {"updated_at": when, "value": v}),
                           ex=60)
                got = c.get(k)
                if v is None:
                    # Cacheme's cached None is a negative entry (SPEC §12): nil, and no load
                    self.assertIsNone(got, k)
                else:
                    self.assertEqual(json.loads(got), v, k)
        self.assertEqual(self.origin.stats()["total"], 0)

    def test_unreadable_value_is_a_miss_and_is_overwritten(self):
        d = self.daemon(self.body())
        c = d.client()
        for name, junk in (("rm", b"\xc1junk"), ("rj", b'{"no": "value"}'), ("cm", b"{junk"),
                           ("cj", zlib.compress(b"[1, 2]", 3))):
            k = self.key(name, ":junk")
            self.r.set(skey(k), junk, ex=60)
            self.assertEqual(json.loads(c.get(k)), self.doc(k))   # loaded
            self.assertEqual(self.origin.count(self.path(k)), 1)
            wait_for(lambda: self.r.get(skey(k)) != junk, 5, what="the rewrite of " + k)
            self.assert_record(NODES[name][1], self.r.get(skey(k)), self.doc(k))
        self.assertIn("unreadable value", d.read_log())
        # the storage found values but none was usable: errors, not hits
        line = c.info("storages")["storage_shared"]
        self.assertEqual((line["hits"], line["errors"]), (0, 4), line)

    # ---------------------------------------------------------------------------------------
    # redis stopped, killed, started again

    def timed_get(self, c, k):
        t0 = time.time()
        self.assertEqual(json.loads(c.get(k)), self.doc(k))
        return time.time() - t0

    def test_redis_stopped_killed_and_back(self):
        d = self.daemon(self.body(timeout="300ms"))
        c = d.client()
        c.get(self.key("rj", ":warm"))
        self.stored(self.key("rj", ":warm"))
        pid = redis_pid(self.r)
        times = {}
        os.kill(pid, signal.SIGSTOP)
        try:
            times["stopped"] = [self.timed_get(c, self.key(n, ":stop%d" % i))
                                for i in range(4) for n in ("rj", "lm")]
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertLess(max(times["stopped"]), 1.2, times["stopped"])
        st = st_info(c, "shared")
        self.assertGreater(st["timeouts"] + st["errors"], 0)
        killed = False
        try:
            backends("stop", "redis")
            killed = True
            # traffic while it is down, long enough for the reconnect backoff to reach its cap
            times["killed"] = []
            t0 = time.time()
            while time.time() - t0 < DOWN_SECS:
                i = len(times["killed"])
                times["killed"].append(self.timed_get(c, self.key("rj" if i % 2 else "lm",
                                                                  ":kill%d" % i)))
                time.sleep(0.1)
            self.assertLess(max(times["killed"]), 0.5, times["killed"])
        finally:
            if killed:
                t0 = time.time()
                backends("start", "redis")
        t_up = time.time()
        up = t_up - t0
        self.r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        # back: a key written straight into redis is served from there, with no load
        i = 0
        while True:
            k = self.key("rj", ":back%d" % i)
            doc = {"written": "by the test", "i": i}
            self.r.set(skey(k), encode("json", wrap(doc)), ex=60)
            got = json.loads(c.get(k))
            if got == doc:
                break
            self.assertEqual(got, self.doc(k))   # meanwhile: loaded
            if time.time() - t_up > RESUME_SECS:
                self.fail("redis not used again %.0f s after it came back" % RESUME_SECS)
            i += 1
            time.sleep(0.1)
        back = time.time() - t_up
        self.assertEqual(self.origin.count(self.path(k)), 0)
        print("\n  GET while SIGSTOPped: max %.2f s; killed: max %.3f s (%d GETs); redis answering "
              "%.1f s after `backends.sh start`, used again by the daemon %.1f s after that"
              % (max(times["stopped"]), max(times["killed"]), len(times["killed"]), up, back),
              end=" ")
