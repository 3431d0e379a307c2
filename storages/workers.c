/* A fixed pool of threads for blocking drivers (sqlite, mongo-c), after memcached thread.c: jobs
 * go to the threads through a mutex+condvar queue; finished jobs come back through a completion
 * queue and an eventfd that wakes one persistent libevent read event on the loop. The loop only
 * ever holds the mutex to push or splice a list, so it never waits on a job. */
#include "storages/workers.h"
#include "daemon/alloc.h"
#include "daemon/log.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* One queued job: on the job queue, then on the completion queue. Owned by the pool. */
struct cm_job {
    cm_work_fn *work;
    cm_work_done_fn *done;
    void *arg;
    struct cm_job *next;
};

/* A FIFO of jobs (singly linked, with a tail for O(1) append). */
struct job_list {
    struct cm_job *head;
    struct cm_job *tail;
};

/* The pool. Owned by whoever created it (a storage); freed by cm_workers_free. */
struct cm_workers {
    struct event_base *base;
    char name[16]; /* thread name prefix (Linux allows 15 characters) */
    int nthreads;
    pthread_t *threads;        /* nthreads entries */
    pthread_mutex_t mu;        /* guards jobs, completed, stopping */
    pthread_cond_t cond;       /* signalled when jobs gets an entry or stopping is set */
    struct job_list jobs;      /* waiting for a thread */
    struct job_list completed; /* work done, waiting for done() on the loop */
    bool stopping;             /* threads exit once jobs is empty */
    int efd;                   /* eventfd: threads write 1 per completion, the loop reads */
    struct event *ev;          /* persistent read event on efd */
};

/* The index of the calling worker thread in its pool, -1 elsewhere. */
static __thread int self_index = -1;

/* Argument of one thread's start routine. */
struct thread_arg {
    struct cm_workers *w;
    int index;
};

static void list_push(struct job_list *l, struct cm_job *j)
{
    j->next = NULL;
    if (l->tail != NULL) {
        l->tail->next = j;
    } else {
        l->head = j;
    }
    l->tail = j;
}

static struct cm_job *list_pop(struct job_list *l)
{
    struct cm_job *j = l->head;
    if (j != NULL) {
        l->head = j->next;
        if (l->head == NULL) {
            l->tail = NULL;
        }
    }
    return j;
}

static void notify_loop(struct cm_workers *w)
{
    uint64_t one = 1;
    /* The counter cannot overflow in practice; EAGAIN would only mean it is already non-zero. */
    while (write(w->efd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

static void *thread_main(void *p)
{
    struct thread_arg ta = *(struct thread_arg *)p;
    struct cm_workers *w = ta.w;
    cm_free(p);
    self_index = ta.index;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->jobs.head == NULL && !w->stopping) {
            pthread_cond_wait(&w->cond, &w->mu);
        }
        struct cm_job *j = list_pop(&w->jobs);
        pthread_mutex_unlock(&w->mu);
        if (j == NULL) {
            return NULL; /* stopping and drained */
        }
        j->work(j->arg);
        pthread_mutex_lock(&w->mu);
        list_push(&w->completed, j);
        pthread_mutex_unlock(&w->mu);
        notify_loop(w);
    }
}

/* Runs every completion queued so far, in completion order. Loop thread only. */
static void run_completions(struct cm_workers *w)
{
    pthread_mutex_lock(&w->mu);
    struct cm_job *j = w->completed.head;
    w->completed.head = w->completed.tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (j != NULL) {
        struct cm_job *next = j->next;
        j->done(j->arg);
        cm_free(j);
        j = next;
    }
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    CM_UNUSED(what);
    /* Reset the counter first: a completion pushed after this read re-arms the event. */
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR) {
    }
    run_completions(arg);
}

struct cm_workers *cm_workers_new(struct event_base *base, int nthreads, const char *name)
{
    cm_assert(nthreads >= 1);
    struct cm_workers *w = cm_calloc(1, sizeof(*w));
    w->base = base;
    snprintf(w->name, sizeof(w->name), "%s", name != NULL ? name : "cm-worker");
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        cm_log(CM_LOG_ERR, "workers %s: eventfd: %s", w->name, strerror(errno));
        cm_free(w);
        return NULL;
    }
    w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_notify, w);
    if (w->ev == NULL || event_add(w->ev, NULL) != 0) {
        cm_log(CM_LOG_ERR, "workers %s: cannot add the notification event", w->name);
        if (w->ev != NULL) {
            event_free(w->ev);
        }
        close(w->efd);
        cm_free(w);
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->threads = cm_calloc((size_t)nthreads, sizeof(*w->threads));

    /* Signals belong to the loop thread (libevent's signal events): threads start with all
     * signals blocked and inherit that mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < nthreads; i++) {
        struct thread_arg *ta = cm_malloc(sizeof(*ta));
        ta->w = w;
        ta->index = i;
        int rc = pthread_create(&w->threads[i], NULL, thread_main, ta);
        if (rc != 0) {
            cm_log(CM_LOG_ERR, "workers %s: pthread_create: %s", w->name, strerror(rc));
            cm_free(ta);
            break;
        }
        char tname[32];
        snprintf(tname, sizeof(tname), "%.11s-%d", w->name, i % 1000);
        tname[15] = '\0';
        pthread_setname_np(w->threads[i], tname);
        w->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (w->nthreads == 0) {
        cm_workers_free(w);
        return NULL;
    }
    return w;
}

void cm_workers_submit(struct cm_workers *w, cm_work_fn *work, cm_work_done_fn *done, void *arg)
{
    struct cm_job *j = cm_malloc(sizeof(*j));
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->mu);
    list_push(&w->jobs, j);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void cm_workers_free(struct cm_workers *w)
{
    if (w == NULL) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++) {
        pthread_join(w->threads[i], NULL);
    }
    /* Threads are gone. A completion may still submit a job (e.g. a retry): run such jobs
     * here, on the caller's thread, until nothing is left, so every done() runs exactly once. */
    for (;;) {
        run_completions(w);
        struct cm_job *j = list_pop(&w->jobs);
        if (j == NULL) {
            break;
        }
        j->work(j->arg);
        list_push(&w->completed, j);
    }
    event_free(w->ev);
    close(w->efd);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    cm_free(w->threads);
    cm_free(w);
}

int cm_workers_self(void)
{
    return self_index;
}
