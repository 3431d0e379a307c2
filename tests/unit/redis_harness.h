/* Test helpers shared by check_st_redis.c and check_st_redis_cluster.c: open a redis storage on a
 * fresh event loop, run big ops (more keys than st_harness.h's H_MAX_ITEMS), talk to servers
 * with a sync hiredis context, spawn a private redis-server. Header-only (static functions). */
#ifndef CM_TESTS_UNIT_REDIS_HARNESS_H
#define CM_TESTS_UNIT_REDIS_HARNESS_H

#include "conf/conf.h"
#include "daemon/alloc.h"
#include "storages/st_redis.h"
#include "storages/storage.h"
#include "tests/unit/st_harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* A redis storage under test with its loop and config (the storage borrows the config). */
struct rt {
    struct event_base *base;
    struct cm_conf_storage conf;
    struct cm_storage *st;
};

static inline const char *rt_env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v != NULL && v[0] != '\0',
                  "%s is not set: run under the test runner, or start a server and export it",
                  name);
    return v;
}

static inline void rt_open(struct rt *t, const char *url, int pool, int64_t timeout_ms,
                           bool cluster)
{
    char err[256] = "";
    memset(t, 0, sizeof(*t));
    t->base = event_base_new();
    t->conf.name = "redis_test";
    t->conf.url = cm_strdup(url);
    t->conf.type = CM_ST_TYPE_REDIS;
    t->conf.cluster = cluster;
    t->conf.pool_size = pool;
    t->conf.timeout_ms = timeout_ms;
    t->st = cm_storage_new(&t->conf, t->base, err, sizeof(err));
    ck_assert_msg(t->st != NULL, "open %s: %s", url, err);
}

/* Frees the storage (every pending op finishes) and the loop. */
static inline void rt_close(struct rt *t)
{
    cm_storage_free(t->st);
    t->st = NULL;
    event_base_free(t->base);
    cm_free(t->conf.url);
}

static inline void rt_info(const struct rt *t, struct cm_st_redis_info *in)
{
    cm_st_redis_get_info(t->st, in);
}

/* Runs the loop for ms milliseconds. */
static inline void rt_run_for(struct rt *t, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(t->base, &tv);
    event_base_dispatch(t->base);
}

/* Runs the loop until every connection of every known node is ready, or secs pass. */
static inline bool rt_wait_ready(struct rt *t, int secs)
{
    double end = h_now_ms() + secs * 1000.0;
    struct cm_st_redis_info in;
    for (;;) {
        rt_info(t, &in);
        if (in.conns > 0 && in.conns_ready == in.conns) {
            return true;
        }
        if (h_now_ms() > end) {
            return false;
        }
        rt_run_for(t, 20);
    }
}

/* Results of one op with any number of keys. */
struct big_result {
    int calls;
    int status;
    char err[160];
    size_t n;
    bool *hit;
    char **val;
    size_t *vlen;
    int64_t *written_ms; /* a hit's write time (0 = unknown) */
    int *pending;
    struct event_base *base;
};

static inline void big_done(struct cm_st_op *op, void *arg)
{
    struct big_result *r = arg;
    r->calls++;
    r->status = op->status;
    memcpy(r->err, op->err, sizeof(r->err));
    r->n = op->nitems;
    r->hit = cm_calloc(op->nitems + 1, sizeof(*r->hit));
    r->val = cm_calloc(op->nitems + 1, sizeof(*r->val));
    r->vlen = cm_calloc(op->nitems + 1, sizeof(*r->vlen));
    r->written_ms = cm_calloc(op->nitems + 1, sizeof(*r->written_ms));
    for (size_t i = 0; i < op->nitems; i++) {
        r->hit[i] = op->items[i].result == CM_ST_HIT;
        if (r->hit[i]) {
            r->val[i] = op->items[i].val; /* stolen, as the contract allows */
            r->vlen[i] = op->items[i].vlen;
            r->written_ms[i] = op->items[i].written_ms;
            op->items[i].val = NULL;
        }
    }
    if (r->pending != NULL && --*r->pending == 0) {
        event_base_loopbreak(r->base);
    }
}

static inline void big_result_deinit(struct big_result *r)
{
    for (size_t i = 0; r->val != NULL && i < r->n; i++) {
        cm_free(r->val[i]);
    }
    cm_free(r->val);
    cm_free(r->hit);
    cm_free(r->vlen);
    cm_free(r->written_ms);
    memset(r, 0, sizeof(*r));
}

/* An op over n binary keys (and values for SET). */
static inline struct cm_st_op *big_op(enum cm_st_op_kind kind, size_t n, char **keys,
                                      const size_t *klens, char **vals, const size_t *vlens,
                                      int64_t ttl_ms)
{
    struct cm_st_op *op = cm_st_op_new(kind, n);
    op->ttl_ms = ttl_ms;
    for (size_t i = 0; i < n; i++) {
        cm_st_op_set_key(op, i, keys[i], klens[i]);
        if (vals != NULL) {
            op->items[i].wval = vals[i];
            op->items[i].wlen = vlens[i];
        }
    }
    return op;
}

/* Submits op, runs the loop until done ran (at most secs), asserts it ran exactly once. */
static inline void big_run(struct rt *t, struct cm_st_op *op, struct big_result *r, int secs)
{
    int pending = 1;
    memset(r, 0, sizeof(*r));
    r->pending = &pending;
    r->base = t->base;
    cm_storage_submit(t->st, op, big_done, r);
    h_wait(t->base, &pending, secs);
    ck_assert_int_eq(r->calls, 1);
    r->pending = NULL;
}

/* A sync hiredis context to host:port, asserted connected. */
static inline redisContext *sync_connect(const char *host, int port)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    ck_assert_msg(c != NULL && c->err == 0, "connect %s:%d: %s", host, port,
                  c != NULL ? c->errstr : "oom");
    redisSetTimeout(c, tv);
    return c;
}

/* Parses "redis://host:port/..." (test URLs carry no password) into host and port. */
static inline void url_host_port(const char *url, char *host, size_t hostsz, int *port)
{
    const char *p = strstr(url, "://");
    p = p != NULL ? p + 3 : url;
    const char *colon = strchr(p, ':');
    ck_assert_msg(colon != NULL, "no port in %s", url);
    snprintf(host, hostsz, "%.*s", (int)(colon - p), p);
    *port = atoi(colon + 1);
}

/* A TCP port nobody listens on right now. */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    ck_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts a private redis-server on port (extra: NULL-terminated extra args, may be NULL) and
 * waits for PING. It dies with the test process. Returns its pid. */
static inline pid_t redis_spawn(int port, const char *const *extra)
{
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    const char *argv[32] = {"redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no",     "--dir", "/tmp"};
    size_t argc = 11;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && argc < 31; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (freopen("/dev/null", "w", stdout) == NULL) {
            _exit(126);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c != NULL && c->err == 0) {
            redisFree(c);
            return pid;
        }
        redisFree(c);
        usleep(20000);
    }
    ck_abort_msg("redis-server on port %d did not start", port);
    return -1;
}

static inline void redis_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

#endif
