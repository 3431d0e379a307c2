/* Host name lookups off the event loop (storages/resolve.c): getaddrinfo blocks, so it runs on a
 * one-thread worker pool and the answer comes back on the loop. For the storages whose client
 * libraries would otherwise resolve a name on the loop thread (hiredis, libpq, MariaDB). */
#ifndef CM_STORAGES_RESOLVE_H
#define CM_STORAGES_RESOLVE_H

#include <stdbool.h>

struct event_base;
struct cm_resolver;
struct cm_lookup;

/* On the loop: addr is the numeric address (the first IPv4 one, else the first), or NULL with
 * err saying why. Not called for a cancelled lookup. */
typedef void cm_resolved_fn(void *arg, const char *addr, const char *err);

/* NULL when no thread can be started. */
struct cm_resolver *cm_resolver_new(struct event_base *base, const char *name);
/* Waits for a lookup in progress; cancelled ones are freed. NULL is a no-op. */
void cm_resolver_free(struct cm_resolver *r);
/* Starts a lookup of host; fn runs later on the loop, never from inside this call. */
struct cm_lookup *cm_resolve(struct cm_resolver *r, const char *host, cm_resolved_fn *fn,
                             void *arg);
/* fn will not run; the lookup is freed once its thread is done with it. */
void cm_lookup_cancel(struct cm_lookup *l);
/* True for an IPv4 or IPv6 literal (needs no lookup). */
bool cm_host_is_numeric(const char *host);

#endif
