/* The DoorKeeper (SPEC section 9): a per-node bloom filter, sized as Cacheme sizes it, that
 * lets a loaded value into the caches only the second time it is loaded in one filter period. */
#ifndef CM_DAEMON_BLOOM_H
#define CM_DAEMON_BLOOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_bloom;

/* Creates a filter for capacity keys at false-positive rate fpp:
 * bits = next power of two of capacity * -ln(fpp) / ln(2)^2, k = floor(ln 2 * bits / capacity)
 * (at least 1). Returns NULL when capacity is 0 or fpp is not in (0, 1). Free with cm_bloom_free. */
struct cm_bloom *cm_bloom_new(uint64_t capacity, double fpp);
void cm_bloom_free(struct cm_bloom *b);

/* Returns true when key was (probably) already in the filter: "cache it". Otherwise adds it and
 * returns false. When the keys added since the last clear have reached capacity, the filter is
 * cleared first, so the newest key always survives the clear. */
bool cm_bloom_add_if_absent(struct cm_bloom *b, const char *key, size_t klen);
/* True when key is (probably) in the filter; changes nothing. */
bool cm_bloom_contains(const struct cm_bloom *b, const char *key, size_t klen);
/* Forgets every key. */
void cm_bloom_clear(struct cm_bloom *b);

uint64_t cm_bloom_bits(const struct cm_bloom *b);     /* size in bits */
unsigned cm_bloom_hashes(const struct cm_bloom *b);   /* k */
uint64_t cm_bloom_count(const struct cm_bloom *b);    /* keys added since the last clear */
uint64_t cm_bloom_clears(const struct cm_bloom *b);   /* times it cleared itself at capacity */

#endif
