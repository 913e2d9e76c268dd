/* Runs a shell command off the loop: /bin/sh -c CMD in a process group of
 * its own, stdout and stderr through close-on-exec pipes (kept up to a cap,
 * the rest read and dropped), reaped through ev_child on libev's default
 * loop or a pidfd elsewhere, and the whole group SIGKILLed at its timeout.
 * Shared by qcluster.exec (luahost.c) and exec health checks (health.c).
 * Nothing here blocks the loop, and a child never outlives its timeout. */
#ifndef QC_SPAWN_H
#define QC_SPAWN_H

#include <ev.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct qc_spawn qc_spawn;

typedef struct qc_spawn_opts {
    const char *cmd;   /* run as /bin/sh -c cmd */
    char *const *envp; /* NULL: this process's environment */
    int timeout_ms;    /* > 0: the process group gets SIGKILL then */
    size_t max_output; /* bytes kept per stream; the rest is drained */
    int merge_stderr;  /* stderr goes to the stdout pipe (one stream) */
    const char *label; /* for the log: "exec", "check web" */
} qc_spawn_opts;

/* The end of a run. out and err are malloc'd (NULL when empty): the
 * callback may take them (and set them NULL); what is left is freed after
 * it returns. */
typedef struct qc_spawn_result {
    int status;    /* the exit status, or 128 + the signal */
    int signal;    /* the signal that ended it, 0 for none */
    int timed_out; /* killed at its timeout */
    char *out, *err;
    size_t out_len, err_len;
    size_t dropped; /* bytes read past max_output and dropped */
} qc_spawn_result;

/* Called once from the loop when the child is reaped and its pipes are
 * closed (or a grace second after its group was killed); the spawn is
 * freed right after. */
typedef void qc_spawn_done_fn(void *ud, qc_spawn_result *r);

/* Starts cmd. 0 with *out set; or -1 with errno set and *what naming the
 * call that failed ("pipe", "fork", ...), nothing left running. */
int qc_spawn_start(struct ev_loop *loop, const qc_spawn_opts *o, qc_spawn_done_fn *done, void *ud,
                   qc_spawn **out, const char **what);
/* Kills the group, reaps the child, frees s; done is never called. */
void qc_spawn_cancel(qc_spawn *s);
pid_t qc_spawn_pid(const qc_spawn *s);

#endif
