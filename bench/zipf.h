/* A port of Go's math/rand Zipf generator (rand.NewZipf(rand.New(rand.NewSource(seed)), s, v,
 * imax)), the key generator of Cacheme's and the public Go caches' hit-ratio benchmarks.
 *
 * Go's rngSource is an additive lagged Fibonacci generator (lags 607/273, Mitchell & Reeds)
 * whose seeding XORs a 607-word table, rngCooked, into the state. That table is Go's code and
 * is not copied here: zipf_go_load_cooked() reads it at run time from a Go source tree
 * (bench/hitratio.sh passes $(go env GOROOT)/src/math/rand/rng.go when Go is installed).
 * With the table loaded, a seed yields Go's exact Int63 sequence (and so Go's Zipf keys, up to
 * last-bit differences between glibc's exp/log and Go's, which can move a rare rejection test).
 * Without it the table is zero: same generator, same distribution, a different sequence.
 * Header-only, for the benchmarks. */
#ifndef CM_BENCH_ZIPF_H
#define CM_BENCH_ZIPF_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZIPF_GO_LEN 607
#define ZIPF_GO_TAP 273
#define ZIPF_GO_M 2147483647      /* 2^31 - 1 */

/* rngCooked, when loaded; zeros otherwise. */
static int64_t zipf_go_cooked[ZIPF_GO_LEN];
static bool zipf_go_cooked_loaded;

/* Loads rngCooked from Go's src/math/rand/rng.go: the 607 integers of its rngCooked array.
 * Returns true when exactly 607 were found. */
static inline bool zipf_go_load_cooked(const char *rng_go_path)
{
    FILE *f = fopen(rng_go_path, "r");
    if (f == NULL) {
        return false;
    }
    char line[4096];
    bool in_table = false;
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL && n <= ZIPF_GO_LEN) {
        if (!in_table) {
            in_table = strstr(line, "ooked") != NULL && strstr(line, "int64{") != NULL;
            continue;
        }
        if (strchr(line, '}') != NULL) {
            break;
        }
        for (char *p = line; *p != '\0';) {
            if ((*p >= '0' && *p <= '9') || *p == '-') {
                char *end;
                long long v = strtoll(p, &end, 10);
                if (end == p) {
                    p++;
                    continue;
                }
                if (n < ZIPF_GO_LEN) {
                    zipf_go_cooked[n] = (int64_t)v;
                }
                n++;
                p = end;
            } else {
                p++;
            }
        }
    }
    fclose(f);
    if (n != ZIPF_GO_LEN) {
        memset(zipf_go_cooked, 0, sizeof(zipf_go_cooked));
        return false;
    }
    zipf_go_cooked_loaded = true;
    return true;
}

/* Go's rngSource. */
struct zipf_go_rng {
    int tap;
    int feed;
    int64_t vec[ZIPF_GO_LEN];
};

/* x[n+1] = 48271 * x[n] mod (2^31 - 1), Schrage's method as in Go. */
static inline int32_t zipf_go_seedrand(int32_t x)
{
    int32_t hi = x / 44488, lo = x % 44488;
    x = 48271 * lo - 3399 * hi;
    return x < 0 ? x + ZIPF_GO_M : x;
}

static inline void zipf_go_seed(struct zipf_go_rng *r, int64_t seed)
{
    r->tap = 0;
    r->feed = ZIPF_GO_LEN - ZIPF_GO_TAP;
    seed %= ZIPF_GO_M;
    if (seed < 0) {
        seed += ZIPF_GO_M;
    }
    if (seed == 0) {
        seed = 89482311;
    }
    int32_t x = (int32_t)seed;
    for (int i = -20; i < ZIPF_GO_LEN; i++) {
        x = zipf_go_seedrand(x);
        if (i >= 0) {
            uint64_t u = (uint64_t)(int64_t)x << 40;
            x = zipf_go_seedrand(x);
            u ^= (uint64_t)(int64_t)x << 20;
            x = zipf_go_seedrand(x);
            u ^= (uint64_t)(int64_t)x;
            u ^= (uint64_t)zipf_go_cooked[i];
            r->vec[i] = (int64_t)u;
        }
    }
}

static inline int64_t zipf_go_int63(struct zipf_go_rng *r)
{
    if (--r->tap < 0) {
        r->tap += ZIPF_GO_LEN;
    }
    if (--r->feed < 0) {
        r->feed += ZIPF_GO_LEN;
    }
    uint64_t x = (uint64_t)r->vec[r->feed] + (uint64_t)r->vec[r->tap];
    r->vec[r->feed] = (int64_t)x;
    return (int64_t)(x & 0x7fffffffffffffffULL);
}

/* Go's Rand.Float64: [0, 1). */
static inline double zipf_go_float64(struct zipf_go_rng *r)
{
    for (;;) {
        double f = (double)zipf_go_int63(r) / 9223372036854775808.0;
        if (f != 1.0) {
            return f;
        }
    }
}

/* Go's Zipf: values k in [0, imax] with P(k) proportional to (v + k)^-s; s > 1, v >= 1. */
struct zipf {
    struct zipf_go_rng rng;
    double imax, v, q, s, oneminus_q, oneminus_qinv, hxm, hx0_minus_hxm;
};

static inline double zipf_h(const struct zipf *z, double x)
{
    return exp(z->oneminus_q * log(z->v + x)) * z->oneminus_qinv;
}

static inline double zipf_hinv(const struct zipf *z, double x)
{
    return exp(z->oneminus_qinv * log(z->oneminus_q * x)) - z->v;
}

/* Returns false (z unusable) when !(s > 1) or !(v >= 1), as Go's NewZipf returns nil. */
static inline bool zipf_init(struct zipf *z, int64_t seed, double s, double v, uint64_t imax)
{
    memset(z, 0, sizeof(*z));
    if (!(s > 1) || !(v >= 1) || isinf(s) || isinf(v)) {
        return false;
    }
    zipf_go_seed(&z->rng, seed);
    z->imax = (double)imax;
    z->v = v;
    z->q = s;
    z->oneminus_q = 1.0 - z->q;
    z->oneminus_qinv = 1.0 / z->oneminus_q;
    z->hxm = zipf_h(z, z->imax + 0.5);
    z->hx0_minus_hxm = zipf_h(z, 0.5) - exp(log(z->v) * (-z->q)) - z->hxm;
    z->s = 1 - zipf_hinv(z, zipf_h(z, 1.5) - exp(-z->q * log(z->v + 1.0)));
    return true;
}

static inline uint64_t zipf_next(struct zipf *z)
{
    double k;
    for (;;) {
        double r = zipf_go_float64(&z->rng);
        double ur = z->hxm + r * z->hx0_minus_hxm;
        double x = zipf_hinv(z, ur);
        k = floor(x + 0.5);
        if (k - x <= z->s) {
            break;
        }
        if (ur >= zipf_h(z, k + 0.5) - exp(-log(k + z->v) * z->q)) {
            break;
        }
    }
    return (uint64_t)k;
}

#endif
