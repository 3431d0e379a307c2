/* hiredis 0.14 <-> libevent adapter, and reply objects from our allocator (storages/redis_ev.h).
 *
 * hiredis's own adapter (hiredis/adapters/libevent.h) writes a queued command only when the
 * socket next reports writable: an epoll_ctl to watch for EPOLLOUT, one more epoll round, and an
 * epoll_ctl to stop watching, for every batch sent on a connection, plus the latency of that
 * round. A socket to a live server nearly always has room, so here a command queued on a connected
 * context activates a flush event instead: it runs in the same loop pass, after the callback
 * that queued the command (so every command of the pass goes out in one write). Only a write the
 * kernel did not take in full, and connecting, wait for EV_WRITE. The read event persists:
 * hiredis re-adds it after every read, which for a one-shot event is an epoll_ctl to remove it
 * and one to add it back per reply read.
 *
 * hiredis's reader makes two mallocs per bulk string (the reply and its bytes), and an MGET of
 * hundreds of keys frees them all at once: past glibc's small per-size cache, then consolidated.
 * Our reply functions make one allocation per string through daemon/alloc.h, whose chunk cache
 * takes such bursts: the NUL-terminated bytes start the block and the reply follows them, so the
 * block can be handed on whole as a value (cm_redis_reply_take_str) instead of copied. The
 * objects are hiredis's redisReply, built as hiredis's own functions build them, so replies read
 * the same everywhere. */
#include "storages/redis_ev.h"
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <string.h>

struct redis_ev {
    redisAsyncContext *ac;
    struct event *rev;   /* EV_READ */
    struct event *wev;   /* EV_WRITE: connecting, or the rest of a partial write */
    struct event *flush; /* no fd: activated to write in this loop pass */
};

/* The attachment whose flush is running: a command still unwritten after it waits for EV_WRITE
 * (re-activating the flush would spin on a full socket). */
static struct redis_ev *flushing;

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    redisAsyncHandleRead(((struct redis_ev *)arg)->ac);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    redisAsyncHandleWrite(((struct redis_ev *)arg)->ac);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    CM_UNUSED(fd);
    CM_UNUSED(what);
    struct redis_ev *a = arg;
    flushing = a;
    redisAsyncHandleWrite(a->ac); /* may free a (a write error disconnects) */
    flushing = NULL;
}

static void add_read(void *priv)
{
    event_add(((struct redis_ev *)priv)->rev, NULL);
}

static void del_read(void *priv)
{
    event_del(((struct redis_ev *)priv)->rev);
}

static void add_write(void *priv)
{
    struct redis_ev *a = priv;
    if (a == flushing || !(a->ac->c.flags & REDIS_CONNECTED)) {
        event_add(a->wev, NULL);
    } else {
        event_active(a->flush, EV_WRITE, 1); /* no-op when already active */
    }
}

static void del_write(void *priv)
{
    event_del(((struct redis_ev *)priv)->wev);
}

static void cleanup(void *priv)
{
    struct redis_ev *a = priv;
    if (flushing == a) {
        flushing = NULL;
    }
    struct event *evs[] = {a->rev, a->wev, a->flush};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
        if (evs[i] != NULL) {
            event_free(evs[i]);
        }
    }
    cm_free(a);
}

/* ---- reply objects ---- */

static void *reply_link(const redisReadTask *task, redisReply *r)
{
    if (task->parent != NULL) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static redisReply *reply_new(int type, size_t extra)
{
    redisReply *r = cm_calloc(1, sizeof(*r) + extra);
    r->type = type;
    return r;
}

/* Block of a string reply: [bytes, NUL, padding to 8][redisReply]; r->str is the block. */
static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    size_t room = (len + 8) & ~(size_t)7;
    char *block = cm_malloc(room + sizeof(redisReply));
    redisReply *r = (redisReply *)(void *)(block + room);
    memset(r, 0, sizeof(*r));
    r->type = task->type;
    r->str = block;
    memcpy(block, str, len);
    block[len] = '\0';
    r->len = len;
    return reply_link(task, r);
}

char *cm_redis_reply_take_str(redisReply *arr, size_t i, size_t *len)
{
    redisReply *r = arr->element[i];
    arr->element[i] = NULL;
    *len = r->len;
    return r->str; /* the block, r included */
}

static void *create_array(const redisReadTask *task, int elements)
{
    redisReply *r = reply_new(REDIS_REPLY_ARRAY, 0);
    if (elements > 0) {
        r->element = cm_calloc((size_t)elements, sizeof(*r->element));
        r->elements = (size_t)elements;
    }
    return reply_link(task, r);
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = reply_new(REDIS_REPLY_INTEGER, 0);
    r->integer = value;
    return reply_link(task, r);
}

static void *create_nil(const redisReadTask *task)
{
    return reply_link(task, reply_new(REDIS_REPLY_NIL, 0));
}

static void free_reply(void *obj)
{
    redisReply *r = obj;
    if (r == NULL) {
        return;
    }
    switch (r->type) {
    case REDIS_REPLY_ARRAY:
        if (r->element != NULL) {
            for (size_t i = 0; i < r->elements; i++) {
                free_reply(r->element[i]); /* NULL once taken */
            }
            cm_free(r->element);
        }
        cm_free(r);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        cm_free(r->str); /* the block, r included */
        break;
    default:
        cm_free(r);
        break;
    }
}

static redisReplyObjectFunctions reply_fns = {
    create_string, create_array, create_integer, create_nil, free_reply,
};

int cm_redis_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    if (ac->ev.data != NULL) {
        return REDIS_ERR;
    }
    struct redis_ev *a = cm_calloc(1, sizeof(*a));
    a->ac = ac;
    a->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, on_read, a);
    a->wev = event_new(base, ac->c.fd, EV_WRITE, on_write, a);
    a->flush = event_new(base, -1, 0, on_flush, a);
    if (a->rev == NULL || a->wev == NULL || a->flush == NULL) {
        cleanup(a);
        return REDIS_ERR;
    }
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = a;
    ac->c.reader->fn = &reply_fns;
    /* Like hiredis's adapter: watch both until the connect completes. */
    event_add(a->rev, NULL);
    event_add(a->wev, NULL);
    return REDIS_OK;
}
