/* Redis storage: open, close, INFO, and the backend ops table. */
#include "storages/redis/redis_int.h"

/* ---- open / close ------------------------------------------------------------------------ */

static void rstore_free(struct rstore *rs)
{
    rs->closing = true;
    if (rs->tick != NULL) {
        event_free(rs->tick);
    }
    if (rs->sub != NULL) {
        cm_rd_conn_deinit(rs->sub);
        cm_free(rs->sub);
    }
    cm_rd_finish_deferred(rs);
    for (size_t i = 0; i < rs->nnodes; i++) {
        cm_rd_node_free(rs->nodes[i]);
        rs->nodes[i] = NULL;
    }
    /* done() of the ops failed just now may have submitted more: they failed at once. */
    cm_rd_finish_deferred(rs);
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
    cm_rd_node_add(rs, host, strlen(host), port);
    cm_free(host);
    rs->defer_ev = event_new(st->base, -1, 0, cm_rd_on_defer, rs);
    rs->tick = event_new(st->base, -1, EV_PERSIST, cm_rd_on_tick, rs);
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    event_add(rs->tick, &tv);
    /* Connect now, in the background: a server that is down is retried, never fatal. */
    cm_rd_node_start(rs->nodes[0]);
    if (rs->cluster) {
        cm_rd_cluster_refresh(rs);
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
    .submit = cm_rd_redis_submit,
    .close = redis_close,
    .info = redis_info,
};

