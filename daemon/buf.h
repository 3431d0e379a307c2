/* A growable byte buffer with a read offset (consumed bytes are dropped lazily). */
#ifndef CM_DAEMON_BUF_H
#define CM_DAEMON_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Embedded in its owner; init/deinit. data[pos..len) are the live bytes. */
struct cm_buf {
    char *data;    /* owned */
    size_t pos;    /* first live byte */
    size_t len;    /* end of live bytes */
    size_t cap;    /* allocated size */
};

void cm_buf_init(struct cm_buf *b);
void cm_buf_deinit(struct cm_buf *b);
/* Makes room for at least n more bytes after len; returns a pointer to that space. */
char *cm_buf_reserve(struct cm_buf *b, size_t n);
void cm_buf_commit(struct cm_buf *b, size_t n);
void cm_buf_append(struct cm_buf *b, const void *p, size_t n);
void cm_buf_append_str(struct cm_buf *b, const char *s);
void cm_buf_printf(struct cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops n live bytes from the front. */
void cm_buf_consume(struct cm_buf *b, size_t n);
void cm_buf_reset(struct cm_buf *b);
/* Takes ownership of the live bytes as a malloc'd, NUL-terminated block; the buffer becomes empty. */
char *cm_buf_steal(struct cm_buf *b, size_t *len);

static inline size_t cm_buf_used(const struct cm_buf *b) { return b->len - b->pos; }
static inline char *cm_buf_start(const struct cm_buf *b)
{
    return b->data != NULL ? b->data + b->pos : (char *)"";   /* never NULL + 0 (UBSan) */
}

#endif
