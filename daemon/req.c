/* Requests and the reply queue.
 *
 *   conn->reqs (arrival order)          replies leave from the head only
 *   +------+   +---------+   +------+
 *   | DONE |-->| WAITING |-->| DONE |   <- C finished before B: it waits for B
 *   +------+   +---------+   +------+
 *      |
 *      v written to conn->wbuf, then released
 *
 * A request whose client goes away while flights still hold it is orphaned (conn = NULL) and
 * freed by the last cm_req_unref.
 */
#include "daemon/req.h"
#include "daemon/alloc.h"
#include "daemon/conn.h"
#include "daemon/resp.h"

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
    }
    cm_free(req->slots);
    cm_buf_deinit(&req->reply);
    cm_argv_free(req->argv);
    cm_free(req);
}

struct cm_buf *cm_req_out(struct cm_req *req)
{
    struct cm_conn *c = req->conn;
    if (c != NULL && c->state == CM_CONN_ACTIVE && TAILQ_FIRST(&c->reqs) == req) {
        return &c->wbuf;
    }
    return &req->reply;
}

void cm_req_done(struct cm_req *req)
{
    cm_assert(req->state == CM_REQ_WAITING);
    req->state = CM_REQ_DONE;
    if (req->conn != NULL) {
        cm_conn_reply_ready(req->conn);
    }
}

static void complete(struct cm_req *req)
{
    if (req->complete != NULL) {
        req->complete(req);
    }
    cm_req_done(req);
}

void cm_req_setup_slots(struct cm_req *req, size_t n, cm_req_complete_fn *fn)
{
    req->slots = cm_calloc(n, sizeof(*req->slots));
    req->nslots = n;
    req->complete = fn;
}

void cm_req_fill_slot(struct cm_req *req, size_t i, char *data, size_t len)
{
    cm_assert(i < req->nslots && req->slots[i].data == NULL && req->pending > 0);
    req->slots[i].data = data;
    req->slots[i].len = len;
    if (--req->pending == 0) {
        complete(req);
    }
}

struct cm_buf *cm_req_slot_buf(struct cm_req *req, struct cm_buf *tmp)
{
    cm_buf_init(tmp);
    return req->nslots == 0 ? cm_req_out(req) : tmp;
}

void cm_req_slot_encoded(struct cm_req *req, size_t i, struct cm_buf *tmp)
{
    if (req->nslots == 0) {
        cm_req_part_done(req);
        return;
    }
    size_t len;
    char *data = cm_buf_steal(tmp, &len);
    cm_req_fill_slot(req, i, data, len);
}

void cm_req_part_done(struct cm_req *req)
{
    cm_assert(req->pending > 0);
    if (--req->pending == 0) {
        complete(req);
    }
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
