/* The loader's lean HTTP/1.1 client (daemon/httpc.c): GET over plain TCP to a numeric address or
 * over a Unix socket, on the event loop, with a keep-alive connection pool per origin and
 * Debian's libhttp-parser for responses. The loader (daemon/loader.c) uses it for every URL it
 * accepts (cm_httpc_accepts) and libcurl for the rest (https, host names); it keeps the timers,
 * queues and limits itself. See loader.c for why (CPU per load). */
#ifndef CM_DAEMON_HTTPC_H
#define CM_DAEMON_HTTPC_H

#include "daemon/loader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cm_httpc;
struct cm_httpc_req;

/* Runs exactly once per started request, from the loop (never inside cm_httpc_start), with
 * outcome, http_status, body/len (stealable) and reason filled. The request is freed after. */
typedef void cm_httpc_done_fn(struct cm_load_result *res, void *arg);

struct cm_httpc *cm_httpc_new(struct event_base *base);
/* Closes every connection. No request may be in progress (cancel them first). NULL: no-op. */
void cm_httpc_free(struct cm_httpc *c);

/* True when url (+ unix_socket) is one this client handles: "http://" with a numeric IPv4/IPv6
 * host (any host with a unix_socket), no user info, printable ASCII, at most 64 KiB. */
bool cm_httpc_accepts(const char *url, const char *unix_socket);

/* Sends GET url (cm_httpc_accepts must hold). A 200 body larger than max_size fails. Returns the
 * request, or NULL with reason filled (e.g. "connect failed: ...") when it failed at once. */
struct cm_httpc_req *cm_httpc_start(struct cm_httpc *c, const char *url, const char *unix_socket,
                                    uint64_t max_size, cm_httpc_done_fn *done, void *arg,
                                    char *reason, size_t reason_size);
/* Abandons a request whose done has not run: done will not run; its connection is closed. */
void cm_httpc_cancel(struct cm_httpc_req *rq);

#endif
