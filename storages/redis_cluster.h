/* Redis Cluster helpers for the redis storage: key -> hash slot (CRC16/XMODEM with {hash tags}),
 * MOVED/ASK error parsing and CLUSTER SLOTS reply parsing. No I/O, no state. */
#ifndef CM_STORAGES_REDIS_CLUSTER_H
#define CM_STORAGES_REDIS_CLUSTER_H

#include "daemon/common.h"

#include <stddef.h>
#include <stdint.h>

struct redisReply;

#define CM_REDIS_NSLOTS 16384

/* CRC16-CCITT (XMODEM: poly 0x1021, init 0), the checksum Redis Cluster uses. */
uint16_t cm_redis_crc16(const char *buf, size_t len);

/* The hash slot of a key, exactly as Redis Cluster computes it: when the key holds a '{' followed
 * later by a '}' with at least one byte between them, only the bytes between the first '{' and the
 * first '}' after it are hashed. */
unsigned cm_redis_key_slot(const char *key, size_t klen);

enum cm_redis_redir {
    CM_REDIS_REDIR_NONE = 0, /* not a redirect */
    CM_REDIS_REDIR_MOVED,    /* "MOVED <slot> <host>:<port>": the slot lives there for good */
    CM_REDIS_REDIR_ASK,      /* "ASK <slot> <host>:<port>": ask there once, after ASKING */
};

/* Parses an error reply's text. Returns the redirect kind; for MOVED/ASK fills *slot, host (NUL-
 * terminated; "" for "MOVED 1 :6380", which means the host of the node that replied) and *port.
 * Malformed redirects, and hosts that do not fit in hostsz, are CM_REDIS_REDIR_NONE. */
enum cm_redis_redir cm_redis_parse_redirect(const char *s, size_t len, unsigned *slot, char *host,
                                            size_t hostsz, int *port);

/* Called once per slot range of a CLUSTER SLOTS reply with the master that serves it. host is not
 * NUL-terminated and may be empty (a nil or "" host: Redis then means "the node you asked"). */
typedef void cm_redis_range_fn(void *arg, unsigned first, unsigned last, const char *host,
                               size_t hostlen, int port);

/* Walks a CLUSTER SLOTS reply. Returns CM_OK after calling fn for every range, or CM_ERR (no call
 * at all) when the reply is not a well-formed CLUSTER SLOTS answer. */
int cm_redis_parse_slots(const struct redisReply *r, cm_redis_range_fn *fn, void *arg) CM_MUSTCHECK;

#endif
