/* hiredis 0.14 async contexts on the libevent loop (storages/redis_ev.c). */
#ifndef CM_REDIS_EV_H
#define CM_REDIS_EV_H

#include <event2/event.h>
#include <hiredis/async.h>

/* Attaches ac to base, like hiredis's redisLibeventAttach, except that commands queued on a
 * connected context are written later in the same loop pass rather than once the socket reports
 * writable, and that its replies are allocated through daemon/alloc.h (one block per string,
 * which cm_redis_reply_take_str can hand on).
 * Returns REDIS_OK or REDIS_ERR (already attached). hiredis frees the attachment with the
 * context. */
int cm_redis_ev_attach(redisAsyncContext *ac, struct event_base *base);

/* Takes the bytes of string element i of array reply arr (of an attached context): returns them
 * NUL-terminated in a block to release with cm_free, sets *len, and removes the element from arr
 * (NULL), so no copy is made and freeing the reply leaves them alone. */
char *cm_redis_reply_take_str(redisReply *arr, size_t i, size_t *len);

#endif
