/* mongodb storage against the server in CM_TEST_MONGO_URL (CongoDB in the test rig, see
 * LAB.md §3): round trips, expiry at read time, Cacheme's document shape (read back with the
 * official node driver), indexes, a server that is down, concurrency and close.
 * Not checkable on CongoDB, so not asserted: unique-index enforcement and TTL purging (the
 * storage relies on neither: upserts are keyed on `key`, expiry is checked at read time). */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/util.h"
#include "storages/storage.h"
#include "tests/unit/st_contract.h"

#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <mongoc/mongoc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* One test's database (unique per process and test), config and storage. */
struct fx {
    char db[64];
    struct cm_conf_storage conf;
    struct event_base *base;
    struct cm_storage *st;
};

static const char *mongo_url(void)
{
    const char *u = getenv("CM_TEST_MONGO_URL");
    ck_assert_msg(u != NULL && u[0] != '\0',
                  "CM_TEST_MONGO_URL is not set: run under the test runner (scripts/run-tests.sh) "
                  "or export CM_TEST_MONGO_URL=mongodb://127.0.0.1:PORT/");
    return u;
}

static void fx_open_url(struct fx *f, const char *url, bool indexes, int pool, int64_t timeout)
{
    static int seq;
    memset(f, 0, sizeof(*f));
    snprintf(f->db, sizeof(f->db), "cm_test_%d_%d", (int)getpid(), seq++);
    f->conf.name = "mongo";
    f->conf.url = (char *)url;
    f->conf.type = CM_ST_TYPE_MONGO;
    f->conf.pool_size = pool;
    f->conf.timeout_ms = timeout;
    f->conf.database = f->db;
    f->conf.collection = "cacheme_data";
    f->conf.create_indexes = indexes;
    f->base = event_base_new();
    char err[256] = "";
    f->st = cm_storage_new(&f->conf, f->base, err, sizeof(err));
    ck_assert_msg(f->st != NULL, "open: %s", err);
}

/* A client of our own, for writing and inspecting documents behind the storage's back. */
static mongoc_client_t *raw_client(void)
{
    mongoc_client_t *c = mongoc_client_new(mongo_url());
    ck_assert_ptr_nonnull(c);
    return c;
}

static void fx_close(struct fx *f)
{
    cm_storage_free(f->st);
    event_base_free(f->base);
    if (f->conf.url != NULL && strcmp(f->conf.url, mongo_url()) == 0) {
        mongoc_client_t *c = raw_client();
        mongoc_database_t *db = mongoc_client_get_database(c, f->db);
        mongoc_database_drop(db, NULL);
        mongoc_database_destroy(db);
        mongoc_client_destroy(c);
    }
}

static void raw_insert(struct fx *f, const char *key, const char *val, int64_t expire_ms,
                       bool expire_null)
{
    mongoc_client_t *c = raw_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, f->db, "cacheme_data");
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "key", key);
    bson_append_binary(&doc, "value", 5, BSON_SUBTYPE_BINARY, (const uint8_t *)val,
                       (uint32_t)strlen(val));
    BSON_APPEND_DATE_TIME(&doc, "updated_at", cm_wall_us() / 1000);
    if (expire_null) {
        BSON_APPEND_NULL(&doc, "expire");
    } else if (expire_ms != 0) {
        BSON_APPEND_DATE_TIME(&doc, "expire", expire_ms);
    }
    bson_error_t error;
    ck_assert_msg(mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error), "%s",
                  error.message);
    bson_destroy(&doc);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
}

static int64_t raw_count(struct fx *f, const char *key)
{
    mongoc_client_t *c = raw_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, f->db, "cacheme_data");
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "key", key);
    bson_error_t error;
    int64_t n = mongoc_collection_count_documents(coll, &filter, NULL, NULL, NULL, &error);
    ck_assert_msg(n >= 0, "%s", error.message);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return n;
}

/* The contract fixture (tests/unit/st_contract.h): a database of its own. */
static struct fx ct_mg;

static struct cm_storage *ct_open_mg(int pool, int64_t timeout_ms)
{
    fx_open_url(&ct_mg, mongo_url(), false, pool, timeout_ms);
    return ct_mg.st;
}

static void ct_close_mg(struct cm_storage *st)
{
    ct_mg.st = st;
    fx_close(&ct_mg);
}

/* An upsert on key keeps one document; a delete removes it. */
START_TEST(test_upsert_one_document)
{
    struct fx f;
    fx_open_url(&f, mongo_url(), false, 2, 5000);
    const char *k[] = {"cacheme:user:1:info:v1"};
    ck_assert_int_eq(h_set(f.st, 1, k, k, -1), CM_OK);
    ck_assert_int_eq(h_set(f.st, 1, k, k, 60000), CM_OK);
    ck_assert_int_eq(raw_count(&f, k[0]), 1);
    ck_assert_int_eq(h_del(f.st, 1, k), CM_OK);
    ck_assert_int_eq(raw_count(&f, k[0]), 0);
    fx_close(&f);
}
END_TEST

START_TEST(test_expired_doc_is_miss)
{
    struct fx f;
    fx_open_url(&f, mongo_url(), false, 2, 5000);
    int64_t now_ms = cm_wall_us() / 1000;
    raw_insert(&f, "old", "old", now_ms - 1000, false);
    raw_insert(&f, "new", "new", now_ms + 3600 * 1000, false);
    raw_insert(&f, "null", "null", 0, true);
    raw_insert(&f, "missing", "missing", 0, false);
    const char *keys[] = {"old", "new", "null", "missing"};
    struct h_result r;
    h_get(f.st, 4, keys, &r);
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_assert_val(&r, 0, NULL);
    h_assert_val(&r, 1, "new");
    h_assert_val(&r, 2, "null");
    h_assert_val(&r, 3, "missing");
    h_result_deinit(&r);

    fx_close(&f);
}
END_TEST

/* The document as Cacheme's pymongo would see it, read with the official node driver. */
START_TEST(test_cacheme_format_interop)
{
    struct fx f;
    fx_open_url(&f, mongo_url(), false, 2, 5000);
    struct cm_st_op *op = cm_st_op_new(CM_ST_SET, 2);
    op->ttl_ms = 3600 * 1000;
    cm_st_op_set_key(op, 0, "cacheme:user:7:info:v1", 22);
    static const char bin[] = {(char)0x81, (char)0xa4, 'n', 'a', 'm', 'e', 0, (char)0xff};
    op->items[0].wval = bin;
    op->items[0].wlen = sizeof(bin);
    cm_st_op_set_key(op, 1, "other", 5);
    op->items[1].wval = "x";
    op->items[1].wlen = 1;
    int64_t before_ms = cm_wall_us() / 1000;
    struct h_result r;
    h_run(f.st, op, &r);
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_result_deinit(&r);
    const char *k[] = {"cacheme:user:7:info:v1"};
    h_get(f.st, 1, k, &r);
    ck_assert(r.hit[0] && r.vlen[0] == sizeof(bin) && memcmp(r.val[0], bin, sizeof(bin)) == 0);
    h_result_deinit(&r);

    char script[512], cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "node %s '%s' %s cacheme_data 'cacheme:user:7:info:v1' 2>&1",
             h_src_path("tests/interop/mongo_read.mjs", script, sizeof(script)), mongo_url(), f.db);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    ck_assert_msg(rc == 0, "%s failed (%d): %s", cmd, rc, out);
    ck_assert_msg(strstr(out, "\"found\":true") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"value_is_binary\":true") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"value_subtype\":0") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"value_hex\":\"81a46e616d6500ff\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"expire_is_date\":true") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"updated_at_is_date\":true") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"key_type\":\"string\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"id_type\":\"ObjectId\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"fields\":[\"_id\",\"expire\",\"key\",\"updated_at\",\"value\"]"),
                  "%s", out);
    /* expire = now + 1 h, to the millisecond a BSON Date holds */
    char want[40];
    cm_fmt_iso8601(want, sizeof(want), (before_ms + 3600 * 1000) * 1000, 'T');
    ck_assert_msg(strstr(out, "\"expire\":\"") &&
                      strncmp(strstr(out, "\"expire\":\"") + 10, want, 15) == 0,
                  "%s (want about %s)", out, want);

    /* ttl -1 writes expire: null */
    const char *kn[] = {"forever"};
    ck_assert_int_eq(h_set(f.st, 1, kn, kn, -1), CM_OK);
    snprintf(cmd, sizeof(cmd), "node %s '%s' %s cacheme_data forever 2>&1", script, mongo_url(),
             f.db);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_msg(strstr(out, "\"expire_is_null\":true") != NULL, "%s", out);
    fx_close(&f);
}
END_TEST

/* create_indexes = yes: a unique index on key and a plain one on expire, named as mongo.js. */
START_TEST(test_create_indexes)
{
    struct fx f;
    fx_open_url(&f, mongo_url(), true, 2, 5000);
    const char *k[] = {"a"};
    ck_assert_int_eq(h_set(f.st, 1, k, k, -1), CM_OK);
    mongoc_client_t *c = raw_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, f.db, "cacheme_data");
    bool key_unique = false, expire = false;
    for (int attempt = 0; attempt < 50 && !(key_unique && expire); attempt++) {
        mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(coll, NULL);
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc)) {
            bson_iter_t it;
            const char *name =
                bson_iter_init_find(&it, doc, "name") ? bson_iter_utf8(&it, NULL) : "";
            bool uniq = bson_iter_init_find(&it, doc, "unique") && bson_iter_as_bool(&it);
            key_unique |= strcmp(name, "key_1") == 0 && uniq;
            expire |= strcmp(name, "expire_1") == 0 && !uniq;
        }
        mongoc_cursor_destroy(cur);
        if (!(key_unique && expire)) {
            usleep(20 * 1000); /* the index job runs on a worker, maybe after our SET */
        }
    }
    ck_assert(key_unique);
    ck_assert(expire);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    fx_close(&f);
}
END_TEST

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* Server down: every op is a quick CM_ERR (a miss), and the loop keeps running meanwhile. */
START_TEST(test_server_down)
{
    char url[128];
    snprintf(url, sizeof(url), "mongodb://127.0.0.1:%d/", closed_port()); /* defaults */
    struct fx f;
    fx_open_url(&f, url, true, 2, 10000);
    struct h_ticker t;
    h_ticker_start(&t, f.base);
    const char *k[] = {"a", "b"};
    struct h_result r;
    double t0 = h_now_ms();
    h_get(f.st, 2, k, &r);
    double took = h_now_ms() - t0;
    ck_assert_int_eq(r.status, CM_ERR);
    ck_assert(!r.hit[0] && !r.hit[1]);
    ck_assert_msg(strstr(r.err, "No suitable servers") != NULL ||
                      strstr(r.err, "connection refused") != NULL ||
                      strstr(r.err, "Failed to connect") != NULL,
                  "%s", r.err);
    h_result_deinit(&r);
    ck_assert_msg(took < 3500, "took %.0f ms", took);
    ck_assert_msg(t.max_gap_ms < 150, "the loop was blocked for %.0f ms", t.max_gap_ms);
    ck_assert_msg(t.ticks >= (int)(took / 10) / 2, "%d ticks in %.0f ms", t.ticks, took);
    /* while it stays down, ops fail at once instead of each waiting on a worker */
    t0 = h_now_ms();
    ck_assert_int_eq(h_set(f.st, 2, k, k, -1), CM_ERR);
    ck_assert_int_eq(h_del(f.st, 2, k), CM_ERR);
    double fast = h_now_ms() - t0;
    ck_assert_msg(fast < 500, "took %.0f ms", fast);
    h_ticker_stop(&t);
    printf("mongo down: GET failed after %.0f ms, then SET+DEL in %.1f ms; loop ticks %d, "
           "max gap %.1f ms\n",
           took, fast, t.ticks, t.max_gap_ms);
    f.conf.url = NULL;
    fx_close(&f);

    /* a malformed url is refused at open */
    struct cm_conf_storage conf = {
        .name = "bad", .url = "mongodb://", .type = CM_ST_TYPE_MONGO, .pool_size = 1};
    struct event_base *base = event_base_new();
    char err[256];
    ck_assert_ptr_null(cm_storage_new(&conf, base, err, sizeof(err)));
    ck_assert_msg(strstr(err, "bad mongodb url") != NULL, "%s", err);
    event_base_free(base);
}
END_TEST

/* A TCP forwarder to the test server (/usr/bin/python3, stdlib): lets a test take "the server"
 * away and bring it back on a port of its own. Returns the forwarder's pid. */
static pid_t start_forwarder(int port)
{
    const char *u = mongo_url();
    const char *hp = strstr(u, "://");
    ck_assert_ptr_nonnull(hp);
    hp += 3;
    char target[128];
    snprintf(target, sizeof(target), "%.*s", (int)strcspn(hp, "/?,"), hp);
    char *colon = strrchr(target, ':');
    ck_assert_ptr_nonnull(colon);
    *colon = '\0';
    static const char prog[] = "import asyncio, sys\n"
                               "H, T, P = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
                               "async def pipe(r, w):\n"
                               "    try:\n"
                               "        while True:\n"
                               "            d = await r.read(65536)\n"
                               "            if not d: break\n"
                               "            w.write(d); await w.drain()\n"
                               "    except Exception: pass\n"
                               "    finally: w.close()\n"
                               "async def handle(r, w):\n"
                               "    try: r2, w2 = await asyncio.open_connection(H, T)\n"
                               "    except Exception: w.close(); return\n"
                               "    await asyncio.gather(pipe(r, w2), pipe(r2, w))\n"
                               "async def main():\n"
                               "    s = await asyncio.start_server(handle, '127.0.0.1', P)\n"
                               "    await s.serve_forever()\n"
                               "asyncio.run(main())\n";
    char tport[16], lport[16];
    snprintf(tport, sizeof(tport), "%s", colon + 1);
    snprintf(lport, sizeof(lport), "%d", port);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl("/usr/bin/python3", "python3", "-c", prog, target, tport, lport, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) { /* wait until it accepts */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
        close(fd);
        if (rc == 0) {
            return pid;
        }
        usleep(20 * 1000);
    }
    ck_abort_msg("forwarder did not start on port %d", port);
    return -1;
}

static void stop_forwarder(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* The server goes away and comes back: ops fail quickly meanwhile, then succeed again within
 * the backoff cap (5 s) without reopening the storage. */
START_TEST(test_server_comes_back)
{
    int port = closed_port();
    char url[160];
    snprintf(url, sizeof(url), "mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=500", port);
    pid_t fwd = start_forwarder(port);
    struct fx f;
    fx_open_url(&f, url, false, 2, 5000);
    const char *k[] = {"back"};
    ck_assert_int_eq(h_set(f.st, 1, k, k, -1), CM_OK);
    stop_forwarder(fwd);
    struct h_result r;
    double t0 = h_now_ms();
    int failures = 0;
    for (int i = 0; i < 5; i++) {
        h_get(f.st, 1, k, &r);
        failures += r.status == CM_ERR;
        h_result_deinit(&r);
    }
    ck_assert_int_eq(failures, 5);
    ck_assert_msg(h_now_ms() - t0 < 3000, "5 failed GETs took %.0f ms", h_now_ms() - t0);
    fwd = start_forwarder(port);
    t0 = h_now_ms();
    bool back = false;
    while (!back && h_now_ms() - t0 < 9000) {
        h_get(f.st, 1, k, &r);
        back = r.status == CM_OK && r.hit[0];
        h_result_deinit(&r);
        if (!back) {
            usleep(100 * 1000);
        }
    }
    double took = h_now_ms() - t0;
    stop_forwarder(fwd);
    printf("mongo back: first hit %.0f ms after the server returned\n", took);
    ck_assert_msg(back, "still failing %.0f ms after the server came back", took);
    ck_assert_msg(took < 7000, "recovered only after %.0f ms", took);
    /* the test's data lives in the real test server: drop it there */
    f.conf.url = (char *)mongo_url();
    fx_close(&f);
}
END_TEST

static Suite *mongo_suite(void)
{
    Suite *s = suite_create("st_mongo");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_upsert_one_document);
    tcase_add_test(tc, test_expired_doc_is_miss);
    tcase_add_test(tc, test_cacheme_format_interop);
    tcase_add_test(tc, test_create_indexes);
    tcase_add_test(tc, test_server_down);
    tcase_add_test(tc, test_server_comes_back);
    suite_add_tcase(s, tc);
    static const struct ct_fixture fx = { .name = "mongodb", .open = ct_open_mg,
                                          .close = ct_close_mg,
                                          .key_rules = CM_KEY_NO_NUL | CM_KEY_UTF8 };
    suite_add_tcase(s, ct_tcase(&fx));
    return s;
}

int main(void)
{
    mongoc_init();
    SRunner *sr = srunner_create(mongo_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    mongoc_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
