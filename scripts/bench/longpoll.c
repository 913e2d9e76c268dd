/* Load client of scripts/bench/longpoll (not part of the build or the
 * tests): holds N long-polls on one agent's API and records, for each, the
 * wall-clock time it learned a leader other than OLD. Each poll says what
 * it knows (term and leader) as the SDKs do; an answer that still names no
 * new leader (503 while the survivors elect) is asked again at once on a
 * new connection with what that answer said. epoll, one thread: select()
 * and luasocket stop at 1024 descriptors.
 * Usage: longpoll HOST PORT N TERM OLD WAIT SOURCES OUT [keep]
 *   SOURCES: how many source addresses 127.0.0.2... to spread the polls
 *   over. keep: keep-alive, each poll asks again on its connection while
 *   the answer says keep-alive (default: Connection: close, a new
 *   connection each time, as the SDKs do).
 * Prints "parked" on stderr once every request is sent, then writes one
 * line a poll to OUT: the wall-clock seconds it learned the new leader, or
 * "-" when it did not within WAIT + 5 s; and on stderr "asked_again N"
 * (answers that named no new leader yet, asked again) and "cpu_ms N" (the
 * CPU time it used after "parked": it shares the cores with the agent it
 * measures). A poll has learned when a whole answer (by its
 * Content-Length) names the new leader. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct poll_s {
    int fd;
    char in[2048];
    size_t len;
    double learned; /* 0: not yet */
} poll_s;

static const char *host, *old;
static int port, nsrc, keep;
static double wait_s;
static long asked_again; /* answers that named no new leader yet */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int poll_send(int fd, unsigned long long term, const char *leader)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /v1/leader?wait=%.0f&term=%llu&leader=%s HTTP/1.1\r\nHost: b\r\n%s\r\n",
                     wait_s, term, leader, keep ? "" : "Connection: close\r\n");
    return write(fd, req, (size_t)n) == n ? 0 : -1;
}

/* Opens a connection from 127.0.0.(2 + i % nsrc) and sends the poll. */
static int poll_open(int ep, poll_s *p, int i, unsigned long long term, const char *leader)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + (unsigned)(i % nsrc));
    dst.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, host, &dst.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
        close(fd);
        return -1;
    }
    if (poll_send(fd, term, leader) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = (unsigned)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        return -1;
    }
    p->fd = fd;
    p->len = 0;
    return 0;
}

/* A whole answer is in: 1 when it names a leader other than old; else
 * *term and leader (none or its identifier) to ask again with. */
static int answer(const poll_s *p, unsigned long long *term, char *leader, size_t cap)
{
    const char *body = strstr(p->in, "\r\n\r\n");
    const char *t = body ? strstr(body, "\"term\":") : NULL;
    const char *id = body ? strstr(body, "\"identifier\":\"") : NULL;
    *term = t ? strtoull(t + 7, NULL, 10) : 0;
    snprintf(leader, cap, "none");
    if (!id) return 0;
    id += 14;
    const char *end = strchr(id, '"');
    if (!end || (size_t)(end - id) >= cap) return 0;
    memcpy(leader, id, (size_t)(end - id));
    leader[end - id] = '\0';
    return strcmp(leader, old) != 0;
}

/* 1 when p->in holds a whole answer: its headers and Content-Length bytes. */
static int whole(const poll_s *p)
{
    const char *body = strstr(p->in, "\r\n\r\n");
    const char *cl = strcasestr(p->in, "content-length:");
    return body && cl && p->len >= (size_t)(body + 4 - p->in) + strtoul(cl + 15, NULL, 10);
}

/* Poll i's socket is watched again (EPOLLONESHOT: only while it goes on). */
static int rearm(int ep, const poll_s *p, unsigned i)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = i};
    return epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
}

/* Poll i's socket is readable. A whole answer naming the new leader ends
 * the poll; its socket is closed only when the client exits, after the
 * measurement, so that closing thousands does not hold up reading the
 * next answers (the client shares the cores with the agent). Another
 * answer asks again, on the same connection when it is kept alive. 1 when
 * the poll is over (learned, or could not ask again), else 0. */
static int poll_ready(int ep, poll_s *polls, unsigned i, double at)
{
    poll_s *p = &polls[i];
    unsigned long long t;
    char lead[256];
    ssize_t r = read(p->fd, p->in + p->len, sizeof p->in - 1 - p->len);
    if (r > 0) {
        p->len += (size_t)r;
        p->in[p->len] = '\0';
    }
    int eof = r == 0 || (r < 0 && errno != EAGAIN);
    if (!eof && !whole(p)) return rearm(ep, p, i) != 0; /* the rest is on its way */
    if (answer(p, &t, lead, sizeof lead)) {
        p->learned = at;
        return 1;
    }
    asked_again++;
    if (keep && !eof && !strcasestr(p->in, "connection: close")) {
        p->len = 0;
        return poll_send(p->fd, t, lead) != 0 || rearm(ep, p, i) != 0;
    }
    close(p->fd);
    return poll_open(ep, p, (int)i, t, lead) != 0; /* could not ask again: not learned */
}

int main(int argc, char **argv)
{
    if (argc != 9 && argc != 10) {
        fprintf(stderr, "usage: longpoll HOST PORT N TERM OLD WAIT SOURCES OUT [keep]\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    int n = atoi(argv[3]);
    unsigned long long term0 = strtoull(argv[4], NULL, 10);
    old = argv[5];
    wait_s = atof(argv[6]);
    nsrc = atoi(argv[7]) > 0 ? atoi(argv[7]) : 1;
    keep = argc == 10 && strcmp(argv[9], "keep") == 0;
    poll_s *polls = calloc((size_t)n, sizeof *polls);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!polls || ep < 0) return 1;
    for (int i = 0; i < n; i++) {
        if (poll_open(ep, &polls[i], i, term0, old) != 0) {
            fprintf(stderr, "poll %d: %s\n", i, strerror(errno));
            return 1;
        }
    }
    fprintf(stderr, "parked\n");
    double cpu0 = cpu_s();
    int left = n;
    double deadline = now_s() + wait_s + 5;
    struct epoll_event evs[256];
    while (left > 0 && now_s() < deadline) {
        int k = epoll_wait(ep, evs, 256, 100);
        double at = now_s();
        for (int e = 0; e < k; e++) left -= poll_ready(ep, polls, evs[e].data.u32, at);
    }
    fprintf(stderr, "asked_again %ld\ncpu_ms %.0f\n", asked_again, (cpu_s() - cpu0) * 1000);
    FILE *out = fopen(argv[8], "w");
    if (!out) return 1;
    for (int i = 0; i < n; i++)
        if (polls[i].learned > 0)
            fprintf(out, "%.6f\n", polls[i].learned);
        else
            fprintf(out, "-\n");
    fclose(out);
    /* The sockets close at exit: the agent's work for that (a read and a
     * close each) comes after the bench has taken its figures. */
    sleep(1);
    return 0;
}
