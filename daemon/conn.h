/* A client connection: socket, input parser, request queue (pipelining) and output buffer. */
#ifndef CM_DAEMON_CONN_H
#define CM_DAEMON_CONN_H

#include "daemon/buf.h"
#include "daemon/common.h"
#include "daemon/req.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;
struct cm_resp_parser;
struct cm_server;

enum cm_conn_state {
    CM_CONN_ACTIVE = 0,
    CM_CONN_CLOSING,   /* events removed, requests orphaned, waiting on srv->to_free */
};

#define CM_CONN_OUTPUT_LIMIT (256ULL * 1024 * 1024) /* pending reply bytes before disconnect */
#define CM_CONN_MAX_PIPELINE 4096                  /* queued requests before reading pauses */
#define CM_CONN_WBUF_PAUSE (4 * 1024 * 1024)        /* output bytes before reading pauses */
#define CM_CONN_REQS_PER_EVENT 1024                 /* requests parsed per wakeup */

/* Owned by the server (srv->conns, then srv->to_free). */
struct cm_conn {
    TAILQ_ENTRY(cm_conn) link;
    struct cm_server *srv;
    uint64_t id;
    int fd;
    enum cm_conn_state state;
    struct event *rev;              /* owned */
    struct event *wev;              /* owned */
    bool reading;                   /* rev is armed */
    bool writing;                   /* wev is armed */
    struct cm_resp_parser *parser;  /* owned */
    struct cm_buf wbuf;             /* bytes to write */
    TAILQ_HEAD(, cm_req) reqs;      /* arrival order; owned until written */
    size_t nreqs;
    size_t held_bytes;              /* reply bytes of DONE requests not yet moved to wbuf:
                                     * with wbuf, what the client's output limit bounds */
    bool resp3;
    bool authed;
    bool close_after_write;         /* QUIT, protocol error, output limit: read no more, close
                                     * once every queued reply is written */
    bool unix_sock;
    bool in_read;                   /* inside on_readable: replies are flushed once at its end */
    bool write_queued;              /* on srv->write_queue: written once the loop pass ends */
    TAILQ_ENTRY(cm_conn) wlink;     /* srv->write_queue */
    char *name;                     /* CLIENT SETNAME, owned */
    char addr[80];                  /* peer, for logs and CLIENT LIST */
    int64_t created_ms;
    int64_t last_active_ms;
    int64_t last_output_ms;         /* last byte written, or when output began to wait */
    uint64_t ncmds;
};

/* Takes ownership of fd (non-blocking). Returns NULL on failure (fd closed). */
struct cm_conn *cm_conn_new(struct cm_server *srv, int fd, const char *addr, bool unix_sock);
/* Closes now: removes events, orphans waiting requests, links onto srv->to_free. Safe to call
 * from any callback, twice is a no-op. */
void cm_conn_close(struct cm_conn *c, const char *why);
/* Frees a closed connection (only from the server's reaper). */
void cm_conn_free(struct cm_conn *c);
/* req of c became DONE: move finished replies to the output and write (or disconnect c when
 * its output passed CM_CONN_OUTPUT_LIMIT). */
void cm_conn_reply_ready(struct cm_conn *c, struct cm_req *req);
/* Bytes of replies c may still be given before its output limit. */
size_t cm_conn_output_room(const struct cm_conn *c);
/* Reads nothing more from c and closes it once every queued reply, up to req's, is written. */
void cm_conn_close_after(struct cm_conn *c, struct cm_req *req);
/* Writes every connection whose replies completed outside its own read callback (storage and
 * loader completions): one write per connection per loop pass instead of one per reply. */
void cm_conn_flush_queued(struct cm_server *srv);
/* Readable event logic (also used by tests). */
void cm_conn_on_readable(struct cm_conn *c);
void cm_conn_on_writable(struct cm_conn *c);
/* True when no request is in progress and nothing is left to write. */
bool cm_conn_is_idle(const struct cm_conn *c);
/* True when output has been waiting on the client for longer than timeout_ms with no byte
 * written (a client that stopped reading). */
bool cm_conn_output_stalled(const struct cm_conn *c, int64_t now_ms, int64_t timeout_ms);
/* Answers every request still waiting with an error line msg (e.g. "ERR server shutting down"),
 * in order and after the replies already finished, orphans the waiting requests, writes what
 * the socket takes and closes c. */
void cm_conn_abort_pending(struct cm_conn *c, const char *msg);

#endif
