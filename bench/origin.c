/* The trace benchmark's origin (bench/trace.sh): a small HTTP/1.1 server on libevent's evhttp,
 * one loop, non-blocking. It implements the part of tests/origin.py that the trace uses:
 *
 *   GET /uid/<n>   200, body <n>, sent after the default delay (an evtimer, nothing blocks)
 *   GET /__stats   {"total": ..., "connections": ..., "active": ..., "max_active": ...}
 *   GET /__reset   zeroes the counters
 *
 * Any other path answers 404 after the same delay and is counted too. Control paths (/__...)
 * are neither delayed nor counted. Prints "origin listening PORT" once ready (the real port
 * for --port 0); SIGTERM/SIGINT stop it. tests/origin.py is the full test origin (rules,
 * request log, Unix socket); it serves ~25k requests/s, this one several times more. */
#include "daemon/alloc.h"
#include "daemon/common.h"
#include "daemon/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define ORIGIN_BACKLOG 4096 /* evhttp_bind_socket would listen with 128 */
#define ORIGIN_MAX_UID 20   /* digits in a /uid/<n> path */

struct origin {
    struct event_base *base;
    struct evhttp *http;
    const struct timeval *delay; /* a libevent common timeout: one queue for every reply */
    uint64_t total;              /* loads since the last reset */
    uint64_t connections;        /* connections accepted since the last reset */
    uint64_t active;             /* loads waiting for their delay */
    uint64_t max_active;
};

/* One delayed reply; owned by its timer until it fires. */
struct pending {
    struct origin *o;
    struct evhttp_request *req; /* evhttp keeps it alive until we reply, even if the peer left */
    struct event *ev;
    int status;
    size_t len;
    char body[ORIGIN_MAX_UID + 1];
};

static void on_delay(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct pending *p = arg;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, p->body, p->len);
    evhttp_add_header(evhttp_request_get_output_headers(p->req), "Content-Type",
                      "application/octet-stream");
    /* Frees the request at once when its connection is gone (req->evcon == NULL). */
    evhttp_send_reply(p->req, p->status, p->status == 200 ? "OK" : "Not Found", b);
    evbuffer_free(b);
    p->o->active--;
    event_free(p->ev);
    cm_free(p);
}

static void reply_json(struct evhttp_request *req, const char *json)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, json, strlen(json));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* The body for /uid/<digits>: the digits; returns false for any other path. */
static bool uid_of(const char *uri, char *out, size_t *len)
{
    if (strncmp(uri, "/uid/", 5) != 0) {
        return false;
    }
    const char *d = uri + 5;
    size_t n = strspn(d, "0123456789");
    if (n == 0 || n > ORIGIN_MAX_UID || (d[n] != '\0' && d[n] != '?')) {
        return false;
    }
    memcpy(out, d, n);
    out[n] = '\0';
    *len = n;
    return true;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct origin *o = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (strncmp(uri, "/__", 3) == 0) {
        char json[256];
        if (strncmp(uri, "/__stats", 8) == 0) {
            snprintf(json, sizeof(json),
                     "{\"total\": %" PRIu64 ", \"connections\": %" PRIu64 ", \"active\": %" PRIu64
                     ", \"max_active\": %" PRIu64 "}",
                     o->total, o->connections, o->active, o->max_active);
            reply_json(req, json);
        } else if (strncmp(uri, "/__reset", 8) == 0) {
            o->total = 0;
            o->connections = 0;
            o->max_active = o->active;
            reply_json(req, "{\"ok\": true}");
        } else {
            evhttp_send_error(req, 404, "unknown control endpoint");
        }
        return;
    }
    struct pending *p = cm_calloc(1, sizeof(*p));
    p->o = o;
    p->req = req;
    p->status = uid_of(uri, p->body, &p->len) ? 200 : 404;
    if (p->status != 200) {
        p->len = (size_t)snprintf(p->body, sizeof(p->body), "not found");
    }
    o->total++;
    if (++o->active > o->max_active) {
        o->max_active = o->active;
    }
    p->ev = evtimer_new(o->base, on_delay, p);
    evtimer_add(p->ev, o->delay);
}

/* evhttp has no accept hook before 2.2: count connections through the bev factory. */
static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    struct origin *o = arg;
    o->connections++;
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    event_base_loopbreak(arg);
}

static void usage(void)
{
    fprintf(stderr, "usage: origin [--port P] [--host 127.0.0.1] [--default-delay-ms 100]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 8000;
    double delay_ms = 100;
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
        } else {
            usage();
        }
    }
    if (port < 0 || port > 65535 || delay_ms < 0) {
        usage();
    }
    cm_raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    struct origin o = {0};
    o.base = event_base_new();
    long us = (long)(delay_ms * 1000);
    struct timeval tv = {us / 1000000, us % 1000000};
    o.delay = event_base_init_common_timeout(o.base, &tv);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "origin: bad --host %s\n", host);
        return 2;
    }
    struct evconnlistener *lis = evconnlistener_new_bind(
        o.base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        ORIGIN_BACKLOG, (struct sockaddr *)&sa, sizeof(sa));
    if (lis == NULL) {
        fprintf(stderr, "origin: cannot listen on %s:%ld: %s\n", host, port, strerror(errno));
        return 1;
    }
    o.http = evhttp_new(o.base);
    evhttp_set_gencb(o.http, on_request, &o);
    evhttp_set_bevcb(o.http, new_bev, &o);
    evhttp_set_timeout(o.http, 600); /* idle keep-alive connections of the peers stay open */
    evhttp_set_allowed_methods(o.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    if (evhttp_bind_listener(o.http, lis) == NULL) {
        fprintf(stderr, "origin: evhttp_bind_listener failed\n");
        return 1;
    }
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&bound, &blen);
    printf("origin listening %d\n", ntohs(bound.sin_port));
    fflush(stdout);

    struct event *sigterm = evsignal_new(o.base, SIGTERM, on_signal, o.base);
    struct event *sigint = evsignal_new(o.base, SIGINT, on_signal, o.base);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_base_dispatch(o.base);

    event_free(sigterm);
    event_free(sigint);
    evhttp_free(o.http); /* also frees the listener; pending replies are dropped with it */
    event_base_free(o.base);
    return 0;
}
