/* Jobs of the worker-pool storages (sqlite, mongo): copies in, results out, finish on the loop. */
#include "storages/blocking.h"
#include "daemon/alloc.h"
#include "daemon/util.h"
#include "storages/st_keys.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cm_bjob *cm_bjob_new(struct cm_st_op *op, void *backend)
{
    struct cm_bjob *j = cm_calloc(1, sizeof(*j));
    j->op = op;
    j->backend = backend;
    j->status = CM_OK;
    j->now_us = cm_wall_us();
    /* A ttl past CM_ST_EXPIRE_MAX_MS is stored as never expiring; below it, * 1000 fits. */
    j->expire_us =
        cm_st_ttl_forever(op->ttl_ms, j->now_us / 1000) ? -1 : j->now_us + op->ttl_ms * 1000;
    j->res = cm_calloc(op->nitems ? op->nitems : 1, sizeof(*j->res));
    if (op->kind == CM_ST_SET) {
        j->wval = cm_calloc(op->nitems ? op->nitems : 1, sizeof(*j->wval));
        j->wlen = cm_calloc(op->nitems ? op->nitems : 1, sizeof(*j->wlen));
        for (size_t i = 0; i < op->nitems; i++) {
            j->wlen[i] = op->items[i].wlen;
            j->wval[i] = cm_malloc(j->wlen[i] ? j->wlen[i] : 1);
            if (j->wlen[i] > 0) {
                memcpy(j->wval[i], op->items[i].wval, j->wlen[i]);
            }
        }
    }
    return j;
}

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : alen > blen;
}

/* qsort has no context argument: the op being sorted lives here for the one worker thread
 * that is sorting (each thread has its own copy). */
static __thread const struct cm_st_op *sort_op;

static int order_cmp(const void *pa, const void *pb)
{
    const struct cm_st_item *a = &sort_op->items[*(const size_t *)pa];
    const struct cm_st_item *b = &sort_op->items[*(const size_t *)pb];
    return key_cmp(a->key, a->klen, b->key, b->klen);
}

void cm_bjob_hit(struct cm_bjob *j, const char *key, size_t klen, const void *val, size_t vlen,
                 int64_t written_ms)
{
    const struct cm_st_op *op = j->op;
    if (j->order == NULL) {
        j->order = cm_calloc(op->nitems ? op->nitems : 1, sizeof(*j->order));
        for (size_t i = 0; i < op->nitems; i++) {
            j->order[i] = i;
        }
        sort_op = op;
        qsort(j->order, op->nitems, sizeof(*j->order), order_cmp);
        sort_op = NULL;
    }
    /* lower bound, then every equal key (an op may ask for one key twice) */
    size_t lo = 0, hi = op->nitems;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct cm_st_item *it = &op->items[j->order[mid]];
        if (key_cmp(it->key, it->klen, key, klen) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (; lo < op->nitems; lo++) {
        size_t i = j->order[lo];
        if (key_cmp(op->items[i].key, op->items[i].klen, key, klen) != 0) {
            break;
        }
        struct cm_bres *r = &j->res[i];
        cm_free(r->val);
        r->val = cm_malloc(vlen ? vlen : 1);
        if (vlen > 0) {
            memcpy(r->val, val, vlen);
        }
        r->vlen = vlen;
        r->written_ms = written_ms;
        r->hit = true;
    }
}

void cm_bjob_fail(struct cm_bjob *j, const char *fmt, ...)
{
    if (j->status != CM_OK) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err, sizeof(j->err), fmt, ap);
    va_end(ap);
    j->status = CM_ERR;
}

static void bjob_free(struct cm_bjob *j)
{
    size_t n = j->op->nitems;
    for (size_t i = 0; i < n; i++) {
        cm_free(j->res[i].val);
        if (j->wval != NULL) {
            cm_free(j->wval[i]);
        }
    }
    cm_free(j->res);
    cm_free(j->wval);
    cm_free(j->wlen);
    cm_free(j->order);
    cm_free(j);
}

void cm_bjob_complete(void *arg)
{
    struct cm_bjob *j = arg;
    struct cm_st_op *op = j->op;
    if (!op->timed_out) {
        if (j->status != CM_OK) {
            cm_st_op_fail(op, "%s", j->err);
        } else if (op->kind == CM_ST_GET) {
            for (size_t i = 0; i < op->nitems; i++) {
                op->items[i].result = j->res[i].hit ? CM_ST_HIT : CM_ST_MISS;
                if (j->res[i].hit) {
                    cm_free(op->items[i].val);
                    op->items[i].val = j->res[i].val; /* moved */
                    op->items[i].vlen = j->res[i].vlen;
                    op->items[i].written_ms = j->res[i].written_ms;
                    j->res[i].val = NULL;
                }
            }
        }
    }
    bjob_free(j);
    cm_st_op_finish(op); /* frees op */
}

static int digits(const char *s, size_t len, size_t *pos, size_t n, int *out)
{
    int v = 0;
    if (*pos + n > len) {
        return CM_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[*pos + i];
        if (c < '0' || c > '9') {
            return CM_ERR;
        }
        v = v * 10 + (c - '0');
    }
    *pos += n;
    *out = v;
    return CM_OK;
}

static int expect(const char *s, size_t len, size_t *pos, char c)
{
    if (*pos >= len || s[*pos] != c) {
        return CM_ERR;
    }
    (*pos)++;
    return CM_OK;
}

int cm_parse_iso8601_us(const char *s, size_t len, int64_t *out)
{
    size_t p = 0;
    int y, mo, d, h, mi, se, usec = 0;
    if (digits(s, len, &p, 4, &y) || expect(s, len, &p, '-') || digits(s, len, &p, 2, &mo) ||
        expect(s, len, &p, '-') || digits(s, len, &p, 2, &d)) {
        return CM_ERR;
    }
    if (p >= len || (s[p] != ' ' && s[p] != 'T')) {
        return CM_ERR;
    }
    p++;
    if (digits(s, len, &p, 2, &h) || expect(s, len, &p, ':') || digits(s, len, &p, 2, &mi) ||
        expect(s, len, &p, ':') || digits(s, len, &p, 2, &se)) {
        return CM_ERR;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
        return CM_ERR;
    }
    if (p < len && s[p] == '.') {
        p++;
        int nd = 0;
        while (p < len && s[p] >= '0' && s[p] <= '9') {
            if (nd < 6) {
                usec = usec * 10 + (s[p] - '0');
            }
            nd++;
            p++;
        }
        if (nd == 0) {
            return CM_ERR;
        }
        for (; nd < 6; nd++) {
            usec *= 10;
        }
    }
    int64_t off_s = 0;
    if (p < len && s[p] == 'Z') {
        p++;
    } else if (p < len && (s[p] == '+' || s[p] == '-')) {
        int sign = s[p] == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(s, len, &p, 2, &oh) || expect(s, len, &p, ':') || digits(s, len, &p, 2, &om)) {
            return CM_ERR;
        }
        off_s = sign * (oh * 3600 + om * 60);
    }
    if (p != len) {
        return CM_ERR;
    }
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    int64_t secs = (int64_t)timegm(&tm) - off_s;
    *out = secs * 1000000 + usec;
    return CM_OK;
}
