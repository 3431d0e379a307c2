/* The flight engine: one flight per storage key covering the remote reads, the load and the
 * writes (SPEC §6, §8), and the order of mutations (SET/DEL/REFRESH) against reads and writes of
 * the same key. It sees nodes, storages and requests, never the server or a connection: what it
 * needs from its host (the loader, the invalidation channel) comes in a cm_flight_env, so the
 * unit tests and the fuzzer drive it with a fake storage and a fake loader. */
#ifndef CM_DAEMON_FLIGHT_H
#define CM_DAEMON_FLIGHT_H

#include "daemon/common.h"
#include "daemon/loader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;
struct cm_flights;
struct cm_node;
struct cm_req;
struct event_base;

/* Starts one load (cm_loader_fetch's contract: done runs exactly once, later, unless CM_ERR). */
typedef int cm_flight_fetch_fn(void *arg, size_t group, const char *url, const char *unix_socket,
                               int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done,
                               void *done_arg);
/* Fails every load still out (each done() runs once, from inside the call or later) and takes
 * no more: the loader's end at shutdown. */
typedef void cm_flight_loader_close_fn(void *arg);
/* A mutation of key finished its writes: tell other instances (SPEC §11). */
typedef void cm_flight_publish_fn(void *arg, struct cm_node *node, const char *key, size_t klen);

/* What the engine borrows from its host; copied by cm_flights_new, pointers must outlive it. */
struct cm_flight_env {
    struct event_base *base;
    const char *prefix;           /* first part of every storage key */
    struct cm_node *nodes;        /* the node table (a node's index is its loader group) */
    size_t nnodes;
    size_t nstorages;             /* storages are numbered 0..n-1 by their idx */
    uint64_t max_value_size;
    cm_flight_fetch_fn *fetch;
    cm_flight_loader_close_fn *loader_close;
    void *fetch_arg;               /* for fetch and loader_close */
    cm_flight_publish_fn *publish;   /* NULL: nothing to publish */
    void *publish_arg;
};

/* One key of a GET/MGET: the request slot it answers. */
struct cm_getkey {
    struct cm_node *node;
    const char *key;     /* client key, borrowed from the request's argv */
    size_t klen;
    size_t slot;
    bool local_checked;  /* the local caches already missed (cm_flight_get_local) */
};

struct cm_flights *cm_flights_new(const struct cm_flight_env *env);
/* Frees the engine; every flight must have ended (cm_flights_active() == 0). NULL: no-op. */
void cm_flights_free(struct cm_flights *fl);
/* Sends the remote reads gathered so far (normally done once the loop pass's callbacks ran). */
void cm_flights_flush(struct cm_flights *fl);
/* Keys with a flight or mutation in progress. */
size_t cm_flights_active(const struct cm_flights *fl);
/* Teardown begins: no new storage op or load is started (they fail at once), writes are skipped,
 * the reads gathered so far are sent (for their storages to fail). Flights still running end as
 * their storages and the loader fail what they hold. */
void cm_flights_shutdown(struct cm_flights *fl);
/* A node's breaker (SPEC §12): 0 closed, 1 open, 2 its trial load is out. */
int cm_flights_breaker_state(const struct cm_flights *fl, const struct cm_node *node);
/* Shutdown, next step: the loader fails every load still out (env.loader_close). */
void cm_flights_close_loader(struct cm_flights *fl);

/* Step 1 of a read: looks key up in node's local caches, in order (a later one's hit backfills
 * the earlier ones). On a hit appends the reply to out (a bulk; nil for a negative entry, in
 * RESP3 form when resp3), counts it, and returns true. */
bool cm_flight_get_local(struct cm_flights *fl, struct cm_node *node, const char *key,
                         size_t klen, bool resp3, struct cm_buf *out);
/* GET/MGET: answers each key into req's slot: local hit at once; otherwise joins or starts the
 * key's flight. Remote reads of new flights are batched per storage. */
void cm_flight_get(struct cm_flights *fl, struct cm_req *req, const struct cm_getkey *keys,
                   size_t n);
/* DEL: removes key from every cache of node, superseding reads in progress. Holds one part of
 * req until the deletes are done. */
void cm_flight_del(struct cm_flights *fl, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen);
/* SET: writes the client-form value into every cache of node (ttl_ms_override > 0 replaces
 * each cache's ttl). Holds one part of req until the writes are done. */
void cm_flight_set(struct cm_flights *fl, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen, const char *val, size_t vlen,
                   int64_t ttl_ms_override);
/* REFRESH: loads key again and writes it everywhere; answers slot of req with the new value.
 * REFRESHes that arrive while one is waiting to load join it (one load for all of them). */
void cm_flight_refresh(struct cm_flights *fl, struct cm_req *req, size_t slot,
                       struct cm_node *node, const char *key, size_t klen);

#endif
