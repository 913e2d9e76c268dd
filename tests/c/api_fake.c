/* Test-only: serves qc_api on 127.0.0.1:PORT over a fake qc_view that the
 * specs drive with signals. SIGUSR1 toggles "leader known" (and bumps the
 * term), SIGUSR2 bumps the term only; both call qc_api_notify. SIGTERM or
 * SIGINT stops it cleanly. Usage: api_fake PORT [TOKEN]. Never linked into
 * the agent. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "common.h"
#include "metrics.h"
#include "view.h"

typedef struct fake {
    struct ev_loop *loop;
    qc_api *api;
    qc_metrics *metrics;
    int leader_known;
    uint64_t term;
    ev_timer later; /* an asynchronous transfer completes on it */
    qc_transfer_done_fn *pending_done;
    void *pending_arg;
} fake;

static const qc_peer_info members[] = {
    {"server_a", "localhost", 7001, "{}", "follower", 1, 1, 1},
    {"server_b", "localhost", 7002, "{\"server_port\":8002,\"tags\":[\"a\",\"b\"]}", "leader", 1, 1,
     0},
    {"server_c", "localhost", 7003, "not json", "follower", 0, 1, 0},
};

static int f_is_leader(void *ud)
{
    (void)ud;
    return 0;
}

static uint64_t f_term(void *ud) { return ((fake *)ud)->term; }

static const char *f_role(void *ud)
{
    (void)ud;
    return "follower";
}

static uint64_t f_commit(void *ud)
{
    (void)ud;
    return 42;
}

static int f_leader(void *ud, qc_peer_info *out)
{
    if (!((fake *)ud)->leader_known) return QC_ENOLEADER;
    *out = members[1];
    return 0;
}

static void f_self(void *ud, qc_peer_info *out)
{
    (void)ud;
    *out = members[0];
}

static size_t f_peers(void *ud, qc_peer_info *out, size_t max)
{
    fake *f = ud;
    for (size_t i = 0; i < 2 && i < max; i++) {
        out[i] = members[i + 1];
        if (!f->leader_known) out[i].role = "follower";
    }
    return 2;
}

static void later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    fake *f = w->data;
    qc_transfer_done_fn *done = f->pending_done;
    f->pending_done = NULL;
    if (done) done(f->pending_arg, 0);
}

/* server_b: done at once; none given: done 200 ms later; server_c: 409;
 * "slow": 409 after 1 s; anything else: no such peer. */
static void f_transfer(void *ud, const char *to, qc_transfer_done_fn *done, void *arg)
{
    fake *f = ud;
    if (to && strcmp(to, "server_b") == 0) {
        done(arg, 0);
    } else if (!to || strcmp(to, "slow") == 0) {
        if (f->pending_done) {
            done(arg, QC_EBUSY);
            return;
        }
        f->pending_done = done;
        f->pending_arg = arg;
        ev_timer_set(&f->later, to ? 1.0 : 0.2, 0.);
        ev_timer_start(f->loop, &f->later);
    } else if (strcmp(to, "server_c") == 0) {
        done(arg, QC_EBUSY);
    } else {
        done(arg, QC_ENOTFOUND);
    }
}

static void f_refresh(void *ud)
{
    fake *f = ud;
    qc_metrics_set(f->metrics, "qcluster_term", NULL, NULL, (double)f->term);
    qc_metrics_set(f->metrics, "qcluster_is_leader", NULL, NULL, 0);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    fake *f = w->data;
    if (w->signum == SIGUSR1) {
        f->leader_known = !f->leader_known;
        f->term++;
        qc_api_notify(f->api);
    } else if (w->signum == SIGUSR2) {
        f->term++;
        qc_api_notify(f->api);
    } else {
        ev_break(loop, EVBREAK_ALL);
    }
}

static void fill_metrics(qc_metrics *m)
{
    qc_metrics_declare(m, "qcluster_term", QC_METRIC_GAUGE, "Current term.");
    qc_metrics_declare(m, "qcluster_is_leader", QC_METRIC_GAUGE, "1 when leading.");
    qc_metrics_declare(m, "qcluster_peer_up", QC_METRIC_GAUGE, "1 when the peer is up.");
    qc_metrics_set(m, "qcluster_peer_up", "peer", "server_b", 1);
    qc_metrics_set(m, "qcluster_peer_up", "peer", "we\"ird\\name\n", 0);
    qc_metrics_declare(m, "qcluster_hook_duration_seconds", QC_METRIC_HISTOGRAM,
                       "Time spent in hooks.");
    qc_metrics_observe(m, "qcluster_hook_duration_seconds", 0.0003);
    qc_metrics_observe(m, "qcluster_hook_duration_seconds", 0.02);
    qc_metrics_observe(m, "qcluster_hook_duration_seconds", 20);
    qc_metrics_add(m, "qcluster_elections_total", NULL, NULL, 3);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: api_fake PORT [TOKEN]\n");
        return 2;
    }
    static fake f;
    f.loop = ev_default_loop(0);
    f.term = 1;
    f.metrics = qc_metrics_new();
    if (!f.metrics) return 1;
    fill_metrics(f.metrics);
    ev_timer_init(&f.later, later_cb, 0., 0.);
    f.later.data = &f;
    qc_view view = {.ud = &f,
                    .is_leader = f_is_leader,
                    .term = f_term,
                    .role = f_role,
                    .commit_index = f_commit,
                    .leader = f_leader,
                    .self = f_self,
                    .peers = f_peers,
                    .transfer = f_transfer,
                    .refresh_metrics = f_refresh};
    int rc = qc_api_new(f.loop, "127.0.0.1", atoi(argv[1]), &view, f.metrics,
                        argc > 2 ? argv[2] : NULL, &f.api);
    if (rc) {
        fprintf(stderr, "api_fake: %s\n", qc_strerror(rc));
        qc_metrics_free(f.metrics);
        return 1;
    }
    int sigs[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT};
    ev_signal sw[4];
    for (int i = 0; i < 4; i++) {
        ev_signal_init(&sw[i], on_signal, sigs[i]);
        sw[i].data = &f;
        ev_signal_start(f.loop, &sw[i]);
    }
    ev_run(f.loop, 0);
    qc_api_free(f.api);
    if (f.pending_done) f.pending_done(f.pending_arg, QC_EIO); /* done() exactly once */
    ev_timer_stop(f.loop, &f.later);
    qc_metrics_free(f.metrics);
    ev_loop_destroy(f.loop);
    return 0;
}
