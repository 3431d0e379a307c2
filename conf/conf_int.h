/* Private to conf/: the loader's state and the key table, shared by conf.c (reading, sections,
 * building, cross-section rules) and conf_keys.c (the table and each key's setter). */
#ifndef CM_CONF_CONF_INT_H
#define CM_CONF_CONF_INT_H

#include "conf/conf.h"
#include "conf/ini_reader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CUR_NONE (-1)   /* no section header seen yet */
#define CUR_IGNORE (-2) /* inside a section already reported as bad: its keys are skipped */

enum sec_kind { SEC_SERVER, SEC_STORAGE, SEC_NODE };

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
    int cur;                 /* index in secs of the current section, or CUR_* */
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

/* The table: one entry per key of every section (conf_keys.c). */
extern const struct key_def cm_conf_keys[];
extern const size_t cm_conf_nkeys;
#define NKEYS cm_conf_nkeys
#define KEY_INDEX(k) ((size_t)((k)-cm_conf_keys))

/* The key named name of a section kind, or NULL. */
const struct key_def *cm_conf_find_key(enum sec_kind kind, const char *name);
/* The value given for key name in the section being built (L->sec), NULL when absent or empty. */
const char *cm_conf_given(struct loader *L, const char *name);

#endif
