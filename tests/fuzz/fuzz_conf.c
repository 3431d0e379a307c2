/* libFuzzer target for the config loader: any bytes either load into a config whose invariants
 * hold (every cache points into the storages, required fields set) or fail with messages; either
 * way everything allocated is freed (cm_alloc_used balances, ASan checks the rest). */
#include "conf/conf.h"
#include "daemon/alloc.h"

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
            st->table == NULL || strlen(st->table) > 63) {
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
        cm_conf_free(conf);
    } else if (conf != NULL) {
        abort();
    }
    if (cm_alloc_used() != used) {
        abort();
    }
    return 0;
}
