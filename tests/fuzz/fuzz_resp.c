/* libFuzzer target for the RESP parser: the input is fed in 1-3 chunks chosen from its own
 * bytes, and must give the same requests and the same error as when fed whole, and as when fed
 * whole to a parser without the whole-request fast path. Each request is also re-encoded with
 * the reply encoder (array of bulks) and must parse back to itself. */
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/resp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a parse produced: a hash of every argument, the request count, the final status. */
struct outcome {
    uint64_t hash;
    size_t nreq;
    int rc;
    char err[128];
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ s[i]) * 1099511628211ULL;
    }
    return h;
}

/* Encodes a as a multibulk request and checks that it parses back to the same arguments. */
static void check_roundtrip(const struct cm_argv *a)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_resp_array(&b, (size_t)a->argc);
    for (int i = 0; i < a->argc; i++) {
        cm_resp_bulk(&b, a->argv[i], a->lens[i]);
    }
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    cm_resp_feed(p, cm_buf_start(&b), cm_buf_used(&b));
    struct cm_argv *back = NULL;
    if (cm_resp_next(p, &back) != CM_OK || back->argc != a->argc) {
        abort();
    }
    for (int i = 0; i < a->argc; i++) {
        if (back->lens[i] != a->lens[i] || memcmp(back->argv[i], a->argv[i], a->lens[i]) != 0 ||
            back->argv[i][back->lens[i]] != '\0') {
            abort();
        }
    }
    cm_argv_free(back);
    if (cm_resp_next(p, &back) != CM_EAGAIN || cm_resp_pending(p) != 0) {
        abort();
    }
    cm_resp_parser_free(p);
    cm_buf_deinit(&b);
}

static void drain(struct cm_resp_parser *p, struct outcome *o, bool roundtrip)
{
    struct cm_argv *a;
    while ((o->rc = cm_resp_next(p, &a)) == CM_OK) {
        if (a->argc <= 0) {
            abort();
        }
        for (int i = 0; i < a->argc; i++) {
            o->hash = fnv(o->hash, &a->lens[i], sizeof(a->lens[i]));
            o->hash = fnv(o->hash, a->argv[i], a->lens[i]);
        }
        o->nreq++;
        if (roundtrip && a->argc <= 64) {
            check_roundtrip(a);
        }
        cm_argv_free(a);
    }
    if (o->rc == CM_ERR) {
        snprintf(o->err, sizeof(o->err), "%s", cm_resp_errstr(p));
        char sample[300];
        cm_resp_err_sample(p, sample, 1 + o->hash % sizeof(sample));
        if (strlen(sample) >= sizeof(sample)) {
            abort();
        }
    }
}

/* Parses msg[0..n) fed in pieces ending at cuts[0..ncuts), then the rest. */
static void parse(const uint8_t *msg, size_t n, const size_t *cuts, size_t ncuts, bool use_reserve,
                  uint64_t max_bulk, size_t max_args, bool roundtrip, bool fast, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->hash = 1469598103934665603ULL;
    struct cm_resp_parser *p = cm_resp_parser_new(max_bulk, max_args);
    if (!fast) {
        cm_resp_parser_no_fast_path(p);
    }
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        if (use_reserve) {
            char *dst = cm_resp_reserve(p, end - at);
            memcpy(dst, msg + at, end - at);
            cm_resp_commit(p, end - at);
        } else {
            cm_resp_feed(p, (const char *)msg + at, end - at);
        }
        at = end;
        drain(p, o, roundtrip);
        if (o->rc == CM_ERR) {
            break;
        }
    }
    cm_resp_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) {
        return 0;
    }
    /* Byte 0: chunk count and feed mode; byte 1: limits; bytes 2..: the message. */
    uint8_t ctl = data[0], lim = data[1];
    const uint8_t *msg = data + 2;
    size_t n = size - 2;
    size_t nchunks = 1 + ctl % 3;
    bool use_reserve = (ctl & 0x80) != 0;
    /* Small limits half the time so the limit paths are reachable from small inputs. */
    uint64_t max_bulk = (lim & 1) ? (uint64_t)(lim >> 1) : 0;
    size_t max_args = (lim & 1) ? (size_t)(1 + (lim >> 4)) : 0;

    size_t cuts[2];
    size_t ncuts = 0;
    uint64_t h = fnv(1469598103934665603ULL, msg, n);
    for (size_t i = 0; i + 1 < nchunks && n > 0; i++) {
        size_t c = (size_t)((h >> (i * 24)) % (n + 1));
        if (ncuts > 0 && c < cuts[ncuts - 1]) {
            c = cuts[ncuts - 1];
        }
        cuts[ncuts++] = c;
    }

    struct outcome whole, split, general;
    parse(msg, n, NULL, 0, false, max_bulk, max_args, true, true, &whole);
    parse(msg, n, cuts, ncuts, use_reserve, max_bulk, max_args, false, true, &split);
    parse(msg, n, NULL, 0, false, max_bulk, max_args, false, false, &general);
    /* Split invariance, and the fast path agreeing with the general one: same requests, same
     * status, same error text. */
    if (whole.nreq != split.nreq || whole.hash != split.hash || whole.rc != split.rc ||
        strcmp(whole.err, split.err) != 0) {
        abort();
    }
    if (whole.nreq != general.nreq || whole.hash != general.hash || whole.rc != general.rc ||
        strcmp(whole.err, general.err) != 0) {
        abort();
    }
    return 0;
}
