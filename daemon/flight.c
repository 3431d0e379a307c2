/* The flight engine.
 *
 * Every storage key with work in progress has a key entry. It holds:
 *   joinable      the flight new GETs join (reading, loading, or writing a known value);
 *   writer        the flight writing to the caches now (a read's backfills or loaded value, SET,
 *                 DEL, REFRESH); at most one, so writes of one key never overtake each other;
 *   loading       the flight whose origin load is in progress: at most one load per key at a
 *                 time, whatever mix of GETs and REFRESHes asks;
 *   next_refresh  a REFRESH waiting for its load, which later REFRESHes join: 3,000 REFRESHes
 *                 of one key cost at most two loads (the one in progress and the next);
 *   queue         flights waiting for the writer slot, in arrival order (a read to start after
 *                 earlier writes, a mutation's writes, a loaded value's writes);
 *   load_wait     flights waiting for the load in progress to end before loading themselves.
 *
 * A mutation (SET/DEL/REFRESH) supersedes every read or refresh of the key that exists when it
 * arrives and has not started writing: those still answer their waiters but write nothing, so
 * no stale value is written back (SPEC §6.8). A REFRESH leaves a load in progress joinable, so a
 * GET never waits for more than one load; a DEL or SET does not (a GET after a DEL must not get
 * a value loaded before it).
 *
 * Re-entrancy: finishing one flight can start the next queued one, which can finish at once
 * (a local-only DEL) and end, and so on. ke_run is the only place that starts queued work; it
 * holds a reference on the key entry and runs as one loop (a nested call returns at once), so
 * no step ever touches a freed entry (issue 14, defect 1).
 */
#include "daemon/flight.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/bloom.h"
#include "daemon/buf.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/req.h"
#include "daemon/resp.h"
#include "daemon/serializer.h"
#include "daemon/util.h"
#include "daemon/val.h"
#include "storages/storage.h"

#include <event2/event.h>
#include <string.h>
#include <sys/queue.h>

enum fl_kind { FL_READ, FL_REFRESH, FL_SET, FL_DEL };
enum fl_state {
    FL_NEW,          /* created, waiting for the writer slot to start (reads, SET, DEL) */
    FL_READING,      /* reading the remote caches */
    FL_LOAD_WAIT,    /* waiting for another load of the key to end */
    FL_LOADING,      /* at the origin */
    FL_WRITE_WAIT,   /* has a value to write, waiting for the writer slot */
    FL_WRITING,
};
enum fl_result { RES_NONE, RES_VALUE, RES_NIL, RES_ERROR };

struct cm_waiter {
    struct cm_req *req;   /* holds a ref */
    size_t slot;
    bool get;             /* a GET/MGET key: counted in the node's hit/miss stats */
};

struct keyent;

/* One task on one key. Owned by its key entry's bookkeeping; freed by flight_end. */
struct flight {
    TAILQ_ENTRY(flight) qlink;     /* ke->queue or ke->load_wait, per state */
    TAILQ_ENTRY(flight) alink;     /* ke->all */
    struct keyent *ke;
    struct cm_flights *fl;
    struct cm_node *node;
    enum fl_kind kind;
    enum fl_state state;
    uint64_t seq;                  /* creation order (engine-wide) */
    uint64_t load_seq;             /* the engine's sequence when its load started */
    bool superseded;               /* a later mutation happened: write nothing */
    bool trial;                    /* its load is the breaker's trial */
    bool stale_answer;             /* its waiters get a stale entry: counted as stale hits */
    bool negative;                 /* its value is a negative entry (a cached 404, SPEC §12) */
    int64_t written_ms;            /* when the value it found in a cache was written (0: now) */
    struct cm_val *stale;          /* the youngest stale entry met on the way (SPEC §12), a ref */
    int64_t stale_past_ms;         /* how far past its cache's ttl it is */
    bool answered;                 /* waiters have their reply */
    size_t cklen;
    struct cm_waiter *waiters;     /* &waiter0, or an owned array once a second waiter joins */
    size_t nwaiters, capwaiters;
    struct cm_waiter waiter0;      /* most flights have one waiter: no array to allocate */
    enum fl_result res;
    struct cm_val *val;            /* client-form value, one reference */
    char *err;                     /* client error text, owned */
    bool from_cache;               /* the value came from a remote cache (a hit for waiters) */
    size_t hit_remote;             /* remote position that hit (reads stop there) */
    size_t step;                   /* remote position being read */
    int pending_writes;
    int64_t ttl_override;          /* SET EX/PX: > 0 replaces every cache's ttl */
    struct cm_req *owner;          /* SET/DEL: request part to complete after writes (ref held) */
    struct cm_buf wrapped;         /* stored forms for the writes, built once */
    struct cm_buf bare;
    bool have_wrapped, have_bare;
    int64_t load_start_ns;
    char ckey[];                   /* client key, NUL-terminated, allocated with the flight */
};

TAILQ_HEAD(flight_list, flight);

struct keyent {
    struct keyent *hnext;
    uint64_t hash;
    size_t sklen;
    struct flight *joinable;
    struct flight *writer;
    struct flight *loading;
    struct flight *next_refresh;
    struct flight_list queue;
    struct flight_list load_wait;
    struct flight_list all;        /* every flight of the key (supersede walks it) */
    int refs;                      /* flights pointing here, and ke_run while it runs */
    bool running;                  /* inside ke_run */
    char skey[];                   /* storage key, NUL-terminated, allocated with the entry */
};

/* A node's breaker (SPEC §12 `breaker = K, T`). */
struct breaker {
    int failures;                  /* consecutive failed origin requests */
    int64_t open_until_ms;         /* 0: closed; else open until then, then one trial */
    bool trial_out;                /* the trial load is at the origin */
};

struct cm_flights {
    struct cm_flight_env env;
    struct breaker *breakers;      /* one per node */
    struct keyent **buckets;
    size_t nbuckets;
    size_t count;
    uint64_t seq;
    bool closing;
    struct batch **pending;        /* per storage: reads gathered during this loop iteration */
    struct event *flush_ev;        /* runs cm_flights_flush once the iteration's callbacks ran */
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

static void flight_end(struct flight *f);
static void queue_read(struct flight *f);
static void want_load(struct flight *f);
static void want_write(struct flight *f);
static void start_writes(struct flight *f);
static void start_mutation_writes(struct flight *f);
static void ke_run(struct cm_flights *fl, struct keyent *ke);

/* ---- engine and key table ---- */

static void on_flush(evutil_socket_t fd, short what, void *arg);

struct cm_flights *cm_flights_new(const struct cm_flight_env *env)
{
    struct cm_flights *fl = cm_calloc(1, sizeof(*fl));
    fl->env = *env;
    fl->breakers = cm_calloc(env->nnodes ? env->nnodes : 1, sizeof(*fl->breakers));
    fl->nbuckets = 1024;
    fl->buckets = cm_calloc(fl->nbuckets, sizeof(*fl->buckets));
    fl->pending = cm_calloc(env->nstorages ? env->nstorages : 1, sizeof(*fl->pending));
    fl->flush_ev = event_new(env->base, -1, 0, on_flush, fl);
    return fl;
}

void cm_flights_free(struct cm_flights *fl)
{
    if (fl == NULL) {
        return;
    }
    cm_assert(fl->count == 0);
    for (size_t i = 0; i < fl->env.nstorages; i++) {
        cm_assert(fl->pending[i] == NULL);   /* flushed before the storages closed */
    }
    event_free(fl->flush_ev);
    cm_free(fl->breakers);
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

static struct keyent *ke_get(struct cm_flights *fl, const char *skey, size_t sklen)
{
    uint64_t h = cm_hash(skey, sklen);
    for (struct keyent *ke = fl->buckets[h & (fl->nbuckets - 1)]; ke != NULL; ke = ke->hnext) {
        if (ke->hash == h && ke->sklen == sklen && memcmp(ke->skey, skey, sklen) == 0) {
            return ke;
        }
    }
    if (fl->count >= fl->nbuckets) {
        table_grow(fl);
    }
    struct keyent *ke = cm_calloc(1, sizeof(*ke) + sklen + 1);
    ke->hash = h;
    memcpy(ke->skey, skey, sklen);
    ke->sklen = sklen;
    TAILQ_INIT(&ke->queue);
    TAILQ_INIT(&ke->load_wait);
    TAILQ_INIT(&ke->all);
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
    cm_assert(ke->joinable == NULL && ke->writer == NULL && ke->loading == NULL &&
              ke->next_refresh == NULL && TAILQ_EMPTY(&ke->queue) && TAILQ_EMPTY(&ke->load_wait));
    struct keyent **pp = &fl->buckets[ke->hash & (fl->nbuckets - 1)];
    while (*pp != ke) {
        pp = &(*pp)->hnext;
    }
    *pp = ke->hnext;
    fl->count--;
    cm_free(ke);
}

/* ---- flights ---- */

static struct flight *flight_new(struct cm_flights *fl, struct keyent *ke, struct cm_node *node,
                                 enum fl_kind kind, const char *key, size_t klen)
{
    struct flight *f = cm_calloc(1, sizeof(*f) + klen + 1);
    f->fl = fl;
    f->ke = ke;
    f->node = node;
    f->kind = kind;
    f->state = FL_NEW;
    f->seq = ++fl->seq;
    memcpy(f->ckey, key, klen);
    f->cklen = klen;
    f->waiters = &f->waiter0;
    f->capwaiters = 1;
    cm_buf_init(&f->wrapped);
    cm_buf_init(&f->bare);
    TAILQ_INSERT_TAIL(&ke->all, f, alink);
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
    cm_req_hold(req);
}

/* Answers one key of req with f's result. */
static void answer(struct flight *f, struct cm_req *req, size_t slot)
{
    switch (f->res) {
    case RES_VALUE:
        if (f->negative) {
            cm_req_answer_nil(req, slot);
        } else {
            cm_req_answer_val(req, slot, f->val);
        }
        break;
    case RES_NIL: cm_req_answer_nil(req, slot); break;
    case RES_ERROR: cm_req_answer_error(req, slot, f->err); break;
    case RES_NONE: CM_NOT_REACHED();
    }
}

/* Counts one request answered by f (hit or miss) in its node's stats. */
static void count_answer(struct flight *f)
{
    struct cm_node_stats *s = &f->node->stats;
    if (f->stale_answer) {
        s->hit_count++;
        s->stale_hit_count++;
    } else if (f->from_cache && f->negative) {
        s->hit_count++;
        s->remote_hit_count++;
        s->negative_hit_count++;
    } else if (f->from_cache) {
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
        answer(f, req, f->waiters[i].slot);
        cm_req_unref(req);
    }
    f->nwaiters = 0;
}

static void flight_free(struct flight *f)
{
    if (f->waiters != &f->waiter0) {
        cm_free(f->waiters);
    }
    cm_val_unref(f->val);
    cm_val_unref(f->stale);
    cm_free(f->err);
    cm_buf_deinit(&f->wrapped);
    cm_buf_deinit(&f->bare);
    cm_free(f);
}

/* The flight is over: answered, writes finished. Releases its key entry. */
static void flight_end(struct flight *f)
{
    struct keyent *ke = f->ke;
    struct cm_flights *fl = f->fl;
    cm_assert(f->nwaiters == 0 && f->pending_writes == 0);
    if (f->kind != FL_READ && !f->superseded && fl->env.publish != NULL) {
        /* Other instances drop their local copy only now that the shared caches are written. */
        fl->env.publish(fl->env.publish_arg, f->node, f->ckey, f->cklen);
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
    if (ke->next_refresh == f) {
        ke->next_refresh = NULL;
    }
    cm_assert(ke->loading != f);
    if (ke->joinable == NULL) {
        /* A REFRESH that nothing superseded is the newest thing on the key: GETs join it. */
        struct flight *r = ke->loading != NULL && ke->loading->kind == FL_REFRESH
                               ? ke->loading : ke->next_refresh;
        if (r != NULL && !r->superseded) {
            ke->joinable = r;
        }
    }
    TAILQ_REMOVE(&ke->all, f, alink);
    ke->refs--;
    flight_free(f);
    ke_run(fl, ke);
}

static void write_cache(struct flight *f, size_t c);
static void resolve_failure(struct flight *f, const char *reason);
static bool is_negative(const struct cm_node *node, const char *val, size_t len);
static void resolve_absent(struct flight *f);

/* Sets the flight's result, answers its waiters, then writes (SPEC §6.5). Takes val's ref and
 * err. The local caches are written at once, in the same call as the answers: a client that got
 * the value and asks again finds it locally, even while the remote writes wait for their turn. */
static void resolve(struct flight *f, enum fl_result res, struct cm_val *val, char *err)
{
    struct cm_node *node = f->node;
    cm_val_unref(f->val);   /* a stale value answered while the load ran (grace) */
    cm_free(f->err);
    f->stale_answer = false;
    f->res = res;
    f->val = val;
    f->err = err;
    answer_waiters(f);
    if (res != RES_VALUE || f->superseded ||
        (f->negative && node->conf->negative_ttl_ms <= 0)) {
        /* (a cached None found where this node keeps no negative entries: answered, not
         * copied into the other caches) */
        flight_end(f);
        return;
    }
    if (!f->from_cache && f->kind == FL_READ && node->doorkeeper != NULL &&
        !cm_bloom_add_if_absent(node->doorkeeper, f->ke->skey, f->ke->sklen)) {
        node->stats.doorkeeper_reject_count++;
        flight_end(f);
        return;
    }
    for (size_t i = 0; i < node->nlocal; i++) {
        write_cache(f, node->local_idx[i]);   /* they missed before the flight started */
    }
    size_t nremote = f->from_cache ? f->hit_remote : node->nremote;
    if (nremote == 0) {
        flight_end(f);
        return;
    }
    struct flight *j = f->ke->joinable;
    if (j == NULL || (j != f && j->answered)) {
        /* The newest value known on the key: GETs take it while its writes wait or run, not an
         * older flight's that is still writing (a REFRESH answered after another; fuzz_flight). */
        f->ke->joinable = f;
    }
    want_write(f);
}

/* Starts what waits on the key, in order, while nothing else blocks it: the next load when no
 * load is in progress, queued flights while no one writes. The only place that starts queued
 * work (see the top of the file). */
static void ke_run(struct cm_flights *fl, struct keyent *ke)
{
    struct flight *f;
    if (ke->running) {
        return;   /* the outer ke_run goes on with whatever this call would have started */
    }
    ke->running = true;
    ke->refs++;
    for (;;) {
        /* The next flight waiting to load starts its load, or takes the one that just
         * started when it began after the flight was asked for. */
        f = TAILQ_FIRST(&ke->load_wait);
        if (f != NULL && (ke->loading == NULL || ke->loading->load_seq > f->seq)) {
            TAILQ_REMOVE(&ke->load_wait, f, qlink);
            f->state = FL_READING;   /* want_load moves it on */
            want_load(f);
            continue;
        }
        if (ke->writer == NULL && (f = TAILQ_FIRST(&ke->queue)) != NULL) {
            TAILQ_REMOVE(&ke->queue, f, qlink);
            if (f->state == FL_WRITE_WAIT) {
                start_writes(f);
            } else if (f->kind == FL_READ) {
                queue_read(f);
            } else {
                ke->writer = f;
                start_mutation_writes(f);
            }
            continue;
        }
        break;
    }
    ke->running = false;
    ke->refs--;
    ke_maybe_free(fl, ke);
}

/* ---- ages (SPEC §12) ---- */

static int64_t wall_ms(void)
{
    return cm_wall_us() / 1000;
}

/* How far past its cache's ttl an entry written at written_ms is; < 0 while fresh. An entry of a
 * cache without ttl, or whose write time the storage cannot tell, is fresh. */
static int64_t past_ttl(int64_t ttl_ms, int64_t written_ms, int64_t now_ms)
{
    if (ttl_ms <= 0 || written_ms <= 0) {
        return -1;
    }
    int64_t age = now_ms > written_ms ? now_ms - written_ms : 0;
    return age - ttl_ms;
}

/* How long past its ttl a cache keeps an entry of node for stale answers. */
static int64_t stale_span(const struct cm_node *node)
{
    const struct cm_conf_node *c = node->conf;
    return c->grace_ms > c->stale_if_error_ms ? c->grace_ms : c->stale_if_error_ms;
}

/* Remembers a stale entry found on f's way, keeping the youngest. Takes v's reference. */
static void note_stale(struct flight *f, struct cm_val *v, int64_t past)
{
    if (past > stale_span(f->node) || (f->stale != NULL && f->stale_past_ms <= past)) {
        cm_val_unref(v);
        return;
    }
    cm_val_unref(f->stale);
    f->stale = v;
    f->stale_past_ms = past;
}

/* A json/msgpack node's value that is the JSON null: a negative entry, Cacheme's cached None
 * (SPEC §12). Such a node never has null as a real value: a loader 200 of null is a 404. */
static bool is_negative(const struct cm_node *node, const char *val, size_t len)
{
    if (node->conf->serializer == CM_SER_RAW) {
        return false;
    }
    while (len > 0 && (val[len - 1] == ' ' || val[len - 1] == '\n' || val[len - 1] == '\r' ||
                       val[len - 1] == '\t')) {
        len--;
    }
    while (len > 0 && (*val == ' ' || *val == '\n' || *val == '\r' || *val == '\t')) {
        val++;
        len--;
    }
    return len == 4 && memcmp(val, "null", 4) == 0;
}

/* ---- writes ---- */

/* The bytes a cache stores for value: local keeps the client form, remote the serialized one. */
static int stored_form(struct flight *f, struct cm_storage *st, const char **out, size_t *outlen)
{
    enum cm_ser ser = f->node->conf->serializer;
    char err[160];
    if (st->ops->local) {
        *out = f->val->data;
        *outlen = f->val->len;
        return CM_OK;
    }
    struct cm_buf *b = st->ops->wrapped ? &f->wrapped : &f->bare;
    bool *have = st->ops->wrapped ? &f->have_wrapped : &f->have_bare;
    if (!*have) {
        int rc = st->ops->wrapped
                     ? cm_ser_encode_wrapped(ser, f->val->data, f->val->len, cm_wall_us(), b,
                                             err, sizeof(err))
                     : cm_ser_encode(ser, f->val->data, f->val->len, b, err, sizeof(err));
        if (rc != CM_OK) {
            cm_log(CM_LOG_WARN, "node %s: cannot serialize a value for %s: %s", f->node->name,
                   st->name, err);
            return CM_ERR;
        }
        *have = true;
    }
    *out = cm_buf_start(b);
    *outlen = cm_buf_used(b);
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

/* Writes into cache c of the node; local synchronously, remote as an op. Nothing once the
 * engine is shutting down. */
static void write_cache(struct flight *f, size_t c)
{
    const struct cm_node_cache *nc = &f->node->caches[c];
    int64_t ttl = f->ttl_override > 0 ? f->ttl_override : nc->ttl_ms;
    const char *data;
    size_t len;
    if (f->fl->closing || stored_form(f, nc->st, &data, &len) != CM_OK) {
        return;
    }
    if (f->negative) {
        /* min(negative_ttl, the cache's ttl), and no grace: gone when its ttl ends */
        int64_t neg = f->node->conf->negative_ttl_ms;
        ttl = ttl > 0 && ttl < neg ? ttl : neg;
    } else if (ttl > 0) {
        /* The cache keeps it past its ttl for stale answers (SPEC §12); the spans are capped by
         * the config, so this cannot overflow. */
        ttl += stale_span(f->node);
    }
    if (nc->st->ops->local) {
        cm_storage_store(nc->st, f->ke->skey, f->ke->sklen, data, len, ttl, f->written_ms);
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

/* A resolved value is to be written: takes the writer slot when it is free, else waits in
 * line for it. */
static void want_write(struct flight *f)
{
    struct keyent *ke = f->ke;
    if (ke->writer == NULL) {
        start_writes(f);
        return;
    }
    f->state = FL_WRITE_WAIT;
    TAILQ_INSERT_TAIL(&ke->queue, f, qlink);
}

/* Writes the resolved value into the remote caches that should hold it, then ends the flight. */
static void start_writes(struct flight *f)
{
    struct cm_node *node = f->node;
    struct keyent *ke = f->ke;
    if (f->superseded) {
        flight_end(f);   /* superseded while it waited for the writer slot */
        return;
    }
    cm_assert(ke->writer == NULL);
    ke->writer = f;
    f->state = FL_WRITING;
    f->pending_writes++;   /* guard: the flight cannot end while writes are being issued */
    size_t nremote = f->from_cache ? f->hit_remote : node->nremote;
    for (size_t i = 0; i < nremote; i++) {
        write_cache(f, node->remote_idx[i]);
    }
    on_write_done(NULL, f);
}

static void start_mutation_writes(struct flight *f)
{
    struct cm_node *node = f->node;
    f->state = FL_WRITING;
    f->pending_writes++;
    for (size_t i = 0; i < node->nremote; i++) {
        if (f->kind == FL_SET) {
            write_cache(f, node->remote_idx[i]);
        } else if (!f->fl->closing) {
            struct cm_storage *st = node->caches[node->remote_idx[i]].st;
            struct cm_st_op *op = cm_st_op_new_keys(CM_ST_DEL, 1, f->ke->sklen + 1);
            cm_st_op_set_key(op, 0, f->ke->skey, f->ke->sklen);
            f->pending_writes++;
            cm_storage_submit(st, op, on_write_done, f);
        }
    }
    on_write_done(NULL, f);
}

/* ---- reads ---- */

static void batch_free(struct batch *b)
{
    cm_free(b->fl);
    cm_free(b);
}

/* Decodes the value a read of storage st found (it) into the client form. NULL when it cannot
 * be read. */
static struct cm_val *decode_stored(struct flight *f, struct cm_storage *st,
                                    struct cm_st_item *it)
{
    enum cm_ser ser = f->node->conf->serializer;
    struct cm_buf out;
    char err[160];
    size_t len;
    if (ser == CM_SER_RAW && it->val != NULL) {
        /* Raw values are stored in client form everywhere: take the op's copy. */
        struct cm_val *v = cm_val_take(it->val, it->vlen);
        it->val = NULL;
        return v;
    }
    cm_buf_init(&out);
    int64_t written = 0;
    int rc = st->ops->wrapped
                 ? cm_ser_decode_wrapped_at(ser, it->val, it->vlen, &out, &written, err, sizeof(err))
                 : cm_ser_decode(ser, it->val, it->vlen, &out, err, sizeof(err));
    if (rc == CM_OK && st->ops->wrapped && it->written_ms <= 0) {
        it->written_ms = written;   /* Cacheme's updated_at, inside the Redis wrapper */
    }
    if (rc != CM_OK) {
        cm_log(CM_LOG_WARN, "node %s: unreadable value in %s (treated as a miss): %s",
               f->node->name, st->name, err);
        cm_storage_unreadable(st);
        cm_buf_deinit(&out);
        return NULL;
    }
    char *data = cm_buf_steal(&out, &len);
    return cm_val_take(data, len);
}

static void on_batch_read(struct cm_st_op *op, void *arg)
{
    struct batch *b = arg;
    cm_assert(op->nitems == b->n);
    for (size_t i = 0; i < b->n; i++) {
        struct flight *f = b->fl[i];
        struct cm_st_item *it = &op->items[i];
        struct cm_val *val = it->result == CM_ST_HIT ? decode_stored(f, op->st, it) : NULL;
        int64_t past = val == NULL ? -1
                                   : past_ttl(f->node->caches[f->node->remote_idx[f->step]].ttl_ms,
                                              it->written_ms, wall_ms());
        bool neg = val != NULL && is_negative(f->node, val->data, val->len);
        if (val != NULL && past >= 0) {
            if (neg) {
                cm_val_unref(val);   /* negative entries get no grace */
            } else {
                note_stale(f, val, past);   /* a fresh entry further on beats it */
            }
            val = NULL;
        }
        if (val != NULL && neg) {
            f->negative = true;   /* answered nil, backfilled as a negative entry */
        }
        const struct cm_conf_node *c = f->node->conf;
        if (val != NULL && !neg && c->refresh_after_ms > 0 && it->written_ms > 0 &&
            f->node->loader.nsegs > 0 && wall_ms() - it->written_ms >= c->refresh_after_ms) {
            /* Fresh but old enough to reload: answered now, loaded in the background, and the
             * load writes every cache (SPEC §12 refresh_after). */
            cm_val_unref(f->stale);
            f->stale = val;
            f->stale_past_ms = 0;
            f->step = f->node->nremote;
            want_load(f);
            continue;
        }
        if (val != NULL) {
            f->from_cache = true;
            f->hit_remote = f->step;
            f->written_ms = it->written_ms;
            resolve(f, RES_VALUE, val, NULL);
        } else {
            f->step++;
            queue_read(f);
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
        struct flight *f = b->fl[i];
        cm_st_op_set_key(op, i, f->ke->skey, f->ke->sklen);
        /* A raw value in Redis has no write time of its own: the storage derives it from the
         * key's remaining TTL, read in the same round trip, which costs Redis a PTTL per key.
         * Asked only for nodes that need ages (SPEC §12), and only when the batch's keys share
         * one keep time (op->ttl_ms); other keys count as fresh. */
        const struct cm_conf_node *c = f->node->conf;
        int64_t ttl = f->node->caches[f->node->remote_idx[f->step]].ttl_ms;
        if (b->st->ops->wrapped && c->serializer == CM_SER_RAW && ttl > 0 &&
            (c->grace_ms > 0 || c->stale_if_error_ms > 0 || c->refresh_after_ms > 0)) {
            int64_t keep = ttl + stale_span(f->node);
            if (!op->want_age && i == 0) {
                op->want_age = true;
                op->ttl_ms = keep;
            } else if (op->ttl_ms != keep) {
                op->want_age = false;
            }
        } else if (op->want_age) {
            op->want_age = false;
        }
    }
    cm_storage_submit(b->st, op, on_batch_read, b);
}

/*
 * Reads remote cache f->step of f's chain, or loads when the chain is exhausted. Remote reads
 * are gathered per storage for the rest of the loop iteration, then sent as one multi-get per
 * storage (cm_flights_flush), whatever node or command the keys came from. Under load this turns
 * many clients' GETs into a few MGETs; an idle server pays one extra pass through the
 * active-event queue.
 */
static void queue_read(struct flight *f)
{
    struct cm_flights *fl = f->fl;
    f->state = FL_READING;
    if (f->step >= f->node->nremote || fl->closing) {
        want_load(f);
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
    for (size_t i = 0; i < fl->env.nstorages; i++) {
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

void cm_flights_shutdown(struct cm_flights *fl)
{
    fl->closing = true;
    cm_flights_flush(fl);
}

void cm_flights_close_loader(struct cm_flights *fl)
{
    cm_assert(fl->closing);
    if (fl->env.loader_close != NULL) {
        fl->env.loader_close(fl->env.fetch_arg);
    }
}

/* ---- the breaker (SPEC §12) ---- */

static struct breaker *breaker_of(struct cm_flights *fl, const struct cm_node *node)
{
    return &fl->breakers[node - fl->env.nodes];
}

/* Whether f may call the origin now. Open: no, until T has passed; then f goes as the one trial
 * load, and while it is out the others are refused as while open. */
static bool breaker_allows(struct flight *f)
{
    const struct cm_conf_node *c = f->node->conf;
    struct breaker *b = breaker_of(f->fl, f->node);
    if (c->breaker_failures <= 0 || b->open_until_ms == 0) {
        return true;
    }
    if (b->trial_out || cm_now_ms() < b->open_until_ms) {
        return false;
    }
    b->trial_out = true;
    f->trial = true;
    return true;
}

/* An origin request of f's node ended: ok (200/404) closes the breaker; a failure counts, and
 * the K-th in a row (or a failed trial) opens it for T. Queue timeouts are not the origin's. */
static void breaker_note(struct flight *f, bool ok)
{
    const struct cm_conf_node *c = f->node->conf;
    struct breaker *b = breaker_of(f->fl, f->node);
    if (c->breaker_failures <= 0) {
        return;
    }
    if (f->trial) {
        b->trial_out = false;
    }
    if (ok) {
        b->failures = 0;
        b->open_until_ms = 0;
        return;
    }
    b->failures++;
    if (f->trial || (b->open_until_ms == 0 && b->failures >= c->breaker_failures)) {
        b->open_until_ms = cm_now_ms() + c->breaker_open_ms;
        f->node->stats.breaker_open_count++;
        cm_log(CM_LOG_WARN, "node %s: breaker open for %lld ms after %d failed loads",
               f->node->name, (long long)c->breaker_open_ms, b->failures);
    }
}

int cm_flights_breaker_state(const struct cm_flights *fl, const struct cm_node *node)
{
    const struct breaker *b = &fl->breakers[node - fl->env.nodes];
    return b->trial_out ? 2 : b->open_until_ms != 0 ? 1 : 0;
}

/* ---- loads ---- */

/* The error every waiter of a failed load gets. */
static char *load_error(struct flight *f, const char *reason)
{
    struct cm_buf e;
    cm_buf_init(&e);
    cm_buf_printf(&e, "ERR load failed for '%.*s': %s", (int)(f->cklen > 200 ? 200 : f->cklen),
                  f->ckey, reason);
    char *msg = cm_buf_steal(&e, NULL);
    cm_log(CM_LOG_WARN, "node %s: %s", f->node->name, msg + 4);
    return msg;
}

/* The load in progress on f's key ended: the next one waiting may start. */
static void load_over(struct flight *f)
{
    cm_assert(f->ke->loading == f);
    f->ke->loading = NULL;
    f->node->stats.total_load_time_ns += (uint64_t)(cm_now_ns() - f->load_start_ns);
}

static void on_load(struct cm_load_result *r, void *arg)
{
    struct flight *f = arg;
    struct cm_node *node = f->node;
    struct keyent *ke = f->ke;
    struct cm_flights *fl = f->fl;
    char err[160];
    const char *reason = r->reason;
    ke->refs++;   /* resolve may end f; the waiting loads start after it */
    load_over(f);
    if (!r->queue_timeout) {
        breaker_note(f, r->outcome != CM_LOAD_FAILED);
    }
    switch (r->outcome) {
    case CM_LOAD_OK:
        if (node->conf->serializer != CM_SER_RAW &&
            cm_ser_validate(node->conf->serializer, r->body, r->len, err, sizeof(err)) != CM_OK) {
            reason = err;
            break;
        }
        node->stats.load_success_count++;
        if (is_negative(node, r->body, r->len)) {
            resolve_absent(f);   /* a 200 of null is a 404 (SPEC §12) */
            goto out;
        }
        resolve(f, RES_VALUE, cm_val_take(r->body, r->len), NULL);
        r->body = NULL;
        goto out;
    case CM_LOAD_NOT_FOUND:
        node->stats.load_success_count++;
        resolve_absent(f);
        goto out;
    case CM_LOAD_FAILED:
        break;
    }
    node->stats.load_failure_count++;
    resolve_failure(f, reason);
out:
    ke->refs--;
    ke_run(fl, ke);   /* the next load waiting on the key, whatever became of f */
}

/* The origin has no value for the key: nil to the waiters; with negative_ttl the caches get a
 * negative entry (the serialized null) that answers nil without a load until it expires. */
static void resolve_absent(struct flight *f)
{
    if (f->node->conf->negative_ttl_ms <= 0 || f->node->conf->serializer == CM_SER_RAW) {
        resolve(f, RES_NIL, NULL, NULL);
        return;
    }
    f->negative = true;
    resolve(f, RES_VALUE, cm_val_copy("null", 4), NULL);
}

/* A failed load: the waiters get the stale entry f met when it is within stale_if_error
 * (written nowhere), else the error. */
static void resolve_failure(struct flight *f, const char *reason)
{
    if (f->stale != NULL && f->stale_past_ms <= f->node->conf->stale_if_error_ms) {
        cm_val_unref(f->val);
        f->res = RES_VALUE;
        f->val = f->stale;
        f->stale = NULL;
        f->stale_answer = true;   /* also for GETs that join it while it ends */
        answer_waiters(f);
        flight_end(f);            /* nothing is written */
        return;
    }
    resolve(f, RES_ERROR, NULL, load_error(f, reason));
}

/* Fails f's load at once (shutdown, loader refusing, breaker open). */
static void fail_load(struct flight *f, const char *reason)
{
    f->node->stats.load_failure_count++;
    resolve_failure(f, reason);
}

/* f needs the origin (its chain missed, or it is a REFRESH). One load per key at a time: a load
 * in progress that started after f was created answers f's waiters too; an older one (f came
 * after a mutation that superseded it) is waited for. */
static void want_load(struct flight *f)
{
    struct cm_flights *fl = f->fl;
    struct keyent *ke = f->ke;
    struct cm_node *node = f->node;
    if (f->stale != NULL && !f->answered && f->stale_past_ms <= node->conf->grace_ms) {
        /* Within grace: every waiter gets the stale entry now, and later GETs join an answered
         * flight; the load goes on in the background and writes as usual (SPEC §12). */
        f->res = RES_VALUE;
        f->val = f->stale;
        f->stale = NULL;
        f->stale_answer = true;   /* until the load resolves */
        if (f->nwaiters > 0) {
            node->stats.refresh_count++;   /* it became a background load */
        }
        answer_waiters(f);
    }
    if (fl->closing) {
        fail_load(f, "shutting down");
        return;
    }
    if (node->loader.nsegs == 0) {
        /* No loader: the node is filled by SET only; a miss everywhere is nil. */
        resolve(f, RES_NIL, NULL, NULL);
        return;
    }
    struct flight *l = ke->loading;
    if (l != NULL) {
        if (l->load_seq > f->seq) {
            /* Its load began after f was asked for: f's waiters take its result. */
            for (size_t i = 0; i < f->nwaiters; i++) {
                struct cm_waiter *w = &f->waiters[i];
                add_waiter(l, w->req, w->slot, w->get);
                cm_req_unref(w->req);
            }
            f->nwaiters = 0;
            if (ke->joinable == f) {
                ke->joinable = l;
            }
            if (!f->superseded) {
                /* Nothing happened on the key since f was asked for, and l's load began after
                 * that: l's value is as new as f's would be, so it is written even if a mutation
                 * older than f superseded l. */
                l->superseded = false;
            }
            f->superseded = true;   /* it writes and publishes nothing itself */
            flight_end(f);
            return;
        }
        f->state = FL_LOAD_WAIT;
        TAILQ_INSERT_TAIL(&ke->load_wait, f, qlink);
        return;
    }
    if (ke->next_refresh == f) {
        ke->next_refresh = NULL;   /* later REFRESHes need a load that starts after them */
    }
    if (!breaker_allows(f)) {
        fail_load(f, "origin unavailable (breaker open)");
        return;
    }
    struct cm_params params;
    struct cm_buf url;
    cm_buf_init(&url);
    cm_tpl_match(&node->key, f->ckey, f->cklen, &params);
    cm_node_loader_url(node, &params, &url);
    cm_buf_append(&url, "", 1);
    f->state = FL_LOADING;
    f->load_seq = ++fl->seq;
    f->load_start_ns = cm_now_ns();
    ke->loading = f;
    int rc = fl->env.fetch(fl->env.fetch_arg, (size_t)(node - fl->env.nodes), cm_buf_start(&url),
                           node->conf->loader_socket, node->conf->loader_timeout_ms,
                           fl->env.max_value_size, on_load, f);
    cm_buf_deinit(&url);
    if (rc != CM_OK) {
        ke->refs++;
        load_over(f);
        if (f->trial) {
            breaker_of(fl, node)->trial_out = false;   /* not the origin's doing */
        }
        fail_load(f, "loader unavailable");
        ke->refs--;
        ke_run(fl, ke);
    }
}

/* ---- starting tasks ---- */

/* Supersedes every read and refresh that exists on the key now and has not begun writing
 * (SPEC §6.8). by_refresh: a load in progress stays joinable (see the top of the file). */
static void supersede(struct keyent *ke, bool by_refresh)
{
    struct flight *f;
    TAILQ_FOREACH(f, &ke->all, alink) {
        /* A REFRESH superseded by a later REFRESH still writes: its value is newer than what
         * the caches hold, the later one's (written after it) newer still, and should the later
         * one fail, a GET must not go back behind what the first one answered. */
        if ((f->kind == FL_READ || (f->kind == FL_REFRESH && !by_refresh)) &&
            f->state != FL_WRITING) {
            f->superseded = true;
        }
    }
    if (!(by_refresh && ke->joinable != NULL && ke->joinable == ke->loading)) {
        ke->joinable = NULL;
    }
    ke->next_refresh = NULL;
}

#define SKEY_SMALL 256

/* Builds key's storage key in small (SKEY_SMALL bytes) when it fits, else in a cm_malloc'd block
 * that the caller frees when the result is not small. Nearly every key fits: no allocation. */
static char *skey_build(struct cm_flights *fl, struct cm_node *node, const char *key,
                        size_t klen, char *small, size_t *sklen)
{
    *sklen = cm_node_storage_key_into(node, fl->env.prefix, key, klen, small, SKEY_SMALL);
    if (*sklen <= SKEY_SMALL) {
        return small;
    }
    char *skey = cm_malloc(*sklen);
    cm_node_storage_key_into(node, fl->env.prefix, key, klen, skey, *sklen);
    return skey;
}

/* The key entry of key's storage key, created when there is none. */
static struct keyent *ke_of(struct cm_flights *fl, struct cm_node *node, const char *key,
                            size_t klen)
{
    char small[SKEY_SMALL];
    size_t sklen;
    char *skey = skey_build(fl, node, key, klen, small, &sklen);
    struct keyent *ke = ke_get(fl, skey, sklen);
    if (skey != small) {
        cm_free(skey);
    }
    return ke;
}

static void start_background(struct cm_flights *fl, struct cm_node *node, const char *key,
                             size_t klen);

/* Looks key up in node's local caches, in order (a later one's hit backfills the earlier ones).
 * On a hit points *val at the stored bytes (valid until the next call into the storage). An
 * entry past its ttl answers only within grace, and starts one background load; so does a fresh
 * one older than refresh_after (SPEC §12). */
static bool local_lookup(struct cm_flights *fl, struct cm_node *node, const char *key,
                         size_t klen, const char **val, size_t *vlen, bool *negative)
{
    *negative = false;
    if (node->nlocal == 0) {
        return false;
    }
    const struct cm_conf_node *c = node->conf;
    char small[SKEY_SMALL];
    size_t sklen;
    char *skey = skey_build(fl, node, key, klen, small, &sklen);
    bool hit = false, background = false;
    for (size_t i = 0; i < node->nlocal && !hit; i++) {
        struct cm_node_cache *nc = &node->caches[node->local_idx[i]];
        int64_t written = 0;
        if (!cm_storage_lookup(nc->st, skey, sklen, val, vlen, &written)) {
            continue;
        }
        if (written > 0 && (nc->ttl_ms > 0 || c->refresh_after_ms > 0)) {
            int64_t now = wall_ms();
            int64_t past = past_ttl(nc->ttl_ms, written, now);
            if (past > c->grace_ms || (past >= 0 && node->nremote > 0)) {
                /* Too old to answer by itself (a failed load may still use it), or past its
                 * ttl with remote caches after it, one of which may hold a fresh entry: the
                 * flight reads them first and answers with it at the chain's end (SPEC §12). */
                continue;
            }
            if (past >= 0) {
                node->stats.stale_hit_count++;
                background = true;
            } else if (c->refresh_after_ms > 0 && now - written >= c->refresh_after_ms) {
                background = true;
            }
        }
        hit = true;
        node->stats.hit_count++;
        node->stats.local_hit_count++;
        if (is_negative(node, *val, *vlen)) {
            *negative = true;   /* a cached 404: nil, no load, no refresh */
            node->stats.negative_hit_count++;
            background = false;
        }
        for (size_t j = 0; j < i; j++) {
            struct cm_node_cache *prev = &node->caches[node->local_idx[j]];
            cm_storage_store(prev->st, skey, sklen, *val, *vlen, prev->ttl_ms, written);
        }
    }
    if (skey != small) {
        cm_free(skey);
    }
    if (background && node->loader.nsegs > 0) {
        start_background(fl, node, key, klen);   /* *val stays valid: no store happens */
    }
    return hit;
}

/* The youngest local entry of key that is past its ttl but still kept for stale answers (grace,
 * stale_if_error), for a flight to answer with at the chain's end or when its load fails; NULL
 * when none. */
static struct cm_val *local_stale(struct cm_flights *fl, struct cm_node *node, const char *key,
                                  size_t klen, int64_t *past_out)
{
    struct cm_val *best = NULL;
    if (node->nlocal == 0 || stale_span(node) <= 0) {
        return NULL;
    }
    char small[SKEY_SMALL];
    size_t sklen;
    char *skey = skey_build(fl, node, key, klen, small, &sklen);
    for (size_t i = 0; i < node->nlocal; i++) {
        struct cm_node_cache *nc = &node->caches[node->local_idx[i]];
        const char *v;
        size_t vlen;
        int64_t written = 0;
        if (!cm_storage_lookup(nc->st, skey, sklen, &v, &vlen, &written)) {
            continue;
        }
        int64_t past = past_ttl(nc->ttl_ms, written, wall_ms());
        if (past >= 0 && past <= stale_span(node) && (best == NULL || past < *past_out)) {
            cm_val_unref(best);
            best = cm_val_copy(v, vlen);
            *past_out = past;
        }
    }
    if (skey != small) {
        cm_free(skey);
    }
    return best;
}

/* One background load of key (SPEC §12): an ordinary read flight without waiters, unless the key
 * already has one to join or a load at the origin. */
static void start_background(struct cm_flights *fl, struct cm_node *node, const char *key,
                             size_t klen)
{
    struct keyent *ke = ke_of(fl, node, key, klen);
    if (ke->joinable != NULL || ke->loading != NULL) {
        ke_run(fl, ke);   /* frees the entry if it was made for nothing */
        return;
    }
    node->stats.refresh_count++;
    struct flight *f = flight_new(fl, ke, node, FL_READ, key, klen);
    ke->joinable = f;
    if (ke->writer != NULL || !TAILQ_EMPTY(&ke->queue)) {
        TAILQ_INSERT_TAIL(&ke->queue, f, qlink);
        return;
    }
    queue_read(f);
}

bool cm_flight_get_local(struct cm_flights *fl, struct cm_node *node, const char *key,
                         size_t klen, bool resp3, struct cm_buf *out)
{
    const char *val;
    size_t vlen;
    bool negative;
    if (!local_lookup(fl, node, key, klen, &val, &vlen, &negative)) {
        return false;
    }
    if (negative) {
        cm_resp_nil(out, resp3);
    } else {
        cm_resp_bulk(out, val, vlen);
    }
    return true;
}

void cm_flight_get(struct cm_flights *fl, struct cm_req *req, const struct cm_getkey *keys,
                   size_t n)
{
    /* The previous key's local hit, shared with the next slot when that asks for the same key
     * (MGET k k k ...: one copy of the value, not one per slot). */
    struct cm_val *last = NULL;
    const struct cm_getkey *last_key = NULL;
    cm_req_hold(req);   /* the last answer may complete req, whose client may then go */
    for (size_t k = 0; k < n; k++) {
        struct cm_node *node = keys[k].node;
        if (cm_req_over_budget(req)) {
            /* The reply cannot be sent (its client is gone, or it is past the output limit
             * already): no storage or loader work for the rest of it. */
            cm_req_answer_nil(req, keys[k].slot);
            continue;
        }
        if (last != NULL && last_key->node == node && last_key->klen == keys[k].klen &&
            memcmp(last_key->key, keys[k].key, keys[k].klen) == 0) {
            node->stats.hit_count++;
            node->stats.local_hit_count++;
            cm_req_answer_val(req, keys[k].slot, last);
            continue;
        }
        const char *lval;
        size_t lvlen;
        bool negative;
        if (!keys[k].local_checked && local_lookup(fl, node, keys[k].key, keys[k].klen, &lval,
                                                   &lvlen, &negative)) {
            if (negative) {
                cm_req_answer_nil(req, keys[k].slot);
                continue;
            }
            cm_val_unref(last);
            last = cm_val_copy(lval, lvlen);
            last_key = &keys[k];
            cm_req_answer_val(req, keys[k].slot, last);
            continue;
        }

        /* 2. join the key's flight, or start one */
        struct keyent *ke = ke_of(fl, node, keys[k].key, keys[k].klen);
        struct flight *f = ke->joinable;
        if (f != NULL) {
            node->stats.coalesced_count++;
            if (f->answered) {
                /* Writes in progress: the value is known, no storage is touched. */
                count_answer(f);
                answer(f, req, keys[k].slot);
            } else {
                add_waiter(f, req, keys[k].slot, true);
            }
            continue;
        }
        f = flight_new(fl, ke, node, FL_READ, keys[k].key, keys[k].klen);
        ke->joinable = f;
        add_waiter(f, req, keys[k].slot, true);
        f->stale = local_stale(fl, node, keys[k].key, keys[k].klen, &f->stale_past_ms);
        if (ke->writer != NULL || !TAILQ_EMPTY(&ke->queue)) {
            TAILQ_INSERT_TAIL(&ke->queue, f, qlink);   /* after earlier writes */
            continue;
        }
        queue_read(f);   /* 3. the remote reads of new flights are batched per storage */
    }
    cm_val_unref(last);
    cm_req_unref(req);
}

/* A SET or DEL on key: supersedes what exists, holds one part of req until its writes end. */
static struct flight *new_mutation(struct cm_flights *fl, struct cm_req *req,
                                   struct cm_node *node, enum fl_kind kind, const char *key,
                                   size_t klen)
{
    struct keyent *ke = ke_of(fl, node, key, klen);
    supersede(ke, false);
    struct flight *f = flight_new(fl, ke, node, kind, key, klen);
    f->owner = req;
    cm_req_hold(req);
    cm_req_expect(req, 1);
    return f;
}

/* Its writes start now when nobody writes and nothing waits, else in turn (ke_run). */
static void start_or_queue_mutation(struct flight *f)
{
    struct keyent *ke = f->ke;
    if (ke->writer == NULL && TAILQ_EMPTY(&ke->queue)) {
        ke->writer = f;
        start_mutation_writes(f);
        return;
    }
    TAILQ_INSERT_TAIL(&ke->queue, f, qlink);
}

void cm_flight_del(struct cm_flights *fl, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen)
{
    struct flight *f = new_mutation(fl, req, node, FL_DEL, key, klen);
    for (size_t i = 0; i < node->nlocal; i++) {
        cm_storage_remove(node->caches[node->local_idx[i]].st, f->ke->skey, f->ke->sklen);
    }
    start_or_queue_mutation(f);
}

void cm_flight_set(struct cm_flights *fl, struct cm_req *req, struct cm_node *node,
                   const char *key, size_t klen, const char *val, size_t vlen,
                   int64_t ttl_ms_override)
{
    struct flight *f = new_mutation(fl, req, node, FL_SET, key, klen);
    f->val = cm_val_copy(val, vlen);
    f->res = RES_VALUE;
    f->answered = true;
    f->ttl_override = ttl_ms_override;
    for (size_t i = 0; i < node->nlocal; i++) {
        write_cache(f, node->local_idx[i]);   /* at once: a GET right after sees it */
    }
    start_or_queue_mutation(f);
}

void cm_flight_refresh(struct cm_flights *fl, struct cm_req *req, size_t slot,
                       struct cm_node *node, const char *key, size_t klen)
{
    struct keyent *ke = ke_of(fl, node, key, klen);
    if (ke->next_refresh != NULL) {
        add_waiter(ke->next_refresh, req, slot, false);   /* one load for all of them */
        node->stats.coalesced_count++;
        return;
    }
    supersede(ke, true);
    struct flight *f = flight_new(fl, ke, node, FL_REFRESH, key, klen);
    add_waiter(f, req, slot, false);
    if (ke->joinable == NULL) {
        ke->joinable = f;
    }
    ke->next_refresh = f;
    f->state = FL_READING;
    want_load(f);
}
