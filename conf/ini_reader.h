/* The config loader's line reader for inih: feeds inih the in-memory text through
 * ini_parse_stream, counts physical lines (inih gives its handler none) and classifies each line
 * the way inih 55 will, so that what inih would drop or misread silently is reported instead. */
#ifndef CM_CONF_INI_READER_H
#define CM_CONF_INI_READER_H

#include "daemon/common.h"

#include <stdbool.h>
#include <stddef.h>

/* How the reader classified the physical line inih is processing, mimicking inih's rules. */
enum cm_ini_line {
    CM_INI_BLANK,   /* empty or comment */
    CM_INI_SECTION, /* [header] */
    CM_INI_KV,      /* name = value: the handler will be called */
    CM_INI_CONT,    /* indented line after a key: inih calls the handler as a continuation */
    CM_INI_BAD,     /* inih would reject it silently */
};

/* Reports one problem of line `line` (msg is only valid during the call). */
typedef void cm_ini_err_fn(void *arg, int line, const char *msg);
/* A section header: the text between '[' and ']', trimmed (not NUL-terminated), or NULL when
 * the header is unusable (its keys are to be skipped). */
typedef void cm_ini_section_fn(void *arg, int line, const char *name, size_t len);

/* Embedded in the loader; set text, len, on_err, on_section and arg, zero the rest. */
struct cm_ini_reader {
    const char *text;
    size_t len;
    cm_ini_err_fn *on_err;
    cm_ini_section_fn *on_section;
    void *arg;
    /* reader state */
    size_t off;            /* next byte the reader returns */
    int line;              /* physical line of the chunk inih is processing */
    int chunks;            /* chunks returned so far: inih's own line count */
    int max_line;          /* longest line inih can take whole */
    bool partial;          /* the last chunk ended before its line did */
    bool skip;             /* current physical line is already reported */
    bool ini_prev_name;    /* inih has a name a continuation line would extend */
    enum cm_ini_line kind; /* of the current chunk */
    bool kv_pending;       /* a CM_INI_KV chunk whose handler call has not come yet */
};

/* Runs inih over r->text with handler (inih's ini_handler, given handler_arg). Returns inih's
 * result (< 0: inih failed); every line problem has gone to r->on_err. */
int cm_ini_reader_parse(struct cm_ini_reader *r,
                        int (*handler)(void *, const char *, const char *, const char *),
                        void *handler_arg);
/* Called first by the inih handler for each name = value: true when the call is the key of
 * the current line and should be recorded; false when it must be ignored (the line is already
 * reported, a continuation line, or a call the reader did not expect, which it reports). */
bool cm_ini_reader_take_kv(struct cm_ini_reader *r, const char *name);

#endif
