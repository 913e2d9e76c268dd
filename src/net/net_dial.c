/* Dialling: the one outbound connection per peer (resolve, bind to the
 * listening address, non-blocking connect through every address in turn,
 * backoff with jitter), the hello or the wait for the challenge once it is
 * connected, and qc_net_add_peer, which starts it. conn_new is here too:
 * every connection's write watcher (on_conn_write) is where a connect
 * ends. Part of the transport; its private interface is net_int.h. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "net/net_int.h"

static void on_conn_write(struct ev_loop *loop, ev_io *w, int revents);
static void peer_dial(net_peer *p);

qc_conn *net_conn_new(qc_net *n, int fd, int outbound, net_peer *p)
{
    qc_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->net = n;
    c->peer = p;
    c->fd = fd;
    c->outbound = outbound;
    ev_io_init(&c->rw, net_on_conn_read, fd, EV_READ);
    ev_io_init(&c->ww, on_conn_write, fd, EV_WRITE);
    c->rw.data = c->ww.data = c;
    ev_init(&c->hello_timer, NULL);
    return c;
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
        net_link_report(p, 1);
        return;
    }
    qc_metrics_add(n->metrics, M_DROP, "reason", "handshake_timeout", 1);
    qc_log(net_level_once(n, p->identifier, WHY_TIMEOUT), "net",
           "no challenge from %s within %.1f s (does it run without a secret?); closing",
           p->identifier, n->hello_timeout);
    net_peer_down(p);
}

static void conn_established(qc_conn *c)
{
    net_peer *p = c->peer;
    qc_net *n = c->net;
    c->connecting = 0;
    c->opened = ev_now(n->loop);
    net_dial_forget(p);
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
        net_peer_down(p);
        return;
    }
    ev_io_start(n->loop, &c->ww); /* the hello goes out when writable */
    if (!c->awaiting) net_link_report(p, 1);
}

/* The current address failed: try the next one, or back off. */
static void dial_next(net_peer *p, const char *why)
{
    if (p->out) {
        net_conn_free(p->out);
        p->out = NULL;
    }
    if (p->ai_cur) p->ai_cur = p->ai_cur->ai_next;
    if (p->ai_cur) {
        peer_dial(p);
        return;
    }
    qc_log(QC_LOG_DEBUG, "net", "cannot connect to %s at %s:%d: %s", p->identifier, p->host,
           p->port, why);
    net_dial_forget(p);
    net_retry_schedule(p);
    net_link_report(p, 0);
}

/* 0 when the non-blocking connect on fd succeeded, else its errno. */
int net_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    return err;
}

static void conn_connect_done(qc_conn *c)
{
    int err = net_connect_result(c->fd);
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
        qc_log(QC_LOG_WARN, "net", "dropping connection to %s: %s", net_conn_name(c),
               c->failed == FAIL_OVERFLOW ? "output queue full (slow peer)" : "write failed");
        net_conn_close(c);
        return;
    }
    if (net_conn_flush(c)) {
        qc_log(QC_LOG_DEBUG, "net", "write to %s failed: %s", net_conn_name(c), strerror(errno));
        net_conn_close(c);
        return;
    }
    if (c->joined && !ev_is_active(&c->ww)) net_conn_close(c); /* the answer is out */
}

/* Resolves host:port for a dial into *ai (the caller frees it); QC_EIO,
 * logged on behalf of who, when it cannot. */
int net_resolve(const char *host, int port, const char *who, struct addrinfo **ai)
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
    int rc = net_resolve(p->host, p->port, p->identifier, &p->ai);
    p->ai_cur = p->ai;
    if (!rc) net_peer_note_addrs(p, p->ai);
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
    if (net_ip_key((const struct sockaddr *)&n->src, src) || net_ip_key(a->ai_addr, dst)) return;
    if (net_ip_loopback(src) != net_ip_loopback(dst)) return;
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
int net_dial_socket(const qc_net *n, const struct addrinfo *a, int *fd, int *pending)
{
    int s = socket(a->ai_family, a->ai_socktype | SOCK_FLAGS, a->ai_protocol);
    if (s < 0) return QC_EIO;
    net_sock_nodelay(s);
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
    if (net_dial_socket(n, p->ai_cur, &fd, &pending)) {
        dial_next(p, strerror(errno));
        return;
    }
    if (!(p->out = net_conn_new(n, fd, 1, p))) {
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
    net_dial_forget(p);
    if (dial_resolve(p)) {
        net_retry_schedule(p);
        return;
    }
    peer_dial(p);
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
    net_peer_note_addrs(p, ai);
    freeaddrinfo(ai);
}

int qc_net_add_peer(qc_net *n, const char *identifier, const char *host, int port)
{
    if (!identifier || !host || port <= 0 || port > 65535) return QC_EINVAL;
    size_t il = strlen(identifier);
    if (il == 0 || il > 255 || strcmp(identifier, n->identifier) == 0) return QC_EINVAL;
    if (net_peer_by_name(n, identifier)) return QC_EINVAL;
    net_peer *p = calloc(1, sizeof *p);
    if (!p) return QC_ENOMEM;
    p->identifier = net_dup_str(identifier);
    p->host = net_dup_str(host);
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
