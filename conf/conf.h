/* The configuration: loaded from the INI file, validated, then read-only. */
#ifndef CM_CONF_CONF_H
#define CM_CONF_CONF_H

#include "conf/template.h"
#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cm_st_type {
    CM_ST_TYPE_LRU = 0,   /* local://lru */
    CM_ST_TYPE_TLFU,      /* local://tlfu */
    CM_ST_TYPE_REDIS,     /* redis:// */
    CM_ST_TYPE_PG,        /* postgresql:// (also postgres://) */
    CM_ST_TYPE_MYSQL,     /* mysql:// */
    CM_ST_TYPE_SQLITE,    /* sqlite:///path */
    CM_ST_TYPE_MONGO,     /* mongodb:// */
};

enum cm_ser {
    CM_SER_RAW = 0,
    CM_SER_JSON,
    CM_SER_MSGPACK,
    CM_SER_COMPRESSED_JSON,
    CM_SER_COMPRESSED_MSGPACK,
};

/* [storage NAME]. Fields not used by the storage's type keep their defaults. */
struct cm_conf_storage {
    char *name;            /* section name */
    int line;              /* line of the section header */
    char *url;             /* as written */
    enum cm_st_type type;
    uint64_t size;         /* local: entries (default 10000; with max_memory alone: no bound) */
    uint64_t max_memory;   /* local: bytes (SPEC §15), 0 = no bound */
    bool cluster;          /* redis: url is a cluster seed */
    int pool_size;         /* remote: connections (default 100 redis, 50 pg/mysql, 8 sqlite/mongo) */
    int64_t timeout_ms;    /* remote: per-operation timeout (default 500ms) */
    char *table;           /* sql: table name (default cacheme_data), identifier characters only */
    bool create_table;     /* sql: create table and indexes when missing */
    char *database;        /* mongo: database (default cache) */
    char *collection;      /* mongo: collection (default cacheme_data) */
    bool create_indexes;   /* mongo */
};

/* One entry of a node's caches list. */
struct cm_conf_cache {
    struct cm_conf_storage *st;   /* borrowed from conf->storages */
    int64_t ttl_ms;               /* -1 = never expires */
};

/* [node NAME] */
struct cm_conf_node {
    char *name;
    int line;
    char *key;                   /* key template, e.g. user:{user_id}:info */
    struct cm_tpl key_tpl;       /* key, parsed (owned) */
    char *version;               /* required: last part of the storage key */
    struct cm_conf_cache *caches;
    size_t ncaches;
    enum cm_ser serializer;      /* default raw */
    bool doorkeeper;
    uint64_t dk_capacity;
    double dk_fpp;
    char *loader;                /* URL template or NULL */
    struct cm_tpl loader_tpl;    /* loader, parsed (owned; nsegs 0 without a loader) */
    char *loader_socket;         /* Unix socket path or NULL */
    int64_t loader_timeout_ms;   /* default 2s */
    char *invalidate_channel;    /* NULL = none; needs a redis storage in caches */
    /* SPEC §12 (durations: 0 = off) */
    int64_t grace_ms;            /* serve stale up to this long past ttl while refreshing */
    int64_t stale_if_error_ms;   /* stale answers a failed load; default: grace_ms */
    int64_t refresh_after_ms;    /* a hit older than this starts a background load */
    int64_t negative_ttl_ms;     /* a 404 is cached as absent this long */
    int loader_concurrency;      /* loads at the origin at once; 0 = unlimited */
    int breaker_failures;        /* breaker = K, T: K consecutive failures (0 = no breaker) */
    int64_t breaker_open_ms;     /* ... open it for T */
    /* SPEC §13 */
    char *loader_batch;          /* batch URL template or NULL (key has exactly one param) */
    struct cm_tpl loader_batch_tpl;  /* loader_batch, parsed (owned) */
    int loader_batch_max;        /* keys per batch request, 1..10000, default 100 */
};

struct cm_conf {
    char *file;                  /* path as given */
    char **listen;               /* "host:port" or "unix:/path"; at least one (default 127.0.0.1:6380) */
    size_t nlisten;
    char *prefix;                /* default "cacheme" */
    char *requirepass;           /* NULL or "" = no auth */
    int max_clients;             /* default 10000 */
    int64_t client_timeout_ms;   /* 0 = never */
    int64_t shutdown_timeout_ms; /* default 5s */
    int log_level;               /* enum cm_log_level, default info */
    char *log_file;              /* NULL = stderr */
    char *metrics_listen;        /* NULL = off */
    uint64_t max_value_size;     /* default 64mb */
    struct cm_conf_storage *storages;   /* nstorages entries, file order */
    size_t nstorages;
    struct cm_conf_node *nodes;         /* nnodes entries, file order */
    size_t nnodes;
};

/* Loads and validates path. On success returns CM_OK and *out (free with cm_conf_free).
 * On failure prints every problem found to errs, one line each, as "FILE:LINE: message",
 * and returns CM_ERR. */
int cm_conf_load(const char *path, struct cm_conf **out, FILE *errs) CM_MUSTCHECK;
/* Same, from a string in memory (tests, fuzzing); name is used in messages. */
int cm_conf_load_string(const char *name, const char *text, size_t len, struct cm_conf **out,
                        FILE *errs) CM_MUSTCHECK;
void cm_conf_free(struct cm_conf *conf);
const char *cm_ser_name(enum cm_ser ser);

#endif
