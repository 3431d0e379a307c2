/* The storage framework: backend lookup, op lifetime, per-op timeouts and per-storage counters.
 * Backends only fill results and call cm_st_op_finish; everything else happens here. */
#include "storages/storage.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/log.h"
#include "daemon/util.h"

#include <event2/event.h>
#include <stdarg.h>
#include <string.h>

const struct cm_storage_ops *cm_storage_ops_for(int conf_type)
{
    switch (conf_type) {
    case CM_ST_TYPE_LRU: return &cm_st_lru_ops;
    case CM_ST_TYPE_TLFU: return &cm_st_tlfu_ops;
    case CM_ST_TYPE_REDIS: return &cm_st_redis_ops;
    case CM_ST_TYPE_PG: return &cm_st_pg_ops;
    case CM_ST_TYPE_MYSQL: return &cm_st_mysql_ops;
    case CM_ST_TYPE_SQLITE: return &cm_st_sqlite_ops;
    case CM_ST_TYPE_MONGO: return &cm_st_mongo_ops;
    default: return NULL;
    }
}

struct cm_storage *cm_storage_new(const struct cm_conf_storage *conf, struct event_base *base,
                                  char *err, size_t errsz)
{
    const struct cm_storage_ops *ops = cm_storage_ops_for((int)conf->type);
    if (ops == NULL) {
        snprintf(err, errsz, "unknown storage type");
        return NULL;
    }
    struct cm_storage *st = cm_calloc(1, sizeof(*st));
    st->ops = ops;
    st->conf = conf;
    st->name = conf->name;
    st->base = base;
    if (ops->open(st, err, errsz) != CM_OK) {
        cm_free(st);
        return NULL;
    }
    return st;
}

void cm_storage_close(struct cm_storage *st)
{
    if (!st->closed) {
        st->closed = true;
        st->ops->close(st);
    }
}

void cm_storage_free(struct cm_storage *st)
{
    if (st == NULL) {
        return;
    }
    cm_storage_close(st);
    cm_free(st);
}

struct cm_st_op *cm_st_op_new_keys(enum cm_st_op_kind kind, size_t nitems, size_t key_bytes)
{
    struct cm_st_op *op = cm_calloc(1, sizeof(*op));
    size_t isize = (nitems ? nitems : 1) * sizeof(*op->items);
    op->kind = kind;
    op->nitems = nitems;
    op->items = cm_malloc(isize + key_bytes);
    memset(op->items, 0, isize);
    op->kfree = (char *)op->items + isize;
    op->kleft = key_bytes;
    op->ttl_ms = -1;
    return op;
}

struct cm_st_op *cm_st_op_new(enum cm_st_op_kind kind, size_t nitems)
{
    return cm_st_op_new_keys(kind, nitems, 0);
}

void cm_st_op_set_key(struct cm_st_op *op, size_t i, const char *key, size_t klen)
{
    cm_assert(i < op->nitems);
    struct cm_st_item *it = &op->items[i];
    if (!it->key_in_block) {
        cm_free(it->key);
    }
    it->key_in_block = klen + 1 <= op->kleft;
    if (it->key_in_block) {
        it->key = op->kfree;
        op->kfree += klen + 1;
        op->kleft -= klen + 1;
    } else {
        it->key = cm_malloc(klen + 1);
    }
    memcpy(it->key, key, klen);   /* keys are binary: they may hold NUL bytes */
    it->key[klen] = '\0';
    it->klen = klen;
}

void cm_st_op_free(struct cm_st_op *op)
{
    if (op == NULL) {
        return;
    }
    for (size_t i = 0; i < op->nitems; i++) {
        if (!op->items[i].key_in_block) {
            cm_free(op->items[i].key);
        }
        cm_free(op->items[i].val);
    }
    cm_free(op->items);
    if (op->timer != NULL) {
        event_free(op->timer);
    }
    cm_free(op);
}

static void account(struct cm_st_op *op)
{
    struct cm_st_stats *s = &op->st->stats;
    s->ops++;
    s->latency_ns += (uint64_t)(cm_now_ns() - op->start_ns);
    if (op->status == CM_ETIMEDOUT) {
        s->timeouts++;
        return;
    }
    if (op->status != CM_OK) {
        s->errors++;
    }
    switch (op->kind) {
    case CM_ST_GET:
        s->reads += op->nitems;
        for (size_t i = 0; i < op->nitems; i++) {
            s->hits += op->items[i].result == CM_ST_HIT;
        }
        break;
    case CM_ST_SET:
        if (op->status == CM_OK) {
            s->writes += op->nitems;
        }
        break;
    case CM_ST_DEL:
        if (op->status == CM_OK) {
            s->deletes += op->nitems;
        }
        break;
    }
}

/* A storage that is down fails every op: log at most once a second per storage, with a count
 * of what was not logged. The counters (INFO, /metrics) keep every failure. */
static void warn_limited(struct cm_st_op *op, const char *why)
{
    struct cm_storage *st = op->st;
    int64_t now = cm_now_ms();
    if (now - st->warn_ms < 1000) {
        st->warn_suppressed++;
        return;
    }
    cm_log(CM_LOG_WARN, "storage %s: %s of %zu key(s) failed: %s%s", st->name,
           op->kind == CM_ST_GET ? "read" : op->kind == CM_ST_SET ? "write" : "delete",
           op->nitems, why, st->warn_suppressed ? " (and more failures not logged)" : "");
    st->warn_ms = now;
    st->warn_suppressed = 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct cm_st_op *op = arg;
    CM_UNUSED(fd);
    CM_UNUSED(what);
    /* The backend still holds op; it is freed when the backend finishes it. */
    op->timed_out = true;
    op->status = CM_ETIMEDOUT;
    for (size_t i = 0; i < op->nitems; i++) {
        op->items[i].result = CM_ST_MISS;
        cm_free(op->items[i].val);
        op->items[i].val = NULL;
    }
    char why[64];
    snprintf(why, sizeof(why), "timed out after %lld ms", (long long)op->st->conf->timeout_ms);
    warn_limited(op, why);
    account(op);
    op->done(op, op->arg);
}

bool cm_storage_lookup(struct cm_storage *st, const char *key, size_t klen, const char **val,
                       size_t *vlen, int64_t *written_ms)
{
    cm_assert(st->ops->local);
    st->stats.reads++;
    int64_t w = 0;
    if (!st->ops->lookup(st, key, klen, val, vlen, &w)) {
        return false;
    }
    st->stats.hits++;
    if (written_ms != NULL) {
        *written_ms = w;
    }
    return true;
}

void cm_storage_store(struct cm_storage *st, const char *key, size_t klen, const char *val,
                      size_t vlen, int64_t ttl_ms, int64_t written_ms)
{
    cm_assert(st->ops->local);
    st->ops->store(st, key, klen, val, vlen, ttl_ms, written_ms);
    st->stats.writes++;
}

bool cm_storage_remove(struct cm_storage *st, const char *key, size_t klen)
{
    cm_assert(st->ops->local);
    if (!st->ops->remove(st, key, klen)) {
        return false;
    }
    st->stats.deletes++;
    return true;
}

void cm_storage_submit(struct cm_storage *st, struct cm_st_op *op, cm_st_done_fn *done, void *arg)
{
    cm_assert(!st->ops->local && !st->closed);
    op->st = st;
    op->done = done;
    op->arg = arg;
    op->status = CM_OK;
    op->start_ns = cm_now_ns();
    if (st->conf->timeout_ms > 0) {
        struct timeval tv = { .tv_sec = st->conf->timeout_ms / 1000,
                              .tv_usec = (st->conf->timeout_ms % 1000) * 1000 };
        op->timer = evtimer_new(st->base, on_timeout, op);
        evtimer_add(op->timer, &tv);
    }
    st->ops->submit(st, op);
}

void cm_st_op_finish(struct cm_st_op *op)
{
    if (op->timed_out) {
        cm_st_op_free(op);
        return;
    }
    if (op->timer != NULL) {
        event_free(op->timer);
        op->timer = NULL;
    }
    if (op->status != CM_OK) {
        /* A failed op is a miss for every key: never trust partial results. */
        for (size_t i = 0; i < op->nitems; i++) {
            op->items[i].result = CM_ST_MISS;
        }
        warn_limited(op, op->err[0] ? op->err : "unknown error");
    }
    account(op);
    op->done(op, op->arg);
    cm_st_op_free(op);
}

static void on_finish_later(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_st_op_finish(arg);
}

void cm_st_op_finish_later(struct cm_st_op *op)
{
    if (event_base_once(op->st->base, -1, EV_TIMEOUT, on_finish_later, op, NULL) != 0) {
        cm_log(CM_LOG_ERR, "storage %s: event_base_once failed", op->st->name);
        abort();
    }
}

void cm_st_op_fail(struct cm_st_op *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->err, sizeof(op->err), fmt, ap);
    va_end(ap);
    op->status = CM_ERR;
}

void cm_storage_unreadable(struct cm_storage *st)
{
    if (st->stats.hits > 0) {
        st->stats.hits--;
    }
    st->stats.errors++;
}
