/* examples/embedded_c: a QCluster node inside a C program (libqcluster),
 * the original QCluster "bare minimum": every second it says whether it
 * leads, and who does. On its own libev loop, or with --thread on a thread
 * of its own; SIGTERM or SIGINT stops it cleanly (a leader hands over).
 *   cc embedded_c.c $(pkg-config --cflags --libs qcluster) -lev -o embedded_c
 *   ./embedded_c server_a.json [--thread] */
#include <ev.h>
#include <qcluster.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void report(qc_node *node)
{
    qc_peer *leader;
    if (qc_is_leader(node))
        printf("I am the leader!\n");
    else if (qc_get_leader_info(node, &leader) == QC_OK) {
        printf("I am not the leader :( the leader is %s at %s:%d, metadata %s\n",
               leader->identifier, leader->host, leader->port, leader->metadata);
        qc_peer_free(leader);
    } else {
        printf("There is no leader right now\n");
    }
    fflush(stdout);
}

/* Callbacks run on the node's loop thread, one at a time, in event order. */
static void on_event(qc_node *node, const qc_event *ev, void *arg)
{
    (void)node;
    (void)arg;
    if (strcmp(ev->name, "on_elected") == 0)
        printf("on_elected: leader for term %llu\n", (unsigned long long)ev->term);
    else if (strcmp(ev->name, "on_demoted") == 0)
        printf("on_demoted: term %llu (%s)\n", (unsigned long long)ev->term, ev->reason);
    else
        printf("%s: %s\n", ev->name, ev->reason ? ev->reason : "");
    fflush(stdout);
}

/* ---- on the program's own loop ---- */

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    report(w->data);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    qc_node_stop(w->data); /* runs the loop until the node has stopped */
    ev_break(loop, EVBREAK_ALL);
}

static int run_on_loop(qc_node *node)
{
    struct ev_loop *loop = ev_default_loop(0);
    if (!loop || qc_node_start(node, loop) != QC_OK) return 1;
    ev_timer tick;
    ev_signal term, intr;
    ev_timer_init(&tick, on_tick, 1., 1.);
    ev_signal_init(&term, on_signal, SIGTERM);
    ev_signal_init(&intr, on_signal, SIGINT);
    tick.data = term.data = intr.data = node;
    ev_timer_start(loop, &tick);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    ev_run(loop, 0);
    ev_timer_stop(loop, &tick);
    ev_signal_stop(loop, &term);
    ev_signal_stop(loop, &intr);
    return 0;
}

/* ---- on a thread of its own ---- */

static int run_on_thread(qc_node *node)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    /* Blocked before the node's thread exists, so that it inherits the
     * mask and the signals come to sigtimedwait here. */
    if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0) return 1;
    if (qc_node_start_thread(node) != QC_OK) return 1;
    const struct timespec second = {1, 0};
    for (;;) {
        int sig = sigtimedwait(&stop, NULL, &second);
        if (sig == SIGTERM || sig == SIGINT) break;
        report(node);
    }
    return qc_node_stop(node) == QC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (argc == 3 && strcmp(argv[2], "--thread") != 0) || argc > 3) {
        fprintf(stderr, "usage: %s CONFIG [--thread]\n", argv[0]);
        return 2;
    }
    qc_node *node;
    char err[512];
    if (qc_node_new(argv[1], &node, err, sizeof err) != QC_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    qc_node_on(node, "on_elected", on_event, NULL);
    qc_node_on(node, "on_demoted", on_event, NULL);
    qc_node_on(node, "on_stop", on_event, NULL);
    int code = argc == 3 ? run_on_thread(node) : run_on_loop(node);
    qc_node_free(node);
    printf("exited %s\n", code == 0 ? "cleanly" : "after a failure");
    return code;
}
