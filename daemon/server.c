/* The server: listeners, accept, the loop with its reaper, housekeeping, graceful shutdown. */
#include "daemon/server.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/conn.h"
#include "daemon/flight.h"
#include "daemon/invalidate.h"
#include "daemon/loader.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/resp.h"
#include "daemon/stats.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CM_METRICS_MAX_HEADERS 8192 /* bytes of request line + headers on /metrics */
#define CM_METRICS_TIMEOUT_S 10     /* seconds a /metrics connection may take */

/* Descriptors kept from clients: stdio, log, loop, signals, metrics, spare, a share of loader
 * connections (plus one per listener and the remote storages' pools, fit_max_clients). */
#define CM_FD_RESERVE 64
#define CM_ACCEPT_BACKOFF_MS 200   /* listeners pause this long after accept fails (EMFILE) */
#define CM_ACCEPT_REJECT_BURST 256 /* clients turned away per failure with the spare fd */
#define CM_LOG_INTERVAL_MS 1000    /* at most one accept-failure / rejection line per second */

/* Tells a client it cannot be served and closes it (a blocking-free best effort). */
static void reject_client(int fd)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_resp_error(&b, "ERR max number of clients reached");
    if (send(fd, cm_buf_start(&b), cm_buf_used(&b), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* nothing to do: the client is dropped either way */
    }
    cm_buf_deinit(&b);
    close(fd);
}

static void log_rejection(struct cm_server *srv, const char *addr)
{
    int64_t now = cm_now_ms();
    srv->stats.rejected_connections++;
    if (now - srv->reject_log_ms < CM_LOG_INTERVAL_MS) {
        srv->rejects_unlogged++;   /* a connect flood must not flood the log */
        return;
    }
    cm_log(CM_LOG_WARN,
           "rejected connection from %s: max_clients (%d) reached (%llu more rejected since the "
           "last line)",
           addr, srv->max_clients, (unsigned long long)srv->rejects_unlogged);
    srv->reject_log_ms = now;
    srv->rejects_unlogged = 0;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct cm_listener *l = arg;
    struct cm_server *srv = l->srv;
    char addr[80] = "unix";
    CM_UNUSED(lev);
    CM_UNUSED(salen);
    srv->stats.connections_received++;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(addr, sizeof(addr), "%s:%d", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(addr, sizeof(addr), "[%s]:%d", ip, ntohs(in6->sin6_port));
    }
    if (srv->shutting_down || srv->nclients >= (size_t)srv->max_clients) {
        reject_client(fd);
        log_rejection(srv, addr);
        return;
    }
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    cm_conn_new(srv, fd, addr, sa->sa_family == AF_UNIX);
}

static void set_accepting(struct cm_server *srv, bool on)
{
    for (size_t i = 0; i < srv->nlisteners; i++) {
        if (srv->listeners[i].lev != NULL) {
            if (on) {
                evconnlistener_enable(srv->listeners[i].lev);
            } else {
                evconnlistener_disable(srv->listeners[i].lev);
            }
        }
    }
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    set_accepting(arg, true);
}

static void open_spare_fd(struct cm_server *srv)
{
    if (srv->spare_fd < 0) {
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

/* At EMFILE the client waiting in the backlog can be neither served nor told: free the spare
 * descriptor, accept and turn away what waits, then take the spare back (the libev/nginx
 * trick). */
static void reject_backlog(struct cm_listener *l)
{
    struct cm_server *srv = l->srv;
    if (srv->spare_fd < 0) {
        return;
    }
    close(srv->spare_fd);
    srv->spare_fd = -1;
    for (int i = 0; i < CM_ACCEPT_REJECT_BURST; i++) {
        int fd = accept4(evconnlistener_get_fd(l->lev), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            break;
        }
        reject_client(fd);
        srv->stats.rejected_connections++;
    }
    open_spare_fd(srv);
}

static void on_listener_error(struct evconnlistener *lev, void *arg)
{
    struct cm_listener *l = arg;
    struct cm_server *srv = l->srv;
    int err = EVUTIL_SOCKET_ERROR();
    int64_t now = cm_now_ms();
    bool exhausted = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    CM_UNUSED(lev);
    srv->accept_failures++;
    if (exhausted) {
        /* The listener is level-triggered and the connection stays in the backlog: accepting
         * again at once fails again, in a tight loop (measured: 82% CPU and 778 MB of log in
         * 25 s). Turn away who waits, then pause accepting and retry from a timer. */
        reject_backlog(l);
        set_accepting(srv, false);
        struct timeval tv = { 0, CM_ACCEPT_BACKOFF_MS * 1000 };
        event_add(srv->accept_resume, &tv);
    }
    if (now - srv->accept_log_ms >= CM_LOG_INTERVAL_MS) {
        cm_log(CM_LOG_WARN,
               "accept on %s failed %llu time(s) in the last second: %s (%zu clients open, "
               "max_clients %d)%s",
               l->addr, (unsigned long long)srv->accept_failures,
               evutil_socket_error_to_string(err), srv->nclients, srv->max_clients,
               exhausted ? "; waiting clients turned away, accepting paused 200 ms" : "");
        srv->accept_log_ms = now;
        srv->accept_failures = 0;
    }
}

/* Lowers max_clients so that clients cannot take the descriptors storages, the loader and
 * listeners need (raising the soft RLIMIT_NOFILE toward the hard one first, as redis does). */
static void fit_max_clients(struct cm_server *srv)
{
    struct rlimit rl;
    rlim_t reserve = CM_FD_RESERVE + srv->conf->nlisten;
    for (size_t i = 0; i < srv->conf->nstorages; i++) {
        if (srv->conf->storages[i].type != CM_ST_TYPE_LRU &&
            srv->conf->storages[i].type != CM_ST_TYPE_TLFU) {
            reserve += (rlim_t)srv->conf->storages[i].pool_size;
        }
    }
    rlim_t want = (rlim_t)srv->max_clients + reserve;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) {
        return;
    }
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > rl.rlim_cur) {
        rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        struct rlimit raised = { cur, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            rl.rlim_cur = raised.rlim_cur;
        }
    }
    if (rl.rlim_cur >= want) {
        return;
    }
    /* Under a tiny limit the reserve would leave nothing: clients get at least half. */
    rlim_t room = rl.rlim_cur > 2 * reserve ? rl.rlim_cur - reserve : rl.rlim_cur / 2;
    int lowered = room < 1 ? 1 : (int)room;
    cm_log(CM_LOG_WARN,
           "max_clients lowered from %d to %d: the descriptor limit (RLIMIT_NOFILE) is %llu, "
           "%llu kept for storages, the loader and listeners",
           srv->max_clients, lowered, (unsigned long long)rl.rlim_cur,
           (unsigned long long)(rl.rlim_cur - (rlim_t)lowered));
    srv->max_clients = lowered;
}

/* Parses "host:port", "[v6]:port" or "unix:/path" into a sockaddr. */
static int resolve_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen,
                          char **unix_path)
{
    memset(ss, 0, sizeof(*ss));
    *unix_path = NULL;
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        if (strlen(spec + 5) >= sizeof(un->sun_path)) {
            return CM_ERR;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, spec + 5);
        *sslen = sizeof(*un);
        *unix_path = cm_strdup(spec + 5);
        return CM_OK;
    }
    int len = (int)sizeof(*ss);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)ss, &len) != 0) {
        /* A host name: resolve it once at start-up (before the loop runs). */
        char host[256];
        const char *colon = strrchr(spec, ':');
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        if (colon == NULL || (size_t)(colon - spec) >= sizeof(host)) {
            return CM_ERR;
        }
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL) {
            return CM_ERR;
        }
        memcpy(ss, res->ai_addr, res->ai_addrlen);
        *sslen = res->ai_addrlen;
        freeaddrinfo(res);
        return CM_OK;
    }
    *sslen = (socklen_t)len;
    return CM_OK;
}

static int open_listeners(struct cm_server *srv)
{
    struct cm_conf *conf = srv->conf;
    srv->listeners = cm_calloc(conf->nlisten ? conf->nlisten : 1, sizeof(*srv->listeners));
    for (size_t i = 0; i < conf->nlisten; i++) {
        struct cm_listener *l = &srv->listeners[i];
        struct sockaddr_storage ss;
        socklen_t sslen;
        l->srv = srv;
        l->addr = cm_strdup(conf->listen[i]);
        srv->nlisteners++;
        if (resolve_listen(conf->listen[i], &ss, &sslen, &l->unix_path) != CM_OK) {
            cm_log(CM_LOG_ERR, "listen %s: cannot parse address", conf->listen[i]);
            return CM_ERR;
        }
        if (l->unix_path != NULL) {
            struct stat sb;
            /* A stale socket from a previous run would make bind fail. */
            if (stat(l->unix_path, &sb) == 0 && S_ISSOCK(sb.st_mode)) {
                unlink(l->unix_path);
            }
        }
        l->lev = evconnlistener_new_bind(srv->base, on_accept, l,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                             (l->unix_path ? 0 : LEV_OPT_REUSEABLE),
                                         4096, (struct sockaddr *)&ss, (int)sslen);
        if (l->lev == NULL) {
            cm_log(CM_LOG_ERR, "listen %s: %s", conf->listen[i], strerror(errno));
            return CM_ERR;
        }
        evconnlistener_set_error_cb(l->lev, on_listener_error);
        cm_log(CM_LOG_NOTICE, "listening on %s", conf->listen[i]);
    }
    return CM_OK;
}

static void close_listeners(struct cm_server *srv)
{
    for (size_t i = 0; i < srv->nlisteners; i++) {
        struct cm_listener *l = &srv->listeners[i];
        if (l->lev != NULL) {
            evconnlistener_free(l->lev);
            l->lev = NULL;
            if (l->unix_path != NULL) {
                unlink(l->unix_path);
            }
        }
    }
    /* What only accepting needs goes with the listeners. */
    if (srv->accept_resume != NULL) {
        event_free(srv->accept_resume);
        srv->accept_resume = NULL;
    }
    if (srv->spare_fd >= 0) {
        close(srv->spare_fd);
        srv->spare_fd = -1;
    }
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct cm_server *srv = arg;
    struct cm_buf b;
    struct evbuffer *out = evbuffer_new();
    cm_buf_init(&b);
    cm_stats_metrics(srv, &b);
    evbuffer_add(out, cm_buf_start(&b), cm_buf_used(&b));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
    cm_buf_deinit(&b);
}

static int open_metrics(struct cm_server *srv)
{
    const char *spec = srv->conf->metrics_listen;
    char host[256];
    const char *colon;
    if (spec == NULL || spec[0] == '\0') {
        return CM_OK;
    }
    colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof(host)) {
        cm_log(CM_LOG_ERR, "metrics_listen %s: expected host:port", spec);
        return CM_ERR;
    }
    /* evhttp resolves the host with getaddrinfo, which takes "::1", not "[::1]". */
    size_t hlen = (size_t)(colon - spec);
    const char *h = spec;
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    srv->metrics = evhttp_new(srv->base);
    if (srv->metrics == NULL ||
        evhttp_bind_socket(srv->metrics, host, (ev_uint16_t)atoi(colon + 1)) != 0) {
        cm_log(CM_LOG_ERR, "metrics_listen %s: cannot bind", spec);
        return CM_ERR;
    }
    /* Bounded like the RESP side: 400 MB of headers or body used to grow RSS by 400 MB. A
     * request over a limit gets 400/413 and its connection closes; an idle or slow one times
     * out. */
    evhttp_set_max_headers_size(srv->metrics, CM_METRICS_MAX_HEADERS);
    evhttp_set_max_body_size(srv->metrics, 0);
    evhttp_set_timeout(srv->metrics, CM_METRICS_TIMEOUT_S);
    evhttp_set_allowed_methods(srv->metrics, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(srv->metrics, "/metrics", on_metrics, srv);
    cm_log(CM_LOG_NOTICE, "metrics on http://%s/metrics", spec);
    return CM_OK;
}

static void on_write_queue(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_conn_flush_queued(arg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct cm_server *srv = arg;
    CM_UNUSED(what);
    if (sig == SIGHUP) {
        if (cm_log_open(srv->conf->log_file) != CM_OK) {
            cm_log(CM_LOG_ERR, "cannot reopen log file %s: %s", srv->conf->log_file,
                   strerror(errno));
        } else {
            cm_log(CM_LOG_NOTICE, "log file reopened");
        }
        return;
    }
    if (srv->shutting_down) {
        cm_log(CM_LOG_NOTICE, "second signal: exiting now");
        srv->stop = true;
        event_base_loopbreak(srv->base);
        return;
    }
    cm_log(CM_LOG_NOTICE, "signal %d: shutting down", (int)sig);
    cm_server_shutdown(srv);
}

void cm_server_shutdown(struct cm_server *srv)
{
    if (srv->shutting_down) {
        return;
    }
    srv->shutting_down = true;
    srv->shutdown_deadline_ms = cm_now_ms() + srv->conf->shutdown_timeout_ms;
    close_listeners(srv);
    if (srv->metrics != NULL) {
        evhttp_free(srv->metrics);
        srv->metrics = NULL;
    }
}

/* Housekeeping every 100 ms: idle clients, shutdown progress. */
static void on_cron(evutil_socket_t fd, short what, void *arg)
{
    struct cm_server *srv = arg;
    struct cm_conn *c, *next;
    int64_t now = cm_now_ms();
    CM_UNUSED(fd);
    CM_UNUSED(what);
    for (size_t i = 0; i < srv->nnodes; i++) {
        /* Gauges of SPEC §12 for STATS, INFO and /metrics. */
        srv->nodes[i].stats.load_queued = srv->loader != NULL ? cm_loader_queued(srv->loader, i) : 0;
        srv->nodes[i].stats.breaker_state =
            (uint64_t)cm_flights_breaker_state(srv->flights, &srv->nodes[i]);
    }
    if (srv->conf->client_timeout_ms > 0) {
        for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
            next = TAILQ_NEXT(c, link);
            if (cm_conn_is_idle(c) && now - c->last_active_ms > srv->conf->client_timeout_ms) {
                cm_conn_close(c, "idle timeout");
            } else if (cm_conn_output_stalled(c, now, srv->conf->client_timeout_ms)) {
                /* Not idle, but not reading either: its replies would be held forever. */
                cm_log(CM_LOG_INFO,
                       "conn#%llu %s: output stalled for %lld ms (%zu bytes pending), closing",
                       (unsigned long long)c->id, c->addr, (long long)(now - c->last_output_ms),
                       cm_buf_used(&c->wbuf));
                cm_conn_close(c, "output stalled");
            }
        }
    }
    if (srv->shutting_down) {
        bool busy = cm_flights_active(srv->flights) > 0 || cm_loader_pending(srv->loader) > 0;
        for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
            next = TAILQ_NEXT(c, link);
            if (cm_conn_is_idle(c)) {
                cm_conn_close(c, "shutting down");
            } else {
                busy = true;
            }
        }
        if (!busy || now >= srv->shutdown_deadline_ms) {
            if (busy) {
                cm_log(CM_LOG_WARN, "shutdown_timeout reached with work in progress");
                /* Clients still waiting are told why before the close, in request order. */
                for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
                    next = TAILQ_NEXT(c, link);
                    cm_conn_abort_pending(c, "ERR server shutting down");
                }
            }
            srv->stop = true;
            event_base_loopbreak(srv->base);
        }
    }
}

/* The flight engine's way to the loader and the invalidation channel (cm_flight_env). */
static int loader_fetch(void *arg, size_t group, const char *url, const char *unix_socket,
                        int64_t timeout_ms, uint64_t max_size, cm_load_done_fn *done,
                        void *done_arg)
{
    struct cm_server *srv = arg;
    return cm_loader_fetch(srv->loader, group, url, unix_socket, timeout_ms, max_size, done,
                           done_arg);
}

static void loader_close(void *arg)
{
    struct cm_server *srv = arg;
    cm_loader_free(srv->loader);
    srv->loader = NULL;
}

static void inval_publish(void *arg, struct cm_node *node, const char *key, size_t klen)
{
    struct cm_server *srv = arg;
    cm_inval_publish(srv->inval, node, key, klen);
}

int cm_server_init(struct cm_server *srv, struct cm_conf *conf)
{
    char err[256];
    memset(srv, 0, sizeof(*srv));
    srv->conf = conf;
    TAILQ_INIT(&srv->conns);
    TAILQ_INIT(&srv->to_free);
    TAILQ_INIT(&srv->write_queue);
    srv->start_ms = cm_now_ms();
    srv->start_wall_us = cm_wall_us();
    srv->max_clients = conf->max_clients;
    srv->spare_fd = -1;
    fit_max_clients(srv);
    open_spare_fd(srv);
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    srv->base = event_base_new();
    if (srv->base == NULL) {
        cm_log(CM_LOG_ERR, "cannot create the event loop");
        return CM_ERR;
    }
    srv->loader = cm_loader_new(srv->base);
    if (srv->loader == NULL) {
        cm_log(CM_LOG_ERR, "cannot initialise the HTTP loader");
        return CM_ERR;
    }
    srv->storages = cm_calloc(conf->nstorages ? conf->nstorages : 1, sizeof(*srv->storages));
    for (size_t i = 0; i < conf->nstorages; i++) {
        srv->storages[i] = cm_storage_new(&conf->storages[i], srv->base, err, sizeof(err));
        if (srv->storages[i] == NULL) {
            cm_log(CM_LOG_ERR, "storage %s: %s", conf->storages[i].name, err);
            return CM_ERR;
        }
        srv->storages[i]->idx = i;
        srv->nstorages++;
    }
    srv->nodes = cm_nodes_new(conf, srv->storages, err, sizeof(err));
    if (srv->nodes == NULL) {
        cm_log(CM_LOG_ERR, "%s", err);
        return CM_ERR;
    }
    srv->nnodes = conf->nnodes;
    for (size_t i = 0; i < srv->nnodes; i++) {
        /* SPEC §12 loader_concurrency: the node's loads at the origin at once (its loader group) */
        if (conf->nodes[i].loader_concurrency > 0) {
            cm_loader_group_limit(srv->loader, i, (size_t)conf->nodes[i].loader_concurrency);
        }
        if (conf->nodes[i].loader_batch != NULL) {
            cm_log(CM_LOG_WARN, "node %s: loader_batch is accepted but batch loading (SPEC §13) "
                   "is not implemented in this build: keys load one request each",
                   conf->nodes[i].name);
        }
    }
    struct cm_flight_env env = {
        .base = srv->base, .prefix = conf->prefix, .nodes = srv->nodes, .nnodes = srv->nnodes,
        .nstorages = srv->nstorages, .max_value_size = conf->max_value_size,
        .fetch = loader_fetch, .loader_close = loader_close, .fetch_arg = srv, .publish = inval_publish, .publish_arg = srv,
    };
    srv->flights = cm_flights_new(&env);
    int rc;
    srv->inval = cm_inval_new(srv, err, sizeof(err), &rc);
    if (rc != CM_OK) {
        cm_log(CM_LOG_ERR, "%s", err);
        return CM_ERR;
    }
    if (open_listeners(srv) != CM_OK || open_metrics(srv) != CM_OK) {
        return CM_ERR;
    }
    srv->write_ev = event_new(srv->base, -1, 0, on_write_queue, srv);
    srv->accept_resume = evtimer_new(srv->base, on_accept_resume, srv);
    struct timeval tick = { 0, 100000 };
    srv->cron = event_new(srv->base, -1, EV_PERSIST, on_cron, srv);
    event_add(srv->cron, &tick);
    srv->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, on_signal, srv);
    srv->sig_hup = evsignal_new(srv->base, SIGHUP, on_signal, srv);
    evsignal_add(srv->sig_term, NULL);
    evsignal_add(srv->sig_int, NULL);
    evsignal_add(srv->sig_hup, NULL);
    return CM_OK;
}

static void reap(struct cm_server *srv)
{
    struct cm_conn *c;
    while ((c = TAILQ_FIRST(&srv->to_free)) != NULL) {
        TAILQ_REMOVE(&srv->to_free, c, link);
        cm_conn_free(c);
    }
}

int cm_server_run(struct cm_server *srv)
{
    cm_log(CM_LOG_NOTICE, "cachemed ready: %zu node(s), %zu storage(s)", srv->nnodes,
           srv->nstorages);
    while (!srv->stop) {
        if (event_base_loop(srv->base, EVLOOP_ONCE) < 0) {
            cm_log(CM_LOG_ERR, "event loop failed");
            return 1;
        }
        reap(srv);
    }
    cm_log(CM_LOG_NOTICE, "bye");
    return 0;
}

void cm_server_deinit(struct cm_server *srv)
{
    struct cm_conn *c;
    srv->closing = true;
    close_listeners(srv);
    while ((c = TAILQ_FIRST(&srv->conns)) != NULL) {
        cm_conn_close(c, "server stopping");
    }
    /* From here no flight starts storage work or a load: gathered reads are sent now, for
     * their storages to fail below. */
    if (srv->flights != NULL) {
        cm_flights_shutdown(srv->flights);
    }
    cm_inval_free(srv->inval);
    srv->inval = NULL;
    /* Completions already deferred by backends (cm_st_op_finish_later) run while their storage
     * still exists. */
    if (srv->base != NULL) {
        event_base_loop(srv->base, EVLOOP_NONBLOCK);
    }
    /* The loader and the remote storages fail what they still hold; the flights waiting on
     * them end (answering orphaned requests), and whatever they would start next fails at once.
     * No storage is freed before every flight has ended: a load failing here can start a queued
     * SET, which still looks at its storages (issue 14, defect 2). */
    if (srv->flights != NULL) {
        cm_flights_close_loader(srv->flights);
    }
    cm_loader_free(srv->loader);   /* when init failed before the engine existed */
    srv->loader = NULL;
    for (size_t i = 0; i < srv->nstorages; i++) {
        if (!srv->storages[i]->ops->local) {
            cm_storage_close(srv->storages[i]);
        }
    }
    if (srv->base != NULL) {
        event_base_loop(srv->base, EVLOOP_NONBLOCK);   /* deferred completions */
    }
    reap(srv);
    if (srv->flights != NULL && cm_flights_active(srv->flights) > 0) {
        cm_log(CM_LOG_ERR, "%zu key(s) still in flight at exit", cm_flights_active(srv->flights));
    }
    cm_flights_free(srv->flights);
    for (size_t i = 0; i < srv->nstorages; i++) {
        cm_storage_free(srv->storages[i]);
    }
    cm_nodes_free(srv->nodes, srv->nnodes);
    cm_free(srv->storages);
    for (size_t i = 0; i < srv->nlisteners; i++) {
        cm_free(srv->listeners[i].unix_path);
        cm_free(srv->listeners[i].addr);
    }
    cm_free(srv->listeners);
    if (srv->metrics != NULL) {
        evhttp_free(srv->metrics);
    }
    if (srv->write_ev) event_free(srv->write_ev);
    if (srv->cron) event_free(srv->cron);
    if (srv->sig_term) event_free(srv->sig_term);
    if (srv->sig_int) event_free(srv->sig_int);
    if (srv->sig_hup) event_free(srv->sig_hup);
    if (srv->base) event_base_free(srv->base);
    cm_conf_free(srv->conf);
}
