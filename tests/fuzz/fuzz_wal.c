/* libFuzzer target: WAL recovery (qc_wal_open) over a data directory built
 * from the input, in a scratch directory under /dev/shm. Input: one flags
 * byte, then up to 8 files, each a kind byte (0 a segment wal/<first>.seg,
 * 1 a snapshot snap/<index>-<term>.snap, 2 a leftover snap/N-1.snap.tmp, 3 a
 * stray file in wal/), a name number (u16; a snapshot also a term byte), a
 * length (u16) and the bytes. Flag bit 0 writes the right magic and CRC into
 * each record of a segment (records found by their length fields), bit 1 the
 * right header and CRC into each snapshot, so mutations get past checksums;
 * bit 2 appends one entry after a good recovery.
 * Properties: recovery either refuses with a message or yields entries that
 * run on from the snapshot with terms that never go down; recovering again
 * gives the same result with nothing left to cut; an appended entry is there
 * after reopening. Test-only. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/common.h"
#include "core/wire.h" /* qc_crc32c */
#include "fuzz.h"
#include "store/wal.h"

#define WAL_MAGIC 0x51435731u  /* wal.c's "QCW1" */
#define SNAP_MAGIC 0x51435331u /* wal.c's "QCS1" */
#define REC_HEADER 12
#define REC_FIXED 24
#define SNAP_HEADER 32
#define MAX_FILES 8

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int no_sync(int fd, void *arg)
{
    (void)fd;
    (void)arg;
    return 0;
}

/* Makes each record that fits whole carry the right magic and CRC. */
static void fix_records(uint8_t *p, size_t len)
{
    size_t off = 0;
    while (len - off >= REC_HEADER + REC_FIXED) {
        uint8_t *r = p + off;
        uint32_t plen = get32(r + 4);
        if (plen < REC_FIXED || plen > len - off - REC_HEADER) return;
        put32(r, WAL_MAGIC);
        put32(r + 8, qc_crc32c(qc_crc32c(0, r, 8), r + REC_HEADER, plen));
        off += REC_HEADER + plen;
    }
}

static void fix_snapshot(uint8_t *p, size_t len, uint64_t index, uint64_t term)
{
    if (len < SNAP_HEADER) return;
    put32(p, SNAP_MAGIC);
    put64(p + 4, index);
    put64(p + 12, term);
    put64(p + 20, len - SNAP_HEADER);
    put32(p + 28, qc_crc32c(qc_crc32c(0, p, 28), p + SNAP_HEADER, len - SNAP_HEADER));
}

static int write_files(const char *dir, fuzz_in *in, uint8_t flags)
{
    char path[256];
    snprintf(path, sizeof path, "%s/wal", dir);
    if (mkdir(path, 0700) != 0) return -1;
    snprintf(path, sizeof path, "%s/snap", dir);
    if (mkdir(path, 0700) != 0) return -1;
    static uint8_t buf[65536];
    for (int i = 0; i < MAX_FILES && in->left; i++) {
        uint8_t kind = fuzz_u8(in) % 4;
        uint64_t num = fuzz_u16(in), term = kind == 1 ? fuzz_u8(in) : 0;
        size_t len;
        const uint8_t *p = fuzz_bytes(in, fuzz_u16(in), &len);
        memcpy(buf, p, len);
        if (kind == 0) {
            if (flags & 1) fix_records(buf, len);
            snprintf(path, sizeof path, "%s/wal/%016llx.seg", dir, (unsigned long long)num);
        } else if (kind == 1) {
            if (flags & 2) fix_snapshot(buf, len, num, term);
            snprintf(path, sizeof path, "%s/snap/%016llx-%016llx.snap", dir,
                     (unsigned long long)num, (unsigned long long)term);
        } else if (kind == 2) {
            snprintf(path, sizeof path, "%s/snap/%016llx-0000000000000001.snap.tmp", dir,
                     (unsigned long long)num);
        } else {
            snprintf(path, sizeof path, "%s/wal/stray%u", dir, (unsigned)num);
        }
        if (fuzz_write_file(path, buf, len) != 0) return -1;
    }
    return 0;
}

/* What a recovery must look like. */
static void check_recovery(const qc_wal *w, const qc_wal_recovery *r)
{
    FUZZ_CHECK(r->snap_index == qc_wal_snapshot_index(w));
    FUZZ_CHECK(r->snap_len == 0 || r->snap_data);
    uint64_t term = r->snap_term;
    for (size_t i = 0; i < r->n_entries; i++) {
        const qc_entry *e = &r->entries[i];
        FUZZ_CHECK(e->index == r->snap_index + 1 + i);
        FUZZ_CHECK(e->term >= term);
        FUZZ_CHECK(e->len == 0 || e->data);
        term = e->term;
    }
    if (r->n_entries) {
        FUZZ_CHECK(qc_wal_first_index(w) == r->entries[0].index);
        FUZZ_CHECK(qc_wal_last_index(w) == r->entries[r->n_entries - 1].index);
    } else {
        FUZZ_CHECK(qc_wal_first_index(w) > qc_wal_last_index(w));
    }
}

static void same_recovery(const qc_wal_recovery *a, const qc_wal_recovery *b)
{
    FUZZ_CHECK(a->snap_index == b->snap_index && a->snap_term == b->snap_term);
    FUZZ_CHECK(a->snap_len == b->snap_len);
    FUZZ_CHECK(a->snap_len == 0 || memcmp(a->snap_data, b->snap_data, a->snap_len) == 0);
    FUZZ_CHECK(a->n_entries == b->n_entries);
    for (size_t i = 0; i < a->n_entries; i++) {
        const qc_entry *x = &a->entries[i], *y = &b->entries[i];
        FUZZ_CHECK(x->term == y->term && x->index == y->index && x->type == y->type);
        FUZZ_CHECK(x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0));
    }
}

/* Appends one entry after the last and checks it survives a reopen. */
static void append_one(qc_wal *w, const qc_wal_recovery *r, const char *dir,
                       const qc_wal_options *opt)
{
    uint64_t last = qc_wal_last_index(w);
    uint64_t term = r->n_entries ? r->entries[r->n_entries - 1].term : r->snap_term;
    /* a newer term, unless the last is the highest there is (recovery
     * refuses a term that goes down; append does not check it) */
    term += term < UINT64_MAX;
    qc_entry e = {
        .term = term, .index = last + 1, .type = QC_ENTRY_DATA, .len = 3, .data = (uint8_t *)"new"};
    FUZZ_CHECK(qc_wal_append(w, &e, 1) == QC_OK);
    FUZZ_CHECK(qc_wal_sync(w) == QC_OK);
    qc_wal *w2;
    qc_wal_recovery r2;
    int rc = qc_wal_open(dir, opt, &w2, &r2);
    if (rc != QC_OK) fprintf(stderr, "reopen after append: %s\n", r2.error);
    FUZZ_CHECK(rc == QC_OK);
    FUZZ_CHECK(qc_wal_last_index(w2) == last + 1);
    FUZZ_CHECK(r2.n_entries && r2.entries[r2.n_entries - 1].index == last + 1 &&
               r2.entries[r2.n_entries - 1].len == 3);
    qc_wal_recovery_free(&r2);
    qc_wal_close(w2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *base = fuzz_scratch_dir();
    if (!base || size < 1) return 0;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/data", base);
    FUZZ_CHECK(fuzz_clear_dir(base) == 0);
    FUZZ_CHECK(mkdir(dir, 0700) == 0);
    fuzz_in in = {data + 1, size - 1};
    if (write_files(dir, &in, data[0]) != 0) return 0;
    qc_wal_options opt = {.sync = no_sync};
    qc_wal *w = NULL;
    qc_wal_recovery r;
    int rc = qc_wal_open(dir, &opt, &w, &r);
    if (rc != QC_OK) {
        FUZZ_CHECK(rc == QC_ECORRUPT || rc == QC_EIO || rc == QC_ENOMEM);
        FUZZ_CHECK(r.error[0] != '\0' && r.n_entries == 0 && r.entries == NULL);
        qc_wal_recovery_free(&r);
        return 0;
    }
    check_recovery(w, &r);
    qc_wal_close(w);
    /* A second recovery finds what the first left: the same, nothing torn. */
    qc_wal_recovery r2;
    rc = qc_wal_open(dir, &opt, &w, &r2);
    if (rc != QC_OK) fprintf(stderr, "second recovery: %s\n", r2.error);
    FUZZ_CHECK(rc == QC_OK);
    FUZZ_CHECK(r2.torn_bytes == 0);
    same_recovery(&r, &r2);
    if (data[0] & 4) append_one(w, &r2, dir, &opt);
    qc_wal_close(w);
    qc_wal_recovery_free(&r);
    qc_wal_recovery_free(&r2);
    return 0;
}
