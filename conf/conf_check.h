/* Value checks of the config loader (conf.c): each returns NULL when the value is fine, or a
 * short reason (a static string, or one written into buf) for a "FILE:LINE: ...: reason" line. */
#ifndef CM_CONF_CONF_CHECK_H
#define CM_CONF_CONF_CHECK_H

#include "conf/conf.h"
#include "conf/template.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest SQL table name (sql_common.c's limit). */
#define CM_CONF_MAX_TABLE_LEN 48

/* Longest Unix socket path (sockaddr_un.sun_path minus the NUL). */
#define CM_CONF_MAX_SUN_PATH 107

/* "host:port" (host: IPv4, [IPv6] or a DNS name; port 1..65535) or, when allow_unix,
 * "unix:/absolute/path". */
const char *cm_conf_check_listen(const char *s, bool allow_unix, char *buf, size_t bufsz);
/* A listen address, parsed (name points into the string it was parsed from). */
struct cm_conf_addr {
    int family; /* AF_INET, AF_INET6 (v4-mapped ones are AF_INET), AF_UNIX, or 0 for
                 * a host name (resolved at start) */
    unsigned char addr[16];
    int port;
    const char *name; /* the host as written (no brackets), or the Unix socket path */
    size_t namelen;
};

/* Parses an address cm_conf_check_listen accepted. */
bool cm_conf_listen_parse(const char *s, struct cm_conf_addr *out);
/* Whether two listeners cannot both bind: the same socket path; or the same port with the same
 * address (or host name), or one of them a wildcard covering the other (0.0.0.0 covers IPv4,
 * [::] every address, and a host name may resolve to anything). Host names that differ are
 * decided at start, by bind. */
bool cm_conf_listen_conflict(const struct cm_conf_addr *a, const struct cm_conf_addr *b);
/* A section name: [A-Za-z0-9_.-]+, at most 64 characters. */
const char *cm_conf_check_name(const char *s, size_t len, char *buf, size_t bufsz);
/* [A-Za-z0-9_]+ plus the characters in extra, at most max characters ("" for SQL table names). */
const char *cm_conf_check_chars(const char *s, size_t max, const char *extra, char *buf,
                                size_t bufsz);
/* One word: non-empty, no whitespace or control characters, at most max characters. */
const char *cm_conf_check_word(const char *s, size_t max, char *buf, size_t bufsz);
/* A loader URL template: http://host[:port]/..., parameters only after the host and each one
 * present in key, the parsed key template key_src (not checked when key is empty). On success
 * the parsed template is in *out (free with cm_tpl_deinit); on failure *out holds nothing. */
const char *cm_conf_check_loader(const char *url, const char *key_src, const struct cm_tpl *key,
                                 struct cm_tpl *out, char *buf, size_t bufsz);
/* "capacity, fpp" with capacity >= 1 and 0 < fpp < 1 (and a filter of at most 1 GiB). */
const char *cm_conf_parse_doorkeeper(const char *s, uint64_t *capacity, double *fpp, char *buf,
                                     size_t bufsz);

/* "K, T" of a breaker: K in 1..1000000 consecutive failures, T a duration in 1ms..max_open_ms. */
const char *cm_conf_parse_breaker(const char *s, int64_t max_open_ms, int *failures,
                                  int64_t *open_ms, char *buf, size_t bufsz);
/* conf_storage.c: a storage URL (sets *type from its scheme), and a SQL table name. */
const char *cm_conf_check_storage_url(const char *url, enum cm_st_type *type, char *buf,
                                      size_t bufsz);
const char *cm_conf_check_table(const char *s, char *buf, size_t bufsz);

#endif
