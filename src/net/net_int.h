/* Private to src/net/net*.c: the transport's state (struct qc_net, its
 * peers, connections and joins), its limits and metric names, and the
 * functions its files share, named net_* so that they are seen to be
 * private (the interface is net.h, names qc_net_*). Each is documented
 * where it is defined. The files, each using only those before it:
 *   net.c         helpers, connections, link state, reading frames, sending
 *   net_dial.c    dialling peers (and conn_new), qc_net_add_peer
 *   net_join.c    joining, this node the stranger: qc_net_join
 *   net_accept.c  the listener, inbound limits, qc_net_adopt
 *   net_setup.c   qc_net_new and qc_net_free */
#ifndef QC_NET_INT_H
#define QC_NET_INT_H

#include <netdb.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/common.h"
#include "core/wire.h"
#include "net/auth.h"
#include "net/net.h"

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

/* Sockets net creates are born non-blocking and close-on-exec (SOCK_FLAGS,
 * accept4): set afterwards, a fork in another thread of the program (a
 * Python subprocess) could hand them to its child in between. */
#define SOCK_FLAGS (SOCK_NONBLOCK | SOCK_CLOEXEC)

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
    /* what host resolved to last (net_ip_key form): its connections come from
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

static inline const char *net_conn_name(const qc_conn *c)
{
    return c->peer ? c->peer->identifier : c->addr;
}

/* net.c: helpers (addresses, sockets, logging once), connections and
 * peers' link state, and the acceptor's reading of frames. */
long net_challenge_answer(const qc_net *n, const uint8_t *buf, size_t avail, qc_buf *out,
                          uint8_t key_out[QC_AUTH_KEY], uint8_t key_in[QC_AUTH_KEY], int *reason,
                          const char **why);
void net_conn_close(qc_conn *c);
int net_conn_flush(qc_conn *c);
void net_conn_free(qc_conn *c);
void net_dial_forget(net_peer *p);
char *net_dup_str(const char *s);
int net_ip_is_member(const qc_net *n, const uint8_t key[16]);
int net_ip_key(const struct sockaddr *sa, uint8_t key[16]);
int net_ip_loopback(const uint8_t key[16]);
int net_level_once(qc_net *n, const char *key, int reason);
void net_link_report(net_peer *p, int up);
void net_on_conn_read(struct ev_loop *loop, ev_io *w, int revents);
net_peer *net_peer_by_name(const qc_net *n, const char *identifier);
void net_peer_down(net_peer *p);
void net_peer_free(net_peer *p);
void net_peer_note_addrs(net_peer *p, const struct addrinfo *ai);
void net_retry_schedule(net_peer *p);
void net_sock_nodelay(int fd);
int net_sock_setup(int fd);

/* net_dial.c: a new connection's record and watchers; resolving and
 * opening a connecting socket (joins dial with them too). */
qc_conn *net_conn_new(qc_net *n, int fd, int outbound, net_peer *p);
int net_connect_result(int fd);
int net_dial_socket(const qc_net *n, const struct addrinfo *a, int *fd, int *pending);
int net_resolve(const char *host, int port, const char *who, struct addrinfo **ai);

/* net_join.c: frees a join without calling its done. */
void net_join_free(qc_join *j);

/* net_accept.c: binds and listens on host:port (qc_net_new). */
int net_listen_on(qc_net *n, const char *host, int port);

#endif
