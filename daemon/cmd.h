/* The command table and handlers (SPEC §4). */
#ifndef CM_DAEMON_CMD_H
#define CM_DAEMON_CMD_H

struct cm_req;

/* Runs the command of a request that was just queued on its connection. The reply is either
 * complete when this returns (DONE) or completed later by flights. */
void cm_cmd_dispatch(struct cm_req *req);

#endif
