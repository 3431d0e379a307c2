#!/usr/bin/env node
// Reads one cachemed document with the official `mongodb` driver, the way Cacheme's pymongo
// MongoStorage does (find_one({key})), and prints what it found as one JSON line:
//   node tests/interop/mongo_read.mjs URL DB COLLECTION KEY
// The driver is looked up in $CM_MONGO_NODE_MODULES, then scripts/mongo/node_modules
// (install it there with: cd scripts/mongo && npm install mongodb@6).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dirs = [process.env.CM_MONGO_NODE_MODULES, path.join(here, '../../scripts/mongo/node_modules')]
  .filter(Boolean);
const dir = dirs.find((d) => existsSync(path.join(d, 'mongodb', 'package.json')));
if (!dir) {
  console.error(`mongo_read.mjs: the 'mongodb' npm package is not installed in ${dirs.join(' or ')}` +
    ' (cd scripts/mongo && npm install mongodb@6)');
  process.exit(2);
}
const { MongoClient, Binary } = createRequire(path.join(dir, 'x.js'))('mongodb');

const [url, dbName, collName, key] = process.argv.slice(2);
if (!key) {
  console.error('usage: mongo_read.mjs URL DB COLLECTION KEY');
  process.exit(2);
}
const client = new MongoClient(url, { serverSelectionTimeoutMS: 3000 });
try {
  const doc = await client.db(dbName).collection(collName).findOne({ key });
  if (!doc) {
    console.log(JSON.stringify({ found: false }));
  } else {
    const v = doc.value;
    console.log(JSON.stringify({
      found: true,
      key_type: typeof doc.key,
      id_type: doc._id && doc._id._bsontype,
      value_is_binary: v instanceof Binary,
      value_subtype: v instanceof Binary ? v.sub_type : null,
      value_hex: v instanceof Binary ? Buffer.from(v.buffer).toString('hex') : null,
      updated_at_is_date: doc.updated_at instanceof Date,
      updated_at: doc.updated_at instanceof Date ? doc.updated_at.toISOString() : null,
      expire_is_date: doc.expire instanceof Date,
      expire_is_null: doc.expire === null,
      expire: doc.expire instanceof Date ? doc.expire.toISOString() : null,
      fields: Object.keys(doc).sort(),
    }));
  }
} finally {
  await client.close();
}
