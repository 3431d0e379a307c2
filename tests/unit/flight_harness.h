/* The flight engine driven step by step: a server built from a config string whose remote
 * storages are a fake (ops complete when the test says, in any order, OK or failed) and whose
 * loader is a fake (loads complete when the test says: value, 404, failure), with clients on
 * socketpairs going through the real parser, command table, request queue and conn.c. Used by
 * tests/unit/check_flight.c (scripted schedules) and tests/fuzz/fuzz_flight.c (any schedule).
 *
 * These fakes test scheduling, not a backend: every storage's own behaviour is tested against
 * the real server in its own suite.
 *
 * Invariants checked as it goes (fh_fail on a breach):
 *   - at most one load of a key at the origin at a time;
 *   - at most one write (SET/DEL op) of a key outstanding per storage;
 *   - every reply parses, and arrives in the order the requests were sent;
 *   - (consistent mode, no storage failures) no GET returns a value that is older than a
 *     SET/DEL/REFRESH of its key that was answered before the GET was sent;
 *   - (prompt mode, storage ops complete at once) a GET waits for at most two loads of its key:
 *     one in progress when it came that a DEL/SET superseded, and its own; never for a chain of
 *     REFRESHes (issue 14, defect 6);
 * and at the end (fh_settle + fh_finish): every request of a connected client answered exactly
 * once, no key entry left, then cm_server_deinit frees everything (ASan/LSan check the rest).
 */
#ifndef CM_TESTS_UNIT_FLIGHT_HARNESS_H
#define CM_TESTS_UNIT_FLIGHT_HARNESS_H

#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/conn.h"
#include "daemon/flight.h"
#include "daemon/loader.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/server.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

/* Each test binary uses part of the harness. */
#define FH_FN static __attribute__((unused))

#define FH_MAX_OPS 256
#define FH_MAX_LOADS 128
#define FH_MAX_CONNS 4
#define FH_MAX_SENT 256
#define FH_MAX_ENTRIES 64
#define FH_MAX_MUT 256
#define FH_MAX_STORES 4

/* Four nodes over two fake remote storages and one real local one. Loader URLs name the node,
 * so a value's token tells which key it was loaded for. */
static const char fh_conf_text[] =
    "[server]\nprefix = t\n"
    "[storage mem]\nurl = local://lru\nsize = 1000\n"
    "[storage r1]\nurl = redis://127.0.0.1:1/0\ntimeout = 1h\n"
    "[storage r2]\nurl = redis://127.0.0.1:2/0\ntimeout = 1h\n"
    "[node a]\nkey = a:{id}\nversion = v\ncaches = mem:60s, r1:60s\n"
    "loader = http://127.0.0.1:9/a/{id}\n"
    "[node b]\nkey = b:{id}\nversion = v\ncaches = r1:60s, r2:60s\n"
    "loader = http://127.0.0.1:9/b/{id}\n"
    "[node c]\nkey = c:{id}\nversion = v\ncaches = mem:60s\nloader = http://127.0.0.1:9/c/{id}\n"
    "[node d]\nkey = d:{id}\nversion = v\ncaches = mem:60s, r2:60s\n"
    "[node e]\nkey = e:{id}\nversion = v\ncaches = mem:60s\nloader = http://127.0.0.1:9/e/{id}\n"
    "breaker = 2, 50ms\n"
    /* SPEC §12: stale entries of a remote cache, of a local one, refresh_after */
    "[node f]\nkey = f:{id}\nversion = v\ncaches = r1:60s\nloader = http://127.0.0.1:9/f/{id}\n"
    "grace = 30s\nstale_if_error = 1h\n"
    "[node g]\nkey = g:{id}\nversion = v\ncaches = mem:1s\nloader = http://127.0.0.1:9/g/{id}\n"
    "grace = 10s\n"
    "[node h]\nkey = h:{id}\nversion = v\ncaches = mem:60s\nloader = http://127.0.0.1:9/h/{id}\n"
    "refresh_after = 1s\n"
    "[node n]\nkey = n:{id}\nversion = v\ncaches = mem:60s, r1:60s\nserializer = json\n"
    "loader = http://127.0.0.1:9/n/{id}\nnegative_ttl = 10s\n";

struct fh_entry {
    char *key;
    char *val;
    size_t vlen;
    int64_t written_ms;   /* reported with a hit (SPEC §12); tests may age it */
    int64_t ttl_ms;       /* what the writer asked it to be kept */
};

/* One fake remote storage's contents. */
struct fh_store {
    struct fh_entry e[FH_MAX_ENTRIES];
    size_t n;
};

struct fh_load {
    char *url;
    unsigned started;   /* the step it was fetched at: its value is as old as that */
    cm_load_done_fn *done;
    void *arg;
};

enum fh_cmd { FH_GET, FH_MGET, FH_SET, FH_DEL, FH_REFRESH, FH_OTHER };

struct fh_sent {
    enum fh_cmd cmd;
    char keys[4][24];
    int nkeys;
    unsigned step;    /* when it was sent */
    int mut[4];       /* FH_SET/DEL/REFRESH: index of its record in fh->mut, per key */
    unsigned loads_at_send[4];   /* loads of each key completed before it was sent */
    unsigned loads_at_answer[4]; /* ... before its reply was complete (it may wait in line) */
    bool answered;
};

struct fh_conn {
    struct cm_conn *c;   /* NULL when disconnected */
    int peer;
    redisReader *rd;
    struct fh_sent sent[FH_MAX_SENT];
    size_t nsent, ngot;
    char last[256];   /* the last reply read: a bulk's bytes, "-" + an error, "(nil)", "*" */
};

/* A mutation of a key: when it was sent, and when its reply came back (0 = not yet/never). */
struct fh_mut {
    char key[24];
    enum fh_cmd cmd;
    unsigned sent, answered;
    bool refresh_ok;   /* a REFRESH answered with a value: the cache was written */
};

struct fh {
    struct cm_server srv;
    struct fh_store stores[FH_MAX_STORES];
    struct cm_st_op *ops[FH_MAX_OPS];
    size_t nops;
    struct fh_load loads[FH_MAX_LOADS];
    size_t nloads;
    struct fh_conn conns[FH_MAX_CONNS];
    struct fh_mut mut[FH_MAX_MUT];
    size_t nmut;
    unsigned step;
    bool consistent;      /* no storage failures: check values against mutations */
    bool prompt;          /* storage ops complete (OK) right after each step: waits are loads */
    bool fetch_refuses;   /* the next fetch returns CM_ERR */
    bool down;            /* cm_server_deinit ran */
    unsigned loads_started;
    struct { char url[64]; unsigned done; } load_count[64];   /* loads completed, per URL */
    size_t nload_count;
};

/* The counter of completed loads of url (created at 0). */
FH_FN unsigned *fh_loads_done(struct fh *h, const char *url)
{
    for (size_t i = 0; i < h->nload_count; i++) {
        if (strcmp(h->load_count[i].url, url) == 0) {
            return &h->load_count[i].done;
        }
    }
    if (h->nload_count == CM_ARRAY_LEN(h->load_count)) {
        static unsigned sink;
        return &sink;
    }
    snprintf(h->load_count[h->nload_count].url, sizeof(h->load_count[0].url), "%s", url);
    h->load_count[h->nload_count].done = 0;
    return &h->load_count[h->nload_count++].done;
}

/* The loader URL of a client key of the harness config ("b:7" -> http://127.0.0.1:9/b/7). */
FH_FN void fh_url_of(const char *key, char *out, size_t outsz)
{
    snprintf(out, outsz, "http://127.0.0.1:9/%c/%s", key[0], key + 2);
}

static struct fh *fh_cur;
FH_FN void fh_note_answers(struct fh *h);
static int fh_trace = -1;   /* FH_TRACE=1 in the environment: every step on stderr */

FH_FN void fh_log(const char *fmt, ...) CM_PRINTF(1, 2);
FH_FN void fh_log(const char *fmt, ...)
{
    if (fh_trace < 0) {
        fh_trace = getenv("FH_TRACE") != NULL;
    }
    if (!fh_trace) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%u] ", fh_cur ? fh_cur->step : 0);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

FH_FN void fh_fail(const char *fmt, ...) CM_PRINTF(1, 2);
FH_FN void fh_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "flight harness: invariant broken at step %u: ", fh_cur ? fh_cur->step : 0);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* ---- fake remote storage ---- */

FH_FN struct fh_store *fh_store_of(struct cm_storage *st)
{
    return st->priv;
}

FH_FN struct fh_entry *fh_find(struct fh_store *s, const char *key, size_t klen)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strlen(s->e[i].key) == klen && memcmp(s->e[i].key, key, klen) == 0) {
            return &s->e[i];
        }
    }
    return NULL;
}

FH_FN void fh_store_put(struct fh_store *s, const char *key, size_t klen, const char *val,
                         size_t vlen)
{
    struct fh_entry *e = fh_find(s, key, klen);
    if (e == NULL) {
        if (s->n == FH_MAX_ENTRIES) {
            return;   /* full: the write is lost, as a storage may lose it */
        }
        e = &s->e[s->n++];
        e->key = strndup(key, klen);
    } else {
        free(e->val);
    }
    e->val = malloc(vlen + 1);
    memcpy(e->val, val, vlen);
    e->val[vlen] = '\0';
    e->vlen = vlen;
    e->written_ms = cm_wall_us() / 1000;
}

FH_FN void fh_store_del(struct fh_store *s, const char *key, size_t klen)
{
    struct fh_entry *e = fh_find(s, key, klen);
    if (e != NULL) {
        free(e->key);
        free(e->val);
        *e = s->e[--s->n];
    }
}

FH_FN void fh_submit(struct cm_storage *st, struct cm_st_op *op)
{
    struct fh *h = fh_cur;
    if (op->kind != CM_ST_GET) {
        /* The engine writes one key at a time: two writes of a key in flight at once could be
         * applied in either order by a real storage. */
        for (size_t i = 0; i < h->nops; i++) {
            struct cm_st_op *o = h->ops[i];
            if (o->st == st && o->kind != CM_ST_GET && o->items[0].klen == op->items[0].klen &&
                memcmp(o->items[0].key, op->items[0].key, op->items[0].klen) == 0) {
                fh_fail("two writes of '%s' outstanding on %s", op->items[0].key, st->name);
            }
        }
    }
    if (h->nops == FH_MAX_OPS) {
        fh_fail("too many storage ops outstanding");
    }
    h->ops[h->nops++] = op;
}

/* Completes outstanding op i: applied and OK, or failed. */
FH_FN void fh_complete_op(struct fh *h, size_t i, bool ok)
{
    struct cm_st_op *op = h->ops[i];
    h->ops[i] = h->ops[--h->nops];
    h->step++;
    fh_log("op %s %s %s(%zu keys) -> %s", op->st->name,
           op->kind == CM_ST_GET ? "GET" : op->kind == CM_ST_SET ? "SET" : "DEL", op->items[0].key,
           op->nitems, ok ? "ok" : "failed");
    struct fh_store *s = fh_store_of(op->st);
    if (!ok) {
        cm_st_op_fail(op, "injected failure");
        cm_st_op_finish(op);
        fh_note_answers(h);
        return;
    }
    for (size_t k = 0; k < op->nitems; k++) {
        struct cm_st_item *it = &op->items[k];
        switch (op->kind) {
        case CM_ST_GET: {
            struct fh_entry *e = fh_find(s, it->key, it->klen);
            if (e != NULL) {
                it->result = CM_ST_HIT;
                it->val = cm_malloc(e->vlen + 1);
                memcpy(it->val, e->val, e->vlen + 1);
                it->vlen = e->vlen;
                it->written_ms = e->written_ms;
            }
            break;
        }
        case CM_ST_SET:
        {
            fh_store_put(s, it->key, it->klen, it->wval, it->wlen);
            struct fh_entry *e = fh_find(s, it->key, it->klen);
            if (e != NULL) {
                e->ttl_ms = op->ttl_ms;
            }
            break;
        }
        case CM_ST_DEL: fh_store_del(s, it->key, it->klen); break;
        }
    }
    cm_st_op_finish(op);
    fh_note_answers(h);
}

FH_FN void fh_st_close(struct cm_storage *st)
{
    struct fh *h = fh_cur;
    for (size_t i = 0; i < h->nops;) {
        if (h->ops[i]->st == st) {
            fh_complete_op(h, i, false);
            i = 0;   /* done() may have changed the list */
        } else {
            i++;
        }
    }
}

FH_FN int fh_st_open(struct cm_storage *st, char *err, size_t errsz)
{
    CM_UNUSED(st);
    CM_UNUSED(err);
    CM_UNUSED(errsz);
    return CM_OK;
}

static const struct cm_storage_ops fh_fake_ops = {
    .name = "fake", .local = false, .wrapped = false,
    .open = fh_st_open, .submit = fh_submit, .close = fh_st_close,
};

/* ---- fake loader ---- */

FH_FN int fh_fetch(void *arg, size_t group, const char *url, const char *unix_socket,
                    int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done, void *done_arg)
{
    struct fh *h = arg;
    CM_UNUSED(group);
    CM_UNUSED(unix_socket);
    CM_UNUSED(timeout_ms);
    CM_UNUSED(max_size);
    if (h->fetch_refuses) {
        h->fetch_refuses = false;
        return CM_ERR;
    }
    for (size_t i = 0; i < h->nloads; i++) {
        if (strcmp(h->loads[i].url, url) == 0) {
            fh_fail("two loads of %s at the origin at once", url);
        }
    }
    if (h->nloads == FH_MAX_LOADS) {
        fh_fail("too many loads");
    }
    fh_log("fetch %s", url);
    h->loads[h->nloads].url = strdup(url);
    h->loads[h->nloads].started = h->step;
    h->loads[h->nloads].done = done;
    h->loads[h->nloads].arg = done_arg;
    h->nloads++;
    h->loads_started++;
    return CM_OK;
}

enum fh_outcome { FH_VALUE, FH_404, FH_ERROR };

/* Completes outstanding load i. A value is "L<step>|<url>": when its load began and for what. */
FH_FN void fh_complete_load(struct fh *h, size_t i, enum fh_outcome outcome)
{
    struct fh_load l = h->loads[i];
    h->loads[i] = h->loads[--h->nloads];
    h->step++;
    (*fh_loads_done(h, l.url))++;
    fh_log("load %s -> %s", l.url, outcome == FH_VALUE ? "value" : outcome == FH_404 ? "404" : "error");
    struct cm_load_result r = { .outcome = CM_LOAD_FAILED };
    if (outcome == FH_VALUE) {
        char tmp[160];
        int n = snprintf(tmp, sizeof(tmp), "L%u|%s", l.started, l.url);
        r.outcome = CM_LOAD_OK;
        r.http_status = 200;
        r.body = cm_malloc((size_t)n + 1);
        memcpy(r.body, tmp, (size_t)n + 1);
        r.len = (size_t)n;
    } else if (outcome == FH_404) {
        r.outcome = CM_LOAD_NOT_FOUND;
        r.http_status = 404;
    } else {
        snprintf(r.reason, sizeof(r.reason), "injected failure");
    }
    l.done(&r, l.arg);
    fh_note_answers(h);
    cm_free(r.body);
    free(l.url);
}

FH_FN void fh_loader_close(void *arg)
{
    struct fh *h = arg;
    while (h->nloads > 0) {
        fh_complete_load(h, 0, FH_ERROR);
    }
}

/* ---- clients ---- */

FH_FN void fh_connect(struct fh *h, int i)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        fh_fail("socketpair: %s", strerror(errno));
    }
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    struct fh_conn *fc = &h->conns[i];
    memset(fc, 0, sizeof(*fc));
    fc->c = cm_conn_new(&h->srv, sv[0], "fh", true);
    fc->peer = sv[1];
    fc->rd = redisReaderCreate();
}

/* The mutation records a GET of key must respect. */
FH_FN void fh_check_value(struct fh *h, const struct fh_sent *s, const char *key,
                           const char *val, size_t len)
{
    /* The value names its key: "L<step>|http://127.0.0.1:9/<node>/<id>" or "S<step>|<key>". */
    char want[64];
    unsigned origin = 0;
    const char *bar = memchr(val, '|', len);
    if (bar == NULL || (val[0] != 'L' && val[0] != 'S')) {
        fh_fail("GET %s returned a value of no known origin: %.*s", key, (int)len, val);
    }
    origin = (unsigned)strtoul(val + 1, NULL, 10);
    if (val[0] == 'L') {
        fh_url_of(key, want, sizeof(want));
    } else {
        snprintf(want, sizeof(want), "%s", key);
    }
    if ((size_t)(val + len - bar - 1) != strlen(want) || memcmp(bar + 1, want, strlen(want)) != 0) {
        fh_fail("GET %s returned another key's value: %.*s", key, (int)len, val);
    }
    if (!h->consistent) {
        return;
    }
    for (size_t m = 0; m < h->nmut; m++) {
        const struct fh_mut *mu = &h->mut[m];
        if (strcmp(mu->key, key) != 0 || mu->answered == 0 || mu->answered >= s->step) {
            continue;
        }
        if (mu->cmd == FH_REFRESH && !mu->refresh_ok) {
            continue;   /* a failed REFRESH changes nothing */
        }
        if (origin < mu->sent) {
            fh_fail("GET %s (sent at step %u) returned %.*s, older than the %s sent at step %u "
                    "and answered at step %u", key, s->step, (int)len, val,
                    mu->cmd == FH_SET ? "SET" : mu->cmd == FH_DEL ? "DEL" : "REFRESH", mu->sent,
                    mu->answered);
        }
    }
}

/* Checks one reply of request s. */
FH_FN void fh_check_reply(struct fh *h, struct fh_sent *s, redisReply *r)
{
    if (s->cmd == FH_GET && h->prompt) {
        /* (An MGET's reply waits for its slowest key: only GETs are measured.)
         * A GET waits for at most the load in progress when it came (one a DEL/SET superseded,
         * which must not answer it) and its own: never for a chain of REFRESHes (defect 6). */
        for (int k = 0; k < s->nkeys; k++) {
            char url[64];
            fh_url_of(s->keys[k], url, sizeof(url));
            unsigned done = s->answered ? s->loads_at_answer[k] : *fh_loads_done(h, url);
            unsigned waited = done - s->loads_at_send[k];
            if (waited > 2) {
                fh_fail("GET %s (sent at step %u) waited for %u loads", s->keys[k], s->step,
                        waited);
            }
        }
    }
    switch (s->cmd) {
    case FH_GET:
        if (r->type == REDIS_REPLY_STRING) {
            fh_check_value(h, s, s->keys[0], r->str, r->len);
        } else if (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_ERROR) {
            fh_fail("GET %s: reply type %d", s->keys[0], r->type);
        }
        break;
    case FH_MGET:
    case FH_REFRESH:
        if (r->type != REDIS_REPLY_ARRAY || (int)r->elements != s->nkeys) {
            fh_fail("%s: reply type %d with %zu elements for %d keys",
                    s->cmd == FH_MGET ? "MGET" : "REFRESH", r->type, r->elements, s->nkeys);
        }
        for (int k = 0; k < s->nkeys; k++) {
            redisReply *e = r->element[k];
            if (e->type == REDIS_REPLY_STRING) {
                fh_check_value(h, s, s->keys[k], e->str, e->len);
            }
            if (s->cmd == FH_REFRESH) {
                h->mut[s->mut[k]].refresh_ok = e->type == REDIS_REPLY_STRING;
            }
        }
        break;
    case FH_SET:
        if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0) {
            fh_fail("SET: reply type %d", r->type);
        }
        break;
    case FH_DEL:
        if (r->type != REDIS_REPLY_INTEGER) {
            fh_fail("DEL: reply type %d", r->type);
        }
        break;
    case FH_OTHER: break;
    }
    if (s->cmd == FH_SET || s->cmd == FH_DEL || s->cmd == FH_REFRESH) {
        for (int k = 0; k < s->nkeys; k++) {
            h->mut[s->mut[k]].answered = h->step;
        }
    }
}

/* Notes which requests became DONE while queued behind an earlier one: a reply's wait is
 * measured to its completion, not to when the pipeline lets it out. */
FH_FN void fh_note_answers(struct fh *h)
{
    for (int i = 0; i < FH_MAX_CONNS; i++) {
        struct fh_conn *fc = &h->conns[i];
        struct cm_req *req;
        size_t j = 0;
        if (fc->c == NULL || fc->c->state != CM_CONN_ACTIVE) {
            continue;
        }
        TAILQ_FOREACH(req, &fc->c->reqs, link) {
            struct fh_sent *s = &fc->sent[fc->nsent - fc->c->nreqs + j++];
            if (req->state != CM_REQ_DONE || s->answered) {
                continue;
            }
            s->answered = true;
            for (int k = 0; k < s->nkeys; k++) {
                char url[64];
                fh_url_of(s->keys[k], url, sizeof(url));
                s->loads_at_answer[k] = *fh_loads_done(h, url);
            }
        }
    }
}

/* Reads every reply the clients were sent so far. */
FH_FN void fh_read_replies(struct fh *h)
{
    fh_note_answers(h);
    for (int i = 0; i < FH_MAX_CONNS; i++) {
        struct fh_conn *fc = &h->conns[i];
        char buf[65536];
        ssize_t n;
        if (fc->rd == NULL) {
            continue;
        }
        while ((n = read(fc->peer, buf, sizeof(buf))) > 0) {
            redisReaderFeed(fc->rd, buf, (size_t)n);
        }
        void *reply;
        while (redisReaderGetReply(fc->rd, &reply) == REDIS_OK && reply != NULL) {
            if (fc->ngot >= fc->nsent) {
                fh_fail("conn %d: a reply to nothing", i);
            }
            fh_log("conn %d: reply %d to request sent at step %u", i,
                   ((redisReply *)reply)->type, fc->sent[fc->ngot].step);
            fh_check_reply(h, &fc->sent[fc->ngot++], reply);
            redisReply *rr = reply;
            snprintf(fc->last, sizeof(fc->last), "%s%.*s",
                     rr->type == REDIS_REPLY_ERROR ? "-" : rr->type == REDIS_REPLY_NIL ? "(nil)"
                     : rr->type == REDIS_REPLY_ARRAY ? "*" : "",
                     rr->type == REDIS_REPLY_STRING || rr->type == REDIS_REPLY_ERROR ? (int)rr->len : 0,
                     rr->str != NULL ? rr->str : "");
            freeReplyObject(reply);
        }
        if (fc->rd->err) {
            fh_fail("conn %d: unparsable reply stream: %s", i, fc->rd->errstr);
        }
    }
}

/* One pass of the loop: gathered reads go out, deferred completions run, replies are read. */
FH_FN void fh_pass(struct fh *h)
{
    event_base_loop(h->srv.base, EVLOOP_NONBLOCK);
    struct cm_conn *c;
    while ((c = TAILQ_FIRST(&h->srv.to_free)) != NULL) {
        TAILQ_REMOVE(&h->srv.to_free, c, link);
        cm_conn_free(c);
    }
    fh_read_replies(h);
}

/* Sends one command (argv of n words) on client i and lets the server read it. */
FH_FN void fh_send(struct fh *h, int i, enum fh_cmd cmd, int argc, const char **argv)
{
    struct fh_conn *fc = &h->conns[i];
    if (fc->c == NULL || fc->nsent == FH_MAX_SENT || h->nmut + 4 > FH_MAX_MUT) {
        return;
    }
    h->step++;
    char buf[512];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "*%d\r\n", argc);
    for (int a = 0; a < argc; a++) {
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "$%zu\r\n%s\r\n", strlen(argv[a]),
                                argv[a]);
    }
    fh_log("conn %d: %s %s", i, argv[0], argc > 1 ? argv[1] : "");
    if (write(fc->peer, buf, len) != (ssize_t)len) {
        fh_fail("short write to the server");
    }
    struct fh_sent *s = &fc->sent[fc->nsent++];
    memset(s, 0, sizeof(*s));
    s->cmd = cmd;
    s->step = h->step;
    int first = cmd == FH_OTHER ? argc : 1;
    int last = cmd == FH_SET ? 2 : argc;
    for (int a = first; a < last && s->nkeys < 4; a++) {
        char url[64];
        snprintf(s->keys[s->nkeys], sizeof(s->keys[0]), "%s", argv[a]);
        fh_url_of(argv[a], url, sizeof(url));
        s->loads_at_send[s->nkeys] = *fh_loads_done(h, url);
        if (cmd == FH_SET || cmd == FH_DEL || cmd == FH_REFRESH) {
            struct fh_mut *mu = &h->mut[h->nmut];
            memset(mu, 0, sizeof(*mu));
            snprintf(mu->key, sizeof(mu->key), "%s", argv[a]);
            mu->cmd = cmd;
            mu->sent = h->step;
            s->mut[s->nkeys] = (int)h->nmut++;
        }
        s->nkeys++;
    }
    cm_conn_on_readable(fc->c);
    if (fc->c->state != CM_CONN_ACTIVE) {
        fh_fail("conn %d closed by the server", i);
    }
}

FH_FN void fh_get(struct fh *h, int i, const char *key)
{
    const char *argv[] = { "GET", key };
    fh_send(h, i, FH_GET, 2, argv);
}

FH_FN void fh_set(struct fh *h, int i, const char *key)
{
    char val[48];
    snprintf(val, sizeof(val), "S%u|%s", h->step + 1, key);   /* fh_send counts this step */
    const char *argv[] = { "SET", key, val };
    fh_send(h, i, FH_SET, 3, argv);
}

FH_FN void fh_del(struct fh *h, int i, const char *key)
{
    const char *argv[] = { "DEL", key };
    fh_send(h, i, FH_DEL, 2, argv);
}

FH_FN void fh_refresh(struct fh *h, int i, const char *key)
{
    const char *argv[] = { "REFRESH", key };
    fh_send(h, i, FH_REFRESH, 2, argv);
}

/* In prompt mode: every gathered read goes out and every storage op completes (OK). */
FH_FN void fh_prompt(struct fh *h)
{
    if (!h->prompt) {
        return;
    }
    fh_pass(h);
    while (h->nops > 0) {
        fh_complete_op(h, 0, true);
        fh_pass(h);
    }
}

/* The client of slot i goes away (its requests in flight are orphaned) and a new one comes. */
FH_FN void fh_disconnect(struct fh *h, int i)
{
    struct fh_conn *fc = &h->conns[i];
    fh_log("conn %d: disconnect", i);
    if (fc->c != NULL) {
        cm_conn_close(fc->c, "test disconnect");
        fc->c = NULL;
    }
    close(fc->peer);
    redisReaderFree(fc->rd);
    fc->rd = NULL;
    fh_pass(h);
    fh_connect(h, i);
}

FH_FN void fh_init(struct fh *h, bool consistent)
{
    char err[256];
    struct cm_server *srv = &h->srv;
    memset(h, 0, sizeof(*h));
    srv->spare_fd = -1;   /* as cm_server_init leaves it: cm_server_deinit closes it otherwise */
    fh_cur = h;
    h->consistent = consistent;
    cm_log_level = CM_LOG_ERR;   /* the injected failures are expected */
    TAILQ_INIT(&srv->conns);
    TAILQ_INIT(&srv->to_free);
    TAILQ_INIT(&srv->write_queue);
    FILE *devnull = fopen("/dev/null", "w");
    if (cm_conf_load_string("fh.conf", fh_conf_text, sizeof(fh_conf_text) - 1, &srv->conf,
                            devnull) != CM_OK) {
        fh_fail("harness config rejected");
    }
    fclose(devnull);
    srv->base = event_base_new();
    srv->storages = cm_calloc(srv->conf->nstorages, sizeof(*srv->storages));
    for (size_t i = 0; i < srv->conf->nstorages; i++) {
        const struct cm_conf_storage *cs = &srv->conf->storages[i];
        struct cm_storage *st;
        if (cs->type == CM_ST_TYPE_LRU || cs->type == CM_ST_TYPE_TLFU) {
            st = cm_storage_new(cs, srv->base, err, sizeof(err));
        } else {
            st = cm_calloc(1, sizeof(*st));
            st->ops = &fh_fake_ops;
            st->conf = cs;
            st->name = cs->name;
            st->base = srv->base;
            st->priv = &h->stores[i];
        }
        st->idx = i;
        srv->storages[srv->nstorages++] = st;
    }
    srv->nodes = cm_nodes_new(srv->conf, srv->storages, err, sizeof(err));
    srv->nnodes = srv->conf->nnodes;
    struct cm_flight_env env = {
        .base = srv->base, .prefix = srv->conf->prefix, .nodes = srv->nodes,
        .nnodes = srv->nnodes, .nstorages = srv->nstorages,
        .max_value_size = srv->conf->max_value_size, .fetch = fh_fetch,
        .loader_close = fh_loader_close, .fetch_arg = h,
    };
    srv->flights = cm_flights_new(&env);
    for (int i = 0; i < FH_MAX_CONNS; i++) {
        fh_connect(h, i);
    }
}

/* Completes everything still out (storage ops OK, loads with values) until the engine is idle,
 * then checks that every connected client got every reply and no key entry is left. */
FH_FN void fh_settle(struct fh *h)
{
    for (int rounds = 0; rounds < 10000; rounds++) {
        fh_pass(h);
        if (h->nops > 0) {
            fh_complete_op(h, 0, true);
        } else if (h->nloads > 0) {
            fh_complete_load(h, 0, FH_VALUE);
        } else {
            fh_pass(h);
            if (h->nops == 0 && h->nloads == 0) {
                break;
            }
        }
    }
    if (h->nops > 0 || h->nloads > 0) {
        fh_fail("the engine never settles");
    }
    for (int i = 0; i < FH_MAX_CONNS; i++) {
        struct fh_conn *fc = &h->conns[i];
        if (fc->c != NULL && fc->ngot != fc->nsent) {
            fh_fail("conn %d: %zu requests, %zu replies after settling", i, fc->nsent, fc->ngot);
        }
    }
    if (cm_flights_active(h->srv.flights) != 0) {
        fh_fail("%zu key entries left after settling", cm_flights_active(h->srv.flights));
    }
}

/* Shuts the server down the way the daemon does, whatever is still in progress, and frees it. */
FH_FN void fh_finish(struct fh *h)
{
    for (int i = 0; i < FH_MAX_CONNS; i++) {
        fh_read_replies(h);
        close(h->conns[i].peer);
        redisReaderFree(h->conns[i].rd);
        h->conns[i].rd = NULL;
        h->conns[i].c = NULL;   /* cm_server_deinit closes and frees them */
    }
    cm_server_deinit(&h->srv);
    for (int s = 0; s < FH_MAX_STORES; s++) {
        while (h->stores[s].n > 0) {
            fh_store_del(&h->stores[s], h->stores[s].e[0].key, strlen(h->stores[s].e[0].key));
        }
    }
    if (h->nops != 0 || h->nloads != 0) {
        fh_fail("shutdown left %zu ops and %zu loads", h->nops, h->nloads);
    }
    fh_cur = NULL;
}

#endif
