/* The upstream loader: fetches queued per group (loader.h), each sent by the lean HTTP/1.1 client
 * (daemon/httpc.c) when it takes the URL (http:// to a numeric address or over a Unix socket), by
 * libcurl's multi-socket API driven by libevent (the hiper.c pattern) otherwise (https, host
 * names). A few curl multi handles (shards) keep idle keep-alive connections for reuse; every
 * transfer ends in exactly one done() call, run from the loop.
 *
 * Why the lean client: cachemed's CPU per load (bench/loader-cpu.sh, N=100k GETs of distinct keys,
 * -c 50, origin bench/origin.c without delay; CPU of the miss pass minus that of as many hits,
 * divided by the loads; median of 3 interleaved runs, 2026-12-07, 2 shared cores at load ~18):
 *                                          local chain   redis chain (the Redis write included)
 *   libcurl, before the queue changes       43.3 us       38.5 us
 *   libcurl, per-group queues + own timer   49.9 us       46.9 us
 *   lean client                             16.4 us       25.5 us
 * (per missing GET, client side included: 55.6 / 59.6 / 27.6 us on the local chain). libcurl's
 * share was its per-transfer bookkeeping (connection cache walk, liveness poll of a reused
 * connection, a socket callback and epoll_ctl pair per transfer, ~20 KB per easy handle reset);
 * the lean client does one send() and one read() per load on a connection whose read event stays
 * armed, and http_parser over the bytes. The trace (NS=1000 bench/trace.sh, the two builds within
 * minutes of each other on the same busy machine): [redis] wall 21.2 -> 17.3 s, cachemed CPU
 * 7.3 -> 4.6 s; [local+redis] wall 21.9 -> 24.7 s (noise: the walls of one build vary 20-25 s at
 * this load), CPU 7.1 -> 5.2 s. */
#include "daemon/loader.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/httpc.h"
#include "daemon/log.h"
#include "daemon/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

/* Transfers sent at once (lean client and curl together); the rest wait in their group's FIFO. A
 * lean transfer costs a connection and ~300 bytes; curl scans its own pending list each time a
 * connection frees up, which made thousands of transfers queued inside curl CPU-bound: its shards
 * hold LOADER_SHARDS x LOADER_SHARD_CONNS = 1,024 connections per origin, more curl transfers
 * (https or host-name loaders over 1,024 at once) wait inside curl. */
#define LOADER_MAX_ACTIVE 2048
/* curl looks for a free connection by walking every connection it has to the host, busy ones
 * included: with 1,000 loads in flight on one multi handle that walk was the largest part of
 * curl's own CPU time. The transfers are spread over LOADER_SHARDS multi handles (each with its
 * own connection cache) instead, a new one going to the shard with the fewest active, so no
 * shard ever holds more than LOADER_SHARD_CONNS of them. */
#define LOADER_SHARDS 8
#define LOADER_SHARD_CONNS 128 /* per origin and shard */
/* Easy handles kept for reuse after a transfer (curl_easy_init allocates ~20 KB each). */
#define LOADER_SPARE_EASY 256
/* A group's default share of LOADER_MAX_ACTIVE (loader.h): one node's hung origin can hold at most
 * half the slots, the other half stays for everyone else; a node alone keeps the 1,024 loads at
 * once it had before the groups (a limit of 512 would halve the loads per second of a node whose
 * origin takes 100 ms, e.g. the trace at N = 10,000). */
#define LOADER_GROUP_DEFAULT (LOADER_MAX_ACTIVE / 2)

/*
 * Life of a transfer:
 *
 *   cm_loader_fetch --(group full)--> its group's FIFO (timer: queue timeout) --slot frees--+
 *        |                                                                                  |
 *        +--> xfer_send: run state; cm_httpc_start or curl_multi_add_handle; timer from now <-+
 *        |        | setup failed: the timer at zero   | lean done, CURLMSG_DONE, or our timer
 *        v        v                                   v
 *   xfer_finish: unlink, cancel/remove from client or curl, classify, done() exactly once, free
 *
 * cm_loader_free finishes every xfer still on the list with "shutting down".
 */

/* What a sent transfer needs besides its request; allocated at the send, so that a waiting
 * transfer costs only its struct xfer and URL. Owned by its xfer. */
struct run {
    CURL *easy;                /* libcurl's transfer, or NULL */
    struct cm_httpc_req *hreq; /* the lean client's request, or NULL */
    struct shard *shard;       /* the multi handle it was given to, NULL before */
    bool in_multi;             /* handed to curl (counted in shard->active) */
    bool holds_slot;           /* counted in l->active and group->active */
    bool setup_failed;         /* the timer (at zero) reports setup_err */
    uint64_t max_size;         /* larger bodies fail */
    bool too_big;              /* body or Content-Length exceeded max_size */
    bool head_open;            /* a status line came, its header block has not ended yet */
    bool head_done;            /* a final header block ended with its empty line */
    char setup_err[160];       /* reason for a setup failure */
    struct cm_buf body;        /* response body so far */
    char errbuf[CURL_ERROR_SIZE];
};

/* A group of fetches (a node): its waiting FIFO and limit; owned by the loader. */
struct group {
    TAILQ_HEAD(, xfer) waiting; /* not yet sent, FIFO */
    size_t nwaiting;
    size_t active; /* sent (slots held) */
    size_t limit;  /* 0 = LOADER_GROUP_DEFAULT */
};

/* One fetch; owned by its loader's list from cm_loader_fetch until xfer_finish. A waiting one is
 * this struct and its URL (one allocation): 280 bytes with a 40-byte URL (check_loader). */
struct xfer {
    struct cm_loader *l; /* owner */
    struct group *group;
    struct run *run;    /* NULL while waiting */
    struct event timer; /* queue timeout while waiting, timeout from the send after it, or
                           zero for a setup failure; assigned at fetch */
    uint64_t max_size;  /* larger bodies fail */
    int64_t timeout_ms; /* <= 0: none */
    int64_t start_ns;   /* cm_now_ns() at fetch */
    cm_load_done_fn *done;
    void *arg;
    LIST_ENTRY(xfer) link;   /* l->xfers */
    TAILQ_ENTRY(xfer) qlink; /* group->waiting while it waits for a free slot */
    bool waiting;
    bool expired;            /* its turn came after its queue timeout: the timer (at 0) fails it */
    const char *unix_socket; /* NULL or into req[] */
    char req[];              /* url NUL [unix_socket NUL] */
};

/* One multi handle with its own connection cache and timer; owned by its loader. */
struct shard {
    struct cm_loader *l;
    CURLM *multi;
    struct event *timer; /* curl's single timeout for this multi */
    size_t active;       /* transfers handed to this multi */
};

/*
 * A socket of one of curl's connections; owned by the loader (l->fds) from the first time curl
 * asks to watch it until curl closes it (CURLOPT_CLOSESOCKETFUNCTION). When a
 * transfer ends curl stops watching the socket (CURL_POLL_REMOVE) but keeps the connection for
 * the next one, which asks for CURL_POLL_IN again: the read event stays armed in between
 * ("idle"), which saves two epoll_ctl calls and an event allocation per load. An idle socket
 * that turns readable (the origin closed it) is disarmed until curl asks again; curl finds the
 * connection dead before reusing it and closes it.
 */
struct sockinfo {
    struct shard *shard; /* whose multi handle watches it now */
    curl_socket_t fd;
    struct event *ev; /* NULL until curl asks for a direction */
    int what;         /* CURL_POLL_* the event was built for */
    bool armed;       /* ev is added */
    bool idle;        /* curl does not watch it now (REMOVE) */
    bool conn;        /* a connection socket (CURLSOCKTYPE_IPCXN), closed through
                         on_curl_close; other sockets are freed at REMOVE */
};

/* The loader: LOADER_SHARDS multi handles on one event_base; owned by the server. */
struct cm_loader {
    struct event_base *base; /* borrowed */
    struct shard shards[LOADER_SHARDS];
    LIST_HEAD(, xfer) xfers; /* pending transfers */
    struct sockinfo **fds;   /* fd -> its sockinfo (owned), or NULL */
    size_t nfds;
    CURL *spare[LOADER_SPARE_EASY]; /* reset easy handles ready for reuse */
    size_t nspare;
    size_t pending;
    size_t active;         /* transfers handed to curl */
    struct group **groups; /* by index, each made on first use (owned) */
    size_t ngroups;
    size_t nwaiting;        /* over all groups */
    size_t rr;              /* the group whose turn is next in start_waiting */
    bool freeing;           /* cm_loader_free in progress: refuse new fetches */
    struct cm_httpc *httpc; /* the lean client (owned) */
};

static void start_waiting(struct cm_loader *l);
static void xfer_send(struct xfer *x);
static void on_lean_done(struct cm_load_result *res, void *arg);
static bool send_curl(struct xfer *x);

static bool curl_ready;

/* Fills res from the curl result and the transfer's state. */
static void classify(struct xfer *x, CURLcode rc, struct cm_load_result *res)
{
    struct run *r = x->run;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = status;
    res->outcome = CM_LOAD_FAILED;
    if (r->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(res->reason, sizeof(res->reason),
                 "response larger than max_value_size (%" PRIu64 " bytes)", x->max_size);
        return;
    }
    switch (rc) {
    case CURLE_OK:
        if (!r->head_done) {
            /* curl reports "HTTP/1.1 200 OK\r\nCont" + close as a complete, empty 200 */
            snprintf(res->reason, sizeof(res->reason),
                     "upstream error: response headers cut short");
        } else if (status == 200) {
            res->outcome = CM_LOAD_OK;
            res->body = cm_buf_steal(&r->body, &res->len);
        } else if (status == 404) {
            res->outcome = CM_LOAD_NOT_FOUND;
        } else {
            snprintf(res->reason, sizeof(res->reason), "status %ld", status);
        }
        return;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(res->reason, sizeof(res->reason), "timeout after %" PRId64 " ms", x->timeout_ms);
        return;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST: {
        long oserr = 0;
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
        snprintf(res->reason, sizeof(res->reason), "connect failed: %.140s",
                 oserr != 0 ? strerror((int)oserr)
                            : (r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc)));
        return;
    }
    default:
        snprintf(res->reason, sizeof(res->reason), "upstream error: %.140s",
                 r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        return;
    }
}

/* A fresh or reset easy handle; NULL when curl cannot make one. */
static CURL *easy_get(struct cm_loader *l)
{
    return l->nspare > 0 ? l->spare[--l->nspare] : curl_easy_init();
}

/* Keeps e for a later transfer, or frees it. e must not be in a multi handle. */
static void easy_put(struct cm_loader *l, CURL *e)
{
    if (l->nspare < LOADER_SPARE_EASY && !l->freeing) {
        curl_easy_reset(e);
        l->spare[l->nspare++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

/* Hands x to the shard with the fewest active transfers. */
static CURLMcode add_to_shard(struct cm_loader *l, struct xfer *x)
{
    struct shard *best = &l->shards[0];
    for (size_t i = 1; i < LOADER_SHARDS && best->active > 0; i++) {
        if (l->shards[i].active < best->active) {
            best = &l->shards[i];
        }
    }
    CURLMcode mrc = curl_multi_add_handle(best->multi, x->run->easy);
    if (mrc == CURLM_OK) {
        x->run->shard = best;
        x->run->in_multi = true;
        best->active++;
    }
    return mrc;
}

static void group_dequeue(struct cm_loader *l, struct xfer *x)
{
    TAILQ_REMOVE(&x->group->waiting, x, qlink);
    x->group->nwaiting--;
    l->nwaiting--;
    x->waiting = false;
}

/* Ends a transfer: detaches it from curl or the lean client and from the loader, runs done once,
 * frees it. given: the lean client's result; else reason != NULL forces a failure with that text
 * (setup failure, timeouts, shutdown); else curl's rc is classified. */
static void xfer_finish(struct xfer *x, struct cm_load_result *given, CURLcode rc,
                        const char *reason, bool queue_timeout)
{
    struct cm_loader *l = x->l;
    struct run *r = x->run;
    struct cm_load_result res;
    memset(&res, 0, sizeof(res));
    LIST_REMOVE(x, link);
    l->pending--;
    event_del(&x->timer);
    if (x->waiting) {
        group_dequeue(l, x);
    }
    bool freed_slot = false;
    if (r != NULL && r->in_multi) {
        curl_multi_remove_handle(r->shard->multi, r->easy);
        r->in_multi = false;
        r->shard->active--;
    }
    if (r != NULL && r->hreq != NULL) {
        cm_httpc_cancel(r->hreq); /* done has not run: it would have cleared hreq */
        r->hreq = NULL;
    }
    if (r != NULL && r->holds_slot) {
        r->holds_slot = false;
        x->group->active--;
        l->active--;
        freed_slot = true;
    }
    if (given != NULL) {
        res = *given;
        given->body = NULL;
    } else if (reason != NULL) {
        res.outcome = CM_LOAD_FAILED;
        res.queue_timeout = queue_timeout;
        snprintf(res.reason, sizeof(res.reason), "%s", reason);
    } else {
        classify(x, rc, &res);
    }
    res.elapsed_ns = cm_now_ns() - x->start_ns;
    if (res.outcome == CM_LOAD_FAILED) {
        cm_log(CM_LOG_DEBUG, "loader: %s", res.reason);
    }
    if (r != NULL) {
        if (r->easy != NULL) {
            easy_put(l, r->easy);
        }
        cm_buf_deinit(&r->body);
        cm_free(r);
    }
    cm_load_done_fn *done = x->done;
    void *arg = x->arg;
    cm_free(x);
    if (freed_slot && !l->freeing) {
        start_waiting(l);
    }
    done(&res, arg);
    cm_free(res.body);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct run *r = userdata;
    size_t n = size * nmemb;
    if (cm_buf_used(&r->body) + n > r->max_size) {
        r->too_big = true;
        return 0; /* anything but n aborts the transfer with CURLE_WRITE_ERROR */
    }
    cm_buf_append(&r->body, ptr, n);
    return n;
}

/* CURLOPT_HEADERFUNCTION: one whole header line at a time (status lines included, of 1xx and
 * redirect responses too). Tracks whether the last header block ended with its empty line. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata)
{
    struct run *r = userdata;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        r->head_open = true;
        r->head_done = false;
    } else if (r->head_open &&
               ((n == 2 && line[0] == '\r' && line[1] == '\n') || (n == 1 && line[0] == '\n'))) {
        r->head_open = false;
        r->head_done = true;
    }
    return n;
}

/* Drains a shard's completion queue. Safe to call after any curl_multi_socket_action. */
static void check_multi_info(struct shard *sh)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(sh->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        struct xfer *x = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        cm_assert(x != NULL);
        xfer_finish(x, NULL, rc, NULL, false);
    }
}

/* Socket ready: tell curl which directions, then report what finished. */
static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct sockinfo *si = arg;
    if (si->idle) {
        /* Nobody waits on this connection: the origin closed it (or sent something unasked).
         * Stop watching; curl checks the connection before it reuses it. */
        event_del(si->ev);
        si->armed = false;
        return;
    }
    struct shard *sh = si->shard; /* si may be freed inside curl */
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running = 0;
    curl_multi_socket_action(sh->multi, fd, action, &running);
    check_multi_info(sh);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct shard *sh = arg;
    int running = 0;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(sh);
}

/* CURLMOPT_TIMERFUNCTION: curl wants one timeout; never call back into curl from here. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    CM_UNUSED(multi);
    struct shard *sh = userp;
    if (timeout_ms < 0) {
        evtimer_del(sh->timer);
        return 0;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(sh->timer, &tv);
    return 0;
}

/* t (*n slots of elem bytes) grown, doubling, to hold index idx; new slots zeroed. */
static void *table_fit(void *t, size_t *n, size_t idx, size_t elem)
{
    if (idx < *n) {
        return t;
    }
    size_t m = *n > 0 ? *n : 8;
    while (m <= idx) {
        m *= 2;
    }
    t = cm_realloc(t, m * elem);
    memset((char *)t + *n * elem, 0, (m - *n) * elem);
    *n = m;
    return t;
}

static void sock_free(struct cm_loader *l, struct sockinfo *si)
{
    l->fds[si->fd] = NULL;
    if (si->ev != NULL) {
        event_free(si->ev);
    }
    cm_free(si);
}

/* The sockinfo of fd s, made on first use. */
static struct sockinfo *sock_of(struct cm_loader *l, curl_socket_t s)
{
    l->fds = table_fit(l->fds, &l->nfds, (size_t)s, sizeof(*l->fds));
    struct sockinfo *si = l->fds[s];
    if (si == NULL) {
        si = cm_calloc(1, sizeof(*si));
        si->fd = s;
        l->fds[s] = si;
    }
    return si;
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what (CURL_POLL_IN/OUT/INOUT) or stop (REMOVE). */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    CM_UNUSED(easy);
    struct shard *sh = userp;
    struct cm_loader *l = sh->l;
    struct sockinfo *si = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (si == NULL && (size_t)s < l->nfds) {
            si = l->fds[s];
        }
        if (si != NULL && !si->conn) {
            sock_free(l, si); /* not a connection (the resolver's socketpair): no reuse */
        } else if (si != NULL) {
            si->idle = true;
            if (si->armed && si->what != CURL_POLL_IN) {
                event_del(si->ev); /* only a read event may stay armed while idle */
                si->armed = false;
            }
        }
        return 0;
    }
    if (si == NULL) {
        si = sock_of(l, s);
        curl_multi_assign(sh->multi, s, si);
    }
    si->shard = sh;
    si->idle = false;
    if (si->ev != NULL && si->what == what) {
        if (!si->armed) {
            event_add(si->ev, NULL);
            si->armed = true;
        }
        return 0;
    }
    if (si->ev != NULL) {
        event_free(si->ev);
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    si->ev = event_new(l->base, s, kind, on_socket_event, si);
    si->what = what;
    event_add(si->ev, NULL);
    si->armed = true;
    return 0;
}

/* CURLOPT_SOCKOPTFUNCTION: curl made a socket; a connection's is kept until on_curl_close. */
static int on_curl_sockopt(void *clientp, curl_socket_t s, curlsocktype purpose)
{
    struct cm_loader *l = clientp;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        if ((size_t)s < l->nfds && l->fds[s] != NULL) {
            sock_free(l, l->fds[s]); /* a socket closed behind our back had this number */
        }
        sock_of(l, s)->conn = true;
    }
    return CURL_SOCKOPT_OK;
}

/* CURLOPT_CLOSESOCKETFUNCTION: curl closes one of its connections (after its REMOVE). */
static int on_curl_close(void *clientp, curl_socket_t s)
{
    struct cm_loader *l = clientp;
    if ((size_t)s < l->nfds && l->fds[s] != NULL) {
        sock_free(l, l->fds[s]);
    }
    return close(s);
}

struct cm_loader *cm_loader_new(struct event_base *base)
{
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            cm_log(CM_LOG_ERR, "loader: curl_global_init failed");
            return NULL;
        }
        curl_ready = true;
    }
    struct cm_loader *l = cm_calloc(1, sizeof(*l));
    l->base = base;
    l->httpc = cm_httpc_new(base);
    LIST_INIT(&l->xfers);
    for (size_t i = 0; i < LOADER_SHARDS; i++) {
        struct shard *sh = &l->shards[i];
        sh->l = l;
        sh->multi = curl_multi_init();
        sh->timer = evtimer_new(base, on_timer, sh);
        if (sh->multi == NULL || sh->timer == NULL) {
            cm_log(CM_LOG_ERR, "loader: cannot create the curl multi handle");
            goto fail;
        }
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
        /* = the most transfers a shard gets, so each one finds a connection of its own */
        curl_multi_setopt(sh->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)LOADER_SHARD_CONNS);
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)LOADER_SHARD_CONNS);
    }
    return l;
fail:
    for (size_t i = 0; i < LOADER_SHARDS; i++) {
        if (l->shards[i].multi != NULL) {
            curl_multi_cleanup(l->shards[i].multi);
        }
        if (l->shards[i].timer != NULL) {
            event_free(l->shards[i].timer);
        }
    }
    cm_httpc_free(l->httpc);
    cm_free(l);
    return NULL;
}

/* Runs every pending done() from here, synchronously. Must not be called from a done callback
 * of this loader (the caller of that callback still walks curl's queue). */
void cm_loader_free(struct cm_loader *l)
{
    if (l == NULL) {
        return;
    }
    l->freeing = true;
    while (!LIST_EMPTY(&l->xfers)) {
        xfer_finish(LIST_FIRST(&l->xfers), NULL, CURLE_OK, "shutting down", false);
    }
    for (size_t i = 0; i < LOADER_SHARDS; i++) {
        curl_multi_cleanup(l->shards[i].multi); /* closes its connections: on_curl_close */
        event_free(l->shards[i].timer);
    }
    for (size_t fd = 0; fd < l->nfds; fd++) {
        if (l->fds[fd] != NULL) {
            sock_free(l, l->fds[fd]);
        }
    }
    while (l->nspare > 0) {
        curl_easy_cleanup(l->spare[--l->nspare]);
    }
    cm_httpc_free(l->httpc);
    for (size_t i = 0; i < l->ngroups; i++) {
        cm_free(l->groups[i]);
    }
    cm_free(l->groups);
    cm_free(l->fds);
    cm_free(l);
}

/* The transfer's own timer: a setup failure to report, the queue timeout, or the timeout from the
 * send (whichever state x is in). */
static void on_xfer_timer(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct xfer *x = arg;
    char reason[160];
    bool queued = x->waiting || x->expired;
    if (queued) {
        snprintf(reason, sizeof(reason), "load queue timeout");
    } else if (x->run->setup_failed) {
        memcpy(reason, x->run->setup_err, sizeof(reason));
    } else {
        snprintf(reason, sizeof(reason), "timeout after %" PRId64 " ms", x->timeout_ms);
    }
    xfer_finish(x, NULL, CURLE_OK, reason, queued);
}

static void timer_arm(struct xfer *x, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(&x->timer, &tv);
}

/* Fails x from the loop on its next pass with x->run->setup_err (done must not run inside
 * cm_loader_fetch). */
static void fail_later(struct xfer *x)
{
    struct run *r = x->run;
    if (r->easy != NULL) {
        easy_put(x->l, r->easy);
        r->easy = NULL;
    }
    r->setup_failed = true;
    timer_arm(x, 0);
}

/* Applies the per-transfer options; returns CURLE_OK or the first failure. */
static CURLcode setup_easy(struct xfer *x)
{
    struct run *r = x->run;
    CURL *e = r->easy;
    CURLcode rc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (rc == CURLE_OK) {                                                                      \
            rc = curl_easy_setopt(e, opt, val);                                                    \
        }                                                                                          \
    } while (0)
    const char *url = x->req;
    SETOPT(CURLOPT_URL, url);
    SETOPT(CURLOPT_PRIVATE, x);
    SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, r);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, r);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_PROXY, "");
    SETOPT(CURLOPT_PATH_AS_IS, 1L);
    SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_USERAGENT, "cachemed");
    SETOPT(CURLOPT_SOCKOPTFUNCTION, on_curl_sockopt);
    SETOPT(CURLOPT_SOCKOPTDATA, x->l);
    SETOPT(CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
    SETOPT(CURLOPT_CLOSESOCKETDATA, x->l);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE,
           (curl_off_t)(x->max_size > INT64_MAX ? INT64_MAX : x->max_size));
    /* No CURLOPT_TIMEOUT_MS: our timer (armed at the send) is the one deadline. */
    if (x->unix_socket != NULL) {
        SETOPT(CURLOPT_UNIX_SOCKET_PATH, x->unix_socket);
    }
#undef SETOPT
    return rc;
}

/* Sends x now: its run state, an easy handle, curl; its timer counts from here. A setup failure
 * is reported from the loop. */
static void xfer_send(struct xfer *x)
{
    struct cm_loader *l = x->l;
    struct run *r = cm_calloc(1, sizeof(*r));
    x->run = r;
    r->max_size = x->max_size;
    cm_buf_init(&r->body);
    if (cm_httpc_accepts(x->req, x->unix_socket)) {
        r->hreq = cm_httpc_start(l->httpc, x->req, x->unix_socket, x->max_size, on_lean_done, x,
                                 r->setup_err, sizeof(r->setup_err));
        if (r->hreq == NULL) {
            fail_later(x);
            return;
        }
    } else if (!send_curl(x)) {
        return;
    }
    r->holds_slot = true;
    x->group->active++;
    l->active++;
    if (x->timeout_ms > 0) {
        timer_arm(x, x->timeout_ms);
    } else {
        event_del(&x->timer);
    }
}

/* The lean client's result for x. */
static void on_lean_done(struct cm_load_result *res, void *arg)
{
    struct xfer *x = arg;
    x->run->hreq = NULL; /* the client freed it */
    xfer_finish(x, res, CURLE_OK, NULL, false);
}

/* Hands x to curl; false (and a failure reported from the loop) when that failed. */
static bool send_curl(struct xfer *x)
{
    struct cm_loader *l = x->l;
    struct run *r = x->run;
    r->easy = easy_get(l);
    if (r->easy == NULL) {
        snprintf(r->setup_err, sizeof(r->setup_err), "upstream error: curl_easy_init failed");
        fail_later(x);
        return false;
    }
    CURLcode rc = setup_easy(x);
    if (rc != CURLE_OK) {
        snprintf(r->setup_err, sizeof(r->setup_err), "upstream error: %s", curl_easy_strerror(rc));
        fail_later(x);
        return false;
    }
    CURLMcode mrc = add_to_shard(l, x);
    if (mrc != CURLM_OK) {
        snprintf(r->setup_err, sizeof(r->setup_err), "upstream error: %s",
                 curl_multi_strerror(mrc));
        fail_later(x);
        return false;
    }
    return true;
}

/* The group of that index, made on first use. */
static struct group *group_of(struct cm_loader *l, size_t idx)
{
    l->groups = table_fit(l->groups, &l->ngroups, idx, sizeof(*l->groups));
    struct group *g = l->groups[idx];
    if (g == NULL) {
        g = cm_calloc(1, sizeof(*g));
        TAILQ_INIT(&g->waiting);
        l->groups[idx] = g;
    }
    return g;
}

static bool group_has_room(const struct cm_loader *l, const struct group *g)
{
    size_t cap = g->limit > 0 ? g->limit : LOADER_GROUP_DEFAULT;
    return l->active < LOADER_MAX_ACTIVE && g->active < cap;
}

int cm_loader_fetch(struct cm_loader *l, size_t group, const char *url, const char *unix_socket,
                    int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done, void *arg)
{
    if (l == NULL || l->freeing || url == NULL || done == NULL) {
        return CM_ERR;
    }
    size_t ulen = strlen(url) + 1;
    size_t slen = unix_socket != NULL ? strlen(unix_socket) + 1 : 0;
    struct xfer *x = cm_malloc(sizeof(*x) + ulen + slen);
    memset(x, 0, sizeof(*x));
    memcpy(x->req, url, ulen);
    if (unix_socket != NULL) {
        memcpy(x->req + ulen, unix_socket, slen);
        x->unix_socket = x->req + ulen;
    }
    x->l = l;
    x->group = group_of(l, group);
    x->max_size = max_size;
    x->timeout_ms = timeout_ms;
    x->start_ns = cm_now_ns();
    x->done = done;
    x->arg = arg;
    evtimer_assign(&x->timer, l->base, on_xfer_timer, x);
    LIST_INSERT_HEAD(&l->xfers, x, link);
    l->pending++;
    struct group *g = x->group;
    if (TAILQ_EMPTY(&g->waiting) && group_has_room(l, g)) {
        xfer_send(x);
        return CM_OK;
    }
    TAILQ_INSERT_TAIL(&g->waiting, x, qlink);
    g->nwaiting++;
    l->nwaiting++;
    x->waiting = true;
    if (timeout_ms > 0) {
        timer_arm(x, timeout_ms);
    }
    return CM_OK;
}

/* Sends waiting transfers while there is room: the groups with waiting transfers and room under
 * their limit take one turn each, round robin, so one group's backlog never delays another's. */
static void start_waiting(struct cm_loader *l)
{
    size_t skipped = 0; /* groups in a row that could not send */
    while (l->nwaiting > 0 && l->active < LOADER_MAX_ACTIVE && skipped < l->ngroups) {
        if (l->rr >= l->ngroups) {
            l->rr = 0;
        }
        struct group *g = l->groups[l->rr++];
        if (g == NULL || TAILQ_EMPTY(&g->waiting) || !group_has_room(l, g)) {
            skipped++;
            continue;
        }
        skipped = 0;
        struct xfer *x = TAILQ_FIRST(&g->waiting);
        group_dequeue(l, x);
        if (x->timeout_ms > 0 && cm_now_ns() - x->start_ns >= x->timeout_ms * 1000000) {
            x->expired = true; /* its timer is due anyway: fail it from the loop, unsent */
            timer_arm(x, 0);
            continue;
        }
        xfer_send(x);
    }
}

void cm_loader_group_limit(struct cm_loader *l, size_t group, size_t max_active)
{
    if (l == NULL || l->freeing) {
        return;
    }
    group_of(l, group)->limit = max_active;
    start_waiting(l);
}

size_t cm_loader_queued(const struct cm_loader *l, size_t group)
{
    if (l == NULL || group >= l->ngroups || l->groups[group] == NULL) {
        return 0;
    }
    return l->groups[group]->nwaiting;
}

size_t cm_loader_pending(const struct cm_loader *l)
{
    return l != NULL ? l->pending : 0;
}
