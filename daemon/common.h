/* Status codes, attributes and assertions shared by every module. Includes no module header. */
#ifndef CM_DAEMON_COMMON_H
#define CM_DAEMON_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#define CM_OK        0
#define CM_ERR      (-1)
#define CM_EAGAIN   (-2)   /* need more bytes / try again later */
#define CM_ETIMEDOUT (-3)  /* an operation's timer fired first */

#define CM_UNUSED(x) ((void)(x))
#define CM_MUSTCHECK __attribute__((warn_unused_result))
#define CM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define CM_NORETURN __attribute__((noreturn))
#define CM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void cm_assert_fail(const char *expr, const char *file, int line) CM_NORETURN;

/* On in every build, like redis serverAssert. */
#define cm_assert(x) do { if (!(x)) cm_assert_fail(#x, __FILE__, __LINE__); } while (0)
#define CM_NOT_REACHED() cm_assert_fail("not reached", __FILE__, __LINE__)

#endif
