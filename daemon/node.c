/* Nodes: template matching, storage keys, loader URLs, chain layout. */
#include "daemon/node.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/bloom.h"
#include "daemon/buf.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <string.h>

/*
 * Glob-style matching where each param is "one byte, then any bytes". Only the most recent
 * param is ever widened on a mismatch (the classic last-star backtracking), which yields the
 * leftmost-shortest assignment in O(len * segments) without recursion.
 */
bool cm_tpl_match(const struct cm_tpl *t, const char *key, size_t klen, struct cm_params *params)
{
    size_t seg = 0, off = 0;   /* position in the template: segment and offset in a literal */
    size_t s = 0;              /* position in the key */
    ssize_t star_seg = -1;     /* the last param seen */
    size_t star_end = 0;       /* where that param currently ends in the key */
    size_t pstart[CM_NODE_MAX_PARAMS], pend[CM_NODE_MAX_PARAMS];
    size_t np = 0;

    for (;;) {
        if (seg < t->nsegs && t->segs[seg].param) {
            /* Start a param: it takes one byte, then grows only on backtracking. */
            if (s >= klen) {
                goto backtrack;
            }
            pstart[t->segs[seg].pidx] = s;
            /* A param that ends the template takes the rest of the key: where widening it one
             * byte at a time would end. */
            s = seg + 1 == t->nsegs ? klen : s + 1;
            star_seg = (ssize_t)seg;
            star_end = s;
            pend[t->segs[seg].pidx] = s;
            seg++;
            off = 0;
            continue;
        }
        if (seg < t->nsegs) {
            const struct cm_tpl_seg *lit = &t->segs[seg];
            if (s < klen && key[s] == lit->text[off]) {
                s++;
                if (++off == lit->len) {
                    seg++;
                    off = 0;
                }
                continue;
            }
            goto backtrack;
        }
        if (s == klen) {
            break;
        }
    backtrack:
        if (star_seg < 0 || star_end >= klen) {
            return false;
        }
        /* Widen the last param by one byte and retry what follows it. */
        star_end++;
        pend[t->segs[star_seg].pidx] = star_end;
        s = star_end;
        seg = (size_t)star_seg + 1;
        off = 0;
    }
    if (params != NULL) {
        for (size_t i = 0; i < t->nsegs; i++) {
            if (!t->segs[i].param) {
                continue;
            }
            size_t k = t->segs[i].pidx;
            params->name[np] = t->segs[i].text;
            params->name_len[np] = t->segs[i].len;
            params->val[np] = key + pstart[k];
            params->val_len[np] = pend[k] - pstart[k];
            np++;
        }
        params->n = np;
    }
    return true;
}

struct cm_node *cm_nodes_new(const struct cm_conf *conf, struct cm_storage **storages, char *err,
                             size_t errsz)
{
    CM_UNUSED(err);
    CM_UNUSED(errsz);
    struct cm_node *nodes = cm_calloc(conf->nnodes ? conf->nnodes : 1, sizeof(*nodes));
    for (size_t i = 0; i < conf->nnodes; i++) {
        const struct cm_conf_node *cn = &conf->nodes[i];
        struct cm_node *n = &nodes[i];
        n->conf = cn;
        n->name = cn->name;
        /* Parsed and checked once, by the config loader (key: at most CM_NODE_MAX_PARAMS). */
        cm_assert(cn->key_tpl.nsegs > 0 && cn->key_tpl.nparams <= CM_NODE_MAX_PARAMS);
        cm_assert((cn->loader == NULL) == (cn->loader_tpl.nsegs == 0));
        n->key = cn->key_tpl;
        n->loader = cn->loader_tpl;
        n->caches = cm_calloc(cn->ncaches ? cn->ncaches : 1, sizeof(*n->caches));
        n->local_idx = cm_calloc(cn->ncaches ? cn->ncaches : 1, sizeof(size_t));
        n->remote_idx = cm_calloc(cn->ncaches ? cn->ncaches : 1, sizeof(size_t));
        n->ncaches = cn->ncaches;
        for (size_t c = 0; c < cn->ncaches; c++) {
            size_t si = (size_t)(cn->caches[c].st - conf->storages);
            n->caches[c].st = storages[si];
            n->caches[c].ttl_ms = cn->caches[c].ttl_ms;
            if (storages[si]->ops->local) {
                n->local_idx[n->nlocal++] = c;
            } else {
                n->remote_idx[n->nremote++] = c;
            }
        }
        if (cn->doorkeeper) {
            n->doorkeeper = cm_bloom_new(cn->dk_capacity, cn->dk_fpp);
        }
    }
    return nodes;
}

void cm_nodes_free(struct cm_node *nodes, size_t n)
{
    if (nodes == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        cm_free(nodes[i].caches);
        cm_free(nodes[i].local_idx);
        cm_free(nodes[i].remote_idx);
        cm_bloom_free(nodes[i].doorkeeper);
    }
    cm_free(nodes);
}

struct cm_node *cm_node_find(struct cm_node *nodes, size_t n, const char *key, size_t klen,
                             struct cm_params *params)
{
    for (size_t i = 0; i < n; i++) {
        if (cm_tpl_match(&nodes[i].key, key, klen, params)) {
            return &nodes[i];
        }
    }
    return NULL;
}

void cm_node_storage_key(const struct cm_node *node, const char *prefix, const char *key,
                         size_t klen, struct cm_buf *out)
{
    cm_buf_append_str(out, prefix);
    cm_buf_append(out, ":", 1);
    cm_buf_append(out, key, klen);
    cm_buf_append(out, ":", 1);
    cm_buf_append_str(out, node->conf->version);
}

size_t cm_node_storage_key_into(const struct cm_node *node, const char *prefix, const char *key,
                                size_t klen, char *dst, size_t dstsz)
{
    size_t plen = strlen(prefix), vlen = strlen(node->conf->version);
    size_t n = plen + 1 + klen + 1 + vlen;
    if (n <= dstsz) {
        memcpy(dst, prefix, plen);
        dst[plen] = ':';
        memcpy(dst + plen + 1, key, klen);
        dst[plen + 1 + klen] = ':';
        memcpy(dst + plen + 2 + klen, node->conf->version, vlen);
    }
    return n;
}

void cm_node_loader_url(const struct cm_node *node, const struct cm_params *params,
                        struct cm_buf *out)
{
    for (size_t i = 0; i < node->loader.nsegs; i++) {
        const struct cm_tpl_seg *seg = &node->loader.segs[i];
        if (!seg->param) {
            cm_buf_append(out, seg->text, seg->len);
            continue;
        }
        for (size_t p = 0; p < params->n; p++) {
            if (params->name_len[p] == seg->len && memcmp(params->name[p], seg->text, seg->len) == 0) {
                const char *v = params->val[p];
                size_t vl = params->val_len[p];
                size_t dots = 0;   /* v is a span of the key, not NUL-terminated: no strspn */
                while (dots < vl && v[dots] == '.') {
                    dots++;
                }
                if (dots == vl) {
                    /* "." and ".." would be dot segments: encode them so no path can climb. */
                    for (size_t d = 0; d < vl; d++) {
                        cm_buf_append(out, "%2E", 3);
                    }
                } else {
                    cm_pct_encode(out, v, vl);
                }
                break;
            }
        }
    }
}
