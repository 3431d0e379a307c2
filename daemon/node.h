/* Nodes: key templates, storage chains and per-node counters. One cm_node per [node] section. */
#ifndef CM_DAEMON_NODE_H
#define CM_DAEMON_NODE_H

#include "conf/template.h"
#include "daemon/common.h"
#include "daemon/stats.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;
struct cm_bloom;
struct cm_conf;
struct cm_conf_node;
struct cm_storage;

/* A matched key's parameters: spans into the client key (borrowed). */
#define CM_NODE_MAX_PARAMS CM_TPL_MAX_PARAMS
struct cm_params {
    size_t n;
    const char *name[CM_NODE_MAX_PARAMS];   /* borrowed from the template */
    size_t name_len[CM_NODE_MAX_PARAMS];
    const char *val[CM_NODE_MAX_PARAMS];    /* borrowed from the key */
    size_t val_len[CM_NODE_MAX_PARAMS];
};

/* One entry of a node's chain. */
struct cm_node_cache {
    struct cm_storage *st;   /* borrowed from the server */
    int64_t ttl_ms;          /* -1 = never expires */
};

/* Owned by the server's node table. */
struct cm_node {
    const struct cm_conf_node *conf;   /* borrowed from the server's config */
    const char *name;
    struct cm_tpl key;                 /* a view of conf->key_tpl: its segs belong to the config */
    struct cm_tpl loader;              /* view of conf->loader_tpl; nsegs == 0 without a loader */
    struct cm_node_cache *caches;      /* chain in config order, owned */
    size_t ncaches;
    size_t *local_idx;                 /* indices into caches of local storages, in order */
    size_t nlocal;
    size_t *remote_idx;                /* indices of remote storages, in order */
    size_t nremote;
    struct cm_bloom *doorkeeper;       /* NULL when off; owned */
    struct cm_node_stats stats;
};

/* Matches key against t: literal text exactly, each param one or more bytes, shortest first
 * (leftmost-shortest, like a glob matcher). O(len * segments). Fills params on success. */
bool cm_tpl_match(const struct cm_tpl *t, const char *key, size_t klen, struct cm_params *params);

/* Builds the nodes for conf, resolving cache names to storages (storages[i] is conf->storages[i]).
 * Returns an array of conf->nnodes nodes. Everything it uses was validated and parsed by
 * cm_conf_load (templates included), so it cannot fail for a config that loaded: err is kept
 * for the callers and never written. */
struct cm_node *cm_nodes_new(const struct cm_conf *conf, struct cm_storage **storages, char *err,
                             size_t errsz);
void cm_nodes_free(struct cm_node *nodes, size_t n);

/* The first node (file order) whose template matches key, or NULL. */
struct cm_node *cm_node_find(struct cm_node *nodes, size_t n, const char *key, size_t klen,
                             struct cm_params *params);
/* Appends "{prefix}:{key}:{version}". */
void cm_node_storage_key(const struct cm_node *node, const char *prefix, const char *key,
                         size_t klen, struct cm_buf *out);
/* Writes "{prefix}:{key}:{version}" into dst when it fits (dstsz bytes); returns its length
 * either way (a larger result is not written). */
size_t cm_node_storage_key_into(const struct cm_node *node, const char *prefix, const char *key,
                                size_t klen, char *dst, size_t dstsz);
/* Appends the loader URL with params percent-encoded. */
void cm_node_loader_url(const struct cm_node *node, const struct cm_params *params,
                        struct cm_buf *out);

#endif
