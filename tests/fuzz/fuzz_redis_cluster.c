/* libFuzzer target for Redis Cluster routing (storages/redis_cluster.c): a key's hash slot must
 * follow Redis's hash-tag rule (checked against a reference written from it), and an error reply
 * text (from a server, so not trusted) either parses as a MOVED/ASK redirect with a slot below
 * 16384, a NUL-terminated host that fits and a valid port, or is not a redirect. */
#include "storages/redis_cluster.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Redis's rule: hash only what is between the first '{' and the first '}' after it, when that
 * is at least one byte; else the whole key. */
static unsigned ref_slot(const char *k, size_t n)
{
    const char *open = memchr(k, '{', n);
    if (open != NULL) {
        size_t rest = n - (size_t)(open - k) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1) {
            return cm_redis_crc16(open + 1, (size_t)(close - open - 1)) & 16383;
        }
    }
    return cm_redis_crc16(k, n) & 16383;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    unsigned slot = cm_redis_key_slot(s, size);
    if (slot >= 16384 || slot != ref_slot(s, size)) {
        abort();
    }
    char host[64];
    int port = -1;
    enum cm_redis_redir r = cm_redis_parse_redirect(s, size, &slot, host, sizeof(host), &port);
    if (r != CM_REDIS_REDIR_NONE &&
        (slot >= 16384 || memchr(host, '\0', sizeof(host)) == NULL || port < 0 || port > 65535)) {
        abort();
    }
    return 0;
}
