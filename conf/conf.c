/* Config loading: inih reads the INI text through our line reader, which counts physical lines
 * (inih gives the handler none) and flags lines inih would cut or misread; every key is declared
 * in one table; values are checked section by section, then across sections. Every problem is
 * collected with its line and printed in line order as "FILE:LINE: message". */
#include "conf/conf.h"

#include "conf/conf_check.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/log.h"
#include "daemon/util.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#define DEFAULT_LISTEN "127.0.0.1:6380"
#define MAX_FILE_SIZE (16u * 1024 * 1024)
#define MAX_TABLE_LEN 63
#define MAX_WORD_LEN 128
#define MSG_MAX 512
#define CUR_NONE (-1)   /* no section header seen yet */
#define CUR_IGNORE (-2) /* inside a section already reported as bad: its keys are skipped */

enum sec_kind { SEC_SERVER, SEC_STORAGE, SEC_NODE };

static const char *const sec_kind_names[] = {"server", "storage", "node"};

/* How the reader classified the physical line inih is processing, mimicking inih's rules. */
enum line_kind {
    LK_BLANK,   /* empty or comment */
    LK_SECTION, /* [header] */
    LK_KV,      /* name = value: the handler will be called */
    LK_CONT,    /* indented line after a key: inih calls the handler as a continuation */
    LK_BAD,     /* inih would reject it silently */
};

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
    const char *text;
    size_t len;
    size_t off;          /* next byte the reader returns */
    int line;            /* physical line of the chunk inih is processing */
    int chunks;          /* chunks returned so far: inih's own line count */
    int max_line;        /* longest line inih can take whole */
    bool partial;        /* the last chunk ended before its line did */
    bool skip;           /* current physical line is already reported */
    bool ini_prev_name;  /* inih has a name a continuation line would extend */
    enum line_kind kind; /* of the current chunk */
    bool kv_pending;     /* an LK_KV chunk whose handler call has not come yet */
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
    set_caches, set_serializer, set_doorkeeper;
static check_fn chk_word, chk_metrics, chk_url, chk_table, chk_mongo_name, chk_key, chk_loader,
    chk_socket;

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
    {SEC_STORAGE, "size", set_u64, NULL, ST(size), 1, 1LL << 40, "10000", T_LOCAL, false},
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
};

#define NKEYS CM_ARRAY_LEN(key_defs)
#define KEY_INDEX(k) ((size_t)((k)-key_defs))

static const char *const ser_names[] = {"raw", "json", "msgpack", "compressed_json",
                                        "compressed_msgpack"};

static const struct {
    const char *scheme;
    enum cm_st_type type;
} schemes[] = {
    {"redis", CM_ST_TYPE_REDIS},       {"postgresql", CM_ST_TYPE_PG}, {"postgres", CM_ST_TYPE_PG},
    {"mysql", CM_ST_TYPE_MYSQL},       {"sqlite", CM_ST_TYPE_SQLITE}, {"mongodb", CM_ST_TYPE_MONGO},
    {"mongodb+srv", CM_ST_TYPE_MONGO},
};

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

/* ---- the line reader: physical lines, and inih's view of them ------------------------------ */

/* inih's find_chars_or_comment: stops at one of chars, at an inline ';' that follows
 * whitespace, or at the end. */
static const char *ini_find(const char *s, const char *end, const char *chars)
{
    bool was_space = false;
    while (s < end && (chars == NULL || strchr(chars, *s) == NULL) && !(was_space && *s == ';')) {
        was_space = isspace((unsigned char)*s);
        s++;
    }
    return s;
}

static bool only_comment_after(const char *s, const char *end)
{
    while (s < end && isspace((unsigned char)*s)) {
        s++;
    }
    return s == end || *s == ';' || *s == '#';
}

static void open_section(struct loader *L, const char *s, size_t len)
{
    char shown[256], why[128];
    const char *name;
    size_t wlen = 0, nlen;
    enum sec_kind kind;
    const char *reason;

    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        len--;
    }
    cm_log_escape(shown, sizeof(shown), s, len, 200);
    L->cur = CUR_IGNORE;
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
            add_err(L, L->line, "[%s]: unknown section ([server] takes no name)", shown);
            return;
        }
    } else if ((wlen == 7 && memcmp(s, "storage", 7) == 0) ||
               (wlen == 4 && memcmp(s, "node", 4) == 0)) {
        kind = wlen == 4 ? SEC_NODE : SEC_STORAGE;
        if (nlen == 0) {
            add_err(L, L->line, "[%s]: missing name (write [%s NAME])", shown,
                    sec_kind_names[kind]);
            return;
        }
        reason = cm_conf_check_name(name, nlen, why, sizeof(why));
        if (reason != NULL) {
            add_err(L, L->line, "[%s]: %s", shown, reason);
            return;
        }
    } else {
        add_err(L, L->line,
                "[%s]: unknown section (expected [server], [storage NAME] or [node NAME])", shown);
        return;
    }
    for (size_t i = 0; i < L->nsecs; i++) {
        const struct section *o = &L->secs[i];
        if (o->kind == kind &&
            (kind == SEC_SERVER || (strlen(o->name) == nlen && memcmp(o->name, name, nlen) == 0))) {
            add_err(L, L->line, "[%s]: duplicate section (first at line %d)", shown, o->line);
            return;
        }
    }
    L->secs = cm_realloc(L->secs, (L->nsecs + 1) * sizeof(*L->secs));
    L->secs[L->nsecs].kind = kind;
    L->secs[L->nsecs].name = kind == SEC_SERVER ? NULL : cm_strndup(name, nlen);
    L->secs[L->nsecs].line = L->line;
    L->secs[L->nsecs].keys = cm_calloc(NKEYS, sizeof(struct kv));
    L->cur = (int)L->nsecs;
    L->nsecs++;
}

/* Classifies a chunk exactly as inih 55 will parse it (so the handler's calls can be matched to
 * lines) and reports what inih would drop silently. */
static void classify(struct loader *L, const char *str, bool overlong, bool has_nul)
{
    const char *start = str;
    const char *end = str + strlen(str);

    if (L->chunks == 1 && (unsigned char)str[0] == 0xEF && (unsigned char)str[1] == 0xBB &&
        (unsigned char)str[2] == 0xBF) {
        start += 3;
    }
    while (end > start && isspace((unsigned char)end[-1])) {
        end--;
    }
    while (start < end && isspace((unsigned char)*start)) {
        start++;
    }
    if (start == end || *start == ';' || *start == '#') {
        L->kind = LK_BLANK;
    } else if (L->ini_prev_name && start > str) {
        L->kind = LK_CONT;
    } else if (*start == '[') {
        const char *rb = ini_find(start + 1, end, "]");
        if (rb < end && *rb == ']') {
            L->kind = LK_SECTION;
            L->ini_prev_name = false;
        } else {
            L->kind = LK_BAD;
        }
    } else {
        const char *sep = ini_find(start, end, "=:");
        if (sep < end && (*sep == '=' || *sep == ':')) {
            const char *ne = sep;
            while (ne > start && isspace((unsigned char)ne[-1])) {
                ne--;
            }
            L->kind = LK_KV;
            L->kv_pending = true;
            L->ini_prev_name = ne > start;
        } else {
            L->kind = LK_BAD;
        }
    }

    if (L->skip) {
        return;
    }
    if (overlong) {
        add_err(L, L->line, "line too long (more than %d characters)", L->max_line);
        L->skip = true;
        return;
    }
    if (has_nul) {
        add_err(L, L->line, "NUL byte in line");
        L->skip = true;
        return;
    }
    switch (L->kind) {
    case LK_BLANK:
    case LK_KV:
        break;
    case LK_CONT:
        add_err(L, L->line, "unexpected indented line (continuation lines are not supported)");
        break;
    case LK_BAD:
        if (*start == '[') {
            add_err(L, L->line, "unterminated section header: missing ']'");
        } else {
            add_err(L, L->line, "expected \"key = value\", \"[section]\" or a ; comment");
        }
        break;
    case LK_SECTION: {
        const char *rb = ini_find(start + 1, end, "]");
        if (!only_comment_after(rb + 1, end)) {
            add_err(L, L->line, "text after ']' in section header");
            L->cur = CUR_IGNORE;
        } else {
            open_section(L, start + 1, (size_t)(rb - start - 1));
        }
        break;
    }
    }
}

/* Our reading of a line and inih's must agree: a line we took for "key = value" gets exactly
 * one handler call before the next line is read. A different inih build (other comment or
 * continuation rules) would show up here as an error instead of a silently dropped key. */
static void check_kv_handled(struct loader *L)
{
    if (L->kv_pending && !L->skip) {
        add_err(L, L->line, "could not parse this line (INI parser disagreement)");
    }
    L->kv_pending = false;
}

/* ini_reader over the in-memory text. Returns at most num-1 bytes of one line; a longer line
 * comes back in several chunks, all flagged overlong, and counted as one physical line. */
static char *reader(char *str, int num, void *arg)
{
    struct loader *L = arg;
    const char *p = L->text + L->off;
    size_t avail = L->len - L->off;
    const char *nl;
    size_t content, take, consumed;
    bool was_partial = L->partial;

    check_kv_handled(L);
    if (L->off >= L->len || num < 2) {
        return NULL;
    }
    L->max_line = num - 1;
    nl = memchr(p, '\n', avail);
    content = nl != NULL ? (size_t)(nl - p) : avail;
    if (content <= (size_t)num - 1) {
        /* The whole line fits; its '\n' is left out when there is no room (inih strips it). */
        take = content + (nl != NULL && content < (size_t)num - 1 ? 1 : 0);
        consumed = content + (nl != NULL ? 1 : 0);
        L->partial = false;
    } else {
        take = (size_t)num - 1;
        consumed = take;
        L->partial = true;
    }
    memcpy(str, p, take);
    str[take] = '\0';
    L->off += consumed;
    L->chunks++;
    if (!was_partial) {
        L->line++;
        L->skip = false;
    }
    classify(L, str, was_partial || L->partial, memchr(p, '\0', take) != NULL);
    return str;
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
    if (L->skip || L->kind == LK_CONT) {
        return 1;
    }
    if (L->kind != LK_KV || !L->kv_pending) {
        add_err(L, L->line, "unexpected value for '%s' (INI parser disagreement)",
                esc(n, sizeof(n), name));
        return 1;
    }
    L->kv_pending = false;
    if (L->cur == CUR_IGNORE) {
        return 1;
    }
    if (L->cur == CUR_NONE) {
        add_err(L, L->line, "%s = \"%s\": key outside of any section", esc(n, sizeof(n), name),
                esc(v, sizeof(v), value));
        return 1;
    }
    sec = &L->secs[L->cur];
    k = find_key(sec->kind, name);
    if (k == NULL) {
        key_err(L, sec, name, value, L->line, "unknown key");
        return 1;
    }
    if (k->set == NULL) {
        L->listens = cm_realloc(L->listens, (L->nlistens + 1) * sizeof(*L->listens));
        L->listens[L->nlistens].value = cm_strdup(value);
        L->listens[L->nlistens].line = L->line;
        L->nlistens++;
        return 1;
    }
    if (sec->keys[KEY_INDEX(k)].value != NULL) {
        snprintf(why, sizeof(why), "duplicate key (first at line %d)",
                 sec->keys[KEY_INDEX(k)].line);
        key_err(L, sec, name, value, L->line, why);
        return 1;
    }
    sec->keys[KEY_INDEX(k)].value = cm_strdup(value);
    sec->keys[KEY_INDEX(k)].line = L->line;
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

static const char *check_url_parts(enum cm_st_type type, const struct cm_url *u)
{
    switch (type) {
    case CM_ST_TYPE_LRU:
    case CM_ST_TYPE_TLFU:
        if (u->user != NULL || u->password != NULL || u->port != 0 || u->path != NULL ||
            u->query != NULL) {
            return "a local storage is just local://lru or local://tlfu";
        }
        return NULL;
    case CM_ST_TYPE_REDIS:
        if (u->host == NULL) {
            return "missing host (redis://[:password@]host:port[/db])";
        }
        if (u->path != NULL) {
            int64_t db;
            if (cm_parse_i64(u->path, strlen(u->path), &db) != CM_OK || db < 0 || db > INT_MAX) {
                return "the path must be a database number (redis://host:port/0)";
            }
        }
        return NULL;
    case CM_ST_TYPE_PG:
    case CM_ST_TYPE_MYSQL:
        if (u->host == NULL) {
            return "missing host (scheme://user:password@host:port/database)";
        }
        if (u->path == NULL) {
            return "missing database name (scheme://user:password@host:port/database)";
        }
        return NULL;
    case CM_ST_TYPE_SQLITE:
        if (u->path == NULL) {
            return "missing file path (sqlite:///absolute/path.db or sqlite://relative/path.db)";
        }
        return NULL;
    case CM_ST_TYPE_MONGO:
        if (u->host == NULL) {
            return "missing host (mongodb://host:port/?options)";
        }
        return NULL;
    }
    return NULL;
}

/* Sets st->type from the scheme. */
static const char *chk_url(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    struct cm_conf_storage *st = obj;
    struct cm_url u;
    char err[128];
    const char *why = NULL;
    bool found = false;

    if (cm_url_parse(v, &u, err, sizeof(err)) != CM_OK) {
        snprintf(buf, bufsz, "bad URL: %s", err);
        return buf;
    }
    if (strcmp(u.scheme, "local") == 0) {
        found = true;
        if (u.host != NULL && strcmp(u.host, "lru") == 0) {
            st->type = CM_ST_TYPE_LRU;
        } else if (u.host != NULL && strcmp(u.host, "tlfu") == 0) {
            st->type = CM_ST_TYPE_TLFU;
        } else {
            why = "a local storage is local://lru or local://tlfu";
        }
    }
    for (size_t i = 0; i < CM_ARRAY_LEN(schemes) && !found; i++) {
        if (strcmp(u.scheme, schemes[i].scheme) == 0) {
            st->type = schemes[i].type;
            found = true;
        }
    }
    if (!found) {
        why = "unknown scheme (expected local, redis, postgresql, mysql, sqlite or mongodb)";
    }
    if (why == NULL) {
        why = check_url_parts(st->type, &u);
    }
    cm_url_deinit(&u);
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
    return cm_conf_check_chars(v, MAX_TABLE_LEN, "", buf, bufsz);
}

static const char *chk_mongo_name(struct loader *L, void *obj, const char *v, char *buf,
                                  size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(obj);
    return cm_conf_check_chars(v, MAX_TABLE_LEN, "-.", buf, bufsz);
}

static const char *chk_key(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    CM_UNUSED(L);
    CM_UNUSED(obj);
    return cm_conf_check_key_template(v, buf, bufsz);
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

static const char *chk_loader(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    const struct cm_conf_node *node = obj;
    CM_UNUSED(L);
    return cm_conf_check_loader(v, node->key, buf, bufsz);
}

static const char *chk_socket(struct loader *L, void *obj, const char *v, char *buf, size_t bufsz)
{
    const struct key_def *loader_key = find_key(SEC_NODE, "loader");
    const char *loader = L->sec->keys[KEY_INDEX(loader_key)].value;
    CM_UNUSED(obj);
    if (loader == NULL || loader[0] == '\0') {
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

    /* max_memory without size bounds by bytes alone (SPEC §15). */
    if (st->max_memory > 0 && sec->keys[KEY_INDEX(find_key(SEC_STORAGE, "size"))].value == NULL) {
        st->size = UINT64_C(1) << 31;
    }

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

static void build_listens(struct loader *L)
{
    struct cm_conf *conf = L->conf;
    struct section *srv = NULL;
    char buf[256];

    for (size_t i = 0; i < L->nsecs; i++) {
        if (L->secs[i].kind == SEC_SERVER) {
            srv = &L->secs[i];
        }
    }
    conf->listen = cm_calloc(L->nlistens > 0 ? L->nlistens : 1, sizeof(char *));
    for (size_t i = 0; i < L->nlistens; i++) {
        const struct kv *l = &L->listens[i];
        const char *why = cm_conf_check_listen(l->value, true, buf, sizeof(buf));
        for (size_t j = 0; j < i && why == NULL; j++) {
            if (strcmp(L->listens[j].value, l->value) == 0) {
                snprintf(buf, sizeof(buf), "listed twice (first at line %d)", L->listens[j].line);
                why = buf;
            }
        }
        if (why != NULL) {
            key_err(L, srv, "listen", l->value, l->line, why);
            continue;
        }
        conf->listen[conf->nlisten++] = cm_strdup(l->value);
    }
    if (L->nlistens == 0) {
        conf->listen[conf->nlisten++] = cm_strdup(DEFAULT_LISTEN);
    }
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
    L.text = text;
    L.len = len;
    L.cur = CUR_NONE;
    L.conf = cm_calloc(1, sizeof(*L.conf));
    L.conf->file = cm_strdup(name);

    rc = ini_parse_stream(reader, &L, handler, &L);
    check_kv_handled(&L);
    if (rc < 0) {
        add_err(&L, L.line, "INI parser failed (%d)", rc);
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
        cm_free(n->version);
        cm_free(n->caches);
        cm_free(n->loader);
        cm_free(n->loader_socket);
        cm_free(n->invalidate_channel);
    }
    cm_free(conf->nodes);
    cm_free(conf);
}
