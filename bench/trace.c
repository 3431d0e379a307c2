/* Cacheme's trace benchmark (run by bench/trace.sh): a Go-Zipf trace of uid keys, the ideal
 * makespan of a zero-overhead coalescing cache on it (a discrete-event simulation), and one
 * driver that replays the trace against cachemed (RESP, pipelined) or an HTTP cache (Varnish,
 * nginx) with N workers, each one request at a time, checking every reply against its key. */
#include "bench/http_reply.h"
#include "bench/zipf.h"
#include "daemon/alloc.h"
#include "daemon/common.h"
#include "daemon/util.h"

#include <errno.h>
#include <event2/buffer.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TRACE_REQUESTS 200000 /* Cacheme's REQUESTS */
#define TRACE_BATCH_KEYS 20   /* keys per MGET in the batch variant */
#define TRACE_MAX_BAD 5       /* mismatching replies printed */
#define TRACE_RECV_BYTES 65536 /* read at once from a connection */

/* The request stream: nreq requests of per_req keys each, keys[i * per_req + j]. */
struct trace {
    uint32_t *keys;
    size_t nreq;
    size_t per_req;
    size_t unique; /* distinct keys over the whole trace */
    uint32_t kmax; /* largest key + 1 */
};

static void trace_count_unique(struct trace *t)
{
    uint32_t kmax = 0;
    size_t n = t->nreq * t->per_req;
    for (size_t i = 0; i < n; i++) {
        if (t->keys[i] + 1 > kmax) {
            kmax = t->keys[i] + 1;
        }
    }
    uint8_t *seen = cm_calloc(kmax, 1);
    t->unique = 0;
    for (size_t i = 0; i < n; i++) {
        if (!seen[t->keys[i]]) {
            seen[t->keys[i]] = 1;
            t->unique++;
        }
    }
    cm_free(seen);
    t->kmax = kmax;
}

/* Cacheme's benchmarks/trace.py: 200,000 single keys from Zipf(1.001, 10, 200000), or (batch)
 * 10,000 groups of 20 distinct keys from Zipf(1.0001, 10, 200000). */
static void trace_build(struct trace *t, bool batch, int64_t seed)
{
    struct zipf z;
    cm_assert(zipf_init(&z, seed, batch ? 1.0001 : 1.001, 10, TRACE_REQUESTS));
    t->per_req = batch ? TRACE_BATCH_KEYS : 1;
    t->nreq = batch ? TRACE_REQUESTS / TRACE_BATCH_KEYS : TRACE_REQUESTS;
    t->keys = cm_malloc(t->nreq * t->per_req * sizeof(*t->keys));
    for (size_t i = 0; i < t->nreq; i++) {
        uint32_t *g = &t->keys[i * t->per_req];
        size_t have = 0;
        while (have < t->per_req) {
            uint32_t k = (uint32_t)zipf_next(&z);
            bool dup = false;
            for (size_t j = 0; j < have && !dup; j++) {
                dup = g[j] == k;
            }
            if (!dup) {
                g[have++] = k;
            }
        }
    }
    trace_count_unique(t);
}

/* ---- ideal makespan ----
 * Workers pull requests in trace order; each worker does one request at a time. A key already
 * loaded costs 0, a key in flight waits for that flight, any other key starts a load of
 * load_us. A request of several keys ends when its last key is available. The next request
 * goes to the worker that is free first: a min-heap of worker free times. */

struct heap {
    int64_t *v;
    size_t n;
};

static void heap_push(struct heap *h, int64_t x)
{
    size_t i = h->n++;
    while (i > 0 && h->v[(i - 1) / 2] > x) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = x;
}

static int64_t heap_pop(struct heap *h)
{
    int64_t top = h->v[0], x = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && h->v[c + 1] < h->v[c]) {
            c++;
        }
        if (h->v[c] >= x) {
            break;
        }
        h->v[i] = h->v[c];
        i = c;
    }
    h->v[i] = x;
    return top;
}

/* Returns the makespan in microseconds. */
static int64_t ideal_makespan(const struct trace *t, size_t workers, int64_t load_us)
{
    int64_t *avail = cm_malloc(t->kmax * sizeof(*avail)); /* when the key's value exists */
    for (size_t k = 0; k < t->kmax; k++) {
        avail[k] = -1;
    }
    struct heap h = {cm_malloc(workers * sizeof(int64_t)), 0};
    for (size_t w = 0; w < workers; w++) {
        heap_push(&h, 0);
    }
    int64_t makespan = 0;
    for (size_t i = 0; i < t->nreq; i++) {
        int64_t now = heap_pop(&h), end = now;
        for (size_t j = 0; j < t->per_req; j++) {
            uint32_t k = t->keys[i * t->per_req + j];
            if (avail[k] < 0) {
                avail[k] = now + load_us;
            }
            if (avail[k] > end) {
                end = avail[k];
            }
        }
        heap_push(&h, end);
        if (end > makespan) {
            makespan = end;
        }
    }
    cm_free(h.v);
    cm_free(avail);
    return makespan;
}

/* ---- the driver ----
 * All requests sit in one queue (run->next). N workers share C connections: connection c holds
 * the workers c, c + C, c + 2C, ..., so it keeps up to that many requests outstanding
 * (pipelined RESP; replies come back in order, recorded in the connection's FIFO). When a
 * reply arrives its worker takes the next request off the queue, on the same connection.
 * HTTP/1.1 has no usable pipelining (Varnish and nginx answer one request per connection at a
 * time), so an HTTP connection holds one worker: N concurrent requests need N connections. */

enum proto { PROTO_RESP, PROTO_HTTP };

/* What a request found, seen from the driver when it was written: a key never asked before
 * (a load in the ideal cache), a key asked but not answered yet (waits for that flight), or a
 * key already answered (a hit, 0 ms in the ideal cache). A request of several keys takes its
 * worst key's class. The latency sum of each class over the workers shows where wall time goes. */
enum req_class { CLASS_NONE, CLASS_HIT, CLASS_WAIT, CLASS_LOAD, CLASS_N };
static const char *const class_names[CLASS_N] = {"-", "hit", "wait", "load"};

struct run;

/* One client connection; owned by run->conns. Its socket is read through one persistent read
 * event and written at once (send); the write event is armed only for the connect and for what a
 * send did not take. So a request costs one send and one recv, no epoll_ctl: bufferevents added
 * an epoll_ctl pair per request and an ioctl per read, on the cores of the servers measured. */
struct dconn {
    struct run *run;
    int fd;              /* -1 while down */
    struct event *rev;   /* persistent read event while up */
    struct event *wev;   /* connect completion, then output the socket did not take */
    bool connecting;
    struct evbuffer *in; /* bytes received, not yet parsed */
    struct evbuffer *out; /* requests not yet sent */
    redisReader *rd; /* RESP replies */
    uint32_t *fifo;  /* request indexes awaiting a reply, oldest first */
    size_t slots;    /* workers on this connection = FIFO capacity */
    size_t head, n;  /* FIFO ring */
    bool connected;  /* connected once */
    bool up;         /* connected now */
    unsigned reconnects;
};

/* One replay of the trace. */
struct run {
    struct event_base *base;
    const struct trace *t;
    enum proto proto;
    const char *path; /* HTTP: request path prefix, e.g. /uid/ */
    struct sockaddr_in addr;
    struct dconn *conns;
    size_t nconns;
    size_t connected;
    size_t next; /* next request of the queue */
    size_t done;
    size_t bad; /* replies that did not match their key */
    size_t errors;
    size_t reconnects;
    double *sent; /* per request: when it was written */
    double *lat;  /* per request: seconds until its reply */
    uint8_t *cls; /* per request: enum req_class, fixed when first written */
    double *kdone; /* per key: when its first reply arrived (0: not asked, -1: asked, no reply) */
    bool failed;  /* a connection could not be (re)established */
};

static void dconn_connect(struct dconn *c);
static void conn_lost(struct dconn *c, const char *why);

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void classify(struct run *r, size_t idx)
{
    if (r->cls[idx] != CLASS_NONE) {
        return; /* sent again after a reconnect */
    }
    uint8_t cls = CLASS_HIT;
    for (size_t j = 0; j < r->t->per_req; j++) {
        uint32_t k = r->t->keys[idx * r->t->per_req + j];
        uint8_t kc = r->kdone[k] > 0 ? CLASS_HIT : r->kdone[k] < 0 ? CLASS_WAIT : CLASS_LOAD;
        if (r->kdone[k] == 0) {
            r->kdone[k] = -1; /* asked, not answered */
        }
        if (kc > cls) {
            cls = kc;
        }
    }
    r->cls[idx] = cls;
}

/* Appends request idx to c's FIFO and writes it. */
static void send_req(struct dconn *c, size_t idx)
{
    struct run *r = c->run;
    cm_assert(c->n < c->slots);
    r->sent[idx] = now_sec();
    classify(r, idx);
    c->fifo[(c->head + c->n++) % c->slots] = (uint32_t)idx;
    struct evbuffer *out = c->out;
    const uint32_t *k = &r->t->keys[idx * r->t->per_req];
    if (r->proto == PROTO_HTTP) {
        evbuffer_add_printf(out, "GET %s%" PRIu32 " HTTP/1.1\r\nHost: trace\r\n\r\n", r->path,
                            k[0]);
        return;
    }
    const char *cmd = r->t->per_req == 1 ? "GET" : "MGET";
    evbuffer_add_printf(out, "*%zu\r\n$%zu\r\n%s\r\n", r->t->per_req + 1, strlen(cmd), cmd);
    for (size_t j = 0; j < r->t->per_req; j++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "uid:%" PRIu32, k[j]);
        evbuffer_add_printf(out, "$%d\r\n%s\r\n", n, key);
    }
}

/* One free worker of c takes the next request off the queue. */
static void issue(struct dconn *c)
{
    struct run *r = c->run;
    if (r->next < r->t->nreq && c->n < c->slots && c->up) {
        send_req(c, r->next++);
    }
}

static void fill(struct dconn *c)
{
    while (c->up && c->n < c->slots && c->run->next < c->run->t->nreq) {
        issue(c);
    }
}

static void report_bad(struct run *r, size_t idx, size_t j, const char *got, size_t len)
{
    if (r->bad++ < TRACE_MAX_BAD) {
        fprintf(stderr, "trace: request %zu key uid:%" PRIu32 ": reply \"%.*s\"\n", idx,
                r->t->keys[idx * r->t->per_req + j], (int)(len > 80 ? 80 : len), got);
    }
}

static bool value_is(const char *s, size_t len, uint32_t k)
{
    char want[16];
    int n = snprintf(want, sizeof(want), "%" PRIu32, k);
    return len == (size_t)n && memcmp(s, want, len) == 0;
}

/* Pops the oldest outstanding request of c, counts it done and refills the connection. */
static size_t complete(struct dconn *c)
{
    cm_assert(c->n > 0);
    size_t idx = c->fifo[c->head];
    c->head = (c->head + 1) % c->slots;
    c->n--;
    c->run->done++;
    double now = now_sec();
    c->run->lat[idx] = now - c->run->sent[idx];
    for (size_t j = 0; j < c->run->t->per_req; j++) {
        double *d = &c->run->kdone[c->run->t->keys[idx * c->run->t->per_req + j]];
        if (*d <= 0) {
            *d = now;
        }
    }
    return idx;
}

static void check_resp(struct run *r, size_t idx, const redisReply *rep)
{
    const uint32_t *k = &r->t->keys[idx * r->t->per_req];
    if (r->t->per_req == 1) {
        if (rep->type != REDIS_REPLY_STRING || !value_is(rep->str, rep->len, k[0])) {
            report_bad(r, idx, 0, rep->str != NULL ? rep->str : "(not a bulk)",
                       rep->str != NULL ? rep->len : 12);
        }
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != r->t->per_req) {
        report_bad(r, idx, 0, rep->str != NULL ? rep->str : "(bad array)",
                   rep->str != NULL ? rep->len : 11);
        return;
    }
    for (size_t j = 0; j < rep->elements; j++) {
        const redisReply *e = rep->element[j];
        if (e->type != REDIS_REPLY_STRING || !value_is(e->str, e->len, k[j])) {
            report_bad(r, idx, j, e->str != NULL ? e->str : "(not a bulk)",
                       e->str != NULL ? e->len : 12);
            return;
        }
    }
}

static void read_resp(struct dconn *c)
{
    struct evbuffer *in = c->in;
    size_t len = evbuffer_get_length(in);
    if (len > 0) {
        redisReaderFeed(c->rd, (const char *)evbuffer_pullup(in, -1), len);
        evbuffer_drain(in, len);
    }
    void *rep;
    while (redisReaderGetReply(c->rd, &rep) == REDIS_OK && rep != NULL) {
        if (c->n == 0) {
            fprintf(stderr, "trace: reply without a request\n");
            c->run->errors++;
        } else {
            check_resp(c->run, complete(c), rep);
        }
        freeReplyObject(rep);
    }
    if (c->rd->err != 0) {
        fprintf(stderr, "trace: RESP reader: %s\n", c->rd->errstr);
        c->run->failed = true;
        event_base_loopbreak(c->run->base);
    }
}

/* Closes c's socket and drops what it had buffered either way. */
static void dconn_close(struct dconn *c)
{
    if (c->fd >= 0) {
        event_free(c->rev);
        event_free(c->wev);
        close(c->fd);
    }
    c->fd = -1;
    c->up = c->connecting = false;
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
}

/* Drops c's socket and opens a new one; its unanswered requests are sent again once it is up. */
static void reconnect(struct dconn *c)
{
    dconn_close(c);
    c->reconnects++;
    c->run->reconnects++;
    dconn_connect(c);
}

static void read_http(struct dconn *c)
{
    struct run *r = c->run;
    struct evbuffer *in = c->in;
    for (;;) {
        int status = 0;
        const char *body = NULL;
        size_t blen = 0, consumed = 0;
        bool close_conn = false;
        int rc = parse_http(in, &status, &body, &blen, &consumed, &close_conn);
        if (rc == 0) {
            return;
        }
        if (rc < 0 || c->n == 0) {
            fprintf(stderr, "trace: unusable HTTP response\n");
            r->failed = true;
            event_base_loopbreak(r->base);
            return;
        }
        size_t idx = complete(c);
        if (status != 200 || !value_is(body, blen, r->t->keys[idx])) {
            char got[64];
            int n =
                snprintf(got, sizeof(got), "%d %.*s", status, (int)(blen > 40 ? 40 : blen), body);
            report_bad(r, idx, 0, got, (size_t)n);
        }
        evbuffer_drain(in, consumed);
        if (close_conn) {
            reconnect(c);
            return;
        }
    }
}

/* Sends what c's output holds; arms the write event for what the socket does not take. */
static void flush(struct dconn *c)
{
    if (!c->up || evbuffer_get_length(c->out) == 0) {
        return;
    }
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            event_add(c->wev, NULL);
            return;
        }
        conn_lost(c, n == 0 ? "send returned 0" : strerror(errno));
        return;
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(what);
    struct dconn *c = arg;
    struct run *r = c->run;
    char buf[TRACE_RECV_BYTES];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return;
        }
        conn_lost(c, n == 0 ? "closed by the server" : strerror(errno));
        return;
    }
    evbuffer_add(c->in, buf, (size_t)n);
    if (r->proto == PROTO_RESP) {
        read_resp(c);
    } else {
        read_http(c);
    }
    fill(c);
    flush(c);
    if (r->done == r->t->nreq) {
        event_base_loopbreak(r->base);
    }
}

/* The socket is up: send again what the old connection did not answer, then refill. */
static void conn_up(struct dconn *c)
{
    struct run *r = c->run;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->connecting = false;
    c->up = true;
    event_add(c->rev, NULL);
    if (!c->connected) {
        c->connected = true;
        r->connected++;
    }
    size_t n = c->n;
    uint32_t *pending = cm_malloc((n > 0 ? n : 1) * sizeof(*pending));
    for (size_t i = 0; i < n; i++) {
        pending[i] = c->fifo[(c->head + i) % c->slots];
    }
    c->head = c->n = 0;
    for (size_t i = 0; i < n; i++) {
        send_req(c, pending[i]);
    }
    cm_free(pending);
    if (r->next > 0) {
        fill(c);
    }
    flush(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(what);
    struct dconn *c = arg;
    if (!c->connecting) {
        flush(c);
        return;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    if (err != 0) {
        errno = err;
        conn_lost(c, strerror(err));
        return;
    }
    conn_up(c);
}

/* EOF or error: an HTTP peer may close an idle or used-up keep-alive connection. */
static void conn_lost(struct dconn *c, const char *why)
{
    struct run *r = c->run;
    if (r->proto == PROTO_HTTP && c->reconnects < 1000) {
        reconnect(c);
        return;
    }
    fprintf(stderr, "trace: connection lost (%s)\n", why);
    dconn_close(c);
    r->failed = true;
    event_base_loopbreak(r->base);
}

static void dconn_connect(struct dconn *c)
{
    struct run *r = c->run;
    c->up = false;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fprintf(stderr, "trace: socket: %s\n", strerror(errno));
        r->failed = true;
        event_base_loopbreak(r->base);
        return;
    }
    c->rev = event_new(r->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(r->base, c->fd, EV_WRITE, on_writable, c);
    c->connecting = true;
    if (connect(c->fd, (struct sockaddr *)&r->addr, sizeof(r->addr)) == 0) {
        conn_up(c);
        return;
    }
    if (errno != EINPROGRESS) {
        conn_lost(c, strerror(errno));
        return;
    }
    event_add(c->wev, NULL);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct run *r = arg;
    fprintf(stderr, "trace: deadline passed with %zu of %zu requests answered\n", r->done,
            r->t->nreq);
    r->failed = true;
    event_base_loopbreak(r->base);
}

/* CPU seconds (user + system) this process has used so far. */
static double cpu_sec(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One line per request class: count, mean and p50/p99 latency, and the latency summed over
 * the class and divided by the workers ("per_worker_s": its share of the wall time when the
 * workers are always busy; the ideal cache spends 0 on hits and 0.1 s per load). */
static void print_classes(const struct run *r, size_t workers)
{
    double *v = cm_malloc(r->t->nreq * sizeof(double));
    for (int cls = CLASS_HIT; cls < CLASS_N; cls++) {
        size_t n = 0;
        double sum = 0;
        for (size_t i = 0; i < r->t->nreq; i++) {
            if (r->cls[i] == cls) {
                v[n++] = r->lat[i];
                sum += r->lat[i];
            }
        }
        if (n == 0) {
            continue;
        }
        qsort(v, n, sizeof(double), cmp_double);
        printf("class_%s n=%zu mean_ms=%.1f p50_ms=%.1f p99_ms=%.1f per_worker_s=%.2f\n",
               class_names[cls], n, sum / (double)n * 1000, v[n / 2] * 1000, v[n * 99 / 100] * 1000,
               sum / (double)workers);
    }
    cm_free(v);
}

/* Replays t against 127.0.0.1:port. Prints one line of key=value results. Returns 0 when
 * every request got its own value back. */
static int drive(const struct trace *t, enum proto proto, int port, size_t workers, size_t nconns,
                 const char *path, int timeout_s)
{
    struct run r = {.t = t, .proto = proto, .path = path};
    r.sent = cm_calloc(t->nreq, sizeof(double));
    r.lat = cm_calloc(t->nreq, sizeof(double));
    r.cls = cm_calloc(t->nreq, 1);
    r.kdone = cm_calloc(t->kmax, sizeof(double));
    r.base = event_base_new();
    r.addr.sin_family = AF_INET;
    r.addr.sin_port = htons((uint16_t)port);
    r.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (proto == PROTO_HTTP && nconns < workers) {
        workers = nconns; /* the rest of the workers would only queue behind these */
    }
    if (nconns > workers) {
        nconns = workers;
    }
    r.nconns = nconns;
    r.conns = cm_calloc(nconns, sizeof(*r.conns));
    for (size_t i = 0; i < nconns; i++) {
        struct dconn *c = &r.conns[i];
        c->run = &r;
        c->slots = workers / nconns + (i < workers % nconns ? 1 : 0);
        c->fifo = cm_malloc(c->slots * sizeof(*c->fifo));
        c->rd = proto == PROTO_RESP ? redisReaderCreate() : NULL;
        c->fd = -1;
        c->in = evbuffer_new();
        c->out = evbuffer_new();
    }
    /* Connect in waves so no listen backlog overflows, then start the clock. */
    struct event *deadline = evtimer_new(r.base, on_deadline, &r);
    struct timeval tv = {timeout_s, 0};
    evtimer_add(deadline, &tv);
    for (size_t i = 0; i < nconns && !r.failed; i++) {
        dconn_connect(&r.conns[i]);
        while (r.connected + 1000 <= i && !r.failed) {
            event_base_loop(r.base, EVLOOP_ONCE);
        }
    }
    while (r.connected < nconns && !r.failed) {
        event_base_loop(r.base, EVLOOP_ONCE);
    }
    double t0 = now_sec(), cpu0 = cpu_sec();
    for (size_t i = 0; i < nconns && !r.failed; i++) {
        issue(&r.conns[i]); /* workers pull in order: one request per worker, round robin */
    }
    for (size_t round = 1; round < r.conns[0].slots && !r.failed; round++) {
        for (size_t i = 0; i < nconns && r.conns[i].slots > round; i++) {
            issue(&r.conns[i]);
        }
    }
    for (size_t i = 0; i < nconns && !r.failed; i++) {
        flush(&r.conns[i]);
    }
    if (!r.failed && r.done < t->nreq) {
        event_base_dispatch(r.base);
    }
    double wall = now_sec() - t0, cpu = cpu_sec() - cpu0;
    printf("wall_ms=%.0f requests=%zu done=%zu bad=%zu errors=%zu workers=%zu conns=%zu "
           "reconnects=%zu failed=%d cpu_s=%.2f\n",
           wall * 1000, t->nreq, r.done, r.bad, r.errors, workers, nconns, r.reconnects, r.failed,
           cpu);
    print_classes(&r, workers);
    qsort(r.lat, t->nreq, sizeof(double), cmp_double);
    printf("latency_ms p50=%.1f p90=%.1f p99=%.1f max=%.1f\n", r.lat[t->nreq / 2] * 1000,
           r.lat[t->nreq * 9 / 10] * 1000, r.lat[t->nreq * 99 / 100] * 1000,
           r.lat[t->nreq - 1] * 1000);
    cm_free(r.sent);
    cm_free(r.lat);
    cm_free(r.cls);
    cm_free(r.kdone);
    for (size_t i = 0; i < nconns; i++) {
        struct dconn *c = &r.conns[i];
        dconn_close(c);
        evbuffer_free(c->in);
        evbuffer_free(c->out);
        if (c->rd != NULL) {
            redisReaderFree(c->rd);
        }
        cm_free(c->fifo);
    }
    event_free(deadline);
    cm_free(r.conns);
    event_base_free(r.base);
    return r.failed || r.bad > 0 || r.errors > 0 || r.done != t->nreq ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: trace keys|sim|resp|http [options]\n"
            "  keys                      print the trace's size and number of unique keys\n"
            "  sim --workers N           ideal makespan of a coalescing cache (--load-ms 100)\n"
            "  resp --port P --workers N [--conns C]   replay against cachemed (GET/MGET)\n"
            "  http --port P --workers N [--conns C] [--path /uid/]   replay over HTTP/1.1\n"
            "common: --batch (MGET of 20 keys, Zipf 1.0001)  --seed S (default 1)\n"
            "        --go-rng GOROOT/src/math/rand/rng.go (Go's exact sequence)\n"
            "        --timeout SECONDS (driver deadline, default 600)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }
    const char *mode = argv[1], *path = "/uid/";
    bool batch = false;
    int64_t seed = 1;
    long port = 0, load_ms = 100, timeout_s = 600;
    size_t workers = 0, nconns = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--batch") == 0) {
            batch = true;
            continue;
        }
        if (v == NULL) {
            usage();
        }
        i++;
        if (strcmp(a, "--seed") == 0) {
            seed = strtoll(v, NULL, 10);
        } else if (strcmp(a, "--port") == 0) {
            port = strtol(v, NULL, 10);
        } else if (strcmp(a, "--workers") == 0) {
            workers = strtoul(v, NULL, 10);
        } else if (strcmp(a, "--conns") == 0) {
            nconns = strtoul(v, NULL, 10);
        } else if (strcmp(a, "--load-ms") == 0) {
            load_ms = strtol(v, NULL, 10);
        } else if (strcmp(a, "--timeout") == 0) {
            timeout_s = strtol(v, NULL, 10);
        } else if (strcmp(a, "--path") == 0) {
            path = v;
        } else if (strcmp(a, "--go-rng") == 0) {
            if (!zipf_go_load_cooked(v)) {
                fprintf(stderr, "trace: no rngCooked table in %s\n", v);
                return 2;
            }
        } else {
            usage();
        }
    }
    struct trace t;
    trace_build(&t, batch, seed);
    int rc = 0;
    if (strcmp(mode, "keys") == 0) {
        printf("requests=%zu keys_per_request=%zu unique=%zu go_rng=%d\n", t.nreq, t.per_req,
               t.unique, zipf_go_cooked_loaded);
    } else if (strcmp(mode, "sim") == 0) {
        if (workers == 0) {
            usage();
        }
        int64_t us = ideal_makespan(&t, workers, load_ms * 1000);
        printf("ideal_ms=%.0f unique=%zu workers=%zu\n", (double)us / 1000, t.unique, workers);
    } else if (strcmp(mode, "resp") == 0 || strcmp(mode, "http") == 0) {
        bool http = strcmp(mode, "http") == 0;
        if (workers == 0 || port <= 0 || port > 65535 || (http && batch)) {
            usage();
        }
        cm_raise_nofile();
        signal(SIGPIPE, SIG_IGN); /* writev to a peer that closed: an error, not a kill */
        rc = drive(&t, http ? PROTO_HTTP : PROTO_RESP, (int)port, workers,
                   nconns != 0 ? nconns : workers, path, (int)timeout_s);
    } else {
        usage();
    }
    cm_free(t.keys);
    return rc;
}
