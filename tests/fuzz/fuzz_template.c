/* libFuzzer target for key templates (daemon/node.c): the input is a template, a newline, then a
 * client key (any bytes). A template that parses is matched against the key, and the result must
 * agree with a reference matcher written straight from SPEC §3 (each {param} captures one or
 * more bytes, the shortest that lets the rest of the template match, params left to right):
 * same verdict and the same captures. A match's captures put back into the template must give
 * the key again. */
#include "daemon/alloc.h"
#include "daemon/node.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_TPL 200   /* bytes of template (config lines are shorter still) */
#define MAX_KEY 256   /* bytes of key: the reference is O(segments * key^2) */

/* Reference state: cut[s] is where segment s ends in the key; dead[s][pos] marks a proven
 * failure of segments s.. from key position pos. */
struct ref {
    const struct cm_tpl *t;
    const char *key;
    size_t klen;
    size_t *cut;
    unsigned char *dead;
};

static bool ref_match(struct ref *r, size_t seg, size_t pos)
{
    if (seg == r->t->nsegs) {
        return pos == r->klen;
    }
    unsigned char *dead = &r->dead[seg * (r->klen + 1) + pos];
    if (*dead) {
        return false;
    }
    const struct cm_tpl_seg *s = &r->t->segs[seg];
    if (!s->param) {
        if (r->klen - pos >= s->len && memcmp(r->key + pos, s->text, s->len) == 0 &&
            ref_match(r, seg + 1, pos + s->len)) {
            r->cut[seg] = pos + s->len;
            return true;
        }
    } else {
        for (size_t end = pos + 1; end <= r->klen; end++) {   /* shortest first */
            if (ref_match(r, seg + 1, end)) {
                r->cut[seg] = end;
                return true;
            }
        }
    }
    *dead = 1;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL || (size_t)(nl - data) > MAX_TPL || size - (size_t)(nl - data) - 1 > MAX_KEY) {
        return 0;
    }
    size_t tlen = (size_t)(nl - data);
    char tpl[MAX_TPL + 1];
    memcpy(tpl, data, tlen);
    tpl[tlen] = '\0';
    const char *key = (const char *)nl + 1;
    size_t klen = size - tlen - 1;

    struct cm_tpl t;
    char err[160];
    if (cm_tpl_parse(&t, tpl, err, sizeof(err)) != CM_OK) {
        return 0;
    }
    struct cm_params p;
    bool m = cm_tpl_match(&t, key, klen, &p);

    struct ref r = { .t = &t, .key = key, .klen = klen };
    r.cut = cm_calloc(t.nsegs ? t.nsegs : 1, sizeof(*r.cut));
    r.dead = cm_calloc((t.nsegs + 1) * (klen + 1), 1);
    bool want = ref_match(&r, 0, 0);
    if (m != want) {
        abort();   /* verdict differs from the spec's definition */
    }
    if (m) {
        size_t start = 0, k = 0, rebuilt = 0;
        for (size_t s = 0; s < t.nsegs; s++) {
            if (t.segs[s].param) {
                if (k >= p.n || p.val[k] != key + start || p.val_len[k] != r.cut[s] - start ||
                    p.val_len[k] == 0) {
                    abort();   /* capture differs from the shortest-first one */
                }
                rebuilt += p.val_len[k];
                k++;
            } else {
                rebuilt += t.segs[s].len;
            }
            start = r.cut[s];
        }
        if (k != p.n || rebuilt != klen) {
            abort();   /* captures and literals do not make up the key */
        }
    }
    cm_free(r.cut);
    cm_free(r.dead);
    cm_tpl_deinit(&t);
    return 0;
}
