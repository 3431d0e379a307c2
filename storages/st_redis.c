/* Redis storage (redis://), standalone or Redis Cluster (cluster = yes). Each server gets a pool
 * of hiredis async connections on the libevent loop; commands are pipelined; an op's keys are
 * grouped per connection (standalone) or per hash slot (cluster), so ops on one key keep their
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

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);
static void conn_connect(struct rconn *c);
static void cluster_refresh(struct rstore *rs);

/* Logs connection trouble for n, at most once per WARN_INTERVAL_MS: with a pool, every
 * connection would otherwise say the same thing at once, again at each retry. */
static void node_warn(struct rnode *n, const char *fmt, ...) CM_PRINTF(2, 3);
static void node_warn(struct rnode *n, const char *fmt, ...)
{
    int64_t now = cm_now_ms();
    if (n->warned_ms != 0 && now - n->warned_ms < WARN_INTERVAL_MS) {
        n->suppressed++;
        return;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n->suppressed > 0) {
        cm_log(CM_LOG_WARN, "storage %s: %s: %s (and %u similar since the last warning)",
               n->rs->st->name, n->name, msg, n->suppressed);
    } else {
        cm_log(CM_LOG_WARN, "storage %s: %s: %s", n->rs->st->name, n->name, msg);
    }
    n->warned_ms = now;
    n->suppressed = 0;
}

/* ---- connections ------------------------------------------------------------------------- */

static const char *ac_err(const redisAsyncContext *ac)
{
    return ac != NULL && ac->errstr != NULL && ac->errstr[0] ? ac->errstr : "unknown error";
}

static bool conn_usable(const struct rconn *c)
{
    return c->ac != NULL && !(c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) &&
           c->npending < MAX_PENDING_PER_CONN;
}

static void conn_sent(struct rconn *c)
{
    if (c->npending++ == 0) {
        c->progress_ns = cm_now_ns();
    }
    c->node->rs->npending++;
}

/* Accounts one callback run; r is NULL when hiredis is freeing the context. */
static void conn_replied(struct rconn *c, const redisReply *r)
{
    cm_assert(c->npending > 0 && c->node->rs->npending > 0);
    c->npending--;
    c->node->rs->npending--;
    if (r != NULL) {
        c->progress_ns = cm_now_ns();
        if (r->type != REDIS_REPLY_ERROR) {
            c->backoff_ms = BACKOFF_MIN_MS; /* it works: the next failure starts over */
        }
    }
}

static void conn_backoff(struct rconn *c)
{
    struct rstore *rs = c->node->rs;
    c->ready = false;
    rs->counters.disconnects++;
    if (rs->closing) {
        return;
    }
    struct timeval tv = {.tv_sec = c->backoff_ms / 1000, .tv_usec = (c->backoff_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    if (rs->cluster) {
        cluster_refresh(rs); /* a master that went away may have been replaced */
    }
}

/* Drops c's connection: hiredis runs every pending callback with a NULL reply (now, or right
 * after the hiredis callback we may be inside returns) and c reconnects after its backoff. */
static void conn_drop(struct rconn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL) {
        return;
    }
    node_warn(c->node, "dropping a connection: %s", why);
    ac->data = NULL; /* its connect/disconnect callbacks no longer concern c */
    c->ac = NULL;
    redisAsyncFree(ac);
    conn_backoff(c);
}

static void conn_set_ready(struct rconn *c)
{
    c->ready = true;
    c->node->rs->counters.connects++;
    evtimer_del(c->timer);
    cm_log(CM_LOG_DEBUG, "storage %s: connected to %s", c->node->rs->st->name, c->node->name);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *c = arg;
    CM_UNUSED(fd);
    CM_UNUSED(what);
    if (c->ac == NULL) {
        conn_connect(c);
    } else if (!c->ready) {
        char why[64];
        snprintf(why, sizeof(why), "not ready after %" PRId64 " ms",
                 c->node->rs->connect_timeout_ms);
        conn_drop(c, why);
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct rconn *c = cac->data;
    if (c == NULL) {
        return;
    }
    if (status != REDIS_OK) {
        /* hiredis frees the context when we return, failing its pending callbacks. */
        node_warn(c->node, "connect failed: %s", ac_err(cac));
        ((redisAsyncContext *)cac)->data = NULL;
        c->ac = NULL;
        conn_backoff(c);
        return;
    }
    if (c->hs_left == 0) {
        conn_set_ready(c);
    }
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    struct rconn *c = cac->data;
    CM_UNUSED(status);
    if (c == NULL) {
        return; /* we dropped it ourselves */
    }
    node_warn(c->node, "connection lost: %s", ac_err(cac));
    c->ac = NULL;
    conn_backoff(c);
}

/* Reply to AUTH or SELECT. */
static void on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    redisReply *r = reply;
    conn_replied(c, r);
    if (r == NULL || c->ac != ac) {
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof(why), "handshake refused: %.*s", (int)(r->len > 150 ? 150 : r->len),
                 r->str);
        conn_drop(c, why);
        return;
    }
    if (--c->hs_left == 0 && (c->ac->c.flags & REDIS_CONNECTED)) {
        conn_set_ready(c);
    }
}

/* Reply to ASKING: only accounted; the command that follows carries the outcome. */
static void on_asking(redisAsyncContext *ac, void *reply, void *priv)
{
    CM_UNUSED(ac);
    conn_replied(priv, reply);
}

static void sub_send(struct rconn *c, size_t i);

static void conn_open(struct rconn *c, const char *addr);

static void on_resolved(void *arg, const char *addr, const char *err)
{
    struct rconn *c = arg;
    c->lookup = NULL;
    if (addr == NULL) {
        node_warn(c->node, "cannot resolve %s: %s", c->node->host, err);
        conn_backoff(c);
        return;
    }
    conn_open(c, addr);
}

/* Connects c to its node: at once for an address, after an asynchronous lookup for a name. */
static void conn_connect(struct rconn *c)
{
    struct rstore *rs = c->node->rs;
    if (c->lookup != NULL) {
        return; /* already on its way (its answer connects to c->node) */
    }
    if (c->is_sub) {
        /* Cluster pub/sub reaches every node: after a failure, try the next one. */
        c->node = rs->nodes[rs->sub_rr++ % rs->nnodes];
        rs->counters.subscribed = 0;
    }
    if (cm_host_is_numeric(c->node->host)) {
        conn_open(c, c->node->host);
        return;
    }
    if (rs->resolver == NULL) {
        rs->resolver = cm_resolver_new(rs->st->base, "redis-dns");
        if (rs->resolver == NULL) {
            node_warn(c->node, "cannot resolve %s: no resolver thread", c->node->host);
            conn_backoff(c);
            return;
        }
    }
    c->lookup = cm_resolve(rs->resolver, c->node->host, on_resolved, c);
}

static void conn_open(struct rconn *c, const char *addr)
{
    struct rstore *rs = c->node->rs;
    struct rnode *n = c->node;
    redisAsyncContext *ac = redisAsyncConnect(addr, n->port);
    if (ac == NULL || ac->err) {
        node_warn(n, "connect failed: %s", ac != NULL ? ac_err(ac) : "out of memory");
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
        conn_backoff(c);
        return;
    }
    if (cm_redis_ev_attach(ac, rs->st->base) != REDIS_OK) {
        cm_log(CM_LOG_ERR, "storage %s: cannot attach to the event loop", rs->st->name);
        redisAsyncFree(ac);
        conn_backoff(c);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->ready = false;
    c->hs_left = 0;
    /* Queued before anything else, so they run first once the socket connects. */
    int rc = REDIS_OK;
    if (rs->password != NULL && rs->user != NULL) {
        rc = redisAsyncCommand(ac, on_handshake, c, "AUTH %s %s", rs->user, rs->password);
    } else if (rs->password != NULL) {
        rc = redisAsyncCommand(ac, on_handshake, c, "AUTH %s", rs->password);
    }
    if (rs->password != NULL && rc == REDIS_OK) {
        c->hs_left++;
        conn_sent(c);
    }
    if (rs->db != 0 && redisAsyncCommand(ac, on_handshake, c, "SELECT %d", rs->db) == REDIS_OK) {
        c->hs_left++;
        conn_sent(c);
    }
    for (size_t i = 0; c->is_sub && i < rs->nchans; i++) {
        sub_send(c, i);
    }
    struct timeval tv = {.tv_sec = rs->connect_timeout_ms / 1000,
                         .tv_usec = (rs->connect_timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void node_start(struct rnode *n)
{
    n->started = true;
    for (size_t i = 0; i < n->nconns; i++) {
        conn_connect(&n->conns[i]);
    }
}

/* A connection of n for a command routed by route: the route's own connection when it is
 * ready, else the next ready one, else one still connecting (commands queue behind the
 * handshake), else NULL (the node is down: the command is a miss). */
static struct rconn *node_pick(struct rnode *n, unsigned route)
{
    if (!n->started) {
        node_start(n);
    }
    struct rconn *connecting = NULL;
    size_t first = route % n->nconns;
    for (size_t i = 0; i < n->nconns; i++) {
        struct rconn *c = &n->conns[(first + i) % n->nconns];
        if (!conn_usable(c)) {
            continue;
        }
        if (c->ready) {
            return c;
        }
        if (connecting == NULL) {
            connecting = c;
        }
    }
    return connecting;
}

/* A connection of standalone node n for a read: the first ready one in pool order with fewer
 * than FILL_PENDING commands outstanding, else the ready one with the fewest, else what node_pick
 * finds. Reads may go on any connection (the daemon orders them against writes of the same key),
 * and a single-threaded server gains nothing from more of them: filling the first connections
 * lets batches queue behind each other on one socket, where the server reads several in one
 * read and answers them in one write. Spreading every batch over the pool (pool_size is 100 by
 * default) cost both sides a read, a write and an epoll wakeup per batch: at redis-benchmark
 * -P 16, 2.3 -> 1.7 us of cachemed CPU and 1.1 -> 0.75 us of Redis CPU per proxied GET. */
static struct rconn *node_pick_read(struct rnode *n)
{
    if (n->started) {
        struct rconn *least = NULL;
        for (size_t i = 0; i < n->nconns; i++) {
            struct rconn *c = &n->conns[i];
            if (!c->ready || !conn_usable(c)) {
                continue;
            }
            if (c->npending < FILL_PENDING) {
                return c;
            }
            if (least == NULL || c->npending < least->npending) {
                least = c;
            }
        }
        if (least != NULL) {
            return least;
        }
    }
    return node_pick(n, 0);
}

static void conn_deinit(struct rconn *c)
{
    if (c->lookup != NULL) {
        cm_lookup_cancel(c->lookup);
        c->lookup = NULL;
    }
    redisAsyncContext *ac = c->ac;
    if (ac != NULL) {
        ac->data = NULL;
        c->ac = NULL;
        redisAsyncFree(ac); /* runs c's pending callbacks: their ops fail */
    }
    event_free(c->timer);
}

static void conn_init(struct rconn *c, struct rnode *n)
{
    c->node = n;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->timer = evtimer_new(n->rs->st->base, on_conn_timer, c);
}

static struct rnode *node_add(struct rstore *rs, const char *host, size_t hostlen, int port)
{
    struct rnode *n = cm_calloc(1, sizeof(*n));
    n->rs = rs;
    n->host = cm_strndup(host, hostlen);
    n->port = port;
    snprintf(n->name, sizeof(n->name), "%s:%d", n->host, port);
    n->nconns = rs->pool;
    n->conns = cm_calloc(n->nconns, sizeof(*n->conns));
    for (size_t i = 0; i < n->nconns; i++) {
        conn_init(&n->conns[i], n);
    }
    rs->nodes = cm_realloc(rs->nodes, (rs->nnodes + 1) * sizeof(*rs->nodes));
    rs->nodes[rs->nnodes++] = n;
    return n;
}

/* Index of the node host:port, added (not yet connected) when new. */
static size_t node_find_or_add(struct rstore *rs, const char *host, size_t hostlen, int port)
{
    for (size_t i = 0; i < rs->nnodes; i++) {
        const struct rnode *n = rs->nodes[i];
        if (n->port == port && strlen(n->host) == hostlen && memcmp(n->host, host, hostlen) == 0) {
            return i;
        }
    }
    node_add(rs, host, hostlen, port);
    return rs->nnodes - 1;
}

static void node_free(struct rnode *n)
{
    for (size_t i = 0; i < n->nconns; i++) {
        conn_deinit(&n->conns[i]);
    }
    cm_free(n->conns);
    cm_free(n->host);
    cm_free(n);
}

/* ---- cluster slot map -------------------------------------------------------------------- */

/* State of one CLUSTER SLOTS reply being applied. */
struct slots_ctx {
    struct rstore *rs;
    struct rnode *asked; /* node that answered: the host of ranges that name none */
    uint16_t *map;
};

static void on_slot_range(void *arg, unsigned first, unsigned last, const char *host,
                          size_t hostlen, int port)
{
    struct slots_ctx *x = arg;
    if (hostlen == 0) {
        host = x->asked->host;
        hostlen = strlen(host);
    }
    size_t idx = node_find_or_add(x->rs, host, hostlen, port);
    for (unsigned s = first; s <= last; s++) {
        x->map[s] = (uint16_t)(idx + 1);
    }
}

static void on_slots(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    struct rstore *rs = c->node->rs;
    redisReply *r = reply;
    CM_UNUSED(ac);
    conn_replied(c, r);
    rs->refresh_inflight = false;
    if (rs->closing) {
        return;
    }
    uint16_t *map = cm_calloc(CM_REDIS_NSLOTS, sizeof(*map));
    struct slots_ctx x = {.rs = rs, .asked = c->node, .map = map};
    if (r == NULL || cm_redis_parse_slots(r, on_slot_range, &x) != CM_OK) {
        cm_log(CM_LOG_WARN, "storage %s: CLUSTER SLOTS from %s failed: %s", rs->st->name,
               c->node->name,
               r == NULL                      ? "connection lost"
               : r->type == REDIS_REPLY_ERROR ? r->str
                                              : "bad reply");
        cm_free(map);
        rs->refresh_wanted = true; /* the tick retries */
        return;
    }
    cm_free(rs->slots);
    rs->slots = map;
    rs->counters.slot_updates++;
}

/* Asks some node for CLUSTER SLOTS, at most once per REFRESH_MIN_INTERVAL_MS; a refresh asked
 * for meanwhile is sent later by the tick. */
static void cluster_refresh(struct rstore *rs)
{
    int64_t now = cm_now_ms();
    if (rs->closing) {
        return;
    }
    if (rs->refresh_inflight ||
        (rs->last_refresh_ms != 0 && now - rs->last_refresh_ms < REFRESH_MIN_INTERVAL_MS)) {
        rs->refresh_wanted = true;
        return;
    }
    for (size_t i = 0; i < rs->nnodes; i++) {
        struct rnode *n = rs->nodes[(rs->refresh_rr + i) % rs->nnodes];
        struct rconn *c = node_pick(n, (unsigned)cm_rand64());
        if (c == NULL || redisAsyncCommand(c->ac, on_slots, c, "CLUSTER SLOTS") != REDIS_OK) {
            continue;
        }
        conn_sent(c);
        rs->refresh_rr += i + 1;
        rs->refresh_inflight = true;
        rs->refresh_wanted = false;
        rs->last_refresh_ms = now;
        rs->counters.refreshes++;
        return;
    }
    rs->refresh_wanted = true; /* nobody reachable right now */
}

/* The node serving slot: from the map, else any node that has a usable connection. */
static struct rnode *slot_node(struct rstore *rs, unsigned slot)
{
    if (rs->slots != NULL && rs->slots[slot] != 0) {
        return rs->nodes[rs->slots[slot] - 1];
    }
    for (size_t i = 0; i < rs->nnodes; i++) {
        for (size_t j = 0; j < rs->nodes[i]->nconns; j++) {
            if (conn_usable(&rs->nodes[i]->conns[j])) {
                return rs->nodes[i];
            }
        }
    }
    return rs->nodes[0];
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct rstore *rs = arg;
    CM_UNUSED(fd);
    CM_UNUSED(what);
    int64_t now = cm_now_ns();
    for (size_t i = 0; i < rs->nnodes; i++) {
        struct rnode *n = rs->nodes[i];
        for (size_t j = 0; j < n->nconns; j++) {
            struct rconn *c = &n->conns[j];
            /* A stopped or wedged server keeps the socket open: nothing else would notice. */
            if (c->ac != NULL && c->npending > 0 && now - c->progress_ns > rs->stall_ms * 1000000) {
                char why[64];
                snprintf(why, sizeof(why), "no reply for %" PRId64 " ms", rs->stall_ms);
                conn_drop(c, why);
            }
        }
    }
    if (rs->cluster && rs->refresh_wanted) {
        cluster_refresh(rs);
    }
}

/* ---- operations -------------------------------------------------------------------------- */

/* Finishes every deferred op (in submit order). done() may submit again: those wait their turn. */
static void finish_deferred(struct rstore *rs)
{
    while (rs->deferred != NULL) {
        struct cm_st_op *op = rs->deferred;
        rs->deferred = op->bnext;
        if (rs->deferred == NULL) {
            rs->deferred_tail = &rs->deferred;
        }
        op->bnext = NULL;
        cm_st_op_finish(op);
    }
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    finish_deferred(arg);
}

/* Drops one reference to op; the last one finishes it. Inside submit the finish is deferred to
 * the next loop iteration (never synchronously, storage.h), on a list of our own rather than
 * cm_st_op_finish_later, so that close() can still finish those ops itself. */
static void op_unref(struct cm_st_op *op, bool in_submit)
{
    struct rop *ro = op->bpriv;
    if (--ro->nleft > 0) {
        return;
    }
    cm_free(ro);
    op->bpriv = NULL;
    if (!in_submit) {
        cm_st_op_finish(op);
        return;
    }
    struct rstore *rs = op->st->priv;
    op->bnext = NULL;
    *rs->deferred_tail = op;
    rs->deferred_tail = &op->bnext;
    event_active(rs->defer_ev, EV_TIMEOUT, 1);
}

static void rcmd_end(struct rcmd *rc, bool in_submit)
{
    struct cm_st_op *op = rc->op;
    cm_free(rc);
    op_unref(op, in_submit);
}

/* Fails rc's part of the op (the first reason is kept) and ends rc. */
static void rcmd_fail(struct rcmd *rc, bool in_submit, const char *fmt, ...) CM_PRINTF(3, 4);
static void rcmd_fail(struct rcmd *rc, bool in_submit, const char *fmt, ...)
{
    if (rc->op->status == CM_OK) {
        char why[sizeof(rc->op->err)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        cm_st_op_fail(rc->op, "%s", why);
    }
    rcmd_end(rc, in_submit);
}

/* Sends rc to node n (after ASKING when asking). Returns CM_OK when hiredis queued it. */
static int rcmd_send(struct rcmd *rc, struct rnode *n, bool asking)
{
    struct cm_st_op *op = rc->op;
    struct rconn *c = !n->rs->cluster && op->kind == CM_ST_GET ? node_pick_read(n)
                                                                : node_pick(n, rc->route);
    if (c == NULL) {
        return CM_ERR;
    }
    /* Encoded here rather than by redisAsyncCommandArgv, whose sdscatfmt per argument and sds
     * per command were 2-3% of the loop at redis-benchmark -P 16 through a redis chain. */
    struct cm_buf *cmd = &n->rs->cmd;
    const struct cm_st_item *it = &op->items[rc->idx[0]];
    cm_buf_reset(cmd);
    switch (op->kind) {
    case CM_ST_GET:
    case CM_ST_DEL:
        cm_resp_array(cmd, rc->n + 1);
        cm_resp_bulk_str(cmd, op->kind == CM_ST_DEL ? "DEL" : rc->n == 1 ? "GET" : "MGET");
        for (size_t i = 0; i < rc->n; i++) {
            cm_resp_bulk(cmd, op->items[rc->idx[i]].key, op->items[rc->idx[i]].klen);
        }
        break;
    case CM_ST_SET:
        if (op->ttl_ms < 0) {
            cm_resp_array(cmd, 3);
            cm_resp_bulk_str(cmd, "SET");
            cm_resp_bulk(cmd, it->key, it->klen);
        } else {
            /* Whole seconds, rounded up (SPEC §5); SETEX refuses 0. */
            int64_t secs = op->ttl_ms / 1000 + (op->ttl_ms % 1000 != 0);
            char ttl[24];
            int tl = snprintf(ttl, sizeof(ttl), "%" PRId64, secs > 0 ? secs : 1);
            cm_resp_array(cmd, 4);
            cm_resp_bulk_str(cmd, "SETEX");
            cm_resp_bulk(cmd, it->key, it->klen);
            cm_resp_bulk(cmd, ttl, (size_t)tl);
        }
        cm_resp_bulk(cmd, it->wval != NULL ? it->wval : "", it->wlen);
        break;
    }
    int rv = CM_ERR;
    if (asking) {
        if (redisAsyncCommand(c->ac, on_asking, c, "ASKING") != REDIS_OK) {
            goto out;
        }
        conn_sent(c);
    }
    if (redisAsyncFormattedCommand(c->ac, on_reply, rc, cm_buf_start(cmd), cm_buf_used(cmd)) ==
        REDIS_OK) {
        conn_sent(c);
        rc->conn = c;
        rv = CM_OK;
    }
out:
    if (cmd->cap > CMD_KEEP_BYTES) {
        cm_buf_deinit(cmd);
    }
    return rv;
}

/* Files a hit in it: val is cm_malloc'd and NUL-terminated, and it owns it from now on. */
static void store_hit(struct cm_st_item *it, char *val, size_t len)
{
    cm_free(it->val);
    it->val = val;
    it->vlen = len;
    it->result = CM_ST_HIT;
}

/* Files a successful reply's values in the op's items. Returns false when the reply has a shape the
 * command never produces. */
static bool apply_reply(struct rcmd *rc, redisReply *r)
{
    struct cm_st_op *op = rc->op;
    switch (op->kind) {
    case CM_ST_GET:
        if (rc->n == 1) {
            if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL) {
                return false;
            }
            if (r->type == REDIS_REPLY_STRING && !op->timed_out) {
                /* Copied: this is the root reply, which hiredis frees after the callback. */
                char *val = cm_malloc(r->len + 1);
                memcpy(val, r->str, r->len);
                val[r->len] = '\0';
                store_hit(&op->items[rc->idx[0]], val, r->len);
            }
            return true;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != rc->n) {
            return false;
        }
        for (size_t i = 0; i < rc->n; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING &&
                r->element[i]->type != REDIS_REPLY_NIL) {
                return false;
            }
        }
        for (size_t i = 0; i < rc->n && !op->timed_out; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING) {
                size_t len;
                char *val = cm_redis_reply_take_str(r, i, &len); /* an element: taken whole */
                store_hit(&op->items[rc->idx[i]], val, len);
            }
        }
        return true;
    case CM_ST_SET:
        return r->type == REDIS_REPLY_STATUS;
    case CM_ST_DEL:
        return r->type == REDIS_REPLY_INTEGER;
    }
    return false;
}

/* Follows a MOVED/ASK for rc. Ends rc when it cannot be resent. */
static void follow_redirect(struct rcmd *rc, enum cm_redis_redir kind, unsigned slot,
                            const char *host, int port)
{
    struct rstore *rs = rc->conn->node->rs;
    const char *what = kind == CM_REDIS_REDIR_MOVED ? "MOVED" : "ASK";
    if (++rc->redirects > MAX_REDIRECTS) {
        rcmd_fail(rc, false, "%s: more than %d redirects (last %s)", rc->conn->node->name,
                  MAX_REDIRECTS, what);
        return;
    }
    if (rc->op->timed_out || rs->closing) {
        /* The submitter may have dropped the values to write; the op is over anyway. */
        rcmd_fail(rc, false, "%s: %s after the op ended", rc->conn->node->name, what);
        return;
    }
    if (host[0] == '\0') {
        host = rc->conn->node->host; /* "MOVED 1 :6380": same host, other port */
    }
    size_t idx = node_find_or_add(rs, host, strlen(host), port);
    if (kind == CM_REDIS_REDIR_MOVED) {
        rs->counters.moved++;
        if (rs->slots == NULL) {
            rs->slots = cm_calloc(CM_REDIS_NSLOTS, sizeof(*rs->slots));
        }
        rs->slots[slot] = (uint16_t)(idx + 1);
        cluster_refresh(rs);
    } else {
        rs->counters.ask++;
    }
    if (rcmd_send(rc, rs->nodes[idx], kind == CM_REDIS_REDIR_ASK) != CM_OK) {
        rcmd_fail(rc, false, "%s: not connected (after %s)", rs->nodes[idx]->name, what);
    }
}

/* A command for n keys of op (idx filled by the caller); takes a reference on op. */
static struct rcmd *rcmd_new(struct cm_st_op *op, unsigned route, size_t n)
{
    struct rcmd *rc = cm_calloc(1, sizeof(*rc) + n * sizeof(rc->idx[0]));
    rc->op = op;
    rc->route = route;
    rc->n = n;
    ((struct rop *)op->bpriv)->nleft++;
    return rc;
}

/* TRYAGAIN: a multi-key command met a slot being migrated with its keys on both sides. Each key
 * goes again alone, to the same node, and follows its own ASK. Ends rc. */
static void split_per_key(struct rcmd *rc)
{
    struct rnode *n = rc->conn->node;
    for (size_t i = 0; i < rc->n; i++) {
        struct rcmd *one = rcmd_new(rc->op, rc->route, 1);
        one->idx[0] = rc->idx[i];
        one->redirects = rc->redirects + 1;
        if (rcmd_send(one, n, false) != CM_OK) {
            rcmd_fail(one, false, "%s: not connected (after TRYAGAIN)", n->name);
        }
    }
    n->rs->counters.tryagain++;
    rcmd_end(rc, false); /* after the loop: its reference kept the op alive */
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rcmd *rc = priv;
    struct rconn *c = rc->conn;
    redisReply *r = reply;
    CM_UNUSED(ac);
    conn_replied(c, r);
    if (r == NULL) {
        rcmd_fail(rc, false, "%s: connection lost", c->node->name);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        unsigned slot;
        int port;
        char host[256];
        enum cm_redis_redir kind =
            c->node->rs->cluster
                ? cm_redis_parse_redirect(r->str, r->len, &slot, host, sizeof(host), &port)
                : CM_REDIS_REDIR_NONE;
        if (kind != CM_REDIS_REDIR_NONE) {
            follow_redirect(rc, kind, slot, host, port);
            return;
        }
        if (c->node->rs->cluster && rc->n > 1 && r->len >= 8 &&
            memcmp(r->str, "TRYAGAIN", 8) == 0 && !rc->op->timed_out && !c->node->rs->closing) {
            split_per_key(rc);
            return;
        }
        rcmd_fail(rc, false, "%s: %.*s", c->node->name, r->len > 120 ? 120 : (int)r->len, r->str);
        return;
    }
    if (!apply_reply(rc, r)) {
        rcmd_fail(rc, false, "%s: unexpected reply type %d", c->node->name, r->type);
        return;
    }
    rcmd_end(rc, false);
}

/* Item index with its route, for grouping an op's keys into commands. */
struct routed {
    unsigned route;
    size_t idx;
};

static int routed_cmp(const void *a, const void *b)
{
    const struct routed *x = a, *y = b;
    if (x->route != y->route) {
        return x->route < y->route ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Sends one command for items rt[0..n) (same route) of op. */
static void submit_group(struct rstore *rs, struct cm_st_op *op, const struct routed *rt, size_t n)
{
    struct rcmd *rc = rcmd_new(op, rt[0].route, n);
    for (size_t i = 0; i < n; i++) {
        rc->idx[i] = rt[i].idx;
    }
    struct rnode *node = rs->cluster ? slot_node(rs, rc->route) : rs->nodes[0];
    if (rcmd_send(rc, node, false) != CM_OK) {
        rcmd_fail(rc, true, "%s: not connected", node->name);
    }
}

static void redis_submit(struct cm_storage *st, struct cm_st_op *op)
{
    struct rstore *rs = st->priv;
    struct rop *ro = cm_calloc(1, sizeof(*ro));
    ro->nleft = 1; /* held by this function, so nothing finishes before it returns */
    op->bpriv = ro;
    if (rs->closing) {
        cm_st_op_fail(op, "storage is closing");
        op_unref(op, true);
        return;
    }
    /* A standalone batched read goes as one MGET on its first key's connection: splitting it
     * over the pool cost one command and one reply per connection for the same keys. Order
     * against writes of the same keys is the daemon's job (one writer per key, reads queued
     * behind). */
    bool one_mget = !rs->cluster && op->kind == CM_ST_GET && op->nitems > 1;
    struct routed *rt = cm_malloc((op->nitems ? op->nitems : 1) * sizeof(*rt));
    for (size_t i = 0; i < op->nitems; i++) {
        const struct cm_st_item *it = &op->items[i];
        rt[i].idx = i;
        if (one_mget && i > 0) {
            rt[i].route = rt[0].route;
        } else {
            rt[i].route = rs->cluster ? cm_redis_key_slot(it->key, it->klen)
                                      : (unsigned)(cm_hash(it->key, it->klen) % rs->pool);
        }
    }
    if (op->kind == CM_ST_SET) {
        for (size_t i = 0; i < op->nitems; i++) {
            submit_group(rs, op, &rt[i], 1);
        }
    } else if (one_mget) {
        submit_group(rs, op, rt, op->nitems);
    } else {
        /* Keys of one slot (cluster) or one connection (standalone) go in one command. */
        qsort(rt, op->nitems, sizeof(*rt), routed_cmp);
        for (size_t i = 0, j; i < op->nitems; i = j) {
            for (j = i + 1; j < op->nitems && rt[j].route == rt[i].route; j++) {
            }
            submit_group(rs, op, &rt[i], j - i);
        }
    }
    cm_free(rt);
    op_unref(op, true);
}

/* ---- pub/sub ------------------------------------------------------------------------------ */

static bool chan_is(const struct rchan *ch, const char *name, size_t len)
{
    return ch->len == len && memcmp(ch->name, name, len) == 0;
}

/* Every SUBSCRIBE callback hiredis holds runs once more, with NULL, when the context is freed;
 * messages and confirmations in between are not counted as pending. */
static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    struct rstore *rs = c->node->rs;
    const redisReply *r = reply;
    CM_UNUSED(ac);
    if (r == NULL) {
        conn_replied(c, NULL);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        return;
    }
    const redisReply *kind = r->element[0], *chan = r->element[1], *msg = r->element[2];
    if (strcmp(kind->str, "subscribe") == 0) {
        rs->counters.subscribed++;
        return;
    }
    if (strcmp(kind->str, "message") != 0 || msg->type != REDIS_REPLY_STRING) {
        return;
    }
    rs->counters.messages++;
    for (size_t i = 0; i < rs->nchans; i++) {
        if (chan_is(&rs->chans[i], chan->str, chan->len)) {
            rs->chans[i].fn(rs->chans[i].arg, msg->str, msg->len);
        }
    }
}

/* Sends SUBSCRIBE for rs->chans[i] on c, unless an earlier entry has the same name (hiredis keeps
 * one callback per channel name). */
static void sub_send(struct rconn *c, size_t i)
{
    struct rstore *rs = c->node->rs;
    const struct rchan *ch = &rs->chans[i];
    for (size_t j = 0; j < i; j++) {
        if (chan_is(&rs->chans[j], ch->name, ch->len)) {
            return;
        }
    }
    if (redisAsyncCommand(c->ac, on_message, c, "SUBSCRIBE %b", ch->name, ch->len) == REDIS_OK) {
        conn_sent(c);
    }
}

int cm_st_redis_subscribe(struct cm_storage *st, const char *channel, cm_st_redis_msg_fn *fn,
                          void *arg)
{
    struct rstore *rs = st->priv;
    if (rs->closing) {
        return CM_ERR;
    }
    rs->chans = cm_realloc(rs->chans, (rs->nchans + 1) * sizeof(*rs->chans));
    struct rchan *ch = &rs->chans[rs->nchans++];
    ch->len = strlen(channel);
    ch->name = cm_strndup(channel, ch->len);
    ch->fn = fn;
    ch->arg = arg;
    if (rs->sub == NULL) {
        rs->sub = cm_calloc(1, sizeof(*rs->sub));
        conn_init(rs->sub, rs->nodes[0]);
        rs->sub->is_sub = true;
        conn_connect(rs->sub);
    } else if (conn_usable(rs->sub)) {
        sub_send(rs->sub, rs->nchans - 1);
    }
    return CM_OK;
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    const redisReply *r = reply;
    CM_UNUSED(ac);
    conn_replied(c, r);
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        node_warn(c->node, "PUBLISH failed: %s", r->str);
    }
}

int cm_st_redis_publish(struct cm_storage *st, const char *channel, const char *msg, size_t len)
{
    struct rstore *rs = st->priv;
    size_t clen = strlen(channel);
    if (rs->closing) {
        return CM_ERR;
    }
    struct rnode *n = rs->cluster ? slot_node(rs, cm_redis_key_slot(channel, clen)) : rs->nodes[0];
    struct rconn *c = node_pick(n, (unsigned)cm_hash(channel, clen));
    if (c == NULL || redisAsyncCommand(c->ac, on_published, c, "PUBLISH %b %b", channel, clen, msg,
                                       len) != REDIS_OK) {
        return CM_ERR;
    }
    conn_sent(c);
    rs->counters.published++;
    return CM_OK;
}

/* ---- open / close ------------------------------------------------------------------------ */

static void rstore_free(struct rstore *rs)
{
    rs->closing = true;
    if (rs->tick != NULL) {
        event_free(rs->tick);
    }
    if (rs->sub != NULL) {
        conn_deinit(rs->sub);
        cm_free(rs->sub);
    }
    finish_deferred(rs);
    for (size_t i = 0; i < rs->nnodes; i++) {
        node_free(rs->nodes[i]);
        rs->nodes[i] = NULL;
    }
    /* done() of the ops failed just now may have submitted more: they failed at once. */
    finish_deferred(rs);
    if (rs->defer_ev != NULL) {
        event_free(rs->defer_ev);
    }
    /* hiredis ran every callback it held: anything left would be a leaked op. */
    cm_assert(rs->npending == 0);
    for (size_t i = 0; i < rs->nchans; i++) {
        cm_free(rs->chans[i].name);
    }
    cm_free(rs->chans);
    cm_resolver_free(rs->resolver); /* after the conns: their lookups are cancelled */
    cm_free(rs->nodes);
    cm_free(rs->slots);
    cm_free(rs->user);
    cm_free(rs->password);
    cm_buf_deinit(&rs->cmd);
    cm_free(rs);
}

static int parse_url(struct rstore *rs, const char *s, char **host, int *port, char *err,
                     size_t errsz)
{
    struct cm_url u;
    if (cm_url_parse(s, &u, err, errsz) != CM_OK) {
        return CM_ERR;
    }
    int rv = CM_ERR;
    int64_t db = 0;
    if (u.scheme == NULL || strcmp(u.scheme, "redis") != 0) {
        snprintf(err, errsz, "redis url must start with redis://");
    } else if (u.host == NULL || u.host[0] == '\0') {
        snprintf(err, errsz, "redis url has no host");
    } else if (u.path != NULL && u.path[0] != '\0' &&
               (cm_parse_i64(u.path, strlen(u.path), &db) != CM_OK || db < 0 || db > 65535)) {
        snprintf(err, errsz, "redis url: bad db '%s'", u.path);
    } else if (rs->cluster && db != 0) {
        snprintf(err, errsz, "redis cluster has only db 0");
    } else {
        rs->db = (int)db;
        if (u.password != NULL) {
            rs->password = u.password;
            u.password = NULL;
            if (u.user != NULL && u.user[0] != '\0') {
                rs->user = u.user;
                u.user = NULL;
            }
        }
        *host = u.host;
        u.host = NULL;
        *port = u.port ? u.port : 6379;
        rv = CM_OK;
    }
    cm_url_deinit(&u);
    return rv;
}

static int redis_open(struct cm_storage *st, char *err, size_t errsz)
{
    const struct cm_conf_storage *conf = st->conf;
    struct rstore *rs = cm_calloc(1, sizeof(*rs));
    rs->st = st;
    rs->deferred_tail = &rs->deferred;
    rs->cluster = conf->cluster;
    rs->pool = conf->pool_size > 0 ? (size_t)conf->pool_size : 1;
    int64_t t = conf->timeout_ms;
    rs->connect_timeout_ms = t > 0 ? (t < 1000 ? 1000 : t) : 5000;
    rs->stall_ms = t > 0 ? (2 * t < 1000 ? 1000 : 2 * t) : 30000;
    char *host = NULL;
    int port = 0;
    if (parse_url(rs, conf->url, &host, &port, err, errsz) != CM_OK) {
        rstore_free(rs);
        return CM_ERR;
    }
    st->priv = rs;
    node_add(rs, host, strlen(host), port);
    cm_free(host);
    rs->defer_ev = event_new(st->base, -1, 0, on_defer, rs);
    rs->tick = event_new(st->base, -1, EV_PERSIST, on_tick, rs);
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    event_add(rs->tick, &tv);
    /* Connect now, in the background: a server that is down is retried, never fatal. */
    node_start(rs->nodes[0]);
    if (rs->cluster) {
        cluster_refresh(rs);
    }
    return CM_OK;
}

static void redis_close(struct cm_storage *st)
{
    if (st->priv != NULL) {
        rstore_free(st->priv);
        st->priv = NULL;
    }
}

static void redis_info(struct cm_storage *st, struct cm_buf *out)
{
    struct cm_st_redis_info in;
    cm_st_redis_get_info(st, &in);
    cm_buf_printf(out,
                  "redis_nodes:%zu\r\nredis_conns:%zu\r\nredis_conns_ready:%zu\r\n"
                  "redis_pending:%zu\r\nredis_connects:%" PRIu64 "\r\nredis_disconnects:%" PRIu64
                  "\r\nredis_moved:%" PRIu64 "\r\nredis_ask:%" PRIu64
                  "\r\nredis_slot_refreshes:%" PRIu64 "\r\n",
                  in.nodes, in.conns, in.conns_ready, in.pending, in.connects, in.disconnects,
                  in.moved, in.ask, in.refreshes);
}

void cm_st_redis_get_info(const struct cm_storage *st, struct cm_st_redis_info *out)
{
    const struct rstore *rs = st->priv;
    *out = rs->counters;
    out->nodes = rs->nnodes;
    out->pending = rs->npending;
    out->conns = out->conns_ready = 0;
    out->channels = rs->nchans;
    for (size_t i = 0; i < rs->nnodes; i++) {
        for (size_t j = 0; j < rs->nodes[i]->nconns; j++) {
            out->conns += rs->nodes[i]->conns[j].ac != NULL;
            out->conns_ready += rs->nodes[i]->conns[j].ac != NULL && rs->nodes[i]->conns[j].ready;
        }
    }
}

void cm_st_redis_slot_owner(const struct cm_storage *st, unsigned slot, char *out, size_t outsz)
{
    const struct rstore *rs = st->priv;
    const struct rnode *n = NULL;
    if (!rs->cluster) {
        n = rs->nodes[0];
    } else if (rs->slots != NULL && slot < CM_REDIS_NSLOTS && rs->slots[slot] != 0) {
        n = rs->nodes[rs->slots[slot] - 1];
    }
    snprintf(out, outsz, "%s", n != NULL ? n->name : "");
}

const struct cm_storage_ops cm_st_redis_ops = {
    .name = "redis",
    .wrapped = true,
    .open = redis_open,
    .submit = redis_submit,
    .close = redis_close,
    .info = redis_info,
};
