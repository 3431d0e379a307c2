/* Command table and handlers. Arity and authentication are checked once, in cm_cmd_dispatch. */
#include "daemon/cmd.h"
#include "conf/conf.h"
#include "daemon/alloc.h"
#include "daemon/conn.h"
#include "daemon/flight.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/req.h"
#include "daemon/resp.h"
#include "daemon/serializer.h"
#include "daemon/server.h"
#include "daemon/stats.h"
#include "daemon/util.h"
#include "storages/storage.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CM_VERSION_COMPAT "7.0.0"   /* what HELLO/INFO claim, so clients enable their features */

typedef void cm_cmd_fn(struct cm_req *req);

enum {
    CMD_NOAUTH_OK = 1 << 0,   /* allowed before AUTH */
};

struct cm_cmd {
    const char *name;
    int arity;                /* > 0 exact argc, < 0 at least -arity */
    int flags;
    cm_cmd_fn *fn;
    const char *cmd_flags;    /* for COMMAND: "readonly", "write", ... */
};

#define ARG(req, i) ((req)->argv->argv[i])
#define ARGLEN(req, i) ((req)->argv->lens[i])
#define ARGC(req) ((req)->argv->argc)

/* Binary-safe: "RESET\0x" is not RESET. */
static bool arg_is(const struct cm_req *req, int i, const char *s)
{
    return strlen(s) == ARGLEN(req, i) && strcasecmp(ARG(req, i), s) == 0;
}

/* Completes a request with a reply written by the handler. */
static void reply_done(struct cm_req *req)
{
    cm_req_done(req);
}

static void reply_error(struct cm_req *req, const char *msg)
{
    cm_resp_error(&req->reply, msg);
    reply_done(req);
}

static void reply_status(struct cm_req *req, const char *msg)
{
    cm_resp_status(&req->reply, msg);
    reply_done(req);
}

/* Finds the node of a key, or writes the error reply and returns NULL. */
static struct cm_node *node_or_reply(struct cm_req *req, const char *key, size_t klen)
{
    struct cm_node *node = cm_node_find(req->srv->nodes, req->srv->nnodes, key, klen, NULL);
    if (node == NULL) {
        /* The error encoder turns CR/LF in the key into spaces: one line, one reply. */
        cm_resp_errorf(&req->reply, "ERR no node matches key '%.*s'",
                       (int)(klen > 200 ? 200 : klen), key);
        reply_done(req);
    }
    return node;
}

/* ---- GET / MGET / REFRESH ---- */

static void cmd_get(struct cm_req *req)
{
    struct cm_flights *fl = req->srv->flights;
    struct cm_node *node = node_or_reply(req, ARG(req, 1), ARGLEN(req, 1));
    if (node == NULL) {
        return;
    }
    /* The hot path: a local hit is encoded straight into the output. */
    if (cm_flight_get_local(fl, node, ARG(req, 1), ARGLEN(req, 1), req->resp3, cm_req_out(req))) {
        reply_done(req);
        return;
    }
    struct cm_getkey key = { .node = node, .key = ARG(req, 1), .klen = ARGLEN(req, 1),
                             .slot = 0, .local_checked = true };
    cm_req_setup(req, CM_REQ_SHAPE_SINGLE, 1);
    cm_flight_get(fl, req, &key, 1);
}

static void cmd_mget(struct cm_req *req)
{
    size_t n = (size_t)ARGC(req) - 1;
    struct cm_getkey *keys = cm_calloc(n, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        keys[i].key = ARG(req, (int)i + 1);
        keys[i].klen = ARGLEN(req, (int)i + 1);
        keys[i].slot = i;
        keys[i].node = node_or_reply(req, keys[i].key, keys[i].klen);
        if (keys[i].node == NULL) {
            cm_free(keys);
            return;
        }
    }
    cm_req_setup(req, CM_REQ_SHAPE_ARRAY, n);
    cm_flight_get(req->srv->flights, req, keys, n);
    cm_free(keys);
}

static void cmd_refresh(struct cm_req *req)
{
    size_t n = (size_t)ARGC(req) - 1;
    struct cm_node **nodes = cm_calloc(n, sizeof(*nodes));
    for (size_t i = 0; i < n; i++) {
        nodes[i] = node_or_reply(req, ARG(req, (int)i + 1), ARGLEN(req, (int)i + 1));
        if (nodes[i] == NULL) {
            cm_free(nodes);
            return;
        }
    }
    cm_req_setup(req, CM_REQ_SHAPE_ARRAY, n);
    cm_req_hold(req);   /* the last answer may complete req, whose client may then go */
    for (size_t i = 0; i < n; i++) {
        cm_flight_refresh(req->srv->flights, req, i, nodes[i], ARG(req, (int)i + 1),
                          ARGLEN(req, (int)i + 1));
    }
    cm_req_unref(req);
    cm_free(nodes);
}

/* ---- DEL / SET ---- */

static void cmd_del(struct cm_req *req)
{
    cm_req_setup(req, CM_REQ_SHAPE_INT, 0);
    cm_req_hold(req);
    cm_req_expect(req, 1);   /* guard while the keys are submitted */
    for (int i = 1; i < ARGC(req); i++) {
        struct cm_node *node = cm_node_find(req->srv->nodes, req->srv->nnodes, ARG(req, i),
                                            ARGLEN(req, i), NULL);
        if (node == NULL) {
            continue;
        }
        req->intval++;
        cm_flight_del(req->srv->flights, req, node, ARG(req, i), ARGLEN(req, i));
    }
    cm_req_part_done(req);
    cm_req_unref(req);
}

static void cmd_set(struct cm_req *req)
{
    int64_t ttl_ms = -1;
    char err[160];
    for (int i = 3; i < ARGC(req); i += 2) {
        int64_t v;
        bool ex = arg_is(req, i, "EX"), px = arg_is(req, i, "PX");
        if ((!ex && !px) || i + 1 >= ARGC(req) || ttl_ms != -1) {
            reply_error(req, "ERR syntax error");
            return;
        }
        if (cm_parse_i64(ARG(req, i + 1), ARGLEN(req, i + 1), &v) != CM_OK) {
            reply_error(req, "ERR value is not an integer or out of range");
            return;
        }
        /* Redis 7's bounds (t_string.c getExpireMillisecondsOrReply): positive, EX * 1000
         * representable, and the absolute expiry (wall clock now + ttl) representable too. */
        if (v <= 0 || (ex && v > INT64_MAX / 1000) ||
            (ex ? v * 1000 : v) > INT64_MAX - cm_wall_us() / 1000) {
            reply_error(req, "ERR invalid expire time in 'set' command");
            return;
        }
        ttl_ms = ex ? v * 1000 : v;
    }
    struct cm_node *node = node_or_reply(req, ARG(req, 1), ARGLEN(req, 1));
    if (node == NULL) {
        return;
    }
    if (node->conf->serializer != CM_SER_RAW &&
        cm_ser_validate(node->conf->serializer, ARG(req, 2), ARGLEN(req, 2), err, sizeof(err)) !=
            CM_OK) {
        cm_resp_errorf(&req->reply, "ERR node '%s' takes JSON values: %s", node->name, err);
        reply_done(req);
        return;
    }
    cm_req_setup(req, CM_REQ_SHAPE_OK, 0);
    cm_req_hold(req);
    cm_req_expect(req, 1);
    cm_flight_set(req->srv->flights, req, node, ARG(req, 1), ARGLEN(req, 1), ARG(req, 2),
                  ARGLEN(req, 2), ttl_ms);
    cm_req_part_done(req);
    cm_req_unref(req);
}

/* ---- STATS / NODES ---- */

static struct cm_node *find_node_by_name(struct cm_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nnodes; i++) {
        if (strcmp(srv->nodes[i].name, name) == 0) {
            return &srv->nodes[i];
        }
    }
    return NULL;
}

/* Resolves the node names in argv[first..]; NULL entries never; returns count or -1 (replied). */
static int nodes_arg_or_reply(struct cm_req *req, int first, struct cm_node ***out)
{
    struct cm_server *srv = req->srv;
    int n = ARGC(req) - first;
    struct cm_node **nodes;
    if (n <= 0) {
        nodes = cm_calloc(srv->nnodes ? srv->nnodes : 1, sizeof(*nodes));
        for (size_t i = 0; i < srv->nnodes; i++) {
            nodes[i] = &srv->nodes[i];
        }
        *out = nodes;
        return (int)srv->nnodes;
    }
    nodes = cm_calloc((size_t)n, sizeof(*nodes));
    for (int i = 0; i < n; i++) {
        nodes[i] = find_node_by_name(srv, ARG(req, first + i));
        if (nodes[i] == NULL) {
            cm_resp_errorf(&req->reply, "ERR no such node '%.100s'", ARG(req, first + i));
            cm_free(nodes);
            reply_done(req);
            return -1;
        }
    }
    *out = nodes;
    return n;
}

static void cmd_stats(struct cm_req *req)
{
    struct cm_node **nodes;
    bool reset = ARGC(req) > 1 && arg_is(req, 1, "RESET");
    int n = nodes_arg_or_reply(req, reset ? 2 : 1, &nodes);
    if (n < 0) {
        return;
    }
    if (reset) {
        for (int i = 0; i < n; i++) {
            memset(&nodes[i]->stats, 0, sizeof(nodes[i]->stats));
        }
        cm_free(nodes);
        reply_status(req, "OK");
        return;
    }
    cm_resp_map(&req->reply, (size_t)n, req->resp3);
    for (int i = 0; i < n; i++) {
        cm_resp_bulk_str(&req->reply, nodes[i]->name);
        cm_stats_node_reply(nodes[i], &req->reply, req->resp3);
    }
    cm_free(nodes);
    reply_done(req);
}

static void cmd_nodes(struct cm_req *req)
{
    cm_resp_array(&req->reply, req->srv->nnodes);
    for (size_t i = 0; i < req->srv->nnodes; i++) {
        cm_resp_bulk_str(&req->reply, req->srv->nodes[i].name);
    }
    reply_done(req);
}

/* ---- connection commands ---- */

static void cmd_ping(struct cm_req *req)
{
    if (ARGC(req) > 2) {
        reply_error(req, "ERR wrong number of arguments for 'ping' command");
    } else if (ARGC(req) == 2) {
        cm_resp_bulk(&req->reply, ARG(req, 1), ARGLEN(req, 1));
        reply_done(req);
    } else {
        reply_status(req, "PONG");
    }
}

static void cmd_echo(struct cm_req *req)
{
    cm_resp_bulk(&req->reply, ARG(req, 1), ARGLEN(req, 1));
    reply_done(req);
}

static void cmd_quit(struct cm_req *req)
{
    if (req->conn != NULL) {
        req->conn->close_after_write = true;
    }
    reply_status(req, "OK");
}

/* Checks credentials (user NULL: the default user); returns true when they are right. Both are
 * binary: "default\0junk" is not "default". */
static bool check_auth(struct cm_req *req, const char *user, size_t userlen, const char *pass,
                       size_t passlen)
{
    static const char dflt[] = "default";
    const char *want = req->srv->conf->requirepass;
    bool user_ok = user == NULL || (userlen == sizeof(dflt) - 1 && memcmp(user, dflt, userlen) == 0);
    bool ok = want != NULL && want[0] != '\0' && user_ok && strlen(want) == passlen &&
              memcmp(want, pass, passlen) == 0;
    if (ok && req->conn != NULL) {
        req->conn->authed = true;
    }
    return ok;
}

static void cmd_auth(struct cm_req *req)
{
    const char *want = req->srv->conf->requirepass;
    if (ARGC(req) > 3) {
        reply_error(req, "ERR syntax error");
        return;
    }
    if (want == NULL || want[0] == '\0') {
        reply_error(req, "ERR AUTH <password> called without any password configured for the "
                         "default user. Are you sure your configuration is correct?");
        return;
    }
    bool ok = ARGC(req) == 2
                  ? check_auth(req, NULL, 0, ARG(req, 1), ARGLEN(req, 1))
                  : check_auth(req, ARG(req, 1), ARGLEN(req, 1), ARG(req, 2), ARGLEN(req, 2));
    if (!ok) {
        reply_error(req, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
    }
    reply_status(req, "OK");
}

/* CLIENT SETNAME's rule, also applied to HELLO ... SETNAME: printable ASCII without spaces, so a
 * name cannot forge CLIENT LIST lines. Writes the error reply and returns false otherwise. */
static bool client_name_valid_or_reply(struct cm_req *req, int i)
{
    for (size_t k = 0; k < ARGLEN(req, i); k++) {
        unsigned char ch = (unsigned char)ARG(req, i)[k];
        if (ch <= ' ' || ch > '~') {
            reply_error(req, "ERR Client names cannot contain spaces, newlines or special "
                             "characters.");
            return false;
        }
    }
    return true;
}

static void set_client_name(struct cm_conn *c, const struct cm_req *req, int i)
{
    if (c != NULL) {
        cm_free(c->name);
        c->name = ARGLEN(req, i) ? cm_strdup(ARG(req, i)) : NULL;
    }
}

static void cmd_hello(struct cm_req *req)
{
    struct cm_conn *c = req->conn;
    int64_t proto = c != NULL && c->resp3 ? 3 : 2;
    int auth_at = 0, name_at = 0;   /* argv index of AUTH's user / SETNAME's name, 0 = none */
    if (ARGC(req) >= 2) {
        if (cm_parse_i64(ARG(req, 1), ARGLEN(req, 1), &proto) != CM_OK) {
            reply_error(req, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (proto != 2 && proto != 3) {
            reply_error(req, "NOPROTO unsupported protocol version");
            return;
        }
    }
    /* Every argument is checked before anything changes (as redis does): a bad option after a
     * right password leaves the connection as it was. */
    for (int i = 2; i < ARGC(req); i++) {
        if (arg_is(req, i, "AUTH") && i + 2 < ARGC(req)) {
            auth_at = i + 1;
            i += 2;
        } else if (arg_is(req, i, "SETNAME") && i + 1 < ARGC(req)) {
            name_at = ++i;
            if (!client_name_valid_or_reply(req, name_at)) {
                return;
            }
        } else {
            cm_resp_errorf(&req->reply, "ERR Syntax error in HELLO option '%.64s'", ARG(req, i));
            reply_done(req);
            return;
        }
    }
    if (auth_at != 0 && !check_auth(req, ARG(req, auth_at), ARGLEN(req, auth_at),
                                    ARG(req, auth_at + 1), ARGLEN(req, auth_at + 1))) {
        reply_error(req, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
    }
    if (c != NULL && !c->authed) {
        reply_error(req, "NOAUTH HELLO must be called with the client already authenticated, "
                         "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                         "authenticate the client and select the RESP protocol version at the "
                         "same time");
        return;
    }
    if (c != NULL) {
        c->resp3 = proto == 3;
    }
    if (name_at != 0) {
        set_client_name(c, req, name_at);
    }
    req->resp3 = proto == 3;
    struct cm_buf *r = &req->reply;
    cm_resp_map(r, 7, req->resp3);
    cm_resp_bulk_str(r, "server");
    cm_resp_bulk_str(r, "redis");
    cm_resp_bulk_str(r, "version");
    cm_resp_bulk_str(r, CM_VERSION_COMPAT);
    cm_resp_bulk_str(r, "proto");
    cm_resp_int(r, proto);
    cm_resp_bulk_str(r, "id");
    cm_resp_int(r, c != NULL ? (int64_t)c->id : 0);
    cm_resp_bulk_str(r, "mode");
    cm_resp_bulk_str(r, "standalone");
    cm_resp_bulk_str(r, "role");
    cm_resp_bulk_str(r, "master");
    cm_resp_bulk_str(r, "modules");
    cm_resp_array(r, 0);
    reply_done(req);
}

static void cmd_select(struct cm_req *req)
{
    int64_t db;
    if (cm_parse_i64(ARG(req, 1), ARGLEN(req, 1), &db) != CM_OK) {
        reply_error(req, "ERR value is not an integer or out of range");
    } else if (db != 0) {
        reply_error(req, "ERR DB index is out of range");
    } else {
        reply_status(req, "OK");
    }
}

static void client_line(struct cm_conn *c, struct cm_buf *out)
{
    int64_t now = cm_now_ms();
    cm_buf_printf(out, "id=%llu addr=%s name=%s age=%lld idle=%lld cmd=%llu resp=%d\n",
                  (unsigned long long)c->id, c->addr, c->name ? c->name : "",
                  (long long)(now - c->created_ms) / 1000, (long long)(now - c->last_active_ms) / 1000,
                  (unsigned long long)c->ncmds, c->resp3 ? 3 : 2);
}

static void cmd_client(struct cm_req *req)
{
    struct cm_conn *c = req->conn;
    if (arg_is(req, 1, "SETNAME")) {
        if (ARGC(req) != 3) {
            reply_error(req, "ERR wrong number of arguments for 'client|setname' command");
            return;
        }
        if (!client_name_valid_or_reply(req, 2)) {
            return;
        }
        set_client_name(c, req, 2);
        reply_status(req, "OK");
    } else if (arg_is(req, 1, "GETNAME")) {
        if (c != NULL && c->name != NULL) {
            cm_resp_bulk_str(&req->reply, c->name);
        } else {
            cm_resp_nil(&req->reply, req->resp3);
        }
        reply_done(req);
    } else if (arg_is(req, 1, "ID")) {
        cm_resp_int(&req->reply, c != NULL ? (int64_t)c->id : 0);
        reply_done(req);
    } else if (arg_is(req, 1, "LIST") || arg_is(req, 1, "INFO")) {
        struct cm_buf b;
        cm_buf_init(&b);
        if (arg_is(req, 1, "INFO")) {
            if (c != NULL) {
                client_line(c, &b);
            }
        } else {
            struct cm_conn *it;
            TAILQ_FOREACH(it, &req->srv->conns, link) {
                client_line(it, &b);
            }
        }
        cm_resp_verbatim(&req->reply, cm_buf_start(&b), cm_buf_used(&b), req->resp3);
        cm_buf_deinit(&b);
        reply_done(req);
    } else {
        /* SETINFO, NO-EVICT, TRACKING, MAINT_NOTIFICATIONS, ...: accepted, no effect. */
        reply_status(req, "OK");
    }
}

static void cmd_info(struct cm_req *req)
{
    struct cm_buf b;
    cm_buf_init(&b);
    cm_stats_info(req->srv, ARGC(req) > 1 ? ARG(req, 1) : NULL, &b);
    cm_resp_verbatim(&req->reply, cm_buf_start(&b), cm_buf_used(&b), req->resp3);
    cm_buf_deinit(&b);
    reply_done(req);
}

static void cmd_dbsize(struct cm_req *req)
{
    /* Entries held by local storages (remote ones are shared and not counted). */
    int64_t total = 0;
    for (size_t i = 0; i < req->srv->nstorages; i++) {
        struct cm_storage *st = req->srv->storages[i];
        if (st->ops->local && st->ops->info != NULL) {
            struct cm_buf b;
            cm_buf_init(&b);
            st->ops->info(st, &b);
            cm_buf_append(&b, "", 1);
            const char *e = strstr(cm_buf_start(&b), "entries:");
            if (e != NULL) {
                total += strtoll(e + 8, NULL, 10);
            }
            cm_buf_deinit(&b);
        }
    }
    cm_resp_int(&req->reply, total);
    reply_done(req);
}

static void cmd_config(struct cm_req *req)
{
    if (arg_is(req, 1, "GET")) {
        /* Nothing is tunable at run time; redis-benchmark only warns on an empty answer. */
        cm_resp_map(&req->reply, 0, req->resp3);
        reply_done(req);
    } else if (arg_is(req, 1, "RESETSTAT")) {
        reply_status(req, "OK");
    } else {
        cm_resp_errorf(&req->reply, "ERR CONFIG %.32s is not supported by cachemed", ARG(req, 1));
        reply_done(req);
    }
}

static void cmd_command(struct cm_req *req);

/* Sorted by name for bsearch. */
static const struct cm_cmd cmds[] = {
    { "AUTH", -2, CMD_NOAUTH_OK, cmd_auth, "fast" },
    { "CLIENT", -2, 0, cmd_client, "admin" },
    { "COMMAND", -1, 0, cmd_command, "loading" },
    { "CONFIG", -2, 0, cmd_config, "admin" },
    { "DBSIZE", 1, 0, cmd_dbsize, "readonly" },
    { "DEL", -2, 0, cmd_del, "write" },
    { "ECHO", 2, 0, cmd_echo, "fast" },
    { "GET", 2, 0, cmd_get, "readonly" },
    { "HELLO", -1, CMD_NOAUTH_OK, cmd_hello, "fast" },
    { "INFO", -1, 0, cmd_info, "loading" },
    { "MGET", -2, 0, cmd_mget, "readonly" },
    { "NODES", 1, 0, cmd_nodes, "readonly" },
    { "PING", -1, 0, cmd_ping, "fast" },
    { "QUIT", -1, CMD_NOAUTH_OK, cmd_quit, "fast" },
    { "REFRESH", -2, 0, cmd_refresh, "write" },
    { "SELECT", 2, 0, cmd_select, "fast" },
    { "SET", -3, 0, cmd_set, "write" },
    { "STATS", -1, 0, cmd_stats, "readonly" },
    { "UNLINK", -2, 0, cmd_del, "write" },
};

/* Command names are short upper-case literals; clients expect them in lower case. */
static void lowercase_name(const struct cm_cmd *cmd, char *out, size_t outsz)
{
    size_t i = 0;
    for (; cmd->name[i] != '\0' && i + 1 < outsz; i++) {
        out[i] = (char)(cmd->name[i] >= 'A' && cmd->name[i] <= 'Z' ? cmd->name[i] + 32 : cmd->name[i]);
    }
    out[i] = '\0';
}

static void command_entry(struct cm_buf *r, const struct cm_cmd *cmd)
{
    char lower[16];
    lowercase_name(cmd, lower, sizeof(lower));
    bool keyed = cmd->fn == cmd_get || cmd->fn == cmd_mget || cmd->fn == cmd_del ||
                 cmd->fn == cmd_set || cmd->fn == cmd_refresh;
    cm_resp_array(r, 6);
    cm_resp_bulk_str(r, lower);
    cm_resp_int(r, cmd->arity);
    cm_resp_array(r, 1);
    cm_resp_status(r, cmd->cmd_flags);
    cm_resp_int(r, keyed ? 1 : 0);
    cm_resp_int(r, keyed ? (cmd->arity < 0 && cmd->fn != cmd_set ? -1 : 1) : 0);
    cm_resp_int(r, keyed ? 1 : 0);
}

static void cmd_command(struct cm_req *req)
{
    struct cm_buf *r = &req->reply;
    if (ARGC(req) == 1 || arg_is(req, 1, "INFO")) {
        cm_resp_array(r, CM_ARRAY_LEN(cmds));
        for (size_t i = 0; i < CM_ARRAY_LEN(cmds); i++) {
            command_entry(r, &cmds[i]);
        }
    } else if (arg_is(req, 1, "COUNT")) {
        cm_resp_int(r, (int64_t)CM_ARRAY_LEN(cmds));
    } else if (arg_is(req, 1, "DOCS")) {
        cm_resp_map(r, 0, req->resp3);
    } else if (arg_is(req, 1, "LIST")) {
        cm_resp_array(r, CM_ARRAY_LEN(cmds));
        for (size_t i = 0; i < CM_ARRAY_LEN(cmds); i++) {
            cm_resp_bulk_str(r, cmds[i].name);
        }
    } else {
        cm_resp_errorf(r, "ERR unknown subcommand '%.32s'. Try COMMAND HELP.", ARG(req, 1));
    }
    reply_done(req);
}

static int cmd_compare(const void *key, const void *elem)
{
    return strcasecmp(key, ((const struct cm_cmd *)elem)->name);
}

static const struct cm_cmd *cmd_lookup(const char *name)
{
    return bsearch(name, cmds, CM_ARRAY_LEN(cmds), sizeof(cmds[0]), cmd_compare);
}

/* GET's entry, found by name on first use (the table is read-only; this pointer is the one piece
 * of state, set once): the hot path skips the search without depending on GET's position. */
static const struct cm_cmd *get_entry(void)
{
    static const struct cm_cmd *get;
    if (get == NULL) {
        get = cmd_lookup("GET");
        cm_assert(get != NULL && get->fn == cmd_get);
    }
    return get;
}

void cm_cmd_dispatch(struct cm_req *req)
{
    const char *name = ARG(req, 0);
    const struct cm_cmd *cmd = NULL;
    /* GET is the hot path: skip the search. */
    if (ARGLEN(req, 0) == 3 && strcasecmp(name, "GET") == 0) {
        cmd = get_entry();
    } else if (ARGLEN(req, 0) < 16 && strlen(name) == ARGLEN(req, 0)) {
        cmd = cmd_lookup(name);
    }
    if (cmd == NULL) {
        char esc[80];
        cm_log_escape(esc, sizeof(esc), name, ARGLEN(req, 0), 64);
        for (char *p = esc; *p; p++) {
            if (*p == '\'') {
                *p = '"';
            }
        }
        cm_resp_errorf(&req->reply, "ERR unknown command '%s'", esc);
        reply_done(req);
        return;
    }
    if (req->conn != NULL && !req->conn->authed && !(cmd->flags & CMD_NOAUTH_OK)) {
        reply_error(req, "NOAUTH Authentication required.");
        return;
    }
    if ((cmd->arity > 0 && ARGC(req) != cmd->arity) || (cmd->arity < 0 && ARGC(req) < -cmd->arity)) {
        char lower[16];
        lowercase_name(cmd, lower, sizeof(lower));
        cm_resp_errorf(&req->reply, "ERR wrong number of arguments for '%s' command", lower);
        reply_done(req);
        return;
    }
    cmd->fn(req);
}
