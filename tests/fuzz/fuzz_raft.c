/* libFuzzer target: the consensus core under arbitrary peer input. Node 1
 * of {1, 2, 3} takes a stream of operations read from the input: messages
 * from 2, 3 or 4 of any type, with small terms, indexes and entries (so
 * that they meet its log) or, by a flag bit each, raw 64-bit ones; clock
 * ticks, proposals, links going up and down, compaction, and its writes
 * reported durable. After each one its ready is carried out as the agent
 * does. Property: no input trips a qc_assert in src/core/raft.c (an
 * abort, which libFuzzer keeps): bad input gets an error, never a crash.
 * Test-only. */
#include <string.h>

#include "base/common.h"
#include "core/raft.h"
#include "fuzz.h"

#define MAX_ENTRIES 4
#define RAW_DATA 16

/* A small number (0..11, where logs and terms meet) or, with flag bit, any. */
static uint64_t number(fuzz_in *in, uint8_t flags, int bit)
{
    if (!(flags & (1u << bit))) return fuzz_u8(in) % 12;
    uint64_t hi = fuzz_u32(in);
    return hi << 32 | fuzz_u32(in);
}

/* An entry's data: a member list of ids 1..4 (one byte says who is in, one
 * who votes or may not lead) or, with flag bit 5, raw bytes. */
static void entry_data(fuzz_in *in, uint8_t flags, qc_entry *e, uint8_t *buf)
{
    if (flags & (1u << 5)) {
        size_t got;
        const uint8_t *p = fuzz_bytes(in, fuzz_u8(in) % (RAW_DATA + 1), &got);
        memcpy(buf, p, got);
        e->data = buf;
        e->len = (uint32_t)got;
        return;
    }
    uint8_t in_set = fuzz_u8(in), kind = fuzz_u8(in);
    qc_member m[4];
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        if (!(in_set & (1u << i))) continue;
        uint8_t f = (kind & (1u << i)) ? QC_MEMBER_VOTER : 0;
        if (kind & (16u << i)) f |= QC_MEMBER_NO_LEAD;
        m[n++] = (qc_member){.id = (uint64_t)i + 1, .flags = f};
    }
    qc_raft_conf_write(buf, m, n);
    e->data = buf;
    e->len = (uint32_t)qc_raft_conf_size(n);
}

static void step_msg(qc_raft *r, fuzz_in *in, uint64_t now)
{
    qc_entry entries[MAX_ENTRIES];
    uint8_t data[MAX_ENTRIES][RAW_DATA + 64];
    uint8_t flags = fuzz_u8(in);
    qc_msg m = {.to = 1};
    m.type = (uint8_t)(1 + fuzz_u8(in) % QC_MSG_TYPE_MAX);
    m.from = 2 + fuzz_u8(in) % 3;
    m.flags = fuzz_u8(in);
    m.reject = fuzz_u8(in) & 1;
    m.term = number(in, flags, 0);
    m.index = number(in, flags, 1);
    m.log_term = number(in, flags, 2);
    m.commit = number(in, flags, 3);
    m.ctx = now - fuzz_u8(in) % now;
    m.n_entries = fuzz_u8(in) % (MAX_ENTRIES + 1);
    for (uint32_t k = 0; k < m.n_entries; k++) {
        qc_entry *e = &entries[k];
        *e = (qc_entry){.term = number(in, flags, 4), .index = number(in, flags, 1)};
        e->type = fuzz_u8(in) % 3;
        if (e->type == QC_ENTRY_CONFIG || (m.type == QC_MSG_SNAPSHOT && k == 1))
            entry_data(in, flags, e, data[k]);
    }
    m.entries = m.n_entries ? entries : NULL;
    qc_raft_step(r, &m, now);
}

/* What the agent does with a ready; the newest entry handed out waits for
 * an operation to report it durable. */
static void carry_out(qc_raft *r, uint64_t *index, uint64_t *term)
{
    if (!qc_raft_has_ready(r)) return;
    qc_ready rd;
    qc_raft_ready(r, &rd);
    if (rd.n_entries) {
        *index = rd.entries[rd.n_entries - 1].index;
        *term = rd.entries[rd.n_entries - 1].term;
    }
    qc_raft_advance(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t peers[] = {1, 2, 3};
    qc_raft_config cfg = {
        .id = 1, .peers = peers, .n_peers = 3, .heartbeat_ms = 10, .election_ms = 100, .seed = 1};
    qc_raft *r;
    if (qc_raft_new(&cfg, NULL, 0, &r) != QC_OK) return 0;
    fuzz_in in = {data, size};
    uint64_t now = 1, index = 0, term = 0;
    while (in.left) {
        uint8_t op = fuzz_u8(&in);
        switch (op % 8) {
        case 0:
        case 1:
        case 2: step_msg(r, &in, now); break;
        case 3:
            now += fuzz_u8(&in);
            qc_raft_tick(r, now);
            break;
        case 4: qc_raft_propose(r, "x", 1, now, NULL); break;
        case 5: qc_raft_persisted(r, index, term); break;
        case 6: qc_raft_link(r, 2 + op / 8 % 3, op / 32 % 3, now); break;
        default: qc_raft_compact(r, qc_raft_applied(r)); break;
        }
        carry_out(r, &index, &term);
    }
    qc_raft_free(r);
    return 0;
}
