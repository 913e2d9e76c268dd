/* libFuzzer target: the cluster wire format as a peer's byte stream. The
 * input is one flags byte and then frames, read the way net.c reads them
 * (header, CRC-32C, payload to the decoder of its type, PART frames joined
 * into one raft message). Flag bit 0 writes the right CRC into each header
 * before the check and bit 1 the right magic and version, so that mutations
 * reach the decoders instead of dying at the checksum.
 * Properties: no decoder reads out of bounds or leaks; whatever decodes
 * re-encodes to the same bytes (raft, hello, READ_INDEX, HEALTH) or to the same
 * values (MEMBER, JOIN). Test-only. */
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "core/kv.h"
#include "core/members.h"
#include "core/wire.h"
#include "fuzz.h"

#define PART_LIMIT (1u << 20) /* the harness's cap; net.c takes QC_WIRE_MAX_MESSAGE */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A raft message payload: decodes, and re-encodes to exactly those bytes. */
static void raft_payload(const uint8_t *p, size_t len)
{
    qc_msg m;
    if (qc_wire_decode_msg(p, (uint32_t)len, &m) != QC_OK) return;
    qc_buf b = {0};
    FUZZ_CHECK(qc_wire_encode_msg_payload(&m, &b) == QC_OK);
    FUZZ_CHECK(b.len == len && memcmp(b.data, p, len) == 0);
    size_t size;
    FUZZ_CHECK(qc_wire_msg_size(&m, &size) == QC_OK && size == len);
    qc_buf_free(&b);
    qc_wire_msg_free(&m);
}

static void hello_payload(const uint8_t *p, size_t len)
{
    qc_hello h;
    if (qc_wire_decode_hello(p, (uint32_t)len, &h) != QC_OK) return;
    FUZZ_CHECK(h.identifier && h.identifier[0] && h.metadata);
    qc_buf b = {0};
    FUZZ_CHECK(qc_wire_encode_hello(h.identifier, h.metadata, &b) == QC_OK);
    FUZZ_CHECK(b.len == QC_WIRE_HEADER + len && memcmp(b.data + QC_WIRE_HEADER, p, len) == 0);
    qc_buf_free(&b);
    qc_wire_hello_free(&h);
}

static void read_index_payload(const uint8_t *p, size_t len)
{
    qc_read_index ri;
    if (qc_wire_unpack_read_index(p, len, &ri) != QC_OK) return;
    uint8_t again[QC_WIRE_READ_INDEX_LEN];
    qc_wire_pack_read_index(&ri, again);
    FUZZ_CHECK(len == sizeof again && memcmp(again, p, len) == 0);
}

/* FORWARD carries a KV command: decodes, and re-encodes to the same bytes. */
static void forward_payload(const uint8_t *p, size_t len)
{
    qc_kv_cmd c;
    if (qc_kv_decode(p, len, &c) != QC_OK) return;
    qc_buf b = {0};
    int rc =
        c.op == QC_KV_OP_PUT
            ? qc_kv_encode_put(&b, c.request_id, c.origin, c.key, c.klen, c.value, c.vlen, c.cas)
            : qc_kv_encode_delete(&b, c.request_id, c.origin, c.key, c.klen, c.cas);
    FUZZ_CHECK(rc == QC_OK && b.len == len && memcmp(b.data, p, len) == 0);
    qc_buf_free(&b);
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_rec(const qc_member_rec *a, const qc_member_rec *b)
{
    return same_str(a->identifier, b->identifier) && same_str(a->host, b->host) &&
           a->port == b->port && a->role == b->role && a->priority == b->priority &&
           same_str(a->metadata, b->metadata) && a->voting == b->voting;
}

static void member_payload(const uint8_t *p, size_t len)
{
    qc_member_request r, again;
    if (qc_member_request_decode(p, len, &r) != QC_OK) return;
    qc_buf b = {0};
    FUZZ_CHECK(qc_member_request_encode(&r, &b) == QC_OK);
    FUZZ_CHECK(qc_member_request_decode(b.data, b.len, &again) == QC_OK);
    FUZZ_CHECK(again.op == r.op && again.id == r.id);
    FUZZ_CHECK(same_str(again.rec.identifier, r.rec.identifier));
    if (r.op != QC_MEMBER_OP_LEAVE) FUZZ_CHECK(same_rec(&again.rec, &r.rec));
    qc_member_request_free(&again);
    qc_member_request_free(&r);
    qc_buf_free(&b);
}

/* A JOIN payload is a joiner's record (request) or a member's answer. */
static void join_payload(const uint8_t *p, size_t len)
{
    qc_member_rec rec, rec2;
    if (qc_member_rec_decode(p, len, &rec) == QC_OK) {
        qc_buf b = {0};
        FUZZ_CHECK(qc_member_rec_validate(&rec) == QC_OK);
        FUZZ_CHECK(qc_member_rec_encode(&rec, &b) == QC_OK);
        FUZZ_CHECK(qc_member_rec_decode(b.data, b.len, &rec2) == QC_OK);
        FUZZ_CHECK(same_rec(&rec, &rec2));
        qc_member_rec_free(&rec2);
        qc_member_rec_free(&rec);
        qc_buf_free(&b);
    }
    qc_join_answer a, a2;
    if (qc_join_answer_decode(p, len, &a) != QC_OK) return;
    qc_buf b = {0};
    FUZZ_CHECK(qc_join_answer_encode(&a, &b) == QC_OK);
    FUZZ_CHECK(qc_join_answer_decode(b.data, b.len, &a2) == QC_OK);
    FUZZ_CHECK(a2.ok == a.ok && a2.retry == a.retry && same_str(a2.error, a.error) &&
               same_str(a2.leader, a.leader) && a2.members.n == a.members.n);
    for (size_t i = 0; i < a.members.n; i++)
        FUZZ_CHECK(same_rec(&a.members.v[i], &a2.members.v[i]));
    qc_join_answer_free(&a2);
    qc_join_answer_free(&a);
    qc_buf_free(&b);
}

/* HEALTH: decodes, and re-encodes to exactly those bytes. */
static void health_payload(const uint8_t *p, size_t len)
{
    qc_wire_health h;
    if (qc_wire_decode_health(p, len, &h) != QC_OK) return;
    FUZZ_CHECK(h.healthy <= 1 && h.n_checks <= QC_WIRE_HEALTH_CHECKS);
    qc_buf b = {0};
    FUZZ_CHECK(qc_wire_encode_health(&h, &b) == QC_OK);
    FUZZ_CHECK(b.len == len && memcmp(b.data, p, len) == 0);
    qc_buf_free(&b);
}

/* PART: 0 to go on, -1 when the stream must be dropped (as net.c does). */
static int part_payload(qc_buf *part, const uint8_t *p, size_t len)
{
    if (len < 1 || p[0] > 1) return -1;
    if (part->len + len - 1 > PART_LIMIT) return -1;
    FUZZ_CHECK(qc_buf_append(part, p + 1, len - 1) == QC_OK);
    if (!p[0]) return 0;
    raft_payload(part->data, part->len);
    part->len = 0;
    return 0;
}

static int frame(qc_buf *part, uint8_t type, const uint8_t *p, size_t len)
{
    switch (type) {
    case QC_FRAME_HELLO: hello_payload(p, len); return 0;
    case QC_FRAME_RAFT: raft_payload(p, len); return 0;
    case QC_FRAME_PART: return part_payload(part, p, len);
    case QC_FRAME_FORWARD: forward_payload(p, len); return 0;
    case QC_FRAME_READ_INDEX: read_index_payload(p, len); return 0;
    case QC_FRAME_MEMBER: member_payload(p, len); return 0;
    case QC_FRAME_JOIN: join_payload(p, len); return 0;
    case QC_FRAME_HEALTH: health_payload(p, len); return 0;
    default: return -1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    /* A private copy: the flags may rewrite headers, and it ends exactly
     * where the input does so ASan sees any read past it. */
    uint8_t *buf = malloc(size - 1 ? size - 1 : 1);
    if (!buf) return 0;
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1, off = 0;
    qc_buf part = {0};
    while (len - off >= QC_WIRE_HEADER) {
        uint8_t *h = buf + off;
        if (flags & 2) {
            h[0] = QC_WIRE_MAGIC0;
            h[1] = QC_WIRE_MAGIC1;
            h[2] = QC_WIRE_VERSION;
        }
        uint8_t type;
        uint32_t plen;
        if (qc_wire_header(h, &type, &plen) != QC_OK) break;
        FUZZ_CHECK((type >= QC_FRAME_HELLO && type <= QC_FRAME_JOIN) || type == QC_FRAME_HEALTH);
        FUZZ_CHECK(plen <= QC_WIRE_MAX_PAYLOAD);
        if (len - off - QC_WIRE_HEADER < plen) break; /* the rest has not arrived */
        if (flags & 1) put_be32(h + 8, qc_crc32c(0, h + QC_WIRE_HEADER, plen));
        if (qc_wire_check(h, h + QC_WIRE_HEADER, plen) != QC_OK) break;
        off += QC_WIRE_HEADER + plen;
        /* The payload alone in a buffer of its own size, so a decoder that
         * reads one byte too far is caught. */
        uint8_t *payload = malloc(plen ? plen : 1);
        if (!payload) break;
        memcpy(payload, h + QC_WIRE_HEADER, plen);
        int rc = frame(&part, type, payload, plen);
        free(payload);
        if (rc) break;
    }
    qc_buf_free(&part);
    free(buf);
    return 0;
}
