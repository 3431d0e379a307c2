/* Internals shared by the serializer files (serializer.c: API, zlib and wrappers; ser_json.c:
 * parsing and JSON emission; ser_msgpack.c: MessagePack). Not for other modules. */
#ifndef CM_DAEMON_SER_INTERNAL_H
#define CM_DAEMON_SER_INTERNAL_H

#include "daemon/common.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cm_buf;

/* One parsed JSON document. jansson keeps integers in long long; integers outside int64 (legal
 * JSON, and legal for Python) are parsed as marker strings "\0cm<nonce>:<digits>" whose nonce is
 * random per document, so no real string can be taken for one. Owned by the caller. */
struct cm_ser_doc {
    json_t *root;   /* owned; NULL after free */
    uint64_t nonce; /* 0 = the document has no big integers */
};

/* Output styles of JSON text. COMPACT is what clients get (Python's json.dumps with
 * separators=(",", ":") and ensure_ascii=False); PYTHON is Cacheme's json.dumps(obj) with its
 * defaults (", " and ": ", ensure_ascii=True: \uXXXX escapes, surrogate pairs for astral). */
enum cm_ser_style {
    CM_SER_STYLE_COMPACT,
    CM_SER_STYLE_PYTHON,
};

/* Zlib output cap (SPEC: refuse more than 512 MB). */
#define CM_SER_INFLATE_MAX ((size_t)512 * 1024 * 1024)

/* Parses one JSON document of any type (scalars too). CM_ERR with "invalid JSON: ..." in err. */
int cm_ser_doc_parse(struct cm_ser_doc *doc, const char *body, size_t len, char *err,
                     size_t errsz) CM_MUSTCHECK;
void cm_ser_doc_free(struct cm_ser_doc *doc);
/* Returns the decimal text of v if v is a big-integer marker of doc (its length in *n), else NULL.
 */
const char *cm_ser_doc_bigint(const struct cm_ser_doc *doc, const json_t *v, size_t *n);

/* Appends v as JSON text in the given style. */
void cm_ser_json_emit(const struct cm_ser_doc *doc, const json_t *v, enum cm_ser_style style,
                      struct cm_buf *out);
/* Appends s (valid UTF-8, may hold NUL) as a quoted JSON string. */
void cm_ser_json_string(struct cm_buf *out, const char *s, size_t n, enum cm_ser_style style);
/* Appends d as Python's repr(float) does (shortest round-trip digits, "1.0", "1e+16"), and
 * Infinity/-Infinity/NaN as json.dumps does. */
void cm_ser_json_double(struct cm_buf *out, double d);
/* Strict UTF-8 check (no overlongs, no surrogates, nothing above U+10FFFF). */
bool cm_ser_utf8_valid(const char *s, size_t n);

/* Appends v as MessagePack the way msgpack-python 1.x packs the equivalent Python object.
 * CM_ERR for integers beyond uint64 or below int64. */
int cm_ser_mp_pack(const struct cm_ser_doc *doc, const json_t *v, struct cm_buf *out, char *err,
                   size_t errsz) CM_MUSTCHECK;
/* Appends the Redis wrapper {"value": v, "updated_at": {"__class__": ..., "data": iso}}. */
int cm_ser_mp_pack_wrapped(const struct cm_ser_doc *doc, const json_t *v, const char *iso,
                           struct cm_buf *out, char *err, size_t errsz) CM_MUSTCHECK;
/* Converts one MessagePack object (the whole input) to compact JSON text. wrapped: the input is
 * the Redis wrapper map, and only its "value" entry is converted (and, when updated is not
 * NULL, its "updated_at" entry into updated). */
int cm_ser_mp_to_json(const char *p, size_t len, bool wrapped, struct cm_buf *out,
                      struct cm_buf *updated, char *err,
                      size_t errsz) CM_MUSTCHECK;

/* Inflates one complete zlib stream, refusing more than cap bytes of output. */
int cm_ser_inflate(const char *p, size_t len, size_t cap, struct cm_buf *out, char *err,
                   size_t errsz) CM_MUSTCHECK;

/* snprintf into err when err is not NULL; always returns CM_ERR. */
int cm_ser_fail(char *err, size_t errsz, const char *fmt, ...) CM_PRINTF(3, 4);

#endif
