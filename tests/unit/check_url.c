/* Storage URL parsing: every part of each scheme we accept, percent-decoding, and the exact
 * reason for each malformed URL. */
#include "conf/url.h"
#include "daemon/alloc.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* Expected parts; NULL = absent. */
static const struct {
    const char *url;
    const char *scheme, *user, *password, *host;
    int port;
    const char *path, *query;
} ok_cases[] = {
    {"redis://127.0.0.1:6379/0", "redis", NULL, NULL, "127.0.0.1", 6379, "0", NULL},
    {"redis://:s3cret@localhost:6380/2", "redis", NULL, "s3cret", "localhost", 6380, "2", NULL},
    {"redis://default:p%40ss%3Aw@h:1", "redis", "default", "p@ss:w", "h", 1, NULL, NULL},
    {"redis://h", "redis", NULL, NULL, "h", 0, NULL, NULL},
    {"redis://h:6379/", "redis", NULL, NULL, "h", 6379, NULL, NULL},
    {"REDIS://H:1", "redis", NULL, NULL, "H", 1, NULL, NULL},
    {"redis://[::1]:6379/0", "redis", NULL, NULL, "::1", 6379, "0", NULL},
    {"redis://[fe80::1]", "redis", NULL, NULL, "fe80::1", 0, NULL, NULL},
    {"postgresql://user:pw@127.0.0.1:5432/db", "postgresql", "user", "pw", "127.0.0.1", 5432, "db",
     NULL},
    {"postgresql://postgres@127.0.0.1:15432/cachetest", "postgresql", "postgres", NULL, "127.0.0.1",
     15432, "cachetest", NULL},
    {"postgres://u%20x:p%2Fw@db.example.com/my%20db?sslmode=disable", "postgres", "u x", "p/w",
     "db.example.com", 0, "my db", "sslmode=disable"},
    {"mysql://cache:cachepw@127.0.0.1:13306/cachetest", "mysql", "cache", "cachepw", "127.0.0.1",
     13306, "cachetest", NULL},
    {"mysql://u:@h/d", "mysql", "u", NULL, "h", 0, "d", NULL},
    {"mysql://u:p@ss@h/d", "mysql", "u", "p@ss", "h", 0, "d", NULL},
    {"mongodb://127.0.0.1:27018/?serverSelectionTimeoutMS=3000", "mongodb", NULL, NULL, "127.0.0.1",
     27018, NULL, "serverSelectionTimeoutMS=3000"},
    {"mongodb://127.0.0.1:27017", "mongodb", NULL, NULL, "127.0.0.1", 27017, NULL, NULL},
    {"mongodb://u:p@h1:1,h2:2/admin?replicaSet=rs", "mongodb", "u", "p", "h1:1,h2:2", 0, "admin",
     "replicaSet=rs"},
    {"sqlite:///var/lib/cachemed/cache.db", "sqlite", NULL, NULL, NULL, 0,
     "/var/lib/cachemed/cache.db", NULL},
    {"sqlite:///tmp/a%20b.db?mode=rwc", "sqlite", NULL, NULL, NULL, 0, "/tmp/a b.db", "mode=rwc"},
    {"sqlite://cache.db", "sqlite", NULL, NULL, NULL, 0, "cache.db", NULL},
    {"sqlite://data/c.db", "sqlite", NULL, NULL, NULL, 0, "data/c.db", NULL},
    {"local://lru", "local", NULL, NULL, "lru", 0, NULL, NULL},
    {"local://tlfu", "local", NULL, NULL, "tlfu", 0, NULL, NULL},
    {"mongodb+srv://cluster0.example.net/", "mongodb+srv", NULL, NULL, "cluster0.example.net", 0,
     NULL, NULL},
};

static void assert_part(const char *what, const char *got, const char *want, const char *url)
{
    if (want == NULL) {
        ck_assert_msg(got == NULL, "%s: %s = '%s', want absent", url, what, got);
    } else {
        ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s: %s = '%s', want '%s'", url, what,
                      got != NULL ? got : "(null)", want);
    }
}

START_TEST(test_url_ok)
{
    struct cm_url u;
    char err[128] = "";
    size_t used = cm_alloc_used();
    int rc = cm_url_parse(ok_cases[_i].url, &u, err, sizeof(err));
    ck_assert_msg(rc == CM_OK, "%s: %s", ok_cases[_i].url, err);
    assert_part("scheme", u.scheme, ok_cases[_i].scheme, ok_cases[_i].url);
    assert_part("user", u.user, ok_cases[_i].user, ok_cases[_i].url);
    assert_part("password", u.password, ok_cases[_i].password, ok_cases[_i].url);
    assert_part("host", u.host, ok_cases[_i].host, ok_cases[_i].url);
    ck_assert_int_eq(u.port, ok_cases[_i].port);
    assert_part("path", u.path, ok_cases[_i].path, ok_cases[_i].url);
    assert_part("query", u.query, ok_cases[_i].query, ok_cases[_i].url);
    cm_url_deinit(&u);
    ck_assert_ptr_null(u.scheme);
    ck_assert_uint_eq(cm_alloc_used(), used);
    cm_url_deinit(&u); /* twice is harmless */
}
END_TEST

static const struct {
    const char *url;
    const char *err;
} bad_cases[] = {
    {"redis", "expected scheme://..."},
    {"://h", "expected scheme://..."},
    {"1redis://h", "bad scheme"},
    {"re dis://h", "bad scheme"},
    {"redis://h:0", "port 0 out of range 1..65535"},
    {"redis://h:65536", "port 65536 out of range 1..65535"},
    {"redis://h:", "bad port ''"},
    {"redis://h:12ab", "bad port '12ab'"},
    {"redis://h:123456", "bad port '123456'"},
    {"redis://[::1", "missing ']' after IPv6 address"},
    {"redis://[::1]x", "junk after ']'"},
    {"redis://[]:1", "empty host"},
    {"redis://h h:1", "space or control character in URL"},
    {"redis://h\t:1", "space or control character in URL"},
    {"redis://h/0#frag", "fragments ('#') are not allowed"},
    {"redis://h#frag", "fragments ('#') are not allowed"},
    {"redis://ho$t:1", "bad character in host"},
    {"mysql://u%zz:p@h/d", "bad percent-encoding in user"},
    {"mysql://u:p%4@h/d", "bad percent-encoding in password"},
    {"mysql://u:p@h/d%", "bad percent-encoding in path"},
    {"mysql://u:p@h/d%00x", "bad percent-encoding in path"},
    {"sqlite:///a%2", "bad percent-encoding in path"},
};

START_TEST(test_url_bad)
{
    struct cm_url u;
    char err[128] = "";
    size_t used = cm_alloc_used();
    ck_assert_int_eq(cm_url_parse(bad_cases[_i].url, &u, err, sizeof(err)), CM_ERR);
    ck_assert_msg(strcmp(err, bad_cases[_i].err) == 0, "%s: got '%s', want '%s'", bad_cases[_i].url,
                  err, bad_cases[_i].err);
    /* Nothing is left to free after a failure. */
    ck_assert_ptr_null(u.scheme);
    ck_assert_ptr_null(u.host);
    ck_assert_ptr_null(u.user);
    ck_assert_uint_eq(cm_alloc_used(), used);
}
END_TEST

START_TEST(test_url_small_err_buffer)
{
    struct cm_url u;
    char err[8];
    ck_assert_int_eq(cm_url_parse("redis://h:99999", &u, err, sizeof(err)), CM_ERR);
    ck_assert_str_eq(err, "port 99");
    ck_assert_int_eq(cm_url_parse("redis", &u, NULL, 0), CM_ERR);
}
END_TEST

static Suite *url_suite(void)
{
    Suite *s = suite_create("url");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 10);
    tcase_add_loop_test(tc, test_url_ok, 0, (int)CM_ARRAY_LEN(ok_cases));
    tcase_add_loop_test(tc, test_url_bad, 0, (int)CM_ARRAY_LEN(bad_cases));
    tcase_add_test(tc, test_url_small_err_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(url_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
