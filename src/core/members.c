/* The replicated member list and the MEMBER/JOIN payloads: CONFIG entry data
 * is the core's list (qc_raft_conf_write) followed by a compact JSON array of
 * member records. Pure code over caller-owned buffers: no I/O, no globals.
 * Decoders see bytes from the network and the log: never trust them. */
#include "core/members.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"

/* Record JSON sits at most two levels above its metadata (list, record). */
#define PARSE_MAX_DEPTH (QC_MEMBER_META_DEPTH + 2)
#define PARSE_MAX_BYTES (QC_WIRE_MAX_MESSAGE)

static int gen_rc(yajl_gen_status st)
{
    if (st == yajl_gen_status_ok) return QC_OK;
    return st == yajl_gen_invalid_string ? QC_EINVAL : QC_ENOMEM;
}

/* ---- parsing untrusted JSON -------------------------------------------- */

/* yajl_tree frees recursively and reads C strings, so refuse before parsing
 * what could exhaust the stack (deep nesting) or be silently cut short (a NUL
 * byte, or \u0000 inside a string, which would truncate an identifier). */
static int scan_ok(const uint8_t *p, size_t n)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == 0) return 0;
        if (in_str) {
            if (c == '"') in_str = 0;
            if (c != '\\' || i + 1 >= n) continue;
            i++;
            if (p[i] == 'u' && n - i > 4 && memcmp(p + i + 1, "0000", 4) == 0) return 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > PARSE_MAX_DEPTH) return 0;
        } else if ((c == ']' || c == '}') && --depth < 0) {
            return 0;
        }
    }
    return 1;
}

/* Parses p[0..n) into *out (caller frees with yajl_tree_free). strict:
 * every string must be UTF-8 (qc_json_check_utf8), for what a peer asks
 * (JOIN and MEMBER frames) and metadata we keep. A committed list is read
 * as it was written (an older agent took any bytes): refusing it would
 * part the list from the core's; its metadata is re-emitted, repaired
 * (meta_val, qc_json_str). */
static int parse(const uint8_t *p, size_t n, int strict, yajl_val *out)
{
    *out = NULL;
    if ((!p && n) || n > PARSE_MAX_BYTES || !scan_ok(p, n)) return QC_EINVAL;
    if (strict && qc_json_check_utf8((const char *)p, n, NULL, 0, NULL, 0) != QC_OK)
        return QC_EINVAL;
    return qc_json_tree((const char *)p, n, out);
}

static int depth_ok(yajl_val v, int depth)
{
    if (!v || !(YAJL_IS_OBJECT(v) || YAJL_IS_ARRAY(v))) return 1;
    if (depth > QC_MEMBER_META_DEPTH) return 0;
    int obj = YAJL_IS_OBJECT(v);
    size_t n = obj ? v->u.object.len : v->u.array.len;
    for (size_t i = 0; i < n; i++)
        if (!depth_ok(obj ? v->u.object.values[i] : v->u.array.values[i], depth + 1)) return 0;
    return 1;
}

/* Checks a metadata tree; *compact (optional) gets its compact text. */
static int meta_val(yajl_val v, char **compact)
{
    if (!v || !YAJL_IS_OBJECT(v) || !depth_ok(v, 1)) return QC_EINVAL;
    char *text = NULL;
    int rc = qc_json_val_text(v, &text);
    if (rc == QC_OK && strlen(text) > QC_MEMBER_META_MAX) rc = QC_EINVAL;
    if (rc == QC_OK && compact)
        *compact = text;
    else
        free(text);
    return rc == QC_ETOOBIG ? QC_EINVAL : rc;
}

static int meta_text(const char *text, char **compact)
{
    yajl_val v;
    int rc = parse((const uint8_t *)text, strlen(text), 1, &v);
    if (rc == QC_OK) rc = meta_val(v, compact);
    yajl_tree_free(v);
    return rc;
}

/* ---- records ----------------------------------------------------------- */

uint8_t qc_member_flags(const qc_member_rec *m)
{
    uint8_t f = m->voting ? QC_MEMBER_VOTER : 0;
    if (m->role != QC_MROLE_VOTER || m->priority <= 0) f |= QC_MEMBER_NO_LEAD;
    return f;
}

static int identifier_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n >= 1 && n <= QC_MEMBER_ID_MAX && qc_json_is_text((const uint8_t *)id, n) &&
           qc_hash_id(id) != 0;
}

static int host_ok(const char *host)
{
    size_t n = host ? strlen(host) : 0;
    if (n < 1 || n > QC_MEMBER_HOST_MAX || !qc_json_is_printable((const uint8_t *)host, n))
        return 0;
    return strpbrk(host, " \t") == NULL;
}

int qc_member_rec_validate(const qc_member_rec *m)
{
    if (!identifier_ok(m->identifier) || !host_ok(m->host)) return QC_EINVAL;
    if (m->port < 1 || m->port > 65535) return QC_EINVAL;
    if (m->role < QC_MROLE_VOTER || m->role > QC_MROLE_LEARNER) return QC_EINVAL;
    if (m->priority < 0 || m->priority > QC_MEMBER_PRIORITY_MAX) return QC_EINVAL;
    if (m->role == QC_MROLE_LEARNER && m->voting) return QC_EINVAL;
    return m->metadata ? meta_text(m->metadata, NULL) : QC_OK;
}

void qc_member_rec_free(qc_member_rec *m)
{
    free(m->identifier);
    free(m->host);
    free(m->metadata);
    memset(m, 0, sizeof *m);
}

static char *dup_str(const char *s, int *rc)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d) *rc = QC_ENOMEM;
    return d;
}

int qc_member_rec_copy(const qc_member_rec *src, qc_member_rec *dst)
{
    memset(dst, 0, sizeof *dst);
    int rc = qc_member_rec_validate(src);
    if (rc) return rc;
    *dst = (qc_member_rec){.port = src->port,
                           .role = src->role,
                           .priority = src->priority,
                           .voting = src->voting != 0};
    dst->identifier = dup_str(src->identifier, &rc);
    dst->host = dup_str(src->host, &rc);
    if (rc == QC_OK) {
        if (src->metadata)
            rc = meta_text(src->metadata, &dst->metadata);
        else
            dst->metadata = dup_str("{}", &rc);
    }
    if (rc) qc_member_rec_free(dst);
    return rc;
}

/* Emits a record; full 0: the identifier alone (a leave request). */
static int gen_rec(yajl_gen g, const qc_member_rec *m, int full)
{
    int rc = gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key_str(g, "identifier", m->identifier);
    if (!rc && full) {
        rc = qc_json_key_str(g, "host", m->host);
        if (!rc) rc = qc_json_key_int(g, "port", m->port);
        if (!rc) rc = qc_json_key_str(g, "role", qc_member_role_name(m->role));
        if (!rc) rc = qc_json_key_int(g, "priority", m->priority);
        if (!rc) rc = qc_json_key(g, "metadata");
        if (!rc) rc = qc_json_raw_object(g, m->metadata);
        if (!rc) rc = qc_json_key_bool(g, "voting", m->voting);
    }
    return rc ? rc : gen_rc(yajl_gen_map_close(g));
}

static yajl_gen gen_new(void)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (g && !yajl_gen_config(g, yajl_gen_validate_utf8, 1)) {
        yajl_gen_free(g);
        return NULL;
    }
    return g;
}

/* Appends what g holds to out, then frees g; passes rc through. */
static int gen_finish(yajl_gen g, int rc, qc_buf *out)
{
    const unsigned char *buf;
    size_t len;
    if (rc == QC_OK) rc = gen_rc(yajl_gen_get_buf(g, &buf, &len));
    if (rc == QC_OK) rc = qc_buf_append(out, buf, len);
    yajl_gen_free(g);
    return rc;
}

static int get_int(yajl_val obj, const char *key, long long lo, long long hi, int def, int *out)
{
    yajl_val v = qc_json_get(obj, key);
    if (!v) {
        *out = def;
        return QC_OK;
    }
    if (!YAJL_IS_INTEGER(v) || v->u.number.i < lo || v->u.number.i > hi) return QC_EINVAL;
    *out = (int)v->u.number.i;
    return QC_OK;
}

static int get_bool(yajl_val obj, const char *key, int *out)
{
    yajl_val v = qc_json_get(obj, key);
    *out = 0;
    if (!v) return QC_OK;
    if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) return QC_EINVAL;
    *out = YAJL_IS_TRUE(v);
    return QC_OK;
}

/* A string field: NULL when absent (or null, if null_ok). */
static int get_str(yajl_val obj, const char *key, int null_ok, char **out)
{
    yajl_val v = qc_json_get(obj, key);
    *out = NULL;
    if (!v || (null_ok && YAJL_IS_NULL(v))) return QC_OK;
    if (!YAJL_IS_STRING(v)) return QC_EINVAL;
    *out = strdup(v->u.string);
    return *out ? QC_OK : QC_ENOMEM;
}

/* Fills the record fields other than the identifier from obj. */
static int rec_rest(yajl_val obj, qc_member_rec *m)
{
    int rc = get_str(obj, "host", 0, &m->host);
    if (!rc && !m->host) rc = QC_EINVAL;
    if (!rc)
        rc = qc_json_get(obj, "port") ? get_int(obj, "port", 1, 65535, 0, &m->port) : QC_EINVAL;
    if (!rc) rc = get_int(obj, "priority", 0, QC_MEMBER_PRIORITY_MAX, 1, &m->priority);
    if (!rc) rc = get_bool(obj, "voting", &m->voting);
    yajl_val role = rc ? NULL : qc_json_get(obj, "role");
    if (role) {
        m->role = YAJL_IS_STRING(role) ? qc_member_role_parse(role->u.string) : -1;
        if (m->role < 0) rc = QC_EINVAL;
    }
    yajl_val meta = rc ? NULL : qc_json_get(obj, "metadata");
    if (!rc && meta) rc = meta_val(meta, &m->metadata);
    return rc;
}

/* A record from a tree; full 0: the identifier alone (a leave request). */
static int rec_from_val(yajl_val obj, int full, qc_member_rec *m)
{
    memset(m, 0, sizeof *m);
    if (!obj || !YAJL_IS_OBJECT(obj)) return QC_EINVAL;
    int rc = get_str(obj, "identifier", 0, &m->identifier);
    if (!rc && !identifier_ok(m->identifier)) rc = QC_EINVAL;
    if (!rc && full) rc = rec_rest(obj, m);
    if (!rc && !m->metadata && !(m->metadata = strdup("{}"))) rc = QC_ENOMEM;
    if (!rc && full) rc = qc_member_rec_validate(m);
    if (rc) qc_member_rec_free(m);
    return rc;
}

int qc_member_rec_encode(const qc_member_rec *rec, qc_buf *out)
{
    int rc = qc_member_rec_validate(rec);
    if (rc) return rc;
    yajl_gen g = gen_new();
    if (!g) return QC_ENOMEM;
    size_t start = out->len;
    rc = gen_finish(g, gen_rec(g, rec, 1), out);
    if (rc) out->len = start;
    return rc;
}

int qc_member_rec_decode(const uint8_t *data, size_t len, qc_member_rec *out)
{
    memset(out, 0, sizeof *out);
    yajl_val v;
    int rc = parse(data, len, 1, &v);
    if (rc == QC_OK) rc = rec_from_val(v, 1, out);
    yajl_tree_free(v);
    return rc;
}

/* ---- the list ---------------------------------------------------------- */

void qc_members_free(qc_members *ms)
{
    for (size_t i = 0; i < ms->n; i++) qc_member_rec_free(&ms->v[i]);
    free(ms->v);
    ms->v = NULL;
    ms->n = 0;
}

int qc_members_find(const qc_members *ms, const char *identifier)
{
    for (size_t i = 0; identifier && i < ms->n; i++)
        if (strcmp(ms->v[i].identifier, identifier) == 0) return (int)i;
    return -1;
}

int qc_members_find_id(const qc_members *ms, uint64_t id)
{
    for (size_t i = 0; i < ms->n; i++)
        if (qc_hash_id(ms->v[i].identifier) == id) return (int)i;
    return -1;
}

/* Validates a whole list: each record, no repeated id, the core's limits. */
static int list_check(const qc_members *ms)
{
    if (ms->n > QC_RAFT_MAX_MEMBERS || (ms->n && !ms->v)) return QC_EINVAL;
    size_t voting = 0;
    for (size_t i = 0; i < ms->n; i++) {
        int rc = qc_member_rec_validate(&ms->v[i]);
        if (rc) return rc;
        uint64_t id = qc_hash_id(ms->v[i].identifier);
        for (size_t k = 0; k < i; k++)
            if (qc_hash_id(ms->v[k].identifier) == id) return QC_EINVAL;
        voting += ms->v[i].voting != 0;
    }
    return voting > QC_RAFT_MAX_VOTERS ? QC_EINVAL : QC_OK;
}

int qc_members_encode(const qc_members *ms, qc_buf *out)
{
    int rc = list_check(ms);
    if (rc) return rc;
    qc_member core[QC_RAFT_MAX_MEMBERS];
    for (size_t i = 0; i < ms->n; i++)
        core[i] =
            (qc_member){.id = qc_hash_id(ms->v[i].identifier), .flags = qc_member_flags(&ms->v[i])};
    size_t start = out->len, head = qc_raft_conf_size(ms->n);
    rc = qc_buf_reserve(out, head);
    if (rc) return rc;
    qc_raft_conf_write(out->data + out->len, core, ms->n);
    out->len += head;
    yajl_gen g = gen_new();
    if (!g) rc = QC_ENOMEM;
    if (g) rc = gen_rc(yajl_gen_array_open(g));
    for (size_t i = 0; g && !rc && i < ms->n; i++) rc = gen_rec(g, &ms->v[i], 1);
    if (g && !rc) rc = gen_rc(yajl_gen_array_close(g));
    if (g) rc = gen_finish(g, rc, out);
    if (rc) out->len = start;
    return rc;
}

/* Decodes the JSON array into out, checking it against the core's list. */
static int decode_list(yajl_val arr, const qc_member *core, size_t n, qc_members *out)
{
    if (!YAJL_IS_ARRAY(arr) || arr->u.array.len != n) return QC_EINVAL;
    if (n && !(out->v = calloc(n, sizeof *out->v))) return QC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = rec_from_val(arr->u.array.values[i], 1, &out->v[i]);
        if (rc) return rc;
        out->n = i + 1;
        if (qc_hash_id(out->v[i].identifier) != core[i].id ||
            qc_member_flags(&out->v[i]) != core[i].flags)
            return QC_EINVAL;
    }
    return QC_OK;
}

int qc_members_decode(const uint8_t *data, size_t len, qc_members *out)
{
    memset(out, 0, sizeof *out);
    qc_member core[QC_RAFT_MAX_MEMBERS];
    size_t n, used;
    if (!data || qc_raft_conf_read(data, len, core, &n, &used) != QC_OK) return QC_EINVAL;
    yajl_val arr;
    int rc = parse(data + used, len - used, 0, &arr);
    if (rc == QC_OK) rc = decode_list(arr, core, n, out);
    yajl_tree_free(arr);
    if (rc) qc_members_free(out);
    return rc;
}

int qc_members_copy(const qc_members *src, qc_members *dst)
{
    memset(dst, 0, sizeof *dst);
    if (!src->n) return QC_OK;
    dst->v = calloc(src->n, sizeof *dst->v);
    if (!dst->v) return QC_ENOMEM;
    for (size_t i = 0; i < src->n; i++) {
        int rc = qc_member_rec_copy(&src->v[i], &dst->v[i]);
        if (rc) {
            qc_members_free(dst);
            return rc;
        }
        dst->n = i + 1;
    }
    return QC_OK;
}

int qc_members_put(qc_members *ms, const qc_member_rec *rec)
{
    int rc = qc_member_rec_validate(rec);
    if (rc) return rc;
    int at = qc_members_find(ms, rec->identifier);
    int same_id = qc_members_find_id(ms, qc_hash_id(rec->identifier));
    if (same_id >= 0 && same_id != at) return QC_EINVAL; /* a hash collision */
    if (at < 0 && ms->n >= QC_RAFT_MAX_MEMBERS) return QC_ETOOBIG;
    size_t voting = rec->voting != 0;
    for (size_t i = 0; i < ms->n; i++) voting += (int)i != at && ms->v[i].voting;
    if (voting > QC_RAFT_MAX_VOTERS) return QC_ETOOBIG;
    qc_member_rec copy;
    rc = qc_member_rec_copy(rec, &copy);
    if (rc) return rc;
    if (at >= 0) {
        qc_member_rec_free(&ms->v[at]);
        ms->v[at] = copy;
        return QC_OK;
    }
    qc_member_rec *v = realloc(ms->v, (ms->n + 1) * sizeof *v);
    if (!v) {
        qc_member_rec_free(&copy);
        return QC_ENOMEM;
    }
    ms->v = v;
    ms->v[ms->n++] = copy;
    return QC_OK;
}

int qc_members_remove(qc_members *ms, const char *identifier)
{
    int at = qc_members_find(ms, identifier);
    if (at < 0) return QC_ENOTFOUND;
    qc_member_rec_free(&ms->v[at]);
    memmove(&ms->v[at], &ms->v[at + 1], (ms->n - (size_t)at - 1) * sizeof *ms->v);
    if (--ms->n == 0) {
        free(ms->v);
        ms->v = NULL;
    }
    return QC_OK;
}

/* ---- MEMBER frames ----------------------------------------------------- */

static const char *const op_names[] = {NULL, "join", "leave", "update"};

static int op_parse(const char *name)
{
    for (int op = QC_MEMBER_OP_JOIN; name && op <= QC_MEMBER_OP_UPDATE; op++)
        if (strcmp(name, op_names[op]) == 0) return op;
    return -1;
}

int qc_member_request_encode(const qc_member_request *req, qc_buf *out)
{
    if (req->op < QC_MEMBER_OP_JOIN || req->op > QC_MEMBER_OP_UPDATE) return QC_EINVAL;
    int full = req->op != QC_MEMBER_OP_LEAVE;
    int rc = full                                 ? qc_member_rec_validate(&req->rec)
             : identifier_ok(req->rec.identifier) ? QC_OK
                                                  : QC_EINVAL;
    if (rc) return rc;
    yajl_gen g = gen_new();
    if (!g) return QC_ENOMEM;
    char id[24];
    int idlen = snprintf(id, sizeof id, "%" PRIu64, req->id);
    rc = gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key_str(g, "op", op_names[req->op]);
    if (!rc) rc = qc_json_key(g, "member");
    if (!rc) rc = gen_rec(g, &req->rec, full);
    if (!rc) rc = qc_json_key(g, "id");
    if (!rc) rc = gen_rc(yajl_gen_number(g, id, (size_t)idlen));
    if (!rc) rc = gen_rc(yajl_gen_map_close(g));
    size_t start = out->len;
    rc = gen_finish(g, rc, out);
    if (rc) out->len = start;
    return rc;
}

/* A JSON number that is a whole uint64 (yajl's integers stop at INT64_MAX). */
static int get_u64(yajl_val v, uint64_t *out)
{
    if (!v || !YAJL_IS_NUMBER(v)) return QC_EINVAL;
    const char *s = v->u.number.r;
    size_t n = strlen(s);
    if (n < 1 || n > 20 || strspn(s, "0123456789") != n) return QC_EINVAL;
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno == ERANGE) return QC_EINVAL;
    *out = (uint64_t)x;
    return QC_OK;
}

int qc_member_request_decode(const uint8_t *data, size_t len, qc_member_request *out)
{
    memset(out, 0, sizeof *out);
    yajl_val v;
    int rc = parse(data, len, 1, &v);
    if (rc == QC_OK && !YAJL_IS_OBJECT(v)) rc = QC_EINVAL;
    if (rc == QC_OK) {
        out->op = op_parse(qc_json_get_str(v, "op"));
        if (out->op < 0) rc = QC_EINVAL;
    }
    if (rc == QC_OK) rc = get_u64(qc_json_get(v, "id"), &out->id);
    if (rc == QC_OK)
        rc = rec_from_val(qc_json_get(v, "member"), out->op != QC_MEMBER_OP_LEAVE, &out->rec);
    yajl_tree_free(v);
    if (rc) qc_member_request_free(out);
    return rc;
}

void qc_member_request_free(qc_member_request *req)
{
    qc_member_rec_free(&req->rec);
    memset(req, 0, sizeof *req);
}

/* ---- JOIN answers ------------------------------------------------------ */

int qc_member_split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || colon == addr) return QC_EINVAL;
    const char *digits = colon + 1;
    size_t nd = strlen(digits);
    if (nd < 1 || nd > 5 || strspn(digits, "0123456789") != nd) return QC_EINVAL;
    int p = atoi(digits);
    if (p < 1 || p > 65535) return QC_EINVAL;
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']') return QC_EINVAL;
        h++;
        hl -= 2;
    }
    for (size_t i = 0; i < hl; i++) {
        /* An unbracketed colon would make the split ambiguous (IPv6). */
        if ((h[i] == ':' && addr[0] != '[') || h[i] == '[' || h[i] == ']' || h[i] == ' ' ||
            h[i] == '\t' || (unsigned char)h[i] < 0x20 || h[i] == 0x7f)
            return QC_EINVAL;
    }
    if (hl == 0 || hl >= hostlen) return QC_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = p;
    return QC_OK;
}

static int addr_ok(const char *addr)
{
    char host[QC_MEMBER_HOST_MAX + 1];
    int port;
    return qc_member_split_addr(addr, host, sizeof host, &port) == QC_OK;
}

int qc_join_answer_encode(const qc_join_answer *a, qc_buf *out)
{
    if (a->leader && !addr_ok(a->leader)) return QC_EINVAL;
    /* qc_json_str would repair it; the contract is to refuse. */
    if (a->error && !qc_json_is_text((const uint8_t *)a->error, strlen(a->error))) return QC_EINVAL;
    yajl_gen g = gen_new();
    if (!g) return QC_ENOMEM;
    int rc = gen_rc(yajl_gen_map_open(g));
    if (!rc) rc = qc_json_key_bool(g, "ok", a->ok);
    if (!rc) rc = qc_json_key_str(g, "error", a->error);
    if (!rc) rc = qc_json_key_str(g, "leader", a->leader);
    if (!rc) rc = qc_json_key_bool(g, "retry", a->retry);
    if (!rc && a->members.n) {
        rc = qc_json_key(g, "members");
        if (!rc) rc = gen_rc(yajl_gen_array_open(g));
        for (size_t i = 0; !rc && i < a->members.n; i++) rc = gen_rec(g, &a->members.v[i], 1);
        if (!rc) rc = gen_rc(yajl_gen_array_close(g));
    }
    if (!rc) rc = gen_rc(yajl_gen_map_close(g));
    size_t start = out->len;
    rc = gen_finish(g, rc, out);
    if (rc) out->len = start;
    return rc;
}

int qc_join_answer_decode(const uint8_t *data, size_t len, qc_join_answer *out)
{
    memset(out, 0, sizeof *out);
    yajl_val v;
    int rc = parse(data, len, 0, &v); /* the leader's list, as committed */
    if (rc == QC_OK && !YAJL_IS_OBJECT(v)) rc = QC_EINVAL;
    yajl_val ok = rc ? NULL : qc_json_get(v, "ok");
    if (rc == QC_OK && !YAJL_IS_TRUE(ok) && !YAJL_IS_FALSE(ok)) rc = QC_EINVAL;
    if (rc == QC_OK) {
        out->ok = YAJL_IS_TRUE(ok);
        rc = get_bool(v, "retry", &out->retry);
    }
    if (rc == QC_OK) rc = get_str(v, "error", 1, &out->error);
    if (rc == QC_OK) rc = get_str(v, "leader", 1, &out->leader);
    if (rc == QC_OK && out->leader && !addr_ok(out->leader)) rc = QC_EINVAL;
    yajl_val list = rc ? NULL : qc_json_get(v, "members");
    if (list && !YAJL_IS_ARRAY(list)) rc = QC_EINVAL;
    for (size_t i = 0; rc == QC_OK && list && i < list->u.array.len; i++) {
        qc_member_rec m;
        rc = rec_from_val(list->u.array.values[i], 1, &m);
        if (rc == QC_OK) rc = qc_members_put(&out->members, &m);
        qc_member_rec_free(&m);
    }
    yajl_tree_free(v);
    if (rc) qc_join_answer_free(out);
    return rc;
}

void qc_join_answer_free(qc_join_answer *a)
{
    free(a->error);
    free(a->leader);
    qc_members_free(&a->members);
    memset(a, 0, sizeof *a);
}
