/* Client connections: read, parse, queue, dispatch, write in request order. */
#include "daemon/conn.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/cmd.h"
#include "daemon/log.h"
#include "daemon/resp.h"
#include "daemon/server.h"
#include "daemon/util.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_conn_on_readable(arg);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_conn_on_writable(arg);
}

struct cm_conn *cm_conn_new(struct cm_server *srv, int fd, const char *addr, bool unix_sock)
{
    struct cm_conn *c = cm_calloc(1, sizeof(*c));
    c->srv = srv;
    c->id = ++srv->next_conn_id;
    c->fd = fd;
    c->unix_sock = unix_sock;
    c->parser = cm_resp_parser_new(CM_RESP_MAX_BULK, CM_RESP_MAX_ARGS);
    cm_buf_init(&c->wbuf);
    TAILQ_INIT(&c->reqs);
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->authed = srv->conf->requirepass == NULL || srv->conf->requirepass[0] == '\0';
    c->created_ms = c->last_active_ms = cm_now_ms();
    c->rev = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(srv->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    if (c->rev == NULL || c->wev == NULL || event_add(c->rev, NULL) != 0) {
        cm_log(CM_LOG_ERR, "conn#%llu %s: cannot register events", (unsigned long long)c->id, addr);
        if (c->rev) event_free(c->rev);
        if (c->wev) event_free(c->wev);
        cm_resp_parser_free(c->parser);
        close(fd);
        cm_free(c);
        return NULL;
    }
    c->reading = true;
    TAILQ_INSERT_TAIL(&srv->conns, c, link);
    srv->nclients++;
    return c;
}

void cm_conn_close(struct cm_conn *c, const char *why)
{
    struct cm_req *req;
    if (c->state == CM_CONN_CLOSING) {
        return;
    }
    cm_log(CM_LOG_DEBUG, "conn#%llu %s: closed (%s)", (unsigned long long)c->id, c->addr, why);
    c->state = CM_CONN_CLOSING;
    if (c->write_queued) {
        TAILQ_REMOVE(&c->srv->write_queue, c, wlink);
        c->write_queued = false;
    }
    event_del(c->rev);
    event_del(c->wev);
    c->reading = c->writing = false;
    /* Finished requests are freed; waiting ones are orphaned for their flights to free. */
    while ((req = TAILQ_FIRST(&c->reqs)) != NULL) {
        TAILQ_REMOVE(&c->reqs, req, link);
        cm_req_release(req);
    }
    c->nreqs = 0;
    TAILQ_REMOVE(&c->srv->conns, c, link);
    TAILQ_INSERT_TAIL(&c->srv->to_free, c, link);
    c->srv->nclients--;
}

void cm_conn_free(struct cm_conn *c)
{
    cm_assert(c->state == CM_CONN_CLOSING);
    event_free(c->rev);
    event_free(c->wev);
    close(c->fd);
    cm_resp_parser_free(c->parser);
    cm_buf_deinit(&c->wbuf);
    cm_free(c->name);
    cm_free(c);
}

bool cm_conn_is_idle(const struct cm_conn *c)
{
    return c->nreqs == 0 && cm_buf_used(&c->wbuf) == 0;
}

bool cm_conn_output_stalled(const struct cm_conn *c, int64_t now_ms, int64_t timeout_ms)
{
    return c->writing && cm_buf_used(&c->wbuf) > 0 && now_ms - c->last_output_ms > timeout_ms;
}

static void set_reading(struct cm_conn *c, bool on)
{
    if (on == c->reading || c->state != CM_CONN_ACTIVE) {
        return;
    }
    if (on) {
        event_add(c->rev, NULL);
    } else {
        event_del(c->rev);
    }
    c->reading = on;
}

static void set_writing(struct cm_conn *c, bool on)
{
    if (on == c->writing || c->state != CM_CONN_ACTIVE) {
        return;
    }
    if (on) {
        /* Output starts waiting for the client: the stall clock runs from here. */
        c->last_output_ms = cm_now_ms();
        event_add(c->wev, NULL);
    } else {
        event_del(c->wev);
    }
    c->writing = on;
}

/* Writes as much of wbuf as the socket takes. Returns CM_ERR when the connection was closed. */
static int write_out(struct cm_conn *c)
{
    while (cm_buf_used(&c->wbuf) > 0) {
        ssize_t n = send(c->fd, cm_buf_start(&c->wbuf), cm_buf_used(&c->wbuf), MSG_NOSIGNAL);
        if (n > 0) {
            c->srv->stats.bytes_out += (uint64_t)n;
            c->last_output_ms = cm_now_ms();
            cm_buf_consume(&c->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_writing(c, true);
            return CM_OK;
        }
        cm_conn_close(c, n < 0 ? strerror(errno) : "write returned 0");
        return CM_ERR;
    }
    set_writing(c, false);
    if (c->close_after_write && c->nreqs == 0) {
        /* QUIT or a protocol error: every request read before it has been answered (a GET
         * still loading ahead of QUIT keeps the connection open until its reply is out). */
        cm_conn_close(c, "closed after reply");
        return CM_ERR;
    }
    return CM_OK;
}

/* Moves finished replies from the head of the queue to wbuf; stops at the first waiting one. */
/* Stops at the pause mark: what is left waits, by reference to its shared value where it has
 * one, until the socket took the rest (flush_out). 1,024 waiters of one 1 MB load used to be
 * copied into wbuf at once, up to the output limit (627 MB of RSS under ASan). */
static void collect_replies(struct cm_conn *c)
{
    struct cm_req *req;
    while ((req = TAILQ_FIRST(&c->reqs)) != NULL && req->state == CM_REQ_DONE &&
           cm_buf_used(&c->wbuf) < CM_CONN_WBUF_PAUSE) {
        cm_req_write_to(req, &c->wbuf);
        cm_assert(c->held_bytes >= req->out_len);
        c->held_bytes -= req->out_len;
        TAILQ_REMOVE(&c->reqs, req, link);
        c->nreqs--;
        cm_req_release(req);
    }
}

/* What c holds for its client: written-to-be replies and finished ones queued behind a
 * waiting one. */
static size_t output_bytes(const struct cm_conn *c)
{
    return cm_buf_used(&c->wbuf) + c->held_bytes;
}

size_t cm_conn_output_room(const struct cm_conn *c)
{
    size_t used = output_bytes(c);
    return used >= CM_CONN_OUTPUT_LIMIT ? 0 : CM_CONN_OUTPUT_LIMIT - used;
}

void cm_conn_close_after(struct cm_conn *c, struct cm_req *req)
{
    CM_UNUSED(req);   /* parsing stops: req's successors are the ones already queued */
    c->close_after_write = true;
    set_reading(c, false);
}

/* Disconnects c when its output passed its limit (SPEC §10). Returns true when it did. */
static bool over_limit(struct cm_conn *c)
{
    if (output_bytes(c) <= CM_CONN_OUTPUT_LIMIT) {
        return false;
    }
    cm_log(CM_LOG_WARN, "conn#%llu %s: output limit exceeded (%zu bytes pending), closing",
           (unsigned long long)c->id, c->addr, output_bytes(c));
    cm_conn_close(c, "output limit");
    return true;
}

static void check_limits_and_resume(struct cm_conn *c)
{
    if (c->state != CM_CONN_ACTIVE) {
        return;
    }
    if (over_limit(c)) {
        return;
    }
    bool pause = c->close_after_write || c->nreqs >= CM_CONN_MAX_PIPELINE ||
                 output_bytes(c) >= CM_CONN_WBUF_PAUSE;
    bool was_paused = !c->reading;
    set_reading(c, !pause);
    if (was_paused && !pause && cm_resp_pending(c->parser) > 0) {
        /* Requests may already sit in the parser: process them without waiting for bytes. */
        event_active(c->rev, EV_READ, 0);
    }
}

/* Writes what wbuf holds, then pauses, resumes or closes c by its limits. */
static void flush_out(struct cm_conn *c)
{
    for (;;) {
        if (write_out(c) != CM_OK) {
            return;   /* closed */
        }
        struct cm_req *req = TAILQ_FIRST(&c->reqs);
        if (cm_buf_used(&c->wbuf) > 0 || req == NULL || req->state != CM_REQ_DONE) {
            break;   /* the socket is full (the write event is armed), or nothing more is done */
        }
        collect_replies(c);   /* the socket took it all: the next finished replies */
    }
    check_limits_and_resume(c);
}

void cm_conn_reply_ready(struct cm_conn *c, struct cm_req *req)
{
    if (c->state != CM_CONN_ACTIVE) {
        return;
    }
    c->held_bytes += req->out_len;
    collect_replies(c);
    /* The limit is enforced as replies are produced, not once a whole batch is encoded. */
    if (over_limit(c) || c->in_read) {
        return;   /* in a read batch: written once at its end */
    }
    if (c->write_queued) {
        return;
    }
    if (c->srv->write_ev == NULL) {   /* no loop to defer to (unit tests): write now */
        flush_out(c);
        return;
    }
    /* A storage or loader completion can finish hundreds of requests at once: write each
     * connection once, after the callbacks of this loop pass. */
    c->write_queued = true;
    TAILQ_INSERT_TAIL(&c->srv->write_queue, c, wlink);
    if (TAILQ_FIRST(&c->srv->write_queue) == c) {
        event_active(c->srv->write_ev, EV_TIMEOUT, 0);
    }
}

void cm_conn_flush_queued(struct cm_server *srv)
{
    struct cm_conn *c;
    while ((c = TAILQ_FIRST(&srv->write_queue)) != NULL) {
        TAILQ_REMOVE(&srv->write_queue, c, wlink);
        c->write_queued = false;
        if (c->state == CM_CONN_ACTIVE) {
            flush_out(c);
        }
    }
}

void cm_conn_on_writable(struct cm_conn *c)
{
    flush_out(c);
}

void cm_conn_abort_pending(struct cm_conn *c, const char *msg)
{
    struct cm_req *req;
    if (c->state != CM_CONN_ACTIVE) {
        return;
    }
    /* In queue order: a finished reply goes out as it is, a waiting request gets msg. A waiting
     * request is orphaned (its flight frees it when its work ends), as on a disconnect. */
    while ((req = TAILQ_FIRST(&c->reqs)) != NULL) {
        if (req->state == CM_REQ_DONE) {
            cm_req_write_to(req, &c->wbuf);
            c->held_bytes -= req->out_len;
        } else {
            cm_resp_error(&c->wbuf, msg);
        }
        TAILQ_REMOVE(&c->reqs, req, link);
        c->nreqs--;
        cm_req_release(req);
    }
    /* One non-blocking attempt: what the socket does not take now is lost with the close. */
    c->close_after_write = true;
    if (write_out(c) == CM_OK) {
        cm_conn_close(c, "aborted with requests pending");
    }
}

static void protocol_error(struct cm_conn *c)
{
    char sample[64];
    cm_log_escape(sample, sizeof(sample), cm_resp_errstr(c->parser), strlen(cm_resp_errstr(c->parser)), 60);
    cm_log(CM_LOG_INFO, "conn#%llu %s: %s", (unsigned long long)c->id, c->addr, sample);
    c->srv->stats.protocol_errors++;
    /* The error goes after every reply still pending, then the connection closes. */
    struct cm_req *req = cm_req_new(c, NULL);
    TAILQ_INSERT_TAIL(&c->reqs, req, link);
    c->nreqs++;
    cm_resp_errorf(&req->reply, "ERR %s", cm_resp_errstr(c->parser));
    cm_conn_close_after(c, req);
    cm_req_done(req);
}

void cm_conn_on_readable(struct cm_conn *c)
{
    struct cm_server *srv = c->srv;
    int parsed = 0;
    bool eof = false;

    /* Read what is there (bounded), then parse. */
    for (int rounds = 0; rounds < 4; rounds++) {
        char *dst = cm_resp_reserve(c->parser, 16384);
        ssize_t n = recv(c->fd, dst, 16384, 0);
        if (n > 0) {
            cm_resp_commit(c->parser, (size_t)n);
            srv->stats.bytes_in += (uint64_t)n;
            if (n < 16384) {
                break;
            }
            continue;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        }
        cm_conn_close(c, strerror(errno));
        return;
    }
    c->last_active_ms = cm_now_ms();
    c->in_read = true;
    /* Parsing stops as soon as the output this batch produced reaches the pause mark: 1,024
     * pipelined GETs of a 1 MB value no longer make a 1 GB batch before anything is checked. */
    while (c->state == CM_CONN_ACTIVE && !c->close_after_write && parsed < CM_CONN_REQS_PER_EVENT &&
           c->nreqs < CM_CONN_MAX_PIPELINE && output_bytes(c) < CM_CONN_WBUF_PAUSE) {
        struct cm_argv *argv;
        int rc = cm_resp_next(c->parser, &argv);
        if (rc == CM_EAGAIN) {
            break;
        }
        if (rc == CM_ERR) {
            protocol_error(c);
            break;
        }
        parsed++;
        struct cm_req *req = cm_req_new(c, argv);
        TAILQ_INSERT_TAIL(&c->reqs, req, link);
        c->nreqs++;
        c->ncmds++;
        srv->stats.commands_processed++;
        cm_cmd_dispatch(req);
    }
    c->in_read = false;
    if (c->state != CM_CONN_ACTIVE) {
        return;
    }
    if (c->nreqs >= CM_CONN_MAX_PIPELINE || output_bytes(c) >= CM_CONN_WBUF_PAUSE) {
        /* Parsing stopped at a limit: pause, so that check_limits_and_resume parses what is
         * buffered once the output drains. Left reading, a write that drained it all at once
         * (4 MB fit in loopback socket buffers) left the rest of a pipeline of GETs of a 1 MB
         * value unparsed until the client sent more: 4 of 1,024 replies, then a stall. */
        set_reading(c, false);
    }
    if (eof) {
        /* The client is gone: waiting requests are orphaned, nothing more can be written. */
        cm_conn_close(c, "client closed the connection");
        return;
    }
    /* The replies of this read batch go out in one write, now. */
    collect_replies(c);
    if (!c->write_queued) {
        flush_out(c);
    }
    if (c->state == CM_CONN_ACTIVE && c->reading && parsed == CM_CONN_REQS_PER_EVENT &&
        cm_resp_pending(c->parser) > 0) {
        /* Fairness: let other connections run, then continue with what is buffered. */
        event_active(c->rev, EV_READ, 0);
    }
}
