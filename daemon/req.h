/* One client request: its parsed arguments, its place in the connection's reply queue, and its
 * reply. Shared by conn.c (queue and writing), cmd.c (handlers) and flight.c (waiters). */
#ifndef CM_DAEMON_REQ_H
#define CM_DAEMON_REQ_H

#include "daemon/buf.h"
#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct cm_argv;
struct cm_conn;
struct cm_req;
struct cm_server;

enum cm_req_state {
    CM_REQ_WAITING = 0,   /* queued, reply not complete (flights or storage ops pending) */
    CM_REQ_DONE,          /* reply complete, may be written once every earlier one is */
};

/* A reply slot of a multi-key request (MGET, REFRESH): one encoded element. */
struct cm_slot {
    char *data;    /* encoded RESP element, owned; NULL until filled */
    size_t len;
};

typedef void cm_req_complete_fn(struct cm_req *req);

/* Owned by conn->reqs until its reply is written, or by its pending operations once orphaned
 * (conn == NULL); freed by cm_req_release when both are over. */
struct cm_req {
    TAILQ_ENTRY(cm_req) link;      /* conn->reqs */
    struct cm_conn *conn;          /* NULL once the client is gone (orphaned) */
    struct cm_server *srv;
    struct cm_argv *argv;          /* owned */
    enum cm_req_state state;
    bool resp3;                    /* encode the reply in RESP3 */
    struct cm_buf reply;           /* the encoded reply, owned */
    struct cm_slot *slots;         /* multi-key replies: nslots elements, owned */
    size_t nslots;                 /* 0 for GET: its one element is the whole reply */
    size_t pending;                /* slots or operations still outstanding */
    int refs;                      /* flights/ops holding this request */
    int64_t intval;                /* DEL: keys matched */
    cm_req_complete_fn *complete;  /* builds the reply when pending reaches 0 */
};

struct cm_req *cm_req_new(struct cm_conn *c, struct cm_argv *argv);
/* Where a handler that completes at once should encode its reply: straight into the
 * connection's output when every earlier request has been answered, else req->reply. */
struct cm_buf *cm_req_out(struct cm_req *req);
/* Marks the reply complete and lets the connection write it (if the client is still there). */
void cm_req_done(struct cm_req *req);
/* Gives req n empty reply slots, filled by cm_req_fill_slot; complete builds the reply from
 * them once the last one is filled. */
void cm_req_setup_slots(struct cm_req *req, size_t n, cm_req_complete_fn *fn);
/* Fills slot i with an encoded element (takes ownership of data) and completes the request when
 * it was the last one. */
void cm_req_fill_slot(struct cm_req *req, size_t i, char *data, size_t len);
/* Where to encode the element of one of req's keys: straight into the request's output when it
 * has no slots (GET: its one element is the whole reply), else into tmp. tmp is initialised
 * either way; hand it to cm_req_slot_encoded once the element is written, or deinit it. */
struct cm_buf *cm_req_slot_buf(struct cm_req *req, struct cm_buf *tmp);
/* The element of slot i is in the buffer cm_req_slot_buf gave: files it, and completes the
 * request when it was the last one. */
void cm_req_slot_encoded(struct cm_req *req, size_t i, struct cm_buf *tmp);
/* One outstanding part finished (non-slot commands: DEL, SET); completes the request at 0. */
void cm_req_part_done(struct cm_req *req);
/* Drops one reference held by a flight/op; frees an orphaned request at 0. */
void cm_req_unref(struct cm_req *req);
/* Frees the request if nothing refers to it anymore, else orphans it. */
void cm_req_release(struct cm_req *req);

#endif
