/* The upstream loader: asynchronous HTTP/1.1 GETs on the event loop (libcurl multi-socket),
 * over TCP or a Unix socket, with keep-alive connection reuse, a timeout and a size cap.
 *
 * Fairness: every fetch names a group (the server passes its node's index). At most
 * LOADER_MAX_ACTIVE (2,048) fetches are at an origin at once over all groups, and at most the
 * group's limit within one group: cm_loader_group_limit, by default half the global cap (1,024), so
 * that one node's hung loads never take every slot. The rest wait in their group's FIFO, holding
 * no connection, curl handle or buffer (a few hundred bytes each, URL included); when a slot frees,
 * the groups that have waiting fetches and room under their limit take turns (round robin).
 *
 * Timeouts (SPEC section 12): a fetch that waited in its queue longer than timeout_ms fails with
 * reason "load queue timeout" (queue_timeout set) without contacting the origin; once sent,
 * timeout_ms counts from the send, enforced by the loader's own timer (curl's retry of a dead
 * kept-alive connection restarts curl's clock, not ours). */
#ifndef CM_DAEMON_LOADER_H
#define CM_DAEMON_LOADER_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cm_loader;

enum cm_load_outcome {
    CM_LOAD_OK = 0,    /* HTTP 200: body holds the value */
    CM_LOAD_NOT_FOUND, /* HTTP 404: no value */
    CM_LOAD_FAILED,    /* anything else: reason holds a short text for the client */
};

/* Result handed to the done callback; the callee may steal body (set it to NULL). */
struct cm_load_result {
    enum cm_load_outcome outcome;
    long http_status; /* 0 when no response was received */
    char *body;       /* CM_LOAD_OK: cm_malloc'd, NUL-terminated; else NULL */
    size_t len;
    char reason[160];   /* CM_LOAD_FAILED: e.g. "status 500", "timeout after 2000 ms",
                           "load queue timeout", "connect failed: Connection refused",
                           "upstream error: response headers cut short" */
    int64_t elapsed_ns; /* from cm_loader_fetch to done(), queueing included */
    bool queue_timeout; /* failed in the queue, never sent: not the origin's fault (breaker) */
};

/* Runs exactly once per accepted fetch, on the loop thread, never from inside cm_loader_fetch. */
typedef void cm_load_done_fn(struct cm_load_result *res, void *arg);

/* One loader per server. Returns NULL on failure. */
struct cm_loader *cm_loader_new(struct event_base *base);
/* Fails every pending fetch (outcome FAILED, reason "shutting down") and frees. NULL is a no-op. */
void cm_loader_free(struct cm_loader *l);

/* Starts GET url (already percent-encoded; copied) for group (any index, e.g. the node's; groups
 * are made on first use). unix_socket: NULL for TCP, else the socket path the request is sent over
 * (copied). timeout_ms (<= 0: none) bounds the wait in the queue and, separately, the exchange from
 * its send. A body larger than max_size is a failure. A response counts only when complete (status
 * line, headers, and the body up to its Content-Length, chunked end or close). Returns CM_OK (done
 * will run) or CM_ERR (done will not run). */
int cm_loader_fetch(struct cm_loader *l, size_t group, const char *url, const char *unix_socket,
                    int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done,
                    void *arg) CM_MUSTCHECK;
/* At most max_active fetches of group at the origin at once (0 = the default, 1,024: half the
 * global cap; the global cap still applies). Waiting fetches start at once if the limit grew. */
void cm_loader_group_limit(struct cm_loader *l, size_t group, size_t max_active);
/* Fetches of group waiting for a slot (the load_queued gauge). */
size_t cm_loader_queued(const struct cm_loader *l, size_t group);
/* Fetches in progress (waiting or sent). */
size_t cm_loader_pending(const struct cm_loader *l);

#endif
