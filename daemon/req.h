/* One client request: its parsed arguments, its place in the connection's reply queue, and its
 * reply. req.c owns how a request completes: handlers and the flight engine only call the
 * functions below (they never touch pending/refs themselves). */
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
struct cm_val;

enum cm_req_state {
    CM_REQ_WAITING = 0,   /* queued, reply not complete (flights or storage ops pending) */
    CM_REQ_DONE,          /* reply complete, may be written once every earlier one is */
};

enum cm_req_shape {
    CM_REQ_SHAPE_NONE = 0,  /* the handler writes the whole reply and calls cm_req_done */
    CM_REQ_SHAPE_SINGLE,    /* GET: one answer is the whole reply */
    CM_REQ_SHAPE_ARRAY,     /* MGET/REFRESH: one answer per slot, an array once all are in */
    CM_REQ_SHAPE_INT,       /* DEL: parts, then the integer intval */
    CM_REQ_SHAPE_OK,        /* SET: parts, then +OK */
};

/* One element of an array reply: an encoded element, or a shared value (a bulk). */
struct cm_slot {
    char *data;          /* encoded RESP element, owned; NULL when val is set or not answered */
    size_t len;
    struct cm_val *val;  /* a reference, or NULL */
};

/* Owned by conn->reqs until its reply is written, or by its holders once orphaned
 * (conn == NULL); freed when both are over. */
struct cm_req {
    TAILQ_ENTRY(cm_req) link;      /* conn->reqs */
    struct cm_conn *conn;          /* NULL once the client is gone (orphaned) */
    struct cm_server *srv;
    struct cm_argv *argv;          /* owned */
    enum cm_req_state state;
    enum cm_req_shape shape;
    bool resp3;                    /* encode the reply in RESP3 */
    struct cm_buf reply;           /* the encoded reply (or its start), owned */
    struct cm_val *val;            /* SINGLE answered by reference: written after reply */
    struct cm_slot *slots;         /* ARRAY: nslots elements, owned */
    size_t nslots;
    size_t pending;                /* answers or parts still outstanding */
    int refs;                      /* flights/ops holding this request */
    int64_t intval;                /* DEL: keys matched */
    size_t out_len;                /* bytes this reply adds to the output once DONE */
    size_t answered_bytes;         /* ARRAY: bytes of the slots answered so far */
    bool oversized;                /* ARRAY: past the output limit: the reply is an error */
};

struct cm_req *cm_req_new(struct cm_conn *c, struct cm_argv *argv);
/* Where a handler that completes at once should encode its reply: straight into the
 * connection's output when every earlier request has been answered, else req->reply. */
struct cm_buf *cm_req_out(struct cm_req *req);
/* Marks the reply complete and lets the connection write it (if the client is still there). */
void cm_req_done(struct cm_req *req);

/* Shapes: set by the handler before any answer. SINGLE and ARRAY expect one answer per slot
 * (1 for SINGLE); INT and OK expect the parts announced with cm_req_expect. */
void cm_req_setup(struct cm_req *req, enum cm_req_shape shape, size_t nslots);
/* n more parts outstanding (INT/OK shapes, and a guard while a handler submits them). */
void cm_req_expect(struct cm_req *req, size_t n);
/* One part finished; completes the request at 0. */
void cm_req_part_done(struct cm_req *req);

/* Answers slot i (0 for SINGLE). Each completes the request when it was the last answer. */
void cm_req_answer_val(struct cm_req *req, size_t i, struct cm_val *v);   /* takes its own ref */
void cm_req_answer_bytes(struct cm_req *req, size_t i, const char *p, size_t len);  /* copies */
void cm_req_answer_nil(struct cm_req *req, size_t i);
void cm_req_answer_error(struct cm_req *req, size_t i, const char *msg);  /* "ERR ..." */
/* Where to encode slot i's element directly (a local hit, whose bytes are only borrowed):
 * the output for SINGLE, else tmp (initialised). Hand it to cm_req_answer_encoded, or deinit
 * tmp when nothing was written. */
struct cm_buf *cm_req_answer_buf(struct cm_req *req, struct cm_buf *tmp);
void cm_req_answer_encoded(struct cm_req *req, size_t i, struct cm_buf *tmp);

/* True when the rest of req's answers would be wasted: its client is gone, or the slots
 * answered so far already pass what the client may still be sent (the reply becomes an error,
 * complete_array). The engine then answers the remaining keys with nil, without any work. */
bool cm_req_over_budget(struct cm_req *req);

/* A flight or op holds req: it stays allocated until the matching cm_req_unref. */
void cm_req_hold(struct cm_req *req);
/* Drops one reference; frees an orphaned request at 0. */
void cm_req_unref(struct cm_req *req);
/* The connection lets go of req (written, or the client is gone): frees it if nothing holds it,
 * else orphans it. */
void cm_req_release(struct cm_req *req);
/* Appends what DONE req adds to the output (reply bytes, then its shared value). */
void cm_req_write_to(struct cm_req *req, struct cm_buf *out);

#endif
