/* Unit tests of the DoorKeeper bloom filter (daemon/bloom.h): SPEC section 9 sizing, the
 * add-if-absent contract, clearing at capacity, and the false-positive rate. */
#include "daemon/bloom.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_sizing_as_spec)
{
    /* 100000 * -ln(0.01) / ln(2)^2 = 958505.8 bits -> 2^20; k = floor(ln 2 * 2^20 / 1e5) = 7 */
    struct cm_bloom *b = cm_bloom_new(100000, 0.01);
    ck_assert_uint_eq(cm_bloom_bits(b), 1048576);
    ck_assert_uint_eq(cm_bloom_hashes(b), 7);
    cm_bloom_free(b);
    /* 1000 * -ln(0.001) / ln(2)^2 = 14377.6 -> 16384; k = floor(11356.5 / 1000) = 11 */
    b = cm_bloom_new(1000, 0.001);
    ck_assert_uint_eq(cm_bloom_bits(b), 16384);
    ck_assert_uint_eq(cm_bloom_hashes(b), 11);
    cm_bloom_free(b);
    /* tiny: 1 * 9.59 -> 16 bits; k = floor(11.09) = 11 */
    b = cm_bloom_new(1, 0.01);
    ck_assert_uint_eq(cm_bloom_bits(b), 16);
    ck_assert_uint_eq(cm_bloom_hashes(b), 11);
    cm_bloom_free(b);
    ck_assert_ptr_null(cm_bloom_new(0, 0.01));
    ck_assert_ptr_null(cm_bloom_new(10, 0));
    ck_assert_ptr_null(cm_bloom_new(10, 1));
    ck_assert_ptr_null(cm_bloom_new(10, NAN));
}
END_TEST

START_TEST(test_add_if_absent)
{
    struct cm_bloom *b = cm_bloom_new(1000, 0.01);
    ck_assert(!cm_bloom_add_if_absent(b, "user:1", 6));   /* first load: not cached */
    ck_assert(cm_bloom_add_if_absent(b, "user:1", 6));    /* second load: cache it */
    ck_assert(cm_bloom_add_if_absent(b, "user:1", 6));
    ck_assert(!cm_bloom_add_if_absent(b, "user:2", 6));
    ck_assert(cm_bloom_contains(b, "user:2", 6));
    ck_assert(!cm_bloom_contains(b, "user:3", 6));
    ck_assert(!cm_bloom_contains(b, "user:3", 6));        /* contains does not add */
    ck_assert(!cm_bloom_add_if_absent(b, "a\0b", 3));     /* binary keys */
    ck_assert(!cm_bloom_contains(b, "a\0c", 3));
    ck_assert_uint_eq(cm_bloom_count(b), 3);
    cm_bloom_free(b);
}
END_TEST

START_TEST(test_clears_at_capacity)
{
    struct cm_bloom *b = cm_bloom_new(100, 0.01);
    char k[32];
    int i = 0, fps = 0;
    /* the hash seed is random per process: a rare false positive is not counted as added */
    while (cm_bloom_count(b) < 100) {
        snprintf(k, sizeof(k), "k%d", i++);
        fps += cm_bloom_add_if_absent(b, k, strlen(k));
    }
    ck_assert_int_le(fps, 5);
    ck_assert_uint_eq(cm_bloom_clears(b), 0);
    ck_assert(cm_bloom_contains(b, "k0", 2));
    /* the next new key finds the filter at capacity: it is cleared, then the key is added */
    int j = 0;
    do {
        snprintf(k, sizeof(k), "new%d", j++);
    } while (cm_bloom_add_if_absent(b, k, strlen(k)));
    ck_assert_uint_eq(cm_bloom_clears(b), 1);
    ck_assert_uint_eq(cm_bloom_count(b), 1);
    ck_assert(cm_bloom_contains(b, k, strlen(k)));
    int survivors = 0;
    for (int n = 0; n < i; n++) {
        snprintf(k, sizeof(k), "k%d", n);
        survivors += cm_bloom_contains(b, k, strlen(k));
    }
    ck_assert_int_le(survivors, 3);   /* only false positives against one key */
    cm_bloom_free(b);
}
END_TEST

/* Over 100k keys the false-positive rate stays within 2x of the configured rate. */
START_TEST(test_false_positive_rate)
{
    const double rates[] = { 0.01, 0.001, 0.1 };
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        struct cm_bloom *b = cm_bloom_new(100000, rates[r]);
        char k[32];
        for (int i = 0; i < 100000; i++) {
            int n = snprintf(k, sizeof(k), "member:%d", i);
            cm_bloom_add_if_absent(b, k, (size_t)n);
        }
        ck_assert_uint_eq(cm_bloom_clears(b), 0);
        for (int i = 0; i < 100000; i++) {
            int n = snprintf(k, sizeof(k), "member:%d", i);
            ck_assert(cm_bloom_contains(b, k, (size_t)n));   /* no false negatives */
        }
        int fp = 0;
        for (int i = 0; i < 100000; i++) {
            int n = snprintf(k, sizeof(k), "other:%d", i);
            fp += cm_bloom_contains(b, k, (size_t)n);
        }
        double rate = fp / 100000.0;
        ck_assert_msg(rate <= 2 * rates[r], "fpp %.5f measured %.5f", rates[r], rate);
        cm_bloom_free(b);
    }
}
END_TEST

static Suite *bloom_suite(void)
{
    Suite *s = suite_create("bloom");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_sizing_as_spec);
    tcase_add_test(tc, test_add_if_absent);
    tcase_add_test(tc, test_clears_at_capacity);
    tcase_add_test(tc, test_false_positive_rate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bloom_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
