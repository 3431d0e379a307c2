"""The Redis Cluster storage through the daemon (issue #5 points 3 and 6; SPEC §11), with real
clients and a real 3-master cluster: chain [redis cluster] alone (`cluster = yes`, the url is one
seed master). Each key lands on the master that owns its slot; an MGET over many slots is split
per hash slot and returns every value; a slot migrated under a running daemon (old map) is
followed through ASK (half-way) and MOVED (done), with no load. The slot is put back at the end.

Servers come from CM_TEST_REDIS_CLUSTER_SEED and CM_TEST_REDIS_CLUSTER_PORTS (scripts/backends.sh
start-all); a missing variable fails the test with a message saying which. Keys carry a per-test
unique part, since the cluster is shared with other test files.
"""
import json
import time

import redis
from redis.crc import key_slot

from harness import DaemonTest, node, wait_for
from test_redis import cmdstats, decode, st_info, uniq
from test_sql import env, skey, stats

# node -> serializer; both keep their keys 90 s in the cluster
NODES = {"cm": "msgpack", "cz": "compressed_json"}


class Master:
    def __init__(self, port):
        self.port = port
        self.r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        self.id = self.r.execute_command("CLUSTER", "MYID").decode()

    def slot_owner_port(self, slot):
        for first, last, master, *_ in self.r.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return master[1]
        return None

    def ok(self, *args):
        reply = self.r.execute_command(*args)
        if reply not in (True, b"OK"):
            raise AssertionError("%s on %d answered %r" % (" ".join(map(str, args)), self.port,
                                                            reply))


def slot_has(m, slot, key):
    """Master m holds client key `key` of `slot` (no redirection, whatever the slot's state;
    the slot may hold other tests' keys too)."""
    keys = m.r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    return skey(key).encode() in keys


class RedisClusterTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        cls.seed = env("CM_TEST_REDIS_CLUSTER_SEED")
        ports = [int(p) for p in env("CM_TEST_REDIS_CLUSTER_PORTS").split()]
        cls.masters = {p: Master(p) for p in ports}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        for m in cls.masters.values():
            m.r.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.u = uniq()

    def body(self, pool_size=2):
        s = ("[storage rc]\nurl = redis://%s\ncluster = yes\npool_size = %d\ntimeout = 2s\n\n"
             % (self.seed, pool_size))
        for name, ser in NODES.items():
            s += node(name, "%s:{id}" % name, caches="rc:90s", serializer=ser,
                      loader=self.loader("/%s/{id}" % name))
        return s

    def owner(self, key):
        """The master that owns the slot of client key `key` (the seed's view)."""
        seed = self.masters[int(self.seed.rsplit(":", 1)[1])]
        return self.masters[seed.slot_owner_port(key_slot(skey(key).encode()))]

    def cluster_cmdstats(self):
        out = {}
        for m in self.masters.values():
            for cmd, n in cmdstats(m.r).items():
                out[cmd] = out.get(cmd, 0) + n
        return out

    def assert_on_owner(self, key, doc):
        """key is stored, with the node's format and ttl, on its slot's master and no other."""
        o = self.owner(key)
        data = o.r.get(skey(key))
        self.assertIsNotNone(data, "%s not on %d, the owner of its slot" % (key, o.port))
        self.assertEqual(decode(NODES[key.split(":")[0]], data)["value"], doc)
        self.assertIn(o.r.ttl(skey(key)), range(80, 91))   # 90 s, set up to a few s ago
        for m in self.masters.values():
            if m is not o:   # a non-owner has no such key (COUNTKEYSINSLOT: no MOVED)
                n = m.r.execute_command("CLUSTER", "COUNTKEYSINSLOT", key_slot(skey(key).encode()))
                self.assertEqual(n, 0, "slot of %s has keys on %d" % (key, m.port))

    def test_mget_200_keys_over_many_slots(self):
        # 160 keys spread by their hash, 40 in 4 hash-tagged groups of 10 (one slot each)
        keys = ["%s:%s%s-%d" % ("cm" if i % 2 else "cz", "{g%d}" % (i % 4) if i < 40 else "",
                                self.u, i) for i in range(200)]
        docs = {k: {"k": k, "i": i, "u": "é☃"} for i, k in enumerate(keys)}
        d1 = self.daemon(self.body())
        p = d1.client().pipeline(transaction=False)
        for k in keys:
            p.set(k, json.dumps(docs[k]))
        self.assertEqual(p.execute(), [True] * len(keys))
        wait_for(lambda: all(self.owner(k).r.exists(skey(k)) for k in keys), 10,
                 what="the 200 writes")
        # the daemon batches per node, then splits per slot: one command per (node, slot)
        per_slot = {}
        for k in keys:
            batch = (k.split(":")[0], key_slot(skey(k).encode()))
            per_slot[batch] = per_slot.get(batch, 0) + 1
        slots = {slot for _, slot in per_slot}
        self.assertGreater(len(slots), 120)
        self.assertGreaterEqual(max(per_slot.values()), 10)
        per_master = {m.port: 0 for m in self.masters.values()}
        for k in keys:
            self.assert_on_owner(k, docs[k])
            per_master[self.owner(k).port] += 1
        self.assertTrue(all(n > 20 for n in per_master.values()), per_master)

        d2 = self.daemon(self.body())   # fresh: everything comes from the cluster
        c2 = d2.client()
        c2.get("cm:%s-warm" % self.u)   # connected to every master it needs, map known
        wait_for(lambda: st_info(c2, "rc")["writes"] == 1, 5, what="the warm-up write")
        before = self.cluster_cmdstats()
        vals = c2.mget(keys)
        after = self.cluster_cmdstats()
        self.assertEqual([json.loads(v) for v in vals], [docs[k] for k in keys])
        self.assertEqual(self.origin.stats()["total"], 1)   # only the warm-up key
        # split per hash slot: one MGET per batch of several keys, one GET per batch of one key
        self.assertEqual((after.get("mget", 0) - before.get("mget", 0),
                          after.get("get", 0) - before.get("get", 0)),
                         (sum(1 for n in per_slot.values() if n > 1),
                          sum(1 for n in per_slot.values() if n == 1)))
        for name in NODES:
            st = stats(c2, name)
            self.assertEqual((st["remote_hit_count"], st["hit_count"]), (100, 100), name)
        self.assertEqual(stats(c2, "cz")["load_count"], 0)
        print("\n  MGET of 200 keys: %d slots (%d MGETs), keys per master %s"
              % (len(slots), sum(1 for n in per_slot.values() if n > 1), per_master), end=" ")

    def test_get_loads_into_owner_and_second_daemon_hits(self):
        d1 = self.daemon(self.body())
        c1 = d1.client()
        keys = ["%s:%s-g%d" % (n, self.u, i) for i in range(10) for n in NODES]
        for k in keys:
            name, rest = k.split(":", 1)
            self.assertEqual(json.loads(c1.get(k)), {"path": "/%s/%s" % (name, rest), "n": 1})
        wait_for(lambda: st_info(c1, "rc")["writes"] == len(keys), 5, what="the writes")
        for k in keys:
            name, rest = k.split(":", 1)
            self.assert_on_owner(k, {"path": "/%s/%s" % (name, rest), "n": 1})
        d2 = self.daemon(self.body())
        c2 = d2.client()
        self.assertEqual(c2.mget(keys), c1.mget(keys))
        self.assertEqual(self.origin.stats()["total"], len(keys))
        self.assertEqual(sum(stats(c2, n)["remote_hit_count"] for n in NODES), len(keys))

    # ---------------------------------------------------------------------------------------
    # slot migration under a running daemon

    def settle(self, slot, owner):
        """Waits until every master gives slot to owner, telling a stale one again each second
        (a gossip message with a higher config epoch can win over SETSLOT NODE)."""
        start = told = time.time()
        for m in self.masters.values():
            while m.slot_owner_port(slot) != owner.port:
                now = time.time()
                if now - start > 15:
                    raise AssertionError("%d still gives slot %d to %r, not %d" % (
                        m.port, slot, m.slot_owner_port(slot), owner.port))
                if now - told > 1:
                    m.ok("CLUSTER", "SETSLOT", slot, "NODE", owner.id)
                    told = now
                time.sleep(0.02)

    def migrate_keys(self, slot, src, dst, keys=None):
        """IMPORTING on dst, MIGRATING on src, then MIGRATE `keys` (default: every key of the
        slot on src) to dst."""
        dst.ok("CLUSTER", "SETSLOT", slot, "IMPORTING", src.id)
        src.ok("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id)
        while True:
            batch = keys or src.r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not batch:
                return
            src.ok("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *batch)
            if keys:
                return

    def finish_move(self, slot, src, dst):
        """Moves what is left of the slot and assigns it to dst on every master, as
        redis-cli --cluster reshard does (dst, then src, then the others)."""
        self.migrate_keys(slot, src, dst)
        dst.ok("CLUSTER", "SETSLOT", slot, "NODE", dst.id)
        src.ok("CLUSTER", "SETSLOT", slot, "NODE", dst.id)
        for m in self.masters.values():
            if m is not src and m is not dst:
                m.ok("CLUSTER", "SETSLOT", slot, "NODE", dst.id)
        self.settle(slot, dst)

    def test_slot_migrated_under_running_daemon_ask_then_moved(self):
        d = self.daemon(self.body(pool_size=1))
        c = d.client()
        # two keys of one slot (hash tag), set through the daemon, read once: the map is known
        tag = "{t%s}" % self.u
        k1, k2 = "cm:%sa" % tag, "cz:%sb" % tag
        doc1, doc2 = {"k": 1, "u": self.u}, {"k": 2, "u": self.u}
        c.set(k1, json.dumps(doc1))
        c.set(k2, json.dumps(doc2))
        self.assertEqual([json.loads(v) for v in c.mget(k1, k2)], [doc1, doc2])
        slot = key_slot(skey(k1).encode())
        self.assertEqual(slot, key_slot(skey(k2).encode()))
        a = self.owner(k1)
        b = next(m for m in self.masters.values() if m is not a)
        self.assert_on_owner(k1, doc1)
        moved = False
        try:
            # half-way: MIGRATING on a, IMPORTING on b, only k1 moved -> a answers ASK for k1
            moved = True
            self.migrate_keys(slot, a, b, keys=[skey(k1)])
            self.assertEqual([slot_has(m, slot, k) for m in (a, b) for k in (k1, k2)],
                             [False, True, True, False])
            self.assertEqual(json.loads(c.get(k1)), doc1)
            self.assertEqual(json.loads(c.get(k2)), doc2)
            self.assertGreaterEqual(c.info("storages")["storage_rc_redis_ask"], 1)
            # done: the slot belongs to b; the daemon's map still says a -> MOVED
            self.finish_move(slot, a, b)
            self.assertEqual(a.r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot), 0)
            self.assertEqual([slot_has(b, slot, k) for k in (k1, k2)], [True, True])
            self.assertEqual(json.loads(c.get(k2)), doc2)
            self.assertEqual([json.loads(v) for v in c.mget(k1, k2)], [doc1, doc2])
            self.assertGreaterEqual(c.info("storages")["storage_rc_redis_moved"], 1)
            self.assertEqual(self.origin.stats()["total"], 0)
            for name in NODES:
                st = stats(c, name)
                self.assertEqual((st["load_count"], st["miss_count"]), (0, 0), name)
            # writes after the move land on b
            c.set(k1, json.dumps({"after": "move"}))
            wait_for(lambda: b.r.get(skey(k1)) is not None and decode(
                "msgpack", b.r.get(skey(k1)))["value"] == {"after": "move"}, 5,
                what="the SET after the move on the new owner")
        finally:
            if moved:
                if self.owner(k1) is a:   # half-way: finish first, then move back
                    self.finish_move(slot, a, b)
                self.finish_move(slot, b, a)
        self.assertIs(self.owner(k1), a)
        self.assertEqual([slot_has(a, slot, k) for k in (k1, k2)], [True, True])
        # and the daemon follows it back
        self.assertEqual(json.loads(c.get(k2)), doc2)
        self.assertEqual(self.origin.stats()["total"], 0)
