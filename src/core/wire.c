/* The cluster wire codec: frame headers with CRC-32C, and the payloads of
 * raft messages and hellos, all big-endian. Pure code: it must never touch a
 * socket or any state (its CRC table is a constant), and must reject malformed input
 * with QC_EINVAL without reading outside the buffer it was given. */
#include "core/wire.h"

#include <stdlib.h>
#include <string.h>

#include "base/common.h"

#define QC_WIRE_ID_MAX 255
#define QC_WIRE_META_MAX (64u * 1024u)
/* type, flags, reject; from, to, term, ctx, index, log_term, commit; n_entries */
#define QC_WIRE_MSG_FIXED (3 + 7 * 8 + 4)
/* term, index, type, len */
#define QC_WIRE_ENTRY_FIXED (8 + 8 + 4 + 4)

/* ---- CRC-32C (Castagnoli), reflected, table driven ---- */

/* crc_table[i]: i run through eight rounds of the reflected polynomial
 * 0x82F63B78 (tests/unit/wire_spec.lua checks it against known CRCs). A
 * constant, not filled in on first use: nodes on several threads of one
 * process call qc_crc32c at once, and a lazily filled table is a data race. */
static const uint32_t crc_table[256] = {
    0x00000000u, 0xF26B8303u, 0xE13B70F7u, 0x1350F3F4u, 0xC79A971Fu, 0x35F1141Cu, 0x26A1E7E8u,
    0xD4CA64EBu, 0x8AD958CFu, 0x78B2DBCCu, 0x6BE22838u, 0x9989AB3Bu, 0x4D43CFD0u, 0xBF284CD3u,
    0xAC78BF27u, 0x5E133C24u, 0x105EC76Fu, 0xE235446Cu, 0xF165B798u, 0x030E349Bu, 0xD7C45070u,
    0x25AFD373u, 0x36FF2087u, 0xC494A384u, 0x9A879FA0u, 0x68EC1CA3u, 0x7BBCEF57u, 0x89D76C54u,
    0x5D1D08BFu, 0xAF768BBCu, 0xBC267848u, 0x4E4DFB4Bu, 0x20BD8EDEu, 0xD2D60DDDu, 0xC186FE29u,
    0x33ED7D2Au, 0xE72719C1u, 0x154C9AC2u, 0x061C6936u, 0xF477EA35u, 0xAA64D611u, 0x580F5512u,
    0x4B5FA6E6u, 0xB93425E5u, 0x6DFE410Eu, 0x9F95C20Du, 0x8CC531F9u, 0x7EAEB2FAu, 0x30E349B1u,
    0xC288CAB2u, 0xD1D83946u, 0x23B3BA45u, 0xF779DEAEu, 0x05125DADu, 0x1642AE59u, 0xE4292D5Au,
    0xBA3A117Eu, 0x4851927Du, 0x5B016189u, 0xA96AE28Au, 0x7DA08661u, 0x8FCB0562u, 0x9C9BF696u,
    0x6EF07595u, 0x417B1DBCu, 0xB3109EBFu, 0xA0406D4Bu, 0x522BEE48u, 0x86E18AA3u, 0x748A09A0u,
    0x67DAFA54u, 0x95B17957u, 0xCBA24573u, 0x39C9C670u, 0x2A993584u, 0xD8F2B687u, 0x0C38D26Cu,
    0xFE53516Fu, 0xED03A29Bu, 0x1F682198u, 0x5125DAD3u, 0xA34E59D0u, 0xB01EAA24u, 0x42752927u,
    0x96BF4DCCu, 0x64D4CECFu, 0x77843D3Bu, 0x85EFBE38u, 0xDBFC821Cu, 0x2997011Fu, 0x3AC7F2EBu,
    0xC8AC71E8u, 0x1C661503u, 0xEE0D9600u, 0xFD5D65F4u, 0x0F36E6F7u, 0x61C69362u, 0x93AD1061u,
    0x80FDE395u, 0x72966096u, 0xA65C047Du, 0x5437877Eu, 0x4767748Au, 0xB50CF789u, 0xEB1FCBADu,
    0x197448AEu, 0x0A24BB5Au, 0xF84F3859u, 0x2C855CB2u, 0xDEEEDFB1u, 0xCDBE2C45u, 0x3FD5AF46u,
    0x7198540Du, 0x83F3D70Eu, 0x90A324FAu, 0x62C8A7F9u, 0xB602C312u, 0x44694011u, 0x5739B3E5u,
    0xA55230E6u, 0xFB410CC2u, 0x092A8FC1u, 0x1A7A7C35u, 0xE811FF36u, 0x3CDB9BDDu, 0xCEB018DEu,
    0xDDE0EB2Au, 0x2F8B6829u, 0x82F63B78u, 0x709DB87Bu, 0x63CD4B8Fu, 0x91A6C88Cu, 0x456CAC67u,
    0xB7072F64u, 0xA457DC90u, 0x563C5F93u, 0x082F63B7u, 0xFA44E0B4u, 0xE9141340u, 0x1B7F9043u,
    0xCFB5F4A8u, 0x3DDE77ABu, 0x2E8E845Fu, 0xDCE5075Cu, 0x92A8FC17u, 0x60C37F14u, 0x73938CE0u,
    0x81F80FE3u, 0x55326B08u, 0xA759E80Bu, 0xB4091BFFu, 0x466298FCu, 0x1871A4D8u, 0xEA1A27DBu,
    0xF94AD42Fu, 0x0B21572Cu, 0xDFEB33C7u, 0x2D80B0C4u, 0x3ED04330u, 0xCCBBC033u, 0xA24BB5A6u,
    0x502036A5u, 0x4370C551u, 0xB11B4652u, 0x65D122B9u, 0x97BAA1BAu, 0x84EA524Eu, 0x7681D14Du,
    0x2892ED69u, 0xDAF96E6Au, 0xC9A99D9Eu, 0x3BC21E9Du, 0xEF087A76u, 0x1D63F975u, 0x0E330A81u,
    0xFC588982u, 0xB21572C9u, 0x407EF1CAu, 0x532E023Eu, 0xA145813Du, 0x758FE5D6u, 0x87E466D5u,
    0x94B49521u, 0x66DF1622u, 0x38CC2A06u, 0xCAA7A905u, 0xD9F75AF1u, 0x2B9CD9F2u, 0xFF56BD19u,
    0x0D3D3E1Au, 0x1E6DCDEEu, 0xEC064EEDu, 0xC38D26C4u, 0x31E6A5C7u, 0x22B65633u, 0xD0DDD530u,
    0x0417B1DBu, 0xF67C32D8u, 0xE52CC12Cu, 0x1747422Fu, 0x49547E0Bu, 0xBB3FFD08u, 0xA86F0EFCu,
    0x5A048DFFu, 0x8ECEE914u, 0x7CA56A17u, 0x6FF599E3u, 0x9D9E1AE0u, 0xD3D3E1ABu, 0x21B862A8u,
    0x32E8915Cu, 0xC083125Fu, 0x144976B4u, 0xE622F5B7u, 0xF5720643u, 0x07198540u, 0x590AB964u,
    0xAB613A67u, 0xB831C993u, 0x4A5A4A90u, 0x9E902E7Bu, 0x6CFBAD78u, 0x7FAB5E8Cu, 0x8DC0DD8Fu,
    0xE330A81Au, 0x115B2B19u, 0x020BD8EDu, 0xF0605BEEu, 0x24AA3F05u, 0xD6C1BC06u, 0xC5914FF2u,
    0x37FACCF1u, 0x69E9F0D5u, 0x9B8273D6u, 0x88D28022u, 0x7AB90321u, 0xAE7367CAu, 0x5C18E4C9u,
    0x4F48173Du, 0xBD23943Eu, 0xF36E6F75u, 0x0105EC76u, 0x12551F82u, 0xE03E9C81u, 0x34F4F86Au,
    0xC69F7B69u, 0xD5CF889Du, 0x27A40B9Eu, 0x79B737BAu, 0x8BDCB4B9u, 0x988C474Du, 0x6AE7C44Eu,
    0xBE2DA0A5u, 0x4C4623A6u, 0x5F16D052u, 0xAD7D5351u,
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QC_CRC32C_HW 1
/* The same CRC with SSE4.2's crc32 instruction (the Castagnoli polynomial,
 * reflected, no inversion), eight bytes at a time: the table walk costs a
 * dependent load per byte, a tenth of a leader's CPU per put (every entry is
 * summed for the WAL and for each follower's frame, and checked again on
 * arrival). */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
                                                            size_t len)
{
    uint64_t c = crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8); /* little-endian: p[0] is summed first, as below */
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    while (len--) crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}
#endif

uint32_t qc_crc32c(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
#ifdef QC_CRC32C_HW
    if (__builtin_cpu_supports("sse4.2")) return ~crc32c_hw(crc, p, len);
#endif
    while (len--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- big-endian writers (into a buffer reserved beforehand) ---- */

static void put_u8(qc_buf *b, uint8_t v) { b->data[b->len++] = v; }

static void put_u32(qc_buf *b, uint32_t v)
{
    for (int s = 24; s >= 0; s -= 8) put_u8(b, (uint8_t)(v >> s));
}

static void put_u64(qc_buf *b, uint64_t v)
{
    for (int s = 56; s >= 0; s -= 8) put_u8(b, (uint8_t)(v >> s));
}

static void put_bytes(qc_buf *b, const void *p, size_t n)
{
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

static uint32_t get_u32_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reserves room for a frame of payload size plen, writes its header with a
 * zero CRC and returns the payload offset in *start. */
static int frame_begin(qc_buf *out, uint8_t type, size_t plen, size_t *start)
{
    if (plen > QC_WIRE_MAX_PAYLOAD) return QC_ETOOBIG;
    int rc = qc_buf_reserve(out, QC_WIRE_HEADER + plen);
    if (rc) return rc;
    put_u8(out, QC_WIRE_MAGIC0);
    put_u8(out, QC_WIRE_MAGIC1);
    put_u8(out, QC_WIRE_VERSION);
    put_u8(out, type);
    put_u32(out, (uint32_t)plen);
    put_u32(out, 0);
    *start = out->len;
    return QC_OK;
}

/* Fills in the CRC of the payload written since start. */
static void frame_end(qc_buf *out, size_t start)
{
    uint32_t crc = qc_crc32c(0, out->data + start, out->len - start);
    uint8_t *h = out->data + start - 4;
    h[0] = (uint8_t)(crc >> 24);
    h[1] = (uint8_t)(crc >> 16);
    h[2] = (uint8_t)(crc >> 8);
    h[3] = (uint8_t)crc;
}

/* ---- encoders ---- */

int qc_wire_msg_size(const qc_msg *m, size_t *size)
{
    if (m->type < 1 || m->type > QC_MSG_TYPE_MAX) return QC_EINVAL;
    if (m->n_entries && !m->entries) return QC_EINVAL;
    size_t n = QC_WIRE_MSG_FIXED;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const qc_entry *e = &m->entries[i];
        if (e->len && !e->data) return QC_EINVAL;
        n += QC_WIRE_ENTRY_FIXED + (size_t)e->len;
        if (n > QC_WIRE_MAX_MESSAGE) return QC_ETOOBIG;
    }
    *size = n;
    return QC_OK;
}

static void put_msg(qc_buf *out, const qc_msg *m)
{
    put_u8(out, m->type);
    put_u8(out, m->flags);
    put_u8(out, m->reject);
    put_u64(out, m->from);
    put_u64(out, m->to);
    put_u64(out, m->term);
    put_u64(out, m->ctx);
    put_u64(out, m->index);
    put_u64(out, m->log_term);
    put_u64(out, m->commit);
    put_u32(out, m->n_entries);
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const qc_entry *e = &m->entries[i];
        put_u64(out, e->term);
        put_u64(out, e->index);
        put_u32(out, e->type);
        put_u32(out, e->len);
        put_bytes(out, e->data, e->len);
    }
}

int qc_wire_encode_msg(const qc_msg *m, qc_buf *out)
{
    size_t plen, start;
    int rc = qc_wire_msg_size(m, &plen);
    if (rc) return rc;
    rc = frame_begin(out, QC_FRAME_RAFT, plen, &start);
    if (rc) return rc;
    put_msg(out, m);
    frame_end(out, start);
    return QC_OK;
}

int qc_wire_encode_msg_payload(const qc_msg *m, qc_buf *out)
{
    size_t plen;
    int rc = qc_wire_msg_size(m, &plen);
    if (rc) return rc;
    rc = qc_buf_reserve(out, plen);
    if (rc) return rc;
    put_msg(out, m);
    return QC_OK;
}

int qc_wire_encode_part(const uint8_t *data, size_t len, int last, qc_buf *out)
{
    size_t start;
    if (len > QC_WIRE_PART_MAX) return QC_ETOOBIG;
    int rc = frame_begin(out, QC_FRAME_PART, 1 + len, &start);
    if (rc) return rc;
    put_u8(out, last ? 1 : 0);
    put_bytes(out, data, len);
    frame_end(out, start);
    return QC_OK;
}

static int check_identifier(const char *id, size_t len)
{
    if (len == 0 || len > QC_WIRE_ID_MAX) return QC_EINVAL;
    return memchr(id, '\0', len) ? QC_EINVAL : QC_OK;
}

int qc_wire_encode_hello(const char *identifier, const char *metadata, qc_buf *out)
{
    if (!identifier) return QC_EINVAL;
    if (!metadata) metadata = "{}";
    size_t il = strlen(identifier), ml = strlen(metadata), start;
    if (check_identifier(identifier, il)) return QC_EINVAL;
    if (ml > QC_WIRE_META_MAX) return QC_ETOOBIG;
    int rc = frame_begin(out, QC_FRAME_HELLO, 8 + il + ml, &start);
    if (rc) return rc;
    put_u32(out, (uint32_t)il);
    put_bytes(out, identifier, il);
    put_u32(out, (uint32_t)ml);
    put_bytes(out, metadata, ml);
    frame_end(out, start);
    return QC_OK;
}

int qc_wire_encode_frame(uint8_t type, const void *payload, size_t len, qc_buf *out)
{
    size_t start;
    if (len > QC_WIRE_MAX_PAYLOAD) return QC_ETOOBIG;
    int rc = frame_begin(out, type, len, &start);
    if (rc) return rc;
    put_bytes(out, payload, len);
    frame_end(out, start);
    return QC_OK;
}

/* ---- header ---- */

int qc_wire_header(const uint8_t *buf, uint8_t *type, uint32_t *payload_len)
{
    if (buf[0] != QC_WIRE_MAGIC0 || buf[1] != QC_WIRE_MAGIC1) return QC_EINVAL;
    if (buf[2] != QC_WIRE_VERSION) return QC_EINVAL;
    if ((buf[3] < QC_FRAME_HELLO || buf[3] > QC_FRAME_JOIN) && buf[3] != QC_FRAME_HEALTH)
        return QC_EINVAL;
    uint32_t len = get_u32_at(buf + 4);
    if (len > QC_WIRE_MAX_PAYLOAD) return QC_ETOOBIG;
    *type = buf[3];
    *payload_len = len;
    return QC_OK;
}

int qc_wire_header_v(const uint8_t *buf, uint8_t *version, uint8_t *type, uint32_t *payload_len)
{
    if (buf[0] != QC_WIRE_MAGIC0 || buf[1] != QC_WIRE_MAGIC1) return QC_EINVAL;
    uint8_t v = buf[2], t = buf[3];
    if (v != QC_WIRE_VERSION && v != QC_WIRE_VERSION_AUTH && v != QC_WIRE_VERSION_SEALED)
        return QC_EINVAL;
    uint8_t max = v == QC_WIRE_VERSION ? QC_FRAME_JOIN : QC_FRAME_AUTH;
    if ((t < QC_FRAME_HELLO || t > max) && t != QC_FRAME_HEALTH) return QC_EINVAL;
    /* version 3 has no CRC (its MAC checks more): the field is 0, so that no
     * byte of a CHALLENGE, which only its key's tag covers, goes unchecked */
    if (v == QC_WIRE_VERSION_SEALED && get_u32_at(buf + 8) != 0) return QC_EINVAL;
    uint32_t len = get_u32_at(buf + 4);
    if (len > QC_WIRE_MAX_PAYLOAD) return QC_ETOOBIG;
    *version = v;
    *type = t;
    *payload_len = len;
    return QC_OK;
}

int qc_wire_check(const uint8_t *header, const uint8_t *payload, uint32_t len)
{
    return qc_crc32c(0, payload, len) == get_u32_at(header + 8) ? QC_OK : QC_ECORRUPT;
}

/* ---- bounds-checked reader ---- */

typedef struct reader {
    const uint8_t *p;
    size_t left;
    int bad; /* sticky: once set every read yields 0 */
} reader;

static const uint8_t *take(reader *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t get_u8(reader *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint32_t get_u32(reader *r)
{
    const uint8_t *p = take(r, 4);
    return p ? get_u32_at(p) : 0;
}

static uint64_t get_u64(reader *r)
{
    const uint8_t *p = take(r, 8);
    return p ? (uint64_t)get_u32_at(p) << 32 | get_u32_at(p + 4) : 0;
}

/* ---- READ_INDEX payload ---- */

void qc_wire_pack_read_index(const qc_read_index *ri, uint8_t out[QC_WIRE_READ_INDEX_LEN])
{
    qc_buf b = {.data = out, .cap = QC_WIRE_READ_INDEX_LEN};
    put_u8(&b, ri->answer);
    put_u8(&b, ri->ok);
    put_u64(&b, ri->id);
    put_u64(&b, ri->index);
}

int qc_wire_unpack_read_index(const uint8_t *payload, size_t len, qc_read_index *out)
{
    reader r = {.p = payload, .left = len};
    out->answer = get_u8(&r);
    out->ok = get_u8(&r);
    out->id = get_u64(&r);
    out->index = get_u64(&r);
    return r.bad || r.left || out->answer > 1 || out->ok > 1 ? QC_EINVAL : QC_OK;
}

/* ---- HEALTH payload ---- */

/* A check's name as the config allows it: 1..QC_WIRE_HEALTH_NAME bytes of
 * [A-Za-z0-9_.-] (so it is safe in JSON, Lua, a terminal and a label). */
static int health_name_ok(const uint8_t *p, size_t n)
{
    if (n < 1 || n > QC_WIRE_HEALTH_NAME) return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && c != '_' && c != '.' && c != '-') return 0;
    }
    return 1;
}

/* 0 when the checks' names are valid and distinct, the flags 0 or 1. */
static int health_valid(const qc_wire_health *h)
{
    if (h->healthy > 1 || h->n_checks > QC_WIRE_HEALTH_CHECKS) return QC_EINVAL;
    for (size_t i = 0; i < h->n_checks; i++) {
        const char *name = h->checks[i].name;
        size_t n = strnlen(name, QC_WIRE_HEALTH_NAME + 1);
        if (!health_name_ok((const uint8_t *)name, n) || h->checks[i].passing > 1) return QC_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (strcmp(h->checks[k].name, name) == 0) return QC_EINVAL;
    }
    return QC_OK;
}

int qc_wire_encode_health(const qc_wire_health *h, qc_buf *out)
{
    if (health_valid(h)) return QC_EINVAL;
    size_t need = 8 + 1 + 1;
    for (size_t i = 0; i < h->n_checks; i++) need += 1 + strlen(h->checks[i].name) + 1;
    int rc = qc_buf_reserve(out, need);
    if (rc) return rc;
    put_u64(out, h->seq);
    put_u8(out, h->healthy);
    put_u8(out, h->n_checks);
    for (size_t i = 0; i < h->n_checks; i++) {
        size_t n = strlen(h->checks[i].name);
        put_u8(out, (uint8_t)n);
        put_bytes(out, h->checks[i].name, n);
        put_u8(out, h->checks[i].passing);
    }
    return QC_OK;
}

int qc_wire_decode_health(const uint8_t *payload, size_t len, qc_wire_health *out)
{
    memset(out, 0, sizeof *out);
    if (!payload && len) return QC_EINVAL;
    reader r = {payload, len, 0};
    out->seq = get_u64(&r);
    out->healthy = get_u8(&r);
    out->n_checks = get_u8(&r);
    if (r.bad || out->n_checks > QC_WIRE_HEALTH_CHECKS) return QC_EINVAL;
    for (size_t i = 0; i < out->n_checks; i++) {
        uint8_t n = get_u8(&r);
        const uint8_t *name = take(&r, n);
        if (!name || !health_name_ok(name, n)) return QC_EINVAL;
        memcpy(out->checks[i].name, name, n);
        out->checks[i].name[n] = '\0';
        out->checks[i].passing = get_u8(&r);
    }
    if (r.bad || r.left || health_valid(out)) {
        memset(out, 0, sizeof *out);
        return QC_EINVAL;
    }
    return QC_OK;
}

/* ---- decoders ---- */

static int decode_entry(reader *r, qc_entry *e)
{
    e->term = get_u64(r);
    e->index = get_u64(r);
    e->type = get_u32(r);
    e->len = get_u32(r);
    if (r->bad || e->len > r->left) return QC_EINVAL;
    if (e->len == 0) return QC_OK;
    e->data = malloc(e->len);
    if (!e->data) return QC_ENOMEM;
    memcpy(e->data, take(r, e->len), e->len);
    return QC_OK;
}

static int decode_entries(reader *r, qc_msg *m)
{
    if (m->n_entries == 0) return QC_OK;
    if (m->n_entries > r->left / QC_WIRE_ENTRY_FIXED) return QC_EINVAL;
    m->entries = calloc(m->n_entries, sizeof *m->entries);
    if (!m->entries) return QC_ENOMEM;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        int rc = decode_entry(r, &m->entries[i]);
        if (rc) return rc;
    }
    return QC_OK;
}

int qc_wire_decode_msg(const uint8_t *payload, uint32_t len, qc_msg *out)
{
    memset(out, 0, sizeof *out);
    if (!payload && len) return QC_EINVAL;
    reader r = {payload, len, 0};
    out->type = get_u8(&r);
    out->flags = get_u8(&r);
    out->reject = get_u8(&r);
    out->from = get_u64(&r);
    out->to = get_u64(&r);
    out->term = get_u64(&r);
    out->ctx = get_u64(&r);
    out->index = get_u64(&r);
    out->log_term = get_u64(&r);
    out->commit = get_u64(&r);
    out->n_entries = get_u32(&r);
    int rc = QC_EINVAL;
    if (r.bad || out->type < 1 || out->type > QC_MSG_TYPE_MAX) goto fail;
    rc = decode_entries(&r, out);
    if (rc) goto fail;
    rc = QC_EINVAL;
    if (r.left != 0) goto fail;
    return QC_OK;
fail:
    qc_wire_msg_free(out);
    return rc;
}

void qc_wire_msg_free(qc_msg *m)
{
    if (m->entries) {
        for (uint32_t i = 0; i < m->n_entries; i++) free(m->entries[i].data);
        free(m->entries);
    }
    m->entries = NULL;
    m->n_entries = 0;
}

/* Reads a length-prefixed string of at most max bytes as a new C string. */
static int get_string(reader *r, size_t max, char **out)
{
    uint32_t n = get_u32(r);
    if (r->bad || n > max || n > r->left) return QC_EINVAL;
    const uint8_t *p = take(r, n);
    if (n && memchr(p, '\0', n)) return QC_EINVAL;
    char *s = malloc((size_t)n + 1);
    if (!s) return QC_ENOMEM;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    *out = s;
    return QC_OK;
}

int qc_wire_decode_hello(const uint8_t *payload, uint32_t len, qc_hello *out)
{
    memset(out, 0, sizeof *out);
    if (!payload && len) return QC_EINVAL;
    reader r = {payload, len, 0};
    int rc = get_string(&r, QC_WIRE_ID_MAX, &out->identifier);
    if (!rc && out->identifier[0] == '\0') rc = QC_EINVAL;
    if (!rc) rc = get_string(&r, QC_WIRE_META_MAX, &out->metadata);
    if (!rc && r.left != 0) rc = QC_EINVAL;
    if (rc) qc_wire_hello_free(out);
    return rc;
}

void qc_wire_hello_free(qc_hello *h)
{
    free(h->identifier);
    free(h->metadata);
    h->identifier = h->metadata = NULL;
}
