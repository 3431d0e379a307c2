/* W-TinyLFU's frequency sketch and window hill climber (storages/local.h). Both follow
 * Caffeine's design; unlike Theine 0.3's sketch, this one ages (halves) its counters. */
#include "storages/local.h"
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <math.h>
#include <string.h>

#define SKETCH_RESET_MASK 0x7777777777777777ULL
#define SKETCH_ONE_MASK 0x1111111111111111ULL
/* At least 8,192 words (64 KB): a 500-entry cache would otherwise get 64 blocks, and the few
 * thousand distinct keys of a sample crowd them (Zipf at 500 entries: +0.26 points; larger floors
 * gain nothing more there). Caches of 8,192 entries and more keep 16 counters per entry. The
 * floor is capped at 16 words per entry: the halving reads every word once per 5 to 10 x size
 * increments, so a full 64 KB table made each request of a 1-entry cache cost a 1.4 us pass. */
#define SKETCH_MIN_WORDS 8192
#define SKETCH_FLOOR_WORDS_PER_ENTRY 16

#define CLIMBER_RESTART_THRESHOLD 0.05
#define CLIMBER_STEP_PERCENT 0.0625
#define CLIMBER_STEP_DECAY 0.98
/* A sample's hit ratio varies more than a binomial one: the sketch halves its counters about
 * once per sample (both span 10 x size), and admission swings with that cycle. At 3 standard
 * errors the window still drifted on a stationary Zipf stream (to 33 of 500 entries, -0.3 points);
 * at 5 it stays at its minimum there, and a real shift still moves it (tests/unit/check_local.c). */
#define CLIMBER_NOISE_Z 5.0

static uint64_t pow2_at_least(uint64_t x)
{
    uint64_t p = 1;
    while (p < x) {
        p <<= 1;
    }
    return p;
}

void cm_sketch_init(struct cm_sketch *s, uint64_t size)
{
    memset(s, 0, sizeof(*s));
    uint64_t least = size < SKETCH_MIN_WORDS / SKETCH_FLOOR_WORDS_PER_ENTRY
                         ? SKETCH_FLOOR_WORDS_PER_ENTRY * size
                         : SKETCH_MIN_WORDS;
    s->nwords = pow2_at_least(size > least ? size : least > 8 ? least : 8);
    s->table = cm_calloc(s->nwords, sizeof(uint64_t));
    s->block_mask = (s->nwords >> 3) - 1;
    s->sample_size = size == 0 ? 10 : 10 * size;
}

void cm_sketch_deinit(struct cm_sketch *s)
{
    cm_free(s->table);
    s->table = NULL;
}

/* The block (8 words = 64 bytes) comes from the high half of h, the four counters from the low
 * half: counter i lives in word block + 2i + (bit 0 of byte i), at nibble (bits 1..4 of byte i). */
static inline uint64_t sketch_slot(const struct cm_sketch *s, uint64_t h, int i, unsigned *shift)
{
    uint64_t block = ((h >> 32) & s->block_mask) << 3;
    uint32_t ch = (uint32_t)h >> (i << 3);
    *shift = ((ch >> 1) & 15) << 2;
    return block + (ch & 1) + ((uint64_t)i << 1);
}

unsigned cm_sketch_frequency(const struct cm_sketch *s, uint64_t h)
{
    unsigned freq = 15;
    for (int i = 0; i < 4; i++) {
        unsigned shift;
        uint64_t w = sketch_slot(s, h, i, &shift);
        unsigned c = (unsigned)((s->table[w] >> shift) & 15);
        freq = c < freq ? c : freq;
    }
    return freq;
}

void cm_sketch_increment(struct cm_sketch *s, uint64_t h)
{
    /* Conservative update: only the counters at the current minimum grow, so the one-hit
     * keys that share a counter inflate a popular key's estimate less. */
    unsigned min = cm_sketch_frequency(s, h);
    bool added = false;
    if (min == 15) {
        return;
    }
    for (int i = 0; i < 4; i++) {
        unsigned shift;
        uint64_t w = sketch_slot(s, h, i, &shift);
        if (((s->table[w] >> shift) & 15) == min) {
            s->table[w] += 1ULL << shift;
            added = true;
        }
    }
    if (added && ++s->additions >= s->sample_size) {
        cm_sketch_reset(s);
    }
}

void cm_sketch_reset(struct cm_sketch *s)
{
    uint64_t odd = 0;
    for (uint64_t i = 0; i < s->nwords; i++) {
        odd += (uint64_t)__builtin_popcountll(s->table[i] & SKETCH_ONE_MASK);
        s->table[i] = (s->table[i] >> 1) & SKETCH_RESET_MASK;
    }
    /* Each key owns four counters: a quarter of the odd counters is the rounding lost. */
    uint64_t lost = odd >> 2;
    s->additions = (s->additions > lost ? s->additions - lost : 0) >> 1;
    s->resets++;
}

void cm_climber_init(struct cm_climber *c, uint64_t size)
{
    memset(c, 0, sizeof(*c));
    c->size = size;
    c->sample_size = size == 0 ? 10 : 10 * size;
    c->step = -CLIMBER_STEP_PERCENT * (double)size;
}

int64_t cm_climber_record(struct cm_climber *c, bool hit)
{
    if (hit) {
        c->hits++;
    } else {
        c->misses++;
    }
    uint64_t n = c->hits + c->misses;
    if (n < c->sample_size) {
        return 0;
    }
    double rate = (double)c->hits / (double)n;
    double change = rate - c->prev_rate;
    double amount = change >= 0 ? c->step : -c->step;
    double next;
    /* Unlike Caffeine, a change within CLIMBER_NOISE_Z standard errors of the sample's hit ratio
     * is noise: stay put. Following noise is a random walk that, bounded below by a one-entry
     * window, drifts the window up (measured without the filter: 162 of 500 entries after 1M
     * Zipf requests, -2.4 points). */
    double noise = CLIMBER_NOISE_Z * sqrt(rate * (1 - rate) / (double)n);
    if (fabs(change) < noise) {
        amount = 0;
        next = c->step;
    } else if (fabs(change) >= CLIMBER_RESTART_THRESHOLD) {
        next = CLIMBER_STEP_PERCENT * (double)c->size * (amount >= 0 ? 1 : -1);
    } else {
        next = CLIMBER_STEP_DECAY * amount;
    }
    c->prev_rate = rate;
    c->step = next;
    c->hits = 0;
    c->misses = 0;
    return (int64_t)amount;
}
