/* Per-node counters (SPEC §7) and server counters, and their rendering for STATS, INFO and
 * /metrics. */
#ifndef CM_DAEMON_STATS_H
#define CM_DAEMON_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;
struct cm_server;
struct cm_node;

/* Embedded in struct cm_node. request_count = hit_count + miss_count is derived. */
struct cm_node_stats {
    uint64_t hit_count;               /* answered from any cache, directly or via a flight */
    uint64_t miss_count;              /* needed the loader */
    uint64_t local_hit_count;
    uint64_t remote_hit_count;
    uint64_t coalesced_count;         /* requests that joined a flight in progress */
    uint64_t load_success_count;      /* loader calls answered 200 or 404 */
    uint64_t load_failure_count;
    uint64_t total_load_time_ns;
    uint64_t doorkeeper_reject_count;
    /* SPEC §12 */
    uint64_t stale_hit_count;         /* answered with a stale entry (grace or error); also hits */
    uint64_t refresh_count;           /* background loads started */
    uint64_t negative_hit_count;      /* answered nil from a cached 404 */
    uint64_t breaker_open_count;      /* times the breaker opened */
    uint64_t load_queued;             /* gauge: loads waiting for a loader slot (cron) */
    uint64_t breaker_state;           /* gauge: 0 closed, 1 open, 2 trial load out (cron) */
};

/* Embedded in struct cm_server. */
struct cm_server_stats {
    uint64_t connections_received;
    uint64_t rejected_connections;
    uint64_t commands_processed;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t protocol_errors;
};

/* Appends the STATS reply for one node: a map (RESP3) or flat array (RESP2) of counters. */
void cm_stats_node_reply(const struct cm_node *node, struct cm_buf *out, bool resp3);
/* Appends the INFO text (sections: server clients memory stats cachemed keyspace); section NULL
 * or "all"/"everything"/"default" for all. */
void cm_stats_info(struct cm_server *srv, const char *section, struct cm_buf *out);
/* Appends Prometheus text exposition of every counter. */
void cm_stats_metrics(struct cm_server *srv, struct cm_buf *out);

#endif
