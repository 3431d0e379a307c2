/* The storage contract, written once for every remote SQL/document backend (PostgreSQL, MySQL,
 * SQLite, MongoDB): each check_st_<backend>.c fills a struct ct_fixture and adds ct_tcase() to
 * its suite, next to its backend-only tests. Header-only (static functions) because the
 * Makefile links each check_*.c alone against the library. */
#ifndef CM_TESTS_UNIT_ST_CONTRACT_H
#define CM_TESTS_UNIT_ST_CONTRACT_H

#include "daemon/util.h"
#include "storages/st_keys.h"
#include "tests/unit/st_harness.h"

/* One backend, as the contract tests see it. */
struct ct_fixture {
    const char *name;
    /* Opens the storage, on a loop of its own (st->base), with an empty table/collection of its
     * own (pool connections, per-op timeout). */
    struct cm_storage *(*open)(int pool, int64_t timeout_ms);
    /* Frees st (NULL when a test already did), its loop, and what open made. */
    void (*close)(struct cm_storage *st);
    /* What the backend's key column refuses (enum cm_st_key_rule): such keys are misses. */
    unsigned key_rules;
};

/* The fixture of this binary (set by main before the suite runs; tests run in forks). */
static const struct ct_fixture *ct_fx;

struct ct_env {
    struct cm_storage *st;
};

static inline void ct_open(struct ct_env *e, int pool, int64_t timeout_ms)
{
    e->st = ct_fx->open(pool, timeout_ms);
    ck_assert_ptr_nonnull(e->st);
}

static inline void ct_close(struct ct_env *e)
{
    ct_fx->close(e->st);
}

/* An op over keys with explicit lengths (keys may hold NUL bytes). */
static inline struct cm_st_op *ct_op(enum cm_st_op_kind kind, size_t n, const char *const *keys,
                                     const size_t *klens, const char *const *vals, int64_t ttl)
{
    struct cm_st_op *op = cm_st_op_new(kind, n);
    op->ttl_ms = ttl;
    for (size_t i = 0; i < n; i++) {
        cm_st_op_set_key(op, i, keys[i], klens[i]);
        if (vals != NULL) {
            op->items[i].wval = vals[i];
            op->items[i].wlen = strlen(vals[i]);
        }
    }
    return op;
}

START_TEST(ct_set_get_mget_del)
{
    struct ct_env e;
    ct_open(&e, 3, 5000);
    const char *k1[] = {"cacheme:user:1:info:v1"};
    const char *v1[] = {"{\"name\":\"ann\"}"};
    ck_assert_int_eq(h_set(e.st, 1, k1, v1, -1), CM_OK);
    struct h_result r;
    h_get(e.st, 1, k1, &r);
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_assert_val(&r, 0, v1[0]);
    h_result_deinit(&r);

    /* overwrite (an upsert on key), then a batch SET with ttl */
    const char *v1b[] = {"second"};
    ck_assert_int_eq(h_set(e.st, 1, k1, v1b, -1), CM_OK);
    const char *k23[] = {"k2", "k3"};
    const char *v23[] = {"two", "three"};
    ck_assert_int_eq(h_set(e.st, 2, k23, v23, 60000), CM_OK);

    /* MGET: hits, a miss, a key differing only in case, a duplicate key answered in place */
    const char *mk[] = {"cacheme:user:1:info:v1", "k2", "nope", "k3", "k2", "K2"};
    h_get(e.st, 6, mk, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_assert_val(&r, 0, "second");
    h_assert_val(&r, 1, "two");
    h_assert_val(&r, 2, NULL);
    h_assert_val(&r, 3, "three");
    h_assert_val(&r, 4, "two");
    h_assert_val(&r, 5, NULL);
    h_result_deinit(&r);

    const char *dk[] = {"cacheme:user:1:info:v1", "k2", "never-there"};
    ck_assert_int_eq(h_del(e.st, 3, dk), CM_OK);
    h_get(e.st, 5, mk, &r);
    h_assert_val(&r, 0, NULL);
    h_assert_val(&r, 1, NULL);
    h_assert_val(&r, 3, "three");
    h_result_deinit(&r);
    ck_assert_uint_eq(e.st->stats.errors, 0);
    ct_close(&e);
}
END_TEST

/* Keys every backend must store exactly: SQL metacharacters, escapes, LIKE and Mongo operators,
 * unicode. */
static const char *const ct_odd_keys[] = {
    "cacheme:it's:v1",
    "cacheme:back\\slash\\:v1",
    "cacheme:100%_%s:v1",
    "cacheme:a;DROP TABLE x;--:v1",
    "cacheme:\"dq\" `bt` {a,b}:v1",
    "cacheme:\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87 \xf0\x9f\x94\x91:v1",
    "cacheme:'); DELETE FROM cacheme_data; --:v1",
    "$where",
    "a.b",
    "{\"$gt\":\"\"}",
    "_",
};
#define CT_NODD CM_ARRAY_LEN(ct_odd_keys)

/* Writes every odd key with a 7-byte binary value (NULs, quotes, 0xff) in one op, reads them
 * back in one op and checks the bytes. Returns how many keys (CT_NODD). */
static inline size_t ct_odd_roundtrip(struct cm_storage *st)
{
    char vbuf[CT_NODD][8];
    struct cm_st_op *op = cm_st_op_new(CM_ST_SET, CT_NODD);
    op->ttl_ms = -1;
    for (size_t i = 0; i < CT_NODD; i++) {
        memcpy(vbuf[i], "\0\x01'\\\0\xff", 6);
        vbuf[i][6] = (char)('a' + i);
        cm_st_op_set_key(op, i, ct_odd_keys[i], strlen(ct_odd_keys[i]));
        op->items[i].wval = vbuf[i];
        op->items[i].wlen = 7;
    }
    struct h_result r;
    h_run(st, op, &r);
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_result_deinit(&r);
    h_get(st, CT_NODD, ct_odd_keys, &r);
    ck_assert_int_eq(r.status, CM_OK);
    for (size_t i = 0; i < CT_NODD; i++) {
        ck_assert_msg(r.hit[i], "miss for %s", ct_odd_keys[i]);
        ck_assert_uint_eq(r.vlen[i], 7);
        ck_assert_mem_eq(r.val[i], vbuf[i], 7);
    }
    h_result_deinit(&r);
    return CT_NODD;
}

/* Keys are data, never SQL, patterns or operators; values are bytes (NUL, 0xff, empty). */
START_TEST(ct_hostile_keys_binary_values)
{
    struct ct_env e;
    ct_open(&e, 2, 5000);
    ct_odd_roundtrip(e.st);
    /* wildcards are not wildcards */
    const char *wild[] = {"%", "cacheme:100%", "cacheme:it_s:v1"};
    struct h_result r;
    h_get(e.st, 3, wild, &r);
    for (size_t i = 0; i < 3; i++) {
        h_assert_val(&r, i, NULL);
    }
    h_result_deinit(&r);
    /* an empty value is a value, not NULL */
    struct cm_st_op *op = h_op(CM_ST_SET, 1, &ct_odd_keys[CT_NODD - 1], NULL, -1);
    op->items[0].wval = "";
    h_run(e.st, op, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_result_deinit(&r);
    const char *dk[] = {ct_odd_keys[0], ct_odd_keys[6]};
    ck_assert_int_eq(h_del(e.st, 2, dk), CM_OK);
    h_get(e.st, CT_NODD, ct_odd_keys, &r);
    for (size_t i = 0; i < CT_NODD; i++) {
        ck_assert_msg(r.hit[i] == (i != 0 && i != 6), "key %s", ct_odd_keys[i]);
    }
    ck_assert_uint_eq(r.vlen[CT_NODD - 1], 0);
    h_result_deinit(&r);
    ct_close(&e);
}
END_TEST

/* MGET and DEL of more keys than one statement or batch takes. */
START_TEST(ct_many_keys)
{
    struct ct_env e;
    ct_open(&e, 2, 5000);
    enum { N = 60 };
    char kbuf[N][16], vbuf[N][16];
    const char *keys[N], *vals[N];
    for (int i = 0; i < N; i++) {
        snprintf(kbuf[i], sizeof(kbuf[i]), "key-%d", i);
        snprintf(vbuf[i], sizeof(vbuf[i]), "val-%d", i);
        keys[i] = kbuf[i];
        vals[i] = vbuf[i];
    }
    ck_assert_int_eq(h_set(e.st, N / 2, keys, vals, -1), CM_OK);
    struct h_result r;
    h_get(e.st, N, keys, &r);
    for (int i = 0; i < N; i++) {
        h_assert_val(&r, (size_t)i, i < N / 2 ? vals[i] : NULL);
    }
    h_result_deinit(&r);
    ck_assert_int_eq(h_set(e.st, N, keys, vals, -1), CM_OK);
    ck_assert_int_eq(h_del(e.st, N - 1, keys), CM_OK);
    h_get(e.st, N, keys, &r);
    for (int i = 0; i < N; i++) {
        h_assert_val(&r, (size_t)i, i == N - 1 ? vals[i] : NULL);
    }
    h_result_deinit(&r);
    ct_close(&e);
}
END_TEST

/* Our own short ttl expires at read time. */
START_TEST(ct_short_ttl_expires)
{
    struct ct_env e;
    ct_open(&e, 2, 5000);
    const char *ks[] = {"short"};
    ck_assert_int_eq(h_set(e.st, 1, ks, ks, 300), CM_OK);
    struct h_result r;
    h_get(e.st, 1, ks, &r);
    h_assert_val(&r, 0, "short");
    h_result_deinit(&r);
    usleep(450 * 1000);
    h_get(e.st, 1, ks, &r);
    h_assert_val(&r, 0, NULL);
    h_result_deinit(&r);
    ct_close(&e);
}
END_TEST

/* Defect 15: a key the backend cannot hold (NUL, invalid UTF-8, longer than the VARCHAR(512)
 * column) is a miss for that key alone; the others of its batch still read, write and delete,
 * and the op does not fail. */
START_TEST(ct_unstorable_keys)
{
    struct ct_env e;
    ct_open(&e, 2, 5000);
    char long_key[CM_KEY_MAX_CHARS_N + 2];
    memset(long_key, 'L', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    char max_key[CM_KEY_MAX_CHARS_N * 2 + 1]; /* 512 two-byte characters: fits */
    for (size_t i = 0; i < CM_KEY_MAX_CHARS_N; i++) {
        memcpy(max_key + 2 * i, "\xc3\xa9", 2);
    }
    max_key[sizeof(max_key) - 1] = '\0';
    const char *keys[] = {"p:good", "p:a\0N", "p:\xff\xfe", "p:\xed\xa0\x80",
                          long_key, max_key,  "p:good2"};
    const size_t klens[] = {6, 5, 4, 5, strlen(long_key), strlen(max_key), 7};
    const bool bad[] = {false, true, true, true, true, false, false};
    const unsigned why[] = {0, CM_KEY_NO_NUL, CM_KEY_UTF8, CM_KEY_UTF8, CM_KEY_MAX_CHARS, 0, 0};
    enum { N = CM_ARRAY_LEN(keys) };
    const char *vals[] = {"g", "nul", "ff", "sur", "long", "max", "g2"};
    struct h_result r;
    h_run(e.st, ct_op(CM_ST_SET, N, keys, klens, vals, 60000), &r);
    ck_assert_msg(r.status == CM_OK, "a write with unstorable keys failed: %s", r.err);
    h_result_deinit(&r);
    for (int round = 0; round < 2; round++) {
        h_run(e.st, ct_op(CM_ST_GET, N, keys, klens, NULL, -1), &r);
        ck_assert_msg(r.status == CM_OK, "a read with unstorable keys failed: %s", r.err);
        for (size_t i = 0; i < N; i++) {
            bool refused = bad[i] && (ct_fx->key_rules & why[i]) != 0;
            ck_assert_msg(r.hit[i] == !refused, "%s: key %zu %s", ct_fx->name, i,
                          refused ? "refused but hit" : "missed");
            if (r.hit[i]) {
                ck_assert_str_eq(r.val[i], vals[i]);
            }
        }
        h_result_deinit(&r);
        /* each key alone too */
        for (size_t i = 0; i < N && round == 1; i++) {
            h_run(e.st, ct_op(CM_ST_GET, 1, &keys[i], &klens[i], NULL, -1), &r);
            ck_assert_msg(r.status == CM_OK, "%zu: %s", i, r.err);
            h_result_deinit(&r);
        }
    }
    h_run(e.st, ct_op(CM_ST_DEL, N - 1, keys, klens, NULL, -1), &r);
    ck_assert_msg(r.status == CM_OK, "a delete with unstorable keys failed: %s", r.err);
    h_result_deinit(&r);
    h_run(e.st, ct_op(CM_ST_GET, N, keys, klens, NULL, -1), &r);
    for (size_t i = 0; i < N; i++) {
        ck_assert_msg(r.hit[i] == (i == N - 1), "key %zu after delete", i);
    }
    h_result_deinit(&r);
    ck_assert_uint_eq(e.st->stats.errors, 0);
    ct_close(&e);
}
END_TEST

/* Defect 14: a ttl as long as the command layer allows (up to INT64_MAX - now) neither
 * overflows (UBSan) nor fails the write: past what the backend's time type holds it is stored
 * as "never expires" (storages/st_keys.h), and reads hit. */
START_TEST(ct_huge_ttl)
{
    struct ct_env e;
    ct_open(&e, 2, 5000);
    int64_t now_ms = cm_wall_us() / 1000;
    const int64_t ttls[] = {INT64_MAX / 2, INT64_MAX - now_ms, CM_ST_EXPIRE_MAX_MS - now_ms,
                            (int64_t)5000 * 365 * 86400 * 1000};
    for (size_t i = 0; i < CM_ARRAY_LEN(ttls); i++) {
        char k[32];
        snprintf(k, sizeof(k), "huge:%zu", i);
        const char *kp[] = {k};
        int st = h_set(e.st, 1, kp, kp, ttls[i]);
        ck_assert_msg(st == CM_OK, "%s: ttl %lld: write status %d", ct_fx->name, (long long)ttls[i],
                      st);
        struct h_result r;
        h_get(e.st, 1, kp, &r);
        h_assert_val(&r, 0, k);
        h_result_deinit(&r);
    }
    ck_assert_uint_eq(e.st->stats.errors, 0);
    ct_close(&e);
}
END_TEST

/* SPEC §12 "Age": a hit carries the write time of its value (updated_at), set on every write,
 * upserts included. */
START_TEST(ct_written_ms)
{
    struct ct_env e;
    ct_open(&e, 2, 5000);
    const char *k[] = {"age:a", "age:b"};
    int64_t t1 = cm_wall_us() / 1000;
    ck_assert_int_eq(h_set(e.st, 2, k, k, 60000), CM_OK);
    struct h_result r;
    h_get(e.st, 2, k, &r);
    for (size_t i = 0; i < 2; i++) {
        h_assert_val(&r, i, k[i]);
        int64_t w = r.written_ms[i];
        ck_assert_msg(w > t1 - 1000 && w < t1 + 1000, "%s: written_ms %lld, wrote at %lld",
                      ct_fx->name, (long long)w, (long long)t1);
    }
    h_result_deinit(&r);
    usleep(600 * 1000);
    int64_t t2 = cm_wall_us() / 1000;
    ck_assert_int_eq(h_set(e.st, 1, k, k, -1), CM_OK); /* the upsert moves it */
    h_get(e.st, 2, k, &r);
    ck_assert_msg(r.written_ms[0] >= t2 - 300 && r.written_ms[0] < t2 + 1000,
                  "%s: after the upsert at %lld: written_ms %lld", ct_fx->name, (long long)t2,
                  (long long)r.written_ms[0]);
    ck_assert_msg(r.written_ms[1] < t2 - 300, "%s: b was not rewritten", ct_fx->name);
    h_result_deinit(&r);
    ct_close(&e);
}
END_TEST

/* Many single-key ops submitted at once over 4 connections: each completes exactly once, all
 * succeed, and the loop is never blocked meanwhile (a 10 ms ticker keeps ticking). */
START_TEST(ct_concurrent_submits)
{
    struct ct_env e;
    ct_open(&e, 4, 10000);
    enum { N = 400 };
    static struct h_result res[N];
    static char kbuf[N][16];
    static const char *keys[N];
    int pending = N;
    struct h_ticker t;
    h_ticker_start(&t, e.st->base);
    for (int i = 0; i < N; i++) {
        snprintf(kbuf[i], sizeof(kbuf[i]), "c%d", i % 100);
        keys[i] = kbuf[i];
        memset(&res[i], 0, sizeof(res[i]));
        res[i].pending = &pending;
        res[i].base = e.st->base;
        struct cm_st_op *op = i < 200 ? h_op(CM_ST_SET, 1, &keys[i], &keys[i], 60000)
                                      : h_op(CM_ST_GET, 1, &keys[i], NULL, -1);
        cm_storage_submit(e.st, op, h_done, &res[i]);
    }
    double t0 = h_now_ms();
    h_wait(e.st->base, &pending, 30);
    double took = h_now_ms() - t0;
    h_ticker_stop(&t);
    printf("%s: %d single-key ops (200 SET, 200 GET) on 4 connections in %.0f ms; loop max gap "
           "%.1f ms\n",
           ct_fx->name, N, took, t.max_gap_ms);
    ck_assert_msg(t.max_gap_ms < 150, "the loop was blocked for %.0f ms", t.max_gap_ms);
    ck_assert_int_eq(pending, 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(res[i].calls, 1);
        ck_assert_msg(res[i].status == CM_OK, "op %d: %s", i, res[i].err);
        h_result_deinit(&res[i]);
    }
    /* every key was written (by two SETs each) */
    struct h_result r;
    h_get(e.st, 50, keys, &r);
    for (int i = 0; i < 50; i++) {
        h_assert_val(&r, (size_t)i, keys[i]);
    }
    h_result_deinit(&r);
    ck_assert_uint_eq(e.st->stats.errors, 0);
    ct_close(&e);
}
END_TEST

/* Closing with ops queued: every done() runs exactly once, inside close. */
START_TEST(ct_close_with_pending_ops)
{
    struct ct_env e;
    ct_open(&e, 2, 10000);
    h_close_with_pending(e.st, 50);
    e.st = NULL;
    ct_close(&e);
}
END_TEST

/* The contract tests for fx, as one TCase. */
static inline TCase *ct_tcase(const struct ct_fixture *fx)
{
    ct_fx = fx;
    TCase *tc = tcase_create("contract");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ct_set_get_mget_del);
    tcase_add_test(tc, ct_hostile_keys_binary_values);
    tcase_add_test(tc, ct_many_keys);
    tcase_add_test(tc, ct_short_ttl_expires);
    tcase_add_test(tc, ct_unstorable_keys);
    tcase_add_test(tc, ct_huge_ttl);
    tcase_add_test(tc, ct_written_ms);
    tcase_add_test(tc, ct_concurrent_submits);
    tcase_add_test(tc, ct_close_with_pending_ops);
    return tc;
}

#endif
