/* Allocation wrappers. Sizes are tracked with malloc_usable_size so cm_free needs no header. */
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
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

/* A thread's first allocation registers its counter; kept out of line so that the check on
 * every call is one compare. */
static __attribute__((noinline, cold)) struct alloc_counter *counter_init(void)
{
    struct alloc_counter *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    c->next = atomic_load(&counters);
    while (!atomic_compare_exchange_weak(&counters, &c->next, c)) {
    }
    my_counter = c;
    return c;
}

static inline struct alloc_counter *counter(void)
{
    struct alloc_counter *c = my_counter;
    return __builtin_expect(c != NULL, 1) ? c : counter_init();
}

static inline void count(int64_t delta)
{
    struct alloc_counter *c = counter();
    atomic_store_explicit(&c->bytes, atomic_load_explicit(&c->bytes, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

/*
 * Small-chunk cache. glibc's tcache keeps 7 free chunks per size; a loop pass that frees hundreds
 * of same-size objects (requests, flights, waiter arrays, reply objects) overflows it into the
 * fastbins, which the pass's next large allocation then consolidates: malloc was 22% of the
 * daemon's CPU at redis-benchmark -P 16 through a redis chain. So each thread keeps freed chunks
 * of up to CACHE_MAX_USABLE usable bytes itself, in one list per usable size (glibc's are 16k + 8
 * on 64-bit), up to CACHE_PER_CLASS each and CACHE_MAX_BYTES in all, and hands them out again for
 * requests of that size. Cached chunks do not count as used. Off under ASan, which must see every
 * malloc and free to find misuse.
 */
#if defined(__SANITIZE_ADDRESS__)
#define CHUNK_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHUNK_CACHE 0
#endif
#endif
#ifndef CHUNK_CACHE
#define CHUNK_CACHE 1
#endif

#define CACHE_MAX_USABLE 1016
#define CACHE_CLASSES (CACHE_MAX_USABLE / 16 + 1)
#define CACHE_PER_CLASS 2048
#define CACHE_MAX_BYTES (4u << 20)

struct chunk_cache {
    void *head[CACHE_CLASSES]; /* singly linked through each chunk's first word */
    uint32_t n[CACHE_CLASSES];
    size_t bytes;
};

static _Thread_local struct chunk_cache *my_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* A thread's cache goes back to malloc when the thread exits. */
static void cache_release(void *arg)
{
    struct chunk_cache *cc = arg;
    for (size_t k = 0; k < CACHE_CLASSES; k++) {
        while (cc->head[k] != NULL) {
            void *p = cc->head[k];
            cc->head[k] = *(void **)p;
            free(p);
        }
    }
    free(cc);
}

static void cache_key_init(void)
{
    if (pthread_key_create(&cache_key, cache_release) != 0) {
        abort();
    }
}

static __attribute__((noinline, cold)) struct chunk_cache *cache_init(void)
{
    pthread_once(&cache_once, cache_key_init);
    my_cache = calloc(1, sizeof(*my_cache));
    if (my_cache == NULL || pthread_setspecific(cache_key, my_cache) != 0) {
        abort();
    }
    return my_cache;
}

static inline struct chunk_cache *cache(void)
{
    struct chunk_cache *cc = my_cache;
    return __builtin_expect(cc != NULL, 1) ? cc : cache_init();
}

/* The usable size glibc gives a request of n bytes (64-bit: chunks of 16k bytes, at least 32,
 * 8 of them header). */
static inline size_t usable_for(size_t n)
{
    size_t chunk = (n + 8 + 15) & ~(size_t)15;
    return (chunk < 32 ? 32 : chunk) - 8;
}

/* A cached chunk for a request of n bytes (counted as used), or NULL. */
static inline void *cache_take(size_t n)
{
    size_t u = usable_for(n);
    if (!CHUNK_CACHE || u > CACHE_MAX_USABLE) {
        return NULL;
    }
    struct chunk_cache *cc = cache();
    void *p = cc->head[u / 16];
    if (p != NULL) {
        cc->head[u / 16] = *(void **)p;
        cc->n[u / 16]--;
        cc->bytes -= u;
        count((int64_t)u);
    }
    return p;
}

/* Keeps p (usable size u) for reuse; false when it must go back to malloc. Only chunks of a glibc
 * size (16k + 8 usable bytes) are kept: cache_take hands a chunk of class u / 16 to any request
 * whose glibc size is in that class, which another malloc's chunk of the class may be too small
 * for (with jemalloc preloaded, a 112-byte chunk went to a 115-byte request: the daemon then
 * misparsed SET values, found by bench/mem.sh). Under another allocator nothing is kept. */
static inline bool cache_keep(void *p, size_t u)
{
    if (!CHUNK_CACHE || u > CACHE_MAX_USABLE || u != usable_for(u)) {
        return false;
    }
    struct chunk_cache *cc = cache();
    if (cc->n[u / 16] >= CACHE_PER_CLASS || cc->bytes + u > CACHE_MAX_BYTES) {
        return false;
    }
    *(void **)p = cc->head[u / 16];
    cc->head[u / 16] = p;
    cc->n[u / 16]++;
    cc->bytes += u;
    return true;
}

static void *oom(size_t size, const char *file, int line)
{
    fprintf(stderr, "cachemed: out of memory allocating %zu bytes at %s:%d\n", size, file, line);
    abort();
}

void *cm_malloc_at(size_t size, const char *file, int line)
{
    void *p = cache_take(size);
    if (p != NULL) {
        return p;
    }
    p = malloc(size ? size : 1);
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
    void *p = cache_take(n * size);
    if (p != NULL) {
        memset(p, 0, n * size);
        return p;
    }
    p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        return oom(n * size, file, line);
    }
    count((int64_t)malloc_usable_size(p));
    return p;
}

void *cm_realloc_at(void *ptr, size_t size, const char *file, int line)
{
    if (ptr == NULL) {
        return cm_malloc_at(size, file, line);  /* arrays grown from nothing: cached sizes */
    }
    size_t old = malloc_usable_size(ptr);
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
    size_t u = malloc_usable_size(ptr);
    count(-(int64_t)u);
    if (!cache_keep(ptr, u)) {
        free(ptr);
    }
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
