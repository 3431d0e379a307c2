/* The loader's lean HTTP/1.1 client (httpc.h). One request per connection at a time (no
 * pipelining). A connection's read event stays armed from its connect until it closes, idle or
 * not, so a load costs a write(), a read() and no epoll_ctl; an idle connection that turns
 * readable (the origin closed it, or sent something unasked) is closed.
 *
 * A request that fails on a reused connection before any byte of its response arrived (the
 * origin closed the kept-alive connection meanwhile) is sent once more on a fresh connection;
 * the loader's timer still counts from the first send. */
#include "daemon/httpc.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HTTPC_MAX_URL (64u << 10)
#define HTTPC_MAX_IDLE 1024 /* idle connections kept per origin (= the loader's slots) */
#define HTTPC_RBUF (64u << 10)

/* One origin (address or socket path) and its idle connections; owned by the client. */
struct pool {
    LIST_ENTRY(pool) link;
    struct sockaddr_storage addr;
    socklen_t alen;
    LIST_HEAD(, conn) idle; /* most recently used first */
    size_t nidle;
    char key[]; /* "u:<path>" or "t:<host>:<port>" */
};

/* One connection; owned by its pool's idle list while idle, by its request while busy. */
struct conn {
    struct cm_httpc *c;
    struct pool *pool;
    int fd;
    struct event rev; /* EV_READ|EV_PERSIST, added once connected */
    struct event wev; /* connect completion, the rest of a request */
    bool connected;
    unsigned served;         /* responses completed on it */
    struct cm_httpc_req *rq; /* NULL while idle */
    LIST_ENTRY(conn) idle_link;
    http_parser parser;
};

struct cm_httpc_req {
    struct cm_httpc *c;
    struct pool *pool;
    struct conn *conn;
    uint64_t max_size;
    struct cm_buf body;
    bool got_bytes; /* some of the response arrived */
    bool retried;
    bool head_done; /* the final response's header block ended */
    bool complete;
    bool too_big;
    bool in_start;     /* inside cm_httpc_start: a failure is returned, done must not run */
    bool start_failed; /* failed inside cm_httpc_start: reason holds why */
    char reason[160];
    cm_httpc_done_fn *done;
    void *arg;
    size_t outlen, outoff;
    char out[]; /* the request */
};

struct cm_httpc {
    struct event_base *base;
    LIST_HEAD(, pool) pools;
    http_parser_settings settings;
    char rbuf[HTTPC_RBUF];
};

static void conn_close(struct conn *cn)
{
    if (cn->pool != NULL && cn->rq == NULL) {
        LIST_REMOVE(cn, idle_link);
        cn->pool->nidle--;
    }
    if (cn->connected) {
        event_del(&cn->rev);
    }
    event_del(&cn->wev);
    close(cn->fd);
    cm_free(cn);
}

static void req_free(struct cm_httpc_req *rq)
{
    cm_buf_deinit(&rq->body);
    cm_free(rq);
}

/* Ends rq with res: detaches it from its connection (kept if reusable, else closed), then done. */
static void req_end(struct cm_httpc_req *rq, struct cm_load_result *res, bool keep_conn)
{
    struct conn *cn = rq->conn;
    if (cn != NULL) {
        rq->conn = NULL;
        cn->rq = NULL;
        struct pool *p = cn->pool;
        if (keep_conn && p->nidle < HTTPC_MAX_IDLE) {
            cn->served++;
            LIST_INSERT_HEAD(&p->idle, cn, idle_link);
            p->nidle++;
        } else {
            cn->pool = NULL; /* not on the idle list */
            conn_close(cn);
        }
    }
    cm_httpc_done_fn *done = rq->done;
    void *arg = rq->arg;
    req_free(rq);
    done(res, arg);
    cm_free(res->body);
}

/* Fails rq with the reason what + detail; inside cm_httpc_start only records why. */
static void req_fail(struct cm_httpc_req *rq, const char *what, const char *detail)
{
    struct cm_load_result res;
    memset(&res, 0, sizeof(res));
    res.outcome = CM_LOAD_FAILED;
    if (rq->conn != NULL && rq->head_done) {
        res.http_status = rq->conn->parser.status_code;
    }
    snprintf(res.reason, sizeof(res.reason), "%s%s", what, detail);
    if (rq->in_start) {
        struct conn *cn = rq->conn;
        if (cn != NULL) {
            rq->conn = NULL;
            cn->rq = NULL;
            cn->pool = NULL;
            conn_close(cn);
        }
        memcpy(rq->reason, res.reason, sizeof(rq->reason));
        rq->start_failed = true;
        return;
    }
    req_end(rq, &res, false);
}

/* The response is complete: classify it and end the request. */
static void req_complete(struct cm_httpc_req *rq, bool keep_conn)
{
    struct cm_load_result res;
    memset(&res, 0, sizeof(res));
    unsigned status = rq->conn->parser.status_code;
    res.http_status = status;
    if (status == 200) {
        res.outcome = CM_LOAD_OK;
        res.body = cm_buf_steal(&rq->body, &res.len);
    } else if (status == 404) {
        res.outcome = CM_LOAD_NOT_FOUND;
    } else {
        res.outcome = CM_LOAD_FAILED;
        snprintf(res.reason, sizeof(res.reason), "status %u", status);
    }
    req_end(rq, &res, keep_conn);
}

/* ---- parser callbacks (conn->parser.data is the conn) ---- */

static int on_headers_complete(http_parser *p)
{
    struct conn *cn = p->data;
    struct cm_httpc_req *rq = cn->rq;
    if (p->status_code >= 100 && p->status_code < 200) {
        return 0; /* informational: the final response follows */
    }
    rq->head_done = true;
    if (p->status_code == 200 && !(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
        p->content_length > rq->max_size) {
        rq->too_big = true;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *cn = p->data;
    struct cm_httpc_req *rq = cn->rq;
    if (p->status_code != 200) {
        return 0; /* read to keep the connection, not kept */
    }
    if (cm_buf_used(&rq->body) + len > rq->max_size) {
        rq->too_big = true;
        return -1;
    }
    cm_buf_append(&rq->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *cn = p->data;
    if (p->status_code >= 100 && p->status_code < 200) {
        return 0;
    }
    cn->rq->complete = true;
    http_parser_pause(p, 1); /* anything after it is unasked */
    return 0;
}

/* ---- I/O ---- */

static const char *cut_short(const struct cm_httpc_req *rq)
{
    return rq->head_done ? "response body cut short" : "response headers cut short";
}

static void retry_or_fail(struct cm_httpc_req *rq, const char *what);

/* Feeds n bytes (0: end of stream) to the parser of rq's connection and acts on the result.
 * Returns true when rq ended (rq and perhaps its connection are gone). */
static bool feed(struct cm_httpc_req *rq, const char *data, size_t n)
{
    struct conn *cn = rq->conn;
    struct cm_httpc *c = rq->c;
    size_t used = http_parser_execute(&cn->parser, &c->settings, data, n);
    enum http_errno err = HTTP_PARSER_ERRNO(&cn->parser);
    if (rq->complete) {
        bool keep = n > 0 && used == n && http_should_keep_alive(&cn->parser);
        req_complete(rq, keep);
        return true;
    }
    if (rq->too_big) {
        char why[96];
        snprintf(why, sizeof(why), "response larger than max_value_size (%" PRIu64 " bytes)",
                 rq->max_size);
        req_fail(rq, why, "");
        return true;
    }
    if (err != HPE_OK) {
        if (n == 0) {
            req_fail(rq, "upstream error: ", cut_short(rq));
        } else {
            req_fail(rq, "upstream error: bad response: ", http_errno_description(err));
        }
        return true;
    }
    if (n == 0) { /* the end of the stream did not complete the response */
        req_fail(rq, "upstream error: ", cut_short(rq));
        return true;
    }
    return false;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(what);
    struct conn *cn = arg;
    struct cm_httpc_req *rq = cn->rq;
    struct cm_httpc *c = cn->c;
    if (rq == NULL) {
        conn_close(cn); /* idle: the origin closed it or sent something unasked */
        return;
    }
    for (;;) {
        ssize_t r = read(fd, c->rbuf, sizeof(c->rbuf));
        if (r > 0) {
            rq->got_bytes = true;
            if (feed(rq, c->rbuf, (size_t)r) || (size_t)r < sizeof(c->rbuf)) {
                return; /* ended (cn may be gone), or nothing more to read now */
            }
            continue;
        }
        if (r == 0) {
            if (!rq->got_bytes) {
                retry_or_fail(rq, "empty reply from server");
            } else {
                feed(rq, NULL, 0);
            }
            return;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            if (!rq->got_bytes) {
                retry_or_fail(rq, strerror(errno));
            } else {
                req_fail(rq, "upstream error: ", strerror(errno));
            }
        }
        return;
    }
}

/* Writes what is left of the request; waits for writability when the socket is full. */
static void write_out(struct cm_httpc_req *rq)
{
    struct conn *cn = rq->conn;
    while (rq->outoff < rq->outlen) {
        ssize_t w = send(cn->fd, rq->out + rq->outoff, rq->outlen - rq->outoff, MSG_NOSIGNAL);
        if (w > 0) {
            rq->outoff += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(&cn->wev, NULL);
            return;
        }
        retry_or_fail(rq, strerror(errno));
        return;
    }
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(what);
    struct conn *cn = arg;
    struct cm_httpc_req *rq = cn->rq;
    if (!cn->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err != 0) {
            req_fail(rq, "connect failed: ", strerror(err));
            return;
        }
        cn->connected = true;
        event_add(&cn->rev, NULL);
    }
    write_out(rq);
}

/* A new connection to p, connecting; NULL with errno set when that failed at once. */
static struct conn *conn_new(struct cm_httpc *c, struct pool *p)
{
    int fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return NULL;
    }
    if (p->addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    struct conn *cn = cm_calloc(1, sizeof(*cn));
    cn->c = c;
    cn->fd = fd;
    event_assign(&cn->rev, c->base, fd, EV_READ | EV_PERSIST, on_read, cn);
    event_assign(&cn->wev, c->base, fd, EV_WRITE, on_write, cn);
    int rc;
    do {
        rc = connect(fd, (struct sockaddr *)&p->addr, p->alen);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) {
        cn->connected = true;
        event_add(&cn->rev, NULL);
    } else if (errno == EINPROGRESS) {
        event_add(&cn->wev, NULL);
    } else {
        int e = errno;
        close(fd);
        cm_free(cn);
        errno = e;
        return NULL;
    }
    return cn;
}

/* Puts rq on an idle connection of its pool, or a new one, and starts writing; false with errno
 * set when no connection could be made. */
static bool attach(struct cm_httpc_req *rq, bool fresh)
{
    struct pool *p = rq->pool;
    struct conn *cn = fresh ? NULL : LIST_FIRST(&p->idle);
    if (cn != NULL) {
        LIST_REMOVE(cn, idle_link);
        p->nidle--;
    } else {
        cn = conn_new(rq->c, p);
        if (cn == NULL) {
            return false;
        }
    }
    cn->pool = p;
    cn->rq = rq;
    rq->conn = cn;
    http_parser_init(&cn->parser, HTTP_RESPONSE);
    cn->parser.data = cn;
    rq->outoff = 0;
    if (cn->connected) {
        write_out(rq);
    }
    return true;
}

/* The request failed before any byte of its response: once more on a fresh connection if the
 * failed one was reused (the origin may have closed it meanwhile), else fail. */
static void retry_or_fail(struct cm_httpc_req *rq, const char *what)
{
    struct conn *cn = rq->conn;
    if (rq->retried || cn->served == 0) {
        req_fail(rq, "upstream error: ", what);
        return;
    }
    rq->retried = true;
    rq->conn = NULL;
    cn->rq = NULL;
    cn->pool = NULL;
    conn_close(cn);
    if (!attach(rq, true)) {
        req_fail(rq, "connect failed: ", strerror(errno));
    }
}

/* ---- URLs and pools ---- */

/* Splits "http://HOST[:PORT]/target" into host (without brackets), port and target; false when
 * it is not a URL this client takes. */
static bool split_url(const char *url, const char *unix_socket, char *host, size_t host_size,
                      unsigned *port, const char **target, size_t *hostlen_raw)
{
    size_t n = strlen(url);
    if (n > HTTPC_MAX_URL || strncmp(url, "http://", 7) != 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return false;
        }
    }
    const char *h = url + 7;
    size_t hl = strcspn(h, "/?#");
    if (hl == 0 || hl >= host_size || memchr(h, '@', hl) != NULL) {
        return false;
    }
    *hostlen_raw = hl;
    *target = h + hl;
    const char *colon = NULL;
    if (h[0] == '[') {
        const char *end = memchr(h, ']', hl);
        if (end == NULL) {
            return false;
        }
        memcpy(host, h + 1, (size_t)(end - h - 1));
        host[end - h - 1] = '\0';
        if (end + 1 < h + hl) {
            if (end[1] != ':') {
                return false;
            }
            colon = end + 1;
        }
    } else {
        colon = memchr(h, ':', hl);
        size_t l = colon != NULL ? (size_t)(colon - h) : hl;
        memcpy(host, h, l);
        host[l] = '\0';
    }
    *port = 80;
    if (colon != NULL) {
        unsigned v = 0;
        const char *q = colon + 1;
        if (q >= h + hl) {
            return false;
        }
        for (; q < h + hl; q++) {
            if (*q < '0' || *q > '9' || (v = v * 10 + (unsigned)(*q - '0')) > 65535) {
                return false;
            }
        }
        if (v == 0) {
            return false;
        }
        *port = v;
    }
    if (unix_socket != NULL) {
        return strlen(unix_socket) < sizeof(((struct sockaddr_un *)0)->sun_path);
    }
    struct in6_addr a6;
    return inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

bool cm_httpc_accepts(const char *url, const char *unix_socket)
{
    char host[256];
    unsigned port;
    const char *target;
    size_t hl;
    return url != NULL && split_url(url, unix_socket, host, sizeof(host), &port, &target, &hl);
}

static struct pool *pool_of(struct cm_httpc *c, const char *host, unsigned port,
                            const char *unix_socket)
{
    char key[400];
    if (unix_socket != NULL) {
        snprintf(key, sizeof(key), "u:%s", unix_socket);
    } else {
        snprintf(key, sizeof(key), "t:%s:%u", host, port);
    }
    struct pool *p;
    LIST_FOREACH(p, &c->pools, link)
    {
        if (strcmp(p->key, key) == 0) {
            return p;
        }
    }
    size_t kl = strlen(key) + 1;
    p = cm_calloc(1, sizeof(*p) + kl);
    memcpy(p->key, key, kl);
    LIST_INIT(&p->idle);
    if (unix_socket != NULL) {
        struct sockaddr_un *su = (struct sockaddr_un *)&p->addr;
        su->sun_family = AF_UNIX;
        memcpy(su->sun_path, unix_socket, strlen(unix_socket) + 1);
        p->alen = sizeof(*su);
    } else if (strchr(host, ':') == NULL) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&p->addr;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &s4->sin_addr);
        p->alen = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&p->addr;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, host, &s6->sin6_addr);
        p->alen = sizeof(*s6);
    }
    LIST_INSERT_HEAD(&c->pools, p, link);
    return p;
}

struct cm_httpc_req *cm_httpc_start(struct cm_httpc *c, const char *url, const char *unix_socket,
                                    uint64_t max_size, cm_httpc_done_fn *done, void *arg,
                                    char *reason, size_t reason_size)
{
    char host[256];
    unsigned port;
    const char *target;
    size_t hl;
    if (!split_url(url, unix_socket, host, sizeof(host), &port, &target, &hl)) {
        snprintf(reason, reason_size, "upstream error: URL not supported");
        return NULL;
    }
    size_t tl = strcspn(target, "#");
#define REQ_FMT "GET %s%.*s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: cachemed\r\nAccept: */*\r\n\r\n"
    size_t cap = sizeof(REQ_FMT) + tl + hl + 2;
    struct cm_httpc_req *rq = cm_malloc(sizeof(*rq) + cap);
    memset(rq, 0, sizeof(*rq));
    int len = snprintf(rq->out, cap, REQ_FMT, (tl == 0 || target[0] != '/') ? "/" : "", (int)tl,
                       target, (int)hl, url + 7);
#undef REQ_FMT
    cm_assert(len > 0 && (size_t)len < cap);
    rq->outlen = (size_t)len;
    rq->c = c;
    rq->max_size = max_size;
    rq->done = done;
    rq->arg = arg;
    cm_buf_init(&rq->body);
    rq->pool = pool_of(c, host, port, unix_socket);
    rq->in_start = true;
    if (!attach(rq, false)) {
        snprintf(reason, reason_size, "connect failed: %s", strerror(errno));
        req_free(rq);
        return NULL;
    }
    if (rq->start_failed) { /* e.g. the reused connection and the fresh one both refused it */
        snprintf(reason, reason_size, "%s", rq->reason);
        req_free(rq);
        return NULL;
    }
    rq->in_start = false;
    return rq;
}

void cm_httpc_cancel(struct cm_httpc_req *rq)
{
    struct conn *cn = rq->conn;
    if (cn != NULL) {
        cn->rq = NULL;
        cn->pool = NULL;
        conn_close(cn);
    }
    req_free(rq);
}

struct cm_httpc *cm_httpc_new(struct event_base *base)
{
    struct cm_httpc *c = cm_calloc(1, sizeof(*c));
    c->base = base;
    LIST_INIT(&c->pools);
    http_parser_settings_init(&c->settings);
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    return c;
}

void cm_httpc_free(struct cm_httpc *c)
{
    if (c == NULL) {
        return;
    }
    struct pool *p;
    while ((p = LIST_FIRST(&c->pools)) != NULL) {
        while (!LIST_EMPTY(&p->idle)) {
            conn_close(LIST_FIRST(&p->idle));
        }
        LIST_REMOVE(p, link);
        cm_free(p);
    }
    cm_free(c);
}
