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

/* Returns CM_OK, or CM_ERR with a short reason in err. */
int cm_url_parse(const char *s, struct cm_url *out, char *err, size_t errsz) CM_MUSTCHECK;
void cm_url_deinit(struct cm_url *u);

#endif
