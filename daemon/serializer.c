/* Serializers (SPEC §5): the public API, the Redis wrapper and zlib. JSON parsing and output live
 * in ser_json.c, MessagePack in ser_msgpack.c.
 *
 * Byte compatibility with Cacheme (cacheme/serializer.py, cacheme/storages/redis.py):
 * - JSONSerializer is json.dumps(obj, default=object_encoder): default separators ", " and ": ",
 *   ensure_ascii=True, floats as repr(). The Redis form is json.dumps of {"value": V,
 *   "updated_at": datetime}, the datetime becoming {"__class__": "datetime.datetime", "data":
 *   dt.isoformat()}. Its bytes depend on how the whole document is spelled, so the wrapped json
 *   form re-emits the document in Python's style and is byte-identical to Cacheme's.
 * - The bare json form (SQL, Mongo) keeps the loader's bytes as they are, after validation:
 *   Cacheme reads it with json.loads all the same, and a hit costs no re-encoding.
 * - MsgPackSerializer is msgpack.dumps(obj, default=object_encoder) with msgpack-python 1.x
 *   defaults; CompressedSerializer is zlib.compress(blob, level=3) around either.
 * - isoformat() drops the fraction when microseconds are 0; so do we.
 */
#include "daemon/serializer.h"
#include "daemon/buf.h"
#include "daemon/ser_internal.h"
#include "daemon/util.h"

#include <string.h>
#include <zlib.h>

/* Remembers how much of out was there, to drop a partial result on error. */
static size_t mark(const struct cm_buf *out)
{
    return cm_buf_used(out);
}

static int rollback(struct cm_buf *out, size_t m)
{
    out->len = out->pos + m;
    return CM_ERR;
}

static bool is_msgpack(enum cm_ser ser)
{
    return ser == CM_SER_MSGPACK || ser == CM_SER_COMPRESSED_MSGPACK;
}

static bool is_compressed(enum cm_ser ser)
{
    return ser == CM_SER_COMPRESSED_JSON || ser == CM_SER_COMPRESSED_MSGPACK;
}

static int deflate_append(const char *p, size_t len, struct cm_buf *out, char *err, size_t errsz)
{
    uLong bound = compressBound((uLong)len);
    uLongf dlen = bound;
    char *dst = cm_buf_reserve(out, bound);
    int rc = compress2((Bytef *)dst, &dlen, (const Bytef *)p, (uLong)len, 3);
    if (rc != Z_OK) {
        return cm_ser_fail(err, errsz, "zlib compress failed (%d)", rc);
    }
    cm_buf_commit(out, dlen);
    return CM_OK;
}

int cm_ser_inflate(const char *p, size_t len, size_t cap, struct cm_buf *out, char *err,
                   size_t errsz)
{
    z_stream zs;
    size_t m = mark(out), produced = 0;
    int rc;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit(&zs) != Z_OK) {
        return cm_ser_fail(err, errsz, "zlib inflateInit failed");
    }
    zs.next_in = (Bytef *)(uintptr_t)p;
    zs.avail_in = (uInt)len;
    if ((size_t)zs.avail_in != len) {
        inflateEnd(&zs);
        return cm_ser_fail(err, errsz, "zlib input too large");
    }
    for (;;) {
        /* Grow with the output, but never ask for more than one byte beyond the cap. */
        size_t chunk = produced < 65536 ? 65536 : produced;
        if (chunk > cap - produced + 1) {
            chunk = cap - produced + 1;
        }
        zs.next_out = (Bytef *)cm_buf_reserve(out, chunk);
        zs.avail_out = (uInt)chunk;
        rc = inflate(&zs, Z_NO_FLUSH);
        size_t got = chunk - zs.avail_out;
        cm_buf_commit(out, got);
        produced += got;
        if (produced > cap) {
            inflateEnd(&zs);
            rollback(out, m);
            return cm_ser_fail(err, errsz, "zlib output exceeds %zu bytes", cap);
        }
        if (rc == Z_STREAM_END) {
            break;
        }
        if (rc == Z_OK && got > 0) {
            continue;
        }
        inflateEnd(&zs);
        rollback(out, m);
        if (rc == Z_OK || rc == Z_BUF_ERROR) {
            return cm_ser_fail(err, errsz, "invalid zlib stream: truncated");
        }
        return cm_ser_fail(err, errsz, "invalid zlib stream: %s",
                           zs.msg != NULL ? zs.msg : "need dictionary");
    }
    size_t extra = zs.avail_in;
    inflateEnd(&zs);
    if (extra > 0) {
        rollback(out, m);
        return cm_ser_fail(err, errsz, "invalid zlib stream: %zu extra bytes after its end", extra);
    }
    return CM_OK;
}

/* Serializes a parsed document (bare or wrapped, uncompressed) into out. */
static int encode_doc(enum cm_ser ser, const struct cm_ser_doc *doc, const char *body, size_t len,
                      const char *iso, struct cm_buf *out, char *err, size_t errsz)
{
    if (is_msgpack(ser)) {
        return iso != NULL ? cm_ser_mp_pack_wrapped(doc, doc->root, iso, out, err, errsz)
                           : cm_ser_mp_pack(doc, doc->root, out, err, errsz);
    }
    if (iso == NULL) {
        cm_buf_append(out, body, len);
        return CM_OK;
    }
    cm_buf_append_str(out, "{\"value\": ");
    cm_ser_json_emit(doc, doc->root, CM_SER_STYLE_PYTHON, out);
    cm_buf_printf(
        out, ", \"updated_at\": {\"__class__\": \"datetime.datetime\", \"data\": \"%s\"}}", iso);
    return CM_OK;
}

static int encode(enum cm_ser ser, const char *body, size_t len, const char *iso,
                  struct cm_buf *out, char *err, size_t errsz)
{
    struct cm_ser_doc doc;
    struct cm_buf tmp;
    size_t m = mark(out);
    int rc;
    if (ser == CM_SER_RAW) {
        cm_buf_append(out, body, len);
        return CM_OK;
    }
    if (cm_ser_doc_parse(&doc, body, len, err, errsz) != CM_OK) {
        return CM_ERR;
    }
    if (!is_compressed(ser)) {
        rc = encode_doc(ser, &doc, body, len, iso, out, err, errsz);
    } else {
        cm_buf_init(&tmp);
        rc = encode_doc(ser, &doc, body, len, iso, &tmp, err, errsz);
        if (rc == CM_OK) {
            rc = deflate_append(cm_buf_start(&tmp), cm_buf_used(&tmp), out, err, errsz);
        }
        cm_buf_deinit(&tmp);
    }
    cm_ser_doc_free(&doc);
    return rc == CM_OK ? CM_OK : rollback(out, m);
}

int cm_ser_encode(enum cm_ser ser, const char *body, size_t len, struct cm_buf *out, char *err,
                  size_t errsz)
{
    return encode(ser, body, len, NULL, out, err, errsz);
}

int cm_ser_encode_wrapped(enum cm_ser ser, const char *body, size_t len, int64_t updated_at_us,
                          struct cm_buf *out, char *err, size_t errsz)
{
    char iso[64];
    cm_fmt_iso8601(iso, sizeof(iso), updated_at_us, 'T');
    char *frac = strstr(iso, ".000000+");
    if (frac != NULL) {
        memmove(frac, frac + 7, strlen(frac + 7) + 1);
    }
    return encode(ser, body, len, iso, out, err, errsz);
}

/* The write time in Cacheme's updated_at ({"__class__": "datetime.datetime", "data": ISO}),
 * given as JSON text; 0 when it is not one. */
static int64_t updated_at_ms(const char *json, size_t len)
{
    struct cm_ser_doc doc;
    char err[64];
    int64_t ms = 0;
    if (len == 0 || cm_ser_doc_parse(&doc, json, len, err, sizeof(err)) != CM_OK) {
        return 0;
    }
    json_t *data = json_is_object(doc.root) ? json_object_get(doc.root, "data") : NULL;
    if (json_is_string(data)) {
        ms = cm_parse_iso8601_ms(json_string_value(data), json_string_length(data));
    }
    cm_ser_doc_free(&doc);
    return ms;
}

/* Uncompressed stored bytes -> client JSON text (and the wrapper's write time, when asked). */
static int decode_plain(enum cm_ser ser, const char *p, size_t len, bool wrapped,
                        struct cm_buf *out, int64_t *written_ms, char *err, size_t errsz)
{
    struct cm_ser_doc doc;
    json_t *value;
    if (is_msgpack(ser)) {
        struct cm_buf upd;
        cm_buf_init(&upd);
        int rc = cm_ser_mp_to_json(p, len, wrapped, out, written_ms != NULL ? &upd : NULL, err,
                                   errsz);
        if (rc == CM_OK && written_ms != NULL) {
            *written_ms = updated_at_ms(cm_buf_start(&upd), cm_buf_used(&upd));
        }
        cm_buf_deinit(&upd);
        return rc;
    }
    if (!wrapped) {
        cm_buf_append(out, p, len);
        return CM_OK;
    }
    if (cm_ser_doc_parse(&doc, p, len, err, errsz) != CM_OK) {
        return CM_ERR;
    }
    value = json_is_object(doc.root) ? json_object_get(doc.root, "value") : NULL;
    if (value == NULL) {
        cm_ser_doc_free(&doc);
        return cm_ser_fail(err, errsz, "stored JSON is not an object with a \"value\" entry");
    }
    cm_ser_json_emit(&doc, value, CM_SER_STYLE_COMPACT, out);
    if (written_ms != NULL) {
        json_t *upd = json_object_get(doc.root, "updated_at");
        json_t *data = json_is_object(upd) ? json_object_get(upd, "data") : NULL;
        if (json_is_string(data)) {
            *written_ms = cm_parse_iso8601_ms(json_string_value(data), json_string_length(data));
        }
    }
    cm_ser_doc_free(&doc);
    return CM_OK;
}

static int decode(enum cm_ser ser, const char *stored, size_t len, bool wrapped, struct cm_buf *out,
                  int64_t *written_ms, char *err, size_t errsz)
{
    struct cm_buf tmp;
    size_t m = mark(out);
    int rc;
    if (ser == CM_SER_RAW) {
        cm_buf_append(out, stored, len);
        return CM_OK;
    }
    if (!is_compressed(ser)) {
        rc = decode_plain(ser, stored, len, wrapped, out, written_ms, err, errsz);
        return rc == CM_OK ? CM_OK : rollback(out, m);
    }
    cm_buf_init(&tmp);
    rc = cm_ser_inflate(stored, len, CM_SER_INFLATE_MAX, &tmp, err, errsz);
    if (rc == CM_OK) {
        rc = decode_plain(ser, cm_buf_start(&tmp), cm_buf_used(&tmp), wrapped, out, written_ms,
                          err, errsz);
    }
    cm_buf_deinit(&tmp);
    return rc == CM_OK ? CM_OK : rollback(out, m);
}

int cm_ser_decode(enum cm_ser ser, const char *stored, size_t len, struct cm_buf *out, char *err,
                  size_t errsz)
{
    return decode(ser, stored, len, false, out, NULL, err, errsz);
}

int cm_ser_decode_wrapped(enum cm_ser ser, const char *stored, size_t len, struct cm_buf *out,
                          char *err, size_t errsz)
{
    return decode(ser, stored, len, true, out, NULL, err, errsz);
}

int cm_ser_decode_wrapped_at(enum cm_ser ser, const char *stored, size_t len, struct cm_buf *out,
                             int64_t *written_ms, char *err, size_t errsz)
{
    *written_ms = 0;
    return decode(ser, stored, len, true, out, written_ms, err, errsz);
}

int cm_ser_validate(enum cm_ser ser, const char *body, size_t len, char *err, size_t errsz)
{
    struct cm_ser_doc doc;
    struct cm_buf tmp;
    int rc = CM_OK;
    if (ser == CM_SER_RAW) {
        return CM_OK;
    }
    if (cm_ser_doc_parse(&doc, body, len, err, errsz) != CM_OK) {
        return CM_ERR;
    }
    if (is_msgpack(ser) && doc.nonce != 0) {
        /* Only msgpack has a range limit (uint64); packing is the check. */
        cm_buf_init(&tmp);
        rc = cm_ser_mp_pack(&doc, doc.root, &tmp, err, errsz);
        cm_buf_deinit(&tmp);
    }
    cm_ser_doc_free(&doc);
    return rc;
}
