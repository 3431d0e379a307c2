/* Shared by the bench programs that hold thousands of sockets (trace, origin). */
#ifndef CM_BENCH_NOFILE_H
#define CM_BENCH_NOFILE_H

#include <sys/resource.h>

/* Raises the open-file limit to its hard maximum. */
static inline void bench_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

#endif
