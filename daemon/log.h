/* Leveled logging. Only log.c writes to the log sink. Arguments are not evaluated when the level is off. */
#ifndef CM_DAEMON_LOG_H
#define CM_DAEMON_LOG_H

#include "daemon/common.h"

#include <stddef.h>

enum cm_log_level {
    CM_LOG_ERR = 0,
    CM_LOG_WARN,
    CM_LOG_NOTICE,
    CM_LOG_INFO,
    CM_LOG_DEBUG,
    CM_LOG_TRACE,
};

extern int cm_log_level;

void cm_log_write(int lvl, const char *file, int line, const char *fmt, ...) CM_PRINTF(4, 5);
/* Opens (or reopens, on SIGHUP) the log file; NULL or "" = stderr. Returns CM_OK or CM_ERR. */
int cm_log_open(const char *path) CM_MUSTCHECK;
void cm_log_close(void);
/* Parses "debug|info|warning|error" (also notice, trace); returns -1 when unknown. */
int cm_log_level_parse(const char *s);
/* Writes an escaped copy of bytes (non-printables as \xNN, at most max input bytes) into out (size outsz). */
void cm_log_escape(char *out, size_t outsz, const char *bytes, size_t len, size_t max);

#define cm_log(lvl, ...) \
    do { if ((lvl) <= cm_log_level) cm_log_write((lvl), __FILE__, __LINE__, __VA_ARGS__); } while (0)

#endif
