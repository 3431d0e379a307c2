/* Flights and per-key ordering.
 *
 * Every storage key with work in progress has a key entry. It holds:
 *   joinable  the read flight that new GETs join (reading, loading, or writing a known value);
 *   writer    the task currently writing to the caches (a read flight's writes, SET, DEL,
 *             REFRESH); at most one at a time, so writes of one key never overtake each other;
 *   queue     tasks that wait for the writer to finish, started in arrival order.
 * A mutation (SET/DEL/REFRESH) supersedes every read flight that exists when it arrives: those
 * still answer their waiters but write nothing, so no stale value is written back (SPEC §6.8).
 */
#include "daemon/flight.h"
#include "daemon/invalidate.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/bloom.h"
#include "daemon/buf.h"
#include "daemon/loader.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/req.h"
#include "daemon/resp.h"
#include "daemon/serializer.h"
#include "daemon/server.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <event2/event.h>
#include <string.h>
#include <sys/queue.h>

enum fl_kind { FL_READ, FL_REFRESH, FL_SET, FL_DEL };
enum fl_state { FL_QUEUED, FL_READING, FL_LOADING, FL_WRITING };
enum fl_result { RES_NONE, RES_VALUE, RES_NIL, RES_ERROR };

struct cm_waiter {
    struct cm_req *req;   /* holds a ref */
    size_t slot;
    bool get;             /* a GET/MGET key: counted in the node's hit/miss stats */
};

struct keyent;
struct batch;

/* One task on one key. Owned by its key entry's bookkeeping; freed by flight_end. */
struct flight {
    TAILQ_ENTRY(flight) qlink;     /* keyent->queue while FL_QUEUED */
    struct keyent *ke;
    struct cm_server *srv;
    struct cm_node *node;
    enum fl_kind kind;
    enum fl_state state;
    bool superseded;               /* a later mutation happened: write nothing */
    bool answered;                 /* waiters have their reply */
    size_t cklen;
    struct cm_waiter *waiters;     /* &waiter0, or an owned array once a second waiter joins */
    size_t nwaiters, capwaiters;
    struct cm_waiter waiter0;      /* most flights have one waiter: no array to allocate */
    enum fl_result res;
    char *val;                     /* client-form value, owned */
    size_t vlen;
    char *err;                     /* client error text, owned */
    bool from_cache;               /* the value came from a remote cache (a hit for waiters) */
    size_t hit_remote;             /* remote position that hit (reads stop there) */
    size_t step;                   /* remote position being read */
    int pending_writes;
    int64_t ttl_override;          /* SET EX/PX: > 0 replaces every cache's ttl */
    struct cm_req *owner;          /* SET/DEL: request part to complete after writes (ref held) */
    struct cm_buf wrapped;         /* cached stored forms for the writes */
    struct cm_buf bare;
    bool have_wrapped, have_bare;
    int64_t load_start_ns;
    char ckey[];                   /* client key, NUL-terminated, allocated with the flight */
};

struct keyent {
    struct keyent *hnext;
    uint64_t hash;
    size_t sklen;
    struct flight *joinable;
    struct flight *writer;
    TAILQ_HEAD(, flight) queue;
    int refs;                      /* flights pointing here */
    char skey[];                   /* storage key, NUL-terminated, allocated with the entry */
};

struct cm_flights {
    struct cm_server *srv;
    struct keyent **buckets;
    size_t nbuckets;
    size_t count;
    struct batch **pending;        /* per storage: reads gathered during this loop iteration */
    struct event *flush_ev;        /* runs flush_pending once the iteration's callbacks ran */
    bool flush_armed;
};

#define BATCH_MAX 512              /* keys per multi-get */

/* Remote reads of several flights (any nodes) from one storage: one multi-get. */
struct batch {
    struct cm_storage *st;
    struct flight **fl;            /* owned array */
    size_t n;
    size_t cap;
};

static void flight_start(struct flight *f);
static void flight_end(struct flight *f);
static void queue_read(struct flight *f);
static void start_load(struct flight *f);
static void start_writes(struct flight *f);

/* ---- key table ---- */

static void on_flush(evutil_socket_t fd, short what, void *arg);

struct cm_flights *cm_flights_new(struct cm_server *srv)
{
    struct cm_flights *fl = cm_calloc(1, sizeof(*fl));
    fl->srv = srv;
    fl->nbuckets = 1024;
    fl->buckets = cm_calloc(fl->nbuckets, sizeof(*fl->buckets));
    fl->pending = cm_calloc(srv->nstorages ? srv->nstorages : 1, sizeof(*fl->pending));
    fl->flush_ev = event_new(srv->base, -1, 0, on_flush, fl);
    return fl;
}

void cm_flights_free(struct cm_flights *fl)
{
    if (fl == NULL) {
        return;
    }
    for (size_t i = 0; i < fl->srv->nstorages; i++) {
        cm_assert(fl->pending[i] == NULL);   /* the server flushed before closing storages */
    }
    event_free(fl->flush_ev);
    cm_free(fl->pending);
    cm_free(fl->buckets);
    cm_free(fl);
}

size_t cm_flights_active(const struct cm_flights *fl)
{
    return fl->count;
}

static void table_grow(struct cm_flights *fl)
{
    size_t n = fl->nbuckets * 2;
    struct keyent **b = cm_calloc(n, sizeof(*b));
    for (size_t i = 0; i < fl->nbuckets; i++) {
        struct keyent *ke = fl->buckets[i], *next;
        for (; ke != NULL; ke = next) {
            next = ke->hnext;
            ke->hnext = b[ke->hash & (n - 1)];
            b[ke->hash & (n - 1)] = ke;
        }
    }
    cm_free(fl->buckets);
    fl->buckets = b;
    fl->nbuckets = n;
}

static struct keyent *ke_get(struct cm_flights *fl, const char *skey, size_t sklen, bool create)
{
    uint64_t h = cm_hash(skey, sklen);
    for (struct keyent *ke = fl->buckets[h & (fl->nbuckets - 1)]; ke != NULL; ke = ke->hnext) {
        if (ke->hash == h && ke->sklen == sklen && memcmp(ke->skey, skey, sklen) == 0) {
            return ke;
        }
    }
    if (!create) {
        return NULL;
    }
    if (fl->count >= fl->nbuckets) {
        table_grow(fl);
    }
    struct keyent *ke = cm_calloc(1, sizeof(*ke) + sklen + 1);
    ke->hash = h;
    memcpy(ke->skey, skey, sklen);
    ke->sklen = sklen;
    TAILQ_INIT(&ke->queue);
    ke->hnext = fl->buckets[h & (fl->nbuckets - 1)];
    fl->buckets[h & (fl->nbuckets - 1)] = ke;
    fl->count++;
    return ke;
}

static void ke_maybe_free(struct cm_flights *fl, struct keyent *ke)
{
    if (ke->refs > 0) {
        return;
    }
    cm_assert(ke->joinable == NULL && ke->writer == NULL && TAILQ_EMPTY(&ke->queue));
    struct keyent **pp = &fl->buckets[ke->hash & (fl->nbuckets - 1)];
    while (*pp != ke) {
        pp = &(*pp)->hnext;
    }
    *pp = ke->hnext;
    fl->count--;
    cm_free(ke);
}

/* Starts queued tasks in order while nobody is writing. */
static void ke_run(struct keyent *ke)
{
    struct flight *f;
    while (ke->writer == NULL && (f = TAILQ_FIRST(&ke->queue)) != NULL) {
        TAILQ_REMOVE(&ke->queue, f, qlink);
        flight_start(f);
    }
}

/* ---- flights ---- */

static struct flight *flight_new(struct cm_server *srv, struct keyent *ke, struct cm_node *node,
                                 enum fl_kind kind, const char *key, size_t klen)
{
    struct flight *f = cm_calloc(1, sizeof(*f) + klen + 1);
    f->srv = srv;
    f->ke = ke;
    f->node = node;
    f->kind = kind;
    f->state = FL_QUEUED;
    memcpy(f->ckey, key, klen);
    f->cklen = klen;
    f->waiters = &f->waiter0;
    f->capwaiters = 1;
    cm_buf_init(&f->wrapped);
    cm_buf_init(&f->bare);
    ke->refs++;
    return f;
}

static void add_waiter(struct flight *f, struct cm_req *req, size_t slot, bool get)
{
    if (f->nwaiters == f->capwaiters) {
        if (f->waiters == &f->waiter0) {
            f->capwaiters = 4;
            f->waiters = cm_malloc(f->capwaiters * sizeof(*f->waiters));
            f->waiters[0] = f->waiter0;
        } else {
            f->capwaiters *= 2;
            f->waiters = cm_realloc(f->waiters, f->capwaiters * sizeof(*f->waiters));
        }
    }
    f->waiters[f->nwaiters].req = req;
    f->waiters[f->nwaiters].slot = slot;
    f->waiters[f->nwaiters].get = get;
    f->nwaiters++;
    req->refs++;
}

/* Encodes one reply element for req from a result. */
static void encode_result(struct cm_req *req, enum fl_result res, const char *val, size_t vlen,
                          const char *err, struct cm_buf *out)
{
    switch (res) {
    case RES_VALUE: cm_resp_bulk(out, val, vlen); break;
    case RES_NIL: cm_resp_nil(out, req->resp3); break;
    case RES_ERROR: cm_resp_error(out, err); break;
    case RES_NONE: CM_NOT_REACHED();
    }
}

static void fill_slot_result(struct cm_req *req, size_t slot, enum fl_result res, const char *val,
                             size_t vlen, const char *err)
{
    struct cm_buf tmp;
    encode_result(req, res, val, vlen, err, cm_req_slot_buf(req, &tmp));
    cm_req_slot_encoded(req, slot, &tmp);
}

/* Counts one request answered by f (hit or miss) in its node's stats. */
static void count_answer(struct flight *f)
{
    struct cm_node_stats *s = &f->node->stats;
    if (f->from_cache) {
        s->hit_count++;
        s->remote_hit_count++;
    } else {
        s->miss_count++;
    }
}

/* Hands the result to every waiter. */
static void answer_waiters(struct flight *f)
{
    f->answered = true;
    for (size_t i = 0; i < f->nwaiters; i++) {
        struct cm_req *req = f->waiters[i].req;
        if (f->waiters[i].get) {
            count_answer(f);
        }
        fill_slot_result(req, f->waiters[i].slot, f->res, f->val, f->vlen, f->err);
        cm_req_unref(req);
    }
    f->nwaiters = 0;
}

static void flight_free(struct flight *f)
{
    if (f->waiters != &f->waiter0) {
        cm_free(f->waiters);
    }
    cm_free(f->val);
    cm_free(f->err);
    cm_buf_deinit(&f->wrapped);
    cm_buf_deinit(&f->bare);
    cm_free(f);
}

/* The flight is over: answered, writes finished. Releases its key entry. */
static void flight_end(struct flight *f)
{
    struct keyent *ke = f->ke;
    struct cm_flights *fl = f->srv->flights;
    cm_assert(f->nwaiters == 0 && f->pending_writes == 0);
    if (f->kind != FL_READ && !f->superseded) {
        /* Other instances drop their local copy only now that the shared caches are written. */
        cm_inval_publish(f->srv->inval, f->node, f->ckey, f->cklen);
    }
    if (f->owner != NULL) {
        struct cm_req *owner = f->owner;
        f->owner = NULL;
        cm_req_part_done(owner);
        cm_req_unref(owner);
    }
    if (ke->joinable == f) {
        ke->joinable = NULL;
    }
    if (ke->writer == f) {
        ke->writer = NULL;
    }
    ke->refs--;
    flight_free(f);
    ke_run(ke);
    ke_maybe_free(fl, ke);
}

/* Sets the flight's result, answers its waiters, then writes (SPEC §6.5). */
static void resolve(struct flight *f, enum fl_result res, char *val, size_t vlen, char *err)
{
    f->res = res;
    f->val = val;
    f->vlen = vlen;
    f->err = err;
    answer_waiters(f);
    if (res != RES_VALUE || f->superseded) {
        flight_end(f);
        return;
    }
    start_writes(f);
}

/* ---- writes ---- */

/* The bytes a cache stores for value: local keeps the client form, remote the serialized one. */
static int stored_form(struct flight *f, struct cm_storage *st, const char **out, size_t *outlen)
{
    enum cm_ser ser = f->node->conf->serializer;
    char err[160];
    if (st->ops->local) {
        *out = f->val;
        *outlen = f->vlen;
        return CM_OK;
    }
    if (st->ops->wrapped) {
        if (!f->have_wrapped) {
            if (cm_ser_encode_wrapped(ser, f->val, f->vlen, cm_wall_us(), &f->wrapped, err,
                                      sizeof(err)) != CM_OK) {
                cm_log(CM_LOG_WARN, "node %s: cannot serialize '%s' for %s: %s", f->node->name,
                       f->ckey, st->name, err);
                return CM_ERR;
            }
            f->have_wrapped = true;
        }
        *out = cm_buf_start(&f->wrapped);
        *outlen = cm_buf_used(&f->wrapped);
        return CM_OK;
    }
    if (!f->have_bare) {
        if (cm_ser_encode(ser, f->val, f->vlen, &f->bare, err, sizeof(err)) != CM_OK) {
            cm_log(CM_LOG_WARN, "node %s: cannot serialize '%s' for %s: %s", f->node->name,
                   f->ckey, st->name, err);
            return CM_ERR;
        }
        f->have_bare = true;
    }
    *out = cm_buf_start(&f->bare);
    *outlen = cm_buf_used(&f->bare);
    return CM_OK;
}

static void on_write_done(struct cm_st_op *op, void *arg)
{
    struct flight *f = arg;
    CM_UNUSED(op);
    if (--f->pending_writes == 0) {
        flight_end(f);
    }
}

/* Writes into cache c of the node; local synchronously, remote as an op. */
static void write_cache(struct flight *f, size_t c)
{
    const struct cm_node_cache *nc = &f->node->caches[c];
    int64_t ttl = f->ttl_override > 0 ? f->ttl_override : nc->ttl_ms;
    const char *data;
    size_t len;
    if (stored_form(f, nc->st, &data, &len) != CM_OK) {
        return;
    }
    if (nc->st->ops->local || f->srv->closing) {
        if (f->srv->closing) {
            return;
        }
        cm_storage_store(nc->st, f->ke->skey, f->ke->sklen, data, len, ttl, 0);
        return;
    }
    struct cm_st_op *op = cm_st_op_new_keys(CM_ST_SET, 1, f->ke->sklen + 1);
    cm_st_op_set_key(op, 0, f->ke->skey, f->ke->sklen);
    op->items[0].wval = data;
    op->items[0].wlen = len;
    op->ttl_ms = ttl;
    f->pending_writes++;
    cm_storage_submit(nc->st, op, on_write_done, f);
}

/* Writes the resolved value into every cache that should hold it, then ends the flight. */
static void start_writes(struct flight *f)
{
    struct cm_node *node = f->node;
    if (!f->from_cache && f->kind == FL_READ && node->doorkeeper != NULL &&
        !cm_bloom_add_if_absent(node->doorkeeper, f->ke->skey, f->ke->sklen)) {
        node->stats.doorkeeper_reject_count++;
        flight_end(f);
        return;
    }
    cm_assert(f->ke->writer == NULL || f->ke->writer == f);
    f->ke->writer = f;
    f->state = FL_WRITING;
    f->pending_writes++;   /* guard: the flight cannot end while writes are being issued */
    for (size_t i = 0; i < node->nlocal; i++) {
        /* Local caches missed before the flight started (SET writes them itself). */
        if (f->kind != FL_SET) {
            write_cache(f, node->local_idx[i]);
        }
    }
    size_t nremote = f->from_cache ? f->hit_remote : node->nremote;
    for (size_t i = 0; i < nremote; i++) {
        write_cache(f, node->remote_idx[i]);
    }
    on_write_done(NULL, f);
}

/* ---- reads ---- */

static void batch_free(struct batch *b)
{
    cm_free(b->fl);
    cm_free(b);
}

/* Decodes the value a read of storage st found (it) into the client form, owned by the caller.
 * NULL when it cannot be read. */
static char *decode_stored(struct flight *f, struct cm_storage *st, struct cm_st_item *it,
                           size_t *outlen)
{
    enum cm_ser ser = f->node->conf->serializer;
    struct cm_buf out;
    char err[160];
    int rc;
    if (ser == CM_SER_RAW && it->val != NULL) {
        /* Raw values are stored in client form everywhere: take the op's copy. */
        char *val = it->val;
        *outlen = it->vlen;
        it->val = NULL;
        return val;
    }
    cm_buf_init(&out);
    rc = st->ops->wrapped ? cm_ser_decode_wrapped(ser, it->val, it->vlen, &out, err, sizeof(err))
                          : cm_ser_decode(ser, it->val, it->vlen, &out, err, sizeof(err));
    if (rc != CM_OK) {
        cm_log(CM_LOG_WARN, "node %s: unreadable value for '%s' in %s (treated as a miss): %s",
               f->node->name, f->ckey, st->name, err);
        cm_storage_unreadable(st);
        cm_buf_deinit(&out);
        return NULL;
    }
    return cm_buf_steal(&out, outlen);
}

/* The flight read its remote cache at position f->step and missed: the next one, or the loader. */
static void read_next(struct flight *f)
{
    f->step++;
    if (f->step >= f->node->nremote || f->srv->closing) {
        start_load(f);
    } else {
        queue_read(f);
    }
}

static void on_batch_read(struct cm_st_op *op, void *arg)
{
    struct batch *b = arg;
    cm_assert(op->nitems == b->n);
    for (size_t i = 0; i < b->n; i++) {
        struct flight *f = b->fl[i];
        struct cm_st_item *it = &op->items[i];
        char *val = NULL;
        size_t vlen = 0;
        if (it->result == CM_ST_HIT) {
            val = decode_stored(f, op->st, it, &vlen);
        }
        if (val != NULL) {
            f->from_cache = true;
            f->hit_remote = f->step;
            resolve(f, RES_VALUE, val, vlen, NULL);
        } else {
            read_next(f);
        }
    }
    batch_free(b);
}

/* One multi-get of every flight in b from b's storage. */
static void batch_submit(struct batch *b)
{
    size_t key_bytes = 0;
    for (size_t i = 0; i < b->n; i++) {
        key_bytes += b->fl[i]->ke->sklen + 1;
    }
    struct cm_st_op *op = cm_st_op_new_keys(CM_ST_GET, b->n, key_bytes);
    for (size_t i = 0; i < b->n; i++) {
        cm_st_op_set_key(op, i, b->fl[i]->ke->skey, b->fl[i]->ke->sklen);
    }
    cm_storage_submit(b->st, op, on_batch_read, b);
}

/*
 * Remote reads are gathered per storage for the rest of the loop iteration, then sent as one
 * multi-get per storage (on_flush), whatever node or command the keys came from. Under load this
 * turns many clients' GETs into a few MGETs; an idle server pays one extra pass through the
 * active-event queue. A flight that misses moves on to its node's next remote cache, gathered
 * again with whatever else reads that storage.
 */
static void queue_read(struct flight *f)
{
    struct cm_flights *fl = f->srv->flights;
    f->state = FL_READING;
    if (f->step >= f->node->nremote || f->srv->closing) {
        start_load(f);
        return;
    }
    struct cm_storage *st = f->node->caches[f->node->remote_idx[f->step]].st;
    struct batch *b = fl->pending[st->idx];
    if (b == NULL) {
        b = fl->pending[st->idx] = cm_calloc(1, sizeof(*b));
        b->st = st;
        b->cap = 16;
        b->fl = cm_calloc(b->cap, sizeof(*b->fl));
        if (!fl->flush_armed) {
            fl->flush_armed = true;
            event_active(fl->flush_ev, EV_TIMEOUT, 0);
        }
    }
    if (b->n == b->cap) {
        b->cap *= 2;
        b->fl = cm_realloc(b->fl, b->cap * sizeof(*b->fl));
    }
    b->fl[b->n++] = f;
    if (b->n >= BATCH_MAX) {
        fl->pending[st->idx] = NULL;
        batch_submit(b);
    }
}

void cm_flights_flush(struct cm_flights *fl)
{
    fl->flush_armed = false;
    for (size_t i = 0; i < fl->srv->nstorages; i++) {
        struct batch *b = fl->pending[i];
        if (b != NULL) {
            fl->pending[i] = NULL;
            batch_submit(b);
        }
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_flights_flush(arg);
}

/* ---- loads ---- */

static void on_load(struct cm_load_result *r, void *arg)
{
    struct flight *f = arg;
    struct cm_node *node = f->node;
    char reason[200];
    node->stats.total_load_time_ns += (uint64_t)(cm_now_ns() - f->load_start_ns);
    switch (r->outcome) {
    case CM_LOAD_OK: {
        char err[160];
        if (node->conf->serializer != CM_SER_RAW &&
            cm_ser_validate(node->conf->serializer, r->body, r->len, err, sizeof(err)) != CM_OK) {
            node->stats.load_failure_count++;
            snprintf(reason, sizeof(reason), "%s", err);
            break;
        }
        node->stats.load_success_count++;
        char *body = r->body;
        r->body = NULL;
        resolve(f, RES_VALUE, body, r->len, NULL);
        return;
    }
    case CM_LOAD_NOT_FOUND:
        node->stats.load_success_count++;
        resolve(f, RES_NIL, NULL, 0, NULL);
        return;
    case CM_LOAD_FAILED:
    default:
        node->stats.load_failure_count++;
        snprintf(reason, sizeof(reason), "%s", r->reason);
        break;
    }
    struct cm_buf e;
    cm_buf_init(&e);
    cm_buf_printf(&e, "ERR load failed for '%.*s': %s", (int)(f->cklen > 200 ? 200 : f->cklen),
                  f->ckey, reason);
    char *msg = cm_buf_steal(&e, NULL);
    /* A key may hold CR/LF; the error line must not. */
    for (char *p = msg; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            *p = ' ';
        }
    }
    cm_log(CM_LOG_WARN, "node %s: %s", node->name, msg + 4);
    resolve(f, RES_ERROR, NULL, 0, msg);
}

static void start_load(struct flight *f)
{
    struct cm_node *node = f->node;
    struct cm_server *srv = f->srv;
    f->state = FL_LOADING;
    if (srv->closing) {
        struct cm_load_result r = { .outcome = CM_LOAD_FAILED };
        snprintf(r.reason, sizeof(r.reason), "shutting down");
        f->load_start_ns = cm_now_ns();
        on_load(&r, f);
        return;
    }
    if (node->loader.nsegs == 0) {
        /* No loader: the node is filled by SET only; a miss everywhere is nil. */
        resolve(f, RES_NIL, NULL, 0, NULL);
        return;
    }
    struct cm_params params;
    struct cm_buf url;
    cm_buf_init(&url);
    cm_tpl_match(&node->key, f->ckey, f->cklen, &params);
    cm_node_loader_url(node, &params, &url);
    cm_buf_append(&url, "", 1);
    f->load_start_ns = cm_now_ns();
    int rc = cm_loader_fetch(srv->loader, (size_t)(node - srv->nodes), cm_buf_start(&url),
                             node->conf->loader_socket,
                             node->conf->loader_timeout_ms, srv->conf->max_value_size, on_load, f);
    cm_buf_deinit(&url);
    if (rc != CM_OK) {
        struct cm_load_result r = { .outcome = CM_LOAD_FAILED };
        snprintf(r.reason, sizeof(r.reason), "loader unavailable");
        on_load(&r, f);
    }
}

/* ---- starting tasks ---- */

static void start_mutation_writes(struct flight *f);

/* Starts a task that was queued (or could start at once). Reads of a single flight go as a
 * batch of one. */
static void flight_start(struct flight *f)
{
    switch (f->kind) {
    case FL_READ:
        queue_read(f);
        break;
    case FL_REFRESH:
        f->ke->writer = f;
        start_load(f);
        break;
    case FL_SET:
    case FL_DEL:
        f->ke->writer = f;
        start_mutation_writes(f);
        break;
    }
}

/* Supersedes every read that exists on the key now (SPEC §6.8). */
static void supersede(struct keyent *ke)
{
    struct flight *f;
    if (ke->joinable != NULL && ke->joinable->state != FL_WRITING) {
        ke->joinable->superseded = true;
    }
    ke->joinable = NULL;
    TAILQ_FOREACH(f, &ke->queue, qlink) {
        if (f->kind == FL_READ || f->kind == FL_REFRESH) {
            f->superseded = true;
        }
    }
}

/* Queues f behind the key's writer and earlier tasks, or starts it now. */
static void enqueue_or_start(struct flight *f)
{
    struct keyent *ke = f->ke;
    if (ke->writer == NULL && TAILQ_EMPTY(&ke->queue)) {
        flight_start(f);
    } else {
        TAILQ_INSERT_TAIL(&ke->queue, f, qlink);
    }
}

static void on_delete_done(struct cm_st_op *op, void *arg)
{
    on_write_done(op, arg);
}

static void start_mutation_writes(struct flight *f)
{
    struct cm_node *node = f->node;
    f->state = FL_WRITING;
    f->pending_writes++;
    for (size_t i = 0; i < node->nremote; i++) {
        if (f->kind == FL_SET) {
            write_cache(f, node->remote_idx[i]);
        } else if (!f->srv->closing) {
            struct cm_storage *st = node->caches[node->remote_idx[i]].st;
            struct cm_st_op *op = cm_st_op_new_keys(CM_ST_DEL, 1, f->ke->sklen + 1);
            cm_st_op_set_key(op, 0, f->ke->skey, f->ke->sklen);
            f->pending_writes++;
            cm_storage_submit(st, op, on_delete_done, f);
        }
    }
    on_write_done(NULL, f);
}

/* ---- public entry points ---- */

#define SKEY_SMALL 256

/* Builds key's storage key in small (SKEY_SMALL bytes) when it fits, else in a cm_malloc'd block
 * that the caller frees when the result is not small. Nearly every key fits: no allocation. */
static char *skey_build(struct cm_server *srv, struct cm_node *node, const char *key, size_t klen,
                        char *small, size_t *sklen)
{
    *sklen = cm_node_storage_key_into(node, srv->conf->prefix, key, klen, small, SKEY_SMALL);
    if (*sklen <= SKEY_SMALL) {
        return small;
    }
    char *skey = cm_malloc(*sklen);
    cm_node_storage_key_into(node, srv->conf->prefix, key, klen, skey, *sklen);
    return skey;
}

/* The key entry of key's storage key, created when there is none. */
static struct keyent *ke_of(struct cm_server *srv, struct cm_node *node, const char *key,
                            size_t klen)
{
    char small[SKEY_SMALL];
    size_t sklen;
    char *skey = skey_build(srv, node, key, klen, small, &sklen);
    struct keyent *ke = ke_get(srv->flights, skey, sklen, true);
    if (skey != small) {
        cm_free(skey);
    }
    return ke;
}

bool cm_flight_get_local(struct cm_server *srv, struct cm_node *node, const char *key,
                         size_t klen, struct cm_buf *out)
{
    if (node->nlocal == 0) {
        return false;
    }
    char small[SKEY_SMALL];
    size_t sklen;
    char *skey = skey_build(srv, node, key, klen, small, &sklen);
    bool hit = false;
    for (size_t i = 0; i < node->nlocal && !hit; i++) {
        struct cm_node_cache *nc = &node->caches[node->local_idx[i]];
        const char *val;
        size_t vlen;
        if (!cm_storage_lookup(nc->st, skey, sklen, &val, &vlen, NULL)) {
            continue;
        }
        hit = true;
        node->stats.hit_count++;
        node->stats.local_hit_count++;
        cm_resp_bulk(out, val, vlen);
        for (size_t j = 0; j < i; j++) {
            struct cm_node_cache *prev = &node->caches[node->local_idx[j]];
            cm_storage_store(prev->st, skey, sklen, val, vlen, prev->ttl_ms, 0);
        }
    }
    if (skey != small) {
        cm_free(skey);
    }
    return hit;
}

void cm_flight_get(struct cm_server *srv, struct cm_req *req, const struct cm_getkey *keys,
                   size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct cm_node *node = keys[k].node;
        if (!keys[k].local_checked && node->nlocal > 0) {
            struct cm_buf tmp;
            if (cm_flight_get_local(srv, node, keys[k].key, keys[k].klen,
                                    cm_req_slot_buf(req, &tmp))) {
                cm_req_slot_encoded(req, keys[k].slot, &tmp);
                continue;
            }
            cm_buf_deinit(&tmp);   /* a miss wrote nothing */
        }

        /* 2. join the key's flight, or start one */
        struct keyent *ke = ke_of(srv, node, keys[k].key, keys[k].klen);
        struct flight *f = ke->joinable;
        if (f != NULL) {
            node->stats.coalesced_count++;
            if (f->answered) {
                /* Writes in progress: the value is known, no storage is touched. */
                count_answer(f);
                fill_slot_result(req, keys[k].slot, f->res, f->val, f->vlen, f->err);
            } else {
                add_waiter(f, req, keys[k].slot, true);
            }
            continue;
        }
        f = flight_new(srv, ke, node, FL_READ, keys[k].key, keys[k].klen);
        ke->joinable = f;
        add_waiter(f, req, keys[k].slot, true);
        if (ke->writer != NULL || !TAILQ_EMPTY(&ke->queue)) {
            TAILQ_INSERT_TAIL(&ke->queue, f, qlink);
            continue;
        }
        /* 3. the remote reads of new flights are batched per node */
        queue_read(f);
    }
}

static struct flight *new_mutation(struct cm_server *srv, struct cm_node *node, enum fl_kind kind,
                                   const char *key, size_t klen)
{
    struct keyent *ke = ke_of(srv, node, key, klen);
    supersede(ke);
    return flight_new(srv, ke, node, kind, key, klen);
}

void cm_flight_del(struct cm_server *srv, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen)
{
    struct flight *f = new_mutation(srv, node, FL_DEL, key, klen);
    for (size_t i = 0; i < node->nlocal; i++) {
        struct cm_storage *st = node->caches[node->local_idx[i]].st;
        cm_storage_remove(st, f->ke->skey, f->ke->sklen);
    }
    f->owner = req;
    req->refs++;
    req->pending++;
    enqueue_or_start(f);
}

void cm_flight_set(struct cm_server *srv, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen, const char *val, size_t vlen,
                   int64_t ttl_ms_override)
{
    struct flight *f = new_mutation(srv, node, FL_SET, key, klen);
    f->val = cm_malloc(vlen + 1);
    memcpy(f->val, val, vlen);
    f->val[vlen] = '\0';
    f->vlen = vlen;
    f->res = RES_VALUE;
    f->answered = true;
    f->ttl_override = ttl_ms_override;
    for (size_t i = 0; i < node->nlocal; i++) {
        write_cache(f, node->local_idx[i]);
    }
    f->owner = req;
    req->refs++;
    req->pending++;
    enqueue_or_start(f);
}

void cm_flight_refresh(struct cm_server *srv, struct cm_req *req, size_t slot,
                       struct cm_node *node, const char *key, size_t klen)
{
    struct flight *f = new_mutation(srv, node, FL_REFRESH, key, klen);
    f->ke->joinable = f;
    add_waiter(f, req, slot, false);
    enqueue_or_start(f);
}
