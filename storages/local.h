/* The in-process cache engine behind local://lru and local://tlfu (W-TinyLFU). The daemon's
 * storage adapter, the hit-ratio simulator (bench/hitratio.c) and the unit tests all drive
 * this same code. Single-threaded: one engine belongs to one event loop. */
#ifndef CM_STORAGES_LOCAL_H
#define CM_STORAGES_LOCAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cm_local_policy {
    CM_LOCAL_LRU = 0,    /* one LRU list */
    CM_LOCAL_TLFU,       /* W-TinyLFU: window LRU + segmented LRU main, sketch admission */
};

/* Largest accepted size (entries); links are 32-bit slot indices. */
#define CM_LOCAL_MAX_SIZE ((uint64_t)1 << 31)
/* Longest key and value the engine stores; longer ones are not cached. */
#define CM_LOCAL_MAX_KLEN ((size_t)1 << 28)
#define CM_LOCAL_MAX_VLEN ((size_t)UINT32_MAX)

/* Counters and sizes of one engine, for INFO, the benchmark and tests. */
struct cm_local_stats {
    uint64_t entries;         /* live entries (expired ones not yet reclaimed included) */
    uint64_t memory_bytes;    /* bytes allocated by the engine: entries, index, sketch */
    uint64_t kv_bytes;        /* key and value bytes of the entries (memory_bytes - this = overhead) */
    uint64_t max_memory;      /* bound on memory_bytes, 0 = none */
    uint64_t size;            /* maximum entries now (under max_memory: what fits) */
    uint64_t size_limit;      /* configured maximum entries */
    uint64_t window;          /* tlfu: entries in the admission window */
    uint64_t probation;       /* tlfu: entries in the main probation segment */
    uint64_t protected_;      /* tlfu: entries in the main protected segment */
    uint64_t window_max;      /* tlfu: current window size target (moved by the hill climber) */
    uint64_t protected_max;   /* tlfu: current protected size target */
    uint64_t evictions;       /* entries evicted for room (admission rejections included) */
    uint64_t expired;         /* expired entries reclaimed (on access or by sampling) */
};

struct cm_local;

/* Creates an engine holding at most size entries (1 <= size <= CM_LOCAL_MAX_SIZE). seed drives
 * the key hash and the admission coin, so a given seed replays identically. */
struct cm_local *cm_local_new(enum cm_local_policy policy, uint64_t size, uint64_t seed);
/* The same, bounded by bytes too (SPEC §15): max_bytes > 0 keeps memory_bytes (every byte the
 * engine allocates) at most max_bytes after every call, evicting by the policy; an entry costing
 * more than max_bytes / 8 is not stored. The entry capacity then follows what fits, up to
 * size_limit entries. max_bytes 0 = cm_local_new. */
struct cm_local *cm_local_new_bounded(enum cm_local_policy policy, uint64_t size_limit,
                                      uint64_t max_bytes, uint64_t seed);
/* Frees the engine and every entry. NULL is a no-op. */
void cm_local_free(struct cm_local *lc);

/* Times are ms of one engine clock (the daemon passes monotonic ms); any int64 is accepted and
 * no sum overflows. Expiry and write time are kept to 10 ms (expiry rounded up, never early).
 *
 * Looks key up at time now_ms. On a live hit returns true and points *val and *vlen at the stored
 * bytes, valid until the next call into this engine, and sets *written_ms (if not NULL) to the
 * write time given to cm_local_set (floored to 10 ms; at most 62 days before the engine's first
 * call). An expired entry is reclaimed and missed. Every lookup counts as one access for the
 * policy (recency, frequency, hill climber). */
bool cm_local_get(struct cm_local *lc, const char *key, size_t klen, int64_t now_ms,
                  const char **val, size_t *vlen, int64_t *written_ms);
/* Stores a copy of key and val at time now_ms; ttl_ms > 0 expires at now_ms + ttl_ms, -1 (or 0)
 * never; a ttl beyond about 248 days (or where now_ms + ttl_ms overflows) never expires.
 * written_ms is when the value was written at its source (now_ms when later than now_ms).
 * Replaces the value and TTL of an existing key. May evict (or, tlfu, not admit) an entry.
 * A key or value above the CM_LOCAL_MAX_* limits is not stored (any old value is dropped). */
void cm_local_set(struct cm_local *lc, const char *key, size_t klen, const char *val,
                  size_t vlen, int64_t ttl_ms, int64_t now_ms, int64_t written_ms);
/* Removes key; returns true when it was present (expired or not). */
bool cm_local_del(struct cm_local *lc, const char *key, size_t klen);
/* Reclaims expired entries by random sampling (Redis's active-expire cycle): rounds of 20
 * random entries until fewer than a quarter of a round was expired or max_rounds ran.
 * Returns the number reclaimed. Cost is bounded by max_rounds, never a full scan. */
size_t cm_local_expire(struct cm_local *lc, int64_t now_ms, unsigned max_rounds);
void cm_local_get_stats(const struct cm_local *lc, struct cm_local_stats *out);
/* The policy queue key is in: 0 absent, 1 lru/window, 2 probation, 3 protected (tests). */
int cm_local_queue_of(struct cm_local *lc, const char *key, size_t klen);

/* The 4-bit count-min sketch of W-TinyLFU (Caffeine's layout): 16 counters per entry of size
 * (at least 8,192 words, 64 KB, or 16 words per entry if that is less), the four counters of a
 * key inside one 64-byte block; after 10 x size increments every counter is halved. */
struct cm_sketch {
    uint64_t *table;        /* owned; nwords 64-bit words of 16 counters */
    uint64_t nwords;        /* power of two, at least min(8,192, 16 x size) and 8 */
    uint64_t block_mask;    /* (nwords / 8) - 1 */
    uint64_t additions;     /* increments since the last halving */
    uint64_t sample_size;   /* halve when additions reaches this (10 x size) */
    uint64_t resets;        /* number of halvings so far */
};

void cm_sketch_init(struct cm_sketch *s, uint64_t size);
void cm_sketch_deinit(struct cm_sketch *s);
/* Estimated frequency (0..15) of the key whose hash is h. */
unsigned cm_sketch_frequency(const struct cm_sketch *s, uint64_t h);
/* Counts one occurrence of h; may halve every counter (aging). */
void cm_sketch_increment(struct cm_sketch *s, uint64_t h);
/* Halves every counter now (called by increment at the sample size). */
void cm_sketch_reset(struct cm_sketch *s);

/* Caffeine's hill climber for the window size: after each sample of 10 x size accesses it
 * steps the window in the direction that last improved the hit ratio (6.25% of size, decaying
 * by 0.98 while the hit ratio is stable, restarting on a 5% change). */
struct cm_climber {
    uint64_t hits;          /* accesses of the current sample that hit */
    uint64_t misses;        /* ... that missed */
    uint64_t sample_size;   /* accesses per sample */
    double prev_rate;       /* hit ratio of the previous sample */
    double step;            /* next step, signed, in entries (negative shrinks the window) */
    uint64_t size;          /* cache size, for the restart step */
};

void cm_climber_init(struct cm_climber *c, uint64_t size);
/* Records one access. When the sample is complete returns the window adjustment in entries
 * (> 0 grow, < 0 shrink) and starts a new sample; otherwise returns 0. */
int64_t cm_climber_record(struct cm_climber *c, bool hit);

#endif
