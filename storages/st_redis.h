/* Introspection of a redis storage (cm_st_redis_ops) for tests and INFO. The storage itself is
 * used only through storages/storage.h. */
#ifndef CM_STORAGES_ST_REDIS_H
#define CM_STORAGES_ST_REDIS_H

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
    uint64_t refreshes;    /* CLUSTER SLOTS requests sent */
    uint64_t slot_updates; /* CLUSTER SLOTS replies applied to the slot map */
};

/* Fills *out for st, which must be a redis storage. */
void cm_st_redis_get_info(const struct cm_storage *st, struct cm_st_redis_info *out);

/* Writes "host:port" of the master the slot map sends slot to, or "" when the slot is unknown
 * (standalone storages: always the one server). */
void cm_st_redis_slot_owner(const struct cm_storage *st, unsigned slot, char *out, size_t outsz);

#endif
