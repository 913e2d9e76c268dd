/* Child processes for qcluster.exec and exec health checks: fork + exec of
 * /bin/sh -c in a new process group, pipes read on the loop (capped), the
 * child reaped through ev_child (default loop) or a pidfd (any other loop),
 * SIGKILL of the whole group at the timeout. It never waits on the loop,
 * except for the reaping of a child it has just SIGKILLed (cancel). */
#define _GNU_SOURCE /* pipe2 */
#include "base/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

extern char **environ;

/* After SIGKILL, how long to wait for the pipes to close: something outside
 * the group (a daemon the command started in a group of its own) may hold
 * them. */
#define QC_SPAWN_GRACE_S 1.0

typedef struct outbuf {
    char *data;
    size_t len, cap, max, dropped;
} outbuf;

struct qc_spawn {
    struct ev_loop *loop;
    pid_t pid;
    ev_child child; /* on libev's default loop, the only one where ev_child works */
    ev_io pid_w;    /* elsewhere: the child's pidfd turns readable when it ends */
    ev_io out_w, err_w;
    ev_timer timer;
    outbuf out, err;
    int exited, wstatus, timed_out, killed;
    const char *label;
    qc_spawn_done_fn *done;
    void *ud;
};

pid_t qc_spawn_pid(const qc_spawn *s) { return s->pid; }

static void close_fd(qc_spawn *s, ev_io *w)
{
    if (w->fd < 0) return;
    ev_io_stop(s->loop, w);
    close(w->fd);
    ev_io_set(w, -1, EV_READ);
}

/* The pid alone only while it is not reaped: a reaped pid may be another
 * process's already. */
static void kill_group(qc_spawn *s)
{
    if (kill(-s->pid, SIGKILL) != 0 && !s->exited) kill(s->pid, SIGKILL);
}

static void finish(qc_spawn *s)
{
    ev_timer_stop(s->loop, &s->timer);
    qc_spawn_result r = {.timed_out = s->timed_out,
                         .out = s->out.data,
                         .err = s->err.data,
                         .out_len = s->out.len,
                         .err_len = s->err.len,
                         .dropped = s->out.dropped + s->err.dropped};
    if (WIFEXITED(s->wstatus)) {
        r.status = WEXITSTATUS(s->wstatus);
    } else if (WIFSIGNALED(s->wstatus)) {
        r.signal = WTERMSIG(s->wstatus);
        r.status = 128 + r.signal;
    }
    qc_log(QC_LOG_DEBUG, "spawn", "%s: pid %d ended with status %d%s", s->label, (int)s->pid,
           r.status, s->timed_out ? " (timed out)" : "");
    s->done(s->ud, &r);
    free(r.out);
    free(r.err);
    free(s);
}

static void maybe_finish(qc_spawn *s)
{
    if (s->exited && s->out_w.fd < 0 && s->err_w.fd < 0) finish(s);
}

/* Keeps up to b->max bytes; the rest is counted and dropped, so a flood
 * neither blocks the child nor grows memory. */
static void outbuf_add(outbuf *b, const char *data, size_t n)
{
    size_t keep = b->len >= b->max ? 0 : n < b->max - b->len ? n : b->max - b->len;
    b->dropped += n - keep;
    if (!keep) return;
    if (b->len + keep > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + keep) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) { /* keep what we have; the rest is dropped */
            b->dropped += keep;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, keep);
    b->len += keep;
}

/* Reads what the stream holds now, closing it at its end; the caller
 * finishes. */
static void read_some(qc_spawn *s, ev_io *w)
{
    if (w->fd < 0) return;
    outbuf *b = w == &s->out_w ? &s->out : &s->err;
    char buf[16384];
    /* A bounded number of reads a turn: a flooding child must not keep the
     * loop here. */
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n > 0) {
            outbuf_add(b, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        close_fd(s, w); /* EOF or a real error: this stream is done */
        return;
    }
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_spawn *s = w->data;
    read_some(s, w);
    maybe_finish(s);
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    qc_spawn *s = w->data;
    ev_child_stop(loop, w);
    s->exited = 1;
    s->wstatus = w->rstatus;
    maybe_finish(s);
}

/* Off the default loop (a node on a thread or on a program's own loop): a
 * pidfd says the child ended, and it is reaped by its pid. Another reaper
 * in the process (libev's default loop reaps every child) may take it
 * first; its status is then unknown and reported as 255. */
static void on_pidfd(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    qc_spawn *s = w->data;
    int st = 0;
    pid_t r;
    while ((r = waitpid(s->pid, &st, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r == 0) return; /* not ended yet */
    ev_io_stop(loop, w);
    close(w->fd);
    ev_io_set(w, -1, EV_READ);
    if (r < 0) {
        qc_log(QC_LOG_WARN, "spawn", "%s: pid %d was reaped elsewhere: its status is lost",
               s->label, (int)s->pid);
        st = 255 << 8;
    }
    s->exited = 1;
    s->wstatus = st;
    maybe_finish(s);
}

/* Starts waiting for the child: ev_child on the default loop, a pidfd
 * elsewhere. 0, or -1 with errno when there is no pidfd to be had. */
static int watch_child(qc_spawn *s)
{
    ev_io_init(&s->pid_w, on_pidfd, -1, EV_READ);
    s->pid_w.data = s;
    if (ev_is_default_loop(s->loop)) {
        ev_child_init(&s->child, on_child, s->pid, 0);
        s->child.data = s;
        ev_child_start(s->loop, &s->child);
        return 0;
    }
    /* The kernel makes every pidfd close-on-exec. */
    int fd = (int)syscall(SYS_pidfd_open, s->pid, 0);
    if (fd < 0) return -1;
    ev_io_set(&s->pid_w, fd, EV_READ);
    ev_io_start(s->loop, &s->pid_w);
    return 0;
}

static void unwatch_child(qc_spawn *s)
{
    if (ev_is_default_loop(s->loop)) ev_child_stop(s->loop, &s->child);
    if (s->pid_w.fd < 0) return;
    ev_io_stop(s->loop, &s->pid_w);
    close(s->pid_w.fd);
    ev_io_set(&s->pid_w, -1, EV_READ);
}

/* A loop that ran late (a loaded host, a stopped agent) may see the
 * deadline before the child's end, or see both in one pass with the end
 * taken first and its pipes' end not yet read, though the child ended in
 * time: an end already there decides first, with the output its pipes
 * hold. 1 when that finished s (freed). */
static int ended_before_deadline(qc_spawn *s)
{
    if (!s->exited) {
        int st = 0;
        pid_t r;
        while ((r = waitpid(s->pid, &st, WNOHANG)) < 0 && errno == EINTR) {
        }
        if (r != s->pid) return 0;
        unwatch_child(s); /* reaped here: its watcher has nothing left to see */
        s->exited = 1;
        s->wstatus = st;
    }
    read_some(s, &s->out_w);
    read_some(s, &s->err_w);
    if (s->out_w.fd >= 0 || s->err_w.fd >= 0) return 0; /* held open by another */
    finish(s);
    return 1;
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    qc_spawn *s = w->data;
    if (!s->killed && ended_before_deadline(s)) return;
    if (!s->killed) {
        s->killed = 1;
        s->timed_out = 1;
        qc_log(QC_LOG_WARN, "spawn", "%s: pid %d ran past its timeout, killing its process group",
               s->label, (int)s->pid);
        kill_group(s);
        ev_timer_set(w, QC_SPAWN_GRACE_S, 0.);
        ev_timer_start(loop, w);
        return;
    }
    /* Something outside the group still holds the pipes: stop reading. */
    close_fd(s, &s->out_w);
    close_fd(s, &s->err_w);
    maybe_finish(s);
}

/* fd as the child's descriptor to: dup2 makes a copy without close-on-exec,
 * but is a no-op when the pipe already was born as to (the program closed
 * its standard descriptors), so the flag is cleared then. */
static int child_fd(int fd, int to) { return fd == to ? fcntl(to, F_SETFD, 0) : dup2(fd, to); }

static void child_main(const char *cmd, char *const *envp, int in, int out, int err)
{
    sigset_t none;
    (void)setpgid(0, 0); /* the parent does it too */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    static const int sigs[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP,
                               SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
    if (child_fd(in, 0) < 0 || child_fd(out, 1) < 0 || child_fd(err, 2) < 0) _exit(127);
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    execve("/bin/sh", argv, envp ? envp : environ);
    _exit(127);
}

static void close_pair(int p[2])
{
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
    p[0] = p[1] = -1;
}

/* Close-on-exec from birth: the program embedding a node may fork in
 * another thread (a Python subprocess) at any moment; a child that
 * inherited the write end would hold the pipe open, and the hook's exec
 * would not end before that child did. The child gets its end by
 * child_fd. */
static int cloexec_pipe(int p[2]) { return pipe2(p, O_CLOEXEC); }

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void start_watchers(qc_spawn *s, int out_fd, int err_fd, int timeout_ms)
{
    s->out_w.data = s->err_w.data = s->timer.data = s;
    if (set_nonblock(out_fd) != 0 || (err_fd >= 0 && set_nonblock(err_fd) != 0))
        qc_log(QC_LOG_WARN, "spawn", "%s: cannot make pipes non-blocking: %s", s->label,
               strerror(errno));
    if (watch_child(s) != 0) {
        /* Unwatched, it could never be reaped: end it now (it only just
         * started, so this wait is short). */
        qc_log(QC_LOG_ERROR, "spawn", "%s: cannot watch pid %d (pidfd_open: %s); killed", s->label,
               (int)s->pid, strerror(errno));
        kill_group(s);
        while (waitpid(s->pid, &s->wstatus, 0) < 0 && errno == EINTR) {
        }
        s->exited = s->killed = 1;
    }
    ev_io_init(&s->out_w, on_io, out_fd, EV_READ);
    ev_io_start(s->loop, &s->out_w);
    ev_io_init(&s->err_w, on_io, err_fd, EV_READ);
    if (err_fd >= 0) ev_io_start(s->loop, &s->err_w);
    ev_init(&s->timer, on_timeout);
    if (timeout_ms > 0) {
        ev_timer_set(&s->timer, timeout_ms / 1000.0, 0.);
        ev_timer_start(s->loop, &s->timer);
    }
}

int qc_spawn_start(struct ev_loop *loop, const qc_spawn_opts *o, qc_spawn_done_fn *done, void *ud,
                   qc_spawn **out, const char **what)
{
    *out = NULL;
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    if (cloexec_pipe(po) != 0 || (!o->merge_stderr && cloexec_pipe(pe) != 0)) {
        int e = errno;
        close_pair(po);
        *what = "pipe";
        errno = e;
        return -1;
    }
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    qc_spawn *s = in >= 0 ? calloc(1, sizeof *s) : NULL;
    pid_t pid = s ? fork() : -1;
    if (pid == 0) child_main(o->cmd, o->envp, in, po[1], o->merge_stderr ? po[1] : pe[1]);
    if (pid < 0) {
        int e = in >= 0 && !s ? ENOMEM : errno;
        *what = in < 0 ? "/dev/null" : !s ? "alloc" : "fork";
        close_pair(po);
        close_pair(pe);
        if (in >= 0) close(in);
        free(s);
        errno = e;
        return -1;
    }
    /* Also done in the child; whichever runs first wins, so a failure here
     * (EACCES after the child's exec) is expected and harmless. */
    (void)setpgid(pid, pid);
    close(in);
    close(po[1]);
    if (pe[1] >= 0) close(pe[1]);
    s->loop = loop;
    s->pid = pid;
    s->label = o->label ? o->label : "exec";
    s->done = done;
    s->ud = ud;
    s->out.max = s->err.max = o->max_output;
    start_watchers(s, po[0], pe[0], o->timeout_ms);
    *out = s;
    return 0;
}

void qc_spawn_cancel(qc_spawn *s)
{
    if (!s) return;
    kill_group(s);
    unwatch_child(s);
    if (!s->exited) {
        int st;
        while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR) {
        }
    }
    close_fd(s, &s->out_w);
    close_fd(s, &s->err_w);
    ev_timer_stop(s->loop, &s->timer);
    free(s->out.data);
    free(s->err.data);
    free(s);
}
