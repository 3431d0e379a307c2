/* The upstream loader: asynchronous HTTP/1.1 GETs on the event loop (libcurl multi-socket),
 * over TCP or a Unix socket, with keep-alive connection reuse, a timeout and a size cap. */
#ifndef CM_DAEMON_LOADER_H
#define CM_DAEMON_LOADER_H

#include "daemon/common.h"

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cm_loader;

enum cm_load_outcome {
    CM_LOAD_OK = 0,      /* HTTP 200: body holds the value */
    CM_LOAD_NOT_FOUND,   /* HTTP 404: no value */
    CM_LOAD_FAILED,      /* anything else: reason holds a short text for the client */
};

/* Result handed to the done callback; the callee may steal body (set it to NULL). */
struct cm_load_result {
    enum cm_load_outcome outcome;
    long http_status;    /* 0 when no response was received */
    char *body;          /* CM_LOAD_OK: cm_malloc'd, NUL-terminated; else NULL */
    size_t len;
    char reason[160];    /* CM_LOAD_FAILED: e.g. "status 500", "timeout after 2000 ms",
                            "connect failed: Connection refused", "response larger than 1024 bytes" */
    int64_t elapsed_ns;
};

/* Runs exactly once per accepted fetch, on the loop thread, never from inside cm_loader_fetch. */
typedef void cm_load_done_fn(struct cm_load_result *res, void *arg);

/* One loader per server. Returns NULL on failure. */
struct cm_loader *cm_loader_new(struct event_base *base);
/* Fails every pending fetch (outcome FAILED, reason "shutting down") and frees. NULL is a no-op. */
void cm_loader_free(struct cm_loader *l);

/* Starts GET url (already percent-encoded). unix_socket: NULL for TCP, else the socket path
 * the request is sent over. timeout_ms covers the whole exchange. A body larger than max_size
 * is a failure. Returns CM_OK (done will run) or CM_ERR (done will not run). */
int cm_loader_fetch(struct cm_loader *l, const char *url, const char *unix_socket,
                    int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done,
                    void *arg) CM_MUSTCHECK;
/* Fetches in progress. */
size_t cm_loader_pending(const struct cm_loader *l);

#endif
