// Drives cachemed with ioredis 6 and node-redis 6 in their default mode (both send HELLO 3).
// usage: node resp3.mjs PORT  -> prints "ok" lines, exits non-zero on any mismatch.
import Redis from 'ioredis';
import { createClient } from 'redis';
import assert from 'node:assert/strict';

const port = parseInt(process.argv[2], 10);

async function withIoredis() {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
  await r.connect();
  assert.equal(await r.ping(), 'PONG');
  assert.equal(await r.set('plain:io', 'v1'), 'OK');
  assert.equal(await r.get('plain:io'), 'v1');
  assert.equal(await r.get('plain:missing'), null);
  assert.equal(await r.get('item:io1'), '{"path": "/items/io1", "n": 1}');
  assert.deepEqual(await r.mget('plain:io', 'plain:missing'), ['v1', null]);
  const stats = await r.call('STATS', 'plain');
  assert.ok(stats, 'STATS answered');
  assert.equal(await r.del('plain:io'), 1);
  await assert.rejects(r.get('nope'), /no node matches key 'nope'/);
  const p = r.pipeline();
  for (let i = 0; i < 100; i++) p.echo(String(i));
  const res = await p.exec();
  res.forEach(([err, v], i) => { assert.equal(err, null); assert.equal(v, String(i)); });
  r.disconnect();
  console.log('ok ioredis');
}

async function withNodeRedis() {
  const c = createClient({ socket: { port, host: '127.0.0.1' } });
  c.on('error', () => {});
  await c.connect();
  assert.equal(await c.ping(), 'PONG');
  assert.equal(await c.set('plain:nr', 'v2', { EX: 60 }), 'OK');
  assert.equal(await c.get('plain:nr'), 'v2');
  assert.equal(await c.get('plain:missing'), null);
  assert.equal(await c.get('item:nr1'), '{"path": "/items/nr1", "n": 1}');
  assert.deepEqual(await c.mGet(['plain:nr', 'plain:missing']), ['v2', null]);
  const stats = await c.sendCommand(['STATS', 'plain']);
  assert.equal(typeof stats, 'object');
  assert.equal(await c.del('plain:nr'), 1);
  await assert.rejects(c.get('nope'), /no node matches key 'nope'/);
  await c.quit().catch(() => {});
  console.log('ok node-redis');
}

try {
  await withIoredis();
  await withNodeRedis();
} catch (e) {
  console.error('FAILED', e);
  process.exit(1);
}
process.exit(0);
