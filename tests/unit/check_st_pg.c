/* postgresql:// storage against a real PostgreSQL (CM_TEST_PG_URL). */
#include "daemon/buf.h"
#include "storages/sql_common.h"
#include "tests/unit/sql_harness.h"
#include "tests/unit/st_contract.h"

#include "conf/url.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <stdio.h>

#define PG_TABLE "cm_check_pg"

static struct h_st h;
static PGconn *side;   /* the test's own blocking connection, for checks behind the storage */

static PGconn *side_conn(void)
{
    PGconn *c = PQconnectdb(h_env("CM_TEST_PG_URL"));
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "side connection: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SET client_min_messages = warning");
    PQclear(r);
    return c;
}

static void side_exec(const char *sql, int nparams, const char *const *params)
{
    PGresult *r = PQexecParams(side, sql, nparams, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

static long long side_count(const char *sql)
{
    PGresult *r = PQexec(side, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    long long n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

/* A storage on an empty table (and the side connection). */
static struct cm_storage *open_pool(int pool, int64_t timeout_ms)
{
    side = side_conn();
    side_exec("DROP TABLE IF EXISTS " PG_TABLE, 0, NULL);
    h_open(&h, CM_ST_TYPE_PG, h_env("CM_TEST_PG_URL"), PG_TABLE, pool, timeout_ms);
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
    PQfinish(side);
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
    /* One row per key, expire set only for the ttl write, bare bytes in value. */
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE), 2);
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE " WHERE key = 'cacheme:a:v1' "
                                "AND expire > now() + interval '50 seconds' "
                                "AND value = 'alpha2'::bytea"), 1);
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE " WHERE key = 'cacheme:b:v1' "
                                "AND expire IS NULL"), 1);
    h_sql_run(&h, CM_ST_DEL, 2, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE), 0);
}
END_TEST

START_TEST(test_odd_keys_binary_values)
{
    size_t n = ct_odd_roundtrip(h.st);
    /* The rows hold exactly these keys (nothing was escaped into the data), and nothing else. */
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE), (long long)n);
    for (size_t i = 0; i < n; i++) {
        PGresult *q = PQexecParams(side, "SELECT length(value) FROM " PG_TABLE " WHERE key = $1",
                                   1, NULL, &ct_odd_keys[i], NULL, NULL, 0);
        ck_assert_int_eq(PQntuples(q), 1);
        ck_assert_str_eq(PQgetvalue(q, 0, 0), "7");
        PQclear(q);
        ck_assert_int_eq(h_set1(&h, ct_odd_keys[i], "", 0, 5000), CM_OK);   /* empty value */
        ck_assert_int_eq(h_get1(&h, ct_odd_keys[i], "", 0), CM_ST_HIT);
    }
    /* A key with a NUL byte cannot be a text key: skipped (the write is OK for the others,
     * issue 14 defect 15), never truncated into another key. */
    struct h_res r;
    const char *nk = "cacheme:n\0ul:v1";
    struct cm_st_op *op = ct_op(CM_ST_SET, 1, &nk, (const size_t[]){ 15 }, (const char *[]){ "x" },
                                -1);
    memset(&r, 0, sizeof(r));
    cm_storage_submit(h.st, op, h_sql_done, &r);
    while (!r.done) {
        event_base_loop(h.base, EVLOOP_ONCE);
    }
    ck_assert_int_eq(r.status, CM_OK);
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE " WHERE key LIKE 'cacheme:n%'"),
                     0);
}
END_TEST

static void expire_old(void)
{
    side_exec("UPDATE " PG_TABLE " SET expire = now() - interval '1 second' "
              "WHERE key = 'cacheme:old:v1'", 0, NULL);
}

START_TEST(test_expired_rows_are_misses)
{
    h_check_expiry(&h, expire_old);
}
END_TEST

/* A counting TCP proxy in front of PostgreSQL, on the storage's own loop: it forwards bytes both
 * ways and counts the frontend's Parse ('P') and simple Query ('Q') messages, i.e. statements. */
struct px_side {
    struct bufferevent *peer;   /* where this side's input goes */
    bool frontend;              /* client -> server direction: parse messages */
    bool started;               /* the untyped startup message has passed */
};

static long px_statements;

static void px_count(struct px_side *s, struct evbuffer *in)
{
    for (;;) {
        unsigned char hdr[5];
        size_t hlen = s->started ? 5 : 4;
        if (evbuffer_get_length(in) < hlen) {
            return;
        }
        evbuffer_copyout(in, hdr, hlen);
        const unsigned char *l = s->started ? hdr + 1 : hdr;
        size_t len = ((size_t)l[0] << 24 | (size_t)l[1] << 16 | (size_t)l[2] << 8 | l[3]);
        size_t total = (s->started ? 1 : 0) + len;
        if (evbuffer_get_length(in) < total) {
            return;
        }
        if (s->started && (hdr[0] == 'P' || hdr[0] == 'Q')) {
            px_statements++;
        }
        s->started = true;
        evbuffer_remove_buffer(in, bufferevent_get_output(s->peer), total);
    }
}

static void px_read(struct bufferevent *bev, void *arg)
{
    struct px_side *s = arg;
    if (s->frontend) {
        px_count(s, bufferevent_get_input(bev));
    } else {
        bufferevent_write_buffer(s->peer, bufferevent_get_input(bev));
    }
}

static void px_event(struct bufferevent *bev, short what, void *arg)
{
    struct px_side *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        bufferevent_free(s->peer);
        bufferevent_free(bev);
    }
}

static struct px_side px_sides[64];
static size_t px_nsides;
static int px_upstream_port;

static void px_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct event_base *base = arg;
    CM_UNUSED(l);
    CM_UNUSED(sa);
    CM_UNUSED(salen);
    ck_assert_uint_lt(px_nsides + 2, CM_ARRAY_LEN(px_sides));
    struct bufferevent *down = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct bufferevent *up = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(px_upstream_port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bufferevent_socket_connect(up, (struct sockaddr *)&sin, sizeof(sin)), 0);
    struct px_side *ds = &px_sides[px_nsides++];
    struct px_side *us = &px_sides[px_nsides++];
    *ds = (struct px_side){ .peer = up, .frontend = true };
    *us = (struct px_side){ .peer = down };
    bufferevent_setcb(down, px_read, NULL, px_event, ds);
    bufferevent_setcb(up, px_read, NULL, NULL, us);
    bufferevent_enable(down, EV_READ);
    bufferevent_enable(up, EV_READ);
}

START_TEST(test_mget_is_one_query)
{
    struct cm_url u;
    char err[128];
    ck_assert_int_eq(cm_url_parse(h_env("CM_TEST_PG_URL"), &u, err, sizeof(err)), CM_OK);
    px_upstream_port = u.port ? u.port : 5432;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct evconnlistener *l = evconnlistener_new_bind(h.base, px_accept, h.base,
                                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                                       16, (struct sockaddr *)&sin, sizeof(sin));
    ck_assert_ptr_nonnull(l);
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen);
    char url[512];
    snprintf(url, sizeof(url), "postgresql://%s%s%s@127.0.0.1:%d/%s?sslmode=disable",
             u.user ? u.user : "postgres", u.password ? ":" : "", u.password ? u.password : "",
             ntohs(bound.sin_port), u.path ? u.path : "");
    cm_url_deinit(&u);
    struct h_st ph = h;   /* the proxied storage shares the test's loop */
    char perr[256];
    ph.conf.url = url;
    ph.conf.pool_size = 1;
    ph.st = cm_storage_new(&ph.conf, h.base, perr, sizeof(perr));
    ck_assert_msg(ph.st != NULL, "%s", perr);

    char names[40][32];
    const char *keys[40];
    const char *vals[40];
    for (size_t i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "cacheme:m%zu:v1", i);
        keys[i] = names[i];
        vals[i] = "v";
    }
    struct h_res r;
    h_sql_run(&ph, CM_ST_SET, 40, keys, vals, NULL, -1, &r);   /* also waits for the connection */
    ck_assert_int_eq(r.status, CM_OK);
    long before = px_statements;
    h_sql_run(&ph, CM_ST_GET, 40, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, CM_OK);
    for (size_t i = 0; i < 40; i++) {
        ck_assert_int_eq(r.result[i], CM_ST_HIT);
    }
    h_res_free(&r);
    ck_assert_int_eq(px_statements - before, 1);
    h_sql_run(&ph, CM_ST_DEL, 40, keys, NULL, NULL, 0, &r);
    ck_assert_int_eq(px_statements - before, 2);
    ck_assert_int_eq(side_count("SELECT count(*) FROM " PG_TABLE), 0);
    cm_storage_free(ph.st);
    h_spin(&h, 50);
    evconnlistener_free(l);
}
END_TEST

START_TEST(test_server_restart_reconnects)
{
    h_check_restart(&h, "CM_TEST_PG_RESTART_CMD", "postgres");
}
END_TEST

START_TEST(test_server_down_is_prompt_miss)
{
    /* Port 1 on loopback: nothing listens, the connect is refused at once. */
    h_check_down(CM_ST_TYPE_PG, "postgresql://postgres@127.0.0.1:1/cachetest", PG_TABLE);
}
END_TEST

START_TEST(test_host_names)
{
    h_check_host_names(CM_ST_TYPE_PG, h_env("CM_TEST_PG_URL"), PG_TABLE, true);
}
END_TEST

START_TEST(test_schema_matches_script)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_sql_schema(&b, CM_SQL_PG, "cacheme_data");
    FILE *f = fopen("storages/scripts/postgresql.sql", "r");
    ck_assert_msg(f != NULL, "run from the repository root");
    char file[4096];
    size_t n = fread(file, 1, sizeof(file), f);
    fclose(f);
    ck_assert_uint_eq(n, cm_buf_used(&b));
    ck_assert_mem_eq(file, cm_buf_start(&b), n);
    cm_buf_deinit(&b);
    /* The created table has Cacheme's columns and indexes. */
    ck_assert_int_eq(h_set1(&h, "cacheme:s:v1", "x", 1, -1), CM_OK);
    ck_assert_int_eq(side_count("SELECT count(*) FROM information_schema.columns WHERE "
                                "table_name = '" PG_TABLE "' AND ("
                                "(column_name = 'id' AND data_type = 'integer') OR "
                                "(column_name = 'key' AND data_type = 'character varying' AND "
                                " character_maximum_length = 512) OR "
                                "(column_name = 'value' AND data_type = 'bytea') OR "
                                "(column_name = 'expire' AND "
                                " data_type = 'timestamp with time zone') OR "
                                "(column_name = 'updated_at' AND "
                                " data_type = 'timestamp with time zone'))"),
                     5);
    ck_assert_int_eq(side_count("SELECT count(*) FROM pg_indexes WHERE tablename = '" PG_TABLE
                                "' AND indexname IN ('ix_" PG_TABLE "_expire', '" PG_TABLE
                                "_key_key', '" PG_TABLE "_pkey')"),
                     3);
    struct cm_conf_storage bad = h.conf;
    char err[200];
    bad.table = (char *)"x; DROP TABLE y";
    ck_assert_ptr_null(cm_storage_new(&bad, h.base, err, sizeof(err)));
    ck_assert_msg(strstr(err, "invalid table name") != NULL, "%s", err);
}
END_TEST

START_TEST(test_cacheme_reads_row)
{
    ck_assert_int_eq(h_set1(&h, ct_odd_keys[0], "{\"a\": 1}", 8, 60000), CM_OK);
    char cmd[1024];
    /* the key is passed hex-encoded so the shell never sees it */
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 tests/interop/sql_read.py postgresql '%s' %s 63616368656d653a6974"
             "27733a7631",
             h_env("CM_TEST_PG_URL"), PG_TABLE);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char out[256] = "";
    ck_assert_ptr_nonnull(fgets(out, sizeof(out), p));
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_str_eq(out, "HIT 7b2261223a20317d\n");
}
END_TEST

static Suite *pg_suite(void)
{
    Suite *s = suite_create("st_pg");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_row_format);
    tcase_add_test(tc, test_host_names);
    tcase_add_test(tc, test_odd_keys_binary_values);
    tcase_add_test(tc, test_expired_rows_are_misses);
    tcase_add_test(tc, test_schema_matches_script);
    tcase_add_test(tc, test_cacheme_reads_row);
    tcase_add_test(tc, test_server_down_is_prompt_miss);
    tcase_add_test(tc, test_mget_is_one_query);
    tcase_add_test(tc, test_server_restart_reconnects);
    suite_add_tcase(s, tc);
    static const struct ct_fixture fx = { .name = "postgresql", .open = open_pool, .close = close_pool,
                                          .key_rules = CM_KEY_NO_NUL | CM_KEY_UTF8 | CM_KEY_MAX_CHARS };
    suite_add_tcase(s, ct_tcase(&fx));
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pg_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
