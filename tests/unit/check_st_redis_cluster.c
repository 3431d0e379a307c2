/* Redis storage in cluster mode against a real 3-master cluster (CM_TEST_REDIS_CLUSTER_SEED):
 * slot hashing, per-slot MGET split, MOVED after a slot migration, ASK during one, the redirect
 * bound. Slots are moved with a sync hiredis context, as redis-cli --cluster reshard does, and
 * moved back at the end of each test. */
#include "daemon/util.h"
#include "storages/redis_cluster.h"
#include "tests/unit/redis_harness.h"

#include <stdarg.h>

/* ---- pure helpers ------------------------------------------------------------------------ */

START_TEST(test_crc16_and_slots)
{
    ck_assert_uint_eq(cm_redis_crc16("123456789", 9), 0x31C3);
    ck_assert_uint_eq(cm_redis_key_slot("foo", 3), 12182); /* LAB.md: MOVED 12182 for foo */
    static const struct {
        const char *key, *same_as;
    } tags[] = {
        {"{user1000}.following", "user1000"},
        {"{user1000}.followers", "user1000"},
        {"foo{}{bar}", "foo{}{bar}"}, /* empty tag: the whole key */
        {"foo{{bar}}zap", "{bar"},    /* first '{' to the first '}' after it */
        {"foo{bar}{zap}", "bar"},
        {"{}", "{}"},
        {"a{b", "a{b"},
        {"}{x}", "x"},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(tags); i++) {
        ck_assert_msg(cm_redis_key_slot(tags[i].key, strlen(tags[i].key)) ==
                          cm_redis_key_slot(tags[i].same_as, strlen(tags[i].same_as)),
                      "%s", tags[i].key);
    }
    ck_assert_uint_eq(cm_redis_key_slot("", 0), 0);
}
END_TEST

START_TEST(test_parse_redirect)
{
    unsigned slot = 0;
    int port = 0;
    char host[64];
    const char *m = "MOVED 3999 127.0.0.1:6381";
    ck_assert_int_eq(cm_redis_parse_redirect(m, strlen(m), &slot, host, sizeof(host), &port),
                     CM_REDIS_REDIR_MOVED);
    ck_assert_uint_eq(slot, 3999);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(port, 6381);
    const char *a = "ASK 16383 ::1:7002";
    ck_assert_int_eq(cm_redis_parse_redirect(a, strlen(a), &slot, host, sizeof(host), &port),
                     CM_REDIS_REDIR_ASK);
    ck_assert_uint_eq(slot, 16383);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(port, 7002);
    static const char *const bad[] = {"MOVED",       "MOVED 16384 h:1", "MOVED 1 h",   "MOVED 1 :",
                                      "MOVED 1 h:0", "MOVED 1 h:70000", "MOVED x h:1", "ASK 1 h:1x",
                                      "ERR wrong",   "MOVED  1 h:1",    "TRYAGAIN"};
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
        ck_assert_msg(cm_redis_parse_redirect(bad[i], strlen(bad[i]), &slot, host, sizeof(host),
                                              &port) == CM_REDIS_REDIR_NONE,
                      "%s", bad[i]);
    }
    const char *e = "MOVED 12 :7001"; /* empty host: the node that replied */
    ck_assert_int_eq(cm_redis_parse_redirect(e, strlen(e), &slot, host, sizeof(host), &port),
                     CM_REDIS_REDIR_MOVED);
    ck_assert_str_eq(host, "");
    ck_assert_int_eq(port, 7001);
    /* A host longer than the buffer is refused, not truncated. */
    ck_assert_int_eq(cm_redis_parse_redirect(m, strlen(m), &slot, host, 4, &port),
                     CM_REDIS_REDIR_NONE);
}
END_TEST

/* ---- the cluster, driven with sync hiredis ----------------------------------------------- */

struct cnode {
    char host[64];
    int port;
    char id[64];
};

struct cluster {
    struct cnode n[8];
    size_t nn;
};

static redisReply *node_cmd(const struct cnode *n, const char *fmt, ...)
{
    redisContext *c = sync_connect(n->host, n->port);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "%s:%d: %s", n->host, n->port, c->errstr);
    redisFree(c);
    return r;
}

/* Runs a command that must not fail. */
#define NODE_OK(n, ...)                                                                            \
    do {                                                                                           \
        redisReply *r_ = node_cmd((n), __VA_ARGS__);                                               \
        ck_assert_msg(r_->type != REDIS_REPLY_ERROR, "%s:%d: %s", (n)->host, (n)->port, r_->str);  \
        freeReplyObject(r_);                                                                       \
    } while (0)

/* Reads the masters from CLUSTER SLOTS of the seed; *owner (when not NULL) = index of slot's. */
static void cluster_load(struct cluster *cl, unsigned slot, size_t *owner)
{
    const char *seed = rt_env("CM_TEST_REDIS_CLUSTER_SEED");
    struct cnode s = {.port = 0};
    url_host_port(seed, s.host, sizeof(s.host), &s.port);
    redisReply *r = node_cmd(&s, "CLUSTER SLOTS");
    ck_assert(r->type == REDIS_REPLY_ARRAY);
    memset(cl, 0, sizeof(*cl));
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i], *m = e->element[2];
        /* nil under cluster-preferred-endpoint-type unknown-endpoint: the seed's host */
        const char *host = m->element[0]->type == REDIS_REPLY_STRING ? m->element[0]->str : s.host;
        size_t j;
        for (j = 0; j < cl->nn; j++) {
            if (cl->n[j].port == (int)m->element[1]->integer && strcmp(cl->n[j].host, host) == 0) {
                break;
            }
        }
        if (j == cl->nn) {
            ck_assert(cl->nn < CM_ARRAY_LEN(cl->n) && m->elements >= 3);
            snprintf(cl->n[j].host, sizeof(cl->n[j].host), "%s", host);
            cl->n[j].port = (int)m->element[1]->integer;
            snprintf(cl->n[j].id, sizeof(cl->n[j].id), "%s", m->element[2]->str);
            cl->nn++;
        }
        if (owner != NULL && slot >= e->element[0]->integer && slot <= e->element[1]->integer) {
            *owner = j;
        }
    }
    freeReplyObject(r);
    ck_assert_uint_eq(cl->nn, 3);
}

/* Waits until every master's CLUSTER SLOTS gives slot to owner, so that the next step does not
 * read a map that gossip has not settled yet. A master still naming the old owner after a second
 * (a stale ping with a higher config epoch can win) is told again; 15 s at most. */
static void slot_wait_agreed(const struct cluster *cl, unsigned slot, const struct cnode *owner)
{
    double start = h_now_ms(), told = start;
    for (size_t i = 0; i < cl->nn; i++) {
        for (;;) {
            int port = -1;
            redisReply *r = node_cmd(&cl->n[i], "CLUSTER SLOTS");
            for (size_t j = 0; r->type == REDIS_REPLY_ARRAY && j < r->elements; j++) {
                redisReply *e = r->element[j], *m = e->element[2];
                if (slot >= e->element[0]->integer && slot <= e->element[1]->integer) {
                    port = (int)m->element[1]->integer; /* hosts: all 127.0.0.1, or nil */
                }
            }
            freeReplyObject(r);
            if (port == owner->port) {
                break;
            }
            double now = h_now_ms();
            ck_assert_msg(now - start < 15000, "%s:%d still gives slot %u to port %d, not %d",
                          cl->n[i].host, cl->n[i].port, slot, port, owner->port);
            if (now - told > 1000) {
                NODE_OK(&cl->n[i], "CLUSTER SETSLOT %u NODE %s", slot, owner->id);
                told = now;
            }
            usleep(20000);
        }
    }
}

/* Starts moving slot from -> to (IMPORTING, MIGRATING, MIGRATE every key); with finish, also
 * assigns it to `to` on every master, as redis-cli --cluster reshard does. */
static void slot_migrate(const struct cluster *cl, unsigned slot, size_t from, size_t to,
                         bool finish)
{
    const struct cnode *f = &cl->n[from], *t = &cl->n[to];
    NODE_OK(t, "CLUSTER SETSLOT %u IMPORTING %s", slot, f->id);
    NODE_OK(f, "CLUSTER SETSLOT %u MIGRATING %s", slot, t->id);
    for (;;) {
        redisReply *keys = node_cmd(f, "CLUSTER GETKEYSINSLOT %u 100", slot);
        ck_assert(keys->type == REDIS_REPLY_ARRAY);
        if (keys->elements == 0) {
            freeReplyObject(keys);
            break;
        }
        const char *argv[110];
        size_t argl[110];
        char port[16];
        snprintf(port, sizeof(port), "%d", t->port);
        const char *head[] = {"MIGRATE", t->host, port, "", "0", "5000", "KEYS"};
        size_t argc = 0;
        for (; argc < 7; argc++) {
            argv[argc] = head[argc];
            argl[argc] = strlen(head[argc]);
        }
        for (size_t i = 0; i < keys->elements; i++, argc++) {
            argv[argc] = keys->element[i]->str;
            argl[argc] = keys->element[i]->len;
        }
        redisContext *c = sync_connect(f->host, f->port);
        redisReply *r = redisCommandArgv(c, (int)argc, argv, argl);
        ck_assert_msg(r != NULL && r->type != REDIS_REPLY_ERROR, "MIGRATE: %s",
                      r != NULL ? r->str : c->errstr);
        freeReplyObject(r);
        redisFree(c);
        freeReplyObject(keys);
    }
    if (finish) {
        NODE_OK(t, "CLUSTER SETSLOT %u NODE %s", slot, t->id);
        NODE_OK(f, "CLUSTER SETSLOT %u NODE %s", slot, t->id);
        for (size_t i = 0; i < cl->nn; i++) {
            if (i != from && i != to) {
                NODE_OK(&cl->n[i], "CLUSTER SETSLOT %u NODE %s", slot, t->id);
            }
        }
        slot_wait_agreed(cl, slot, t);
    }
}

static void set_endpoint_type(const struct cluster *cl, const char *type)
{
    for (size_t i = 0; i < cl->nn; i++) {
        NODE_OK(&cl->n[i], "CONFIG SET cluster-preferred-endpoint-type %s", type);
    }
}

/* Opens a cluster storage once every master names hosts by endpoint_type (ip, or
 * unknown-endpoint), and waits for its first slot map. */
static void open_cluster_with(struct rt *t, int pool, const char *endpoint_type)
{
    struct cluster cl;
    cluster_load(&cl, 0, NULL);
    set_endpoint_type(&cl, endpoint_type);
    char url[128];
    snprintf(url, sizeof(url), "redis://%s", rt_env("CM_TEST_REDIS_CLUSTER_SEED"));
    rt_open(t, url, pool, 2000, true);
    double end = h_now_ms() + 5000;
    struct cm_st_redis_info in;
    do {
        rt_run_for(t, 20);
        rt_info(t, &in);
    } while (in.slot_updates == 0 && h_now_ms() < end);
    ck_assert_msg(in.slot_updates > 0, "no CLUSTER SLOTS answer within 5 s");
    ck_assert_uint_eq(in.nodes, 3);
}

static void open_cluster(struct rt *t, int pool)
{
    open_cluster_with(t, pool, "ip");
}

static void node_name(const struct cnode *n, char *out, size_t sz)
{
    snprintf(out, sz, "%s:%d", n->host, n->port);
}

START_TEST(test_mget_200_keys_across_slots)
{
    enum { N = 200 };
    struct rt t;
    open_cluster(&t, 2);
    char(*keys)[64] = cm_calloc(N, sizeof(*keys));
    char(*vals)[64] = cm_calloc(N, sizeof(*vals));
    char **kp = cm_calloc(N, sizeof(*kp)), **vp = cm_calloc(N, sizeof(*vp));
    size_t *kl = cm_calloc(N, sizeof(*kl)), *vl = cm_calloc(N, sizeof(*vl));
    bool seen[CM_REDIS_NSLOTS] = {false};
    size_t nslots = 0;
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "cmtest:%d:c:%d", (int)getpid(), i);
        snprintf(vals[i], sizeof(vals[i]), "val\r\n%d\xff", i * 17);
        kp[i] = keys[i];
        vp[i] = vals[i];
        kl[i] = strlen(keys[i]);
        vl[i] = strlen(vals[i]);
        unsigned s = cm_redis_key_slot(kp[i], kl[i]);
        nslots += !seen[s];
        seen[s] = true;
    }
    /* The keys hold the pid, and CRC16 of keys that differ in a few digits is far from uniform:
     * 144 distinct slots were seen for one pid. What matters is that they span many slots. */
    ck_assert_uint_gt(nslots, 100);
    struct big_result r;
    big_run(&t, big_op(CM_ST_SET, N, kp, kl, vp, vl, 60000), &r, 10);
    ck_assert_msg(r.status == CM_OK, "set: %s", r.err);
    big_result_deinit(&r);
    big_run(&t, big_op(CM_ST_GET, N, kp, kl, NULL, NULL, -1), &r, 10);
    ck_assert_msg(r.status == CM_OK, "mget: %s", r.err);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(r.hit[i], "key %d missed", i);
        ck_assert_uint_eq(r.vlen[i], vl[i]);
        ck_assert(memcmp(r.val[i], vals[i], vl[i]) == 0);
    }
    big_result_deinit(&r);
    /* With want_age, each slot's MGET is followed by its keys' PTTLs on the same master: every
     * hit gets a write time (raw values, SPEC §12), within a few seconds of now. */
    struct cm_st_op *aop = big_op(CM_ST_GET, N, kp, kl, NULL, NULL, 60000);
    aop->want_age = true;
    int64_t now_ms = cm_wall_us() / 1000;
    big_run(&t, aop, &r, 10);
    ck_assert_msg(r.status == CM_OK, "mget with ages: %s", r.err);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(r.hit[i] && r.written_ms[i] > now_ms - 5000 &&
                          r.written_ms[i] <= now_ms + 5000,
                      "key %d: hit %d written_ms %lld, now %lld", i, r.hit[i],
                      (long long)r.written_ms[i], (long long)now_ms);
    }
    big_result_deinit(&r);

    /* Each key really sits on the master that owns its slot, read there directly. */
    struct cluster cl;
    for (int i = 0; i < N; i += 37) {
        size_t owner = 99;
        cluster_load(&cl, cm_redis_key_slot(kp[i], kl[i]), &owner);
        ck_assert(owner < cl.nn);
        redisReply *rep = node_cmd(&cl.n[owner], "GET %s", kp[i]);
        ck_assert(rep->type == REDIS_REPLY_STRING && strcmp(rep->str, vals[i]) == 0);
        freeReplyObject(rep);
        char want[96], got[96];
        node_name(&cl.n[owner], want, sizeof(want));
        cm_st_redis_slot_owner(t.st, cm_redis_key_slot(kp[i], kl[i]), got, sizeof(got));
        ck_assert_str_eq(got, want);
    }

    big_run(&t, big_op(CM_ST_DEL, N, kp, kl, NULL, NULL, -1), &r, 10);
    ck_assert_int_eq(r.status, CM_OK);
    big_result_deinit(&r);
    big_run(&t, big_op(CM_ST_GET, N, kp, kl, NULL, NULL, -1), &r, 10);
    for (int i = 0; i < N; i++) {
        ck_assert(!r.hit[i]);
    }
    big_result_deinit(&r);
    struct cm_st_redis_info in;
    rt_info(&t, &in);
    ck_assert_uint_eq(in.moved, 0);
    ck_assert_uint_eq(in.pending, 0);
    cm_free(keys);
    cm_free(vals);
    cm_free(kp);
    cm_free(vp);
    cm_free(kl);
    cm_free(vl);
    rt_close(&t);
}
END_TEST

/* A key, its slot and the slot's owner (index in cl). */
static void pick_key(struct cluster *cl, const char *suffix, char *k, size_t ksz, unsigned *slot,
                     size_t *owner)
{
    snprintf(k, ksz, "cmtest:%d:%s", (int)getpid(), suffix);
    *slot = cm_redis_key_slot(k, strlen(k));
    *owner = 99;
    cluster_load(cl, *slot, owner);
    ck_assert(*owner < cl->nn);
}

START_TEST(test_moved_after_migration)
{
    struct rt t;
    open_cluster(&t, 2);
    struct cluster cl;
    char k[96], owner_name[96], got[96];
    unsigned slot;
    size_t a;
    pick_key(&cl, "moved", k, sizeof(k), &slot, &a);
    size_t b = (a + 1) % cl.nn;
    const char *keys[] = {k};
    const char *vals[] = {"moving value"};
    ck_assert_int_eq(h_set(t.st, 1, keys, vals, 60000), CM_OK);
    node_name(&cl.n[a], owner_name, sizeof(owner_name));
    cm_st_redis_slot_owner(t.st, slot, got, sizeof(got));
    ck_assert_str_eq(got, owner_name);

    slot_migrate(&cl, slot, a, b, true);
    struct cm_st_redis_info before, after;
    rt_info(&t, &before);
    struct h_result r;
    h_get(t.st, 1, keys, &r); /* the storage still sends it to a: MOVED to b */
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_assert_val(&r, 0, "moving value");
    h_result_deinit(&r);
    rt_info(&t, &after);
    ck_assert_uint_eq(after.moved, before.moved + 1);
    node_name(&cl.n[b], owner_name, sizeof(owner_name));
    cm_st_redis_slot_owner(t.st, slot, got, sizeof(got));
    ck_assert_str_eq(got, owner_name);
    /* The MOVED asked for a CLUSTER SLOTS refresh (rate-limited); it lands and agrees. */
    double end = h_now_ms() + 3000;
    do {
        rt_run_for(&t, 50);
        rt_info(&t, &after);
    } while (after.slot_updates == before.slot_updates && h_now_ms() < end);
    ck_assert_uint_gt(after.slot_updates, before.slot_updates);
    cm_st_redis_slot_owner(t.st, slot, got, sizeof(got));
    ck_assert_str_eq(got, owner_name);
    h_get(t.st, 1, keys, &r); /* straight to b now */
    h_assert_val(&r, 0, "moving value");
    h_result_deinit(&r);
    rt_info(&t, &before);
    ck_assert_uint_eq(before.moved, after.moved);

    /* Move it back; a DEL is now the one redirected. */
    slot_migrate(&cl, slot, b, a, true);
    ck_assert_int_eq(h_del(t.st, 1, keys), CM_OK);
    rt_info(&t, &after);
    ck_assert_uint_eq(after.moved, before.moved + 1);
    redisReply *rep = node_cmd(&cl.n[a], "EXISTS %s", k);
    ck_assert(rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    freeReplyObject(rep);
    ck_assert_uint_eq(after.pending, 0);
    rt_close(&t);
}
END_TEST

START_TEST(test_ask_during_migration)
{
    struct rt t;
    open_cluster(&t, 2);
    struct cluster cl;
    char k[96], stay[96];
    unsigned slot;
    size_t a;
    pick_key(&cl, "{asktag}moving", k, sizeof(k), &slot, &a);
    snprintf(stay, sizeof(stay), "cmtest:%d:{asktag}staying", (int)getpid());
    ck_assert_uint_eq(cm_redis_key_slot(stay, strlen(stay)), slot);
    size_t b = (a + 2) % cl.nn;
    const char *keys[] = {k, stay};
    const char *vals[] = {"asked value", "stays on the source"};
    ck_assert_int_eq(h_set(t.st, 2, keys, vals, 60000), CM_OK);

    /* Half-way: slot MIGRATING on a, IMPORTING on b, only k moved. */
    NODE_OK(&cl.n[b], "CLUSTER SETSLOT %u IMPORTING %s", slot, cl.n[a].id);
    NODE_OK(&cl.n[a], "CLUSTER SETSLOT %u MIGRATING %s", slot, cl.n[b].id);
    NODE_OK(&cl.n[a], "MIGRATE %s %d %s 0 5000", cl.n[b].host, cl.n[b].port, k);

    struct cm_st_redis_info before, after;
    rt_info(&t, &before);
    struct h_result r;
    h_get(t.st, 1, keys, &r); /* a: ASK b; then ASKING + GET on b */
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_assert_val(&r, 0, "asked value");
    h_result_deinit(&r);
    h_get(t.st, 1, keys + 1, &r); /* still on a: answered there */
    h_assert_val(&r, 0, "stays on the source");
    h_result_deinit(&r);
    rt_info(&t, &after);
    ck_assert_uint_eq(after.ask, before.ask + 1);
    /* Both in one MGET: a says TRYAGAIN (keys on both sides); each key goes again alone. */
    h_get(t.st, 2, keys, &r);
    ck_assert_msg(r.status == CM_OK, "%s", r.err);
    h_assert_val(&r, 0, "asked value");
    h_assert_val(&r, 1, "stays on the source");
    h_result_deinit(&r);
    rt_info(&t, &after);
    ck_assert_uint_eq(after.tryagain, before.tryagain + 1);
    ck_assert_uint_eq(after.ask, before.ask + 2);
    ck_assert_uint_eq(after.moved, before.moved);
    char got[96], want[96];
    node_name(&cl.n[a], want, sizeof(want));
    cm_st_redis_slot_owner(t.st, slot, got, sizeof(got));
    ck_assert_str_eq(got, want); /* ASK is one-off: the map still says a */

    /* A write to the moved key follows the ASK too, and lands on b. */
    const char *v2[] = {"asked again"};
    ck_assert_int_eq(h_set(t.st, 1, keys, v2, 60000), CM_OK);
    rt_info(&t, &after);
    ck_assert_uint_eq(after.ask, before.ask + 3);
    redisContext *c = sync_connect(cl.n[b].host, cl.n[b].port);
    freeReplyObject(redisCommand(c, "ASKING"));
    redisReply *rep = redisCommand(c, "GET %s", k);
    ck_assert(rep != NULL && rep->type == REDIS_REPLY_STRING &&
              strcmp(rep->str, "asked again") == 0);
    freeReplyObject(rep);
    redisFree(c);

    /* Finish the move to b, then move everything back to a. */
    slot_migrate(&cl, slot, a, b, true);
    slot_migrate(&cl, slot, b, a, true);
    ck_assert_int_eq(h_del(t.st, 2, keys), CM_OK);
    rt_info(&t, &after);
    ck_assert_uint_eq(after.pending, 0);
    rt_close(&t);
}
END_TEST

/* a says ASK b, b (not importing) says MOVED a, ...: the op fails after 5 redirects. */
START_TEST(test_redirect_loop_is_bounded)
{
    struct rt t;
    open_cluster(&t, 1);
    struct cluster cl;
    char k[96];
    unsigned slot;
    size_t a;
    pick_key(&cl, "loop", k, sizeof(k), &slot, &a);
    size_t b = (a + 1) % cl.nn;
    NODE_OK(&cl.n[a], "CLUSTER SETSLOT %u MIGRATING %s", slot, cl.n[b].id);
    const char *keys[] = {k};
    struct h_result r;
    h_get(t.st, 1, keys, &r);
    NODE_OK(&cl.n[a], "CLUSTER SETSLOT %u STABLE", slot);
    ck_assert_int_eq(r.status, CM_ERR);
    ck_assert_msg(strstr(r.err, "more than 5 redirects") != NULL, "%s", r.err);
    h_result_deinit(&r);
    struct cm_st_redis_info in;
    rt_info(&t, &in);
    ck_assert_uint_eq(in.ask + in.moved, 5); /* the 6th is refused */
    ck_assert_uint_eq(in.pending, 0);
    /* Stable again: the same read works. */
    h_get(t.st, 1, keys, &r);
    ck_assert_int_eq(r.status, CM_OK);
    h_result_deinit(&r);
    rt_close(&t);
}
END_TEST

START_TEST(test_cluster_seed_down)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    struct rt t;
    rt_open(&t, url, 1, 2000, true);
    double t0 = h_now_ms();
    const char *keys[] = {"a", "b", "c"};
    struct h_result r;
    h_get(t.st, 3, keys, &r);
    ck_assert_int_eq(r.status, CM_ERR);
    h_result_deinit(&r);
    ck_assert(h_now_ms() - t0 < 500);
    rt_close(&t);
}
END_TEST

static void on_msg(void *arg, const char *msg, size_t len)
{
    int *n = arg;
    *n += len == 5 && memcmp(msg, "k:1:1", 5) == 0;
}

/* Published through one master, received on a subscriber connected to another (or the same):
 * cluster pub/sub is broadcast. */
START_TEST(test_cluster_pubsub)
{
    struct rt t;
    open_cluster(&t, 1);
    char chan[64];
    snprintf(chan, sizeof(chan), "cmtest:%d:inv", (int)getpid());
    int got = 0;
    ck_assert_int_eq(cm_st_redis_subscribe(t.st, chan, on_msg, &got), CM_OK);
    struct cm_st_redis_info in;
    double end = h_now_ms() + 3000;
    for (rt_info(&t, &in); in.subscribed == 0 && h_now_ms() < end; rt_info(&t, &in)) {
        rt_run_for(&t, 10);
    }
    ck_assert_uint_eq(in.subscribed, 1);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cm_st_redis_publish(t.st, chan, "k:1:1", 5), CM_OK);
    }
    end = h_now_ms() + 3000;
    while (got < 3 && h_now_ms() < end) {
        rt_run_for(&t, 10);
    }
    ck_assert_int_eq(got, 3);
    rt_close(&t);
}
END_TEST

/* cluster-preferred-endpoint-type unknown-endpoint: CLUSTER SLOTS gives a nil host and redirects
 * read "MOVED <slot> :<port>": both mean the host of the node that answered. */
START_TEST(test_unknown_endpoint_hosts)
{
    struct cluster cl;
    char k[96], want[96], got[96];
    unsigned slot;
    size_t a;
    pick_key(&cl, "noendpoint", k, sizeof(k), &slot, &a);
    size_t b = (a + 1) % cl.nn;
    struct rt t;
    open_cluster_with(&t, 1, "unknown-endpoint");
    node_name(&cl.n[a], want, sizeof(want));
    cm_st_redis_slot_owner(t.st, slot, got, sizeof(got));
    ck_assert_str_eq(got, want);
    const char *keys[] = {k};
    const char *vals[] = {"v"};
    ck_assert_int_eq(h_set(t.st, 1, keys, vals, 60000), CM_OK);
    slot_migrate(&cl, slot, a, b, true);
    struct h_result r;
    h_get(t.st, 1, keys, &r);
    h_assert_val(&r, 0, "v");
    h_result_deinit(&r);
    struct cm_st_redis_info in;
    rt_info(&t, &in);
    ck_assert_uint_eq(in.moved, 1);
    ck_assert_uint_eq(in.nodes, 3);
    node_name(&cl.n[b], want, sizeof(want));
    cm_st_redis_slot_owner(t.st, slot, got, sizeof(got));
    ck_assert_str_eq(got, want);
    set_endpoint_type(&cl, "ip");
    slot_migrate(&cl, slot, b, a, true);
    ck_assert_int_eq(h_del(t.st, 1, keys), CM_OK);
    rt_close(&t);
}
END_TEST

static Suite *st_redis_cluster_suite(void)
{
    Suite *s = suite_create("st_redis_cluster");
    TCase *pure = tcase_create("slots");
    tcase_add_test(pure, test_crc16_and_slots);
    tcase_add_test(pure, test_parse_redirect);
    suite_add_tcase(s, pure);
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mget_200_keys_across_slots);
    tcase_add_test(tc, test_moved_after_migration);
    tcase_add_test(tc, test_ask_during_migration);
    tcase_add_test(tc, test_redirect_loop_is_bounded);
    tcase_add_test(tc, test_cluster_seed_down);
    tcase_add_test(tc, test_cluster_pubsub);
    tcase_add_test(tc, test_unknown_endpoint_hosts);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(st_redis_cluster_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
