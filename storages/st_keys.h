/* What the remote storages share about keys they cannot hold and about expiry times (issue 14,
 * defects 14 and 15): a key a storage cannot hold is a miss for that key alone and is never
 * written there; a ttl too long for a backend's time type is stored as "never expires". */
#ifndef CM_STORAGES_ST_KEYS_H
#define CM_STORAGES_ST_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_st_op;

/* What a backend's key column refuses (flags for cm_st_key_fits). */
enum cm_st_key_rule {
    CM_KEY_NO_NUL = 1u << 0,    /* no NUL byte (PostgreSQL text, BSON strings as C strings) */
    CM_KEY_UTF8 = 1u << 1,      /* well-formed UTF-8 (PostgreSQL UTF8, MySQL utf8mb4, BSON) */
    CM_KEY_MAX_CHARS = 1u << 2, /* at most CM_KEY_MAX_CHARS characters: Cacheme's VARCHAR(512) */
};
#define CM_KEY_MAX_CHARS_N 512

/* The latest expiry any backend stores, in wall-clock ms: 9999-01-01T00:00:00Z. MySQL's
 * DATETIME ends at 9999-12-31 and SQLite's text form has four-digit years; the year of margin
 * covers a server clock ahead of ours (PostgreSQL and MySQL add the ttl to their own now).
 * Redis (ms since the epoch in an int64) and Mongo's Date (int64 ms) hold far more, but a
 * ttl of 7,000+ years means "forever" there too, and one rule for all keeps them alike. */
#define CM_ST_EXPIRE_MAX_MS INT64_C(253370764800000)

/* True when key[0..klen) is within rules (a mask of enum cm_st_key_rule). The UTF-8 check is
 * RFC 3629's: no overlong forms, no surrogates, nothing above U+10FFFF (what PostgreSQL and
 * MySQL's utf8mb4 accept). MAX_CHARS counts code points, as VARCHAR(n) does; it implies UTF8
 * only for counting (invalid bytes count one each). */
bool cm_st_key_fits(const char *key, size_t klen, unsigned rules);

/* True when item i of op is within rules. */
bool cm_st_item_fits(const struct cm_st_op *op, size_t i, unsigned rules);

/* True when a write with ttl_ms made at wall-clock now_ms is stored without an expiry: ttl_ms
 * <= 0 (never expires), or an expiry past CM_ST_EXPIRE_MAX_MS (the command layer accepts ttl_ms
 * up to INT64_MAX - now: a ttl that long is "forever" on every backend, by choice). Never
 * overflows. */
bool cm_st_ttl_forever(int64_t ttl_ms, int64_t now_ms);

/* The write time of a value that has remain_ms of ttl_ms left, at wall-clock now_ms (for stores
 * that keep a remaining TTL, not a timestamp: Redis PTTL): now - (ttl - remain), clamped to
 * now (an entry written with a longer ttl than this cache's looks fresh), 0 = unknown (no ttl,
 * no expiry, or a ttl that puts it before the epoch). Never overflows. */
int64_t cm_st_written_from_remaining(int64_t now_ms, int64_t ttl_ms, int64_t remain_ms);

#endif
