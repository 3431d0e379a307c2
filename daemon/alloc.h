/* Allocation wrappers: count bytes in use for INFO, abort on out-of-memory. */
#ifndef CM_DAEMON_ALLOC_H
#define CM_DAEMON_ALLOC_H

#include <stddef.h>

void *cm_malloc_at(size_t size, const char *file, int line);
void *cm_calloc_at(size_t n, size_t size, const char *file, int line);
void *cm_realloc_at(void *ptr, size_t size, const char *file, int line);
char *cm_strdup_at(const char *s, const char *file, int line);
char *cm_strndup_at(const char *s, size_t n, const char *file, int line);
void cm_free(void *ptr);
/* Bytes currently allocated through these wrappers. */
size_t cm_alloc_used(void);

#define cm_malloc(s) cm_malloc_at((s), __FILE__, __LINE__)
#define cm_calloc(n, s) cm_calloc_at((n), (s), __FILE__, __LINE__)
#define cm_realloc(p, s) cm_realloc_at((p), (s), __FILE__, __LINE__)
#define cm_strdup(s) cm_strdup_at((s), __FILE__, __LINE__)
#define cm_strndup(s, n) cm_strndup_at((s), (n), __FILE__, __LINE__)

#endif
