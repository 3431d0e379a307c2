/* What a redis storage (cm_st_redis_ops) offers besides storages/storage.h: pub/sub for
 * invalidate_channel (SPEC §11), and introspection for tests and INFO. */
#ifndef CM_STORAGES_ST_REDIS_H
#define CM_STORAGES_ST_REDIS_H

#include "daemon/common.h"

#include <stddef.h>
#include <stdint.h>

struct cm_storage;

/* A snapshot of a redis storage's connection state and counters. */
struct cm_st_redis_info {
    size_t nodes;          /* servers known: 1 standalone; cluster masters seen so far */
    size_t conns;          /* connections that exist (connecting, handshaking or ready) */
    size_t conns_ready;    /* connections that finished AUTH/SELECT */
    size_t pending;        /* callbacks hiredis still holds for us, over every connection */
    uint64_t connects;     /* connections that became ready */
    uint64_t disconnects;  /* connections lost, refused, timed out or stalled */
    uint64_t moved;        /* MOVED redirects followed */
    uint64_t ask;          /* ASK redirects followed */
    uint64_t tryagain;     /* multi-key commands split per key after TRYAGAIN */
    uint64_t refreshes;    /* CLUSTER SLOTS requests sent */
    uint64_t slot_updates; /* CLUSTER SLOTS replies applied to the slot map */
    size_t channels;       /* cm_st_redis_subscribe calls */
    uint64_t subscribed;   /* SUBSCRIBE confirmations on the current pub/sub connection */
    uint64_t messages;     /* pub/sub messages received */
    uint64_t published;    /* PUBLISH commands sent */
};

/* Fills *out for st, which must be a redis storage. */
void cm_st_redis_get_info(const struct cm_storage *st, struct cm_st_redis_info *out);

/* Writes "host:port" of the master the slot map sends slot to, or "" when the slot is unknown
 * (standalone storages: always the one server). */
void cm_st_redis_slot_owner(const struct cm_storage *st, unsigned slot, char *out, size_t outsz);

/* Receives one pub/sub message (msg is not NUL-terminated, valid during the call). Runs on the loop
 * thread; it may publish, but must not close the storage. */
typedef void cm_st_redis_msg_fn(void *arg, const char *msg, size_t len);

/* Publishes msg on channel through one of st's pooled connections (any master in a cluster: Redis
 * broadcasts it to every node). Fire and forget. Returns CM_OK when queued, CM_ERR when no
 * connection is usable (the message is then lost: pub/sub has no delivery guarantee anyway). */
int cm_st_redis_publish(struct cm_storage *st, const char *channel, const char *msg, size_t len);

/* Calls fn(arg, msg, len) for every message published on channel from now on, until st is
 * closed. All subscriptions of st share one extra connection, which reconnects with the same
 * backoff and subscribes again (messages published while it is down are missed). A publisher
 * subscribed to its own channel receives its own messages too. Returns CM_ERR when closing. */
int cm_st_redis_subscribe(struct cm_storage *st, const char *channel, cm_st_redis_msg_fn *fn,
                          void *arg);

#endif
