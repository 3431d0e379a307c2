/* Flights: one per storage key, covering the remote reads, the load and the writes (SPEC §6, §8).
 * Also orders mutations (SET/DEL/REFRESH) against reads and writes of the same key. */
#ifndef CM_DAEMON_FLIGHT_H
#define CM_DAEMON_FLIGHT_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;
struct cm_flights;
struct cm_node;
struct cm_req;
struct cm_server;

/* One key of a GET/MGET: the request slot it answers. */
struct cm_getkey {
    struct cm_node *node;
    const char *key;     /* client key, borrowed from the request's argv */
    size_t klen;
    size_t slot;
    bool local_checked;  /* the local caches already missed (cm_flight_get_local) */
};

/* Step 1 of a read: looks key up in node's local caches, in order (a later one's hit backfills
 * the earlier ones). On a hit appends the bulk reply to out, counts it, and returns true. */
bool cm_flight_get_local(struct cm_server *srv, struct cm_node *node, const char *key,
                         size_t klen, struct cm_buf *out);

struct cm_flights *cm_flights_new(struct cm_server *srv);
/* Frees the table; flights still running keep their own memory until they end. */
void cm_flights_free(struct cm_flights *fl);
/* Sends the remote reads gathered so far (normally done at the end of each loop iteration). */
void cm_flights_flush(struct cm_flights *fl);
/* Keys with a flight or mutation in progress. */
size_t cm_flights_active(const struct cm_flights *fl);

/* GET/MGET: answers each key into req's slot: local hit at once; otherwise joins or starts the
 * key's flight. Remote reads of new flights are batched per node and storage. */
void cm_flight_get(struct cm_server *srv, struct cm_req *req, const struct cm_getkey *keys,
                   size_t n);
/* DEL: removes key from every cache of node, superseding reads in progress. Holds one part of
 * req until the deletes are done. */
void cm_flight_del(struct cm_server *srv, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen);
/* SET: writes the client-form value into every cache of node (ttl_ms_override > 0 replaces
 * each cache's ttl). Holds one part of req until the writes are done. */
void cm_flight_set(struct cm_server *srv, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen, const char *val, size_t vlen,
                   int64_t ttl_ms_override);
/* REFRESH: loads key again and writes it everywhere; answers slot of req with the new value. */
void cm_flight_refresh(struct cm_server *srv, struct cm_req *req, size_t slot,
                       struct cm_node *node, const char *key, size_t klen);

#endif
