/* Cross-instance invalidation (SPEC §11) on top of the redis storage's pub/sub
 * (storages/st_redis.h): a node with `invalidate_channel` publishes "<instance id> <client key>"
 * through the first redis storage of its chain once a DEL/SET/REFRESH has written the shared
 * caches; every instance subscribed to the channel ignores its own messages and drops the key
 * from that node's local caches. */
#include "daemon/invalidate.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/server.h"
#include "daemon/util.h"
#include "storages/st_redis.h"
#include "storages/storage.h"

#include <string.h>

/* One node's subscription. */
struct inval_sub {
    struct cm_inval *iv;
    struct cm_node *node;
    struct cm_storage *redis;    /* borrowed: the node's first redis storage */
};

struct cm_inval {
    struct cm_server *srv;
    struct inval_sub *subs;      /* per node; redis == NULL when the node has no channel */
    char id[17];                 /* this instance, hex */
};

static struct cm_storage *redis_of(const struct cm_node *n)
{
    for (size_t c = 0; c < n->ncaches; c++) {
        if (n->caches[c].st->conf->type == CM_ST_TYPE_REDIS) {
            return n->caches[c].st;
        }
    }
    return NULL;
}

static void on_message(void *arg, const char *msg, size_t len)
{
    struct inval_sub *s = arg;
    struct cm_node *n = s->node;
    struct cm_server *srv = s->iv->srv;
    if (len < 18 || msg[16] != ' ' || memcmp(msg, s->iv->id, 16) == 0) {
        return;   /* malformed, or our own */
    }
    const char *key = msg + 17;
    size_t klen = len - 17;
    if (!cm_tpl_match(&n->key, key, klen, NULL)) {
        return;   /* another node on the same channel */
    }
    struct cm_buf skey;
    cm_buf_init(&skey);
    cm_node_storage_key(n, srv->conf->prefix, key, klen, &skey);
    for (size_t c = 0; c < n->nlocal; c++) {
        struct cm_storage *st = n->caches[n->local_idx[c]].st;
        cm_storage_remove(st, cm_buf_start(&skey), cm_buf_used(&skey));
    }
    cm_buf_deinit(&skey);
}

struct cm_inval *cm_inval_new(struct cm_server *srv, char *err, size_t errsz, int *rc)
{
    struct cm_inval *iv = NULL;
    *rc = CM_OK;
    for (size_t i = 0; i < srv->nnodes; i++) {
        struct cm_node *n = &srv->nodes[i];
        const char *ch = n->conf->invalidate_channel;
        if (ch == NULL || ch[0] == '\0') {
            continue;
        }
        struct cm_storage *redis = redis_of(n);
        if (redis == NULL) {
            snprintf(err, errsz, "node %s: invalidate_channel needs a redis storage in its caches",
                     n->name);
            *rc = CM_ERR;
            cm_inval_free(iv);
            return NULL;
        }
        if (iv == NULL) {
            iv = cm_calloc(1, sizeof(*iv));
            iv->srv = srv;
            iv->subs = cm_calloc(srv->nnodes, sizeof(*iv->subs));
            snprintf(iv->id, sizeof(iv->id), "%016llx", (unsigned long long)cm_rand64());
        }
        struct inval_sub *s = &iv->subs[i];
        s->iv = iv;
        s->node = n;
        s->redis = redis;
        if (cm_st_redis_subscribe(redis, ch, on_message, s) != CM_OK) {
            snprintf(err, errsz, "node %s: cannot subscribe to '%s'", n->name, ch);
            *rc = CM_ERR;
            cm_inval_free(iv);
            return NULL;
        }
    }
    return iv;
}

void cm_inval_free(struct cm_inval *iv)
{
    if (iv == NULL) {
        return;
    }
    cm_free(iv->subs);
    cm_free(iv);
}

void cm_inval_publish(struct cm_inval *iv, const struct cm_node *node, const char *key,
                      size_t klen)
{
    if (iv == NULL) {
        return;
    }
    struct inval_sub *s = &iv->subs[node - iv->srv->nodes];
    if (s->redis == NULL) {   /* the node has no channel */
        return;
    }
    struct cm_buf msg;
    cm_buf_init(&msg);
    cm_buf_append(&msg, iv->id, 16);
    cm_buf_append(&msg, " ", 1);
    cm_buf_append(&msg, key, klen);
    if (cm_st_redis_publish(s->redis, node->conf->invalidate_channel, cm_buf_start(&msg),
                            cm_buf_used(&msg)) != CM_OK) {
        cm_log(CM_LOG_WARN, "invalidation: '%.*s' not published on %s (redis %s unavailable)",
               (int)(klen > 100 ? 100 : klen), key, node->conf->invalidate_channel,
               s->redis->name);
    }
    cm_buf_deinit(&msg);
}
