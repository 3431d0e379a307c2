/* A value shared by every reply that carries it: a flight's result is answered to each of its
 * waiters (and each MGET slot of a duplicated key) by reference, not by copy. One client asking
 * 1,000 times for a 4 MB value holds 1,000 references, not 4 GB (issue 14, defect 3). */
#ifndef CM_DAEMON_VAL_H
#define CM_DAEMON_VAL_H

#include <stddef.h>

struct cm_val {
    int refs;
    size_t len;
    char *data;   /* owned, NUL-terminated */
};

/* Takes ownership of data (cm_malloc'd, len bytes + NUL). One reference. */
struct cm_val *cm_val_take(char *data, size_t len);
/* Copies len bytes. One reference. */
struct cm_val *cm_val_copy(const char *p, size_t len);
static inline struct cm_val *cm_val_ref(struct cm_val *v)
{
    v->refs++;
    return v;
}
/* Drops a reference; frees at 0. NULL is a no-op. */
void cm_val_unref(struct cm_val *v);

#endif
