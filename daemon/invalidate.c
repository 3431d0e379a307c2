/* Cross-instance invalidation over Redis pub/sub (SPEC §11).
 *
 * Each Redis server used by a node with `invalidate_channel` gets one link: a publisher and a
 * subscriber connection (hiredis async on the loop), reconnected with backoff. A message is
 * "<instance id> <client key>"; an instance ignores its own and drops the key from the local
 * caches of every node on that channel whose template matches. */
#include "daemon/invalidate.h"
#include "conf/conf.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/server.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <adapters/libevent.h>
#include <async.h>
#include <event2/event.h>
#include <hiredis.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct inval_link {
    struct cm_inval *iv;
    char *host;
    int port;
    char *password;
    redisAsyncContext *pub;      /* NULL while disconnected */
    redisAsyncContext *sub;
    bool pub_ready;
    struct event *retry;         /* reconnect timer, owned */
    int64_t backoff_ms;
};

struct cm_inval {
    struct cm_server *srv;
    struct inval_link *links;    /* nlinks, owned */
    size_t nlinks;
    int *node_link;              /* per node: index into links, or -1 */
    char id[17];                 /* this instance, hex */
    bool closing;
};

static void link_connect(struct inval_link *l);

static void schedule_retry(struct inval_link *l)
{
    if (l->iv->closing || evtimer_pending(l->retry, NULL)) {
        return;
    }
    struct timeval tv = { l->backoff_ms / 1000, (l->backoff_ms % 1000) * 1000 };
    evtimer_add(l->retry, &tv);
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    link_connect(arg);
}

/* Drops key from the local caches of every node on channel whose template matches. */
static void drop_local(struct cm_inval *iv, struct inval_link *l, const char *channel,
                       const char *key, size_t klen)
{
    struct cm_server *srv = iv->srv;
    struct cm_buf skey;
    cm_buf_init(&skey);
    for (size_t i = 0; i < srv->nnodes; i++) {
        struct cm_node *n = &srv->nodes[i];
        if (iv->node_link[i] < 0 || &iv->links[iv->node_link[i]] != l ||
            strcmp(n->conf->invalidate_channel, channel) != 0 ||
            !cm_tpl_match(&n->key, key, klen, NULL)) {
            continue;
        }
        cm_buf_reset(&skey);
        cm_node_storage_key(n, srv->conf->prefix, key, klen, &skey);
        for (size_t c = 0; c < n->nlocal; c++) {
            struct cm_storage *st = n->caches[n->local_idx[c]].st;
            if (st->ops->remove(st, cm_buf_start(&skey), cm_buf_used(&skey))) {
                st->stats.deletes++;
            }
        }
    }
    cm_buf_deinit(&skey);
}

static void on_message(redisAsyncContext *ac, void *r, void *priv)
{
    struct inval_link *l = priv;
    redisReply *reply = r;
    CM_UNUSED(ac);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0) {
        return;
    }
    const char *msg = reply->element[2]->str;
    size_t len = reply->element[2]->len;
    if (len < 18 || msg[16] != ' ' || memcmp(msg, l->iv->id, 16) == 0) {
        return;   /* malformed, or our own */
    }
    drop_local(l->iv, l, reply->element[1]->str, msg + 17, len - 17);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct inval_link *l = ac->data;
    if (status != REDIS_OK) {
        cm_log(CM_LOG_WARN, "invalidation: cannot connect to %s:%d: %s", l->host, l->port,
               ac->errstr);
        /* hiredis frees the context after this callback. */
        if (ac == l->pub) {
            l->pub = NULL;
            l->pub_ready = false;
        } else {
            l->sub = NULL;
        }
        schedule_retry(l);
        return;
    }
    if (ac == l->pub) {
        l->pub_ready = true;
    }
    l->backoff_ms = BACKOFF_MIN_MS;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct inval_link *l = ac->data;
    CM_UNUSED(status);
    if (ac == l->pub) {
        l->pub = NULL;
        l->pub_ready = false;
    } else if (ac == l->sub) {
        l->sub = NULL;
    }
    if (!l->iv->closing) {
        cm_log(CM_LOG_WARN, "invalidation: lost %s:%d, reconnecting", l->host, l->port);
        schedule_retry(l);
    }
}

static redisAsyncContext *open_ctx(struct inval_link *l)
{
    redisAsyncContext *ac = redisAsyncConnect(l->host, l->port);
    if (ac == NULL) {
        return NULL;
    }
    if (ac->err) {
        cm_log(CM_LOG_WARN, "invalidation: %s:%d: %s", l->host, l->port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = l;
    redisLibeventAttach(ac, l->iv->srv->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (l->password != NULL) {
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", l->password);
    }
    return ac;
}

/* Opens whichever connection is missing; the subscriber subscribes to this link's channels. */
static void link_connect(struct inval_link *l)
{
    struct cm_inval *iv = l->iv;
    if (l->pub == NULL) {
        l->pub = open_ctx(l);
    }
    if (l->sub == NULL && (l->sub = open_ctx(l)) != NULL) {
        for (size_t i = 0; i < iv->srv->nnodes; i++) {
            if (iv->node_link[i] >= 0 && &iv->links[iv->node_link[i]] == l) {
                const char *argv[2] = { "SUBSCRIBE", iv->srv->nodes[i].conf->invalidate_channel };
                redisAsyncCommandArgv(l->sub, on_message, l, 2, argv, NULL);
            }
        }
    }
    if (l->pub == NULL || l->sub == NULL) {
        schedule_retry(l);
    }
}

/* The first redis storage of node's chain, or NULL. */
static const struct cm_conf_storage *redis_of(const struct cm_node *n)
{
    for (size_t c = 0; c < n->ncaches; c++) {
        if (n->caches[c].st->conf->type == CM_ST_TYPE_REDIS) {
            return n->caches[c].st->conf;
        }
    }
    return NULL;
}

struct cm_inval *cm_inval_new(struct cm_server *srv, char *err, size_t errsz, int *rc)
{
    struct cm_inval *iv = NULL;
    *rc = CM_OK;
    for (size_t i = 0; i < srv->nnodes; i++) {
        struct cm_node *n = &srv->nodes[i];
        if (n->conf->invalidate_channel == NULL || n->conf->invalidate_channel[0] == '\0') {
            continue;
        }
        const struct cm_conf_storage *rs = redis_of(n);
        if (rs == NULL) {
            snprintf(err, errsz, "node %s: invalidate_channel needs a redis storage in its caches",
                     n->name);
            *rc = CM_ERR;
            cm_inval_free(iv);
            return NULL;
        }
        if (iv == NULL) {
            iv = cm_calloc(1, sizeof(*iv));
            iv->srv = srv;
            iv->node_link = cm_calloc(srv->nnodes, sizeof(int));
            for (size_t k = 0; k < srv->nnodes; k++) {
                iv->node_link[k] = -1;
            }
            iv->links = cm_calloc(srv->nnodes, sizeof(*iv->links));
            snprintf(iv->id, sizeof(iv->id), "%016llx", (unsigned long long)cm_rand64());
        }
        struct cm_url u;
        if (cm_url_parse(rs->url, &u, err, errsz) != CM_OK) {
            *rc = CM_ERR;
            cm_inval_free(iv);
            return NULL;
        }
        size_t li = 0;
        for (; li < iv->nlinks; li++) {
            if (strcmp(iv->links[li].host, u.host) == 0 && iv->links[li].port == u.port) {
                break;
            }
        }
        if (li == iv->nlinks) {
            struct inval_link *l = &iv->links[iv->nlinks++];
            l->iv = iv;
            l->host = cm_strdup(u.host);
            l->port = u.port ? u.port : 6379;
            l->password = u.password ? cm_strdup(u.password) : NULL;
            l->backoff_ms = BACKOFF_MIN_MS;
            l->retry = evtimer_new(srv->base, on_retry, l);
        }
        iv->node_link[i] = (int)li;
        cm_url_deinit(&u);
    }
    for (size_t li = 0; iv != NULL && li < iv->nlinks; li++) {
        link_connect(&iv->links[li]);
    }
    return iv;
}

void cm_inval_free(struct cm_inval *iv)
{
    if (iv == NULL) {
        return;
    }
    iv->closing = true;
    for (size_t i = 0; i < iv->nlinks; i++) {
        struct inval_link *l = &iv->links[i];
        if (l->pub != NULL) {
            redisAsyncFree(l->pub);
        }
        if (l->sub != NULL) {
            redisAsyncFree(l->sub);
        }
        event_free(l->retry);
        cm_free(l->host);
        cm_free(l->password);
    }
    cm_free(iv->links);
    cm_free(iv->node_link);
    cm_free(iv);
}

void cm_inval_publish(struct cm_inval *iv, const struct cm_node *node, const char *key,
                      size_t klen)
{
    if (iv == NULL) {
        return;
    }
    int li = iv->node_link[node - iv->srv->nodes];
    if (li < 0) {
        return;
    }
    struct inval_link *l = &iv->links[li];
    if (!l->pub_ready) {
        cm_log(CM_LOG_WARN, "invalidation: %s:%d is down, '%.*s' not published", l->host,
               l->port, (int)(klen > 100 ? 100 : klen), key);
        return;
    }
    struct cm_buf msg;
    cm_buf_init(&msg);
    cm_buf_append(&msg, iv->id, 16);
    cm_buf_append(&msg, " ", 1);
    cm_buf_append(&msg, key, klen);
    const char *argv[3] = { "PUBLISH", node->conf->invalidate_channel, cm_buf_start(&msg) };
    size_t lens[3] = { 7, strlen(node->conf->invalidate_channel), cm_buf_used(&msg) };
    redisAsyncCommandArgv(l->pub, NULL, NULL, 3, argv, lens);
    cm_buf_deinit(&msg);
}
