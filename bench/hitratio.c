/* Hit-ratio simulator: replays a trace (an ARC .lis file or Go's Zipf stream) through the
 * daemon's own local://lru and local://tlfu engine (storages/local.h) and through Belady's
 * optimal policy, at several sizes, and prints one markdown table row per size. Also measures
 * the engine's per-entry memory overhead (--mem).
 *
 *   hitratio --zipf S,V,IMAX,N[,SEED] --sizes 500,5000 [--name NAME] [--goal 24.5,39]
 *            [--note TEXT]... [--header] [--go-rng PATH/rng.go]
 *   hitratio --lis FILE --sizes 1000,2000 [--name NAME] [--header]
 *   hitratio --mem N */
#include "bench/zipf.h"
#include "daemon/alloc.h"
#include "storages/local.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZES 32
#define MAX_NOTES 32

/* A trace: keys in request order, and dense ids for OPT. */
struct trace {
    uint64_t *keys;    /* n keys */
    size_t n;
    size_t cap;
    uint32_t *ids;     /* n dense ids (0..nuniq-1) */
    uint32_t nuniq;
};

static void die(const char *msg)
{
    fprintf(stderr, "hitratio: %s\n", msg);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void trace_push(struct trace *t, uint64_t k)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1 << 20;
        t->keys = realloc(t->keys, t->cap * sizeof(*t->keys));
        if (t->keys == NULL) {
            die("out of memory");
        }
    }
    t->keys[t->n++] = k;
}

/* ARC .lis: "start count ignored request_number" = count requests start, start+1, ... */
static void load_lis(struct trace *t, const char *path, size_t limit)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        die("cannot open the .lis trace");
    }
    char line[256];
    while (fgets(line, sizeof(line), f) != NULL && (limit == 0 || t->n < limit)) {
        unsigned long long start, count;
        if (sscanf(line, "%llu %llu", &start, &count) != 2) {
            continue;
        }
        for (unsigned long long i = 0; i < count && (limit == 0 || t->n < limit); i++) {
            trace_push(t, start + i);
        }
    }
    fclose(f);
}

static void load_zipf(struct trace *t, double s, double v, uint64_t imax, size_t n, int64_t seed)
{
    struct zipf z;
    if (!zipf_init(&z, seed, s, v, imax)) {
        die("bad zipf parameters (need s > 1, v >= 1)");
    }
    for (size_t i = 0; i < n; i++) {
        trace_push(t, zipf_next(&z));
    }
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* Maps keys to dense ids with an open-addressing table. */
static void assign_ids(struct trace *t)
{
    size_t cap = 1024;
    while (cap < t->n * 2) {
        cap <<= 1;
    }
    uint64_t *tk = malloc(cap * sizeof(*tk));
    uint32_t *tv = malloc(cap * sizeof(*tv));
    t->ids = malloc((t->n ? t->n : 1) * sizeof(*t->ids));
    if (tk == NULL || tv == NULL || t->ids == NULL) {
        die("out of memory");
    }
    memset(tv, 0xff, cap * sizeof(*tv));
    t->nuniq = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t p = mix(t->keys[i]) & (cap - 1);
        while (tv[p] != UINT32_MAX && tk[p] != t->keys[i]) {
            p = (p + 1) & (cap - 1);
        }
        if (tv[p] == UINT32_MAX) {
            tk[p] = t->keys[i];
            tv[p] = t->nuniq++;
        }
        t->ids[i] = tv[p];
    }
    free(tk);
    free(tv);
}

/* Replays t through the daemon's engine; returns the hit ratio in percent. Every request is a
 * lookup, and a miss stores the key (as the daemon does after a load). */
static double run_engine(const struct trace *t, enum cm_local_policy policy, uint64_t size)
{
    struct cm_local *lc = cm_local_new(policy, size, 42);
    uint64_t hits = 0;
    for (size_t i = 0; i < t->n; i++) {
        const char *v;
        size_t vl;
        if (cm_local_get(lc, (const char *)&t->keys[i], 8, 0, &v, &vl)) {
            hits++;
        } else {
            cm_local_set(lc, (const char *)&t->keys[i], 8, "", 0, -1, 0);
        }
    }
    cm_local_free(lc);
    return t->n ? 100.0 * (double)hits / (double)t->n : 0;
}

/* Belady's OPT (with bypass): on a miss with a full cache, drop whichever of the new key and
 * the cached keys is next used farthest in the future. A max-heap on next use: O(log n). */
static double run_opt(const struct trace *t, uint64_t size)
{
    size_t n = t->n;
    uint32_t *next = malloc((n ? n : 1) * sizeof(*next));
    uint32_t *last = malloc((size_t)(t->nuniq ? t->nuniq : 1) * sizeof(*last));
    int32_t *pos = malloc((size_t)(t->nuniq ? t->nuniq : 1) * sizeof(*pos));
    uint64_t cap = size < t->nuniq ? size : t->nuniq;
    uint64_t *heap = malloc((size_t)(cap ? cap : 1) * sizeof(*heap));  /* next << 32 | id */
    if (next == NULL || last == NULL || pos == NULL || heap == NULL) {
        die("out of memory");
    }
    const uint32_t never = UINT32_MAX;
    for (uint32_t u = 0; u < t->nuniq; u++) {
        last[u] = never;
        pos[u] = -1;
    }
    for (size_t i = n; i-- > 0;) {
        next[i] = last[t->ids[i]];
        last[t->ids[i]] = (uint32_t)i;
    }
    size_t hn = 0;
    uint64_t hits = 0;
#define HKEY(e) ((uint32_t)((e) >> 32))
#define HID(e) ((uint32_t)(e))
    for (size_t i = 0; i < n; i++) {
        uint32_t id = t->ids[i];
        uint64_t ent = (uint64_t)next[i] << 32 | id;
        size_t at;
        if (pos[id] >= 0) {
            hits++;
            at = (size_t)pos[id];
        } else if (hn < cap) {
            at = hn++;
        } else if (next[i] >= HKEY(heap[0])) {
            continue;   /* bypass: the new key is the one used farthest ahead */
        } else {
            pos[HID(heap[0])] = -1;
            heap[0] = heap[--hn];
            pos[HID(heap[0])] = 0;
            /* sift the moved last element down */
            size_t j = 0;
            for (;;) {
                size_t l = 2 * j + 1, r = l + 1, m = j;
                if (l < hn && HKEY(heap[l]) > HKEY(heap[m])) {
                    m = l;
                }
                if (r < hn && HKEY(heap[r]) > HKEY(heap[m])) {
                    m = r;
                }
                if (m == j) {
                    break;
                }
                uint64_t tmp = heap[j];
                heap[j] = heap[m];
                heap[m] = tmp;
                pos[HID(heap[j])] = (int32_t)j;
                pos[HID(heap[m])] = (int32_t)m;
                j = m;
            }
            at = hn++;
        }
        /* The key's next use only moves later (or it is new): sift up. */
        heap[at] = ent;
        pos[id] = (int32_t)at;
        while (at > 0 && HKEY(heap[(at - 1) / 2]) < HKEY(heap[at])) {
            size_t p = (at - 1) / 2;
            uint64_t tmp = heap[p];
            heap[p] = heap[at];
            heap[at] = tmp;
            pos[HID(heap[p])] = (int32_t)p;
            pos[HID(heap[at])] = (int32_t)at;
            at = p;
        }
    }
#undef HKEY
#undef HID
    free(next);
    free(last);
    free(pos);
    free(heap);
    return n ? 100.0 * (double)hits / (double)n : 0;
}

/* Per-entry overhead: allocator bytes per entry beyond key and value, for n small entries. */
static void measure_mem(uint64_t n)
{
    const char *names[] = { "lru", "tlfu" };
    const size_t vlen = 8;
    char val[8] = "vvvvvvvv";
    printf("| policy | entries | key+value bytes | bytes/entry (engine) | overhead/entry |\n");
    printf("|---|---:|---:|---:|---:|\n");
    for (int p = 0; p < 2; p++) {
        size_t before = cm_alloc_used();
        struct cm_local *lc = cm_local_new((enum cm_local_policy)p, n, 1);
        uint64_t kv = 0;
        for (uint64_t i = 0; i < n; i++) {
            char key[32];
            int kl = snprintf(key, sizeof(key), "user:%010llu", (unsigned long long)i);
            cm_local_set(lc, key, (size_t)kl, val, vlen, -1, 0);
            kv += (uint64_t)kl + vlen;
        }
        struct cm_local_stats st;
        cm_local_get_stats(lc, &st);
        double per = (double)(cm_alloc_used() - before) / (double)st.entries;
        double kvper = (double)kv / (double)n;
        printf("| %s | %llu | %.1f | %.1f | **%.1f** |\n", names[p],
               (unsigned long long)st.entries, kvper, per, per - kvper);
        cm_local_free(lc);
    }
}

static int parse_list(const char *s, double *out, int max)
{
    int n = 0;
    while (*s != '\0' && n < max) {
        char *end;
        out[n++] = strtod(s, &end);
        if (end == s) {
            die("bad number list");
        }
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv)
{
    struct trace t = { 0 };
    double sizes[MAX_SIZES], goals[MAX_SIZES];
    const char *notes[MAX_NOTES];
    int nsizes = 0, ngoals = 0, nnotes = 0;
    const char *name = "trace", *lis = NULL, *zipf = NULL, *gorng = NULL;
    bool header = false;
    size_t limit = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--header") == 0) {
            header = true;
            continue;
        }
        if (v == NULL) {
            die("missing option value");
        }
        i++;
        if (strcmp(a, "--mem") == 0) {
            measure_mem(strtoull(v, NULL, 10));
            return 0;
        } else if (strcmp(a, "--zipf") == 0) {
            zipf = v;
        } else if (strcmp(a, "--lis") == 0) {
            lis = v;
        } else if (strcmp(a, "--limit") == 0) {
            limit = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--sizes") == 0) {
            nsizes = parse_list(v, sizes, MAX_SIZES);
        } else if (strcmp(a, "--goal") == 0) {
            ngoals = parse_list(v, goals, MAX_SIZES);
        } else if (strcmp(a, "--note") == 0 && nnotes < MAX_NOTES) {
            notes[nnotes++] = v;
        } else if (strcmp(a, "--name") == 0) {
            name = v;
        } else if (strcmp(a, "--go-rng") == 0) {
            gorng = v;
        } else {
            die("unknown option (see the comment at the top of bench/hitratio.c)");
        }
    }
    if (nsizes == 0 || (lis == NULL) == (zipf == NULL)) {
        die("need --sizes and exactly one of --lis, --zipf");
    }
    double t0 = now_s();
    if (gorng != NULL && !zipf_go_load_cooked(gorng)) {
        fprintf(stderr, "hitratio: %s: no rngCooked table; using zeros\n", gorng);
    }
    if (zipf != NULL) {
        double z[5] = { 0, 0, 0, 0, 1 };
        int nz = parse_list(zipf, z, 5);
        if (nz < 4) {
            die("--zipf S,V,IMAX,N[,SEED]");
        }
        load_zipf(&t, z[0], z[1], (uint64_t)z[2], (size_t)z[3], (int64_t)z[4]);
    } else {
        load_lis(&t, lis, limit);
    }
    assign_ids(&t);
    if (header) {
        printf("| trace | size | LRU %% | TLFU %% | OPT %% | TLFU - LRU | OPT - TLFU | target "
               "(published) | met |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---|---|\n");
    }
    for (int i = 0; i < nsizes; i++) {
        uint64_t size = (uint64_t)sizes[i];
        double lru = run_engine(&t, CM_LOCAL_LRU, size);
        double tlfu = run_engine(&t, CM_LOCAL_TLFU, size);
        double opt = run_opt(&t, size);
        const char *met;
        if (i < ngoals) {
            met = tlfu >= goals[i] ? "yes" : "**no**";
        } else {
            met = tlfu > lru ? "yes (> LRU)" : "**no**";
        }
        printf("| %s | %llu | %.2f | %.2f | %.2f | %+.2f | %.2f | %s | %s |\n", name,
               (unsigned long long)size, lru, tlfu, opt, tlfu - lru, opt - tlfu,
               i < nnotes ? notes[i] : "", met);
        fflush(stdout);
    }
    fprintf(stderr, "hitratio: %s: %zu requests, %u unique keys, %.1f s%s\n", name, t.n, t.nuniq,
            now_s() - t0, zipf != NULL && !zipf_go_cooked_loaded ? " (zipf rng: zero table)" : "");
    free(t.keys);
    free(t.ids);
    return 0;
}
