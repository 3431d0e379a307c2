/* Redis Cluster helpers: hash slots, redirect parsing, CLUSTER SLOTS parsing (see the header). */
#include "storages/redis_cluster.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <string.h>

uint16_t cm_redis_crc16(const char *buf, size_t len)
{
    /* Bitwise rather than table-driven: keys are short and this keeps no table around. */
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

unsigned cm_redis_key_slot(const char *key, size_t klen)
{
    const char *open = memchr(key, '{', klen);
    if (open != NULL) {
        size_t off = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', klen - off);
        if (close != NULL && close > open + 1) {
            return cm_redis_crc16(open + 1, (size_t)(close - open - 1)) & (CM_REDIS_NSLOTS - 1);
        }
    }
    return cm_redis_crc16(key, klen) & (CM_REDIS_NSLOTS - 1);
}

/* Parses a decimal number of at most maxdig digits at *p, advancing *p. */
static int parse_uint(const char **p, const char *end, int maxdig, unsigned long *out)
{
    unsigned long v = 0;
    int n = 0;
    while (*p < end && **p >= '0' && **p <= '9' && n < maxdig) {
        v = v * 10 + (unsigned long)(**p - '0');
        (*p)++;
        n++;
    }
    if (n == 0 || (*p < end && **p >= '0' && **p <= '9')) {
        return CM_ERR;
    }
    *out = v;
    return CM_OK;
}

enum cm_redis_redir cm_redis_parse_redirect(const char *s, size_t len, unsigned *slot, char *host,
                                            size_t hostsz, int *port)
{
    enum cm_redis_redir kind;
    const char *p = s, *end = s + len;
    if (len > 6 && memcmp(s, "MOVED ", 6) == 0) {
        kind = CM_REDIS_REDIR_MOVED;
        p += 6;
    } else if (len > 4 && memcmp(s, "ASK ", 4) == 0) {
        kind = CM_REDIS_REDIR_ASK;
        p += 4;
    } else {
        return CM_REDIS_REDIR_NONE;
    }
    unsigned long v;
    if (parse_uint(&p, end, 5, &v) != CM_OK || v >= CM_REDIS_NSLOTS || p >= end || *p != ' ') {
        return CM_REDIS_REDIR_NONE;
    }
    *slot = (unsigned)v;
    p++;
    /* host:port, where host may itself hold ':' (IPv6): split at the last one. */
    const char *colon = NULL;
    for (const char *q = p; q < end; q++) {
        if (*q == ':') {
            colon = q;
        }
    }
    if (colon == NULL || (size_t)(colon - p) >= hostsz) {
        return CM_REDIS_REDIR_NONE;
    }
    const char *pp = colon + 1;
    if (parse_uint(&pp, end, 5, &v) != CM_OK || pp != end || v == 0 || v > 65535) {
        return CM_REDIS_REDIR_NONE;
    }
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    *port = (int)v;
    return kind;
}

static int slots_entry_ok(const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) {
        return 0;
    }
    const redisReply *m = e->element[2];
    return e->element[0]->type == REDIS_REPLY_INTEGER &&
           e->element[1]->type == REDIS_REPLY_INTEGER && e->element[0]->integer >= 0 &&
           e->element[1]->integer < CM_REDIS_NSLOTS &&
           e->element[0]->integer <= e->element[1]->integer && m->type == REDIS_REPLY_ARRAY &&
           m->elements >= 2 &&
           (m->element[0]->type == REDIS_REPLY_STRING || m->element[0]->type == REDIS_REPLY_NIL) &&
           m->element[1]->type == REDIS_REPLY_INTEGER && m->element[1]->integer > 0 &&
           m->element[1]->integer <= 65535;
}

int cm_redis_parse_slots(const struct redisReply *r, cm_redis_range_fn *fn, void *arg)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        return CM_ERR;
    }
    for (size_t i = 0; i < r->elements; i++) {
        if (!slots_entry_ok(r->element[i])) {
            return CM_ERR;
        }
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i], *m = e->element[2];
        /* nil host: cluster-preferred-endpoint-type unknown-endpoint */
        bool nil = m->element[0]->type == REDIS_REPLY_NIL;
        fn(arg, (unsigned)e->element[0]->integer, (unsigned)e->element[1]->integer,
           nil ? "" : m->element[0]->str, nil ? 0 : m->element[0]->len,
           (int)m->element[1]->integer);
    }
    return CM_OK;
}
