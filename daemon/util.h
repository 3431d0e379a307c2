/* Small helpers: time, checked number parsing, durations and sizes, hashing, percent-encoding,
 * the open-file limit. */
#ifndef CM_DAEMON_UTIL_H
#define CM_DAEMON_UTIL_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;

/* Monotonic clock. */
int64_t cm_now_ns(void);
int64_t cm_now_ms(void);
/* Wall clock, microseconds since the epoch (UTC). */
int64_t cm_wall_us(void);
/* Formats wall-clock microseconds as "2026-11-25T01:22:56.123456+00:00" (sep 'T') or with ' ' as sep. */
void cm_fmt_iso8601(char *out, size_t outsz, int64_t wall_us, char sep);
/* Parses what cm_fmt_iso8601 and Python's datetime.isoformat() write for a UTC time:
 * YYYY-MM-DD[T ]HH:MM:SS[.ffffff][+00:00|Z]; returns wall-clock ms, 0 when s is not one. */
int64_t cm_parse_iso8601_ms(const char *s, size_t len);

/* Whole-string parses; return CM_OK or CM_ERR (empty, junk, overflow, out of range). */
int cm_parse_i64(const char *s, size_t len, int64_t *out) CM_MUSTCHECK;
int cm_parse_u64(const char *s, size_t len, uint64_t *out) CM_MUSTCHECK;
/* "500ms", "30s", "10m", "2h", "10d" or bare seconds -> milliseconds. */
int cm_parse_duration_ms(const char *s, int64_t *out_ms) CM_MUSTCHECK;
/* "64mb", "10kb", "1gb", "100b" or bare bytes (powers of 1024). */
int cm_parse_size(const char *s, uint64_t *out) CM_MUSTCHECK;
/* "yes/no/true/false/on/off/1/0" */
int cm_parse_bool(const char *s, bool *out) CM_MUSTCHECK;

/* Seeded 64-bit hash of bytes (not cryptographic; the seed is random per process). */
uint64_t cm_hash(const void *p, size_t len);
uint64_t cm_hash_seeded(const void *p, size_t len, uint64_t seed);
/* Random 64-bit value from a per-process xorshift generator seeded at start-up. */
uint64_t cm_rand64(void);

/* Appends bytes percent-encoded per RFC 3986: unreserved characters (ALPHA DIGIT - . _ ~) kept. */
void cm_pct_encode(struct cm_buf *out, const char *s, size_t len);

/* Raises the process's soft open-file limit (RLIMIT_NOFILE) to its hard limit, for processes
 * that hold one descriptor per client or connection (the daemon, bench/trace, bench/origin).
 * Best effort and silent: on failure the limit stays as it was and the process runs with fewer
 * descriptors. */
void cm_raise_nofile(void);

#endif
