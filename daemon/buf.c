/* Growable byte buffer. */
#include "daemon/buf.h"
#include "daemon/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void cm_buf_init(struct cm_buf *b)
{
    b->data = NULL;
    b->pos = b->len = b->cap = 0;
}

void cm_buf_deinit(struct cm_buf *b)
{
    cm_free(b->data);
    cm_buf_init(b);
}

char *cm_buf_reserve(struct cm_buf *b, size_t n)
{
    if (b->pos > 0 && (b->pos == b->len || b->cap - b->len < n)) {
        /* Compact before growing: most of the time the front has been consumed. */
        memmove(b->data, b->data + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;
    }
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            cap *= 2;
        }
        b->data = cm_realloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

void cm_buf_commit(struct cm_buf *b, size_t n)
{
    b->len += n;
}

void cm_buf_append(struct cm_buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return;
    }
    memcpy(cm_buf_reserve(b, n), p, n);
    b->len += n;
}

void cm_buf_append_str(struct cm_buf *b, const char *s)
{
    cm_buf_append(b, s, strlen(s));
}

void cm_buf_printf(struct cm_buf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(small)) {
        cm_buf_append(b, small, (size_t)n);
        return;
    }
    char *dst = cm_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void cm_buf_consume(struct cm_buf *b, size_t n)
{
    b->pos += n;
    if (b->pos >= b->len) {
        b->pos = b->len = 0;
    }
}

void cm_buf_reset(struct cm_buf *b)
{
    b->pos = b->len = 0;
}

char *cm_buf_steal(struct cm_buf *b, size_t *len)
{
    size_t n = cm_buf_used(b);
    char *out;
    if (b->pos == 0 && b->data != NULL) {
        cm_buf_reserve(b, 1);
        out = b->data;
        out[n] = '\0';
        cm_buf_init(b);
    } else {
        out = cm_malloc(n + 1);
        memcpy(out, cm_buf_start(b), n);
        out[n] = '\0';
        cm_buf_deinit(b);
    }
    if (len != NULL) {
        *len = n;
    }
    return out;
}
