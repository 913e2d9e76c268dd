/* Joining, this node being the stranger: qc_net_join dials a member on a
 * connection of its own, runs the handshake with a secret, sends one JOIN
 * frame and waits for one JOIN frame back, within its timeout. Part of the
 * transport; its private interface is net_int.h. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "core/wire.h"
#include "net/auth.h"
#include "net/net_int.h"

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
void net_join_free(qc_join *j)
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
        if (net_dial_socket(j->net, j->ai_cur, &j->fd, &pending)) {
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
    int err = net_connect_result(j->fd);
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
    int level = auth ? net_level_once(n, key, WHY_OTHER_SECRET) : QC_LOG_WARN;
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
    long k = net_challenge_answer(j->net, j->in.data, j->in.len, &out, j->key_out, j->key_in,
                                  &reason, &why);
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
    if (net_resolve(j->host, j->port, "a join", &j->ai)) {
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
        qc_log(net_level_once(j->net, key, WHY_TIMEOUT), "net",
               "no challenge from %s:%d in time (does the member run without a secret?)", j->host,
               j->port);
    else
        qc_log(QC_LOG_DEBUG, "net", "no join answer from %s:%d in time", j->host, j->port);
    join_finish(j, QC_EBUSY, NULL, 0);
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
    j->host = net_dup_str(host);
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
