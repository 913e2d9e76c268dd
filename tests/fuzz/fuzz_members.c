/* libFuzzer target: the member list as CONFIG entry data (qc_members_decode,
 * with the core's qc_raft_conf_read in front of it), and the list edits a
 * decoded list goes through. The first input byte picks what the rest is:
 * 0 a CONFIG entry's data, 1 a JSON array of records alone (decoded as a
 * JOIN answer's members, so mutations of the JSON need not match a core
 * list to get through), 2 an address for qc_member_split_addr.
 * Properties: a decoded list validates, re-encodes, and decodes again to the
 * same records; edits keep the limits. Test-only. */
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "core/members.h"
#include "core/raft.h"
#include "fuzz.h"

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

static void check_list(const qc_members *ms)
{
    size_t voting = 0;
    FUZZ_CHECK(ms->n <= QC_RAFT_MAX_MEMBERS);
    for (size_t i = 0; i < ms->n; i++) {
        FUZZ_CHECK(qc_member_rec_validate(&ms->v[i]) == QC_OK);
        FUZZ_CHECK(qc_members_find(ms, ms->v[i].identifier) == (int)i);
        FUZZ_CHECK(qc_members_find_id(ms, qc_hash_id(ms->v[i].identifier)) == (int)i);
        voting += ms->v[i].voting != 0;
    }
    FUZZ_CHECK(voting <= QC_RAFT_MAX_VOTERS);
}

static void round_trip(const qc_members *ms)
{
    qc_buf b = {0};
    qc_members again;
    FUZZ_CHECK(qc_members_encode(ms, &b) == QC_OK);
    FUZZ_CHECK(qc_members_decode(b.data, b.len, &again) == QC_OK);
    FUZZ_CHECK(again.n == ms->n);
    for (size_t i = 0; i < ms->n; i++) FUZZ_CHECK(same_rec(&ms->v[i], &again.v[i]));
    qc_members_free(&again);
    qc_buf_free(&b);
}

/* Edits a decoded list: copy, remove the first, put it back at the end. */
static void edit(const qc_members *ms)
{
    qc_members copy;
    FUZZ_CHECK(qc_members_copy(ms, &copy) == QC_OK);
    if (copy.n) {
        qc_member_rec first;
        FUZZ_CHECK(qc_member_rec_copy(&copy.v[0], &first) == QC_OK);
        FUZZ_CHECK(qc_members_remove(&copy, first.identifier) == QC_OK);
        FUZZ_CHECK(qc_members_find(&copy, first.identifier) < 0);
        FUZZ_CHECK(qc_members_put(&copy, &first) == QC_OK);
        FUZZ_CHECK(copy.n == ms->n);
        check_list(&copy);
        round_trip(&copy);
        qc_member_rec_free(&first);
    }
    qc_members_free(&copy);
}

static void config_data(const uint8_t *p, size_t len)
{
    qc_members ms;
    if (qc_members_decode(p, len, &ms) != QC_OK) {
        FUZZ_CHECK(ms.n == 0 && ms.v == NULL);
        return;
    }
    check_list(&ms);
    round_trip(&ms);
    edit(&ms);
    qc_members_free(&ms);
}

/* The JSON part behind a core list made to match it: takes the records
 * that decode one by one (as a JOIN answer's members would). */
static void json_part(const uint8_t *p, size_t len)
{
    char *text = malloc(len + 32);
    if (!text) return;
    int n = snprintf(text, len + 32, "{\"ok\":true,\"members\":");
    memcpy(text + n, p, len);
    memcpy(text + n + len, "}", 1);
    qc_join_answer a;
    int rc = qc_join_answer_decode((const uint8_t *)text, (size_t)n + len + 1, &a);
    free(text);
    if (rc != QC_OK) return;
    check_list(&a.members);
    round_trip(&a.members);
    edit(&a.members);
    qc_join_answer_free(&a);
}

static void split(const uint8_t *p, size_t len)
{
    char *addr = malloc(len + 1), host[64];
    if (!addr) return;
    memcpy(addr, p, len);
    addr[len] = '\0';
    int port = 0;
    if (qc_member_split_addr(addr, host, sizeof host, &port) == QC_OK) {
        FUZZ_CHECK(port >= 1 && port <= 65535);
        FUZZ_CHECK(strlen(host) >= 1 && strlen(host) < sizeof host);
    }
    free(addr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* The rest in a buffer of its own size: reads past it are caught. */
    size_t len = size - 1;
    uint8_t *p = malloc(len ? len : 1);
    if (!p) return 0;
    memcpy(p, data + 1, len);
    switch (data[0] % 3) {
    case 0: config_data(p, len); break;
    case 1: json_part(p, len); break;
    default: split(p, len); break;
    }
    free(p);
    return 0;
}
