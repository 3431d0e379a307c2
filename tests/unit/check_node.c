/* Key templates: parsing, leftmost-shortest matching, storage keys, loader URLs. */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"
#include "daemon/node.h"
#include "storages/storage.h"

#include <check.h>
#include <string.h>

struct match_case {
    const char *tpl;
    const char *key;
    bool match;
    const char *params;   /* "name=value;name=value" */
};

static const struct match_case cases[] = {
    { "user:{id}:info", "user:1:info", true, "id=1" },
    { "user:{id}:info", "user::info", false, NULL },
    { "user:{id}:info", "user:1:2:info", true, "id=1:2" },
    { "user:{id}:info", "user:1:infox", false, NULL },
    { "user:{id}:info", "xuser:1:info", false, NULL },
    { "{key}", "anything at all", true, "key=anything at all" },
    { "{key}", "", false, NULL },
    { "a{x}b{y}c", "a1b2b3c", true, "x=1;y=2b3" },
    { "{a}:{b}", "x:y:z", true, "a=x;b=y:z" },
    { "pre{a}", "pre", false, NULL },
    { "pre{a}", "pref", true, "a=f" },
    { "ping", "ping", true, "" },
    { "ping", "pin", false, NULL },
    { "ping", "pingx", false, NULL },
    { "x{a}y", "xyyy", true, "a=yy" },
    { "{a}.{b}", "a.b.c", true, "a=a;b=b.c" },
    { "k:{a}:{b}:end", "k:1:2:3:end", true, "a=1;b=2:3" },
    { "k:{a}:{b}:end", "k:1::end", false, NULL },
};

static void params_str(const struct cm_params *p, char *out, size_t outsz)
{
    out[0] = '\0';
    for (size_t i = 0; i < p->n; i++) {
        size_t len = strlen(out);
        snprintf(out + len, outsz - len, "%s%.*s=%.*s", i ? ";" : "", (int)p->name_len[i],
                 p->name[i], (int)p->val_len[i], p->val[i]);
    }
}

START_TEST(test_match_table)
{
    const struct match_case *mc = &cases[_i];
    struct cm_tpl t;
    struct cm_params p;
    char err[128], got[256];
    ck_assert_int_eq(cm_tpl_parse(&t, mc->tpl, err, sizeof(err)), CM_OK);
    bool m = cm_tpl_match(&t, mc->key, strlen(mc->key), &p);
    ck_assert_msg(m == mc->match, "%s ~ %s: got %d", mc->tpl, mc->key, m);
    if (m) {
        params_str(&p, got, sizeof(got));
        ck_assert_str_eq(got, mc->params);
    }
    cm_tpl_deinit(&t);
}
END_TEST

START_TEST(test_match_is_linear_on_long_keys)
{
    /* A hostile key must not make matching explode: 64 KiB against a 3-param template. */
    struct cm_tpl t;
    char err[128];
    size_t n = 65536;
    char *key = cm_malloc(n + 1);
    memset(key, 'a', n);
    key[n] = '\0';
    ck_assert_int_eq(cm_tpl_parse(&t, "{a}a{b}a{c}b", err, sizeof(err)), CM_OK);
    ck_assert(!cm_tpl_match(&t, key, n, NULL));
    cm_tpl_deinit(&t);
    cm_free(key);
}
END_TEST

START_TEST(test_regression_template_more_segments_than_params)
{
    /* cm_tpl_match kept each param's position in an array indexed by segment but sized by
     * params (17): a template of more than 17 segments wrote past it on the stack at every
     * match (found by tests/fuzz/fuzz_template.c). 16 params between literals: 33 segments. */
    struct cm_tpl t;
    struct cm_params p;
    char tpl[256] = "", key[256] = "", err[128];
    for (int i = 0; i < CM_NODE_MAX_PARAMS; i++) {
        snprintf(tpl + strlen(tpl), sizeof(tpl) - strlen(tpl), "x{p%d}", i);
        snprintf(key + strlen(key), sizeof(key) - strlen(key), "x%d", i + 10);
    }
    strcat(tpl, "x");
    strcat(key, "x");
    ck_assert_int_eq(cm_tpl_parse(&t, tpl, err, sizeof(err)), CM_OK);
    ck_assert_int_eq(t.nsegs, 2 * CM_NODE_MAX_PARAMS + 1);
    ck_assert(cm_tpl_match(&t, key, strlen(key), &p));
    ck_assert_int_eq(p.n, CM_NODE_MAX_PARAMS);
    for (int i = 0; i < CM_NODE_MAX_PARAMS; i++) {
        char want[8];
        snprintf(want, sizeof(want), "%d", i + 10);
        ck_assert_int_eq(p.val_len[i], strlen(want));
        ck_assert(memcmp(p.val[i], want, p.val_len[i]) == 0);
    }
    cm_tpl_deinit(&t);
}
END_TEST

START_TEST(test_parse_errors)
{
    struct cm_tpl t;
    char err[128];
    /* The config loader's parser (conf/template.c): its messages are check_conf's. */
    ck_assert_int_eq(cm_tpl_parse(&t, "a{b", err, sizeof(err)), CM_ERR);
    ck_assert_str_eq(err, "unclosed '{' at offset 1");
    ck_assert_int_eq(cm_tpl_parse(&t, "a{}b", err, sizeof(err)), CM_ERR);
    ck_assert_int_eq(cm_tpl_parse(&t, "{a}{b}", err, sizeof(err)), CM_ERR);
    ck_assert_ptr_nonnull(strstr(err, "are adjacent"));
    /* A URL template may repeat a param, or put two side by side; a key template may not. */
    ck_assert_int_eq(cm_tpl_parse_url(&t, "http://h/{a}{b}?again={a}", err, sizeof(err)), CM_OK);
    ck_assert_uint_eq(t.nparams, 3);
    cm_tpl_deinit(&t);
}
END_TEST

/* A node built by hand: key template, version, loader template. */
static void make_node(struct cm_node *n, struct cm_conf_node *cn, const char *key,
                      const char *loader)
{
    char err[128];
    memset(n, 0, sizeof(*n));
    memset(cn, 0, sizeof(*cn));
    cn->version = (char *)"v1";
    n->conf = cn;
    ck_assert_int_eq(cm_tpl_parse(&n->key, key, err, sizeof(err)), CM_OK);
    ck_assert_int_eq(cm_tpl_parse(&n->loader, loader, err, sizeof(err)), CM_OK);
}

START_TEST(test_storage_key_and_loader_url)
{
    struct cm_node n;
    struct cm_conf_node cn;
    struct cm_params p;
    struct cm_buf b;
    const char *key = "user:../a b?#%:info";
    make_node(&n, &cn, "user:{id}:info", "http://h:1/users/{id}?x=1");
    cm_buf_init(&b);
    cm_node_storage_key(&n, "cacheme", "user:1:info", 11, &b);
    cm_buf_append(&b, "", 1);
    ck_assert_str_eq(cm_buf_start(&b), "cacheme:user:1:info:v1");
    cm_buf_reset(&b);
    ck_assert(cm_tpl_match(&n.key, key, strlen(key), &p));
    cm_node_loader_url(&n, &p, &b);
    cm_buf_append(&b, "", 1);
    ck_assert_str_eq(cm_buf_start(&b), "http://h:1/users/..%2Fa%20b%3F%23%25?x=1");
    cm_buf_reset(&b);
    ck_assert(cm_tpl_match(&n.key, "user:..:info", 12, &p));
    cm_node_loader_url(&n, &p, &b);
    cm_buf_append(&b, "", 1);
    ck_assert_str_eq(cm_buf_start(&b), "http://h:1/users/%2E%2E?x=1");
    cm_buf_deinit(&b);
    cm_tpl_deinit(&n.key);
    cm_tpl_deinit(&n.loader);
}
END_TEST

START_TEST(test_regression_loader_url_dot_param_not_terminated)
{
    /* Whether a param is only dots was asked of strspn, which reads to a NUL: a key whose
     * buffer ends with such a param (params are spans of the key, not C strings) was read past
     * its end (found by tests/fuzz/fuzz_template.c). The key here is exactly 7 bytes. */
    struct cm_node n;
    struct cm_conf_node cn;
    struct cm_params p;
    struct cm_buf b;
    char *key = cm_malloc(7);
    memcpy(key, "user:..", 7);
    make_node(&n, &cn, "user:{id}", "http://h:1/users/{id}");
    cm_buf_init(&b);
    ck_assert(cm_tpl_match(&n.key, key, 7, &p));
    cm_node_loader_url(&n, &p, &b);
    cm_buf_append(&b, "", 1);
    ck_assert_str_eq(cm_buf_start(&b), "http://h:1/users/%2E%2E");
    memcpy(key, "user:.x", 7);   /* not only dots: kept as is (unreserved) */
    cm_buf_reset(&b);
    ck_assert(cm_tpl_match(&n.key, key, 7, &p));
    cm_node_loader_url(&n, &p, &b);
    cm_buf_append(&b, "", 1);
    ck_assert_str_eq(cm_buf_start(&b), "http://h:1/users/.x");
    cm_free(key);
    cm_buf_deinit(&b);
    cm_tpl_deinit(&n.key);
    cm_tpl_deinit(&n.loader);
}
END_TEST

/* The nodes are built from the templates the config loader parsed (cm_nodes_new parsed them
 * again with other rules, and refused 17+ params the check accepted and {a}{b} in a loader).
 * Storages are not opened: cm_nodes_new only reads their ops and conf. */
START_TEST(test_nodes_from_conf)
{
    static const char text[] =
        "[storage l]\nurl = local://lru\n[storage r]\nurl = redis://127.0.0.1:1\n"
        "[node wide]\nkey = w:{a1}:{a2}:{a3}:{a4}:{a5}:{a6}:{a7}:{a8}:{a9}:{a10}:{a11}:{a12}:{a13}"
        ":{a14}:{a15}:{a16}\nversion = v1\ncaches = l\n"
        "[node ab]\nkey = {a}-{b}\nversion = v2\ncaches = r:10s, l\n"
        "loader = http://o/{a}{b}?again={a}\n";
    struct cm_conf *conf;
    struct cm_storage st[2];
    struct cm_storage *sts[2] = { &st[0], &st[1] };
    struct cm_params p;
    struct cm_buf b;
    char err[128] = "";
    size_t used = cm_alloc_used();

    ck_assert_int_eq(cm_conf_load_string("t.conf", text, sizeof(text) - 1, &conf, stderr), CM_OK);
    memset(st, 0, sizeof(st));
    for (size_t i = 0; i < 2; i++) {
        st[i].ops = cm_storage_ops_for((int)conf->storages[i].type);
        st[i].conf = &conf->storages[i];
    }
    struct cm_node *nodes = cm_nodes_new(conf, sts, err, sizeof(err));
    ck_assert_ptr_nonnull(nodes);
    ck_assert_uint_eq(nodes[0].key.nparams, CM_NODE_MAX_PARAMS);
    ck_assert_ptr_eq(nodes[0].key.segs, conf->nodes[0].key_tpl.segs);   /* a view, not a copy */
    ck_assert_uint_eq(nodes[1].nlocal, 1);
    ck_assert_uint_eq(nodes[1].nremote, 1);
    ck_assert_uint_eq(nodes[1].local_idx[0], 1);
    ck_assert_ptr_eq(cm_node_find(nodes, 2, "x-y", 3, &p), &nodes[1]);
    cm_buf_init(&b);
    cm_node_loader_url(&nodes[1], &p, &b);
    cm_buf_append(&b, "", 1);
    ck_assert_str_eq(cm_buf_start(&b), "http://o/xy?again=x");
    cm_buf_deinit(&b);
    cm_nodes_free(nodes, conf->nnodes);
    cm_conf_free(conf);
    ck_assert_uint_eq(cm_alloc_used(), used);
}
END_TEST

static Suite *node_suite(void)
{
    Suite *s = suite_create("node");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 10);
    tcase_add_loop_test(tc, test_match_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, test_match_is_linear_on_long_keys);
    tcase_add_test(tc, test_regression_template_more_segments_than_params);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_storage_key_and_loader_url);
    tcase_add_test(tc, test_regression_loader_url_dot_param_not_terminated);
    tcase_add_test(tc, test_nodes_from_conf);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(node_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
