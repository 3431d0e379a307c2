/* The one asynchronous interface every storage backend implements, and the operation object
 * that travels through it. Storages know operations, never client connections. */
#ifndef CM_STORAGES_STORAGE_H
#define CM_STORAGES_STORAGE_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct event_base;
struct cm_buf;
struct cm_conf_storage;
struct cm_storage;
struct cm_st_op;

enum cm_st_op_kind {
    CM_ST_GET,   /* read every item's key */
    CM_ST_SET,   /* write every item's key = value, with op->ttl_ms */
    CM_ST_DEL,   /* delete every item's key */
};

enum cm_st_result {
    CM_ST_MISS = 0,   /* GET: no live value (absent or expired) */
    CM_ST_HIT,        /* GET: val/vlen hold the stored bytes */
};

/* Called exactly once per submitted op, on the event-loop thread, never from inside submit.
 * The callee may steal item vals (set item->val = NULL). It must not free the op. */
typedef void cm_st_done_fn(struct cm_st_op *op, void *arg);

/* One key of an operation. */
struct cm_st_item {
    char *key;            /* owned by the op (copied by cm_st_op_set_key), NUL-terminated */
    bool key_in_block;    /* framework-private: key lives in the op's key block, not freed alone */
    size_t klen;
    const char *wval;     /* SET: value to write, borrowed; the submitter keeps it alive until done */
    size_t wlen;
    int result;           /* GET: enum cm_st_result, written by the backend */
    char *val;            /* GET hit: stored bytes, cm_malloc'd by the backend, owned by the op
                           * (done() may take them and leave NULL) */
    size_t vlen;
    int64_t written_ms;   /* GET hit: wall-clock ms (Unix epoch) when the value was written
                           * (Cacheme's updated_at), 0 when the backend cannot tell (wrapped
                           * Redis values carry it inside the wrapper: the reader decodes it).
                           * SPEC §12: the flight judges fresh/stale from it. */
};

/* One storage operation over one or more keys. Created by the submitter with cm_st_op_new,
 * owned by the storage layer from cm_storage_submit until it frees it after done() has run
 * and the backend has called cm_st_op_finish. */
struct cm_st_op {
    enum cm_st_op_kind kind;
    struct cm_storage *st;      /* set by cm_storage_submit */
    struct cm_st_item *items;   /* nitems entries, owned */
    size_t nitems;
    int64_t ttl_ms;             /* SET: > 0 expires after ttl_ms; -1 = never expires.
                                 * GET: how long this cache keeps what it is given (ttl + grace),
                                 * for backends that derive written_ms from a remaining TTL */
    bool want_age;              /* GET: also fill written_ms where the stored form has no write
                                 * time (Redis raw values: one PTTL per key in the same round
                                 * trip, with ttl_ms > 0); costs a command per key, so the daemon
                                 * sets it only for nodes that use the age (grace, refresh_after) */
    int status;                 /* written by the backend: CM_OK, CM_ERR; CM_ETIMEDOUT by the timer */
    char err[160];              /* backend's reason when status != CM_OK (logged, not sent to clients) */
    /* framework-private below */
    cm_st_done_fn *done;
    void *arg;
    struct event *timer;        /* per-op timeout (storage conf timeout) */
    int64_t start_ns;
    bool timed_out;             /* done() already ran because the timer fired */
    char *kfree;                /* unused part of the key block allocated with the items */
    size_t kleft;
    void *bpriv;                /* backend-private, free for the backend to use */
    struct cm_st_op *bnext;     /* backend-private list link, free for the backend to use */
};

/* Per-storage counters, read by STATS/INFO/metrics. Updated by storage.c only. */
struct cm_st_stats {
    uint64_t reads;       /* keys read */
    uint64_t hits;        /* keys found */
    uint64_t writes;      /* keys written */
    uint64_t deletes;     /* keys deleted */
    uint64_t errors;      /* ops that ended with CM_ERR, and values that could not be decoded */
    uint64_t timeouts;    /* ops whose timer fired */
    uint64_t ops;         /* ops completed */
    uint64_t latency_ns;  /* sum of op latencies */
    uint64_t rejected;    /* values refused by the backend (e.g. larger than the column) */
};

/* A backend. One const instance per backend (cm_st_redis_ops, ...). */
struct cm_storage_ops {
    const char *name;        /* "lru", "tlfu", "redis", "postgresql", "mysql", "sqlite", "mongodb" */
    bool local;              /* in-process: uses lookup/store/remove, synchronously */
    bool wrapped;            /* holds Cacheme's {"value","updated_at"} wrapper (redis), else bare V */

    /* Sets up state in st->priv. Must not block: remote backends connect in the background and
     * treat a storage that is down as a miss. Returns CM_OK, or CM_ERR with a reason in err. */
    int (*open)(struct cm_storage *st, char *err, size_t errsz);
    /* Accepts op (kind GET/SET/DEL), fills results, calls cm_st_op_finish(op) exactly once,
     * never before submit returns (use cm_st_op_finish_later). Remote backends only. */
    void (*submit)(struct cm_storage *st, struct cm_st_op *op);
    /* Finishes every op it still holds with CM_ERR (cm_st_op_finish), frees st->priv. */
    void (*close)(struct cm_storage *st);

    /* Local backends only, synchronous; called through cm_storage_lookup/_store/_remove, which
     * keep the counters. lookup returns true on a live hit and points *val at the stored bytes,
     * valid until the next call into this storage; *written_ms gets the write time given to
     * store (wall-clock ms, 0 = unknown). */
    bool (*lookup)(struct cm_storage *st, const char *key, size_t klen, const char **val,
                   size_t *vlen, int64_t *written_ms);
    /* ttl_ms > 0 expires after ttl_ms, -1 never. written_ms: when the value was written at its
     * source (a backfill passes the age it was found with), 0 = now. Copies key and value. */
    void (*store)(struct cm_storage *st, const char *key, size_t klen, const char *val,
                  size_t vlen, int64_t ttl_ms, int64_t written_ms);
    /* Returns true when the key was present. */
    bool (*remove)(struct cm_storage *st, const char *key, size_t klen);
    /* Optional: appends "name:value\r\n" lines for INFO (entries, memory, ...). */
    void (*info)(struct cm_storage *st, struct cm_buf *out);
};

/* A configured storage instance ([storage NAME]). Owned by the server. */
struct cm_storage {
    const struct cm_storage_ops *ops;
    const struct cm_conf_storage *conf;   /* borrowed from the server's config */
    const char *name;                     /* section name, borrowed from conf */
    size_t idx;                           /* position in the server's storage table */
    struct event_base *base;
    struct cm_st_stats stats;
    void *priv;                           /* backend state */
    int64_t warn_ms;                      /* storage.c: last failure logged (rate limit) */
    uint64_t warn_suppressed;             /* storage.c: failures not logged since */
    bool closed;                          /* storage.c: ops->close has run */
};

/* Looks up a backend by its conf type; NULL when unknown. */
const struct cm_storage_ops *cm_storage_ops_for(int conf_type);

/* Creates and opens a storage for conf on base. Returns NULL (reason in err) on failure. */
struct cm_storage *cm_storage_new(const struct cm_conf_storage *conf, struct event_base *base,
                                  char *err, size_t errsz);
/* Closes: every pending op finishes with CM_ERR, the backend lets go of its state. The storage
 * stays valid (and refuses nothing: callers submit no more) until cm_storage_free. */
void cm_storage_close(struct cm_storage *st);
/* Closes (unless closed) and frees. NULL is a no-op. */
void cm_storage_free(struct cm_storage *st);

/* Allocates an op with nitems zeroed items. */
struct cm_st_op *cm_st_op_new(enum cm_st_op_kind kind, size_t nitems);
/* The same, with room for key_bytes of keys (each key takes klen + 1) in the items' allocation,
 * so that cm_st_op_set_key allocates nothing while they fit. */
struct cm_st_op *cm_st_op_new_keys(enum cm_st_op_kind kind, size_t nitems, size_t key_bytes);
/* Copies key into item i. */
void cm_st_op_set_key(struct cm_st_op *op, size_t i, const char *key, size_t klen);
/* Frees an op that was never submitted. */
void cm_st_op_free(struct cm_st_op *op);

/* Local storages, synchronously, with their counters (reads, hits, writes, deletes). */
bool cm_storage_lookup(struct cm_storage *st, const char *key, size_t klen, const char **val,
                       size_t *vlen, int64_t *written_ms);
void cm_storage_store(struct cm_storage *st, const char *key, size_t klen, const char *val,
                      size_t vlen, int64_t ttl_ms, int64_t written_ms);
bool cm_storage_remove(struct cm_storage *st, const char *key, size_t klen);

/* Submits op to a remote storage: arms the per-op timeout, then calls st->ops->submit.
 * done(op, arg) runs exactly once: when the backend finishes, or when the timer fires
 * (status CM_ETIMEDOUT, every GET item a miss), whichever is first. Takes ownership of op. */
void cm_storage_submit(struct cm_storage *st, struct cm_st_op *op, cm_st_done_fn *done, void *arg);

/* Backend side: the backend is done with op (results and status filled in). Exactly once. */
void cm_st_op_finish(struct cm_st_op *op);
/* Backend side: same, deferred to the next loop iteration (for answers known at once). */
void cm_st_op_finish_later(struct cm_st_op *op);
/* Backend side: fills op->err and sets status CM_ERR. */
void cm_st_op_fail(struct cm_st_op *op, const char *fmt, ...) CM_PRINTF(2, 3);
/* Reader side: a value st returned (counted as a hit) could not be decoded: it counts as an
 * error instead. */
void cm_storage_unreadable(struct cm_storage *st);

/* Backends, one per file in storages/. */
extern const struct cm_storage_ops cm_st_lru_ops;
extern const struct cm_storage_ops cm_st_tlfu_ops;
extern const struct cm_storage_ops cm_st_redis_ops;
extern const struct cm_storage_ops cm_st_pg_ops;
extern const struct cm_storage_ops cm_st_mysql_ops;
extern const struct cm_storage_ops cm_st_sqlite_ops;
extern const struct cm_storage_ops cm_st_mongo_ops;

#endif
