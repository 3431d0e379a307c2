/* JSON side of the serializers: parsing with jansson (plus integers beyond int64), and JSON text
 * output in the two styles clients and Cacheme expect, with Python's float repr. */
#include "daemon/ser_internal.h"
#include "daemon/buf.h"
#include "daemon/util.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARKER_PREFIX_LEN 20 /* "\0cm" + 16 hex digits + ":" */

int cm_ser_fail(char *err, size_t errsz, const char *fmt, ...)
{
    if (err != NULL && errsz > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return CM_ERR;
}

static void marker_prefix(uint64_t nonce, char *out)
{
    out[0] = '\0';
    snprintf(out + 1, MARKER_PREFIX_LEN, "cm%016" PRIx64 ":", nonce);
}

/* True when s[0..n) is a JSON integer token (-?(0|[1-9][0-9]*)) that does not fit int64. Leading
 * zeros are left alone so that jansson still rejects them. */
static bool is_big_int_token(const char *s, size_t n)
{
    size_t i = s[0] == '-' ? 1 : 0;
    int64_t v;
    if (i == n || (s[i] == '0' && n - i > 1)) {
        return false;
    }
    for (size_t k = i; k < n; k++) {
        if (s[k] < '0' || s[k] > '9') {
            return false;
        }
    }
    return cm_parse_i64(s, n, &v) != CM_OK;
}

static bool is_number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* Copies body to out, turning every integer token outside int64 (outside strings) into a marker
 * string. Not a parser: jansson validates the result. */
static void rewrite_big_ints(const char *body, size_t len, uint64_t nonce, struct cm_buf *out)
{
    size_t i = 0, copied = 0;
    bool in_str = false;
    while (i < len) {
        char c = body[i];
        if (in_str) {
            i += c == '\\' ? 2 : 1;
            in_str = c != '"';
            continue;
        }
        if (c == '"') {
            in_str = true;
            i++;
            continue;
        }
        if (c != '-' && (c < '0' || c > '9')) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && is_number_char(body[j])) {
            j++;
        }
        if (is_big_int_token(body + i, j - i)) {
            cm_buf_append(out, body + copied, i - copied);
            cm_buf_printf(out, "\"\\u0000cm%016" PRIx64 ":", nonce);
            cm_buf_append(out, body + i, j - i);
            cm_buf_append(out, "\"", 1);
            copied = j;
        }
        i = j;
    }
    cm_buf_append(out, body + copied, len - copied);
}

static json_t *load(const char *body, size_t len, json_error_t *jerr)
{
    return json_loadb(len ? body : "", len, JSON_DECODE_ANY | JSON_ALLOW_NUL, jerr);
}

int cm_ser_doc_parse(struct cm_ser_doc *doc, const char *body, size_t len, char *err, size_t errsz)
{
    json_error_t jerr;
    doc->nonce = 0;
    doc->root = load(body, len, &jerr);
    if (doc->root == NULL && strstr(jerr.text, "too big") != NULL) {
        /* jansson stops at integers beyond long long; Python (and msgpack's uint64) go further. */
        struct cm_buf tmp;
        cm_buf_init(&tmp);
        do {
            doc->nonce = cm_rand64();
        } while (doc->nonce == 0);
        rewrite_big_ints(body, len, doc->nonce, &tmp);
        doc->root = load(cm_buf_start(&tmp), cm_buf_used(&tmp), &jerr);
        cm_buf_deinit(&tmp);
    }
    if (doc->root == NULL) {
        return cm_ser_fail(err, errsz, "invalid JSON: %s (line %d, column %d)", jerr.text,
                           jerr.line, jerr.column);
    }
    return CM_OK;
}

void cm_ser_doc_free(struct cm_ser_doc *doc)
{
    json_decref(doc->root);
    doc->root = NULL;
}

const char *cm_ser_doc_bigint(const struct cm_ser_doc *doc, const json_t *v, size_t *n)
{
    char prefix[MARKER_PREFIX_LEN + 1];
    if (doc->nonce == 0 || !json_is_string(v)) {
        return NULL;
    }
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len <= MARKER_PREFIX_LEN || s[0] != '\0') {
        return NULL;
    }
    marker_prefix(doc->nonce, prefix);
    if (memcmp(s, prefix, MARKER_PREFIX_LEN) != 0) {
        return NULL;
    }
    *n = len - MARKER_PREFIX_LEN;
    return s + MARKER_PREFIX_LEN;
}

/* Decodes one UTF-8 sequence at s[*i]; returns the code point or -1 when invalid. */
static int32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned char c = s[*i];
    int32_t cp;
    size_t need;
    int32_t min;
    if (c < 0x80) {
        (*i)++;
        return c;
    } else if (c >= 0xc2 && c <= 0xdf) {
        cp = c & 0x1f, need = 1, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        cp = c & 0x0f, need = 2, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        cp = c & 0x07, need = 3, min = 0x10000;
    } else {
        return -1;
    }
    if (n - *i <= need) {
        return -1;
    }
    for (size_t k = 1; k <= need; k++) {
        if ((s[*i + k] & 0xc0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (s[*i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return -1;
    }
    *i += need + 1;
    return cp;
}

bool cm_ser_utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
        } else if (utf8_next((const unsigned char *)s, n, &i) < 0) {
            return false;
        }
    }
    return true;
}

void cm_ser_json_string(struct cm_buf *out, const char *s, size_t n, enum cm_ser_style style)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    cm_buf_append(out, "\"", 1);
    while (i < n) {
        unsigned char c = u[i];
        const char *esc = NULL;
        bool ascii_ok =
            c >= 0x20 && c != '"' && c != '\\' && (style == CM_SER_STYLE_COMPACT || c < 0x7f);
        if (ascii_ok) {
            i++;
            continue;
        }
        cm_buf_append(out, s + run, i - run);
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            break;
        }
        if (esc != NULL) {
            cm_buf_append_str(out, esc);
            i++;
        } else if (c < 0x80) {
            cm_buf_printf(out, "\\u%04x", c);
            i++;
        } else {
            /* Python style only (compact keeps non-ASCII as it is): \uXXXX, astral as a pair. */
            int32_t cp = utf8_next(u, n, &i);
            cm_assert(cp >= 0);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                cm_buf_printf(out, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
            } else {
                cm_buf_printf(out, "\\u%04x", (unsigned)cp);
            }
        }
        run = i;
    }
    cm_buf_append(out, s + run, n - run);
    cm_buf_append(out, "\"", 1);
}

/* Splits "%.*e" output ("d.ddde+XX") into its digits and exponent; returns the digit count. */
static int split_e(const char *txt, char *digits, int *exp10)
{
    int nd = 0;
    for (; *txt != 'e'; txt++) {
        if (*txt != '.') {
            digits[nd++] = *txt;
        }
    }
    *exp10 = atoi(txt + 1);
    return nd;
}

static bool reads_back(const char *digits, int nd, int exp10, double d)
{
    char txt[40];
    snprintf(txt, sizeof(txt), "%c.%.*se%d", digits[0], nd - 1, digits + 1, exp10);
    return strtod(txt, NULL) == d;
}

/* The next decimal up with as many digits: 1.99e5 -> 2.00e5, 9.99e5 -> 1.00e6. */
static void digits_up(char *digits, int nd, int *exp10)
{
    int i = nd - 1;
    while (i >= 0 && digits[i] == '9') {
        digits[i--] = '0';
    }
    if (i >= 0) {
        digits[i]++;
    } else {
        digits[0] = '1';
        (*exp10)++;
    }
}

/* Shortest digits that read back as d (d > 0 or 0), choosing the nearest among equally short
 * ones: what repr() gets from dtoa mode 0. Distinct decimals of at most 15 digits are distinct
 * doubles (DBL_DIG), so if a shorter form reads back, the 15-digit rounding is it padded with
 * zeros: start there. Subnormals have fewer digits of precision and start from 1 digit. */
static int shortest_digits(double d, char *digits, int *exp10)
{
    int e2;
    bool pow2 = frexp(d, &e2) == 0.5;
    for (int prec = d < DBL_MIN ? 0 : 14;; prec++) {
        char txt[40];
        snprintf(txt, sizeof(txt), "%.*e", prec, d);
        int nd = split_e(txt, digits, exp10);
        if (prec == 16 || reads_back(digits, nd, *exp10, d)) {
            return nd; /* 17 digits always read back */
        }
        if (pow2) {
            /* Below a power of two doubles are twice as dense, so the nearest decimal can fall
             * outside d's interval while the next one up is inside: repr(2.0**-1017) is
             * '7.120236347223045e-307', not ...044. */
            digits_up(digits, nd, exp10);
            if (reads_back(digits, nd, *exp10, d)) {
                return nd;
            }
        }
    }
}

void cm_ser_json_double(struct cm_buf *out, double d)
{
    char digits[24];
    int exp10, nd;
    if (isnan(d)) {
        cm_buf_append_str(out, "NaN");
        return;
    }
    if (isinf(d)) {
        cm_buf_append_str(out, d < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (signbit(d)) {
        cm_buf_append(out, "-", 1);
        d = -d;
    }
    nd = shortest_digits(d, digits, &exp10);
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }
    int decpt = exp10 + 1; /* value = 0.DIGITS * 10^decpt */
    if (decpt <= -4 || decpt > 16) {
        /* Python's repr switches to exponent form here: 1e-05, 1.5e+16. */
        cm_buf_append(out, digits, 1);
        if (nd > 1) {
            cm_buf_append(out, ".", 1);
            cm_buf_append(out, digits + 1, (size_t)nd - 1);
        }
        cm_buf_printf(out, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (decpt <= 0) {
        cm_buf_append(out, "0.", 2);
        for (int k = 0; k < -decpt; k++) {
            cm_buf_append(out, "0", 1);
        }
        cm_buf_append(out, digits, (size_t)nd);
    } else if (decpt >= nd) {
        cm_buf_append(out, digits, (size_t)nd);
        for (int k = nd; k < decpt; k++) {
            cm_buf_append(out, "0", 1);
        }
        cm_buf_append(out, ".0", 2);
    } else {
        cm_buf_append(out, digits, (size_t)decpt);
        cm_buf_append(out, ".", 1);
        cm_buf_append(out, digits + decpt, (size_t)(nd - decpt));
    }
}

void cm_ser_json_emit(const struct cm_ser_doc *doc, const json_t *v, enum cm_ser_style style,
                      struct cm_buf *out)
{
    const char *item_sep = style == CM_SER_STYLE_PYTHON ? ", " : ",";
    const char *key_sep = style == CM_SER_STYLE_PYTHON ? ": " : ":";
    const char *big;
    size_t n;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *item;
        bool first = true;
        cm_buf_append(out, "{", 1);
        json_object_foreach((json_t *)v, key, item)
        {
            if (!first) {
                cm_buf_append_str(out, item_sep);
            }
            first = false;
            cm_ser_json_string(out, key, strlen(key), style);
            cm_buf_append_str(out, key_sep);
            cm_ser_json_emit(doc, item, style, out);
        }
        cm_buf_append(out, "}", 1);
        break;
    }
    case JSON_ARRAY:
        cm_buf_append(out, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i > 0) {
                cm_buf_append_str(out, item_sep);
            }
            cm_ser_json_emit(doc, json_array_get(v, i), style, out);
        }
        cm_buf_append(out, "]", 1);
        break;
    case JSON_STRING:
        big = cm_ser_doc_bigint(doc, v, &n);
        if (big != NULL) {
            cm_buf_append(out, big, n);
        } else {
            cm_ser_json_string(out, json_string_value(v), json_string_length(v), style);
        }
        break;
    case JSON_INTEGER:
        cm_buf_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        cm_ser_json_double(out, json_real_value(v));
        break;
    case JSON_TRUE:
        cm_buf_append_str(out, "true");
        break;
    case JSON_FALSE:
        cm_buf_append_str(out, "false");
        break;
    case JSON_NULL:
        cm_buf_append_str(out, "null");
        break;
    }
}
