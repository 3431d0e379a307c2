/* postgresql storage. (stub: being written) */
#include "storages/storage.h"

#include <stdio.h>

static int stub_open(struct cm_storage *st, char *err, size_t errsz)
{
    CM_UNUSED(st);
    snprintf(err, errsz, "postgresql storage not implemented yet");
    return CM_ERR;
}

static void stub_submit(struct cm_storage *st, struct cm_st_op *op)
{
    CM_UNUSED(st);
    cm_st_op_fail(op, "not implemented");
    cm_st_op_finish_later(op);
}

static void stub_close(struct cm_storage *st)
{
    CM_UNUSED(st);
}

const struct cm_storage_ops cm_st_pg_ops = {
    .name = "postgresql", .open = stub_open, .submit = stub_submit, .close = stub_close,
};
