/* What the PostgreSQL and MySQL storages share: a pool of connections, each with a FIFO of ops
 * and one op on the wire, reconnects with backoff, the once-per-pool setup (schema), and the
 * Cacheme schemas. The drivers (st_pg.c, st_mysql.c) only speak their client library. */
#ifndef CM_STORAGES_SQL_COMMON_H
#define CM_STORAGES_SQL_COMMON_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct cm_buf;
struct cm_storage;
struct cm_st_op;
struct cm_sql_pool;

enum cm_sql_dialect {
    CM_SQL_PG,
    CM_SQL_MYSQL,
};

enum cm_sql_conn_state {
    CM_SQL_DOWN,         /* no connection; retry timer armed; new ops fail at once (a miss) */
    CM_SQL_CONNECTING,   /* driver connect in progress; ops queue */
    CM_SQL_SETUP,        /* this conn runs the pool's setup (schema, probes); ops queue */
    CM_SQL_WAIT_SETUP,   /* connected, another conn runs the setup; ops queue */
    CM_SQL_READY,        /* ops go on the wire one at a time */
};

/* One server connection. Owned by its pool. */
struct cm_sql_conn {
    struct cm_sql_pool *pool;
    size_t idx;                    /* position in pool->conns */
    enum cm_sql_conn_state state;
    struct cm_st_op *qhead;        /* ops waiting for the wire, FIFO through op->bnext */
    struct cm_st_op *qtail;
    size_t qlen;
    struct cm_st_op *cur;          /* op on the wire, or NULL */
    struct event *retry;           /* reconnect timer */
    int64_t backoff_ms;            /* next retry delay: 100 ms doubling to 5 s */
    bool kicking;                  /* inside kick(): op_done must not recurse */
    bool logged_down;              /* "down" was logged since the last successful connect */
    void *drv;                     /* driver connection state, owned by the driver */
    struct cm_lookup *lookup;      /* resolving pool->host before a connect, else NULL */
    char addr[64];                 /* pool->host resolved for the current connect; "" = none */
};

/* A driver: the client-library half of a SQL storage. Every callback runs on the loop thread. */
struct cm_sql_driver {
    /* Starts an asynchronous connect. Ends later (or at once) in cm_sql_conn_connected or
     * cm_sql_conn_broken. */
    void (*connect)(struct cm_sql_conn *c);
    /* Runs the once-per-pool setup on a connected conn (may be NULL). Ends in
     * cm_sql_conn_setup_done or cm_sql_conn_broken. */
    void (*setup)(struct cm_sql_conn *c);
    /* Puts op on the wire (c->cur == op). Ends in cm_sql_conn_op_done or cm_sql_conn_broken;
     * either may be called from inside send. */
    void (*send)(struct cm_sql_conn *c, struct cm_st_op *op);
    /* Frees the driver's connection state and events (c->drv), if any. Never finishes ops. */
    void (*drop)(struct cm_sql_conn *c);
    /* A host name the client library handles without DNS (MariaDB: "localhost" is its unix
     * socket), left unresolved; NULL for none. */
    const char *keep_host;
};

/* The shared part of a SQL storage's st->priv. */
struct cm_sql_pool {
    struct cm_storage *st;
    const struct cm_sql_driver *drv;
    struct cm_sql_conn *conns;     /* nconns entries, owned */
    size_t nconns;
    int setup_state;               /* 0 not run, 1 running, 2 done */
    struct cm_st_op *dhead;        /* finished ops to report from the loop, through op->bnext */
    struct cm_st_op *dtail;
    struct event *dev;             /* reports dhead */
    char table[64];                /* validated table name, as configured */
    char *host;                    /* the URL's host name, resolved off the loop before each
                                    * connect (the client libraries would block); or NULL */
    struct cm_resolver *resolver;  /* when host is set */
    void *priv;                    /* driver-wide state, owned by the driver */
};

/* Validates conf->table, creates pool->nconns conns (conf->pool_size) and starts connecting each.
 * Returns CM_OK, or CM_ERR with a reason in err. */
int cm_sql_pool_init(struct cm_sql_pool *pool, struct cm_storage *st,
                     const struct cm_sql_driver *drv, char *err, size_t errsz) CM_MUSTCHECK;
/* Routes op to the conn of its first key's hash. Never finishes op synchronously. */
void cm_sql_pool_submit(struct cm_sql_pool *pool, struct cm_st_op *op);
/* Drops every conn, finishes every op still held with CM_ERR, frees the pool's memory (not pool). */
void cm_sql_pool_deinit(struct cm_sql_pool *pool);

/* Driver side: the conn is connected; runs the setup or makes it ready. */
void cm_sql_conn_connected(struct cm_sql_conn *c);
/* Driver side: the setup ran on c (ok, or failed for a reason that retrying will not fix). */
void cm_sql_conn_setup_done(struct cm_sql_conn *c);
/* Driver side: c->cur is complete (results and status filled); sends the next op. */
void cm_sql_conn_op_done(struct cm_sql_conn *c);
/* Driver side: the connection is unusable. Drops it, fails its ops (CM_ERR, a miss), and arms
 * the reconnect timer. */
void cm_sql_conn_broken(struct cm_sql_conn *c, const char *reason);

/* True when name is a plain identifier: [A-Za-z_][A-Za-z0-9_]*, at most 48 characters. */
bool cm_sql_table_valid(const char *name);
/* Appends the schema script (storages/scripts/{postgresql,mysql}.sql) for table. */
void cm_sql_schema(struct cm_buf *out, enum cm_sql_dialect d, const char *table);
/* A GET row: every item of op whose key equals key gets a copy of val as a hit, written at
 * wall-clock written_ms (updated_at; 0 = unknown). */
void cm_sql_op_hit(struct cm_st_op *op, const char *key, size_t klen, const char *val,
                   size_t vlen, int64_t written_ms);
/* True when item i of op has the same key as a later item (a SET writes only the last one). */
bool cm_sql_item_superseded(const struct cm_st_op *op, size_t i);

#endif
