/* The machine's floor for a long-poll fan-out, without QCluster: N TCP
 * connections over loopback held open, then one thread answers them all
 * as an agent would (a small HTTP answer, then close) while a forked
 * client reads each answer to its end with epoll. Prints the time from
 * the first send to the last answer read whole, and each side's CPU per
 * answer. No agent can answer N polls faster than this on the same
 * machine with one thread; with T threads, not faster than the CPU total
 * over the cores.
 * Usage: build/bench_longpoll_floor [N] [close|keep]   (default 10000 close)
 * Needs a descriptor limit above N + 64 (it raises its soft limit). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char ANSWER[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 120\r\n\r\n"
    "{\"leader\":{\"id\":\"node2\",\"host\":\"127.0.0.1\",\"port\":7002,\"metadata\":{}},"
    "\"term\":7,\"is_leader\":false,\"pad\":\"0123456789abcd\"}";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Reads every connection's answer to its end (EOF when close, the whole
 * answer when keep); returns the time the last one was complete. */
static double client(int *fds, int n, int keep)
{
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    size_t *got = calloc((size_t)n, sizeof *got);
    if (!got) die("calloc");
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) die("epoll_ctl");
    }
    int left = n;
    double last = 0;
    struct epoll_event evs[256];
    char buf[4096];
    while (left > 0) {
        int k = epoll_wait(ep, evs, 256, 10000);
        if (k <= 0) die("epoll_wait (no answer within 10 s)");
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            ssize_t r = read(fds[i], buf, sizeof buf);
            if (r > 0) got[i] += (size_t)r;
            int done = keep ? got[i] >= sizeof ANSWER - 1 : r == 0;
            if (r < 0 && errno != EAGAIN) die("read");
            if (done) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                close(fds[i]);
                left--;
                last = now();
            }
        }
    }
    return last;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    int keep = argc > 2 && strcmp(argv[2], "keep") == 0;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(n + 64)) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)(n + 64) ? rl.rlim_max : (rlim_t)(n + 64);
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) < 0)
        die("listen");
    /* The start time and the client's figures, shared across the fork. */
    double *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) die("mmap");
    int *fds = malloc(sizeof(int) * (size_t)n);
    int go[2];
    if (!fds || pipe(go) < 0) die("setup");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) { /* the client: its own descriptor table */
        close(ls);
        for (int i = 0; i < n; i++) {
            fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fds[i] < 0) die("socket");
            if (connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
                die("connect");
        }
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        double c0 = cpu();
        shared[1] = client(fds, n, keep);
        shared[2] = cpu() - c0;
        _exit(0);
    }
    for (int i = 0; i < n; i++) {
        fds[i] = accept(ls, NULL, NULL);
        if (fds[i] < 0) die("accept");
        int one = 1;
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (write(go[1], "g", 1) != 1) die("write");
    usleep(300000); /* the client has its epoll set up and waits */
    double s0 = cpu();
    shared[0] = now();
    for (int i = 0; i < n; i++) {
        if (send(fds[i], ANSWER, sizeof ANSWER - 1, MSG_NOSIGNAL | (keep ? 0 : MSG_MORE)) !=
            (ssize_t)(sizeof ANSWER - 1))
            die("send");
        if (!keep) close(fds[i]);
    }
    double s_cpu = cpu() - s0, s_end = now();
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "client failed\n");
        return 1;
    }
    printf("floor: %d answers (%s), one sending thread: sent in %.1f ms, last read whole at "
           "%.1f ms; CPU per answer: sender %.1f us, client %.1f us\n",
           n, keep ? "keep" : "close", (s_end - shared[0]) * 1000, (shared[1] - shared[0]) * 1000,
           s_cpu / n * 1e6, shared[2] / n * 1e6);
    return 0;
}
