/* sqlite storage (sqlite:///path): Cacheme's table, one connection per worker thread.
 *
 * Format (Cacheme's SQLiteStorage): the bare serialized value in `value` (BLOB), `expire` as
 * TEXT in Python's sqlite3 datetime format "2026-11-25 01:22:56.123456+00:00" (NULL = never),
 * `updated_at` as strftime('%Y-%m-%d %H:%M:%f', 'now'). Expiry is checked here at read time.
 * Unlike Cacheme, an upsert that updates an existing row also bumps updated_at (same format as
 * the column default), so updated_at always says when the value was last written, as the
 * redis and mongo formats do; Cacheme never reads it for decisions, so both interoperate. */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/blocking.h"
#include "storages/storage.h"
#include "storages/workers.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SQ_CHUNK 32 /* keys per IN (...) statement; statements for 1..32 are cached */
#define SQ_MAX_THREADS 64

/* One worker thread's connection and its prepared statements. Owned by struct sq; used only
 * by the thread whose index it sits at (SQLITE_OPEN_NOMUTEX). */
struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *get[SQ_CHUNK + 1]; /* by number of keys */
    sqlite3_stmt *del[SQ_CHUNK + 1];
    sqlite3_stmt *set;
    sqlite3_stmt *begin, *commit, *rollback;
};

/* The storage's private state (st->priv). */
struct sq {
    char *path;  /* database file */
    char *table; /* quoted identifier, e.g. "cacheme_data" with the quotes */
    char *index; /* quoted name of the expire index */
    bool create_table;
    struct cm_workers *workers;
    int nthreads;
    struct sq_conn *conns;     /* nthreads entries, opened lazily by their thread */
    atomic_bool closing;       /* queued jobs fail at once */
    pthread_mutex_t schema_mu; /* guards schema_done */
    bool schema_done;
};

/* Appends s as a double-quoted SQL identifier. */
static void quote_ident(struct cm_buf *b, const char *s)
{
    cm_buf_append(b, "\"", 1);
    for (; *s; s++) {
        cm_buf_append(b, s, 1);
        if (*s == '"') {
            cm_buf_append(b, "\"", 1);
        }
    }
    cm_buf_append(b, "\"", 1);
}

static char *buf_take_str(struct cm_buf *b)
{
    size_t len;
    char *s = cm_buf_steal(b, &len);
    cm_buf_deinit(b);
    return s;
}

static void conn_close(struct sq_conn *c)
{
    if (c->db == NULL) {
        return;
    }
    for (int i = 0; i <= SQ_CHUNK; i++) {
        sqlite3_finalize(c->get[i]);
        sqlite3_finalize(c->del[i]);
    }
    sqlite3_finalize(c->set);
    sqlite3_finalize(c->begin);
    sqlite3_finalize(c->commit);
    sqlite3_finalize(c->rollback);
    sqlite3_close(c->db);
    memset(c, 0, sizeof(*c));
}

/* Cacheme's storages/scripts/sqlite.sql with the configured table name, plus IF NOT EXISTS. */
static int ensure_schema(struct sq *s, sqlite3 *db, struct cm_bjob *j)
{
    int rc = CM_OK;
    pthread_mutex_lock(&s->schema_mu);
    if (s->create_table && !s->schema_done) {
        char *sql = sqlite3_mprintf(
            "CREATE TABLE IF NOT EXISTS %s (\n"
            "\tid INTEGER NOT NULL,\n"
            "\t\"key\" VARCHAR(512),\n"
            "\tvalue BLOB,\n"
            "\texpire DATETIME,\n"
            "\tupdated_at DATETIME DEFAULT (strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')),\n"
            "\tPRIMARY KEY (id),\n"
            "\tUNIQUE (\"key\")\n"
            ");\n"
            "CREATE INDEX IF NOT EXISTS %s ON %s (expire);\n",
            s->table, s->index, s->table);
        char *err = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK) {
            s->schema_done = true;
        } else {
            cm_bjob_fail(j, "create table: %s", err != NULL ? err : sqlite3_errmsg(db));
            rc = CM_ERR;
        }
        sqlite3_free(err);
        sqlite3_free(sql);
    }
    pthread_mutex_unlock(&s->schema_mu);
    return rc;
}

/* The calling worker's connection, opened on first use. NULL (job failed) on error. */
static struct sq_conn *conn_get(struct sq *s, struct cm_bjob *j)
{
    int idx = cm_workers_self();
    if (idx < 0 || idx >= s->nthreads) {
        cm_bjob_fail(j, "not on a worker thread");
        return NULL;
    }
    struct sq_conn *c = &s->conns[idx];
    if (c->db == NULL) {
        int rc =
            sqlite3_open_v2(s->path, &c->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
            cm_bjob_fail(j, "open %s: %s", s->path,
                         c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
            sqlite3_close(c->db);
            c->db = NULL;
            return NULL;
        }
        sqlite3_busy_timeout(c->db, 5000);
        char *err = NULL;
        int prc;
        /* Switching a new file to WAL takes a lock the busy handler does not wait for, so
         * several workers opening it at once can see "database is locked": retry (we are on a
         * worker thread; the loop never waits here). */
        for (int tries = 0;; tries++) {
            prc = sqlite3_exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL,
                               NULL, &err);
            if ((prc != SQLITE_BUSY && prc != SQLITE_LOCKED) || tries == 100) {
                break;
            }
            sqlite3_free(err);
            err = NULL;
            usleep(10000);
        }
        if (prc != SQLITE_OK) {
            cm_bjob_fail(j, "open %s: %s", s->path, err != NULL ? err : "pragma failed");
            sqlite3_free(err);
            conn_close(c);
            return NULL;
        }
    }
    if (ensure_schema(s, c->db, j) != CM_OK) {
        return NULL;
    }
    return c;
}

/* Prepares (once per connection) and returns *slot; NULL with the job failed on error. */
static sqlite3_stmt *stmt(struct sq_conn *c, sqlite3_stmt **slot, const char *sql,
                          struct cm_bjob *j)
{
    if (*slot == NULL &&
        sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        cm_bjob_fail(j, "%s", sqlite3_errmsg(c->db));
        *slot = NULL;
    }
    return *slot;
}

/* "VERB <table> WHERE "key" IN (?,?,...?)" for n keys, prepared once per connection. */
static sqlite3_stmt *in_stmt(struct sq *s, struct sq_conn *c, sqlite3_stmt **slot, const char *verb,
                             size_t n, struct cm_bjob *j)
{
    if (*slot != NULL) {
        return *slot;
    }
    struct cm_buf b;
    cm_buf_init(&b);
    cm_buf_printf(&b, "%s %s WHERE \"key\" IN (", verb, s->table);
    for (size_t i = 0; i < n; i++) {
        cm_buf_append_str(&b, i ? ",?" : "?");
    }
    cm_buf_append(&b, ")", 2); /* with the NUL */
    sqlite3_stmt *st = stmt(c, slot, cm_buf_start(&b), j);
    cm_buf_deinit(&b);
    return st;
}

static int step_done(struct sq_conn *c, sqlite3_stmt *st, struct cm_bjob *j)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        cm_bjob_fail(j, "%s", sqlite3_errmsg(c->db));
        return CM_ERR;
    }
    return CM_OK;
}

static void bind_keys(sqlite3_stmt *st, const struct cm_st_op *op, size_t from, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct cm_st_item *it = &op->items[from + i];
        sqlite3_bind_text(st, (int)i + 1, it->key, (int)it->klen, SQLITE_STATIC);
    }
}

/* True when an expire cell says the row is still live at now_us. */
static bool live(sqlite3_stmt *st, int col, int64_t now_us)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        return true;
    }
    const char *txt = (const char *)sqlite3_column_text(st, col);
    int64_t exp_us;
    if (txt == NULL ||
        cm_parse_iso8601_us(txt, (size_t)sqlite3_column_bytes(st, col), &exp_us) != CM_OK) {
        return false; /* unreadable expiry: never serve a value that may be stale */
    }
    return exp_us > now_us;
}

/* updated_at as wall-clock ms ("2026-11-25 01:22:56.123", UTC: the column default and our
 * upsert; Python's "...+00:00" form too); 0 when NULL or unreadable. */
static int64_t written_ms(sqlite3_stmt *st, int col)
{
    const char *txt = (const char *)sqlite3_column_text(st, col);
    int64_t us;
    if (txt == NULL ||
        cm_parse_iso8601_us(txt, (size_t)sqlite3_column_bytes(st, col), &us) != CM_OK || us <= 0) {
        return 0;
    }
    return us / 1000;
}

static void do_get(struct sq *s, struct sq_conn *c, struct cm_bjob *j)
{
    const struct cm_st_op *op = j->op;
    for (size_t from = 0; from < op->nitems; from += SQ_CHUNK) {
        size_t n = op->nitems - from < SQ_CHUNK ? op->nitems - from : SQ_CHUNK;
        sqlite3_stmt *st =
            in_stmt(s, c, &c->get[n], "SELECT \"key\", value, expire, updated_at FROM", n, j);
        if (st == NULL) {
            return;
        }
        bind_keys(st, op, from, n);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (sqlite3_column_type(st, 1) == SQLITE_NULL || !live(st, 2, j->now_us)) {
                continue;
            }
            const char *key = (const char *)sqlite3_column_text(st, 0);
            size_t klen = (size_t)sqlite3_column_bytes(st, 0);
            const void *val = sqlite3_column_blob(st, 1);
            size_t vlen = (size_t)sqlite3_column_bytes(st, 1);
            if (key != NULL) {
                cm_bjob_hit(j, key, klen, val, vlen, written_ms(st, 3));
            }
        }
        if (rc != SQLITE_DONE) {
            cm_bjob_fail(j, "%s", sqlite3_errmsg(c->db));
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (j->status != CM_OK) {
            return;
        }
    }
}

/* Runs body in one transaction when it spans more than one statement. */
static bool txn_begin(struct sq_conn *c, bool multi, struct cm_bjob *j)
{
    if (!multi) {
        return true;
    }
    sqlite3_stmt *st = stmt(c, &c->begin, "BEGIN IMMEDIATE", j);
    return st != NULL && step_done(c, st, j) == CM_OK;
}

static void txn_end(struct sq_conn *c, bool multi, struct cm_bjob *j)
{
    if (!multi) {
        return;
    }
    if (j->status == CM_OK) {
        sqlite3_stmt *st = stmt(c, &c->commit, "COMMIT", j);
        if (st != NULL && step_done(c, st, j) == CM_OK) {
            return;
        }
    }
    if (!sqlite3_get_autocommit(c->db)) {
        struct cm_bjob scratch = {.op = j->op};
        sqlite3_stmt *st = stmt(c, &c->rollback, "ROLLBACK", &scratch);
        if (st != NULL) {
            step_done(c, st, &scratch);
        }
    }
}

static void do_set(struct sq *s, struct sq_conn *c, struct cm_bjob *j)
{
    const struct cm_st_op *op = j->op;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s(\"key\", value, expire) VALUES(?,?,?) ON CONFLICT(\"key\") DO UPDATE "
             "SET value=excluded.value, expire=excluded.expire, "
             "updated_at=strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')",
             s->table);
    sqlite3_stmt *st = stmt(c, &c->set, sql, j);
    char expire[40];
    if (j->expire_us >= 0) {
        cm_fmt_iso8601(expire, sizeof(expire), j->expire_us, ' ');
    }
    bool multi = op->nitems > 1;
    if (st == NULL || !txn_begin(c, multi, j)) {
        return;
    }
    for (size_t i = 0; i < op->nitems && j->status == CM_OK; i++) {
        sqlite3_bind_text(st, 1, op->items[i].key, (int)op->items[i].klen, SQLITE_STATIC);
        if (j->wlen[i] == 0) {
            sqlite3_bind_zeroblob(st, 2, 0); /* an empty value, not NULL */
        } else {
            sqlite3_bind_blob64(st, 2, j->wval[i], j->wlen[i], SQLITE_STATIC);
        }
        if (j->expire_us >= 0) {
            sqlite3_bind_text(st, 3, expire, -1, SQLITE_STATIC);
        } else {
            sqlite3_bind_null(st, 3);
        }
        step_done(c, st, j);
    }
    txn_end(c, multi, j);
}

static void do_del(struct sq *s, struct sq_conn *c, struct cm_bjob *j)
{
    const struct cm_st_op *op = j->op;
    bool multi = op->nitems > SQ_CHUNK;
    if (!txn_begin(c, multi, j)) {
        return;
    }
    for (size_t from = 0; from < op->nitems && j->status == CM_OK; from += SQ_CHUNK) {
        size_t n = op->nitems - from < SQ_CHUNK ? op->nitems - from : SQ_CHUNK;
        sqlite3_stmt *st = in_stmt(s, c, &c->del[n], "DELETE FROM", n, j);
        if (st == NULL) {
            break;
        }
        bind_keys(st, op, from, n);
        step_done(c, st, j);
    }
    txn_end(c, multi, j);
}

static void sq_work(void *arg)
{
    struct cm_bjob *j = arg;
    struct sq *s = j->backend;
    if (atomic_load(&s->closing)) {
        cm_bjob_fail(j, "storage closing");
        return;
    }
    struct sq_conn *c = conn_get(s, j);
    if (c == NULL || j->op == NULL) {
        return;
    }
    switch (j->op->kind) {
    case CM_ST_GET:
        do_get(s, c, j);
        break;
    case CM_ST_SET:
        do_set(s, c, j);
        break;
    case CM_ST_DEL:
        do_del(s, c, j);
        break;
    }
}

/* The create_table job of open(): no op, only the schema on a worker. */
static void sq_schema_work(void *arg)
{
    struct cm_bjob *j = arg;
    struct sq *s = j->backend;
    if (!atomic_load(&s->closing) && conn_get(s, j) == NULL) {
        cm_log(CM_LOG_WARN, "sqlite %s: %s (retried on the next operation)", s->path, j->err);
    }
}

static void sq_schema_done(void *arg)
{
    cm_free(arg);
}

/* "sqlite:///abs/path.db" -> "/abs/path.db"; "sqlite://rel.db" -> "rel.db"; query dropped. */
static char *url_path(const char *url)
{
    static const char scheme[] = "sqlite://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        return NULL;
    }
    const char *p = url + sizeof(scheme) - 1;
    size_t n = strcspn(p, "?#");
    return n > 0 ? cm_strndup(p, n) : NULL;
}

static void sq_free(struct sq *s)
{
    for (int i = 0; s->conns != NULL && i < s->nthreads; i++) {
        conn_close(&s->conns[i]);
    }
    pthread_mutex_destroy(&s->schema_mu);
    cm_free(s->conns);
    cm_free(s->path);
    cm_free(s->table);
    cm_free(s->index);
    cm_free(s);
}

static int sq_open(struct cm_storage *st, char *err, size_t errsz)
{
    const struct cm_conf_storage *conf = st->conf;
    char *path = url_path(conf->url);
    if (path == NULL) {
        snprintf(err, errsz, "sqlite url must be sqlite:///path/to/file.db, got '%s'", conf->url);
        return CM_ERR;
    }
    struct sq *s = cm_calloc(1, sizeof(*s));
    s->path = path;
    const char *table = conf->table != NULL && conf->table[0] ? conf->table : "cacheme_data";
    struct cm_buf b;
    cm_buf_init(&b);
    quote_ident(&b, table);
    s->table = buf_take_str(&b);
    cm_buf_init(&b);
    char ix[600];
    snprintf(ix, sizeof(ix), "ix_%s_expire", table);
    quote_ident(&b, ix);
    s->index = buf_take_str(&b);
    if (strlen(s->table) > 200) {
        snprintf(err, errsz, "sqlite table name too long");
        sq_free(s);
        return CM_ERR;
    }
    s->create_table = conf->create_table;
    s->nthreads = conf->pool_size > 0 ? conf->pool_size : 4;
    if (s->nthreads > SQ_MAX_THREADS) {
        s->nthreads = SQ_MAX_THREADS;
    }
    s->conns = cm_calloc((size_t)s->nthreads, sizeof(*s->conns));
    atomic_init(&s->closing, false);
    pthread_mutex_init(&s->schema_mu, NULL);
    s->workers = cm_workers_new(st->base, s->nthreads, "cm-sqlite");
    if (s->workers == NULL) {
        snprintf(err, errsz, "cannot start sqlite worker threads");
        sq_free(s);
        return CM_ERR;
    }
    st->priv = s;
    if (s->create_table) {
        struct cm_bjob *j = cm_calloc(1, sizeof(*j));
        j->backend = s;
        cm_workers_submit(s->workers, sq_schema_work, sq_schema_done, j);
    }
    return CM_OK;
}

static void sq_submit(struct cm_storage *st, struct cm_st_op *op)
{
    struct sq *s = st->priv;
    if (op->nitems == 0) {
        cm_st_op_finish_later(op);
        return;
    }
    cm_workers_submit(s->workers, sq_work, cm_bjob_complete, cm_bjob_new(op, s));
}

static void sq_close(struct cm_storage *st)
{
    struct sq *s = st->priv;
    if (s == NULL) {
        return;
    }
    /* Queued jobs fail fast; running ones finish; every completion runs inside workers_free. */
    atomic_store(&s->closing, true);
    cm_workers_free(s->workers);
    sq_free(s);
    st->priv = NULL;
}

const struct cm_storage_ops cm_st_sqlite_ops = {
    .name = "sqlite",
    .local = false,
    .wrapped = false,
    .open = sq_open,
    .submit = sq_submit,
    .close = sq_close,
};
