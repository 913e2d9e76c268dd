/* Test driver for src/base/spawn.c on libev's default loop: runs CMD with
 * a timeout of TIMEOUT_MS while the loop itself is blocked for BLOCK_MS
 * right after the start (a loaded host, a long callback), so that the
 * child's end, its pipes' end and the deadline are all due in one pass.
 * Prints "status S timed_out T out OUTPUT" and exits 0.
 * Usage: spawn_late CMD TIMEOUT_MS BLOCK_MS */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/spawn.h"

static void on_done(void *ud, qc_spawn_result *r)
{
    (void)ud;
    printf("status %d timed_out %d out %.*s\n", r->status, r->timed_out, (int)r->out_len,
           r->out ? r->out : "");
    ev_break(EV_DEFAULT, EVBREAK_ALL);
}

static void block(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    long ms = *(long *)w->data;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: spawn_late CMD TIMEOUT_MS BLOCK_MS\n");
        return 2;
    }
    struct ev_loop *loop = EV_DEFAULT;
    long block_ms = atol(argv[3]);
    qc_spawn_opts o = {
        .cmd = argv[1], .timeout_ms = atoi(argv[2]), .max_output = 4096, .label = "test"};
    qc_spawn *s;
    const char *what;
    if (qc_spawn_start(loop, &o, on_done, NULL, &s, &what) != 0) {
        perror(what);
        return 1;
    }
    ev_timer t;
    ev_timer_init(&t, block, 0., 0.);
    t.data = &block_ms;
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    return 0;
}
