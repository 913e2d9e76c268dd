/* Health checks on the agent's loop: timers start runs, commands go through
 * spawn.c, http and tcp checks are non-blocking sockets with a deadline,
 * ttl checks are reports from outside, lua checks are answered by the Lua
 * host. Every run ends in one result that feeds the check's rise/fall
 * state machine; the node's health is all checks passing. Nothing here
 * blocks the loop except the resolving of a check's host name, done once
 * (numeric addresses never touch the resolver). */
#include "agent/health.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/common.h"
#include "base/json.h"
#include "base/log.h"
#include "base/spawn.h"

/* The part of an http answer read: its status line is all that decides. */
#define HTTP_HEAD_MAX 512

typedef struct check {
    qc_health *h;
    const qc_check_conf *conf;
    size_t index;
    char label[80]; /* "check NAME", for spawn's log */
    ev_timer every, deadline;
    ev_io io; /* http, tcp: the socket */
    qc_spawn *spawn;
    int running;
    uint64_t run;
    uint64_t started_ms;
    /* The state machine. */
    int passing, ever_passed;
    int passes, fails; /* consecutive results */
    double since, duration;
    uint64_t timeouts;
    char output[QC_HEALTH_MAX_OUTPUT + 1];
    /* http, tcp */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char req[2400];
    size_t req_len, req_off;
    char resp[HTTP_HEAD_MAX + 1];
    size_t resp_len;
    /* ttl: the last report */
    int reported, report_pass;
    uint64_t report_ms;
} check;

struct qc_health {
    struct ev_loop *loop;
    qc_health_callbacks cb;
    qc_metrics *metrics;
    check *checks;
    size_t n;
    int healthy;
};

static const char *kind_name(int kind)
{
    switch (kind) {
    case QC_CHECK_EXEC: return "exec";
    case QC_CHECK_HTTP: return "http";
    case QC_CHECK_TCP: return "tcp";
    case QC_CHECK_TTL: return "ttl";
    case QC_CHECK_LUA: return "lua";
    default: return "?";
    }
}

static void check_info(const check *c, qc_check_info *out)
{
    *out = (qc_check_info){.name = c->conf->name,
                           .kind = kind_name(c->conf->kind),
                           .target = c->conf->target,
                           .passing = c->passing,
                           .output = c->output,
                           .since = c->since,
                           .duration = c->duration,
                           .timeouts = c->timeouts};
}

/* Bytes of a UTF-8 sequence starting with lead, 0 when lead cannot start one. */
static size_t utf8_len(unsigned char lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

/* Keeps what a check said as text that survives JSON and C strings: bytes
 * that are not valid UTF-8 (or NUL) become '?', at most the buffer, and
 * trailing newlines go. */
static void set_output(check *c, const char *p, size_t n)
{
    size_t j = 0, cap = sizeof c->output - 1;
    for (size_t i = 0; i < n && j < cap;) {
        size_t l = utf8_len((unsigned char)p[i]);
        if (l && i + l <= n && j + l <= cap && qc_json_is_text((const uint8_t *)p + i, l)) {
            memcpy(c->output + j, p + i, l);
            j += l;
            i += l;
        } else {
            c->output[j++] = '?';
            i++;
        }
    }
    while (j && (c->output[j - 1] == '\n' || c->output[j - 1] == '\r')) j--;
    c->output[j] = '\0';
}

__attribute__((format(printf, 2, 3))) static void set_outputf(check *c, const char *fmt, ...)
{
    char buf[sizeof c->output];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    set_output(c, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ---- results and the state machine ---------------------------------- */

static int all_passing(const qc_health *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (!h->checks[i].passing) return 0;
    return 1;
}

static void publish(check *c)
{
    qc_health *h = c->h;
    qc_metrics_set(h->metrics, "qcluster_check_passing", "check", c->conf->name, c->passing);
    qc_metrics_set(h->metrics, "qcluster_check_duration_seconds", "check", c->conf->name,
                   c->duration);
}

/* A check starts failing; its first pass makes it pass; after that fall
 * consecutive failures fail it and rise consecutive passes bring it back. */
static int apply_result(check *c, int pass)
{
    const qc_check_conf *k = c->conf;
    if (pass) {
        c->fails = 0;
        c->passes++;
        if (c->passing || (c->ever_passed && c->passes < k->rise)) return 0;
        c->passing = c->ever_passed = 1;
        return 1;
    }
    c->passes = 0;
    c->fails++;
    if (!c->passing || c->fails < k->fall) return 0;
    c->passing = 0;
    return 1;
}

static void stop_io(check *c)
{
    qc_health *h = c->h;
    ev_timer_stop(h->loop, &c->deadline);
    if (c->io.fd < 0) return;
    ev_io_stop(h->loop, &c->io);
    close(c->io.fd);
    ev_io_set(&c->io, -1, EV_WRITE);
}

/* While a check is changing (failures that have not reached fall yet on a
 * passing check, passes short of rise on a failing one that passed before)
 * the next run starts retry_ms after this one, not at the interval. */
static void schedule_next(check *c)
{
    const qc_check_conf *k = c->conf;
    int changing = c->passing ? c->fails > 0 : c->ever_passed && c->passes > 0;
    if (!changing || k->retry_ms <= 0 || k->retry_ms >= k->interval_ms || !ev_is_active(&c->every))
        return;
    ev_timer_stop(c->h->loop, &c->every);
    ev_timer_set(&c->every, k->retry_ms / 1000.0, k->interval_ms / 1000.0);
    ev_timer_start(c->h->loop, &c->every);
}

/* Ends the run under way with its result (output already set). */
static void result(check *c, int pass)
{
    qc_health *h = c->h;
    if (!c->running) return;
    c->running = 0;
    stop_io(c);
    c->duration = (double)(qc_now_ms() - c->started_ms) / 1000.0;
    int changed = apply_result(c, pass);
    schedule_next(c);
    if (changed) {
        c->since = qc_wall_time();
        /* one log line: the output's first line */
        qc_log(c->passing ? QC_LOG_INFO : QC_LOG_WARN, "health", "check %s is %s: %.*s",
               c->conf->name, c->passing ? "passing" : "failing",
               c->output[0] ? (int)strcspn(c->output, "\r\n") : 11,
               c->output[0] ? c->output : "(no output)");
    }
    int was = h->healthy;
    h->healthy = all_passing(h);
    publish(c);
    if (changed && h->cb.on_check) h->cb.on_check(h->cb.ud);
    if (!changed || was == h->healthy) return;
    qc_log(h->healthy ? QC_LOG_INFO : QC_LOG_WARN, "health", "this node is now %s",
           h->healthy ? "healthy" : "unhealthy");
    if (h->cb.on_change) {
        qc_check_info info;
        check_info(c, &info);
        h->cb.on_change(h->cb.ud, h->healthy, &info);
    }
}

static void timed_out(check *c)
{
    c->timeouts++;
    qc_metrics_add(c->h->metrics, "qcluster_check_timeouts_total", "check", c->conf->name, 1);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents);

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    check *c = w->data;
    /* A loop that ran late (a loaded host, a stopped agent) may see the
     * deadline before the socket's answer, though the answer came in time:
     * whatever the socket holds decides first. */
    struct pollfd p = {.fd = c->io.fd, .events = c->io.events & EV_READ ? POLLIN : POLLOUT};
    if (p.fd >= 0 && poll(&p, 1, 0) == 1) {
        on_io(loop, &c->io, EV_CUSTOM);
        if (!c->running) return;
    }
    timed_out(c);
    set_outputf(c, "timed out after %d ms", c->conf->timeout_ms);
    result(c, 0);
}

/* ---- exec ------------------------------------------------------------ */

static void exec_done(void *ud, qc_spawn_result *r)
{
    check *c = ud;
    c->spawn = NULL;
    if (r->timed_out) timed_out(c);
    char why[96] = "";
    if (r->timed_out)
        snprintf(why, sizeof why, "(killed at its timeout of %d ms)", c->conf->timeout_ms);
    else if (r->status)
        snprintf(why, sizeof why, "(exit status %d)", r->status);
    /* What it printed, then why it failed: the reason stays visible even
     * when the output filled the buffer. */
    char buf[sizeof c->output];
    size_t wl = strlen(why), room = sizeof buf - 2 - wl, n = r->out_len < room ? r->out_len : room;
    if (n) memcpy(buf, r->out, n);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    if (n && wl) buf[n++] = '\n';
    memcpy(buf + n, why, wl);
    set_output(c, buf, n + wl);
    result(c, !r->timed_out && r->status == 0);
}

static void start_exec(check *c)
{
    qc_spawn_opts o = {.cmd = c->conf->target,
                       .timeout_ms = c->conf->timeout_ms,
                       .max_output = QC_HEALTH_MAX_OUTPUT,
                       .merge_stderr = 1,
                       .label = c->label};
    const char *what = "spawn";
    if (qc_spawn_start(c->h->loop, &o, exec_done, c, &c->spawn, &what) == 0) return;
    set_outputf(c, "cannot run the command: %s: %s", what, strerror(errno));
    result(c, 0);
}

/* ---- tcp and http ---------------------------------------------------- */

/* Resolves the check's address until that succeeds once (a name may block
 * the loop meanwhile; an address never does). 0, or -1 with the reason in
 * the output. */
static int resolve(check *c)
{
    if (c->addrlen) return 0;
    char port[8];
    snprintf(port, sizeof port, "%d", c->conf->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    int rc = getaddrinfo(c->conf->host, port, &hints, &res);
    if (rc != 0) {
        set_outputf(c, "cannot resolve %s: %s", c->conf->host, gai_strerror(rc));
        return -1;
    }
    /* "localhost" often gives ::1 first while services listen on
     * 127.0.0.1: an IPv4 address wins when there is one. */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    memcpy(&c->addr, pick->ai_addr, pick->ai_addrlen);
    c->addrlen = pick->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* The status line, when complete: 1 pass (2xx), 0 fail, -1 not yet. */
static int http_status(check *c)
{
    char *eol = memchr(c->resp, '\n', c->resp_len);
    if (!eol) return c->resp_len >= HTTP_HEAD_MAX ? 0 : -1;
    size_t n = (size_t)(eol - c->resp);
    if (n && c->resp[n - 1] == '\r') n--;
    set_output(c, c->resp, n);
    int major, minor, code;
    if (sscanf(c->resp, "HTTP/%d.%d %3d", &major, &minor, &code) != 3) return 0;
    return code >= 200 && code <= 299;
}

static void http_read(check *c)
{
    for (;;) {
        ssize_t n = read(c->io.fd, c->resp + c->resp_len, HTTP_HEAD_MAX - c->resp_len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            if (n == 0 && c->resp_len == 0) set_outputf(c, "connection closed without an answer");
            if (n < 0) set_outputf(c, "read: %s", strerror(errno));
            int st = c->resp_len ? http_status(c) : 0;
            result(c, st == 1);
            return;
        }
        c->resp_len += (size_t)n;
        c->resp[c->resp_len] = '\0';
        int st = http_status(c);
        if (st >= 0) {
            result(c, st);
            return;
        }
    }
}

static void http_write(check *c)
{
    while (c->req_off < c->req_len) {
        ssize_t n = send(c->io.fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {
            set_outputf(c, "send: %s", strerror(errno));
            result(c, 0);
            return;
        }
        c->req_off += (size_t)n;
    }
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_READ);
    ev_io_start(c->h->loop, &c->io);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    check *c = w->data;
    if (c->req_off == 0 && (w->events & EV_WRITE)) { /* the connect ended */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err) {
            set_outputf(c, "connect to %s:%d: %s", c->conf->host, c->conf->port, strerror(err));
            result(c, 0);
            return;
        }
        if (c->conf->kind == QC_CHECK_TCP) {
            set_outputf(c, "connected to %s:%d", c->conf->host, c->conf->port);
            result(c, 1);
            return;
        }
    }
    if (w->events & EV_WRITE)
        http_write(c);
    else
        http_read(c);
}

static void start_socket(check *c)
{
    if (resolve(c) != 0) {
        result(c, 0);
        return;
    }
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_outputf(c, "socket: %s", strerror(errno));
        result(c, 0);
        return;
    }
    c->req_off = c->resp_len = 0;
    if (c->conf->kind == QC_CHECK_HTTP) {
        int n = snprintf(c->req, sizeof c->req,
                         "GET %s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: qcluster-check\r\n"
                         "Connection: close\r\n\r\n",
                         c->conf->path, c->conf->host, c->conf->port);
        c->req_len = n > 0 && (size_t)n < sizeof c->req ? (size_t)n : 0;
    }
    /* One write watcher for both cases: writable once connected. */
    ev_io_set(&c->io, fd, EV_WRITE);
    if (connect(fd, (struct sockaddr *)&c->addr, c->addrlen) != 0 && errno != EINPROGRESS) {
        set_outputf(c, "connect to %s:%d: %s", c->conf->host, c->conf->port, strerror(errno));
        result(c, 0); /* closes fd */
        return;
    }
    ev_io_start(c->h->loop, &c->io);
}

/* ---- ttl and lua ----------------------------------------------------- */

/* Passes while the last report was a pass less than ttl_ms ago. */
static void eval_ttl(check *c)
{
    if (!c->reported) {
        set_outputf(c, "no report yet");
        result(c, 0);
        return;
    }
    int fresh = qc_now_ms() - c->report_ms < (uint64_t)c->conf->ttl_ms;
    if (c->report_pass && !fresh) set_outputf(c, "no report for %d ms (ttl_ms)", c->conf->ttl_ms);
    result(c, c->report_pass && fresh);
}

static void start_lua(check *c)
{
    qc_health *h = c->h;
    if (!h->cb.run_lua || h->cb.run_lua(h->cb.ud, c->index, c->run) != 0) {
        set_outputf(c, "cannot run the Lua function");
        result(c, 0);
    }
}

/* ---- runs ------------------------------------------------------------ */

static void start_run(check *c)
{
    c->running = 1;
    c->run++;
    c->started_ms = qc_now_ms();
    if (c->conf->kind != QC_CHECK_EXEC && c->conf->kind != QC_CHECK_TTL) {
        ev_timer_set(&c->deadline, c->conf->timeout_ms / 1000.0, 0.);
        ev_timer_start(c->h->loop, &c->deadline);
    }
    switch (c->conf->kind) {
    case QC_CHECK_EXEC: start_exec(c); break;
    case QC_CHECK_HTTP:
    case QC_CHECK_TCP: start_socket(c); break;
    case QC_CHECK_TTL: eval_ttl(c); break;
    case QC_CHECK_LUA: start_lua(c); break;
    default: set_outputf(c, "unknown kind"); result(c, 0);
    }
}

static void on_every(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    check *c = w->data;
    /* A command killed at its timeout may still be reaped: the next run
     * waits for it (one run at a time). */
    if (!c->running) start_run(c);
}

/* ---- the runner ------------------------------------------------------ */

static void declare_metrics(qc_health *h)
{
    qc_metrics *m = h->metrics;
    qc_metrics_declare(m, "qcluster_check_passing", QC_METRIC_GAUGE,
                       "1 when the health check passes, by check");
    qc_metrics_declare(m, "qcluster_check_duration_seconds", QC_METRIC_GAUGE,
                       "Time the last run of the health check took, by check");
    qc_metrics_declare(m, "qcluster_check_timeouts_total", QC_METRIC_COUNTER,
                       "Runs of the health check stopped at timeout_ms, by check");
    for (size_t i = 0; i < h->n; i++) {
        publish(&h->checks[i]);
        qc_metrics_add(m, "qcluster_check_timeouts_total", "check", h->checks[i].conf->name, 0);
    }
}

int qc_health_new(struct ev_loop *loop, const qc_check_conf *checks, size_t n,
                  const qc_health_callbacks *cb, qc_metrics *metrics, qc_health **out)
{
    *out = NULL;
    qc_health *h = calloc(1, sizeof *h);
    if (!h || (n && !(h->checks = calloc(n, sizeof *h->checks)))) {
        free(h);
        return QC_ENOMEM;
    }
    h->loop = loop;
    h->cb = *cb;
    h->metrics = metrics;
    h->n = n;
    h->healthy = n == 0;
    double now = qc_wall_time();
    for (size_t i = 0; i < n; i++) {
        check *c = &h->checks[i];
        c->h = h;
        c->conf = &checks[i];
        c->index = i;
        c->since = now;
        snprintf(c->label, sizeof c->label, "check %s", checks[i].name);
        ev_init(&c->every, on_every);
        ev_init(&c->deadline, on_deadline);
        ev_io_init(&c->io, on_io, -1, EV_WRITE);
        c->every.data = c->deadline.data = c->io.data = c;
        set_outputf(c, "not run yet");
    }
    if (metrics) declare_metrics(h);
    *out = h;
    return QC_OK;
}

void qc_health_start(qc_health *h)
{
    for (size_t i = 0; i < h->n; i++) {
        check *c = &h->checks[i];
        ev_timer_set(&c->every, 0., c->conf->interval_ms / 1000.0);
        ev_timer_start(h->loop, &c->every);
    }
}

void qc_health_free(qc_health *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) {
        check *c = &h->checks[i];
        ev_timer_stop(h->loop, &c->every);
        c->running = 0;
        stop_io(c);
        if (c->spawn) qc_spawn_cancel(c->spawn);
    }
    free(h->checks);
    free(h);
}

int qc_health_healthy(const qc_health *h) { return h ? h->healthy : 1; }

size_t qc_health_list(const qc_health *h, qc_check_info *out, size_t max)
{
    if (!h) return 0;
    for (size_t i = 0; i < h->n && i < max; i++) check_info(&h->checks[i], &out[i]);
    return h->n;
}

int qc_health_report(qc_health *h, const char *name, int pass, const char *output, size_t len)
{
    check *c = NULL;
    for (size_t i = 0; h && i < h->n && !c; i++)
        if (strcmp(h->checks[i].conf->name, name) == 0) c = &h->checks[i];
    if (!c) return QC_ENOTFOUND;
    if (c->conf->kind != QC_CHECK_TTL) return QC_EINVAL;
    c->reported = 1;
    c->report_pass = pass != 0;
    c->report_ms = qc_now_ms();
    /* The report is a result at once; the timer goes on sampling it. */
    c->running = 1;
    c->started_ms = c->report_ms;
    set_output(c, output ? output : "", output ? len : 0);
    result(c, c->report_pass);
    return QC_OK;
}

void qc_health_lua_done(qc_health *h, size_t index, uint64_t run, int pass, const char *output,
                        size_t len)
{
    if (!h || index >= h->n) return;
    check *c = &h->checks[index];
    if (!c->running || c->run != run || c->conf->kind != QC_CHECK_LUA) return;
    set_output(c, output ? output : "", output ? len : 0);
    result(c, pass);
}
