/* The DoorKeeper bloom filter (daemon/bloom.h): k probes by double hashing over a power-of-two
 * bit array, cleared when the keys added reach its capacity. */
#include "daemon/bloom.h"
#include "daemon/alloc.h"
#include "daemon/util.h"

#include <math.h>
#include <string.h>

/* One filter, owned by its node. */
struct cm_bloom {
    uint64_t *words;      /* owned, ceil(bits / 64) words */
    uint64_t bits;        /* power of two */
    uint64_t capacity;    /* clear when count reaches it */
    uint64_t count;       /* keys added since the last clear */
    uint64_t clears;
    unsigned k;           /* probes per key */
};

struct cm_bloom *cm_bloom_new(uint64_t capacity, double fpp)
{
    if (capacity == 0 || !(fpp > 0.0 && fpp < 1.0)) {
        return NULL;
    }
    double ln2 = log(2.0);
    double want = ceil((double)capacity * -log(fpp) / (ln2 * ln2));
    uint64_t bits = 1;
    while ((double)bits < want) {
        bits <<= 1;
    }
    struct cm_bloom *b = cm_calloc(1, sizeof(*b));
    b->bits = bits;
    b->capacity = capacity;
    double k = floor(ln2 * (double)bits / (double)capacity);
    b->k = k < 1 ? 1 : k > 32 ? 32 : (unsigned)k;
    b->words = cm_calloc((bits + 63) / 64, sizeof(uint64_t));
    return b;
}

void cm_bloom_free(struct cm_bloom *b)
{
    if (b == NULL) {
        return;
    }
    cm_free(b->words);
    cm_free(b);
}

/* Kirsch-Mitzenmacher: probe i is h1 + i * h2 (h2 odd, so the probes differ mod 2^n). */
static void probes(const char *key, size_t klen, uint64_t *h1, uint64_t *h2)
{
    uint64_t h = cm_hash(key, klen);
    *h1 = h;
    *h2 = ((h >> 32) | (h << 32)) * 0x9e3779b97f4a7c15ULL | 1;
}

bool cm_bloom_contains(const struct cm_bloom *b, const char *key, size_t klen)
{
    uint64_t h1, h2, mask = b->bits - 1;
    probes(key, klen, &h1, &h2);
    for (unsigned i = 0; i < b->k; i++) {
        uint64_t bit = (h1 + i * h2) & mask;
        if (!(b->words[bit >> 6] & (1ULL << (bit & 63)))) {
            return false;
        }
    }
    return true;
}

bool cm_bloom_add_if_absent(struct cm_bloom *b, const char *key, size_t klen)
{
    if (cm_bloom_contains(b, key, klen)) {
        return true;
    }
    if (b->count >= b->capacity) {
        cm_bloom_clear(b);
        b->clears++;
    }
    uint64_t h1, h2, mask = b->bits - 1;
    probes(key, klen, &h1, &h2);
    for (unsigned i = 0; i < b->k; i++) {
        uint64_t bit = (h1 + i * h2) & mask;
        b->words[bit >> 6] |= 1ULL << (bit & 63);
    }
    b->count++;
    return false;
}

void cm_bloom_clear(struct cm_bloom *b)
{
    memset(b->words, 0, (size_t)((b->bits + 63) / 64) * sizeof(uint64_t));
    b->count = 0;
}

uint64_t cm_bloom_bits(const struct cm_bloom *b) { return b->bits; }
unsigned cm_bloom_hashes(const struct cm_bloom *b) { return b->k; }
uint64_t cm_bloom_count(const struct cm_bloom *b) { return b->count; }
uint64_t cm_bloom_clears(const struct cm_bloom *b) { return b->clears; }
