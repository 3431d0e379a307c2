/* Host name lookups off the event loop (storages/resolve.h). */
#include "storages/resolve.h"
#include "daemon/alloc.h"
#include "storages/workers.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

struct cm_resolver {
    struct cm_workers *pool; /* one thread */
};

/* Owned by its job: freed by lookup_done, whether or not it was cancelled. */
struct cm_lookup {
    cm_resolved_fn *fn; /* NULL once cancelled */
    void *arg;
    char *host;         /* own copy: the thread must not read loop state */
    char addr[INET6_ADDRSTRLEN];
    int err;            /* getaddrinfo's result, or EAI_FAIL for an unusable address */
};

struct cm_resolver *cm_resolver_new(struct event_base *base, const char *name)
{
    struct cm_workers *pool = cm_workers_new(base, 1, name);
    if (pool == NULL) {
        return NULL;
    }
    struct cm_resolver *r = cm_calloc(1, sizeof(*r));
    r->pool = pool;
    return r;
}

void cm_resolver_free(struct cm_resolver *r)
{
    if (r == NULL) {
        return;
    }
    cm_workers_free(r->pool);
    cm_free(r);
}

/* Resolver thread. */
static void lookup_work(void *arg)
{
    struct cm_lookup *l = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    l->err = getaddrinfo(l->host, NULL, &hints, &res);
    if (l->err != 0) {
        return;
    }
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    const void *in = pick->ai_family == AF_INET
                         ? (const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr
                         : (const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
    if (inet_ntop(pick->ai_family, in, l->addr, sizeof(l->addr)) == NULL) {
        l->err = EAI_FAIL;
    }
    freeaddrinfo(res);
}

/* Loop thread. */
static void lookup_done(void *arg)
{
    struct cm_lookup *l = arg;
    if (l->fn != NULL) {
        if (l->err != 0) {
            l->fn(l->arg, NULL, gai_strerror(l->err));
        } else {
            l->fn(l->arg, l->addr, NULL);
        }
    }
    cm_free(l->host);
    cm_free(l);
}

struct cm_lookup *cm_resolve(struct cm_resolver *r, const char *host, cm_resolved_fn *fn,
                             void *arg)
{
    struct cm_lookup *l = cm_calloc(1, sizeof(*l));
    l->fn = fn;
    l->arg = arg;
    l->host = cm_strdup(host);
    cm_workers_submit(r->pool, lookup_work, lookup_done, l);
    return l;
}

void cm_lookup_cancel(struct cm_lookup *l)
{
    l->fn = NULL;
}

bool cm_host_is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}
