/* Cluster transport on libev: one listening socket, one outbound connection
 * per peer (non-blocking connect, hello first, backoff with jitter), inbound
 * connections that must open with a hello from a known peer or, from a
 * stranger, with a hello and one JOIN; and the joiner's side of a JOIN. With
 * a secret every connection first runs the handshake of wire.h (an
 * ephemeral key exchange bound to the secret) and every frame after it is
 * encrypted and authenticated (auth.h). It frames, checks and counts bytes;
 * it must never interpret consensus or a join's payload, block the loop
 * (qc_net_flush aside), buffer much for a connection that has not proved
 * itself, or let one bad connection harm any other.
 *
 * This file owns connections and link state, reading and checking frames
 * (the handshake's acceptor side included), and sending (qc_net_send and
 * the rest of the send path); dialling, joining, accepting and setting up
 * are in net_dial.c, net_join.c, net_accept.c and net_setup.c, which share
 * net_int.h with it. */
#include "net/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/common.h"
#include "base/log.h"
#include "core/wire.h"
#include "net/auth.h"
#include "net/net_int.h"

/* ---- small helpers ---- */

static double net_random(qc_net *n)
{
    n->rng ^= n->rng << 13;
    n->rng ^= n->rng >> 7;
    n->rng ^= n->rng << 17;
    return (double)(n->rng >> 11) / 9007199254740992.0;
}

char *net_dup_str(const char *s)
{
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d) memcpy(d, s, len);
    return d;
}

void net_sock_nodelay(int fd)
{
    int one = 1;
    /* TCP_NODELAY fails on non-TCP sockets only; that is not fatal */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* For a descriptor from outside (qc_net_adopt): whatever it was born with. */
int net_sock_setup(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return QC_EIO;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return QC_EIO;
    net_sock_nodelay(fd);
    return QC_OK;
}

/* The address of sa as 16 bytes, IPv4 as v4-mapped IPv6, so that a peer
 * resolved over IPv4 matches its connection on a dual-stack listener.
 * QC_EINVAL for a family without one (a socketpair's). */
int net_ip_key(const struct sockaddr *sa, uint8_t key[16])
{
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return QC_OK;
    }
    if (sa->sa_family != AF_INET) return QC_EINVAL;
    memset(key, 0, 10);
    key[10] = key[11] = 0xff;
    memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    return QC_OK;
}

/* 1 for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
int net_ip_loopback(const uint8_t key[16])
{
    static const uint8_t v6[16] = {[15] = 1}, v4[12] = {[10] = 0xff, [11] = 0xff};
    return memcmp(key, v6, 16) == 0 || (memcmp(key, v4, 12) == 0 && key[12] == 127);
}

/* Remembers where p resolved to (the addresses of ai). */
void net_peer_note_addrs(net_peer *p, const struct addrinfo *ai)
{
    p->n_ips = 0;
    for (; ai && p->n_ips < NET_PEER_ADDRS; ai = ai->ai_next)
        if (net_ip_key(ai->ai_addr, p->ips[p->n_ips]) == QC_OK) p->n_ips++;
}

/* 1 when key is an address of a peer. */
int net_ip_is_member(const qc_net *n, const uint8_t key[16])
{
    for (const net_peer *p = n->peers; p; p = p->next)
        for (int i = 0; i < p->n_ips; i++)
            if (memcmp(p->ips[i], key, 16) == 0) return 1;
    return 0;
}

static net_peer *peer_by_id(const qc_net *n, uint64_t id)
{
    for (net_peer *p = n->peers; p; p = p->next)
        if (p->id == id) return p;
    return NULL;
}

net_peer *net_peer_by_name(const qc_net *n, const char *identifier)
{
    for (net_peer *p = n->peers; p; p = p->next)
        if (strcmp(p->identifier, identifier) == 0) return p;
    return NULL;
}

static void count(qc_net *n, const char *name, int type)
{
    const char *label = type ? qc_raft_msg_name(type) : NULL;
    qc_metrics_add(n->metrics, name, type ? "type" : NULL, label, 1);
}

/* The level to log a failure of reason for key (a peer or a host) at: WARN
 * the first time in a while, DEBUG after, so that a peer that retries every
 * second does not fill the log with the same line. */
int net_level_once(qc_net *n, const char *key, int reason)
{
    ev_tstamp now = ev_now(n->loop);
    for (unsigned i = 0; i < NET_LOG_SLOTS; i++) {
        if (n->logged[i].reason != reason || strcmp(n->logged[i].key, key) != 0) continue;
        if (now - n->logged[i].at < NET_RELOG_AFTER) return QC_LOG_DEBUG;
        n->logged[i].at = now;
        return QC_LOG_WARN;
    }
    unsigned i = n->logged_next++ % NET_LOG_SLOTS;
    snprintf(n->logged[i].key, sizeof n->logged[i].key, "%s", key);
    n->logged[i].reason = reason;
    n->logged[i].at = now;
    return QC_LOG_WARN;
}

/* Forgets what was logged for key: it worked, so the next failure is news. */
static void log_forget(qc_net *n, const char *key)
{
    for (unsigned i = 0; i < NET_LOG_SLOTS; i++)
        if (strcmp(n->logged[i].key, key) == 0) n->logged[i].reason = 0;
}

/* ---- connections ---- */

/* Stops, closes and frees c; no callbacks, no list changes. */
void net_conn_free(qc_conn *c)
{
    struct ev_loop *loop = c->net->loop;
    qc_auth_wipe(c->key_in, sizeof c->key_in);
    qc_auth_wipe(c->key_out, sizeof c->key_out);
    qc_auth_wipe(&c->kx, sizeof c->kx);
    ev_io_stop(loop, &c->rw);
    ev_io_stop(loop, &c->ww);
    ev_timer_stop(loop, &c->hello_timer);
    if (c->fd >= 0) close(c->fd);
    qc_buf_free(&c->in);
    qc_buf_free(&c->out);
    qc_buf_free(&c->part);
    free(c->stranger_id);
    while (c->streams) {
        qc_stream *s = c->streams;
        c->streams = s->next;
        qc_buf_free(&s->payload);
        free(s);
    }
    free(c);
}

/* c leaves the inbound list: it no longer counts against any limit. */
static void inbound_uncount(qc_net *n, const qc_conn *c)
{
    n->n_inbound--;
    if (c->unidentified) n->n_unidentified--;
    if (c->stranger) n->n_strangers--;
}

static void inbound_unlink(qc_net *n, qc_conn *c)
{
    for (qc_conn **pp = &n->inbound; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            inbound_uncount(n, c);
            return;
        }
    }
}

/* With a secret, seals the frame that starts at c->out.data[start] (the last
 * one queued) with c's next sequence number; without, does nothing. */
static int conn_seal(qc_conn *c, size_t start)
{
    /* The encoders bound every frame: a bigger one would break the link. */
    qc_assert(c->out.len - start <= QC_WIRE_HEADER + QC_WIRE_MAX_PAYLOAD);
    if (!c->net->auth) return QC_OK;
    /* The dialer's AUTH took sequence 0 of its key: 0 again repeats a nonce. */
    qc_assert(!c->outbound || c->seq_out > 0);
    uint8_t dir = c->outbound ? QC_AUTH_DIR_DIALER : QC_AUTH_DIR_ACCEPTOR;
    int rc = qc_auth_seal(&c->out, start, QC_WIRE_HEADER, c->key_out, dir, c->seq_out);
    if (rc) {
        c->out.len = start;
        return rc;
    }
    c->seq_out++;
    return QC_OK;
}

/* Tops up an empty output queue with parts of the waiting big messages. */
static int conn_feed(qc_conn *c)
{
    while (c->streams && c->out.len < QC_WIRE_PART_MAX) {
        qc_stream *s = c->streams;
        size_t k = s->payload.len - s->off;
        if (k > QC_WIRE_PART_MAX) k = QC_WIRE_PART_MAX;
        int last = s->off + k == s->payload.len;
        size_t start = c->out.len;
        int rc = qc_wire_encode_part(s->payload.data + s->off, k, last, &c->out);
        if (!rc) rc = conn_seal(c, start);
        if (rc) return rc;
        s->off += k;
        if (!last) continue;
        c->streams = s->next;
        c->stream_bytes -= s->payload.len;
        count(c->net, M_SENT, s->payload.data[0]);
        qc_buf_free(&s->payload);
        free(s);
    }
    return QC_OK;
}

/* Writes queued output until done or EAGAIN. QC_EIO on a broken socket. */
int net_conn_flush(qc_conn *c)
{
    for (;;) {
        if (c->out_off == c->out.len) {
            c->out.len = c->out_off = 0;
            if (conn_feed(c)) return QC_EIO;
            if (!c->out.len) break;
        }
        ssize_t k = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->net->loop, &c->ww);
            return QC_OK;
        }
        if (k < 0) return QC_EIO;
        c->out_off += (size_t)k;
    }
    if (c->out.cap > (1u << 20)) qc_buf_free(&c->out); /* give back a burst's memory */
    ev_io_stop(c->net->loop, &c->ww);
    return QC_OK;
}

/* Defers the close of c to its write watcher, so that no callback runs from
 * inside qc_net_send(). */
static void conn_fail_later(qc_conn *c, int why)
{
    c->failed = why;
    ev_feed_event(c->net->loop, &c->ww, EV_WRITE);
}

/* ---- link state and reconnects ---- */

void net_link_report(net_peer *p, int up)
{
    if (p->up == up) return;
    p->up = up;
    qc_log(QC_LOG_DEBUG, "net", "link to %s %s", p->identifier, up ? "up" : "down");
    qc_net *n = p->net;
    if (up) log_forget(n, p->identifier);
    if (n->cb.on_link) n->cb.on_link(n->cb.ud, p->id, up);
}

void net_retry_schedule(net_peer *p)
{
    qc_net *n = p->net;
    double delay = p->backoff * (0.75 + 0.5 * net_random(n));
    p->backoff = p->backoff * 2 > NET_BACKOFF_MAX ? NET_BACKOFF_MAX : p->backoff * 2;
    ev_timer_stop(n->loop, &p->retry);
    ev_timer_set(&p->retry, delay, 0.);
    ev_timer_start(n->loop, &p->retry);
}

static void retry_now(net_peer *p)
{
    qc_net *n = p->net;
    p->backoff = NET_BACKOFF_MIN;
    ev_timer_stop(n->loop, &p->retry);
    ev_timer_set(&p->retry, 0., 0.);
    ev_timer_start(n->loop, &p->retry);
}

void net_dial_forget(net_peer *p)
{
    if (p->ai) freeaddrinfo(p->ai);
    p->ai = p->ai_cur = NULL;
}

/* The outbound connection of p closed or failed: the link is down, dial
 * again after the backoff (from the start if the connection had been up
 * long enough to count as a success). */
void net_peer_down(net_peer *p)
{
    qc_conn *c = p->out;
    if (c) {
        int stable =
            !c->connecting && !c->awaiting && ev_now(p->net->loop) - c->opened >= NET_STABLE_AFTER;
        if (stable) p->backoff = NET_BACKOFF_MIN;
        net_conn_free(c);
        p->out = NULL;
    }
    net_dial_forget(p);
    net_retry_schedule(p);
    net_link_report(p, 0);
}

void net_conn_close(qc_conn *c)
{
    if (c->outbound) {
        net_peer_down(c->peer);
        return;
    }
    qc_net *n = c->net;
    net_peer *p = c->peer;
    inbound_unlink(n, c);
    net_conn_free(c);
    /* the link is one thing: a connection from the peer closing takes ours
     * down too, so that it comes back up only through a fresh dial */
    if (p && p->out && !p->out->connecting) net_peer_down(p);
}

static void bad_frame(qc_conn *c, const char *why)
{
    qc_net *n = c->net;
    qc_metrics_add(n->metrics, M_BAD, NULL, NULL, 1);
    qc_log(QC_LOG_WARN, "net", "bad frame on %s connection %s %s: %s; closing",
           c->outbound ? "outbound" : "inbound", c->outbound ? "to" : "from", net_conn_name(c),
           why);
    net_conn_close(c);
}

/* A connection that failed authentication: a bad frame that also counts as
 * an authentication failure, logged once per peer (outbound) or host
 * (inbound: who it is is not proved yet) and reason. */
static void auth_fail(qc_conn *c, int reason, const char *why)
{
    qc_net *n = c->net;
    qc_metrics_add(n->metrics, M_BAD, NULL, NULL, 1);
    qc_metrics_add(n->metrics, M_AUTH, NULL, NULL, 1);
    int level = net_level_once(n, c->outbound ? c->peer->identifier : c->host, reason);
    qc_log(level, "net", "authentication failed on %s connection %s %s: %s; closing",
           c->outbound ? "outbound" : "inbound", c->outbound ? "to" : "from", net_conn_name(c),
           why);
    net_conn_close(c);
}

/* ---- frames from inbound connections ---- */

/* Closes other inbound connections of p quietly: the peer dialled again, so
 * they are stale and their close says nothing new about the link. */
static void inbound_supersede(qc_net *n, net_peer *p, qc_conn *keep)
{
    qc_conn **pp = &n->inbound;
    while (*pp) {
        qc_conn *c = *pp;
        if (c != keep && c->peer == p) {
            *pp = c->next;
            inbound_uncount(n, c);
            net_conn_free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* A hello naming no peer: the connection may ask to join, if joins are
 * taken and there is room. Takes h. Returns -1 when c was closed. */
static int hello_stranger(qc_conn *c, qc_hello *h)
{
    qc_net *n = c->net;
    const char *who = h->identifier ? h->identifier : "?";
    if (!n->cb.on_join) {
        qc_log(QC_LOG_WARN, "net", "hello from unknown peer '%s' at %s", who, c->addr);
        qc_wire_hello_free(h);
        return bad_frame(c, "unknown peer"), -1;
    }
    if (n->n_strangers >= NET_MAX_STRANGERS) {
        /* not a malformed frame: a load limit, so it is not counted as one */
        qc_log(QC_LOG_WARN, "net", "refusing '%s' at %s: %d strangers connected already", who,
               c->addr, n->n_strangers);
        qc_wire_hello_free(h);
        net_conn_close(c);
        return -1;
    }
    qc_log(QC_LOG_DEBUG, "net", "stranger '%s' at %s", who, c->addr);
    c->stranger = 1;
    c->stranger_id = h->identifier;
    h->identifier = NULL;
    qc_wire_hello_free(h);
    n->n_strangers++;
    return 0;
}

/* Returns -1 when c was closed. */
static int frame_hello(qc_conn *c, const uint8_t *payload, uint32_t len)
{
    qc_net *n = c->net;
    if (c->peer) return bad_frame(c, "second hello"), -1;
    qc_hello h;
    int rc = qc_wire_decode_hello(payload, len, &h);
    if (rc) return bad_frame(c, "malformed hello"), -1;
    net_peer *p = net_peer_by_name(n, h.identifier);
    if (!p) return hello_stranger(c, &h);
    c->peer = p;
    if (c->unidentified) { /* a member's now: out of the strangers' budget */
        c->unidentified = 0;
        n->n_unidentified--;
    }
    ev_timer_stop(n->loop, &c->hello_timer);
    inbound_supersede(n, p, c);
    /* the peer is back: dial it now rather than after our backoff */
    if (!p->out) retry_now(p);
    if (n->cb.on_hello) n->cb.on_hello(n->cb.ud, p->id, h.metadata);
    qc_wire_hello_free(&h);
    return 0;
}

static int frame_raft(qc_conn *c, const uint8_t *payload, uint32_t len)
{
    qc_net *n = c->net;
    if (!c->peer) return bad_frame(c, "message before hello"), -1;
    qc_msg m;
    int rc = qc_wire_decode_msg(payload, len, &m);
    if (rc == QC_ENOMEM) {
        qc_log(QC_LOG_ERROR, "net", "out of memory decoding a message from %s", net_conn_name(c));
        net_conn_close(c);
        return -1;
    }
    if (rc) return bad_frame(c, "malformed message"), -1;
    if (m.from != c->peer->id || m.to != n->id) {
        qc_wire_msg_free(&m);
        return bad_frame(c, "message with wrong sender or recipient"), -1;
    }
    count(n, M_RECV, m.type);
    if (n->cb.on_msg) n->cb.on_msg(n->cb.ud, &m);
    qc_wire_msg_free(&m);
    return 0;
}

/* A piece of a big message: joined in c->part until the last one. */
static int frame_part(qc_conn *c, const uint8_t *payload, uint32_t len)
{
    if (!c->peer) return bad_frame(c, "part before hello"), -1;
    if (len < 1 || payload[0] > 1) return bad_frame(c, "malformed part"), -1;
    if (c->part.len + len - 1 > QC_WIRE_MAX_MESSAGE) return bad_frame(c, "message too big"), -1;
    if (qc_buf_append(&c->part, payload + 1, len - 1)) {
        qc_log(QC_LOG_ERROR, "net", "out of memory joining a message from %s", net_conn_name(c));
        net_conn_close(c);
        return -1;
    }
    if (!payload[0]) return 0;
    qc_buf whole = c->part;
    c->part = (qc_buf){0};
    int rc = frame_raft(c, whole.data, (uint32_t)whole.len);
    qc_buf_free(&whole);
    return rc;
}

static int frame_other(qc_conn *c, int type, const uint8_t *payload, uint32_t len)
{
    qc_net *n = c->net;
    if (!c->peer) return bad_frame(c, "frame before hello"), -1;
    if (n->cb.on_frame) n->cb.on_frame(n->cb.ud, c->peer->id, type, payload, len);
    return 0;
}

/* A stranger's request to join: on_join writes the answer, which goes back
 * as one JOIN frame; the connection closes once it is out. */
static int frame_join(qc_conn *c, const uint8_t *payload, uint32_t len)
{
    qc_net *n = c->net;
    if (c->peer) return bad_frame(c, "join from a member"), -1;
    /* A joining node sends its JOIN alone, with no hello: it may be taking
     * a name a member holds (to be refused), and must not displace it. */
    if (!c->stranger) {
        qc_hello none = {0};
        if (hello_stranger(c, &none)) return -1;
    }
    if (c->joined) return bad_frame(c, "second join"), -1;
    c->joined = 1;
    qc_buf answer = {0};
    n->cb.on_join(n->cb.ud, c->stranger_id, c->host, payload, len, &answer);
    size_t start = c->out.len;
    int rc = qc_wire_encode_frame(QC_FRAME_JOIN, answer.data, answer.len, &c->out);
    if (!rc) rc = conn_seal(c, start);
    qc_buf_free(&answer);
    if (rc) {
        qc_log(QC_LOG_ERROR, "net", "cannot answer the join of '%s' at %s: %s",
               c->stranger_id ? c->stranger_id : "?", c->addr, qc_strerror(rc));
        net_conn_close(c);
        return -1;
    }
    if (net_conn_flush(c) || !ev_is_active(&c->ww)) { /* failed, or all written */
        net_conn_close(c);
        return -1;
    }
    return 0;
}

/* One frame to the function of its type. Returns -1 when c was closed. */
static int frame_dispatch(qc_conn *c, uint8_t type, const uint8_t *payload, uint32_t len)
{
    if (c->stranger && type != QC_FRAME_JOIN)
        return bad_frame(c, "a stranger may send one join only"), -1;
    switch (type) {
    case QC_FRAME_HELLO: return frame_hello(c, payload, len);
    case QC_FRAME_RAFT: return frame_raft(c, payload, len);
    case QC_FRAME_PART: return frame_part(c, payload, len);
    case QC_FRAME_JOIN: return frame_join(c, payload, len);
    case QC_FRAME_FORWARD:
    case QC_FRAME_READ_INDEX:
    case QC_FRAME_MEMBER:
    case QC_FRAME_HEALTH: return frame_other(c, type, payload, len);
    default: return bad_frame(c, "unexpected frame type"), -1;
    }
}

/* Checks a frame's header against what c may send, before its payload is
 * waited for: a connection that has not proved itself never gets more
 * buffered than an AUTH frame. Returns -1 when c was closed. */
static int frame_admit(qc_conn *c, uint8_t version, uint8_t type, uint32_t plen)
{
    if (!c->net->auth) {
        if (version == QC_WIRE_VERSION) return 0;
        return auth_fail(c, WHY_NO_SECRET_HERE,
                         "an authenticated frame: it has a secret and this node has none"),
               -1;
    }
    if (version == QC_WIRE_VERSION_AUTH)
        return auth_fail(c, WHY_OLD_VERSION,
                         "a version-2 frame: it runs a QCluster from before encrypted links; "
                         "upgrade it"),
               -1;
    if (version != QC_WIRE_VERSION_SEALED)
        return auth_fail(c, WHY_NO_SECRET_THERE,
                         "a frame without a tag: it has no secret (or runs an older version) "
                         "and this node has one"),
               -1;
    if (!c->authed && (type != QC_FRAME_AUTH || plen != QC_WIRE_KX))
        return auth_fail(c, WHY_PROTOCOL, "a frame before AUTH"), -1;
    if (c->authed && (type == QC_FRAME_AUTH || type == QC_FRAME_CHALLENGE))
        return auth_fail(c, WHY_PROTOCOL, "a second AUTH or a CHALLENGE"), -1;
    return 0;
}

/* The AUTH frame at h: the session keys from the dialer's public key, our
 * ephemeral key pair (wiped now) and whichever cluster key opens the AUTH.
 * Returns -1 when c was closed. */
static int frame_auth(qc_conn *c, uint8_t *h)
{
    qc_net *n = c->net;
    size_t len = QC_WIRE_HEADER + QC_WIRE_KX;
    uint8_t shared[QC_AUTH_SHARED];
    int rc = qc_auth_kx_shared(0, &c->kx, h + QC_WIRE_HEADER, shared);
    qc_auth_wipe(&c->kx, sizeof c->kx);
    if (rc) return auth_fail(c, WHY_PROTOCOL, "its AUTH carries a bad public key"), -1;
    for (int i = 0; i < n->n_keys && !c->authed; i++) {
        qc_auth_session_keys(n->keys[i], shared, c->key_in, c->key_out);
        if (qc_auth_open(c->key_in, QC_AUTH_DIR_DIALER, 0, len, h, len, h + len)) continue;
        c->authed = 1;
        if (i) qc_log(QC_LOG_DEBUG, "net", "%s authenticated with the previous secret", c->addr);
    }
    qc_auth_wipe(shared, sizeof shared);
    if (!c->authed)
        return auth_fail(c, WHY_OTHER_SECRET,
                         "its AUTH does not verify: it has a different secret, or it "
                         "replays another connection"),
               -1;
    c->seq_in = 1;
    return 0;
}

/* Opens the frame at h (header, plen bytes of payload, MAC) in place; the
 * AUTH frame first sets up the session keys. Returns -1 when c was closed. */
static int frame_verify(qc_conn *c, uint8_t *h, uint8_t type, uint32_t plen)
{
    size_t len = QC_WIRE_HEADER + plen;
    if (type == QC_FRAME_AUTH) return frame_auth(c, h);
    if (qc_auth_open(c->key_in, QC_AUTH_DIR_DIALER, c->seq_in, QC_WIRE_HEADER, h, len, h + len))
        return auth_fail(c, WHY_BAD_TAG, "a frame with a bad tag (tampered, replayed or lost)"), -1;
    c->seq_in++;
    return 0;
}

/* Handles every whole frame in c->in. Returns -1 when c was closed. */
static int conn_frames(qc_conn *c)
{
    qc_net *n = c->net;
    size_t off = 0, tag = n->auth ? QC_WIRE_MAC : 0;
    while (c->in.len - off >= QC_WIRE_HEADER) {
        uint8_t *h = c->in.data + off;
        uint8_t version, type;
        uint32_t plen;
        int rc = qc_wire_header_v(h, &version, &type, &plen);
        if (rc == QC_ETOOBIG) {
            char why[64];
            snprintf(why, sizeof why, "frame too big (the limit is %u bytes)", QC_WIRE_MAX_PAYLOAD);
            return bad_frame(c, why), -1;
        }
        if (rc) return bad_frame(c, "bad header"), -1;
        if (frame_admit(c, version, type, plen)) return -1;
        if (c->in.len - off - QC_WIRE_HEADER < plen + tag) break;
        if (n->auth && frame_verify(c, h, type, plen)) return -1;
        /* a sealed frame has no CRC: its MAC checked more */
        if (!n->auth && qc_wire_check(h, h + QC_WIRE_HEADER, plen))
            return bad_frame(c, "bad checksum"), -1;
        off += QC_WIRE_HEADER + plen + tag;
        if (type == QC_FRAME_AUTH) continue;
        n->cur = c;
        rc = frame_dispatch(c, type, h + QC_WIRE_HEADER, plen);
        n->cur = NULL;
        if (rc) return -1;
        if (c->dead) { /* its peer was removed by the callback */
            net_conn_close(c);
            return -1;
        }
    }
    if (off) {
        memmove(c->in.data, c->in.data + off, c->in.len - off);
        c->in.len -= off;
    }
    return 0;
}

/* Reads up to room more bytes into c->in. Returns how many (> 0); 0 when
 * there is nothing to do (none there yet, or c closed for want of memory);
 * -1 when the stream ended (errno 0) or failed. */
static ssize_t conn_recv(qc_conn *c, size_t room)
{
    if (qc_buf_reserve(&c->in, room)) {
        qc_log(QC_LOG_ERROR, "net", "out of memory reading from %s", net_conn_name(c));
        net_conn_close(c);
        return 0;
    }
    ssize_t k = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (k == 0) errno = 0;
    return k == 0 ? -1 : k;
}

static void conn_read_inbound(qc_conn *c)
{
    ssize_t k = conn_recv(c, NET_READ_CHUNK);
    if (k == 0) return;
    if (k < 0) {
        qc_log(QC_LOG_DEBUG, "net", "inbound connection from %s closed: %s", net_conn_name(c),
               errno ? strerror(errno) : "end of stream");
        qc_net *n = c->net;
        n->cur = c;
        if (c->peer && n->cb.on_peer_closed) n->cb.on_peer_closed(n->cb.ud, c->peer->id);
        n->cur = NULL;
        net_conn_close(c); /* quiet when the callback removed the peer: c->peer is NULL */
        return;
    }
    c->in.len += (size_t)k;
    conn_frames(c);
}

/* With a secret, the dialer's side of the handshake: checks the CHALLENGE at
 * the start of buf (avail bytes) against each of n's cluster keys in turn,
 * makes the session keys (key_out for the dialer's frames, key_in for the
 * acceptor's) and appends the sealed AUTH to out. Returns the challenge's
 * length, 0 while it is incomplete, or -1 with *reason and *why set. */
long net_challenge_answer(const qc_net *n, const uint8_t *buf, size_t avail, qc_buf *out,
                          uint8_t key_out[QC_AUTH_KEY], uint8_t key_in[QC_AUTH_KEY], int *reason,
                          const char **why)
{
    if (avail < QC_WIRE_HEADER) return 0;
    uint8_t version, type;
    uint32_t plen;
    int rc = qc_wire_header_v(buf, &version, &type, &plen);
    *reason = WHY_PROTOCOL;
    *why = "it sent something else than a challenge";
    if (!rc && version == QC_WIRE_VERSION_AUTH && type == QC_FRAME_CHALLENGE) {
        *reason = WHY_OLD_VERSION;
        *why = "a version-2 challenge: it runs a QCluster from before encrypted links; upgrade it";
        return -1;
    }
    if (rc || version != QC_WIRE_VERSION_SEALED || type != QC_FRAME_CHALLENGE ||
        (plen != QC_WIRE_KX + QC_WIRE_TAG && plen != QC_WIRE_KX + 2 * QC_WIRE_TAG))
        return -1;
    if (avail < QC_WIRE_HEADER + plen) return 0;
    const uint8_t *pk_a = buf + QC_WIRE_HEADER, *tags = pk_a + QC_WIRE_KX;
    int found = -1;
    for (int k = 0; k < n->n_keys && found < 0; k++)
        for (uint32_t t = 0; t < (plen - QC_WIRE_KX) / QC_WIRE_TAG && found < 0; t++)
            if (!qc_auth_check_tag(n->keys[k], QC_AUTH_DIR_CHALLENGE, 0, pk_a, QC_WIRE_KX,
                                   tags + t * QC_WIRE_TAG))
                found = k;
    *reason = WHY_OTHER_SECRET;
    *why = "its challenge does not verify: it has a different secret";
    if (found < 0) return -1;
    qc_auth_kx kx;
    uint8_t shared[QC_AUTH_SHARED];
    qc_auth_kx_keypair(&kx);
    rc = qc_auth_kx_shared(1, &kx, pk_a, shared);
    if (!rc) qc_auth_session_keys(n->keys[found], shared, key_out, key_in);
    qc_auth_wipe(shared, sizeof shared);
    size_t start = out->len;
    if (!rc) rc = qc_wire_encode_frame(QC_FRAME_AUTH, kx.pk, QC_WIRE_KX, out);
    qc_auth_wipe(&kx, sizeof kx);
    if (!rc)
        rc = qc_auth_seal(out, start, QC_WIRE_HEADER + QC_WIRE_KX, key_out, QC_AUTH_DIR_DIALER, 0);
    if (rc == QC_ECORRUPT) {
        *reason = WHY_PROTOCOL;
        *why = "its challenge carries a bad public key";
    } else if (rc) {
        *reason = WHY_PROTOCOL;
        *why = "out of memory answering it";
    }
    if (rc) {
        out->len = start;
        return -1;
    }
    if (found) qc_log(QC_LOG_DEBUG, "net", "challenge verified with the previous secret");
    return (long)(QC_WIRE_HEADER + plen);
}

/* With a secret: looks for the acceptor's CHALLENGE, the only frame it ever
 * sends on a peer connection; once it verified, AUTH and the hello go out,
 * sealed, and the link is up. */
static void conn_check_challenge(qc_conn *c)
{
    qc_net *n = c->net;
    net_peer *p = c->peer;
    int reason;
    const char *why;
    size_t start = c->out.len;
    long k = net_challenge_answer(n, c->in.data, c->in.len, &c->out, c->key_out, c->key_in, &reason,
                                  &why);
    if (k == 0) return;
    if (k > 0 && c->in.len > (size_t)k) {
        reason = WHY_PROTOCOL;
        why = "it sent more than a challenge";
        k = -1;
    }
    if (k < 0) {
        c->out.len = start;
        auth_fail(c, reason, why);
        return;
    }
    c->in.len = 0;
    c->seq_out = 1;
    start = c->out.len;
    int rc = qc_buf_append(&c->out, n->hello.data, n->hello.len);
    if (!rc) rc = conn_seal(c, start);
    if (rc) {
        qc_log(QC_LOG_ERROR, "net", "out of memory connecting to %s", p->identifier);
        net_peer_down(p);
        return;
    }
    c->awaiting = 0;
    c->opened = ev_now(n->loop);
    ev_timer_stop(n->loop, &c->hello_timer);
    ev_io_start(n->loop, &c->ww); /* AUTH and the hello go out when writable */
    qc_log(QC_LOG_DEBUG, "net", "challenge from %s verified", p->identifier);
    net_link_report(p, 1);
}

/* With a secret: the acceptor sends one challenge and nothing after it. */
static void conn_read_challenge(qc_conn *c)
{
    ssize_t k = conn_recv(c, 256);
    if (k == 0) return;
    if (k < 0) {
        qc_log(QC_LOG_DEBUG, "net", "outbound connection to %s closed%s: %s", net_conn_name(c),
               c->awaiting ? " before its challenge" : "",
               errno ? strerror(errno) : "end of stream");
        net_conn_close(c);
        return;
    }
    if (!c->awaiting) {
        bad_frame(c, "unexpected data on outbound connection");
        return;
    }
    c->in.len += (size_t)k;
    conn_check_challenge(c);
}

/* 1 when buf (k bytes) starts like a CHALLENGE frame. */
static int looks_like_challenge(const uint8_t *buf, size_t k)
{
    return k >= 4 && buf[0] == QC_WIRE_MAGIC0 && buf[1] == QC_WIRE_MAGIC1 &&
           (buf[2] == QC_WIRE_VERSION_AUTH || buf[2] == QC_WIRE_VERSION_SEALED) &&
           buf[3] == QC_FRAME_CHALLENGE;
}

/* Peers never send on our outbound connection but, with a secret, its
 * challenge; we read it to see it close. */
static void conn_read_outbound(qc_conn *c)
{
    if (c->net->auth) {
        conn_read_challenge(c);
        return;
    }
    uint8_t buf[64];
    ssize_t k = recv(c->fd, buf, sizeof buf, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (k > 0 && looks_like_challenge(buf, (size_t)k)) {
        c->peer->wants_auth = 1;
        auth_fail(c, WHY_NO_SECRET_HERE,
                  "it sent a challenge: it has a secret and this node has none; not linking");
        return;
    }
    if (k > 0) {
        bad_frame(c, "unexpected data on outbound connection");
        return;
    }
    qc_log(QC_LOG_DEBUG, "net", "outbound connection to %s closed: %s", net_conn_name(c),
           k == 0 ? "end of stream" : strerror(errno));
    net_conn_close(c);
}

void net_on_conn_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_conn *c = w->data;
    if (c->outbound)
        conn_read_outbound(c);
    else
        conn_read_inbound(c);
}

/* ---- public interface ---- */

void net_peer_free(net_peer *p)
{
    ev_timer_stop(p->net->loop, &p->retry);
    if (p->out) net_conn_free(p->out);
    net_dial_forget(p);
    free(p->identifier);
    free(p->host);
    free(p);
}

int qc_net_remove_peer(qc_net *n, uint64_t id)
{
    net_peer **pp = &n->peers;
    while (*pp && (*pp)->id != id) pp = &(*pp)->next;
    net_peer *p = *pp;
    if (!p) return QC_ENOTFOUND;
    *pp = p->next;
    qc_conn **cp = &n->inbound;
    while (*cp) {
        qc_conn *c = *cp;
        if (c->peer != p) {
            cp = &c->next;
            continue;
        }
        c->peer = NULL;
        if (c == n->cur) { /* its callback is running: conn_frames closes it after */
            c->dead = 1;
            cp = &c->next;
            continue;
        }
        *cp = c->next;
        inbound_uncount(n, c);
        net_conn_free(c);
    }
    qc_log(QC_LOG_INFO, "net", "peer %s removed", p->identifier);
    net_peer_free(p);
    return QC_OK;
}

/* Puts a big message in c's waiting list; QC_ETOOBIG when it must wait for
 * others to drain first (it is dropped). */
static int stream_add(qc_conn *c, const qc_msg *m, size_t size)
{
    if (c->streams && c->stream_bytes + size > NET_STREAM_CAP) return QC_ETOOBIG;
    qc_stream *s = calloc(1, sizeof *s);
    if (!s) return QC_ENOMEM;
    int rc = qc_wire_encode_msg_payload(m, &s->payload);
    if (rc) {
        free(s);
        return rc;
    }
    qc_stream **tail = &c->streams;
    while (*tail) tail = &(*tail)->next;
    *tail = s;
    c->stream_bytes += size;
    return QC_OK;
}

int qc_net_send(qc_net *n, const qc_msg *m)
{
    net_peer *p = peer_by_id(n, m->to);
    if (!p) return QC_ENOTFOUND;
    qc_conn *c = p->out;
    if (!p->up || !c || c->connecting || c->awaiting || c->failed) return QC_OK;
    size_t size;
    int rc = qc_wire_msg_size(m, &size);
    if (rc) return rc;
    if (size > QC_WIRE_PART_MAX) {
        rc = stream_add(c, m, size);
        if (rc == QC_ETOOBIG) {
            qc_log(QC_LOG_DEBUG, "net", "dropping a %zu-byte message to %s: %zu bytes wait", size,
                   net_conn_name(c), c->stream_bytes);
            return QC_OK;
        }
        if (rc) return rc;
    } else {
        size_t before = c->out.len;
        rc = qc_wire_encode_msg(m, &c->out);
        if (rc) return rc;
        if (c->out.len - c->out_off > NET_OUT_CAP) {
            c->out.len = before;
            conn_fail_later(c, FAIL_OVERFLOW);
            return QC_OK;
        }
        rc = conn_seal(c, before);
        if (rc) return rc;
        count(n, M_SENT, m->type);
    }
    if (ev_is_active(&c->ww)) return QC_OK;
    if (net_conn_flush(c)) conn_fail_later(c, FAIL_WRITE);
    return QC_OK;
}

int qc_net_send_frame(qc_net *n, uint64_t peer, int type, const void *data, size_t len)
{
    if (type != QC_FRAME_FORWARD && type != QC_FRAME_READ_INDEX && type != QC_FRAME_MEMBER &&
        type != QC_FRAME_HEALTH)
        return QC_EINVAL; /* any other type would break the link as a bad frame */
    net_peer *p = peer_by_id(n, peer);
    if (!p) return QC_ENOTFOUND;
    qc_conn *c = p->out;
    if (!p->up || !c || c->connecting || c->awaiting || c->failed) return QC_EIO;
    size_t before = c->out.len;
    int rc = qc_wire_encode_frame((uint8_t)type, data, len, &c->out);
    if (rc) return rc;
    if (c->out.len - c->out_off > NET_OUT_CAP) {
        c->out.len = before;
        conn_fail_later(c, FAIL_OVERFLOW);
        return QC_EIO;
    }
    rc = conn_seal(c, before);
    if (rc) return rc;
    if (!ev_is_active(&c->ww) && net_conn_flush(c)) conn_fail_later(c, FAIL_WRITE);
    return QC_OK;
}

void qc_net_flush(qc_net *n, int timeout_ms)
{
    uint64_t deadline = qc_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        struct pollfd fds[64];
        qc_conn *conns[64];
        nfds_t k = 0;
        for (net_peer *p = n->peers; p && k < 64; p = p->next) {
            qc_conn *c = p->out;
            if (!c || c->connecting || c->failed || c->out_off >= c->out.len) continue;
            fds[k].fd = c->fd;
            fds[k].events = POLLOUT;
            conns[k++] = c;
        }
        uint64_t now = qc_now_ms();
        if (k == 0 || now >= deadline) return;
        int r = poll(fds, k, (int)(deadline - now));
        if (r < 0 && errno != EINTR) return;
        for (nfds_t i = 0; r > 0 && i < k; i++)
            if (fds[i].revents && net_conn_flush(conns[i])) conn_fail_later(conns[i], FAIL_WRITE);
    }
}

int qc_net_link_up(const qc_net *n, uint64_t peer)
{
    const net_peer *p = peer_by_id(n, peer);
    return p && p->up;
}
