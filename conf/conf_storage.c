/* Storage URL checks of the config loader: the scheme gives the type; the parts each backend
 * needs are there; and where a backend hands the URL to its driver's own parser (libpq's
 * conninfo, libmongoc's URI), that parser is run here too, offline, so that a URL the check
 * accepts is one the backend opens (a wrong URL would otherwise fail at start, or at every
 * connection attempt). */
#include "conf/conf_check.h"

#include "conf/url.h"
#include "daemon/util.h"

#include <libpq-fe.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *scheme;
    enum cm_st_type type;
} schemes[] = {
    {"redis", CM_ST_TYPE_REDIS},       {"postgresql", CM_ST_TYPE_PG}, {"postgres", CM_ST_TYPE_PG},
    {"mysql", CM_ST_TYPE_MYSQL},       {"sqlite", CM_ST_TYPE_SQLITE}, {"mongodb", CM_ST_TYPE_MONGO},
    {"mongodb+srv", CM_ST_TYPE_MONGO},
};

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
            /* st_redis.c takes databases 0..65535 (Redis's own limit is its `databases`). */
            if (cm_parse_i64(u->path, strlen(u->path), &db) != CM_OK || db < 0 || db > 65535) {
                return "the path must be a database number 0..65535 (redis://host:port/0)";
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

/* The driver's own offline parse of the URL, as the backend will hand it over. */
static const char *check_driver(enum cm_st_type type, const char *url, char *buf, size_t bufsz)
{
    if (type == CM_ST_TYPE_PG) {
        /* st_pg.c passes the URL to libpq as an expanded dbname. */
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &err);
        if (opts != NULL) {
            PQconninfoFree(opts);
            return NULL;
        }
        snprintf(buf, bufsz, "libpq: %s", err != NULL ? err : "out of memory");
        if (err != NULL) {
            PQfreemem(err);
        }
        buf[strcspn(buf, "\n")] = '\0';
        return buf;
    }
    if (type == CM_ST_TYPE_MONGO) {
        bson_error_t error;
        mongoc_uri_t *uri;
        /* libmongoc also logs what it rejects ("Port could not be parsed"), on stderr by
         * default: keep that out of --check's FILE:LINE output. The loader runs before
         * st_mongo.c installs its own handler. */
        mongoc_log_set_handler(NULL, NULL);
        uri = mongoc_uri_new_with_error(url, &error);
        mongoc_log_set_handler(mongoc_log_default_handler, NULL);
        if (uri != NULL) {
            mongoc_uri_destroy(uri);
            return NULL;
        }
        snprintf(buf, bufsz, "libmongoc: %s", error.message);
        return buf;
    }
    return NULL;
}

const char *cm_conf_check_storage_url(const char *v, enum cm_st_type *type, char *buf, size_t bufsz)
{
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
            *type = CM_ST_TYPE_LRU;
        } else if (u.host != NULL && strcmp(u.host, "tlfu") == 0) {
            *type = CM_ST_TYPE_TLFU;
        } else {
            why = "a local storage is local://lru or local://tlfu";
        }
    }
    for (size_t i = 0; i < CM_ARRAY_LEN(schemes) && !found; i++) {
        if (strcmp(u.scheme, schemes[i].scheme) == 0) {
            *type = schemes[i].type;
            found = true;
        }
    }
    if (!found) {
        why = "unknown scheme (expected local, redis, postgresql, mysql, sqlite or mongodb)";
    }
    if (why == NULL) {
        why = check_url_parts(*type, &u);
    }
    cm_url_deinit(&u);
    if (why == NULL) {
        why = check_driver(*type, v, buf, bufsz);
    }
    return why;
}

const char *cm_conf_check_table(const char *s, char *buf, size_t bufsz)
{
    /* sql_common.c's cm_sql_table_valid: the expiry index is named ix_<table>_expire, which must
     * fit PostgreSQL's and MySQL's 63/64-character identifiers. */
    const char *why = cm_conf_check_chars(s, CM_CONF_MAX_TABLE_LEN, "", buf, bufsz);
    if (why == NULL && s[0] >= '0' && s[0] <= '9') {
        why = "must not start with a digit";
    }
    return why;
}
