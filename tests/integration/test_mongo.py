"""The chain through the daemon with the MongoDB storage (CongoDB, the MongoDB wire protocol, from
CM_TEST_MONGO_URL), with the same tests as the SQL storages (test_sql.SqlChain: Cacheme's document
format, remote hits from a second daemon, expiry checked at read time, MGET, awkward keys, the
server restarted mid-test or down at start, DEL and SET), plus the document read with the official
`mongodb` npm driver through tests/interop/mongo_read.mjs.

Documents are read and edited by one long-lived node process running the official `mongodb` driver
(scripts/mongo/node_modules), the way Cacheme's pymongo storage reads them: find_one({key}). Each
class uses its own database (it_<random>). CongoDB keeps no data across a restart, so after
`backends.sh restart mongo` the first GET is a miss that writes the document again, and the next
one is a remote hit.
"""
import json
import os
import secrets
import subprocess
from datetime import datetime

import msgpack  # Debian's python3-msgpack

from harness import ROOT, DaemonTest
from test_sql import SqlChain, env

NODE_MODULES = os.environ.get("CM_MONGO_NODE_MODULES",
                              os.path.join(ROOT, "scripts", "mongo", "node_modules"))

# One JSON request per stdin line, one JSON reply per stdout line: {"ok": ...} or {"err": "..."}.
HELPER = r"""
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
const { MongoClient, Binary } = createRequire(path.join(process.env.NM, 'x.js'))('mongodb');
const client = new MongoClient(process.env.URL, { serverSelectionTimeoutMS: 5000 });
const coll = () => client.db(process.env.DB).collection(process.env.COLL);
const iso = (d) => (d instanceof Date ? d.toISOString() : d === null ? null : 'not a Date');
for await (const line of readline.createInterface({ input: process.stdin })) {
  const req = JSON.parse(line);
  let out;
  try {
    if (req.op === 'read') {
      const d = await coll().findOne({ key: req.key });
      out = d && {
        key_type: typeof d.key,
        value_subtype: d.value instanceof Binary ? d.value.sub_type : 'not Binary',
        value_hex: d.value instanceof Binary ? Buffer.from(d.value.buffer).toString('hex') : null,
        expire: iso(d.expire), expire_present: 'expire' in d,
        updated_at: iso(d.updated_at),
      };
    } else if (req.op === 'expire') {
      out = (await coll().updateOne({ key: req.key }, { $set: { expire: new Date(req.when) } }))
        .matchedCount;
    } else if (req.op === 'drop') {
      out = await client.db(process.env.DB).dropDatabase();
    }
    process.stdout.write(JSON.stringify({ ok: out === undefined ? null : out }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ err: String(e) }) + '\n');
  }
}
await client.close();
"""


def parse_date(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class MongoDB:
    kind, server = "mongodb", "mongo"

    def __init__(self, name):
        self.url = env("CM_TEST_MONGO_URL")
        self.database, self.collection = name, "cacheme_data"
        if not os.path.isfile(os.path.join(NODE_MODULES, "mongodb", "package.json")):
            raise AssertionError("the `mongodb` npm driver is not in %s (scripts/mongo/setup.sh "
                                 "installs it)" % NODE_MODULES)
        e = dict(os.environ, NM=NODE_MODULES, URL=self.url, DB=self.database, COLL=self.collection)
        self.proc = subprocess.Popen(["node", "--input-type=module", "-e", HELPER], env=e,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("the node mongodb helper exited %s" % self.proc.poll())
        out = json.loads(line)
        if "err" in out:
            raise AssertionError("mongodb helper: %s: %s" % (req, out["err"]))
        return out["ok"]

    def storage(self):
        return ("url = %s\ndatabase = %s\ncollection = %s\ncreate_indexes = yes\n"
                % (self.url, self.database, self.collection))

    def read(self, key):
        """Cacheme's read: (value bytes, expire or None), or None; asserts Cacheme's document
        types on the way (key a string, value BinData subtype 0, expire a Date or null,
        updated_at a Date)."""
        d = self.call(op="read", key=key)
        if d is None:
            return None
        bad = [d["key_type"] != "string", d["value_subtype"] != 0, not d["expire_present"],
               d["expire"] == "not a Date", d["updated_at"] in (None, "not a Date")]
        if any(bad):
            raise AssertionError("document of %r is not in Cacheme's format: %s" % (key, d))
        return bytes.fromhex(d["value_hex"]), d["expire"] and parse_date(d["expire"])

    def set_expire(self, key, when):
        if self.call(op="expire", key=key, when=when.isoformat()) != 1:
            raise AssertionError("no document %r to expire" % key)

    def select_count(self):
        return None

    def close(self):
        try:
            self.call(op="drop")
        finally:
            self.proc.stdin.close()
            self.proc.wait(10)
            self.proc.stdout.close()


class MongoTest(SqlChain, DaemonTest):
    DB = MongoDB
    OP_TIMEOUT = "1s"

    def test_document_read_by_official_driver(self):
        """tests/interop/mongo_read.mjs (the official driver, find_one({key})) sees Cacheme's
        document: {key, value: BinData(0, V), updated_at: Date, expire: Date}, _id an ObjectId."""
        d = self.daemon(self.body())
        c = d.client()
        key = "dm:interop-" + secrets.token_hex(3)
        doc = json.loads(c.get(key))
        self.row(key)
        r = subprocess.run(["node", os.path.join(ROOT, "tests", "interop", "mongo_read.mjs"),
                            self.db.url, self.db.database, self.db.collection,
                            "cacheme:%s:v1" % key], env=dict(os.environ,
                                                             CM_MONGO_NODE_MODULES=NODE_MODULES),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout)
        got = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertTrue(got["found"])
        self.assertEqual((got["value_is_binary"], got["value_subtype"]), (True, 0))
        self.assertTrue(got["expire_is_date"] and got["updated_at_is_date"], got)
        self.assertEqual(got["id_type"], "ObjectId")
        self.assertEqual(got["fields"], ["_id", "expire", "key", "updated_at", "value"])
        self.assertEqual(msgpack.unpackb(bytes.fromhex(got["value_hex"]), raw=False), doc)
        self.assert_row(key, doc)
