/* Value checks of the config loader (conf.c): each returns NULL when the value is fine, or a
 * short reason (a static string, or one written into buf) for a "FILE:LINE: ...: reason" line. */
#ifndef CM_CONF_CONF_CHECK_H
#define CM_CONF_CONF_CHECK_H

#include "conf/template.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest Unix socket path (sockaddr_un.sun_path minus the NUL). */
#define CM_CONF_MAX_SUN_PATH 107

/* "host:port" (host: IPv4, [IPv6] or a DNS name; port 1..65535) or, when allow_unix,
 * "unix:/absolute/path". */
const char *cm_conf_check_listen(const char *s, bool allow_unix, char *buf, size_t bufsz);
/* A section name: [A-Za-z0-9_.-]+, at most 64 characters. */
const char *cm_conf_check_name(const char *s, size_t len, char *buf, size_t bufsz);
/* [A-Za-z0-9_]+ plus the characters in extra, at most max characters ("" for SQL table names). */
const char *cm_conf_check_chars(const char *s, size_t max, const char *extra, char *buf,
                                size_t bufsz);
/* One word: non-empty, no whitespace or control characters, at most max characters. */
const char *cm_conf_check_word(const char *s, size_t max, char *buf, size_t bufsz);
/* A loader URL template: http://host[:port]/..., parameters only after the host and each one
 * present in the parsed key template key, parsed from key_src (not checked when key is empty). On success the
 * parsed template is in *out (free with cm_tpl_deinit); on failure *out holds nothing. */
const char *cm_conf_check_loader(const char *url, const char *key_src, const struct cm_tpl *key,
                                 struct cm_tpl *out, char *buf, size_t bufsz);
/* "capacity, fpp" with capacity >= 1 and 0 < fpp < 1 (and a filter of at most 1 GiB). */
const char *cm_conf_parse_doorkeeper(const char *s, uint64_t *capacity, double *fpp, char *buf,
                                     size_t bufsz);

#endif
