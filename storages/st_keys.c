/* Keys a storage cannot hold, and overflow-proof expiry arithmetic (storages/st_keys.h). */
#include "storages/st_keys.h"
#include "storages/storage.h"

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
        hi = c == 0xed ? 0x9f : 0xbf; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }
    }
    return len;
}

bool cm_st_key_fits(const char *key, size_t klen, unsigned rules)
{
    const unsigned char *s = (const unsigned char *)key;
    size_t chars = 0;
    for (size_t i = 0; i < klen; chars++) {
        if (s[i] == 0 && (rules & CM_KEY_NO_NUL)) {
            return false;
        }
        size_t n = utf8_seq(s + i, klen - i);
        if (n == 0) {
            if (rules & CM_KEY_UTF8) {
                return false;
            }
            n = 1;
        }
        i += n;
    }
    return !(rules & CM_KEY_MAX_CHARS) || chars <= CM_KEY_MAX_CHARS_N;
}

bool cm_st_item_fits(const struct cm_st_op *op, size_t i, unsigned rules)
{
    return cm_st_key_fits(op->items[i].key, op->items[i].klen, rules);
}

bool cm_st_ttl_forever(int64_t ttl_ms, int64_t now_ms)
{
    if (ttl_ms <= 0) {
        return true;
    }
    if (now_ms < 0) {
        now_ms = 0;
    }
    return now_ms >= CM_ST_EXPIRE_MAX_MS || ttl_ms > CM_ST_EXPIRE_MAX_MS - now_ms;
}

int64_t cm_st_written_from_remaining(int64_t now_ms, int64_t ttl_ms, int64_t remain_ms)
{
    if (ttl_ms <= 0 || remain_ms < 0 || now_ms <= 0) {
        return 0;
    }
    if (remain_ms >= ttl_ms) {
        return now_ms;
    }
    int64_t age = ttl_ms - remain_ms; /* both non-negative: no overflow */
    return age < now_ms ? now_ms - age : 0;
}
