/* Allocation wrappers. Sizes are tracked with malloc_usable_size so cm_free needs no header. */
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* Worker threads (sqlite, mongo) allocate too, hence atomic. */
static atomic_size_t used_bytes;

static void *oom(size_t size, const char *file, int line)
{
    fprintf(stderr, "cachemed: out of memory allocating %zu bytes at %s:%d\n", size, file, line);
    abort();
}

void *cm_malloc_at(size_t size, const char *file, int line)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL) {
        return oom(size, file, line);
    }
    atomic_fetch_add_explicit(&used_bytes, malloc_usable_size(p), memory_order_relaxed);
    return p;
}

void *cm_calloc_at(size_t n, size_t size, const char *file, int line)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return oom(SIZE_MAX, file, line);
    }
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        return oom(n * size, file, line);
    }
    atomic_fetch_add_explicit(&used_bytes, malloc_usable_size(p), memory_order_relaxed);
    return p;
}

void *cm_realloc_at(void *ptr, size_t size, const char *file, int line)
{
    size_t old = ptr ? malloc_usable_size(ptr) : 0;
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL) {
        return oom(size, file, line);
    }
    atomic_fetch_sub_explicit(&used_bytes, old, memory_order_relaxed);
    atomic_fetch_add_explicit(&used_bytes, malloc_usable_size(p), memory_order_relaxed);
    return p;
}

char *cm_strdup_at(const char *s, const char *file, int line)
{
    return cm_strndup_at(s, strlen(s), file, line);
}

char *cm_strndup_at(const char *s, size_t n, const char *file, int line)
{
    size_t len = strnlen(s, n);
    char *p = cm_malloc_at(len + 1, file, line);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void cm_free(void *ptr)
{
    if (ptr == NULL) {
        return;
    }
    atomic_fetch_sub_explicit(&used_bytes, malloc_usable_size(ptr), memory_order_relaxed);
    free(ptr);
}

size_t cm_alloc_used(void)
{
    return atomic_load_explicit(&used_bytes, memory_order_relaxed);
}

void cm_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "cachemed: assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}
