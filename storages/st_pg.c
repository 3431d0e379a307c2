/* postgresql:// storage: Cacheme's table over libpq's asynchronous API on the event loop.
 * pool_size connections (storages/sql_common.c), one query on the wire per connection,
 * keys as text, values as binary bytea, expire as timestamptz checked at read time. */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/sql_common.h"
#include "storages/st_keys.h"
#include "storages/storage.h"

#include <ctype.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <string.h>

#define PG_CONNECT_TIMEOUT_MS 5000
#define PG_MAX_SET_ITEMS 30000   /* 2 params per item, PostgreSQL allows 65535 */

enum pg_phase {
    PG_CONNECTING,   /* PQconnectPoll in progress */
    PG_IDLE,         /* connected, nothing on the wire */
    PG_SETUP,        /* schema script on the wire */
    PG_QUERY,        /* c->cur on the wire */
};

/* The driver state of one connection (c->drv). Owned by the conn. */
struct pg_conn {
    PGconn *pg;
    enum pg_phase phase;
    struct event *rev;     /* socket: readable (persistent once connected; one-shot in connect) */
    struct event *wev;     /* socket: writable (connect steps, and output libpq still holds) */
    struct event *ctimer;  /* connect timeout */
    bool setup_failed;     /* the schema script returned an error (logged once) */
};

/* Driver-wide state (pool->priv). */
struct pg_pool {
    struct cm_sql_pool pool;
    char ltable[64];       /* the table name folded to lower case, as PostgreSQL folds Cacheme's */
    char qtable[70];       /* the same, double-quoted for statements */
};

static void pg_io_cb(evutil_socket_t fd, short what, void *arg);

static struct pg_pool *pgp(struct cm_sql_conn *c)
{
    return (struct pg_pool *)c->pool;
}

static void quiet_notice(void *arg, const char *msg)
{
    CM_UNUSED(arg);
    cm_log(CM_LOG_DEBUG, "postgresql notice: %s", msg);
}

/* libpq error messages end in a newline; copy without it. */
static void pg_errmsg(char *out, size_t outsz, const char *msg)
{
    snprintf(out, outsz, "%s", msg != NULL && msg[0] ? msg : "unknown error");
    size_t n = strlen(out);
    for (size_t i = 0; i < n; i++) {
        if (out[i] == '\n' || out[i] == '\t') {
            out[i] = ' ';   /* one log line per event */
        }
    }
    while (n > 0 && out[n - 1] == ' ') {
        out[--n] = '\0';
    }
}

static void pg_broken(struct cm_sql_conn *c, const char *what)
{
    struct pg_conn *pc = c->drv;
    char msg[256];
    char detail[200];
    pg_errmsg(detail, sizeof(detail), pc != NULL && pc->pg != NULL ? PQerrorMessage(pc->pg) : "");
    snprintf(msg, sizeof(msg), "%s: %s", what, detail);
    cm_sql_conn_broken(c, msg);
}

static void pg_drop(struct cm_sql_conn *c)
{
    struct pg_conn *pc = c->drv;
    if (pc == NULL) {
        return;
    }
    if (pc->rev != NULL) {
        event_free(pc->rev);
    }
    if (pc->wev != NULL) {
        event_free(pc->wev);
    }
    if (pc->ctimer != NULL) {
        event_free(pc->ctimer);
    }
    if (pc->pg != NULL) {
        PQfinish(pc->pg);
    }
    cm_free(pc);
    c->drv = NULL;
}

/* (Re)creates the socket events: PQsocket may change between connect steps. */
static void pg_watch(struct cm_sql_conn *c, short rflags)
{
    struct pg_conn *pc = c->drv;
    struct event_base *base = c->pool->st->base;
    int fd = PQsocket(pc->pg);
    if (pc->rev != NULL) {
        event_free(pc->rev);
    }
    if (pc->wev != NULL) {
        event_free(pc->wev);
    }
    pc->rev = event_new(base, fd, EV_READ | rflags, pg_io_cb, c);
    pc->wev = event_new(base, fd, EV_WRITE, pg_io_cb, c);
}

static void pg_connected(struct cm_sql_conn *c)
{
    struct pg_conn *pc = c->drv;
    event_del(pc->ctimer);
    if (PQsetnonblocking(pc->pg, 1) != 0) {
        pg_broken(c, "PQsetnonblocking");
        return;
    }
    PQsetNoticeProcessor(pc->pg, quiet_notice, NULL);
    pc->phase = PG_IDLE;
    /* Reading all the time also notices a server that goes away while we are idle. */
    pg_watch(c, EV_PERSIST);
    event_add(pc->rev, NULL);
    cm_sql_conn_connected(c);
}

static void pg_connect_step(struct cm_sql_conn *c, PostgresPollingStatusType st)
{
    struct pg_conn *pc = c->drv;
    switch (st) {
    case PGRES_POLLING_OK:
        pg_connected(c);
        return;
    case PGRES_POLLING_READING:
        pg_watch(c, 0);
        event_add(pc->rev, NULL);
        return;
    case PGRES_POLLING_WRITING:
        pg_watch(c, 0);
        event_add(pc->wev, NULL);
        return;
    default:
        pg_broken(c, "connect");
        return;
    }
}

static void pg_ctimer_cb(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_sql_conn_broken(arg, "connect timed out");
}

static void pg_connect(struct cm_sql_conn *c)
{
    struct pg_conn *pc = cm_calloc(1, sizeof(*pc));
    /* hostaddr: the URL's host name as sql_common resolved it off the loop; libpq would block. */
    const char *kw[] = { "dbname", "application_name", "client_encoding", "hostaddr", NULL };
    const char *vals[] = { c->pool->st->conf->url, "cachemed", "UTF8",
                           c->addr[0] != '\0' ? c->addr : NULL, NULL };
    c->drv = pc;
    pc->phase = PG_CONNECTING;
    pc->ctimer = evtimer_new(c->pool->st->base, pg_ctimer_cb, c);
    struct timeval tv = { .tv_sec = PG_CONNECT_TIMEOUT_MS / 1000, .tv_usec = 0 };
    evtimer_add(pc->ctimer, &tv);
    pc->pg = PQconnectStartParams(kw, vals, 1);
    if (pc->pg == NULL || PQstatus(pc->pg) == CONNECTION_BAD) {
        pg_broken(c, "connect");
        return;
    }
    pg_connect_step(c, PGRES_POLLING_WRITING);
}

/* Pushes out what libpq holds; waits for writability when the socket is full. */
static void pg_flush(struct cm_sql_conn *c)
{
    struct pg_conn *pc = c->drv;
    int r = PQflush(pc->pg);
    if (r < 0) {
        pg_broken(c, "send");
    } else if (r > 0) {
        event_add(pc->wev, NULL);
    }
}

static void pg_setup(struct cm_sql_conn *c)
{
    struct pg_conn *pc = c->drv;
    if (!c->pool->st->conf->create_table) {
        cm_sql_conn_setup_done(c);
        return;
    }
    struct cm_buf sql;
    cm_buf_init(&sql);
    cm_sql_schema(&sql, CM_SQL_PG, pgp(c)->ltable);
    cm_buf_append(&sql, "", 1);
    int ok = PQsendQuery(pc->pg, cm_buf_start(&sql));
    cm_buf_deinit(&sql);
    if (!ok) {
        pg_broken(c, "create table");
        return;
    }
    pc->phase = PG_SETUP;
    pg_flush(c);
}

/* What the key column (VARCHAR(512) in a UTF8 database, text parameters) refuses: a NUL byte
 * (libpq passes text parameters as C strings), invalid UTF-8 (SQLSTATE 22021 fails the whole
 * statement, so one such key of an MGET used to fail every key in it), and more than 512
 * characters (22001 on insert). Such a key is a miss, is never written, and does not fail the
 * other keys of its op (issue 14, defect 15). */
#define PG_KEY_RULES (CM_KEY_NO_NUL | CM_KEY_UTF8 | CM_KEY_MAX_CHARS)

/* Appends the keys of op the column can hold as a text[] literal: {"k1","k2"} with " and \
 * backslash-escaped. Returns how many. */
static size_t keys_array(struct cm_buf *out, const struct cm_st_op *op)
{
    size_t n = 0;
    cm_buf_append(out, "{", 1);
    for (size_t i = 0; i < op->nitems; i++) {
        const struct cm_st_item *it = &op->items[i];
        if (!cm_st_item_fits(op, i, PG_KEY_RULES)) {
            continue;
        }
        cm_buf_append_str(out, n++ ? ",\"" : "\"");
        for (size_t j = 0; j < it->klen; j++) {
            if (it->key[j] == '"' || it->key[j] == '\\') {
                cm_buf_append(out, "\\", 1);
            }
            cm_buf_append(out, &it->key[j], 1);
        }
        cm_buf_append(out, "\"", 1);
    }
    cm_buf_append(out, "}", 2);   /* with the NUL: libpq reads text params as C strings */
    return n;
}

/* True when SET item i is written: the column holds its key and no later item has that key. */
static bool set_row(const struct cm_st_op *op, size_t i)
{
    return cm_st_item_fits(op, i, PG_KEY_RULES) && !cm_sql_item_superseded(op, i);
}

/* Sends head TABLE tail with op's keys as $1; *sent = false (nothing sent, ok) when the column
 * holds none of them. */
static int send_keys_query(struct cm_sql_conn *c, const char *head, const char *tail, bool *sent)
{
    struct pg_conn *pc = c->drv;
    struct cm_buf sql;
    struct cm_buf arr;
    cm_buf_init(&sql);
    cm_buf_init(&arr);
    cm_buf_append_str(&sql, head);
    cm_buf_append_str(&sql, pgp(c)->qtable);
    cm_buf_append(&sql, tail, strlen(tail) + 1);
    *sent = keys_array(&arr, c->cur) > 0;
    const char *vals[1] = { cm_buf_start(&arr) };
    int ok = !*sent || PQsendQueryParams(pc->pg, cm_buf_start(&sql), 1, NULL, vals, NULL, NULL, 1);
    cm_buf_deinit(&sql);
    cm_buf_deinit(&arr);
    return ok;
}

static int send_set(struct cm_sql_conn *c, bool *sent)
{
    struct pg_conn *pc = c->drv;
    struct cm_st_op *op = c->cur;
    size_t n = 0;
    for (size_t i = 0; i < op->nitems; i++) {
        n += set_row(op, i);   /* one INSERT may not touch a row twice */
    }
    *sent = n > 0;
    if (n == 0) {
        return 1;
    }
    const char **vals = cm_calloc(2 * n + 1, sizeof(*vals));
    int *lens = cm_calloc(2 * n + 1, sizeof(*lens));
    int *fmts = cm_calloc(2 * n + 1, sizeof(*fmts));
    char ttl[32];
    struct cm_buf sql;
    cm_buf_init(&sql);
    cm_buf_printf(&sql, "INSERT INTO %s (key, value, expire, updated_at) VALUES ",
                  pgp(c)->qtable);
    size_t p = 0;
    for (size_t i = 0; i < op->nitems; i++) {
        if (!set_row(op, i)) {
            continue;
        }
        const struct cm_st_item *it = &op->items[i];
        vals[2 * p] = it->key;
        vals[2 * p + 1] = it->wval != NULL ? it->wval : "";
        lens[2 * p + 1] = (int)it->wlen;
        fmts[2 * p + 1] = 1;   /* bytea, binary: the bytes as they are */
        cm_buf_printf(&sql,
                      "%s($%zu, $%zu, now() + $%zu::bigint * interval '1 millisecond', now())",
                      p ? ", " : "", 2 * p + 1, 2 * p + 2, 2 * n + 1);
        p++;
    }
    /* NULL ttl makes a NULL expire: never expires. So does a ttl that would end past
     * CM_ST_EXPIRE_MAX_MS (timestamptz goes to year 294276, but the interval arithmetic fails
     * far earlier, "interval out of range", and such a ttl means forever anyway). */
    snprintf(ttl, sizeof(ttl), "%lld", (long long)op->ttl_ms);
    vals[2 * n] = cm_st_ttl_forever(op->ttl_ms, cm_wall_us() / 1000) ? NULL : ttl;
    /* updated_at on every write, upserts included (the column default covers inserts only):
     * SPEC §12's age of an entry. */
    cm_buf_append_str(&sql, " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
                            "expire = EXCLUDED.expire, updated_at = EXCLUDED.updated_at");
    cm_buf_append(&sql, "", 1);
    int ok = PQsendQueryParams(pc->pg, cm_buf_start(&sql), (int)(2 * n + 1), NULL, vals, lens,
                               fmts, 1);
    cm_buf_deinit(&sql);
    cm_free(vals);
    cm_free(lens);
    cm_free(fmts);
    return ok;
}

static void pg_send(struct cm_sql_conn *c, struct cm_st_op *op)
{
    struct pg_conn *pc = c->drv;
    int ok;
    bool sent = true;
    switch (op->kind) {
    case CM_ST_GET:
        /* updated_at as ms since the epoch (int8, binary): the hit's written_ms */
        ok = send_keys_query(c, "SELECT key, value, "
                                "(extract(epoch FROM updated_at) * 1000)::int8 FROM ",
                             " WHERE key = ANY($1::text[]) AND (expire IS NULL OR expire > now())",
                             &sent);
        break;
    case CM_ST_SET:
        if (op->nitems > PG_MAX_SET_ITEMS) {
            cm_st_op_fail(op, "too many keys in one write (%zu > %d)", op->nitems,
                          PG_MAX_SET_ITEMS);
            cm_sql_conn_op_done(c);
            return;
        }
        ok = send_set(c, &sent);
        break;
    case CM_ST_DEL:
        ok = send_keys_query(c, "DELETE FROM ", " WHERE key = ANY($1::text[])", &sent);
        break;
    default:
        CM_NOT_REACHED();
    }
    if (!ok) {
        pg_broken(c, "send");
        return;
    }
    if (!sent) {
        cm_sql_conn_op_done(c);   /* no key the column holds: every GET item a miss */
        return;
    }
    pc->phase = PG_QUERY;
    pg_flush(c);
}

/* A binary int8 cell (ms since the epoch) as written_ms; 0 when NULL or not positive. */
static int64_t int8_ms(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8) {
        return 0;
    }
    const unsigned char *b = (const unsigned char *)PQgetvalue(res, row, col);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | b[i];   /* network order */
    }
    int64_t ms = (int64_t)v;
    return ms > 0 ? ms : 0;
}

/* One result of the query on the wire. */
static void pg_result(struct cm_sql_conn *c, PGresult *res)
{
    struct pg_conn *pc = c->drv;
    ExecStatusType st = PQresultStatus(res);
    char msg[200];
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        if (pc->phase == PG_QUERY && c->cur->kind == CM_ST_GET && PQnfields(res) == 3) {
            for (int i = 0; i < PQntuples(res); i++) {
                if (PQgetisnull(res, i, 0) || PQgetisnull(res, i, 1)) {
                    continue;
                }
                cm_sql_op_hit(c->cur, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0),
                              PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1),
                              int8_ms(res, i, 2));
            }
        }
        return;
    }
    pg_errmsg(msg, sizeof(msg), PQresultErrorMessage(res));
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (pc->phase == PG_SETUP && state != NULL &&
        (strcmp(state, "42P07") == 0 || strcmp(state, "23505") == 0)) {
        /* Another client created the table at the same moment: IF NOT EXISTS can still race. */
        return;
    }
    if (pc->phase == PG_QUERY) {
        cm_st_op_fail(c->cur, "%s", msg);
    } else if (!pc->setup_failed) {
        pc->setup_failed = true;
        cm_log(CM_LOG_ERR, "storage %s: create_table failed: %s", c->pool->st->name, msg);
    }
}

static void pg_readable(struct cm_sql_conn *c)
{
    struct pg_conn *pc = c->drv;
    if (!PQconsumeInput(pc->pg) || PQstatus(pc->pg) == CONNECTION_BAD) {
        pg_broken(c, "receive");
        return;
    }
    if (pc->phase == PG_IDLE) {
        PGnotify *n;
        while ((n = PQnotifies(pc->pg)) != NULL) {
            PQfreemem(n);
        }
        return;
    }
    while (!PQisBusy(pc->pg)) {
        PGresult *res = PQgetResult(pc->pg);
        if (res == NULL) {
            enum pg_phase was = pc->phase;
            pc->phase = PG_IDLE;
            if (was == PG_QUERY) {
                cm_sql_conn_op_done(c);
            } else {
                cm_sql_conn_setup_done(c);
            }
            return;
        }
        pg_result(c, res);
        PQclear(res);
    }
}

static void pg_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cm_sql_conn *c = arg;
    struct pg_conn *pc = c->drv;
    CM_UNUSED(fd);
    if (pc->phase == PG_CONNECTING) {
        pg_connect_step(c, PQconnectPoll(pc->pg));
        return;
    }
    if (what & EV_WRITE) {
        pg_flush(c);
        return;
    }
    pg_readable(c);
    /* libpq may have been waiting for input before it could send the rest. */
    if (c->drv != NULL && pc->phase != PG_IDLE) {
        pg_flush(c);
    }
}

static int pg_open(struct cm_storage *st, char *err, size_t errsz)
{
    static const struct cm_sql_driver drv = {
        .connect = pg_connect, .setup = pg_setup, .send = pg_send, .drop = pg_drop,
    };
    struct pg_pool *p = cm_calloc(1, sizeof(*p));
    const char *table = st->conf->table != NULL ? st->conf->table : "cacheme_data";
    /* Cacheme writes the name unquoted, so PostgreSQL folds it to lower case; quote the same. */
    size_t n = strlen(table);
    for (size_t i = 0; i < n && i < sizeof(p->ltable) - 1; i++) {
        p->ltable[i] = (char)tolower((unsigned char)table[i]);
    }
    snprintf(p->qtable, sizeof(p->qtable), "\"%s\"", p->ltable);
    st->priv = p;
    if (cm_sql_pool_init(&p->pool, st, &drv, err, errsz) != CM_OK) {
        cm_free(p);
        st->priv = NULL;
        return CM_ERR;
    }
    return CM_OK;
}

static void pg_submit(struct cm_storage *st, struct cm_st_op *op)
{
    struct pg_pool *p = st->priv;
    cm_sql_pool_submit(&p->pool, op);
}

static void pg_close(struct cm_storage *st)
{
    struct pg_pool *p = st->priv;
    if (p == NULL) {
        return;
    }
    cm_sql_pool_deinit(&p->pool);
    cm_free(p);
    st->priv = NULL;
}

const struct cm_storage_ops cm_st_pg_ops = {
    .name = "postgresql",
    .wrapped = false,
    .open = pg_open,
    .submit = pg_submit,
    .close = pg_close,
};
