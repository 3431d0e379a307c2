/* In-process storages local://lru and local://tlfu: the cache engine (storages/local.h) and
 * its storage adapter. One allocation per entry holds a 32-byte header, the key and the value;
 * entries live in a dense slot array and link to each other by 32-bit slot index, so a removal
 * moves the last slot into the hole (keeping random sampling for expiry cheap and exact).
 *
 *   slot[]:   [e0][e1][e2]...[e(count-1)]        dense; each entry knows its slot
 *   table[]:  open addressing, linear probing    cell = entry address | 16 hash bits << 48
 *   queues:   head (MRU) <-> ... <-> tail (LRU)  prev/next by index, one list per segment
 *   lru:      one queue; a hit marks the entry, eviction gives marked tails a second chance
 *   tlfu:     window LRU (1%) -> probation -> protected (80% of main); the window's LRU entry
 *             moves to probation as a candidate and must beat a victim (the least frequent of
 *             probation's 4 eldest) in the frequency sketch to stay. */
#include "storages/local.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/common.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <event2/event.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#define NIL UINT32_MAX

enum {
    Q_NONE = 0,
    Q_WINDOW = 1,      /* lru: the only queue */
    Q_PROBATION = 2,
    Q_PROTECTED = 3,
};

#define PERCENT_MAIN 0.99
#define PERCENT_MAIN_PROTECTED 0.80
#define ADMIT_HASHDOS_THRESHOLD 6
#define QUEUE_TRANSFER_THRESHOLD 1000
#define EXPIRE_SAMPLE 20

/* One cached entry: header, then klen key bytes, then vlen value bytes. Owned by the engine. */
struct lentry {
    uint32_t prev;        /* slot towards the queue head (MRU), NIL at the head */
    uint32_t next;        /* slot towards the queue tail (LRU), NIL at the tail */
    uint32_t slot;        /* its index in slot[] */
    uint32_t hash;        /* low 32 bits of the seeded key hash */
    uint32_t kq;          /* klen << 3 | referenced << 2 | queue */
    uint32_t vlen;
    uint32_t expire_t;    /* tick (engine clock) from which it is expired; 0 = never */
    uint32_t written_t;   /* tick at which its value was written (SPEC §12 age) */
    char data[];
};

_Static_assert(sizeof(struct lentry) == 32, "entry header is 32 bytes");

/* One LRU list of slots. */
struct lqueue {
    uint32_t head;        /* MRU */
    uint32_t tail;        /* LRU */
    uint64_t count;
};

struct cm_local {
    enum cm_local_policy policy;
    uint64_t size;              /* maximum entries now: size_limit, or under max_bytes what fits */
    uint64_t size_limit;        /* configured maximum entries */
    uint64_t max_bytes;         /* 0, or the bound on memory_bytes (SPEC §15) */
    uint64_t fixed_bytes;       /* the engine struct, slot array, index and sketch */
    uint64_t kv_bytes;          /* key and value bytes of the live entries */
    uint64_t sketch_for;        /* tlfu: the size the sketch was made for */
    uint64_t seed;              /* key hash seed */
    uint64_t rng;               /* xorshift state: admission coin, expiry sampling */
    struct lentry **slot;       /* owned, count live of slot_cap */
    uint32_t count;
    uint32_t slot_cap;
    uint64_t *table;            /* owned, table_cap cells (see index), 0 = empty */
    uint32_t table_cap;
    struct lqueue q[4];         /* indexed by Q_* */
    uint64_t window_max;        /* tlfu targets; main = size - window_max */
    uint64_t protected_max;
    uint64_t nttl;              /* entries with an expiry: sampling runs only when > 0 */
    int64_t epoch_ms;           /* engine-clock ms of tick 0 (see the clock section) */
    bool clock_started;         /* epoch_ms set (by the first timed call) */
    uint64_t entry_bytes;       /* usable bytes of entry allocations */
    uint64_t evictions;
    uint64_t expired;
    struct cm_sketch sketch;    /* tlfu only */
    struct cm_climber climber;  /* tlfu only */
};

static inline uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t next_rand(struct cm_local *lc)
{
    lc->rng ^= lc->rng << 13;
    lc->rng ^= lc->rng >> 7;
    lc->rng ^= lc->rng << 17;
    return lc->rng;
}

static inline size_t e_klen(const struct lentry *e) { return e->kq >> 3; }
static inline int e_queue(const struct lentry *e) { return (int)(e->kq & 3); }
static inline void e_set_queue(struct lentry *e, int q) { e->kq = (e->kq & ~3u) | (uint32_t)q; }
static inline bool e_referenced(const struct lentry *e) { return (e->kq & 4) != 0; }
static inline void e_set_referenced(struct lentry *e, bool on)
{
    e->kq = on ? e->kq | 4u : e->kq & ~4u;
}
static inline uint64_t sketch_hash(const struct cm_local *lc, uint32_t h)
{
    return mix64((uint64_t)h ^ lc->seed);
}

/* ---- clock ----
 *
 * Entries keep their expiry and write time as 32-bit ticks of TICK_MS since epoch_ms (8 bytes
 * instead of two int64 ms). A new engine's epoch lies TICKS_BACK ticks before its first time, so
 * write times up to 62 days old (a backfill passes the age the value was found with) stay exact;
 * older ones read as 62 days old. When the clock reaches REBASE_AT ticks, the epoch moves so that
 * now is tick TICKS_BACK again and every entry's ticks move down with it (one pass over the
 * entries every 186 days), so the current tick always stays below 2^31 and an expiry up to
 * 2^32 - 1 leaves at least 2^31 ticks (248 days) of headroom. A longer
 * ttl, and any ttl where now + ttl overflows, never expires (the entry still goes by policy).
 * Expiries round up to the next tick: an entry is never dropped early, at most TICK_MS late. */
#define TICK_MS 10
#define TICKS_BACK (UINT32_C(1) << 29)
#define REBASE_AT (UINT32_C(1) << 31)

static void rebase(struct cm_local *lc, int64_t now_ms);

/* The tick of engine time t (ms), floored, clamped to 0..UINT32_MAX; rebases first when the
 * clock has reached REBASE_AT. */
static uint32_t tick_of(const struct cm_local *lc, int64_t t)
{
    int64_t d;
    if (__builtin_sub_overflow(t, lc->epoch_ms, &d) || d < 0) {
        return t < lc->epoch_ms ? 0 : UINT32_MAX;
    }
    d /= TICK_MS;
    return d > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* The current tick, after a rebase if one is due. The first call sets the epoch. */
static uint32_t now_tick(struct cm_local *lc, int64_t now_ms)
{
    if (!lc->clock_started) {
        int64_t back = (int64_t)TICKS_BACK * TICK_MS;
        lc->epoch_ms = now_ms < INT64_MIN + back ? INT64_MIN : now_ms - back;
        lc->clock_started = true;
    }
    uint32_t t = tick_of(lc, now_ms);
    if (t >= REBASE_AT) {
        rebase(lc, now_ms);
        t = tick_of(lc, now_ms);
    }
    return t;
}

/* The expiry tick of an entry stored at tick now_t with ttl_ms (> 0 expires, else never): the
 * first tick at or after now + ttl; 0 (never) when that is beyond 32 bits. */
static uint32_t expire_tick(const struct cm_local *lc, int64_t now_ms, int64_t ttl_ms)
{
    int64_t at, d;
    if (ttl_ms <= 0 || __builtin_add_overflow(now_ms, ttl_ms, &at) ||
        __builtin_sub_overflow(at, lc->epoch_ms, &d)) {
        return 0;
    }
    d = d / TICK_MS + (d % TICK_MS != 0);
    return d <= 0 ? 1 : d > (int64_t)UINT32_MAX ? 0 : (uint32_t)d;
}

static inline bool e_expired(const struct lentry *e, uint32_t now_t)
{
    return e->expire_t != 0 && e->expire_t <= now_t;
}

/* ---- queues ---- */

static void q_unlink(struct cm_local *lc, uint32_t i)
{
    struct lentry *e = lc->slot[i];
    struct lqueue *q = &lc->q[e_queue(e)];
    if (e->prev != NIL) {
        lc->slot[e->prev]->next = e->next;
    } else {
        q->head = e->next;
    }
    if (e->next != NIL) {
        lc->slot[e->next]->prev = e->prev;
    } else {
        q->tail = e->prev;
    }
    q->count--;
    e_set_queue(e, Q_NONE);
}

static void q_push_head(struct cm_local *lc, int qid, uint32_t i)
{
    struct lentry *e = lc->slot[i];
    struct lqueue *q = &lc->q[qid];
    e->prev = NIL;
    e->next = q->head;
    if (q->head != NIL) {
        lc->slot[q->head]->prev = i;
    } else {
        q->tail = i;
    }
    q->head = i;
    q->count++;
    e_set_queue(e, qid);
}

static void q_move_head(struct cm_local *lc, int qid, uint32_t i)
{
    q_unlink(lc, i);
    q_push_head(lc, qid, i);
}

/* ---- memory ---- */

/* Recounts fixed_bytes after one of its allocations changed. */
static void refresh_fixed(struct cm_local *lc)
{
    lc->fixed_bytes = malloc_usable_size(lc) + malloc_usable_size(lc->slot) +
                      malloc_usable_size(lc->table) +
                      (lc->sketch.table != NULL ? malloc_usable_size(lc->sketch.table) : 0);
}

/* The bytes INFO reports as memory_bytes: every allocation the engine holds. */
static inline uint64_t mem_used(const struct cm_local *lc)
{
    return lc->fixed_bytes + lc->entry_bytes;
}

/* What an entry of klen + vlen bytes costs (its block as glibc sizes it, plus its share of the
 * slot array and index): the admission test of SPEC §15's 1/8 rule and of growth. */
static inline uint64_t entry_cost(size_t klen, size_t vlen)
{
    uint64_t n = 32 + (uint64_t)klen + vlen + 8;
    return ((n + 15) & ~UINT64_C(15)) + 8 + 11;
}

/* ---- index ---- */

/* A cell holds an entry's address and 16 bits of its hash in the address's unused top bits
 * (user-space addresses fit in 48 bits on Linux x86-64 and arm64): a probe rejects other keys
 * without reading their entries, so a lookup costs one cache miss in the table and one in the
 * entry. The load stays at most 3/4, so a probe run is short and ends at an empty cell. */
#define CELL_TAG_SHIFT 48
#define CELL_ADDR_MASK ((UINT64_C(1) << CELL_TAG_SHIFT) - 1)

static inline uint64_t cell_tag(uint32_t h) { return (uint64_t)(h & 0xffff) << CELL_TAG_SHIFT; }
static inline struct lentry *cell_entry(uint64_t c)
{
    return (struct lentry *)(uintptr_t)(c & CELL_ADDR_MASK);
}

static inline uint64_t cell_make(const struct lentry *e)
{
    uint64_t a = (uint64_t)(uintptr_t)e;
    cm_assert((a & ~CELL_ADDR_MASK) == 0);
    return a | cell_tag(e->hash);
}

/* The home cell of hash h: the high bits of h scaled to the table (no power-of-two size). */
static inline uint32_t cell_home(const struct cm_local *lc, uint32_t h)
{
    return (uint32_t)(((uint64_t)h * lc->table_cap) >> 32);
}

static inline uint32_t cell_next(const struct cm_local *lc, uint32_t p)
{
    return p + 1 == lc->table_cap ? 0 : p + 1;
}

/* Cells for n entries at a load of 3/4. */
static uint32_t table_cap_for(uint64_t n)
{
    return (uint32_t)(n + n / 3 + 2);
}

/* Returns the cell holding key, or NIL. */
static uint32_t find_cell(const struct cm_local *lc, const char *key, size_t klen, uint32_t h)
{
    uint64_t tag = cell_tag(h);
    for (uint32_t p = cell_home(lc, h);; p = cell_next(lc, p)) {
        uint64_t c = lc->table[p];
        if (c == 0) {
            return NIL;
        }
        if ((c & ~CELL_ADDR_MASK) == tag) {
            const struct lentry *e = cell_entry(c);
            if (e->hash == h && e_klen(e) == klen && memcmp(e->data, key, klen) == 0) {
                return p;
            }
        }
    }
}

/* Returns the entry of key, or NULL. */
static struct lentry *find(const struct cm_local *lc, const char *key, size_t klen, uint32_t h)
{
    uint32_t p = find_cell(lc, key, klen, h);
    return p == NIL ? NULL : cell_entry(lc->table[p]);
}

/* Returns the cell holding e (which is in the table). */
static uint32_t cell_of(const struct cm_local *lc, const struct lentry *e)
{
    uint32_t p = cell_home(lc, e->hash);
    while (cell_entry(lc->table[p]) != e) {
        p = cell_next(lc, p);
    }
    return p;
}

static void table_put(struct cm_local *lc, const struct lentry *e)
{
    uint32_t p = cell_home(lc, e->hash);
    while (lc->table[p] != 0) {
        p = cell_next(lc, p);
    }
    lc->table[p] = cell_make(e);
}

/* Empties cell p by shifting back the cells of its probe run that may move (no tombstones). */
static void table_delete(struct cm_local *lc, uint32_t p)
{
    uint32_t hole = p;
    for (uint32_t q = cell_next(lc, p); lc->table[q] != 0; q = cell_next(lc, q)) {
        uint32_t home = cell_home(lc, cell_entry(lc->table[q])->hash);
        /* The cell at q stays only if its home lies cyclically in (hole, q]. */
        bool stays = hole <= q ? (home > hole && home <= q) : (home > hole || home <= q);
        if (!stays) {
            lc->table[hole] = lc->table[q];
            hole = q;
        }
    }
    lc->table[hole] = 0;
}

static void table_resize(struct cm_local *lc, uint32_t cap)
{
    cm_free(lc->table);
    lc->table = cm_calloc(cap, sizeof(uint64_t));
    lc->table_cap = cap;
    for (uint32_t i = 0; i < lc->count; i++) {
        table_put(lc, lc->slot[i]);
    }
    refresh_fixed(lc);
}

/* Adds e to the slot array and index (in no queue yet); returns its slot. */
static uint32_t index_add(struct cm_local *lc, struct lentry *e)
{
    if (lc->count == lc->slot_cap) {
        uint64_t cap = (uint64_t)lc->slot_cap * 2;
        if (cap > lc->size + 1) {
            cap = lc->size + 1;
        }
        lc->slot_cap = (uint32_t)cap;
        lc->slot = cm_realloc(lc->slot, (size_t)cap * sizeof(*lc->slot));
        refresh_fixed(lc);
    }
    uint32_t i = lc->count++;
    lc->slot[i] = e;
    e->slot = i;
    if ((uint64_t)lc->count * 4 > (uint64_t)lc->table_cap * 3) {
        /* Double, but never beyond what size + 1 entries need: a full cache sits at 3/4. */
        uint64_t cap = (uint64_t)lc->table_cap * 2;
        uint32_t most = table_cap_for(lc->size + 1);
        table_resize(lc, cap < most ? (uint32_t)cap : most);   /* puts e too */
    } else {
        table_put(lc, e);
    }
    return i;
}

static void free_entry(struct cm_local *lc, struct lentry *e)
{
    lc->entry_bytes -= malloc_usable_size(e);
    lc->kv_bytes -= e_klen(e) + e->vlen;
    lc->nttl -= e->expire_t != 0;
    cm_free(e);
}

/* Removes and frees slot i; the last slot moves into i. If *track named the moved slot it is
 * updated to i (track may be NULL). */
static void entry_remove(struct cm_local *lc, uint32_t i, uint32_t *track)
{
    struct lentry *e = lc->slot[i];
    if (e_queue(e) != Q_NONE) {
        q_unlink(lc, i);
    }
    table_delete(lc, cell_of(lc, e));
    free_entry(lc, e);
    uint32_t last = --lc->count;
    if (i == last) {
        return;
    }
    struct lentry *m = lc->slot[last];
    m->slot = i;
    int qid = e_queue(m);
    if (m->prev != NIL) {
        lc->slot[m->prev]->next = i;
    } else if (qid != Q_NONE) {
        lc->q[qid].head = i;
    }
    if (m->next != NIL) {
        lc->slot[m->next]->prev = i;
    } else if (qid != Q_NONE) {
        lc->q[qid].tail = i;
    }
    lc->slot[i] = m;
    if (track != NULL && *track == last) {
        *track = i;
    }
}

static struct lentry *entry_new(struct cm_local *lc, const char *key, size_t klen,
                                const char *val, size_t vlen, uint32_t h, uint32_t expire_t,
                                uint32_t written_t)
{
    struct lentry *e = cm_malloc(sizeof(*e) + klen + vlen);
    e->prev = e->next = e->slot = NIL;
    e->hash = h;
    e->expire_t = expire_t;
    e->written_t = written_t;
    e->kq = (uint32_t)klen << 3;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, key, klen);
    if (vlen > 0) {
        memcpy(e->data + klen, val, vlen);
    }
    lc->entry_bytes += malloc_usable_size(e);
    lc->kv_bytes += klen + vlen;
    lc->nttl += expire_t != 0;
    return e;
}

/* ---- policy ---- */

static void demote_protected(struct cm_local *lc)
{
    while (lc->q[Q_PROTECTED].count > lc->protected_max) {
        uint32_t t = lc->q[Q_PROTECTED].tail;
        q_move_head(lc, Q_PROBATION, t);
    }
}

static void on_access(struct cm_local *lc, uint32_t i)
{
    switch (e_queue(lc->slot[i])) {
    case Q_WINDOW:
        q_move_head(lc, Q_WINDOW, i);
        break;
    case Q_PROBATION:
        q_move_head(lc, Q_PROTECTED, i);
        demote_protected(lc);
        break;
    case Q_PROTECTED:
        q_move_head(lc, Q_PROTECTED, i);
        break;
    default:
        CM_NOT_REACHED();
    }
}

/* Caffeine's admission: the candidate must be more frequent than the victim; a warm candidate
 * (frequency >= 6) still gets a 1/128 chance, so an attacker cannot pin the victim's hash.
 * Unlike Caffeine, a candidate counted once (only the request that brought it in) never
 * displaces a resident: that is how most one-hit keys look, while a resident whose count the
 * last halving took to 0 had earned its place before. Measured on Zipf, such 1-against-0
 * admissions cost hits at every size (without them: +0.25 points at 500 entries, +0.1 at 5,000;
 * P6 within 0.14 points or better; bench/RESULTS-hitratio.md). */
#define ADMIT_MIN_FREQ 2

/* vf: the victim's frequency, as pick_victim read it. */
static bool admit(struct cm_local *lc, uint32_t cand, unsigned vf)
{
    unsigned cf = cm_sketch_frequency(&lc->sketch, sketch_hash(lc, lc->slot[cand]->hash));
    if (cf > vf && cf >= ADMIT_MIN_FREQ) {
        return true;
    }
    if (cf < ADMIT_HASHDOS_THRESHOLD) {
        return false;
    }
    return (next_rand(lc) & 127) == 0;
}

static void evict(struct cm_local *lc, uint32_t i, uint32_t *track)
{
    lc->evictions++;
    entry_remove(lc, i, track);
}

/* LRU with lazy promotion (CLOCK's second chance on a list, as Memcached and Redis approximate
 * LRU too): a hit only marks the entry referenced, without relinking it, which would touch two
 * neighbours at random places in memory on every hit (measured: 9% of a GET's CPU). At eviction a
 * referenced tail moves to the head, unmarked, and the next tail is tried; each such move
 * consumes one mark that a hit set, so eviction stays O(1) amortized. */
static void lru_evict(struct cm_local *lc)
{
    for (;;) {
        uint32_t t = lc->q[Q_WINDOW].tail;
        struct lentry *e = lc->slot[t];
        if (!e_referenced(e)) {
            evict(lc, t, NULL);
            return;
        }
        e_set_referenced(e, false);
        q_move_head(lc, Q_WINDOW, t);
    }
}

/* Probation entries eligible as the victim, from the LRU end. */
#define VICTIM_SAMPLE 4

/* The victim a candidate must beat: the least frequent of probation's VICTIM_SAMPLE eldest
 * entries (the eldest on a tie), never the candidate itself or anything newer. Caffeine takes the
 * eldest alone; looking at up to three more (three sketch reads per eviction, O(1)) keeps a
 * frequent entry that was just demoted to probation's tail from being traded for a barely better
 * candidate (Zipf s=1.0001 +0.03 to +0.31 points, P6 +3.9 at 32,000 entries; the table in
 * bench/RESULTS-hitratio.md's notes). Stores the victim's frequency in *vf_out. */
static uint32_t pick_victim(struct cm_local *lc, uint32_t cursor, unsigned *vf_out)
{
    uint32_t victim = lc->q[Q_PROBATION].tail;
    unsigned vf = cm_sketch_frequency(&lc->sketch, sketch_hash(lc, lc->slot[victim]->hash));
    uint32_t v = lc->slot[victim]->prev;
    for (int n = 1; n < VICTIM_SAMPLE && vf > 0 && v != NIL && v != cursor; n++) {
        unsigned f = cm_sketch_frequency(&lc->sketch, sketch_hash(lc, lc->slot[v]->hash));
        if (f < vf) {
            victim = v;
            vf = f;
        }
        v = lc->slot[v]->prev;
    }
    *vf_out = vf;
    return victim;
}

/* Brings the engine back to size: the ncand newest probation entries (just moved in from the
 * window) are candidates, each against a victim from probation's LRU end (pick_victim); the
 * less frequent one goes. */
static void evict_main(struct cm_local *lc, uint64_t ncand)
{
    uint32_t cursor = ncand > 0 ? lc->q[Q_PROBATION].head : NIL;
    while (lc->count > lc->size) {
        uint32_t victim = lc->q[Q_PROBATION].tail;
        if (victim == NIL) {
            victim = lc->q[Q_PROTECTED].tail != NIL ? lc->q[Q_PROTECTED].tail
                                                    : lc->q[Q_WINDOW].tail;
            evict(lc, victim, NULL);
            ncand = 0;
            cursor = NIL;
            continue;
        }
        if (ncand == 0 || cursor == NIL) {
            evict(lc, victim, NULL);
            continue;
        }
        if (cursor == victim) {
            evict(lc, victim, NULL);
            ncand = 0;
            cursor = NIL;
            continue;
        }
        ncand--;
        unsigned vf;
        victim = pick_victim(lc, cursor, &vf);
        if (admit(lc, cursor, vf)) {
            uint32_t older = lc->slot[cursor]->next;
            if (older == victim) {
                older = lc->slot[victim]->next;   /* NIL when the victim was the tail */
            }
            evict(lc, victim, &older);
            cursor = older;
        } else {
            uint32_t older = lc->slot[cursor]->next;
            evict(lc, cursor, &older);
            cursor = older;
        }
    }
}

static void increase_window(struct cm_local *lc, uint64_t amount)
{
    if (lc->protected_max == 0) {
        return;
    }
    uint64_t quota = amount < lc->protected_max ? amount : lc->protected_max;
    lc->protected_max -= quota;
    lc->window_max += quota;
    demote_protected(lc);
    for (int n = 0; n < QUEUE_TRANSFER_THRESHOLD && quota > 0; n++) {
        uint32_t c = lc->q[Q_PROBATION].tail;
        if (c == NIL) {
            c = lc->q[Q_PROTECTED].tail;
        }
        if (c == NIL) {
            break;
        }
        quota--;
        q_move_head(lc, Q_WINDOW, c);
    }
    lc->protected_max += quota;
    lc->window_max -= quota;
}

static void decrease_window(struct cm_local *lc, uint64_t amount)
{
    if (lc->window_max <= 1) {
        return;
    }
    uint64_t quota = amount < lc->window_max - 1 ? amount : lc->window_max - 1;
    lc->protected_max += quota;
    lc->window_max -= quota;
    for (int n = 0; n < QUEUE_TRANSFER_THRESHOLD && quota > 0; n++) {
        uint32_t c = lc->q[Q_WINDOW].tail;
        if (c == NIL) {
            break;
        }
        quota--;
        q_move_head(lc, Q_PROBATION, c);
    }
    lc->protected_max -= quota;
    lc->window_max += quota;
}

static void climb(struct cm_local *lc, bool hit)
{
    /* Like Caffeine, adapt only once the cache is half full: a cold cache's misses say
     * nothing about the window size. */
    if (lc->count < lc->size / 2) {
        lc->climber.hits = lc->climber.misses = 0;
        return;
    }
    int64_t adj = cm_climber_record(&lc->climber, hit);
    if (adj > 0) {
        increase_window(lc, (uint64_t)adj);
    } else if (adj < 0) {
        decrease_window(lc, (uint64_t)-adj);
    }
}

/* ---- capacity under max_bytes (SPEC §15) ---- */

/* Sets the entry capacity to n (1..size_limit), scaling the tlfu window and protected targets with
 * it (the climber's share is kept); entries beyond the new targets move at the next store. A
 * capacity past twice what the sketch was made for remakes the sketch (its counts restart). */
static void set_capacity(struct cm_local *lc, uint64_t n)
{
    uint64_t old = lc->size;
    n = n < 1 ? 1 : n > lc->size_limit ? lc->size_limit : n;
    if (n == old) {
        return;
    }
    lc->size = n;
    if (lc->policy != CM_LOCAL_TLFU) {
        lc->window_max = n;
        return;
    }
    double r = (double)n / (double)old;
    uint64_t w = (uint64_t)((double)lc->window_max * r + 0.5);
    lc->window_max = w < 1 ? 1 : w > n ? n : w;
    uint64_t p = (uint64_t)((double)lc->protected_max * r + 0.5);
    lc->protected_max = p > n - lc->window_max ? n - lc->window_max : p;
    lc->climber.size = n;
    lc->climber.sample_size = 10 * n;
    if (n > 2 * lc->sketch_for) {
        cm_sketch_deinit(&lc->sketch);
        cm_sketch_init(&lc->sketch, n);
        lc->sketch_for = n;
        refresh_fixed(lc);
    }
    demote_protected(lc);
}

/* Before a new entry of klen + vlen bytes goes in at full capacity: when the bytes would still fit,
 * raises the capacity by 1/64 instead of evicting by count. */
static void grow_capacity(struct cm_local *lc, size_t klen, size_t vlen)
{
    if (lc->max_bytes == 0 || lc->count < lc->size || lc->size >= lc->size_limit ||
        mem_used(lc) + entry_cost(klen, vlen) > lc->max_bytes) {
        return;
    }
    set_capacity(lc, lc->size + (lc->size / 64 > 0 ? lc->size / 64 : 1));
}

/* After a store: while memory_bytes is above max_bytes, lowers the capacity to one entry fewer
 * than held and evicts by the policy (the LRU tail; tlfu's probation victim). */
static void fit_bytes(struct cm_local *lc)
{
    while (lc->max_bytes != 0 && mem_used(lc) > lc->max_bytes && lc->count > 0) {
        set_capacity(lc, lc->count - 1);
        if (lc->count <= lc->size) {   /* a capacity of 1 holding 1: nothing else to give */
            evict(lc, 0, NULL);
        } else if (lc->policy == CM_LOCAL_LRU) {
            lru_evict(lc);
        } else {
            evict_main(lc, 0);
        }
    }
}

/* Moves the epoch so that now_ms (at least REBASE_AT ticks after it) is tick TICKS_BACK again,
 * and every entry's ticks with it (see the clock section). A clock that jumped far ahead (any
 * int64 is accepted) takes one pass too. */
static void rebase(struct cm_local *lc, int64_t now_ms)
{
    __int128 shift = ((__int128)now_ms - lc->epoch_ms) / TICK_MS - TICKS_BACK;
    lc->epoch_ms = (int64_t)(lc->epoch_ms + shift * TICK_MS);
    for (uint32_t i = 0; i < lc->count; i++) {
        struct lentry *e = lc->slot[i];
        if (e->expire_t != 0) {
            /* Already expired before the new epoch: stays expired (tick 1), not never. */
            e->expire_t = e->expire_t > shift ? (uint32_t)(e->expire_t - shift) : 1;
        }
        e->written_t = e->written_t > shift ? (uint32_t)(e->written_t - shift) : 0;
    }
}

/* Removes up to n random expired entries out of n samples; returns how many were expired. */
static size_t sample_expire(struct cm_local *lc, uint32_t now_t, size_t n)
{
    size_t hits = 0;
    for (size_t j = 0; j < n && lc->count > 0; j++) {
        uint32_t i = (uint32_t)(next_rand(lc) % lc->count);
        struct lentry *e = lc->slot[i];
        if (e_expired(e, now_t)) {
            entry_remove(lc, i, NULL);
            lc->expired++;
            hits++;
        }
    }
    return hits;
}

/* ---- public engine ---- */

struct cm_local *cm_local_new(enum cm_local_policy policy, uint64_t size, uint64_t seed)
{
    return cm_local_new_bounded(policy, size, 0, seed);
}

/* Under max_bytes the capacity starts at one entry per KB (at least 16) and grows while entries
 * fit (see grow_capacity), so the sketch and index are sized for what the bytes hold, not for a
 * size_limit that may be far larger. */
#define BOUNDED_START_BYTES 1024

struct cm_local *cm_local_new_bounded(enum cm_local_policy policy, uint64_t size_limit,
                                      uint64_t max_bytes, uint64_t seed)
{
    cm_assert(size_limit >= 1 && size_limit <= CM_LOCAL_MAX_SIZE);
    uint64_t size = size_limit;
    if (max_bytes > 0 && max_bytes / BOUNDED_START_BYTES < size) {
        size = max_bytes / BOUNDED_START_BYTES < 16 ? 16 : max_bytes / BOUNDED_START_BYTES;
        size = size < size_limit ? size : size_limit;
    }
    struct cm_local *lc = cm_calloc(1, sizeof(*lc));
    lc->policy = policy;
    lc->size = size;
    lc->size_limit = size_limit;
    lc->max_bytes = max_bytes;
    lc->sketch_for = size;
    lc->seed = mix64(seed);
    lc->rng = mix64(seed ^ 0x5851f42d4c957f2dULL) | 1;
    lc->slot_cap = size + 1 < 16 ? (uint32_t)size + 1 : 16;
    lc->slot = cm_malloc((size_t)lc->slot_cap * sizeof(*lc->slot));
    lc->table_cap = table_cap_for(lc->slot_cap);
    lc->table = cm_calloc(lc->table_cap, sizeof(uint64_t));
    for (int q = 0; q < 4; q++) {
        lc->q[q].head = lc->q[q].tail = NIL;
    }
    if (policy == CM_LOCAL_TLFU) {
        uint64_t window = size - (uint64_t)(PERCENT_MAIN * (double)size);
        lc->window_max = window < 1 ? 1 : window;
        lc->protected_max = (uint64_t)(PERCENT_MAIN_PROTECTED * (double)(size - lc->window_max));
        cm_sketch_init(&lc->sketch, size);
        cm_climber_init(&lc->climber, size);
    } else {
        lc->window_max = size;
    }
    refresh_fixed(lc);
    return lc;
}

void cm_local_free(struct cm_local *lc)
{
    if (lc == NULL) {
        return;
    }
    for (uint32_t i = 0; i < lc->count; i++) {
        cm_free(lc->slot[i]);
    }
    cm_free(lc->slot);
    cm_free(lc->table);
    if (lc->policy == CM_LOCAL_TLFU) {
        cm_sketch_deinit(&lc->sketch);
    }
    cm_free(lc);
}

bool cm_local_get(struct cm_local *lc, const char *key, size_t klen, int64_t now_ms,
                  const char **val, size_t *vlen, int64_t *written_ms)
{
    uint32_t now_t = now_tick(lc, now_ms);
    uint32_t h = (uint32_t)cm_hash_seeded(key, klen, lc->seed);
    bool tlfu = lc->policy == CM_LOCAL_TLFU;
    if (tlfu) {
        cm_sketch_increment(&lc->sketch, sketch_hash(lc, h));
    }
    struct lentry *e = find(lc, key, klen, h);
    if (e != NULL && e_expired(e, now_t)) {
        entry_remove(lc, e->slot, NULL);
        lc->expired++;
        e = NULL;
    }
    if (e == NULL) {
        if (tlfu) {
            climb(lc, false);
        }
        return false;
    }
    if (!tlfu) {
        e_set_referenced(e, true);  /* lazy promotion: see lru_evict */
    } else {
        on_access(lc, e->slot);
        climb(lc, true);    /* only moves entries between queues: e stays live */
    }
    *val = e->data + e_klen(e);
    *vlen = e->vlen;
    if (written_ms != NULL) {
        *written_ms = lc->epoch_ms + (int64_t)e->written_t * TICK_MS;
    }
    return true;
}

void cm_local_set(struct cm_local *lc, const char *key, size_t klen, const char *val,
                  size_t vlen, int64_t ttl_ms, int64_t now_ms, int64_t written_ms)
{
    if (klen > CM_LOCAL_MAX_KLEN || vlen > CM_LOCAL_MAX_VLEN ||
        (lc->max_bytes != 0 && entry_cost(klen, vlen) > lc->max_bytes / 8)) {
        cm_local_del(lc, key, klen);
        return;
    }
    uint32_t h = (uint32_t)cm_hash_seeded(key, klen, lc->seed);
    uint32_t now_t = now_tick(lc, now_ms);
    uint32_t expire_t = expire_tick(lc, now_ms, ttl_ms);
    uint32_t written_t = written_ms > now_ms ? now_t : tick_of(lc, written_ms);
    if (lc->nttl > 0) {
        sample_expire(lc, now_t, 2);
    }
    uint32_t p = find_cell(lc, key, klen, h);
    uint32_t i;
    if (p != NIL) {
        struct lentry *old = cell_entry(lc->table[p]);
        struct lentry *e = entry_new(lc, key, klen, val, vlen, h, expire_t, written_t);
        i = old->slot;
        e->prev = old->prev;
        e->next = old->next;
        e->slot = i;
        e->kq = old->kq;
        lc->slot[i] = e;
        lc->table[p] = cell_make(e);
        free_entry(lc, old);
        on_access(lc, i);
        fit_bytes(lc);
        return;
    }
    grow_capacity(lc, klen, vlen);
    i = index_add(lc, entry_new(lc, key, klen, val, vlen, h, expire_t, written_t));
    q_push_head(lc, Q_WINDOW, i);
    if (lc->policy == CM_LOCAL_LRU) {
        if (lc->count > lc->size) {
            lru_evict(lc);
        }
    } else {
        uint64_t ncand = 0;
        while (lc->q[Q_WINDOW].count > lc->window_max) {
            q_move_head(lc, Q_PROBATION, lc->q[Q_WINDOW].tail);
            ncand++;
        }
        evict_main(lc, ncand);
    }
    fit_bytes(lc);
}

bool cm_local_del(struct cm_local *lc, const char *key, size_t klen)
{
    uint32_t h = (uint32_t)cm_hash_seeded(key, klen, lc->seed);
    struct lentry *e = find(lc, key, klen, h);
    if (e == NULL) {
        return false;
    }
    entry_remove(lc, e->slot, NULL);
    return true;
}

size_t cm_local_expire(struct cm_local *lc, int64_t now_ms, unsigned max_rounds)
{
    size_t total = 0;
    uint32_t now_t = now_tick(lc, now_ms);
    for (unsigned r = 0; r < max_rounds && lc->nttl > 0 && lc->count > 0; r++) {
        size_t n = lc->count < EXPIRE_SAMPLE ? lc->count : EXPIRE_SAMPLE;
        size_t got = sample_expire(lc, now_t, n);
        total += got;
        if (got * 4 < n) {
            break;
        }
    }
    return total;
}

void cm_local_get_stats(const struct cm_local *lc, struct cm_local_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->entries = lc->count;
    out->memory_bytes = mem_used(lc);
    out->kv_bytes = lc->kv_bytes;
    out->max_memory = lc->max_bytes;
    out->size_limit = lc->size_limit;
    if (lc->policy == CM_LOCAL_TLFU) {
        out->window = lc->q[Q_WINDOW].count;
        out->probation = lc->q[Q_PROBATION].count;
        out->protected_ = lc->q[Q_PROTECTED].count;
        out->window_max = lc->window_max;
        out->protected_max = lc->protected_max;
    }
    out->size = lc->size;
    out->evictions = lc->evictions;
    out->expired = lc->expired;
}

int cm_local_queue_of(struct cm_local *lc, const char *key, size_t klen)
{
    struct lentry *e = find(lc, key, klen, (uint32_t)cm_hash_seeded(key, klen, lc->seed));
    return e == NULL ? 0 : e_queue(e);
}

/* ---- storage adapter ---- */

#define EXPIRE_TICK_MS 100
#define EXPIRE_TICK_ROUNDS 16

/* st->priv of a local storage. */
struct local_st {
    struct cm_local *lc;    /* owned */
    struct event *tick;     /* owned: periodic expiry sampling, NULL without an event base */
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct local_st *ls = arg;
    CM_UNUSED(fd);
    CM_UNUSED(what);
    cm_local_expire(ls->lc, cm_now_ms(), EXPIRE_TICK_ROUNDS);
}

static int local_open(struct cm_storage *st, enum cm_local_policy policy, char *err, size_t errsz)
{
    uint64_t size = st->conf->size;
    if (size < 1 || size > CM_LOCAL_MAX_SIZE) {
        snprintf(err, errsz, "size %llu out of range 1..%llu", (unsigned long long)size,
                 (unsigned long long)CM_LOCAL_MAX_SIZE);
        return CM_ERR;
    }
    struct local_st *ls = cm_calloc(1, sizeof(*ls));
    ls->lc = cm_local_new_bounded(policy, size, st->conf->max_memory, cm_rand64());
    if (st->base != NULL) {
        struct timeval tv = { 0, EXPIRE_TICK_MS * 1000 };
        ls->tick = event_new(st->base, -1, EV_PERSIST, on_tick, ls);
        if (ls->tick == NULL || event_add(ls->tick, &tv) != 0) {
            snprintf(err, errsz, "cannot create the expiry timer");
            if (ls->tick != NULL) {
                event_free(ls->tick);
            }
            cm_local_free(ls->lc);
            cm_free(ls);
            return CM_ERR;
        }
    }
    st->priv = ls;
    return CM_OK;
}

static int lru_open(struct cm_storage *st, char *err, size_t errsz)
{
    return local_open(st, CM_LOCAL_LRU, err, errsz);
}

static int tlfu_open(struct cm_storage *st, char *err, size_t errsz)
{
    return local_open(st, CM_LOCAL_TLFU, err, errsz);
}

static void local_close(struct cm_storage *st)
{
    struct local_st *ls = st->priv;
    if (ls == NULL) {
        return;
    }
    if (ls->tick != NULL) {
        event_free(ls->tick);
    }
    cm_local_free(ls->lc);
    cm_free(ls);
    st->priv = NULL;
}

static bool local_lookup(struct cm_storage *st, const char *key, size_t klen, const char **val,
                         size_t *vlen, int64_t *written_ms)
{
    struct local_st *ls = st->priv;
    int64_t now = cm_now_ms();
    int64_t w;
    if (!cm_local_get(ls->lc, key, klen, now, val, vlen, &w)) {
        return false;
    }
    /* The engine keeps monotonic time; the caller gets wall-clock ms, from the entry's age. */
    *written_ms = cm_wall_us() / 1000 - (now - w);
    return true;
}

static void local_store(struct cm_storage *st, const char *key, size_t klen, const char *val,
                        size_t vlen, int64_t ttl_ms, int64_t written_ms)
{
    struct local_st *ls = st->priv;
    int64_t now = cm_now_ms();
    int64_t w = now;
    if (written_ms > 0) {
        int64_t age = cm_wall_us() / 1000 - written_ms;
        w = age <= 0 ? now : age >= now - INT64_MIN / 2 ? INT64_MIN / 2 : now - age;
    }
    cm_local_set(ls->lc, key, klen, val, vlen, ttl_ms, now, w);
}

static bool local_remove(struct cm_storage *st, const char *key, size_t klen)
{
    struct local_st *ls = st->priv;
    return cm_local_del(ls->lc, key, klen);
}

/* INFO storages lines (SPEC §15, issue 17.4): entries, memory_bytes (the figure max_memory bounds),
 * overhead_per_entry (memory_bytes less key and value bytes, per entry), evictions; tlfu adds its
 * queue sizes and targets. */
static void local_info(struct cm_storage *st, struct cm_buf *out)
{
    struct local_st *ls = st->priv;
    struct cm_local_stats s;
    cm_local_get_stats(ls->lc, &s);
    double overhead = s.entries ? (double)(s.memory_bytes - s.kv_bytes) / (double)s.entries : 0;
    cm_buf_printf(out,
                  "entries:%llu\r\nmemory_bytes:%llu\r\nmax_memory:%llu\r\n"
                  "key_value_bytes:%llu\r\noverhead_per_entry:%.1f\r\ncapacity:%llu\r\n"
                  "evictions:%llu\r\nexpired:%llu\r\n",
                  (unsigned long long)s.entries, (unsigned long long)s.memory_bytes,
                  (unsigned long long)s.max_memory, (unsigned long long)s.kv_bytes, overhead,
                  (unsigned long long)s.size, (unsigned long long)s.evictions,
                  (unsigned long long)s.expired);
    if (ls->lc->policy == CM_LOCAL_TLFU) {
        cm_buf_printf(out,
                      "window:%llu\r\nprobation:%llu\r\nprotected:%llu\r\nwindow_max:%llu\r\n"
                      "protected_max:%llu\r\n",
                      (unsigned long long)s.window, (unsigned long long)s.probation,
                      (unsigned long long)s.protected_, (unsigned long long)s.window_max,
                      (unsigned long long)s.protected_max);
    }
}

const struct cm_storage_ops cm_st_lru_ops = {
    .name = "lru",
    .local = true,
    .open = lru_open,
    .close = local_close,
    .lookup = local_lookup,
    .store = local_store,
    .remove = local_remove,
    .info = local_info,
};

const struct cm_storage_ops cm_st_tlfu_ops = {
    .name = "tlfu",
    .local = true,
    .open = tlfu_open,
    .close = local_close,
    .lookup = local_lookup,
    .store = local_store,
    .remove = local_remove,
    .info = local_info,
};
