/* Config loading: inih reads the INI text through our line reader, which counts physical lines
 * (inih gives the handler none) and flags lines inih would cut or misread; every key is declared
 * in one table; values are checked section by section, then across sections. Every problem is
 * collected with its line and printed in line order as "FILE:LINE: message". */
#include "conf/conf.h"

#include "conf/conf_check.h"
#include "conf/ini_reader.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/log.h"
#include "daemon/util.h"
#include "storages/local.h" /* CM_LOCAL_MAX_SIZE: what a local storage opens with */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#define DEFAULT_LISTEN "127.0.0.1:6380"
#define MAX_FILE_SIZE (16u * 1024 * 1024)
#define MAX_NAME_LEN 63 /* mongo database and collection */
#define MAX_WORD_LEN 128
#define MSG_MAX 512
/* Longest grace, stale_if_error, refresh_after, negative_ttl: ten years, so that ttl + grace
 * cannot overflow anywhere. */
#define MAX_STALE_MS (3650LL * 86400 * 1000)
#define CUR_NONE (-1)   /* no section header seen yet */
#define CUR_IGNORE (-2) /* inside a section already reported as bad: its keys are skipped */

enum sec_kind { SEC_SERVER, SEC_STORAGE, SEC_NODE };

static const char *const sec_kind_names[] = {"server", "storage", "node"};

/* One given key: value (owned) and its line. value NULL = not given. */
struct kv {
    char *value;
    int line;
};

struct key_def;

/* One section of the file, in file order. Owned by the loader. */
struct section {
    enum sec_kind kind;
    char *name; /* NULL for [server] */
    int line;
    struct kv *keys; /* indexed like key_defs[] */
};

/* One problem, printed at the end sorted by (line, seq). */
struct conf_err {
    int line;
    size_t seq;
    char *msg; /* owned */
};

/* The loader: reader state, the sections found, the errors, the config being built. */
struct loader {
    const char *file;
    struct cm_ini_reader rd; /* the line reader: rd.line is the line inih is processing */
    int cur;             /* index in secs of the current section, or CUR_* */
    struct section *secs;
    size_t nsecs;
    struct kv *listens; /* every listen = line, in order */
    size_t nlistens;
    struct conf_err *errs;
    size_t nerrs;
    struct cm_conf *conf;
    /* state of the section being built */
    struct section *sec;
    bool st_type_known; /* the storage url parsed, so conf type applies */
};

typedef const char *set_fn(struct loader *L, const struct key_def *k, void *obj, const char *v,
                           char *buf, size_t bufsz);
/* Checks a string value before set_str/set_opt_str store it; obj is the section's struct. */
typedef const char *check_fn(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz);

/* One config key. Defaults are strings that go through the same setter. */
struct key_def {
    enum sec_kind sec;
    const char *name;
    set_fn *set;      /* NULL: handled outside the table (listen) */
    check_fn *check;  /* string keys: value check, or NULL */
    size_t off;       /* field offset in the section's struct */
    int64_t min, max; /* ints, durations (ms), sizes */
    const char *def;  /* default; NULL = none (or type-dependent) */
    unsigned types;   /* storage keys: mask of 1 << enum cm_st_type; 0 = every type */
    bool required;
};

#define T(x) (1u << (x))
#define T_LOCAL (T(CM_ST_TYPE_LRU) | T(CM_ST_TYPE_TLFU))
#define T_REMOTE                                                                                   \
    (T(CM_ST_TYPE_REDIS) | T(CM_ST_TYPE_PG) | T(CM_ST_TYPE_MYSQL) | T(CM_ST_TYPE_SQLITE) |         \
     T(CM_ST_TYPE_MONGO))
#define T_SQL (T(CM_ST_TYPE_PG) | T(CM_ST_TYPE_MYSQL) | T(CM_ST_TYPE_SQLITE))
#define T_ALL 0u

static set_fn set_str, set_opt_str, set_int, set_u64, set_dur, set_size, set_bool, set_log_level,
    set_caches, set_serializer, set_doorkeeper, set_breaker;
static check_fn chk_word, chk_metrics, chk_url, chk_table, chk_mongo_name, chk_key, chk_loader,
    chk_socket, chk_batch;

#define SRV(f) offsetof(struct cm_conf, f)
#define ST(f) offsetof(struct cm_conf_storage, f)
#define ND(f) offsetof(struct cm_conf_node, f)

static const struct key_def key_defs[] = {
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

#define NKEYS CM_ARRAY_LEN(key_defs)
#define KEY_INDEX(k) ((size_t)((k)-key_defs))

static const char *const ser_names[] = {"raw", "json", "msgpack", "compressed_json",
                                        "compressed_msgpack"};


const char *cm_ser_name(enum cm_ser ser)
{
    if ((size_t)ser < CM_ARRAY_LEN(ser_names)) {
        return ser_names[ser];
    }
    return "unknown";
}

/* ---- errors ---------------------------------------------------------------------------- */

static void add_err(struct loader *L, int line, const char *fmt, ...) CM_PRINTF(3, 4);

static void add_err(struct loader *L, int line, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    L->errs = cm_realloc(L->errs, (L->nerrs + 1) * sizeof(*L->errs));
    L->errs[L->nerrs].line = line;
    L->errs[L->nerrs].seq = L->nerrs;
    L->errs[L->nerrs].msg = cm_strdup(msg);
    L->nerrs++;
}

/* Escapes untrusted text for one message line. */
static const char *esc(char *out, size_t outsz, const char *s)
{
    cm_log_escape(out, outsz, s, strlen(s), 200);
    return out;
}

/* The reader's on_err. */
static void reader_err(void *arg, int line, const char *msg)
{
    add_err(arg, line, "%s", msg);
}

/* "[server]", "[storage NAME]" or "[node NAME]" */
static const char *sec_label(char *out, size_t outsz, const struct section *sec)
{
    char name[256];
    if (sec->name == NULL) {
        snprintf(out, outsz, "[%s]", sec_kind_names[sec->kind]);
    } else {
        snprintf(out, outsz, "[%s %s]", sec_kind_names[sec->kind],
                 esc(name, sizeof(name), sec->name));
    }
    return out;
}

/* "[node x] key = "value": reason" at line. */
static void key_err(struct loader *L, const struct section *sec, const char *key, const char *value,
                    int line, const char *reason)
{
    char label[320], k[256], v[1024];
    add_err(L, line, "%s %s = \"%s\": %s", sec_label(label, sizeof(label), sec),
            esc(k, sizeof(k), key), esc(v, sizeof(v), value), reason);
}

static int cmp_err(const void *a, const void *b)
{
    const struct conf_err *x = a, *y = b;
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : (x->seq > y->seq ? 1 : 0);
}

static void print_errs(struct loader *L, FILE *errs)
{
    qsort(L->errs, L->nerrs, sizeof(*L->errs), cmp_err);
    for (size_t i = 0; i < L->nerrs && errs != NULL; i++) {
        fprintf(errs, "%s:%d: %s\n", L->file, L->errs[i].line, L->errs[i].msg);
    }
    if (errs != NULL) {
        fflush(errs);
    }
}

/* The reader's on_section: s[0..len) is the trimmed header text, NULL for an unusable header. */
static void open_section(void *arg, int line, const char *s, size_t len)
{
    struct loader *L = arg;
    char shown[256], why[128];
    const char *name;
    size_t wlen = 0, nlen;
    enum sec_kind kind;
    const char *reason;

    L->cur = CUR_IGNORE;
    if (s == NULL) {
        return;
    }
    cm_log_escape(shown, sizeof(shown), s, len, 200);
    while (wlen < len && !isspace((unsigned char)s[wlen])) {
        wlen++;
    }
    name = s + wlen;
    nlen = len - wlen;
    while (nlen > 0 && isspace((unsigned char)*name)) {
        name++;
        nlen--;
    }
    if (wlen == 6 && memcmp(s, "server", 6) == 0) {
        kind = SEC_SERVER;
        if (nlen > 0) {
            add_err(L, line, "[%s]: unknown section ([server] takes no name)", shown);
            return;
        }
    } else if ((wlen == 7 && memcmp(s, "storage", 7) == 0) ||
               (wlen == 4 && memcmp(s, "node", 4) == 0)) {
        kind = wlen == 4 ? SEC_NODE : SEC_STORAGE;
        if (nlen == 0) {
            add_err(L, line, "[%s]: missing name (write [%s NAME])", shown,
                    sec_kind_names[kind]);
            return;
        }
        reason = cm_conf_check_name(name, nlen, why, sizeof(why));
        if (reason != NULL) {
            add_err(L, line, "[%s]: %s", shown, reason);
            return;
        }
    } else {
        add_err(L, line,
                "[%s]: unknown section (expected [server], [storage NAME] or [node NAME])", shown);
        return;
    }
    for (size_t i = 0; i < L->nsecs; i++) {
        const struct section *o = &L->secs[i];
        if (o->kind == kind &&
            (kind == SEC_SERVER || (strlen(o->name) == nlen && memcmp(o->name, name, nlen) == 0))) {
            add_err(L, line, "[%s]: duplicate section (first at line %d)", shown, o->line);
            return;
        }
    }
    L->secs = cm_realloc(L->secs, (L->nsecs + 1) * sizeof(*L->secs));
    L->secs[L->nsecs].kind = kind;
    L->secs[L->nsecs].name = kind == SEC_SERVER ? NULL : cm_strndup(name, nlen);
    L->secs[L->nsecs].line = line;
    L->secs[L->nsecs].keys = cm_calloc(NKEYS, sizeof(struct kv));
    L->cur = (int)L->nsecs;
    L->nsecs++;
}

static const struct key_def *find_key(enum sec_kind kind, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (key_defs[i].sec == kind && strcmp(key_defs[i].name, name) == 0) {
            return &key_defs[i];
        }
    }
    return NULL;
}

/* inih handler: records one key of the current section. Always returns 1 (keep going): errors
 * are collected here, not counted by inih. */
static int handler(void *arg, const char *section, const char *name, const char *value)
{
    struct loader *L = arg;
    struct section *sec;
    const struct key_def *k;
    char n[256], v[1024], why[64];

    CM_UNUSED(section);
    if (!cm_ini_reader_take_kv(&L->rd, name)) {
        return 1;
    }
    if (L->cur == CUR_IGNORE) {
        return 1;
    }
    if (L->cur == CUR_NONE) {
        add_err(L, L->rd.line, "%s = \"%s\": key outside of any section", esc(n, sizeof(n), name),
                esc(v, sizeof(v), value));
        return 1;
    }
    sec = &L->secs[L->cur];
    k = find_key(sec->kind, name);
    if (k == NULL) {
        key_err(L, sec, name, value, L->rd.line, "unknown key");
        return 1;
    }
    if (k->set == NULL) {
        L->listens = cm_realloc(L->listens, (L->nlistens + 1) * sizeof(*L->listens));
        L->listens[L->nlistens].value = cm_strdup(value);
        L->listens[L->nlistens].line = L->rd.line;
        L->nlistens++;
        return 1;
    }
    if (sec->keys[KEY_INDEX(k)].value != NULL) {
        snprintf(why, sizeof(why), "duplicate key (first at line %d)",
                 sec->keys[KEY_INDEX(k)].line);
        key_err(L, sec, name, value, L->rd.line, why);
        return 1;
    }
    sec->keys[KEY_INDEX(k)].value = cm_strdup(value);
    sec->keys[KEY_INDEX(k)].line = L->rd.line;
    return 1;
}

/* ---- setters ---------------------------------------------------------------------------- */

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
    return cm_conf_parse_breaker(v, MAX_STALE_MS, &node->breaker_failures,
                                 &node->breaker_open_ms, buf, bufsz);
}

/* The value given for key name of the section being built (NULL when absent or empty). */
static const char *given(struct loader *L, const char *name)
{
    const char *v = L->sec->keys[KEY_INDEX(find_key(L->sec->kind, name))].value;
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
    if (given(L, "loader") == NULL) {
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
    if (given(L, "loader") == NULL) {
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

/* ---- building the config ------------------------------------------------------------------ */

static const char *types_text(unsigned types)
{
    if (types == T_LOCAL) {
        return "applies only to local storages";
    }
    if (types == T_REMOTE) {
        return "does not apply to local storages";
    }
    if (types == T_SQL) {
        return "applies only to postgresql, mysql and sqlite storages";
    }
    if (types == T(CM_ST_TYPE_REDIS)) {
        return "applies only to redis storages";
    }
    if (types == T(CM_ST_TYPE_MONGO)) {
        return "applies only to mongodb storages";
    }
    return "does not apply to this storage type";
}

/* Runs every key of sec's kind through its setter (given value, else default). */
static void apply_keys(struct loader *L, struct section *sec, void *obj)
{
    char buf[256];
    char label[320];
    L->sec = sec;
    L->st_type_known = false;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key_def *k = &key_defs[i];
        const struct kv *given = &sec->keys[i];
        const char *why;

        if (k->sec != sec->kind || k->set == NULL) {
            continue;
        }
        if (given->value != NULL && k->types != T_ALL && L->st_type_known &&
            (k->types & T(((struct cm_conf_storage *)obj)->type)) == 0) {
            key_err(L, sec, k->name, given->value, given->line, types_text(k->types));
            given = NULL;
        }
        if (given != NULL && given->value != NULL) {
            why = k->set(L, k, obj, given->value, buf, sizeof(buf));
            if (why != NULL) {
                key_err(L, sec, k->name, given->value, given->line, why);
            }
        } else if (k->def != NULL) {
            why = k->set(L, k, obj, k->def, buf, sizeof(buf));
            cm_assert(why == NULL);
        } else if (k->required) {
            add_err(L, sec->line, "%s: missing required key '%s'",
                    sec_label(label, sizeof(label), sec), k->name);
        }
    }
}

static void finish_storage(struct loader *L, struct section *sec, struct cm_conf_storage *st)
{
    const struct kv *url = &sec->keys[KEY_INDEX(find_key(SEC_STORAGE, "url"))];

    if (st->pool_size == 0) {
        st->pool_size = st->type == CM_ST_TYPE_REDIS                                  ? 100
                        : (st->type == CM_ST_TYPE_PG || st->type == CM_ST_TYPE_MYSQL) ? 50
                                                                                      : 8;
    }
    if (st->cluster && st->type == CM_ST_TYPE_REDIS && L->st_type_known) {
        struct cm_url u;
        char err[128];
        if (cm_url_parse(st->url, &u, err, sizeof(err)) == CM_OK) {
            if (u.path != NULL && strcmp(u.path, "0") != 0) {
                key_err(L, sec, "url", url->value, url->line,
                        "a Redis Cluster has only database 0 (cluster = yes)");
            }
            cm_url_deinit(&u);
        }
    }
}

/* Node rules across keys and sections. */
static void finish_node(struct loader *L, struct section *sec, struct cm_conf_node *node)
{
    const struct kv *inval = &sec->keys[KEY_INDEX(find_key(SEC_NODE, "invalidate_channel"))];
    bool redis = false;

    L->sec = sec;
    if (given(L, "stale_if_error") == NULL) {
        node->stale_if_error_ms = node->grace_ms;
    }
    for (size_t i = 0; i < node->ncaches; i++) {
        redis = redis || node->caches[i].st->type == CM_ST_TYPE_REDIS;
    }
    if (node->invalidate_channel != NULL && !redis) {
        /* invalidate.c subscribes through the node's first redis storage. */
        key_err(L, sec, "invalidate_channel", inval->value, inval->line,
                "needs a redis storage in the node's caches (it is published and subscribed "
                "there)");
    }
}

/* Why listen string a (at line, 0 = the default) cannot bind next to b, or NULL. */
static const char *listen_conflict(const char *a, const char *b, int line, char *buf, size_t bufsz)
{
    struct cm_conf_addr x, y;
    char shown[128];
    if (!cm_conf_listen_parse(a, &x) || !cm_conf_listen_parse(b, &y) ||
        !cm_conf_listen_conflict(&x, &y)) {
        return NULL;
    }
    esc(shown, sizeof(shown), b);
    if (line == 0) {
        snprintf(buf, bufsz, "conflicts with the default listen = %s", shown);
    } else if (strcmp(a, b) == 0) {
        snprintf(buf, bufsz, "listed twice (first at line %d)", line);
    } else {
        snprintf(buf, bufsz,
                 "conflicts with listen = \"%s\" at line %d (same port; 0.0.0.0 takes it on every "
                 "IPv4 address, [::] and a host name on any)",
                 shown, line);
    }
    return buf;
}

static void build_listens(struct loader *L)
{
    struct cm_conf *conf = L->conf;
    struct section *srv = NULL;
    const struct kv *metrics = NULL;
    char buf[256];

    for (size_t i = 0; i < L->nsecs; i++) {
        if (L->secs[i].kind == SEC_SERVER) {
            srv = &L->secs[i];
            metrics = &srv->keys[KEY_INDEX(find_key(SEC_SERVER, "metrics_listen"))];
        }
    }
    int *lines = cm_calloc(L->nlistens > 0 ? L->nlistens : 1, sizeof(int)); /* of conf->listen */

    conf->listen = cm_calloc(L->nlistens > 0 ? L->nlistens : 1, sizeof(char *));
    for (size_t i = 0; i < L->nlistens; i++) {
        const struct kv *l = &L->listens[i];
        const char *why = cm_conf_check_listen(l->value, true, buf, sizeof(buf));
        for (size_t j = 0; j < i && why == NULL; j++) {
            why = listen_conflict(l->value, L->listens[j].value, L->listens[j].line, buf,
                                  sizeof(buf));
        }
        if (why != NULL) {
            key_err(L, srv, "listen", l->value, l->line, why);
            continue;
        }
        lines[conf->nlisten] = l->line;
        conf->listen[conf->nlisten++] = cm_strdup(l->value);
    }
    if (L->nlistens == 0) {
        conf->listen[conf->nlisten++] = cm_strdup(DEFAULT_LISTEN);
    }
    /* metrics_listen was checked by its setter; here only against the listeners. */
    for (size_t i = 0; conf->metrics_listen != NULL && i < conf->nlisten; i++) {
        int line = lines[i];
        const char *why =
            listen_conflict(conf->metrics_listen, conf->listen[i], line, buf, sizeof(buf));
        if (why != NULL) {
            if (line != 0 && strcmp(conf->metrics_listen, conf->listen[i]) == 0) {
                snprintf(buf, sizeof(buf), "same address as listen at line %d", line);
            }
            key_err(L, srv, "metrics_listen", metrics->value, metrics->line, why);
            break;
        }
    }
    cm_free(lines);
}

static void build(struct loader *L)
{
    struct cm_conf *conf = L->conf;
    struct section none = {SEC_SERVER, NULL, 0, NULL};
    struct kv nokeys[NKEYS];
    bool have_server = false;
    size_t nst = 0, nnode = 0;

    memset(nokeys, 0, sizeof(nokeys));
    none.keys = nokeys;
    for (size_t i = 0; i < L->nsecs; i++) {
        if (L->secs[i].kind == SEC_SERVER) {
            apply_keys(L, &L->secs[i], conf);
            have_server = true;
        }
        nst += L->secs[i].kind == SEC_STORAGE;
        nnode += L->secs[i].kind == SEC_NODE;
    }
    if (!have_server) {
        apply_keys(L, &none, conf);
    }
    build_listens(L);

    conf->storages = cm_calloc(nst > 0 ? nst : 1, sizeof(*conf->storages));
    conf->nodes = cm_calloc(nnode > 0 ? nnode : 1, sizeof(*conf->nodes));
    for (size_t i = 0; i < L->nsecs; i++) {
        struct section *sec = &L->secs[i];
        if (sec->kind == SEC_STORAGE) {
            struct cm_conf_storage *st = &conf->storages[conf->nstorages++];
            st->name = cm_strdup(sec->name);
            st->line = sec->line;
            apply_keys(L, sec, st);
            finish_storage(L, sec, st);
        }
    }
    for (size_t i = 0; i < L->nsecs; i++) {
        struct section *sec = &L->secs[i];
        if (sec->kind == SEC_NODE) {
            struct cm_conf_node *node = &conf->nodes[conf->nnodes++];
            node->name = cm_strdup(sec->name);
            node->line = sec->line;
            apply_keys(L, sec, node);
            finish_node(L, sec, node);
        }
    }
}

static void loader_deinit(struct loader *L)
{
    for (size_t i = 0; i < L->nsecs; i++) {
        for (size_t k = 0; k < NKEYS; k++) {
            cm_free(L->secs[i].keys[k].value);
        }
        cm_free(L->secs[i].keys);
        cm_free(L->secs[i].name);
    }
    cm_free(L->secs);
    for (size_t i = 0; i < L->nlistens; i++) {
        cm_free(L->listens[i].value);
    }
    cm_free(L->listens);
    for (size_t i = 0; i < L->nerrs; i++) {
        cm_free(L->errs[i].msg);
    }
    cm_free(L->errs);
}

int cm_conf_load_string(const char *name, const char *text, size_t len, struct cm_conf **out,
                        FILE *errs)
{
    struct loader L;
    int rc;

    *out = NULL;
    memset(&L, 0, sizeof(L));
    L.file = name;
    L.rd.text = text;
    L.rd.len = len;
    L.rd.on_err = reader_err;
    L.rd.on_section = open_section;
    L.rd.arg = &L;
    L.cur = CUR_NONE;
    L.conf = cm_calloc(1, sizeof(*L.conf));
    L.conf->file = cm_strdup(name);

    rc = cm_ini_reader_parse(&L.rd, handler, &L);
    if (rc < 0) {
        add_err(&L, L.rd.line, "INI parser failed (%d)", rc);
    }
    build(&L);
    if (L.nerrs > 0) {
        print_errs(&L, errs);
        cm_conf_free(L.conf);
        loader_deinit(&L);
        return CM_ERR;
    }
    *out = L.conf;
    loader_deinit(&L);
    return CM_OK;
}

int cm_conf_load(const char *path, struct cm_conf **out, FILE *errs)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    if (f == NULL) {
        if (errs != NULL) {
            fprintf(errs, "%s: cannot open: %s\n", path, strerror(errno));
        }
        return CM_ERR;
    }
    for (;;) {
        size_t n;
        if (len == cap) {
            cap = cap == 0 ? 4096 : cap * 2;
            text = cm_realloc(text, cap);
        }
        n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0 || len > MAX_FILE_SIZE) {
            break;
        }
    }
    if (ferror(f) || len > MAX_FILE_SIZE) {
        if (errs != NULL) {
            fprintf(errs, "%s: %s%s\n", path, ferror(f) ? "cannot read: " : "",
                    ferror(f) ? strerror(errno) : "file too large (more than 16 MiB)");
        }
        fclose(f);
        cm_free(text);
        return CM_ERR;
    }
    fclose(f);
    rc = cm_conf_load_string(path, text != NULL ? text : "", len, out, errs);
    cm_free(text);
    return rc;
}

void cm_conf_free(struct cm_conf *conf)
{
    if (conf == NULL) {
        return;
    }
    cm_free(conf->file);
    for (size_t i = 0; i < conf->nlisten; i++) {
        cm_free(conf->listen[i]);
    }
    cm_free(conf->listen);
    cm_free(conf->prefix);
    cm_free(conf->requirepass);
    cm_free(conf->log_file);
    cm_free(conf->metrics_listen);
    for (size_t i = 0; i < conf->nstorages; i++) {
        struct cm_conf_storage *st = &conf->storages[i];
        cm_free(st->name);
        cm_free(st->url);
        cm_free(st->table);
        cm_free(st->database);
        cm_free(st->collection);
    }
    cm_free(conf->storages);
    for (size_t i = 0; i < conf->nnodes; i++) {
        struct cm_conf_node *n = &conf->nodes[i];
        cm_free(n->name);
        cm_free(n->key);
        cm_tpl_deinit(&n->key_tpl);
        cm_free(n->version);
        cm_free(n->caches);
        cm_free(n->loader);
        cm_tpl_deinit(&n->loader_tpl);
        cm_free(n->loader_batch);
        cm_tpl_deinit(&n->loader_batch_tpl);
        cm_free(n->loader_socket);
        cm_free(n->invalidate_channel);
    }
    cm_free(conf->nodes);
    cm_free(conf);
}
