/* mysql:// storage: Cacheme's table through MariaDB Connector/C's non-blocking API
 * (mysql_*_start/_cont on mysql_get_socket, driven by libevent). pool_size connections
 * (storages/sql_common.c), one statement on the wire per connection.
 *
 * Keys and values reach the server only as hex literals (_utf8mb4 X'6b6579', X'00ff'): the SQL
 * text never contains a byte of client data, so no key or value can alter a statement. The
 * non-blocking prepared-statement calls exist too, but an IN list of n keys would need one
 * prepared statement per n; hex literals give the same guarantee with one round trip.
 * expire is a naive-UTC DATETIME(6), compared with UTC_TIMESTAMP(6). */
#include "conf/conf.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "storages/sql_common.h"
#include "storages/storage.h"

#include <errno.h>
#include <event2/event.h>
#include <mysql.h>
#include <sys/socket.h>
#include <string.h>
#include <strings.h>

#define MY_CONNECT_TIMEOUT_S 5
#define MY_BLOB_MAX 65535u   /* BLOB; the probe at connect finds MEDIUMBLOB/LONGBLOB */

enum my_phase {
    MY_CONNECTING,    /* mysql_real_connect_start/_cont */
    MY_IDLE,          /* nothing on the wire; readable socket = the server went away */
    MY_SETUP_QUERY,   /* CREATE TABLE IF NOT EXISTS */
    MY_PROBE_QUERY,   /* value column type and max_allowed_packet */
    MY_PROBE_STORE,
    MY_OP_QUERY,      /* c->cur on the wire */
    MY_OP_STORE,
};

/* The driver state of one connection (c->drv). Owned by the conn. */
struct my_conn {
    MYSQL *m;
    enum my_phase phase;
    struct event *ev;     /* the one socket/timeout event, re-armed for every wait */
    struct cm_buf q;      /* statement text, alive until the statement completes */
    int qerr;             /* mysql_real_query's result */
    MYSQL *cret;          /* mysql_real_connect's result */
    MYSQL_RES *res;       /* mysql_store_result's result */
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

static void my_broken(struct cm_sql_conn *c, const char *what)
{
    struct my_conn *mc = c->drv;
    char msg[256];
    snprintf(msg, sizeof(msg), "%s: %s", what, mc != NULL && mc->m != NULL ? mysql_error(mc->m) : "");
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
        mysql_close(mc->m);
    }
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
    int st = mysql_real_connect_start(&mc->cret, mc->m, p->url.host ? p->url.host : "127.0.0.1",
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

static void hex_lit(struct cm_buf *out, const char *intro, const char *s, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    cm_buf_append_str(out, intro);
    cm_buf_append(out, "X'", 2);
    char *dst = cm_buf_reserve(out, 2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[(unsigned char)s[i] >> 4];
        dst[2 * i + 1] = digits[(unsigned char)s[i] & 15];
    }
    cm_buf_commit(out, 2 * n);
    cm_buf_append(out, "'", 1);
}

static void keys_in(struct cm_buf *q, const struct cm_st_op *op)
{
    cm_buf_append_str(q, "`key` IN (");
    for (size_t i = 0; i < op->nitems; i++) {
        hex_lit(q, i ? ", _utf8mb4 " : "_utf8mb4 ", op->items[i].key, op->items[i].klen);
    }
    cm_buf_append(q, ")", 1);
}

/* Builds the upsert; values larger than the column (or the packet) are refused and counted.
 * Returns the number of rows in the statement. */
static size_t build_set(struct cm_sql_conn *c, struct cm_st_op *op)
{
    struct my_pool *p = myp(c);
    struct my_conn *mc = c->drv;
    struct cm_buf *q = &mc->q;
    char expire[64];
    size_t rows = 0;
    if (op->ttl_ms > 0) {
        snprintf(expire, sizeof(expire), "UTC_TIMESTAMP(6) + INTERVAL %lld MICROSECOND",
                 (long long)op->ttl_ms * 1000);
    } else {
        snprintf(expire, sizeof(expire), "NULL");
    }
    cm_buf_printf(q, "INSERT INTO %s (`key`, value, expire) VALUES ", p->qtable);
    for (size_t i = 0; i < op->nitems; i++) {
        const struct cm_st_item *it = &op->items[i];
        if (it->wlen > p->max_value || 2 * it->wlen + 1024 > p->max_packet) {
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
        cm_buf_append_str(q, rows ? ", (" : "(");
        hex_lit(q, "_utf8mb4 ", it->key, it->klen);
        hex_lit(q, ", ", it->wval != NULL ? it->wval : "", it->wlen);
        cm_buf_printf(q, ", %s)", expire);
        rows++;
    }
    cm_buf_append_str(q, " ON DUPLICATE KEY UPDATE value = VALUES(value), "
                         "expire = VALUES(expire)");
    return rows;
}

static void my_send(struct cm_sql_conn *c, struct cm_st_op *op)
{
    struct my_pool *p = myp(c);
    struct my_conn *mc = c->drv;
    struct cm_buf *q = &mc->q;
    cm_buf_reset(q);
    switch (op->kind) {
    case CM_ST_GET:
        cm_buf_printf(q, "SELECT `key`, value FROM %s WHERE ", p->qtable);
        keys_in(q, op);
        cm_buf_append_str(q, " AND (expire IS NULL OR expire > UTC_TIMESTAMP(6))");
        break;
    case CM_ST_SET:
        if (build_set(c, op) == 0) {
            cm_sql_conn_op_done(c);   /* every value was refused */
            return;
        }
        break;
    case CM_ST_DEL:
        cm_buf_printf(q, "DELETE FROM %s WHERE ", p->qtable);
        keys_in(q, op);
        break;
    default:
        CM_NOT_REACHED();
    }
    my_query(c, MY_OP_QUERY);
}

/* Client-side errors (CR_*, 2000-2999) mean the connection is gone; server errors do not. */
static bool conn_error(MYSQL *m)
{
    unsigned int e = mysql_errno(m);
    return e >= 2000 && e < 3000;
}

/* A statement of the current phase has completed (mc->qerr holds its result). */
static void query_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->qerr != 0) {
        if (conn_error(mc->m)) {
            my_broken(c, "query");
            return;
        }
        if (mc->phase == MY_OP_QUERY) {
            cm_st_op_fail(c->cur, "%s", mysql_error(mc->m));
            my_idle(c);
            cm_sql_conn_op_done(c);
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
        mc->phase = mc->phase == MY_OP_QUERY ? MY_OP_STORE : MY_PROBE_STORE;
        my_step(c, mysql_store_result_start(&mc->res, mc->m));
        return;
    }
    my_idle(c);
    cm_sql_conn_op_done(c);
}

static void store_done(struct cm_sql_conn *c)
{
    struct my_conn *mc = c->drv;
    if (mc->res == NULL) {
        my_broken(c, "read result");
        return;
    }
    MYSQL_ROW row;
    bool probe = mc->phase == MY_PROBE_STORE;
    while ((row = mysql_fetch_row(mc->res)) != NULL) {
        unsigned long *len = mysql_fetch_lengths(mc->res);
        if (probe) {
            probe_row(c, row);
        } else if (row[0] != NULL && row[1] != NULL) {
            cm_sql_op_hit(c->cur, row[0], len[0], row[1], len[1]);
        }
    }
    mysql_free_result(mc->res);
    mc->res = NULL;
    my_idle(c);
    if (probe) {
        cm_sql_conn_setup_done(c);
    } else {
        cm_sql_conn_op_done(c);
    }
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
            my_broken(c, "connect");
            return;
        }
        my_idle(c);
        cm_sql_conn_connected(c);
        return;
    case MY_SETUP_QUERY:
    case MY_PROBE_QUERY:
    case MY_OP_QUERY:
        query_done(c);
        return;
    case MY_PROBE_STORE:
    case MY_OP_STORE:
        store_done(c);
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
    case MY_OP_QUERY:
        my_step(c, mysql_real_query_cont(&mc->qerr, mc->m, ready));
        return;
    case MY_PROBE_STORE:
    case MY_OP_STORE:
        my_step(c, mysql_store_result_cont(&mc->res, mc->m, ready));
        return;
    }
}

static int my_open(struct cm_storage *st, char *err, size_t errsz)
{
    static const struct cm_sql_driver drv = {
        .connect = my_connect, .setup = my_setup, .send = my_send, .drop = my_drop,
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
