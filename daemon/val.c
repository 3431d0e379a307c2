/* Shared values (val.h). */
#include "daemon/val.h"
#include "daemon/alloc.h"
#include "daemon/common.h"

#include <string.h>

struct cm_val *cm_val_take(char *data, size_t len)
{
    struct cm_val *v = cm_malloc(sizeof(*v));
    v->refs = 1;
    v->len = len;
    v->data = data;
    return v;
}

struct cm_val *cm_val_copy(const char *p, size_t len)
{
    char *data = cm_malloc(len + 1);
    memcpy(data, p, len);
    data[len] = '\0';
    return cm_val_take(data, len);
}

void cm_val_unref(struct cm_val *v)
{
    if (v == NULL) {
        return;
    }
    cm_assert(v->refs > 0);
    if (--v->refs == 0) {
        cm_free(v->data);
        cm_free(v);
    }
}
