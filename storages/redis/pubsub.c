/* Redis storage: pub/sub for invalidate_channel (SPEC §11). */
#include "storages/redis/redis_int.h"

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
        cm_rd_conn_replied(c, NULL);
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
void cm_rd_sub_send(struct rconn *c, size_t i)
{
    struct rstore *rs = c->node->rs;
    const struct rchan *ch = &rs->chans[i];
    for (size_t j = 0; j < i; j++) {
        if (chan_is(&rs->chans[j], ch->name, ch->len)) {
            return;
        }
    }
    if (redisAsyncCommand(c->ac, on_message, c, "SUBSCRIBE %b", ch->name, ch->len) == REDIS_OK) {
        cm_rd_conn_sent(c);
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
        cm_rd_conn_init(rs->sub, rs->nodes[0]);
        rs->sub->is_sub = true;
        cm_rd_conn_connect(rs->sub);
    } else if (cm_rd_conn_usable(rs->sub)) {
        cm_rd_sub_send(rs->sub, rs->nchans - 1);
    }
    return CM_OK;
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    const redisReply *r = reply;
    CM_UNUSED(ac);
    cm_rd_conn_replied(c, r);
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        cm_rd_node_warn(c->node, "PUBLISH failed: %s", r->str);
    }
}

int cm_st_redis_publish(struct cm_storage *st, const char *channel, const char *msg, size_t len)
{
    struct rstore *rs = st->priv;
    size_t clen = strlen(channel);
    if (rs->closing) {
        return CM_ERR;
    }
    struct rnode *n = rs->cluster ? cm_rd_slot_node(rs, cm_redis_key_slot(channel, clen)) : rs->nodes[0];
    struct rconn *c = cm_rd_node_pick(n, (unsigned)cm_hash(channel, clen));
    if (c == NULL || redisAsyncCommand(c->ac, on_published, c, "PUBLISH %b %b", channel, clen, msg,
                                       len) != REDIS_OK) {
        return CM_ERR;
    }
    cm_rd_conn_sent(c);
    rs->counters.published++;
    return CM_OK;
}

