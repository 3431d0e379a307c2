/* Rendering of counters: STATS replies, INFO text and Prometheus /metrics. */
#include "daemon/stats.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/flight.h"
#include "daemon/loader.h"
#include "daemon/node.h"
#include "daemon/resp.h"
#include "daemon/server.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CM_VERSION "0.1.0"

static double rate(uint64_t num, uint64_t den)
{
    return den == 0 ? 0.0 : (double)num / (double)den;
}

/* The node counters in SPEC §7 order; doubles are flagged. */
struct counter {
    const char *name;
    uint64_t u;
    double d;
    bool is_double;
};

static size_t node_counters(const struct cm_node *node, struct counter *c)
{
    const struct cm_node_stats *s = &node->stats;
    uint64_t requests = s->hit_count + s->miss_count;
    uint64_t loads = s->load_success_count + s->load_failure_count;
    size_t n = 0;
#define U(nm, v) c[n++] = (struct counter){ nm, (v), 0, false }
#define D(nm, v) c[n++] = (struct counter){ nm, 0, (v), true }
    U("request_count", requests);
    U("hit_count", s->hit_count);
    U("miss_count", s->miss_count);
    D("hit_rate", rate(s->hit_count, requests));
    D("miss_rate", rate(s->miss_count, requests));
    U("load_count", loads);
    U("load_success_count", s->load_success_count);
    U("load_failure_count", s->load_failure_count);
    D("load_failure_rate", rate(s->load_failure_count, loads));
    U("total_load_time", s->total_load_time_ns);
    D("average_load_time", rate(s->total_load_time_ns, loads));
    U("local_hit_count", s->local_hit_count);
    U("remote_hit_count", s->remote_hit_count);
    U("coalesced_count", s->coalesced_count);
    U("doorkeeper_reject_count", s->doorkeeper_reject_count);
    U("stale_hit_count", s->stale_hit_count);
    U("refresh_count", s->refresh_count);
    U("negative_hit_count", s->negative_hit_count);
    U("load_queued", s->load_queued);
    U("breaker_open_count", s->breaker_open_count);
    U("breaker_state", s->breaker_state);
#undef U
#undef D
    return n;
}

void cm_stats_node_reply(const struct cm_node *node, struct cm_buf *out, bool resp3)
{
    struct counter c[32];
    size_t n = node_counters(node, c);
    cm_resp_map(out, n, resp3);
    for (size_t i = 0; i < n; i++) {
        cm_resp_bulk_str(out, c[i].name);
        if (c[i].is_double) {
            cm_resp_double(out, c[i].d, resp3);
        } else {
            cm_resp_int(out, (int64_t)c[i].u);
        }
    }
}

static bool want(const char *section, const char *name, bool in_default)
{
    if (section == NULL || strcasecmp(section, "default") == 0) {
        return in_default;
    }
    return strcasecmp(section, "all") == 0 || strcasecmp(section, "everything") == 0 ||
           strcasecmp(section, name) == 0;
}

void cm_stats_info(struct cm_server *srv, const char *section, struct cm_buf *out)
{
    int64_t up = (cm_now_ms() - srv->start_ms) / 1000;
    if (want(section, "server", true)) {
        cm_buf_printf(out,
                      "# Server\r\nredis_version:7.0.0\r\ncachemed_version:%s\r\nredis_mode:standalone\r\n"
                      "os:Linux\r\narch_bits:64\r\nprocess_id:%d\r\ntcp_port:0\r\n"
                      "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nconfig_file:%s\r\n\r\n",
                      CM_VERSION, (int)getpid(), (long long)up, (long long)up / 86400,
                      srv->conf->file ? srv->conf->file : "");
    }
    if (want(section, "clients", true)) {
        cm_buf_printf(out, "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%d\r\n"
                           "blocked_clients:0\r\n\r\n",
                      srv->nclients, srv->max_clients);
    }
    if (want(section, "memory", true)) {
        cm_buf_printf(out, "# Memory\r\nused_memory:%zu\r\n\r\n", cm_alloc_used());
    }
    if (want(section, "persistence", true)) {
        cm_buf_printf(out, "# Persistence\r\nloading:0\r\n\r\n");
    }
    if (want(section, "stats", true)) {
        const struct cm_server_stats *s = &srv->stats;
        cm_buf_printf(out,
                      "# Stats\r\ntotal_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
                      "total_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n"
                      "rejected_connections:%llu\r\nprotocol_errors:%llu\r\n"
                      "flights_in_progress:%zu\r\nloads_in_progress:%zu\r\n\r\n",
                      (unsigned long long)s->connections_received,
                      (unsigned long long)s->commands_processed, (unsigned long long)s->bytes_in,
                      (unsigned long long)s->bytes_out, (unsigned long long)s->rejected_connections,
                      (unsigned long long)s->protocol_errors, cm_flights_active(srv->flights),
                      cm_loader_pending(srv->loader));
    }
    if (want(section, "replication", true)) {
        cm_buf_printf(out, "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if (want(section, "nodes", true)) {
        cm_buf_printf(out, "# Nodes\r\n");
        for (size_t i = 0; i < srv->nnodes; i++) {
            struct counter c[32];
            size_t n = node_counters(&srv->nodes[i], c);
            cm_buf_printf(out, "node_%s:", srv->nodes[i].name);
            for (size_t k = 0; k < n; k++) {
                if (c[k].is_double) {
                    cm_buf_printf(out, "%s%s=%.6g", k ? "," : "", c[k].name, c[k].d);
                } else {
                    cm_buf_printf(out, "%s%s=%llu", k ? "," : "", c[k].name,
                                  (unsigned long long)c[k].u);
                }
            }
            cm_buf_printf(out, "\r\n");
        }
        cm_buf_printf(out, "\r\n");
    }
    if (want(section, "storages", true)) {
        cm_buf_printf(out, "# Storages\r\n");
        for (size_t i = 0; i < srv->nstorages; i++) {
            const struct cm_storage *st = srv->storages[i];
            const struct cm_st_stats *s = &st->stats;
            cm_buf_printf(out,
                          "storage_%s:type=%s,reads=%llu,hits=%llu,writes=%llu,deletes=%llu,"
                          "errors=%llu,timeouts=%llu,rejected=%llu,avg_latency_us=%.1f\r\n",
                          st->name, st->ops->name, (unsigned long long)s->reads,
                          (unsigned long long)s->hits, (unsigned long long)s->writes,
                          (unsigned long long)s->deletes, (unsigned long long)s->errors,
                          (unsigned long long)s->timeouts, (unsigned long long)s->rejected,
                          rate(s->latency_ns, s->ops) / 1000.0);
            if (st->ops->info != NULL) {
                /* Backend details ("name:value" lines), prefixed with the storage name. */
                struct cm_buf b;
                cm_buf_init(&b);
                st->ops->info((struct cm_storage *)st, &b);
                cm_buf_append(&b, "", 1);
                for (char *line = cm_buf_start(&b), *end; *line != '\0'; line = end) {
                    end = strchr(line, '\n');
                    end = end ? end + 1 : line + strlen(line);
                    cm_buf_printf(out, "storage_%s_%.*s", st->name, (int)(end - line), line);
                }
                cm_buf_deinit(&b);
            }
        }
        cm_buf_printf(out, "\r\n");
    }
    if (want(section, "keyspace", true)) {
        cm_buf_printf(out, "# Keyspace\r\n");
    }
}

void cm_stats_metrics(struct cm_server *srv, struct cm_buf *out)
{
    const struct cm_server_stats *s = &srv->stats;
    cm_buf_printf(out, "# TYPE cachemed_connected_clients gauge\ncachemed_connected_clients %zu\n",
                  srv->nclients);
    cm_buf_printf(out, "# TYPE cachemed_connections_received_total counter\n"
                       "cachemed_connections_received_total %llu\n",
                  (unsigned long long)s->connections_received);
    cm_buf_printf(out, "# TYPE cachemed_rejected_connections_total counter\n"
                       "cachemed_rejected_connections_total %llu\n",
                  (unsigned long long)s->rejected_connections);
    cm_buf_printf(out, "# TYPE cachemed_commands_total counter\ncachemed_commands_total %llu\n",
                  (unsigned long long)s->commands_processed);
    cm_buf_printf(out, "# TYPE cachemed_net_input_bytes_total counter\n"
                       "cachemed_net_input_bytes_total %llu\n",
                  (unsigned long long)s->bytes_in);
    cm_buf_printf(out, "# TYPE cachemed_net_output_bytes_total counter\n"
                       "cachemed_net_output_bytes_total %llu\n",
                  (unsigned long long)s->bytes_out);
    cm_buf_printf(out, "# TYPE cachemed_used_memory_bytes gauge\ncachemed_used_memory_bytes %zu\n",
                  cm_alloc_used());
    for (size_t i = 0; i < srv->nnodes; i++) {
        struct counter c[32];
        size_t n = node_counters(&srv->nodes[i], c);
        for (size_t k = 0; k < n; k++) {
            if (c[k].is_double) {
                cm_buf_printf(out, "cachemed_node_%s{node=\"%s\"} %.9g\n", c[k].name,
                              srv->nodes[i].name, c[k].d);
            } else {
                cm_buf_printf(out, "cachemed_node_%s{node=\"%s\"} %llu\n", c[k].name,
                              srv->nodes[i].name, (unsigned long long)c[k].u);
            }
        }
    }
    for (size_t i = 0; i < srv->nstorages; i++) {
        const struct cm_storage *st = srv->storages[i];
        const struct cm_st_stats *ss = &st->stats;
        const struct { const char *n; uint64_t v; } rows[] = {
            { "reads_total", ss->reads }, { "hits_total", ss->hits },
            { "writes_total", ss->writes }, { "deletes_total", ss->deletes },
            { "errors_total", ss->errors }, { "timeouts_total", ss->timeouts },
            { "rejected_total", ss->rejected }, { "ops_total", ss->ops },
            { "latency_ns_total", ss->latency_ns },
        };
        for (size_t k = 0; k < CM_ARRAY_LEN(rows); k++) {
            cm_buf_printf(out, "cachemed_storage_%s{storage=\"%s\",type=\"%s\"} %llu\n", rows[k].n,
                          st->name, st->ops->name, (unsigned long long)rows[k].v);
        }
    }
}
