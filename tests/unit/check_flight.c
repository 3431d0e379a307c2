/* The flight engine under scripted schedules, with the fake storage and loader of
 * flight_harness.h: storage ops and loads complete when and how each test says. Each test ends
 * with fh_settle (every request answered, no key entry left) and fh_finish (the daemon's
 * shutdown; ASan checks that everything is freed). The fuzzer (tests/fuzz/fuzz_flight.c) drives
 * the same harness with any schedule. */
#include "tests/unit/flight_harness.h"
#include "daemon/util.h"

#include <check.h>

static struct fh H;

/* Index of the outstanding load of key, or -1. */
static int load_of(struct fh *h, const char *key)
{
    char url[64];
    fh_url_of(key, url, sizeof(url));
    for (size_t i = 0; i < h->nloads; i++) {
        if (strcmp(h->loads[i].url, url) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Completes every outstanding storage op (OK) and runs a loop pass, until none is left. */
static void ops_ok(struct fh *h)
{
    fh_pass(h);
    while (h->nops > 0) {
        fh_complete_op(h, 0, true);
        fh_pass(h);
    }
}

static const char *fake_value(struct fh *h, int storage, const char *skey)
{
    struct fh_entry *e = fh_find(&h->stores[storage], skey, strlen(skey));
    return e != NULL ? e->val : NULL;
}

/* Defect 1: REFRESH + DEL of a local-only key in one pipeline, then the load ends: the DEL
 * that was queued behind the REFRESH ran and ended inside the REFRESH's end and freed the key
 * entry under it (use-after-free in ke_run). */
START_TEST(test_refresh_then_del_local_only)
{
    fh_init(&H, true);
    fh_refresh(&H, 0, "c:1");
    fh_del(&H, 0, "c:1");
    fh_set(&H, 1, "c:2");
    fh_refresh(&H, 1, "c:2");
    fh_set(&H, 1, "c:2");
    ck_assert_int_eq((int)H.nloads, 2);
    fh_complete_load(&H, 0, FH_VALUE);
    fh_complete_load(&H, 0, FH_VALUE);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 2);
    ck_assert_uint_eq(H.conns[1].ngot, 3);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* Defect 1, second form: clients go away with REFRESH + SET in flight. */
START_TEST(test_disconnect_with_refresh_and_set)
{
    fh_init(&H, true);
    for (int i = 0; i < 3; i++) {
        fh_refresh(&H, i, "c:1");
        fh_set(&H, i, "c:1");
        fh_disconnect(&H, i);
    }
    while (H.nloads > 0) {
        fh_complete_load(&H, 0, FH_VALUE);
        fh_pass(&H);
    }
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* Defect 2: shutdown with a REFRESH at the origin and a SET of the same key on a remote chain:
 * the loader failing its loads must not make anything touch a freed storage. */
START_TEST(test_shutdown_with_refresh_and_set)
{
    fh_init(&H, true);
    fh_refresh(&H, 0, "b:1");
    fh_set(&H, 0, "b:1");
    fh_get(&H, 1, "b:1");
    fh_pass(&H);
    ck_assert_int_eq((int)H.nloads, 1);
    fh_finish(&H);   /* the loader fails the REFRESH's load after the SET's writes failed */
}
END_TEST

/* Defect 6: 20 pipelined REFRESHes of one key, then the client goes: another client's GET waits
 * for one load, not 20 in a row; 3,000 REFRESHes cost two loads, not 3,000. */
START_TEST(test_refreshes_coalesce)
{
    fh_init(&H, true);
    for (int i = 0; i < 20; i++) {
        fh_refresh(&H, 0, "c:q");
    }
    fh_disconnect(&H, 0);
    fh_get(&H, 1, "c:q");
    ck_assert_int_eq((int)H.nloads, 1);
    fh_complete_load(&H, 0, FH_ERROR);   /* the hanging load times out */
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[1].ngot, 1);   /* answered by the load it joined */
    /* The REFRESHes waiting behind it share the next load. */
    ck_assert_int_eq((int)H.nloads, 1);
    fh_complete_load(&H, 0, FH_VALUE);
    fh_pass(&H);
    ck_assert_uint_eq(H.loads_started, 2);
    for (int i = 0; i < 200; i++) {
        fh_refresh(&H, 2, "c:amp");
    }
    while (H.nloads > 0) {
        fh_complete_load(&H, 0, FH_VALUE);
        fh_pass(&H);
    }
    ck_assert_uint_eq(H.conns[2].ngot, 200);
    ck_assert_uint_eq(H.loads_started, 4);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* Concurrent GETs of one key from three clients: one read per storage, one load. */
START_TEST(test_gets_coalesce)
{
    fh_init(&H, true);
    for (int i = 0; i < 3; i++) {
        fh_get(&H, i, "b:1");
    }
    fh_pass(&H);
    ck_assert_int_eq((int)H.nops, 1);   /* r1 */
    fh_complete_op(&H, 0, true);
    fh_pass(&H);
    ck_assert_int_eq((int)H.nops, 1);   /* r2 */
    fh_complete_op(&H, 0, true);
    ck_assert_int_eq((int)H.nloads, 1);
    fh_complete_load(&H, 0, FH_VALUE);
    fh_pass(&H);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(H.conns[i].ngot, 1);
    }
    ops_ok(&H);   /* the writes to r1 and r2 */
    ck_assert_ptr_nonnull(fake_value(&H, 1, "t:b:1:v"));
    ck_assert_ptr_nonnull(fake_value(&H, 2, "t:b:1:v"));
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* An MGET whose loads end in reverse order is answered once, in key order; a failed storage
 * read is a miss; a 404 is nil and written nowhere. */
START_TEST(test_mget_loads_in_any_order)
{
    fh_init(&H, false);
    const char *argv[] = { "MGET", "b:1", "b:2", "b:3", "b:1" };
    fh_send(&H, 0, FH_MGET, 5, argv);
    fh_pass(&H);
    fh_complete_op(&H, 0, false);   /* r1 fails: a miss for every key */
    fh_pass(&H);
    fh_complete_op(&H, 0, true);    /* r2 misses */
    ck_assert_int_eq((int)H.nloads, 3);
    fh_complete_load(&H, (size_t)load_of(&H, "b:3"), FH_VALUE);
    fh_complete_load(&H, (size_t)load_of(&H, "b:2"), FH_404);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 0);
    fh_complete_load(&H, (size_t)load_of(&H, "b:1"), FH_ERROR);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 1);
    ops_ok(&H);
    ck_assert_ptr_null(fake_value(&H, 1, "t:b:2:v"));
    ck_assert_ptr_null(fake_value(&H, 1, "t:b:1:v"));
    ck_assert_ptr_nonnull(fake_value(&H, 1, "t:b:3:v"));
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* A SET during a load supersedes it: the loaded value answers the GET but is written nowhere;
 * a GET after the SET's reply gets the SET's value (the harness checks every value's age). */
START_TEST(test_set_supersedes_load)
{
    fh_init(&H, true);
    fh_get(&H, 0, "b:1");
    ops_ok(&H);
    ck_assert_int_eq((int)H.nloads, 1);
    fh_set(&H, 1, "b:1");
    ops_ok(&H);
    ck_assert_uint_eq(H.conns[1].ngot, 1);
    fh_complete_load(&H, 0, FH_VALUE);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 1);
    ck_assert_int_eq((int)H.nops, 0);   /* nothing written */
    fh_get(&H, 2, "b:1");
    ops_ok(&H);
    ck_assert_uint_eq(H.conns[2].ngot, 1);
    ck_assert_int_eq(fake_value(&H, 1, "t:b:1:v")[0], 'S');
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* A DEL during a load: a GET after the DEL's reply does not get the old load's value; it waits
 * for that load to end (one load per key at a time) and then loads again. */
START_TEST(test_get_after_del_loads_again)
{
    fh_init(&H, true);
    fh_get(&H, 0, "a:1");
    ops_ok(&H);
    ck_assert_int_eq((int)H.nloads, 1);
    fh_del(&H, 1, "a:1");
    ops_ok(&H);
    ck_assert_uint_eq(H.conns[1].ngot, 1);
    fh_get(&H, 2, "a:1");
    ops_ok(&H);
    ck_assert_int_eq((int)H.nloads, 1);   /* still the old one */
    fh_complete_load(&H, 0, FH_VALUE);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 1);
    ck_assert_uint_eq(H.conns[2].ngot, 0);
    ck_assert_int_eq((int)H.nloads, 1);   /* its own */
    fh_complete_load(&H, 0, FH_VALUE);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[2].ngot, 1);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* A loader that refuses a fetch fails the flight at once; the key's next load still runs. */
START_TEST(test_loader_refusal)
{
    fh_init(&H, true);
    H.fetch_refuses = true;
    fh_get(&H, 0, "c:1");
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 1);
    fh_get(&H, 0, "c:1");
    ck_assert_int_eq((int)H.nloads, 1);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* Shutdown at any point: reads gathered but not sent, ops and loads out, clients gone. */
START_TEST(test_shutdown_mid_everything)
{
    fh_init(&H, true);
    fh_get(&H, 0, "b:1");
    fh_pass(&H);
    fh_get(&H, 1, "b:2");              /* gathered, not sent */
    fh_set(&H, 2, "a:1");
    fh_refresh(&H, 2, "a:1");
    fh_del(&H, 3, "b:1");
    fh_disconnect(&H, 3);
    fh_finish(&H);
}
END_TEST

static struct cm_node *node_named(struct fh *h, const char *name)
{
    for (size_t i = 0; i < h->srv.nnodes; i++) {
        if (strcmp(h->srv.nodes[i].name, name) == 0) {
            return &h->srv.nodes[i];
        }
    }
    return NULL;
}

/* SPEC §12 breaker = 2, 50ms: two failed loads in a row open it; loads then fail without
 * calling the origin; after 50 ms one trial goes out while the others are still refused; its
 * failure reopens it, its success closes it. */
START_TEST(test_breaker)
{
    fh_init(&H, true);
    struct cm_node *e = node_named(&H, "e");
    fh_get(&H, 0, "e:1");
    fh_complete_load(&H, 0, FH_ERROR);
    fh_get(&H, 0, "e:2");
    fh_complete_load(&H, 0, FH_ERROR);
    ck_assert_uint_eq(e->stats.breaker_open_count, 1);
    ck_assert_int_eq(cm_flights_breaker_state(H.srv.flights, e), 1);
    fh_get(&H, 0, "e:3");
    ck_assert_int_eq((int)H.nloads, 0);     /* refused without calling the origin */
    ck_assert_uint_eq(e->stats.load_failure_count, 3);
    usleep(70 * 1000);
    fh_get(&H, 1, "e:4");                    /* the trial */
    ck_assert_int_eq((int)H.nloads, 1);
    ck_assert_int_eq(cm_flights_breaker_state(H.srv.flights, e), 2);
    fh_get(&H, 1, "e:5");                    /* refused while the trial is out */
    ck_assert_int_eq((int)H.nloads, 1);
    fh_complete_load(&H, 0, FH_ERROR);       /* the trial fails: open again */
    ck_assert_uint_eq(e->stats.breaker_open_count, 2);
    fh_get(&H, 1, "e:6");
    ck_assert_int_eq((int)H.nloads, 0);
    usleep(70 * 1000);
    fh_get(&H, 2, "e:7");
    ck_assert_int_eq((int)H.nloads, 1);
    fh_complete_load(&H, 0, FH_404);         /* a 404 is a success: closed */
    ck_assert_int_eq(cm_flights_breaker_state(H.srv.flights, e), 0);
    fh_get(&H, 2, "e:8");
    fh_get(&H, 2, "e:9");
    ck_assert_int_eq((int)H.nloads, 2);
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 3);
    ck_assert_uint_eq(H.conns[1].ngot, 3);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* Plants an entry of skey in fake storage idx, written age_ms ago. */
static void plant(struct fh *h, int idx, const char *skey, const char *val, int64_t age_ms)
{
    fh_store_put(&h->stores[idx], skey, strlen(skey), val, strlen(val));
    fh_find(&h->stores[idx], skey, strlen(skey))->written_ms = cm_wall_us() / 1000 - age_ms;
}

/* The last reply client i got (fh_pass reads them). */
static const char *last_reply(struct fh *h, int i)
{
    fh_pass(h);
    return h->conns[i].last;
}

/* SPEC §12 grace: an entry 10 s past its 60 s ttl (grace 30 s) answers at once, and one load
 * refreshes it in the background; a GET meanwhile gets it too without a second load; the load
 * writes the new value with the ttl plus the stale span (60 s + 1 h). */
START_TEST(test_grace_answers_stale_and_loads_once)
{
    fh_init(&H, false);
    struct cm_node *f = node_named(&H, "f");
    plant(&H, 1, "t:f:1:v", "S0|f:1", 70 * 1000);
    fh_get(&H, 0, "f:1");
    ops_ok(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 1);
    ck_assert_str_eq(last_reply(&H, 0), "S0|f:1");
    ck_assert_int_eq((int)H.nloads, 1);
    ck_assert_uint_eq(f->stats.stale_hit_count, 1);
    ck_assert_uint_eq(f->stats.refresh_count, 1);
    fh_get(&H, 1, "f:1");
    ck_assert_str_eq(last_reply(&H, 1), "S0|f:1");
    ck_assert_int_eq((int)H.nloads, 1);
    ck_assert_uint_eq(f->stats.stale_hit_count, 2);
    fh_complete_load(&H, 0, FH_VALUE);
    ops_ok(&H);
    struct fh_entry *e = fh_find(&H.stores[1], "t:f:1:v", 7);
    ck_assert_int_eq(e->val[0], 'L');
    ck_assert_int_eq((int)e->ttl_ms, 60 * 1000 + 3600 * 1000);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* stale_if_error: an entry 100 s past its ttl (beyond grace) does not answer by itself: the load
 * is in the foreground; when it fails, the waiters get the entry instead of the error, and
 * nothing is written. 2 h past its ttl (beyond stale_if_error) they get the error. */
START_TEST(test_stale_if_error)
{
    fh_init(&H, false);
    struct cm_node *f = node_named(&H, "f");
    plant(&H, 1, "t:f:1:v", "S0|f:1", 160 * 1000);
    plant(&H, 1, "t:f:2:v", "S0|f:2", 7300 * 1000);
    fh_get(&H, 0, "f:1");
    ops_ok(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 0);   /* waiting for the load */
    fh_complete_load(&H, 0, FH_ERROR);
    ck_assert_str_eq(last_reply(&H, 0), "S0|f:1");
    ck_assert_int_eq((int)H.nops, 0);        /* nothing written */
    ck_assert_uint_eq(f->stats.stale_hit_count, 1);
    fh_get(&H, 0, "f:2");
    ops_ok(&H);
    fh_complete_load(&H, 0, FH_ERROR);
    ck_assert_msg(strncmp(last_reply(&H, 0), "-ERR load failed", 16) == 0, "%s", H.conns[0].last);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* A local entry past its 1 s ttl but within grace answers at once and starts one background load;
 * with refresh_after = 1 s a fresh local entry 5 s old does the same. */
START_TEST(test_local_grace_and_refresh_after)
{
    fh_init(&H, false);
    struct cm_storage *mem = H.srv.storages[0];
    int64_t now = cm_wall_us() / 1000;
    cm_storage_store(mem, "t:g:1:v", 7, "S0|g:1", 6, 11000, now - 3000);
    cm_storage_store(mem, "t:h:1:v", 7, "S0|h:1", 6, 60000, now - 5000);
    fh_get(&H, 0, "g:1");
    fh_get(&H, 0, "g:1");
    fh_get(&H, 1, "h:1");
    fh_pass(&H);
    ck_assert_uint_eq(H.conns[0].ngot, 2);
    ck_assert_uint_eq(H.conns[1].ngot, 1);
    ck_assert_int_eq((int)H.nloads, 2);      /* one per key */
    ck_assert_uint_eq(node_named(&H, "g")->stats.stale_hit_count, 2);
    ck_assert_uint_eq(node_named(&H, "g")->stats.refresh_count, 1);
    ck_assert_uint_eq(node_named(&H, "h")->stats.refresh_count, 1);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

/* negative_ttl: a 404 is nil to the waiters and cached as Cacheme's None (the serialized null)
 * for min(negative_ttl, the cache's ttl); the next GETs are nil without a load (local), and a
 * remote negative entry answers nil too. */
START_TEST(test_negative_entries)
{
    fh_init(&H, false);
    struct cm_node *n = node_named(&H, "n");
    fh_get(&H, 0, "n:1");
    ops_ok(&H);
    fh_complete_load(&H, 0, FH_404);
    ops_ok(&H);
    ck_assert_str_eq(last_reply(&H, 0), "(nil)");
    struct fh_entry *e = fh_find(&H.stores[1], "t:n:1:v", 7);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->val, "null");
    ck_assert_int_eq((int)e->ttl_ms, 10000);
    fh_get(&H, 0, "n:1");
    ck_assert_str_eq(last_reply(&H, 0), "(nil)");
    ck_assert_int_eq((int)H.nloads, 0);
    ck_assert_uint_eq(n->stats.negative_hit_count, 1);
    /* only in the remote cache */
    plant(&H, 1, "t:n:2:v", "null", 1000);
    fh_get(&H, 1, "n:2");
    ops_ok(&H);
    ck_assert_str_eq(last_reply(&H, 1), "(nil)");
    ck_assert_int_eq((int)H.nloads, 0);
    ck_assert_uint_eq(n->stats.negative_hit_count, 2);
    fh_settle(&H);
    fh_finish(&H);
}
END_TEST

static Suite *flight_suite(void)
{
    Suite *s = suite_create("flight");
    TCase *tc = tcase_create("schedules");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_refresh_then_del_local_only);
    tcase_add_test(tc, test_disconnect_with_refresh_and_set);
    tcase_add_test(tc, test_shutdown_with_refresh_and_set);
    tcase_add_test(tc, test_refreshes_coalesce);
    tcase_add_test(tc, test_gets_coalesce);
    tcase_add_test(tc, test_mget_loads_in_any_order);
    tcase_add_test(tc, test_set_supersedes_load);
    tcase_add_test(tc, test_get_after_del_loads_again);
    tcase_add_test(tc, test_loader_refusal);
    tcase_add_test(tc, test_shutdown_mid_everything);
    tcase_add_test(tc, test_breaker);
    tcase_add_test(tc, test_grace_answers_stale_and_loads_once);
    tcase_add_test(tc, test_stale_if_error);
    tcase_add_test(tc, test_local_grace_and_refresh_after);
    tcase_add_test(tc, test_negative_entries);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(flight_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
