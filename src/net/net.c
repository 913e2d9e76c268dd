/* Cluster transport on libev: one listening socket, one outbound connection
 * per peer (non-blocking connect, hello first, backoff with jitter), inbound
 * connections that must open with a hello from a known peer or, from a
 * stranger, with a hello and one JOIN; and the joiner's side of a JOIN. With
 * a secret every connection first runs the handshake of wire.h (an
 * ephemeral key exchange bound to the secret) and every frame after it is
 * encrypted and authenticated (auth.h). It frames, checks and counts bytes; it must
 * never interpret consensus or a join's payload, block the loop
 * (qc_net_flush aside), buffer much for a connection that has not proved
 * itself, or let one bad connection harm any other. */
#define _GNU_SOURCE /* accept4 */
#include "net/net.h"

#include <arpa/inet.h>
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
#include <time.h>
#include <unistd.h>

#include "net/auth.h"
#include "base/common.h"
#include "base/log.h"
#include "core/wire.h"

#define NET_BACKOFF_MIN 0.010   /* first reconnect delay, seconds */
#define NET_BACKOFF_MAX 1.0     /* reconnect delay cap */
#define NET_STABLE_AFTER 1.0    /* a connection up this long resets the backoff */
#define NET_OUT_CAP (16u << 20) /* queued output over this: a slow peer */
/* Big messages wait whole, outside the output queue, and go out a part at a
 * time as it drains, so heartbeats are never stuck behind them. Past this
 * much waiting, a new big message is dropped (raft sends it again) unless
 * nothing waits. */
#define NET_STREAM_CAP (64u << 20)
#define NET_READ_CHUNK 65536
/* Default handshake deadline: a real peer's challenge, AUTH and hello each
 * take one round trip, so 2 s is ample even across regions and on a busy
 * loop; a connection that says nothing holds its slot no longer. */
#define NET_HELLO_TIMEOUT 2.0
#define NET_MAX_INBOUND 256     /* default: inbound connections open at once */
#define NET_MAX_UNIDENTIFIED 32 /* default: inbound connections not identified yet */
#define NET_MAX_STRANGERS 16    /* stranger connections open at once; more are refused */
#define NET_ADDR_LEN 64
#define NET_PEER_ADDRS 4 /* addresses remembered per peer, to know its connections */
/* Out of descriptors or memory, the listener stops this long: a
 * level-triggered accept that fails would otherwise spin the loop. */
#define NET_ACCEPT_PAUSE 0.1
/* Without a secret: a peer that sent us a challenge last time gets this long
 * on the next connection to send another before the link counts as up, so
 * that a node with a secret does not flap our link at every retry. */
#define NET_AUTH_PROBE 0.5
#define NET_LOG_SLOTS 32        /* (key, reason) pairs remembered for logging once */
#define NET_RELOG_AFTER 600.0   /* a remembered pair is logged at WARN again after this */
#define NET_REFUSE_LOG_EVERY 10 /* seconds between two logs of the inbound limit */

enum { FAIL_NONE = 0, FAIL_WRITE, FAIL_OVERFLOW };

#define M_SENT "qcluster_messages_sent_total"
#define M_RECV "qcluster_messages_received_total"
#define M_BAD "qcluster_bad_frames_total"
#define M_AUTH "qcluster_auth_failures_total"
#define M_DROP "qcluster_connections_dropped_total"
#define M_BACKOFF "qcluster_accept_backoffs_total"

/* Limits of inbound connections, each logged at most every
 * NET_REFUSE_LOG_EVERY seconds. */
enum { LIMIT_MAX_INBOUND = 1, LIMIT_UNIDENTIFIED, LIMIT_EVICTED, LIMIT_N };

/* Why a connection failed, for logging each (peer or host, reason) once. */
enum {
    WHY_NO_SECRET_THERE = 1, /* the other node has no secret, this one has */
    WHY_NO_SECRET_HERE,      /* the other node has a secret, this one has none */
    WHY_OTHER_SECRET,        /* its challenge or AUTH does not verify */
    WHY_BAD_TAG,             /* a frame after AUTH does not open */
    WHY_OLD_VERSION,         /* version-2 frames: a node from before encryption */
    WHY_PROTOCOL,            /* not the handshake of wire.h */
    WHY_TIMEOUT,             /* the handshake did not end in time */
};

typedef struct qc_conn qc_conn;
typedef struct net_peer net_peer;
typedef struct qc_join qc_join;

/* A big message's payload being sent as PART frames. */
typedef struct qc_stream {
    qc_buf payload;
    size_t off; /* bytes already framed */
    struct qc_stream *next;
} qc_stream;

struct qc_conn {
    qc_net *net;
    net_peer *peer; /* outbound: always; inbound: once its hello arrived */
    int fd;
    int outbound;
    int connecting;
    int failed; /* FAIL_...: close from the write watcher */
    ev_io rw, ww;
    ev_timer hello_timer;
    ev_tstamp opened;
    qc_buf in;
    qc_buf out;
    size_t out_off;
    qc_stream *streams; /* outbound: big messages waiting, oldest first */
    size_t stream_bytes;
    qc_buf part; /* inbound: the parts of a big message received so far */
    /* inbound from a stranger (its hello named no peer): it may send one JOIN
     * and is closed once the answer is out; the hello timer keeps running */
    int stranger;
    int joined;        /* stranger: its JOIN was answered */
    char *stranger_id; /* stranger: the identifier its hello gave */
    int dead;          /* its peer was removed from inside one of its callbacks */
    /* outbound with a secret: waiting for the challenge (the link is not up
     * yet); without: waiting to see whether a peer that wanted a secret
     * still sends a challenge */
    int awaiting;
    int authed;               /* inbound with a secret: its AUTH verified */
    uint64_t seq_in, seq_out; /* with a secret: the next frame's sequence numbers */
    qc_auth_kx kx;            /* inbound with a secret: its ephemeral key pair, until AUTH */
    uint8_t key_in[QC_AUTH_KEY], key_out[QC_AUTH_KEY]; /* with a secret: session keys */
    /* inbound: not identified yet (no hello from a known peer): counted in
     * the budget of unidentified connections */
    int unidentified;
    int member_addr; /* inbound: it comes from an address of a peer */
    char addr[NET_ADDR_LEN];
    char host[NET_ADDR_LEN]; /* inbound: the numeric address it came from */
    qc_conn *next;           /* inbound list */
};

struct net_peer {
    qc_net *net;
    char *identifier, *host;
    int port;
    uint64_t id;
    qc_conn *out;
    int up;         /* as last reported through on_link */
    int wants_auth; /* without a secret: it sent us a challenge last time */
    ev_timer retry;
    double backoff;
    struct addrinfo *ai, *ai_cur; /* addresses of the dial in progress */
    /* what host resolved to last (ip_key form): its connections come from
     * there, so strangers never crowd them out */
    uint8_t ips[NET_PEER_ADDRS][16];
    int n_ips;
    net_peer *next;
};

/* One qc_net_join in flight: its own connection, outside the peer machinery. */
struct qc_join {
    qc_net *net;
    char *host;
    int port;
    int fd;
    int connecting;
    struct addrinfo *ai, *ai_cur;
    ev_io rw, ww;
    ev_timer start, timeout;
    qc_buf out, in;
    size_t out_off;
    int awaiting; /* with a secret: the member's challenge has not come yet */
    uint8_t key_in[QC_AUTH_KEY], key_out[QC_AUTH_KEY]; /* with a secret: session keys */
    qc_net_join_fn *done;
    void *arg;
    qc_join *next;
};

struct qc_net {
    struct ev_loop *loop;
    char *identifier;
    uint64_t id;
    qc_net_callbacks cb;
    qc_metrics *metrics;
    int lfd;
    ev_io lw;
    ev_timer accept_pause;    /* the listener rests after EMFILE and the like */
    unsigned accept_backoffs; /* pauses in the current episode */
    int backoff_logged;       /* the current episode was logged at WARN */
    ev_tstamp backoff_log;    /* when an episode was last logged */
    /* outbound sockets bind to the listening address (when it is one
     * address, not a wildcard), so that peers see them come from the
     * address they know this node by */
    struct sockaddr_storage src;
    socklen_t src_len;
    qc_buf hello; /* this node's hello frame, sent first on every dial */
    net_peer *peers;
    qc_conn *inbound;
    int n_strangers;
    qc_conn *cur; /* the inbound connection whose callback is running */
    qc_join *joins;
    uint64_t rng;
    int auth; /* a secret is set: frames are sealed and opened */
    /* the cluster keys derived from the secret and, during a rotation, the
     * previous one: a connection is taken under either, dialled under the
     * first one the acceptor's challenge names */
    uint8_t keys[2][QC_AUTH_KEY];
    int n_keys;
    double hello_timeout; /* seconds */
    int max_inbound, n_inbound;
    int max_unidentified, n_unidentified;
    struct {
        uint64_t n;   /* connections refused or evicted since the last log of it */
        ev_tstamp at; /* when it was last logged */
    } refused[LIMIT_N];
    struct {
        char key[128]; /* a peer's identifier or a host */
        int reason;    /* WHY_... */
        ev_tstamp at;
    } logged[NET_LOG_SLOTS];
    unsigned logged_next;
};

static void peer_dial(net_peer *p);
static void on_conn_read(struct ev_loop *loop, ev_io *w, int revents);
static void on_conn_write(struct ev_loop *loop, ev_io *w, int revents);

/* ---- small helpers ---- */

static double net_random(qc_net *n)
{
    n->rng ^= n->rng << 13;
    n->rng ^= n->rng >> 7;
    n->rng ^= n->rng << 17;
    return (double)(n->rng >> 11) / 9007199254740992.0;
}

static char *dup_str(const char *s)
{
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d) memcpy(d, s, len);
    return d;
}

/* Sockets net creates are born non-blocking and close-on-exec (SOCK_FLAGS,
 * accept4): set afterwards, a fork in another thread of the program (a
 * Python subprocess) could hand them to its child in between. */
#define SOCK_FLAGS (SOCK_NONBLOCK | SOCK_CLOEXEC)

static void sock_nodelay(int fd)
{
    int one = 1;
    /* TCP_NODELAY fails on non-TCP sockets only; that is not fatal */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* For a descriptor from outside (qc_net_adopt): whatever it was born with. */
static int sock_setup(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return QC_EIO;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return QC_EIO;
    sock_nodelay(fd);
    return QC_OK;
}

/* The address of sa as 16 bytes, IPv4 as v4-mapped IPv6, so that a peer
 * resolved over IPv4 matches its connection on a dual-stack listener.
 * QC_EINVAL for a family without one (a socketpair's). */
static int ip_key(const struct sockaddr *sa, uint8_t key[16])
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
static int ip_loopback(const uint8_t key[16])
{
    static const uint8_t v6[16] = {[15] = 1}, v4[12] = {[10] = 0xff, [11] = 0xff};
    return memcmp(key, v6, 16) == 0 || (memcmp(key, v4, 12) == 0 && key[12] == 127);
}

/* Remembers where p resolved to (the addresses of ai). */
static void peer_note_addrs(net_peer *p, const struct addrinfo *ai)
{
    p->n_ips = 0;
    for (; ai && p->n_ips < NET_PEER_ADDRS; ai = ai->ai_next)
        if (ip_key(ai->ai_addr, p->ips[p->n_ips]) == QC_OK) p->n_ips++;
}

/* 1 when key is an address of a peer. */
static int ip_is_member(const qc_net *n, const uint8_t key[16])
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

static net_peer *peer_by_name(const qc_net *n, const char *identifier)
{
    for (net_peer *p = n->peers; p; p = p->next)
        if (strcmp(p->identifier, identifier) == 0) return p;
    return NULL;
}

static const char *conn_name(const qc_conn *c) { return c->peer ? c->peer->identifier : c->addr; }

static void count(qc_net *n, const char *name, int type)
{
    const char *label = type ? qc_raft_msg_name(type) : NULL;
    qc_metrics_add(n->metrics, name, type ? "type" : NULL, label, 1);
}

/* The level to log a failure of reason for key (a peer or a host) at: WARN
 * the first time in a while, DEBUG after, so that a peer that retries every
 * second does not fill the log with the same line. */
static int level_once(qc_net *n, const char *key, int reason)
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

static qc_conn *conn_new(qc_net *n, int fd, int outbound, net_peer *p)
{
    qc_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->net = n;
    c->peer = p;
    c->fd = fd;
    c->outbound = outbound;
    ev_io_init(&c->rw, on_conn_read, fd, EV_READ);
    ev_io_init(&c->ww, on_conn_write, fd, EV_WRITE);
    c->rw.data = c->ww.data = c;
    ev_init(&c->hello_timer, NULL);
    return c;
}

/* Stops, closes and frees c; no callbacks, no list changes. */
static void conn_free(qc_conn *c)
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
    if (!c->net->auth) return QC_OK;
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
static int conn_flush(qc_conn *c)
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

static void link_report(net_peer *p, int up)
{
    if (p->up == up) return;
    p->up = up;
    qc_log(QC_LOG_DEBUG, "net", "link to %s %s", p->identifier, up ? "up" : "down");
    qc_net *n = p->net;
    if (up) log_forget(n, p->identifier);
    if (n->cb.on_link) n->cb.on_link(n->cb.ud, p->id, up);
}

static void retry_schedule(net_peer *p)
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

static void dial_forget(net_peer *p)
{
    if (p->ai) freeaddrinfo(p->ai);
    p->ai = p->ai_cur = NULL;
}

/* The outbound connection of p closed or failed: the link is down, dial
 * again after the backoff (from the start if the connection had been up
 * long enough to count as a success). */
static void peer_down(net_peer *p)
{
    qc_conn *c = p->out;
    if (c) {
        int stable =
            !c->connecting && !c->awaiting && ev_now(p->net->loop) - c->opened >= NET_STABLE_AFTER;
        if (stable) p->backoff = NET_BACKOFF_MIN;
        conn_free(c);
        p->out = NULL;
    }
    dial_forget(p);
    retry_schedule(p);
    link_report(p, 0);
}

static void conn_close(qc_conn *c)
{
    if (c->outbound) {
        peer_down(c->peer);
        return;
    }
    qc_net *n = c->net;
    net_peer *p = c->peer;
    inbound_unlink(n, c);
    conn_free(c);
    /* the link is one thing: a connection from the peer closing takes ours
     * down too, so that it comes back up only through a fresh dial */
    if (p && p->out && !p->out->connecting) peer_down(p);
}

static void bad_frame(qc_conn *c, const char *why)
{
    qc_net *n = c->net;
    qc_metrics_add(n->metrics, M_BAD, NULL, NULL, 1);
    qc_log(QC_LOG_WARN, "net", "bad frame on %s connection %s %s: %s; closing",
           c->outbound ? "outbound" : "inbound", c->outbound ? "to" : "from", conn_name(c), why);
    conn_close(c);
}

/* A connection that failed authentication: a bad frame that also counts as
 * an authentication failure, logged once per peer (outbound) or host
 * (inbound: who it is is not proved yet) and reason. */
static void auth_fail(qc_conn *c, int reason, const char *why)
{
    qc_net *n = c->net;
    qc_metrics_add(n->metrics, M_BAD, NULL, NULL, 1);
    qc_metrics_add(n->metrics, M_AUTH, NULL, NULL, 1);
    int level = level_once(n, c->outbound ? c->peer->identifier : c->host, reason);
    qc_log(level, "net", "authentication failed on %s connection %s %s: %s; closing",
           c->outbound ? "outbound" : "inbound", c->outbound ? "to" : "from", conn_name(c), why);
    conn_close(c);
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
            conn_free(c);
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
        conn_close(c);
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
    net_peer *p = peer_by_name(n, h.identifier);
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
        qc_log(QC_LOG_ERROR, "net", "out of memory decoding a message from %s", conn_name(c));
        conn_close(c);
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
        qc_log(QC_LOG_ERROR, "net", "out of memory joining a message from %s", conn_name(c));
        conn_close(c);
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
        conn_close(c);
        return -1;
    }
    if (conn_flush(c) || !ev_is_active(&c->ww)) { /* failed, or all written */
        conn_close(c);
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
            conn_close(c);
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
        qc_log(QC_LOG_ERROR, "net", "out of memory reading from %s", conn_name(c));
        conn_close(c);
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
        qc_log(QC_LOG_DEBUG, "net", "inbound connection from %s closed: %s", conn_name(c),
               errno ? strerror(errno) : "end of stream");
        qc_net *n = c->net;
        n->cur = c;
        if (c->peer && n->cb.on_peer_closed) n->cb.on_peer_closed(n->cb.ud, c->peer->id);
        n->cur = NULL;
        conn_close(c); /* quiet when the callback removed the peer: c->peer is NULL */
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
static long challenge_answer(const qc_net *n, const uint8_t *buf, size_t avail, qc_buf *out,
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
    long k =
        challenge_answer(n, c->in.data, c->in.len, &c->out, c->key_out, c->key_in, &reason, &why);
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
        peer_down(p);
        return;
    }
    c->awaiting = 0;
    c->opened = ev_now(n->loop);
    ev_timer_stop(n->loop, &c->hello_timer);
    ev_io_start(n->loop, &c->ww); /* AUTH and the hello go out when writable */
    qc_log(QC_LOG_DEBUG, "net", "challenge from %s verified", p->identifier);
    link_report(p, 1);
}

/* With a secret: the acceptor sends one challenge and nothing after it. */
static void conn_read_challenge(qc_conn *c)
{
    ssize_t k = conn_recv(c, 256);
    if (k == 0) return;
    if (k < 0) {
        qc_log(QC_LOG_DEBUG, "net", "outbound connection to %s closed%s: %s", conn_name(c),
               c->awaiting ? " before its challenge" : "",
               errno ? strerror(errno) : "end of stream");
        conn_close(c);
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
    qc_log(QC_LOG_DEBUG, "net", "outbound connection to %s closed: %s", conn_name(c),
           k == 0 ? "end of stream" : strerror(errno));
    conn_close(c);
}

static void on_conn_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_conn *c = w->data;
    if (c->outbound)
        conn_read_outbound(c);
    else
        conn_read_inbound(c);
}

/* ---- dialling ---- */

/* The outbound handshake timer: with a secret, no challenge came in time;
 * without, a peer that sent one last time did not this time, so it no
 * longer has a secret and the link is up. */
static void on_challenge_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_conn *c = w->data;
    net_peer *p = c->peer;
    qc_net *n = c->net;
    if (!n->auth) {
        c->awaiting = 0;
        p->wants_auth = 0;
        qc_log(QC_LOG_INFO, "net", "%s sends no challenge any more: linking", p->identifier);
        link_report(p, 1);
        return;
    }
    qc_metrics_add(n->metrics, M_DROP, "reason", "handshake_timeout", 1);
    qc_log(level_once(n, p->identifier, WHY_TIMEOUT), "net",
           "no challenge from %s within %.1f s (does it run without a secret?); closing",
           p->identifier, n->hello_timeout);
    peer_down(p);
}

static void conn_established(qc_conn *c)
{
    net_peer *p = c->peer;
    qc_net *n = c->net;
    c->connecting = 0;
    c->opened = ev_now(n->loop);
    dial_forget(p);
    ev_io_stop(n->loop, &c->ww);
    ev_io_start(n->loop, &c->rw);
    qc_log(QC_LOG_DEBUG, "net", "connected to %s at %s:%d", p->identifier, p->host, p->port);
    if (n->auth || p->wants_auth) {
        c->awaiting = 1;
        ev_timer_init(&c->hello_timer, on_challenge_timeout,
                      n->auth ? n->hello_timeout : NET_AUTH_PROBE, 0.);
        c->hello_timer.data = c;
        ev_timer_start(n->loop, &c->hello_timer);
    }
    if (n->auth) return; /* the hello waits for the challenge */
    if (qc_buf_append(&c->out, n->hello.data, n->hello.len)) {
        qc_log(QC_LOG_ERROR, "net", "out of memory connecting to %s", p->identifier);
        peer_down(p);
        return;
    }
    ev_io_start(n->loop, &c->ww); /* the hello goes out when writable */
    if (!c->awaiting) link_report(p, 1);
}

/* The current address failed: try the next one, or back off. */
static void dial_next(net_peer *p, const char *why)
{
    if (p->out) {
        conn_free(p->out);
        p->out = NULL;
    }
    if (p->ai_cur) p->ai_cur = p->ai_cur->ai_next;
    if (p->ai_cur) {
        peer_dial(p);
        return;
    }
    qc_log(QC_LOG_DEBUG, "net", "cannot connect to %s at %s:%d: %s", p->identifier, p->host,
           p->port, why);
    dial_forget(p);
    retry_schedule(p);
    link_report(p, 0);
}

/* 0 when the non-blocking connect on fd succeeded, else its errno. */
static int connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    return err;
}

static void conn_connect_done(qc_conn *c)
{
    int err = connect_result(c->fd);
    if (err) {
        dial_next(c->peer, strerror(err));
        return;
    }
    conn_established(c);
}

static void on_conn_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_conn *c = w->data;
    if (c->connecting) {
        conn_connect_done(c);
        return;
    }
    if (c->failed) {
        qc_log(QC_LOG_WARN, "net", "dropping connection to %s: %s", conn_name(c),
               c->failed == FAIL_OVERFLOW ? "output queue full (slow peer)" : "write failed");
        conn_close(c);
        return;
    }
    if (conn_flush(c)) {
        qc_log(QC_LOG_DEBUG, "net", "write to %s failed: %s", conn_name(c), strerror(errno));
        conn_close(c);
        return;
    }
    if (c->joined && !ev_is_active(&c->ww)) conn_close(c); /* the answer is out */
}

/* Resolves host:port for a dial into *ai (the caller frees it); QC_EIO,
 * logged on behalf of who, when it cannot. */
static int resolve(const char *host, int port, const char *who, struct addrinfo **ai)
{
    char serv[16];
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(serv, sizeof serv, "%d", port);
    int rc = getaddrinfo(host, serv, &hints, ai);
    if (rc) {
        *ai = NULL;
        qc_log(QC_LOG_DEBUG, "net", "cannot resolve %s for %s: %s", host, who, gai_strerror(rc));
        return QC_EIO;
    }
    return QC_OK;
}

static int dial_resolve(net_peer *p)
{
    int rc = resolve(p->host, p->port, p->identifier, &p->ai);
    p->ai_cur = p->ai;
    if (!rc) peer_note_addrs(p, p->ai);
    return rc;
}

/* Binds s to the listening address before it dials a, so that the peer sees
 * this node come from the address it knows it by (several nodes on one host,
 * a host with several addresses). Not when listening on a wildcard, nor
 * from a loopback address to another host or the other way round; a
 * failure only leaves the choice to the kernel. */
static void dial_bind(const qc_net *n, int s, const struct addrinfo *a)
{
    uint8_t src[16], dst[16];
    if (!n->src_len || n->src.ss_family != a->ai_family) return;
    if (ip_key((const struct sockaddr *)&n->src, src) || ip_key(a->ai_addr, dst)) return;
    if (ip_loopback(src) != ip_loopback(dst)) return;
#ifdef IP_BIND_ADDRESS_NO_PORT
    int one = 1; /* the port is picked at connect, per destination */
    (void)setsockopt(s, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    if (bind(s, (const struct sockaddr *)&n->src, n->src_len) < 0)
        qc_log(QC_LOG_DEBUG, "net", "cannot bind an outbound socket: %s", strerror(errno));
}

/* Opens a non-blocking socket and starts connecting it to a: QC_OK with *fd
 * and *pending (1 while the connect is in progress), or QC_EIO with errno
 * set and nothing left open. */
static int dial_socket(const qc_net *n, const struct addrinfo *a, int *fd, int *pending)
{
    int s = socket(a->ai_family, a->ai_socktype | SOCK_FLAGS, a->ai_protocol);
    if (s < 0) return QC_EIO;
    sock_nodelay(s);
    dial_bind(n, s, a);
    *pending = connect(s, a->ai_addr, a->ai_addrlen) != 0;
    if (*pending && errno != EINPROGRESS && errno != EINTR) goto fail;
    *fd = s;
    return QC_OK;
fail:;
    int err = errno;
    close(s);
    errno = err;
    return QC_EIO;
}

/* Starts a non-blocking connect to p->ai_cur. */
static void peer_dial(net_peer *p)
{
    qc_net *n = p->net;
    int fd, pending;
    if (dial_socket(n, p->ai_cur, &fd, &pending)) {
        dial_next(p, strerror(errno));
        return;
    }
    if (!(p->out = conn_new(n, fd, 1, p))) {
        close(fd);
        dial_next(p, strerror(ENOMEM));
        return;
    }
    p->out->connecting = 1;
    snprintf(p->out->addr, NET_ADDR_LEN, "%s:%d", p->host, p->port);
    if (!pending) {
        conn_established(p->out);
        return;
    }
    ev_io_start(n->loop, &p->out->ww);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    net_peer *p = w->data;
    if (p->out) return;
    dial_forget(p);
    if (dial_resolve(p)) {
        retry_schedule(p);
        return;
    }
    peer_dial(p);
}

/* ---- joining (this node is the stranger) ---- */

/* Stops j's watchers and closes its socket; j stays allocated. */
static void join_stop(qc_join *j)
{
    struct ev_loop *loop = j->net->loop;
    ev_io_stop(loop, &j->rw);
    ev_io_stop(loop, &j->ww);
    ev_timer_stop(loop, &j->start);
    ev_timer_stop(loop, &j->timeout);
    if (j->fd >= 0) close(j->fd);
    j->fd = -1;
    if (j->ai) freeaddrinfo(j->ai);
    j->ai = j->ai_cur = NULL;
}

/* Frees j without calling done (qc_net_free drops pending joins so). */
static void join_free(qc_join *j)
{
    join_stop(j);
    qc_auth_wipe(j->key_in, sizeof j->key_in);
    qc_auth_wipe(j->key_out, sizeof j->key_out);
    qc_buf_free(&j->in);
    qc_buf_free(&j->out);
    free(j->host);
    free(j);
}

/* Ends j: unlinks and closes it, then calls done once and frees j. */
static void join_finish(qc_join *j, int rc, const uint8_t *answer, size_t len)
{
    qc_net *n = j->net;
    for (qc_join **pp = &n->joins; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    }
    join_stop(j);
    if (rc)
        qc_log(QC_LOG_DEBUG, "net", "join through %s:%d failed: %s", j->host, j->port,
               qc_strerror(rc));
    /* done may start joins or free n: j is out of their reach, and is not
     * touched through n afterwards */
    j->done(j->arg, rc, answer, len);
    qc_auth_wipe(j->key_in, sizeof j->key_in);
    qc_auth_wipe(j->key_out, sizeof j->key_out);
    qc_buf_free(&j->in);
    qc_buf_free(&j->out);
    free(j->host);
    free(j);
}

/* Writes the JOIN (after AUTH, with a secret); the ww watcher finishes the
 * job. Returns -1 when j was finished. */
static int join_flush(qc_join *j)
{
    struct ev_loop *loop = j->net->loop;
    while (j->out_off < j->out.len) {
        ssize_t k = send(j->fd, j->out.data + j->out_off, j->out.len - j->out_off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(loop, &j->ww);
            return 0;
        }
        if (k < 0) {
            qc_log(QC_LOG_DEBUG, "net", "write to %s:%d failed: %s", j->host, j->port,
                   strerror(errno));
            join_finish(j, QC_EIO, NULL, 0);
            return -1;
        }
        j->out_off += (size_t)k;
    }
    ev_io_stop(loop, &j->ww);
    return 0;
}

static void join_connected(qc_join *j)
{
    j->connecting = 0;
    ev_io_stop(j->net->loop, &j->ww);
    ev_io_start(j->net->loop, &j->rw);
    j->awaiting = j->net->auth; /* with a secret, the JOIN waits for the challenge */
    if (!j->awaiting) join_flush(j);
}

/* Dials j->ai_cur, else the addresses after it; QC_EIO when none is left. */
static void join_dial(qc_join *j)
{
    for (; j->ai_cur; j->ai_cur = j->ai_cur->ai_next) {
        int pending;
        if (dial_socket(j->net, j->ai_cur, &j->fd, &pending)) {
            qc_log(QC_LOG_DEBUG, "net", "cannot connect to %s:%d: %s", j->host, j->port,
                   strerror(errno));
            continue;
        }
        ev_io_set(&j->rw, j->fd, EV_READ);
        ev_io_set(&j->ww, j->fd, EV_WRITE);
        if (!pending) {
            join_connected(j);
            return;
        }
        j->connecting = 1;
        ev_io_start(j->net->loop, &j->ww);
        return;
    }
    join_finish(j, QC_EIO, NULL, 0);
}

static void on_join_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    qc_join *j = w->data;
    if (!j->connecting) {
        join_flush(j);
        return;
    }
    int err = connect_result(j->fd);
    if (!err) {
        join_connected(j);
        return;
    }
    qc_log(QC_LOG_DEBUG, "net", "cannot connect to %s:%d: %s", j->host, j->port, strerror(err));
    ev_io_stop(loop, &j->ww);
    close(j->fd);
    j->fd = -1;
    j->ai_cur = j->ai_cur->ai_next;
    join_dial(j);
}

/* The member's answer was bad (auth: it failed authentication): counted,
 * logged, and the join fails with QC_EIO. */
static void join_bad(qc_join *j, int auth, const char *why)
{
    qc_net *n = j->net;
    qc_metrics_add(n->metrics, M_BAD, NULL, NULL, 1);
    if (auth) qc_metrics_add(n->metrics, M_AUTH, NULL, NULL, 1);
    char key[128];
    snprintf(key, sizeof key, "join %s:%d", j->host, j->port);
    /* a joiner asks again and again: say why once, not at every try */
    int level = auth ? level_once(n, key, WHY_OTHER_SECRET) : QC_LOG_WARN;
    qc_log(level, "net", "%s from %s:%d answering a join: %s; closing",
           auth ? "authentication failed" : "bad frame", j->host, j->port, why);
    join_finish(j, QC_EIO, NULL, 0);
}

/* With a secret: checks the member's CHALLENGE at the start of j->in, then
 * sends AUTH and the sealed JOIN. Returns -1 when j was finished, 0 while
 * the challenge is incomplete or when it was answered. */
static int join_challenge(qc_join *j)
{
    qc_buf out = {0};
    int reason;
    const char *why;
    long k =
        challenge_answer(j->net, j->in.data, j->in.len, &out, j->key_out, j->key_in, &reason, &why);
    if (k == 0) return 0;
    if (k < 0) {
        if (reason == WHY_PROTOCOL && strcmp(why, "it sent something else than a challenge") == 0)
            why = "no challenge: does the member run without a secret?";
        return join_bad(j, 1, why), -1;
    }
    size_t start = out.len;
    int rc = qc_buf_append(&out, j->out.data, j->out.len);
    if (!rc) rc = qc_auth_seal(&out, start, QC_WIRE_HEADER, j->key_out, QC_AUTH_DIR_DIALER, 1);
    if (rc) {
        qc_buf_free(&out);
        qc_log(QC_LOG_ERROR, "net", "out of memory joining through %s:%d", j->host, j->port);
        join_finish(j, QC_EIO, NULL, 0);
        return -1;
    }
    qc_buf_free(&j->out);
    j->out = out;
    j->out_off = 0;
    j->in.len -= (size_t)k;
    memmove(j->in.data, j->in.data + k, j->in.len);
    j->awaiting = 0;
    return join_flush(j);
}

/* What is wrong with the header of the answer at h, or NULL; *auth is set
 * when it is an authentication failure. */
static const char *join_header_problem(const qc_join *j, const uint8_t *h, uint32_t *plen,
                                       int *auth)
{
    int secret = j->net->auth;
    uint8_t version, type;
    int rc = qc_wire_header_v(h, &version, &type, plen);
    *auth = !rc && version != (secret ? QC_WIRE_VERSION_SEALED : QC_WIRE_VERSION);
    if (*auth && type == QC_FRAME_CHALLENGE)
        return "it sent a challenge: it has a secret and this node has none";
    if (*auth) return secret ? "an answer without a tag" : "an authenticated answer";
    if (rc) return rc == QC_ETOOBIG ? "frame too big" : "bad header";
    return type == QC_FRAME_JOIN ? NULL : "not a join answer";
}

/* Looks for the one JOIN frame of the answer in j->in (sealed by the member
 * with a secret). */
static void join_answer(qc_join *j)
{
    if (j->in.len < QC_WIRE_HEADER) return;
    uint8_t *h = j->in.data;
    uint32_t plen;
    int auth;
    const char *why = join_header_problem(j, h, &plen, &auth);
    if (why) {
        join_bad(j, auth, why);
        return;
    }
    size_t tag = j->net->auth ? QC_WIRE_MAC : 0;
    if (j->in.len - QC_WIRE_HEADER < plen + tag) return;
    size_t len = QC_WIRE_HEADER + plen;
    if (tag && qc_auth_open(j->key_in, QC_AUTH_DIR_ACCEPTOR, 0, QC_WIRE_HEADER, h, len, h + len))
        join_bad(j, 1, "an answer with a bad tag");
    else if (!tag && qc_wire_check(h, h + QC_WIRE_HEADER, plen))
        join_bad(j, 0, "bad checksum");
    else
        join_finish(j, QC_OK, h + QC_WIRE_HEADER, plen);
}

static void on_join_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_join *j = w->data;
    if (qc_buf_reserve(&j->in, NET_READ_CHUNK)) {
        qc_log(QC_LOG_ERROR, "net", "out of memory reading a join answer");
        join_finish(j, QC_EIO, NULL, 0);
        return;
    }
    ssize_t k = recv(j->fd, j->in.data + j->in.len, j->in.cap - j->in.len, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (k <= 0) {
        qc_log(QC_LOG_DEBUG, "net", "%s:%d closed before answering the join: %s", j->host, j->port,
               k == 0 ? "end of stream" : strerror(errno));
        join_finish(j, QC_EIO, NULL, 0);
        return;
    }
    j->in.len += (size_t)k;
    if (j->awaiting && (join_challenge(j) || j->awaiting)) return;
    join_answer(j);
}

/* Resolves and dials from the loop, so that done never runs inside
 * qc_net_join. */
static void on_join_start(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_join *j = w->data;
    if (resolve(j->host, j->port, "a join", &j->ai)) {
        join_finish(j, QC_EIO, NULL, 0);
        return;
    }
    j->ai_cur = j->ai;
    join_dial(j);
}

static void on_join_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_join *j = w->data;
    char key[128];
    snprintf(key, sizeof key, "join %s:%d", j->host, j->port);
    if (j->awaiting)
        qc_log(level_once(j->net, key, WHY_TIMEOUT), "net",
               "no challenge from %s:%d in time (does the member run without a secret?)", j->host,
               j->port);
    else
        qc_log(QC_LOG_DEBUG, "net", "no join answer from %s:%d in time", j->host, j->port);
    join_finish(j, QC_EBUSY, NULL, 0);
}

/* ---- accepting ---- */

static void on_hello_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_conn *c = w->data;
    qc_net *n = c->net;
    qc_metrics_add(n->metrics, M_DROP, "reason", "handshake_timeout", 1);
    int level = level_once(n, c->host, WHY_TIMEOUT);
    if (c->stranger)
        qc_log(level, "net", "stranger '%s' at %s did not finish joining within %.1f s; closing",
               c->stranger_id, c->addr, n->hello_timeout);
    else if (n->auth && !c->authed)
        qc_log(level, "net", "no AUTH from %s within %.1f s of its challenge; closing", c->addr,
               n->hello_timeout);
    else
        qc_log(level, "net", "no hello from %s within %.1f s%s; closing", c->addr, n->hello_timeout,
               n->auth ? ""
                       : " (a node with a secret waits for a challenge this node never sends)");
    conn_close(c);
}

/* Sends a new inbound connection its CHALLENGE: a fresh ephemeral public
 * key and its tag under each cluster key; QC_OK or an error (c is left to
 * the caller to close). */
static int conn_challenge(qc_conn *c)
{
    qc_net *n = c->net;
    uint8_t p[QC_WIRE_KX + 2 * QC_WIRE_TAG];
    qc_auth_kx_keypair(&c->kx);
    memcpy(p, c->kx.pk, QC_WIRE_KX);
    for (int i = 0; i < n->n_keys; i++)
        qc_auth_tag(n->keys[i], QC_AUTH_DIR_CHALLENGE, 0, c->kx.pk, QC_WIRE_KX,
                    p + QC_WIRE_KX + (size_t)i * QC_WIRE_TAG);
    size_t plen = QC_WIRE_KX + (size_t)n->n_keys * QC_WIRE_TAG;
    int rc = qc_wire_encode_frame(QC_FRAME_CHALLENGE, p, plen, &c->out);
    if (!rc) {
        c->out.data[2] = QC_WIRE_VERSION_SEALED;
        memset(c->out.data + 8, 0, 4); /* no CRC in version 3 */
        rc = conn_flush(c);
    }
    return rc;
}

/* Counts a connection closed at limit (LIMIT_...) and logs it at most every
 * NET_REFUSE_LOG_EVERY seconds, with how many since the last log. */
static void limit_hit(qc_net *n, int limit, const char *who)
{
    static const char *const reason[LIMIT_N] = {NULL, "max_inbound", "unidentified", "evicted"};
    qc_metrics_add(n->metrics, M_DROP, "reason", reason[limit], 1);
    n->refused[limit].n++;
    ev_tstamp now = ev_now(n->loop);
    if (n->refused[limit].at > 0 && now - n->refused[limit].at < NET_REFUSE_LOG_EVERY) return;
    unsigned long long k = (unsigned long long)n->refused[limit].n;
    if (limit == LIMIT_MAX_INBOUND)
        qc_log(QC_LOG_WARN, "net",
               "refused %llu inbound connection(s): %d are open, the limit (max_inbound)", k,
               n->n_inbound);
    else if (limit == LIMIT_UNIDENTIFIED)
        qc_log(QC_LOG_WARN, "net",
               "refused %llu inbound connection(s): %d have not identified themselves yet, the "
               "limit for those",
               k, n->n_unidentified);
    else
        qc_log(QC_LOG_WARN, "net",
               "closed %llu unidentified connection(s) (the last from %s) to make room for "
               "connections from members' addresses",
               k, who);
    n->refused[limit].n = 0;
    n->refused[limit].at = now;
}

/* Closes the oldest connection that has not identified itself and does not
 * come from a member's address: a member's new connection needs its room.
 * Returns 1 when there was one. */
static int evict_stranger(qc_net *n)
{
    qc_conn *oldest = NULL; /* the list is newest first */
    for (qc_conn *c = n->inbound; c; c = c->next)
        if (c->unidentified && !c->member_addr && c != n->cur) oldest = c;
    if (!oldest) return 0;
    limit_hit(n, LIMIT_EVICTED, oldest->addr);
    conn_close(oldest);
    return 1;
}

/* Makes room for a new inbound connection: 0, or the LIMIT_... it is over.
 * Strangers never lock out a member: a connection from a member's address
 * takes the room of the oldest unidentified one from elsewhere. */
static int inbound_room(qc_net *n, int member_addr)
{
    int limit = n->n_inbound >= n->max_inbound             ? LIMIT_MAX_INBOUND
                : n->n_unidentified >= n->max_unidentified ? LIMIT_UNIDENTIFIED
                                                           : 0;
    if (limit && member_addr && evict_stranger(n)) return 0;
    return limit;
}

/* The address fd comes from: text into addr and host ("?" when unknown),
 * and *member_addr set when it is a peer's. */
static void peer_address(qc_net *n, int fd, char *addr, char *host, int *member_addr)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char h[INET6_ADDRSTRLEN], serv[8];
    uint8_t key[16];
    snprintf(addr, NET_ADDR_LEN, "?");
    snprintf(host, NET_ADDR_LEN, "?");
    *member_addr = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) return;
    *member_addr = ip_key((struct sockaddr *)&ss, key) == QC_OK && ip_is_member(n, key);
    if (getnameinfo((struct sockaddr *)&ss, len, h, sizeof h, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV))
        return;
    snprintf(addr, NET_ADDR_LEN, "%s:%s", h, serv);
    snprintf(host, NET_ADDR_LEN, "%s", h);
}

/* Out of descriptors or memory: the listener rests for NET_ACCEPT_PAUSE
 * rather than spin on a connection it cannot take; counted, and logged once
 * an episode (at most every NET_REFUSE_LOG_EVERY seconds). */
static void accept_backoff(qc_net *n, int err)
{
    ev_io_stop(n->loop, &n->lw);
    ev_timer_set(&n->accept_pause, NET_ACCEPT_PAUSE, 0.);
    ev_timer_start(n->loop, &n->accept_pause);
    qc_metrics_add(n->metrics, M_BACKOFF, "listener", "cluster", 1);
    if (n->accept_backoffs++) return;
    ev_tstamp now = ev_now(n->loop);
    if (n->backoff_log > 0 && now - n->backoff_log < NET_REFUSE_LOG_EVERY) return;
    n->backoff_log = now;
    n->backoff_logged = 1;
    qc_log(QC_LOG_WARN, "net",
           "cluster listener: accept: %s; pausing it %.0f ms at a time until some close",
           strerror(err), NET_ACCEPT_PAUSE * 1000);
}

static void on_accept_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    qc_net *n = w->data;
    ev_io_start(loop, &n->lw);
}

/* The backlog is empty: an episode of pauses, if any, is over. */
static void accept_caught_up(qc_net *n)
{
    if (n->backoff_logged)
        qc_log(QC_LOG_INFO, "net", "cluster listener: accepting again after %u pause(s)",
               n->accept_backoffs);
    n->accept_backoffs = 0;
    n->backoff_logged = 0;
}

/* Takes one connection off the backlog. Returns 0 to go on, -1 when the
 * backlog is empty or the listener paused. */
static int accept_one(qc_net *n)
{
    int fd = accept4(n->lfd, NULL, NULL, SOCK_FLAGS);
    if (fd >= 0) {
        (void)qc_net_adopt(n, fd);
        return 0;
    }
    int err = errno;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        accept_backoff(n, err);
        return -1;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
        accept_caught_up(n);
        return -1;
    }
    if (err == EINTR || err == ECONNABORTED) return 0;
    qc_log(QC_LOG_WARN, "net", "accept failed: %s", strerror(err));
    return -1;
}

int qc_net_adopt(qc_net *n, int fd)
{
    char addr[NET_ADDR_LEN], host[NET_ADDR_LEN];
    int member_addr;
    peer_address(n, fd, addr, host, &member_addr);
    int limit = inbound_room(n, member_addr);
    if (limit) {
        close(fd);
        limit_hit(n, limit, addr);
        return QC_EBUSY;
    }
    qc_conn *c = sock_setup(fd) ? NULL : conn_new(n, fd, 0, NULL);
    if (!c) {
        qc_log(QC_LOG_WARN, "net", "cannot set up an inbound connection");
        close(fd);
        return QC_EIO;
    }
    memcpy(c->addr, addr, sizeof c->addr);
    memcpy(c->host, host, sizeof c->host);
    c->member_addr = member_addr;
    c->unidentified = 1;
    c->next = n->inbound;
    n->inbound = c;
    n->n_inbound++;
    n->n_unidentified++;
    ev_timer_init(&c->hello_timer, on_hello_timeout, n->hello_timeout, 0.);
    c->hello_timer.data = c;
    ev_timer_start(n->loop, &c->hello_timer);
    ev_io_start(n->loop, &c->rw);
    if (n->auth && conn_challenge(c)) {
        qc_log(QC_LOG_WARN, "net", "cannot send a challenge to %s", c->addr);
        conn_close(c);
        return QC_EIO;
    }
    return QC_OK;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_net *n = w->data;
    for (int i = 0; i < 64; i++)
        if (accept_one(n)) return;
}

/* Remembers the address fd listens on for dial_bind, unless a wildcard. */
static void note_listen_addr(qc_net *n, int fd)
{
    static const uint8_t any4[16] = {[10] = 0xff, [11] = 0xff}, any6[16] = {0};
    uint8_t key[16];
    n->src_len = sizeof n->src;
    if (getsockname(fd, (struct sockaddr *)&n->src, &n->src_len) < 0 ||
        ip_key((struct sockaddr *)&n->src, key) || memcmp(key, any4, 16) == 0 ||
        memcmp(key, any6, 16) == 0) {
        n->src_len = 0;
        return;
    }
    if (n->src.ss_family == AF_INET) ((struct sockaddr_in *)(void *)&n->src)->sin_port = 0;
    if (n->src.ss_family == AF_INET6) ((struct sockaddr_in6 *)(void *)&n->src)->sin6_port = 0;
}

static int listen_on(qc_net *n, const char *host, int port)
{
    char serv[16];
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(serv, sizeof serv, "%d", port);
    int rc = getaddrinfo(host, serv, &hints, &res);
    if (rc) {
        qc_log(QC_LOG_ERROR, "net", "cannot resolve %s: %s", host, gai_strerror(rc));
        errno = EADDRNOTAVAIL;
        return QC_EIO;
    }
    int fd = -1, err = 0, one = 1;
    for (const struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_FLAGS, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        sock_nodelay(fd);
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 128) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        qc_log(QC_LOG_ERROR, "net", "cannot listen on %s:%d: %s", host, port, strerror(err));
        errno = err;
        return QC_EIO;
    }
    n->lfd = fd;
    note_listen_addr(n, fd);
    ev_io_init(&n->lw, on_accept, fd, EV_READ);
    n->lw.data = n;
    ev_io_start(n->loop, &n->lw);
    ev_timer_init(&n->accept_pause, on_accept_pause, NET_ACCEPT_PAUSE, 0.);
    n->accept_pause.data = n;
    return QC_OK;
}

/* ---- public interface ---- */

static void metrics_declare(qc_metrics *m)
{
    if (!m) return;
    qc_metrics_declare(m, M_SENT, QC_METRIC_COUNTER, "Raft messages sent to peers, by type.");
    qc_metrics_declare(m, M_RECV, QC_METRIC_COUNTER, "Raft messages received from peers, by type.");
    qc_metrics_declare(m, M_BAD, QC_METRIC_COUNTER,
                       "Frames rejected as malformed or unauthenticated; each closed its "
                       "connection.");
    qc_metrics_add(m, M_BAD, NULL, NULL, 0);
    qc_metrics_declare(m, M_AUTH, QC_METRIC_COUNTER,
                       "Cluster connections closed for failing authentication: a missing or bad "
                       "tag, a replay, or a node with another secret or none.");
    qc_metrics_add(m, M_AUTH, NULL, NULL, 0);
    qc_metrics_declare(m, M_DROP, QC_METRIC_COUNTER,
                       "Cluster connections closed at a limit: max_inbound (too many open), "
                       "unidentified (too many not identified yet), evicted (an unidentified "
                       "one closed to make room for a member's address), handshake_timeout (no "
                       "challenge, AUTH or hello in time).");
    qc_metrics_add(m, M_DROP, "reason", "max_inbound", 0);
    qc_metrics_add(m, M_DROP, "reason", "unidentified", 0);
    qc_metrics_add(m, M_DROP, "reason", "evicted", 0);
    qc_metrics_add(m, M_DROP, "reason", "handshake_timeout", 0);
    /* shared with the API's listener (listener="api"): declaring twice is harmless */
    qc_metrics_declare(m, M_BACKOFF, QC_METRIC_COUNTER,
                       "Times a listener paused accepting for lack of descriptors or memory "
                       "(EMFILE, ENFILE, ENOBUFS, ENOMEM), by listener (api, cluster).");
    qc_metrics_add(m, M_BACKOFF, "listener", "cluster", 0);
}

int qc_net_new(struct ev_loop *loop, const qc_net_config *cfg, const qc_net_callbacks *cb,
               qc_metrics *metrics, qc_net **out)
{
    *out = NULL;
    if (!loop || !cfg || !cfg->identifier || cfg->listen_port < 0 || cfg->listen_port > 65535)
        return QC_EINVAL;
    if ((cfg->secret && !cfg->secret[0]) || cfg->max_inbound < 0 || cfg->hello_timeout_ms < 0 ||
        cfg->max_unidentified < 0)
        return QC_EINVAL;
    if (cfg->secret_previous && (!cfg->secret || !cfg->secret_previous[0])) return QC_EINVAL;
    if (cfg->secret && qc_auth_init()) return QC_EIO;
    qc_net *n = calloc(1, sizeof *n);
    if (!n) return QC_ENOMEM;
    if (cfg->secret) {
        n->auth = 1;
        qc_auth_derive(cfg->secret, strlen(cfg->secret), n->keys[n->n_keys++]);
    }
    if (cfg->secret_previous && strcmp(cfg->secret_previous, cfg->secret) != 0) {
        const char *old = cfg->secret_previous;
        qc_auth_derive(old, strlen(old), n->keys[n->n_keys++]);
    }
    n->hello_timeout = cfg->hello_timeout_ms ? cfg->hello_timeout_ms / 1000.0 : NET_HELLO_TIMEOUT;
    n->max_inbound = cfg->max_inbound ? cfg->max_inbound : NET_MAX_INBOUND;
    n->max_unidentified = cfg->max_unidentified ? cfg->max_unidentified : NET_MAX_UNIDENTIFIED;
    n->loop = loop;
    n->lfd = -1;
    n->metrics = metrics;
    if (cb) n->cb = *cb;
    n->id = qc_hash_id(cfg->identifier);
    n->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ n->id ^ (uintptr_t)n;
    if (!n->rng) n->rng = 0x9E3779B97F4A7C15ull;
    n->identifier = dup_str(cfg->identifier);
    int rc = n->identifier ? QC_OK : QC_ENOMEM;
    if (!rc) rc = qc_wire_encode_hello(cfg->identifier, cfg->metadata, &n->hello);
    if (!rc) rc = listen_on(n, cfg->listen_host ? cfg->listen_host : "127.0.0.1", cfg->listen_port);
    if (rc) {
        int saved = errno;
        qc_net_free(n);
        errno = saved;
        return rc;
    }
    metrics_declare(metrics);
    *out = n;
    return QC_OK;
}

static void peer_free(net_peer *p)
{
    ev_timer_stop(p->net->loop, &p->retry);
    if (p->out) conn_free(p->out);
    dial_forget(p);
    free(p->identifier);
    free(p->host);
    free(p);
}

void qc_net_free(qc_net *n)
{
    if (!n) return;
    while (n->peers) {
        net_peer *p = n->peers;
        n->peers = p->next;
        peer_free(p);
    }
    while (n->inbound) {
        qc_conn *c = n->inbound;
        n->inbound = c->next;
        conn_free(c);
    }
    while (n->joins) {
        qc_join *j = n->joins;
        n->joins = j->next;
        join_free(j);
    }
    if (n->lfd >= 0) {
        ev_io_stop(n->loop, &n->lw);
        ev_timer_stop(n->loop, &n->accept_pause);
        close(n->lfd);
    }
    qc_buf_free(&n->hello);
    free(n->identifier);
    qc_auth_wipe(n->keys, sizeof n->keys);
    free(n);
}

/* A numeric host is known as the peer's address at once (a name once it is
 * first resolved, from the loop), so that its first connection is never
 * taken for a stranger's. */
static void note_numeric_addr(net_peer *p)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(p->host, NULL, &hints, &ai)) return;
    peer_note_addrs(p, ai);
    freeaddrinfo(ai);
}

int qc_net_add_peer(qc_net *n, const char *identifier, const char *host, int port)
{
    if (!identifier || !host || port <= 0 || port > 65535) return QC_EINVAL;
    size_t il = strlen(identifier);
    if (il == 0 || il > 255 || strcmp(identifier, n->identifier) == 0) return QC_EINVAL;
    if (peer_by_name(n, identifier)) return QC_EINVAL;
    net_peer *p = calloc(1, sizeof *p);
    if (!p) return QC_ENOMEM;
    p->identifier = dup_str(identifier);
    p->host = dup_str(host);
    if (!p->identifier || !p->host) {
        free(p->identifier);
        free(p->host);
        free(p);
        return QC_ENOMEM;
    }
    p->net = n;
    p->port = port;
    p->id = qc_hash_id(identifier);
    note_numeric_addr(p);
    p->backoff = NET_BACKOFF_MIN;
    ev_timer_init(&p->retry, on_retry, 0., 0.);
    p->retry.data = p;
    ev_timer_start(n->loop, &p->retry); /* dial from the loop, not from here */
    p->next = n->peers;
    n->peers = p;
    return QC_OK;
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
        conn_free(c);
    }
    qc_log(QC_LOG_INFO, "net", "peer %s removed", p->identifier);
    peer_free(p);
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
                   conn_name(c), c->stream_bytes);
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
    if (conn_flush(c)) conn_fail_later(c, FAIL_WRITE);
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
    if (!ev_is_active(&c->ww) && conn_flush(c)) conn_fail_later(c, FAIL_WRITE);
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
            if (fds[i].revents && conn_flush(conns[i])) conn_fail_later(conns[i], FAIL_WRITE);
    }
}

int qc_net_link_up(const qc_net *n, uint64_t peer)
{
    const net_peer *p = peer_by_id(n, peer);
    return p && p->up;
}

int qc_net_join(qc_net *n, const char *host, int port, const void *payload, size_t len,
                int timeout_ms, qc_net_join_fn *done, void *arg)
{
    if (!host || port <= 0 || port > 65535 || timeout_ms <= 0 || !done) return QC_EINVAL;
    if (len > QC_WIRE_MAX_PAYLOAD || (len && !payload)) return QC_EINVAL;
    qc_join *j = calloc(1, sizeof *j);
    if (!j) return QC_ENOMEM;
    j->net = n;
    j->fd = -1;
    j->port = port;
    j->done = done;
    j->arg = arg;
    j->host = dup_str(host);
    int rc = j->host ? qc_wire_encode_frame(QC_FRAME_JOIN, payload, len, &j->out) : QC_ENOMEM;
    if (rc) {
        qc_buf_free(&j->out);
        free(j->host);
        free(j);
        return rc == QC_ENOMEM ? QC_ENOMEM : QC_EINVAL;
    }
    ev_io_init(&j->rw, on_join_read, -1, EV_READ);
    ev_io_init(&j->ww, on_join_write, -1, EV_WRITE);
    ev_timer_init(&j->start, on_join_start, 0., 0.);
    ev_timer_init(&j->timeout, on_join_timeout, timeout_ms / 1000.0, 0.);
    j->rw.data = j->ww.data = j->start.data = j->timeout.data = j;
    ev_timer_start(n->loop, &j->start);
    ev_timer_start(n->loop, &j->timeout);
    j->next = n->joins;
    n->joins = j;
    return QC_OK;
}
