/* mysql:// storage against a real MariaDB/MySQL (CM_TEST_MYSQL_URL). The server's own counters
 * (SHOW GLOBAL STATUS Com_stmt_*, Prepared_stmt_count) show that keys and values travel as bound
 * parameters of prepared statements, prepared once per connection. */
#include "conf/url.h"
#include "daemon/buf.h"
#include "storages/sql_common.h"
#include "tests/unit/sql_harness.h"
#include "tests/unit/st_contract.h"

#include <mysql.h>
#include <stdio.h>

#define MY_TABLE "cm_check_my"
#define MY_BIG_TABLE "cm_check_my_big"

static struct h_st h;
static MYSQL *side;   /* the test's own blocking connection, for checks behind the storage */

static MYSQL *side_conn(void)
{
    struct cm_url u;
    char err[128];
    ck_assert_int_eq(cm_url_parse(h_env("CM_TEST_MYSQL_URL"), &u, err, sizeof(err)), CM_OK);
    MYSQL *m = mysql_init(NULL);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    MYSQL *ok = mysql_real_connect(m, u.host, u.user, u.password, u.path, (unsigned)u.port, NULL,
                                   0);
    ck_assert_msg(ok != NULL, "side connection: %s", mysql_error(m));
    cm_url_deinit(&u);
    return m;
}

static void side_exec(const char *sql)
{
    ck_assert_msg(mysql_query(side, sql) == 0, "%s: %s", sql, mysql_error(side));
}

static long long side_count(const char *sql)
{
    side_exec(sql);
    MYSQL_RES *res = mysql_store_result(side);
    ck_assert_ptr_nonnull(res);
    MYSQL_ROW row = mysql_fetch_row(res);
    ck_assert_ptr_nonnull(row);
    /* the last column: COUNT(*) alone, or SHOW STATUS's Value */
    const char *v = row[mysql_num_fields(res) - 1];
    long long n = v != NULL ? atoll(v) : 0;
    mysql_free_result(res);
    return n;
}

/* A storage on an empty table (and the side connection). */
static struct cm_storage *open_pool(int pool, int64_t timeout_ms)
{
    side = side_conn();
    side_exec("DROP TABLE IF EXISTS " MY_TABLE);
    h_open(&h, CM_ST_TYPE_MYSQL, h_env("CM_TEST_MYSQL_URL"), MY_TABLE, pool, timeout_ms);
    return h.st;
}

static void setup(void)
{
    open_pool(4, 3000);
}

static void close_pool(struct cm_storage *st)
{
    h.st = st;
    h_close(&h);
    mysql_close(side);
}

static void teardown(void)
{
    close_pool(h.st);
}

/* The rows behind the contract suite's round trips (tests/unit/st_contract.h). */
START_TEST(test_row_format)
{
    const char *keys[] = { "cacheme:a:v1", "cacheme:b:v1" };
    const char *vals[] = { "alpha", "bravo" };
    struct h_res r;
    h_sql_run(&h, CM_ST_SET, 2, keys, vals, NULL, -1, &r);
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_int_eq(h_set1(&h, keys[0], "alpha2", 6, 60000), CM_OK);   /* upsert */
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), 2);
    /* expire is naive UTC: about 60 s after UTC_TIMESTAMP() */
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE " WHERE `key` = 'cacheme:a:v1' "
                                "AND TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6), expire) BETWEEN 50 "
                                "AND 60 AND value = 'alpha2'"), 1);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE " WHERE `key` = 'cacheme:b:v1' "
                                "AND expire IS NULL"), 1);
    h_sql_run(&h, CM_ST_DEL, 2, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), 0);
}
END_TEST

START_TEST(test_odd_keys_binary_values)
{
    size_t n = ct_odd_roundtrip(h.st);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), (long long)n);
    for (size_t i = 0; i < n; i++) {
        char esc[256];
        char sql[512];
        mysql_real_escape_string(side, esc, ct_odd_keys[i], strlen(ct_odd_keys[i]));
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM " MY_TABLE " WHERE `key` = '%s' AND LENGTH(value) = 7", esc);
        ck_assert_msg(side_count(sql) == 1, "row for %s", ct_odd_keys[i]);
        ck_assert_int_eq(h_set1(&h, ct_odd_keys[i], "", 0, 5000), CM_OK);   /* empty value */
        ck_assert_int_eq(h_get1(&h, ct_odd_keys[i], "", 0), CM_ST_HIT);
    }
}
END_TEST

static void expire_old(void)
{
    side_exec("UPDATE " MY_TABLE " SET expire = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND "
              "WHERE `key` = 'cacheme:old:v1'");
}

START_TEST(test_expired_rows_are_misses)
{
    h_check_expiry(&h, expire_old);
}
END_TEST

static long long status(const char *name)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SHOW GLOBAL STATUS LIKE '%s'", name);
    return side_count(sql);
}

/* The server counters a test looks at, read together. */
struct my_counts {
    long long execute, prepare, select, insert, del, stmts;
};

static struct my_counts counts(void)
{
    struct my_counts n = {
        .execute = status("Com_stmt_execute"), .prepare = status("Com_stmt_prepare"),
        .select = status("Com_select"),        .insert = status("Com_insert"),
        .del = status("Com_delete"),           .stmts = status("Prepared_stmt_count"),
    };
    return n;
}

/* b - a; reading the counters changes none of them (SHOW STATUS is Com_show_status). */
static struct my_counts delta(struct my_counts a, struct my_counts b)
{
    struct my_counts d = {
        b.execute - a.execute, b.prepare - a.prepare, b.select - a.select,
        b.insert - a.insert,   b.del - a.del,         b.stmts - a.stmts,
    };
    return d;
}

#define ASSERT_COUNTS(d, ex, pr, sel, ins, dl, st)                                              \
    ck_assert_msg((d).execute == (ex) && (d).prepare == (pr) && (d).select == (sel) &&           \
                      (d).insert == (ins) && (d).del == (dl) && (d).stmts == (st),               \
                  "%s:%d: execute %lld prepare %lld select %lld insert %lld delete %lld "        \
                  "prepared %lld",                                                               \
                  __FILE__, __LINE__, (d).execute, (d).prepare, (d).select, (d).insert, (d).del, \
                  (d).stmts)

START_TEST(test_mget_is_one_query)
{
    char names[40][32];
    const char *keys[40];
    const char *vals[40];
    for (size_t i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "cacheme:m%zu:v1", i);
        keys[i] = names[i];
        vals[i] = "v";
    }
    struct h_res r;
    h_sql_run(&h, CM_ST_SET, 40, keys, vals, NULL, -1, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_sql_run(&h, CM_ST_GET, 40, keys, NULL, NULL, 0, &r);   /* prepares the 64-key read */
    h_res_free(&r);
    struct my_counts b0 = counts();
    h_sql_run(&h, CM_ST_GET, 40, keys, NULL, NULL, 0, &r);
    struct my_counts batch = delta(b0, counts());
    ck_assert_int_eq(r.status, CM_OK);
    for (size_t i = 0; i < 40; i++) {
        ck_assert_int_eq(r.result[i], CM_ST_HIT);
    }
    h_res_free(&r);
    /* One execute of the prepared SELECT, no new prepare; MariaDB counts the executed
     * statement's kind in Com_select as well. */
    ASSERT_COUNTS(batch, 1, 0, 1, 0, 0, 0);
    for (size_t i = 0; i < 4; i++) {   /* prepare the 1-key read on every connection */
        ck_assert_int_eq(h_get1(&h, keys[i], "v", 1), CM_ST_HIT);
    }
    struct my_counts s0 = counts();
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(h_get1(&h, keys[i], "v", 1), CM_ST_HIT);
    }
    ASSERT_COUNTS(delta(s0, counts()), 4, 0, 4, 0, 0, 0);
}
END_TEST

/* One connection: each kind and batch size is prepared once, then only executed; reads,
 * upserts and deletes are all COM_STMT_EXECUTE. */
START_TEST(test_statements_prepared_once_per_connection)
{
    struct h_st one;
    h_open(&one, CM_ST_TYPE_MYSQL, h_env("CM_TEST_MYSQL_URL"), MY_TABLE, 1, 3000);
    ck_assert_int_eq(h_get1(&one, "cacheme:warm:v1", NULL, 0), CM_ST_MISS);   /* setup done */
    struct my_counts c0 = counts();
    ck_assert_int_eq(h_set1(&one, "cacheme:p:v1", "one", 3, 60000), CM_OK);
    ASSERT_COUNTS(delta(c0, counts()), 1, 1, 0, 1, 0, 1);   /* the upsert: prepared, executed */
    c0 = counts();
    ck_assert_int_eq(h_set1(&one, "cacheme:p:v1", "two", 3, -1), CM_OK);
    ck_assert_int_eq(h_get1(&one, "cacheme:p:v1", "two", 3), CM_ST_HIT);
    ck_assert_int_eq(h_get1(&one, "cacheme:q:v1", NULL, 0), CM_ST_MISS);
    ASSERT_COUNTS(delta(c0, counts()), 3, 0, 2, 1, 0, 0);
    const char *keys[] = { "cacheme:p:v1", "cacheme:q:v1", "cacheme:r:v1" };
    struct h_res r;
    c0 = counts();
    h_sql_run(&one, CM_ST_GET, 3, keys, NULL, NULL, 0, &r);   /* 3 keys: the 4-key statement */
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_int_eq(r.result[0], CM_ST_HIT);
    ck_assert_int_eq(r.result[1] + r.result[2], CM_ST_MISS + CM_ST_MISS);
    h_res_free(&r);
    h_sql_run(&one, CM_ST_GET, 2, keys, NULL, NULL, 0, &r);   /* 2 keys: the same statement */
    ck_assert_int_eq(r.result[0], CM_ST_HIT);
    h_res_free(&r);
    ASSERT_COUNTS(delta(c0, counts()), 2, 1, 2, 0, 0, 1);
    c0 = counts();
    h_sql_run(&one, CM_ST_DEL, 1, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_sql_run(&one, CM_ST_DEL, 1, keys, NULL, NULL, 0, &r);
    ASSERT_COUNTS(delta(c0, counts()), 2, 1, 0, 0, 2, 1);
    ck_assert_int_eq(h_get1(&one, "cacheme:p:v1", NULL, 0), CM_ST_MISS);
    /* upsert/1, read/1, read/4, delete/1 stay prepared on the server until the connection ends */
    struct my_counts before_close = counts();
    h_close(&one);
    for (int i = 0; i < 50 && delta(before_close, counts()).stmts != -4; i++) {
        usleep(20 * 1000);   /* the server frees them when it sees the connection close */
    }
    ck_assert_int_eq(delta(before_close, counts()).stmts, -4);
}
END_TEST

/* Characters that would matter in SQL text, and a '?' that would matter to a placeholder
 * scanner, as keys; values with NUL bytes (leading, inner, trailing) and 0xff. */
START_TEST(test_bound_keys_and_values_exact)
{
    static const char *const keys[] = {
        "cacheme:what?:v1",
        "cacheme:?, ?) OR 1=1 -- :v1",
        "cacheme:50%_off;\\'\\\"x:v1",
        "cacheme:\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xc3\xa9 \xf0\x9f\x98\x80:v1",
        "cacheme:trailing space :v1",
    };
    static const char val[] = "\0lead\0inner'\\\xff\0";
    size_t n = CM_ARRAY_LEN(keys);
    const char *vals[CM_ARRAY_LEN(keys)];
    size_t vlens[CM_ARRAY_LEN(keys)];
    for (size_t i = 0; i < n; i++) {
        vals[i] = val;
        vlens[i] = sizeof(val) - 1 - i;   /* every one ends differently, some in NUL */
    }
    struct h_res r;
    h_sql_run(&h, CM_ST_SET, n, keys, vals, vlens, 60000, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_sql_run(&h, CM_ST_GET, n, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, CM_OK);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(r.result[i] == CM_ST_HIT, "miss for %s", keys[i]);
        ck_assert_uint_eq(r.vlen[i], vlens[i]);
        ck_assert_mem_eq(r.val[i], val, vlens[i]);
    }
    h_res_free(&r);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), (long long)n);
    /* stored exactly: the key's bytes and the value's hex, read back by another client */
    for (size_t i = 0; i < n; i++) {
        char esc[256];
        char hex[64];
        char sql[640];
        mysql_real_escape_string(side, esc, keys[i], strlen(keys[i]));
        mysql_hex_string(hex, val, vlens[i]);
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM " MY_TABLE " WHERE BINARY `key` = '%s' AND HEX(value) = "
                 "'%s' AND expire > UTC_TIMESTAMP(6)",
                 esc, hex);
        ck_assert_msg(side_count(sql) == 1, "row for %s", keys[i]);
    }
    /* near misses of those keys are misses */
    const char *near[] = { "cacheme:what:v1", "cacheme:trailing space:v1", "cacheme:%:v1" };
    h_sql_run(&h, CM_ST_GET, CM_ARRAY_LEN(near), near, NULL, NULL, 0, &r);
    for (size_t i = 0; i < CM_ARRAY_LEN(near); i++) {
        ck_assert_int_eq(r.result[i], CM_ST_MISS);
    }
    h_res_free(&r);
    h_sql_run(&h, CM_ST_DEL, n, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), 0);
}
END_TEST

/* A statement the server refuses to prepare (its table is gone) fails the op as a server error
 * (the connection stays up) and is not kept: once the table is back, the next op prepares it
 * again on the same connection. */
START_TEST(test_failed_prepare_is_not_kept)
{
    struct h_st one;
    h_open(&one, CM_ST_TYPE_MYSQL, h_env("CM_TEST_MYSQL_URL"), MY_TABLE, 1, 3000);
    ck_assert_int_eq(h_set1(&one, "cacheme:fp:v1", "x", 1, -1), CM_OK);   /* connected, set up */
    side_exec("DROP TABLE " MY_TABLE);
    struct my_counts c0 = counts();
    long long rp0 = status("Com_stmt_reprepare");
    ck_assert_int_eq(h_get1(&one, "cacheme:fp:v1", NULL, 0), -1);
    ck_assert_uint_eq(one.st->stats.errors, 1);
    struct cm_buf b;
    cm_buf_init(&b);
    cm_sql_schema(&b, CM_SQL_MYSQL, MY_TABLE);
    while (cm_buf_used(&b) > 0 && strchr(";\n", cm_buf_start(&b)[cm_buf_used(&b) - 1])) {
        b.len--;
    }
    cm_buf_append(&b, "", 1);
    side_exec(cm_buf_start(&b));
    cm_buf_deinit(&b);
    ck_assert_int_eq(h_get1(&one, "cacheme:fp:v1", NULL, 0), CM_ST_MISS);
    ck_assert_int_eq(h_set1(&one, "cacheme:fp:v1", "y", 1, -1), CM_OK);
    ck_assert_int_eq(h_get1(&one, "cacheme:fp:v1", "y", 1), CM_ST_HIT);
    struct my_counts d = delta(c0, counts());
    long long rp = status("Com_stmt_reprepare") - rp0;
    /* Two prepares of the read (refused, then kept); the server re-prepares the kept upsert by
     * itself (its table changed), which it counts in Com_stmt_prepare too. */
    ck_assert_msg(d.prepare - rp == 2 && rp == 1 && d.execute == 4,
                  "prepare %lld (reprepare %lld) execute %lld", d.prepare, rp, d.execute);
    h_close(&one);
}
END_TEST

#define BIG_N 600   /* more keys than the largest prepared batch (512) */

/* What a BIG_N-key op came back with (h_res holds only H_MAX items). */
struct big_res {
    bool done;
    int status;
    size_t hits;
    size_t bad;   /* hits whose value is not "val-<index>" */
};

static void big_done(struct cm_st_op *op, void *arg)
{
    struct big_res *r = arg;
    r->done = true;
    r->status = op->status;
    for (size_t i = 0; i < op->nitems; i++) {
        const struct cm_st_item *it = &op->items[i];
        if (it->result != CM_ST_HIT) {
            continue;
        }
        char want[32];
        int n = snprintf(want, sizeof(want), "val-%zu", i % BIG_N);
        r->hits++;
        r->bad += it->vlen != (size_t)n || memcmp(it->val, want, (size_t)n) != 0;
    }
}

/* A GET of n keys, its results checked by big_done (h_run keeps only H_MAX of them). */
static void big_get(size_t n, const char *const *keys, struct big_res *r)
{
    memset(r, 0, sizeof(*r));
    struct cm_st_op *op = cm_st_op_new(CM_ST_GET, n);
    for (size_t i = 0; i < n; i++) {
        cm_st_op_set_key(op, i, keys[i], strlen(keys[i]));
    }
    cm_storage_submit(h.st, op, big_done, r);
    while (!r->done) {
        event_base_loop(h.base, EVLOOP_ONCE);
    }
}

START_TEST(test_batch_larger_than_largest_size)
{
    static char names[BIG_N + 10][32];
    static char vbufs[BIG_N][32];
    static const char *keys[BIG_N + 10];
    static const char *vals[BIG_N];
    for (size_t i = 0; i < BIG_N + 10; i++) {
        snprintf(names[i], sizeof(names[i]), "cacheme:big%04zu:v1", i);
        keys[i] = names[i];
        if (i < BIG_N) {
            snprintf(vbufs[i], sizeof(vbufs[i]), "val-%zu", i);
            vals[i] = vbufs[i];
        }
    }
    struct h_res hr;
    struct big_res r;
    struct my_counts c0 = counts();
    h_sql_run(&h, CM_ST_SET, BIG_N, keys, vals, NULL, -1, &hr);   /* 512 + 88 rows (padded to 256) */
    ck_assert_int_eq(hr.status, CM_OK);
    struct my_counts d = delta(c0, counts());
    ck_assert_msg(d.execute == 2 && d.insert == 2, "execute %lld insert %lld", d.execute,
                  d.insert);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), BIG_N);
    c0 = counts();
    big_get(BIG_N + 10, keys, &r);   /* 512 + 98 keys: two executes */
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_uint_eq(r.hits, BIG_N);
    ck_assert_uint_eq(r.bad, 0);
    ck_assert_int_eq(delta(c0, counts()).execute, 2);
    h_sql_run(&h, CM_ST_DEL, BIG_N, keys, NULL, NULL, 0, &hr);
    ck_assert_int_eq(hr.status, CM_OK);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE), 0);
}
END_TEST

START_TEST(test_oversize_value_refused)
{
    static char big[70000];
    memset(big, 'x', sizeof(big));
    big[0] = '\0';
    ck_assert_int_eq(h_set1(&h, "cacheme:ok:v1", big, 60000, -1), CM_OK);
    ck_assert_int_eq(h_get1(&h, "cacheme:ok:v1", big, 60000), CM_ST_HIT);
    ck_assert_int_eq(h_set1(&h, "cacheme:big:v1", big, sizeof(big), -1), CM_ERR);
    ck_assert_uint_eq(h.st->stats.rejected, 1);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM " MY_TABLE " WHERE `key` = 'cacheme:big:v1'"),
                     0);
    /* in a multi-key write only the oversize value is refused */
    const char *keys[] = { "cacheme:big:v1", "cacheme:small:v1" };
    const char *vals[] = { big, "s" };
    size_t vlens[] = { sizeof(big), 1 };
    struct h_res r;
    h_sql_run(&h, CM_ST_SET, 2, keys, vals, vlens, -1, &r);
    ck_assert_int_eq(r.status, CM_ERR);
    ck_assert_uint_eq(h.st->stats.rejected, 2);
    ck_assert_int_eq(h_get1(&h, "cacheme:small:v1", "s", 1), CM_ST_HIT);
    ck_assert_int_eq(h_get1(&h, "cacheme:big:v1", NULL, 0), CM_ST_MISS);

    /* A MEDIUMBLOB table takes it. */
    side_exec("DROP TABLE IF EXISTS " MY_BIG_TABLE);
    side_exec("CREATE TABLE " MY_BIG_TABLE " LIKE " MY_TABLE);
    side_exec("ALTER TABLE " MY_BIG_TABLE " MODIFY value MEDIUMBLOB");
    struct h_st bh;
    h_open(&bh, CM_ST_TYPE_MYSQL, h_env("CM_TEST_MYSQL_URL"), MY_BIG_TABLE, 1, 3000);
    ck_assert_int_eq(h_set1(&bh, "cacheme:big:v1", big, sizeof(big), -1), CM_OK);
    ck_assert_int_eq(h_get1(&bh, "cacheme:big:v1", big, sizeof(big)), CM_ST_HIT);
    ck_assert_uint_eq(bh.st->stats.rejected, 0);
    h_close(&bh);
    side_exec("DROP TABLE " MY_BIG_TABLE);
}
END_TEST

START_TEST(test_server_restart_reconnects)
{
    mysql_close(side);
    h_check_restart(&h, "CM_TEST_MYSQL_RESTART_CMD", "mariadb");
    side = side_conn();
    /* The statements died with the old server; the new one has counted since it started: the
     * connection of cacheme:rs:v1 prepared its read and its upsert again, once each. */
    struct my_counts now = counts();
    ck_assert_msg(now.prepare == 2 && now.stmts == 2, "after the restart: prepare %lld, "
                  "prepared %lld", now.prepare, now.stmts);
    ck_assert_int_eq(h_get1(&h, "cacheme:rs:v1", "after", 5), CM_ST_HIT);
    ASSERT_COUNTS(delta(now, counts()), 1, 0, 1, 0, 0, 0);
}
END_TEST

/* Only the unresolvable name: "localhost" is MariaDB's unix socket, deliberately not resolved. */
START_TEST(test_host_names)
{
    h_check_host_names(CM_ST_TYPE_MYSQL, h_env("CM_TEST_MYSQL_URL"), MY_TABLE, false);
}
END_TEST

START_TEST(test_server_down_is_prompt_miss)
{
    /* Port 1 on loopback: nothing listens, the connect is refused at once. */
    h_check_down(CM_ST_TYPE_MYSQL, "mysql://cache:cachepw@127.0.0.1:1/cachetest", MY_TABLE);
}
END_TEST

START_TEST(test_schema_matches_script)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_sql_schema(&b, CM_SQL_MYSQL, "cacheme_data");
    FILE *f = fopen("storages/scripts/mysql.sql", "r");
    ck_assert_msg(f != NULL, "run from the repository root");
    char file[4096];
    size_t n = fread(file, 1, sizeof(file), f);
    fclose(f);
    ck_assert_uint_eq(n, cm_buf_used(&b));
    ck_assert_mem_eq(file, cm_buf_start(&b), n);
    cm_buf_deinit(&b);
    ck_assert_int_eq(h_set1(&h, "cacheme:s:v1", "x", 1, -1), CM_OK);
    ck_assert_int_eq(side_count("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                                "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '" MY_TABLE "' AND ("
                                "(COLUMN_NAME = 'id' AND DATA_TYPE = 'int' AND "
                                " EXTRA LIKE '%auto_increment%') OR "
                                "(COLUMN_NAME = 'key' AND DATA_TYPE = 'varchar' AND "
                                " CHARACTER_MAXIMUM_LENGTH = 512) OR "
                                "(COLUMN_NAME = 'value' AND DATA_TYPE = 'blob') OR "
                                "(COLUMN_NAME = 'expire' AND COLUMN_TYPE = 'datetime(6)') OR "
                                "(COLUMN_NAME = 'updated_at' AND COLUMN_TYPE = 'datetime(6)'))"),
                     5);
    ck_assert_int_eq(side_count("SELECT COUNT(DISTINCT INDEX_NAME) FROM information_schema."
                                "STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '"
                                MY_TABLE "' AND ((INDEX_NAME = 'ix_" MY_TABLE "_expire' AND "
                                "COLUMN_NAME = 'expire') OR (NON_UNIQUE = 0 AND COLUMN_NAME = "
                                "'key') OR INDEX_NAME = 'PRIMARY')"),
                     3);
    struct cm_conf_storage bad = h.conf;
    char err[200];
    bad.table = (char *)"x` (a int); DROP TABLE y; --";
    ck_assert_ptr_null(cm_storage_new(&bad, h.base, err, sizeof(err)));
    ck_assert_msg(strstr(err, "invalid table name") != NULL, "%s", err);
}
END_TEST

START_TEST(test_cacheme_reads_row)
{
    ck_assert_int_eq(h_set1(&h, ct_odd_keys[0], "{\"a\": 1}", 8, 60000), CM_OK);
    ck_assert_int_eq(h_set1(&h, "cacheme:gone:v1", "x", 1, -1), CM_OK);
    side_exec("UPDATE " MY_TABLE " SET expire = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND "
              "WHERE `key` = 'cacheme:gone:v1'");
    static const char *const cases[][2] = {
        { "63616368656d653a6974" "27733a7631", "HIT 7b2261223a20317d\n" },   /* cacheme:it's:v1 */
        { "63616368656d653a676f6e653a7631", "MISS\n" },                      /* cacheme:gone:v1 */
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "/usr/bin/python3 tests/interop/sql_read.py mysql '%s' %s %s",
                 h_env("CM_TEST_MYSQL_URL"), MY_TABLE, cases[i][0]);
        FILE *p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        char out[256] = "";
        ck_assert_ptr_nonnull(fgets(out, sizeof(out), p));
        ck_assert_int_eq(pclose(p), 0);
        ck_assert_str_eq(out, cases[i][1]);
    }
}
END_TEST

static Suite *mysql_suite(void)
{
    Suite *s = suite_create("st_mysql");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_row_format);
    tcase_add_test(tc, test_odd_keys_binary_values);
    tcase_add_test(tc, test_expired_rows_are_misses);
    tcase_add_test(tc, test_schema_matches_script);
    tcase_add_test(tc, test_oversize_value_refused);
    tcase_add_test(tc, test_cacheme_reads_row);
    tcase_add_test(tc, test_server_down_is_prompt_miss);
    tcase_add_test(tc, test_host_names);
    tcase_add_test(tc, test_mget_is_one_query);
    tcase_add_test(tc, test_statements_prepared_once_per_connection);
    tcase_add_test(tc, test_bound_keys_and_values_exact);
    tcase_add_test(tc, test_batch_larger_than_largest_size);
    tcase_add_test(tc, test_failed_prepare_is_not_kept);
    tcase_add_test(tc, test_server_restart_reconnects);
    suite_add_tcase(s, tc);
    static const struct ct_fixture fx = { .name = "mysql", .open = open_pool, .close = close_pool,
                                          .key_rules = CM_KEY_UTF8 | CM_KEY_MAX_CHARS };
    suite_add_tcase(s, ct_tcase(&fx));
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mysql_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
