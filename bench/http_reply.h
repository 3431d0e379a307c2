/* The HTTP/1.1 response parser of the bench drivers (bench/trace.c, bench/badday.c): responses
 * with Content-Length, as bench/origin.c, nginx and Varnish send them. Header-only. */
#ifndef CM_BENCH_HTTP_REPLY_H
#define CM_BENCH_HTTP_REPLY_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Parses one HTTP/1.1 response off the input when it is complete. Returns 1 and sets
 * *status, *body (pulled up in the buffer) and *blen; 0 when more bytes are needed; -1 when
 * the response is unusable. *consumed is what to drain after use; *close is Connection: close. */
static inline int parse_http(struct evbuffer *in, int *status, const char **body, size_t *blen,
                             size_t *consumed, bool *close_conn)
{
    struct evbuffer_ptr eoh = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (eoh.pos < 0) {
        return 0;
    }
    size_t hlen = (size_t)eoh.pos + 4;
    const char *h = (const char *)evbuffer_pullup(in, (ssize_t)hlen);
    if (hlen < 12 || strncmp(h, "HTTP/1.", 7) != 0) {
        return -1;
    }
    *status = atoi(h + 9);
    long clen = -1;
    *close_conn = false;
    for (const char *p = memchr(h, '\n', hlen); p != NULL && p < h + hlen;
         p = memchr(p, '\n', (size_t)(h + hlen - p))) {
        p++;
        if (strncasecmp(p, "Content-Length:", 15) == 0) {
            clen = strtol(p + 15, NULL, 10);
        } else if (strncasecmp(p, "Connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ') {
                v++;
            }
            *close_conn = strncasecmp(v, "close", 5) == 0;
        } else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0) {
            return -1; /* the origin always sends Content-Length; so do both peers */
        }
    }
    if (clen < 0) {
        return -1;
    }
    if (evbuffer_get_length(in) < hlen + (size_t)clen) {
        return 0;
    }
    const char *all = (const char *)evbuffer_pullup(in, (ssize_t)(hlen + (size_t)clen));
    *body = all + hlen;
    *blen = (size_t)clen;
    *consumed = hlen + (size_t)clen;
    return 1;
}

#endif
