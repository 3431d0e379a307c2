/* Storage URL parsing: scheme://[user[:password]@]host[:port][/path][?query].
 *
 * Special cases:
 * - sqlite: everything after "sqlite://" up to '?' is the file path. "sqlite:///abs/path" gives
 *   path "/abs/path" (the leading '/' is kept); "sqlite://rel/path" gives "rel/path", which is
 *   opened relative to the daemon's working directory. (SQLAlchemy reads "sqlite:///x" as a
 *   relative path; we follow the more common reading, where three slashes mean absolute.)
 * - mongodb: the host part may be a comma-separated seed list ("h1:1,h2:2"); it is kept raw in
 *   host with port 0, for the driver to split.
 * - An IPv6 host is written in brackets ("[::1]:6379") and stored without them ("::1").
 */
#include "conf/url.h"

#include "daemon/alloc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

static int fail(char *err, size_t errsz, const char *fmt, ...) CM_PRINTF(3, 4);

static int fail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    if (errsz > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return CM_ERR;
}

static int hexval(char c)
{
    static const char digits[] = "0123456789abcdef";
    const char *d = c != '\0' ? strchr(digits, tolower((unsigned char)c)) : NULL;
    return d != NULL ? (int)(d - digits) : -1;
}

/* Percent-decodes s[0..len) into a new string; NULL on a bad escape or a decoded NUL. */
static char *pct_decode(const char *s, size_t len)
{
    char *out = cm_malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < len ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                cm_free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Decodes s[0..len) into *dst (NULL when len is 0). */
static int decode_part(const char *what, const char *s, size_t len, char **dst, char *err,
                       size_t errsz)
{
    if (len == 0) {
        *dst = NULL;
        return CM_OK;
    }
    *dst = pct_decode(s, len);
    if (*dst == NULL) {
        return fail(err, errsz, "bad percent-encoding in %s", what);
    }
    return CM_OK;
}

static int parse_port(const char *s, size_t len, int *port, char *err, size_t errsz)
{
    int v = 0;
    if (len == 0 || len > 5) {
        return fail(err, errsz, "bad port '%.*s'", (int)(len > 16 ? 16 : len), s);
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return fail(err, errsz, "bad port '%.*s'", (int)len, s);
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535) {
        return fail(err, errsz, "port %d out of range 1..65535", v);
    }
    *port = v;
    return CM_OK;
}

/* Host and port from authority text h[0..len) (userinfo already removed). */
static int parse_hostport(struct cm_url *u, const char *h, size_t len, char *err, size_t errsz)
{
    const char *colon = NULL;
    size_t hlen = len;
    if (len > 0 && h[0] == '[') {
        const char *rb = memchr(h, ']', len);
        if (rb == NULL) {
            return fail(err, errsz, "missing ']' after IPv6 address");
        }
        size_t after = (size_t)(rb + 1 - h);
        if (after < len && h[after] != ':') {
            return fail(err, errsz, "junk after ']'");
        }
        if (rb == h + 1) {
            return fail(err, errsz, "empty host");
        }
        u->host = cm_strndup(h + 1, (size_t)(rb - h - 1));
        if (after < len) {
            return parse_port(h + after + 1, len - after - 1, &u->port, err, errsz);
        }
        return CM_OK;
    }
    if (strcmp(u->scheme, "mongodb") == 0 && memchr(h, ',', len) != NULL) {
        u->host = cm_strndup(h, len);
        return CM_OK;
    }
    for (size_t i = 0; i < len; i++) {
        if (h[i] == ':') {
            colon = h + i;
            hlen = i;
            break;
        }
    }
    if (hlen > 0) {
        u->host = cm_strndup(h, hlen);
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_') {
            return fail(err, errsz, "bad character in host");
        }
    }
    if (colon != NULL) {
        return parse_port(colon + 1, len - hlen - 1, &u->port, err, errsz);
    }
    return CM_OK;
}

static int parse_url(const char *s, struct cm_url *u, char *err, size_t errsz)
{
    const char *sep = strstr(s, "://");
    const char *p;
    const char *auth_end;
    const char *at = NULL;

    memset(u, 0, sizeof(*u));
    if (sep == NULL || sep == s) {
        return fail(err, errsz, "expected scheme://...");
    }
    for (const char *c = s; c < sep; c++) {
        if (!isalpha((unsigned char)*c) &&
            (c == s || (!isdigit((unsigned char)*c) && *c != '+' && *c != '-' && *c != '.'))) {
            return fail(err, errsz, "bad scheme");
        }
    }
    u->scheme = cm_strndup(s, (size_t)(sep - s));
    for (char *c = u->scheme; *c != '\0'; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    p = sep + 3;
    for (const char *c = p; *c != '\0'; c++) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            return fail(err, errsz, "space or control character in URL");
        }
    }

    if (strcmp(u->scheme, "sqlite") == 0) {
        const char *q = strchr(p, '?');
        if (strchr(p, '#') != NULL) {
            /* st_sqlite.c cuts the path at '#' too: "sqlite://#x" would have no path there. */
            return fail(err, errsz, "fragments ('#') are not allowed");
        }
        size_t plen = q != NULL ? (size_t)(q - p) : strlen(p);
        if (q != NULL) {
            u->query = cm_strdup(q + 1);
        }
        return decode_part("path", p, plen, &u->path, err, errsz);
    }

    auth_end = p + strcspn(p, "/?#");
    if (*auth_end == '#') {
        return fail(err, errsz, "fragments ('#') are not allowed");
    }
    for (const char *c = p; c < auth_end; c++) {
        if (*c == '@') {
            at = c;
        }
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon != NULL ? (size_t)(colon - p) : (size_t)(at - p);
        if (decode_part("user", p, ulen, &u->user, err, errsz) != CM_OK) {
            return CM_ERR;
        }
        if (colon != NULL && decode_part("password", colon + 1, (size_t)(at - colon - 1),
                                         &u->password, err, errsz) != CM_OK) {
            return CM_ERR;
        }
        p = at + 1;
    }
    if (parse_hostport(u, p, (size_t)(auth_end - p), err, errsz) != CM_OK) {
        return CM_ERR;
    }
    p = auth_end;
    if (*p == '/') {
        const char *q = strchr(p, '?');
        size_t plen = q != NULL ? (size_t)(q - p - 1) : strlen(p + 1);
        if (strchr(p, '#') != NULL) {
            return fail(err, errsz, "fragments ('#') are not allowed");
        }
        if (decode_part("path", p + 1, plen, &u->path, err, errsz) != CM_OK) {
            return CM_ERR;
        }
        p = q != NULL ? q : p + 1 + plen;
    }
    if (*p == '?') {
        if (strchr(p, '#') != NULL) {
            return fail(err, errsz, "fragments ('#') are not allowed");
        }
        if (p[1] != '\0') {
            u->query = cm_strdup(p + 1);
        }
    }
    return CM_OK;
}

int cm_url_parse(const char *s, struct cm_url *u, char *err, size_t errsz)
{
    if (parse_url(s, u, err, errsz) != CM_OK) {
        cm_url_deinit(u);
        return CM_ERR;
    }
    return CM_OK;
}

void cm_url_deinit(struct cm_url *u)
{
    cm_free(u->scheme);
    cm_free(u->user);
    cm_free(u->password);
    cm_free(u->host);
    cm_free(u->path);
    cm_free(u->query);
    memset(u, 0, sizeof(*u));
}
