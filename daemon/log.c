/* The log sink: stderr or a file reopened on SIGHUP. */
#include "daemon/log.h"

#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int cm_log_level = CM_LOG_INFO;
static FILE *log_fp;   /* NULL = stderr */
static char *log_path;

static const char *level_names[] = { "ERR", "WARN", "NOTICE", "INFO", "DEBUG", "TRACE" };

void cm_log_write(int lvl, const char *file, int line, const char *fmt, ...)
{
    FILE *fp = log_fp ? log_fp : stderr;
    struct timeval tv;
    struct tm tm;
    char ts[32];
    char msg[2048];
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (lvl < 0 || lvl > CM_LOG_TRACE) {
        lvl = CM_LOG_INFO;
    }
    if (cm_log_level >= CM_LOG_DEBUG) {
        fprintf(fp, "%s.%03ld %d %s %s (%s:%d)\n", ts, (long)tv.tv_usec / 1000, (int)getpid(),
                level_names[lvl], msg, file, line);
    } else {
        fprintf(fp, "%s.%03ld %d %s %s\n", ts, (long)tv.tv_usec / 1000, (int)getpid(),
                level_names[lvl], msg);
    }
    fflush(fp);
}

int cm_log_open(const char *path)
{
    if (path != NULL && path[0] != '\0') {
        FILE *fp = fopen(path, "a");
        if (fp == NULL) {
            return CM_ERR;
        }
        if (log_fp != NULL) {
            fclose(log_fp);
        }
        log_fp = fp;
        if (log_path != path) {
            free(log_path);
            log_path = strdup(path);
        }
    }
    return CM_OK;
}

void cm_log_close(void)
{
    if (log_fp != NULL) {
        fclose(log_fp);
        log_fp = NULL;
    }
    free(log_path);
    log_path = NULL;
}

int cm_log_level_parse(const char *s)
{
    static const struct { const char *name; int lvl; } names[] = {
        { "error", CM_LOG_ERR }, { "warning", CM_LOG_WARN }, { "warn", CM_LOG_WARN },
        { "notice", CM_LOG_NOTICE }, { "info", CM_LOG_INFO }, { "debug", CM_LOG_DEBUG },
        { "trace", CM_LOG_TRACE },
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(names); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            return names[i].lvl;
        }
    }
    return -1;
}

void cm_log_escape(char *out, size_t outsz, const char *bytes, size_t len, size_t max)
{
    size_t o = 0;
    if (outsz == 0) {
        return;
    }
    for (size_t i = 0; i < len && i < max; i++) {
        unsigned char ch = (unsigned char)bytes[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            if (o + 1 >= outsz) {
                break;
            }
            out[o++] = (char)ch;
        } else {
            if (o + 4 >= outsz) {
                break;
            }
            snprintf(out + o, outsz - o, "\\x%02x", ch);
            o += 4;
        }
    }
    out[o] = '\0';
}
