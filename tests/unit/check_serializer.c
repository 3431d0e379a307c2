/* Serializers (SPEC §5): exact bytes against msgpack-python/json/zlib output, round trips,
 * hostile stored bytes, and the interop run against Python (tests/interop/ser_interop.py). */
#include "daemon/buf.h"
#include "daemon/ser_internal.h"
#include "daemon/serializer.h"
#include "daemon/util.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const enum cm_ser json_sers[] = {CM_SER_JSON, CM_SER_MSGPACK, CM_SER_COMPRESSED_JSON,
                                        CM_SER_COMPRESSED_MSGPACK};
static const char *const ser_names[] = {"raw", "json", "msgpack", "compressed_json",
                                        "compressed_msgpack"};

/* 2026-11-25T01:22:56.123456+00:00 */
#define TS_US INT64_C(1795569776123456)

static char err[256];

/* Encodes (wrapped or bare) into a fresh buffer; the caller deinits it. */
static int enc(enum cm_ser ser, const char *doc, size_t len, bool wrapped, struct cm_buf *out)
{
    cm_buf_init(out);
    err[0] = '\0';
    return wrapped ? cm_ser_encode_wrapped(ser, doc, len, TS_US, out, err, sizeof(err))
                   : cm_ser_encode(ser, doc, len, out, err, sizeof(err));
}

static int dec(enum cm_ser ser, const char *p, size_t len, bool wrapped, struct cm_buf *out)
{
    cm_buf_init(out);
    err[0] = '\0';
    return wrapped ? cm_ser_decode_wrapped(ser, p, len, out, err, sizeof(err))
                   : cm_ser_decode(ser, p, len, out, err, sizeof(err));
}

static void assert_bytes(const struct cm_buf *b, const char *want, size_t wantlen, const char *what)
{
    size_t got = cm_buf_used(b), at = 0;
    const char *p = cm_buf_start(b);
    while (at < got && at < wantlen && p[at] == want[at]) {
        at++;
    }
    if (at == got && at == wantlen) {
        return;
    }
    /* Show 60 bytes from a little before the first difference. */
    size_t from = at > 20 ? at - 20 : 0;
    int gl = (int)(got - from < 60 ? got - from : 60);
    int wl = (int)(wantlen - from < 60 ? wantlen - from : 60);
    ck_abort_msg("%s: %zu bytes, want %zu; first difference at %zu: got '%.*s', want '%.*s'", what,
                 got, wantlen, at, gl, p + from, wl, want + from);
}

/* msgpack-python 1.0.3: msgpack.packb(json.loads(doc)). */
static const struct {
    const char *doc;
    const char *bytes;
    size_t len;
} mp_cases[] = {
    {"{\"a\": [1, 2.5, null, true, false]}",
     "\x81\xa1\x61\x95\x01\xcb\x40\x04\x00\x00\x00\x00\x00\x00\xc0\xc3\xc2", 17},
    {"\"hi\"", "\xa2\x68\x69", 3},
    {"[-1, -33, 128, 65536, -2147483649, 9223372036854775807, 18446744073709551615]",
     "\x97\xff\xd0\xdf\xcc\x80\xce\x00\x01\x00\x00\xd3\xff\xff\xff\xff\x7f\xff\xff\xff\xcf\x7f"
     "\xff\xff\xff\xff\xff\xff\xff\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
     38},
    {"{\"s\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
     "\x81\xa1\x73\xd9\x28xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 45},
    {"{\"k\": 1e16}", "\x81\xa1\x6b\xcb\x43\x41\xc3\x79\x37\xe0\x80\x00", 12},
    {"-0", "\x00", 1},
    {"-0.0", "\xcb\x80\x00\x00\x00\x00\x00\x00\x00", 9},
};

/* SPEC §12: the Redis wrapper's updated_at is read back as the entry's write time, for every
 * serializer that wraps; Python's isoformat without microseconds and a non-UTC offset too. */
START_TEST(test_wrapped_write_time)
{
    static const enum cm_ser sers[] = { CM_SER_JSON, CM_SER_MSGPACK, CM_SER_COMPRESSED_JSON,
                                        CM_SER_COMPRESSED_MSGPACK };
    int64_t at_us = 1764033776123456LL;   /* 2025-11-25T01:22:56.123456+00:00 */
    for (size_t i = 0; i < sizeof(sers) / sizeof(sers[0]); i++) {
        struct cm_buf st, out;
        char why[160];
        int64_t w = -1;
        cm_buf_init(&st);
        cm_buf_init(&out);
        ck_assert_int_eq(cm_ser_encode_wrapped(sers[i], "{\"a\":1}", 7, at_us, &st, why,
                                               sizeof(why)), CM_OK);
        ck_assert_int_eq(cm_ser_decode_wrapped_at(sers[i], cm_buf_start(&st), cm_buf_used(&st),
                                                  &out, &w, why, sizeof(why)), CM_OK);
        ck_assert_int_eq(w, at_us / 1000);
        cm_buf_deinit(&st);
        cm_buf_deinit(&out);
    }
    ck_assert_int_eq(cm_parse_iso8601_ms("2025-11-25T01:22:56+00:00", 25), 1764033776000LL);
    ck_assert_int_eq(cm_parse_iso8601_ms("2025-11-25 01:22:56.5", 21), 1764033776500LL);
    ck_assert_int_eq(cm_parse_iso8601_ms("2025-11-25T01:22:56+02:00", 25), 0);
    ck_assert_int_eq(cm_parse_iso8601_ms("garbage", 7), 0);
}
END_TEST

START_TEST(test_msgpack_exact_bytes)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(mp_cases); i++) {
        struct cm_buf b;
        ck_assert_int_eq(enc(CM_SER_MSGPACK, mp_cases[i].doc, strlen(mp_cases[i].doc), false, &b),
                         CM_OK);
        assert_bytes(&b, mp_cases[i].bytes, mp_cases[i].len, mp_cases[i].doc);
        cm_buf_deinit(&b);
    }
}
END_TEST

START_TEST(test_wrapped_exact_bytes)
{
    /* msgpack.dumps({"value": {"a": 1}, "updated_at": dt}, default=object_encoder) */
    static const char want_mp[] = "\x82\xa5value\x81\xa1\x61\x01\xaaupdated_at\x82\xa9__class__\xb1"
                                  "datetime.datetime\xa4"
                                  "data\xd9\x20"
                                  "2026-11-25T01:22:56.123456+00:00";
    /* json.dumps({"value": ..., "updated_at": dt}, default=object_encoder) */
    static const char want_json[] =
        "{\"value\": {\"a\": \"\\u00e9\\ud83d\\ude00\", \"b\": [1.0, 0.1]}, \"updated_at\": "
        "{\"__class__\": \"datetime.datetime\", \"data\": \"2026-11-25T01:22:56.123456+00:00\"}}";
    const char *doc = "{\"a\":\"\xc3\xa9\xf0\x9f\x98\x80\",\"b\":[1.0,1e-1]}";
    struct cm_buf b;
    ck_assert_int_eq(enc(CM_SER_MSGPACK, "{\"a\":1}", 7, true, &b), CM_OK);
    assert_bytes(&b, want_mp, sizeof(want_mp) - 1, "msgpack wrapped");
    cm_buf_deinit(&b);
    ck_assert_int_eq(enc(CM_SER_JSON, doc, strlen(doc), true, &b), CM_OK);
    assert_bytes(&b, want_json, sizeof(want_json) - 1, "json wrapped");
    cm_buf_deinit(&b);
    /* isoformat() has no fraction when microseconds are 0. */
    cm_buf_init(&b);
    ck_assert_int_eq(
        cm_ser_encode_wrapped(CM_SER_JSON, "1", 1, TS_US - 123456, &b, err, sizeof(err)), CM_OK);
    ck_assert_ptr_nonnull(strstr(cm_buf_start(&b), "\"data\": \"2026-11-25T01:22:56+00:00\"}}"));
    cm_buf_deinit(&b);
}
END_TEST

START_TEST(test_json_bare_is_loader_bytes)
{
    const char *doc = "  {\"b\" : 1.50, \"a\":\"\\u00e9\"}\n";
    struct cm_buf b, d;
    ck_assert_int_eq(enc(CM_SER_JSON, doc, strlen(doc), false, &b), CM_OK);
    assert_bytes(&b, doc, strlen(doc), "json bare");
    ck_assert_int_eq(dec(CM_SER_JSON, cm_buf_start(&b), cm_buf_used(&b), false, &d), CM_OK);
    assert_bytes(&d, doc, strlen(doc), "json bare decode");
    cm_buf_deinit(&b);
    cm_buf_deinit(&d);
}
END_TEST

START_TEST(test_raw_is_identity)
{
    const char body[] = "not json \x00\xff";
    struct cm_buf b, d;
    ck_assert_int_eq(cm_ser_validate(CM_SER_RAW, body, sizeof(body), err, sizeof(err)), CM_OK);
    for (int w = 0; w < 2; w++) {
        ck_assert_int_eq(enc(CM_SER_RAW, body, sizeof(body), w, &b), CM_OK);
        assert_bytes(&b, body, sizeof(body), "raw encode");
        ck_assert_int_eq(dec(CM_SER_RAW, cm_buf_start(&b), cm_buf_used(&b), w, &d), CM_OK);
        assert_bytes(&d, body, sizeof(body), "raw decode");
        cm_buf_deinit(&b);
        cm_buf_deinit(&d);
    }
}
END_TEST

/* Document -> what a client gets back (compact JSON, Python's float repr). */
static const struct {
    const char *doc;
    const char *want;
} rt_cases[] = {
    {"0", "0"},
    {"-0", "0"},
    {"-0.0", "-0.0"},
    {"1.0", "1.0"},
    {"1E2", "100.0"},
    {"0.1", "0.1"},
    {"1e308", "1e+308"},
    {"5e-324", "5e-324"},
    {"1e16", "1e+16"},
    {"1e15", "1000000000000000.0"},
    {"0.00001", "1e-05"},
    {"0.0001", "0.0001"},
    {"9223372036854775807", "9223372036854775807"},
    {"-9223372036854775808", "-9223372036854775808"},
    {"18446744073709551615", "18446744073709551615"},
    {"9223372036854775808", "9223372036854775808"},
    {"9007199254740993", "9007199254740993"},
    {"[9007199254740993, 18446744073709551615, {\"k\": 9223372036854775808}]",
     "[9007199254740993,18446744073709551615,{\"k\":9223372036854775808}]"},
    {"\"\\u00e9\\ud83d\\ude00 \\\" \\\\ \\/ \\n\\r\\t\\b\\f \\u0001 \\u007f \\u0000\"",
     "\"\xc3\xa9\xf0\x9f\x98\x80 \\\" \\\\ / \\n\\r\\t\\b\\f \\u0001 \x7f \\u0000\""},
    {"\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""},
    {"[]", "[]"},
    {"{}", "{}"},
    {" [ [ ] , { } , \"\" ] ", "[[],{},\"\"]"},
    {"{\"b\": 1, \"a\": 2, \"c\": {\"z\": 1, \"y\": 2}}",
     "{\"b\":1,\"a\":2,\"c\":{\"z\":1,\"y\":2}}"},
    {"{\"a\": 1, \"b\": 2, \"a\": 3}", "{\"a\":3,\"b\":2}"},
    {"true", "true"},
    {"null", "null"},
};

static void check_round_trip(const char *doc, size_t len, const char *want)
{
    for (size_t s = 0; s < CM_ARRAY_LEN(json_sers); s++) {
        enum cm_ser ser = json_sers[s];
        for (int w = 0; w < 2; w++) {
            struct cm_buf b, d;
            char what[96];
            if (!w && (ser == CM_SER_JSON || ser == CM_SER_COMPRESSED_JSON)) {
                continue; /* bare json is the loader's bytes: test_json_bare_is_loader_bytes */
            }
            snprintf(what, sizeof(what), "%s%s of %.40s", ser_names[ser], w ? " wrapped" : "", doc);
            ck_assert_msg(enc(ser, doc, len, w, &b) == CM_OK, "%s: %s", what, err);
            ck_assert_msg(dec(ser, cm_buf_start(&b), cm_buf_used(&b), w, &d) == CM_OK, "%s: %s",
                          what, err);
            assert_bytes(&d, want, strlen(want), what);
            cm_buf_deinit(&b);
            cm_buf_deinit(&d);
        }
    }
}

START_TEST(test_round_trip)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(rt_cases); i++) {
        check_round_trip(rt_cases[i].doc, strlen(rt_cases[i].doc), rt_cases[i].want);
    }
}
END_TEST

START_TEST(test_round_trip_deep)
{
    /* Nesting 100: deeper than libmsgpackc's unpacker allows (32). */
    struct cm_buf doc, want;
    cm_buf_init(&doc);
    cm_buf_init(&want);
    for (int i = 0; i < 100; i++) {
        cm_buf_append_str(&doc, i % 2 ? "[ " : "{\"k\": ");
        cm_buf_append_str(&want, i % 2 ? "[" : "{\"k\":");
    }
    cm_buf_append_str(&doc, "1");
    cm_buf_append_str(&want, "1");
    for (int i = 99; i >= 0; i--) {
        cm_buf_append_str(&doc, i % 2 ? "]" : "}");
        cm_buf_append_str(&want, i % 2 ? "]" : "}");
    }
    cm_buf_append(&want, "", 1);
    check_round_trip(cm_buf_start(&doc), cm_buf_used(&doc), cm_buf_start(&want));
    cm_buf_deinit(&doc);
    cm_buf_deinit(&want);
}
END_TEST

START_TEST(test_float_repr)
{
    static const struct {
        double d;
        const char *want;
    } cases[] = {
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {1.0, "1.0"},
        {0.1, "0.1"},
        {1.0 / 3, "0.3333333333333333"},
        {2.0 / 3, "0.6666666666666666"},
        {1e22, "1e+22"},
        {1e16, "1e+16"},
        {123456789012345678.0, "1.2345678901234568e+17"},
        {1e-5, "1e-05"},
        {1.5e-7, "1.5e-07"},
        {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {100.0, "100.0"},
        {123.456, "123.456"},
        {1.0 / 0.0, "Infinity"},
        {-1.0 / 0.0, "-Infinity"},
        {0.0 / 0.0, "NaN"},
        {9007199254740993.0, "9007199254740992.0"},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        struct cm_buf b;
        cm_buf_init(&b);
        cm_ser_json_double(&b, cases[i].d);
        assert_bytes(&b, cases[i].want, strlen(cases[i].want), cases[i].want);
        cm_buf_deinit(&b);
    }
}
END_TEST

START_TEST(test_compressed_header)
{
    /* zlib.compress(b'{"a": 1}', 3) */
    static const char want[] = "\x78\x5e\xab\x56\x4a\x54\xb2\x52\x30\xac\x05\x00\x09\xe5\x02\x29";
    struct cm_buf b;
    ck_assert_int_eq(enc(CM_SER_COMPRESSED_JSON, "{\"a\": 1}", 8, false, &b), CM_OK);
    assert_bytes(&b, want, sizeof(want) - 1, "compressed_json bare");
    cm_buf_deinit(&b);
    for (int w = 0; w < 2; w++) {
        ck_assert_int_eq(enc(CM_SER_COMPRESSED_MSGPACK, "[1,2,3]", 7, w, &b), CM_OK);
        ck_assert_int_eq((unsigned char)cm_buf_start(&b)[0], 0x78);
        ck_assert_int_eq((unsigned char)cm_buf_start(&b)[1], 0x5e);
        cm_buf_deinit(&b);
    }
}
END_TEST

START_TEST(test_invalid_json_rejected)
{
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "[1,]",
        "nan",
        "NaN",
        "Infinity",
        "{\"a\" 1}",
        "\"\\ud800\"",
        "01",
        "1 2",
        "\xff",
        "\"\xc3\"",
        "{1:2}",
        "{12345678901234567890:1}",
        "[00000000000000000000001]",
        "123456789012345678901234567890 1",
        "[123456789012345678901234567890",
        "'a'",
        "1e400",
        "{\"a\\u0000\": 1}",
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
        for (size_t s = 0; s < CM_ARRAY_LEN(json_sers); s++) {
            struct cm_buf b;
            ck_assert_msg(cm_ser_validate(json_sers[s], bad[i], strlen(bad[i]), err, sizeof(err)) ==
                              CM_ERR,
                          "accepted '%s'", bad[i]);
            ck_assert_msg(strncmp(err, "invalid JSON: ", 14) == 0, "'%s': %s", bad[i], err);
            cm_buf_init(&b);
            cm_buf_append_str(&b, "keep");
            ck_assert_int_eq(cm_ser_encode_wrapped(json_sers[s], bad[i], strlen(bad[i]), TS_US, &b,
                                                   err, sizeof(err)),
                             CM_ERR);
            assert_bytes(&b, "keep", 4, "output untouched on error");
            cm_buf_deinit(&b);
        }
    }
    ck_assert_int_eq(cm_ser_validate(CM_SER_JSON, "{", 1, err, sizeof(err)), CM_ERR);
    ck_assert_str_eq(err,
                     "invalid JSON: string or '}' expected near end of file (line 1, column 1)");
}
END_TEST

START_TEST(test_msgpack_integer_range)
{
    static const char *const big[] = {"18446744073709551616", "-9223372036854775809",
                                      "[1, {\"a\": 123456789012345678901234567890}]"};
    for (size_t i = 0; i < CM_ARRAY_LEN(big); i++) {
        struct cm_buf b;
        ck_assert_int_eq(cm_ser_validate(CM_SER_JSON, big[i], strlen(big[i]), err, sizeof(err)),
                         CM_OK);
        ck_assert_int_eq(cm_ser_validate(CM_SER_MSGPACK, big[i], strlen(big[i]), err, sizeof(err)),
                         CM_ERR);
        ck_assert_msg(strncmp(err, "integer out of range for msgpack", 32) == 0, "%s", err);
        ck_assert_int_eq(enc(CM_SER_COMPRESSED_MSGPACK, big[i], strlen(big[i]), true, &b), CM_ERR);
        ck_assert_int_eq(cm_buf_used(&b), 0);
        cm_buf_deinit(&b);
    }
    /* json keeps them: Python's ints are unbounded. */
    for (size_t i = 0; i < CM_ARRAY_LEN(big); i++) {
        struct cm_buf b, d;
        ck_assert_int_eq(enc(CM_SER_COMPRESSED_JSON, big[i], strlen(big[i]), true, &b), CM_OK);
        ck_assert_int_eq(dec(CM_SER_COMPRESSED_JSON, cm_buf_start(&b), cm_buf_used(&b), true, &d),
                         CM_OK);
        char want[96];
        size_t k = 0;
        for (const char *c = big[i]; *c != '\0'; c++) {
            if (*c != ' ') {
                want[k++] = *c; /* these documents have no spaces inside strings */
            }
        }
        assert_bytes(&d, want, k, big[i]);
        cm_buf_deinit(&b);
        cm_buf_deinit(&d);
    }
}
END_TEST

/* Every prefix of a valid encoding, and a few bit flips, must fail cleanly or decode. */
static void mangle(enum cm_ser ser, bool wrapped, const char *doc)
{
    struct cm_buf b, d;
    ck_assert_int_eq(enc(ser, doc, strlen(doc), wrapped, &b), CM_OK);
    size_t n = cm_buf_used(&b);
    char *copy = malloc(n);
    memcpy(copy, cm_buf_start(&b), n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(dec(ser, copy, i, wrapped, &d) == CM_ERR, "%s prefix %zu accepted",
                      ser_names[ser], i);
        ck_assert_msg(err[0] != '\0', "no reason given");
        ck_assert_int_eq(cm_buf_used(&d), 0);
        cm_buf_deinit(&d);
        for (int bit = 0; bit < 8; bit++) {
            copy[i] ^= (char)(1 << bit);
            (void)dec(ser, copy, n, wrapped, &d);
            cm_buf_deinit(&d);
            copy[i] ^= (char)(1 << bit);
        }
    }
    free(copy);
    cm_buf_deinit(&b);
}

START_TEST(test_garbage_rejected)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } bad[] = {
        {"\xc4\x01x", 3, "msgpack bin value at byte 0 has no JSON form"},
        {"\xd4\x01x", 3, "msgpack ext value at byte 0 has no JSON form"},
        {"\xc1", 1, "invalid msgpack: byte 0xc1 at 0"},
        {"\x01\x02", 2, "invalid msgpack: 1 extra bytes after the value"},
        {"\xdd\xff\xff\xff\xff\x01", 6, "invalid msgpack: truncated at byte 5"},
        {"\xa2\xc3\x28", 3, "invalid msgpack: str at byte 1 is not UTF-8"},
        {"\xa3\xed\xa0\x80", 4, "invalid msgpack: str at byte 1 is not UTF-8"},
        {"\x81\x91\x01\x01", 4, "msgpack map key at byte 1 is not a scalar"},
        {"", 0, "invalid msgpack: truncated at byte 0"},
    };
    struct cm_buf d;
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(dec(CM_SER_MSGPACK, bad[i].bytes, bad[i].len, false, &d), CM_ERR);
        ck_assert_str_eq(err, bad[i].why);
        cm_buf_deinit(&d);
    }
    ck_assert_int_eq(dec(CM_SER_MSGPACK, "\x81\xa1v\x01", 4, true, &d), CM_ERR);
    ck_assert_str_eq(err, "stored msgpack map has no \"value\" entry");
    cm_buf_deinit(&d);
    ck_assert_int_eq(dec(CM_SER_JSON, "{\"valu\": 1}", 11, true, &d), CM_ERR);
    ck_assert_str_eq(err, "stored JSON is not an object with a \"value\" entry");
    cm_buf_deinit(&d);
    /* A repeated "value" wins, as in the dict msgpack.loads builds (and jansson for json). */
    ck_assert_int_eq(dec(CM_SER_MSGPACK, "\x82\xa5value\x01\xa5value\x92\x02\x03", 17, true, &d),
                     CM_OK);
    assert_bytes(&d, "[2,3]", 5, "last value wins");
    cm_buf_deinit(&d);
    ck_assert_int_eq(dec(CM_SER_JSON, "{\"value\": 1, \"value\": [2, 3]}", 29, true, &d), CM_OK);
    assert_bytes(&d, "[2,3]", 5, "last value wins (json)");
    cm_buf_deinit(&d);
    /* Non-string keys become strings, as json.dumps does with Python's dict keys. */
    ck_assert_int_eq(
        dec(CM_SER_MSGPACK, "\x84\x01\x02\xc0\x03\xc3\x04\xca\x3f\xc0\x00\x00\x05", 13, false, &d),
        CM_OK);
    const char *want_keys = "{\"1\":2,\"null\":3,\"true\":4,\"1.5\":5}";
    assert_bytes(&d, want_keys, strlen(want_keys), "non-string keys");
    cm_buf_deinit(&d);
    /* Nesting beyond the reader's limit. */
    char *deep = malloc(3000);
    memset(deep, 0x91, 3000);
    deep[2999] = 0x01;
    ck_assert_int_eq(dec(CM_SER_MSGPACK, deep, 3000, false, &d), CM_ERR);
    ck_assert_str_eq(err, "msgpack nested deeper than 2048");
    cm_buf_deinit(&d);
    free(deep);
    /* zlib */
    ck_assert_int_eq(dec(CM_SER_COMPRESSED_JSON, "\x78\x5e\x01\x02", 4, false, &d), CM_ERR);
    ck_assert_msg(strncmp(err, "invalid zlib stream: ", 21) == 0, "%s", err);
    cm_buf_deinit(&d);
    ck_assert_int_eq(dec(CM_SER_COMPRESSED_JSON, "{\"value\": 1}", 12, true, &d), CM_ERR);
    ck_assert_msg(strncmp(err, "invalid zlib stream: ", 21) == 0, "%s", err);
    cm_buf_deinit(&d);
    static const char z[] = "\x78\x5e\xab\x56\x4a\x54\xb2\x52\x30\xac\x05\x00\x09\xe5\x02\x29!";
    ck_assert_int_eq(dec(CM_SER_COMPRESSED_JSON, z, sizeof(z) - 1, false, &d), CM_ERR);
    ck_assert_str_eq(err, "invalid zlib stream: 1 extra bytes after its end");
    cm_buf_deinit(&d);
    ck_assert_int_eq(dec(CM_SER_COMPRESSED_JSON, z, sizeof(z) - 2, false, &d), CM_OK);
    assert_bytes(&d, "{\"a\": 1}", 8, "inflated");
    cm_buf_deinit(&d);

    const char *doc = "{\"a\": [1, -200, 70000, 2.5, \"x\\u00e9\", {\"b\": null}], \"c\": true}";
    for (size_t s = 0; s < CM_ARRAY_LEN(json_sers); s++) {
        mangle(json_sers[s], true, doc);
        if (json_sers[s] != CM_SER_JSON) {
            mangle(json_sers[s], false, doc);
        }
    }
}
END_TEST

START_TEST(test_inflate_cap)
{
    /* 1 MiB of zeros; the real cap (512 MB) works the same way with a bigger number. */
    size_t n = 1 << 20;
    char *zeros = calloc(1, n);
    struct cm_buf b, d;
    cm_buf_init(&b);
    uLongf zlen = compressBound(n);
    compress2((Bytef *)cm_buf_reserve(&b, zlen), &zlen, (Bytef *)zeros, n, 3);
    cm_buf_commit(&b, zlen);
    cm_buf_init(&d);
    ck_assert_int_eq(cm_ser_inflate(cm_buf_start(&b), cm_buf_used(&b), n, &d, err, sizeof(err)),
                     CM_OK);
    ck_assert_int_eq(cm_buf_used(&d), n);
    cm_buf_reset(&d);
    ck_assert_int_eq(cm_ser_inflate(cm_buf_start(&b), cm_buf_used(&b), n - 1, &d, err, sizeof(err)),
                     CM_ERR);
    ck_assert_str_eq(err, "zlib output exceeds 1048575 bytes");
    ck_assert_int_eq(cm_buf_used(&d), 0);
    cm_buf_deinit(&d);
    cm_buf_deinit(&b);
    free(zeros);
}
END_TEST

/* --- interop with Python (tests/interop/ser_interop.py) --- */

static char *read_file(const char *dir, int n, const char *suffix, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%d.%s", dir, n, suffix);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)sz + 1);
    ck_assert_int_eq(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *len = (size_t)sz;
    return p;
}

static void write_file(const char *dir, int n, const char *suffix, const struct cm_buf *b)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%d.%s", dir, n, suffix);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(cm_buf_start(b), 1, cm_buf_used(b), f), cm_buf_used(b));
    fclose(f);
}

static void run_python(const char *mode, const char *dir)
{
    char cmd[1024];
    ck_assert_msg(access("tests/interop/ser_interop.py", R_OK) == 0,
                  "run from the repository root: tests/interop/ser_interop.py not found");
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 tests/interop/ser_interop.py %s %s", mode, dir);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "'%s' failed (status %d)", cmd, rc);
}

/* One case, one serializer: Cacheme's bytes decode to the expected text, and ours are the same
 * bytes. Writes our encodings (at the current time) for the Python check. */
static void interop_case(const char *dir, int n, enum cm_ser ser, int64_t ts_us, const char *src,
                         size_t srclen, const char *expect, size_t explen, const char *pyjson,
                         size_t pylen)
{
    char suffix[64], what[96];
    size_t clen;
    struct cm_buf b, d;
    for (int w = 0; w < 2; w++) {
        snprintf(suffix, sizeof(suffix), "%s.%s", ser_names[ser], w ? "wrapped" : "bare");
        snprintf(what, sizeof(what), "case %d %s", n, suffix);
        char *cacheme = read_file(dir, n, suffix, &clen);
        if (cacheme == NULL) {
            /* msgpack-python refused the document: so must we. */
            ck_assert_msg(ser == CM_SER_MSGPACK || ser == CM_SER_COMPRESSED_MSGPACK, "%s", what);
            ck_assert_int_eq(enc(ser, src, srclen, w, &b), CM_ERR);
            ck_assert_msg(strstr(err, "integer out of range for msgpack") != NULL, "%s", err);
            cm_buf_deinit(&b);
            continue;
        }
        bool bare_json = !w && (ser == CM_SER_JSON || ser == CM_SER_COMPRESSED_JSON);
        ck_assert_msg(dec(ser, cacheme, clen, w, &d) == CM_OK, "%s: %s", what, err);
        if (bare_json) {
            assert_bytes(&d, pyjson, pylen, what); /* stored text as it is */
        } else {
            assert_bytes(&d, expect, explen, what);
        }
        cm_buf_deinit(&d);
        cm_buf_init(&b);
        ck_assert_msg((w ? cm_ser_encode_wrapped(ser, src, srclen, ts_us, &b, err, sizeof(err))
                         : cm_ser_encode(ser, src, srclen, &b, err, sizeof(err))) == CM_OK,
                      "%s: %s", what, err);
        if (!bare_json) {
            assert_bytes(&b, cacheme, clen, what); /* byte-identical with Cacheme */
        }
        cm_buf_deinit(&b);
        free(cacheme);

        cm_buf_init(&b);
        ck_assert_int_eq(
            w ? cm_ser_encode_wrapped(ser, src, srclen, cm_wall_us(), &b, err, sizeof(err))
              : cm_ser_encode(ser, src, srclen, &b, err, sizeof(err)),
            CM_OK);
        snprintf(suffix, sizeof(suffix), "%s.c_%s", ser_names[ser], w ? "wrapped" : "bare");
        write_file(dir, n, suffix, &b);
        cm_buf_deinit(&b);
    }
}

START_TEST(test_interop_python)
{
    char dir[] = "/tmp/cm_ser_interopXXXXXX";
    char cmd[600];
    size_t srclen, explen, pylen;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    run_python("gen", dir);
    snprintf(cmd, sizeof(cmd), "%s/count", dir);
    FILE *f = fopen(cmd, "r");
    int ncases = 0;
    long long ts_us = 0;
    ck_assert_int_eq(fscanf(f, "%d", &ncases), 1);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s/ts_us", dir);
    f = fopen(cmd, "r");
    ck_assert_int_eq(fscanf(f, "%lld", &ts_us), 1);
    fclose(f);
    ck_assert_int_eq(ts_us, TS_US);
    ck_assert_int_gt(ncases, 40);
    for (int n = 0; n < ncases; n++) {
        char *src = read_file(dir, n, "src", &srclen);
        char *expect = read_file(dir, n, "expect", &explen);
        char *pyjson = read_file(dir, n, "pyjson", &pylen);
        ck_assert_ptr_nonnull(src);
        for (size_t s = 0; s < CM_ARRAY_LEN(json_sers); s++) {
            interop_case(dir, n, json_sers[s], ts_us, src, srclen, expect, explen, pyjson, pylen);
        }
        free(src);
        free(expect);
        free(pyjson);
    }
    run_python("check", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *serializer_suite(void)
{
    Suite *s = suite_create("serializer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_wrapped_write_time);
    tcase_add_test(tc, test_msgpack_exact_bytes);
    tcase_add_test(tc, test_wrapped_exact_bytes);
    tcase_add_test(tc, test_json_bare_is_loader_bytes);
    tcase_add_test(tc, test_raw_is_identity);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_round_trip_deep);
    tcase_add_test(tc, test_float_repr);
    tcase_add_test(tc, test_compressed_header);
    tcase_add_test(tc, test_invalid_json_rejected);
    tcase_add_test(tc, test_msgpack_integer_range);
    tcase_add_test(tc, test_garbage_rejected);
    tcase_add_test(tc, test_inflate_cap);
    suite_add_tcase(s, tc);
    TCase *ti = tcase_create("interop");
    tcase_set_timeout(ti, 120);
    tcase_add_test(ti, test_interop_python);
    suite_add_tcase(s, ti);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(serializer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
