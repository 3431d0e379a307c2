/* The connection pool shared by the PostgreSQL and MySQL storages: routing, per-conn FIFOs,
 * reconnect backoff, the once-per-pool setup, and the Cacheme schemas.
 *
 * conn states:  DOWN --retry timer--> CONNECTING --connected--> SETUP | WAIT_SETUP | READY
 *               any --broken--> DOWN (ops held fail with CM_ERR, a miss)
 * Finished ops go to pool->dhead and are reported from an event, so that no done() runs inside
 * submit and a driver may finish ops from anywhere. */
#include "storages/sql_common.h"
#include "conf/conf.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/resolve.h"
#include "storages/storage.h"

#include <event2/event.h>
#include <string.h>

#define SQL_BACKOFF_MIN_MS 100
#define SQL_BACKOFF_MAX_MS 5000
#define SQL_QUEUE_MAX 4096

static void report_cb(evutil_socket_t fd, short what, void *arg);
static void retry_cb(evutil_socket_t fd, short what, void *arg);

/* Queues op for reporting from the loop (done() never runs inside submit). */
static void finish_later(struct cm_sql_pool *pool, struct cm_st_op *op)
{
    op->bnext = NULL;
    if (pool->dtail != NULL) {
        pool->dtail->bnext = op;
    } else {
        pool->dhead = op;
        event_active(pool->dev, EV_TIMEOUT, 0);
    }
    pool->dtail = op;
}

static void report_all(struct cm_sql_pool *pool)
{
    /* done() may submit again, which appends to a fresh list and re-activates the event. */
    struct cm_st_op *op = pool->dhead;
    pool->dhead = pool->dtail = NULL;
    while (op != NULL) {
        struct cm_st_op *next = op->bnext;
        op->bnext = NULL;
        cm_st_op_finish(op);
        op = next;
    }
}

static void report_cb(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    report_all(arg);
}

static void on_resolved(void *arg, const char *addr, const char *err)
{
    struct cm_sql_conn *c = arg;
    c->lookup = NULL;
    if (addr == NULL) {
        char why[200];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", c->pool->host, err);
        cm_sql_conn_broken(c, why);
        return;
    }
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->pool->drv->connect(c);
}

/* Starts a connect: the driver's, after resolving the host name off the loop if there is one. */
static void conn_connect(struct cm_sql_conn *c)
{
    if (c->pool->resolver == NULL) {
        c->pool->drv->connect(c);
        return;
    }
    c->addr[0] = '\0';
    c->lookup = cm_resolve(c->pool->resolver, c->pool->host, on_resolved, c);
}

int cm_sql_pool_init(struct cm_sql_pool *pool, struct cm_storage *st,
                     const struct cm_sql_driver *drv, char *err, size_t errsz)
{
    const char *table = st->conf->table != NULL ? st->conf->table : "cacheme_data";
    if (!cm_sql_table_valid(table)) {
        snprintf(err, errsz, "invalid table name '%.64s': identifier characters only, at most 48",
                 table);
        return CM_ERR;
    }
    snprintf(pool->table, sizeof(pool->table), "%s", table);
    struct cm_url u;
    if (cm_url_parse(st->conf->url, &u, err, errsz) != CM_OK) {
        return CM_ERR;
    }
    if (u.host != NULL && u.host[0] != '\0' && !cm_host_is_numeric(u.host) &&
        (drv->keep_host == NULL || strcmp(u.host, drv->keep_host) != 0)) {
        pool->resolver = cm_resolver_new(st->base, "sql-dns");
        if (pool->resolver == NULL) {
            snprintf(err, errsz, "cannot start a thread to resolve '%.64s'", u.host);
            cm_url_deinit(&u);
            return CM_ERR;
        }
        pool->host = cm_strdup(u.host);
    }
    cm_url_deinit(&u);
    pool->st = st;
    pool->drv = drv;
    pool->nconns = st->conf->pool_size > 0 ? (size_t)st->conf->pool_size : 1;
    pool->conns = cm_calloc(pool->nconns, sizeof(*pool->conns));
    pool->dev = event_new(st->base, -1, 0, report_cb, pool);
    for (size_t i = 0; i < pool->nconns; i++) {
        struct cm_sql_conn *c = &pool->conns[i];
        c->pool = pool;
        c->idx = i;
        c->backoff_ms = SQL_BACKOFF_MIN_MS;
        c->retry = evtimer_new(st->base, retry_cb, c);
        c->state = CM_SQL_CONNECTING;
        conn_connect(c);
    }
    return CM_OK;
}

/* Puts queued ops on the wire while the conn is ready and idle. */
static void kick(struct cm_sql_conn *c)
{
    if (c->kicking) {
        return;
    }
    c->kicking = true;
    while (c->state == CM_SQL_READY && c->cur == NULL && c->qhead != NULL) {
        struct cm_st_op *op = c->qhead;
        c->qhead = op->bnext;
        if (c->qhead == NULL) {
            c->qtail = NULL;
        }
        c->qlen--;
        op->bnext = NULL;
        if (op->timed_out) {
            /* Its caller has gone; do not spend a round trip on it. */
            finish_later(c->pool, op);
            continue;
        }
        c->cur = op;
        c->pool->drv->send(c, op);
    }
    c->kicking = false;
}

void cm_sql_pool_submit(struct cm_sql_pool *pool, struct cm_st_op *op)
{
    if (op->nitems == 0) {
        finish_later(pool, op);
        return;
    }
    struct cm_sql_conn *c =
        &pool->conns[cm_hash(op->items[0].key, op->items[0].klen) % pool->nconns];
    if (c->state == CM_SQL_DOWN) {
        cm_st_op_fail(op, "not connected to the server (retrying)");
        finish_later(pool, op);
        return;
    }
    if (c->qlen >= SQL_QUEUE_MAX) {
        cm_st_op_fail(op, "connection queue full (%d ops)", SQL_QUEUE_MAX);
        finish_later(pool, op);
        return;
    }
    op->bnext = NULL;
    if (c->qtail != NULL) {
        c->qtail->bnext = op;
    } else {
        c->qhead = op;
    }
    c->qtail = op;
    c->qlen++;
    kick(c);
}

static void fail_held(struct cm_sql_conn *c, const char *reason)
{
    if (c->cur != NULL) {
        cm_st_op_fail(c->cur, "%s", reason);
        finish_later(c->pool, c->cur);
        c->cur = NULL;
    }
    while (c->qhead != NULL) {
        struct cm_st_op *op = c->qhead;
        c->qhead = op->bnext;
        cm_st_op_fail(op, "%s", reason);
        finish_later(c->pool, op);
    }
    c->qtail = NULL;
    c->qlen = 0;
}

void cm_sql_pool_deinit(struct cm_sql_pool *pool)
{
    for (size_t i = 0; i < pool->nconns; i++) {
        struct cm_sql_conn *c = &pool->conns[i];
        if (c->lookup != NULL) {
            cm_lookup_cancel(c->lookup);
            c->lookup = NULL;
        }
        pool->drv->drop(c);
        c->state = CM_SQL_DOWN;
        fail_held(c, "storage closed");
        event_free(c->retry);
    }
    cm_resolver_free(pool->resolver);   /* after the cancels */
    pool->resolver = NULL;
    cm_free(pool->host);
    pool->host = NULL;
    report_all(pool);
    event_free(pool->dev);
    cm_free(pool->conns);
    pool->conns = NULL;
    pool->nconns = 0;
}

static void become_ready(struct cm_sql_conn *c)
{
    c->state = CM_SQL_READY;
    kick(c);
}

void cm_sql_conn_connected(struct cm_sql_conn *c)
{
    struct cm_sql_pool *pool = c->pool;
    c->backoff_ms = SQL_BACKOFF_MIN_MS;
    if (c->logged_down) {
        cm_log(CM_LOG_NOTICE, "storage %s: connection %zu is back", pool->st->name, c->idx);
        c->logged_down = false;
    }
    if (pool->drv->setup == NULL || pool->setup_state == 2) {
        become_ready(c);
    } else if (pool->setup_state == 1) {
        c->state = CM_SQL_WAIT_SETUP;
    } else {
        pool->setup_state = 1;
        c->state = CM_SQL_SETUP;
        pool->drv->setup(c);
    }
}

void cm_sql_conn_setup_done(struct cm_sql_conn *c)
{
    struct cm_sql_pool *pool = c->pool;
    pool->setup_state = 2;
    become_ready(c);
    for (size_t i = 0; i < pool->nconns; i++) {
        if (pool->conns[i].state == CM_SQL_WAIT_SETUP) {
            become_ready(&pool->conns[i]);
        }
    }
}

void cm_sql_conn_op_done(struct cm_sql_conn *c)
{
    cm_assert(c->cur != NULL);
    finish_later(c->pool, c->cur);
    c->cur = NULL;
    kick(c);
}

void cm_sql_conn_broken(struct cm_sql_conn *c, const char *reason)
{
    struct cm_sql_pool *pool = c->pool;
    bool was_setup = c->state == CM_SQL_SETUP;
    pool->drv->drop(c);
    c->state = CM_SQL_DOWN;
    if (!c->logged_down) {
        cm_log(CM_LOG_WARN, "storage %s: connection %zu down: %s (retrying, backoff up to %d ms)",
               pool->st->name, c->idx, reason, SQL_BACKOFF_MAX_MS);
        c->logged_down = true;
    }
    fail_held(c, reason);
    struct timeval tv = { .tv_sec = c->backoff_ms / 1000,
                          .tv_usec = (c->backoff_ms % 1000) * 1000 };
    evtimer_add(c->retry, &tv);
    c->backoff_ms = c->backoff_ms * 2 > SQL_BACKOFF_MAX_MS ? SQL_BACKOFF_MAX_MS : c->backoff_ms * 2;
    if (was_setup) {
        /* Hand the setup to a conn that is waiting for it, if any. */
        pool->setup_state = 0;
        for (size_t i = 0; i < pool->nconns; i++) {
            if (pool->conns[i].state == CM_SQL_WAIT_SETUP) {
                pool->setup_state = 1;
                pool->conns[i].state = CM_SQL_SETUP;
                pool->drv->setup(&pool->conns[i]);
                break;
            }
        }
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cm_sql_conn *c = arg;
    CM_UNUSED(fd);
    CM_UNUSED(what);
    c->state = CM_SQL_CONNECTING;
    conn_connect(c);
}

bool cm_sql_table_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 48 || (name[0] >= '0' && name[0] <= '9')) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_')) {
            return false;
        }
    }
    return true;
}

/* The shipped scripts, byte for byte (a unit test compares them with storages/scripts/). Every
 * "cacheme_data" is replaced by the configured table. */
static const char pg_schema[] =
    "-- Cacheme's table (cacheme/storages/scripts/postgresql.sql), made idempotent.\n"
    "CREATE TABLE IF NOT EXISTS \"cacheme_data\" (\n"
    "\tid SERIAL NOT NULL,\n"
    "\tkey VARCHAR(512),\n"
    "\tvalue BYTEA,\n"
    "\texpire TIMESTAMP WITH TIME ZONE,\n"
    "\tupdated_at TIMESTAMP WITH TIME ZONE DEFAULT now(),\n"
    "\tPRIMARY KEY (id),\n"
    "\tUNIQUE (key)\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS \"ix_cacheme_data_expire\" ON \"cacheme_data\" (expire);\n";

/* The expire index is declared inside CREATE TABLE because MySQL has no CREATE INDEX IF NOT
 * EXISTS. utf8mb4_bin: cache keys are case-sensitive and may be any Unicode. */
static const char mysql_schema[] =
    "-- Cacheme's table (cacheme/storages/scripts/mysql.sql), made idempotent.\n"
    "CREATE TABLE IF NOT EXISTS `cacheme_data` (\n"
    "\tid INTEGER NOT NULL AUTO_INCREMENT,\n"
    "\t`key` VARCHAR(512),\n"
    "\tvalue BLOB,\n"
    "\texpire DATETIME(6),\n"
    "\tupdated_at DATETIME(6) DEFAULT now(6),\n"
    "\tPRIMARY KEY (id),\n"
    "\tUNIQUE (`key`),\n"
    "\tINDEX `ix_cacheme_data_expire` (expire)\n"
    ") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;\n";

void cm_sql_schema(struct cm_buf *out, enum cm_sql_dialect d, const char *table)
{
    static const char token[] = "cacheme_data";
    const char *p = d == CM_SQL_PG ? pg_schema : mysql_schema;
    const char *hit;
    while ((hit = strstr(p, token)) != NULL) {
        cm_buf_append(out, p, (size_t)(hit - p));
        cm_buf_append_str(out, table);
        p = hit + sizeof(token) - 1;
    }
    cm_buf_append_str(out, p);
}

void cm_sql_op_hit(struct cm_st_op *op, const char *key, size_t klen, const char *val,
                   size_t vlen, int64_t written_ms)
{
    for (size_t i = 0; i < op->nitems; i++) {
        struct cm_st_item *it = &op->items[i];
        if (it->result == CM_ST_HIT || it->klen != klen || memcmp(it->key, key, klen) != 0) {
            continue;
        }
        it->result = CM_ST_HIT;
        it->val = cm_malloc(vlen ? vlen : 1);
        memcpy(it->val, val, vlen);
        it->vlen = vlen;
        it->written_ms = written_ms;
    }
}

bool cm_sql_item_superseded(const struct cm_st_op *op, size_t i)
{
    const struct cm_st_item *it = &op->items[i];
    for (size_t j = i + 1; j < op->nitems; j++) {
        if (op->items[j].klen == it->klen && memcmp(op->items[j].key, it->key, it->klen) == 0) {
            return true;
        }
    }
    return false;
}
