// Cacheme's MongoDB indexes (cacheme/storages/scripts/mongo.js), in mongosh syntax:
//   mongosh 'mongodb://127.0.0.1:27017/cache' storages/scripts/mongo.js
// Documents: {key: <storage key>, value: BinData(0, V), updated_at: Date, expire: Date|null}.
// cachemed creates the same two indexes (names key_1 and expire_1) when create_indexes = yes.
// Expiry is checked at read time; add {expireAfterSeconds: 0} to the expire index if you also
// want mongod to purge expired documents (its TTL monitor runs about once a minute).
db = db.getSiblingDB('cache');
db.cacheme_data.createIndex({ key: 1 }, { unique: true });
db.cacheme_data.createIndex({ expire: 1 });
