// CongoDB (MongoDB wire protocol, in memory) on 127.0.0.1 for the test servers.
// Usage: node congo-server.mjs PORT   (or CONGO_PORT=PORT); stops cleanly on SIGTERM/SIGINT.
// Needs ./setup.sh to have run (vendor/smartmongo + node_modules).
import { CongoServer, UpdateEngine, ObjectId, Timestamp } from './vendor/smartmongo/dist_ts/congodb/index.js';

// CongoDB 2.2.0's UpdateEngine.deepClone knows ObjectId, Date and Timestamp only: every other BSON
// class instance (Binary, Long, Decimal128, ...) is copied field by field into a plain object, so
// `update_one({k}, {$set: {v: Binary}}, upsert)` stores {sub_type, buffer, position} instead of
// BinData, unlike MongoDB (LAB.md §7). Return those instances as they are: BSON values are
// replaced, never mutated in place, by the update operators.
const deepClone = UpdateEngine.deepClone;
UpdateEngine.deepClone = function (obj) {
    if (obj !== null && typeof obj === 'object' && typeof obj._bsontype === 'string' &&
        !(obj instanceof ObjectId) && !(obj instanceof Timestamp)) {
        return obj;
    }
    return deepClone.call(this, obj);
};

const port = parseInt(process.env.CONGO_PORT || process.argv[2] || '27018', 10);
const server = new CongoServer({ port, host: '127.0.0.1', storage: 'memory' });
await server.start();
console.log('congodb listening', server.getConnectionUri());
const stop = async () => {
    await server.stop();
    process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
