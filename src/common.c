/* Shared basics: error texts, clocks, the identifier hash. */
#include "common.h"

#include <time.h>

const char *qc_strerror(int code)
{
    switch (code) {
    case QC_OK: return "ok";
    case QC_ENOMEM: return "out of memory";
    case QC_EINVAL: return "invalid argument";
    case QC_EIO: return "input/output error";
    case QC_ENOLEADER: return "no leader";
    case QC_ENOTFOUND: return "not found";
    case QC_ETOOBIG: return "too big";
    case QC_EBUSY: return "busy";
    case QC_ECORRUPT: return "corrupt data";
    case QC_ENOTLEADER: return "not the leader";
    default: return "unknown error";
    }
}

uint64_t qc_now_ms(void)
{
    struct timespec ts;
    /* BOOTTIME keeps counting while the host is suspended, so a lease
     * cannot outlive a suspend; MONOTONIC would stop. */
#ifdef CLOCK_BOOTTIME
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double qc_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t qc_hash_id(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h ? h : 1; /* 0 means "nobody" in the raft core */
}
