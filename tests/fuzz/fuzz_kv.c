/* libFuzzer target: the KV state machine's decoders. The first input byte
 * picks the mode:
 * - even: a stream of entries applied to a small store (key limit 16,
 *   value limit 64) next to a plain reference model. Each entry is either
 *   raw bytes for qc_kv_decode/qc_kv_apply or a command built from a few
 *   input bytes with the encoders (so the store fills up). After each one the
 *   outcome, revision and value must match the model's; at the end the tree
 *   must verify, list in order, and survive a snapshot and restore.
 * - odd: the rest is a snapshot for qc_kv_restore (bit 1: the harness writes
 *   the right CRC into its trailer first). A restored store must verify and
 *   snapshot back to exactly the same bytes; a refused one must be intact.
 * Test-only. */
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "core/kv.h"
#include "core/wire.h" /* qc_crc32c */
#include "fuzz.h"

#define MAX_KEY 16
#define MAX_VALUE 64
#define MODEL_MAX 256

/* The reference: an unsorted array, searched linearly. */
typedef struct model_ent {
    uint8_t key[MAX_KEY], value[MAX_VALUE];
    size_t klen, vlen;
    uint64_t rev;
} model_ent;

typedef struct model {
    model_ent v[MODEL_MAX];
    size_t n;
} model;

static model_ent *model_find(model *m, const uint8_t *key, size_t klen)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].klen == klen && memcmp(m->v[i].key, key, klen) == 0) return &m->v[i];
    return NULL;
}

static int cas_ok(int64_t cas, const model_ent *e)
{
    return cas == QC_KV_CAS_NONE || (uint64_t)cas == (e ? e->rev : 0);
}

/* The model's answer to a decoded command at index; may refuse to grow
 * past MODEL_MAX (then the caller skips the entry). */
static int model_apply(model *m, const qc_kv_cmd *c, uint64_t index, uint64_t *rev)
{
    model_ent *e = model_find(m, c->key, c->klen);
    *rev = 0;
    if (c->klen > MAX_KEY || c->vlen > MAX_VALUE) return QC_KV_TOOBIG;
    if (c->op == QC_KV_OP_DELETE && !e) return QC_KV_NOTFOUND;
    if (!cas_ok(c->cas, e)) {
        *rev = e ? e->rev : 0;
        return QC_KV_CONFLICT;
    }
    *rev = index;
    if (c->op == QC_KV_OP_DELETE) {
        *e = m->v[--m->n];
        return QC_KV_OK;
    }
    if (!e) {
        e = &m->v[m->n++];
        memcpy(e->key, c->key, c->klen);
        e->klen = c->klen;
    }
    memcpy(e->value, c->value, c->vlen);
    e->vlen = c->vlen;
    e->rev = index;
    return QC_KV_OK;
}

/* A command built from input bytes: op, key (from a small alphabet so keys
 * repeat), value, cas. */
static void build_cmd(fuzz_in *in, qc_buf *b)
{
    uint8_t op = fuzz_u8(in), kl = fuzz_u8(in) % (MAX_KEY + 2), vl = fuzz_u8(in) % (MAX_VALUE + 2);
    uint8_t key[MAX_KEY + 2], value[MAX_VALUE + 2];
    for (size_t i = 0; i < kl; i++) key[i] = (uint8_t)('a' + fuzz_u8(in) % 3);
    memset(value, 'v', vl);
    uint8_t c = fuzz_u8(in);
    int64_t cas = c < 128 ? QC_KV_CAS_NONE : (int64_t)(c - 128);
    if (kl == 0) key[kl++] = 'a';
    if (op & 1)
        FUZZ_CHECK(qc_kv_encode_delete(b, 7, 9, key, kl, cas) == QC_OK);
    else
        FUZZ_CHECK(qc_kv_encode_put(b, 7, 9, key, kl, value, vl, cas) == QC_OK);
}

typedef struct walk {
    const uint8_t *prev;
    size_t prev_len, n;
    model *m;
} walk;

static int list_cb(void *arg, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                   uint64_t revision)
{
    walk *w = arg;
    if (w->prev) {
        size_t k = w->prev_len < klen ? w->prev_len : klen;
        int r = memcmp(w->prev, key, k);
        FUZZ_CHECK(r < 0 || (r == 0 && w->prev_len < klen));
    }
    model_ent *e = model_find(w->m, key, klen);
    FUZZ_CHECK(e && e->vlen == vlen && memcmp(e->value, value, vlen) == 0 && e->rev == revision);
    w->prev = key;
    w->prev_len = klen;
    w->n++;
    return 0;
}

/* The whole store against the model, then through a snapshot. */
static void check_store(qc_kv *kv, model *m)
{
    uint64_t height;
    FUZZ_CHECK(qc_kv_verify(kv, &height) == QC_OK);
    walk w = {.m = m};
    FUZZ_CHECK(qc_kv_list(kv, NULL, 0, list_cb, &w) == 0);
    FUZZ_CHECK(w.n == m->n);
    qc_buf snap = {0}, again = {0};
    FUZZ_CHECK(qc_kv_snapshot(kv, &snap) == QC_OK);
    qc_kv *copy;
    FUZZ_CHECK(qc_kv_new(NULL, &copy) == QC_OK);
    FUZZ_CHECK(qc_kv_restore(copy, snap.data, snap.len) == QC_OK);
    FUZZ_CHECK(qc_kv_snapshot(copy, &again) == QC_OK);
    FUZZ_CHECK(again.len == snap.len && memcmp(again.data, snap.data, snap.len) == 0);
    qc_kv_free(copy);
    qc_buf_free(&snap);
    qc_buf_free(&again);
}

static void one_entry(qc_kv *kv, model *m, uint64_t index, const uint8_t *cmd, size_t len)
{
    qc_kv_cmd c;
    int decoded = qc_kv_decode(cmd, len, &c) == QC_OK;
    if (decoded && c.op == QC_KV_OP_PUT && m->n == MODEL_MAX && !model_find(m, c.key, c.klen))
        return; /* past what the model holds */
    qc_kv_result res;
    FUZZ_CHECK(qc_kv_apply(kv, index, cmd, len, &res) == QC_OK);
    FUZZ_CHECK(qc_kv_applied_index(kv) == index);
    if (!decoded) {
        FUZZ_CHECK(res.status == QC_KV_INVALID && res.op == QC_KV_OP_NONE);
        return;
    }
    uint64_t rev;
    int want = model_apply(m, &c, index, &rev);
    FUZZ_CHECK(res.status == want);
    FUZZ_CHECK(res.revision == (want == QC_KV_TOOBIG ? 0 : rev));
    FUZZ_CHECK(res.klen == c.klen && memcmp(res.key, c.key, c.klen) == 0);
    const uint8_t *v;
    size_t vlen;
    uint64_t r;
    model_ent *e = model_find(m, c.key, c.klen);
    int got = qc_kv_get(kv, c.key, c.klen, &v, &vlen, &r);
    FUZZ_CHECK(e ? got == QC_OK && vlen == e->vlen && memcmp(v, e->value, vlen) == 0 && r == e->rev
                 : got == QC_ENOTFOUND);
}

static void commands(fuzz_in *in)
{
    qc_kv_config cfg = {.max_key = MAX_KEY, .max_value = MAX_VALUE};
    qc_kv *kv;
    FUZZ_CHECK(qc_kv_new(&cfg, &kv) == QC_OK);
    model *m = calloc(1, sizeof *m);
    FUZZ_CHECK(m != NULL);
    uint64_t index = 0;
    while (in->left) {
        uint8_t how = fuzz_u8(in);
        index += 1 + (how >> 5); /* gaps are allowed */
        qc_buf b = {0};
        if (how & 1) {
            build_cmd(in, &b);
        } else {
            size_t got, want = fuzz_u8(in);
            const uint8_t *p = fuzz_bytes(in, want, &got);
            FUZZ_CHECK(qc_buf_append(&b, p, got) == QC_OK);
        }
        if (how & 2) {
            FUZZ_CHECK(qc_kv_apply_noop(kv, index) == QC_OK);
        } else {
            /* exactly the command's bytes, so a read past them is caught */
            uint8_t *cmd = malloc(b.len ? b.len : 1);
            FUZZ_CHECK(cmd != NULL);
            if (b.len) memcpy(cmd, b.data, b.len);
            one_entry(kv, m, index, cmd, b.len);
            free(cmd);
        }
        qc_buf_free(&b);
        FUZZ_CHECK(qc_kv_apply(kv, index, NULL, 0, NULL) == QC_EINVAL); /* not above applied */
    }
    check_store(kv, m);
    free(m);
    qc_kv_free(kv);
}

static void restore(const uint8_t *p, size_t len, int fix_crc)
{
    uint8_t *snap = malloc(len ? len : 1);
    FUZZ_CHECK(snap != NULL);
    if (len) memcpy(snap, p, len);
    if (fix_crc && len >= 4) {
        uint32_t crc = qc_crc32c(0, snap, len - 4);
        snap[len - 4] = (uint8_t)(crc >> 24);
        snap[len - 3] = (uint8_t)(crc >> 16);
        snap[len - 2] = (uint8_t)(crc >> 8);
        snap[len - 1] = (uint8_t)crc;
    }
    qc_kv *kv;
    FUZZ_CHECK(qc_kv_new(NULL, &kv) == QC_OK);
    qc_buf put = {0};
    FUZZ_CHECK(qc_kv_encode_put(&put, 1, 2, "k", 1, "v", 1, QC_KV_CAS_NONE) == QC_OK);
    FUZZ_CHECK(qc_kv_apply(kv, 5, put.data, put.len, NULL) == QC_OK);
    qc_buf_free(&put);
    int rc = qc_kv_restore(kv, snap, len);
    uint64_t height;
    FUZZ_CHECK(qc_kv_verify(kv, &height) == QC_OK);
    if (rc == QC_OK) {
        qc_buf again = {0};
        FUZZ_CHECK(qc_kv_snapshot(kv, &again) == QC_OK);
        FUZZ_CHECK(again.len == len && memcmp(again.data, snap, len) == 0);
        qc_buf_free(&again);
    } else {
        FUZZ_CHECK(rc == QC_ECORRUPT);
        FUZZ_CHECK(qc_kv_applied_index(kv) == 5 && qc_kv_get(kv, "k", 1, NULL, NULL, NULL) == 0);
    }
    qc_kv_free(kv);
    free(snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    fuzz_in in = {data + 1, size - 1};
    if (data[0] & 1)
        restore(data + 1, size - 1, data[0] & 2);
    else
        commands(&in);
    return 0;
}
