/* Template parsing (see template.h). One scanner for key and URL templates, so that what the
 * config check accepts is exactly what the daemon builds its nodes from. */
#include "conf/template.h"

#include "daemon/alloc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(struct cm_tpl *t, char *err, size_t errsz, const char *fmt, ...) CM_PRINTF(4, 5);

static int fail(struct cm_tpl *t, char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    if (errsz > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    cm_tpl_deinit(t);
    return CM_ERR;
}

static bool is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static void add_seg(struct cm_tpl *t, bool param, const char *s, size_t len)
{
    t->segs = cm_realloc(t->segs, (t->nsegs + 1) * sizeof(*t->segs));
    t->segs[t->nsegs].param = param;
    t->segs[t->nsegs].text = cm_strndup(s, len);
    t->segs[t->nsegs].len = len;
    t->segs[t->nsegs].pidx = t->nparams;
    t->nsegs++;
    t->nparams += param;
}

size_t cm_tpl_count_param(const struct cm_tpl *t, const char *name, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nsegs; i++) {
        n += t->segs[i].param && t->segs[i].len == len && memcmp(t->segs[i].text, name, len) == 0;
    }
    return n;
}

size_t cm_tpl_first_param_offset(const struct cm_tpl *t)
{
    size_t off = 0;
    for (size_t i = 0; i < t->nsegs && !t->segs[i].param; i++) {
        off += t->segs[i].len;
    }
    return off;
}

static int parse(struct cm_tpl *t, const char *s, bool key, char *err, size_t errsz)
{
    size_t lit = 0; /* start of the pending literal */
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (key && (c < ' ' || c == 0x7f)) {
            return fail(t, err, errsz, "control characters are not allowed");
        }
        if (c == '}') {
            return fail(t, err, errsz, "unmatched '}' at offset %zu", i);
        }
        if (c != '{') {
            continue;
        }
        size_t j = i + 1;
        while (is_ident_char(s[j])) {
            j++;
        }
        if (s[j] == '\0') {
            return fail(t, err, errsz, "unclosed '{' at offset %zu", i);
        }
        if (s[j] != '}') {
            return fail(
                t, err, errsz,
                "bad character '%c' in parameter name at offset %zu (allowed: A-Z a-z 0-9 _)",
                isprint((unsigned char)s[j]) ? s[j] : '?', j);
        }
        if (j == i + 1) {
            return fail(t, err, errsz, "empty parameter name '{}' at offset %zu", i);
        }
        if (t->nparams == CM_TPL_MAX_PARAMS) {
            return fail(t, err, errsz, "more than %d parameters", CM_TPL_MAX_PARAMS);
        }
        const char *name = s + i + 1;
        size_t nlen = j - i - 1;
        if (i > lit) {
            add_seg(t, false, s + lit, i - lit);
        } else if (key && t->nsegs > 0) {
            const struct cm_tpl_seg *prev = &t->segs[t->nsegs - 1];
            return fail(
                t, err, errsz,
                "parameters {%.*s} and {%.*s} are adjacent: separate them with literal text",
                (int)prev->len, prev->text, (int)nlen, name);
        }
        if (key && cm_tpl_count_param(t, name, nlen) > 0) {
            return fail(t, err, errsz, "parameter {%.*s} appears twice", (int)nlen, name);
        }
        add_seg(t, true, name, nlen);
        i = j;
        lit = j + 1;
    }
    if (s[lit] != '\0') {
        add_seg(t, false, s + lit, strlen(s + lit));
    }
    return CM_OK;
}

int cm_tpl_parse(struct cm_tpl *t, const char *s, char *err, size_t errsz)
{
    return parse(t, s, true, err, errsz);
}

int cm_tpl_parse_url(struct cm_tpl *t, const char *s, char *err, size_t errsz)
{
    return parse(t, s, false, err, errsz);
}

void cm_tpl_deinit(struct cm_tpl *t)
{
    for (size_t i = 0; i < t->nsegs; i++) {
        cm_free(t->segs[i].text);
    }
    cm_free(t->segs);
    memset(t, 0, sizeof(*t));
}
