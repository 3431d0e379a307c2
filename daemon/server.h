/* The server: event loop, listeners, storages, nodes, loader, flights, connections, counters.
 * Everything hangs off one struct cm_server passed explicitly. */
#ifndef CM_DAEMON_SERVER_H
#define CM_DAEMON_SERVER_H

#include "daemon/common.h"
#include "daemon/stats.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;
struct event_base;
struct evconnlistener;
struct evhttp;
struct cm_conf;
struct cm_conn;
struct cm_flights;
struct cm_inval;
struct cm_loader;
struct cm_node;
struct cm_storage;

struct cm_listener {
    struct cm_server *srv;
    struct evconnlistener *lev;   /* owned */
    char *unix_path;              /* owned; unlinked at exit; NULL for TCP */
    char *addr;                   /* as configured */
};

struct cm_server {
    struct event_base *base;           /* owned */
    struct cm_conf *conf;              /* owned */
    struct cm_listener *listeners;     /* nlisteners, owned */
    size_t nlisteners;
    struct cm_storage **storages;      /* one per conf->storages entry, owned */
    size_t nstorages;
    struct cm_node *nodes;             /* one per conf->nodes entry, owned */
    size_t nnodes;
    struct cm_loader *loader;          /* owned */
    struct cm_flights *flights;        /* owned */
    struct cm_inval *inval;            /* cross-instance invalidation, NULL when unused; owned */
    TAILQ_HEAD(, cm_conn) conns;       /* open connections */
    TAILQ_HEAD(, cm_conn) to_free;     /* closed, freed after the current loop iteration */
    TAILQ_HEAD(, cm_conn) write_queue; /* replies completed by callbacks, written by write_ev */
    struct event *write_ev;            /* runs cm_conn_flush_queued after the pass's callbacks */
    size_t nclients;
    int max_clients;                   /* conf->max_clients, lowered to fit RLIMIT_NOFILE */
    int spare_fd;                      /* reserved descriptor: freed to turn clients away at EMFILE */
    struct event *accept_resume;       /* re-enables the listeners after an accept backoff */
    int64_t accept_log_ms;             /* last accept-failure log line (one per second) */
    uint64_t accept_failures;          /* accept failures since that line */
    int64_t reject_log_ms;             /* last max_clients rejection log line */
    uint64_t rejects_unlogged;         /* rejections since that line */
    uint64_t next_conn_id;
    struct cm_server_stats stats;
    int64_t start_ms;
    int64_t start_wall_us;
    struct event *cron;                /* 100 ms housekeeping timer */
    struct event *sig_term, *sig_int, *sig_hup;
    struct evhttp *metrics;            /* /metrics server or NULL */
    bool shutting_down;
    int64_t shutdown_deadline_ms;
    bool stop;                         /* leave the loop */
    bool closing;                      /* tearing down: flights start no new storage work */
};

/* Builds everything from conf (takes ownership of it): storages (remote ones connect in the
 * background), nodes, listeners. Returns CM_OK, or CM_ERR after logging why. */
int cm_server_init(struct cm_server *srv, struct cm_conf *conf) CM_MUSTCHECK;
/* Runs the loop until shutdown completes. Returns the process exit code. */
int cm_server_run(struct cm_server *srv);
void cm_server_deinit(struct cm_server *srv);
/* Starts a graceful shutdown (SIGTERM/SIGINT). */
void cm_server_shutdown(struct cm_server *srv);

#endif
