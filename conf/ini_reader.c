/* The config loader's line reader for inih (see ini_reader.h). inih reads lines of a fixed
 * size through this reader and calls the handler with no line number; the reader counts
 * physical lines, returns an overlong line in chunks (flagged, reported once), and classifies
 * every line with inih's own rules so that each handler call can be matched to its line. */
#include "conf/ini_reader.h"
#include "daemon/log.h"

#include <ctype.h>
#include <ini.h>
#include <stdio.h>
#include <string.h>

/* inih's find_chars_or_comment: stops at one of chars, at an inline ';' that follows
 * whitespace, or at the end. */
static const char *ini_find(const char *s, const char *end, const char *chars)
{
    bool was_space = false;
    while (s < end && (chars == NULL || strchr(chars, *s) == NULL) && !(was_space && *s == ';')) {
        was_space = isspace((unsigned char)*s);
        s++;
    }
    return s;
}

static bool only_comment_after(const char *s, const char *end)
{
    while (s < end && isspace((unsigned char)*s)) {
        s++;
    }
    return s == end || *s == ';' || *s == '#';
}

/* A well-formed header: hands its trimmed text to the loader. */
static void section(struct cm_ini_reader *r, const char *s, size_t len)
{
    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        len--;
    }
    r->on_section(r->arg, r->line, s, len);
}

/* Classifies a chunk exactly as inih 55 will parse it (so the handler's calls can be matched to
 * lines) and reports what inih would drop silently. */
static void classify(struct cm_ini_reader *r, const char *str, bool overlong, bool has_nul)
{
    const char *start = str;
    const char *end = str + strlen(str);
    char msg[96];

    if (r->chunks == 1 && (unsigned char)str[0] == 0xEF && (unsigned char)str[1] == 0xBB &&
        (unsigned char)str[2] == 0xBF) {
        start += 3;
    }
    while (end > start && isspace((unsigned char)end[-1])) {
        end--;
    }
    while (start < end && isspace((unsigned char)*start)) {
        start++;
    }
    if (start == end || *start == ';' || *start == '#') {
        r->kind = CM_INI_BLANK;
    } else if (r->ini_prev_name && start > str) {
        r->kind = CM_INI_CONT;
    } else if (*start == '[') {
        const char *rb = ini_find(start + 1, end, "]");
        if (rb < end && *rb == ']') {
            r->kind = CM_INI_SECTION;
            r->ini_prev_name = false;
        } else {
            r->kind = CM_INI_BAD;
        }
    } else {
        const char *sep = ini_find(start, end, "=:");
        if (sep < end && (*sep == '=' || *sep == ':')) {
            const char *ne = sep;
            while (ne > start && isspace((unsigned char)ne[-1])) {
                ne--;
            }
            r->kind = CM_INI_KV;
            r->kv_pending = true;
            r->ini_prev_name = ne > start;
        } else {
            r->kind = CM_INI_BAD;
        }
    }

    if (r->skip) {
        return;
    }
    if (overlong) {
        snprintf(msg, sizeof(msg), "line too long (more than %d characters)", r->max_line);
        r->on_err(r->arg, r->line, msg);
        r->skip = true;
        return;
    }
    if (has_nul) {
        r->on_err(r->arg, r->line, "NUL byte in line");
        r->skip = true;
        return;
    }
    switch (r->kind) {
    case CM_INI_BLANK:
    case CM_INI_KV:
        break;
    case CM_INI_CONT:
        r->on_err(r->arg, r->line,
                  "unexpected indented line (continuation lines are not supported)");
        break;
    case CM_INI_BAD:
        if (*start == '[') {
            r->on_err(r->arg, r->line, "unterminated section header: missing ']'");
        } else {
            r->on_err(r->arg, r->line, "expected \"key = value\", \"[section]\" or a ; comment");
        }
        break;
    case CM_INI_SECTION: {
        const char *rb = ini_find(start + 1, end, "]");
        if (!only_comment_after(rb + 1, end)) {
            r->on_err(r->arg, r->line, "text after ']' in section header");
            r->on_section(r->arg, r->line, NULL, 0);
        } else {
            section(r, start + 1, (size_t)(rb - start - 1));
        }
        break;
    }
    }
}

/* Our reading of a line and inih's must agree: a line we took for "key = value" gets exactly
 * one handler call before the next line is read. A different inih build (other comment or
 * continuation rules) would show up here as an error instead of a silently dropped key. */
static void check_kv_handled(struct cm_ini_reader *r)
{
    if (r->kv_pending && !r->skip) {
        r->on_err(r->arg, r->line, "could not parse this line (INI parser disagreement)");
    }
    r->kv_pending = false;
}

/* ini_reader over the in-memory text. Returns at most num-1 bytes of one line; a longer line
 * comes back in several chunks, all flagged overlong, and counted as one physical line. */
static char *reader(char *str, int num, void *arg)
{
    struct cm_ini_reader *r = arg;
    const char *p = r->text + r->off;
    size_t avail = r->len - r->off;
    const char *nl;
    size_t content, take, consumed;
    bool was_partial = r->partial;

    check_kv_handled(r);
    if (r->off >= r->len || num < 2) {
        return NULL;
    }
    r->max_line = num - 1;
    nl = memchr(p, '\n', avail);
    content = nl != NULL ? (size_t)(nl - p) : avail;
    if (content <= (size_t)num - 1) {
        /* The whole line fits; its '\n' is left out when there is no room (inih strips it). */
        take = content + (nl != NULL && content < (size_t)num - 1 ? 1 : 0);
        consumed = content + (nl != NULL ? 1 : 0);
        r->partial = false;
    } else {
        take = (size_t)num - 1;
        consumed = take;
        r->partial = true;
    }
    memcpy(str, p, take);
    str[take] = '\0';
    r->off += consumed;
    r->chunks++;
    if (!was_partial) {
        r->line++;
        r->skip = false;
    }
    classify(r, str, was_partial || r->partial, memchr(p, '\0', take) != NULL);
    return str;
}

int cm_ini_reader_parse(struct cm_ini_reader *r,
                        int (*handler)(void *, const char *, const char *, const char *),
                        void *handler_arg)
{
    int rc = ini_parse_stream(reader, r, handler, handler_arg);
    check_kv_handled(r);
    return rc;
}

bool cm_ini_reader_take_kv(struct cm_ini_reader *r, const char *name)
{
    char n[256], msg[320];
    if (r->skip || r->kind == CM_INI_CONT) {
        return false;
    }
    if (r->kind != CM_INI_KV || !r->kv_pending) {
        cm_log_escape(n, sizeof(n), name, strlen(name), 200);
        snprintf(msg, sizeof(msg), "unexpected value for '%s' (INI parser disagreement)", n);
        r->on_err(r->arg, r->line, msg);
        return false;
    }
    r->kv_pending = false;
    return true;
}
