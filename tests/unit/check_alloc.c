/* Unit tests of the allocation wrappers (daemon/alloc.h): the used-bytes count through cached
 * and uncached sizes, zeroed memory from cm_calloc even when a chunk is reused, and chunks freed
 * by one thread reused by another. */
#include "daemon/alloc.h"

#include <check.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N 5000

START_TEST(test_used_bytes_balance)
{
    static void *p[N];
    size_t sizes[] = {1, 24, 100, 1000, 5000, 100000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t before = cm_alloc_used();
        for (int i = 0; i < N; i++) {
            p[i] = cm_malloc(sizes[s]);
            memset(p[i], 0x5a, sizes[s]);
        }
        ck_assert_uint_ge(cm_alloc_used() - before, (size_t)N * sizes[s]);
        for (int i = 0; i < N; i++) {
            cm_free(p[i]);
        }
        ck_assert_uint_eq(cm_alloc_used(), before);
        /* again, now that some of these sizes come back from the cache */
        for (int i = 0; i < N; i++) {
            p[i] = cm_realloc(NULL, sizes[s]);
        }
        for (int i = 0; i < N; i++) {
            p[i] = cm_realloc(p[i], sizes[s] * 2);
        }
        for (int i = 0; i < N; i++) {
            cm_free(p[i]);
        }
        ck_assert_uint_eq(cm_alloc_used(), before);
    }
}
END_TEST

START_TEST(test_calloc_is_zeroed_after_reuse)
{
    for (size_t n = 1; n <= 1100; n += 7) {
        unsigned char *d = cm_malloc(n);
        memset(d, 0xff, n);
        cm_free(d);
        unsigned char *z = cm_calloc(1, n);
        for (size_t i = 0; i < n; i++) {
            ck_assert_uint_eq(z[i], 0);
        }
        cm_free(z);
    }
}
END_TEST

static void *alloc_many(void *arg)
{
    void **p = arg;
    for (int i = 0; i < N; i++) {
        p[i] = cm_malloc(40);
    }
    return NULL;
}

static void *free_many(void *arg)
{
    void **p = arg;
    for (int i = 0; i < N; i++) {
        cm_free(p[i]);
    }
    for (int i = 0; i < N; i++) {   /* this thread's cache hands them out again */
        p[i] = cm_malloc(40);
        memset(p[i], 1, 40);
    }
    for (int i = 0; i < N; i++) {
        cm_free(p[i]);
    }
    return NULL;   /* exiting releases this thread's cache */
}

/* A reused chunk is never smaller than the request, whichever malloc runs under the wrappers: with
 * jemalloc preloaded the cache handed a 112-byte chunk to a 115-byte request (run this suite with
 * LD_PRELOAD=libjemalloc.so.2 to check; bench/mem.sh preloads it). */
START_TEST(test_reused_chunk_fits_any_malloc)
{
    static void *p[1100];
    for (int round = 0; round < 2; round++) {
        for (size_t n = 1; n < 1100; n++) {
            p[n] = cm_malloc(n);
            ck_assert_uint_ge(malloc_usable_size(p[n]), n);
            memset(p[n], 0x5a, n);
        }
        for (size_t n = 1; n < 1100; n++) {
            cm_free(p[n]);
        }
    }
    for (size_t n = 1099; n >= 1; n--) {   /* the other order: small requests, large chunks */
        p[n] = cm_malloc(n);
        ck_assert_uint_ge(malloc_usable_size(p[n]), n);
        cm_free(p[n]);
    }
}
END_TEST

START_TEST(test_cross_thread_free)
{
    static void *p[N];
    size_t before = cm_alloc_used();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, alloc_many, p), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_ge(cm_alloc_used() - before, (size_t)N * 40);
    ck_assert_int_eq(pthread_create(&t, NULL, free_many, p), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_eq(cm_alloc_used(), before);
}
END_TEST

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_used_bytes_balance);
    tcase_add_test(tc, test_calloc_is_zeroed_after_reuse);
    tcase_add_test(tc, test_reused_chunk_fits_any_malloc);
    tcase_add_test(tc, test_cross_thread_free);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(alloc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
