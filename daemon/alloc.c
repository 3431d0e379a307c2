/* Allocation wrappers. Sizes are tracked with malloc_usable_size so cm_free needs no header. */
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/*
 * Bytes in use, counted per thread so the hot path needs no locked instruction: each thread
 * owns one counter (only it writes it; readers may see a slightly stale value). Counters are
 * registered once and never freed, so cm_alloc_used can sum them while threads come and go.
 * Memory freed by another thread than the one that allocated it just moves the count between
 * counters; the sum stays right.
 */
struct alloc_counter {
    _Atomic int64_t bytes;
    struct alloc_counter *next;
};

static _Atomic(struct alloc_counter *) counters;
static _Thread_local struct alloc_counter *my_counter;

static struct alloc_counter *counter(void)
{
    if (my_counter == NULL) {
        struct alloc_counter *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            abort();
        }
        c->next = atomic_load(&counters);
        while (!atomic_compare_exchange_weak(&counters, &c->next, c)) {
        }
        my_counter = c;
    }
    return my_counter;
}

static inline void count(int64_t delta)
{
    struct alloc_counter *c = counter();
    atomic_store_explicit(&c->bytes, atomic_load_explicit(&c->bytes, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

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
    count((int64_t)malloc_usable_size(p));
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
    count((int64_t)malloc_usable_size(p));
    return p;
}

void *cm_realloc_at(void *ptr, size_t size, const char *file, int line)
{
    size_t old = ptr ? malloc_usable_size(ptr) : 0;
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL) {
        return oom(size, file, line);
    }
    count(-(int64_t)old);
    count((int64_t)malloc_usable_size(p));
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
    count(-(int64_t)malloc_usable_size(ptr));
    free(ptr);
}

size_t cm_alloc_used(void)
{
    int64_t total = 0;
    for (struct alloc_counter *c = atomic_load(&counters); c != NULL; c = c->next) {
        total += atomic_load_explicit(&c->bytes, memory_order_relaxed);
    }
    return total > 0 ? (size_t)total : 0;
}

void cm_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "cachemed: assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}
