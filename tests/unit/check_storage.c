/* Storage ops (storages/storage.c): how an op holds its keys. Keys that fit the block allocated
 * with the items live there; the rest, and every key of an op made without a block, are
 * allocated one by one. The ASan build checks that each is freed exactly once. */
#include "daemon/alloc.h"
#include "storages/storage.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* True when item i's key holds exactly the klen bytes of want, NUL-terminated. */
static bool key_is(const struct cm_st_op *op, size_t i, const char *want, size_t klen)
{
    const struct cm_st_item *it = &op->items[i];
    return it->klen == klen && memcmp(it->key, want, klen) == 0 && it->key[klen] == '\0';
}

START_TEST(test_keys_fill_the_block_then_fall_back)
{
    /* Room for "ab" and "cde" (3 + 4 bytes with their NULs), not for the third key. */
    struct cm_st_op *op = cm_st_op_new_keys(CM_ST_GET, 3, 7);
    cm_st_op_set_key(op, 0, "ab", 2);
    cm_st_op_set_key(op, 1, "cde", 3);
    cm_st_op_set_key(op, 2, "fghij", 5);
    ck_assert(op->items[0].key_in_block);
    ck_assert(op->items[1].key_in_block);
    ck_assert(!op->items[2].key_in_block);
    ck_assert_ptr_eq(op->items[1].key, op->items[0].key + 3);   /* packed, no overlap */
    ck_assert(key_is(op, 0, "ab", 2));
    ck_assert(key_is(op, 1, "cde", 3));
    ck_assert(key_is(op, 2, "fghij", 5));
    cm_st_op_free(op);
}
END_TEST

START_TEST(test_binary_keys_keep_every_byte)
{
    /* Keys are binary: a NUL inside one must not cut it short, in the block or outside it. */
    static const char k[] = { 'a', '\0', 'b', '\r', '\n', 'c' };
    struct cm_st_op *op = cm_st_op_new_keys(CM_ST_DEL, 2, sizeof(k) + 1);
    cm_st_op_set_key(op, 0, k, sizeof(k));
    cm_st_op_set_key(op, 1, k, sizeof(k));
    ck_assert(op->items[0].key_in_block);
    ck_assert(!op->items[1].key_in_block);
    ck_assert(key_is(op, 0, k, sizeof(k)));
    ck_assert(key_is(op, 1, k, sizeof(k)));
    cm_st_op_free(op);
}
END_TEST

START_TEST(test_set_key_again_replaces_it)
{
    /* A key set twice: the first copy is released (heap) or left in the block, never freed
     * twice; the block's space is not reused by the second copy. */
    struct cm_st_op *op = cm_st_op_new_keys(CM_ST_SET, 2, 4);
    cm_st_op_set_key(op, 0, "abc", 3);     /* fills the block */
    cm_st_op_set_key(op, 0, "xyz", 3);     /* block full: heap */
    ck_assert(!op->items[0].key_in_block);
    ck_assert(key_is(op, 0, "xyz", 3));
    cm_st_op_set_key(op, 1, "long key", 8);
    cm_st_op_set_key(op, 1, "other", 5);   /* heap replaced by heap */
    ck_assert(key_is(op, 1, "other", 5));
    cm_st_op_free(op);
}
END_TEST

START_TEST(test_op_without_block_allocates_each_key)
{
    struct cm_st_op *op = cm_st_op_new(CM_ST_GET, 2);
    cm_st_op_set_key(op, 0, "k1", 2);
    cm_st_op_set_key(op, 1, "", 0);
    ck_assert(!op->items[0].key_in_block);
    ck_assert(!op->items[1].key_in_block);
    ck_assert(key_is(op, 0, "k1", 2));
    ck_assert(key_is(op, 1, "", 0));
    ck_assert_int_eq(op->ttl_ms, -1);
    ck_assert_ptr_null(op->items[0].val);
    cm_st_op_free(op);
}
END_TEST

static Suite *storage_suite(void)
{
    Suite *s = suite_create("storage");
    TCase *tc = tcase_create("op");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_keys_fill_the_block_then_fall_back);
    tcase_add_test(tc, test_binary_keys_keep_every_byte);
    tcase_add_test(tc, test_set_key_again_replaces_it);
    tcase_add_test(tc, test_op_without_block_allocates_each_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(storage_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
