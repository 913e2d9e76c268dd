/* Shared helpers of the libFuzzer targets in tests/fuzz/ (see mk/fuzz.mk):
 * a checked abort for properties the code under test must keep, a byte
 * reader over the fuzzer's input, and a scratch directory per process.
 * Test-only; never linked into the agent. */
#ifndef QC_FUZZ_H
#define QC_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A broken property is a crash: libFuzzer keeps the input that did it. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fuzz_in {
    const uint8_t *p;
    size_t left;
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in)
{
    if (!in->left) return 0;
    in->left--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(fuzz_in *in)
{
    uint16_t hi = fuzz_u8(in);
    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

static inline uint32_t fuzz_u32(fuzz_in *in)
{
    uint32_t hi = fuzz_u16(in);
    return hi << 16 | fuzz_u16(in);
}

/* Up to n bytes (fewer at the end of the input); *got says how many. */
static inline const uint8_t *fuzz_bytes(fuzz_in *in, size_t n, size_t *got)
{
    const uint8_t *p = in->p;
    *got = n < in->left ? n : in->left;
    in->p += *got;
    in->left -= *got;
    return p;
}

/* A private directory under /dev/shm (or /tmp) for this process, made once
 * and removed at exit; NULL when it cannot be made. */
const char *fuzz_scratch_dir(void);
/* Writes n bytes to path (created or truncated); 0 or -1. */
int fuzz_write_file(const char *path, const void *p, size_t n);
/* Removes everything inside dir (not dir itself); 0 or -1. */
int fuzz_clear_dir(const char *dir);

#endif
