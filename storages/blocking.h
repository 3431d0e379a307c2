/* Plumbing shared by the storages whose driver blocks (sqlite, mongo): one job per storage op
 * carries copies of what the worker thread needs and receives its results, so the worker never
 * writes into the op, which the loop may time out (and its submitter release) at any moment. */
#ifndef CM_STORAGES_BLOCKING_H
#define CM_STORAGES_BLOCKING_H

#include "daemon/common.h"
#include "storages/storage.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One key's result, written by the worker. */
struct cm_bres {
    bool hit;
    char *val; /* cm_malloc'd copy of the stored bytes on a hit */
    size_t vlen;
    int64_t written_ms; /* the value's write time (updated_at), 0 = unknown */
};

/* One op on its way through a worker. Created on the loop by cm_bjob_new, handed to the
 * worker, then finished and freed on the loop by cm_bjob_complete. */
struct cm_bjob {
    struct cm_st_op *op; /* the worker reads only kind, nitems and the keys (stable until
                          * cm_st_op_finish; the timer never touches them) */
    void *backend;       /* the storage's private state, borrowed */
    char **wval;         /* SET: copies of the values (the submitter's may go away on timeout) */
    size_t *wlen;
    int64_t expire_us;   /* SET: wall-clock expiry in microseconds, -1 = never (also for a ttl
                          * past CM_ST_EXPIRE_MAX_MS, storages/st_keys.h) */
    int64_t now_us;      /* wall clock at submit: GET treats expire <= now_us as a miss */
    struct cm_bres *res; /* nitems entries */
    size_t *order;       /* item indexes sorted by key, built on first cm_bjob_hit */
    int status;          /* CM_OK or CM_ERR */
    char err[160];
};

/* Creates the job for op (loop thread): copies SET values, computes expiry from op->ttl_ms. */
struct cm_bjob *cm_bjob_new(struct cm_st_op *op, void *backend);
/* Worker side: every item whose key is key[0..klen) becomes a hit with a copy of val, written at
 * wall-clock written_ms (0 = unknown). */
void cm_bjob_hit(struct cm_bjob *j, const char *key, size_t klen, const void *val, size_t vlen,
                 int64_t written_ms);
/* Worker side: sets status CM_ERR with a reason (the first reason wins). */
void cm_bjob_fail(struct cm_bjob *j, const char *fmt, ...) CM_PRINTF(2, 3);
/* A cm_work_done_fn: copies the results into the op (unless its timer already fired),
 * finishes the op and frees the job. Loop thread. */
void cm_bjob_complete(void *arg);

/* "2026-11-25 01:22:56.123456+00:00" (also 'T' as separator, no fraction, 1-6 fraction digits,
 * "Z", "+HH:MM"/"-HH:MM" or no offset = UTC) -> microseconds since the epoch. CM_ERR when
 * malformed. */
int cm_parse_iso8601_us(const char *s, size_t len, int64_t *out) CM_MUSTCHECK;

#endif
