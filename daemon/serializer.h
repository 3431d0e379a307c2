/* Serializers (SPEC §5), byte-compatible with Cacheme: json, msgpack, compressed_json,
 * compressed_msgpack, raw. Clients always see JSON text (or raw bytes for raw nodes). */
#ifndef CM_DAEMON_SERIALIZER_H
#define CM_DAEMON_SERIALIZER_H

#include "conf/conf.h"

#include <stddef.h>
#include <stdint.h>

struct cm_buf;

/* All functions return CM_OK, or CM_ERR with a short reason in err (e.g. "invalid JSON: ..."),
 * and append their output to out. */

/* Loader body (JSON text; raw: any bytes) -> bare stored form V (SQL, Mongo). Validates JSON. */
int cm_ser_encode(enum cm_ser ser, const char *body, size_t len, struct cm_buf *out, char *err,
                  size_t errsz) CM_MUSTCHECK;
/* Loader body -> Redis form: serializer applied to {"value": doc, "updated_at":
 * {"__class__": "datetime.datetime", "data": ISO}} (raw: the body itself). updated_at_us is
 * wall-clock microseconds. */
int cm_ser_encode_wrapped(enum cm_ser ser, const char *body, size_t len, int64_t updated_at_us,
                          struct cm_buf *out, char *err, size_t errsz) CM_MUSTCHECK;
/* Bare stored form V -> client form (JSON text; raw: bytes as they are). */
int cm_ser_decode(enum cm_ser ser, const char *stored, size_t len, struct cm_buf *out, char *err,
                  size_t errsz) CM_MUSTCHECK;
/* Redis form -> client form of its "value" entry. */
int cm_ser_decode_wrapped(enum cm_ser ser, const char *stored, size_t len, struct cm_buf *out,
                          char *err, size_t errsz) CM_MUSTCHECK;
/* The same, also giving the wrapper's updated_at as wall-clock ms (0 when absent or not a UTC
 * time): the entry's write time (SPEC §12). */
int cm_ser_decode_wrapped_at(enum cm_ser ser, const char *stored, size_t len, struct cm_buf *out,
                             int64_t *written_ms, char *err, size_t errsz) CM_MUSTCHECK;
/* Checks that body is one valid JSON document (used for json/msgpack nodes' loader output and SET). */
int cm_ser_validate(enum cm_ser ser, const char *body, size_t len, char *err, size_t errsz) CM_MUSTCHECK;

#endif
