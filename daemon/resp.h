/* RESP: the request parser (multibulk and inline, with limits, resumable across any split)
 * and the reply encoder (RESP2 and RESP3). No I/O. */
#ifndef CM_DAEMON_RESP_H
#define CM_DAEMON_RESP_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;

#define CM_RESP_MAX_BULK      (512ULL * 1024 * 1024)  /* bulk length limit */
#define CM_RESP_MAX_ARGS      (1024 * 1024)           /* array element limit */
#define CM_RESP_MAX_INLINE    (64 * 1024)             /* inline line limit */

/* One parsed request: argc arguments, each NUL-terminated (binary-safe via lens).
 * One allocation; free with cm_argv_free. */
struct cm_argv {
    int argc;
    char **argv;
    size_t *lens;
};
void cm_argv_free(struct cm_argv *a);

struct cm_resp_parser;

struct cm_resp_parser *cm_resp_parser_new(uint64_t max_bulk, size_t max_args);
void cm_resp_parser_free(struct cm_resp_parser *p);
/* Zero-copy input: returns space for at least n bytes; read() into it, then commit. */
char *cm_resp_reserve(struct cm_resp_parser *p, size_t n);
void cm_resp_commit(struct cm_resp_parser *p, size_t n);
/* Copies len bytes in (reserve + memcpy + commit). */
void cm_resp_feed(struct cm_resp_parser *p, const char *buf, size_t len);
/* Next complete request. CM_OK: *out set (caller owns it). An empty inline line is skipped.
 * CM_EAGAIN: need more bytes. CM_ERR: protocol error, sticky; cm_resp_errstr gives the
 * client text, e.g. "Protocol error: invalid multibulk length". */
int cm_resp_next(struct cm_resp_parser *p, struct cm_argv **out) CM_MUSTCHECK;
const char *cm_resp_errstr(const struct cm_resp_parser *p);
/* For the log after CM_ERR: up to 64 input bytes from where the error was found, escaped
 * like redis sdscatrepr (\r \n \t \" \\, other non-printables as \xNN), then "..." if
 * more bytes follow. Always NUL-terminates out (outsz > 0); truncates to fit. */
void cm_resp_err_sample(const struct cm_resp_parser *p, char *out, size_t outsz);
/* Tests: parse everything with the general (resumable) path, never the whole-request fast path,
 * so the two can be compared. */
void cm_resp_parser_no_fast_path(struct cm_resp_parser *p);
/* Bytes buffered but not yet parsed into a request. */
size_t cm_resp_pending(const struct cm_resp_parser *p);

/* Reply encoder. resp3 selects RESP3 types where they differ from RESP2.
 * Status and error lines (cm_resp_status, cm_resp_error, cm_resp_errorf) are the only way to
 * write one: CR, LF and NUL in their text become spaces, so echoed client bytes stay inside the
 * line. Never build "-ERR ...\r\n" by hand. */
void cm_resp_status(struct cm_buf *b, const char *s);                 /* +s */
void cm_resp_error(struct cm_buf *b, const char *s);                  /* -s (s has its prefix: "ERR ...") */
void cm_resp_errorf(struct cm_buf *b, const char *fmt, ...) CM_PRINTF(2, 3);
void cm_resp_int(struct cm_buf *b, int64_t v);                        /* :v */
void cm_resp_bulk(struct cm_buf *b, const char *s, size_t len);       /* $len s */
void cm_resp_bulk_str(struct cm_buf *b, const char *s);
void cm_resp_nil(struct cm_buf *b, bool resp3);                       /* $-1 or _ */
void cm_resp_array(struct cm_buf *b, size_t n);                       /* *n */
void cm_resp_map(struct cm_buf *b, size_t npairs, bool resp3);        /* %n or *2n */
void cm_resp_set(struct cm_buf *b, size_t n, bool resp3);             /* ~n or *n */
void cm_resp_double(struct cm_buf *b, double v, bool resp3);          /* ,v or bulk */
void cm_resp_verbatim(struct cm_buf *b, const char *s, size_t len, bool resp3); /* =len txt:s or bulk */

#endif
