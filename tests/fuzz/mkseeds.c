/* Writes the binary seed corpora of the fuzz targets (wire, members, kv,
 * wal, auth) into tests/fuzz/corpus/<target>/ with the real encoders, so seeds
 * follow the formats when they change: `make fuzz-seeds`, then commit.
 * Each seed starts with the flags byte its target reads (see the target's
 * header comment). Test-only; never linked into the agent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/common.h"
#include "core/kv.h"
#include "core/members.h"
#include "core/raft.h"
#include "core/wire.h"
#include "store/wal.h"

static const char *root = "tests/fuzz/corpus";

static void die(const char *what)
{
    fprintf(stderr, "mkseeds: %s\n", what);
    exit(1);
}

static void ok(int rc, const char *what)
{
    if (rc != QC_OK) die(what);
}

/* Writes flags then the bytes as root/target/name. */
static void seed(const char *target, const char *name, uint8_t flags, const void *p, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputc(flags, f) == EOF || (n && fwrite(p, 1, n, f) != n) || fclose(f)) die(path);
}

static qc_member_rec rec(const char *id, int port, int role, int voting)
{
    return (qc_member_rec){.identifier = (char *)id,
                           .host = "127.0.0.1",
                           .port = port,
                           .role = role,
                           .priority = role == QC_MROLE_VOTER,
                           .voting = voting,
                           .metadata = "{\"zone\":\"a\",\"tags\":[1,2]}"};
}

static void wire_seeds(qc_buf *members_data)
{
    qc_buf b = {0};
    qc_entry e[2] = {
        {.term = 3, .index = 7, .type = QC_ENTRY_DATA, .len = 5, .data = (uint8_t *)"hello"},
        {.term = 3,
         .index = 8,
         .type = QC_ENTRY_CONFIG,
         .len = (uint32_t)members_data->len,
         .data = members_data->data}};
    qc_msg m = {.type = 1,
                .from = 1,
                .to = 2,
                .term = 3,
                .ctx = 99,
                .index = 6,
                .log_term = 2,
                .commit = 5,
                .n_entries = 2,
                .entries = e};
    ok(qc_wire_encode_hello("server_a", "{\"zone\":\"a\"}", &b), "hello");
    for (uint8_t t = 1; t <= QC_MSG_TYPE_MAX; t++) {
        m.type = t;
        m.n_entries = t == 1 ? 0 : 2;
        ok(qc_wire_encode_msg(&m, &b), "msg");
    }
    seed("wire", "hello_and_messages", 0, b.data, b.len);
    b.len = 0;
    /* a message in PART frames */
    qc_buf payload = {0};
    m.type = 3;
    ok(qc_wire_encode_msg_payload(&m, &payload), "payload");
    size_t half = payload.len / 2;
    ok(qc_wire_encode_part(payload.data, half, 0, &b), "part");
    ok(qc_wire_encode_part(payload.data + half, payload.len - half, 1, &b), "part");
    seed("wire", "parts", 1, b.data, b.len);
    b.len = 0;
    /* FORWARD (a KV command), READ_INDEX both ways */
    qc_buf cmd = {0};
    ok(qc_kv_encode_put(&cmd, 1, 2, "key", 3, "value", 5, 0), "put");
    ok(qc_wire_encode_frame(QC_FRAME_FORWARD, cmd.data, cmd.len, &b), "forward");
    cmd.len = 0;
    ok(qc_kv_encode_delete(&cmd, 3, 2, "key", 3, 17), "delete");
    ok(qc_wire_encode_frame(QC_FRAME_FORWARD, cmd.data, cmd.len, &b), "forward");
    uint8_t ri[QC_WIRE_READ_INDEX_LEN];
    qc_wire_pack_read_index(&(qc_read_index){.answer = 0, .id = 42}, ri);
    ok(qc_wire_encode_frame(QC_FRAME_READ_INDEX, ri, sizeof ri, &b), "ri");
    qc_wire_pack_read_index(&(qc_read_index){.answer = 1, .ok = 1, .id = 42, .index = 9}, ri);
    ok(qc_wire_encode_frame(QC_FRAME_READ_INDEX, ri, sizeof ri, &b), "ri");
    seed("wire", "forward_read_index", 1, b.data, b.len);
    b.len = 0;
    /* MEMBER requests, a JOIN request and answers */
    qc_buf p = {0};
    qc_member_request req = {
        .op = QC_MEMBER_OP_JOIN, .id = 5, .rec = rec("server_d", 7004, QC_MROLE_LEARNER, 0)};
    ok(qc_member_request_encode(&req, &p), "member");
    ok(qc_wire_encode_frame(QC_FRAME_MEMBER, p.data, p.len, &b), "member frame");
    p.len = 0;
    req.op = QC_MEMBER_OP_LEAVE;
    req.rec = (qc_member_rec){.identifier = "server_d", .metadata = "{}"};
    ok(qc_member_request_encode(&req, &p), "leave");
    ok(qc_wire_encode_frame(QC_FRAME_MEMBER, p.data, p.len, &b), "member frame");
    p.len = 0;
    qc_member_rec r = rec("server_d", 7004, QC_MROLE_WITNESS, 0);
    ok(qc_member_rec_encode(&r, &p), "rec");
    ok(qc_wire_encode_frame(QC_FRAME_JOIN, p.data, p.len, &b), "join frame");
    p.len = 0;
    qc_members ms = {0};
    ok(qc_members_decode(members_data->data, members_data->len, &ms), "decode");
    qc_join_answer a = {.ok = 1, .leader = "127.0.0.1:7001", .members = ms};
    ok(qc_join_answer_encode(&a, &p), "answer");
    ok(qc_wire_encode_frame(QC_FRAME_JOIN, p.data, p.len, &b), "join frame");
    p.len = 0;
    a = (qc_join_answer){.retry = 1, .error = "no leader yet"};
    ok(qc_join_answer_encode(&a, &p), "answer");
    ok(qc_wire_encode_frame(QC_FRAME_JOIN, p.data, p.len, &b), "join frame");
    seed("wire", "member_and_join", 1, b.data, b.len);
    b.len = 0;
    /* HEALTH: a healthy node with no checks, an unhealthy one with two */
    p.len = 0;
    ok(qc_wire_encode_health(&(qc_wire_health){.seq = 1, .healthy = 1}, &p), "health");
    ok(qc_wire_encode_frame(QC_FRAME_HEALTH, p.data, p.len, &b), "health frame");
    p.len = 0;
    qc_wire_health h = {.seq = 2, .n_checks = 2};
    strcpy(h.checks[0].name, "web");
    h.checks[0].passing = 1;
    strcpy(h.checks[1].name, "db.primary");
    ok(qc_wire_encode_health(&h, &p), "health");
    ok(qc_wire_encode_frame(QC_FRAME_HEALTH, p.data, p.len, &b), "health frame");
    seed("wire", "health", 1, b.data, b.len);
    qc_members_free(&ms);
    qc_buf_free(&p);
    qc_buf_free(&cmd);
    qc_buf_free(&payload);
    qc_buf_free(&b);
}

static void members_seeds(qc_buf *out)
{
    qc_member_rec v[3] = {rec("server_a", 7001, QC_MROLE_VOTER, 1),
                          rec("server_b", 7002, QC_MROLE_WITNESS, 1),
                          rec("server_c", 7003, QC_MROLE_LEARNER, 0)};
    v[1].metadata = NULL;
    qc_members ms = {v, 3};
    ok(qc_members_encode(&ms, out), "members");
    seed("members", "three", 0, out->data, out->len);
    qc_buf one = {0};
    ms.n = 1;
    ok(qc_members_encode(&ms, &one), "members");
    seed("members", "one", 0, one.data, one.len);
    qc_buf_free(&one);
    /* the JSON part alone, for the list mode */
    size_t used = qc_raft_conf_size(3);
    seed("members", "json_only", 1, out->data + used, out->len - used);
    static const char *addrs[] = {"127.0.0.1:7001", "[::1]:65535", "host.example:1", "a:b:1"};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "addr%zu", i);
        seed("members", name, 2, addrs[i], strlen(addrs[i]));
    }
}

static void kv_seeds(void)
{
    /* a command stream in the structured form (how byte odd): op, key
     * length, value length, key bytes, cas */
    static const uint8_t stream[] = {
        1,    0, 3,  10, 0, 1, 2, 0,   /* put "abc"=10 bytes, no cas */
        1,    0, 3,  4,  0, 1, 2, 128, /* put "abc" cas 0 (conflicts) */
        0x21, 1, 3,  0,  0, 1, 2, 0,   /* delete "abc" after a gap */
        3,    0, 1,  0,  0, 0,         /* a no-op */
        1,    0, 17, 65, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* too big */
    };
    seed("kv", "commands", 0, stream, sizeof stream);
    qc_buf cmd = {0};
    ok(qc_kv_encode_put(&cmd, 9, 1, "k", 1, "v", 1, QC_KV_CAS_NONE), "put");
    uint8_t raw[256] = {0, (uint8_t)cmd.len};
    memcpy(raw + 2, cmd.data, cmd.len);
    seed("kv", "raw_put", 0, raw, 2 + cmd.len);
    qc_buf_free(&cmd);
    qc_kv *kv;
    ok(qc_kv_new(NULL, &kv), "kv");
    const char *keys[] = {"a", "b/c", "b/d", "\xff\x00z"};
    for (size_t i = 0; i < 4; i++) {
        qc_buf c = {0};
        ok(qc_kv_encode_put(&c, i, 1, keys[i], strlen(keys[i]) + (i == 3), "value", i, -1), "put");
        ok(qc_kv_apply(kv, 10 + i, c.data, c.len, NULL), "apply");
        qc_buf_free(&c);
    }
    qc_buf snap = {0};
    ok(qc_kv_snapshot(kv, &snap), "snapshot");
    seed("kv", "snapshot", 1, snap.data, snap.len);
    seed("kv", "snapshot_fix_crc", 3, snap.data, snap.len);
    qc_kv_free(kv);
    ok(qc_kv_new(NULL, &kv), "kv");
    snap.len = 0;
    ok(qc_kv_snapshot(kv, &snap), "snapshot");
    seed("kv", "snapshot_empty", 1, snap.data, snap.len);
    qc_kv_free(kv);
    qc_buf_free(&snap);
}

/* Reads a whole file into b (appending). */
static void slurp(const char *path, qc_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) ok(qc_buf_append(b, tmp, n), "read");
    fclose(f);
}

static void put16(qc_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    ok(qc_buf_append(b, x, 2), "append");
}

/* A real data directory, then the target's description of it. */
static void wal_seeds(const qc_buf *members_data)
{
    char dir[] = "/tmp/qcseeds.XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    qc_wal *w;
    qc_wal_recovery r;
    ok(qc_wal_open(dir, &(qc_wal_options){.segment_size = 300}, &w, &r), "wal open");
    qc_wal_recovery_free(&r);
    for (uint64_t i = 1; i <= 12; i++) {
        qc_entry e = {.term = 1 + i / 5,
                      .index = i,
                      .type = QC_ENTRY_DATA,
                      .len = 20,
                      .data = (uint8_t *)"twenty bytes of data"};
        if (i == 1) {
            e.type = QC_ENTRY_CONFIG;
            e.len = (uint32_t)members_data->len;
            e.data = members_data->data;
        }
        ok(qc_wal_append(w, &e, 1), "append");
    }
    ok(qc_wal_sync(w), "sync");
    struct iovec part = {.iov_base = "snapshot state", .iov_len = 14};
    ok(qc_wal_save_snapshot(w, 4, 1, &part, 1), "snapshot");
    uint64_t firsts[16];
    size_t nseg = 0;
    /* the segments are named by their first index; find them */
    for (uint64_t i = 1; i <= 12; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/wal/%016llx.seg", dir, (unsigned long long)i);
        struct stat st;
        if (stat(path, &st) == 0) firsts[nseg++] = i;
    }
    qc_wal_close(w);
    qc_buf in = {0};
    for (size_t k = 0; k < nseg; k++) {
        char path[256];
        snprintf(path, sizeof path, "%s/wal/%016llx.seg", dir, (unsigned long long)firsts[k]);
        qc_buf f = {0};
        slurp(path, &f);
        ok(qc_buf_append(&in, (uint8_t[]){0}, 1), "append");
        put16(&in, (uint16_t)firsts[k]);
        put16(&in, (uint16_t)f.len);
        ok(qc_buf_append(&in, f.data, f.len), "append");
        qc_buf_free(&f);
    }
    seed("wal", "segments", 4, in.data, in.len);
    qc_buf snap = {0};
    char path[256];
    snprintf(path, sizeof path, "%s/snap/%016llx-%016llx.snap", dir, 4ull, 1ull);
    slurp(path, &snap);
    ok(qc_buf_append(&in, (uint8_t[]){1}, 1), "append");
    put16(&in, 4);
    ok(qc_buf_append(&in, (uint8_t[]){1}, 1), "append");
    put16(&in, (uint16_t)snap.len);
    ok(qc_buf_append(&in, snap.data, snap.len), "append");
    seed("wal", "segments_and_snapshot", 7, in.data, in.len);
    /* a torn tail: the last segment cut in the middle of a record */
    if (in.len > 40) seed("wal", "torn", 0, in.data, in.len - 30);
    qc_buf_free(&snap);
    qc_buf_free(&in);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) die("rm");
}

/* ---- auth: the op stream fuzz_auth.c reads (see its header comment) ---- */

enum { OP_HELLO_PEER, OP_HELLO_ANY, OP_RAFT, OP_PARTS, OP_OTHER, OP_JOIN, OP_ANY, OP_RAW };
enum { MUT_FLIP_BODY = 3, MUT_FLIP_HEADER, MUT_REPLAY, MUT_BAD_SEAL, MUT_HOLD };

static void put8(qc_buf *b, uint8_t v) { ok(qc_buf_append(b, &v, 1), "append"); }

static void put32(qc_buf *b, uint32_t v)
{
    put16(b, (uint16_t)(v >> 16));
    put16(b, (uint16_t)v);
}

static void op(qc_buf *b, int kind, int var, int mut)
{
    put8(b, (uint8_t)(kind | var << 3 | mut << 5));
}

/* A length (u16, or u8 when small is set) and the bytes of s. */
static void bytes(qc_buf *b, const char *s, size_t n, int small)
{
    if (small)
        put8(b, (uint8_t)n);
    else
        put16(b, (uint16_t)n);
    ok(qc_buf_append(b, s, n), "append");
}

static void str(qc_buf *b, const char *s) { bytes(b, s, strlen(s), 0); }

static void str8(qc_buf *b, const char *s) { bytes(b, s, strlen(s), 1); }

/* The fields of a raft message (an AppendEntries with one entry). */
static void msg_fields(qc_buf *b)
{
    put8(b, 2); /* type 3 */
    put8(b, 0);
    put8(b, 0);
    for (uint32_t v = 7; v < 12; v++) put32(b, v); /* term, ctx, index, log_term, commit */
    put8(b, 1);
    put16(b, 7);
    put16(b, 12);
    put8(b, 1);
    bytes(b, "put a=1", 7, 1);
}

/* Hello from the peer, a raft message, a FORWARD, a message in two parts. */
static void auth_peer_ops(qc_buf *b)
{
    op(b, OP_HELLO_PEER, 0, 0);
    str(b, "{\"zone\":\"a\"}");
    op(b, OP_RAFT, 0, 0);
    msg_fields(b);
    op(b, OP_OTHER, 0, 0);
    str(b, "forwarded command");
    op(b, OP_OTHER, 1, 0);
    bytes(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x2a", 18, 0);
    op(b, OP_PARTS, 1, 0);
    msg_fields(b);
    put16(b, 20);
}

static void auth_seed(const char *name, uint8_t flags, const qc_buf *b)
{
    seed("auth", name, flags, b->data, b->len);
}

static void auth_tampered(void)
{
    static const struct {
        const char *name;
        int mut;
        uint8_t arg; /* the byte the mutation reads, if any */
    } muts[] = {{"tamper_body", MUT_FLIP_BODY, 9},     {"tamper_header", MUT_FLIP_HEADER, 33},
                {"tamper_replay", MUT_REPLAY, 1},      {"tamper_seq", MUT_BAD_SEAL, 0},
                {"tamper_direction", MUT_BAD_SEAL, 1}, {"tamper_key", MUT_BAD_SEAL, 2},
                {"tamper_crc", MUT_BAD_SEAL, 3},       {"tamper_reorder", MUT_HOLD, 0}};
    for (size_t i = 0; i < sizeof muts / sizeof muts[0]; i++) {
        qc_buf b = {0};
        put8(&b, 0); /* AUTH as it should be */
        op(&b, OP_HELLO_PEER, 0, 0);
        str(&b, "{}");
        op(&b, OP_OTHER, 0, muts[i].mut);
        if (muts[i].mut == MUT_REPLAY) {
            put8(&b, muts[i].arg);
        } else {
            str(&b, "a command");
            if (muts[i].mut == MUT_FLIP_BODY) put16(&b, muts[i].arg);
            if (muts[i].mut != MUT_HOLD && muts[i].mut != MUT_FLIP_BODY) put8(&b, muts[i].arg);
        }
        op(&b, OP_OTHER, 2, 0);
        str(&b, "after it");
        auth_seed(muts[i].name, 1, &b);
        qc_buf_free(&b);
    }
}

/* Modes 3 and 4: the harness is the member the net dials or joins
 * through; how picks the challenge (and the answer) as fuzz_auth.c says. */
static void auth_dialed(void)
{
    static const struct {
        const char *name;
        uint8_t how;
        const char *extra;
    } v[] = {{"dialed", 0, ""},
             {"dialed_flipped", 4, ""},
             {"dialed_other_key", 5, ""},
             {"dialed_direction", 6, ""},
             {"dialed_seq1", 6 | 8, ""},
             {"dialed_extra", 0, "more"},
             {"dialed_garbage", 7, "QC\2\x08garbage"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        qc_buf b = {0};
        put8(&b, v[i].how);
        ok(qc_buf_append(&b, "0123456789abcdef0123456789abcdef", 32), "nonce");
        if ((v[i].how & 7) == 4) put16(&b, 77);
        bytes(&b, v[i].extra, strlen(v[i].extra), 1);
        auth_seed(v[i].name, 16, &b);
        qc_buf_free(&b);
    }
    /* a link that comes up, then carries a message and two frames */
    qc_buf b = {0};
    put8(&b, 0);
    ok(qc_buf_append(&b, "0123456789abcdef0123456789abcdef", 32), "nonce");
    put8(&b, 0);
    put8(&b, 3);
    put8(&b, 1);
    msg_fields(&b);
    put8(&b, 0);
    str8(&b, "forwarded");
    put8(&b, 2);
    bytes(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x2a", 18, 1);
    auth_seed("dialed_sends", 16, &b);
    qc_buf_free(&b);
    static const struct {
        const char *name;
        uint8_t challenge, answer;
    } j[] = {{"joining", 0, 0},
             {"joining_bad_challenge", 5, 0},
             {"joining_answer_flipped", 0, 4},
             {"joining_answer_dialer_dir", 0, 5},
             {"joining_answer_seq1", 0, 6},
             {"joining_answer_v1", 0, 7}};
    for (size_t i = 0; i < sizeof j / sizeof j[0]; i++) {
        b = (qc_buf){0};
        str8(&b, "{\"identifier\":\"server_d\"}");
        put8(&b, j[i].challenge);
        ok(qc_buf_append(&b, "0123456789abcdef0123456789abcdef", 32), "nonce");
        str8(&b, "{\"ok\":true,\"members\":[]}");
        put8(&b, j[i].answer);
        if (j[i].answer == 4) put16(&b, 100);
        auth_seed(j[i].name, 16 | 32, &b);
        qc_buf_free(&b);
    }
}

static void auth_seeds(void)
{
    qc_buf b = {0};
    put8(&b, 0);
    auth_peer_ops(&b);
    auth_seed("session", 1, &b);
    auth_seed("session_chunked", 1 | 3 << 1, &b);
    auth_seed("session_remove_peer", 1 | 32, &b);
    auth_seed("session_replayed", 1 | 64, &b);
    b.len = 0;
    put8(&b, 0);
    op(&b, OP_HELLO_ANY, 0, 0);
    str(&b, "server_d");
    op(&b, OP_JOIN, 0, 0);
    str(&b, "{\"identifier\":\"server_d\"}");
    auth_seed("stranger_join", 1, &b);
    auth_seed("stranger_no_joins", 1 | 128, &b);
    b.len = 0;
    ok(qc_buf_append(&b, "0123456789abcdef0123456789abcdef", 32), "nonce");
    put8(&b, MUT_BAD_SEAL << 5);
    put8(&b, 2); /* AUTH under the cluster key */
    op(&b, OP_JOIN, 0, 0);
    str(&b, "join");
    auth_seed("auth_cluster_key", 1 | 16, &b);
    b.len = 0;
    put8(&b, 0);
    op(&b, OP_JOIN, 0, 0);
    str(&b, "join without hello");
    op(&b, OP_ANY, 0, 0);
    put8(&b, QC_FRAME_CHALLENGE);
    str(&b, "0123456789abcdef0123456789abcdef");
    auth_seed("join_then_challenge", 1, &b);
    b.len = 0;
    put8(&b, 0);
    op(&b, OP_HELLO_PEER, 0, 0);
    str(&b, "{}");
    op(&b, OP_RAW, 0, 0);
    bytes(&b, "QC\3\2\0\0\0\0\0\0\0\0", 12, 1);
    auth_seed("raw_after_auth", 1, &b);
    auth_tampered();
    /* strangers without the key: a node with no secret, a forged AUTH */
    b.len = 0;
    ok(qc_wire_encode_hello("server_b", "{}", &b), "hello");
    auth_seed("no_secret_hello", 0, &b);
    b.len = 0;
    ok(qc_wire_encode_frame(QC_FRAME_AUTH, "0123456789abcdef0123456789abcdef", 32, &b), "auth");
    ok(qc_buf_append(&b, "not the right MAC", 16), "mac");
    b.data[2] = QC_WIRE_VERSION_SEALED;
    memset(b.data + 8, 0, 4);
    auth_seed("forged_auth", 0, &b);
    auth_seed("forged_auth_bytewise", 1 << 1, &b);
    qc_buf_free(&b);
    auth_dialed();
}

int main(int argc, char **argv)
{
    if (argc > 1) root = argv[1];
    qc_buf members_data = {0};
    members_seeds(&members_data);
    wire_seeds(&members_data);
    kv_seeds();
    wal_seeds(&members_data);
    auth_seeds();
    qc_buf_free(&members_data);
    return 0;
}
