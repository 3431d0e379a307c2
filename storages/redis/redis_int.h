/* Private to storages/redis/ (pool.c, route.c, pubsub.c, st_redis.c): the Redis storage
 * (redis://), standalone or Redis Cluster (cluster = yes). Each server gets a pool of hiredis
 * async connections on the libevent loop; commands are pipelined; an op's keys are grouped
 * per connection (standalone) or per hash slot (cluster), so ops on one key keep their
 * order. Values are stored as given (already Cacheme's wrapper) and read back untouched.
 *
 * Lifetimes:
 *   op  --bpriv-->  struct rop { nleft }      one per submitted op, freed when nleft hits 0
 *   op  <--rcmd--   struct rcmd               one per command in flight (hiredis privdata);
 *                                             reused across MOVED/ASK retries, freed on its end
 *   rstore -> rnode[] -> rconn[] -> hiredis ac   nodes and conns live until close()
 * Every hiredis callback we register is counted in rconn.npending / rstore.npending; hiredis runs
 * each one exactly once (with a NULL reply when the context is freed), so close() can check that
 * nothing is left behind.
 *
 * Behaviour an operator sees:
 * - A connection that is down makes its commands misses at once; it reconnects after 100 ms,
 *   doubling to 5 s. Connecting (TCP + AUTH + SELECT) has max(timeout, 1 s); a connection with
 *   commands outstanding and no reply for max(2 * timeout, 1 s) is dropped (a SIGSTOPped or
 *   wedged server keeps the socket open forever otherwise).
 * - Cluster: pool_size connections per master. Masters come from CLUSTER SLOTS (asked at open,
 *   after each MOVED and after a lost connection, at most once a second) and are connected on
 *   first use; masters that leave the map keep their idle connections until close.
 *   TRYAGAIN/CLUSTERDOWN replies fail the op (a miss).
 * - A host name is resolved at each (re)connect off the loop (storages/resolve.h), never by
 *   hiredis's getaddrinfo on the loop; while it resolves, the connection is down (its commands
 *   are misses). */
#ifndef CM_STORAGES_REDIS_REDIS_INT_H
#define CM_STORAGES_REDIS_REDIS_INT_H

#include "storages/st_redis.h"
#include "conf/conf.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/resp.h"
#include "daemon/util.h"
#include "storages/redis_cluster.h"
#include "storages/redis_ev.h"
#include "storages/resolve.h"
#include "storages/st_keys.h"
#include "storages/storage.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 100           /* SPEC §1: reconnect backoff, doubled per failure */
#define BACKOFF_MAX_MS 5000          /* ... capped at 5 s */
#define MAX_REDIRECTS 5              /* MOVED/ASK hops per command before the op fails */
#define MAX_PENDING_PER_CONN 65536   /* a connection with more callbacks queued is skipped */
#define FILL_PENDING 4               /* standalone reads: outstanding commands before the next conn */
#define TICK_MS 200                  /* stall checks and delayed slot-map refreshes */
#define REFRESH_MIN_INTERVAL_MS 1000 /* CLUSTER SLOTS at most once a second */
#define WARN_INTERVAL_MS 5000        /* connection trouble: one warning per node per 5 s */

struct rstore;
struct rnode;

/* One hiredis async connection of a node's pool. Owned by its rnode. */
struct rconn {
    struct rnode *node;    /* owner */
    redisAsyncContext *ac; /* NULL while down; hiredis owns and frees it */
    bool ready;            /* connected and AUTH/SELECT answered */
    int hs_left;           /* handshake replies still expected */
    struct event *timer;   /* connect timeout while connecting, backoff while down */
    int64_t backoff_ms;    /* next reconnect delay */
    size_t npending;       /* our callbacks hiredis holds on ac */
    int64_t progress_ns;   /* last reply, or the send that made npending non-zero */
    bool is_sub;           /* rstore.sub: SUBSCRIBEd, not in its node's pool */
    struct cm_lookup *lookup; /* resolving the node's host name, else NULL */
};

/* One server: the standalone server, or one cluster master. Owned by rstore.nodes. */
struct rnode {
    struct rstore *rs; /* owner */
    char *host;
    int port;
    char name[280];      /* "host:port" for logs */
    struct rconn *conns; /* nconns entries; connections are created on first use */
    size_t nconns;
    bool started;
    int64_t warned_ms;   /* last connection warning logged */
    unsigned suppressed; /* warnings swallowed since */
};

/* The storage's private state (st->priv). */
struct rstore {
    struct cm_storage *st;
    char *user;     /* AUTH user (Redis 6 ACL), or NULL */
    char *password; /* AUTH password, or NULL */
    int db;         /* SELECT db when non-zero (standalone only) */
    bool cluster;
    size_t pool; /* connections per node */
    int64_t connect_timeout_ms;
    int64_t stall_ms;     /* a busy connection with no reply for this long is dropped */
    struct rnode **nodes; /* nodes[0] is the URL's server (the seed in cluster mode) */
    size_t nnodes;
    uint16_t *slots;   /* cluster: slot -> node index + 1, 0 = unknown */
    size_t refresh_rr; /* next node to ask for CLUSTER SLOTS */
    bool refresh_inflight;
    bool refresh_wanted; /* a refresh was asked for while rate-limited or in flight */
    int64_t last_refresh_ms;
    struct event *tick;
    size_t npending; /* sum of every rconn.npending */
    bool closing;
    struct cm_st_op *deferred; /* ops that ended inside submit, finished by defer_ev or close */
    struct cm_st_op **deferred_tail;
    struct event *defer_ev;
    struct cm_resolver *resolver; /* created for the first host name */
    struct rconn *sub;   /* pub/sub connection, created by the first subscribe */
    struct rchan *chans; /* nchans subscriptions, in call order (names may repeat) */
    size_t nchans;
    size_t sub_rr;                    /* cluster: next node the subscriber connects to */
    struct cm_st_redis_info counters; /* the uint64_t counters only */
    struct cm_buf cmd;                /* the command being sent, in RESP; reused */
};

/* A command buffer grown past this by a large SET value goes back to the allocator after use. */
#define CMD_KEEP_BYTES (64 * 1024)

/* A channel subscription (cm_st_redis_subscribe). */
struct rchan {
    char *name;
    size_t len;
    cm_st_redis_msg_fn *fn;
    void *arg;
};

/* Backend state of one op (op->bpriv). */
struct rop {
    size_t nleft; /* commands in flight, +1 while submit runs */
};

/* One command in flight for (some keys of) an op. hiredis privdata of its reply callback. */
struct rcmd {
    struct cm_st_op *op;
    struct rconn *conn; /* connection it was last sent on */
    unsigned route;     /* standalone: key hash; cluster: hash slot */
    int redirects;
    size_t n; /* keys: op->items[idx[0..n)] */
    size_t idx[];
};

/* pool.c: connections and nodes */
bool cm_rd_conn_usable(const struct rconn *c);
/* A command was sent on c with a callback (counts it pending). */
void cm_rd_conn_sent(struct rconn *c);
/* A callback of c ran with reply r (NULL when the context is being freed). */
void cm_rd_conn_replied(struct rconn *c, const redisReply *r);
void cm_rd_conn_drop(struct rconn *c, const char *why);
void cm_rd_conn_connect(struct rconn *c);
void cm_rd_conn_init(struct rconn *c, struct rnode *n);
void cm_rd_conn_deinit(struct rconn *c);
void cm_rd_on_asking(redisAsyncContext *ac, void *reply, void *priv);
struct rnode *cm_rd_node_add(struct rstore *rs, const char *host, size_t hostlen, int port);
size_t cm_rd_node_find_or_add(struct rstore *rs, const char *host, size_t hostlen, int port);
void cm_rd_node_free(struct rnode *n);
void cm_rd_node_start(struct rnode *n);
/* A usable connection of n for a command routed by route (writes), or for a read. */
struct rconn *cm_rd_node_pick(struct rnode *n, unsigned route);
struct rconn *cm_rd_node_pick_read(struct rnode *n);
/* Logs connection trouble for n, at most once per WARN_INTERVAL_MS. */
void cm_rd_node_warn(struct rnode *n, const char *fmt, ...) CM_PRINTF(2, 3);

/* route.c: the slot map and the ops */
void cm_rd_cluster_refresh(struct rstore *rs);
struct rnode *cm_rd_slot_node(struct rstore *rs, unsigned slot);
void cm_rd_on_tick(evutil_socket_t fd, short what, void *arg);
void cm_rd_on_defer(evutil_socket_t fd, short what, void *arg);
void cm_rd_finish_deferred(struct rstore *rs);
void cm_rd_redis_submit(struct cm_storage *st, struct cm_st_op *op);

/* pubsub.c */
/* Sends SUBSCRIBE for rs->chans[i] on the subscriber connection c (once per name). */
void cm_rd_sub_send(struct rconn *c, size_t i);

#endif
