/* Worker pool: every job's work runs on a pool thread, every completion exactly once on the
 * loop thread, and the loop keeps running while jobs block. */
#include "daemon/alloc.h"
#include "storages/workers.h"
#include "tests/unit/st_harness.h"

#include <check.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define NJOBS 1000

/* Shared state of one test run; done counters are only touched on the loop thread. */
struct run {
    struct event_base *base;
    pthread_t loop_thread;
    atomic_int worked; /* work() calls */
    int done_total;    /* done() calls */
    int done_on_loop;  /* done() calls that ran on the loop thread */
    int bad_index;     /* work() calls where cm_workers_self was out of range */
    int nthreads;
    int *done_count; /* per job */
    int *work_count; /* per job, written by workers (distinct slots) */
};

/* One job's argument. */
struct job {
    struct run *r;
    int id;
    int usleep_us;
    pthread_t worker; /* who ran work() */
};

static void job_work(void *arg)
{
    struct job *j = arg;
    int idx = cm_workers_self();
    if (idx < 0 || idx >= j->r->nthreads) {
        __atomic_add_fetch(&j->r->bad_index, 1, __ATOMIC_RELAXED);
    }
    j->worker = pthread_self();
    if (j->usleep_us > 0) {
        usleep((useconds_t)j->usleep_us);
    }
    j->r->work_count[j->id]++;
    atomic_fetch_add(&j->r->worked, 1);
}

static void job_done(void *arg)
{
    struct job *j = arg;
    struct run *r = j->r;
    r->done_total++;
    r->done_count[j->id]++;
    if (pthread_equal(pthread_self(), r->loop_thread)) {
        r->done_on_loop++;
    }
    /* work ran on a pool thread, never the loop */
    ck_assert(!pthread_equal(j->worker, r->loop_thread));
    if (r->done_total == NJOBS) {
        event_base_loopbreak(r->base);
    }
}

static void run_init(struct run *r, int nthreads)
{
    r->base = event_base_new();
    r->loop_thread = pthread_self();
    atomic_init(&r->worked, 0);
    r->done_total = r->done_on_loop = r->bad_index = 0;
    r->nthreads = nthreads;
    r->done_count = cm_calloc(NJOBS, sizeof(int));
    r->work_count = cm_calloc(NJOBS, sizeof(int));
}

static void run_deinit(struct run *r)
{
    cm_free(r->done_count);
    cm_free(r->work_count);
    event_base_free(r->base);
}

static void on_safety(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

START_TEST(test_thousand_jobs_complete_once_on_loop)
{
    struct run r;
    run_init(&r, 4);
    struct cm_workers *w = cm_workers_new(r.base, 4, "t-work");
    ck_assert_ptr_nonnull(w);
    struct job *jobs = cm_calloc(NJOBS, sizeof(*jobs));
    for (int i = 0; i < NJOBS; i++) {
        jobs[i] = (struct job){.r = &r, .id = i, .usleep_us = i % 50 == 0 ? 200 : 0};
        cm_workers_submit(w, job_work, job_done, &jobs[i]);
    }
    ck_assert_int_eq(cm_workers_self(), -1);
    struct event *safety = evtimer_new(r.base, on_safety, r.base);
    struct timeval tv = {10, 0};
    evtimer_add(safety, &tv);
    event_base_dispatch(r.base);
    event_free(safety);
    ck_assert_int_eq(r.done_total, NJOBS);
    ck_assert_int_eq(r.done_on_loop, NJOBS);
    ck_assert_int_eq(atomic_load(&r.worked), NJOBS);
    ck_assert_int_eq(r.bad_index, 0);
    for (int i = 0; i < NJOBS; i++) {
        ck_assert_int_eq(r.done_count[i], 1);
        ck_assert_int_eq(r.work_count[i], 1);
    }
    cm_workers_free(w);
    ck_assert_int_eq(r.done_total, NJOBS);
    cm_free(jobs);
    run_deinit(&r);
}
END_TEST

/* Jobs still queued at free time are run and completed, each exactly once. */
START_TEST(test_free_drains_and_completes)
{
    struct run r;
    run_init(&r, 2);
    struct cm_workers *w = cm_workers_new(r.base, 2, "t-drain");
    ck_assert_ptr_nonnull(w);
    struct job *jobs = cm_calloc(NJOBS, sizeof(*jobs));
    for (int i = 0; i < 100; i++) {
        jobs[i] = (struct job){.r = &r, .id = i, .usleep_us = 1000};
        cm_workers_submit(w, job_work, job_done, &jobs[i]);
    }
    /* No loop iteration at all: free must still run every completion, on this thread. */
    cm_workers_free(w);
    ck_assert_int_eq(r.done_total, 100);
    ck_assert_int_eq(r.done_on_loop, 100);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(r.done_count[i], 1);
    }
    cm_free(jobs);
    run_deinit(&r);
}
END_TEST

/* A 10 ms timer keeps firing while jobs sleep 300 ms each on every thread. */
static void slow_work(void *arg)
{
    (void)arg;
    usleep(300 * 1000);
}

static int slow_pending;

static void slow_done(void *arg)
{
    if (--slow_pending == 0) {
        event_base_loopbreak(arg);
    }
}

START_TEST(test_loop_not_blocked_by_jobs)
{
    struct event_base *base = event_base_new();
    struct cm_workers *w = cm_workers_new(base, 2, "t-slow");
    struct h_ticker t;
    h_ticker_start(&t, base);
    slow_pending = 4;
    for (int i = 0; i < 4; i++) {
        cm_workers_submit(w, slow_work, slow_done, base);
    }
    double t0 = h_now_ms();
    event_base_dispatch(base);
    double ms = h_now_ms() - t0;
    /* 4 jobs of 300 ms on 2 threads: about 600 ms, during which the loop never stalls */
    ck_assert_double_ge(ms, 550);
    ck_assert_double_lt(ms, 2000);
    ck_assert_int_ge(t.ticks, 40);
    ck_assert_double_lt(t.max_gap_ms, 100);
    h_ticker_stop(&t);
    cm_workers_free(w);
    event_base_free(base);
}
END_TEST

static Suite *workers_suite(void)
{
    Suite *s = suite_create("workers");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_thousand_jobs_complete_once_on_loop);
    tcase_add_test(tc, test_free_drains_and_completes);
    tcase_add_test(tc, test_loop_not_blocked_by_jobs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(workers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
