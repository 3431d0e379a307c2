/* sqlite storage against a real database file: round trips, expiry at read time, hostile keys,
 * Cacheme's row format (checked by Python's sqlite3 the way Cacheme reads it), concurrency,
 * timeouts racing a locked database, and close with ops in flight. */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/util.h"
#include "storages/storage.h"
#include "tests/unit/st_contract.h"

#include <check.h>
#include <event2/event.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One test's database, config and storage. */
struct fx {
    char dir[64];
    char path[128];
    char url[160];
    struct cm_conf_storage conf;
    struct event_base *base;
    struct cm_storage *st;
};

static void fx_open(struct fx *f, const char *table, bool create, int pool, int64_t timeout_ms)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cm_sqlite_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/cache.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite://%s", f->path);
    f->conf.name = "lite";
    f->conf.url = f->url;
    f->conf.type = CM_ST_TYPE_SQLITE;
    f->conf.pool_size = pool;
    f->conf.timeout_ms = timeout_ms;
    f->conf.table = (char *)table;
    f->conf.create_table = create;
    f->base = event_base_new();
    char err[256] = "";
    f->st = cm_storage_new(&f->conf, f->base, err, sizeof(err));
    ck_assert_msg(f->st != NULL, "open: %s", err);
}

static void fx_close(struct fx *f)
{
    cm_storage_free(f->st);
    event_base_free(f->base);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* The contract fixture (tests/unit/st_contract.h): a database file of its own. TEXT keys hold
 * any bytes (NUL and invalid UTF-8 compare as bytes): key_rules 0. */
static struct fx ct_sq;

static struct cm_storage *ct_open_sq(int pool, int64_t timeout_ms)
{
    fx_open(&ct_sq, "cacheme_data", true, pool, timeout_ms);
    return ct_sq.st;
}

static void ct_close_sq(struct cm_storage *st)
{
    ct_sq.st = st;
    fx_close(&ct_sq);
}

/* Runs SQL on the test's file through a separate connection (as another process would). */
static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, err ? err : "");
    sqlite3_close(db);
}

/* Runs tests/interop/sqlite_read.py with args; returns its stdout (static buffer). */
static const char *interop(const char *args)
{
    static char out[4096];
    char script[512], cmd[2048];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s",
             h_src_path("tests/interop/sqlite_read.py", script, sizeof(script)), args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    ck_assert_msg(rc == 0, "%s failed (%d): %s", cmd, rc, out);
    return out;
}

/* Rows written by someone else with an expire in the past are misses; the future ones hit,
 * whichever datetime text form they use. */
START_TEST(test_expired_row_is_miss)
{
    struct fx f;
    fx_open(&f, "cacheme_data", true, 2, 5000);
    const char *k[] = {"warm"};
    const char *v[] = {"x"};
    ck_assert_int_eq(h_set(f.st, 1, k, v, -1), CM_OK); /* table exists now */
    char past[40], future[40], sql[1024];
    cm_fmt_iso8601(past, sizeof(past), cm_wall_us() - 1000000, ' ');
    cm_fmt_iso8601(future, sizeof(future), cm_wall_us() + 3600 * 1000000LL, ' ');
    snprintf(sql, sizeof(sql),
             "INSERT INTO cacheme_data(key, value, expire) VALUES"
             "('old', X'6f6c64', '%s'),"
             "('new', X'6e6577', '%s'),"
             "('new_nofrac', X'61', '%.19s+00:00'),"
             "('old_nofrac', X'62', '2001-01-01 00:00:00+00:00'),"
             "('new_T', X'63', '%.10sT%s'),"
             "('junk', X'64', 'not a date'),"
             "('nullval', NULL, NULL)",
             past, future, future, future, future + 11);
    sql_exec(f.path, sql);
    const char *keys[] = {"old", "new", "new_nofrac", "old_nofrac", "new_T", "junk", "nullval"};
    struct h_result r;
    h_get(f.st, 7, keys, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_assert_val(&r, 0, NULL);
    h_assert_val(&r, 1, "new");
    h_assert_val(&r, 2, "a");
    h_assert_val(&r, 3, NULL);
    h_assert_val(&r, 4, "c");
    h_assert_val(&r, 5, NULL);
    h_assert_val(&r, 6, NULL);
    h_result_deinit(&r);

    fx_close(&f);
}
END_TEST

/* The row is in Cacheme's format: Python's sqlite3 reads it the way Cacheme does, and rows
 * written the way Cacheme writes them are read back by the storage. */
START_TEST(test_cacheme_format_interop)
{
    struct fx f;
    fx_open(&f, "cacheme_data", true, 2, 5000);
    const char *k[] = {"cacheme:user:7:info:v1", "cacheme:forever:v1"};
    const char *v[] = {"\x81\xa4name\xa3"
                       "bob",
                       "plain"};
    int64_t before = cm_wall_us();
    ck_assert_int_eq(h_set(f.st, 1, k, v, 3600 * 1000), CM_OK);
    ck_assert_int_eq(h_set(f.st, 1, k + 1, v + 1, -1), CM_OK);
    char args[512];
    snprintf(args, sizeof(args), "read %s cacheme_data %s", f.path, k[0]);
    const char *out = interop(args);
    ck_assert_msg(strstr(out, "\"found\": true") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"value_hex\": \"81a46e616d65a3626f62\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"value_type\": \"bytes\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"expired\": false") != NULL, "%s", out);
    /* the raw text is Python's own datetime format: "YYYY-MM-DD HH:MM:SS.ffffff+00:00" */
    char want[40];
    cm_fmt_iso8601(want, sizeof(want), before + 3600 * 1000000LL, ' ');
    const char *e = strstr(out, "\"expire\": \"");
    ck_assert_ptr_nonnull(e);
    e += strlen("\"expire\": \"");
    ck_assert_msg(strncmp(e, want, 14) == 0 && e[10] == ' ' && e[19] == '.' &&
                      strncmp(e + 26, "+00:00\"", 7) == 0,
                  "expire %.40s, want like %s", e, want);
    snprintf(args, sizeof(args), "read %s cacheme_data %s", f.path, k[1]);
    out = interop(args);
    ck_assert_msg(strstr(out, "\"expire\": null") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"value_hex\": \"706c61696e\"") != NULL, "%s", out);

    /* written by Cacheme's code path, read by the storage */
    snprintf(args, sizeof(args), "write %s cacheme_data py:live 6c697665 3600", f.path);
    interop(args);
    snprintf(args, sizeof(args), "write %s cacheme_data py:dead 64656164 -1", f.path);
    interop(args);
    snprintf(args, sizeof(args), "write %s cacheme_data py:forever 666f72 none", f.path);
    interop(args);
    const char *pk[] = {"py:live", "py:dead", "py:forever"};
    struct h_result r;
    h_get(f.st, 3, pk, &r);
    h_assert_val(&r, 0, "live");
    h_assert_val(&r, 1, NULL);
    h_assert_val(&r, 2, "for");
    h_result_deinit(&r);
    fx_close(&f);
}
END_TEST

/* create_table = yes builds the same table as storages/scripts/sqlite.sql (Cacheme's). */
static void table_shape(const char *path, const char *table, char *out, size_t outsz)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT group_concat(name||':'||type||':'||\"notnull\"||':'||ifnull(dflt_value,'')"
             "||':'||pk, '|') FROM pragma_table_info('%s')",
             table);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, outsz, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    snprintf(sql, sizeof(sql),
             "SELECT group_concat(il.\"unique\"||':'||ii.name, '|') FROM pragma_index_list('%s') il"
             " JOIN pragma_index_info(il.name) ii ORDER BY il.name",
             table);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    size_t len = strlen(out);
    snprintf(out + len, outsz - len, " / %s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

START_TEST(test_schema_matches_script)
{
    struct fx f;
    fx_open(&f, "cacheme_data", true, 2, 5000);
    const char *k[] = {"a"};
    ck_assert_int_eq(h_del(f.st, 1, k), CM_OK); /* runs after the schema */
    char script[512], ref[256], cmd[1024];
    snprintf(ref, sizeof(ref), "%s/ref.db", f.dir);
    snprintf(cmd, sizeof(cmd), "sqlite3 '%s' < '%s'", ref,
             h_src_path("storages/scripts/sqlite.sql", script, sizeof(script)));
    ck_assert_int_eq(system(cmd), 0);
    char a[1024], b[1024];
    table_shape(ref, "cacheme_data", a, sizeof(a));
    table_shape(f.path, "cacheme_data", b, sizeof(b));
    ck_assert_str_eq(a, b);
    ck_assert_msg(strstr(a, "key:VARCHAR(512)") && strstr(a, "expire:DATETIME") &&
                      strstr(a, "id:INTEGER:1::1") && strstr(a, "1:key") && strstr(a, "0:expire"),
                  "%s", a);
    fx_close(&f);

    /* another table name: created and used, index named after it */
    fx_open(&f, "my_cache", true, 1, 5000);
    const char *v[] = {"1"};
    ck_assert_int_eq(h_set(f.st, 1, k, v, -1), CM_OK);
    table_shape(f.path, "my_cache", b, sizeof(b));
    ck_assert_str_eq(a, b);
    sql_exec(f.path, "SELECT 1 FROM sqlite_master WHERE name = 'ix_my_cache_expire'");
    fx_close(&f);
}
END_TEST

/* Without create_table and without a table, ops fail with sqlite's message (a miss). */
START_TEST(test_errors_are_reported)
{
    struct fx f;
    fx_open(&f, "cacheme_data", false, 1, 5000);
    const char *k[] = {"a"};
    struct h_result r;
    h_get(f.st, 1, k, &r);
    ck_assert_int_eq(r.status, CM_ERR);
    ck_assert_msg(strstr(r.err, "no such table: cacheme_data") != NULL, "%s", r.err);
    ck_assert(!r.hit[0]);
    h_result_deinit(&r);
    ck_assert_uint_eq(f.st->stats.errors, 1);
    fx_close(&f);

    /* a file that cannot be opened */
    struct cm_conf_storage conf = {.name = "bad",
                                   .url = "sqlite:///nonexistent-dir/x/cache.db",
                                   .type = CM_ST_TYPE_SQLITE,
                                   .pool_size = 1,
                                   .timeout_ms = 5000,
                                   .table = "cacheme_data"};
    struct event_base *base = event_base_new();
    char err[256];
    struct cm_storage *st = cm_storage_new(&conf, base, err, sizeof(err));
    ck_assert_ptr_nonnull(st);
    h_get(st, 1, k, &r);
    ck_assert_int_eq(r.status, CM_ERR);
    ck_assert_msg(strstr(r.err, "unable to open database file") != NULL, "%s", r.err);
    h_result_deinit(&r);
    cm_storage_free(st);

    /* a url that is not sqlite:///path is refused at open */
    conf.url = "sqlite://";
    ck_assert_ptr_null(cm_storage_new(&conf, base, err, sizeof(err)));
    ck_assert_msg(strstr(err, "sqlite:///path") != NULL, "%s", err);
    event_base_free(base);
}
END_TEST

/* A writer holds the database lock: the op times out on the loop (done once, CM_ETIMEDOUT)
 * while the worker is still busy-waiting; the late completion must not touch the freed state
 * the submitter had (ASan) and must not call done again. */
START_TEST(test_timeout_while_locked)
{
    struct fx f;
    fx_open(&f, "cacheme_data", true, 1, 200);
    const char *k[] = {"a"};
    const char *v[] = {"1"};
    ck_assert_int_eq(h_set(f.st, 1, k, v, -1), CM_OK);
    sqlite3 *locker;
    ck_assert_int_eq(sqlite3_open(f.path, &locker), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct h_result r;
    char *val = cm_strdup("value the submitter frees at done");
    struct cm_st_op *op = cm_st_op_new(CM_ST_SET, 1);
    cm_st_op_set_key(op, 0, "a", 1);
    op->items[0].wval = val;
    op->items[0].wlen = strlen(val);
    double t0 = h_now_ms();
    h_run(f.st, op, &r);
    double took = h_now_ms() - t0;
    cm_free(val); /* allowed: done() ran */
    ck_assert_int_eq(r.status, CM_ETIMEDOUT);
    ck_assert_double_lt(took, 1500);
    ck_assert_uint_eq(f.st->stats.timeouts, 1);
    h_result_deinit(&r);
    ck_assert_int_eq(sqlite3_exec(locker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(locker);
    /* the late write still lands, with the value copied at submit */
    usleep(300 * 1000);
    h_get(f.st, 1, k, &r);
    h_assert_val(&r, 0, "value the submitter frees at done");
    h_result_deinit(&r);
    ck_assert_int_eq(r.calls, 1);
    fx_close(&f);
}
END_TEST

static Suite *sqlite_suite(void)
{
    Suite *s = suite_create("st_sqlite");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_expired_row_is_miss);
    tcase_add_test(tc, test_cacheme_format_interop);
    tcase_add_test(tc, test_schema_matches_script);
    tcase_add_test(tc, test_errors_are_reported);
    tcase_add_test(tc, test_timeout_while_locked);
    suite_add_tcase(s, tc);
    static const struct ct_fixture fx = { .name = "sqlite", .open = ct_open_sq,
                                          .close = ct_close_sq, .key_rules = 0 };
    suite_add_tcase(s, ct_tcase(&fx));
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sqlite_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
