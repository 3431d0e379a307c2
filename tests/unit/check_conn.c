/* The reply queue: out-of-order completion keeps request order; orphaned requests are freed by
 * their last holder. Drives a real connection over a socketpair. */
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/conn.h"
#include "daemon/req.h"
#include "daemon/val.h"
#include "daemon/resp.h"
#include "daemon/server.h"
#include "daemon/util.h"

#include <check.h>
#include <event2/event.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct cm_server srv;
static struct cm_conf conf;
static int peer;
static struct cm_conn *conn;

static void setup(void)
{
    int sv[2];
    memset(&srv, 0, sizeof(srv));
    memset(&conf, 0, sizeof(conf));
    conf.max_clients = 10;
    srv.conf = &conf;
    srv.base = event_base_new();
    TAILQ_INIT(&srv.conns);
    TAILQ_INIT(&srv.to_free);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    peer = sv[1];
    conn = cm_conn_new(&srv, sv[0], "test", true);
    ck_assert_ptr_nonnull(conn);
}

static void teardown(void)
{
    struct cm_conn *c;
    if (conn->state == CM_CONN_ACTIVE) {
        cm_conn_close(conn, "test over");
    }
    while ((c = TAILQ_FIRST(&srv.to_free)) != NULL) {
        TAILQ_REMOVE(&srv.to_free, c, link);
        cm_conn_free(c);
    }
    close(peer);
    event_base_free(srv.base);
}

/* Queues a request the way the connection does after parsing. */
static struct cm_req *queue_req(void)
{
    struct cm_req *r = cm_req_new(conn, NULL);
    TAILQ_INSERT_TAIL(&conn->reqs, r, link);
    conn->nreqs++;
    return r;
}

static void complete(struct cm_req *r, const char *reply)
{
    cm_buf_append_str(&r->reply, reply);
    cm_req_done(r);
}

static const char *drain(void)
{
    static char buf[256];
    ssize_t n = read(peer, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

START_TEST(test_out_of_order_completion_keeps_order)
{
    struct cm_req *a = queue_req(), *b = queue_req(), *c = queue_req();
    complete(c, "+c\r\n");
    ck_assert_str_eq(drain(), "");              /* A and B pending: C must wait */
    complete(a, "+a\r\n");
    ck_assert_str_eq(drain(), "+a\r\n");        /* B still pending */
    complete(b, "+b\r\n");
    ck_assert_str_eq(drain(), "+b\r\n+c\r\n");
    ck_assert_int_eq((int)conn->nreqs, 0);
}
END_TEST

START_TEST(test_slots_complete_in_any_order)
{
    struct cm_req *r = queue_req();
    cm_req_setup(r, CM_REQ_SHAPE_ARRAY, 3);
    cm_req_answer_bytes(r, 2, "2", 1);
    struct cm_val *v = cm_val_copy("0", 1);
    cm_req_answer_val(r, 0, v);   /* by reference */
    cm_val_unref(v);
    ck_assert_str_eq(drain(), "");              /* slot 1 still pending */
    ck_assert_int_eq((int)conn->nreqs, 1);
    cm_req_answer_nil(r, 1);                    /* completes, is written and freed */
    ck_assert_str_eq(drain(), "*3\r\n$1\r\n0\r\n$-1\r\n$1\r\n2\r\n");
    ck_assert_int_eq((int)conn->nreqs, 0);
}
END_TEST

START_TEST(test_single_answered_by_reference_behind_a_waiting_one)
{
    struct cm_req *first = queue_req(), *second = queue_req();
    cm_req_setup(second, CM_REQ_SHAPE_SINGLE, 1);
    struct cm_val *v = cm_val_copy("abc", 3);
    cm_req_answer_val(second, 0, v);            /* held as a reference until first is done */
    cm_val_unref(v);
    ck_assert_str_eq(drain(), "");
    ck_assert_uint_eq(conn->held_bytes, second->out_len);
    complete(first, "+ok\r\n");
    ck_assert_str_eq(drain(), "+ok\r\n$3\r\nabc\r\n");
    ck_assert_uint_eq(conn->held_bytes, 0);
}
END_TEST

START_TEST(test_orphaned_request_freed_by_last_holder)
{
    struct cm_req *done = queue_req(), *waiting = queue_req();
    cm_req_setup(waiting, CM_REQ_SHAPE_ARRAY, 1);
    cm_req_hold(waiting);             /* a flight holds it */
    complete(done, "+ok\r\n");
    ck_assert_str_eq(drain(), "+ok\r\n");
    cm_conn_close(conn, "client gone");
    ck_assert_ptr_null(waiting->conn);
    /* The flight finishes later: answering and unref must not touch the freed connection. */
    cm_req_answer_bytes(waiting, 0, "x", 1);
    cm_req_unref(waiting);            /* frees it (ASan checks) */
}
END_TEST

START_TEST(test_quit_waits_for_earlier_replies)
{
    /* GET (still loading) + QUIT in one read: both replies, then the close (issue 14, 7). */
    struct cm_req *get = queue_req(), *quit = queue_req();
    conn->close_after_write = true;
    complete(quit, "+OK\r\n");
    ck_assert_str_eq(drain(), "");
    ck_assert_int_eq(conn->state, CM_CONN_ACTIVE);
    complete(get, "$1\r\nv\r\n");
    ck_assert_str_eq(drain(), "$1\r\nv\r\n+OK\r\n");
    ck_assert_int_eq(conn->state, CM_CONN_CLOSING);
}
END_TEST

START_TEST(test_abort_pending_answers_in_order)
{
    struct cm_req *a = queue_req(), *b = queue_req(), *c = queue_req();
    a->refs = 1;   /* flights hold the waiting ones */
    c->refs = 1;
    complete(b, "+b\r\n");
    ck_assert_str_eq(drain(), "");
    cm_conn_abort_pending(conn, "ERR server shutting down");
    ck_assert_str_eq(drain(), "-ERR server shutting down\r\n+b\r\n-ERR server shutting down\r\n");
    ck_assert_int_eq(conn->state, CM_CONN_CLOSING);
    ck_assert_ptr_null(a->conn);
    ck_assert_ptr_null(c->conn);
    /* Their flights end later: done on an orphan writes nothing, unref frees (ASan checks). */
    cm_req_done(a);
    cm_req_unref(a);
    cm_req_unref(c);
}
END_TEST

START_TEST(test_output_stall_is_detected)
{
    struct cm_req *r = queue_req();
    size_t big = 4 << 20;   /* more than the socketpair takes: the rest waits for the peer */
    char *v = cm_malloc(big);
    memset(v, 'v', big);
    int64_t before = cm_now_ms();
    cm_buf_append(&r->reply, v, big);
    cm_free(v);
    cm_req_done(r);
    ck_assert(conn->writing);
    ck_assert(cm_buf_used(&conn->wbuf) > 0);
    ck_assert(!cm_conn_output_stalled(conn, before, 1000));
    ck_assert(cm_conn_output_stalled(conn, cm_now_ms() + 1001, 1000));
    /* Progress restarts the clock. */
    char sink[65536];
    while (read(peer, sink, sizeof(sink)) > 0) {
    }
    cm_conn_on_writable(conn);
    ck_assert(!cm_conn_output_stalled(conn, cm_now_ms() + 500, 1000));
}
END_TEST

static Suite *conn_suite(void)
{
    Suite *s = suite_create("conn");
    TCase *tc = tcase_create("queue");
    tcase_set_timeout(tc, 10);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_out_of_order_completion_keeps_order);
    tcase_add_test(tc, test_slots_complete_in_any_order);
    tcase_add_test(tc, test_single_answered_by_reference_behind_a_waiting_one);
    tcase_add_test(tc, test_orphaned_request_freed_by_last_holder);
    tcase_add_test(tc, test_quit_waits_for_earlier_replies);
    tcase_add_test(tc, test_abort_pending_answers_in_order);
    tcase_add_test(tc, test_output_stall_is_detected);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conn_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
