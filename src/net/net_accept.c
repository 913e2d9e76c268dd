/* Accepting: the listening socket, the limits on inbound connections
 * (max_inbound, max_unidentified, strangers, evicting for a member), the
 * backoff when out of descriptors or memory, the challenge an inbound
 * connection gets first and its handshake timeout; qc_net_adopt. Part of
 * the transport; its private interface is net_int.h. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "core/wire.h"
#include "net/auth.h"
#include "net/net_int.h"

/* ---- accepting ---- */

static void on_hello_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_conn *c = w->data;
    qc_net *n = c->net;
    qc_metrics_add(n->metrics, M_DROP, "reason", "handshake_timeout", 1);
    int level = net_level_once(n, c->host, WHY_TIMEOUT);
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
    net_conn_close(c);
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
        rc = net_conn_flush(c);
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
    net_conn_close(oldest);
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
    /* An adopted socket may be a socketpair: glibc would format an AF_UNIX
     * address from sun_path, which an unnamed peer leaves unset. Its host
     * stays "?", which no resolver turns into an address for a join. */
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
        snprintf(addr, NET_ADDR_LEN, "local");
        return;
    }
    *member_addr = net_ip_key((struct sockaddr *)&ss, key) == QC_OK && net_ip_is_member(n, key);
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
    qc_conn *c = net_sock_setup(fd) ? NULL : net_conn_new(n, fd, 0, NULL);
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
        net_conn_close(c);
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
        net_ip_key((struct sockaddr *)&n->src, key) || memcmp(key, any4, 16) == 0 ||
        memcmp(key, any6, 16) == 0) {
        n->src_len = 0;
        return;
    }
    if (n->src.ss_family == AF_INET) ((struct sockaddr_in *)(void *)&n->src)->sin_port = 0;
    if (n->src.ss_family == AF_INET6) ((struct sockaddr_in6 *)(void *)&n->src)->sin6_port = 0;
}

int net_listen_on(qc_net *n, const char *host, int port)
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
        net_sock_nodelay(fd);
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
