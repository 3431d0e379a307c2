/* Redis storage: the cluster slot map, and ops routed into commands (per connection or per
 * hash slot), their replies and redirects. */
#include "storages/redis/redis_int.h"

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

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
    size_t idx = cm_rd_node_find_or_add(x->rs, host, hostlen, port);
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
    cm_rd_conn_replied(c, r);
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
void cm_rd_cluster_refresh(struct rstore *rs)
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
        struct rconn *c = cm_rd_node_pick(n, (unsigned)cm_rand64());
        if (c == NULL || redisAsyncCommand(c->ac, on_slots, c, "CLUSTER SLOTS") != REDIS_OK) {
            continue;
        }
        cm_rd_conn_sent(c);
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
struct rnode *cm_rd_slot_node(struct rstore *rs, unsigned slot)
{
    if (rs->slots != NULL && rs->slots[slot] != 0) {
        return rs->nodes[rs->slots[slot] - 1];
    }
    for (size_t i = 0; i < rs->nnodes; i++) {
        for (size_t j = 0; j < rs->nodes[i]->nconns; j++) {
            if (cm_rd_conn_usable(&rs->nodes[i]->conns[j])) {
                return rs->nodes[i];
            }
        }
    }
    return rs->nodes[0];
}

void cm_rd_on_tick(evutil_socket_t fd, short what, void *arg)
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
                cm_rd_conn_drop(c, why);
            }
        }
    }
    if (rs->cluster && rs->refresh_wanted) {
        cm_rd_cluster_refresh(rs);
    }
}

/* ---- operations -------------------------------------------------------------------------- */

/* Finishes every deferred op (in submit order). done() may submit again: those wait their turn. */
void cm_rd_finish_deferred(struct rstore *rs)
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

void cm_rd_on_defer(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_rd_finish_deferred(arg);
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

/* One PTTL in flight for the age of item idx of op (hiredis privdata of on_pttl). */
struct rpttl {
    struct cm_st_op *op;
    struct rconn *conn;
    size_t idx;
};

/* A raw value has no write time in Redis (wrapped ones carry Cacheme's updated_at, which the
 * daemon's serializer reads): the key's remaining TTL stands in for it (SPEC §12). The writer
 * kept the value for op->ttl_ms (ttl + grace, the GET's ttl_ms), so it was written
 * op->ttl_ms - pttl ago. The PTTL is pipelined right behind the GET/MGET on the same connection,
 * so it costs no extra round trip; another client's write landing between the two gives the
 * newer value's age (the answer then looks one write fresher than it is). PTTL -1 (no expiry), -2 (gone meanwhile), an error (a cluster
 * redirect: the GET follows it and sends its PTTLs again) or a timed-out op leave written_ms 0,
 * unknown. */
static void on_pttl(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rpttl *pt = priv;
    redisReply *r = reply;
    CM_UNUSED(ac);
    cm_rd_conn_replied(pt->conn, r);
    struct cm_st_item *it = &pt->op->items[pt->idx];
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && !pt->op->timed_out &&
        it->result == CM_ST_HIT) {
        it->written_ms =
            cm_st_written_from_remaining(cm_wall_us() / 1000, pt->op->ttl_ms, r->integer);
    }
    struct cm_st_op *op = pt->op;
    cm_free(pt);
    op_unref(op, false);
}

/* Queues PTTL for each key of rc behind its GET/MGET on c (op->want_age). Best effort: a PTTL
 * that cannot be queued leaves that key's age unknown. */
static void send_pttls(struct rcmd *rc, struct rconn *c)
{
    struct cm_buf *cmd = &c->node->rs->cmd;
    for (size_t i = 0; i < rc->n; i++) {
        const struct cm_st_item *it = &rc->op->items[rc->idx[i]];
        cm_buf_reset(cmd);
        cm_resp_array(cmd, 2);
        cm_resp_bulk_str(cmd, "PTTL");
        cm_resp_bulk(cmd, it->key, it->klen);
        struct rpttl *pt = cm_malloc(sizeof(*pt));
        *pt = (struct rpttl){ .op = rc->op, .conn = c, .idx = rc->idx[i] };
        if (redisAsyncFormattedCommand(c->ac, on_pttl, pt, cm_buf_start(cmd), cm_buf_used(cmd)) !=
            REDIS_OK) {
            cm_free(pt);
            return;
        }
        cm_rd_conn_sent(c);
        ((struct rop *)rc->op->bpriv)->nleft++;
    }
}

/* Sends rc to node n (after ASKING when asking). Returns CM_OK when hiredis queued it. */
static int rcmd_send(struct rcmd *rc, struct rnode *n, bool asking)
{
    struct cm_st_op *op = rc->op;
    struct rconn *c = !n->rs->cluster && op->kind == CM_ST_GET ? cm_rd_node_pick_read(n)
                                                                : cm_rd_node_pick(n, rc->route);
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
        /* A ttl ending past CM_ST_EXPIRE_MAX_MS is stored without an expiry: Redis refuses a
         * SETEX whose seconds * 1000 + now overflows ("invalid expire time"), and ttls that long
         * mean forever on every backend (storages/st_keys.h). secs below cannot overflow. */
        if (op->ttl_ms < 0 ||
            (op->ttl_ms > 0 && cm_st_ttl_forever(op->ttl_ms, cm_wall_us() / 1000))) {
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
        if (redisAsyncCommand(c->ac, cm_rd_on_asking, c, "ASKING") != REDIS_OK) {
            goto out;
        }
        cm_rd_conn_sent(c);
    }
    if (redisAsyncFormattedCommand(c->ac, on_reply, rc, cm_buf_start(cmd), cm_buf_used(cmd)) ==
        REDIS_OK) {
        cm_rd_conn_sent(c);
        rc->conn = c;
        rv = CM_OK;
        if (op->kind == CM_ST_GET && op->want_age && op->ttl_ms > 0) {
            send_pttls(rc, c);
        }
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
    size_t idx = cm_rd_node_find_or_add(rs, host, strlen(host), port);
    if (kind == CM_REDIS_REDIR_MOVED) {
        rs->counters.moved++;
        if (rs->slots == NULL) {
            rs->slots = cm_calloc(CM_REDIS_NSLOTS, sizeof(*rs->slots));
        }
        rs->slots[slot] = (uint16_t)(idx + 1);
        cm_rd_cluster_refresh(rs);
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
    cm_rd_conn_replied(c, r);
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
    struct rnode *node = rs->cluster ? cm_rd_slot_node(rs, rc->route) : rs->nodes[0];
    if (rcmd_send(rc, node, false) != CM_OK) {
        rcmd_fail(rc, true, "%s: not connected", node->name);
    }
}

void cm_rd_redis_submit(struct cm_storage *st, struct cm_st_op *op)
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

