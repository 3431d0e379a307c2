/* libFuzzer target for key templates (daemon/node.c): the input is a template, a newline, then a
 * client key (any bytes). A template that parses is matched against the key, and the result must
 * agree with a reference matcher written straight from SPEC §3 (each {param} captures one or
 * more bytes, the shortest that lets the rest of the template match, params left to right):
 * same verdict and the same captures. A match's captures put back into the template must give
 * the key again, and put into a loader URL (one path segment per param) they must stay inside
 * their segment: only unreserved bytes or %XX, decoding back to the param, never "." or ".."
 * (SPEC §3, §10). */
#include "daemon/alloc.h"
#include "daemon/buf.h"
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

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Checks one encoded path segment [s, e) against the raw param value v. */
static void check_segment(const char *s, const char *e, const char *v, size_t vl)
{
    size_t n = 0;
    if ((e - s == 1 && s[0] == '.') || (e - s == 2 && s[0] == '.' && s[1] == '.')) {
        abort();   /* a dot segment would let the key climb the loader's path */
    }
    while (s < e) {
        char c;
        if (*s == '%') {
            if (e - s < 3 || hexval(s[1]) < 0 || hexval(s[2]) < 0) {
                abort();
            }
            c = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 3;
        } else {
            c = *s++;
            bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                              c == '~';
            if (!unreserved) {
                abort();   /* a byte that could change the URL's structure went through as is */
            }
        }
        if (n >= vl || v[n++] != c) {
            abort();   /* does not decode back to the param */
        }
    }
    if (n != vl) {
        abort();
    }
}

/* Builds "http://o/x/{p0}/{p1}/.../" from t's param names and checks every segment of the URL
 * the matched params give. */
static void check_loader_url(const struct cm_tpl *t, const struct cm_params *p)
{
    struct cm_buf src, url;
    cm_buf_init(&src);
    cm_buf_init(&url);
    cm_buf_append_str(&src, "http://o/x/");
    for (size_t s = 0; s < t->nsegs; s++) {
        if (t->segs[s].param) {
            cm_buf_append(&src, "{", 1);
            cm_buf_append(&src, t->segs[s].text, t->segs[s].len);
            cm_buf_append(&src, "}/", 2);
        }
    }
    cm_buf_append(&src, "", 1);
    struct cm_node node;
    char err[160];
    memset(&node, 0, sizeof(node));
    if (cm_tpl_parse(&node.loader, cm_buf_start(&src), err, sizeof(err)) != CM_OK) {
        abort();   /* names that parsed in the key template parse here too */
    }
    cm_node_loader_url(&node, p, &url);
    const char *u = cm_buf_start(&url), *end = u + cm_buf_used(&url);
    if (cm_buf_used(&url) < 11 || memcmp(u, "http://o/x/", 11) != 0) {
        abort();
    }
    const char *s = u + 11;
    for (size_t i = 0; i < t->nsegs; i++) {
        if (!t->segs[i].param) {
            continue;
        }
        const char *e = memchr(s, '/', (size_t)(end - s));
        if (e == NULL) {
            abort();   /* a param's value closed or swallowed a segment */
        }
        size_t k = 0;   /* the loader takes the first param of that name */
        while (p->name_len[k] != t->segs[i].len ||
               memcmp(p->name[k], t->segs[i].text, t->segs[i].len) != 0) {
            k++;
        }
        check_segment(s, e, p->val[k], p->val_len[k]);
        s = e + 1;
    }
    if (s != end) {
        abort();
    }
    cm_tpl_deinit(&node.loader);
    cm_buf_deinit(&src);
    cm_buf_deinit(&url);
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
        check_loader_url(&t, &p);
    }
    cm_free(r.cut);
    cm_free(r.dead);
    cm_tpl_deinit(&t);
    return 0;
}
