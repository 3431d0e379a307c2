/* Value checks of the config loader: listen addresses, names, key and loader templates,
 * doorkeeper. Pure functions over strings, so check_conf.c can drive them table-first. */
#include "conf/conf_check.h"

#include "daemon/common.h"
#include "daemon/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#define MAX_NAME_LEN 64
#define MAX_HOST_LEN 253
/* Largest doorkeeper filter accepted: 2^33 bits = 1 GiB. */
#define MAX_DK_BITS (1ULL << 33)

static const char *say(char *buf, size_t bufsz, const char *fmt, ...) CM_PRINTF(3, 4);

static const char *say(char *buf, size_t bufsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, bufsz, fmt, ap);
    va_end(ap);
    return buf;
}

static bool is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static bool is_dns_name(const char *s, size_t len)
{
    if (len == 0 || len > MAX_HOST_LEN || s[0] == '-' || s[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.' && s[i] != '_') {
            return false;
        }
    }
    return true;
}

static bool all_digits_dots(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]) && s[i] != '.') {
            return false;
        }
    }
    return true;
}

const char *cm_conf_check_listen(const char *s, bool allow_unix, char *buf, size_t bufsz)
{
    const char *colon;
    char host[MAX_HOST_LEN + 1];
    size_t hlen;
    uint64_t port;

    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        if (!allow_unix) {
            return "a Unix socket is not allowed here: use host:port";
        }
        if (path[0] != '/') {
            return "unix: needs an absolute path, e.g. unix:/run/cachemed.sock";
        }
        if (strlen(path) > CM_CONF_MAX_SUN_PATH) {
            return say(buf, bufsz, "socket path longer than %d bytes", CM_CONF_MAX_SUN_PATH);
        }
        return NULL;
    }
    colon = strrchr(s, ':');
    if (colon == NULL) {
        return allow_unix ? "expected host:port or unix:/path" : "expected host:port";
    }
    hlen = (size_t)(colon - s);
    if (cm_parse_u64(colon + 1, strlen(colon + 1), &port) != CM_OK || port < 1 || port > 65535) {
        return say(buf, bufsz, "bad port '%.16s' (expected 1..65535)", colon + 1);
    }
    if (hlen == 0) {
        return "missing host (use 0.0.0.0 or [::] for every address)";
    }
    if (hlen > MAX_HOST_LEN) {
        return "host name too long";
    }
    if (s[0] == '[') {
        if (hlen < 3 || s[hlen - 1] != ']') {
            return "bad IPv6 address: expected [address]:port";
        }
        memcpy(host, s + 1, hlen - 2);
        host[hlen - 2] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            return say(buf, bufsz, "bad IPv6 address '%s'", host);
        }
        return NULL;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (memchr(host, ':', hlen) != NULL) {
        return "an IPv6 address must be in brackets: [address]:port";
    }
    if (all_digits_dots(host, hlen)) {
        struct in_addr a4;
        if (inet_pton(AF_INET, host, &a4) != 1) {
            return say(buf, bufsz, "bad IPv4 address '%s'", host);
        }
        return NULL;
    }
    if (!is_dns_name(host, hlen)) {
        return "bad host name (allowed: A-Z a-z 0-9 - . _)";
    }
    return NULL;
}

bool cm_conf_listen_parse(const char *s, struct cm_conf_addr *out)
{
    const char *colon = strrchr(s, ':');
    char host[MAX_HOST_LEN + 1];
    size_t hlen;
    uint64_t port;

    memset(out, 0, sizeof(*out));
    if (strncmp(s, "unix:", 5) == 0) {
        out->family = AF_UNIX;
        out->name = s + 5;
        out->namelen = strlen(s + 5);
        return true;
    }
    if (colon == NULL || cm_parse_u64(colon + 1, strlen(colon + 1), &port) != CM_OK || port < 1 ||
        port > 65535) {
        return false;
    }
    out->port = (int)port;
    hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        s++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen > MAX_HOST_LEN) {
        return false;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        out->family = AF_INET6;
        if (memcmp(out->addr, v4mapped, 12) == 0) { /* ::ffff:a.b.c.d is a.b.c.d */
            memmove(out->addr, out->addr + 12, 4);
            memset(out->addr + 4, 0, 12);
            out->family = AF_INET;
        }
    } else {
        out->family = 0; /* a host name, resolved at start */
    }
    out->name = s;
    out->namelen = hlen;
    return true;
}

/* 0.0.0.0 or [::]. */
static bool is_wildcard(const struct cm_conf_addr *a)
{
    static const unsigned char zero[16];
    return (a->family == AF_INET && memcmp(a->addr, zero, 4) == 0) ||
           (a->family == AF_INET6 && memcmp(a->addr, zero, 16) == 0);
}

bool cm_conf_listen_conflict(const struct cm_conf_addr *a, const struct cm_conf_addr *b)
{
    if (a->family == AF_UNIX || b->family == AF_UNIX) {
        return a->family == b->family && a->namelen == b->namelen &&
               memcmp(a->name, b->name, a->namelen) == 0;
    }
    if (a->port != b->port) {
        return false;
    }
    if (a->family == 0 || b->family == 0) {
        /* A host name: the same name, or a wildcard that takes the port on every address. */
        return (a->family == b->family && a->namelen == b->namelen &&
                strncasecmp(a->name, b->name, a->namelen) == 0) ||
               is_wildcard(a) || is_wildcard(b);
    }
    if (a->family == b->family) {
        return memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0 || is_wildcard(a) ||
               is_wildcard(b);
    }
    /* IPv4 and IPv6: [::] is dual-stack (the daemon does not set IPV6_V6ONLY). */
    return (a->family == AF_INET6 && is_wildcard(a)) || (b->family == AF_INET6 && is_wildcard(b));
}

const char *cm_conf_check_name(const char *s, size_t len, char *buf, size_t bufsz)
{
    CM_UNUSED(buf);
    CM_UNUSED(bufsz);
    if (len == 0) {
        return "empty name";
    }
    if (len > MAX_NAME_LEN) {
        return "name longer than 64 characters";
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_ident_char(s[i]) && s[i] != '.' && s[i] != '-') {
            return "bad character in name (allowed: A-Z a-z 0-9 _ . -)";
        }
    }
    return NULL;
}

/* Empty or longer than max: the reason; else NULL. */
static const char *check_len(size_t len, size_t max, char *buf, size_t bufsz)
{
    if (len == 0) {
        return "must not be empty";
    }
    if (len > max) {
        return say(buf, bufsz, "longer than %zu characters", max);
    }
    return NULL;
}

const char *cm_conf_check_chars(const char *s, size_t max, const char *extra, char *buf,
                                size_t bufsz)
{
    size_t len = strlen(s);
    const char *why = check_len(len, max, buf, bufsz);
    if (why != NULL) {
        return why;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_ident_char(s[i]) && strchr(extra, s[i]) == NULL) {
            return say(buf, bufsz, "only A-Z a-z 0-9 %s are allowed",
                       extra[0] == '\0' ? "_" : "_ and these: -.");
        }
    }
    return NULL;
}

const char *cm_conf_check_word(const char *s, size_t max, char *buf, size_t bufsz)
{
    size_t len = strlen(s);
    const char *why = check_len(len, max, buf, bufsz);
    if (why != NULL) {
        return why;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f) {
            return "spaces and control characters are not allowed";
        }
    }
    return NULL;
}

/* The [user@]host[:port] of an http:// URL, as a listen address is checked (port 80 when
 * absent): a bad port or host would otherwise fail every load of the node. */
static const char *check_url_host(const char *auth, size_t len, char *buf, size_t bufsz)
{
    char hp[MAX_HOST_LEN + 16];
    char why[128];
    const char *at = memrchr(auth, '@', len);
    const char *rb, *colon, *r;
    if (at != NULL) {
        len -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    if (len == 0 || len > MAX_HOST_LEN + 6) {
        return say(buf, bufsz, "bad host in URL");
    }
    rb = memrchr(auth, ']', len);
    colon = memrchr(auth, ':', len);
    if (colon != NULL && (rb == NULL || colon > rb)) {
        snprintf(hp, sizeof(hp), "%.*s", (int)len, auth);
    } else {
        snprintf(hp, sizeof(hp), "%.*s:80", (int)len, auth);
    }
    r = cm_conf_check_listen(hp, false, why, sizeof(why));
    return r != NULL ? say(buf, bufsz, "bad host in URL: %s", r) : NULL;
}

const char *cm_conf_check_loader(const char *url, const char *key_src, const struct cm_tpl *key,
                                 struct cm_tpl *out, char *buf, size_t bufsz)
{
    size_t host_end;

    memset(out, 0, sizeof(*out));
    if (strncasecmp(url, "https://", 8) == 0) {
        return "https:// is not supported: use http:// (or loader_socket)";
    }
    if (strncmp(url, "http://", 7) != 0) {
        return "must start with http://";
    }
    for (size_t i = 0; url[i] != '\0'; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= ' ' || c == 0x7f) {
            return "spaces and control characters are not allowed";
        }
    }
    host_end = 7 + strcspn(url + 7, "/?#");
    if (host_end == 7) {
        return "missing host after http://";
    }
    if (url[host_end] == '#') {
        return "fragments ('#') are not allowed";
    }
    if (cm_tpl_parse_url(out, url, buf, bufsz) != CM_OK) {
        return buf;
    }
    if (out->nparams > 0 && cm_tpl_first_param_offset(out) < host_end) {
        cm_tpl_deinit(out);
        return "parameters are not allowed in the host part";
    }
    if (check_url_host(url + 7, host_end - 7, buf, bufsz) != NULL) {
        cm_tpl_deinit(out);
        return buf;
    }
    for (size_t i = 0; i < out->nsegs && key->nsegs > 0; i++) {
        const struct cm_tpl_seg *p = &out->segs[i];
        if (p->param && cm_tpl_count_param(key, p->text, p->len) == 0) {
            say(buf, bufsz, "parameter {%.*s} is not in the key template '%.64s'", (int)p->len,
                p->text, key_src);
            cm_tpl_deinit(out);
            return buf;
        }
    }
    return NULL;
}

static const char *trim(const char *s, size_t *len)
{
    while (*len > 0 && isspace((unsigned char)*s)) {
        s++;
        (*len)--;
    }
    while (*len > 0 && isspace((unsigned char)s[*len - 1])) {
        (*len)--;
    }
    return s;
}

/* Splits "A, B" at its first comma: A trimmed in *a, *alen (not NUL-terminated), B trimmed and
 * copied into tmp ("" when empty or too long for tmp). False when there is no comma. */
static bool split_pair(const char *s, const char **a, size_t *alen, char *tmp, size_t tmpsz)
{
    const char *comma = strchr(s, ',');
    const char *b;
    size_t blen;
    if (comma == NULL) {
        return false;
    }
    *alen = (size_t)(comma - s);
    *a = trim(s, alen);
    blen = strlen(comma + 1);
    b = trim(comma + 1, &blen);
    if (blen >= tmpsz) {
        blen = 0;
    }
    memcpy(tmp, b, blen);
    tmp[blen] = '\0';
    return true;
}

const char *cm_conf_parse_doorkeeper(const char *s, uint64_t *capacity, double *fpp, char *buf,
                                     size_t bufsz)
{
    const char *c;
    size_t clen, flen;
    char tmp[64];
    char *end;
    uint64_t cap;
    double p;
    double bits;

    if (!split_pair(s, &c, &clen, tmp, sizeof(tmp))) {
        return "expected \"capacity, false-positive rate\", e.g. 100000, 0.01";
    }
    if (cm_parse_u64(c, clen, &cap) != CM_OK || cap < 1) {
        return say(buf, bufsz, "bad capacity '%.*s' (expected an integer >= 1)",
                   (int)(clen > 32 ? 32 : clen), c);
    }
    if (tmp[0] == '\0') {
        return "bad false-positive rate (expected a number between 0 and 1)";
    }
    flen = strlen(tmp);
    p = strtod(tmp, &end);
    if (*end != '\0' || !isdigit((unsigned char)tmp[flen - 1]) || !(p > 0.0 && p < 1.0)) {
        return say(buf, bufsz, "bad false-positive rate '%s' (expected 0 < rate < 1)", tmp);
    }
    /* Cacheme's sizing: bits = capacity * -ln(fpp) / ln(2)^2, rounded up to a power of two. */
    bits = (double)cap * -log(p) / (M_LN2 * M_LN2);
    if (!(bits <= (double)MAX_DK_BITS)) {
        return "filter too large (more than 1 GiB): lower the capacity or raise the rate";
    }
    *capacity = cap;
    *fpp = p;
    return NULL;
}

const char *cm_conf_parse_breaker(const char *s, int64_t max_open_ms, int *failures,
                                  int64_t *open_ms, char *buf, size_t bufsz)
{
    const char *k;
    size_t klen;
    char tmp[64];
    int64_t n, ms;

    if (!split_pair(s, &k, &klen, tmp, sizeof(tmp))) {
        return "expected \"failures, open time\", e.g. 5, 10s";
    }
    if (cm_parse_i64(k, klen, &n) != CM_OK || n < 1 || n > 1000000) {
        return say(buf, bufsz, "bad failure count '%.*s' (expected an integer 1..1000000)",
                   (int)(klen > 32 ? 32 : klen), k);
    }
    if (tmp[0] == '\0') {
        return "bad open time (expected a duration, e.g. 10s)";
    }
    if (cm_parse_duration_ms(tmp, &ms) != CM_OK || ms < 1 || ms > max_open_ms) {
        return say(buf, bufsz, "bad open time '%s' (expected a duration from 1ms to %lldd)", tmp,
                   (long long)(max_open_ms / 86400000));
    }
    *failures = (int)n;
    *open_ms = ms;
    return NULL;
}
