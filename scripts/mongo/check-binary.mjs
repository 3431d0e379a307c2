// Checks the CongoDB deepClone fix through the official driver: update_one $set of a Binary
// (upsert, then an update of the existing document) must store and return a BSON Binary.
// Usage: node check-binary.mjs mongodb://127.0.0.1:PORT/   exits 0 when it holds.
import { MongoClient, Binary } from 'mongodb';

const uri = process.argv[2] || process.env.CM_TEST_MONGO_URL;
if (!uri) {
    console.error('usage: node check-binary.mjs MONGO_URL');
    process.exit(2);
}
const client = new MongoClient(uri, { serverSelectionTimeoutMS: 3000 });
let failed = false;
const expect = (what, ok) => {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
    failed ||= !ok;
};
try {
    await client.connect();
    const coll = client.db('cm_setup_check').collection('bin');
    await coll.deleteMany({});
    for (const bytes of [[0, 1, 0xff, 0, 0x7f], [0x80, 0, 0, 10, 13]]) {
        const want = Buffer.from(bytes);
        // The first pass upserts a new document, the second updates it: both go through deepClone.
        await coll.updateOne({ k: 'bin:1' }, { $set: { v: new Binary(want), n: bytes[0] } },
                             { upsert: true });
        const doc = await coll.findOne({ k: 'bin:1' });
        expect(`$set stored a Binary (n=${bytes[0]})`, doc.v instanceof Binary);
        expect(`bytes round-trip (n=${bytes[0]})`,
               doc.v instanceof Binary && Buffer.compare(Buffer.from(doc.v.buffer), want) === 0);
    }
    expect('one document', (await coll.countDocuments({ k: 'bin:1' })) === 1);
    await coll.drop();
} catch (e) {
    expect(`no error (${e.message})`, false);
} finally {
    await client.close();
}
process.exit(failed ? 1 : 0);
