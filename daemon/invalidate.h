/* Cross-instance invalidation (SPEC §11): nodes with `invalidate_channel` publish every
 * DEL/SET/REFRESH on a Redis channel, and every instance subscribed to it drops its local copy. */
#ifndef CM_DAEMON_INVALIDATE_H
#define CM_DAEMON_INVALIDATE_H

#include "daemon/common.h"

#include <stddef.h>

struct cm_server;
struct cm_node;
struct cm_inval;

/* Subscribes each node with a channel through the first redis storage of its chain (which
 * reconnects and resubscribes by itself). Returns NULL when no node uses a channel; *rc is
 * CM_ERR (reason in err) when a node has a channel but no redis storage. Must be freed before
 * the storages are closed. */
struct cm_inval *cm_inval_new(struct cm_server *srv, char *err, size_t errsz, int *rc);
void cm_inval_free(struct cm_inval *iv);
/* Publishes that node's key changed (no-op for nodes without a channel). */
void cm_inval_publish(struct cm_inval *iv, const struct cm_node *node, const char *key,
                      size_t klen);

#endif
