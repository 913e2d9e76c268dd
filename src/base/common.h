/* Shared basics for every module: error codes (from qcluster_errors.h),
 * the monotonic clock, a growable buffer, small helpers. Nothing here may allocate global state or
 * know about a module. */
#ifndef QC_COMMON_H
#define QC_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* The error codes and qc_strerror are the public header's (one definition),
 * from the part of it that is only that. */
#include <qcluster_errors.h>

#define QC_VERSION QCLUSTER_VERSION

/* Milliseconds of CLOCK_BOOTTIME (monotonic, and counting through suspend). */
uint64_t qc_now_ms(void);

/* Wall-clock seconds since the epoch, with sub-millisecond precision. */
double qc_wall_time(void);

/* A growable byte buffer; zero-initialised is empty. */
typedef struct qc_buf {
    uint8_t *data;
    size_t len, cap;
} qc_buf;

/* Room for extra more bytes: QC_ENOMEM, or QC_ETOOBIG past SIZE_MAX / 2. */
int qc_buf_reserve(qc_buf *b, size_t extra);
int qc_buf_append(qc_buf *b, const void *p, size_t n);
void qc_buf_free(qc_buf *b);

/* 64-bit FNV-1a of a NUL-terminated string: how identifiers become raft ids. */
uint64_t qc_hash_id(const char *identifier);

#endif
