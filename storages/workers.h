/* A small pool of threads for drivers without an async API (sqlite, mongo-c). Jobs run on a
 * worker thread; their completion runs back on the event-loop thread (eventfd notification). */
#ifndef CM_STORAGES_WORKERS_H
#define CM_STORAGES_WORKERS_H

#include "daemon/common.h"

#include <stddef.h>

struct event_base;
struct cm_workers;

/* Runs on a worker thread. Must not touch loop-owned state. */
typedef void cm_work_fn(void *arg);
/* Runs on the loop thread after work finished. */
typedef void cm_work_done_fn(void *arg);

/* nthreads >= 1. Returns NULL on failure. */
struct cm_workers *cm_workers_new(struct event_base *base, int nthreads, const char *name);
/* Stops threads after draining queued jobs; runs remaining completions; frees. NULL is a no-op. */
void cm_workers_free(struct cm_workers *w);
/* Queues a job. work(arg) runs on some thread, then done(arg) on the loop. Never blocks the loop. */
void cm_workers_submit(struct cm_workers *w, cm_work_fn *work, cm_work_done_fn *done, void *arg);
/* On a worker thread: its index in its pool (0..nthreads-1), for per-thread driver state such as
 * one connection per thread. -1 on any other thread (cm_workers_free may run leftover jobs on the
 * caller's thread). */
int cm_workers_self(void);

#endif
