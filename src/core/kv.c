/* The key-value state machine: an AVL tree of nodes that hold key and value
 * in one allocation, the command codec and the snapshot codec (big-endian).
 * Pure code: no I/O, no clock, no globals. Every decision depends only on
 * the store and the entry, so that every node decides the same. */
#include "core/kv.h"

#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "core/wire.h" /* qc_crc32c */

/* version, op, request_id, origin, cas, klen */
#define KV_CMD_FIXED (1 + 1 + 8 + 8 + 8 + 4)
#define KV_SNAP_MAGIC "QCKV"
#define KV_SNAP_VERSION 1u
/* magic, version, applied_index, revision, n_keys */
#define KV_SNAP_HEADER (4 + 4 + 8 + 8 + 8)
/* klen, vlen, revision */
#define KV_SNAP_ENTRY (4 + 4 + 8)
#define KV_SNAP_TRAILER 4 /* CRC-32C of everything before it */

typedef struct kv_node {
    struct kv_node *l, *r;
    uint64_t rev; /* mod revision */
    uint32_t klen, vlen;
    int h;          /* AVL height; a leaf is 1 */
    uint8_t data[]; /* key bytes, then value bytes */
} kv_node;

struct qc_kv {
    kv_node *root;
    kv_node *grave; /* the last deleted node: qc_kv_result points into it */
    size_t max_key, max_value;
    uint64_t keys, bytes, applied, revision;
    uint64_t puts, deletes, conflicts, notfound, invalid;
};

/* ---- big-endian helpers ---- */

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int s = 24; s >= 0; s -= 8) *p++ = (uint8_t)(v >> s);
    return p;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int s = 56; s >= 0; s -= 8) *p++ = (uint8_t)(v >> s);
    return p;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) << 32 | get_u32(p + 4); }

/* Two's complement without relying on implementation-defined conversion. */
static int64_t to_i64(uint64_t u)
{
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

/* ---- keys and nodes ---- */

/* Bytewise order; a proper prefix sorts first. */
static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

static kv_node *node_new(const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                         uint64_t rev)
{
    kv_node *n = malloc(sizeof *n + klen + vlen);
    if (!n) return NULL;
    n->l = n->r = NULL;
    n->h = 1;
    n->rev = rev;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    memcpy(n->data, key, klen);
    if (vlen) memcpy(n->data + klen, value, vlen);
    return n;
}

static void tree_free(kv_node *t)
{
    while (t) {
        tree_free(t->l);
        kv_node *r = t->r;
        free(t);
        t = r;
    }
}

/* The link that points to key's node, or NULL's link where it would go. */
static kv_node **find_link(kv_node **link, const uint8_t *key, size_t klen)
{
    while (*link) {
        int c = key_cmp(key, klen, (*link)->data, (*link)->klen);
        if (c == 0) break;
        link = c < 0 ? &(*link)->l : &(*link)->r;
    }
    return link;
}

static const kv_node *find(const kv_node *t, const uint8_t *key, size_t klen)
{
    while (t) {
        int c = key_cmp(key, klen, t->data, t->klen);
        if (c == 0) return t;
        t = c < 0 ? t->l : t->r;
    }
    return NULL;
}

/* ---- AVL balancing ---- */

static int height(const kv_node *n) { return n ? n->h : 0; }

static void fix_height(kv_node *n)
{
    int a = height(n->l), b = height(n->r);
    n->h = 1 + (a > b ? a : b);
}

static kv_node *rotate_right(kv_node *n)
{
    kv_node *l = n->l;
    n->l = l->r;
    l->r = n;
    fix_height(n);
    fix_height(l);
    return l;
}

static kv_node *rotate_left(kv_node *n)
{
    kv_node *r = n->r;
    n->r = r->l;
    r->l = n;
    fix_height(n);
    fix_height(r);
    return r;
}

static kv_node *balance(kv_node *n)
{
    fix_height(n);
    int bf = height(n->l) - height(n->r);
    if (bf > 1) {
        if (height(n->l->l) < height(n->l->r)) n->l = rotate_left(n->l);
        return rotate_right(n);
    }
    if (bf < -1) {
        if (height(n->r->r) < height(n->r->l)) n->r = rotate_right(n->r);
        return rotate_left(n);
    }
    return n;
}

/* Inserts n, whose key the tree does not hold. Cannot fail. */
static kv_node *tree_insert(kv_node *t, kv_node *n)
{
    if (!t) return n;
    if (key_cmp(n->data, n->klen, t->data, t->klen) < 0)
        t->l = tree_insert(t->l, n);
    else
        t->r = tree_insert(t->r, n);
    return balance(t);
}

static kv_node *remove_min(kv_node *t, kv_node **min)
{
    if (!t->l) {
        *min = t;
        return t->r;
    }
    t->l = remove_min(t->l, min);
    return balance(t);
}

/* Unlinks the node holding key (returned through *gone, not freed). */
static kv_node *tree_remove(kv_node *t, const uint8_t *key, size_t klen, kv_node **gone)
{
    if (!t) return NULL;
    int c = key_cmp(key, klen, t->data, t->klen);
    if (c < 0)
        t->l = tree_remove(t->l, key, klen, gone);
    else if (c > 0)
        t->r = tree_remove(t->r, key, klen, gone);
    else {
        *gone = t;
        if (!t->l) return t->r;
        if (!t->r) return t->l;
        kv_node *m = NULL;
        kv_node *rest = remove_min(t->r, &m);
        m->l = t->l;
        m->r = rest;
        return balance(m);
    }
    return *gone ? balance(t) : t;
}

/* ---- lifetime ---- */

int qc_kv_new(const qc_kv_config *cfg, qc_kv **out)
{
    size_t mk = cfg && cfg->max_key ? cfg->max_key : QC_KV_MAX_KEY_DEFAULT;
    size_t mv = cfg && cfg->max_value ? cfg->max_value : QC_KV_MAX_VALUE_DEFAULT;
    if (mk > UINT32_MAX || mv > UINT32_MAX) return QC_EINVAL;
    qc_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return QC_ENOMEM;
    kv->max_key = mk;
    kv->max_value = mv;
    *out = kv;
    return QC_OK;
}

static void bury(qc_kv *kv)
{
    free(kv->grave);
    kv->grave = NULL;
}

void qc_kv_free(qc_kv *kv)
{
    if (!kv) return;
    tree_free(kv->root);
    bury(kv);
    free(kv);
}

/* ---- commands ---- */

static int encode(qc_buf *out, int op, uint64_t request_id, uint64_t origin, const void *key,
                  size_t klen, const void *value, size_t vlen, int64_t cas)
{
    if (klen == 0 || klen > UINT32_MAX || vlen > UINT32_MAX || cas < QC_KV_CAS_NONE)
        return QC_EINVAL;
    size_t need = KV_CMD_FIXED + klen + (op == QC_KV_OP_PUT ? 4 + vlen : 0);
    int rc = qc_buf_reserve(out, need);
    if (rc) return rc;
    uint8_t *p = out->data + out->len;
    *p++ = QC_KV_CMD_VERSION;
    *p++ = (uint8_t)op;
    p = put_u64(p, request_id);
    p = put_u64(p, origin);
    p = put_u64(p, (uint64_t)cas);
    p = put_u32(p, (uint32_t)klen);
    memcpy(p, key, klen);
    p += klen;
    if (op == QC_KV_OP_PUT) {
        p = put_u32(p, (uint32_t)vlen);
        if (vlen) memcpy(p, value, vlen);
    }
    out->len += need;
    return QC_OK;
}

int qc_kv_encode_put(qc_buf *out, uint64_t request_id, uint64_t origin, const void *key,
                     size_t klen, const void *value, size_t vlen, int64_t cas)
{
    if (vlen && !value) return QC_EINVAL;
    return encode(out, QC_KV_OP_PUT, request_id, origin, key, klen, value, vlen, cas);
}

int qc_kv_encode_delete(qc_buf *out, uint64_t request_id, uint64_t origin, const void *key,
                        size_t klen, int64_t cas)
{
    return encode(out, QC_KV_OP_DELETE, request_id, origin, key, klen, NULL, 0, cas);
}

int qc_kv_decode(const uint8_t *cmd, size_t len, qc_kv_cmd *out)
{
    if (!cmd || len < KV_CMD_FIXED) return QC_EINVAL;
    if (cmd[0] != QC_KV_CMD_VERSION) return QC_EINVAL;
    int op = cmd[1];
    if (op != QC_KV_OP_PUT && op != QC_KV_OP_DELETE) return QC_EINVAL;
    int64_t cas = to_i64(get_u64(cmd + 18));
    if (cas < QC_KV_CAS_NONE) return QC_EINVAL;
    size_t klen = get_u32(cmd + 26);
    size_t pos = KV_CMD_FIXED;
    if (klen == 0 || klen > len - pos) return QC_EINVAL;
    out->key = cmd + pos;
    pos += klen;
    out->value = NULL;
    out->vlen = 0;
    if (op == QC_KV_OP_PUT) {
        if (len - pos < 4) return QC_EINVAL;
        size_t vlen = get_u32(cmd + pos);
        pos += 4;
        if (vlen != len - pos) return QC_EINVAL;
        out->value = cmd + pos;
        out->vlen = vlen;
        pos += vlen;
    }
    if (pos != len) return QC_EINVAL;
    out->op = op;
    out->request_id = get_u64(cmd + 2);
    out->origin = get_u64(cmd + 10);
    out->cas = cas;
    out->klen = klen;
    return QC_OK;
}

int qc_kv_check(const qc_kv *kv, size_t klen, size_t vlen)
{
    if (klen == 0) return QC_EINVAL;
    return klen > kv->max_key || vlen > kv->max_value ? QC_ETOOBIG : QC_OK;
}

/* ---- apply ---- */

/* Every outcome that leaves the store as it is still consumes the entry. */
static int consume(qc_kv *kv, qc_kv_result *res, int status, uint64_t *counter)
{
    kv->applied = res->index;
    res->status = status;
    (*counter)++;
    return QC_OK;
}

static int cas_holds(int64_t cas, const kv_node *cur)
{
    return cas == QC_KV_CAS_NONE || (uint64_t)cas == (cur ? cur->rev : 0);
}

/* Puts c's value in the node at *link (same key): in place when it has
 * the same size, else in a new node that takes its place in the tree. An
 * update thus walks the tree once and, mostly, allocates nothing. */
static kv_node *replace(kv_node **link, const qc_kv_cmd *c, uint64_t rev)
{
    kv_node *cur = *link;
    if (cur->vlen == c->vlen) {
        if (c->vlen) memcpy(cur->data + cur->klen, c->value, c->vlen);
        cur->rev = rev;
        return cur;
    }
    kv_node *n = node_new(c->key, c->klen, c->value, c->vlen, rev);
    if (!n) return NULL;
    n->l = cur->l;
    n->r = cur->r;
    n->h = cur->h;
    *link = n;
    free(cur);
    return n;
}

static int apply_put(qc_kv *kv, const qc_kv_cmd *c, qc_kv_result *res)
{
    kv_node **link = find_link(&kv->root, c->key, c->klen);
    const kv_node *cur = *link;
    if (!cas_holds(c->cas, cur)) {
        res->revision = cur ? cur->rev : 0;
        return consume(kv, res, QC_KV_CONFLICT, &kv->conflicts);
    }
    kv_node *n;
    if (cur) {
        uint64_t was = (uint64_t)cur->klen + cur->vlen;
        n = replace(link, c, res->index);
        if (!n) return QC_ENOMEM;
        kv->bytes -= was;
    } else {
        n = node_new(c->key, c->klen, c->value, c->vlen, res->index);
        if (!n) return QC_ENOMEM;
        kv->root = tree_insert(kv->root, n);
        kv->keys++;
    }
    kv->bytes += (uint64_t)n->klen + n->vlen;
    kv->revision = res->index;
    res->revision = res->index;
    res->key = n->data;
    res->value = n->data + n->klen;
    res->vlen = n->vlen;
    return consume(kv, res, QC_KV_OK, &kv->puts);
}

static int apply_delete(qc_kv *kv, const qc_kv_cmd *c, qc_kv_result *res)
{
    const kv_node *cur = find(kv->root, c->key, c->klen);
    if (!cur) return consume(kv, res, QC_KV_NOTFOUND, &kv->notfound);
    if (!cas_holds(c->cas, cur)) {
        res->revision = cur->rev;
        return consume(kv, res, QC_KV_CONFLICT, &kv->conflicts);
    }
    /* the unlinked node is cur: it stays in the grave for res->key */
    kv->root = tree_remove(kv->root, c->key, c->klen, &kv->grave);
    kv->keys--;
    kv->bytes -= (uint64_t)cur->klen + cur->vlen;
    kv->revision = res->index;
    res->revision = res->index;
    res->key = cur->data;
    return consume(kv, res, QC_KV_OK, &kv->deletes);
}

int qc_kv_apply(qc_kv *kv, uint64_t index, const uint8_t *cmd, size_t len, qc_kv_result *res)
{
    qc_kv_result scratch;
    if (!res) res = &scratch;
    if (index <= kv->applied) return QC_EINVAL;
    bury(kv);
    memset(res, 0, sizeof *res);
    res->index = index;
    qc_kv_cmd c;
    if (qc_kv_decode(cmd, len, &c)) return consume(kv, res, QC_KV_INVALID, &kv->invalid);
    res->op = c.op;
    res->request_id = c.request_id;
    res->origin = c.origin;
    res->key = c.key;
    res->klen = c.klen;
    if (c.klen > kv->max_key || c.vlen > kv->max_value)
        return consume(kv, res, QC_KV_TOOBIG, &kv->invalid);
    return c.op == QC_KV_OP_PUT ? apply_put(kv, &c, res) : apply_delete(kv, &c, res);
}

int qc_kv_apply_noop(qc_kv *kv, uint64_t index)
{
    if (index <= kv->applied) return QC_EINVAL;
    bury(kv);
    kv->applied = index;
    return QC_OK;
}

/* ---- reads ---- */

int qc_kv_get(const qc_kv *kv, const void *key, size_t klen, const uint8_t **value, size_t *vlen,
              uint64_t *revision)
{
    const kv_node *n = find(kv->root, key, klen);
    if (!n) return QC_ENOTFOUND;
    if (value) *value = n->data + n->klen;
    if (vlen) *vlen = n->vlen;
    if (revision) *revision = n->rev;
    return QC_OK;
}

/* <0: key sorts before every key with the prefix; 0: it has the prefix;
 * >0: it sorts after them. */
static int prefix_cmp(const kv_node *n, const uint8_t *prefix, size_t plen)
{
    size_t m = n->klen < plen ? n->klen : plen;
    int c = m ? memcmp(n->data, prefix, m) : 0;
    if (c) return c;
    return n->klen < plen ? -1 : 0;
}

/* Keys with a prefix are one contiguous range, so whole subtrees outside
 * it are skipped: O(log n + listed). */
static int list_walk(const kv_node *t, const uint8_t *prefix, size_t plen, qc_kv_list_fn fn,
                     void *arg)
{
    while (t) {
        int c = prefix_cmp(t, prefix, plen);
        if (c < 0) {
            t = t->r;
            continue;
        }
        if (c > 0) {
            t = t->l;
            continue;
        }
        int rc = list_walk(t->l, prefix, plen, fn, arg);
        if (rc) return rc;
        rc = fn(arg, t->data, t->klen, t->data + t->klen, t->vlen, t->rev);
        if (rc) return rc;
        t = t->r;
    }
    return 0;
}

int qc_kv_list(const qc_kv *kv, const void *prefix, size_t plen, qc_kv_list_fn fn, void *arg)
{
    return list_walk(kv->root, plen ? prefix : NULL, plen, fn, arg);
}

void qc_kv_stats_get(const qc_kv *kv, qc_kv_stats *out)
{
    out->keys = kv->keys;
    out->bytes = kv->bytes;
    out->applied_index = kv->applied;
    out->revision = kv->revision;
    out->puts = kv->puts;
    out->deletes = kv->deletes;
    out->conflicts = kv->conflicts;
    out->notfound = kv->notfound;
    out->invalid = kv->invalid;
}

uint64_t qc_kv_applied_index(const qc_kv *kv) { return kv->applied; }

typedef struct kv_walk {
    const kv_node *prev; /* the last node visited in key order */
    uint64_t keys, bytes;
} kv_walk;

/* The real height of t, or -1 when anything below it is wrong. */
static int verify(const kv_node *t, kv_walk *w)
{
    if (!t) return 0;
    int a = verify(t->l, w);
    if (a < 0) return -1;
    if (w->prev && key_cmp(w->prev->data, w->prev->klen, t->data, t->klen) >= 0) return -1;
    w->prev = t;
    w->keys++;
    w->bytes += (uint64_t)t->klen + t->vlen;
    int b = verify(t->r, w);
    if (b < 0 || a - b > 1 || b - a > 1) return -1;
    int h = 1 + (a > b ? a : b);
    return h == t->h ? h : -1;
}

int qc_kv_verify(const qc_kv *kv, uint64_t *height)
{
    kv_walk w = {NULL, 0, 0};
    int h = verify(kv->root, &w);
    if (h < 0 || w.keys != kv->keys || w.bytes != kv->bytes) return QC_ECORRUPT;
    if (height) *height = (uint64_t)h;
    return QC_OK;
}

/* ---- snapshots ---- */

static uint8_t *snap_node(const kv_node *t, uint8_t *p)
{
    while (t) {
        p = snap_node(t->l, p);
        p = put_u32(p, t->klen);
        p = put_u32(p, t->vlen);
        p = put_u64(p, t->rev);
        memcpy(p, t->data, (size_t)t->klen + t->vlen);
        p += (size_t)t->klen + t->vlen;
        t = t->r;
    }
    return p;
}

int qc_kv_snapshot(const qc_kv *kv, qc_buf *out)
{
    uint64_t need64 = KV_SNAP_HEADER + KV_SNAP_TRAILER + kv->keys * KV_SNAP_ENTRY + kv->bytes;
    if (need64 > SIZE_MAX / 2) return QC_ETOOBIG;
    size_t need = (size_t)need64;
    int rc = qc_buf_reserve(out, need);
    if (rc) return rc;
    uint8_t *start = out->data + out->len;
    memcpy(start, KV_SNAP_MAGIC, 4);
    uint8_t *p = put_u32(start + 4, KV_SNAP_VERSION);
    p = put_u64(p, kv->applied);
    p = put_u64(p, kv->revision);
    p = put_u64(p, kv->keys);
    p = snap_node(kv->root, p);
    put_u32(p, qc_crc32c(0, start, (size_t)(p - start)));
    out->len += need;
    return QC_OK;
}

/* A balanced tree over sorted nodes[lo, hi). */
static kv_node *build(kv_node **nodes, size_t lo, size_t hi)
{
    if (lo >= hi) return NULL;
    size_t mid = lo + (hi - lo) / 2;
    kv_node *n = nodes[mid];
    n->l = build(nodes, lo, mid);
    n->r = build(nodes, mid + 1, hi);
    fix_height(n);
    return n;
}

static void free_nodes(kv_node **nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) free(nodes[i]);
    free(nodes);
}

/* Parses one entry at p[*pos..len) into *out; prev is the entry before it,
 * whose key must sort first. 0, QC_ECORRUPT or QC_ENOMEM. */
static int parse_entry(const uint8_t *p, size_t len, size_t *pos, uint64_t revision,
                       const kv_node *prev, kv_node **out)
{
    size_t at = *pos;
    if (len - at < KV_SNAP_ENTRY) return QC_ECORRUPT;
    size_t klen = get_u32(p + at), vlen = get_u32(p + at + 4);
    uint64_t rev = get_u64(p + at + 8);
    at += KV_SNAP_ENTRY;
    if (klen == 0 || rev == 0 || rev > revision) return QC_ECORRUPT;
    if (klen > len - at || vlen > len - at - klen) return QC_ECORRUPT;
    if (prev && key_cmp(prev->data, prev->klen, p + at, klen) >= 0) return QC_ECORRUPT;
    *out = node_new(p + at, klen, p + at + klen, vlen, rev);
    if (!*out) return QC_ENOMEM;
    *pos = at + klen + vlen;
    return QC_OK;
}

/* Parses the n entries of a checked snapshot body into sorted nodes.
 * 0, QC_ECORRUPT or QC_ENOMEM; on failure nothing stays allocated. */
static int parse_entries(const uint8_t *p, size_t len, uint64_t n, uint64_t revision,
                         kv_node ***out, uint64_t *bytes)
{
    kv_node **nodes = n ? malloc((size_t)n * sizeof *nodes) : NULL;
    if (n && !nodes) return QC_ENOMEM;
    size_t pos = 0;
    *bytes = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        int rc = parse_entry(p, len, &pos, revision, i ? nodes[i - 1] : NULL, &nodes[i]);
        if (rc) {
            free_nodes(nodes, i);
            return rc;
        }
        *bytes += (uint64_t)nodes[i]->klen + nodes[i]->vlen;
    }
    if (pos != len) {
        free_nodes(nodes, (size_t)n);
        return QC_ECORRUPT;
    }
    *out = nodes;
    return QC_OK;
}

int qc_kv_restore(qc_kv *kv, const uint8_t *data, size_t len)
{
    if (!data || len < KV_SNAP_HEADER + KV_SNAP_TRAILER) return QC_ECORRUPT;
    size_t body = len - KV_SNAP_TRAILER;
    if (qc_crc32c(0, data, body) != get_u32(data + body)) return QC_ECORRUPT;
    if (memcmp(data, KV_SNAP_MAGIC, 4) || get_u32(data + 4) != KV_SNAP_VERSION) return QC_ECORRUPT;
    uint64_t applied = get_u64(data + 8), revision = get_u64(data + 16);
    uint64_t n = get_u64(data + 24);
    size_t elen = body - KV_SNAP_HEADER;
    /* every entry takes at least KV_SNAP_ENTRY + 1 bytes: bounds the array */
    if (revision > applied || n > elen / (KV_SNAP_ENTRY + 1)) return QC_ECORRUPT;
    kv_node **nodes = NULL;
    uint64_t bytes = 0;
    int rc = parse_entries(data + KV_SNAP_HEADER, elen, n, revision, &nodes, &bytes);
    if (rc) return rc;
    tree_free(kv->root);
    bury(kv);
    kv->root = build(nodes, 0, (size_t)n);
    free(nodes);
    kv->keys = n;
    kv->bytes = bytes;
    kv->applied = applied;
    kv->revision = revision;
    return QC_OK;
}
