/* RESP request parser (multibulk and inline, resumable across any split, bounded) and the
 * RESP2/RESP3 reply encoder. No I/O: the connection reads into cm_resp_reserve() space. */
#include "daemon/resp.h"
#include "daemon/alloc.h"
#include "daemon/buf.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#define BUF_MIN_CAP 1024           /* first allocation of the input buffer */
#define BUF_KEEP_CAP (1024 * 1024) /* an empty buffer larger than this is released */
#define ARGS_PREALLOC 1024         /* argv slots reserved up front, like redis */

/* Every error text a client can see; the caller sends "-ERR " + text. */
enum resp_err {
    E_NONE,
    E_MBULK_LEN,
    E_BULK_LEN,
    E_EXPECTED_DOLLAR,
    E_BIG_INLINE,
    E_BIG_MBULK,
    E_BIG_BULK,
    E_QUOTES,
    E_BULK_CRLF,
    E_TOO_MANY_ARGS,
};

static const char *const resp_errors[] = {
    [E_NONE] = "",
    [E_MBULK_LEN] = "Protocol error: invalid multibulk length",
    [E_BULK_LEN] = "Protocol error: invalid bulk length",
    [E_EXPECTED_DOLLAR] = "Protocol error: expected '$', got '?'", /* '?' = the byte */
    [E_BIG_INLINE] = "Protocol error: too big inline request",
    [E_BIG_MBULK] = "Protocol error: too big mbulk count string",
    [E_BIG_BULK] = "Protocol error: too big bulk count string",
    [E_QUOTES] = "Protocol error: unbalanced quotes in request",
    /* No redis counterpart: redis skips the two bytes after a bulk unchecked. */
    [E_BULK_CRLF] = "Protocol error: missing CRLF after bulk data",
    /* Inline requests are bounded by max_args too (redis has no such limit). */
    [E_TOO_MANY_ARGS] = "Protocol error: too many arguments in inline request",
};

enum resp_state {
    ST_IDLE,  /* between requests: the next byte decides multibulk or inline */
    ST_MBULK, /* "*N" read; reading N bulks */
};

/* One argument of the multibulk request being read, as a slice of the input buffer. */
struct arg_ref {
    size_t off; /* from the request start (p->pos) */
    size_t len;
};

/* Parser state for one client connection; owned by that connection. */
struct cm_resp_parser {
    char *data;        /* input buffer, owned */
    size_t pos;        /* start of the current (unfinished) request */
    size_t len;        /* end of the bytes read so far */
    size_t cap;        /* allocated size of data */
    uint64_t max_bulk; /* bulk length limit */
    size_t max_args;   /* argument count limit */
    enum resp_state state;
    size_t cur;           /* parse position, relative to pos */
    size_t scanned;       /* bytes after cur already searched for a line end, in vain */
    size_t nexpect;       /* ST_MBULK: the N of "*N" */
    long long bulklen;    /* ST_MBULK: length of the bulk being read; -1 while its header is */
    struct arg_ref *args; /* ST_MBULK: bulks read so far, owned */
    size_t nargs;         /* used entries of args */
    size_t args_cap;      /* allocated entries of args */
    size_t argbytes;      /* sum of args[].len */
    bool no_fast;         /* tests: always take the general path (cm_resp_parser_no_fast_path) */
    enum resp_err err;    /* sticky once set */
    char errstr[64];      /* client text of err */
};

/* ------------------------------------------------------------------------------------------ */
/* Input buffer */

struct cm_resp_parser *cm_resp_parser_new(uint64_t max_bulk, size_t max_args)
{
    struct cm_resp_parser *p = cm_calloc(1, sizeof(*p));
    p->max_bulk = max_bulk ? max_bulk : CM_RESP_MAX_BULK;
    p->max_args = max_args ? max_args : CM_RESP_MAX_ARGS;
    p->state = ST_IDLE;
    p->bulklen = -1;
    return p;
}

void cm_resp_parser_free(struct cm_resp_parser *p)
{
    if (p == NULL) {
        return;
    }
    cm_free(p->data);
    cm_free(p->args);
    cm_free(p);
}

char *cm_resp_reserve(struct cm_resp_parser *p, size_t n)
{
    if (p->data != NULL && p->cap - p->len >= n) {
        return p->data + p->len;
    }
    /* Compact first: the front of the buffer holds requests already handed out. */
    size_t live = p->len - p->pos;
    if (p->pos > 0) {
        memmove(p->data, p->data + p->pos, live);
        p->pos = 0;
        p->len = live;
    }
    if (p->data == NULL || p->cap - p->len < n) {
        cm_assert(n <= SIZE_MAX / 2 - live);
        size_t cap = p->cap ? p->cap : BUF_MIN_CAP;
        while (cap - live < n) {
            cap *= 2;
        }
        p->data = cm_realloc(p->data, cap);
        p->cap = cap;
    }
    return p->data + p->len;
}

void cm_resp_commit(struct cm_resp_parser *p, size_t n)
{
    cm_assert(n <= p->cap - p->len);
    p->len += n;
}

void cm_resp_feed(struct cm_resp_parser *p, const char *buf, size_t len)
{
    if (len == 0) {
        return;
    }
    memcpy(cm_resp_reserve(p, len), buf, len);
    p->len += len;
}

size_t cm_resp_pending(const struct cm_resp_parser *p)
{
    return p->len - p->pos;
}

const char *cm_resp_errstr(const struct cm_resp_parser *p)
{
    return p->errstr;
}

void cm_resp_err_sample(const struct cm_resp_parser *p, char *out, size_t outsz)
{
    if (outsz == 0) {
        return;
    }
    size_t k = 0;
    if (p->data != NULL) {
        const unsigned char *s = (const unsigned char *)p->data + p->pos + p->cur;
        size_t avail = p->len - p->pos - p->cur;
        size_t n = avail < 64 ? avail : 64;
        for (size_t i = 0; i < n; i++) {
            char e[5];
            size_t el = 2;
            switch (s[i]) {
            case '\r':
                memcpy(e, "\\r", 2);
                break;
            case '\n':
                memcpy(e, "\\n", 2);
                break;
            case '\t':
                memcpy(e, "\\t", 2);
                break;
            case '"':
                memcpy(e, "\\\"", 2);
                break;
            case '\\':
                memcpy(e, "\\\\", 2);
                break;
            default:
                if (s[i] >= 0x20 && s[i] < 0x7f) {
                    e[0] = (char)s[i];
                    el = 1;
                } else {
                    snprintf(e, sizeof(e), "\\x%02x", s[i]);
                    el = 4;
                }
                break;
            }
            if (k + el >= outsz) {
                break;
            }
            memcpy(out + k, e, el);
            k += el;
        }
        if (n < avail && k + 3 < outsz) {
            memcpy(out + k, "...", 3);
            k += 3;
        }
    }
    out[k] = '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* Parser */

static int fail(struct cm_resp_parser *p, enum resp_err e)
{
    p->err = e;
    snprintf(p->errstr, sizeof(p->errstr), "%s", resp_errors[e]);
    return CM_ERR;
}

static int fail_expected_dollar(struct cm_resp_parser *p, char got)
{
    /* Like redis 7, which turns CR/LF in an error into spaces; other control bytes too,
     * so the text stays one printable line. */
    unsigned char c = (unsigned char)got;
    if (c < 0x20 || c >= 0x7f) {
        c = ' ';
    }
    fail(p, E_EXPECTED_DOLLAR);
    p->errstr[strlen(p->errstr) - 2] = (char)c;
    return CM_ERR;
}

/* redis string2ll: optional '-', no leading zeros, no '+', no spaces, no overflow. */
static bool parse_ll(const char *s, size_t n, long long *out)
{
    if (n == 0 || n > 20) {
        return false;
    }
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return true;
    }
    size_t i = 0;
    bool neg = s[0] == '-';
    if (neg) {
        i = 1;
    }
    if (i >= n || s[i] < '1' || s[i] > '9') {
        return false;
    }
    unsigned long long v = (unsigned long long)(s[i++] - '0');
    for (; i < n; i++) {
        unsigned d = (unsigned)((unsigned char)s[i] - '0');
        if (d > 9 || v > (ULLONG_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1) {
            return false;
        }
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX) {
            return false;
        }
        *out = (long long)v;
    }
    return true;
}

/* Looks for ch in the first `window` bytes of the line starting at cur, resuming where the
 * previous call stopped so a slowly arriving line is scanned once. Returns its offset from
 * cur, or -1 when it is not among the bytes buffered so far (or not within the window). */
static ssize_t find_in_line(struct cm_resp_parser *p, char ch, size_t window)
{
    const char *line = p->data + p->pos + p->cur;
    size_t avail = p->len - p->pos - p->cur;
    size_t lim = avail < window ? avail : window;
    if (p->scanned < lim) {
        const char *hit = memchr(line + p->scanned, ch, lim - p->scanned);
        if (hit != NULL) {
            p->scanned = (size_t)(hit - line);
            return hit - line;
        }
        p->scanned = lim;
    }
    return -1;
}

/* Moves cur past a line end: the next search starts afresh. */
static void advance(struct cm_resp_parser *p, size_t n)
{
    p->cur += n;
    p->scanned = 0;
}

/* Hands the current request's bytes back: the next request starts at cur. */
static void consume_request(struct cm_resp_parser *p)
{
    p->pos += p->cur;
    p->cur = 0;
    p->scanned = 0;
    p->state = ST_IDLE;
    p->bulklen = -1;
    p->nargs = 0;
    p->nexpect = 0;
    p->argbytes = 0;
}

/* One allocation: header, argv[argc], lens[argc], then the NUL-terminated bytes. */
static struct cm_argv *argv_alloc(size_t argc, size_t bytes, char **data)
{
    size_t hdr = sizeof(struct cm_argv) + argc * (sizeof(char *) + sizeof(size_t));
    struct cm_argv *a = cm_malloc(hdr + bytes + argc);
    a->argc = (int)argc;
    a->argv = (char **)(void *)(a + 1);
    a->lens = (size_t *)(void *)(a->argv + argc);
    *data = (char *)(a->lens + argc);
    return a;
}

void cm_argv_free(struct cm_argv *a)
{
    cm_free(a);
}

/* ST_IDLE at '*': reads "*N\r\n". CM_OK with state ST_MBULK, or with the request consumed
 * when N <= 0 (redis skips empty multibulks), CM_EAGAIN or CM_ERR. */
static int read_mbulk_header(struct cm_resp_parser *p)
{
    size_t avail = p->len - p->pos - p->cur;
    ssize_t cr = find_in_line(p, '\r', CM_RESP_MAX_INLINE + 1);
    if (cr < 0) {
        return avail > CM_RESP_MAX_INLINE ? fail(p, E_BIG_MBULK) : CM_EAGAIN;
    }
    if ((size_t)cr + 1 >= avail) {
        return CM_EAGAIN; /* redis too waits for the byte after '\r' and skips it unchecked */
    }
    long long n;
    const char *digits = p->data + p->pos + p->cur + 1;
    if (!parse_ll(digits, (size_t)cr - 1, &n) || n > INT_MAX ||
        (n > 0 && (size_t)n > p->max_args)) {
        return fail(p, E_MBULK_LEN);
    }
    advance(p, (size_t)cr + 2);
    if (n <= 0) {
        consume_request(p);
        return CM_OK;
    }
    p->state = ST_MBULK;
    p->nexpect = (size_t)n;
    p->nargs = 0;
    p->argbytes = 0;
    p->bulklen = -1;
    /* Reserve for at most ARGS_PREALLOC up front: "*1000000" alone must cost nothing. */
    size_t want = p->nexpect < ARGS_PREALLOC ? p->nexpect : ARGS_PREALLOC;
    if (p->args_cap < want) {
        cm_free(p->args);
        p->args = cm_malloc(want * sizeof(*p->args));
        p->args_cap = want;
    }
    return CM_OK;
}

static void push_arg(struct cm_resp_parser *p, size_t off, size_t len)
{
    if (p->nargs == p->args_cap) {
        size_t cap = p->args_cap * 2;
        if (cap > p->nexpect) {
            cap = p->nexpect;
        }
        p->args = cm_realloc(p->args, cap * sizeof(*p->args));
        p->args_cap = cap;
    }
    p->args[p->nargs].off = off;
    p->args[p->nargs].len = len;
    p->nargs++;
    p->argbytes += len;
}

/* ST_MBULK: reads "$len\r\n<bytes>\r\n" until all N are in. A bulk whose bytes are not all
 * buffered yet costs O(1) per call: nothing is re-scanned. */
static int read_bulks(struct cm_resp_parser *p)
{
    const char *base = p->data + p->pos;
    size_t avail = p->len - p->pos;
    while (p->nargs < p->nexpect) {
        if (p->bulklen < 0) {
            if (p->cur == avail) {
                return CM_EAGAIN;
            }
            /* Fail at the first byte (redis waits for the line end first; same text). */
            if (base[p->cur] != '$') {
                return fail_expected_dollar(p, base[p->cur]);
            }
            ssize_t cr = find_in_line(p, '\r', CM_RESP_MAX_INLINE + 1);
            if (cr < 0) {
                return avail - p->cur > CM_RESP_MAX_INLINE ? fail(p, E_BIG_BULK) : CM_EAGAIN;
            }
            if (p->cur + (size_t)cr + 1 >= avail) {
                return CM_EAGAIN;
            }
            long long n;
            if (!parse_ll(base + p->cur + 1, (size_t)cr - 1, &n) || n < 0 ||
                (unsigned long long)n > p->max_bulk) {
                return fail(p, E_BULK_LEN);
            }
            p->bulklen = n;
            advance(p, (size_t)cr + 2);
        }
        size_t blen = (size_t)p->bulklen;
        if (avail - p->cur < blen + 2) {
            return CM_EAGAIN;
        }
        if (base[p->cur + blen] != '\r' || base[p->cur + blen + 1] != '\n') {
            return fail(p, E_BULK_CRLF);
        }
        push_arg(p, p->cur, blen);
        advance(p, blen + 2);
        p->bulklen = -1;
    }
    return CM_OK;
}

static struct cm_argv *build_mbulk_argv(struct cm_resp_parser *p)
{
    char *dst;
    struct cm_argv *a = argv_alloc(p->nargs, p->argbytes, &dst);
    const char *base = p->data + p->pos;
    for (size_t i = 0; i < p->nargs; i++) {
        size_t len = p->args[i].len;
        memcpy(dst, base + p->args[i].off, len);
        dst[len] = '\0';
        a->argv[i] = dst;
        a->lens[i] = len;
        dst += len + 1;
    }
    if (p->args_cap > ARGS_PREALLOC) {
        /* A huge request does not pin its argv slots for the life of the connection. */
        cm_free(p->args);
        p->args = NULL;
        p->args_cap = 0;
    }
    return a;
}

/*
 * Fast path for the usual request: a multibulk of at most FAST_ARGS short bulks, all of it
 * buffered, every line ending in "\r\n" and every number in its plain form. It parses in one
 * pass without the line searches and state the general path needs to resume across splits
 * (a GET took about 600 instructions there, about 350 here). Anything else, including every
 * malformed or incomplete input, returns false having changed nothing, and the general path
 * decides, so both accept the same inputs with the same result (fuzz_resp checks this).
 */
#define FAST_ARGS 8
#define FAST_LEN_DIGITS 6

/* Reads a plain decimal (no sign, no leading zero, at most maxd digits) followed by "\r\n". */
static inline bool fast_num(const char **sp, const char *end, size_t maxd, size_t *out)
{
    const char *s = *sp;
    if (s >= end || (unsigned)(*s - '0') > 9 || (*s == '0' && s + 1 < end && s[1] != '\r')) {
        return false;
    }
    size_t v = 0;
    const char *start = s;
    while (s < end && (unsigned)(*s - '0') <= 9) {
        if ((size_t)(s - start) == maxd) {
            return false;
        }
        v = v * 10 + (size_t)(*s++ - '0');
    }
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n') {
        return false;
    }
    *sp = s + 2;
    *out = v;
    return true;
}

static bool fast_mbulk(struct cm_resp_parser *p, struct cm_argv **out)
{
    const char *s = p->data + p->pos, *end = p->data + p->len;
    size_t n, off[FAST_ARGS], len[FAST_ARGS], bytes = 0;
    s++; /* '*' */
    if (!fast_num(&s, end, 1, &n) || n == 0 || n > FAST_ARGS || n > p->max_args) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s >= end || *s != '$') {
            return false;
        }
        s++;
        if (!fast_num(&s, end, FAST_LEN_DIGITS, &len[i]) || len[i] > p->max_bulk ||
            (size_t)(end - s) < len[i] + 2 || s[len[i]] != '\r' || s[len[i] + 1] != '\n') {
            return false;
        }
        off[i] = (size_t)(s - p->data);
        bytes += len[i];
        s += len[i] + 2;
    }
    char *dst;
    struct cm_argv *a = argv_alloc(n, bytes, &dst);
    for (size_t i = 0; i < n; i++) {
        memcpy(dst, p->data + off[i], len[i]);
        dst[len[i]] = '\0';
        a->argv[i] = dst;
        a->lens[i] = len[i];
        dst += len[i] + 1;
    }
    p->pos = (size_t)(s - p->data);
    p->scanned = 0; /* a search an earlier call left unfinished covered this request's bytes */
    *out = a;
    return true;
}

void cm_resp_parser_no_fast_path(struct cm_resp_parser *p)
{
    p->no_fast = true;
}

static inline bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static inline int hex_val(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Output of split_inline: NULL pointers for the counting pass. */
struct split_out {
    char *data; /* next byte to write */
    char **argv;
    size_t *lens;
};

/* redis sdssplitargs over s[0..n): tokens split on blanks, "..." with \xHH \n \r \t \b \a
 * escapes, '...' with \' only; a closing quote must be followed by a blank or the end.
 * Unlike sdssplitargs, a NUL byte is an ordinary character. Counts the tokens and their bytes
 * into *argc and *bytes; when out->data is set also writes them. false: unbalanced quotes. */
static bool split_inline(const char *s, size_t n, struct split_out *out, size_t *argc,
                         size_t *bytes)
{
    const char *p = s, *e = s + n;
    size_t count = 0, total = 0;
    char *w = out->data;
    for (;;) {
        while (p < e && is_space(*p)) {
            p++;
        }
        if (p == e) {
            break;
        }
        bool inq = false, insq = false, done = false;
        size_t tlen = 0;
        char *tok = w;
        while (!done) {
            char c = 0;
            bool put = false;
            if (inq) {
                if (p == e) {
                    return false;
                }
                if (*p == '\\' && e - p >= 4 && p[1] == 'x' && hex_val(p[2]) >= 0 &&
                    hex_val(p[3]) >= 0) {
                    c = (char)(hex_val(p[2]) * 16 + hex_val(p[3]));
                    put = true;
                    p += 3;
                } else if (*p == '\\' && e - p >= 2) {
                    p++;
                    switch (*p) {
                    case 'n':
                        c = '\n';
                        break;
                    case 'r':
                        c = '\r';
                        break;
                    case 't':
                        c = '\t';
                        break;
                    case 'b':
                        c = '\b';
                        break;
                    case 'a':
                        c = '\a';
                        break;
                    default:
                        c = *p;
                        break;
                    }
                    put = true;
                } else if (*p == '"') {
                    if (p + 1 < e && !is_space(p[1])) {
                        return false;
                    }
                    done = true;
                } else {
                    c = *p;
                    put = true;
                }
            } else if (insq) {
                if (p == e) {
                    return false;
                }
                if (*p == '\\' && e - p >= 2 && p[1] == '\'') {
                    p++;
                    c = '\'';
                    put = true;
                } else if (*p == '\'') {
                    if (p + 1 < e && !is_space(p[1])) {
                        return false;
                    }
                    done = true;
                } else {
                    c = *p;
                    put = true;
                }
            } else if (p == e) {
                done = true;
            } else {
                switch (*p) {
                case ' ':
                case '\n':
                case '\r':
                case '\t':
                    done = true;
                    break;
                case '"':
                    inq = true;
                    break;
                case '\'':
                    insq = true;
                    break;
                default:
                    c = *p;
                    put = true;
                    break;
                }
            }
            if (put) {
                if (w != NULL) {
                    *w++ = c;
                }
                tlen++;
            }
            if (p < e) {
                p++;
            }
        }
        if (w != NULL) {
            *w++ = '\0';
            out->argv[count] = tok;
            out->lens[count] = tlen;
        }
        count++;
        total += tlen;
    }
    *argc = count;
    *bytes = total;
    return true;
}

/* ST_IDLE at a byte other than '*': one inline line, ended by "\n" or "\r\n". CM_OK with
 * *out set, or NULL for a blank line (consumed); CM_EAGAIN or CM_ERR. */
static int read_inline(struct cm_resp_parser *p, struct cm_argv **out)
{
    const char *line = p->data + p->pos;
    size_t avail = p->len - p->pos;
    /* The limit is on the line without its end, whatever the split: a line is too long as
     * soon as MAX+1 bytes are in that cannot be followed by "\r\n" or "\n". */
    ssize_t nl = find_in_line(p, '\n', CM_RESP_MAX_INLINE + 2);
    size_t n;
    if (nl < 0) {
        if (avail > CM_RESP_MAX_INLINE + 1 ||
            (avail == CM_RESP_MAX_INLINE + 1 && line[avail - 1] != '\r')) {
            return fail(p, E_BIG_INLINE);
        }
        return CM_EAGAIN;
    }
    n = (size_t)nl;
    if (n > 0 && line[n - 1] == '\r') {
        n--;
    }
    if (n > CM_RESP_MAX_INLINE) {
        return fail(p, E_BIG_INLINE);
    }
    size_t argc, bytes;
    struct split_out none = {NULL, NULL, NULL};
    if (!split_inline(line, n, &none, &argc, &bytes)) {
        return fail(p, E_QUOTES);
    }
    if (argc > p->max_args) {
        return fail(p, E_TOO_MANY_ARGS);
    }
    *out = NULL;
    if (argc > 0) {
        struct split_out wr;
        struct cm_argv *a = argv_alloc(argc, bytes, &wr.data);
        wr.argv = a->argv;
        wr.lens = a->lens;
        bool ok = split_inline(line, n, &wr, &argc, &bytes);
        cm_assert(ok);
        *out = a;
    }
    advance(p, (size_t)nl + 1);
    consume_request(p);
    return CM_OK;
}

int cm_resp_next(struct cm_resp_parser *p, struct cm_argv **out)
{
    if (p->err != E_NONE) {
        return CM_ERR;
    }
    for (;;) {
        int rc;
        if (p->state == ST_IDLE) {
            if (p->pos == p->len) {
                /* Empty: restart at the front, and drop a buffer a big request left behind. */
                p->pos = p->len = 0;
                if (p->cap > BUF_KEEP_CAP) {
                    cm_free(p->data);
                    p->data = NULL;
                    p->cap = 0;
                }
                return CM_EAGAIN;
            }
            if (p->data[p->pos] != '*') {
                struct cm_argv *a;
                rc = read_inline(p, &a);
                if (rc != CM_OK) {
                    return rc;
                }
                if (a != NULL) {
                    *out = a;
                    return CM_OK;
                }
                continue;
            }
            if (!p->no_fast && fast_mbulk(p, out)) {
                return CM_OK;
            }
            rc = read_mbulk_header(p);
            if (rc != CM_OK) {
                return rc;
            }
            if (p->state == ST_IDLE) {
                continue; /* "*0" / "*-1": nothing to run */
            }
        }
        rc = read_bulks(p);
        if (rc != CM_OK) {
            return rc;
        }
        *out = build_mbulk_argv(p);
        consume_request(p);
        return CM_OK;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder */

static const char digit_pairs[201] = "0001020304050607080910111213141516171819"
                                     "2021222324252627282930313233343536373839"
                                     "4041424344454647484950515253545556575859"
                                     "6061626364656667686970717273747576777879"
                                     "8081828384858687888990919293949596979899";

/* Writes v in decimal at dst; returns the number of bytes (at most 20). */
static size_t u64_to_str(char *dst, uint64_t v)
{
    char tmp[20];
    char *t = tmp + sizeof(tmp);
    while (v >= 100) {
        unsigned i = (unsigned)(v % 100) * 2;
        v /= 100;
        *--t = digit_pairs[i + 1];
        *--t = digit_pairs[i];
    }
    if (v >= 10) {
        unsigned i = (unsigned)v * 2;
        *--t = digit_pairs[i + 1];
        *--t = digit_pairs[i];
    } else {
        *--t = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof(tmp) - t);
    memcpy(dst, t, n);
    return n;
}

/* "<type><n>\r\n" */
static void put_header(struct cm_buf *b, char type, uint64_t n)
{
    char *w = cm_buf_reserve(b, 24);
    w[0] = type;
    size_t k = 1 + u64_to_str(w + 1, n);
    w[k++] = '\r';
    w[k++] = '\n';
    cm_buf_commit(b, k);
}

/* "<type><s>\r\n" with CR/LF in s turned into spaces, as redis does for errors, and NUL too.
 * Every status and error line goes through here, so client bytes echoed into one can never end
 * it early and forge replies (issue 14, defect 8). */
static void put_line(struct cm_buf *b, char type, const char *s, size_t len)
{
    char *w = cm_buf_reserve(b, len + 3);
    w[0] = type;
    memcpy(w + 1, s, len);
    for (size_t i = 1; i <= len; i++) {
        if (w[i] == '\r' || w[i] == '\n' || w[i] == '\0') {
            w[i] = ' ';
        }
    }
    w[len + 1] = '\r';
    w[len + 2] = '\n';
    cm_buf_commit(b, len + 3);
}

void cm_resp_status(struct cm_buf *b, const char *s)
{
    put_line(b, '+', s, strlen(s));
}

void cm_resp_error(struct cm_buf *b, const char *s)
{
    put_line(b, '-', s, strlen(s));
}

void cm_resp_errorf(struct cm_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(small)) {
        put_line(b, '-', small, (size_t)n);
        return;
    }
    char *big = cm_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    put_line(b, '-', big, (size_t)n);
    cm_free(big);
}

void cm_resp_int(struct cm_buf *b, int64_t v)
{
    char *w = cm_buf_reserve(b, 24);
    size_t k = 0;
    w[k++] = ':';
    if (v < 0) {
        w[k++] = '-';
        k += u64_to_str(w + k, 0 - (uint64_t)v);
    } else {
        k += u64_to_str(w + k, (uint64_t)v);
    }
    w[k++] = '\r';
    w[k++] = '\n';
    cm_buf_commit(b, k);
}

/* The GET hot path: one reserve, one memcpy, digits by hand. */
void cm_resp_bulk(struct cm_buf *b, const char *s, size_t len)
{
    char *w = cm_buf_reserve(b, len + 27);
    size_t k = 0;
    w[k++] = '$';
    k += u64_to_str(w + k, len);
    w[k++] = '\r';
    w[k++] = '\n';
    memcpy(w + k, s, len);
    k += len;
    w[k++] = '\r';
    w[k++] = '\n';
    cm_buf_commit(b, k);
}

void cm_resp_bulk_str(struct cm_buf *b, const char *s)
{
    cm_resp_bulk(b, s, strlen(s));
}

void cm_resp_nil(struct cm_buf *b, bool resp3)
{
    if (resp3) {
        cm_buf_append(b, "_\r\n", 3);
    } else {
        cm_buf_append(b, "$-1\r\n", 5);
    }
}

void cm_resp_array(struct cm_buf *b, size_t n)
{
    put_header(b, '*', n);
}

void cm_resp_map(struct cm_buf *b, size_t npairs, bool resp3)
{
    if (resp3) {
        put_header(b, '%', npairs);
    } else {
        put_header(b, '*', (uint64_t)npairs * 2);
    }
}

void cm_resp_set(struct cm_buf *b, size_t n, bool resp3)
{
    put_header(b, resp3 ? '~' : '*', n);
}

/* Shortest "%.Ng" (N = 1..17) that reads back as v; "inf", "-inf", "nan" as redis writes them. */
static size_t double_to_str(char *dst, size_t size, double v)
{
    if (isnan(v)) {
        return (size_t)snprintf(dst, size, "nan");
    }
    if (isinf(v)) {
        return (size_t)snprintf(dst, size, v < 0 ? "-inf" : "inf");
    }
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(dst, size, "%.*g", prec, v);
        if (strtod(dst, NULL) == v) {
            break;
        }
    }
    return (size_t)n;
}

void cm_resp_double(struct cm_buf *b, double v, bool resp3)
{
    char tmp[40];
    size_t n = double_to_str(tmp + 1, sizeof(tmp) - 1, v);
    if (resp3) {
        tmp[0] = ',';
        tmp[n + 1] = '\r';
        tmp[n + 2] = '\n';
        cm_buf_append(b, tmp, n + 3);
    } else {
        cm_resp_bulk(b, tmp + 1, n);
    }
}

void cm_resp_verbatim(struct cm_buf *b, const char *s, size_t len, bool resp3)
{
    if (!resp3) {
        cm_resp_bulk(b, s, len);
        return;
    }
    put_header(b, '=', (uint64_t)len + 4);
    char *w = cm_buf_reserve(b, len + 6);
    memcpy(w, "txt:", 4);
    memcpy(w + 4, s, len);
    w[len + 4] = '\r';
    w[len + 5] = '\n';
    cm_buf_commit(b, len + 6);
}
