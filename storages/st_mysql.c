/* mysql:// storage: Cacheme's table through MariaDB Connector/C's non-blocking API
 * (mysql_*_start/_cont on mysql_get_socket, driven by libevent). pool_size connections
 * (storages/sql_common.c), one statement on the wire per connection.
 *
 * Keys and values reach the server only as bound parameters of server-side prepared statements
 * (binary protocol: MYSQL_BIND, STRING keys and BLOB values with explicit lengths), never in SQL
 * text. Each connection prepares a statement the first time it needs it and keeps it until the
 * connection dies (a reconnect prepares again): GET (`key` IN (?, ...)), the upsert and DELETE,
 * each for batches of 1, 4, 16, 64, 256 and 512 keys. A batch is rounded up to the next size (reads
 * and deletes pad with NULL, which matches no key; the upsert repeats one of its rows), so at most
 * 18 statements per connection, one execute per batch of up to 512 keys, and the prepare costs
 * one more round trip only the first time. The setup (CREATE TABLE, the column probe) runs as
 * text once per pool: it holds nothing but the validated table name.
 * expire is a naive-UTC DATETIME(6) computed by the server (UTC_TIMESTAMP(6) + INTERVAL ?
 * MICROSECOND, the ttl bound; NULL never expires) and compared with UTC_TIMESTAMP(6) on read. */
#include "conf/conf.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/sql_common.h"
#include "storages/st_keys.h"
#include "storages/storage.h"

#include <errno.h>
#include <event2/event.h>
#include <mysql.h>
#include <sys/socket.h>
#include <string.h>
#include <strings.h>

#define MY_CONNECT_TIMEOUT_S 5
#define MY_BLOB_MAX 65535u      /* BLOB; the probe at connect finds MEDIUMBLOB/LONGBLOB */
#define MY_NSIZES 6             /* batch sizes a statement is prepared for */
#define MY_BATCH_MAX 512u       /* the largest; longer ops run as several batches */
#define MY_ROW_OVERHEAD 64u     /* per upsert row in the execute packet, beyond key and value */
#define MY_PACKET_SLACK 4096u   /* kept free below max_allowed_packet */
#define MY_SCRATCH_KEEP (1u << 20)   /* a larger fetch buffer is freed after its op */

static const size_t my_sizes[MY_NSIZES] = { 1, 4, 16, 64, 256, MY_BATCH_MAX };

enum my_phase {
    MY_CONNECTING,    /* mysql_real_connect_start/_cont */
    MY_IDLE,          /* nothing on the wire; readable socket = the server went away */
    MY_SETUP_QUERY,   /* CREATE TABLE IF NOT EXISTS */
    MY_PROBE_QUERY,   /* value column type and max_allowed_packet */
    MY_PROBE_STORE,
    MY_PREPARE,       /* mysql_stmt_prepare of mc->stmt, for c->cur */
    MY_EXECUTE,       /* one batch of c->cur on the wire */
    MY_STMT_STORE,    /* reading that batch's rows */
};

/* The driver state of one connection (c->drv). Owned by the conn. */
struct my_conn {
    MYSQL *m;
    enum my_phase phase;
    struct event *ev;     /* the one socket/timeout event, re-armed for every wait */
    struct cm_buf q;      /* setup statement, or the text to prepare; alive until it completes */
    int qerr;             /* the last _start/_cont call's result */
    MYSQL *cret;          /* mysql_real_connect's result */
    MYSQL_RES *res;       /* mysql_store_result's result (probe) */
    /* Prepared statements by op kind and batch size; they die with m (mysql_close). */
    MYSQL_STMT *stmts[3][MY_NSIZES];
    MYSQL_STMT *stmt;     /* the statement of the current phase (one of stmts) */
    /* The current op's batches: item indexes to send, in order (SET: the rows not refused and
     * not superseded by a later item of the same key). */
    size_t *rows;
    size_t nrows, rows_cap;
    size_t off;           /* rows before off are done */
    size_t batch;         /* rows in the batch on the wire */
    size_t size_idx;      /* its statement size */
    long long ttl_us;     /* SET: the bound ttl */
    MYSQL_BIND *binds;    /* parameters of the batch on the wire */
    size_t binds_cap;
    /* GET results: the fetch buffers (grown to the longest key/value seen) and their binds;
     * column 2 is updated_at in ms since the epoch (rwritten) */
    MYSQL_BIND rbind[3];
    char *rbuf[2];
    unsigned long rcap[2];
    unsigned long rlen[3];
    my_bool rnull[3];
    long long rwritten;
};

/* Driver-wide state; the pool comes first so a conn's pool pointer converts to it. */
struct my_pool {
    struct cm_sql_pool pool;
    struct cm_url url;
    char qtable[70];      /* `table` */
    uint64_t max_value;   /* bytes the value column holds */
    uint64_t max_packet;  /* @@max_allowed_packet */
};

static void my_io_cb(evutil_socket_t fd, short what, void *arg);
static void my_step(struct cm_sql_conn *c, int status);

static struct my_pool *myp(struct cm_sql_conn *c)
{
    return (struct my_pool *)c->pool;
}

/* The connection is unusable: what failed, and the connector's reason (detail, or m's error). */
static void my_broken(struct cm_sql_conn *c, const char *what, const char *detail)
{
    struct my_conn *mc = c->drv;
    char msg[256];
    if (detail == NULL) {
        detail = mc != NULL && mc->m != NULL ? mysql_error(mc->m) : "";
    }
    snprintf(msg, sizeof(msg), "%s: %.200s", what, detail);
    cm_sql_conn_broken(c, msg);
}

static void my_drop(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc == NULL) {
        return;
    }
    if (mc->ev != NULL) {
        event_free(mc->ev);
    }
    if (mc->res != NULL) {
        mysql_free_result(mc->res);
    }
    if (mc->m != NULL) {
        /* First: mysql_close detaches the statements, so closing them below frees memory and
         * sends nothing on a connection that may be dead. */
        mysql_close(mc->m);
    }
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < MY_NSIZES; i++) {
            if (mc->stmts[k][i] != NULL) {
                mysql_stmt_close(mc->stmts[k][i]);
            }
        }
    }
    cm_free(mc->rows);
    cm_free(mc->binds);
    cm_free(mc->rbuf[0]);
    cm_free(mc->rbuf[1]);
    cm_buf_deinit(&mc->q);
    cm_free(mc);
    c->drv = NULL;
}

/* Waits for what the connector asked for (MYSQL_WAIT_* bits in status). */
static void my_wait(struct cm_sql_conn *c, int status)
{
    struct my_conn *mc = c->drv;
    short flags = 0;
    if (status & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT)) {
        flags |= EV_READ;
    }
    if (status & MYSQL_WAIT_WRITE) {
        flags |= EV_WRITE;
    }
    event_del(mc->ev);
    event_assign(mc->ev, c->pool->st->base, flags ? mysql_get_socket(mc->m) : -1, flags,
                 my_io_cb, c);
    if (status & MYSQL_WAIT_TIMEOUT) {
        unsigned int ms = mysql_get_timeout_value_ms(mc->m);
        struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
        event_add(mc->ev, &tv);
    } else {
        event_add(mc->ev, NULL);
    }
}

/* Nothing on the wire: any input now means the server closed the connection (or killed it). */
static void my_idle(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    mc->phase = MY_IDLE;
    my_wait(c, MYSQL_WAIT_READ);
}

static void my_connect(struct cm_sql_conn *c)
{
    struct my_pool *p = myp(c);
    struct my_conn *mc = cm_calloc(1, sizeof(*mc));
    unsigned int ctimeout = MY_CONNECT_TIMEOUT_S;
    c->drv = mc;
    cm_buf_init(&mc->q);
    mc->ev = event_new(c->pool->st->base, -1, 0, my_io_cb, c);
    mc->m = mysql_init(NULL);
    if (mc->m == NULL) {
        cm_sql_conn_broken(c, "mysql_init failed");
        return;
    }
    mysql_options(mc->m, MYSQL_OPT_NONBLOCK, 0);
    mysql_options(mc->m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(mc->m, MYSQL_OPT_CONNECT_TIMEOUT, &ctimeout);
    mc->phase = MY_CONNECTING;
    /* The URL's host name as sql_common resolved it off the loop; MariaDB would block. */
    const char *host = c->addr[0] != '\0' ? c->addr : p->url.host ? p->url.host : "127.0.0.1";
    int st = mysql_real_connect_start(&mc->cret, mc->m, host,
                                      p->url.user ? p->url.user : "root", p->url.password,
                                      p->url.path && p->url.path[0] ? p->url.path : NULL,
                                      p->url.port ? (unsigned)p->url.port : 3306, NULL, 0);
    my_step(c, st);
}

/* Starts a statement in phase ph; its completion comes back through my_step. */
static void my_query(struct cm_sql_conn *c, enum my_phase ph)
{
    struct my_conn *mc = c->drv;
    mc->phase = ph;
    my_step(c, mysql_real_query_start(&mc->qerr, mc->m, cm_buf_start(&mc->q),
                                      (unsigned long)cm_buf_used(&mc->q)));
}

static void my_probe(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    cm_buf_reset(&mc->q);
    cm_buf_printf(&mc->q,
                  "SELECT (SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE "
                  "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '%s' AND COLUMN_NAME = 'value'), "
                  "@@max_allowed_packet",
                  c->pool->table);
    my_query(c, MY_PROBE_QUERY);
}

static void my_setup(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (!c->pool->st->conf->create_table) {
        my_probe(c);
        return;
    }
    cm_buf_reset(&mc->q);
    cm_sql_schema(&mc->q, CM_SQL_MYSQL, c->pool->table);
    /* One statement without the script's trailing ";\n" (no multi-statements). */
    while (cm_buf_used(&mc->q) > 0 && strchr(";\n", cm_buf_start(&mc->q)[cm_buf_used(&mc->q) - 1])) {
        mc->q.len--;
    }
    my_query(c, MY_SETUP_QUERY);
}

static void probe_row(struct cm_sql_conn *c, MYSQL_ROW row)
{
    struct my_pool *p = myp(c);
    const char *type = row[0];
    p->max_value = MY_BLOB_MAX;
    if (type != NULL && strcasecmp(type, "mediumblob") == 0) {
        p->max_value = 16777215u;
    } else if (type != NULL && strcasecmp(type, "longblob") == 0) {
        p->max_value = 4294967295u;
    } else if (type != NULL && strcasecmp(type, "tinyblob") == 0) {
        p->max_value = 255u;
    }
    p->max_packet = row[1] != NULL ? strtoull(row[1], NULL, 10) : 16u << 20;
    cm_log(CM_LOG_INFO, "storage %s: table %s value column %s holds %llu bytes, "
                        "max_allowed_packet %llu",
           c->pool->st->name, p->qtable, type ? type : "(missing)",
           (unsigned long long)p->max_value, (unsigned long long)p->max_packet);
}

/* The smallest statement size that holds n rows (n <= MY_BATCH_MAX). */
static size_t size_index(size_t n)
{
    size_t i = 0;
    while (my_sizes[i] < n) {
        i++;
    }
    return i;
}

/* The text of the statement for op kind `kind` over n rows. */
static void stmt_text(struct cm_buf *q, const char *qtable, enum cm_st_op_kind kind, size_t n)
{
    cm_buf_reset(q);
    switch (kind) {
    case CM_ST_GET:
        /* updated_at is naive UTC like expire (our writes use UTC_TIMESTAMP(6); Cacheme's
         * column default now(6) is the session's time zone, UTC on a UTC server) */
        cm_buf_printf(q,
                      "SELECT `key`, value, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', updated_at) "
                      "DIV 1000 FROM %s WHERE `key` IN (",
                      qtable);
        break;
    case CM_ST_SET:
        cm_buf_printf(q, "INSERT INTO %s (`key`, value, expire, updated_at) VALUES ", qtable);
        break;
    case CM_ST_DEL:
        cm_buf_printf(q, "DELETE FROM %s WHERE `key` IN (", qtable);
        break;
    }
    for (size_t i = 0; i < n; i++) {
        if (kind == CM_ST_SET) {
            cm_buf_append_str(q, i ? ", " : "");
            cm_buf_append_str(q, "(?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, "
                                 "UTC_TIMESTAMP(6))");
        } else {
            cm_buf_append_str(q, i ? ", ?" : "?");
        }
    }
    switch (kind) {
    case CM_ST_GET:
        cm_buf_append_str(q, ") AND (expire IS NULL OR expire > UTC_TIMESTAMP(6))");
        break;
    case CM_ST_SET:
        /* updated_at on every write, upserts included: SPEC §12's age of an entry */
        cm_buf_append_str(q, " ON DUPLICATE KEY UPDATE value = VALUES(value), "
                             "expire = VALUES(expire), updated_at = VALUES(updated_at)");
        break;
    case CM_ST_DEL:
        cm_buf_append_str(q, ")");
        break;
    }
}

static size_t row_bytes(const struct cm_st_item *it)
{
    return it->klen + it->wlen + MY_ROW_OVERHEAD;
}

/* What the `key` VARCHAR(512) utf8mb4 column refuses: invalid UTF-8 ("Incorrect string value"
 * fails the statement, which would fail every key of its batch) and more than 512 characters
 * ("Data too long"). A NUL byte is a character like any other there. Issue 14, defect 15. */
#define MY_KEY_RULES (CM_KEY_UTF8 | CM_KEY_MAX_CHARS)

/* Fills mc->rows with the items op sends (keys the column cannot hold are left out). SET: values larger than the column (or the packet) are
 * refused and counted, and an item superseded by a later one of the same key is left out. */
static void plan_rows(struct cm_sql_conn *c, struct cm_st_op *op)
{
    struct my_pool *p = myp(c);
    struct my_conn *mc = c->drv;
    if (mc->rows_cap < op->nitems) {
        mc->rows = cm_realloc(mc->rows, op->nitems * sizeof(*mc->rows));
        mc->rows_cap = op->nitems;
    }
    mc->nrows = 0;
    mc->off = 0;
    for (size_t i = 0; i < op->nitems; i++) {
        const struct cm_st_item *it = &op->items[i];
        if (!cm_st_item_fits(op, i, MY_KEY_RULES)) {
            continue;   /* a miss, never written, and no error for the other keys */
        }
        if (op->kind != CM_ST_SET) {
            mc->rows[mc->nrows++] = i;
            continue;
        }
        if (it->wlen > p->max_value || row_bytes(it) + MY_PACKET_SLACK > p->max_packet) {
            char k[80];
            cm_log_escape(k, sizeof(k), it->key, it->klen, 64);
            cm_log(CM_LOG_WARN,
                   "storage %s: value of %zu bytes for key '%s' refused: the value column of "
                   "%s holds %llu bytes (max_allowed_packet %llu); use MEDIUMBLOB for more",
                   c->pool->st->name, it->wlen, k, p->qtable, (unsigned long long)p->max_value,
                   (unsigned long long)p->max_packet);
            cm_st_op_fail(op, "value of %zu bytes for key '%s' larger than the column holds "
                              "(%llu bytes)",
                          it->wlen, k, (unsigned long long)p->max_value);
            c->pool->st->stats.rejected++;
            continue;
        }
        if (!cm_sql_item_superseded(op, i)) {
            mc->rows[mc->nrows++] = i;
        }
    }
}

/* How many of the rows from mc->off the next batch takes. An upsert batch, padded to its
 * statement size with copies of its smallest row, stays within max_allowed_packet. */
static size_t batch_rows(struct cm_sql_conn *c, const struct cm_st_op *op)
{
    struct my_conn *mc = c->drv;
    size_t left = mc->nrows - mc->off;
    size_t n = left < MY_BATCH_MAX ? left : MY_BATCH_MAX;
    if (op->kind != CM_ST_SET) {
        return n;
    }
    uint64_t budget = myp(c)->max_packet - MY_PACKET_SLACK;
    uint64_t total = 0;
    size_t smallest = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t b = row_bytes(&op->items[mc->rows[mc->off + i]]);
        size_t sm = b < smallest ? b : smallest;
        uint64_t padded = total + b + (uint64_t)(my_sizes[size_index(i + 1)] - (i + 1)) * sm;
        if (i > 0 && padded > budget) {
            return i;
        }
        total += b;
        smallest = sm;
    }
    return n;
}

static void bind_str(MYSQL_BIND *b, enum enum_field_types type, const char *s, size_t n)
{
    b->buffer_type = type;
    b->buffer = (char *)(s != NULL ? s : "");
    b->buffer_length = (unsigned long)n;
}

/* Binds the batch [mc->off, mc->off + mc->batch) to mc->stmt. Returns CM_OK or CM_ERR. */
static int bind_batch(struct cm_sql_conn *c, const struct cm_st_op *op)
{
    struct my_conn *mc = c->drv;
    size_t size = my_sizes[mc->size_idx];
    size_t per = op->kind == CM_ST_SET ? 3 : 1;
    if (mc->binds_cap < size * per) {
        cm_free(mc->binds);
        mc->binds = cm_calloc(size * per, sizeof(*mc->binds));
        mc->binds_cap = size * per;
    }
    memset(mc->binds, 0, size * per * sizeof(*mc->binds));
    const size_t *rows = mc->rows + mc->off;
    size_t pad = rows[0];
    for (size_t i = 1; i < mc->batch && op->kind == CM_ST_SET; i++) {
        if (row_bytes(&op->items[rows[i]]) < row_bytes(&op->items[pad])) {
            pad = rows[i];
        }
    }
    /* A ttl ending past CM_ST_EXPIRE_MAX_MS (DATETIME ends at 9999-12-31) is stored as never
     * expiring; below it, ms * 1000 fits in a long long. */
    bool forever = cm_st_ttl_forever(op->ttl_ms, cm_wall_us() / 1000);
    mc->ttl_us = forever ? 0 : (long long)op->ttl_ms * 1000;
    for (size_t i = 0; i < size; i++) {
        MYSQL_BIND *b = &mc->binds[i * per];
        if (op->kind != CM_ST_SET) {
            /* NULL pads a key list: `key` IN (..., NULL) matches no row */
            if (i < mc->batch) {
                const struct cm_st_item *it = &op->items[rows[i]];
                bind_str(b, MYSQL_TYPE_STRING, it->key, it->klen);
            } else {
                b->buffer_type = MYSQL_TYPE_NULL;
            }
            continue;
        }
        /* the upsert pads with its smallest row again: same key, value and ttl, no change */
        const struct cm_st_item *it = &op->items[i < mc->batch ? rows[i] : pad];
        bind_str(&b[0], MYSQL_TYPE_STRING, it->key, it->klen);
        bind_str(&b[1], MYSQL_TYPE_BLOB, it->wval, it->wlen);
        if (!forever) {
            b[2].buffer_type = MYSQL_TYPE_LONGLONG;
            b[2].buffer = &mc->ttl_us;
        } else {
            b[2].buffer_type = MYSQL_TYPE_NULL;   /* + INTERVAL NULL = NULL: never expires */
        }
    }
    return mysql_stmt_bind_param(mc->stmt, mc->binds) ? CM_ERR : CM_OK;
}

/* Client-side errors (CR_*, 2000-2999) mean the connection is gone; server errors do not. */
static bool client_error(unsigned int e)
{
    return e >= 2000 && e < 3000;
}

/* c->cur is complete (or failed): the connection is idle again. */
static void op_finished(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    for (size_t i = 0; i < 2; i++) {
        if (mc->rcap[i] > MY_SCRATCH_KEEP) {
            cm_free(mc->rbuf[i]);
            mc->rbuf[i] = NULL;
            mc->rcap[i] = 0;
        }
    }
    my_idle(c);
    cm_sql_conn_op_done(c);
}

/* A statement call for c->cur failed: a lost connection breaks it, a server error fails the op. */
static void stmt_failed(struct cm_sql_conn *c, const char *what)
{
    struct my_conn *mc = c->drv;
    if (client_error(mysql_stmt_errno(mc->stmt))) {
        my_broken(c, what, mysql_stmt_error(mc->stmt));
        return;
    }
    cm_st_op_fail(c->cur, "%s: %s", what, mysql_stmt_error(mc->stmt));
    if (mc->phase == MY_PREPARE) {
        /* A statement the server refused to prepare (say, the table is missing) is not kept: the
         * next op prepares it again. An unprepared statement closes without a word to the server. */
        mysql_stmt_close(mc->stmt);
        mc->stmt = mc->stmts[c->cur->kind][mc->size_idx] = NULL;
    }
    op_finished(c);
}

/* Sends the next batch of c->cur (preparing its statement first if this connection has not), or
 * finishes the op when every row is done. */
static void next_batch(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    struct cm_st_op *op = c->cur;
    if (mc->off >= mc->nrows || op->timed_out) {
        /* A timed-out op's caller has its answer and may have freed the SET values. */
        op_finished(c);
        return;
    }
    mc->batch = batch_rows(c, op);
    mc->size_idx = size_index(mc->batch);
    MYSQL_STMT **slot = &mc->stmts[op->kind][mc->size_idx];
    mc->stmt = *slot;
    if (mc->stmt == NULL) {
        mc->stmt = *slot = mysql_stmt_init(mc->m);
        if (mc->stmt == NULL) {
            my_broken(c, "mysql_stmt_init", NULL);
            return;
        }
        stmt_text(&mc->q, myp(c)->qtable, op->kind, my_sizes[mc->size_idx]);
        mc->phase = MY_PREPARE;
        my_step(c, mysql_stmt_prepare_start(&mc->qerr, mc->stmt, cm_buf_start(&mc->q),
                                            (unsigned long)cm_buf_used(&mc->q)));
        return;
    }
    mc->phase = MY_EXECUTE;
    if (bind_batch(c, op) != CM_OK) {
        stmt_failed(c, "bind");
        return;
    }
    my_step(c, mysql_stmt_execute_start(&mc->qerr, mc->stmt));
}

static void prepare_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->qerr != 0) {
        stmt_failed(c, "prepare");
        return;
    }
    next_batch(c);   /* finds the statement prepared and executes it */
}

static void execute_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->qerr != 0) {
        stmt_failed(c, "execute");
        return;
    }
    if (c->cur->kind == CM_ST_GET) {
        mc->phase = MY_STMT_STORE;
        my_step(c, mysql_stmt_store_result_start(&mc->qerr, mc->stmt));
        return;
    }
    mc->off += mc->batch;
    next_batch(c);
}

/* Points result column i at its buffer, grown to hold at least need bytes. */
static void result_buf(struct my_conn *mc, size_t i, unsigned long need)
{
    if (mc->rbuf[i] == NULL || mc->rcap[i] < need) {
        unsigned long cap = need > 4096 ? need : 4096;
        cm_free(mc->rbuf[i]);
        mc->rbuf[i] = cm_malloc(cap);
        mc->rcap[i] = cap;
    }
    MYSQL_BIND *b = &mc->rbind[i];
    memset(b, 0, sizeof(*b));
    b->buffer_type = i == 0 ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
    b->buffer = mc->rbuf[i];
    b->buffer_length = mc->rcap[i];
    b->length = &mc->rlen[i];
    b->is_null = &mc->rnull[i];
}

/* The rows of a GET batch are in client memory: fetching them does no I/O. A column longer than
 * its buffer is fetched again, whole, into a bigger one (mysql_stmt_fetch_column). */
static void stmt_store_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->qerr != 0) {
        stmt_failed(c, "read result");
        return;
    }
    result_buf(mc, 0, 0);
    result_buf(mc, 1, 0);
    memset(&mc->rbind[2], 0, sizeof(mc->rbind[2]));
    mc->rbind[2].buffer_type = MYSQL_TYPE_LONGLONG;
    mc->rbind[2].buffer = &mc->rwritten;
    mc->rbind[2].is_null = &mc->rnull[2];
    mc->rbind[2].length = &mc->rlen[2];
    int r = mysql_stmt_bind_result(mc->stmt, mc->rbind) ? 1 : 0;
    while (r == 0 && (r = mysql_stmt_fetch(mc->stmt)) != MYSQL_NO_DATA) {
        if (r != 0 && r != MYSQL_DATA_TRUNCATED) {
            break;
        }
        r = 0;
        for (size_t i = 0; i < 2 && r == 0; i++) {
            if (!mc->rnull[i] && mc->rlen[i] > mc->rcap[i]) {
                result_buf(mc, i, mc->rlen[i]);
                r = mysql_stmt_fetch_column(mc->stmt, &mc->rbind[i], (unsigned)i, 0) ||
                    mysql_stmt_bind_result(mc->stmt, mc->rbind);
            }
        }
        if (r == 0 && !mc->rnull[0] && !mc->rnull[1]) {
            int64_t written = !mc->rnull[2] && mc->rwritten > 0 ? (int64_t)mc->rwritten : 0;
            cm_sql_op_hit(c->cur, mc->rbuf[0], mc->rlen[0], mc->rbuf[1], mc->rlen[1], written);
        }
    }
    if (r != MYSQL_NO_DATA) {
        cm_st_op_fail(c->cur, "fetch: %s", mysql_stmt_error(mc->stmt));
    }
    mysql_stmt_free_result(mc->stmt);
    if (r != MYSQL_NO_DATA) {
        op_finished(c);
        return;
    }
    mc->off += mc->batch;
    next_batch(c);
}

static void my_send(struct cm_sql_conn *c, struct cm_st_op *op)
{
    plan_rows(c, op);
    next_batch(c);   /* no rows (every value refused): finishes at once */
}

/* A text statement of the setup has completed (mc->qerr holds its result). */
static void query_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->qerr != 0) {
        if (client_error(mysql_errno(mc->m))) {
            my_broken(c, "query", NULL);
            return;
        }
        cm_log(CM_LOG_ERR, "storage %s: %s failed: %s", c->pool->st->name,
               mc->phase == MY_SETUP_QUERY ? "create_table" : "column probe", mysql_error(mc->m));
        if (mc->phase == MY_SETUP_QUERY) {
            my_probe(c);
            return;
        }
        my_idle(c);
        cm_sql_conn_setup_done(c);
        return;
    }
    if (mc->phase == MY_SETUP_QUERY) {
        my_probe(c);
        return;
    }
    if (mysql_field_count(mc->m) > 0) {
        mc->phase = MY_PROBE_STORE;
        my_step(c, mysql_store_result_start(&mc->res, mc->m));
        return;
    }
    my_idle(c);
    cm_sql_conn_setup_done(c);
}

static void store_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->res == NULL) {
        my_broken(c, "read result", NULL);
        return;
    }
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(mc->res)) != NULL) {
        probe_row(c, row);
    }
    mysql_free_result(mc->res);
    mc->res = NULL;
    my_idle(c);
    cm_sql_conn_setup_done(c);
}

/* status: what the last _start/_cont returned; 0 = the call completed. */
static void my_step(struct cm_sql_conn *c, int status)
{
    struct my_conn *mc = c->drv;
    if (status != 0) {
        my_wait(c, status);
        return;
    }
    switch (mc->phase) {
    case MY_CONNECTING:
        if (mc->cret == NULL) {
            my_broken(c, "connect", NULL);
            return;
        }
        my_idle(c);
        cm_sql_conn_connected(c);
        return;
    case MY_SETUP_QUERY:
    case MY_PROBE_QUERY:
        query_done(c);
        return;
    case MY_PROBE_STORE:
        store_done(c);
        return;
    case MY_PREPARE:
        prepare_done(c);
        return;
    case MY_EXECUTE:
        execute_done(c);
        return;
    case MY_STMT_STORE:
        stmt_store_done(c);
        return;
    case MY_IDLE:
        break;
    }
    CM_NOT_REACHED();
}

static void my_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cm_sql_conn *c = arg;
    struct my_conn *mc = c->drv;
    int ready = 0;
    CM_UNUSED(fd);
    if (what & EV_READ) {
        ready |= MYSQL_WAIT_READ;
    }
    if (what & EV_WRITE) {
        ready |= MYSQL_WAIT_WRITE;
    }
    if (what & EV_TIMEOUT) {
        ready |= MYSQL_WAIT_TIMEOUT;
    }
    switch (mc->phase) {
    case MY_IDLE: {
        /* Idle input is EOF or an unsolicited error packet (killed, shutdown): both end the
         * connection. A wake-up with nothing to read is ignored. */
        char b;
        ssize_t n = recv(mysql_get_socket(mc->m), &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            my_wait(c, MYSQL_WAIT_READ);
            return;
        }
        cm_sql_conn_broken(c, n == 0 ? "the server closed the connection"
                                     : "unexpected data from the server while idle");
        return;
    }
    case MY_CONNECTING:
        my_step(c, mysql_real_connect_cont(&mc->cret, mc->m, ready));
        return;
    case MY_SETUP_QUERY:
    case MY_PROBE_QUERY:
        my_step(c, mysql_real_query_cont(&mc->qerr, mc->m, ready));
        return;
    case MY_PROBE_STORE:
        my_step(c, mysql_store_result_cont(&mc->res, mc->m, ready));
        return;
    case MY_PREPARE:
        my_step(c, mysql_stmt_prepare_cont(&mc->qerr, mc->stmt, ready));
        return;
    case MY_EXECUTE:
        my_step(c, mysql_stmt_execute_cont(&mc->qerr, mc->stmt, ready));
        return;
    case MY_STMT_STORE:
        my_step(c, mysql_stmt_store_result_cont(&mc->qerr, mc->stmt, ready));
        return;
    }
}

static int my_open(struct cm_storage *st, char *err, size_t errsz)
{
    static const struct cm_sql_driver drv = {
        .connect = my_connect, .setup = my_setup, .send = my_send, .drop = my_drop,
        .keep_host = "localhost",
    };
    struct my_pool *p = cm_calloc(1, sizeof(*p));
    p->max_value = MY_BLOB_MAX;
    p->max_packet = 16u << 20;
    if (cm_url_parse(st->conf->url, &p->url, err, errsz) != CM_OK) {
        cm_free(p);
        return CM_ERR;
    }
    st->priv = p;
    if (cm_sql_pool_init(&p->pool, st, &drv, err, errsz) != CM_OK) {
        cm_url_deinit(&p->url);
        cm_free(p);
        st->priv = NULL;
        return CM_ERR;
    }
    /* Connecting is asynchronous: nothing uses qtable before this returns. */
    snprintf(p->qtable, sizeof(p->qtable), "`%s`", p->pool.table);
    return CM_OK;
}

static void my_submit(struct cm_storage *st, struct cm_st_op *op)
{
    struct my_pool *p = st->priv;
    cm_sql_pool_submit(&p->pool, op);
}

static void my_close(struct cm_storage *st)
{
    struct my_pool *p = st->priv;
    if (p == NULL) {
        return;
    }
    cm_sql_pool_deinit(&p->pool);
    cm_url_deinit(&p->url);
    cm_free(p);
    st->priv = NULL;
}

const struct cm_storage_ops cm_st_mysql_ops = {
    .name = "mysql",
    .wrapped = false,
    .open = my_open,
    .submit = my_submit,
    .close = my_close,
};
