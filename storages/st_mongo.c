/* mongodb storage (mongodb://...): Cacheme's MongoStorage documents, with the blocking
 * mongo-c driver on a worker pool (one pooled client popped per job).
 *
 * Document: {key: <storage key>, value: BinData(0, V), updated_at: Date, expire: Date|null} in
 * conf->database / conf->collection; _id is left to the server (an ObjectId). Expiry is checked
 * here at read time (mongod's TTL monitor runs only once a minute). */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/blocking.h"
#include "storages/st_keys.h"
#include "storages/storage.h"
#include "storages/workers.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define MG_CHUNK 1000 /* keys per $in (keeps each command far below 16 MB) */
#define MG_MAX_THREADS 64
#define MG_DEFAULT_TIMEOUT_MS 2000 /* serverSelection/connect when the URL does not say */
#define MG_INDEX_RETRY_US (5 * 1000000LL)
#define MG_MAX_BACKOFF_US (5 * 1000000LL)

/* The storage's private state (st->priv). */
struct mg {
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool; /* thread-safe; one client per running job */
    char *db;
    char *coll;
    struct cm_workers *workers;
    atomic_bool closing; /* queued jobs fail at once */
    bool create_indexes;
    pthread_mutex_t mu; /* guards the fields below */
    bool indexes_done;
    bool indexes_running;   /* a thread is creating them right now */
    int64_t index_tried_us; /* last attempt (wall clock), to retry at most every 5 s */
    int64_t down_until_us;  /* server unreachable: jobs fail at once until then */
    int64_t backoff_us;     /* 0 while the server answers */
    char down_reason[160];
};

static pthread_once_t mg_init_once = PTHREAD_ONCE_INIT;

/* The driver's log goes to ours (its default handler writes to stdout/stderr itself). */
static void mg_log(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
    CM_UNUSED(data);
    int lvl = level <= MONGOC_LOG_LEVEL_ERROR     ? CM_LOG_ERR
              : level == MONGOC_LOG_LEVEL_WARNING ? CM_LOG_WARN
              : level <= MONGOC_LOG_LEVEL_INFO    ? CM_LOG_INFO
                                                  : CM_LOG_TRACE;
    cm_log(lvl, "mongoc %s: %s", domain, message);
}

static void mg_init(void)
{
    mongoc_init();
    mongoc_log_set_handler(mg_log, NULL);
}

static mongoc_collection_t *coll_get(struct mg *m, mongoc_client_t *client)
{
    return mongoc_client_get_collection(client, m->db, m->coll);
}

/* createIndexes {key: 1} unique and {expire: 1}, named as mongosh/pymongo name them
 * (key_1, expire_1), the same as storages/scripts/mongo.js. */
static int create_indexes(struct mg *m, mongoc_client_t *client, bson_error_t *error)
{
    bson_t cmd = BSON_INITIALIZER, idx, one, keys;
    BSON_APPEND_UTF8(&cmd, "createIndexes", m->coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &idx);
    BSON_APPEND_DOCUMENT_BEGIN(&idx, "0", &one);
    BSON_APPEND_DOCUMENT_BEGIN(&one, "key", &keys);
    BSON_APPEND_INT32(&keys, "key", 1);
    bson_append_document_end(&one, &keys);
    BSON_APPEND_UTF8(&one, "name", "key_1");
    BSON_APPEND_BOOL(&one, "unique", true);
    bson_append_document_end(&idx, &one);
    BSON_APPEND_DOCUMENT_BEGIN(&idx, "1", &one);
    BSON_APPEND_DOCUMENT_BEGIN(&one, "key", &keys);
    BSON_APPEND_INT32(&keys, "expire", 1);
    bson_append_document_end(&one, &keys);
    BSON_APPEND_UTF8(&one, "name", "expire_1");
    bson_append_document_end(&idx, &one);
    bson_append_array_end(&cmd, &idx);
    mongoc_database_t *db = mongoc_client_get_database(client, m->db);
    bson_t reply;
    bool ok = mongoc_database_write_command_with_opts(db, &cmd, NULL, &reply, error);
    bson_destroy(&reply);
    mongoc_database_destroy(db);
    bson_destroy(&cmd);
    return ok ? CM_OK : CM_ERR;
}

/* Creates the indexes once (create_indexes = yes): from the job open() queues, then, while that
 * failed, at most every 5 s after an op that succeeded. One thread tries at a time, and no job
 * waits for it. Never fails a job. */
static void ensure_indexes(struct mg *m, mongoc_client_t *client)
{
    if (!m->create_indexes) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    int64_t now = cm_wall_us();
    bool mine =
        !m->indexes_done && !m->indexes_running && now - m->index_tried_us >= MG_INDEX_RETRY_US;
    if (mine) {
        m->indexes_running = true;
        m->index_tried_us = now;
    }
    pthread_mutex_unlock(&m->mu);
    if (!mine) {
        return;
    }
    bson_error_t error;
    bool ok = create_indexes(m, client, &error) == CM_OK;
    if (!ok) {
        cm_log(CM_LOG_WARN, "mongodb %s.%s: createIndexes failed: %s", m->db, m->coll,
               error.message);
    }
    pthread_mutex_lock(&m->mu);
    m->indexes_running = false;
    m->indexes_done = ok;
    pthread_mutex_unlock(&m->mu);
}

/* While the server is unreachable, jobs fail at once instead of each waiting out the server
 * selection timeout on a worker; one job per backoff period (100 ms doubling to 5 s) probes. */
static bool server_down_skip(struct mg *m, struct cm_bjob *j)
{
    pthread_mutex_lock(&m->mu);
    int64_t now = cm_wall_us();
    bool skip = now < m->down_until_us;
    if (!skip && m->backoff_us > 0) {
        m->down_until_us = now + m->backoff_us; /* this job probes; others skip meanwhile */
    }
    pthread_mutex_unlock(&m->mu);
    if (skip) {
        cm_bjob_fail(j, "server unreachable, retrying in the background: %s", m->down_reason);
    }
    return skip;
}

static void server_state(struct mg *m, const struct cm_bjob *j, bool unreachable)
{
    pthread_mutex_lock(&m->mu);
    if (unreachable) {
        m->backoff_us = m->backoff_us == 0 ? 100 * 1000 : m->backoff_us * 2;
        if (m->backoff_us > MG_MAX_BACKOFF_US) {
            m->backoff_us = MG_MAX_BACKOFF_US;
        }
        m->down_until_us = cm_wall_us() + m->backoff_us;
        snprintf(m->down_reason, sizeof(m->down_reason), "%s", j->err);
    } else if (j->status == CM_OK) {
        m->backoff_us = 0;
        m->down_until_us = 0;
    }
    pthread_mutex_unlock(&m->mu);
}

/* Fails the job with the driver's error; *down tells whether no server could be reached. */
static void op_fail(struct cm_bjob *j, bool *down, const char *what, const bson_error_t *error)
{
    cm_bjob_fail(j, "%s: %s", what, error->message);
    *down |= error->domain == MONGOC_ERROR_SERVER_SELECTION;
}

/* What a BSON string key cannot be: with a NUL it is no C string (the server and libbson's
 * validation refuse it), and BSON strings are UTF-8 (the server refuses invalid ones). Such a
 * key is a miss and is never written (issue 14, defect 15); the other keys of its op go on. */
#define MG_KEY_RULES (CM_KEY_NO_NUL | CM_KEY_UTF8)

/* {key: {$in: [the keys of from..from+n) a document can hold]}}; returns how many it holds. */
static size_t in_filter(bson_t *filter, const struct cm_st_op *op, size_t from, size_t n)
{
    bson_t key, arr;
    size_t k = 0;
    BSON_APPEND_DOCUMENT_BEGIN(filter, "key", &key);
    BSON_APPEND_ARRAY_BEGIN(&key, "$in", &arr);
    for (size_t i = 0; i < n; i++) {
        if (!cm_st_item_fits(op, from + i, MG_KEY_RULES)) {
            continue;
        }
        char idx[24];
        const char *idxs;
        size_t il = bson_uint32_to_string((uint32_t)k++, &idxs, idx, sizeof(idx));
        const struct cm_st_item *it = &op->items[from + i];
        bson_append_utf8(&arr, idxs, (int)il, it->key, (int)it->klen);
    }
    bson_append_array_end(&key, &arr);
    bson_append_document_end(filter, &key);
    return k;
}

/* True when a document's expire says it is still live at now_us (missing/null = forever). */
static bool doc_live(const bson_t *doc, int64_t now_us)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "expire")) {
        return true;
    }
    switch (bson_iter_type(&it)) {
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
        return true;
    case BSON_TYPE_DATE_TIME:
        /* date * 1000 > now_us without the multiplication (a far Date would overflow it) */
        return bson_iter_date_time(&it) > now_us / 1000;
    default:
        return false; /* unreadable expiry: never serve a value that may be stale */
    }
}

/* The document's updated_at (a Date, set on every write by us and by Cacheme) in ms; 0 when
 * missing or not a Date. */
static int64_t doc_written_ms(const bson_t *doc)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "updated_at") || !BSON_ITER_HOLDS_DATE_TIME(&it)) {
        return 0;
    }
    int64_t ms = bson_iter_date_time(&it);
    return ms > 0 ? ms : 0;
}

static void do_get(mongoc_collection_t *coll, struct cm_bjob *j, bool *down)
{
    const struct cm_st_op *op = j->op;
    bson_t opts = BSON_INITIALIZER, proj;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);
    BSON_APPEND_INT32(&proj, "key", 1);
    BSON_APPEND_INT32(&proj, "value", 1);
    BSON_APPEND_INT32(&proj, "expire", 1);
    BSON_APPEND_INT32(&proj, "updated_at", 1);
    bson_append_document_end(&opts, &proj);
    for (size_t from = 0; from < op->nitems && j->status == CM_OK; from += MG_CHUNK) {
        size_t n = op->nitems - from < MG_CHUNK ? op->nitems - from : MG_CHUNK;
        bson_t filter = BSON_INITIALIZER;
        if (in_filter(&filter, op, from, n) == 0) {
            bson_destroy(&filter);
            continue;
        }
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc)) {
            bson_iter_t it;
            if (!doc_live(doc, j->now_us) || !bson_iter_init_find(&it, doc, "key") ||
                !BSON_ITER_HOLDS_UTF8(&it)) {
                continue;
            }
            uint32_t klen;
            const char *key = bson_iter_utf8(&it, &klen);
            int64_t written_ms = doc_written_ms(doc);
            if (!bson_iter_init_find(&it, doc, "value")) {
                continue;
            }
            if (BSON_ITER_HOLDS_BINARY(&it)) {
                bson_subtype_t sub;
                uint32_t vlen;
                const uint8_t *val;
                bson_iter_binary(&it, &sub, &vlen, &val);
                cm_bjob_hit(j, key, klen, val, vlen, written_ms);
            } else if (BSON_ITER_HOLDS_UTF8(&it)) { /* a str value written by another client */
                uint32_t vlen;
                const char *val = bson_iter_utf8(&it, &vlen);
                cm_bjob_hit(j, key, klen, val, vlen, written_ms);
            }
        }
        bson_error_t error;
        if (mongoc_cursor_error(cur, &error)) {
            op_fail(j, down, "find", &error);
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(&filter);
    }
    bson_destroy(&opts);
}

static void do_set(mongoc_collection_t *coll, struct cm_bjob *j, bool *down)
{
    const struct cm_st_op *op = j->op;
    bson_t bopts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&bopts, "ordered", false);
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &bopts);
    bson_t uopts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&uopts, "upsert", true);
    int64_t now_ms = cm_wall_us() / 1000;
    size_t queued = 0;
    for (size_t i = 0; i < op->nitems; i++) {
        if (!cm_st_item_fits(op, i, MG_KEY_RULES)) {
            continue; /* not storable here: skipped, the rest is written */
        }
        queued++;
        bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
        bson_append_utf8(&sel, "key", 3, op->items[i].key, (int)op->items[i].klen);
        BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
        bson_append_binary(&set, "value", 5, BSON_SUBTYPE_BINARY, (const uint8_t *)j->wval[i],
                           (uint32_t)j->wlen[i]);
        BSON_APPEND_DATE_TIME(&set, "updated_at", now_ms);
        if (j->expire_us >= 0) {
            BSON_APPEND_DATE_TIME(&set, "expire", j->expire_us / 1000);
        } else {
            BSON_APPEND_NULL(&set, "expire");
        }
        bson_append_document_end(&upd, &set);
        bson_error_t error;
        if (!mongoc_bulk_operation_update_one_with_opts(bulk, &sel, &upd, &uopts, &error)) {
            op_fail(j, down, "update", &error);
        }
        bson_destroy(&sel);
        bson_destroy(&upd);
    }
    if (j->status == CM_OK && queued > 0) {
        bson_t reply;
        bson_error_t error;
        if (!mongoc_bulk_operation_execute(bulk, &reply, &error)) {
            op_fail(j, down, "update", &error);
        }
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(&uopts);
    bson_destroy(&bopts);
}

static void do_del(mongoc_collection_t *coll, struct cm_bjob *j, bool *down)
{
    const struct cm_st_op *op = j->op;
    for (size_t from = 0; from < op->nitems && j->status == CM_OK; from += MG_CHUNK) {
        size_t n = op->nitems - from < MG_CHUNK ? op->nitems - from : MG_CHUNK;
        bson_t filter = BSON_INITIALIZER;
        bson_error_t error;
        if (in_filter(&filter, op, from, n) > 0 &&
            !mongoc_collection_delete_many(coll, &filter, NULL, NULL, &error)) {
            op_fail(j, down, "delete", &error);
        }
        bson_destroy(&filter);
    }
}

static void mg_work(void *arg)
{
    struct cm_bjob *j = arg;
    struct mg *m = j->backend;
    if (atomic_load(&m->closing)) {
        cm_bjob_fail(j, "storage closing");
        return;
    }
    if (j->op != NULL && server_down_skip(m, j)) {
        return;
    }
    /* Never waits: the pool holds as many clients as there are threads. */
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    if (j->op == NULL) {
        ensure_indexes(m, client); /* the job open() queues */
    } else {
        mongoc_collection_t *coll = coll_get(m, client);
        bool down = false;
        switch (j->op->kind) {
        case CM_ST_GET:
            do_get(coll, j, &down);
            break;
        case CM_ST_SET:
            do_set(coll, j, &down);
            break;
        case CM_ST_DEL:
            do_del(coll, j, &down);
            break;
        }
        mongoc_collection_destroy(coll);
        server_state(m, j, down);
        if (j->status == CM_OK) {
            /* retried only once the server answers, so a down server costs ops nothing more */
            ensure_indexes(m, client);
        }
    }
    mongoc_client_pool_push(m->pool, client);
}

static void free_job(void *arg)
{
    cm_free(arg);
}

static void mg_free(struct mg *m)
{
    if (m->pool != NULL) {
        mongoc_client_pool_destroy(m->pool);
    }
    mongoc_uri_destroy(m->uri);
    pthread_mutex_destroy(&m->mu);
    cm_free(m->db);
    cm_free(m->coll);
    cm_free(m);
}

static int mg_open(struct cm_storage *st, char *err, size_t errsz)
{
    const struct cm_conf_storage *conf = st->conf;
    pthread_once(&mg_init_once, mg_init);
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(conf->url, &error);
    if (uri == NULL) {
        snprintf(err, errsz, "bad mongodb url: %s", error.message);
        return CM_ERR;
    }
    /* A storage that is down must be a quick miss, not a worker stuck for the driver's 30 s. */
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                       MG_DEFAULT_TIMEOUT_MS);
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, MG_DEFAULT_TIMEOUT_MS);
    }
    /* A read retry after a failed server selection waits the whole timeout again, for an op
     * whose own timeout (storage timeout, 500 ms by default) has long fired: a miss is cheaper. */
    if (!mongoc_uri_has_option(uri, MONGOC_URI_RETRYREADS)) {
        mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYREADS, false);
    }
    if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME)) {
        mongoc_uri_set_option_as_utf8(uri, MONGOC_URI_APPNAME, "cachemed");
    }
    struct mg *m = cm_calloc(1, sizeof(*m));
    m->uri = uri;
    pthread_mutex_init(&m->mu, NULL);
    atomic_init(&m->closing, false);
    m->db = cm_strdup(conf->database != NULL && conf->database[0] ? conf->database : "cache");
    m->coll = cm_strdup(conf->collection != NULL && conf->collection[0] ? conf->collection
                                                                        : "cacheme_data");
    m->create_indexes = conf->create_indexes;
    m->index_tried_us = cm_wall_us() - MG_INDEX_RETRY_US;
    int n = conf->pool_size > 0 ? conf->pool_size : 4;
    if (n > MG_MAX_THREADS) {
        n = MG_MAX_THREADS;
    }
    m->pool = mongoc_client_pool_new_with_error(uri, &error);
    if (m->pool == NULL) {
        snprintf(err, errsz, "mongodb client pool: %s", error.message);
        mg_free(m);
        return CM_ERR;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(m->pool, (uint32_t)n);
    m->workers = cm_workers_new(st->base, n, "cm-mongo");
    if (m->workers == NULL) {
        snprintf(err, errsz, "cannot start mongodb worker threads");
        mg_free(m);
        return CM_ERR;
    }
    st->priv = m;
    if (m->create_indexes) {
        struct cm_bjob *j = cm_calloc(1, sizeof(*j));
        j->backend = m;
        cm_workers_submit(m->workers, mg_work, free_job, j);
    }
    return CM_OK;
}

static void mg_submit(struct cm_storage *st, struct cm_st_op *op)
{
    struct mg *m = st->priv;
    if (op->nitems == 0) {
        cm_st_op_finish_later(op);
        return;
    }
    cm_workers_submit(m->workers, mg_work, cm_bjob_complete, cm_bjob_new(op, m));
}

static void mg_close(struct cm_storage *st)
{
    struct mg *m = st->priv;
    if (m == NULL) {
        return;
    }
    atomic_store(&m->closing, true);
    cm_workers_free(m->workers); /* queued jobs fail fast; every completion runs here */
    mg_free(m);
    st->priv = NULL;
}

const struct cm_storage_ops cm_st_mongo_ops = {
    .name = "mongodb",
    .local = false,
    .wrapped = false,
    .open = mg_open,
    .submit = mg_submit,
    .close = mg_close,
};
