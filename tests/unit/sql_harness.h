/* Test harness shared by check_st_pg.c and check_st_mysql.c: opens a real storage on its own
 * event loop, runs one op to completion, restarts a backend server. Header-only (static inline)
 * because the Makefile links each check_*.c alone against the library. */
#ifndef CM_TESTS_SQL_HARNESS_H
#define CM_TESTS_SQL_HARNESS_H

#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <check.h>
#include <stdio.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define H_MAX 64

/* One storage on its own loop. */
struct h_st {
    struct event_base *base;
    struct cm_conf_storage conf;
    struct cm_storage *st;
};

/* What one op came back with (copied out before the framework frees the op). */
struct h_res {
    bool done;
    int status;
    size_t n;
    int result[H_MAX];
    char *val[H_MAX];
    size_t vlen[H_MAX];
    int64_t ms;         /* submit to done */
};

static inline const char *h_env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v != NULL && v[0] != '\0',
                  "%s is not set: start the test servers (scripts/backends.sh) and export it", name);
    return v;
}

static inline void h_open(struct h_st *h, enum cm_st_type type, const char *url, const char *table,
                          int pool, int64_t timeout_ms)
{
    char err[256] = "";
    memset(h, 0, sizeof(*h));
    h->base = event_base_new();
    h->conf.name = (char *)"sqltest";
    h->conf.url = (char *)url;
    h->conf.type = type;
    h->conf.pool_size = pool;
    h->conf.timeout_ms = timeout_ms;
    h->conf.table = (char *)table;
    h->conf.create_table = true;
    h->st = cm_storage_new(&h->conf, h->base, err, sizeof(err));
    ck_assert_msg(h->st != NULL, "open failed: %s", err);
}

static inline void h_close(struct h_st *h)
{
    cm_storage_free(h->st);
    event_base_free(h->base);
}

static inline void h_sql_done(struct cm_st_op *op, void *arg)
{
    struct h_res *r = arg;
    r->done = true;
    r->status = op->status;
    r->n = op->nitems;
    r->ms = (cm_now_ns() - op->start_ns) / 1000000;
    for (size_t i = 0; i < op->nitems && i < H_MAX; i++) {
        r->result[i] = op->items[i].result;
        r->val[i] = op->items[i].val;   /* stolen */
        r->vlen[i] = op->items[i].vlen;
        op->items[i].val = NULL;
    }
}

static inline void h_res_free(struct h_res *r)
{
    for (size_t i = 0; i < H_MAX; i++) {
        cm_free(r->val[i]);
        r->val[i] = NULL;
    }
}

/* Runs one op over n keys (vals for SET, NULL otherwise) and waits for its done(). */
static inline void h_sql_run(struct h_st *h, enum cm_st_op_kind kind, size_t n, const char *const *keys,
                         const char *const *vals, const size_t *vlens, int64_t ttl_ms,
                         struct h_res *r)
{
    memset(r, 0, sizeof(*r));
    struct cm_st_op *op = cm_st_op_new(kind, n);
    for (size_t i = 0; i < n; i++) {
        cm_st_op_set_key(op, i, keys[i], strlen(keys[i]));
        if (vals != NULL) {
            op->items[i].wval = vals[i];
            op->items[i].wlen = vlens != NULL ? vlens[i] : strlen(vals[i]);
        }
    }
    op->ttl_ms = ttl_ms;
    cm_storage_submit(h->st, op, h_sql_done, r);
    ck_assert_msg(!r->done, "done() ran inside submit");
    while (!r->done) {
        event_base_loop(h->base, EVLOOP_ONCE);
    }
}

static inline int h_set1(struct h_st *h, const char *key, const char *val, size_t vlen,
                         int64_t ttl_ms)
{
    struct h_res r;
    h_sql_run(h, CM_ST_SET, 1, &key, &val, &vlen, ttl_ms, &r);
    return r.status;
}

/* Returns CM_ST_HIT / CM_ST_MISS, or -1 when the op failed; a hit's bytes must equal want. */
static inline int h_get1(struct h_st *h, const char *key, const char *want, size_t wlen)
{
    struct h_res r;
    h_sql_run(h, CM_ST_GET, 1, &key, NULL, NULL, 0, &r);
    int out = r.status != CM_OK ? -1 : r.result[0];
    if (out == CM_ST_HIT && want != NULL) {
        ck_assert_uint_eq(r.vlen[0], wlen);
        ck_assert_mem_eq(r.val[0], want, wlen);
    }
    h_res_free(&r);
    return out;
}

/* Lets the loop run for ms milliseconds (reconnect timers, socket events). */
static inline void h_spin(struct h_st *h, int ms)
{
    int64_t end = cm_now_ms() + ms;
    struct timeval tv = { 0, 10000 };
    while (cm_now_ms() < end) {
        event_base_loopexit(h->base, &tv);
        event_base_dispatch(h->base);
    }
}

/* Restarts a backend server: $env_cmd when set, else scripts/backends.sh restart NAME. */
static inline void h_restart(const char *env_cmd, const char *name)
{
    char cmd[512];
    const char *c = getenv(env_cmd);
    if (c != NULL && c[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "%s", c);
    } else {
        ck_assert_msg(access("scripts/backends.sh", X_OK) == 0,
                      "no way to restart %s: set %s or provide scripts/backends.sh", name, env_cmd);
        snprintf(cmd, sizeof(cmd), "scripts/backends.sh restart %s >/dev/null", name);
    }
    ck_assert_msg(system(cmd) == 0, "restart command failed: %s", cmd);
}

/* After a server restart: retries GET key every 100 ms until it hits; returns ms taken or -1. */
static inline int64_t h_wait_hit(struct h_st *h, const char *key, const char *want, size_t wlen,
                                 int max_ms)
{
    int64_t t0 = cm_now_ms();
    while (cm_now_ms() - t0 < max_ms) {
        if (h_get1(h, key, want, wlen) == CM_ST_HIT) {
            return cm_now_ms() - t0;
        }
        h_spin(h, 100);
    }
    return -1;
}

/* A storage whose server is down (port 1: refused) answers every read with CM_ERR at once. */
static inline void h_check_down(enum cm_st_type type, const char *url, const char *table)
{
    struct h_st down;
    h_open(&down, type, url, table, 2, 2000);
    for (int i = 0; i < 3; i++) {
        struct h_res r;
        const char *k = "cacheme:down:v1";
        h_sql_run(&down, CM_ST_GET, 1, &k, NULL, NULL, 0, &r);
        ck_assert_int_eq(r.status, CM_ERR);
        ck_assert_int_eq(r.result[0], CM_ST_MISS);
        ck_assert_msg(r.ms < 500, "a down server took %lld ms to answer", (long long)r.ms);
    }
    ck_assert_uint_eq(down.st->stats.errors, 3);
    ck_assert_uint_eq(down.st->stats.timeouts, 0);
    h_close(&down);
}

/* Host names are resolved off the loop (storages/resolve.h): with by_name, url's 127.0.0.1 as
 * "localhost" reaches the same server; a name that does not resolve is a down server. */
static inline void h_check_host_names(enum cm_st_type type, const char *url, const char *table,
                                      bool by_name)
{
    const char *ip = strstr(url, "127.0.0.1");
    ck_assert_ptr_nonnull(ip);
    char named[512];
    if (by_name) {
        struct h_st h;
        snprintf(named, sizeof(named), "%.*slocalhost%s", (int)(ip - url), url, ip + 9);
        h_open(&h, type, named, table, 2, 3000);
        ck_assert_int_eq(h_set1(&h, "cacheme:byname:v1", "named", 5, -1), CM_OK);
        ck_assert_int_eq(h_get1(&h, "cacheme:byname:v1", "named", 5), CM_ST_HIT);
        h_close(&h);
    }
    snprintf(named, sizeof(named), "%.*sno-such-host.invalid%s", (int)(ip - url), url, ip + 9);
    h_check_down(type, named, table);   /* the lookup fails in a DNS round trip */
}

/* Restarts the server under h and checks reads hit again within 6.5 s, then writes work. */
static inline void h_check_restart(struct h_st *h, const char *env_cmd, const char *name)
{
    ck_assert_int_eq(h_set1(h, "cacheme:rs:v1", "before", 6, -1), CM_OK);
    h_restart(env_cmd, name);
    int64_t ms = h_wait_hit(h, "cacheme:rs:v1", "before", 6, 8000);
    ck_assert_msg(ms >= 0 && ms <= 6500, "no hit within 6.5 s of the restart (%lld ms)",
                  (long long)ms);
    fprintf(stderr, "%s: reads hit again %lld ms after the restart returned\n", name,
            (long long)ms);
    ck_assert_int_eq(h_set1(h, "cacheme:rs:v1", "after", 5, -1), CM_OK);
    ck_assert_int_eq(h_get1(h, "cacheme:rs:v1", "after", 5), CM_ST_HIT);
}

/* A row expired behind the storage's back is a miss (a short ttl of our own: the contract
 * suite, tests/unit/st_contract.h). expire_old runs the backend's own UPDATE that moves cacheme:old:v1's expire into the past. */
static inline void h_check_expiry(struct h_st *h, void (*expire_old)(void))
{
    ck_assert_int_eq(h_set1(h, "cacheme:old:v1", "stale", 5, -1), CM_OK);
    ck_assert_int_eq(h_get1(h, "cacheme:old:v1", "stale", 5), CM_ST_HIT);
    expire_old();
    ck_assert_int_eq(h_get1(h, "cacheme:old:v1", NULL, 0), CM_ST_MISS);
}

#endif
