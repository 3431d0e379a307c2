/* MessagePack side of the serializers. Packing uses msgpack-c, whose packer picks the same
 * encodings as msgpack-python 1.x (smallest int form, str8 for 32..255 bytes, float64). Reading
 * is done here: libmsgpackc's unpacker stops at 32 levels of nesting (MSGPACK_EMBED_STACK_SIZE
 * is compiled into the library), and Cacheme's values nest deeper than that. */
#include "daemon/ser_internal.h"
#include "daemon/buf.h"
#include "daemon/util.h"

#include <inttypes.h>
#include <msgpack.h>
#include <string.h>

/* Deeper input is refused; jansson's own parser limit is 2048 too. */
#define MP_MAX_DEPTH 2048

static int buf_write(void *data, const char *p, size_t n)
{
    cm_buf_append(data, p, n);
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int pack_value(const struct cm_ser_doc *doc, const json_t *v, msgpack_packer *pk, char *err,
                      size_t errsz)
{
    const char *big;
    size_t n;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *item;
        msgpack_pack_map(pk, json_object_size(v));
        json_object_foreach((json_t *)v, key, item)
        {
            pack_str(pk, key, strlen(key));
            if (pack_value(doc, item, pk, err, errsz) != CM_OK) {
                return CM_ERR;
            }
        }
        return CM_OK;
    }
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (pack_value(doc, json_array_get(v, i), pk, err, errsz) != CM_OK) {
                return CM_ERR;
            }
        }
        return CM_OK;
    case JSON_STRING:
        big = cm_ser_doc_bigint(doc, v, &n);
        if (big != NULL) {
            /* Only (INT64_MAX, UINT64_MAX] fits: msgpack-python raises OverflowError beyond. */
            uint64_t u;
            if (big[0] == '-' || cm_parse_u64(big, n, &u) != CM_OK) {
                return cm_ser_fail(err, errsz, "integer out of range for msgpack: %.*s",
                                   (int)(n > 40 ? 40 : n), big);
            }
            msgpack_pack_uint64(pk, u);
        } else {
            pack_str(pk, json_string_value(v), json_string_length(v));
        }
        return CM_OK;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return CM_OK;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return CM_OK;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return CM_OK;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return CM_OK;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return CM_OK;
    }
    CM_NOT_REACHED();
}

int cm_ser_mp_pack(const struct cm_ser_doc *doc, const json_t *v, struct cm_buf *out, char *err,
                   size_t errsz)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    return pack_value(doc, v, &pk, err, errsz);
}

int cm_ser_mp_pack_wrapped(const struct cm_ser_doc *doc, const json_t *v, const char *iso,
                           struct cm_buf *out, char *err, size_t errsz)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "value", 5);
    if (pack_value(doc, v, &pk, err, errsz) != CM_OK) {
        return CM_ERR;
    }
    pack_str(&pk, "updated_at", 10);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "__class__", 9);
    pack_str(&pk, "datetime.datetime", 17);
    pack_str(&pk, "data", 4);
    pack_str(&pk, iso, strlen(iso));
    return CM_OK;
}

/* Reader state over one input; err is filled on the first failure. */
struct mp_rd {
    const unsigned char *p; /* input, borrowed */
    size_t len;             /* input length */
    size_t pos;             /* next byte to read */
    char *err;              /* caller's error buffer */
    size_t errsz;
};

static int truncated(struct mp_rd *r)
{
    return cm_ser_fail(r->err, r->errsz, "invalid msgpack: truncated at byte %zu", r->pos);
}

/* Reads an n-byte big-endian unsigned integer. */
static int rd_uint(struct mp_rd *r, size_t n, uint64_t *v)
{
    if (r->len - r->pos < n) {
        return truncated(r);
    }
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        *v = (*v << 8) | r->p[r->pos + i];
    }
    r->pos += n;
    return CM_OK;
}

/* What one header byte (plus its length bytes) announces. */
enum mp_kind { MP_NIL, MP_BOOL, MP_UINT, MP_INT, MP_FLOAT, MP_STR, MP_ARRAY, MP_MAP };

struct mp_item {
    enum mp_kind kind;
    uint64_t u;    /* UINT value, BOOL value, STR length, ARRAY/MAP count */
    int64_t i;     /* INT value */
    double d;      /* FLOAT value */
    const char *s; /* STR bytes, inside the input */
};

static int rd_sized(struct mp_rd *r, enum mp_kind kind, size_t lenbytes, struct mp_item *it)
{
    it->kind = kind;
    return rd_uint(r, lenbytes, &it->u);
}

/* Reads one header (and a scalar's payload). Containers leave their elements unread. */
static int rd_item(struct mp_rd *r, struct mp_item *it)
{
    uint64_t v;
    if (r->pos >= r->len) {
        return truncated(r);
    }
    unsigned char c = r->p[r->pos++];
    if (c <= 0x7f || c >= 0xe0) {
        it->kind = MP_INT;
        it->i = (int8_t)c;
        return CM_OK;
    }
    if (c >= 0x80 && c <= 0x8f) {
        it->kind = MP_MAP, it->u = c & 0x0f;
        return CM_OK;
    }
    if (c >= 0x90 && c <= 0x9f) {
        it->kind = MP_ARRAY, it->u = c & 0x0f;
        return CM_OK;
    }
    if (c >= 0xa0 && c <= 0xbf) {
        it->kind = MP_STR, it->u = c & 0x1f;
    } else {
        switch (c) {
        case 0xc0:
            it->kind = MP_NIL;
            return CM_OK;
        case 0xc2:
        case 0xc3:
            it->kind = MP_BOOL, it->u = c == 0xc3;
            return CM_OK;
        case 0xca: {
            uint32_t bits;
            float f;
            if (rd_uint(r, 4, &v) != CM_OK) {
                return CM_ERR;
            }
            bits = (uint32_t)v;
            memcpy(&f, &bits, sizeof(f));
            it->kind = MP_FLOAT, it->d = f;
            return CM_OK;
        }
        case 0xcb:
            if (rd_uint(r, 8, &v) != CM_OK) {
                return CM_ERR;
            }
            memcpy(&it->d, &v, sizeof(it->d));
            it->kind = MP_FLOAT;
            return CM_OK;
        case 0xcc:
            return rd_sized(r, MP_UINT, 1, it);
        case 0xcd:
            return rd_sized(r, MP_UINT, 2, it);
        case 0xce:
            return rd_sized(r, MP_UINT, 4, it);
        case 0xcf:
            return rd_sized(r, MP_UINT, 8, it);
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3: {
            size_t n = (size_t)1 << (c - 0xd0);
            if (rd_uint(r, n, &v) != CM_OK) {
                return CM_ERR;
            }
            it->kind = MP_INT;
            it->i = n == 1 ? (int8_t)v : n == 2 ? (int16_t)v : n == 4 ? (int32_t)v : (int64_t)v;
            return CM_OK;
        }
        case 0xd9:
        case 0xda:
        case 0xdb:
            if (rd_sized(r, MP_STR, (size_t)1 << (c - 0xd9), it) != CM_OK) {
                return CM_ERR;
            }
            break;
        case 0xdc:
            return rd_sized(r, MP_ARRAY, 2, it);
        case 0xdd:
            return rd_sized(r, MP_ARRAY, 4, it);
        case 0xde:
            return rd_sized(r, MP_MAP, 2, it);
        case 0xdf:
            return rd_sized(r, MP_MAP, 4, it);
        case 0xc4:
        case 0xc5:
        case 0xc6:
            return cm_ser_fail(r->err, r->errsz, "msgpack bin value at byte %zu has no JSON form",
                               r->pos - 1);
        case 0xc7:
        case 0xc8:
        case 0xc9:
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            return cm_ser_fail(r->err, r->errsz, "msgpack ext value at byte %zu has no JSON form",
                               r->pos - 1);
        default:
            return cm_ser_fail(r->err, r->errsz, "invalid msgpack: byte 0x%02x at %zu", c,
                               r->pos - 1);
        }
    }
    /* A string: its bytes follow. */
    if (r->len - r->pos < it->u) {
        return truncated(r);
    }
    it->s = (const char *)r->p + r->pos;
    r->pos += it->u;
    if (!cm_ser_utf8_valid(it->s, it->u)) {
        return cm_ser_fail(r->err, r->errsz, "invalid msgpack: str at byte %zu is not UTF-8",
                           r->pos - it->u);
    }
    return CM_OK;
}

/* Appends a scalar's JSON text (out may be NULL: skip). */
static void emit_scalar(const struct mp_item *it, struct cm_buf *out)
{
    if (out == NULL) {
        return;
    }
    switch (it->kind) {
    case MP_NIL:
        cm_buf_append_str(out, "null");
        break;
    case MP_BOOL:
        cm_buf_append_str(out, it->u ? "true" : "false");
        break;
    case MP_UINT:
        cm_buf_printf(out, "%" PRIu64, it->u);
        break;
    case MP_INT:
        cm_buf_printf(out, "%" PRId64, it->i);
        break;
    case MP_FLOAT:
        cm_ser_json_double(out, it->d);
        break;
    case MP_STR:
        cm_ser_json_string(out, it->s, it->u, CM_SER_STYLE_COMPACT);
        break;
    default:
        CM_NOT_REACHED();
    }
}

static int rd_value(struct mp_rd *r, struct cm_buf *out, int depth);

/* A map key as JSON wants it: a string. Non-string scalars become strings as in Python's
 * json.dumps (1 -> "1", None -> "null", True -> "true", 1.5 -> "1.5"). */
static int rd_key(struct mp_rd *r, struct cm_buf *out)
{
    struct mp_item it;
    size_t at = r->pos;
    if (rd_item(r, &it) != CM_OK) {
        return CM_ERR;
    }
    if (it.kind == MP_ARRAY || it.kind == MP_MAP) {
        return cm_ser_fail(r->err, r->errsz, "msgpack map key at byte %zu is not a scalar", at);
    }
    if (out == NULL) {
        return CM_OK;
    }
    if (it.kind == MP_STR) {
        emit_scalar(&it, out);
    } else {
        cm_buf_append(out, "\"", 1);
        emit_scalar(&it, out);
        cm_buf_append(out, "\"", 1);
    }
    return CM_OK;
}

static int rd_value(struct mp_rd *r, struct cm_buf *out, int depth)
{
    struct mp_item it;
    if (rd_item(r, &it) != CM_OK) {
        return CM_ERR;
    }
    if (it.kind != MP_ARRAY && it.kind != MP_MAP) {
        emit_scalar(&it, out);
        return CM_OK;
    }
    if (depth >= MP_MAX_DEPTH) {
        return cm_ser_fail(r->err, r->errsz, "msgpack nested deeper than %d", MP_MAX_DEPTH);
    }
    /* Every element takes at least one byte: refuse absurd counts before looping on them. */
    uint64_t elems = it.kind == MP_MAP ? it.u * 2 : it.u;
    if (elems > r->len - r->pos) {
        return truncated(r);
    }
    if (out != NULL) {
        cm_buf_append(out, it.kind == MP_MAP ? "{" : "[", 1);
    }
    for (uint64_t k = 0; k < it.u; k++) {
        if (k > 0 && out != NULL) {
            cm_buf_append(out, ",", 1);
        }
        if (it.kind == MP_MAP) {
            if (rd_key(r, out) != CM_OK) {
                return CM_ERR;
            }
            if (out != NULL) {
                cm_buf_append(out, ":", 1);
            }
        }
        if (rd_value(r, out, depth + 1) != CM_OK) {
            return CM_ERR;
        }
    }
    if (out != NULL) {
        cm_buf_append(out, it.kind == MP_MAP ? "}" : "]", 1);
    }
    return CM_OK;
}

/* The Redis wrapper: a map whose "value" entry is converted; other entries are checked and
 * skipped. A repeated "value" wins, as in the Python dict msgpack.loads builds. */
static int rd_wrapped(struct mp_rd *r, struct cm_buf *out, struct cm_buf *updated)
{
    struct mp_item it;
    bool found = false;
    size_t start = cm_buf_used(out);
    if (rd_item(r, &it) != CM_OK) {
        return CM_ERR;
    }
    if (it.kind != MP_MAP) {
        return cm_ser_fail(r->err, r->errsz, "stored msgpack is not a map with a \"value\" entry");
    }
    for (uint64_t k = 0; k < it.u; k++) {
        struct mp_item key;
        size_t at = r->pos;
        if (rd_item(r, &key) != CM_OK) {
            return CM_ERR;
        }
        if (key.kind == MP_ARRAY || key.kind == MP_MAP) {
            return cm_ser_fail(r->err, r->errsz, "msgpack map key at byte %zu is not a scalar", at);
        }
        bool is_value = key.kind == MP_STR && key.u == 5 && memcmp(key.s, "value", 5) == 0;
        bool is_updated = updated != NULL && key.kind == MP_STR && key.u == 10 &&
                          memcmp(key.s, "updated_at", 10) == 0;
        if (is_value) {
            out->len = out->pos + start;
        }
        if (rd_value(r, is_value ? out : is_updated ? updated : NULL, 1) != CM_OK) {
            return CM_ERR;
        }
        found = found || is_value;
    }
    if (!found) {
        return cm_ser_fail(r->err, r->errsz, "stored msgpack map has no \"value\" entry");
    }
    return CM_OK;
}

int cm_ser_mp_to_json(const char *p, size_t len, bool wrapped, struct cm_buf *out,
                      struct cm_buf *updated, char *err, size_t errsz)
{
    struct mp_rd r = {(const unsigned char *)p, len, 0, err, errsz};
    int rc = wrapped ? rd_wrapped(&r, out, updated) : rd_value(&r, out, 0);
    if (rc != CM_OK) {
        return CM_ERR;
    }
    if (r.pos != len) {
        return cm_ser_fail(err, errsz, "invalid msgpack: %zu extra bytes after the value",
                           len - r.pos);
    }
    return CM_OK;
}
