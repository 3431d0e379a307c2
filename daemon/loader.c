/* The upstream loader: libcurl's multi-socket API driven by libevent (the hiper.c pattern).
 * A few multi handles (shards) per loader keep idle keep-alive connections for reuse; every
 * transfer ends in exactly one done() call, run from the loop. */
#include "daemon/loader.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

/* Transfers handed to curl at once; the rest wait in our FIFO. curl scans its own pending list
 * each time a connection frees up, which made thousands of queued transfers CPU-bound. */
#define LOADER_MAX_ACTIVE 1024
/* curl looks for a free connection by walking every connection it has to the host, busy ones
 * included: with 1,000 loads in flight on one multi handle that walk was the largest part of
 * curl's own CPU time. The transfers are spread over LOADER_SHARDS multi handles (each with its
 * own connection cache) instead, a new one going to the shard with the fewest active, so no
 * shard ever holds more than LOADER_SHARD_CONNS of them. */
#define LOADER_SHARDS 8
#define LOADER_SHARD_CONNS (LOADER_MAX_ACTIVE / LOADER_SHARDS) /* per origin and shard */
/* Easy handles kept for reuse after a transfer (curl_easy_init allocates ~20 KB each). */
#define LOADER_SPARE_EASY 256

/*
 * Life of a transfer:
 *
 *   cm_loader_fetch --curl_multi_add_handle--> curl (timer 0) --> sockets/timers on the loop
 *        |                                                           |
 *        | setup failed: own zero timer (defer_ev)                   | CURLMSG_DONE
 *        v                                                           v
 *   xfer_finish: unlink, curl_multi_remove_handle, classify, done() exactly once, free
 *
 * cm_loader_free finishes every xfer still on the list with "shutting down".
 */

/* One fetch; owned by its loader's list from cm_loader_fetch until xfer_finish. */
struct xfer {
    struct cm_loader *l;    /* owner */
    CURL *easy;             /* NULL when setup failed (defer_ev then finishes it) */
    struct event *defer_ev; /* zero timer that reports an immediate failure from the loop */
    char setup_err[96];     /* reason for a setup failure */
    struct cm_buf body;     /* response body so far */
    uint64_t max_size;      /* larger bodies fail */
    int64_t timeout_ms;     /* for the timeout reason */
    int64_t start_ns;       /* cm_now_ns() at fetch */
    bool too_big;           /* body or Content-Length exceeded max_size */
    char errbuf[CURL_ERROR_SIZE];
    cm_load_done_fn *done;
    void *arg;
    LIST_ENTRY(xfer) link;   /* l->xfers */
    struct shard *shard;     /* the multi handle it was given to, NULL before */
    bool in_multi;           /* handed to curl (counted in l->active and shard->active) */
    TAILQ_ENTRY(xfer) qlink; /* l->waiting while it waits for a free slot */
    bool waiting;
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
    size_t active;              /* transfers handed to curl */
    TAILQ_HEAD(, xfer) waiting; /* transfers waiting for an active slot, FIFO */
    bool freeing;               /* cm_loader_free in progress: refuse new fetches */
};

static void start_waiting(struct cm_loader *l);

static bool curl_ready;

/* Fills res from the curl result and the transfer's state. */
static void classify(struct xfer *x, CURLcode rc, struct cm_load_result *res)
{
    long status = 0;
    if (x->easy != NULL) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    }
    res->http_status = status;
    res->outcome = CM_LOAD_FAILED;
    if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(res->reason, sizeof(res->reason),
                 "response larger than max_value_size (%" PRIu64 " bytes)", x->max_size);
        return;
    }
    switch (rc) {
    case CURLE_OK:
        if (status == 200) {
            res->outcome = CM_LOAD_OK;
            res->body = cm_buf_steal(&x->body, &res->len);
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
        curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &oserr);
        snprintf(res->reason, sizeof(res->reason), "connect failed: %.140s",
                 oserr != 0 ? strerror((int)oserr)
                            : (x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc)));
        return;
    }
    default:
        snprintf(res->reason, sizeof(res->reason), "upstream error: %.140s",
                 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
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
    CURLMcode mrc = curl_multi_add_handle(best->multi, x->easy);
    if (mrc == CURLM_OK) {
        x->shard = best;
        x->in_multi = true;
        best->active++;
        l->active++;
    }
    return mrc;
}

/* Ends a transfer: detaches it from curl and the loader, runs done once, frees it.
 * reason != NULL forces a failure with that text (setup failure, shutdown). */
static void xfer_finish(struct xfer *x, CURLcode rc, const char *reason)
{
    struct cm_loader *l = x->l;
    struct cm_load_result res;
    memset(&res, 0, sizeof(res));
    LIST_REMOVE(x, link);
    l->pending--;
    if (x->waiting) {
        TAILQ_REMOVE(&l->waiting, x, qlink);
        x->waiting = false;
    }
    if (x->in_multi) {
        curl_multi_remove_handle(x->shard->multi, x->easy);
        x->in_multi = false;
        x->shard->active--;
        l->active--;
        if (!l->freeing) {
            start_waiting(l);
        }
    }
    if (reason != NULL) {
        res.outcome = CM_LOAD_FAILED;
        snprintf(res.reason, sizeof(res.reason), "%s", reason);
    } else {
        classify(x, rc, &res);
    }
    res.elapsed_ns = cm_now_ns() - x->start_ns;
    if (res.outcome == CM_LOAD_FAILED) {
        cm_log(CM_LOG_DEBUG, "loader: %s", res.reason);
    }
    if (x->easy != NULL) {
        easy_put(l, x->easy);
    }
    if (x->defer_ev != NULL) {
        event_free(x->defer_ev);
    }
    cm_buf_deinit(&x->body);
    cm_load_done_fn *done = x->done;
    void *arg = x->arg;
    cm_free(x);
    done(&res, arg);
    cm_free(res.body);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t n = size * nmemb;
    if (cm_buf_used(&x->body) + n > x->max_size) {
        x->too_big = true;
        return 0; /* anything but n aborts the transfer with CURLE_WRITE_ERROR */
    }
    cm_buf_append(&x->body, ptr, n);
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
        xfer_finish(x, rc, NULL);
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
    if ((size_t)s >= l->nfds) {
        size_t n = l->nfds > 0 ? l->nfds : 64;
        while (n <= (size_t)s) {
            n *= 2;
        }
        l->fds = cm_realloc(l->fds, n * sizeof(*l->fds));
        memset(l->fds + l->nfds, 0, (n - l->nfds) * sizeof(*l->fds));
        l->nfds = n;
    }
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
    LIST_INIT(&l->xfers);
    TAILQ_INIT(&l->waiting);
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
        xfer_finish(LIST_FIRST(&l->xfers), CURLE_OK, "shutting down");
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
    cm_free(l->fds);
    cm_free(l);
}

static void on_deferred_failure(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct xfer *x = arg;
    char reason[sizeof(x->setup_err)];
    memcpy(reason, x->setup_err, sizeof(reason));
    xfer_finish(x, CURLE_OK, reason);
}

/* Fails x from the loop on its next pass with x->setup_err (done must not run inside
 * cm_loader_fetch). An owned event, not event_base_once, so that cm_loader_free can cancel it. */
static void fail_later(struct xfer *x)
{
    if (x->easy != NULL) {
        easy_put(x->l, x->easy);
        x->easy = NULL;
    }
    x->defer_ev = evtimer_new(x->l->base, on_deferred_failure, x);
    struct timeval zero = {0, 0};
    evtimer_add(x->defer_ev, &zero);
}

/* Applies the per-transfer options; returns CURLE_OK or the first failure. */
static CURLcode setup_easy(struct xfer *x, const char *url, const char *unix_socket)
{
    CURL *e = x->easy;
    CURLcode rc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (rc == CURLE_OK) {                                                                      \
            rc = curl_easy_setopt(e, opt, val);                                                    \
        }                                                                                          \
    } while (0)
    SETOPT(CURLOPT_URL, url);
    SETOPT(CURLOPT_PRIVATE, x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, x);
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
    if (x->timeout_ms > 0) {
        SETOPT(CURLOPT_TIMEOUT_MS, (long)x->timeout_ms);
    }
    if (unix_socket != NULL) {
        SETOPT(CURLOPT_UNIX_SOCKET_PATH, unix_socket);
    }
#undef SETOPT
    return rc;
}

int cm_loader_fetch(struct cm_loader *l, const char *url, const char *unix_socket,
                    int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done, void *arg)
{
    if (l == NULL || l->freeing || url == NULL || done == NULL) {
        return CM_ERR;
    }
    struct xfer *x = cm_calloc(1, sizeof(*x));
    x->l = l;
    x->max_size = max_size;
    x->timeout_ms = timeout_ms;
    x->start_ns = cm_now_ns();
    x->done = done;
    x->arg = arg;
    cm_buf_init(&x->body);
    LIST_INSERT_HEAD(&l->xfers, x, link);
    l->pending++;

    x->easy = easy_get(l);
    if (x->easy == NULL) {
        snprintf(x->setup_err, sizeof(x->setup_err), "upstream error: curl_easy_init failed");
        fail_later(x);
        return CM_OK;
    }
    CURLcode rc = setup_easy(x, url, unix_socket);
    if (rc != CURLE_OK) {
        snprintf(x->setup_err, sizeof(x->setup_err), "upstream error: %s", curl_easy_strerror(rc));
        fail_later(x);
        return CM_OK;
    }
    if (l->active >= LOADER_MAX_ACTIVE) {
        TAILQ_INSERT_TAIL(&l->waiting, x, qlink);
        x->waiting = true;
        return CM_OK;
    }
    CURLMcode mrc = add_to_shard(l, x);
    if (mrc != CURLM_OK) {
        snprintf(x->setup_err, sizeof(x->setup_err), "upstream error: %s",
                 curl_multi_strerror(mrc));
        fail_later(x);
    }
    return CM_OK;
}

/* Hands waiting transfers to curl while there is room. A transfer whose timeout ran out while it
 * waited fails from the loop. Time spent waiting counts against its timeout. */
static void start_waiting(struct cm_loader *l)
{
    struct xfer *x;
    while (l->active < LOADER_MAX_ACTIVE && (x = TAILQ_FIRST(&l->waiting)) != NULL) {
        TAILQ_REMOVE(&l->waiting, x, qlink);
        x->waiting = false;
        int64_t left_ms = x->timeout_ms - (cm_now_ns() - x->start_ns) / 1000000;
        CURLMcode mrc = CURLM_OK;
        if (x->timeout_ms > 0 && left_ms <= 0) {
            snprintf(x->setup_err, sizeof(x->setup_err), "timeout after %lld ms",
                     (long long)x->timeout_ms);
        } else {
            if (x->timeout_ms > 0) {
                curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)left_ms);
            }
            mrc = add_to_shard(l, x);
            if (mrc == CURLM_OK) {
                continue;
            }
            snprintf(x->setup_err, sizeof(x->setup_err), "upstream error: %s",
                     curl_multi_strerror(mrc));
        }
        fail_later(x);
    }
}

size_t cm_loader_pending(const struct cm_loader *l)
{
    return l != NULL ? l->pending : 0;
}
