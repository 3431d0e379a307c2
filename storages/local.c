/* In-process storages: local://lru and local://tlfu. (stub: being written) */
#include "storages/storage.h"

#include <stdio.h>

static int stub_open(struct cm_storage *st, char *err, size_t errsz)
{
    CM_UNUSED(st);
    snprintf(err, errsz, "not implemented yet");
    return CM_ERR;
}

static void stub_close(struct cm_storage *st)
{
    CM_UNUSED(st);
}

const struct cm_storage_ops cm_st_lru_ops = { .name = "lru", .local = true, .open = stub_open, .close = stub_close };
const struct cm_storage_ops cm_st_tlfu_ops = { .name = "tlfu", .local = true, .open = stub_open, .close = stub_close };
