/* Templates: a node's key template ("user:{id}:info") and its loader URL templates, parsed once
 * by the config loader (conf.c keeps the parsed form in struct cm_conf_node) and matched or
 * expanded by daemon/node.c. */
#ifndef CM_CONF_TEMPLATE_H
#define CM_CONF_TEMPLATE_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>

/* Most {params} in one template (struct cm_params has room for this many). */
#define CM_TPL_MAX_PARAMS 16

/* One piece of a template: literal bytes or a {param}. */
struct cm_tpl_seg {
    bool param;
    char *text; /* literal bytes, or the param name; owned */
    size_t len;
    size_t pidx; /* param: its position among the template's params */
};

/* A parsed template. A zeroed one (nsegs == 0) is "none". */
struct cm_tpl {
    struct cm_tpl_seg *segs; /* owned */
    size_t nsegs;
    size_t nparams;
};

/* Parses a key template: {name} parameters of [A-Za-z0-9_], balanced braces, no empty names,
 * no two parameters directly adjacent, no parameter twice, at most CM_TPL_MAX_PARAMS, no
 * control characters. Returns CM_OK, or CM_ERR with a reason in err (t then holds nothing). */
int cm_tpl_parse(struct cm_tpl *t, const char *s, char *err, size_t errsz) CM_MUSTCHECK;
/* Parses a URL template: the same {name} syntax, but a parameter may appear more than once
 * and next to another (the URL is only expanded, never matched). */
int cm_tpl_parse_url(struct cm_tpl *t, const char *s, char *err, size_t errsz) CM_MUSTCHECK;
void cm_tpl_deinit(struct cm_tpl *t);
/* The offset in s of the '{' of the template's first parameter (as parsed from s), or the
 * length of s when there is none. */
size_t cm_tpl_first_param_offset(const struct cm_tpl *t);
/* How many of t's params are named name[0..len). */
size_t cm_tpl_count_param(const struct cm_tpl *t, const char *name, size_t len);

#endif
