/* Unit tests of the local cache engine (storages/local.h): LRU bound and order, TTLs and
 * sampled reclaim, W-TinyLFU queues and admission, the sketch's aging, the hill climber, the
 * storage adapter, and the per-entry memory overhead. */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/util.h"
#include "storages/local.h"
#include "storages/storage.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void kset(struct cm_local *lc, const char *k, const char *v, int64_t ttl, int64_t now)
{
    cm_local_set(lc, k, strlen(k), v, strlen(v), ttl, now, now);
}

static bool kget(struct cm_local *lc, const char *k, int64_t now, char *out, size_t outsz)
{
    const char *v;
    size_t vl;
    if (!cm_local_get(lc, k, strlen(k), now, &v, &vl, NULL)) {
        return false;
    }
    if (out != NULL) {
        snprintf(out, outsz, "%.*s", (int)vl, v);
    }
    return true;
}

static bool khas(struct cm_local *lc, const char *k)
{
    return cm_local_queue_of(lc, k, strlen(k)) != 0;
}

static struct cm_local_stats stats(struct cm_local *lc)
{
    struct cm_local_stats s;
    cm_local_get_stats(lc, &s);
    return s;
}

START_TEST(test_lru_bound_and_order)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_LRU, 3, 1);
    char buf[32];
    kset(lc, "a", "1", -1, 0);
    kset(lc, "b", "2", -1, 0);
    kset(lc, "c", "3", -1, 0);
    ck_assert(kget(lc, "a", 0, buf, sizeof(buf)));   /* a becomes most recent: b is LRU */
    ck_assert_str_eq(buf, "1");
    kset(lc, "d", "4", -1, 0);
    ck_assert(!khas(lc, "b"));
    ck_assert(khas(lc, "a") && khas(lc, "c") && khas(lc, "d"));
    ck_assert_uint_eq(stats(lc).entries, 3);
    ck_assert_uint_eq(stats(lc).evictions, 1);
    /* replace keeps one entry and takes the new value */
    kset(lc, "c", "three", -1, 0);
    ck_assert(kget(lc, "c", 0, buf, sizeof(buf)));
    ck_assert_str_eq(buf, "three");
    ck_assert_uint_eq(stats(lc).entries, 3);
    ck_assert(cm_local_del(lc, "c", 1));
    ck_assert(!cm_local_del(lc, "c", 1));
    ck_assert(!kget(lc, "c", 0, NULL, 0));
    ck_assert_uint_eq(stats(lc).entries, 2);
    cm_local_free(lc);
}
END_TEST

/* LRU's lazy promotion: a hit marks an entry instead of relinking it; eviction gives marked tail
 * entries one second chance each, so they outlive unmarked older ones, then age out normally. */
START_TEST(test_lru_second_chance)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_LRU, 4, 1);
    const char *order[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        kset(lc, order[i], "v", -1, 0);
    }
    ck_assert(kget(lc, "a", 0, NULL, 0));
    ck_assert(kget(lc, "b", 0, NULL, 0));
    kset(lc, "e", "v", -1, 0);   /* a and b are marked: c, the oldest unmarked, goes */
    ck_assert(!khas(lc, "c") && khas(lc, "a") && khas(lc, "b"));
    kset(lc, "f", "v", -1, 0);
    ck_assert(!khas(lc, "d"));
    kset(lc, "g", "v", -1, 0);
    ck_assert(!khas(lc, "e"));
    kset(lc, "h", "v", -1, 0);   /* a's mark was spent: without a new hit it ages out */
    ck_assert(!khas(lc, "a") && khas(lc, "b"));
    ck_assert_uint_eq(stats(lc).evictions, 4);
    cm_local_free(lc);
}
END_TEST

/* Binary keys and values, empty values, and many entries through index growth and removal. */
START_TEST(test_many_entries_and_binary)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_LRU, 5000, 7);
    for (int i = 0; i < 5000; i++) {
        char k[16] = { 0 };
        memcpy(k, &i, sizeof(i));
        cm_local_set(lc, k, 16, k, (size_t)(i % 3 == 0 ? 0 : 16), -1, 0, 0);
    }
    for (int i = 0; i < 5000; i += 2) {
        char k[16] = { 0 };
        memcpy(k, &i, sizeof(i));
        ck_assert(cm_local_del(lc, k, 16));
    }
    for (int i = 0; i < 5000; i++) {
        char k[16] = { 0 };
        memcpy(k, &i, sizeof(i));
        const char *v;
        size_t vl;
        bool hit = cm_local_get(lc, k, 16, 0, &v, &vl, NULL);
        ck_assert_int_eq(hit, i % 2 == 1);
        if (hit) {
            ck_assert_uint_eq(vl, i % 3 == 0 ? 0 : 16);
            ck_assert(vl == 0 || memcmp(v, k, 16) == 0);
        }
    }
    ck_assert_uint_eq(stats(lc).entries, 2500);
    cm_local_free(lc);
}
END_TEST

/* The open-addressing index against a model: random stores, replacements and deletions over a
 * small key space, so probe runs wrap and deletions shift cells back; every key is checked. */
START_TEST(test_index_matches_model)
{
    enum { NKEYS = 3000 };
    struct cm_local *lc = cm_local_new(CM_LOCAL_LRU, NKEYS, 5);
    static int model[NKEYS];   /* 0 = absent, else the value stored */
    memset(model, 0, sizeof(model));
    uint64_t x = 12345;
    char k[16], v[16];
    for (int op = 0; op < 200000; op++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int key = (int)((x >> 33) % NKEYS);
        snprintf(k, sizeof(k), "k%d", key);
        if ((x >> 20) % 3 == 0) {
            ck_assert_int_eq(cm_local_del(lc, k, strlen(k)), model[key] != 0);
            model[key] = 0;
        } else {
            model[key] = op + 1;
            snprintf(v, sizeof(v), "%d", op + 1);
            kset(lc, k, v, -1, 0);
        }
    }
    size_t live = 0;
    for (int key = 0; key < NKEYS; key++) {
        char buf[16];
        snprintf(k, sizeof(k), "k%d", key);
        ck_assert_int_eq(kget(lc, k, 0, buf, sizeof(buf)), model[key] != 0);
        if (model[key] != 0) {
            ck_assert_int_eq(atoi(buf), model[key]);
            live++;
        }
    }
    ck_assert_uint_eq(stats(lc).entries, live);
    cm_local_free(lc);
}
END_TEST

START_TEST(test_ttl_never_returned_and_replaced)
{
    enum cm_local_policy pol = (enum cm_local_policy)_i;
    struct cm_local *lc = cm_local_new(pol, 100, 3);
    kset(lc, "k", "v", 1000, 5000);
    ck_assert(kget(lc, "k", 5999, NULL, 0));
    ck_assert(!kget(lc, "k", 6000, NULL, 0));          /* expired exactly at now + ttl */
    ck_assert_uint_eq(stats(lc).entries, 0);           /* and reclaimed by the access */
    ck_assert_uint_eq(stats(lc).expired, 1);
    kset(lc, "k", "v", 1000, 0);
    kset(lc, "k", "w", -1, 0);                         /* a store replaces the TTL too */
    ck_assert(kget(lc, "k", 1000000, NULL, 0));
    kset(lc, "k", "x", 10, 0);
    ck_assert(!kget(lc, "k", 10, NULL, 0));
    cm_local_free(lc);
}
END_TEST

/* Issue 14 defect 14: SET ... PX 9223372036854775807 answered OK and the next GET missed (UBSan:
 * signed overflow computing now + ttl). A ttl whose end does not fit never expires; no time sum
 * overflows whatever the clock reads. */
START_TEST(test_issue_14_huge_ttl_never_expires)
{
    enum cm_local_policy pol = (enum cm_local_policy)_i;
    struct cm_local *lc = cm_local_new(pol, 100, 3);
    kset(lc, "k", "v", INT64_MAX, 1000);
    ck_assert(kget(lc, "k", 1000, NULL, 0));
    ck_assert(kget(lc, "k", INT64_MAX / 2, NULL, 0));
    kset(lc, "m", "v", INT64_MAX - 10, INT64_MAX / 2);  /* the clock far ahead: no overflow */
    ck_assert(kget(lc, "m", INT64_MAX, NULL, 0));
    kset(lc, "n", "v", 1000, INT64_MAX - 10);           /* now + ttl overflows */
    ck_assert(kget(lc, "n", INT64_MAX, NULL, 0));
    kset(lc, "o", "v", 1000, INT64_MIN);                /* and the other end of the clock */
    ck_assert(kget(lc, "o", INT64_MIN, NULL, 0));
    ck_assert(kget(lc, "k", INT64_MAX, NULL, 0));
    ck_assert_uint_eq(cm_local_expire(lc, INT64_MAX, 4), 0);
    cm_local_free(lc);
}
END_TEST

/* A ttl of 240 days outlives a rebase of the 32-bit tick clock (after 186 days): it still expires
 * at its time, neither early nor never. */
START_TEST(test_ttl_across_clock_rebase)
{
    const int64_t day = 86400000;
    struct cm_local *lc = cm_local_new(CM_LOCAL_LRU, 100, 3);
    kset(lc, "k", "v", 240 * day, 5);
    kset(lc, "short", "v", 1000, 5);
    ck_assert(kget(lc, "k", 200 * day, NULL, 0));    /* rebases here */
    ck_assert(!kget(lc, "short", 200 * day, NULL, 0));
    ck_assert(kget(lc, "k", 240 * day + 4, NULL, 0));
    ck_assert(!kget(lc, "k", 240 * day + 5, NULL, 0));
    cm_local_free(lc);
}
END_TEST

/* SPEC §12: an entry keeps the write time given to the store (10 ms resolution) and a lookup
 * reports it; a write time in the future reads as the store's time. */
START_TEST(test_written_time_kept)
{
    enum cm_local_policy pol = (enum cm_local_policy)_i;
    struct cm_local *lc = cm_local_new(pol, 100, 3);
    const char *v;
    size_t vl;
    int64_t w = -1;
    cm_local_set(lc, "a", 1, "1", 1, 60000, 100000, 40005);
    ck_assert(cm_local_get(lc, "a", 1, 100500, &v, &vl, &w));
    ck_assert_int_eq(w, 40000);
    cm_local_set(lc, "b", 1, "2", 1, -1, 100000, 900000);
    ck_assert(cm_local_get(lc, "b", 1, 100500, &v, &vl, &w));
    ck_assert_int_eq(w, 100000);
    cm_local_set(lc, "a", 1, "3", 1, -1, 200000, 199990);   /* a replace takes the new time */
    ck_assert(cm_local_get(lc, "a", 1, 200000, &v, &vl, &w));
    ck_assert_int_eq(w, 199990);
    /* 100 days old: older than the clock reaches back, reads as about 62 days old */
    cm_local_set(lc, "c", 1, "4", 1, -1, 300000, 300000 - 100LL * 86400000);
    ck_assert(cm_local_get(lc, "c", 1, 300000, &v, &vl, &w));
    ck_assert(w < 300000 - 61LL * 86400000 && w > 300000 - 63LL * 86400000);
    cm_local_free(lc);
}
END_TEST

/* SPEC §15: under max_memory the engine's memory_bytes (entries, index, sketch) never exceeds the
 * bound after a store, eviction follows the policy (recent keys stay), the capacity follows what
 * fits, and an entry costing more than an eighth of the bound is not cached (its old value goes). */
START_TEST(test_max_memory_bound)
{
    enum cm_local_policy pol = (enum cm_local_policy)_i;
    const uint64_t max = 1 << 20;
    struct cm_local *lc = cm_local_new_bounded(pol, CM_LOCAL_MAX_SIZE, max, 5);
    static char val[1000];
    memset(val, 'v', sizeof(val));
    char key[32];
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof(key), "key:%08d", i);
        cm_local_set(lc, key, (size_t)kl, val, sizeof(val) - (size_t)(i % 7) * 100, -1, 0, 0);
        ck_assert_uint_le(stats(lc).memory_bytes, max);
    }
    struct cm_local_stats st = stats(lc);
    /* about 1 MB / 1 KB entries: most of the bytes hold entries */
    ck_assert_uint_gt(st.entries, 600);
    ck_assert_uint_gt(st.kv_bytes, max / 2);
    ck_assert_uint_eq(st.evictions, (uint64_t)n - st.entries);
    int recent = pol == CM_LOCAL_LRU ? 300 : 5;   /* tlfu: the window's (1%) */
    for (int i = n - recent; i < n; i++) {
        int kl = snprintf(key, sizeof(key), "key:%08d", i);
        ck_assert_msg(cm_local_queue_of(lc, key, (size_t)kl) != 0, "recent %s evicted", key);
    }
    /* an eighth of max_memory or more is not cached, and drops the old value */
    static char big[(1 << 20) / 8];
    cm_local_set(lc, key, strlen(key), big, sizeof(big), -1, 0, 0);
    ck_assert(!khas(lc, key));
    cm_local_set(lc, "small", 5, big, sizeof(big) - 200, -1, 0, 0);
    ck_assert(khas(lc, "small"));
    ck_assert_uint_le(stats(lc).memory_bytes, max);
    cm_local_free(lc);
}
END_TEST

/* With size too, the entry bound holds as well as the byte bound. */
START_TEST(test_max_memory_with_size)
{
    enum cm_local_policy pol = (enum cm_local_policy)_i;
    struct cm_local *lc = cm_local_new_bounded(pol, 100, 1 << 20, 5);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int kl = snprintf(key, sizeof(key), "key:%08d", i);
        cm_local_set(lc, key, (size_t)kl, "v", 1, -1, 0, 0);
        ck_assert_uint_le(stats(lc).entries, 100);
        ck_assert_uint_le(stats(lc).memory_bytes, 1 << 20);
    }
    ck_assert_uint_eq(stats(lc).entries, 100);
    cm_local_free(lc);
}
END_TEST

/* Expired entries that are never read again are reclaimed by sampling, without a full scan:
 * a bounded number of rounds frees most of them, and live entries are never touched. */
START_TEST(test_expire_sampling_reclaims)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_LRU, 20000, 11);
    char k[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "short:%d", i);
        kset(lc, k, "v", 100, 0);
        snprintf(k, sizeof(k), "long:%d", i);
        kset(lc, k, "v", -1, 0);
    }
    size_t before = stats(lc).memory_bytes;
    /* one round at most 20 samples: one call can never scan everything */
    ck_assert_uint_le(cm_local_expire(lc, 200, 1), 20);
    size_t freed = 0;
    for (int tick = 0; tick < 2000 && stats(lc).entries > 10000; tick++) {
        freed += cm_local_expire(lc, 200, 16);
    }
    /* like Redis, sampling stops once under a quarter of a round is expired */
    ck_assert_uint_le(stats(lc).entries, 10500);
    ck_assert_uint_ge(freed, 9500);
    ck_assert_uint_lt(stats(lc).memory_bytes, before);
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "long:%d", i);
        ck_assert(khas(lc, k));
    }
    /* stores sample too: with writes alone, expired entries get reclaimed */
    struct cm_local *lc2 = cm_local_new(CM_LOCAL_TLFU, 20000, 12);
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "old:%d", i);
        kset(lc2, k, "v", 10, 0);
    }
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "new:%d", i);
        kset(lc2, k, "v", -1, 100);
    }
    ck_assert_uint_gt(stats(lc2).expired, 5000);
    cm_local_free(lc2);
    cm_local_free(lc);
}
END_TEST

/* New entries enter the window; the window's LRU entry moves to probation; a hit in probation
 * promotes to protected; protected overflow demotes back to probation. */
START_TEST(test_tlfu_queue_movement)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_TLFU, 100, 5);   /* window 1, protected 79 */
    struct cm_local_stats s = stats(lc);
    ck_assert_uint_eq(s.window_max, 1);
    ck_assert_uint_eq(s.protected_max, 79);
    kset(lc, "a", "1", -1, 0);
    ck_assert_int_eq(cm_local_queue_of(lc, "a", 1), 1);
    kset(lc, "b", "2", -1, 0);
    ck_assert_int_eq(cm_local_queue_of(lc, "b", 1), 1);
    ck_assert_int_eq(cm_local_queue_of(lc, "a", 1), 2);
    ck_assert(kget(lc, "a", 0, NULL, 0));
    ck_assert_int_eq(cm_local_queue_of(lc, "a", 1), 3);
    /* fill protected beyond its maximum: the oldest protected entry is demoted */
    char k[16];
    for (int i = 0; i < 81; i++) {
        snprintf(k, sizeof(k), "p%d", i);
        kset(lc, k, "v", -1, 0);
    }
    for (int i = 0; i < 80; i++) {
        snprintf(k, sizeof(k), "p%d", i);
        ck_assert(kget(lc, k, 0, NULL, 0));
    }
    s = stats(lc);
    ck_assert_uint_eq(s.protected_, 79);
    ck_assert_int_eq(cm_local_queue_of(lc, "a", 1), 2);   /* least recent protected: demoted */
    ck_assert_uint_eq(s.window + s.probation + s.protected_, s.entries);
    cm_local_free(lc);
}
END_TEST

/* A frequent key survives a scan of one-hit keys; under LRU the scan flushes it. */
START_TEST(test_tlfu_admission_resists_scan)
{
    struct cm_local *tl = cm_local_new(CM_LOCAL_TLFU, 100, 9);
    struct cm_local *lru = cm_local_new(CM_LOCAL_LRU, 100, 9);
    char k[32];
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < 50; i++) {
            snprintf(k, sizeof(k), "hot:%d", i);
            if (!kget(tl, k, 0, NULL, 0)) {
                kset(tl, k, "v", -1, 0);
            }
            if (!kget(lru, k, 0, NULL, 0)) {
                kset(lru, k, "v", -1, 0);
            }
        }
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "scan:%d", i);
        if (!kget(tl, k, 0, NULL, 0)) {
            kset(tl, k, "v", -1, 0);
        }
        if (!kget(lru, k, 0, NULL, 0)) {
            kset(lru, k, "v", -1, 0);
        }
    }
    int tl_hot = 0, lru_hot = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "hot:%d", i);
        tl_hot += khas(tl, k);
        lru_hot += khas(lru, k);
    }
    ck_assert_int_eq(tl_hot, 50);
    ck_assert_int_eq(lru_hot, 0);
    ck_assert_uint_eq(stats(tl).entries, 100);
    ck_assert_uint_gt(stats(tl).evictions, 900);
    cm_local_free(tl);
    cm_local_free(lru);
}
END_TEST

/* Reads a missing key n times (each read counts in the sketch), then stores it. */
static void kseen(struct cm_local *lc, const char *k, int n)
{
    for (int i = 0; i < n; i++) {
        ck_assert(!kget(lc, k, 0, NULL, 0));
    }
    kset(lc, k, "v", -1, 0);
}

/* The victim is the least frequent of probation's four eldest entries, not the eldest alone:
 * a candidate seen 3 times beats a once-seen entry second in line, while the eldest (3 times)
 * and the others stay. With the eldest as the only victim the candidate would lose the tie. */
START_TEST(test_tlfu_victim_least_frequent_of_eldest)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_TLFU, 1000, 13);   /* window 10 */
    char k[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        kseen(lc, k, i == 1 || i == 5 ? 1 : 3);   /* k5: fifth eldest, out of the sample */
    }
    /* full: window k990..k999, probation k0 (eldest) .. k989; no halving yet (sample 10,000) */
    ck_assert_uint_eq(stats(lc).entries, 1000);
    ck_assert_uint_eq(stats(lc).evictions, 0);
    ck_assert_int_eq(cm_local_queue_of(lc, "k0", 2), 2);
    /* a new key pushes k990 out of the window: k990 (3) against min(k0 3, k1 1, k2 3, k3 3) */
    kseen(lc, "new", 2);
    ck_assert_uint_eq(stats(lc).evictions, 1);
    ck_assert(!khas(lc, "k1"));
    ck_assert(khas(lc, "k990"));
    ck_assert(khas(lc, "k0"));
    ck_assert(khas(lc, "k5"));
    /* next: k991 (3) against min(k0, k2, k3, k4) = 3, a tie: the candidate loses */
    kseen(lc, "new2", 2);
    ck_assert_uint_eq(stats(lc).evictions, 2);
    ck_assert(!khas(lc, "k991"));
    ck_assert(khas(lc, "k0"));
    ck_assert(khas(lc, "k5"));
    cm_local_free(lc);
}
END_TEST

/* After a halving took the residents' counts from 1 to 0, a candidate counted once (by the
 * request that stored it) still does not displace one; a candidate counted twice does. */
START_TEST(test_tlfu_once_seen_candidate_never_displaces)
{
    struct cm_local *lc = cm_local_new(CM_LOCAL_TLFU, 1000, 17);   /* window 10 */
    char k[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        kseen(lc, k, 1);
    }
    /* 9,200 reads of absent keys: the sketch's 10,000th increment halves it, residents now
     * count 0; the climber's sample (the 9,700 reads since half full) is not complete yet */
    for (int i = 0; i < 9200; i++) {
        snprintf(k, sizeof(k), "x%d", i);
        ck_assert(!kget(lc, k, 0, NULL, 0));
    }
    /* n0..n9 push k990..k999 (0) out of the window; they lose the 0-0 ties */
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "n%d", i);
        kseen(lc, k, i == 1 ? 2 : 1);
    }
    ck_assert(!khas(lc, "k990"));
    ck_assert(khas(lc, "k0"));
    ck_assert_uint_eq(stats(lc).window_max, 10);
    kseen(lc, "m0", 1);   /* n0 (1) against k0 (0): stays out */
    ck_assert(!khas(lc, "n0"));
    ck_assert(khas(lc, "k0"));
    kseen(lc, "m1", 1);   /* n1 (2) against k0 (0): admitted */
    ck_assert(khas(lc, "n1"));
    ck_assert(!khas(lc, "k0"));
    ck_assert_uint_eq(stats(lc).entries, 1000);
    cm_local_free(lc);
}
END_TEST

START_TEST(test_sketch_counts_and_aging)
{
    struct cm_sketch s;
    struct cm_sketch big;
    cm_sketch_init(&big, 100000);
    ck_assert_uint_eq(big.nwords, 131072);   /* 16 counters per entry, a power of two */
    cm_sketch_deinit(&big);
    cm_sketch_init(&big, 10);
    ck_assert_uint_eq(big.nwords, 256);      /* tiny caches: the floor is 16 words per entry */
    cm_sketch_deinit(&big);
    cm_sketch_init(&s, 1024);
    ck_assert_uint_eq(s.nwords, 8192);       /* small caches get the 64 KB floor */
    ck_assert_uint_eq(s.sample_size, 10240);
    uint64_t h = 0x123456789abcdefULL;
    for (int i = 0; i < 12; i++) {
        cm_sketch_increment(&s, h);
    }
    ck_assert_uint_eq(cm_sketch_frequency(&s, h), 12);
    for (int i = 0; i < 10; i++) {
        cm_sketch_increment(&s, h);
    }
    ck_assert_uint_eq(cm_sketch_frequency(&s, h), 15);   /* 4-bit counters saturate */
    uint64_t h2 = 0xfedcba9876543210ULL;
    for (int i = 0; i < 7; i++) {
        cm_sketch_increment(&s, h2);
    }
    cm_sketch_reset(&s);
    ck_assert_uint_eq(cm_sketch_frequency(&s, h), 7);
    ck_assert_uint_eq(cm_sketch_frequency(&s, h2), 3);
    ck_assert_uint_eq(s.resets, 1);
    /* aging happens by itself after 10 x size increments */
    for (int i = 0; i < 15; i++) {
        cm_sketch_increment(&s, h2);
    }
    ck_assert_uint_eq(cm_sketch_frequency(&s, h2), 15);
    uint64_t x = 1;
    for (uint64_t i = 0; i < 10240 && s.resets == 1; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        cm_sketch_increment(&s, x);
    }
    ck_assert_uint_eq(s.resets, 2);
    unsigned f = cm_sketch_frequency(&s, h2);
    ck_assert_uint_ge(f, 7);
    ck_assert_uint_le(f, 8);   /* halved from 15 (one collision may add one) */
    cm_sketch_deinit(&s);
}
END_TEST

START_TEST(test_climber_direction)
{
    struct cm_climber c;
    cm_climber_init(&c, 1000);   /* sample of 10,000 accesses, step 62.5 entries */
    int64_t adj = 0;
    /* first sample, 50% hits: an improvement over nothing, keep the initial direction
     * (Caffeine starts by shrinking the window) */
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 2 == 0);
    }
    ck_assert_int_eq(adj, -62);
    /* hit ratio falls clearly (40%): reverse, grow the window, full step again */
    adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 10 < 4);
    }
    ck_assert_int_gt(adj, 0);
    ck_assert_int_eq(adj, 62);
    /* hit ratio rises clearly (48%): keep growing */
    adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 25 < 12);
    }
    ck_assert_int_gt(adj, 0);
    /* the same hit ratio again: within noise, stay put */
    adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 25 < 12);
    }
    ck_assert_int_eq(adj, 0);
    /* a clear drop after growing: shrink */
    adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 10 < 3);
    }
    ck_assert_int_lt(adj, 0);
}
END_TEST

/* A change of 4 standard errors between samples is still noise (the sketch's halving makes
 * samples vary more than binomially); a clear one moves the window. */
START_TEST(test_climber_ignores_small_changes)
{
    struct cm_climber c;
    cm_climber_init(&c, 1000);
    int64_t adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 2 == 0);   /* 50% */
    }
    ck_assert_int_eq(adj, -62);
    adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 25 < 12);   /* 48%: -2 points = 4.0 standard errors */
    }
    ck_assert_int_eq(adj, 0);
    adj = 0;
    for (int i = 0; i < 10000; i++) {
        adj += cm_climber_record(&c, i % 10 < 4);   /* 40%: -8 points, reverse */
    }
    ck_assert_int_gt(adj, 0);
}
END_TEST

/* A recency-friendly stream (half the reads are new keys, half re-read a key first read 1 to
 * 600 new keys ago, so hits grow with the window) makes the climber grow the window well
 * beyond its 1% start. */
START_TEST(test_climber_grows_window_on_recency)
{
    struct cm_local *tl = cm_local_new(CM_LOCAL_TLFU, 1000, 21);
    struct cm_local *lru = cm_local_new(CM_LOCAL_LRU, 1000, 21);
    char k[32];
    uint64_t tl_hits = 0, lru_hits = 0, x = 7;
    int n = 0;
    for (int i = 0; i < 300000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int id = n;
        if ((x >> 63) == 0 || n < 600) {
            n++;
        } else {
            id = n - 1 - (int)((x >> 20) % 600);
        }
        snprintf(k, sizeof(k), "r:%d", id);
        if (kget(tl, k, 0, NULL, 0)) {
            tl_hits++;
        } else {
            kset(tl, k, "v", -1, 0);
        }
        if (kget(lru, k, 0, NULL, 0)) {
            lru_hits++;
        } else {
            kset(lru, k, "v", -1, 0);
        }
    }
    struct cm_local_stats s = stats(tl);
    ck_assert_msg(s.window_max > 300, "window_max %llu", (unsigned long long)s.window_max);
    ck_assert_uint_eq(s.window_max + (s.entries - s.window), 1000);
    ck_assert_msg(tl_hits * 2 > lru_hits, "tlfu %llu lru %llu", (unsigned long long)tl_hits,
                  (unsigned long long)lru_hits);
    cm_local_free(tl);
    cm_local_free(lru);
}
END_TEST

START_TEST(test_storage_adapter)
{
    struct cm_conf_storage conf = { 0 };
    conf.name = "local";
    conf.size = 2;
    conf.type = (enum cm_st_type)_i;
    char err[128] = "";
    struct cm_storage *st = cm_storage_new(&conf, NULL, err, sizeof(err));
    ck_assert_msg(st != NULL, "open failed: %s", err);
    ck_assert(st->ops->local);
    st->ops->store(st, "a", 1, "x\0y", 3, -1, 0);
    const char *v;
    size_t vl;
    ck_assert(cm_storage_lookup(st, "a", 1, &v, &vl, NULL));
    ck_assert_uint_eq(vl, 3);
    ck_assert(memcmp(v, "x\0y", 3) == 0);
    ck_assert(st->ops->remove(st, "a", 1));
    ck_assert(!cm_storage_lookup(st, "a", 1, &v, &vl, NULL));
    st->ops->store(st, "b", 1, "1", 1, 60000, 0);
    /* the write time comes back in wall-clock ms: 0 is now, an older one keeps its age */
    int64_t wall = cm_wall_us() / 1000, w = 0;
    ck_assert(cm_storage_lookup(st, "b", 1, &v, &vl, &w));
    ck_assert(w >= wall - 20 && w <= cm_wall_us() / 1000 + 20);
    st->ops->store(st, "b", 1, "1", 1, 60000, wall - 30000);
    ck_assert(cm_storage_lookup(st, "b", 1, &v, &vl, &w));
    ck_assert(w >= wall - 30000 - 20 && w <= wall - 30000 + 200);
    struct cm_buf out;
    cm_buf_init(&out);
    st->ops->info(st, &out);
    cm_buf_append(&out, "", 1);
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "entries:1\r\n"));
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "memory_bytes:"));
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "\r\nmax_memory:0\r\n"));
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "\r\nkey_value_bytes:2\r\n"));
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "\r\noverhead_per_entry:"));
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "\r\nevictions:0\r\n"));
    if (conf.type == CM_ST_TYPE_TLFU) {
        ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "window:1\r\nprobation:0\r\nprotected:0\r\n"));
        ck_assert_ptr_nonnull(strstr(cm_buf_start(&out), "\r\nprotected_max:0\r\n"));
    }
    cm_buf_deinit(&out);
    cm_storage_free(st);
    conf.size = 0;
    ck_assert_ptr_null(cm_storage_new(&conf, NULL, err, sizeof(err)));
    ck_assert_str_eq(err, "size 0 out of range 1..2147483648");
}
END_TEST

/* Per-entry memory beyond key and value: at most 64 bytes (1M-entry figure: bench/hitratio). */
START_TEST(test_memory_overhead)
{
    enum cm_local_policy pol = (enum cm_local_policy)_i;
    const uint64_t n = 100000;
    size_t before = cm_alloc_used();
    struct cm_local *lc = cm_local_new(pol, n, 1);
    uint64_t kv = 0;
    for (uint64_t i = 0; i < n; i++) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "user:%010llu", (unsigned long long)i);
        cm_local_set(lc, key, (size_t)kl, "vvvvvvvv", 8, -1, 0, 0);
        kv += (uint64_t)kl + 8;
    }
    double over = ((double)(cm_alloc_used() - before) - (double)kv) / (double)n;
    ck_assert_msg(over <= 64, "overhead %.1f bytes per entry", over);
    ck_assert_uint_le(stats(lc).memory_bytes, cm_alloc_used() - before);
    cm_local_free(lc);
    ck_assert_uint_eq(cm_alloc_used(), before);
}
END_TEST

static Suite *local_suite(void)
{
    Suite *s = suite_create("local");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_lru_bound_and_order);
    tcase_add_test(tc, test_lru_second_chance);
    tcase_add_test(tc, test_index_matches_model);
    tcase_add_test(tc, test_many_entries_and_binary);
    tcase_add_loop_test(tc, test_ttl_never_returned_and_replaced, CM_LOCAL_LRU, CM_LOCAL_TLFU + 1);
    tcase_add_loop_test(tc, test_issue_14_huge_ttl_never_expires, CM_LOCAL_LRU, CM_LOCAL_TLFU + 1);
    tcase_add_test(tc, test_ttl_across_clock_rebase);
    tcase_add_loop_test(tc, test_written_time_kept, CM_LOCAL_LRU, CM_LOCAL_TLFU + 1);
    tcase_add_loop_test(tc, test_max_memory_bound, CM_LOCAL_LRU, CM_LOCAL_TLFU + 1);
    tcase_add_loop_test(tc, test_max_memory_with_size, CM_LOCAL_LRU, CM_LOCAL_TLFU + 1);
    tcase_add_test(tc, test_expire_sampling_reclaims);
    tcase_add_test(tc, test_tlfu_queue_movement);
    tcase_add_test(tc, test_tlfu_admission_resists_scan);
    tcase_add_test(tc, test_tlfu_victim_least_frequent_of_eldest);
    tcase_add_test(tc, test_tlfu_once_seen_candidate_never_displaces);
    tcase_add_test(tc, test_sketch_counts_and_aging);
    tcase_add_test(tc, test_climber_direction);
    tcase_add_test(tc, test_climber_ignores_small_changes);
    tcase_add_test(tc, test_climber_grows_window_on_recency);
    tcase_add_loop_test(tc, test_storage_adapter, CM_ST_TYPE_LRU, CM_ST_TYPE_TLFU + 1);
    tcase_add_loop_test(tc, test_memory_overhead, CM_LOCAL_LRU, CM_LOCAL_TLFU + 1);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(local_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
