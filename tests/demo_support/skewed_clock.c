/* A wall clock moved by SKEWED_CLOCK_MS milliseconds, for one process.
 *
 * tests/demo_clock.rs compiles this with `cc -shared -fPIC` and starts a
 * redis-server with it in LD_PRELOAD, so that Redis's own clock (TIME, and
 * every expiry it computes from the wall clock) is really skewed.
 *
 * Why not libfaketime: Debian's redis-server allocates with jemalloc, and
 * libfaketime cannot start under it (libfaketime's initialisation
 * allocates, jemalloc's initialisation reads the clock: the recursion is
 * wolfcw/libfaketime#130, unfixed). This shim allocates nothing and calls
 * the kernel directly, so it has nothing to recurse into.
 *
 * Only the wall clock moves (CLOCK_REALTIME and its coarse variant,
 * gettimeofday, time); the monotonic clocks Redis uses for timeouts stay
 * honest, as they would on a host whose NTP went wrong. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long skew_ms(void) {
    /* Read once; getenv allocates nothing. */
    static int read;
    static long long skew;
    if (!read) {
        const char *v = getenv("SKEWED_CLOCK_MS");
        skew = v ? atoll(v) : 0;
        read = 1;
    }
    return skew;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    long r = syscall(SYS_clock_gettime, id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec +
                       skew_ms() * 1000000LL;
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
    }
    return (int)r;
}

/* Declared here, not from <sys/time.h>, whose prototype differs between
 * glibc versions; the layout is the kernel's. */
struct skewed_timeval {
    long tv_sec;
    long tv_usec;
};

int gettimeofday(struct skewed_timeval *tv, void *tz) {
    (void)tz;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return -1;
    }
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return (time_t)-1;
    }
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
