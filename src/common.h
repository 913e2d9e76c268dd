/* Shared basics for every module: error codes, the monotonic clock, small
 * helpers. Nothing here may allocate global state or know about a module. */
#ifndef QC_COMMON_H
#define QC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define QC_VERSION "0.1.0"

enum {
    QC_OK = 0,
    QC_ENOMEM = -1,     /* allocation failed */
    QC_EINVAL = -2,     /* bad argument or malformed input */
    QC_EIO = -3,        /* system call failed; errno tells more */
    QC_ENOLEADER = -4,  /* no leader is known */
    QC_ENOTFOUND = -5,  /* no such peer, key, ... */
    QC_ETOOBIG = -6,    /* input over a size limit */
    QC_EBUSY = -7,      /* an operation of that kind is in progress */
    QC_ECORRUPT = -8,   /* durable data failed its check */
    QC_ENOTLEADER = -9, /* operation needs the leader */
};

/* Static text for a QC_E... code. */
const char *qc_strerror(int code);

/* Milliseconds of CLOCK_BOOTTIME (monotonic, and counting through suspend). */
uint64_t qc_now_ms(void);

/* Wall-clock seconds since the epoch, with sub-millisecond precision. */
double qc_wall_time(void);

/* 64-bit FNV-1a of a NUL-terminated string: how identifiers become raft ids. */
uint64_t qc_hash_id(const char *identifier);

#endif
