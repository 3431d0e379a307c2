/* Redis storage: connections and the servers (nodes) they belong to. */
#include "storages/redis/redis_int.h"

/* Logs connection trouble for n, at most once per WARN_INTERVAL_MS: with a pool, every
 * connection would otherwise say the same thing at once, again at each retry. */
void cm_rd_node_warn(struct rnode *n, const char *fmt, ...)
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

bool cm_rd_conn_usable(const struct rconn *c)
{
    return c->ac != NULL && !(c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) &&
           c->npending < MAX_PENDING_PER_CONN;
}

void cm_rd_conn_sent(struct rconn *c)
{
    if (c->npending++ == 0) {
        c->progress_ns = cm_now_ns();
    }
    c->node->rs->npending++;
}

/* Accounts one callback run; r is NULL when hiredis is freeing the context. */
void cm_rd_conn_replied(struct rconn *c, const redisReply *r)
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
        cm_rd_cluster_refresh(rs); /* a master that went away may have been replaced */
    }
}

/* Drops c's connection: hiredis runs every pending callback with a NULL reply (now, or right
 * after the hiredis callback we may be inside returns) and c reconnects after its backoff. */
void cm_rd_conn_drop(struct rconn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL) {
        return;
    }
    cm_rd_node_warn(c->node, "dropping a connection: %s", why);
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
        cm_rd_conn_connect(c);
    } else if (!c->ready) {
        char why[64];
        snprintf(why, sizeof(why), "not ready after %" PRId64 " ms",
                 c->node->rs->connect_timeout_ms);
        cm_rd_conn_drop(c, why);
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
        cm_rd_node_warn(c->node, "connect failed: %s", ac_err(cac));
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
    cm_rd_node_warn(c->node, "connection lost: %s", ac_err(cac));
    c->ac = NULL;
    conn_backoff(c);
}

/* Reply to AUTH or SELECT. */
static void on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    redisReply *r = reply;
    cm_rd_conn_replied(c, r);
    if (r == NULL || c->ac != ac) {
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof(why), "handshake refused: %.*s", (int)(r->len > 150 ? 150 : r->len),
                 r->str);
        cm_rd_conn_drop(c, why);
        return;
    }
    if (--c->hs_left == 0 && (c->ac->c.flags & REDIS_CONNECTED)) {
        conn_set_ready(c);
    }
}

/* Reply to ASKING: only accounted; the command that follows carries the outcome. */
void cm_rd_on_asking(redisAsyncContext *ac, void *reply, void *priv)
{
    CM_UNUSED(ac);
    cm_rd_conn_replied(priv, reply);
}


static void conn_open(struct rconn *c, const char *addr);

static void on_resolved(void *arg, const char *addr, const char *err)
{
    struct rconn *c = arg;
    c->lookup = NULL;
    if (addr == NULL) {
        cm_rd_node_warn(c->node, "cannot resolve %s: %s", c->node->host, err);
        conn_backoff(c);
        return;
    }
    conn_open(c, addr);
}

/* Connects c to its node: at once for an address, after an asynchronous lookup for a name. */
void cm_rd_conn_connect(struct rconn *c)
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
            cm_rd_node_warn(c->node, "cannot resolve %s: no resolver thread", c->node->host);
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
        cm_rd_node_warn(n, "connect failed: %s", ac != NULL ? ac_err(ac) : "out of memory");
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
        cm_rd_conn_sent(c);
    }
    if (rs->db != 0 && redisAsyncCommand(ac, on_handshake, c, "SELECT %d", rs->db) == REDIS_OK) {
        c->hs_left++;
        cm_rd_conn_sent(c);
    }
    for (size_t i = 0; c->is_sub && i < rs->nchans; i++) {
        cm_rd_sub_send(c, i);
    }
    struct timeval tv = {.tv_sec = rs->connect_timeout_ms / 1000,
                         .tv_usec = (rs->connect_timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

void cm_rd_node_start(struct rnode *n)
{
    n->started = true;
    for (size_t i = 0; i < n->nconns; i++) {
        cm_rd_conn_connect(&n->conns[i]);
    }
}

/* A connection of n for a command routed by route: the route's own connection when it is
 * ready, else the next ready one, else one still connecting (commands queue behind the
 * handshake), else NULL (the node is down: the command is a miss). */
struct rconn *cm_rd_node_pick(struct rnode *n, unsigned route)
{
    if (!n->started) {
        cm_rd_node_start(n);
    }
    struct rconn *connecting = NULL;
    size_t first = route % n->nconns;
    for (size_t i = 0; i < n->nconns; i++) {
        struct rconn *c = &n->conns[(first + i) % n->nconns];
        if (!cm_rd_conn_usable(c)) {
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
 * than FILL_PENDING commands outstanding, else the ready one with the fewest, else what cm_rd_node_pick
 * finds. Reads may go on any connection (the daemon orders them against writes of the same key),
 * and a single-threaded server gains nothing from more of them: filling the first connections
 * lets batches queue behind each other on one socket, where the server reads several in one
 * read and answers them in one write. Spreading every batch over the pool (pool_size is 100 by
 * default) cost both sides a read, a write and an epoll wakeup per batch: at redis-benchmark
 * -P 16, 2.3 -> 1.7 us of cachemed CPU and 1.1 -> 0.75 us of Redis CPU per proxied GET. */
struct rconn *cm_rd_node_pick_read(struct rnode *n)
{
    if (n->started) {
        struct rconn *least = NULL;
        for (size_t i = 0; i < n->nconns; i++) {
            struct rconn *c = &n->conns[i];
            if (!c->ready || !cm_rd_conn_usable(c)) {
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
    return cm_rd_node_pick(n, 0);
}

void cm_rd_conn_deinit(struct rconn *c)
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

void cm_rd_conn_init(struct rconn *c, struct rnode *n)
{
    c->node = n;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->timer = evtimer_new(n->rs->st->base, on_conn_timer, c);
}

struct rnode *cm_rd_node_add(struct rstore *rs, const char *host, size_t hostlen, int port)
{
    struct rnode *n = cm_calloc(1, sizeof(*n));
    n->rs = rs;
    n->host = cm_strndup(host, hostlen);
    n->port = port;
    snprintf(n->name, sizeof(n->name), "%s:%d", n->host, port);
    n->nconns = rs->pool;
    n->conns = cm_calloc(n->nconns, sizeof(*n->conns));
    for (size_t i = 0; i < n->nconns; i++) {
        cm_rd_conn_init(&n->conns[i], n);
    }
    rs->nodes = cm_realloc(rs->nodes, (rs->nnodes + 1) * sizeof(*rs->nodes));
    rs->nodes[rs->nnodes++] = n;
    return n;
}

/* Index of the node host:port, added (not yet connected) when new. */
size_t cm_rd_node_find_or_add(struct rstore *rs, const char *host, size_t hostlen, int port)
{
    for (size_t i = 0; i < rs->nnodes; i++) {
        const struct rnode *n = rs->nodes[i];
        if (n->port == port && strlen(n->host) == hostlen && memcmp(n->host, host, hostlen) == 0) {
            return i;
        }
    }
    cm_rd_node_add(rs, host, hostlen, port);
    return rs->nnodes - 1;
}

void cm_rd_node_free(struct rnode *n)
{
    for (size_t i = 0; i < n->nconns; i++) {
        cm_rd_conn_deinit(&n->conns[i]);
    }
    cm_free(n->conns);
    cm_free(n->host);
    cm_free(n);
}

