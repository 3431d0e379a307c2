/* Small helpers shared by every layer. */
#include "daemon/util.h"
#include "daemon/buf.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int64_t cm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t cm_now_ms(void)
{
    return cm_now_ns() / 1000000;
}

int64_t cm_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

void cm_fmt_iso8601(char *out, size_t outsz, int64_t wall_us, char sep)
{
    time_t secs = (time_t)(wall_us / 1000000);
    long usec = (long)(wall_us % 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, outsz, "%04d-%02d-%02d%c%02d:%02d:%02d.%06ld+00:00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, sep, tm.tm_hour, tm.tm_min, tm.tm_sec, usec);
}

/* n digits at s as a number, or -1. */
static int digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int64_t cm_parse_iso8601_ms(const char *s, size_t len)
{
    if (len < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') ||
        s[13] != ':' || s[16] != ':') {
        return 0;
    }
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 ||
        mi > 59 || se < 0 || se > 60) {
        return 0;
    }
    size_t i = 19;
    int64_t ms = 0;
    if (i < len && s[i] == '.') {
        int scale = 100;
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            ms += (s[i] - '0') * scale;
            scale /= 10;
        }
    }
    /* Only UTC: Cacheme writes +00:00; another offset is not ours to guess. */
    if (!(i == len || (len - i == 1 && s[i] == 'Z') ||
          (len - i == 6 && memcmp(s + i, "+00:00", 6) == 0))) {
        return 0;
    }
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                     .tm_min = mi, .tm_sec = se };
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (int64_t)t * 1000 + ms;
}

int cm_parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20) {
        return CM_ERR;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return CM_ERR;
        }
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return CM_ERR;
        }
        v = v * 10 + d;
    }
    *out = v;
    return CM_OK;
}

int cm_parse_i64(const char *s, size_t len, int64_t *out)
{
    bool neg = false;
    uint64_t v;
    if (len > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++;
        len--;
    }
    if (cm_parse_u64(s, len, &v) != CM_OK) {
        return CM_ERR;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1) {
            return CM_ERR;
        }
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX) {
            return CM_ERR;
        }
        *out = (int64_t)v;
    }
    return CM_OK;
}

/* Splits "123unit" into number and unit; both whole-string checked. */
static int split_num_unit(const char *s, uint64_t *num, const char **unit)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        n++;
    }
    if (cm_parse_u64(s, n, num) != CM_OK) {
        return CM_ERR;
    }
    *unit = s + n;
    return CM_OK;
}

int cm_parse_duration_ms(const char *s, int64_t *out_ms)
{
    static const struct { const char *u; uint64_t ms; } units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
    };
    uint64_t num;
    const char *unit;
    if (split_num_unit(s, &num, &unit) != CM_OK) {
        return CM_ERR;
    }
    for (size_t i = 0; i < CM_ARRAY_LEN(units); i++) {
        if (strcmp(unit, units[i].u) == 0) {
            if (num > (uint64_t)INT64_MAX / units[i].ms) {
                return CM_ERR;
            }
            *out_ms = (int64_t)(num * units[i].ms);
            return CM_OK;
        }
    }
    return CM_ERR;
}

int cm_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *u; uint64_t mul; } units[] = {
        { "", 1 }, { "b", 1 }, { "kb", 1024 }, { "mb", 1024 * 1024 }, { "gb", 1024ULL * 1024 * 1024 },
    };
    uint64_t num;
    const char *unit;
    if (split_num_unit(s, &num, &unit) != CM_OK) {
        return CM_ERR;
    }
    for (size_t i = 0; i < CM_ARRAY_LEN(units); i++) {
        if (strcasecmp(unit, units[i].u) == 0) {
            if (num > UINT64_MAX / units[i].mul) {
                return CM_ERR;
            }
            *out = num * units[i].mul;
            return CM_OK;
        }
    }
    return CM_ERR;
}

int cm_parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on") || !strcmp(s, "1")) {
        *out = true;
        return CM_OK;
    }
    if (!strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off") || !strcmp(s, "0")) {
        *out = false;
        return CM_OK;
    }
    return CM_ERR;
}

static uint64_t hash_seed;
static uint64_t rand_state;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

static void seed_once(void)
{
    if (hash_seed == 0) {
        uint64_t s = (uint64_t)cm_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&s;
        hash_seed = mix64(s) | 1;
        rand_state = mix64(hash_seed + 0x9e3779b97f4a7c15ULL) | 1;
    }
}

uint64_t cm_hash_seeded(const void *p, size_t len, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ mix64(w)) * 0x9fb21c651e98df25ULL;
        h ^= h >> 29;
        s += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, s, len);
    h ^= mix64(tail ^ ((uint64_t)len << 56));
    return mix64(h);
}

uint64_t cm_hash(const void *p, size_t len)
{
    seed_once();
    return cm_hash_seeded(p, len, hash_seed);
}

uint64_t cm_rand64(void)
{
    seed_once();
    rand_state ^= rand_state << 13;
    rand_state ^= rand_state >> 7;
    rand_state ^= rand_state << 17;
    return rand_state;
}

void cm_pct_encode(struct cm_buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *dst = cm_buf_reserve(out, len * 3);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            dst[o++] = (char)ch;
        } else {
            dst[o++] = '%';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    cm_buf_commit(out, o);
}

void cm_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}
