/* storages/st_keys.c: which keys a text-keyed storage can hold (UTF-8 per RFC 3629, NUL, the
 * VARCHAR(512) length in characters), and the overflow-proof expiry arithmetic. No server. */
#include "storages/st_keys.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define FITS(s, rules) cm_st_key_fits((s), sizeof(s) - 1, (rules))

START_TEST(test_utf8)
{
    const unsigned u = CM_KEY_UTF8;
    ck_assert(FITS("", u));
    ck_assert(FITS("plain:ascii", u));
    ck_assert(FITS("\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x94\x91", u)); /* 2-, 3-, 4-byte */
    ck_assert(FITS("\xef\xbf\xbf\xf4\x8f\xbf\xbf", u));           /* U+FFFF, U+10FFFF */
    ck_assert(FITS("a\0b", u));                                   /* NUL is UTF-8 */
    ck_assert(!FITS("\xff", u));
    ck_assert(!FITS("\xc0\xaf", u));         /* overlong '/' */
    ck_assert(!FITS("\xe0\x80\xaf", u));     /* overlong, 3 bytes */
    ck_assert(!FITS("\xf0\x80\x80\xaf", u)); /* overlong, 4 bytes */
    ck_assert(!FITS("\xed\xa0\x80", u));     /* surrogate U+D800 */
    ck_assert(!FITS("\xf4\x90\x80\x80", u)); /* above U+10FFFF */
    ck_assert(!FITS("ok\xe6\x97", u));       /* truncated at the end */
    ck_assert(!FITS("\xe6\x97"
                    "a",
                    u));         /* truncated before ASCII */
    ck_assert(!FITS("\x80", u)); /* lone continuation */
    ck_assert(FITS("\xff", 0));  /* no rules: anything */
}
END_TEST

START_TEST(test_nul_and_length)
{
    ck_assert(!FITS("a\0b", CM_KEY_NO_NUL));
    ck_assert(FITS("\xff", CM_KEY_NO_NUL));
    char k[2 * CM_KEY_MAX_CHARS_N + 2];
    memset(k, 'x', CM_KEY_MAX_CHARS_N);
    ck_assert(cm_st_key_fits(k, CM_KEY_MAX_CHARS_N, CM_KEY_MAX_CHARS));
    ck_assert(!cm_st_key_fits(k, CM_KEY_MAX_CHARS_N + 1, CM_KEY_MAX_CHARS));
    for (size_t i = 0; i < CM_KEY_MAX_CHARS_N; i++) { /* 512 characters of 2 bytes fit */
        memcpy(k + 2 * i, "\xc3\xa9", 2);
    }
    ck_assert(cm_st_key_fits(k, 2 * CM_KEY_MAX_CHARS_N, CM_KEY_MAX_CHARS | CM_KEY_UTF8));
    k[2 * CM_KEY_MAX_CHARS_N] = 'x';
    ck_assert(!cm_st_key_fits(k, 2 * CM_KEY_MAX_CHARS_N + 1, CM_KEY_MAX_CHARS));
}
END_TEST

START_TEST(test_ttl_forever)
{
    const int64_t now = INT64_C(1796683229185); /* 2026-12-07 */
    ck_assert(cm_st_ttl_forever(-1, now));
    ck_assert(cm_st_ttl_forever(0, now));
    ck_assert(!cm_st_ttl_forever(1, now));
    ck_assert(!cm_st_ttl_forever(CM_ST_EXPIRE_MAX_MS - now, now));
    ck_assert(cm_st_ttl_forever(CM_ST_EXPIRE_MAX_MS - now + 1, now));
    ck_assert(cm_st_ttl_forever(INT64_MAX / 2, now));
    ck_assert(cm_st_ttl_forever(INT64_MAX - now, now));
    ck_assert(cm_st_ttl_forever(INT64_MAX, now));
    ck_assert(cm_st_ttl_forever(1, INT64_MAX)); /* a clock past the end */
    ck_assert(!cm_st_ttl_forever(1, -5));       /* a clock before the epoch counts as 0 */
}
END_TEST

START_TEST(test_written_from_remaining)
{
    const int64_t now = INT64_C(1796683229185);
    ck_assert_int_eq(cm_st_written_from_remaining(now, 60000, 59000), now - 1000);
    ck_assert_int_eq(cm_st_written_from_remaining(now, 60000, 60000), now);
    ck_assert_int_eq(cm_st_written_from_remaining(now, 60000, 90000), now); /* longer ttl */
    ck_assert_int_eq(cm_st_written_from_remaining(now, 60000, -1), 0);      /* no expiry */
    ck_assert_int_eq(cm_st_written_from_remaining(now, 60000, -2), 0);      /* gone */
    ck_assert_int_eq(cm_st_written_from_remaining(now, -1, 100), 0);        /* no ttl */
    ck_assert_int_eq(cm_st_written_from_remaining(now, INT64_MAX, 0), 0);   /* before the epoch */
    ck_assert_int_eq(cm_st_written_from_remaining(now, INT64_MAX, INT64_MAX - 5), now - 5);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("st_keys");
    TCase *tc = tcase_create("pure");
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_nul_and_length);
    tcase_add_test(tc, test_ttl_forever);
    tcase_add_test(tc, test_written_from_remaining);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
