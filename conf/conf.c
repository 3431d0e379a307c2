/* Config loading: inih reads the INI text through our line reader, which counts physical lines
 * (inih gives the handler none) and flags lines inih would cut or misread; every key is declared
 * in one table; values are checked section by section, then across sections. Every problem is
 * collected with its line and printed in line order as "FILE:LINE: message". */
#include "conf/conf_int.h"
#include "storages/local.h"

#include "conf/conf_check.h"
#include "conf/ini_reader.h"
#include "conf/url.h"
#include "daemon/alloc.h"
#include "daemon/log.h"
#include "daemon/util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#define DEFAULT_LISTEN "127.0.0.1:6380"
#define MAX_FILE_SIZE (16u * 1024 * 1024)
#define MSG_MAX 512

static const char *const sec_kind_names[] = {"server", "storage", "node"};

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
            add_err(L, line, "[%s]: missing name (write [%s NAME])", shown, sec_kind_names[kind]);
            return;
        }
        reason = cm_conf_check_name(name, nlen, why, sizeof(why));
        if (reason != NULL) {
            add_err(L, line, "[%s]: %s", shown, reason);
            return;
        }
    } else {
        add_err(L, line, "[%s]: unknown section (expected [server], [storage NAME] or [node NAME])",
                shown);
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
    k = cm_conf_find_key(sec->kind, name);
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
        const struct key_def *k = &cm_conf_keys[i];
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
    const struct kv *url = &sec->keys[KEY_INDEX(cm_conf_find_key(SEC_STORAGE, "url"))];

    /* max_memory without size bounds by bytes alone (SPEC §15). */
    if (st->max_memory > 0 &&
        sec->keys[KEY_INDEX(cm_conf_find_key(SEC_STORAGE, "size"))].value == NULL) {
        st->size = CM_LOCAL_MAX_SIZE;
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

/* Node rules across keys and sections. */
static void finish_node(struct loader *L, struct section *sec, struct cm_conf_node *node)
{
    const struct kv *inval =
        &sec->keys[KEY_INDEX(cm_conf_find_key(SEC_NODE, "invalidate_channel"))];
    bool redis = false;

    L->sec = sec;
    if (cm_conf_given(L, "stale_if_error") == NULL) {
        node->stale_if_error_ms = node->grace_ms;
    }
    for (size_t i = 0; i < node->ncaches; i++) {
        redis = redis || node->caches[i].st->type == CM_ST_TYPE_REDIS;
    }
    const struct kv *neg = &sec->keys[KEY_INDEX(cm_conf_find_key(SEC_NODE, "negative_ttl"))];
    if (node->negative_ttl_ms > 0 && node->serializer == CM_SER_RAW) {
        /* A negative entry is Cacheme's cached None, the serialized null: raw values have none
         * (README: "When the origin has a bad day"). */
        key_err(L, sec, "negative_ttl", neg->value, neg->line,
                "needs a json or msgpack serializer (a raw node has no null to cache)");
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
            metrics = &srv->keys[KEY_INDEX(cm_conf_find_key(SEC_SERVER, "metrics_listen"))];
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
    struct kv *nokeys = cm_calloc(NKEYS, sizeof(*nokeys));
    bool have_server = false;
    size_t nst = 0, nnode = 0;

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
    cm_free(nokeys);
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
