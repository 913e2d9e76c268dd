/* libFuzzer target: the encrypted (version-3) cluster transport. Each
 * input runs a fresh qc_net with a secret against a harness that knows the
 * secret (it seals and checks through src/net/auth.c) and plays the other node,
 * honest or not. First byte, flags; bit 0 and bit 4 pick the mode:
 *  1. (bit 0 clear, bit 4 clear) a stranger without the key dials in: the
 *     harness reads the CHALLENGE of an inbound connection (one end of a
 *     socketpair, qc_net_adopt) and writes the rest of the input as it is.
 *  2. (bit 0 set) a dialer with the key: it answers with an AUTH (its
 *     ephemeral key pair from a fixed seed, or from the input's with bit 4)
 *     and sends frames built from the
 *     input, one op each (op byte: bits 0-2 kind, 3-4 variant, 5-7
 *     mutation): a hello from the peer or from anyone, a raft message whole
 *     or in PART frames, FORWARD / READ_INDEX / MEMBER, JOIN, any type with
 *     any payload, or raw unsealed bytes, each sealed with the session key,
 *     direction and sequence number a dialer uses unless its mutation flips
 *     a bit of its body, tag or header, replays an earlier frame, seals it
 *     with another sequence number, direction or key (another connection's,
 *     the cluster's, the acceptor's), or holds it back behind the next. Bit 5: the agent removes
 *     the peer at its first FORWARD / READ_INDEX / MEMBER; bit 6: a second
 *     connection replays every byte of the first; bit 7: no joins taken.
 *  3. (bit 0 clear, bit 4 set, bit 5 clear) the net dials its peer, a TCP
 *     listener of the harness, which answers with a CHALLENGE as the input
 *     says (right, flipped, another cluster's key, direction or sequence
 *     number, or none) and more bytes; on a link that comes up the net then
 *     sends messages and frames from the input.
 *  4. (bit 0 clear, bits 4 and 5 set) the net joins through the listener,
 *     which challenges it as in 3 and answers its JOIN as the input says
 *     (right, flipped, in another direction, with another sequence number,
 *     or as a version-1 frame).
 * Bits 1-3: the harness's write size (0: whole frames, k: 2^(k-1) bytes).
 * Properties: no memory error or leak; the net's CHALLENGE, AUTH, hello,
 * JOIN and answers verify under the keys, directions and sequence numbers
 * of wire.h; the callbacks see exactly the frames a model of net.c's rules
 * predicts, in order, so none from a frame that does not verify and none
 * after it; bad_frames and auth_failures grow by exactly what the model says
 * (by at most one once a header was tampered with or raw bytes went out); a
 * valid session stays open and keeps working both ways; a link comes up, a
 * join succeeds, only on the right challenge and answer; a connection
 * closes once the other side hangs up. FUZZ_AUTH_TRACE=1 logs what an input
 * did. Test-only. */
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "base/metrics.h"
#include "core/wire.h"
#include "fuzz.h"
#include "net/auth.h"
#include "net/net.h"

#define SECRET "the fuzzed cluster's shared secret"
#define SELF "server_a"
#define PEER "server_b"
#define MAX_OPS 48
#define MAX_WIRE 200 /* frames sent on one connection: MAX_OPS ops of up to 3 */
#define MAX_EVENTS 128
#define MAX_SPINS 64
#define MUST_WITHIN 5.0 /* seconds for what must happen (the loopback under load) */
#define CHALLENGE_LEN (QC_WIRE_HEADER + QC_WIRE_KX + QC_WIRE_TAG) /* one cluster key */
#define AUTH_AD (QC_WIRE_HEADER + QC_WIRE_KX)                     /* AUTH: all of it in clear */
#define AUTH_LEN (AUTH_AD + QC_WIRE_MAC)
#define M_BAD "qcluster_bad_frames_total"
#define M_AUTH "qcluster_auth_failures_total"
#define M_DROP "qcluster_connections_dropped_total"

enum { EV_HELLO = 1, EV_MSG, EV_FRAME, EV_JOIN, EV_PEER_CLOSED };
enum { K_HELLO_PEER, K_HELLO_ANY, K_RAFT, K_PARTS, K_OTHER, K_JOIN, K_ANY, K_RAW };
/* 0-2: none (the common case), then the tampering ones */
enum { MUT_FLIP_BODY = 3, MUT_FLIP_HEADER, MUT_REPLAY, MUT_BAD_SEAL, MUT_HOLD };
enum { S_PRE, S_NONE, S_PEER, S_STRANGER, S_CLOSED };

/* What a callback saw, or what the model says it must see. */
typedef struct event {
    uint8_t kind, type;
    uint32_t len, hash;
} event;

typedef struct events {
    event v[MAX_EVENTS];
    size_t n;
} events;

/* One frame as it went out on the wire. */
typedef struct wframe {
    qc_buf bytes; /* header, payload, MAC */
    qc_buf plain; /* its payload before sealing (none for raw bytes) */
    uint8_t type;
    uint32_t plen;
    uint64_t seq;
    int good;    /* sealed in the dialer's direction under the session key */
    int flipped; /* a bit of its payload or tag flipped */
    int header;  /* a bit of its header flipped */
    int raw;     /* bytes sent unsealed */
} wframe;

typedef struct conn {
    int fd, eof;
    int tcp; /* the harness's end of a TCP connection (modes 3, 4), else a socketpair's */
    size_t chunk;
    uint8_t pk_a[QC_WIRE_KX];                     /* the acceptor's ephemeral key */
    qc_auth_kx kx;                                /* the dialer's */
    uint8_t key[QC_AUTH_KEY], key_a[QC_AUTH_KEY]; /* the dialer's frames', the acceptor's */
    uint64_t seq;                                 /* the next frame's sequence number */
    wframe sent[MAX_WIRE];
    size_t n_sent;
    qc_buf all;  /* every byte sent */
    qc_buf back; /* every byte received after the challenge */
} conn;

/* net.c's rules for an inbound connection with a secret, as far as the
 * harness needs them to predict the callbacks and the counters. */
typedef struct model {
    int state;
    int unknown;          /* a header was tampered with or raw bytes went out */
    int state_at_unknown; /* the state then */
    uint64_t seq_in;      /* the sequence number the next frame must carry */
    int known;            /* PEER is still a peer */
    int joins;            /* joins are taken */
    int remove_on_frame;
    char *stranger; /* the identifier of a stranger's hello */
    qc_buf part;
    events want;
    unsigned bad, auth;
    int answered;  /* a JOIN was answered */
    qc_buf answer; /* the payload of that answer */
} model;

static struct {
    struct ev_loop *loop;
    qc_metrics *metrics;
    qc_net *net;
    int remove_on_frame;
    events got;
} H;

static uint8_t cluster_key[QC_AUTH_KEY];
static uint8_t other_key[QC_AUTH_KEY]; /* another cluster's */
static uint64_t self_id, peer_id;
static int closed_port;             /* bound, never listening: the peer's dials are refused */
static int listener, listener_port; /* the member the net dials (modes 3, 4) */
static size_t hello_len;            /* the net's hello frame, untagged */

/* What qc_net_join reported (mode 4). */
static struct {
    int calls, rc;
    qc_buf answer;
} J;

/* ---------- events ---------- */

static void events_add(events *e, uint8_t kind, uint8_t type, uint32_t hash, size_t len)
{
    FUZZ_CHECK(e->n < MAX_EVENTS);
    e->v[e->n++] = (event){kind, type, (uint32_t)len, hash};
}

static void events_add_bytes(events *e, uint8_t kind, uint8_t type, const void *p, size_t len)
{
    events_add(e, kind, type, qc_crc32c(0, p, len), len);
}

static void events_add_join(events *e, const char *id, const uint8_t *p, size_t len)
{
    uint32_t h = id ? qc_crc32c(0, id, strlen(id) + 1) : 0;
    events_add(e, EV_JOIN, 0, qc_crc32c(h, p, len), len);
}

static int events_prefix(const events *a, const events *b, size_t n)
{
    return a->n >= n && b->n >= n && memcmp(a->v, b->v, n * sizeof a->v[0]) == 0;
}

/* The answer the agent's side gives a join: the same on both sides. */
static void join_answer(const uint8_t *p, size_t len, qc_buf *out)
{
    FUZZ_CHECK(qc_buf_append(out, "welcome:", 8) == QC_OK);
    FUZZ_CHECK(qc_buf_append(out, p, len < 16 ? len : 16) == QC_OK);
}

/* ---------- the agent's side: callbacks ---------- */

static void cb_msg(void *ud, const qc_msg *m)
{
    (void)ud;
    qc_buf b = {0};
    FUZZ_CHECK(qc_wire_encode_msg_payload(m, &b) == QC_OK);
    events_add_bytes(&H.got, EV_MSG, 0, b.data, b.len);
    qc_buf_free(&b);
}

static void cb_hello(void *ud, uint64_t peer, const char *metadata)
{
    (void)ud;
    FUZZ_CHECK(peer == peer_id && metadata);
    events_add_bytes(&H.got, EV_HELLO, 0, metadata, strlen(metadata));
}

static void cb_link(void *ud, uint64_t peer, int up)
{
    (void)ud;
    (void)up;
    FUZZ_CHECK(peer == peer_id);
}

static void cb_peer_closed(void *ud, uint64_t peer)
{
    (void)ud;
    FUZZ_CHECK(peer == peer_id);
    events_add(&H.got, EV_PEER_CLOSED, 0, 0, 0);
}

static void cb_frame(void *ud, uint64_t peer, int type, const uint8_t *data, size_t len)
{
    (void)ud;
    FUZZ_CHECK(peer == peer_id);
    events_add_bytes(&H.got, EV_FRAME, (uint8_t)type, data, len);
    if (H.remove_on_frame) FUZZ_CHECK(qc_net_remove_peer(H.net, peer) == QC_OK);
}

static void cb_join(void *ud, const char *identifier, const char *host_seen, const uint8_t *payload,
                    size_t len, qc_buf *answer)
{
    (void)ud;
    FUZZ_CHECK(host_seen != NULL);
    events_add_join(&H.got, identifier, payload, len);
    join_answer(payload, len, answer);
}

/* ---------- the model ---------- */

static void model_close(model *M, unsigned bad, unsigned auth)
{
    M->bad += bad;
    M->auth += auth;
    M->state = S_CLOSED;
}

static void model_raft(model *M, const uint8_t *p, size_t len)
{
    qc_msg m;
    if (M->state != S_PEER || qc_wire_decode_msg(p, (uint32_t)len, &m) != QC_OK) {
        model_close(M, 1, 0);
        return;
    }
    int right = m.from == peer_id && m.to == self_id;
    qc_wire_msg_free(&m);
    if (!right) {
        model_close(M, 1, 0);
        return;
    }
    events_add_bytes(&M->want, EV_MSG, 0, p, len);
}

static void model_part(model *M, const uint8_t *p, size_t len)
{
    if (M->state != S_PEER || len < 1 || p[0] > 1) {
        model_close(M, 1, 0);
        return;
    }
    FUZZ_CHECK(qc_buf_append(&M->part, p + 1, len - 1) == QC_OK);
    if (!p[0]) return;
    qc_buf whole = M->part;
    M->part = (qc_buf){0};
    model_raft(M, whole.data, whole.len);
    qc_buf_free(&whole);
}

static void model_hello(model *M, const uint8_t *p, size_t len)
{
    qc_hello h;
    if (M->state == S_PEER || qc_wire_decode_hello(p, (uint32_t)len, &h) != QC_OK) {
        model_close(M, 1, 0);
        return;
    }
    if (M->known && strcmp(h.identifier, PEER) == 0) {
        M->state = S_PEER;
        events_add_bytes(&M->want, EV_HELLO, 0, h.metadata, strlen(h.metadata));
    } else if (M->joins) {
        M->state = S_STRANGER;
        M->stranger = h.identifier;
        h.identifier = NULL;
    } else {
        model_close(M, 1, 0);
    }
    qc_wire_hello_free(&h);
}

static void model_join(model *M, const uint8_t *p, size_t len)
{
    if (M->state == S_PEER || !M->joins) {
        model_close(M, 1, 0);
        return;
    }
    events_add_join(&M->want, M->stranger, p, len);
    join_answer(p, len, &M->answer);
    M->answered = 1;
    model_close(M, 0, 0); /* once the answer is out */
}

static void model_other(model *M, uint8_t type, const uint8_t *p, size_t len)
{
    if (M->state != S_PEER) {
        model_close(M, 1, 0);
        return;
    }
    events_add_bytes(&M->want, EV_FRAME, type, p, len);
    if (!M->remove_on_frame) return;
    M->known = 0;
    model_close(M, 0, 0);
}

/* A frame whose tag verified, to the rule of its type. */
static void model_dispatch(model *M, uint8_t type, const uint8_t *p, size_t len)
{
    if (M->state == S_STRANGER && type != QC_FRAME_JOIN) {
        model_close(M, 1, 0);
        return;
    }
    switch (type) {
    case QC_FRAME_HELLO: model_hello(M, p, len); return;
    case QC_FRAME_RAFT: model_raft(M, p, len); return;
    case QC_FRAME_PART: model_part(M, p, len); return;
    case QC_FRAME_JOIN: model_join(M, p, len); return;
    default: model_other(M, type, p, len); return;
    }
}

/* A frame sent: header, admission, tag, checksum, then its type's rule. */
static void model_frame(model *M, const wframe *f, const uint8_t pk_d[QC_WIRE_KX])
{
    if (M->state == S_CLOSED || M->unknown) return;
    if (f->header || f->raw) {
        M->unknown = 1;
        M->state_at_unknown = M->state;
        return;
    }
    if (f->type < QC_FRAME_HELLO || f->type > QC_FRAME_HEALTH) {
        model_close(M, 1, 0);
        return;
    }
    int pre = M->state == S_PRE;
    int handshake = f->type == QC_FRAME_AUTH || f->type == QC_FRAME_CHALLENGE;
    if (pre ? f->type != QC_FRAME_AUTH || f->plen != QC_WIRE_KX : handshake) {
        model_close(M, 1, 1);
        return;
    }
    const uint8_t *p = f->plain.data;
    int ok = f->good && !f->flipped && f->seq == M->seq_in;
    if (pre) ok = ok && memcmp(p, pk_d, QC_WIRE_KX) == 0;
    if (!ok) {
        model_close(M, 1, 1);
        return;
    }
    M->seq_in++;
    if (pre)
        M->state = S_NONE;
    else
        model_dispatch(M, f->type, p, f->plen);
}

static void model_free(model *M)
{
    free(M->stranger);
    qc_buf_free(&M->part);
    qc_buf_free(&M->answer);
}

/* ---------- the dialer's side ---------- */

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Runs the loop until done(arg) holds, for at most max seconds, waking at
 * least every millisecond: over TCP the other side's kernel may take a
 * moment under load. Returns done(arg). */
static int wait_until(int (*done)(void *), void *arg, double max)
{
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.001, 0.001);
    ev_timer_start(H.loop, &tick);
    ev_tstamp end = ev_time() + max;
    int ok;
    while (!(ok = done(arg)) && ev_time() < end) ev_run(H.loop, EVRUN_ONCE);
    ev_timer_stop(H.loop, &tick);
    return ok;
}

/* Lets the net read what is written, until it has taken all of it (or
 * closed the connection). */
static void pump(const conn *c)
{
    if (c->tcp) { /* unacknowledged is not unread there: what must happen is waited for */
        ev_run(H.loop, EVRUN_NOWAIT);
        ev_run(H.loop, EVRUN_NOWAIT);
        return;
    }
    for (int i = 0; i < MAX_SPINS; i++) {
        ev_run(H.loop, EVRUN_NOWAIT);
        int queued = 0;
        if (ioctl(c->fd, SIOCOUTQ, &queued) != 0 || queued == 0) return;
    }
}

/* Writes n bytes, c->chunk at a time (0: at once), running the loop between
 * writes; stops when the net has closed the connection. */
static void put(conn *c, const uint8_t *p, size_t n)
{
    FUZZ_CHECK(qc_buf_append(&c->all, p, n) == QC_OK);
    int stuck = 0;
    while (n) {
        size_t k = c->chunk && c->chunk < n ? c->chunk : n;
        ssize_t w = send(c->fd, p, k, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            FUZZ_CHECK(stuck++ < 10 * MAX_SPINS); /* the net stopped reading */
            ev_run(H.loop, EVRUN_NOWAIT);
            continue;
        }
        if (w < 0) break; /* EPIPE, ECONNRESET: closed */
        p += w;
        n -= (size_t)w;
        if (n) ev_run(H.loop, EVRUN_NOWAIT);
    }
    pump(c);
}

/* Reads what the net sent (after the challenge); notes the end of stream. */
static void take_back(conn *c)
{
    uint8_t buf[4096];
    while (!c->eof) {
        ssize_t k = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (k <= 0) {
            c->eof = 1; /* end of stream, or reset */
            return;
        }
        FUZZ_CHECK(qc_buf_append(&c->back, buf, (size_t)k) == QC_OK);
    }
}

/* 1 when the net has closed its end (before this side hung up). */
static int closed_by_net(const conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* FUZZ_AUTH_TRACE=1: a checksum of what the net sent (its ephemeral key
 * in it), to see that runs of an input repeat. */
static void trace_bytes(const char *what, const uint8_t *p, size_t n)
{
    if (getenv("FUZZ_AUTH_TRACE"))
        fprintf(stderr, "auth: %s from the net, %zu bytes, crc32c %08x\n", what, n,
                (unsigned)qc_crc32c(0, p, n));
}

/* Checks the frame at h (avail bytes): version 3, of type want, sealed
 * under key for (dir, seq) with ad bytes in clear; opens it in place.
 * Returns its length, MAC included. */
static size_t sealed(uint8_t *h, size_t avail, uint8_t want, const uint8_t *key, uint8_t dir,
                     uint64_t seq, size_t ad)
{
    uint8_t version, type;
    uint32_t plen;
    FUZZ_CHECK(avail >= QC_WIRE_HEADER);
    FUZZ_CHECK(qc_wire_header_v(h, &version, &type, &plen) == QC_OK);
    FUZZ_CHECK(version == QC_WIRE_VERSION_SEALED && type == want);
    size_t len = QC_WIRE_HEADER + plen;
    FUZZ_CHECK(avail >= len + QC_WIRE_MAC);
    FUZZ_CHECK(qc_auth_open(key, dir, seq, ad, h, len, h + len) == QC_OK);
    return len + QC_WIRE_MAC;
}

typedef struct reading {
    int fd;
    qc_buf *b;
    size_t want;
} reading;

static int read_some(void *arg)
{
    reading *r = arg;
    ssize_t k = recv(r->fd, r->b->data + r->b->len, r->want - r->b->len, MSG_DONTWAIT);
    if (k > 0) r->b->len += (size_t)k;
    return r->b->len == r->want;
}

/* Reads exactly n bytes from fd into b (appending), running the loop while
 * they have not come; they must come. */
static void recv_exact(int fd, qc_buf *b, size_t n)
{
    FUZZ_CHECK(qc_buf_reserve(b, n) == QC_OK);
    reading r = {fd, b, b->len + n};
    FUZZ_CHECK(wait_until(read_some, &r, MUST_WITHIN));
}

/* The CHALLENGE opens every inbound connection, an ephemeral key tagged
 * under the cluster key, and it comes at once. */
static void read_challenge(conn *c)
{
    qc_buf b = {0};
    uint8_t version, type;
    uint32_t plen;
    recv_exact(c->fd, &b, CHALLENGE_LEN);
    trace_bytes("CHALLENGE", b.data, b.len);
    FUZZ_CHECK(qc_wire_header_v(b.data, &version, &type, &plen) == QC_OK);
    FUZZ_CHECK(version == QC_WIRE_VERSION_SEALED && type == QC_FRAME_CHALLENGE);
    FUZZ_CHECK(plen == QC_WIRE_KX + QC_WIRE_TAG);
    const uint8_t *pk = b.data + QC_WIRE_HEADER;
    FUZZ_CHECK(qc_auth_check_tag(cluster_key, QC_AUTH_DIR_CHALLENGE, 0, pk, QC_WIRE_KX,
                                 pk + QC_WIRE_KX) == QC_OK);
    memcpy(c->pk_a, pk, QC_WIRE_KX);
    qc_buf_free(&b);
}

static void conn_open(conn *c, size_t chunk)
{
    memset(c, 0, sizeof *c);
    c->chunk = chunk;
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    FUZZ_CHECK(qc_net_adopt(H.net, sv[0]) == QC_OK);
    c->fd = sv[1];
    read_challenge(c);
}

/* Hangs up and waits for the net to close its end, as it must. */
static void conn_hang_up(conn *c)
{
    FUZZ_CHECK(shutdown(c->fd, SHUT_WR) == 0);
    for (int i = 0; i < 4 * MAX_SPINS && !c->eof; i++) {
        ev_run(H.loop, EVRUN_NOWAIT);
        take_back(c);
    }
    FUZZ_CHECK(c->eof);
}

static void conn_free(conn *c)
{
    for (size_t i = 0; i < c->n_sent; i++) {
        qc_buf_free(&c->sent[i].bytes);
        qc_buf_free(&c->sent[i].plain);
    }
    qc_buf_free(&c->all);
    qc_buf_free(&c->back);
    qc_auth_wipe(c->key, sizeof c->key);
    qc_auth_wipe(c->key_a, sizeof c->key_a);
    qc_auth_wipe(&c->kx, sizeof c->kx);
    if (c->fd >= 0) close(c->fd);
}

static void send_frame(conn *c, model *M, wframe *f)
{
    FUZZ_CHECK(c->n_sent < MAX_WIRE);
    c->sent[c->n_sent++] = *f;
    put(c, f->bytes.data, f->bytes.len);
    model_frame(M, f, c->kx.pk);
}

static void flip(qc_buf *b, size_t from, size_t to, uint16_t bit)
{
    size_t at = bit % ((to - from) * 8);
    b->data[from + at / 8] ^= (uint8_t)(1u << at % 8);
}

/* Seals the version-1 frame in f->bytes as a dialer would, or as the
 * mutation says. */
static void seal(conn *c, wframe *f, int mut, fuzz_in *in)
{
    const uint8_t *key = c->key;
    uint8_t dir = QC_AUTH_DIR_DIALER;
    uint64_t seq = c->seq++;
    f->good = 1;
    if (mut == MUT_BAD_SEAL) {
        switch (fuzz_u8(in) % 4) {
        case 0: seq = c->seq; break; /* one ahead: a frame lost */
        case 1: dir = QC_AUTH_DIR_ACCEPTOR, f->good = 0; break;
        case 2: key = cluster_key, f->good = 0; break;
        default: key = c->key_a, f->good = 0; break; /* the other direction's key */
        }
    }
    f->seq = seq;
    /* AUTH's public key travels in clear, covered by the MAC */
    size_t ad = f->type == QC_FRAME_AUTH && f->plen == QC_WIRE_KX ? AUTH_AD : QC_WIRE_HEADER;
    FUZZ_CHECK(qc_buf_append(&f->plain, f->bytes.data + QC_WIRE_HEADER, f->plen) == QC_OK);
    FUZZ_CHECK(qc_auth_seal(&f->bytes, 0, ad, key, dir, seq) == QC_OK);
    if (mut == MUT_FLIP_BODY) {
        flip(&f->bytes, QC_WIRE_HEADER, f->bytes.len, fuzz_u16(in));
        f->flipped = 1;
    } else if (mut == MUT_FLIP_HEADER) {
        flip(&f->bytes, 0, QC_WIRE_HEADER, fuzz_u8(in));
        f->header = 1;
    }
}

/* ---------- frames from the input ---------- */

static const uint8_t *take(fuzz_in *in, size_t max, size_t *n)
{
    size_t want = max > 255 ? fuzz_u16(in) % (max + 1) : fuzz_u8(in) % (max + 1);
    return fuzz_bytes(in, want, n);
}

/* Up to max bytes of the input as a C string (up to its first NUL). */
static void text(fuzz_in *in, char *out, size_t max)
{
    size_t n;
    const uint8_t *p = take(in, max - 1, &n);
    memcpy(out, p, n);
    out[n] = '\0';
}

static void hello_any(fuzz_in *in, qc_buf *b)
{
    char id[300];
    text(in, id, sizeof id);
    if (qc_wire_encode_hello(id, "{}", b) == QC_OK) return;
    static const uint8_t empty[8]; /* an empty identifier: refused */
    FUZZ_CHECK(qc_wire_encode_frame(QC_FRAME_HELLO, empty, sizeof empty, b) == QC_OK);
}

/* A raft message from the input (entries pointing into it); wrong: from
 * another sender, or to another node. */
static void msg_of(fuzz_in *in, int wrong, qc_msg *m, qc_entry e[3])
{
    memset(m, 0, sizeof *m);
    m->type = 1 + fuzz_u8(in) % QC_MSG_TYPE_MAX;
    m->flags = fuzz_u8(in);
    m->reject = fuzz_u8(in);
    m->from = wrong == 1 ? self_id : peer_id;
    m->to = wrong == 2 ? peer_id : self_id;
    m->term = fuzz_u32(in);
    m->ctx = fuzz_u32(in);
    m->index = fuzz_u32(in);
    m->log_term = fuzz_u32(in);
    m->commit = fuzz_u32(in);
    m->n_entries = fuzz_u8(in) % 4;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        size_t n;
        e[i] = (qc_entry){.term = fuzz_u16(in), .index = fuzz_u16(in), .type = fuzz_u8(in) % 3};
        e[i].data = (uint8_t *)take(in, 255, &n);
        e[i].len = (uint32_t)n;
    }
    m->entries = m->n_entries ? e : NULL;
}

static void note_header(wframe *f)
{
    const uint8_t *h = f->bytes.data;
    f->type = h[3];
    f->plen = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
}

/* A raft message split into 1 to 3 PART frames. Returns how many. */
static size_t parts(fuzz_in *in, int n, wframe f[3])
{
    qc_msg m;
    qc_entry e[3];
    msg_of(in, 0, &m, e);
    qc_buf payload = {0};
    FUZZ_CHECK(qc_wire_encode_msg_payload(&m, &payload) == QC_OK);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t k = payload.len - off;
        if (i < n - 1) k = fuzz_u16(in) % (k + 1);
        FUZZ_CHECK(qc_wire_encode_part(payload.data + off, k, i == n - 1, &f[i].bytes) == QC_OK);
        off += k;
    }
    qc_buf_free(&payload);
    return (size_t)n;
}

/* The frames of one op, version 1 and unsealed (raw bytes: as they go).
 * Returns how many (0 to 3). */
static size_t build(int kind, int var, fuzz_in *in, wframe f[3])
{
    static const uint8_t others[] = {QC_FRAME_FORWARD, QC_FRAME_READ_INDEX, QC_FRAME_MEMBER};
    qc_buf *b = &f[0].bytes;
    char meta[300];
    qc_msg m;
    qc_entry e[3];
    size_t n;
    const uint8_t *p;
    switch (kind) {
    case K_HELLO_PEER:
        text(in, meta, sizeof meta);
        FUZZ_CHECK(qc_wire_encode_hello(PEER, meta, b) == QC_OK);
        return 1;
    case K_HELLO_ANY: hello_any(in, b); return 1;
    case K_RAFT:
        msg_of(in, var % 3, &m, e);
        FUZZ_CHECK(qc_wire_encode_msg(&m, b) == QC_OK);
        return 1;
    case K_PARTS: return parts(in, 1 + var % 3, f);
    case K_OTHER:
    case K_JOIN:
    case K_ANY: {
        uint8_t type = kind == K_OTHER ? others[var % 3] : QC_FRAME_JOIN;
        if (kind == K_ANY) type = fuzz_u8(in);
        p = take(in, 4096, &n);
        FUZZ_CHECK(qc_wire_encode_frame(type, p, n, b) == QC_OK);
        return 1;
    }
    default:
        p = take(in, 255, &n);
        if (!n) return 0;
        FUZZ_CHECK(qc_buf_append(b, p, n) == QC_OK);
        f[0].raw = 1;
        return 1;
    }
}

/* A frame held back (MUT_HOLD) goes out after the next one. */
typedef struct held {
    wframe f;
    int have;
} held;

static void emit(conn *c, model *M, wframe *f, int mut, held *hd)
{
    if (mut == MUT_HOLD && !hd->have) {
        hd->f = *f;
        hd->have = 1;
        return;
    }
    send_frame(c, M, f);
    if (!hd->have) return;
    hd->have = 0;
    send_frame(c, M, &hd->f);
}

/* Sends frame i again, as it went out the first time. */
static void replay(conn *c, model *M, size_t i, held *hd)
{
    wframe f = c->sent[i];
    f.bytes = f.plain = (qc_buf){0};
    FUZZ_CHECK(qc_buf_append(&f.bytes, c->sent[i].bytes.data, c->sent[i].bytes.len) == QC_OK);
    FUZZ_CHECK(qc_buf_append(&f.plain, c->sent[i].plain.data, c->sent[i].plain.len) == QC_OK);
    emit(c, M, &f, 0, hd);
}

static void session_op(conn *c, model *M, fuzz_in *in, held *hd)
{
    uint8_t op = fuzz_u8(in);
    int kind = op & 7, var = (op >> 3) & 3, mut = op >> 5;
    if (mut == MUT_REPLAY && c->n_sent) {
        replay(c, M, fuzz_u8(in) % c->n_sent, hd);
        return;
    }
    wframe f[3];
    memset(f, 0, sizeof f);
    size_t n = build(kind, var, in, f);
    for (size_t i = 0; i < n; i++) {
        int m = i == n - 1 ? mut : 0;
        if (!f[i].raw) {
            note_header(&f[i]);
            seal(c, &f[i], m, in);
        }
        emit(c, M, &f[i], m, hd);
    }
}

/* A dialer with the key: AUTH (maybe mutated), then the input's ops. */
/* An ephemeral key pair from a seed of the input (n bytes, the rest fill):
 * the same input makes the same keys. */
static void kx_of(fuzz_in *in, int from_input, uint8_t fill, qc_auth_kx *kx)
{
    uint8_t seed[crypto_kx_SEEDBYTES];
    memset(seed, fill, sizeof seed);
    if (from_input) {
        size_t n;
        const uint8_t *p = fuzz_bytes(in, sizeof seed, &n);
        memcpy(seed, p, n);
    }
    FUZZ_CHECK(crypto_kx_seed_keypair(kx->pk, kx->sk, seed) == 0);
}

static void session(conn *c, model *M, fuzz_in *in, int own_key)
{
    uint8_t shared[QC_AUTH_SHARED];
    kx_of(in, own_key, 0x5a, &c->kx);
    FUZZ_CHECK(qc_auth_kx_shared(1, &c->kx, c->pk_a, shared) == QC_OK);
    qc_auth_session_keys(cluster_key, shared, c->key, c->key_a);
    held hd = {0};
    wframe a = {0};
    FUZZ_CHECK(qc_wire_encode_frame(QC_FRAME_AUTH, c->kx.pk, QC_WIRE_KX, &a.bytes) == 0);
    note_header(&a);
    int mut = fuzz_u8(in) >> 5;
    if (mut == MUT_REPLAY) mut = 0; /* nothing to replay yet */
    seal(c, &a, mut, in);
    emit(c, M, &a, mut, &hd);
    for (int i = 0; i < MAX_OPS && in->left; i++) session_op(c, M, in, &hd);
    if (hd.have) send_frame(c, M, &hd.f);
}

/* ---------- checks ---------- */

static unsigned counter(const char *name)
{
    return (unsigned)qc_metrics_get(H.metrics, name, NULL, NULL);
}

/* What came back after the challenge: nothing, or the one JOIN answer. */
static void check_back(const conn *c, const model *M)
{
    if (!M->answered) {
        FUZZ_CHECK(c->back.len == 0);
        return;
    }
    uint8_t *h = c->back.data;
    size_t len =
        sealed(h, c->back.len, QC_FRAME_JOIN, c->key_a, QC_AUTH_DIR_ACCEPTOR, 0, QC_WIRE_HEADER);
    FUZZ_CHECK(c->back.len == len);
    FUZZ_CHECK(len == QC_WIRE_HEADER + M->answer.len + QC_WIRE_MAC);
    FUZZ_CHECK(memcmp(h + QC_WIRE_HEADER, M->answer.data, M->answer.len) == 0);
}

/* FUZZ_AUTH_TRACE=1: what one connection came to, to see what an input does. */
static void trace(const conn *c, const model *M, unsigned bad, unsigned auth)
{
    static const char *states[] = {"pre-auth", "authed", "peer", "stranger", "closed"};
    if (!getenv("FUZZ_AUTH_TRACE")) return;
    fprintf(stderr, "auth: %zu frames sent, model %s%s; events %zu (model %zu):", c->n_sent,
            states[M->state], M->unknown ? " (unknown after tampering)" : "", H.got.n, M->want.n);
    for (size_t i = 0; i < H.got.n; i++) fprintf(stderr, " %d", H.got.v[i].kind);
    fprintf(stderr, "; bad %u (model %u), auth %u (model %u); %zu bytes back\n", bad, M->bad, auth,
            M->auth, c->back.len);
}

/* The callbacks and counters against the model, once the dialer hung up. */
static void check(const conn *c, const model *M)
{
    unsigned bad = counter(M_BAD), auth = counter(M_AUTH);
    trace(c, M, bad, auth);
    size_t n = M->want.n;
    FUZZ_CHECK(events_prefix(&H.got, &M->want, n));
    if (!M->unknown) {
        FUZZ_CHECK(H.got.n == n && bad == M->bad && auth == M->auth);
    } else {
        /* it may have waited for the rest of a frame until the end of
         * stream (so it saw its peer go), or closed at a bad one */
        int extra = H.got.n == n + 1 && H.got.v[n].kind == EV_PEER_CLOSED;
        FUZZ_CHECK(H.got.n == n || (extra && M->state_at_unknown == S_PEER && bad == M->bad));
        FUZZ_CHECK(bad >= M->bad && bad - M->bad <= 1);
        FUZZ_CHECK(auth >= M->auth && auth - M->auth <= bad - M->bad);
    }
    check_back(c, M);
}

static void finish(conn *c, model *M)
{
    if (!M->unknown) FUZZ_CHECK(closed_by_net(c) == (M->state == S_CLOSED));
    if (!M->unknown && M->state == S_PEER) events_add(&M->want, EV_PEER_CLOSED, 0, 0, 0);
    take_back(c);
    conn_hang_up(c);
    check(c, M);
}

/* Every byte of the first connection on a second one: its AUTH was bound to
 * the first challenge's ephemeral key, so nothing gets through. */
static void replay_connection(const conn *first, size_t chunk)
{
    unsigned bad0 = counter(M_BAD), auth0 = counter(M_AUTH);
    size_t events0 = H.got.n;
    conn c;
    conn_open(&c, chunk);
    put(&c, first->all.data, first->all.len);
    take_back(&c);
    conn_hang_up(&c);
    unsigned bad = counter(M_BAD) - bad0, auth = counter(M_AUTH) - auth0;
    FUZZ_CHECK(H.got.n == events0 && c.back.len == 0);
    FUZZ_CHECK(bad <= 1 && auth <= bad);
    const wframe *f = first->n_sent ? &first->sent[0] : NULL;
    if (f && f->type == QC_FRAME_AUTH && f->good && !f->flipped && !f->header && f->seq == 0)
        FUZZ_CHECK(auth == 1);
    conn_free(&c);
}

/* The handshake deadline (hello_timeout_ms) of a net whose handshake must
 * end at it, a dial to the harness that challenges it with too few bytes:
 * short, since nothing else can end it. Any other net's is far beyond
 * MUST_WITHIN, so that no outcome the harness waits for, nor any
 * callback it checks, depends on how busy the machine is. */
#define DEADLINE_MS 20
#define NO_DEADLINE_MS ((int)(4 * MUST_WITHIN * 1000))

/* A fresh net with the secret, its peer PEER at 127.0.0.1:peer_port. */
static void net_start(uint8_t flags, int peer_port, int hello_timeout_ms)
{
    memset(&H, 0, sizeof H);
    memset(&J, 0, sizeof J);
    H.remove_on_frame = (flags >> 5) & 1;
    H.loop = ev_loop_new(EVFLAG_AUTO);
    H.metrics = qc_metrics_new();
    FUZZ_CHECK(H.loop && H.metrics);
    qc_net_callbacks cb = {.on_msg = cb_msg,
                           .on_hello = cb_hello,
                           .on_link = cb_link,
                           .on_peer_closed = cb_peer_closed,
                           .on_frame = cb_frame,
                           .on_join = flags & 128 ? NULL : cb_join};
    qc_net_config cfg = {.identifier = SELF,
                         .metadata = "{}",
                         .listen_host = "127.0.0.1",
                         .listen_port = 0,
                         .secret = SECRET,
                         .hello_timeout_ms = hello_timeout_ms};
    FUZZ_CHECK(qc_net_new(H.loop, &cfg, &cb, H.metrics, &H.net) == QC_OK);
    FUZZ_CHECK(qc_net_add_peer(H.net, PEER, "127.0.0.1", peer_port) == QC_OK);
}

/* ---------- the net as the dialer (modes 3 and 4) ---------- */

/* Takes the connection the net dialled to the harness's listener. Closing
 * it resets it (SO_LINGER 0), so that no TIME_WAIT piles up run after run. */
static int accept_one(void *arg)
{
    int *fd = arg;
    *fd = accept(listener, NULL, NULL);
    FUZZ_CHECK(*fd >= 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    return *fd >= 0;
}

static int accept_dialer(void)
{
    int fd;
    FUZZ_CHECK(wait_until(accept_one, &fd, MUST_WITHIN)); /* the net dials at once */
    struct linger l = {1, 0};
    int one = 1; /* small writes go out at once, not after a delayed ACK */
    FUZZ_CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0);
    FUZZ_CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    return fd;
}

static int link_up(void *arg)
{
    (void)arg;
    return qc_net_link_up(H.net, peer_id);
}

static int link_down(void *arg) { return !link_up(arg); }

static int refused(void *arg)
{
    (void)arg;
    return counter(M_BAD) > 0;
}

/* Handshakes the dialer gave up on at its deadline (hello_timeout). */
static unsigned handshake_timeouts(void)
{
    return (unsigned)qc_metrics_get(H.metrics, M_DROP, "reason", "handshake_timeout");
}

static int timed_out(void *arg)
{
    (void)arg;
    return handshake_timeouts() > 0;
}

static int join_reported(void *arg)
{
    (void)arg;
    return J.calls > 0;
}

/* Closes whatever dial is still waiting at the listener (a redial). */
static void drain_listener(void)
{
    int fd;
    while ((fd = accept(listener, NULL, NULL)) >= 0) {
        struct linger l = {1, 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(fd);
    }
}

/* The CHALLENGE a member sends, as the input says (how & 7), with its
 * ephemeral key pair kx (seeded from the input): 0-3 as it should be, 4 a
 * bit flipped, 5 tagged under another cluster's key, 6 in another
 * direction or with sequence number 1, 7 none at all. What the dialer
 * makes of it is challenge_expect's to say, not the kind's: a flipped bit
 * may leave a challenge that still verifies. */
static void challenge_of(fuzz_in *in, qc_buf *b, qc_auth_kx *kx)
{
    uint8_t how = fuzz_u8(in);
    kx_of(in, 1, 0xa5, kx);
    int kind = how & 7;
    if (kind == 7) return;
    uint8_t p[QC_WIRE_KX + QC_WIRE_TAG];
    const uint8_t *key = kind == 5 ? other_key : cluster_key;
    uint8_t dir = kind == 6 && !(how & 8) ? QC_AUTH_DIR_DIALER : QC_AUTH_DIR_CHALLENGE;
    memcpy(p, kx->pk, QC_WIRE_KX);
    qc_auth_tag(key, dir, kind == 6 && (how & 8), kx->pk, QC_WIRE_KX, p + QC_WIRE_KX);
    FUZZ_CHECK(qc_wire_encode_frame(QC_FRAME_CHALLENGE, p, sizeof p, b) == QC_OK);
    b->data[2] = QC_WIRE_VERSION_SEALED;
    memset(b->data + 8, 0, 4);
    if (kind == 4) flip(b, 0, b->len, fuzz_u16(in));
}

/* What a dialer must make of the n bytes at p, all an acceptor sent it, by
 * the rules of wire.h (a model: it shares only the tag check with net.c). */
enum {
    CH_UP,         /* one challenge that verifies, alone: the link comes up */
    CH_REFUSED,    /* no challenge that verifies: refused at once, an auth failure */
    CH_MORE,       /* one that verifies, then more bytes: refused once they are read */
    CH_INCOMPLETE, /* fewer bytes than its header says: waits, until the deadline */
};

static int challenge_expect(const uint8_t *p, size_t n)
{
    if (n < QC_WIRE_HEADER) return CH_INCOMPLETE;
    uint32_t plen = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    int head = p[0] == QC_WIRE_MAGIC0 && p[1] == QC_WIRE_MAGIC1 && p[2] == QC_WIRE_VERSION_SEALED &&
               p[3] == QC_FRAME_CHALLENGE &&
               !(p[8] | p[9] | p[10] | p[11]); /* version 3: the CRC field is 0 */
    /* a tag per cluster key the acceptor takes: the dialer cannot tell a
     * tag under a secret it does not have from any other 32 bytes */
    uint32_t tags = plen == QC_WIRE_KX + QC_WIRE_TAG       ? 1
                    : plen == QC_WIRE_KX + 2 * QC_WIRE_TAG ? 2
                                                           : 0;
    if (!head || !tags) return CH_REFUSED;
    if (n < QC_WIRE_HEADER + plen) return CH_INCOMPLETE;
    const uint8_t *pk = p + QC_WIRE_HEADER;
    int ok = 0;
    for (uint32_t t = 0; t < tags; t++)
        ok |= qc_auth_check_tag(cluster_key, QC_AUTH_DIR_CHALLENGE, 0, pk, QC_WIRE_KX,
                                pk + QC_WIRE_KX + t * QC_WIRE_TAG) == QC_OK;
    if (!ok) return CH_REFUSED;
    return n > QC_WIRE_HEADER + plen ? CH_MORE : CH_UP;
}

/* The dialer's AUTH at b->data[*off]: its public key and the acceptor's key
 * pair kx make the session keys (key for the dialer's frames, key_a for
 * the acceptor's), under which it is sealed whole (seq 0). */
static void dialer_auth(qc_buf *b, size_t *off, const qc_auth_kx *kx, uint8_t key[QC_AUTH_KEY],
                        uint8_t key_a[QC_AUTH_KEY])
{
    uint8_t shared[QC_AUTH_SHARED];
    FUZZ_CHECK(b->len - *off >= AUTH_LEN);
    FUZZ_CHECK(qc_auth_kx_shared(0, kx, b->data + *off + QC_WIRE_HEADER, shared) == QC_OK);
    qc_auth_session_keys(cluster_key, shared, key, key_a);
    *off +=
        sealed(b->data + *off, b->len - *off, QC_FRAME_AUTH, key, QC_AUTH_DIR_DIALER, 0, AUTH_AD);
}

/* Counters after a dialer-side run, as challenge_expect said (expect): one
 * failure at most; a challenge that does not verify is one authentication
 * failure; one still arriving is none, nor is one that verified (though
 * what follows it may be). */
static void check_dialer_counters(int expect)
{
    unsigned bad = counter(M_BAD), auth = counter(M_AUTH);
    FUZZ_CHECK(bad <= 1 && auth <= bad);
    if (expect == CH_REFUSED) FUZZ_CHECK(bad == 1 && auth == 1);
    if (expect == CH_MORE) FUZZ_CHECK(bad == 1);
    if (expect == CH_INCOMPLETE) FUZZ_CHECK(bad == 0);
    FUZZ_CHECK(H.got.n == 0); /* no hello, message or frame on a dialled link */
}

/* On a link that came up, what the node sends goes out sealed under the
 * session key in order (seq 2 on, after AUTH and the hello): raft messages
 * and FORWARD / READ_INDEX / MEMBER frames from the input. */
static void link_sends(fuzz_in *in, conn *c)
{
    static const uint8_t others[] = {QC_FRAME_FORWARD, QC_FRAME_READ_INDEX, QC_FRAME_MEMBER};
    int count = fuzz_u8(in) % 4;
    for (int i = 0; i < count; i++) {
        qc_buf want = {0}, b = {0};
        uint8_t sel = fuzz_u8(in);
        if (sel & 1) {
            qc_msg m;
            qc_entry e[3];
            msg_of(in, 0, &m, e);
            m.from = self_id;
            m.to = peer_id;
            FUZZ_CHECK(qc_net_send(H.net, &m) == QC_OK);
            FUZZ_CHECK(qc_wire_encode_msg(&m, &want) == QC_OK);
        } else {
            size_t n;
            const uint8_t *p = take(in, 255, &n);
            uint8_t type = others[(sel >> 1) % 3];
            FUZZ_CHECK(qc_net_send_frame(H.net, peer_id, type, p, n) == QC_OK);
            FUZZ_CHECK(qc_wire_encode_frame(type, p, n, &want) == QC_OK);
        }
        recv_exact(c->fd, &b, want.len + QC_WIRE_MAC);
        FUZZ_CHECK(sealed(b.data, b.len, want.data[3], c->key, QC_AUTH_DIR_DIALER, 2 + (uint64_t)i,
                          QC_WIRE_HEADER) == b.len);
        want.data[2] = QC_WIRE_VERSION_SEALED; /* the rest as version 1 has it, but the CRC */
        memset(want.data + 8, 0, 4);
        FUZZ_CHECK(memcmp(b.data, want.data, want.len) == 0);
        qc_buf_free(&want);
        qc_buf_free(&b);
    }
}

/* Mode 3: the net dials its peer, the harness answers as the member would
 * or would not. The link comes up only on a challenge that verifies, alone;
 * then AUTH and the hello come sealed in the dialer's direction. Every
 * outcome is waited for, so none depends on how fast the loopback is. */
static void dialed(fuzz_in *in, size_t chunk, uint8_t flags)
{
    static int (*const outcome[])(void *) = {[CH_UP] = link_up,
                                             [CH_REFUSED] = refused,
                                             [CH_MORE] = refused,
                                             [CH_INCOMPLETE] = timed_out};
    conn c = {.fd = -1, .chunk = chunk, .tcp = 1};
    qc_buf out = {0};
    challenge_of(in, &out, &c.kx);
    size_t n;
    const uint8_t *extra = take(in, 255, &n);
    FUZZ_CHECK(qc_buf_append(&out, extra, n) == QC_OK);
    int expect = challenge_expect(out.data, out.len);
    net_start(flags, listener_port, expect == CH_INCOMPLETE ? DEADLINE_MS : NO_DEADLINE_MS);
    c.fd = accept_dialer();
    put(&c, out.data, out.len);
    FUZZ_CHECK(wait_until(outcome[expect], NULL, MUST_WITHIN));
    for (int i = 0; i < 4; i++) ev_run(H.loop, EVRUN_NOWAIT);
    int up = qc_net_link_up(H.net, peer_id);
    FUZZ_CHECK(up == (expect == CH_UP));
    if (up) {
        qc_buf b = {0};
        size_t off = 0;
        recv_exact(c.fd, &b, AUTH_LEN + hello_len + QC_WIRE_MAC);
        trace_bytes("AUTH and hello", b.data, b.len);
        dialer_auth(&b, &off, &c.kx, c.key, c.key_a);
        FUZZ_CHECK(sealed(b.data + off, b.len - off, QC_FRAME_HELLO, c.key, QC_AUTH_DIR_DIALER, 1,
                          QC_WIRE_HEADER) == hello_len + QC_WIRE_MAC);
        qc_buf_free(&b);
        link_sends(in, &c);
    }
    check_dialer_counters(expect);
    close(c.fd); /* a reset: the link goes down */
    c.fd = -1;
    FUZZ_CHECK(wait_until(link_down, NULL, MUST_WITHIN));
    qc_buf_free(&out);
    conn_free(&c);
}

static void join_done(void *arg, int rc, const uint8_t *answer, size_t len)
{
    (void)arg;
    J.calls++;
    J.rc = rc;
    if (!rc) FUZZ_CHECK(qc_buf_append(&J.answer, answer, len) == QC_OK);
}

/* The member's JOIN answer (p, n) sealed under key, as the input says (how &
 * 7): 0-3 as it should be, 4 a bit flipped, 5 the direction of a dialer, 6
 * sequence number 1, 7 a version-1 frame. Returns 1 when it is right. */
static int answer_of(fuzz_in *in, const uint8_t *key, const uint8_t *p, size_t n, qc_buf *b)
{
    uint8_t how = fuzz_u8(in);
    int kind = how & 7;
    FUZZ_CHECK(qc_wire_encode_frame(QC_FRAME_JOIN, p, n, b) == QC_OK);
    if (kind == 7) return 0;
    uint8_t dir = kind == 5 ? QC_AUTH_DIR_DIALER : QC_AUTH_DIR_ACCEPTOR;
    FUZZ_CHECK(qc_auth_seal(b, 0, QC_WIRE_HEADER, key, dir, kind == 6) == QC_OK);
    if (kind == 4) flip(b, 0, b->len, fuzz_u16(in));
    return kind < 4;
}

/* Mode 4: the net joins through the harness. Its AUTH and JOIN come only
 * after a challenge that verifies; done reports QC_OK with the answer
 * exactly when that answer was sealed right, else QC_EIO, once either way
 * (a challenge still arriving waits for the reset: the join's own deadline
 * is far). */
static void joining(fuzz_in *in, size_t chunk)
{
    size_t plen, n;
    const uint8_t *payload = take(in, 255, &plen);
    FUZZ_CHECK(qc_net_join(H.net, "127.0.0.1", listener_port, payload, plen, 10000, join_done,
                           NULL) == QC_OK);
    FUZZ_CHECK(J.calls == 0); /* never from inside the call */
    conn c = {.fd = accept_dialer(), .chunk = chunk, .tcp = 1};
    qc_buf out = {0}, b = {0};
    const uint8_t *p = NULL;
    int answered = 0;
    challenge_of(in, &out, &c.kx);
    int expect = challenge_expect(out.data, out.len);
    put(&c, out.data, out.len);
    if (expect == CH_UP) {
        size_t off = 0;
        recv_exact(c.fd, &b, AUTH_LEN + QC_WIRE_HEADER + plen + QC_WIRE_MAC);
        trace_bytes("AUTH and JOIN", b.data, b.len);
        dialer_auth(&b, &off, &c.kx, c.key, c.key_a);
        FUZZ_CHECK(sealed(b.data + off, b.len - off, QC_FRAME_JOIN, c.key, QC_AUTH_DIR_DIALER, 1,
                          QC_WIRE_HEADER) == QC_WIRE_HEADER + plen + QC_WIRE_MAC);
        FUZZ_CHECK(plen == 0 || memcmp(b.data + off + QC_WIRE_HEADER, payload, plen) == 0);
        p = take(in, 255, &n);
        out.len = 0;
        answered = answer_of(in, c.key_a, p, n, &out);
        put(&c, out.data, out.len);
    }
    /* a right answer, or a whole wrong challenge, must be taken before the
     * reset, which may drop what the net has not read yet */
    if (answered || expect == CH_REFUSED) FUZZ_CHECK(wait_until(join_reported, NULL, MUST_WITHIN));
    for (int i = 0; i < 4; i++) ev_run(H.loop, EVRUN_NOWAIT);
    close(c.fd); /* a reset: anything else ends the join here */
    c.fd = -1;
    FUZZ_CHECK(wait_until(join_reported, NULL, MUST_WITHIN));
    FUZZ_CHECK(J.calls == 1);
    FUZZ_CHECK(J.rc == (answered ? QC_OK : QC_EIO));
    if (answered) FUZZ_CHECK(J.answer.len == n && (!n || memcmp(J.answer.data, p, n) == 0));
    check_dialer_counters(expect);
    qc_buf_free(&b);
    qc_buf_free(&out);
    qc_buf_free(&J.answer);
    conn_free(&c);
}

/* ---------- one input ---------- */

/* A TCP socket bound to a free loopback port (listening or not); its fd
 * and port stay for the process's life. */
static int bind_port(int listening, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    FUZZ_CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    FUZZ_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    FUZZ_CHECK(!listening || listen(fd, 64) == 0);
    FUZZ_CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

/* libsodium's random source in this process: ChaCha20 under a fixed key,
 * a fresh nonce per call from a counter that every input starts at 0, so
 * that the net's ephemeral keys, and so every byte on the wire, are the
 * same at every run of an input. Test-only: the agent keeps libsodium's. */
static uint64_t random_calls;

static void random_buf(void *const buf, const size_t size)
{
    static const uint8_t key[crypto_stream_chacha20_KEYBYTES] = {'f', 'u', 'z', 'z', 'a', 'u'};
    uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
    uint64_t call = random_calls++;
    memcpy(nonce, &call, sizeof call < sizeof nonce ? sizeof call : sizeof nonce);
    FUZZ_CHECK(crypto_stream_chacha20(buf, size, nonce, key) == 0);
}

static uint32_t random_u32(void)
{
    uint32_t r;
    random_buf(&r, sizeof r);
    return r;
}

static const char *random_name(void) { return "fuzz_auth: fixed"; }

static randombytes_implementation fixed_random = {
    .implementation_name = random_name, .random = random_u32, .buf = random_buf};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    qc_log_set_level(getenv("FUZZ_AUTH_TRACE") ? QC_LOG_DEBUG : QC_LOG_ERROR + 1);
    FUZZ_CHECK(randombytes_set_implementation(&fixed_random) == 0); /* before sodium_init */
    FUZZ_CHECK(qc_auth_init() == QC_OK);
    qc_auth_derive(SECRET, strlen(SECRET), cluster_key);
    qc_auth_derive("another cluster", 15, other_key);
    self_id = qc_hash_id(SELF);
    peer_id = qc_hash_id(PEER);
    int unused;
    closed_port = bind_port(0, &unused);
    listener_port = bind_port(1, &listener);
    qc_buf b = {0};
    FUZZ_CHECK(qc_wire_encode_hello(SELF, "{}", &b) == QC_OK);
    hello_len = b.len;
    qc_buf_free(&b);
    return 0;
}

static void net_stop(void)
{
    qc_net_free(H.net);
    qc_metrics_free(H.metrics);
    ev_loop_destroy(H.loop);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    random_calls = 0;
    uint8_t flags = data[0];
    fuzz_in in = {data + 1, size - 1};
    int k = (flags >> 1) & 7;
    size_t chunk = k ? (size_t)1 << (k - 1) : 0;
    if (!(flags & 1) && (flags & 16)) { /* the net dials the harness */
        if (flags & 32) {
            net_start(flags, closed_port, NO_DEADLINE_MS);
            joining(&in, chunk);
        } else {
            dialed(&in, chunk, flags); /* its deadline depends on the input */
        }
        net_stop();
        drain_listener();
        return 0;
    }
    net_start(flags, closed_port, NO_DEADLINE_MS);
    model M = {.known = 1, .joins = !(flags & 128), .remove_on_frame = (flags >> 5) & 1};
    conn c;
    conn_open(&c, chunk);
    if (flags & 1) {
        session(&c, &M, &in, (flags >> 4) & 1);
    } else { /* a stranger without the key */
        M.unknown = 1;
        M.state_at_unknown = S_PRE;
        put(&c, in.p, in.left);
    }
    finish(&c, &M);
    if (flags & 64) replay_connection(&c, chunk);
    conn_free(&c);
    model_free(&M);
    net_stop();
    return 0;
}
