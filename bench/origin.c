/* The trace benchmark's origin (bench/trace.sh): a small HTTP/1.1 server on libevent and raw
 * non-blocking sockets, one loop. It implements the part of tests/origin.py that the trace uses:
 *
 *   GET /uid/<n>   200, body <n>, sent after the default delay (a timer, nothing blocks)
 *   GET /__stats   {"total": ..., "connections": ..., "active": ..., "max_active": ...}
 *   GET /__reset   zeroes the counters (max_active restarts from active)
 *   GET /__mode/ok, /__mode/503, /__mode/slow   how later loads are answered (bench/badday.sh):
 *                  normally; 503 after the default delay; 200 after --slow-delay-ms
 *
 * Any other path answers 404 after the same delay and is counted too. Control paths (/__...)
 * are neither delayed nor counted; an unknown one answers 404 and closes the connection.
 * Prints "origin listening PORT" once ready (the real port for --port 0); SIGTERM/SIGINT stop
 * it. tests/origin.py is the full test origin (rules, request log, Unix socket); it serves ~25k
 * requests/s, this one several times more.
 *
 * It runs on the same cores as the daemon it measures, so a request costs one recv() and one
 * send(): the HTTP is parsed here, not by evhttp, which took ~7 system calls per request (epoll
 * changes per request, readv, writev, FIONREAD). Methods GET and HEAD, no request bodies,
 * keep-alive unless "Connection: close" (HTTP/1.0: unless "Connection: keep-alive"), pipelined
 * requests answered in order. */
#include "daemon/alloc.h"
#include "daemon/common.h"
#include "daemon/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define ORIGIN_BACKLOG 4096    /* connections waiting for accept(); the peers open thousands */
#define ORIGIN_MAX_UID 20      /* digits in a /uid/<n> path */
#define ORIGIN_MAX_INPUT 16384 /* unanswered request bytes a connection may hold, or is closed */
#define ORIGIN_MAX_QUEUE 8     /* requests per connection parsed and not yet answered */
#define ORIGIN_MAX_REPLY 512   /* one reply, headers and body */
#define ORIGIN_ACCEPTS 64      /* accept() calls per readiness of the listening socket */

/* evhttp_send_error's page, kept so that error replies read as they did. */
#define ORIGIN_ERROR_PAGE                                                                          \
    "<HTML><HEAD>\n<TITLE>%d %s</TITLE>\n</HEAD><BODY>\n<H1>%s</H1>\n</BODY></HTML>\n"

/* The server: counters, connections and the buffers every callback shares (one thread). */
struct origin {
    struct event_base *base;
    const struct timeval *delay; /* a libevent common timeout: one queue for every reply */
    const struct timeval *slow;  /* the same for loads in MODE_SLOW */
    enum origin_mode {
        MODE_OK,   /* loads answer 200 (or 404) after the default delay */
        MODE_FAIL, /* loads answer 503 after the default delay */
        MODE_SLOW, /* loads answer 200 after the slow delay */
    } mode;                      /* set by /__mode/..., read when a load arrives */
    uint64_t failed;             /* loads answered 503 since the last reset */
    struct conn *conns;          /* every connection, open or waiting for its timers */
    uint64_t total;              /* loads since the last reset */
    uint64_t connections;        /* connections accepted since the last reset */
    uint64_t active;             /* loads waiting for their delay */
    uint64_t max_active;
    char in[ORIGIN_MAX_INPUT]; /* recv() lands here; only an unparsed rest is copied out */
    char out[ORIGIN_MAX_QUEUE * ORIGIN_MAX_REPLY]; /* the replies of one conn_flush */
};

enum req_kind {
    REQ_UID,         /* /uid/<n>: 200 after the delay */
    REQ_NOT_FOUND,   /* any other path: 404 after the delay */
    REQ_STATS,       /* /__stats */
    REQ_RESET,       /* /__reset */
    REQ_MODE,        /* /__mode/ok, /__mode/503, /__mode/slow */
    REQ_NO_CONTROL,  /* any other /__ path: 404, then close */
    REQ_BAD,         /* a malformed request or one with a body: 400, then close */
    REQ_NOT_ALLOWED, /* a method other than GET and HEAD: 501, then close */
};

/* One request parsed and not yet answered; lives in its connection's queue. */
struct slot {
    struct conn *c;      /* the owner, for the timer's callback */
    struct event *timer; /* made on the slot's first delayed request, freed with the conn */
    enum req_kind kind;
    bool waiting;    /* its delay has not expired yet */
    bool head;       /* HEAD: the headers without the body */
    bool close;      /* the connection's last request: say so, then close */
    bool keep_alive; /* HTTP/1.0 that asked for keep-alive: say it is granted */
    bool fail;       /* a load that arrived in MODE_FAIL: answer 503 */
    uint8_t uid_len;
    char uid[ORIGIN_MAX_UID]; /* the body of a REQ_UID reply */
};

/* One accepted connection, owned by the origin's list. Once its socket is closed (fd == -1) it
 * lives on only until the timers of its delayed requests have fired, so that "active" counts
 * every load for its whole delay as evhttp did:
 *
 *   open --(EOF, error, last reply sent)--> closed (fd -1) --(waiting == 0)--> freed
 *
 * The queue is a ring of q[head], q[head + 1], ... (count of them), answered in order: a reply
 * goes out when it and every one before it are ready. */
struct conn {
    struct origin *o;
    struct conn *prev, *next; /* o->conns */
    int fd;                   /* -1 once closed */
    struct event *rev;        /* EV_READ | EV_PERSIST, added once */
    struct event *wev;        /* EV_WRITE | EV_PERSIST, made on first need, added while out_len */
    char *in;                 /* ORIGIN_MAX_INPUT bytes once a recv() left a rest to parse */
    size_t in_len;            /* bytes in 'in' not parsed yet */
    char *out;                /* sizeof(o->out) bytes once a send() did not take everything */
    size_t out_off, out_len;  /* out[out_off, out_len) is still to be sent */
    bool last;                /* a request that closes the connection is queued: parse no more */
    unsigned head, count;     /* the queue's first slot and length */
    unsigned waiting;         /* slots whose timer is pending */
    struct slot q[ORIGIN_MAX_QUEUE];
};

static void conn_close(struct conn *c);
static int conn_flush(struct conn *c);
static void on_write(evutil_socket_t fd, short what, void *arg);

/* The body for /uid/<digits> (the digits, not NUL-terminated); returns false for any other
 * target. A query string after the digits is allowed. */
static bool uid_of(const char *t, size_t tlen, char *out, size_t *len)
{
    if (tlen < 5 || memcmp(t, "/uid/", 5) != 0) {
        return false;
    }
    size_t n = 0;
    while (5 + n < tlen && t[5 + n] >= '0' && t[5 + n] <= '9') {
        n++;
    }
    if (n == 0 || n > ORIGIN_MAX_UID || (5 + n < tlen && t[5 + n] != '?')) {
        return false;
    }
    memcpy(out, t + 5, n);
    *len = n;
    return true;
}

/* Whether the comma-separated header value v[0, n) lists tok (case-insensitive). */
static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tlen = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) {
            i++;
        }
        size_t j = i;
        while (j < n && v[j] != ',') {
            j++;
        }
        size_t k = j;
        while (k > i && (v[k - 1] == ' ' || v[k - 1] == '\t')) {
            k--;
        }
        if (k - i == tlen && strncasecmp(v + i, tok, tlen) == 0) {
            return true;
        }
        i = j;
    }
    return false;
}

/* Sets *mode from a /__mode/<ok|503|slow> target; false for any other. */
static bool mode_of(const char *t, size_t tlen, enum origin_mode *mode)
{
    static const char *const names[] = {"/__mode/ok", "/__mode/503", "/__mode/slow"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (tlen == strlen(names[i]) && memcmp(t, names[i], tlen) == 0) {
            *mode = (enum origin_mode)i;
            return true;
        }
    }
    return false;
}

static bool name_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && strncasecmp(name, want, n) == 0;
}

static void on_delay(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct slot *s = arg;
    struct conn *c = s->c;
    c->o->active--;
    s->waiting = false;
    c->waiting--;
    if (c->fd < 0) {
        if (c->waiting == 0) {
            conn_close(c);
        }
        return;
    }
    if (conn_flush(c) != CM_OK) {
        conn_close(c);
    }
}

/* Reads the header fields of a request (the lines in p[0, end), each ending in "\n") into s.
 * Returns false when the request carries a body, which this origin does not read. */
static bool parse_headers(struct slot *s, const char *p, const char *end, bool *ka)
{
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL) {
            size_t nlen = (size_t)(colon - p);
            const char *v = colon + 1;
            size_t vlen = (size_t)(le - v);
            if (name_is(p, nlen, "Connection")) {
                s->close |= has_token(v, vlen, "close");
                *ka |= has_token(v, vlen, "keep-alive");
            } else if (name_is(p, nlen, "Transfer-Encoding")) {
                return false;
            } else if (name_is(p, nlen, "Content-Length") && vlen != strspn(v, " \t0")) {
                return false;
            }
        }
        p = nl + 1;
    }
    return true;
}

/* Queues the request in req[0, len): its request line and header fields, each line ending in
 * "\r\n" (the blank line excluded). The caller made room in the queue. A load (/uid/ or a
 * 404) is counted and its delay started here; a request that ends the connection sets c->last. */
static void conn_request(struct conn *c, const char *req, size_t len)
{
    struct origin *o = c->o;
    struct slot *s = &c->q[(c->head + c->count++) % ORIGIN_MAX_QUEUE];
    s->waiting = s->head = s->close = s->keep_alive = s->fail = false;

    const char *end = req + len;
    const char *eol = memchr(req, '\n', len);
    const char *le = eol > req && eol[-1] == '\r' ? eol - 1 : eol;
    const char *sp1 = memchr(req, ' ', (size_t)(le - req));
    const char *sp2 = sp1 == NULL ? NULL : memchr(sp1 + 1, ' ', (size_t)(le - sp1 - 1));
    const char *ver = sp2 == NULL ? NULL : sp2 + 1;
    bool ka = false;
    if (sp2 == NULL || sp2 == sp1 + 1 || le - ver != 8 || memcmp(ver, "HTTP/1.", 7) != 0 ||
        ver[7] < '0' || ver[7] > '9' || !parse_headers(s, eol + 1, end, &ka)) {
        s->kind = REQ_BAD;
        s->close = c->last = true;
        return;
    }
    size_t mlen = (size_t)(sp1 - req);
    if (!(mlen == 3 && memcmp(req, "GET", 3) == 0) && !(mlen == 4 && memcmp(req, "HEAD", 4) == 0)) {
        s->kind = REQ_NOT_ALLOWED;
        s->close = c->last = true;
        return;
    }
    s->head = mlen == 4;
    if (ver[7] == '0') {
        /* HTTP/1.0 closes after each reply unless the client asks otherwise. */
        s->close = s->close || !ka;
        s->keep_alive = !s->close;
    }

    const char *t = sp1 + 1;
    size_t tlen = (size_t)(sp2 - t);
    if (tlen >= 3 && memcmp(t, "/__", 3) == 0) {
        if (tlen >= 8 && memcmp(t, "/__stats", 8) == 0) {
            s->kind = REQ_STATS;
        } else if (tlen >= 8 && memcmp(t, "/__reset", 8) == 0) {
            s->kind = REQ_RESET;
        } else if (mode_of(t, tlen, &o->mode)) {
            s->kind = REQ_MODE; /* takes effect at once, for the loads that arrive after it */
        } else {
            s->kind = REQ_NO_CONTROL;
            s->close = true;
        }
        c->last = s->close;
        return;
    }
    size_t n;
    s->kind = uid_of(t, tlen, s->uid, &n) ? REQ_UID : REQ_NOT_FOUND;
    s->uid_len = (uint8_t)(s->kind == REQ_UID ? n : 0);
    c->last = s->close;
    o->total++;
    s->fail = o->mode == MODE_FAIL;
    o->failed += s->fail;
    if (++o->active > o->max_active) {
        o->max_active = o->active;
    }
    if (s->timer == NULL) {
        s->c = c;
        s->timer = evtimer_new(o->base, on_delay, s);
    }
    s->waiting = true;
    c->waiting++;
    evtimer_add(s->timer, o->mode == MODE_SLOW ? o->slow : o->delay);
}

/* Parses the complete requests at the start of buf[0, len) into c's queue until it is full.
 * Returns the bytes consumed; the rest is an incomplete request or waits for room. Everything
 * after a request that ends the connection is consumed unread. */
static size_t conn_parse(struct conn *c, const char *buf, size_t len)
{
    size_t used = 0;
    while (!c->last && c->count < ORIGIN_MAX_QUEUE) {
        /* RFC 9112 2.2: empty lines before a request line are ignored. */
        while (used < len && (buf[used] == '\r' || buf[used] == '\n')) {
            used++;
        }
        const char *blank = memmem(buf + used, len - used, "\r\n\r\n", 4);
        if (blank == NULL) {
            break;
        }
        size_t rlen = (size_t)(blank - (buf + used)) + 2;
        conn_request(c, buf + used, rlen);
        used += rlen + 2;
    }
    return c->last ? len : used;
}

/* Writes the reply to s into out (at most ORIGIN_MAX_REPLY bytes); returns its length. A
 * /__reset takes effect here, in its turn among the connection's requests. */
static size_t slot_reply(struct origin *o, const struct slot *s, char *out)
{
    char body[ORIGIN_MAX_REPLY / 2];
    int code = 200;
    const char *reason = "OK";
    const char *type = "text/plain";
    int blen = 0;
    switch (s->kind) {
    case REQ_UID:
    case REQ_NOT_FOUND:
        if (s->fail) {
            code = 503;
            reason = "Service Unavailable";
            blen = snprintf(body, sizeof(body), "unavailable");
        } else if (s->kind == REQ_UID) {
            memcpy(body, s->uid, s->uid_len);
            blen = s->uid_len;
        } else {
            code = 404;
            reason = "Not Found";
            blen = snprintf(body, sizeof(body), "not found");
        }
        break;
    case REQ_STATS:
        type = "application/json";
        blen = snprintf(body, sizeof(body),
                        "{\"total\": %" PRIu64 ", \"connections\": %" PRIu64
                        ", \"active\": %" PRIu64 ", \"max_active\": %" PRIu64
                        ", \"failed\": %" PRIu64 "}",
                        o->total, o->connections, o->active, o->max_active, o->failed);
        break;
    case REQ_RESET:
        o->total = 0;
        o->failed = 0;
        o->connections = 0;
        o->max_active = o->active;
        type = "application/json";
        blen = snprintf(body, sizeof(body), "{\"ok\": true}");
        break;
    case REQ_MODE:
        type = "application/json";
        blen = snprintf(body, sizeof(body), "{\"mode\": %d}", (int)o->mode);
        break;
    case REQ_NO_CONTROL:
    case REQ_BAD:
    case REQ_NOT_ALLOWED:
        code = s->kind == REQ_NO_CONTROL ? 404 : s->kind == REQ_BAD ? 400 : 501;
        reason = s->kind == REQ_NO_CONTROL ? "unknown control endpoint"
                 : s->kind == REQ_BAD      ? "Bad Request"
                                           : "Not Implemented";
        type = "text/html";
        blen = snprintf(body, sizeof(body), ORIGIN_ERROR_PAGE, code, reason, reason);
        break;
    default:
        CM_NOT_REACHED();
    }
    cm_assert(blen >= 0 && (size_t)blen < sizeof(body));
    const char *conn_hdr = s->close        ? "Connection: close\r\n"
                           : s->keep_alive ? "Connection: keep-alive\r\n"
                                           : "";
    int n = snprintf(out, ORIGIN_MAX_REPLY,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n", code,
                     reason, type, conn_hdr, blen);
    cm_assert(n > 0 && (size_t)n + (size_t)blen <= ORIGIN_MAX_REPLY);
    if (s->head) {
        return (size_t)n;
    }
    memcpy(out + n, body, (size_t)blen);
    return (size_t)n + (size_t)blen;
}

/* Sends buf[0, n) with one send(); a rest the socket does not take is copied to c->out and
 * sent by on_write. Nothing may be pending in c->out. Returns CM_ERR if the socket failed. */
static int conn_send(struct conn *c, const char *buf, size_t n)
{
    cm_assert(c->out_len == 0 && n <= sizeof(c->o->out));
    ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return CM_ERR;
        }
        w = 0;
    }
    if ((size_t)w == n) {
        return CM_OK;
    }
    if (c->out == NULL) {
        c->out = cm_malloc(sizeof(c->o->out));
    }
    memcpy(c->out, buf + w, n - (size_t)w);
    c->out_off = 0;
    c->out_len = n - (size_t)w;
    if (c->wev == NULL) {
        c->wev = event_new(c->o->base, c->fd, EV_WRITE | EV_PERSIST, on_write, c);
    }
    event_add(c->wev, NULL);
    return CM_OK;
}

/* Sends, in order, the replies that are ready at the head of c's queue, and parses the input
 * kept in c->in as the queue makes room. While a rest of an earlier send is pending it sends
 * nothing: on_write calls it again once that is out, which bounds c->out. Never closes c;
 * returns CM_OK, or CM_ERR when c is to be closed now (the socket failed, or the reply to the
 * connection's last request is out). */
static int conn_flush(struct conn *c)
{
    struct origin *o = c->o;
    if (c->out_len > 0) {
        return CM_OK;
    }
    size_t n = 0;
    for (;;) {
        if (c->count > 0 && !c->q[c->head].waiting) {
            if (n + ORIGIN_MAX_REPLY > sizeof(o->out)) {
                if (conn_send(c, o->out, n) != CM_OK) {
                    return CM_ERR;
                }
                n = 0;
                if (c->out_len > 0) {
                    return CM_OK;
                }
            }
            n += slot_reply(o, &c->q[c->head], o->out + n);
            /* A client that does not pipeline keeps using q[0] and its one timer. */
            c->head = --c->count == 0 ? 0 : (c->head + 1) % ORIGIN_MAX_QUEUE;
        } else if (c->in_len > 0 && c->count < ORIGIN_MAX_QUEUE) {
            size_t used = conn_parse(c, c->in, c->in_len);
            if (used == 0) {
                break;
            }
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
        } else {
            break;
        }
    }
    if (n > 0 && conn_send(c, o->out, n) != CM_OK) {
        return CM_ERR;
    }
    return c->last && c->count == 0 && c->out_len == 0 ? CM_ERR : CM_OK;
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(what);
    struct conn *c = arg;
    ssize_t w = send(fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(c);
        }
        return;
    }
    c->out_off += (size_t)w;
    if (c->out_off < c->out_len) {
        return;
    }
    c->out_off = c->out_len = 0;
    event_del(c->wev);
    if (conn_flush(c) != CM_OK) {
        conn_close(c);
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(what);
    struct conn *c = arg;
    struct origin *o = c->o;
    ssize_t n;
    if (c->in_len == 0) {
        /* The usual case: whole requests, parsed where recv() put them. */
        n = recv(fd, o->in, sizeof(o->in), 0);
        if (n > 0) {
            size_t used = conn_parse(c, o->in, (size_t)n);
            if (used < (size_t)n) {
                if (c->in == NULL) {
                    c->in = cm_malloc(ORIGIN_MAX_INPUT);
                }
                memcpy(c->in, o->in + used, (size_t)n - used);
                c->in_len = (size_t)n - used;
            }
        }
    } else {
        /* There is room: c was closed when c->in filled up. */
        n = recv(fd, c->in + c->in_len, ORIGIN_MAX_INPUT - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
        }
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    /* EOF: the peer left or half-closed; either way its pending replies have no reader. A full
     * c->in is a request too large or too many pipelined ones: the bound on unanswered input. */
    if (n <= 0 || conn_flush(c) != CM_OK || c->in_len == ORIGIN_MAX_INPUT) {
        conn_close(c);
    }
}

static void conn_new(struct origin *o, int fd)
{
    struct conn *c = cm_calloc(1, sizeof(*c));
    c->o = o;
    c->fd = fd;
    c->rev = event_new(o->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_add(c->rev, NULL);
    c->next = o->conns;
    if (o->conns != NULL) {
        o->conns->prev = c;
    }
    o->conns = c;
    o->connections++;
}

/* Frees c at once, cancelling the timers of its delayed requests (they are not uncounted from
 * active): for the shutdown, and for a closed c whose timers have all fired. */
static void conn_free(struct conn *c)
{
    if (c->fd >= 0) {
        event_free(c->rev);
        if (c->wev != NULL) {
            event_free(c->wev);
        }
        close(c->fd);
    }
    for (unsigned i = 0; i < ORIGIN_MAX_QUEUE; i++) {
        if (c->q[i].timer != NULL) {
            event_free(c->q[i].timer);
        }
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        c->o->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    cm_free(c->in);
    cm_free(c->out);
    cm_free(c);
}

/* Closes c's socket, and frees c unless delayed requests still wait for their timers (the
 * last of which calls this again). Safe from any of c's callbacks; c must not be used after. */
static void conn_close(struct conn *c)
{
    if (c->waiting == 0) {
        conn_free(c);
        return;
    }
    if (c->fd < 0) {
        return;
    }
    event_free(c->rev);
    if (c->wev != NULL) {
        event_free(c->wev);
    }
    close(c->fd);
    c->fd = -1;
    c->rev = c->wev = NULL;
    cm_free(c->in);
    cm_free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->out_off = c->out_len = 0;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    CM_UNUSED(what);
    struct origin *o = arg;
    /* Bounded so that a burst of connections does not hold back the replies due now. */
    for (int i = 0; i < ORIGIN_ACCEPTS; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == ECONNABORTED || errno == EINTR) {
                continue;
            }
            /* EAGAIN: none left. EMFILE and the like: the next readiness tries again. */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_new(o, fd);
    }
}

/* A non-blocking listening socket on host:port; -1 after printing why not. */
static int listen_on(const char *host, long port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "origin: bad --host %s\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, ORIGIN_BACKLOG) != 0) {
        fprintf(stderr, "origin: cannot listen on %s:%ld: %s\n", host, port, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    event_base_loopbreak(arg);
}

static void usage(void)
{
    fprintf(stderr, "usage: origin [--port P] [--host 127.0.0.1] [--default-delay-ms 100]"
                    " [--slow-delay-ms 500]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 8000;
    double delay_ms = 100;
    double slow_ms = 500;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        const char *a = argv[i], *v = argv[++i];
        if (strcmp(a, "--port") == 0) {
            port = strtol(v, NULL, 10);
        } else if (strcmp(a, "--host") == 0) {
            host = v;
        } else if (strcmp(a, "--default-delay-ms") == 0) {
            delay_ms = strtod(v, NULL);
        } else if (strcmp(a, "--slow-delay-ms") == 0) {
            slow_ms = strtod(v, NULL);
        } else {
            usage();
        }
    }
    if (port < 0 || port > 65535 || delay_ms < 0 || slow_ms < 0) {
        usage();
    }
    cm_raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    struct origin *o = cm_calloc(1, sizeof(*o));
    o->base = event_base_new();
    long us = (long)(delay_ms * 1000);
    struct timeval tv = {us / 1000000, us % 1000000};
    o->delay = event_base_init_common_timeout(o->base, &tv);
    us = (long)(slow_ms * 1000);
    struct timeval stv = {us / 1000000, us % 1000000};
    o->slow = event_base_init_common_timeout(o->base, &stv);

    int lfd = listen_on(host, port);
    if (lfd < 0) {
        return 1;
    }
    struct event *lev = event_new(o->base, lfd, EV_READ | EV_PERSIST, on_accept, o);
    event_add(lev, NULL);
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    getsockname(lfd, (struct sockaddr *)&bound, &blen);
    printf("origin listening %d\n", ntohs(bound.sin_port));
    fflush(stdout);

    struct event *sigterm = evsignal_new(o->base, SIGTERM, on_signal, o->base);
    struct event *sigint = evsignal_new(o->base, SIGINT, on_signal, o->base);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_base_dispatch(o->base);

    event_free(sigterm);
    event_free(sigint);
    event_free(lev);
    close(lfd);
    while (o->conns != NULL) {
        conn_free(o->conns); /* pending replies are dropped with their connections */
    }
    event_base_free(o->base);
    cm_free(o);
    return 0;
}
