/* The config key table and each key's setter: every key of [server], [storage NAME] and
 * [node NAME] is declared here once, with its type, range, default and check (conf.c runs the
 * table over each section, then applies the rules across keys and sections). To add a key:
 * a field in conf.h, a row here, a test in check_conf.c, a line in cachemed.conf.example. */
#include "conf/conf_int.h"

#include "conf/conf_check.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/local.h" /* CM_LOCAL_MAX_SIZE: what a local storage opens with */

#include <ctype.h>
#include <stddef.h>
#include <string.h>

#define MAX_NAME_LEN 63 /* mongo database and collection */
#define MAX_WORD_LEN 128
/* Longest grace, stale_if_error, refresh_after, negative_ttl: ten years, so that ttl + grace
 * cannot overflow anywhere. */
#define MAX_STALE_MS (3650LL * 86400 * 1000)

static set_fn set_str, set_opt_str, set_int, set_u64, set_dur, set_size, set_bool, set_log_level,
    set_caches, set_serializer, set_doorkeeper, set_breaker;
static check_fn chk_word, chk_metrics, chk_url, chk_table, chk_mongo_name, chk_key, chk_loader,
    chk_socket, chk_batch;

#define SRV(f) offsetof(struct cm_conf, f)
#define ST(f) offsetof(struct cm_conf_storage, f)
#define ND(f) offsetof(struct cm_conf_node, f)

const struct key_def cm_conf_keys[] = {
    /* sec, name, set, check, off, min, max, def, types, required */
    {SEC_SERVER, "listen", NULL, NULL, 0, 0, 0, NULL, T_ALL, false},
    {SEC_SERVER, "prefix", set_str, chk_word, SRV(prefix), 0, 0, "cacheme", T_ALL, false},
    {SEC_SERVER, "requirepass", set_opt_str, NULL, SRV(requirepass), 0, 0, NULL, T_ALL, false},
    {SEC_SERVER, "max_clients", set_int, NULL, SRV(max_clients), 1, 1000000, "10000", T_ALL, false},
    {SEC_SERVER, "client_timeout", set_dur, NULL, SRV(client_timeout_ms), 0, INT64_MAX, "0", T_ALL,
     false},
    {SEC_SERVER, "shutdown_timeout", set_dur, NULL, SRV(shutdown_timeout_ms), 0, INT64_MAX, "5s",
     T_ALL, false},
    {SEC_SERVER, "log_level", set_log_level, NULL, SRV(log_level), 0, 0, "info", T_ALL, false},
    {SEC_SERVER, "log_file", set_opt_str, NULL, SRV(log_file), 0, 0, NULL, T_ALL, false},
    {SEC_SERVER, "metrics_listen", set_opt_str, chk_metrics, SRV(metrics_listen), 0, 0, NULL, T_ALL,
     false},
    {SEC_SERVER, "max_value_size", set_size, NULL, SRV(max_value_size), 1, 512LL * 1024 * 1024,
     "64mb", T_ALL, false},

    {SEC_STORAGE, "url", set_str, chk_url, ST(url), 0, 0, NULL, T_ALL, true},
    {SEC_STORAGE, "size", set_u64, NULL, ST(size), 1, (int64_t)CM_LOCAL_MAX_SIZE, "10000", T_LOCAL,
     false},
    {SEC_STORAGE, "max_memory", set_size, NULL, ST(max_memory), 4096, 1LL << 50, NULL, T_LOCAL,
     false},
    {SEC_STORAGE, "cluster", set_bool, NULL, ST(cluster), 0, 0, "no", T(CM_ST_TYPE_REDIS), false},
    {SEC_STORAGE, "pool_size", set_int, NULL, ST(pool_size), 1, 1024, NULL, T_REMOTE, false},
    {SEC_STORAGE, "timeout", set_dur, NULL, ST(timeout_ms), 1, 3600000, "500ms", T_REMOTE, false},
    {SEC_STORAGE, "table", set_str, chk_table, ST(table), 0, 0, "cacheme_data", T_SQL, false},
    {SEC_STORAGE, "create_table", set_bool, NULL, ST(create_table), 0, 0, "no", T_SQL, false},
    {SEC_STORAGE, "database", set_str, chk_mongo_name, ST(database), 0, 0, "cache",
     T(CM_ST_TYPE_MONGO), false},
    {SEC_STORAGE, "collection", set_str, chk_mongo_name, ST(collection), 0, 0, "cacheme_data",
     T(CM_ST_TYPE_MONGO), false},
    {SEC_STORAGE, "create_indexes", set_bool, NULL, ST(create_indexes), 0, 0, "no",
     T(CM_ST_TYPE_MONGO), false},

    {SEC_NODE, "key", set_str, chk_key, ND(key), 0, 0, NULL, T_ALL, true},
    {SEC_NODE, "version", set_str, chk_word, ND(version), 0, 0, NULL, T_ALL, true},
    {SEC_NODE, "caches", set_caches, NULL, 0, 0, 0, NULL, T_ALL, true},
    {SEC_NODE, "serializer", set_serializer, NULL, ND(serializer), 0, 0, "raw", T_ALL, false},
    {SEC_NODE, "doorkeeper", set_doorkeeper, NULL, 0, 0, 0, NULL, T_ALL, false},
    {SEC_NODE, "loader", set_opt_str, chk_loader, ND(loader), 0, 0, NULL, T_ALL, false},
    {SEC_NODE, "loader_socket", set_opt_str, chk_socket, ND(loader_socket), 0, 0, NULL, T_ALL,
     false},
    {SEC_NODE, "loader_timeout", set_dur, NULL, ND(loader_timeout_ms), 1, 3600000, "2s", T_ALL,
     false},
    {SEC_NODE, "invalidate_channel", set_opt_str, chk_word, ND(invalidate_channel), 0, 0, NULL,
     T_ALL, false},
    /* SPEC §12. stale_if_error's default (grace) is set by finish_node. */
    {SEC_NODE, "grace", set_dur, NULL, ND(grace_ms), 0, MAX_STALE_MS, "0", T_ALL, false},
    {SEC_NODE, "stale_if_error", set_dur, NULL, ND(stale_if_error_ms), 0, MAX_STALE_MS, NULL, T_ALL,
     false},
    {SEC_NODE, "refresh_after", set_dur, NULL, ND(refresh_after_ms), 0, MAX_STALE_MS, "0", T_ALL,
     false},
    {SEC_NODE, "negative_ttl", set_dur, NULL, ND(negative_ttl_ms), 0, MAX_STALE_MS, "0", T_ALL,
     false},
    {SEC_NODE, "loader_concurrency", set_int, NULL, ND(loader_concurrency), 0, 1000000, "0", T_ALL,
     false},
    {SEC_NODE, "breaker", set_breaker, NULL, 0, 0, 0, NULL, T_ALL, false},
    /* SPEC §13. After key and loader: its check reads both. */
    {SEC_NODE, "loader_batch", set_opt_str, chk_batch, ND(loader_batch), 0, 0, NULL, T_ALL, false},
    {SEC_NODE, "loader_batch_max", set_int, NULL, ND(loader_batch_max), 1, 10000, "100", T_ALL,
     false},
};

const size_t cm_conf_nkeys = CM_ARRAY_LEN(cm_conf_keys);

static const char *const ser_names[] = {"raw", "json", "msgpack", "compressed_json",
                                        "compressed_msgpack"};

const char *cm_ser_name(enum cm_ser ser)
{
    if ((size_t)ser < CM_ARRAY_LEN(ser_names)) {
        return ser_names[ser];
    }
    return "unknown";
}

const struct key_def *cm_conf_find_key(enum sec_kind kind, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (cm_conf_keys[i].sec == kind && strcmp(cm_conf_keys[i].name, name) == 0) {
            return &cm_conf_keys[i];
        }
    }
    return NULL;
}

#define FIELD(obj, k, type) ((type *)((char *)(obj) + (k)->off))

static void replace_str(char **dst, const char *v)
{
    cm_free(*dst);
    *dst = v != NULL ? cm_strdup(v) : NULL;
}

/* A non-empty string, checked by k->check. */
static const char *set_str(struct loader *L, const struct key_def *k, void *obj, const char *v,
                           char *buf, size_t bufsz)
{
    const char *why;
    if (v[0] == '\0') {
        return "must not be empty";
    }
    why = k->check != NULL ? k->check(L, obj, v, buf, bufsz) : NULL;
    if (why != NULL) {
        return why;
    }
    replace_str(FIELD(obj, k, char *), v);
    return NULL;
}

/* Like set_str, but empty = unset (NULL). */
static const char *set_opt_str(struct loader *L, const struct key_def *k, void *obj, const char *v,
                               char *buf, size_t bufsz)
{
    if (v[0] == '\0') {
        replace_str(FIELD(obj, k, char *), NULL);
        return NULL;
    }
    return set_str(L, k, obj, v, buf, bufsz);
}

static const char *chk_word(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(obj);
    return cm_conf_check_word(v, MAX_WORD_LEN, buf, bufsz);
}

static const char *range_err(const struct key_def *k, char *buf, size_t bufsz)
{
    if (k->max == INT64_MAX) {
        snprintf(buf, bufsz, "must be at least %lld", (long long)k->min);
    } else {
        snprintf(buf, bufsz, "must be between %lld and %lld", (long long)k->min, (long long)k->max);
    }
    return buf;
}

static const char *set_int(struct loader *L, const struct key_def *k, void *obj, const char *v,
                           char *buf, size_t bufsz)
{
    int64_t n;
    CM_UNUSED(L);
    if (cm_parse_i64(v, strlen(v), &n) != CM_OK) {
        return "not an integer";
    }
    if (n < k->min || n > k->max) {
        return range_err(k, buf, bufsz);
    }
    *FIELD(obj, k, int) = (int)n;
    return NULL;
}

static const char *set_u64(struct loader *L, const struct key_def *k, void *obj, const char *v,
                           char *buf, size_t bufsz)
{
    uint64_t n;
    CM_UNUSED(L);
    if (cm_parse_u64(v, strlen(v), &n) != CM_OK) {
        return "not a non-negative integer";
    }
    if (n < (uint64_t)k->min || n > (uint64_t)k->max) {
        return range_err(k, buf, bufsz);
    }
    *FIELD(obj, k, uint64_t) = n;
    return NULL;
}

static const char *set_dur(struct loader *L, const struct key_def *k, void *obj, const char *v,
                           char *buf, size_t bufsz)
{
    int64_t ms;
    CM_UNUSED(L);
    if (cm_parse_duration_ms(v, &ms) != CM_OK) {
        return "not a duration (e.g. 500ms, 30s, 10m, 2h, 10d; a bare number is seconds)";
    }
    if (ms < k->min || ms > k->max) {
        if (k->max == INT64_MAX) {
            snprintf(buf, bufsz, "must be at least %lldms", (long long)k->min);
        } else {
            snprintf(buf, bufsz, "must be between %lldms and %lldms", (long long)k->min,
                     (long long)k->max);
        }
        return buf;
    }
    *FIELD(obj, k, int64_t) = ms;
    return NULL;
}

static const char *set_size(struct loader *L, const struct key_def *k, void *obj, const char *v,
                            char *buf, size_t bufsz)
{
    uint64_t n;
    CM_UNUSED(L);
    if (cm_parse_size(v, &n) != CM_OK) {
        return "not a size (e.g. 100b, 10kb, 64mb, 1gb; a bare number is bytes)";
    }
    if (n < (uint64_t)k->min || n > (uint64_t)k->max) {
        snprintf(buf, bufsz, "must be between %lld and %lld bytes", (long long)k->min,
                 (long long)k->max);
        return buf;
    }
    *FIELD(obj, k, uint64_t) = n;
    return NULL;
}

static const char *set_bool(struct loader *L, const struct key_def *k, void *obj, const char *v,
                            char *buf, size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(buf);
    CM_UNUSED(bufsz);
    if (cm_parse_bool(v, FIELD(obj, k, bool)) != CM_OK) {
        return "not a boolean (yes/no, true/false, on/off, 1/0)";
    }
    return NULL;
}

static const char *set_log_level(struct loader *L, const struct key_def *k, void *obj,
                                 const char *v, char *buf, size_t bufsz)
{
    int lvl = cm_log_level_parse(v);
    CM_UNUSED(L);
    CM_UNUSED(buf);
    CM_UNUSED(bufsz);
    if (lvl < 0) {
        return "unknown level (expected debug, info, warning or error)";
    }
    *FIELD(obj, k, int) = lvl;
    return NULL;
}

static const char *chk_metrics(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(obj);
    return cm_conf_check_listen(v, false, buf, bufsz);
}

/* Sets st->type from the scheme (conf_storage.c checks the URL as its backend will read it). */
static const char *chk_url(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    struct cm_conf_storage *st = obj;
    const char *why = cm_conf_check_storage_url(v, &st->type, buf, bufsz);
    if (why != NULL) {
        return why;
    }
    L->st_type_known = true;
    return NULL;
}

static const char *chk_table(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(obj);
    return cm_conf_check_table(v, buf, bufsz);
}

static const char *chk_mongo_name(struct loader *L, void *obj, const char *v, char *buf,
                                  size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(obj);
    return cm_conf_check_chars(v, MAX_NAME_LEN, "-.", buf, bufsz);
}

/* Parses the key template into node->key_tpl: the form the daemon matches keys with. */
static const char *chk_key(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    struct cm_conf_node *node = obj;
    CM_UNUSED(L);
    cm_tpl_deinit(&node->key_tpl);
    return cm_tpl_parse(&node->key_tpl, v, buf, bufsz) == CM_OK ? NULL : buf;
}

static const char *set_serializer(struct loader *L, const struct key_def *k, void *obj,
                                  const char *v, char *buf, size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(buf);
    CM_UNUSED(bufsz);
    for (size_t i = 0; i < CM_ARRAY_LEN(ser_names); i++) {
        if (strcmp(v, ser_names[i]) == 0) {
            *FIELD(obj, k, enum cm_ser) = (enum cm_ser)i;
            return NULL;
        }
    }
    return "unknown serializer (expected raw, json, msgpack, compressed_json or "
           "compressed_msgpack)";
}

static const char *set_doorkeeper(struct loader *L, const struct key_def *k, void *obj,
                                  const char *v, char *buf, size_t bufsz)
{
    struct cm_conf_node *node = obj;
    const char *why;
    CM_UNUSED(L);
    CM_UNUSED(k);
    if (v[0] == '\0') {
        node->doorkeeper = false;
        return NULL;
    }
    why = cm_conf_parse_doorkeeper(v, &node->dk_capacity, &node->dk_fpp, buf, bufsz);
    if (why != NULL) {
        return why;
    }
    node->doorkeeper = true;
    return NULL;
}

/* Parses the loader URL template into node->loader_tpl (the key is parsed before it). */
/* "K, T": after K consecutive failed loads the breaker opens for T. Empty = no breaker. */
static const char *set_breaker(struct loader *L, const struct key_def *k, void *obj, const char *v,
                               char *buf, size_t bufsz)
{
    struct cm_conf_node *node = obj;
    CM_UNUSED(L);
    CM_UNUSED(k);
    if (v[0] == '\0') {
        node->breaker_failures = 0;
        node->breaker_open_ms = 0;
        return NULL;
    }
    return cm_conf_parse_breaker(v, MAX_STALE_MS, &node->breaker_failures, &node->breaker_open_ms,
                                 buf, bufsz);
}

/* The value given for key name of the section being built (NULL when absent or empty). */
const char *cm_conf_given(struct loader *L, const char *name)
{
    const char *v = L->sec->keys[KEY_INDEX(cm_conf_find_key(L->sec->kind, name))].value;
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static const char *chk_loader(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    struct cm_conf_node *node = obj;
    CM_UNUSED(L);
    cm_tpl_deinit(&node->loader_tpl);
    return cm_conf_check_loader(v, node->key, &node->key_tpl, &node->loader_tpl, buf, bufsz);
}

static const char *chk_socket(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    CM_UNUSED(obj);
    if (cm_conf_given(L, "loader") == NULL) {
        return "loader_socket needs a loader URL (its path and Host header are used)";
    }
    if (v[0] != '/') {
        return "must be an absolute path";
    }
    if (strlen(v) > CM_CONF_MAX_SUN_PATH) {
        snprintf(buf, bufsz, "socket path longer than %d bytes", CM_CONF_MAX_SUN_PATH);
        return buf;
    }
    return NULL;
}

/* SPEC §13: the batch URL lists the values of the key's one parameter, comma-joined. */
static const char *chk_batch(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    struct cm_conf_node *node = obj;
    const char *why;
    const struct cm_tpl_seg *param = NULL;

    cm_tpl_deinit(&node->loader_batch_tpl);
    if (cm_conf_given(L, "loader") == NULL) {
        return "loader_batch needs a loader URL too (a key too long for a batch request goes "
               "to it)";
    }
    if (node->key_tpl.nsegs == 0) {
        return NULL; /* the key template is reported already */
    }
    if (node->key_tpl.nparams != 1) {
        snprintf(buf, bufsz,
                 "needs a key template with exactly one parameter (the key '%.64s' has %zu)",
                 node->key, node->key_tpl.nparams);
        return buf;
    }
    why = cm_conf_check_loader(v, node->key, &node->key_tpl, &node->loader_batch_tpl, buf, bufsz);
    if (why != NULL) {
        return why;
    }
    for (size_t i = 0; i < node->key_tpl.nsegs; i++) {
        param = node->key_tpl.segs[i].param ? &node->key_tpl.segs[i] : param;
    }
    if (cm_tpl_count_param(&node->loader_batch_tpl, param->text, param->len) != 1) {
        cm_tpl_deinit(&node->loader_batch_tpl);
        snprintf(buf, bufsz, "must use {%s} exactly once (it stands for the comma-joined values)",
                 param->text);
        return buf;
    }
    return NULL;
}

static struct cm_conf_storage *find_storage(struct cm_conf *conf, const char *name, size_t len)
{
    for (size_t i = 0; i < conf->nstorages; i++) {
        if (strlen(conf->storages[i].name) == len &&
            memcmp(conf->storages[i].name, name, len) == 0) {
            return &conf->storages[i];
        }
    }
    return NULL;
}

/* "name[:ttl], name[:ttl], ..." resolved against the storages (all built before any node). */
static const char *set_caches(struct loader *L, const struct key_def *k, void *obj, const char *v,
                              char *buf, size_t bufsz)
{
    struct cm_conf_node *node = obj;
    struct cm_conf_cache *caches = NULL;
    size_t n = 0;
    const char *p = v;
    const char *why = NULL;
    CM_UNUSED(k);

    if (v[0] == '\0') {
        return "must list at least one storage";
    }
    while (why == NULL) {
        const char *end = p + strcspn(p, ",");
        const char *colon = memchr(p, ':', (size_t)(end - p));
        const char *name = p;
        const char *name_end = colon != NULL ? colon : end;
        struct cm_conf_storage *st;
        int64_t ttl = -1;

        while (name < name_end && isspace((unsigned char)*name)) {
            name++;
        }
        while (name_end > name && isspace((unsigned char)name_end[-1])) {
            name_end--;
        }
        if (name == name_end) {
            why = colon != NULL ? "missing storage name before ':'" : "empty entry in the list";
            break;
        }
        if (colon != NULL) {
            char tmp[64];
            const char *t = colon + 1;
            size_t tlen = (size_t)(end - t);
            while (tlen > 0 && isspace((unsigned char)*t)) {
                t++;
                tlen--;
            }
            while (tlen > 0 && isspace((unsigned char)t[tlen - 1])) {
                tlen--;
            }
            if (tlen == 0 || tlen >= sizeof(tmp)) {
                snprintf(buf, bufsz, "missing or bad ttl after '%.*s:'", (int)(name_end - name),
                         name);
                why = buf;
                break;
            }
            memcpy(tmp, t, tlen);
            tmp[tlen] = '\0';
            if (cm_parse_duration_ms(tmp, &ttl) != CM_OK) {
                snprintf(buf, bufsz, "bad ttl '%s' for '%.*s' (e.g. 30s, 10m, 10d)", tmp,
                         (int)(name_end - name), name);
                why = buf;
                break;
            }
            if (ttl == 0) {
                snprintf(buf, bufsz, "ttl of '%.*s' is 0 (omit the ttl for no expiry)",
                         (int)(name_end - name), name);
                why = buf;
                break;
            }
        }
        st = find_storage(L->conf, name, (size_t)(name_end - name));
        if (st == NULL) {
            snprintf(buf, bufsz, "unknown storage '%.*s'", (int)(name_end - name), name);
            why = buf;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (caches[i].st == st) {
                snprintf(buf, bufsz, "storage '%s' is listed twice", st->name);
                why = buf;
            }
        }
        if (why != NULL) {
            break;
        }
        caches = cm_realloc(caches, (n + 1) * sizeof(*caches));
        caches[n].st = st;
        caches[n].ttl_ms = ttl;
        n++;
        if (*end == '\0') {
            break;
        }
        p = end + 1;
    }
    if (why != NULL) {
        cm_free(caches);
        return why;
    }
    cm_free(node->caches);
    node->caches = caches;
    node->ncaches = n;
    return NULL;
}
