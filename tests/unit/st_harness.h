/* Test helpers for remote storages: build ops, run them on a real event loop, keep what done()
 * saw. Header-only (static functions) so each check_st_*.c binary stays self-contained. */
#ifndef CM_TESTS_UNIT_ST_HARNESS_H
#define CM_TESTS_UNIT_ST_HARNESS_H

#include "daemon/alloc.h"
#include "storages/storage.h"

#include <check.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define H_MAX_ITEMS 64

/* What one op's done() saw; the op itself is freed by the framework right after. */
struct h_result {
    int calls; /* done() calls: must end at exactly 1 */
    int status;
    char err[160];
    size_t n;
    bool hit[H_MAX_ITEMS];
    char *val[H_MAX_ITEMS]; /* stolen from the op, NUL-terminated copy */
    size_t vlen[H_MAX_ITEMS];
    int64_t written_ms[H_MAX_ITEMS]; /* a hit's write time (0 = unknown) */
    int *pending; /* decremented on done; loop breaks at 0 */
    struct event_base *base;
};

static inline double h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline void h_done(struct cm_st_op *op, void *arg)
{
    struct h_result *r = arg;
    r->calls++;
    r->status = op->status;
    memcpy(r->err, op->err, sizeof(r->err));
    r->n = op->nitems;
    for (size_t i = 0; i < op->nitems && i < H_MAX_ITEMS; i++) {
        r->hit[i] = op->items[i].result == CM_ST_HIT;
        if (r->hit[i]) {
            r->val[i] = cm_malloc(op->items[i].vlen + 1);
            memcpy(r->val[i], op->items[i].val, op->items[i].vlen);
            r->val[i][op->items[i].vlen] = '\0';
            r->vlen[i] = op->items[i].vlen;
            r->written_ms[i] = op->items[i].written_ms;
        }
    }
    if (r->pending != NULL && --*r->pending == 0) {
        event_base_loopbreak(r->base);
    }
}

static inline void h_result_deinit(struct h_result *r)
{
    for (size_t i = 0; i < H_MAX_ITEMS; i++) {
        cm_free(r->val[i]);
        r->val[i] = NULL;
    }
}

static inline struct cm_st_op *h_op(enum cm_st_op_kind kind, size_t n, const char *const *keys,
                                    const char *const *vals, int64_t ttl_ms)
{
    struct cm_st_op *op = cm_st_op_new(kind, n);
    op->ttl_ms = ttl_ms;
    for (size_t i = 0; i < n; i++) {
        cm_st_op_set_key(op, i, keys[i], strlen(keys[i]));
        if (vals != NULL) {
            op->items[i].wval = vals[i];
            op->items[i].wlen = strlen(vals[i]);
        }
    }
    return op;
}

static void h_on_safety(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Runs the loop until *pending reaches 0 or secs pass. */
static inline void h_wait(struct event_base *base, int *pending, int secs)
{
    if (*pending == 0) {
        return;
    }
    struct event *safety = evtimer_new(base, h_on_safety, base);
    struct timeval tv = {secs, 0};
    evtimer_add(safety, &tv);
    event_base_dispatch(base);
    event_free(safety);
}

/* Submits op and runs the loop until its done() ran; returns into *r (caller deinits). */
static inline void h_run(struct cm_storage *st, struct cm_st_op *op, struct h_result *r)
{
    int pending = 1;
    memset(r, 0, sizeof(*r));
    r->pending = &pending;
    r->base = st->base;
    cm_storage_submit(st, op, h_done, r);
    h_wait(st->base, &pending, 20);
    ck_assert_int_eq(r->calls, 1);
    r->pending = NULL;
}

/* One-call helpers: status of a SET/DEL, or a GET's result. */
static inline int h_set(struct cm_storage *st, size_t n, const char *const *keys,
                        const char *const *vals, int64_t ttl_ms)
{
    struct h_result r;
    h_run(st, h_op(CM_ST_SET, n, keys, vals, ttl_ms), &r);
    h_result_deinit(&r);
    return r.status;
}

static inline int h_del(struct cm_storage *st, size_t n, const char *const *keys)
{
    struct h_result r;
    h_run(st, h_op(CM_ST_DEL, n, keys, NULL, -1), &r);
    h_result_deinit(&r);
    return r.status;
}

static inline void h_get(struct cm_storage *st, size_t n, const char *const *keys,
                         struct h_result *r)
{
    h_run(st, h_op(CM_ST_GET, n, keys, NULL, -1), r);
}

/* Asserts a GET result: item i is a hit with value v, or a miss when v is NULL. */
static inline void h_assert_val(const struct h_result *r, size_t i, const char *v)
{
    if (v == NULL) {
        ck_assert_msg(!r->hit[i], "item %zu: expected a miss, got '%s'", i,
                      r->val[i] ? r->val[i] : "");
    } else {
        ck_assert_msg(r->hit[i], "item %zu: expected '%s', got a miss (status %d %s)", i, v,
                      r->status, r->err);
        ck_assert_str_eq(r->val[i], v);
    }
}

/* A 10 ms persistent timer that counts its ticks and the longest gap between two ticks, to
 * prove the loop was never blocked while an op ran. */
struct h_ticker {
    struct event *ev;
    int ticks;
    double last_ms;
    double max_gap_ms;
};

static void h_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct h_ticker *t = arg;
    (void)fd;
    (void)what;
    double now = h_now_ms();
    if (t->ticks > 0 && now - t->last_ms > t->max_gap_ms) {
        t->max_gap_ms = now - t->last_ms;
    }
    t->last_ms = now;
    t->ticks++;
}

static inline void h_ticker_start(struct h_ticker *t, struct event_base *base)
{
    memset(t, 0, sizeof(*t));
    t->ev = event_new(base, -1, EV_PERSIST, h_on_tick, t);
    struct timeval tv = {0, 10 * 1000};
    event_add(t->ev, &tv);
}

static inline void h_ticker_stop(struct h_ticker *t)
{
    event_free(t->ev);
    t->ev = NULL;
}

/* Submits n SETs of one key and frees the storage at once: every done() must have run exactly
 * once by the time cm_storage_free returns. */
static inline void h_close_with_pending(struct cm_storage *st, int n)
{
    struct h_result *res = cm_calloc((size_t)n, sizeof(*res));
    const char *k[] = {"p"};
    for (int i = 0; i < n; i++) {
        cm_storage_submit(st, h_op(CM_ST_SET, 1, k, k, -1), h_done, &res[i]);
    }
    cm_storage_free(st);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(res[i].calls, 1);
        h_result_deinit(&res[i]);
    }
    cm_free(res);
}

/* Path of a file of the source tree: from $CM_SRC_DIR, the cwd, or the directories above the
 * test binary (build/tests/check_x, build/asan/tests/check_x). */
static inline const char *h_src_path(const char *rel, char *out, size_t outsz)
{
    const char *env = getenv("CM_SRC_DIR");
    snprintf(out, outsz, "%s%s%s", env ? env : "", env ? "/" : "", rel);
    if (access(out, R_OK) == 0) {
        return out;
    }
    char dir[512];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
    dir[n > 0 ? n : 0] = '\0';
    for (int up = 0; up < 5; up++) {
        char *slash = strrchr(dir, '/');
        if (slash == NULL) {
            break;
        }
        *slash = '\0';
        int w = snprintf(out, outsz, "%s/%s", dir, rel);
        if (w > 0 && (size_t)w < outsz && access(out, R_OK) == 0) {
            return out;
        }
    }
    ck_abort_msg("cannot find %s (set CM_SRC_DIR to the source tree)", rel);
    return NULL;
}

#endif
