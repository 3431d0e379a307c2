/* Storage URL parsing: scheme://[user[:password]@]host[:port][/path][?query] */
#ifndef CM_CONF_URL_H
#define CM_CONF_URL_H

#include "daemon/common.h"

/* Every string is owned, percent-decoded (user, password, path), NULL when absent. */
struct cm_url {
    char *scheme;
    char *user;
    char *password;
    char *host;
    int port;          /* 0 when absent */
    char *path;        /* without the leading '/', e.g. "0" for redis db, "db" for sql; sqlite: full path */
    char *query;       /* raw, without '?' */
};

/* Returns CM_OK, or CM_ERR with a short reason in err (then *out holds nothing to free).
 * sqlite: path is everything after "sqlite://" ("/abs/path" for sqlite:///abs/path, "rel" for
 * sqlite://rel, relative to the working directory); mongodb: host may be a raw "h1:1,h2:2" list. */
int cm_url_parse(const char *s, struct cm_url *out, char *err, size_t errsz) CM_MUSTCHECK;
void cm_url_deinit(struct cm_url *u);

#endif
