/* Shared basics for every module: error codes (from qcluster.h), the
 * monotonic clock, small helpers. Nothing here may allocate global state or
 * know about a module. */
#ifndef QC_COMMON_H
#define QC_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* The error codes and qc_strerror are the public header's (one definition). */
#include <qcluster.h>

#define QC_VERSION QCLUSTER_VERSION

/* Milliseconds of CLOCK_BOOTTIME (monotonic, and counting through suspend). */
uint64_t qc_now_ms(void);

/* Wall-clock seconds since the epoch, with sub-millisecond precision. */
double qc_wall_time(void);

/* 64-bit FNV-1a of a NUL-terminated string: how identifiers become raft ids. */
uint64_t qc_hash_id(const char *identifier);

#endif
