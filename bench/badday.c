/* The bad-day benchmark's driver (run by bench/badday.sh, issue 15 point 8): C clients, each
 * on its own connection, one request at a time with a think time between them, reading
 * Zipf-distributed uid keys from cachemed (RESP GET uid:<n>) or an HTTP cache (GET /uid/<n>)
 * for --secs seconds. It also runs the origin's day (bench/origin.c): at the phase boundaries
 * it switches the origin to 503, then to slow loads, then back (GET /__mode/...), and reads the
 * origin's load counter there, so that each phase knows how many requests reached the origin.
 *
 * Phases (seconds from the start, --phases A,B,C): before [0,A), 503 [A,B), slow [B,C),
 * after [C,secs). A request belongs to the phase in which it was sent. An error is any reply
 * other than the key's value (RESP error or nil, HTTP status other than 200, a wrong body), a
 * request unanswered after --timeout-ms, or a lost connection. "cached" errors are those on
 * keys that had been answered before the outage began: the ones grace and stale_if_error are
 * there to save.
 *
 * Output, one line each (key=value, for the script): "phase NAME ..." per phase, "hot T ..."
 * per --bucket-s window of the reads of the --hot hottest keys, and "total ...". */
#include "bench/http_reply.h"
#include "bench/zipf.h"
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
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
#include <time.h>
#include <unistd.h>

#define BD_PHASES 4
#define BD_MAX_ERRORS_SHOWN 5

static const char *const phase_names[BD_PHASES] = {"before", "503", "slow", "after"};
static const char *const phase_modes[BD_PHASES] = {"/__mode/ok", "/__mode/503", "/__mode/slow",
                                                   "/__mode/ok"};

/* One finished request. */
struct sample {
    float t;   /* sent, seconds since the start */
    float lat; /* seconds until its reply (or its failure) */
    uint32_t key;
    bool ok;
};

struct client;

struct run {
    struct event_base *base;
    bool http;
    struct sockaddr_in addr;
    int origin_port;
    double start;
    double secs;
    double bounds[BD_PHASES - 1]; /* phase boundaries, seconds */
    int phase;                    /* the phase the origin is in now */
    uint64_t origin_at[BD_PHASES + 1]; /* origin load counter at each boundary */
    uint64_t failed_at[BD_PHASES + 1]; /* origin 503 counter at each boundary */
    double think_ms;
    double timeout_s;
    struct zipf z;
    uint32_t nkeys;
    double *first_ok; /* per key: when first answered (seconds since start), or < 0 */
    struct sample *s;
    size_t ns, cap;
    size_t shown;
    struct client *clients;
    size_t nclients;
    bool stopping;
};

struct client {
    struct run *r;
    struct bufferevent *bev;
    struct event *think;   /* the pause before the next request */
    struct event *timeout; /* the request's deadline */
    redisReader *rd;
    bool busy;
    uint32_t key;
    double sent;
};

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A blocking GET of path from the origin; returns its counters {"total": .., "failed": ..}
 * when asked for /__stats (0 otherwise). Control requests are answered at once. */
static void origin_get(int port, const char *path, uint64_t *total, uint64_t *failed)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "badday: origin %d: %s\n", port, strerror(errno));
        exit(1);
    }
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
                     path);
    if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n) {
        fprintf(stderr, "badday: origin send: %s\n", strerror(errno));
        exit(1);
    }
    size_t got = 0;
    ssize_t k;
    while (got + 1 < sizeof(buf) && (k = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0) {
        got += (size_t)k;
    }
    buf[got] = '\0';
    close(fd);
    const char *t = strstr(buf, "\"total\": ");
    const char *f = strstr(buf, "\"failed\": ");
    if (total != NULL) {
        *total = t != NULL ? strtoull(t + 9, NULL, 10) : 0;
    }
    if (failed != NULL) {
        *failed = f != NULL ? strtoull(f + 10, NULL, 10) : 0;
    }
}

static void client_send(struct client *c);

static void record(struct client *c, bool ok, const char *why, size_t wlen)
{
    struct run *r = c->r;
    double now = now_sec();
    if (r->ns == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 65536;
        r->s = cm_realloc(r->s, r->cap * sizeof(*r->s));
    }
    r->s[r->ns++] = (struct sample){
        .t = (float)(c->sent - r->start), .lat = (float)(now - c->sent), .key = c->key, .ok = ok};
    if (ok && r->first_ok[c->key] < 0) {
        r->first_ok[c->key] = c->sent - r->start;
    }
    if (!ok && r->shown++ < BD_MAX_ERRORS_SHOWN) {
        fprintf(stderr, "badday: t=%.2f uid %" PRIu32 ": %.*s\n", c->sent - r->start, c->key,
                (int)(wlen > 80 ? 80 : wlen), why);
    }
    c->busy = false;
    evtimer_del(c->timeout);
    if (r->stopping) {
        return;
    }
    /* Think time uniform in [0.5, 1.5] x think_ms, so that the clients do not move in step. */
    double ms = r->think_ms * (0.5 + (double)rand() / RAND_MAX);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((long)(ms * 1000) % 1000000)};
    evtimer_add(c->think, &tv);
}

static bool value_is(const char *s, size_t len, uint32_t k)
{
    char want[16];
    int n = snprintf(want, sizeof(want), "%" PRIu32, k);
    return len == (size_t)n && memcmp(s, want, len) == 0;
}

static void client_connect(struct client *c);

/* The request failed with its connection: record it, start a new connection. */
static void client_lost(struct client *c, const char *why)
{
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->rd != NULL) {
        redisReaderFree(c->rd);
        c->rd = NULL;
    }
    client_connect(c);
    if (c->busy) {
        record(c, false, why, strlen(why));
    }
}

static void read_resp(struct client *c, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    redisReaderFeed(c->rd, (const char *)evbuffer_pullup(in, -1), len);
    evbuffer_drain(in, len);
    void *v;
    while (redisReaderGetReply(c->rd, &v) == REDIS_OK && v != NULL) {
        redisReply *rep = v;
        if (c->busy) {
            bool ok = rep->type == REDIS_REPLY_STRING && value_is(rep->str, rep->len, c->key);
            const char *why = rep->str != NULL ? rep->str : "(nil or not a bulk)";
            record(c, ok, why, strlen(why));
        }
        freeReplyObject(rep);
    }
    if (c->rd->err != 0) {
        client_lost(c, "RESP reader error");
    }
}

static void read_http(struct client *c, struct evbuffer *in)
{
    for (;;) {
        int status = 0;
        const char *body = NULL;
        size_t blen = 0, consumed = 0;
        bool close_conn = false;
        int rc = parse_http(in, &status, &body, &blen, &consumed, &close_conn);
        if (rc == 0) {
            return;
        }
        if (rc < 0) {
            client_lost(c, "unusable HTTP response");
            return;
        }
        if (c->busy) {
            char why[64];
            int n = snprintf(why, sizeof(why), "HTTP %d %.*s", status,
                             (int)(blen > 30 ? 30 : blen), body);
            record(c, status == 200 && value_is(body, blen, c->key), why, (size_t)n);
        }
        evbuffer_drain(in, consumed);
        if (close_conn) {
            client_lost(c, "closed"); /* not busy any more: only reconnects */
            return;
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->r->http) {
        read_http(c, in);
    } else {
        read_resp(c, in);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    CM_UNUSED(bev);
    struct client *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return;
    }
    client_lost(c, (what & BEV_EVENT_EOF) ? "connection closed" : "connection error");
}

static void client_connect(struct client *c)
{
    c->bev = bufferevent_socket_new(c->r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (!c->r->http) {
        c->rd = redisReaderCreate();
    }
    bufferevent_socket_connect(c->bev, (struct sockaddr *)&c->r->addr, sizeof(c->r->addr));
}

static void client_send(struct client *c)
{
    struct run *r = c->r;
    c->key = (uint32_t)zipf_next(&r->z);
    c->sent = now_sec();
    c->busy = true;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (r->http) {
        evbuffer_add_printf(out, "GET /uid/%" PRIu32 " HTTP/1.1\r\nHost: badday\r\n\r\n", c->key);
    } else {
        char key[32];
        int n = snprintf(key, sizeof(key), "uid:%" PRIu32, c->key);
        evbuffer_add_printf(out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", n, key);
    }
    struct timeval tv = {(time_t)r->timeout_s,
                         (suseconds_t)((long)(r->timeout_s * 1e6) % 1000000)};
    evtimer_add(c->timeout, &tv);
}

static void on_think(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    client_send(arg);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    client_lost(arg, "timeout");
}

/* Every 10 ms: move the origin to the next phase when its time has come; stop at the end. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct run *r = arg;
    double t = now_sec() - r->start;
    while (r->phase < BD_PHASES - 1 && t >= r->bounds[r->phase]) {
        r->phase++;
        origin_get(r->origin_port, "/__stats", &r->origin_at[r->phase], &r->failed_at[r->phase]);
        origin_get(r->origin_port, phase_modes[r->phase], NULL, NULL);
        fprintf(stderr, "badday: t=%.2f phase %s\n", t, phase_names[r->phase]);
    }
    if (t >= r->secs && !r->stopping) {
        r->stopping = true;
        origin_get(r->origin_port, "/__stats", &r->origin_at[BD_PHASES],
                   &r->failed_at[BD_PHASES]);
        /* Requests still out get up to the timeout to finish, then the loop ends. */
        struct timeval tv = {(time_t)r->timeout_s + 1, 0};
        event_base_loopexit(r->base, &tv);
        for (size_t i = 0; i < r->nclients; i++) {
            evtimer_del(r->clients[i].think);
        }
    }
    if (r->stopping) {
        bool idle = true;
        for (size_t i = 0; i < r->nclients && idle; i++) {
            idle = !r->clients[i].busy;
        }
        if (idle) {
            event_base_loopbreak(r->base);
        }
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* p50, p99 and max of v[0, n) in ms (sorts v). */
static void quantiles(float *v, size_t n, double *p50, double *p99, double *max)
{
    if (n == 0) {
        *p50 = *p99 = *max = 0;
        return;
    }
    qsort(v, n, sizeof(*v), cmp_float);
    *p50 = v[(n - 1) / 2] * 1e3;
    *p99 = v[(size_t)((double)(n - 1) * 0.99)] * 1e3;
    *max = v[n - 1] * 1e3;
}

static int phase_of(const struct run *r, double t)
{
    int p = 0;
    while (p < BD_PHASES - 1 && t >= r->bounds[p]) {
        p++;
    }
    return p;
}

static void report(struct run *r, uint32_t hot, double bucket_s, double slow_ms)
{
    float *v = cm_malloc((r->ns + 1) * sizeof(*v));
    float *hv = cm_malloc((r->ns + 1) * sizeof(*hv));
    double outage = r->bounds[0];
    for (int p = 0; p < BD_PHASES; p++) {
        size_t n = 0, hn = 0, errors = 0, cached_err = 0;
        for (size_t i = 0; i < r->ns; i++) {
            const struct sample *s = &r->s[i];
            if (phase_of(r, s->t) != p) {
                continue;
            }
            v[n++] = s->lat;
            if (s->key < hot) {
                hv[hn++] = s->lat;
            }
            if (!s->ok) {
                errors++;
                double f = r->first_ok[s->key];
                cached_err += f >= 0 && f < outage;
            }
        }
        double p50, p99, max, h50, h99, hmax;
        quantiles(v, n, &p50, &p99, &max);
        quantiles(hv, hn, &h50, &h99, &hmax);
        printf("phase %s from=%.1f to=%.1f requests=%zu errors=%zu cached_errors=%zu p50=%.2f "
               "p99=%.2f max=%.1f origin=%" PRIu64 " origin_503=%" PRIu64
               " hot_p99=%.2f hot_max=%.1f\n",
               phase_names[p], p == 0 ? 0 : r->bounds[p - 1],
               p == BD_PHASES - 1 ? r->secs : r->bounds[p], n, errors, cached_err, p50, p99,
               max, r->origin_at[p + 1] - r->origin_at[p], r->failed_at[p + 1] - r->failed_at[p],
               h99, hmax);
    }
    for (double b = 0; b < r->secs; b += bucket_s) {
        size_t hn = 0, slow = 0;
        for (size_t i = 0; i < r->ns; i++) {
            const struct sample *s = &r->s[i];
            if (s->key < hot && s->t >= b && s->t < b + bucket_s) {
                hv[hn++] = s->lat;
                slow += s->lat * 1e3 >= slow_ms;
            }
        }
        double h50, h99, hmax;
        quantiles(hv, hn, &h50, &h99, &hmax);
        printf("hot t=%.0f reads=%zu p50=%.2f p99=%.2f max=%.1f slow=%zu\n", b, hn, h50, h99, hmax,
               slow);
    }
    size_t errors = 0;
    for (size_t i = 0; i < r->ns; i++) {
        errors += !r->s[i].ok;
    }
    printf("total requests=%zu errors=%zu origin=%" PRIu64 "\n", r->ns, errors,
           r->origin_at[BD_PHASES] - r->origin_at[0]);
    cm_free(v);
    cm_free(hv);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: badday --proto resp|http --port P --origin-port P [--clients 200] "
            "[--secs 60] [--phases 20,35,45] [--keys 10000] [--zipf-s 1.01] [--think-ms 50] "
            "[--timeout-ms 10000] [--hot 10] [--bucket-s 5] [--slow-ms 5] [--seed 1]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct run r = {.secs = 60, .bounds = {20, 35, 45}, .think_ms = 50, .timeout_s = 10,
                    .nkeys = 10000, .nclients = 200};
    int port = 0;
    double zs = 1.01, bucket_s = 5, slow_ms = 5;
    long seed = 1, hot = 10;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        const char *a = argv[i], *v = argv[++i];
        if (strcmp(a, "--proto") == 0) {
            r.http = strcmp(v, "http") == 0;
        } else if (strcmp(a, "--port") == 0) {
            port = atoi(v);
        } else if (strcmp(a, "--origin-port") == 0) {
            r.origin_port = atoi(v);
        } else if (strcmp(a, "--clients") == 0) {
            r.nclients = strtoul(v, NULL, 10);
        } else if (strcmp(a, "--secs") == 0) {
            r.secs = strtod(v, NULL);
        } else if (strcmp(a, "--phases") == 0) {
            if (sscanf(v, "%lf,%lf,%lf", &r.bounds[0], &r.bounds[1], &r.bounds[2]) != 3) {
                usage();
            }
        } else if (strcmp(a, "--keys") == 0) {
            r.nkeys = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--zipf-s") == 0) {
            zs = strtod(v, NULL);
        } else if (strcmp(a, "--think-ms") == 0) {
            r.think_ms = strtod(v, NULL);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            r.timeout_s = strtod(v, NULL) / 1e3;
        } else if (strcmp(a, "--hot") == 0) {
            hot = strtol(v, NULL, 10);
        } else if (strcmp(a, "--bucket-s") == 0) {
            bucket_s = strtod(v, NULL);
        } else if (strcmp(a, "--slow-ms") == 0) {
            slow_ms = strtod(v, NULL);
        } else if (strcmp(a, "--seed") == 0) {
            seed = strtol(v, NULL, 10);
        } else {
            usage();
        }
    }
    if (port <= 0 || r.origin_port <= 0 || r.nclients == 0 || r.nkeys == 0 || r.secs <= 0 ||
        bucket_s <= 0 || r.timeout_s <= 0 || !zipf_init(&r.z, seed, zs, 1, r.nkeys - 1)) {
        usage();
    }
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)seed);
    r.addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &r.addr.sin_addr);
    r.base = event_base_new();
    r.first_ok = cm_malloc(r.nkeys * sizeof(*r.first_ok));
    for (uint32_t k = 0; k < r.nkeys; k++) {
        r.first_ok[k] = -1;
    }
    r.clients = cm_calloc(r.nclients, sizeof(*r.clients));
    for (size_t i = 0; i < r.nclients; i++) {
        struct client *c = &r.clients[i];
        c->r = &r;
        c->think = evtimer_new(r.base, on_think, c);
        c->timeout = evtimer_new(r.base, on_timeout, c);
        client_connect(c);
    }
    origin_get(r.origin_port, "/__mode/ok", NULL, NULL);
    origin_get(r.origin_port, "/__reset", NULL, NULL);
    r.start = now_sec();
    for (size_t i = 0; i < r.nclients; i++) {
        /* Started over the first think time, not all at once. */
        double ms = r.think_ms * (double)i / (double)r.nclients;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((long)(ms * 1000) % 1000000)};
        evtimer_add(r.clients[i].think, &tv);
    }
    struct event *tick = event_new(r.base, -1, EV_PERSIST, on_tick, &r);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    event_base_dispatch(r.base);
    origin_get(r.origin_port, "/__mode/ok", NULL, NULL);
    report(&r, (uint32_t)hot, bucket_s, slow_ms);

    event_free(tick);
    for (size_t i = 0; i < r.nclients; i++) {
        struct client *c = &r.clients[i];
        if (c->bev != NULL) {
            bufferevent_free(c->bev);
        }
        if (c->rd != NULL) {
            redisReaderFree(c->rd);
        }
        event_free(c->think);
        event_free(c->timeout);
    }
    event_base_free(r.base);
    cm_free(r.clients);
    cm_free(r.first_ok);
    cm_free(r.s);
    return 0;
}
