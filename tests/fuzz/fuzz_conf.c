/* libFuzzer target for the config loader: any bytes either load into a config whose invariants
 * hold (every cache points into the storages, required fields set) or fail with messages; either
 * way everything allocated is freed (cm_alloc_used balances, ASan checks the rest).
 *
 * A config that loads must also pass every start-up step that needs no network (defect 16:
 * --check passed configs that then exited 1): the nodes are built (cm_nodes_new, over storages
 * that are not opened), local storages are opened, and what the remote backends' open and the
 * listeners' resolution check offline is asserted (their rules, restated here where the
 * backend's parser is static: st_redis.c parse_url, st_sqlite.c url_path). */
#include "conf/conf.h"
#include "conf/conf_check.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/node.h"
#include "daemon/util.h"
#include "storages/local.h"
#include "storages/sql_common.h"
#include "storages/storage.h"

#include <event2/util.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_invariants(const struct cm_conf *c)
{
    if (c->nlisten < 1 || c->prefix == NULL || c->max_clients < 1 || c->max_value_size < 1) {
        abort();
    }
    for (size_t i = 0; i < c->nlisten; i++) {
        if (c->listen[i] == NULL || c->listen[i][0] == '\0') {
            abort();
        }
    }
    for (size_t i = 0; i < c->nstorages; i++) {
        const struct cm_conf_storage *st = &c->storages[i];
        if (st->name == NULL || st->url == NULL || st->pool_size < 1 || st->pool_size > 1024 ||
            st->table == NULL || strlen(st->table) > CM_CONF_MAX_TABLE_LEN) {
            abort();
        }
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct cm_conf_node *n = &c->nodes[i];
        if (n->name == NULL || n->key == NULL || n->version == NULL || n->ncaches < 1) {
            abort();
        }
        for (size_t j = 0; j < n->ncaches; j++) {
            if (n->caches[j].st < c->storages || n->caches[j].st >= c->storages + c->nstorages ||
                n->caches[j].ttl_ms == 0) {
                abort();
            }
        }
        if (n->doorkeeper && (n->dk_capacity < 1 || !(n->dk_fpp > 0 && n->dk_fpp < 1))) {
            abort();
        }
        if (n->loader_socket != NULL && n->loader == NULL) {
            abort();
        }
    }
}

/* What the backend's open takes without the network (see the header comment). */
static void check_storage_opens(const struct cm_conf_storage *st)
{
    struct cm_url u;
    char err[256];
    switch (st->type) {
    case CM_ST_TYPE_LRU:
    case CM_ST_TYPE_TLFU:
        if (st->size < 1 || st->size > CM_LOCAL_MAX_SIZE) {
            abort();
        }
        if (st->size <= 4096) { /* a real open (a TLFU sketch takes 8 bytes an entry) */
            struct cm_storage *s = cm_storage_new(st, NULL, err, sizeof(err));
            if (s == NULL) {
                abort();
            }
            cm_storage_free(s);
        }
        return;
    case CM_ST_TYPE_REDIS: {
        int64_t db = 0;
        if (cm_url_parse(st->url, &u, err, sizeof(err)) != CM_OK || strcmp(u.scheme, "redis") != 0 ||
            u.host == NULL || u.host[0] == '\0') {
            abort();
        }
        if (u.path != NULL && u.path[0] != '\0' &&
            (cm_parse_i64(u.path, strlen(u.path), &db) != CM_OK || db < 0 || db > 65535)) {
            abort();
        }
        if (st->cluster && db != 0) {
            abort();
        }
        cm_url_deinit(&u);
        return;
    }
    case CM_ST_TYPE_PG:
    case CM_ST_TYPE_MYSQL:
        if (!cm_sql_table_valid(st->table) || cm_url_parse(st->url, &u, err, sizeof(err)) != CM_OK) {
            abort();
        }
        cm_url_deinit(&u);
        return;
    case CM_ST_TYPE_SQLITE:
        if (!cm_sql_table_valid(st->table) || strncmp(st->url, "sqlite://", 9) != 0 ||
            strcspn(st->url + 9, "?#") == 0) {
            abort();
        }
        return;
    case CM_ST_TYPE_MONGO:
        return; /* conf runs libmongoc's own URI parser */
    }
    abort();
}

/* server.c: an IP listener parses with evutil_parse_sockaddr_port (others are resolved). */
static void check_listen_parses(const char *spec, bool metrics)
{
    struct cm_conf_addr a;
    struct sockaddr_storage ss;
    int len = (int)sizeof(ss);
    if (!cm_conf_listen_parse(spec, &a) || (metrics && a.family == AF_UNIX)) {
        abort();
    }
    if ((a.family == AF_INET || a.family == AF_INET6) &&
        evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &len) != 0) {
        abort();
    }
}

/* Everything the daemon's start does with c that needs neither the network nor the machine. */
static void check_setup(const struct cm_conf *c)
{
    struct cm_storage *st = cm_calloc(c->nstorages + 1, sizeof(*st));
    struct cm_storage **sts = cm_calloc(c->nstorages + 1, sizeof(*sts));
    struct cm_conf copy = *c;
    char err[256];

    for (size_t i = 0; i < c->nlisten; i++) {
        check_listen_parses(c->listen[i], false);
    }
    if (c->metrics_listen != NULL) {
        check_listen_parses(c->metrics_listen, true);
    }
    for (size_t i = 0; i < c->nstorages; i++) {
        check_storage_opens(&c->storages[i]);
        st[i].ops = cm_storage_ops_for((int)c->storages[i].type);
        st[i].conf = &c->storages[i];
        st[i].name = c->storages[i].name;
        sts[i] = &st[i];
        if (st[i].ops == NULL) {
            abort();
        }
    }
    /* The nodes, without their doorkeeper filters (up to 1 GiB each): cm_bloom_new takes what
     * cm_conf_parse_doorkeeper accepts. */
    copy.nodes = cm_calloc(c->nnodes + 1, sizeof(*copy.nodes));
    memcpy(copy.nodes, c->nodes, c->nnodes * sizeof(*copy.nodes));
    for (size_t i = 0; i < c->nnodes; i++) {
        copy.nodes[i].doorkeeper = false;
    }
    struct cm_node *nodes = cm_nodes_new(&copy, sts, err, sizeof(err));
    if (nodes == NULL) {
        abort();
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct cm_node *n = &nodes[i];
        bool redis = false;
        if (n->key.nsegs == 0 || n->key.nparams > CM_NODE_MAX_PARAMS ||
            (n->conf->loader != NULL) != (n->loader.nsegs > 0) ||
            (n->conf->loader_batch != NULL &&
             (n->key.nparams != 1 || n->conf->loader == NULL ||
              n->conf->loader_batch_tpl.nparams != 1)) ||
            n->conf->loader_batch_max < 1 || n->conf->loader_batch_max > 10000 ||
            n->conf->loader_concurrency < 0 ||
            (n->conf->breaker_failures > 0) != (n->conf->breaker_open_ms > 0)) {
            abort();
        }
        for (size_t j = 0; j < n->ncaches; j++) {
            redis = redis || n->caches[j].st->conf->type == CM_ST_TYPE_REDIS;
        }
        if (n->conf->invalidate_channel != NULL && !redis) {
            abort(); /* invalidate.c would fail the start */
        }
    }
    cm_nodes_free(nodes, c->nnodes);
    cm_free(copy.nodes);
    cm_free(sts);
    cm_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    struct cm_conf *conf;
    size_t used = cm_alloc_used();

    if (devnull == NULL) {
        devnull = fopen("/dev/null", "w");
        if (devnull == NULL) {
            abort();
        }
    }
    if (cm_conf_load_string("fuzz.conf", (const char *)data, size, &conf, devnull) == CM_OK) {
        check_invariants(conf);
        check_setup(conf);
        cm_conf_free(conf);
    } else if (conf != NULL) {
        abort();
    }
    if (cm_alloc_used() != used) {
        abort();
    }
    return 0;
}
