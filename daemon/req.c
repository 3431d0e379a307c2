/* Requests and the reply queue.
 *
 *   conn->reqs (arrival order)          replies leave from the head only
 *   +------+   +---------+   +------+
 *   | DONE |-->| WAITING |-->| DONE |   <- C finished before B: it waits for B
 *   +------+   +---------+   +------+
 *      |
 *      v written to conn->wbuf, then released
 *
 * Every way a request completes is here: a handler picks a shape (cm_req_setup), then answers
 * (flights, local hits) or parts (storage writes of DEL/SET) arrive in any order, and the last
 * one builds the reply. A value answered by reference (cm_req_answer_val) is copied into the
 * output only when the reply is written, so many waiters of one flight share one value.
 *
 * A request whose client goes away while flights still hold it is orphaned (conn = NULL) and
 * freed by the last cm_req_unref.
 */
#include "daemon/req.h"
#include "daemon/alloc.h"
#include "daemon/conn.h"
#include "daemon/resp.h"
#include "daemon/val.h"

#include <string.h>

struct cm_req *cm_req_new(struct cm_conn *c, struct cm_argv *argv)
{
    struct cm_req *req = cm_calloc(1, sizeof(*req));
    req->conn = c;
    req->srv = c->srv;
    req->argv = argv;
    req->resp3 = c->resp3;
    cm_buf_init(&req->reply);
    return req;
}

static void req_free(struct cm_req *req)
{
    for (size_t i = 0; i < req->nslots; i++) {
        cm_free(req->slots[i].data);
        cm_val_unref(req->slots[i].val);
    }
    cm_free(req->slots);
    cm_val_unref(req->val);
    cm_buf_deinit(&req->reply);
    cm_argv_free(req->argv);
    cm_free(req);
}

static bool at_head(const struct cm_req *req)
{
    struct cm_conn *c = req->conn;
    return c != NULL && c->state == CM_CONN_ACTIVE && TAILQ_FIRST(&c->reqs) == req;
}

struct cm_buf *cm_req_out(struct cm_req *req)
{
    struct cm_conn *c = req->conn;
    return at_head(req) ? &c->wbuf : &req->reply;
}

/* Bytes of a bulk header for a value of len bytes ("$" len "\r\n" ... "\r\n"). */
#define BULK_OVERHEAD 24

void cm_req_done(struct cm_req *req)
{
    cm_assert(req->state == CM_REQ_WAITING);
    req->state = CM_REQ_DONE;
    req->out_len = cm_buf_used(&req->reply) + (req->val != NULL ? req->val->len + BULK_OVERHEAD : 0);
    if (req->conn != NULL) {
        cm_conn_reply_ready(req->conn, req);
    }
}

void cm_req_write_to(struct cm_req *req, struct cm_buf *out)
{
    cm_assert(req->state == CM_REQ_DONE);
    cm_buf_append(out, cm_buf_start(&req->reply), cm_buf_used(&req->reply));
    if (req->val != NULL) {
        cm_resp_bulk(out, req->val->data, req->val->len);
    }
}

/* The array of an MGET/REFRESH, once every slot is answered. Built straight into the output when
 * every earlier reply is already there. A reply larger than what the client may still be sent is
 * not built: the client gets an error instead and is disconnected after it (its output limit,
 * SPEC §10), so that one MGET of 300 copies of a 4 MB key cannot make us allocate 1.2 GB. */
static void complete_array(struct cm_req *req)
{
    size_t total = 16;
    for (size_t i = 0; i < req->nslots; i++) {
        total += req->slots[i].val != NULL ? req->slots[i].val->len + BULK_OVERHEAD
                                           : req->slots[i].len;
    }
    if (req->conn != NULL && (req->oversized || total > cm_conn_output_room(req->conn))) {
        cm_resp_errorf(&req->reply, "ERR reply of %zu bytes exceeds the client output limit",
                       total);
        cm_conn_close_after(req->conn, req);
        return;
    }
    struct cm_buf *out = cm_req_out(req);
    cm_buf_reserve(out, total);
    cm_resp_array(out, req->nslots);
    for (size_t i = 0; i < req->nslots; i++) {
        struct cm_slot *s = &req->slots[i];
        if (s->val != NULL) {
            cm_resp_bulk(out, s->val->data, s->val->len);
        } else {
            cm_buf_append(out, s->data, s->len);
        }
    }
}

static void complete(struct cm_req *req)
{
    switch (req->shape) {
    case CM_REQ_SHAPE_ARRAY: complete_array(req); break;
    case CM_REQ_SHAPE_INT: cm_resp_int(cm_req_out(req), req->intval); break;
    case CM_REQ_SHAPE_OK: cm_resp_status(cm_req_out(req), "OK"); break;
    case CM_REQ_SHAPE_SINGLE:
    case CM_REQ_SHAPE_NONE: break;
    }
    cm_req_done(req);
}

void cm_req_setup(struct cm_req *req, enum cm_req_shape shape, size_t nslots)
{
    cm_assert(req->shape == CM_REQ_SHAPE_NONE && req->pending == 0);
    req->shape = shape;
    switch (shape) {
    case CM_REQ_SHAPE_ARRAY:
        req->slots = cm_calloc(nslots ? nslots : 1, sizeof(*req->slots));
        req->nslots = nslots;
        req->pending = nslots;
        break;
    case CM_REQ_SHAPE_SINGLE: req->pending = 1; break;
    default: break;
    }
}

void cm_req_expect(struct cm_req *req, size_t n)
{
    req->pending += n;
}

void cm_req_part_done(struct cm_req *req)
{
    cm_assert(req->pending > 0 && req->state == CM_REQ_WAITING);
    if (--req->pending == 0) {
        complete(req);
    }
}

bool cm_req_over_budget(struct cm_req *req)
{
    if (req->conn == NULL || req->oversized) {
        return true;
    }
    if (req->shape == CM_REQ_SHAPE_ARRAY &&
        req->answered_bytes > cm_conn_output_room(req->conn)) {
        req->oversized = true;   /* its slots are no longer all answered for real */
    }
    return req->oversized;
}

/* Slot i of an ARRAY request, checked. */
static struct cm_slot *slot_of(struct cm_req *req, size_t i)
{
    cm_assert(req->shape == CM_REQ_SHAPE_ARRAY && i < req->nslots);
    struct cm_slot *s = &req->slots[i];
    cm_assert(s->data == NULL && s->val == NULL);   /* answered exactly once */
    return s;
}

void cm_req_answer_val(struct cm_req *req, size_t i, struct cm_val *v)
{
    if (req->shape == CM_REQ_SHAPE_SINGLE) {
        cm_assert(req->val == NULL && cm_buf_used(&req->reply) == 0);
        if (at_head(req)) {
            cm_resp_bulk(&req->conn->wbuf, v->data, v->len);   /* the common case: no ref */
        } else {
            req->val = cm_val_ref(v);
        }
    } else {
        slot_of(req, i)->val = cm_val_ref(v);
        req->answered_bytes += v->len + BULK_OVERHEAD;
    }
    cm_req_part_done(req);
}

struct cm_buf *cm_req_answer_buf(struct cm_req *req, struct cm_buf *tmp)
{
    cm_buf_init(tmp);
    return req->shape == CM_REQ_SHAPE_SINGLE ? cm_req_out(req) : tmp;
}

void cm_req_answer_encoded(struct cm_req *req, size_t i, struct cm_buf *tmp)
{
    if (req->shape != CM_REQ_SHAPE_SINGLE) {
        struct cm_slot *s = slot_of(req, i);
        s->data = cm_buf_steal(tmp, &s->len);
        req->answered_bytes += s->len;
    }
    cm_req_part_done(req);
}

void cm_req_answer_bytes(struct cm_req *req, size_t i, const char *p, size_t len)
{
    struct cm_buf tmp;
    cm_resp_bulk(cm_req_answer_buf(req, &tmp), p, len);
    cm_req_answer_encoded(req, i, &tmp);
}

void cm_req_answer_nil(struct cm_req *req, size_t i)
{
    struct cm_buf tmp;
    cm_resp_nil(cm_req_answer_buf(req, &tmp), req->resp3);
    cm_req_answer_encoded(req, i, &tmp);
}

void cm_req_answer_error(struct cm_req *req, size_t i, const char *msg)
{
    struct cm_buf tmp;
    cm_resp_error(cm_req_answer_buf(req, &tmp), msg);
    cm_req_answer_encoded(req, i, &tmp);
}

void cm_req_hold(struct cm_req *req)
{
    req->refs++;
}

void cm_req_unref(struct cm_req *req)
{
    cm_assert(req->refs > 0);
    if (--req->refs == 0 && req->conn == NULL) {
        req_free(req);
    }
}

void cm_req_release(struct cm_req *req)
{
    req->conn = NULL;
    if (req->refs == 0) {
        req_free(req);
    }
}
