/* Config loader: the shipped example loads, defaults, units, and every kind of bad config
 * reported with its exact text and line (several per file, long lines, inih's traps). */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/log.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ST_L "[storage l]\nurl = local://lru\n"
#define NODE_N "[node n]\nkey = k:{id}\nversion = v1\ncaches = l\n"

/* Loads text as "t.conf"; returns what was printed to errs (malloc'd, "" when nothing). */
static char *load(const char *text, struct cm_conf **out)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;
    ck_assert_ptr_nonnull(f);
    rc = cm_conf_load_string("t.conf", text, strlen(text), out, f);
    fclose(f);
    ck_assert_msg((rc == CM_OK) == (buf[0] == '\0'), "rc %d but errors: '%s'", rc, buf);
    ck_assert_msg((rc == CM_OK) == (*out != NULL), "rc %d, out %p", rc, (void *)*out);
    return buf;
}

/* Loads text that must be valid. */
static struct cm_conf *load_ok(const char *text)
{
    struct cm_conf *c;
    char *errs = load(text, &c);
    ck_assert_msg(c != NULL, "unexpected errors:\n%s", errs);
    free(errs);
    return c;
}

/* Loads text that must fail with exactly want printed. */
static void load_bad(const char *text, const char *want)
{
    struct cm_conf *c;
    char *errs = load(text, &c);
    ck_assert_msg(strcmp(errs, want) == 0, "config:\n%s\nwant:\n%sgot:\n%s", text, want, errs);
    free(errs);
}

START_TEST(test_example_loads)
{
    struct cm_conf *c;
    size_t used = cm_alloc_used();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = cm_conf_load("cachemed.conf.example", &c, f);
    fclose(f);
    ck_assert_msg(rc == CM_OK, "cachemed.conf.example (run from the repo root):\n%s", buf);
    free(buf);

    ck_assert_str_eq(c->file, "cachemed.conf.example");
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_str_eq(c->listen[0], "127.0.0.1:6380");
    ck_assert_str_eq(c->prefix, "cacheme");
    ck_assert_ptr_null(c->requirepass);
    ck_assert_ptr_null(c->log_file);
    ck_assert_ptr_null(c->metrics_listen);
    ck_assert_int_eq(c->max_clients, 10000);
    ck_assert_int_eq(c->log_level, CM_LOG_INFO);
    ck_assert_uint_eq(c->max_value_size, 64u * 1024 * 1024);

    ck_assert_uint_eq(c->nstorages, 2);
    ck_assert_str_eq(c->storages[0].name, "local");
    ck_assert_int_eq(c->storages[0].type, CM_ST_TYPE_TLFU);
    ck_assert_uint_eq(c->storages[0].size, 10000);
    ck_assert_str_eq(c->storages[1].name, "lite");
    ck_assert_int_eq(c->storages[1].type, CM_ST_TYPE_SQLITE);
    ck_assert_str_eq(c->storages[1].url, "sqlite:///tmp/cachemed-demo.db");
    ck_assert_str_eq(c->storages[1].table, "cacheme_data");
    ck_assert(c->storages[1].create_table);
    ck_assert_int_eq(c->storages[1].pool_size, 8);
    ck_assert_int_eq(c->storages[1].timeout_ms, 500);

    ck_assert_uint_eq(c->nnodes, 2);
    struct cm_conf_node *n = &c->nodes[0];
    ck_assert_str_eq(n->name, "user_info");
    ck_assert_str_eq(n->key, "user:{user_id}:info");
    ck_assert_str_eq(n->version, "v1");
    ck_assert_int_eq(n->serializer, CM_SER_JSON);
    ck_assert_str_eq(n->loader, "http://127.0.0.1:8000/users/{user_id}.json");
    ck_assert_ptr_null(n->loader_socket);
    ck_assert(!n->doorkeeper);
    ck_assert_int_eq(n->loader_timeout_ms, 2000);
    ck_assert_uint_eq(n->ncaches, 2);
    ck_assert_ptr_eq(n->caches[0].st, &c->storages[0]);
    ck_assert_int_eq(n->caches[0].ttl_ms, 30000);
    ck_assert_ptr_eq(n->caches[1].st, &c->storages[1]);
    ck_assert_int_eq(n->caches[1].ttl_ms, 10LL * 86400 * 1000);

    n = &c->nodes[1];
    ck_assert_str_eq(n->name, "post");
    ck_assert_str_eq(n->key, "post:{post_id}");
    ck_assert_int_eq(n->serializer, CM_SER_MSGPACK);
    ck_assert_str_eq(n->loader, "http://127.0.0.1:8000/posts/{post_id}.json");
    ck_assert_uint_eq(n->ncaches, 2);
    ck_assert_int_eq(n->caches[0].ttl_ms, 60000);
    ck_assert_int_eq(n->caches[1].ttl_ms, -1);
    cm_conf_free(c);
    ck_assert_uint_eq(cm_alloc_used(), used);
}
END_TEST

/* Every commented-out "; key = value" and "; [section]" line of the example, uncommented, still
 * loads (the first node also caching in the redis storage, for its invalidate_channel): the
 * documented optional keys (SPEC §12, §13 included) are ones the loader takes. */
START_TEST(test_example_commented_keys_load)
{
    FILE *f = fopen("cachemed.conf.example", "r");
    char line[512];
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int n = 0;
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t w = 2;
        while (line[w] == '_' || (line[w] >= 'a' && line[w] <= 'z')) {
            w++;
        }
        if (strncmp(line, "; [", 3) == 0 || (strncmp(line, "; ", 2) == 0 && w > 2 &&
                                             strncmp(line + w, " = ", 3) == 0)) {
            fputs(line + 2, out);
            n++;
        } else if (strncmp(line, "caches = local:30s, lite:10d ", 29) == 0) {
            fputs("caches = local:30s, lite:10d, shared\n", out); /* invalidate_channel: redis */
        } else {
            fputs(line, out);
        }
    }
    fclose(f);
    fclose(out);
    ck_assert_int_ge(n, 20);
    struct cm_conf *c = load_ok(text);
    ck_assert_int_eq(c->nodes[0].grace_ms, 300000);
    ck_assert_int_eq(c->nodes[0].stale_if_error_ms, 3600000);
    ck_assert_int_eq(c->nodes[0].breaker_failures, 5);
    ck_assert_uint_eq(c->nodes[0].loader_batch_tpl.nparams, 1);
    cm_conf_free(c);
    free(text);
}
END_TEST

START_TEST(test_defaults)
{
    struct cm_conf *c = load_ok(ST_L NODE_N);
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_str_eq(c->listen[0], "127.0.0.1:6380");
    ck_assert_str_eq(c->prefix, "cacheme");
    ck_assert_ptr_null(c->requirepass);
    ck_assert_int_eq(c->max_clients, 10000);
    ck_assert_int_eq(c->client_timeout_ms, 0);
    ck_assert_int_eq(c->shutdown_timeout_ms, 5000);
    ck_assert_int_eq(c->log_level, CM_LOG_INFO);
    ck_assert_ptr_null(c->log_file);
    ck_assert_ptr_null(c->metrics_listen);
    ck_assert_uint_eq(c->max_value_size, 64u * 1024 * 1024);
    ck_assert_int_eq(c->storages[0].type, CM_ST_TYPE_LRU);
    ck_assert_uint_eq(c->storages[0].size, 10000);
    ck_assert_int_eq(c->storages[0].line, 1);
    struct cm_conf_node *n = &c->nodes[0];
    ck_assert_int_eq(n->line, 3);
    ck_assert_int_eq(n->serializer, CM_SER_RAW);
    ck_assert(!n->doorkeeper);
    ck_assert_ptr_null(n->loader);
    ck_assert_ptr_null(n->loader_socket);
    ck_assert_ptr_null(n->invalidate_channel);
    ck_assert_int_eq(n->loader_timeout_ms, 2000);
    ck_assert_uint_eq(n->ncaches, 1);
    ck_assert_int_eq(n->caches[0].ttl_ms, -1);
    cm_conf_free(c);
}
END_TEST

/* Per-type storage defaults and scheme -> type. */
static const struct {
    const char *url;
    enum cm_st_type type;
    int pool;
} type_cases[] = {
    {"local://lru", CM_ST_TYPE_LRU, 8},
    {"local://tlfu", CM_ST_TYPE_TLFU, 8},
    {"redis://127.0.0.1:6379/0", CM_ST_TYPE_REDIS, 100},
    {"redis://:pw@localhost:6379", CM_ST_TYPE_REDIS, 100},
    {"postgresql://u:p@127.0.0.1:5432/db", CM_ST_TYPE_PG, 50},
    {"postgres://u@db.example.com/db", CM_ST_TYPE_PG, 50},
    {"mysql://cache:cachepw@127.0.0.1:3306/cachetest", CM_ST_TYPE_MYSQL, 50},
    {"sqlite:///var/lib/cachemed/cache.db", CM_ST_TYPE_SQLITE, 8},
    {"sqlite://cache.db", CM_ST_TYPE_SQLITE, 8},
    {"mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=3000", CM_ST_TYPE_MONGO, 8},
    {"mongodb://h1:1,h2:2/?replicaSet=rs", CM_ST_TYPE_MONGO, 8},
};

START_TEST(test_storage_types)
{
    char text[512];
    snprintf(text, sizeof(text),
             "[storage s]\nurl = %s\n[node n]\nkey = k\nversion = 1\ncaches = s\n",
             type_cases[_i].url);
    struct cm_conf *c = load_ok(text);
    ck_assert_int_eq(c->storages[0].type, type_cases[_i].type);
    ck_assert_int_eq(c->storages[0].pool_size, type_cases[_i].pool);
    ck_assert_str_eq(c->storages[0].url, type_cases[_i].url);
    ck_assert_int_eq(c->storages[0].timeout_ms, 500);
    ck_assert_str_eq(c->storages[0].table, "cacheme_data");
    ck_assert_str_eq(c->storages[0].database, "cache");
    ck_assert_str_eq(c->storages[0].collection, "cacheme_data");
    ck_assert(!c->storages[0].cluster);
    ck_assert(!c->storages[0].create_table);
    ck_assert(!c->storages[0].create_indexes);
    cm_conf_free(c);
}
END_TEST

START_TEST(test_every_key)
{
    struct cm_conf *c = load_ok("[server]\n"
                                "listen = 127.0.0.1:7000\n"
                                "listen = [::1]:7001\n"
                                "listen = unix:/tmp/cm.sock\n"
                                "listen = localhost:7002\n"
                                "prefix = app\n"
                                "requirepass = s3cret ; a comment\n"
                                "max_clients = 5\n"
                                "client_timeout = 90\n"
                                "shutdown_timeout = 250ms\n"
                                "log_level = debug\n"
                                "log_file = /tmp/cm.log\n"
                                "metrics_listen = 127.0.0.1:9180\n"
                                "max_value_size = 10kb\n"
                                "[storage r]\n"
                                "url = redis://127.0.0.1:7000\n"
                                "cluster = yes\n"
                                "pool_size = 4\n"
                                "timeout = 1s\n"
                                "[storage p]\n"
                                "url = postgresql://postgres@127.0.0.1:5432/cachetest\n"
                                "table = my_table_1\n"
                                "create_table = yes\n"
                                "[storage m]\n"
                                "url = mongodb://127.0.0.1:27017\n"
                                "database = db-1\n"
                                "collection = coll.x\n"
                                "create_indexes = true\n"
                                "[storage loc]\n"
                                "url = local://lru\n"
                                "size = 3\n"
                                "[node user]\n"
                                "key = user:{id}:{field}\n"
                                "version = v2\n"
                                "caches = loc : 5s ,r:10m,p, m:2h\n"
                                "serializer = compressed_msgpack\n"
                                "doorkeeper = 1000, 0.05\n"
                                "loader = http://origin:8000/u/{id}?f={field}&again={id}\n"
                                "loader_socket = /run/origin.sock\n"
                                "loader_timeout = 1500ms\n"
                                "invalidate_channel = inval\n");
    ck_assert_uint_eq(c->nlisten, 4);
    ck_assert_str_eq(c->listen[0], "127.0.0.1:7000");
    ck_assert_str_eq(c->listen[1], "[::1]:7001");
    ck_assert_str_eq(c->listen[2], "unix:/tmp/cm.sock");
    ck_assert_str_eq(c->listen[3], "localhost:7002");
    ck_assert_str_eq(c->prefix, "app");
    ck_assert_str_eq(c->requirepass, "s3cret");
    ck_assert_int_eq(c->max_clients, 5);
    ck_assert_int_eq(c->client_timeout_ms, 90000);
    ck_assert_int_eq(c->shutdown_timeout_ms, 250);
    ck_assert_int_eq(c->log_level, CM_LOG_DEBUG);
    ck_assert_str_eq(c->log_file, "/tmp/cm.log");
    ck_assert_str_eq(c->metrics_listen, "127.0.0.1:9180");
    ck_assert_uint_eq(c->max_value_size, 10240);
    ck_assert(c->storages[0].cluster);
    ck_assert_int_eq(c->storages[0].pool_size, 4);
    ck_assert_int_eq(c->storages[0].timeout_ms, 1000);
    ck_assert_str_eq(c->storages[1].table, "my_table_1");
    ck_assert(c->storages[1].create_table);
    ck_assert_str_eq(c->storages[2].database, "db-1");
    ck_assert_str_eq(c->storages[2].collection, "coll.x");
    ck_assert(c->storages[2].create_indexes);
    ck_assert_uint_eq(c->storages[3].size, 3);
    struct cm_conf_node *n = &c->nodes[0];
    ck_assert_uint_eq(n->ncaches, 4);
    ck_assert_ptr_eq(n->caches[0].st, &c->storages[3]);
    ck_assert_int_eq(n->caches[0].ttl_ms, 5000);
    ck_assert_ptr_eq(n->caches[1].st, &c->storages[0]);
    ck_assert_int_eq(n->caches[1].ttl_ms, 600000);
    ck_assert_ptr_eq(n->caches[2].st, &c->storages[1]);
    ck_assert_int_eq(n->caches[2].ttl_ms, -1);
    ck_assert_ptr_eq(n->caches[3].st, &c->storages[2]);
    ck_assert_int_eq(n->caches[3].ttl_ms, 7200000);
    ck_assert_int_eq(n->serializer, CM_SER_COMPRESSED_MSGPACK);
    ck_assert(n->doorkeeper);
    ck_assert_uint_eq(n->dk_capacity, 1000);
    ck_assert(n->dk_fpp > 0.0499 && n->dk_fpp < 0.0501);
    ck_assert_str_eq(n->loader_socket, "/run/origin.sock");
    ck_assert_int_eq(n->loader_timeout_ms, 1500);
    ck_assert_str_eq(n->invalidate_channel, "inval");
    cm_conf_free(c);
}
END_TEST

/* Durations and sizes go through daemon/util.h's parsers. */
static const struct {
    const char *text;
    int64_t want;
} dur_cases[] = {
    {"500ms", 500},     {"30s", 30000}, {"10m", 600000}, {"2h", 7200000},
    {"10d", 864000000}, {"7", 7000},    {"0", 0},
};

START_TEST(test_durations)
{
    char text[256];
    snprintf(text, sizeof(text), "[server]\nclient_timeout = %s\n" ST_L NODE_N, dur_cases[_i].text);
    struct cm_conf *c = load_ok(text);
    ck_assert_int_eq(c->client_timeout_ms, dur_cases[_i].want);
    cm_conf_free(c);
    snprintf(text, sizeof(text), ST_L "[node n]\nkey = k\nversion = 1\ncaches = l:%s\n",
             dur_cases[_i].text);
    if (dur_cases[_i].want > 0) {
        c = load_ok(text);
        ck_assert_int_eq(c->nodes[0].caches[0].ttl_ms, dur_cases[_i].want);
        cm_conf_free(c);
    }
}
END_TEST

static const struct {
    const char *text;
    uint64_t want;
} size_cases[] = {
    {"100b", 100},  {"10kb", 10240}, {"64mb", 64u << 20}, {"512mb", 512u << 20},
    {"1000", 1000}, {"1", 1},        {"2MB", 2u << 20},
};

START_TEST(test_sizes)
{
    char text[256];
    snprintf(text, sizeof(text), "[server]\nmax_value_size = %s\n" ST_L NODE_N,
             size_cases[_i].text);
    struct cm_conf *c = load_ok(text);
    ck_assert_uint_eq(c->max_value_size, size_cases[_i].want);
    cm_conf_free(c);
}
END_TEST

/* One bad config and exactly what must be printed. */
struct bad_case {
    const char *text;
    const char *want;
};

static const struct bad_case bad_cases[] = {
    /* 0: the SPEC's example */
    {ST_L "[node user]\nkey = user:{id}\nversion = v1\ncaches = redis2:10d\n",
     "t.conf:6: [node user] caches = \"redis2:10d\": unknown storage 'redis2'\n"},
    {"[server]\nbogus = 1\n" ST_L NODE_N, "t.conf:2: [server] bogus = \"1\": unknown key\n"},
    {"[servre]\nlisten = 127.0.0.1:1\n" ST_L NODE_N,
     "t.conf:1: [servre]: unknown section (expected [server], [storage NAME] or [node NAME])\n"},
    {"[server]\nprefix = a\nprefix = b\n" ST_L NODE_N,
     "t.conf:3: [server] prefix = \"b\": duplicate key (first at line 2)\n"},
    {"[server]\n[server]\n" ST_L NODE_N,
     "t.conf:2: [server]: duplicate section (first at line 1)\n"},
    /* 5 */
    {ST_L ST_L NODE_N, "t.conf:3: [storage l]: duplicate section (first at line 1)\n"},
    {ST_L NODE_N NODE_N, "t.conf:7: [node n]: duplicate section (first at line 3)\n"},
    {"[storage]\nurl = local://lru\n" NODE_N,
     "t.conf:1: [storage]: missing name (write [storage NAME])\n"
     "t.conf:6: [node n] caches = \"l\": unknown storage 'l'\n"},
    {"[node a/b]\nkey = k\n",
     "t.conf:1: [node a/b]: bad character in name (allowed: A-Z a-z 0-9 _ . -)\n"},
    {"[server x]\n", "t.conf:1: [server x]: unknown section ([server] takes no name)\n"},
    /* 10 */
    {"prefix = x\n" ST_L NODE_N, "t.conf:1: prefix = \"x\": key outside of any section\n"},
    {ST_L "[node n]\nversion = v1\n", "t.conf:3: [node n]: missing required key 'key'\n"
                                      "t.conf:3: [node n]: missing required key 'caches'\n"},
    {ST_L "[node n]\nkey = k\ncaches = l\n",
     "t.conf:3: [node n]: missing required key 'version'\n"},
    {"[storage l]\nsize = 5\n" NODE_N, "t.conf:1: [storage l]: missing required key 'url'\n"},
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches =\n",
     "t.conf:6: [node n] caches = \"\": must list at least one storage\n"},
    /* 15 */
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches = l, l:5s\n",
     "t.conf:6: [node n] caches = \"l, l:5s\": storage 'l' is listed twice\n"},
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches = l:\n",
     "t.conf:6: [node n] caches = \"l:\": missing or bad ttl after 'l:'\n"},
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches = l:5x\n",
     "t.conf:6: [node n] caches = \"l:5x\": bad ttl '5x' for 'l' (e.g. 30s, 10m, 10d)\n"},
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches = l,,\n",
     "t.conf:6: [node n] caches = \"l,,\": empty entry in the list\n"},
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches = l:0\n",
     "t.conf:6: [node n] caches = \"l:0\": ttl of 'l' is 0 (omit the ttl for no expiry)\n"},
    /* 20: key templates */
    {ST_L "[node n]\nkey = a:{x}{y}\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"a:{x}{y}\": parameters {x} and {y} are adjacent: separate them "
     "with literal text\n"},
    {ST_L "[node n]\nkey = a:{}\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"a:{}\": empty parameter name '{}' at offset 2\n"},
    {ST_L "[node n]\nkey = a:{x\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"a:{x\": unclosed '{' at offset 2\n"},
    {ST_L "[node n]\nkey = a:x}\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"a:x}\": unmatched '}' at offset 3\n"},
    {ST_L "[node n]\nkey = a:{x-y}\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"a:{x-y}\": bad character '-' in parameter name at offset 4 "
     "(allowed: A-Z a-z 0-9 _)\n"},
    /* 25 */
    {ST_L "[node n]\nkey = {a}:{a}\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"{a}:{a}\": parameter {a} appears twice\n"},
    {ST_L "[node n]\nkey = a:{{x}}\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"a:{{x}}\": bad character '{' in parameter name at offset 3 "
     "(allowed: A-Z a-z 0-9 _)\n"},
    /* loaders */
    {ST_L "[node n]\nkey = u:{id}\nversion = 1\ncaches = l\nloader = http://o/{uid}\n",
     "t.conf:7: [node n] loader = \"http://o/{uid}\": parameter {uid} is not in the key "
     "template 'u:{id}'\n"},
    {ST_L "[node n]\nkey = u:{id}\nversion = 1\ncaches = l\nloader = https://o/{id}\n",
     "t.conf:7: [node n] loader = \"https://o/{id}\": https:// is not supported: use http:// "
     "(or loader_socket)\n"},
    {ST_L "[node n]\nkey = u:{id}\nversion = 1\ncaches = l\nloader = ftp://o/{id}\n",
     "t.conf:7: [node n] loader = \"ftp://o/{id}\": must start with http://\n"},
    /* 30 */
    {ST_L "[node n]\nkey = u:{id}\nversion = 1\ncaches = l\nloader = http://{id}/x\n",
     "t.conf:7: [node n] loader = \"http://{id}/x\": parameters are not allowed in the host "
     "part\n"},
    {ST_L "[node n]\nkey = u:{id}\nversion = 1\ncaches = l\nloader = http:///x\n",
     "t.conf:7: [node n] loader = \"http:///x\": missing host after http://\n"},
    {ST_L "[node n]\nkey = u:{id}\nversion = 1\ncaches = l\nloader_socket = /run/o.sock\n",
     "t.conf:7: [node n] loader_socket = \"/run/o.sock\": loader_socket needs a loader URL (its "
     "path and Host header are used)\n"},
    {ST_L
     "[node n]\nkey = u\nversion = 1\ncaches = l\nloader = http://o/\nloader_socket = o.sock\n",
     "t.conf:8: [node n] loader_socket = \"o.sock\": must be an absolute path\n"},
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\nloader_timeout = 0\n",
     "t.conf:7: [node n] loader_timeout = \"0\": must be between 1ms and 3600000ms\n"},
    /* 35: doorkeeper, serializer */
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\ndoorkeeper = 0, 0.01\n",
     "t.conf:7: [node n] doorkeeper = \"0, 0.01\": bad capacity '0' (expected an integer >= 1)\n"},
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\ndoorkeeper = 100, 1\n",
     "t.conf:7: [node n] doorkeeper = \"100, 1\": bad false-positive rate '1' (expected 0 < rate "
     "< 1)\n"},
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\ndoorkeeper = 100, 0\n",
     "t.conf:7: [node n] doorkeeper = \"100, 0\": bad false-positive rate '0' (expected 0 < rate "
     "< 1)\n"},
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\ndoorkeeper = 100\n",
     "t.conf:7: [node n] doorkeeper = \"100\": expected \"capacity, false-positive rate\", e.g. "
     "100000, 0.01\n"},
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\ndoorkeeper = 100, nan\n",
     "t.conf:7: [node n] doorkeeper = \"100, nan\": bad false-positive rate 'nan' (expected 0 < "
     "rate < 1)\n"},
    /* 40 */
    {ST_L "[node n]\nkey = u\nversion = 1\ncaches = l\nserializer = pickle\n",
     "t.conf:7: [node n] serializer = \"pickle\": unknown serializer (expected raw, json, "
     "msgpack, compressed_json or compressed_msgpack)\n"},
    {ST_L "[node n]\nkey = u\nversion = a b\ncaches = l\n",
     "t.conf:5: [node n] version = \"a b\": spaces and control characters are not allowed\n"},
    /* storages */
    {"[storage s]\nurl = memcached://h:1\n" NODE_N,
     "t.conf:2: [storage s] url = \"memcached://h:1\": unknown scheme (expected local, redis, "
     "postgresql, mysql, sqlite or mongodb)\n"
     "t.conf:6: [node n] caches = \"l\": unknown storage 'l'\n"},
    {"[storage l]\nurl = local://fifo\n" NODE_N,
     "t.conf:2: [storage l] url = \"local://fifo\": a local storage is local://lru or "
     "local://tlfu\n"},
    {"[storage l]\nurl = redis://h:70000\n" NODE_N,
     "t.conf:2: [storage l] url = \"redis://h:70000\": bad URL: port 70000 out of range "
     "1..65535\n"},
    /* 45 */
    {"[storage l]\nurl = redis://h:1/x\n" NODE_N,
     "t.conf:2: [storage l] url = \"redis://h:1/x\": the path must be a database number "
     "0..65535 (redis://host:port/0)\n"},
    {"[storage l]\nurl = redis://h:1/2\ncluster = yes\n" NODE_N,
     "t.conf:2: [storage l] url = \"redis://h:1/2\": a Redis Cluster has only database 0 "
     "(cluster = yes)\n"},
    {"[storage l]\nurl = mysql://u:p@h:3306\n" NODE_N,
     "t.conf:2: [storage l] url = \"mysql://u:p@h:3306\": missing database name "
     "(scheme://user:password@host:port/database)\n"},
    {"[storage l]\nurl = sqlite://\n" NODE_N,
     "t.conf:2: [storage l] url = \"sqlite://\": missing file path (sqlite:///absolute/path.db "
     "or sqlite://relative/path.db)\n"},
    {"[storage l]\nurl = local://lru\ntable = t\ncluster = no\ncreate_indexes = no\n" NODE_N,
     "t.conf:3: [storage l] table = \"t\": applies only to postgresql, mysql and sqlite "
     "storages\n"
     "t.conf:4: [storage l] cluster = \"no\": applies only to redis storages\n"
     "t.conf:5: [storage l] create_indexes = \"no\": applies only to mongodb storages\n"},
    /* 50 */
    {"[storage l]\nurl = redis://h:1\nsize = 5\ncreate_table = yes\n" NODE_N,
     "t.conf:3: [storage l] size = \"5\": applies only to local storages\n"
     "t.conf:4: [storage l] create_table = \"yes\": applies only to postgresql, mysql and "
     "sqlite storages\n"},
    {"[storage l]\nurl = local://lru\npool_size = 2\ntimeout = 1s\n" NODE_N,
     "t.conf:3: [storage l] pool_size = \"2\": does not apply to local storages\n"
     "t.conf:4: [storage l] timeout = \"1s\": does not apply to local storages\n"},
    {"[storage l]\nurl = postgres://u@h/d\ntable = cache-data\n" NODE_N,
     "t.conf:3: [storage l] table = \"cache-data\": only A-Z a-z 0-9 _ are allowed\n"},
    {"[storage l]\nurl = postgres://u@h/d\ntable = "
     "t234567890123456789012345678901234567890123456789012345678901234\n" NODE_N,
     "t.conf:3: [storage l] table = "
     "\"t234567890123456789012345678901234567890123456789012345678901234\": longer than 48 "
     "characters\n"},
    {"[storage l]\nurl = postgres://u@h/d\npool_size = 0\n" NODE_N,
     "t.conf:3: [storage l] pool_size = \"0\": must be between 1 and 1024\n"},
    /* 55 */
    {"[storage l]\nurl = postgres://u@h/d\npool_size = 1025\n" NODE_N,
     "t.conf:3: [storage l] pool_size = \"1025\": must be between 1 and 1024\n"},
    {"[storage l]\nurl = local://lru\nsize = 0\n" NODE_N,
     "t.conf:3: [storage l] size = \"0\": must be between 1 and 2147483648\n"},
    {"[storage l]\nurl = redis://h:1\ncluster = maybe\n" NODE_N,
     "t.conf:3: [storage l] cluster = \"maybe\": not a boolean (yes/no, true/false, on/off, "
     "1/0)\n"},
    {"[storage l]\nurl = mongodb://h\ncollection = a$b\n" NODE_N,
     "t.conf:3: [storage l] collection = \"a$b\": only A-Z a-z 0-9 _ and these: -. are "
     "allowed\n"},
    /* server values */
    {"[server]\nlisten = 127.0.0.1:0\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \"127.0.0.1:0\": bad port '0' (expected 1..65535)\n"},
    /* 60 */
    {"[server]\nlisten = ::1:6380\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \"::1:6380\": an IPv6 address must be in brackets: "
     "[address]:port\n"},
    {"[server]\nlisten = 300.1.1.1:6380\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \"300.1.1.1:6380\": bad IPv4 address '300.1.1.1'\n"},
    {"[server]\nlisten = [fe80::zz]:6380\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \"[fe80::zz]:6380\": bad IPv6 address 'fe80::zz'\n"},
    {"[server]\nlisten = 6380\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \"6380\": expected host:port or unix:/path\n"},
    {"[server]\nlisten = unix:cm.sock\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \"unix:cm.sock\": unix: needs an absolute path, e.g. "
     "unix:/run/cachemed.sock\n"},
    /* 65 */
    {"[server]\nlisten = a:1\nlisten = a:1\n" ST_L NODE_N,
     "t.conf:3: [server] listen = \"a:1\": listed twice (first at line 2)\n"},
    {"[server]\nlisten = :6380\n" ST_L NODE_N,
     "t.conf:2: [server] listen = \":6380\": missing host (use 0.0.0.0 or [::] for every "
     "address)\n"},
    {"[server]\nmetrics_listen = unix:/x.sock\n" ST_L NODE_N,
     "t.conf:2: [server] metrics_listen = \"unix:/x.sock\": a Unix socket is not allowed here: "
     "use host:port\n"},
    {"[server]\nmax_clients = 0\n" ST_L NODE_N,
     "t.conf:2: [server] max_clients = \"0\": must be between 1 and 1000000\n"},
    {"[server]\nmax_clients = ten\n" ST_L NODE_N,
     "t.conf:2: [server] max_clients = \"ten\": not an integer\n"},
    /* 70 */
    {"[server]\nlog_level = loud\n" ST_L NODE_N,
     "t.conf:2: [server] log_level = \"loud\": unknown level (expected debug, info, warning or "
     "error)\n"},
    {"[server]\nshutdown_timeout = 5 s\n" ST_L NODE_N,
     "t.conf:2: [server] shutdown_timeout = \"5 s\": not a duration (e.g. 500ms, 30s, 10m, 2h, "
     "10d; a bare number is seconds)\n"},
    {"[server]\nclient_timeout = -1\n" ST_L NODE_N,
     "t.conf:2: [server] client_timeout = \"-1\": not a duration (e.g. 500ms, 30s, 10m, 2h, "
     "10d; a bare number is seconds)\n"},
    {"[server]\nmax_value_size = 1gb\n" ST_L NODE_N,
     "t.conf:2: [server] max_value_size = \"1gb\": must be between 1 and 536870912 bytes\n"},
    {"[server]\nmax_value_size = 12tb\n" ST_L NODE_N,
     "t.conf:2: [server] max_value_size = \"12tb\": not a size (e.g. 100b, 10kb, 64mb, 1gb; a "
     "bare number is bytes)\n"},
    /* 75 */
    {"[server]\nprefix =\n" ST_L NODE_N, "t.conf:2: [server] prefix = \"\": must not be empty\n"},
    /* syntax */
    {"[server\n" ST_L NODE_N, "t.conf:1: unterminated section header: missing ']'\n"},
    {"[server] x\n" ST_L NODE_N, "t.conf:1: text after ']' in section header\n"},
    {"[server]\nlisten\n" ST_L NODE_N,
     "t.conf:2: expected \"key = value\", \"[section]\" or a ; comment\n"},
    {"[server]\nprefix = a\n  max_clients = 5\n" ST_L NODE_N,
     "t.conf:3: unexpected indented line (continuation lines are not supported)\n"},
    /* 80 */
    {"[server]\nprefix = a\x01\n" ST_L NODE_N,
     "t.conf:2: [server] prefix = \"a\\x01\": spaces and control characters are not allowed\n"},
    {"[server]\nbogus = \"a\\b\"\n" ST_L NODE_N,
     "t.conf:2: [server] bogus = \"\"a\\x5cb\"\": unknown key\n"},
    /* Found by fuzz_conf: an inline comment before the '=' makes the whole line a syntax error
     * for inih, so it must be reported, not taken as "key = value". */
    {"[server]\nprefix ; = x\n" ST_L NODE_N,
     "t.conf:2: expected \"key = value\", \"[section]\" or a ; comment\n"},
};

/* Defect 16 (issue 14): configs the check passed that then failed to start (exit 1). Each is now
 * rejected by cm_conf_load, the one validation both --check and start run. */
#define K17 "{a1}:{a2}:{a3}:{a4}:{a5}:{a6}:{a7}:{a8}:{a9}:{a10}:{a11}:{a12}:{a13}:{a14}:{a15}:{a16}:{a17}"
static const struct bad_case start_cases[] = {
    /* 0: node.c took at most 16 params, the check 32 */
    {ST_L "[node n]\nkey = " K17 "\nversion = 1\ncaches = l\n",
     "t.conf:4: [node n] key = \"" K17 "\": more than 16 parameters\n"},
    /* st_redis.c takes db 0..65535, the check took up to INT_MAX */
    {"[storage r]\nurl = redis://h:1/65536\n" NODE_N,
     "t.conf:2: [storage r] url = \"redis://h:1/65536\": the path must be a database number "
     "0..65535 (redis://host:port/0)\n"
     "t.conf:6: [node n] caches = \"l\": unknown storage 'l'\n"},
    /* local.c opens at most 2^31 entries, the check took 2^40 */
    {"[storage l]\nurl = local://lru\nsize = 2147483649\n" NODE_N,
     "t.conf:3: [storage l] size = \"2147483649\": must be between 1 and 2147483648\n"},
    /* invalidate.c needs a redis storage in the node's caches */
    {ST_L NODE_N "invalidate_channel = inv\n",
     "t.conf:7: [node n] invalidate_channel = \"inv\": needs a redis storage in the node's caches "
     "(it is published and subscribed there)\n"},
    /* listeners that cannot all bind */
    {"[server]\nlisten = 127.0.0.1:7000\nlisten = 0.0.0.0:7000\n" ST_L NODE_N,
     "t.conf:3: [server] listen = \"0.0.0.0:7000\": conflicts with listen = \"127.0.0.1:7000\" "
     "at line 2 (same port; 0.0.0.0 takes it on every IPv4 address, [::] and a host name on "
     "any)\n"},
    /* 5 */
    {"[server]\nlisten = [::]:7000\nlisten = 127.0.0.1:7000\n" ST_L NODE_N,
     "t.conf:3: [server] listen = \"127.0.0.1:7000\": conflicts with listen = \"[::]:7000\" at "
     "line 2 (same port; 0.0.0.0 takes it on every IPv4 address, [::] and a host name on any)\n"},
    {"[server]\nlisten = [::1]:7000\nlisten = [0:0::1]:7000\n" ST_L NODE_N,
     "t.conf:3: [server] listen = \"[0:0::1]:7000\": conflicts with listen = \"[::1]:7000\" at "
     "line 2 (same port; 0.0.0.0 takes it on every IPv4 address, [::] and a host name on any)\n"},
    {"[server]\nlisten = [::ffff:127.0.0.1]:7000\nlisten = 127.0.0.1:7000\n" ST_L NODE_N,
     "t.conf:3: [server] listen = \"127.0.0.1:7000\": conflicts with listen = "
     "\"[::ffff:127.0.0.1]:7000\" at line 2 (same port; 0.0.0.0 takes it on every IPv4 address, "
     "[::] and a host name on any)\n"},
    {"[server]\nlisten = 0.0.0.0:7000\nlisten = localhost:7000\n" ST_L NODE_N,
     "t.conf:3: [server] listen = \"localhost:7000\": conflicts with listen = \"0.0.0.0:7000\" at "
     "line 2 (same port; 0.0.0.0 takes it on every IPv4 address, [::] and a host name on any)\n"},
    {"[server]\nlisten = unix:/tmp/a.sock\nlisten = LOCALHOST:7000\nlisten = localhost:7000\n" ST_L
         NODE_N,
     "t.conf:4: [server] listen = \"localhost:7000\": conflicts with listen = \"LOCALHOST:7000\" "
     "at line 3 (same port; 0.0.0.0 takes it on every IPv4 address, [::] and a host name on "
     "any)\n"},
    /* 10: metrics_listen against the listeners */
    {"[server]\nlisten = 127.0.0.1:7000\nmetrics_listen = 127.0.0.1:7000\n" ST_L NODE_N,
     "t.conf:3: [server] metrics_listen = \"127.0.0.1:7000\": same address as listen at line 2\n"},
    {"[server]\nmetrics_listen = 0.0.0.0:7000\nlisten = unix:/tmp/a.sock\nlisten = "
     "127.0.0.1:7000\n" ST_L NODE_N,
     "t.conf:2: [server] metrics_listen = \"0.0.0.0:7000\": conflicts with listen = "
     "\"127.0.0.1:7000\" at line 4 (same port; 0.0.0.0 takes it on every IPv4 address, [::] and "
     "a host name on any)\n"},
    {"[server]\nmetrics_listen = 127.0.0.1:6380\n" ST_L NODE_N,
     "t.conf:2: [server] metrics_listen = \"127.0.0.1:6380\": conflicts with the default listen "
     "= 127.0.0.1:6380\n"},
    /* sql_common.c takes table names of at most 48 characters, not starting with a digit */
    {"[storage l]\nurl = postgres://u@h/d\ntable = t234567890123456789012345678901234567890123456789\n"
         NODE_N,
     "t.conf:3: [storage l] table = \"t234567890123456789012345678901234567890123456789\": longer "
     "than 48 characters\n"},
    {"[storage l]\nurl = mysql://u@h/d\ntable = 1cache\n" NODE_N,
     "t.conf:3: [storage l] table = \"1cache\": must not start with a digit\n"},
    /* 15: st_sqlite.c cuts the path at '#' */
    {"[storage l]\nurl = sqlite://#x\n" NODE_N,
     "t.conf:2: [storage l] url = \"sqlite://#x\": bad URL: fragments ('#') are not allowed\n"},
    /* the drivers' own URL parsers, offline */
    {"[storage l]\nurl = mongodb://h/?replicaSet=\n" NODE_N,
     "t.conf:2: [storage l] url = \"mongodb://h/?replicaSet=\": libmongoc: Value for URI option "
     "\"replicaset\" cannot be empty string\n"},
    {"[storage l]\nurl = mongodb://h/a.b\n" NODE_N,
     "t.conf:2: [storage l] url = \"mongodb://h/a.b\": libmongoc: Invalid database name in URI\n"},
    {"[storage l]\nurl = postgresql://u@h/db?foo=1\n" NODE_N,
     "t.conf:2: [storage l] url = \"postgresql://u@h/db?foo=1\": libpq: invalid URI query "
     "parameter: \"foo\"\n"},
};

START_TEST(test_configs_that_failed_to_start)
{
    load_bad(start_cases[_i].text, start_cases[_i].want);
}
END_TEST

/* What the check accepts here, node setup accepted too (it did not always). */
START_TEST(test_accepted_forms)
{
    struct cm_conf *c = load_ok("[server]\nlisten = 127.0.0.1:7000\nlisten = 127.0.0.2:7000\n"
                                "listen = [::1]:7000\nlisten = unix:/tmp/a.sock\n"
                                "listen = localhost:7001\nlisten = example.com:7001\n"
                                "metrics_listen = [::1]:7002\n"
                                "[storage r]\nurl = redis://h:1/65535\n"
                                "[storage l]\nurl = local://lru\nsize = 2147483648\n"
                                "[storage p]\nurl = postgres://u@h/d\n"
                                "table = t2345678901234567890123456789012345678901234567\n"
                                "[node n]\nkey = {a}:{b}\nversion = 1\ncaches = l, r\n"
                                "loader = http://h/{a}{b}?again={a}\ninvalidate_channel = x\n");
    ck_assert_uint_eq(c->nlisten, 6);
    ck_assert_uint_eq(c->storages[1].size, 1ULL << 31);
    ck_assert_uint_eq(c->nodes[0].key_tpl.nparams, 2);
    ck_assert_uint_eq(c->nodes[0].loader_tpl.nparams, 3);
    cm_conf_free(c);
}
END_TEST

/* A loader's host and port, checked like a listen address (every load failed before). */
static const struct bad_case loader_host_cases[] = {
    {ST_L NODE_N "loader = http://o:99999/{id}\n",
     "t.conf:7: [node n] loader = \"http://o:99999/{id}\": bad host in URL: bad port '99999' "
     "(expected 1..65535)\n"},
    {ST_L NODE_N "loader = http://o:/{id}\n",
     "t.conf:7: [node n] loader = \"http://o:/{id}\": bad host in URL: bad port '' (expected "
     "1..65535)\n"},
    {ST_L NODE_N "loader = http://::1/{id}\n",
     "t.conf:7: [node n] loader = \"http://::1/{id}\": bad host in URL: an IPv6 address must be in "
     "brackets: [address]:port\n"},
    {ST_L NODE_N "loader = http://o$x/{id}\n",
     "t.conf:7: [node n] loader = \"http://o$x/{id}\": bad host in URL: bad host name (allowed: "
     "A-Z a-z 0-9 - . _)\n"},
};

START_TEST(test_loader_host)
{
    load_bad(loader_host_cases[_i].text, loader_host_cases[_i].want);
}
END_TEST

START_TEST(test_loader_host_ok)
{
    struct cm_conf *c = load_ok(ST_L NODE_N "loader = http://u:pw@[::1]:8000/{id}\n");
    cm_conf_free(c);
    c = load_ok(ST_L NODE_N "loader = http://origin.example?id={id}\n");
    cm_conf_free(c);
    c = load_ok(ST_L NODE_N "loader = http://127.0.0.1:1/{id}\n");
    cm_conf_free(c);
}
END_TEST

/* SPEC §12 and §13 keys: defaults, accepted forms, rejected forms with their message. */
struct origin_want {
    int64_t grace, stale_if_error, refresh_after, negative_ttl;
    int concurrency, breaker_failures;
    int64_t breaker_open;
    int batch_max;
};

static void check_origin_keys(const struct cm_conf_node *n, struct origin_want w)
{
    ck_assert_int_eq(n->grace_ms, w.grace);
    ck_assert_int_eq(n->stale_if_error_ms, w.stale_if_error);
    ck_assert_int_eq(n->refresh_after_ms, w.refresh_after);
    ck_assert_int_eq(n->negative_ttl_ms, w.negative_ttl);
    ck_assert_int_eq(n->loader_concurrency, w.concurrency);
    ck_assert_int_eq(n->breaker_failures, w.breaker_failures);
    ck_assert_int_eq(n->breaker_open_ms, w.breaker_open);
    ck_assert_int_eq(n->loader_batch_max, w.batch_max);
}

START_TEST(test_origin_protection_keys)
{
    struct cm_conf *c = load_ok(ST_L NODE_N);
    struct cm_conf_node *n = &c->nodes[0];
    check_origin_keys(n, (struct origin_want){0, 0, 0, 0, 0, 0, 0, 100});
    ck_assert_ptr_null(n->loader_batch);
    ck_assert_uint_eq(n->loader_batch_tpl.nsegs, 0);
    cm_conf_free(c);

    /* stale_if_error defaults to grace */
    c = load_ok(ST_L NODE_N "serializer = json\ngrace = 5m\nrefresh_after = 20s\n"
                            "negative_ttl = 30s\nloader_concurrency = 64\nbreaker = 5, 10s\n"
                            "loader = http://o/u/{id}\nloader_batch = http://o/u?ids={id}\n"
                            "loader_batch_max = 10000\n");
    n = &c->nodes[0];
    check_origin_keys(n, (struct origin_want){300000, 300000, 20000, 30000, 64, 5, 10000, 10000});
    ck_assert_str_eq(n->loader_batch, "http://o/u?ids={id}");
    ck_assert_uint_eq(n->loader_batch_tpl.nparams, 1);
    cm_conf_free(c);

    /* given: its own value; 0 = off; the breaker's K and T with any spacing */
    c = load_ok(ST_L NODE_N "grace = 1m\nstale_if_error = 0\nbreaker = 1,1ms\n"
                            "loader_concurrency = 0\nloader_batch =\nloader_batch_max = 1\n");
    n = &c->nodes[0];
    check_origin_keys(n, (struct origin_want){60000, 0, 0, 0, 0, 1, 1, 1});
    ck_assert_ptr_null(n->loader_batch);
    cm_conf_free(c);
}
END_TEST

#define NODE_L "[node n]\nkey = k:{id}\nversion = v1\ncaches = l\nloader = http://o/{id}\n"
static const struct bad_case new_key_cases[] = {
    {ST_L NODE_N "grace = -1s\n", "t.conf:7: [node n] grace = \"-1s\": not a duration (e.g. "
                                  "500ms, 30s, 10m, 2h, 10d; a bare number is seconds)\n"},
    {ST_L NODE_N "stale_if_error = 3651d\n",
     "t.conf:7: [node n] stale_if_error = \"3651d\": must be between 0ms and 315360000000ms\n"},
    {ST_L NODE_N "refresh_after = soon\n",
     "t.conf:7: [node n] refresh_after = \"soon\": not a duration (e.g. 500ms, 30s, 10m, 2h, 10d; "
     "a bare number is seconds)\n"},
    {ST_L NODE_N "negative_ttl = 30s\n",
     "t.conf:7: [node n] negative_ttl = \"30s\": needs a json or msgpack serializer (a raw node "
     "has no null to cache)\n"},
    {ST_L NODE_N "negative_ttl = 1y\n",
     "t.conf:7: [node n] negative_ttl = \"1y\": not a duration (e.g. 500ms, 30s, 10m, 2h, 10d; a "
     "bare number is seconds)\n"},
    {ST_L NODE_N "loader_concurrency = -1\n",
     "t.conf:7: [node n] loader_concurrency = \"-1\": must be between 0 and 1000000\n"},
    /* 5 */
    {ST_L NODE_N "loader_concurrency = many\n",
     "t.conf:7: [node n] loader_concurrency = \"many\": not an integer\n"},
    {ST_L NODE_N "breaker = 5\n",
     "t.conf:7: [node n] breaker = \"5\": expected \"failures, open time\", e.g. 5, 10s\n"},
    {ST_L NODE_N "breaker = 0, 10s\n",
     "t.conf:7: [node n] breaker = \"0, 10s\": bad failure count '0' (expected an integer "
     "1..1000000)\n"},
    {ST_L NODE_N "breaker = 5, 0\n",
     "t.conf:7: [node n] breaker = \"5, 0\": bad open time '0' (expected a duration from 1ms to "
     "3650d)\n"},
    {ST_L NODE_N "breaker = 5,\n",
     "t.conf:7: [node n] breaker = \"5,\": bad open time (expected a duration, e.g. 10s)\n"},
    /* 10 */
    {ST_L NODE_L "loader_batch_max = 0\n",
     "t.conf:8: [node n] loader_batch_max = \"0\": must be between 1 and 10000\n"},
    {ST_L NODE_L "loader_batch_max = 10001\n",
     "t.conf:8: [node n] loader_batch_max = \"10001\": must be between 1 and 10000\n"},
    {ST_L NODE_N "loader_batch = http://o/u?ids={id}\n",
     "t.conf:7: [node n] loader_batch = \"http://o/u?ids={id}\": loader_batch needs a loader URL "
     "too (a key too long for a batch request goes to it)\n"},
    {ST_L "[node n]\nkey = k:{a}:{b}\nversion = v1\ncaches = l\nloader = http://o/{a}/{b}\n"
          "loader_batch = http://o/u?ids={a}\n",
     "t.conf:8: [node n] loader_batch = \"http://o/u?ids={a}\": needs a key template with exactly "
     "one parameter (the key 'k:{a}:{b}' has 2)\n"},
    {ST_L "[node n]\nkey = k\nversion = v1\ncaches = l\nloader = http://o/k\n"
          "loader_batch = http://o/u\n",
     "t.conf:8: [node n] loader_batch = \"http://o/u\": needs a key template with exactly one "
     "parameter (the key 'k' has 0)\n"},
    /* 15 */
    {ST_L NODE_L "loader_batch = http://o/u\n",
     "t.conf:8: [node n] loader_batch = \"http://o/u\": must use {id} exactly once (it stands for "
     "the comma-joined values)\n"},
    {ST_L NODE_L "loader_batch = http://o/u?ids={id}&again={id}\n",
     "t.conf:8: [node n] loader_batch = \"http://o/u?ids={id}&again={id}\": must use {id} exactly "
     "once (it stands for the comma-joined values)\n"},
    {ST_L NODE_L "loader_batch = http://o/u?ids={uid}\n",
     "t.conf:8: [node n] loader_batch = \"http://o/u?ids={uid}\": parameter {uid} is not in the "
     "key template 'k:{id}'\n"},
    {ST_L NODE_L "loader_batch = https://o/u?ids={id}\n",
     "t.conf:8: [node n] loader_batch = \"https://o/u?ids={id}\": https:// is not supported: use "
     "http:// (or loader_socket)\n"},
    {ST_L NODE_L "loader_batch = http://{id}/u\n",
     "t.conf:8: [node n] loader_batch = \"http://{id}/u\": parameters are not allowed in the host "
     "part\n"},
};

START_TEST(test_origin_protection_keys_bad)
{
    load_bad(new_key_cases[_i].text, new_key_cases[_i].want);
}
END_TEST

START_TEST(test_bad_configs)
{
    load_bad(bad_cases[_i].text, bad_cases[_i].want);
}
END_TEST

START_TEST(test_all_errors_reported)
{
    /* Errors of every pass (syntax, keys, values, cross-section), printed in line order. */
    load_bad("[server]\n"                 /* 1 */
             "listen = 127.0.0.1:99999\n" /* 2 */
             "bogus = 1\n"                /* 3 */
             "[storage s]\n"              /* 4 */
             "url = redis://h:1\n"        /* 5 */
             "table = t\n"                /* 6 */
             "no equals\n"                /* 7 */
             "[node n]\n"                 /* 8 */
             "key = k:{a}{b}\n"           /* 9 */
             "caches = s:1d, nope\n"      /* 10 */
             "[node n]\n",                /* 11 */
             "t.conf:2: [server] listen = \"127.0.0.1:99999\": bad port '99999' (expected "
             "1..65535)\n"
             "t.conf:3: [server] bogus = \"1\": unknown key\n"
             "t.conf:6: [storage s] table = \"t\": applies only to postgresql, mysql and sqlite "
             "storages\n"
             "t.conf:7: expected \"key = value\", \"[section]\" or a ; comment\n"
             "t.conf:8: [node n]: missing required key 'version'\n"
             "t.conf:9: [node n] key = \"k:{a}{b}\": parameters {a} and {b} are adjacent: "
             "separate them with literal text\n"
             "t.conf:10: [node n] caches = \"s:1d, nope\": unknown storage 'nope'\n"
             "t.conf:11: [node n]: duplicate section (first at line 8)\n");
}
END_TEST

START_TEST(test_long_line)
{
    /* inih cuts lines at 199 characters; the cut line is reported once, at its own line, and
     * later line numbers stay right. */
    char text[2048];
    char big[301];
    memset(big, 'x', 300);
    big[300] = '\0';
    snprintf(text, sizeof(text), "[server]\nprefix = a\nrequirepass = %s\nbogus = 1\n" ST_L NODE_N,
             big);
    load_bad(text, "t.conf:3: line too long (more than 199 characters)\n"
                   "t.conf:4: [server] bogus = \"1\": unknown key\n");

    /* A long comment line too, and one of 1000 characters (five chunks). */
    char huge[1001];
    memset(huge, ';', 1000);
    huge[1000] = '\0';
    snprintf(text, sizeof(text), "; %s\n[server]\n%s\nfoo = 1\n" ST_L NODE_N, big, huge);
    load_bad(text, "t.conf:1: line too long (more than 199 characters)\n"
                   "t.conf:3: line too long (more than 199 characters)\n"
                   "t.conf:4: [server] foo = \"1\": unknown key\n");
}
END_TEST

START_TEST(test_line_length_limit)
{
    /* 199 characters is the longest line accepted; 200 is too long. With and without '\n'. */
    char text[1024];
    char val[200];
    const char *prefix = "requirepass = ";
    size_t plen = strlen(prefix);
    struct cm_conf *c;

    memset(val, 'p', sizeof(val));
    val[199 - plen] = '\0';
    snprintf(text, sizeof(text), ST_L NODE_N "[server]\n%s%s\nprefix = x\n", prefix, val);
    c = load_ok(text);
    ck_assert_uint_eq(strlen(c->requirepass), 199 - plen);
    ck_assert_str_eq(c->prefix, "x");
    cm_conf_free(c);

    snprintf(text, sizeof(text), ST_L NODE_N "[server]\n%s%s", prefix, val);
    c = load_ok(text);
    ck_assert_uint_eq(strlen(c->requirepass), 199 - plen);
    cm_conf_free(c);

    val[199 - plen] = 'p';
    val[200 - plen] = '\0';
    snprintf(text, sizeof(text), ST_L NODE_N "[server]\n%s%s\nbogus = 1\n", prefix, val);
    load_bad(text, "t.conf:8: line too long (more than 199 characters)\n"
                   "t.conf:9: [server] bogus = \"1\": unknown key\n");
}
END_TEST

START_TEST(test_comments_and_whitespace)
{
    struct cm_conf *c = load_ok("\xef\xbb\xbf; BOM, then a comment\n"
                                "# hash comment\n"
                                "\n"
                                "  [server]   ; comment after a header\r\n"
                                "prefix = abc ; inline comment\r\n"
                                "requirepass = a;b\n"
                                "   \t\n"
                                "[storage l] # another\n"
                                "url: local://lru\n"
                                "[node n]\n"
                                "key = k # not a comment\n"
                                "version = v1\n"
                                "caches = l");
    ck_assert_str_eq(c->prefix, "abc");
    ck_assert_str_eq(c->requirepass, "a;b");
    ck_assert_str_eq(c->nodes[0].key, "k # not a comment");
    ck_assert_int_eq(c->storages[0].line, 8);
    ck_assert_int_eq(c->nodes[0].line, 10);
    cm_conf_free(c);
}
END_TEST

START_TEST(test_nul_byte)
{
    static const char text[] = "[server]\nprefix = a\0b\nbogus = 1\n" ST_L NODE_N;
    struct cm_conf *c;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = cm_conf_load_string("t.conf", text, sizeof(text) - 1, &c, f);
    fclose(f);
    ck_assert_int_eq(rc, CM_ERR);
    ck_assert_str_eq(buf,
                     "t.conf:2: NUL byte in line\nt.conf:3: [server] bogus = \"1\": unknown key\n");
    free(buf);
}
END_TEST

START_TEST(test_empty_and_no_server)
{
    struct cm_conf *c = load_ok("");
    ck_assert_uint_eq(c->nlisten, 1);
    ck_assert_uint_eq(c->nstorages, 0);
    ck_assert_uint_eq(c->nnodes, 0);
    ck_assert_str_eq(c->prefix, "cacheme");
    cm_conf_free(c);
}
END_TEST

START_TEST(test_file_errors)
{
    char path[] = "/tmp/cm_conf_XXXXXX";
    int fd = mkstemp(path);
    const char bad[] = "[server]\nmax_clients = 0\n";
    struct cm_conf *c;
    char *buf = NULL;
    size_t len = 0;
    char want[256];
    FILE *f;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bad, sizeof(bad) - 1), (ssize_t)(sizeof(bad) - 1));
    close(fd);
    f = open_memstream(&buf, &len);
    ck_assert_int_eq(cm_conf_load(path, &c, f), CM_ERR);
    fclose(f);
    snprintf(want, sizeof(want),
             "%s:2: [server] max_clients = \"0\": must be between 1 and 1000000\n", path);
    ck_assert_str_eq(buf, want);
    free(buf);
    unlink(path);

    buf = NULL;
    f = open_memstream(&buf, &len);
    ck_assert_int_eq(cm_conf_load("/nonexistent/cachemed.conf", &c, f), CM_ERR);
    fclose(f);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(buf, "/nonexistent/cachemed.conf: cannot open: No such file or directory\n");
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &len);
    ck_assert_int_eq(cm_conf_load("/tmp", &c, f), CM_ERR);
    fclose(f);
    ck_assert_str_eq(buf, "/tmp: cannot read: Is a directory\n");
    free(buf);
}
END_TEST

START_TEST(test_no_leak_on_errors)
{
    /* Every bad case frees what it built (cm_alloc_used balances; ASan checks the rest). */
    size_t used = cm_alloc_used();
    for (size_t i = 0; i < CM_ARRAY_LEN(bad_cases); i++) {
        struct cm_conf *c;
        int rc =
            cm_conf_load_string("t.conf", bad_cases[i].text, strlen(bad_cases[i].text), &c, NULL);
        ck_assert_int_eq(rc, CM_ERR);
        ck_assert_ptr_null(c);
    }
    ck_assert_uint_eq(cm_alloc_used(), used);
}
END_TEST

START_TEST(test_ser_name)
{
    ck_assert_str_eq(cm_ser_name(CM_SER_RAW), "raw");
    ck_assert_str_eq(cm_ser_name(CM_SER_JSON), "json");
    ck_assert_str_eq(cm_ser_name(CM_SER_MSGPACK), "msgpack");
    ck_assert_str_eq(cm_ser_name(CM_SER_COMPRESSED_JSON), "compressed_json");
    ck_assert_str_eq(cm_ser_name(CM_SER_COMPRESSED_MSGPACK), "compressed_msgpack");
    ck_assert_str_eq(cm_ser_name((enum cm_ser)99), "unknown");
}
END_TEST

static Suite *conf_suite(void)
{
    Suite *s = suite_create("conf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_example_loads);
    tcase_add_test(tc, test_example_commented_keys_load);
    tcase_add_test(tc, test_defaults);
    tcase_add_loop_test(tc, test_storage_types, 0, (int)CM_ARRAY_LEN(type_cases));
    tcase_add_test(tc, test_every_key);
    tcase_add_loop_test(tc, test_durations, 0, (int)CM_ARRAY_LEN(dur_cases));
    tcase_add_loop_test(tc, test_sizes, 0, (int)CM_ARRAY_LEN(size_cases));
    tcase_add_loop_test(tc, test_bad_configs, 0, (int)CM_ARRAY_LEN(bad_cases));
    tcase_add_loop_test(tc, test_configs_that_failed_to_start, 0,
                        (int)CM_ARRAY_LEN(start_cases));
    tcase_add_test(tc, test_accepted_forms);
    tcase_add_loop_test(tc, test_loader_host, 0, (int)CM_ARRAY_LEN(loader_host_cases));
    tcase_add_test(tc, test_loader_host_ok);
    tcase_add_test(tc, test_origin_protection_keys);
    tcase_add_loop_test(tc, test_origin_protection_keys_bad, 0, (int)CM_ARRAY_LEN(new_key_cases));
    tcase_add_test(tc, test_all_errors_reported);
    tcase_add_test(tc, test_long_line);
    tcase_add_test(tc, test_line_length_limit);
    tcase_add_test(tc, test_comments_and_whitespace);
    tcase_add_test(tc, test_nul_byte);
    tcase_add_test(tc, test_empty_and_no_server);
    tcase_add_test(tc, test_file_errors);
    tcase_add_test(tc, test_no_leak_on_errors);
    tcase_add_test(tc, test_ser_name);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conf_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
