/* RESP parser and encoder: every vector fed whole, byte by byte, at every split point and
 * through reserve/commit must give the same requests and the same error text. */
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/resp.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A vector: input bytes, the requests it must give in canonical form ("[len:bytes,...]" per
 * request), and the sticky error after them (NULL: the input ends cleanly). */
struct vec {
    const char *name;
    const char *in;
    size_t inlen;
    const char *want;
    size_t wantlen;
    const char *err;
};

#define OKV(n, i, w)                                                                               \
    {                                                                                              \
        n, i, sizeof(i) - 1, w, sizeof(w) - 1, NULL                                                \
    }
#define ERRV(n, i, w, e)                                                                           \
    {                                                                                              \
        n, i, sizeof(i) - 1, w, sizeof(w) - 1, e                                                   \
    }

static const struct vec vecs[] = {
    /* multibulk */
    OKV("get", "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", "[3:GET,3:key,]"),
    OKV("set_binary", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\0b\r\nc\r\n",
        "[3:SET,1:k,6:a\0b\r\nc,]"),
    OKV("bulk_all_crlf", "*1\r\n$4\r\n\r\n\r\n\r\n", "[4:\r\n\r\n,]"),
    OKV("empty_bulk", "*2\r\n$3\r\nSET\r\n$0\r\n\r\n", "[3:SET,0:,]"),
    OKV("pipeline",
        "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n",
        "[4:PING,][3:GET,1:a,][3:GET,1:b,]"),
    OKV("mbulk_zero_skipped", "*0\r\n*1\r\n$4\r\nPING\r\n", "[4:PING,]"),
    OKV("mbulk_minus1_skipped", "*-1\r\nPING\r\n", "[4:PING,]"),
    OKV("mbulk_minus10_skipped", "*-10\r\nPING\r\n", "[4:PING,]"),
    OKV("mixed_inline_mbulk", "PING\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\nECHO hi\n",
        "[4:PING,][3:GET,1:x,][4:ECHO,2:hi,]"),
    OKV("header_lf_not_checked", "*1\rx$1\rxa\r\n", "[1:a,]"),
    /* the edges of the whole-request fast path (resp.c fast_mbulk), which the general path
     * must agree with (test_vec_general) */
    OKV("nine_args", "*9\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n$1\r\nf\r\n"
        "$1\r\ng\r\n$1\r\nh\r\n$1\r\ni\r\n", "[1:a,1:b,1:c,1:d,1:e,1:f,1:g,1:h,1:i,]"),
    OKV("ten_args", "*10\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n$1\r\nf\r\n"
        "$1\r\ng\r\n$1\r\nh\r\n$1\r\ni\r\n$1\r\nj\r\n", "[1:a,1:b,1:c,1:d,1:e,1:f,1:g,1:h,1:i,1:j,]"),
    OKV("empty_bulks", "*2\r\n$0\r\n\r\n$0\r\n\r\n", "[0:,0:,]"),
    OKV("bulk_header_lf_not_checked", "*1\r\n$1\rxa\r\n", "[1:a,]"),
    ERRV("bulk_leading_zero", "*1\r\n$01\r\na\r\n", "", "Protocol error: invalid bulk length"),
    ERRV("bulk_zero_zero", "*1\r\n$00\r\n\r\n", "", "Protocol error: invalid bulk length"),
    ERRV("bulk_plus", "*1\r\n$+1\r\na\r\n", "", "Protocol error: invalid bulk length"),
    ERRV("bulk_short_then_crlf", "*1\r\n$2\r\na\r\n\r\n", "",
         "Protocol error: missing CRLF after bulk data"),
    /* inline */
    OKV("inline_crlf", "GET key\r\n", "[3:GET,3:key,]"),
    OKV("inline_lf", "GET key\n", "[3:GET,3:key,]"),
    OKV("inline_blank_lines", "\r\n\n   \r\n\t\nPING\r\n", "[4:PING,]"),
    OKV("inline_spaces", "  SET\t k   v  \r\n", "[3:SET,1:k,1:v,]"),
    OKV("inline_dquote", "SET \"foo bar\" 'baz qux'\r\n", "[3:SET,7:foo bar,7:baz qux,]"),
    OKV("inline_hex", "ECHO \"\\x41\\x4a\\x00z\"\r\n", "[4:ECHO,4:AJ\0z,]"),
    OKV("inline_escapes", "ECHO \"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\n", "[4:ECHO,8:\n\r\t\b\a\\\"q,]"),
    OKV("inline_bad_hex", "ECHO \"\\xZZ\"\r\n", "[4:ECHO,3:xZZ,]"),
    OKV("inline_squote_escape", "ECHO 'it\\'s' 'a\\nb'\r\n", "[4:ECHO,4:it's,4:a\\nb,]"),
    OKV("inline_quote_midtoken", "ECHO foo\"bar baz\"\r\n", "[4:ECHO,10:foobar baz,]"),
    OKV("inline_empty_quotes", "SET k \"\" ''\r\n", "[3:SET,1:k,0:,0:,]"),
    OKV("inline_cr_inside", "A\rB\r\n", "[1:A,1:B,]"),
    OKV("inline_nul_byte", "GET a\0b\r\n", "[3:GET,3:a\0b,]"),
    OKV("inline_dollar", "$3\r\n", "[2:$3,]"),
    /* malformed (redis tests/unit/protocol.tcl and more) */
    ERRV("mbulk_out_of_range", "*3000000000\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("mbulk_nonnumeric", "*abc\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("mbulk_empty", "*\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("mbulk_plus", "*+1\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("mbulk_leading_zero", "*01\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("mbulk_space", "* 1\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("mbulk_overflow", "*99999999999999999999\r\n", "",
         "Protocol error: invalid multibulk length"),
    ERRV("mbulk_over_int", "*2147483648\r\n", "", "Protocol error: invalid multibulk length"),
    ERRV("wrong_payload_header", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", "",
         "Protocol error: expected '$', got 'f'"),
    ERRV("not_followed_by_bulk", "*1\r\nfoo\r\n", "", "Protocol error: expected '$', got 'f'"),
    ERRV("dollar_got_cr", "*1\r\n\r\n", "", "Protocol error: expected '$', got ' '"),
    ERRV("negative_bulk", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", "",
         "Protocol error: invalid bulk length"),
    ERRV("bulk_minus1", "*1\r\n$-1\r\n", "", "Protocol error: invalid bulk length"),
    ERRV("bulk_out_of_range", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n", "",
         "Protocol error: invalid bulk length"),
    ERRV("bulk_nonnumeric", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n", "",
         "Protocol error: invalid bulk length"),
    ERRV("bulk_overflow", "*1\r\n$99999999999999999999\r\n", "",
         "Protocol error: invalid bulk length"),
    ERRV("bulk_no_crlf", "*1\r\n$3\r\nGETX\r\n", "",
         "Protocol error: missing CRLF after bulk data"),
    ERRV("bulk_lf_lf", "*1\r\n$3\r\nGET\n\n", "", "Protocol error: missing CRLF after bulk data"),
    ERRV("unbalanced_redis", "set \"\"\"test-key\"\"\" test-value\r\nping\r\n", "",
         "Protocol error: unbalanced quotes in request"),
    ERRV("unterminated_dquote", "SET \"foo\r\n", "",
         "Protocol error: unbalanced quotes in request"),
    ERRV("unterminated_squote", "SET 'foo\r\n", "", "Protocol error: unbalanced quotes in request"),
    ERRV("dquote_then_text", "SET \"foo\"bar\r\n", "",
         "Protocol error: unbalanced quotes in request"),
    ERRV("squote_then_text", "SET 'foo'bar\r\n", "",
         "Protocol error: unbalanced quotes in request"),
    ERRV("trailing_backslash", "SET \"foo\\\r\n", "",
         "Protocol error: unbalanced quotes in request"),
    ERRV("error_after_good", "PING\r\n*1\r\n$3\r\nGET\r\n*1\r\nx", "[4:PING,][3:GET,]",
         "Protocol error: expected '$', got 'x'"),
};

/* ------------------------------------------------------------------------------------------ */
/* Helpers */

static void canon_append(struct cm_buf *b, const struct cm_argv *a)
{
    ck_assert_int_gt(a->argc, 0);
    cm_buf_append(b, "[", 1);
    for (int i = 0; i < a->argc; i++) {
        ck_assert_int_eq(a->argv[i][a->lens[i]], '\0');
        /* One allocation: every argument lies inside the block after the header. */
        ck_assert(a->argv[i] > (char *)a);
        cm_buf_printf(b, "%zu:", a->lens[i]);
        cm_buf_append(b, a->argv[i], a->lens[i]);
        cm_buf_append(b, ",", 1);
    }
    cm_buf_append(b, "]", 1);
}

/* Runs cm_resp_next until it stops; returns its last status. */
static int drain(struct cm_resp_parser *p, struct cm_buf *out)
{
    struct cm_argv *a;
    int rc;
    while ((rc = cm_resp_next(p, &a)) == CM_OK) {
        canon_append(out, a);
        cm_argv_free(a);
    }
    return rc;
}

/* cm_buf_start() of a never-filled buffer is NULL + 0, which UBSan rejects. */
static const char *start(const struct cm_buf *b)
{
    return b->data != NULL ? cm_buf_start(b) : "";
}

/* Printable form of bytes for failure messages. */
static const char *esc(const char *s, size_t n)
{
    static char out[4][512];
    static int slot;
    char *o = out[slot++ & 3];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 5 < 512; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            o[k++] = (char)c;
        } else {
            k += (size_t)snprintf(o + k, 512 - k, "\\x%02x", c);
        }
    }
    o[k] = '\0';
    return o;
}

enum feed_mode { FEED_COPY, FEED_RESERVE };

/* Feeds in[0..n) in pieces ending at cuts[] (then the rest), draining after each piece.
 * Stops feeding at the first error. Returns the final status; *out gets the requests. */
static int run_pieces(struct cm_resp_parser *p, const char *in, size_t n, const size_t *cuts,
                      size_t ncuts, enum feed_mode mode, struct cm_buf *out)
{
    size_t at = 0;
    int rc = CM_EAGAIN;
    for (size_t i = 0; i <= ncuts && rc != CM_ERR; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        size_t len = end - at;
        if (mode == FEED_RESERVE) {
            char *dst = cm_resp_reserve(p, len);
            memcpy(dst, in + at, len);
            cm_resp_commit(p, len);
        } else {
            cm_resp_feed(p, in + at, len);
        }
        at = end;
        rc = drain(p, out);
    }
    return rc;
}

static void check_result(const struct vec *v, const char *how, int rc, struct cm_resp_parser *p,
                         struct cm_buf *out)
{
    ck_assert_msg(cm_buf_used(out) == v->wantlen && memcmp(start(out), v->want, v->wantlen) == 0,
                  "%s (%s): got %s want %s", v->name, how, esc(start(out), cm_buf_used(out)),
                  esc(v->want, v->wantlen));
    if (v->err == NULL) {
        ck_assert_msg(rc == CM_EAGAIN, "%s (%s): rc %d, error '%s'", v->name, how, rc,
                      cm_resp_errstr(p));
        ck_assert_msg(cm_resp_pending(p) == 0, "%s (%s): %zu bytes left", v->name, how,
                      cm_resp_pending(p));
    } else {
        ck_assert_msg(rc == CM_ERR, "%s (%s): rc %d, want error", v->name, how, rc);
        ck_assert_str_eq(cm_resp_errstr(p), v->err);
        /* Sticky: valid input afterwards changes nothing. */
        cm_resp_feed(p, "PING\r\n", 6);
        struct cm_argv *a = NULL;
        ck_assert_int_eq(cm_resp_next(p, &a), CM_ERR);
        ck_assert_ptr_null(a);
        ck_assert_str_eq(cm_resp_errstr(p), v->err);
    }
}

static void run_vec(const struct vec *v, const size_t *cuts, size_t ncuts, enum feed_mode mode,
                    const char *how)
{
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    struct cm_buf out;
    cm_buf_init(&out);
    int rc = run_pieces(p, v->in, v->inlen, cuts, ncuts, mode, &out);
    check_result(v, how, rc, p, &out);
    cm_buf_deinit(&out);
    cm_resp_parser_free(p);
}

/* ------------------------------------------------------------------------------------------ */
/* Vectors */

START_TEST(test_vec_whole)
{
    run_vec(&vecs[_i], NULL, 0, FEED_COPY, "whole");
}
END_TEST

/* Whole, but without the fast path: the general path alone gives the same. */
START_TEST(test_vec_general)
{
    const struct vec *v = &vecs[_i];
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    cm_resp_parser_no_fast_path(p);
    struct cm_buf out;
    cm_buf_init(&out);
    int rc = run_pieces(p, v->in, v->inlen, NULL, 0, FEED_COPY, &out);
    check_result(v, "whole, general path", rc, p, &out);
    cm_buf_deinit(&out);
    cm_resp_parser_free(p);
}
END_TEST

START_TEST(test_vec_bytewise)
{
    const struct vec *v = &vecs[_i];
    size_t cuts[512];
    ck_assert_uint_lt(v->inlen, CM_ARRAY_LEN(cuts));
    for (size_t i = 1; i < v->inlen; i++) {
        cuts[i - 1] = i;
    }
    run_vec(v, cuts, v->inlen ? v->inlen - 1 : 0, FEED_COPY, "byte by byte");
    run_vec(v, cuts, v->inlen ? v->inlen - 1 : 0, FEED_RESERVE, "byte by byte, reserve");
}
END_TEST

START_TEST(test_vec_splits)
{
    const struct vec *v = &vecs[_i];
    char how[64];
    for (size_t k = 0; k <= v->inlen; k++) {
        snprintf(how, sizeof(how), "split at %zu", k);
        run_vec(v, &k, 1, k % 2 ? FEED_RESERVE : FEED_COPY, how);
    }
    /* Every pair of cut points too (inputs are small). */
    for (size_t i = 1; i < v->inlen; i++) {
        for (size_t j = i + 1; j < v->inlen; j++) {
            size_t cuts[2] = {i, j};
            snprintf(how, sizeof(how), "split at %zu,%zu", i, j);
            run_vec(v, cuts, 2, FEED_COPY, how);
        }
    }
}
END_TEST

/* All vectors that end cleanly, concatenated: one pipelined stream gives every request. */
START_TEST(test_all_pipelined)
{
    struct cm_buf in, want, out;
    cm_buf_init(&in);
    cm_buf_init(&want);
    cm_buf_init(&out);
    for (size_t i = 0; i < CM_ARRAY_LEN(vecs); i++) {
        if (vecs[i].err == NULL) {
            cm_buf_append(&in, vecs[i].in, vecs[i].inlen);
            cm_buf_append(&want, vecs[i].want, vecs[i].wantlen);
        }
    }
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    size_t n = cm_buf_used(&in);
    /* Odd chunk size so cuts land everywhere. */
    size_t cuts[256], ncuts = 0;
    for (size_t at = 7; at < n; at += 7) {
        ck_assert_uint_lt(ncuts, CM_ARRAY_LEN(cuts));
        cuts[ncuts++] = at;
    }
    int rc = run_pieces(p, start(&in), n, cuts, ncuts, FEED_COPY, &out);
    ck_assert_int_eq(rc, CM_EAGAIN);
    ck_assert_uint_eq(cm_buf_used(&out), cm_buf_used(&want));
    ck_assert(memcmp(start(&out), start(&want), cm_buf_used(&want)) == 0);
    cm_resp_parser_free(p);
    cm_buf_deinit(&in);
    cm_buf_deinit(&want);
    cm_buf_deinit(&out);
}
END_TEST

/* The log sample starts where the error was found and escapes what it shows. */
START_TEST(test_err_sample)
{
    static const struct {
        const char *in, *sample;
    } cases[] = {
        {"*1\r\nfoo\r\n", "foo\\r\\n"},
        {"PING\r\n*abc\r\n", "*abc\\r\\n"},
        {"*1\r\n$3\r\nab\x01\"\\x\r\n", "ab\\x01\\\"\\\\x\\r\\n"},
        {"SET \"a\tb\r\n", "SET \\\"a\\tb\\r\\n"},
        {"*1\r\n$0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
         "$012345678901234567890123456789012345678901234567890123456789012..."},
    };
    char out[256];
    struct cm_argv *a;
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
        cm_resp_feed(p, cases[i].in, strlen(cases[i].in));
        while (cm_resp_next(p, &a) == CM_OK) {
            cm_argv_free(a);
        }
        ck_assert_msg(cm_resp_next(p, &a) == CM_ERR, "case %zu", i);
        cm_resp_err_sample(p, out, sizeof(out));
        ck_assert_str_eq(out, cases[i].sample);
        /* Truncated to fit, never cutting an escape in half. */
        cm_resp_err_sample(p, out, 5);
        ck_assert_uint_le(strlen(out), 4);
        ck_assert(strncmp(out, cases[i].sample, strlen(out)) == 0);
        cm_resp_parser_free(p);
    }
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    cm_resp_err_sample(p, out, sizeof(out));
    ck_assert_str_eq(out, "");
    cm_resp_parser_free(p);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Limits */

/* Feeds s (len n) whole to a fresh parser; returns the status of the first next(). */
static int first_status(struct cm_resp_parser *p, const char *s, size_t n, struct cm_argv **a)
{
    cm_resp_feed(p, s, n);
    *a = NULL;
    return cm_resp_next(p, a);
}

START_TEST(test_small_limits)
{
    struct cm_argv *a;
    struct cm_resp_parser *p = cm_resp_parser_new(10, 3);
    static const char at_bulk[] = "*1\r\n$10\r\n0123456789\r\n";
    ck_assert_int_eq(first_status(p, at_bulk, sizeof(at_bulk) - 1, &a), CM_OK);
    ck_assert_uint_eq(a->lens[0], 10);
    cm_argv_free(a);
    static const char at_args[] = "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n";
    ck_assert_int_eq(first_status(p, at_args, sizeof(at_args) - 1, &a), CM_OK);
    ck_assert_int_eq(a->argc, 3);
    cm_argv_free(a);
    static const char at_inline[] = "a b c\r\n";
    ck_assert_int_eq(first_status(p, at_inline, sizeof(at_inline) - 1, &a), CM_OK);
    ck_assert_int_eq(a->argc, 3);
    cm_argv_free(a);
    cm_resp_parser_free(p);

    p = cm_resp_parser_new(10, 3);
    ck_assert_int_eq(first_status(p, "*1\r\n$11\r\n", 9, &a), CM_ERR);
    ck_assert_str_eq(cm_resp_errstr(p), "Protocol error: invalid bulk length");
    cm_resp_parser_free(p);

    p = cm_resp_parser_new(10, 3);
    ck_assert_int_eq(first_status(p, "*4\r\n", 4, &a), CM_ERR);
    ck_assert_str_eq(cm_resp_errstr(p), "Protocol error: invalid multibulk length");
    cm_resp_parser_free(p);

    p = cm_resp_parser_new(10, 3);
    ck_assert_int_eq(first_status(p, "a b c d\r\n", 9, &a), CM_ERR);
    ck_assert_str_eq(cm_resp_errstr(p), "Protocol error: too many arguments in inline request");
    cm_resp_parser_free(p);
}
END_TEST

/* The default limits reject huge headers at once, before any big allocation. */
START_TEST(test_default_limits_no_alloc)
{
    struct cm_argv *a;
    static const char *const bad[] = {"*2000000\r\n", "*1048577\r\n", "*1\r\n$600000000\r\n",
                                      "*1\r\n$536870913\r\n"};
    static const char *const why[] = {
        "Protocol error: invalid multibulk length", "Protocol error: invalid multibulk length",
        "Protocol error: invalid bulk length", "Protocol error: invalid bulk length"};
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
        struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
        cm_resp_feed(p, bad[i], strlen(bad[i]));
        size_t before = cm_alloc_used();
        ck_assert_int_eq(cm_resp_next(p, &a), CM_ERR);
        ck_assert_str_eq(cm_resp_errstr(p), why[i]);
        ck_assert_uint_le(cm_alloc_used() - before, 64); /* at most the one argv slot of "*1" */
        cm_resp_parser_free(p);
    }
    /* Exactly at the limits: accepted, and still no memory committed up front. */
    static const char *const good[] = {"*1048576\r\n", "*1\r\n$536870912\r\n"};
    for (size_t i = 0; i < CM_ARRAY_LEN(good); i++) {
        struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
        cm_resp_feed(p, good[i], strlen(good[i]));
        size_t before = cm_alloc_used();
        ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
        ck_assert_uint_le(cm_alloc_used() - before, 1024 * sizeof(size_t) * 2 + 64);
        ck_assert_uint_eq(cm_resp_pending(p), strlen(good[i]));
        cm_resp_parser_free(p);
    }
}
END_TEST

/* n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = cm_malloc(n + 3);
    memset(s, c, n);
    return s;
}

START_TEST(test_inline_limit)
{
    struct cm_argv *a;
    const size_t max = CM_RESP_MAX_INLINE;
    char *s = repeat('a', max + 2);
    static const char *const ends[] = {"\r\n", "\n"};
    for (size_t e = 0; e < 2; e++) {
        size_t elen = strlen(ends[e]);
        /* At the limit: fine whole and byte by byte. */
        memcpy(s + max, ends[e], elen);
        struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
        ck_assert_int_eq(first_status(p, s, max + elen, &a), CM_OK);
        ck_assert_uint_eq(a->lens[0], max);
        cm_argv_free(a);
        cm_resp_parser_free(p);
        p = cm_resp_parser_new(0, 0);
        int rc = CM_EAGAIN;
        for (size_t i = 0; i < max + elen; i++) {
            ck_assert_int_eq(rc, CM_EAGAIN);
            cm_resp_feed(p, s + i, 1);
            rc = cm_resp_next(p, &a);
        }
        ck_assert_int_eq(rc, CM_OK);
        ck_assert_uint_eq(a->lens[0], max);
        cm_argv_free(a);
        cm_resp_parser_free(p);
        /* One past: error whole, and byte by byte as soon as it is certain. */
        s[max] = 'a';
        memcpy(s + max + 1, ends[e], elen);
        p = cm_resp_parser_new(0, 0);
        ck_assert_int_eq(first_status(p, s, max + 1 + elen, &a), CM_ERR);
        ck_assert_str_eq(cm_resp_errstr(p), "Protocol error: too big inline request");
        cm_resp_parser_free(p);
        p = cm_resp_parser_new(0, 0);
        cm_resp_feed(p, s, max + 1);
        ck_assert_int_eq(cm_resp_next(p, &a), CM_ERR);
        ck_assert_str_eq(cm_resp_errstr(p), "Protocol error: too big inline request");
        cm_resp_parser_free(p);
    }
    /* MAX bytes then '\r': still undecided until the next byte. */
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    s[max] = '\r';
    cm_resp_feed(p, s, max + 1);
    ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
    cm_resp_feed(p, "x", 1);
    ck_assert_int_eq(cm_resp_next(p, &a), CM_ERR);
    ck_assert_str_eq(cm_resp_errstr(p), "Protocol error: too big inline request");
    cm_resp_parser_free(p);
    cm_free(s);
}
END_TEST

/* A header with no '\r' within 64 KB: "too big ... count string", at exactly one byte past. */
START_TEST(test_count_string_limits)
{
    struct cm_argv *a;
    const size_t max = CM_RESP_MAX_INLINE;
    char *s = repeat('1', max + 8);
    static const char *const prefix[] = {"*", "*1\r\n$"};
    static const char *const why[] = {"Protocol error: too big mbulk count string",
                                      "Protocol error: too big bulk count string"};
    for (size_t i = 0; i < 2; i++) {
        size_t plen = strlen(prefix[i]);
        struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
        cm_resp_feed(p, prefix[i], plen);
        cm_resp_feed(p, s, max - 1); /* the line holds MAX bytes */
        ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
        ck_assert_uint_eq(cm_resp_pending(p), plen + max - 1);
        cm_resp_feed(p, s, 1);
        ck_assert_int_eq(cm_resp_next(p, &a), CM_ERR);
        ck_assert_str_eq(cm_resp_errstr(p), why[i]);
        cm_resp_parser_free(p);
    }
    cm_free(s);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Resumption and memory */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A 32 MB bulk arriving in 4 KB reads is not re-scanned per read (8192 reads x 16 MB average
 * would be 128 GB of scanning), and the read goes straight into the parser's buffer. */
START_TEST(test_big_bulk_resumes)
{
    const size_t big = 32u << 20, chunk = 4096;
    char *data = repeat('\r', chunk); /* CRs everywhere: a rescan for '\r' would also misparse */
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    cm_resp_feed(p, "*2\r\n$3\r\nSET\r\n$33554432\r\n", 24);
    struct cm_argv *a;
    double t0 = now_s();
    for (size_t sent = 0; sent < big; sent += chunk) {
        ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
        char *dst = cm_resp_reserve(p, chunk);
        memcpy(dst, data, chunk);
        cm_resp_commit(p, chunk);
    }
    ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
    cm_resp_feed(p, "\r\n", 2);
    ck_assert_int_eq(cm_resp_next(p, &a), CM_OK);
    double dt = now_s() - t0;
    ck_assert_int_eq(a->argc, 2);
    ck_assert_uint_eq(a->lens[1], big);
    ck_assert_int_eq(a->argv[1][0], '\r');
    ck_assert_int_eq(a->argv[1][big], '\0');
    cm_argv_free(a);
    ck_assert_msg(dt < 5.0, "32 MB in 4 KB reads took %.2f s", dt);
    /* The drained parser gives its big buffer back. */
    size_t before = cm_alloc_used();
    ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
    ck_assert_uint_ge(before - cm_alloc_used(), big);
    cm_resp_parser_free(p);
    cm_free(data);
}
END_TEST

/* A long pipeline read 16 KB at a time: the buffer stays small (consumed bytes compacted). */
START_TEST(test_pipeline_memory_bounded)
{
    static const char req[] = "*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n";
    const size_t rl = sizeof(req) - 1, total = 200000;
    struct cm_resp_parser *p = cm_resp_parser_new(0, 0);
    size_t base = cm_alloc_used(), peak = 0, got = 0, sent = 0, off = 0;
    struct cm_argv *a;
    while (sent < total) {
        /* 16 KB of the stream, cut mid-request. */
        size_t want = 16384;
        char *dst = cm_resp_reserve(p, want);
        for (size_t i = 0; i < want; i++) {
            dst[i] = req[off];
            if (++off == rl) {
                off = 0;
                sent++;
            }
        }
        cm_resp_commit(p, want);
        int rc;
        while ((rc = cm_resp_next(p, &a)) == CM_OK) {
            ck_assert_int_eq(a->argc, 2);
            ck_assert_str_eq(a->argv[1], "key:1");
            cm_argv_free(a);
            got++;
        }
        ck_assert_int_eq(rc, CM_EAGAIN);
        ck_assert_uint_lt(cm_resp_pending(p), rl);
        size_t used = cm_alloc_used() - base;
        peak = used > peak ? used : peak;
    }
    ck_assert_uint_eq(got, sent);
    ck_assert_msg(peak <= 64 * 1024, "buffer grew to %zu bytes", peak);
    cm_resp_parser_free(p);
}
END_TEST

/* "*N" for big N allocates argv slots as bulks arrive, not up front. */
START_TEST(test_many_args)
{
    const size_t n = 5000;
    struct cm_buf in;
    cm_buf_init(&in);
    cm_buf_printf(&in, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++) {
        char arg[16];
        int k = snprintf(arg, sizeof(arg), "%zu", i);
        cm_buf_printf(&in, "$%d\r\n%s\r\n", k, arg);
    }
    struct cm_resp_parser *p = cm_resp_parser_new(0, n);
    struct cm_argv *a;
    ck_assert_int_eq(first_status(p, start(&in), cm_buf_used(&in), &a), CM_OK);
    ck_assert_int_eq(a->argc, (int)n);
    ck_assert_str_eq(a->argv[0], "0");
    ck_assert_str_eq(a->argv[4999], "4999");
    ck_assert_uint_eq(a->lens[1234], 4);
    cm_argv_free(a);
    ck_assert_int_eq(cm_resp_next(p, &a), CM_EAGAIN);
    cm_resp_parser_free(p);
    cm_buf_deinit(&in);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Encoder */

#define ENC_EQ(b, lit)                                                                             \
    do {                                                                                           \
        ck_assert_msg(cm_buf_used(b) == sizeof(lit) - 1 &&                                         \
                          memcmp(start(b), lit, sizeof(lit) - 1) == 0,                             \
                      "got %s want %s", esc(start(b), cm_buf_used(b)), esc(lit, sizeof(lit) - 1)); \
        cm_buf_reset(b);                                                                           \
    } while (0)

START_TEST(test_encoder_scalars)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_resp_status(&b, "OK");
    ENC_EQ(&b, "+OK\r\n");
    cm_resp_status(&b, "a\r\nb");
    ENC_EQ(&b, "+a  b\r\n");
    cm_resp_error(&b, "ERR unknown command");
    ENC_EQ(&b, "-ERR unknown command\r\n");
    cm_resp_errorf(&b, "ERR wrong number of arguments for '%s' command (%d)", "get", 3);
    ENC_EQ(&b, "-ERR wrong number of arguments for 'get' command (3)\r\n");
    cm_resp_errorf(&b, "ERR %s", "x\ny");
    ENC_EQ(&b, "-ERR x y\r\n");
    /* Echoed client bytes cannot end the line early and forge a reply; NUL goes too. */
    cm_resp_errorf(&b, "ERR %c%s'", 0, "a\r\n+OK\r\n:1");
    ENC_EQ(&b, "-ERR  a  +OK  :1'\r\n");
    cm_resp_status(&b, "\r\n-ERR x\r\n");
    ENC_EQ(&b, "+  -ERR x  \r\n");
    char *long_msg = repeat('z', 1000);
    long_msg[1000] = '\0';
    cm_resp_errorf(&b, "ERR %s!", long_msg);
    ck_assert_uint_eq(cm_buf_used(&b), 1 + 4 + 1000 + 1 + 2);
    ck_assert(memcmp(start(&b) + 1005, "!\r\n", 3) == 0);
    cm_buf_reset(&b);
    cm_free(long_msg);

    cm_resp_int(&b, 0);
    ENC_EQ(&b, ":0\r\n");
    cm_resp_int(&b, 9);
    ENC_EQ(&b, ":9\r\n");
    cm_resp_int(&b, 10);
    ENC_EQ(&b, ":10\r\n");
    cm_resp_int(&b, 100);
    ENC_EQ(&b, ":100\r\n");
    cm_resp_int(&b, -1);
    ENC_EQ(&b, ":-1\r\n");
    cm_resp_int(&b, 1234567);
    ENC_EQ(&b, ":1234567\r\n");
    cm_resp_int(&b, INT64_MAX);
    ENC_EQ(&b, ":9223372036854775807\r\n");
    cm_resp_int(&b, INT64_MIN);
    ENC_EQ(&b, ":-9223372036854775808\r\n");

    cm_resp_bulk(&b, "foo", 3);
    ENC_EQ(&b, "$3\r\nfoo\r\n");
    cm_resp_bulk(&b, "", 0);
    ENC_EQ(&b, "$0\r\n\r\n");
    cm_resp_bulk(&b, "a\0\r\nb", 5);
    ENC_EQ(&b, "$5\r\na\0\r\nb\r\n");
    cm_resp_bulk_str(&b, "hello world");
    ENC_EQ(&b, "$11\r\nhello world\r\n");
    cm_resp_nil(&b, false);
    ENC_EQ(&b, "$-1\r\n");
    cm_resp_nil(&b, true);
    ENC_EQ(&b, "_\r\n");
    cm_buf_deinit(&b);
}
END_TEST

START_TEST(test_encoder_aggregates)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_resp_array(&b, 0);
    ENC_EQ(&b, "*0\r\n");
    cm_resp_array(&b, 3);
    ENC_EQ(&b, "*3\r\n");
    cm_resp_map(&b, 2, false);
    ENC_EQ(&b, "*4\r\n");
    cm_resp_map(&b, 2, true);
    ENC_EQ(&b, "%2\r\n");
    cm_resp_set(&b, 5, false);
    ENC_EQ(&b, "*5\r\n");
    cm_resp_set(&b, 5, true);
    ENC_EQ(&b, "~5\r\n");
    cm_resp_verbatim(&b, "foo", 3, true);
    ENC_EQ(&b, "=7\r\ntxt:foo\r\n");
    cm_resp_verbatim(&b, "foo", 3, false);
    ENC_EQ(&b, "$3\r\nfoo\r\n");
    /* A whole STATS-like reply, RESP2 and RESP3. */
    for (int r3 = 0; r3 < 2; r3++) {
        cm_resp_map(&b, 1, r3);
        cm_resp_bulk_str(&b, "users");
        cm_resp_map(&b, 2, r3);
        cm_resp_bulk_str(&b, "hits");
        cm_resp_int(&b, 42);
        cm_resp_bulk_str(&b, "ratio");
        cm_resp_double(&b, 0.5, r3);
        if (r3) {
            ENC_EQ(&b, "%1\r\n$5\r\nusers\r\n%2\r\n$4\r\nhits\r\n:42\r\n$5\r\nratio\r\n,0.5\r\n");
        } else {
            ENC_EQ(&b,
                   "*2\r\n$5\r\nusers\r\n*4\r\n$4\r\nhits\r\n:42\r\n$5\r\nratio\r\n$3\r\n0.5\r\n");
        }
    }
    cm_buf_deinit(&b);
}
END_TEST

START_TEST(test_encoder_double)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_resp_double(&b, 1.5, true);
    ENC_EQ(&b, ",1.5\r\n");
    cm_resp_double(&b, 1.5, false);
    ENC_EQ(&b, "$3\r\n1.5\r\n");
    cm_resp_double(&b, 0.1, true);
    ENC_EQ(&b, ",0.1\r\n");
    cm_resp_double(&b, 0.1 + 0.2, true);
    ENC_EQ(&b, ",0.30000000000000004\r\n");
    cm_resp_double(&b, 1.0 / 3.0, true);
    ENC_EQ(&b, ",0.3333333333333333\r\n");
    cm_resp_double(&b, 3.0, true);
    ENC_EQ(&b, ",3\r\n");
    cm_resp_double(&b, -0.0, true);
    ENC_EQ(&b, ",-0\r\n");
    cm_resp_double(&b, 1e300, true);
    ENC_EQ(&b, ",1e+300\r\n");
    cm_resp_double(&b, -2.5e-10, false);
    ENC_EQ(&b, "$8\r\n-2.5e-10\r\n");
    cm_resp_double(&b, INFINITY, true);
    ENC_EQ(&b, ",inf\r\n");
    cm_resp_double(&b, -INFINITY, true);
    ENC_EQ(&b, ",-inf\r\n");
    cm_resp_double(&b, NAN, true);
    ENC_EQ(&b, ",nan\r\n");
    cm_resp_double(&b, -NAN, false);
    ENC_EQ(&b, "$3\r\nnan\r\n");
    cm_resp_double(&b, INFINITY, false);
    ENC_EQ(&b, "$3\r\ninf\r\n");
    /* Round trip on awkward values. */
    static const double vals[] = {
        5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 123456789.123456789, 0.1 * 3,
        1e23};
    for (size_t i = 0; i < CM_ARRAY_LEN(vals); i++) {
        cm_resp_double(&b, vals[i], true);
        char *s = cm_buf_steal(&b, NULL);
        ck_assert(strtod(s + 1, NULL) == vals[i]);
        ck_assert_uint_le(strlen(s), 1 + 24 + 2);
        cm_free(s);
    }
    cm_buf_deinit(&b);
}
END_TEST

START_TEST(test_encoder_big_bulk)
{
    struct cm_buf b;
    cm_buf_init(&b);
    const size_t n = 1u << 20;
    char *v = repeat('v', n);
    cm_resp_status(&b, "OK");
    cm_resp_bulk(&b, v, n);
    ck_assert_uint_eq(cm_buf_used(&b), 5 + 1 + 7 + 2 + n + 2);
    ck_assert(memcmp(start(&b), "+OK\r\n$1048576\r\nvvv", 18) == 0);
    ck_assert(memcmp(start(&b) + cm_buf_used(&b) - 3, "v\r\n", 3) == 0);
    cm_free(v);
    cm_buf_deinit(&b);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */

static Suite *resp_suite(void)
{
    Suite *s = suite_create("resp");
    TCase *tc = tcase_create("vectors");
    tcase_set_timeout(tc, 120);
    int n = (int)CM_ARRAY_LEN(vecs);
    tcase_add_loop_test(tc, test_vec_whole, 0, n);
    tcase_add_loop_test(tc, test_vec_general, 0, n);
    tcase_add_loop_test(tc, test_vec_bytewise, 0, n);
    tcase_add_loop_test(tc, test_vec_splits, 0, n);
    tcase_add_test(tc, test_all_pipelined);
    tcase_add_test(tc, test_err_sample);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_small_limits);
    tcase_add_test(tc, test_default_limits_no_alloc);
    tcase_add_test(tc, test_inline_limit);
    tcase_add_test(tc, test_count_string_limits);
    tcase_add_test(tc, test_big_bulk_resumes);
    tcase_add_test(tc, test_pipeline_memory_bounded);
    tcase_add_test(tc, test_many_args);
    suite_add_tcase(s, tc);

    tc = tcase_create("encoder");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_encoder_scalars);
    tcase_add_test(tc, test_encoder_aggregates);
    tcase_add_test(tc, test_encoder_double);
    tcase_add_test(tc, test_encoder_big_bulk);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(resp_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
