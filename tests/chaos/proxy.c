/* chaos-proxy: a delaying TCP proxy for the chaos suite (this kernel has no
 * netem). It runs inside one node's network namespace and relays the
 * connections other nodes dial to that node, holding every chunk of bytes
 * for the delay its control file gives that link. It keeps byte order and
 * passes an end of stream on (after the bytes before it), so a peer that
 * dies still closes the connection at the far side. Test-only: never part
 * of the agent.
 *
 * usage: chaos-proxy CONTROL_FILE NAME=LISTEN_IP:PORT=TARGET_IP:PORT ...
 * CONTROL_FILE lines: "NAME FORWARD_MS BACK_MS JITTER_MS" (forward: bytes
 * from the dialler to the target; back: the answers). It is read again
 * whenever it changes; a missing file or link means no delay. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINKS 32
#define MAX_CONNS 256
#define CHUNK 65536
#define QUEUE_MAX (16u << 20) /* stop reading a side with this much in flight */

typedef struct chunk {
    struct chunk *next;
    uint64_t due_ms;
    size_t len, off;
    int eof; /* the end of the stream: close once everything before it is out */
    char data[];
} chunk;

typedef struct {
    chunk *head, *tail;
    size_t bytes;
    uint64_t last_due;
    int eof_queued;
} queue;

typedef struct {
    char name[64];
    struct sockaddr_in listen, target;
    int fd;
    unsigned fwd_ms, back_ms, jitter_ms;
} link_t;

typedef struct {
    int used, connecting;
    int link;
    int dfd, ufd; /* the dialler's side, the target's side */
    queue to_up, to_down;
} conn_t;

static link_t links[MAX_LINKS];
static int n_links;
static conn_t conns[MAX_CONNS];
static volatile sig_atomic_t stopping;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Re-reads the control file when its mtime or size changed. */
static void read_control(const char *path)
{
    static struct timespec seen_mtime;
    static off_t seen_size = -1;
    struct stat st;
    if (stat(path, &st) != 0) return;
    if (st.st_size == seen_size && st.st_mtim.tv_sec == seen_mtime.tv_sec &&
        st.st_mtim.tv_nsec == seen_mtime.tv_nsec)
        return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    seen_size = st.st_size;
    seen_mtime = st.st_mtim;
    for (int i = 0; i < n_links; i++) links[i].fwd_ms = links[i].back_ms = links[i].jitter_ms = 0;
    char name[64];
    unsigned fwd, back, jit;
    while (fscanf(f, "%63s %u %u %u", name, &fwd, &back, &jit) == 4)
        for (int i = 0; i < n_links; i++)
            if (strcmp(links[i].name, name) == 0) {
                links[i].fwd_ms = fwd;
                links[i].back_ms = back;
                links[i].jitter_ms = jit;
            }
    fclose(f);
}

static void queue_free(queue *q)
{
    while (q->head) {
        chunk *c = q->head;
        q->head = c->next;
        free(c);
    }
    *q = (queue){0};
}

/* Appends bytes (or the end of stream) due after delay_ms, never before
 * what is queued already: jitter must not reorder a stream. */
static int queue_push(queue *q, const char *data, size_t len, int eof, unsigned delay_ms,
                      unsigned jitter_ms)
{
    chunk *c = malloc(sizeof *c + len);
    if (!c) return -1;
    uint64_t due = now_ms() + delay_ms + (jitter_ms ? (uint64_t)(rand() % (int)(jitter_ms + 1)) : 0);
    if (due < q->last_due) due = q->last_due;
    q->last_due = due;
    *c = (chunk){.due_ms = due, .len = len, .eof = eof};
    if (len) memcpy(c->data, data, len);
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->bytes += len;
    if (eof) q->eof_queued = 1;
    return 0;
}

static void conn_close(conn_t *c)
{
    if (c->dfd >= 0) close(c->dfd);
    if (c->ufd >= 0) close(c->ufd);
    queue_free(&c->to_up);
    queue_free(&c->to_down);
    memset(c, 0, sizeof *c);
    c->dfd = c->ufd = -1;
}

/* Writes what is due from q to fd; returns -1 when the connection must end
 * (a write failed, or the end of stream came due). */
static int queue_flush(queue *q, int fd, uint64_t now)
{
    while (q->head && q->head->due_ms <= now) {
        chunk *c = q->head;
        if (c->eof) return -1;
        ssize_t n = send(fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        c->off += (size_t)n;
        q->bytes -= (size_t)n;
        if (c->off < c->len) return 0;
        q->head = c->next;
        if (!q->head) q->tail = NULL;
        free(c);
    }
    return 0;
}

static void accept_one(int li)
{
    int fd = accept(links[li].fd, NULL, NULL);
    if (fd < 0) return;
    int slot = -1;
    for (int i = 0; i < MAX_CONNS && slot < 0; i++)
        if (!conns[i].used) slot = i;
    int ufd = socket(AF_INET, SOCK_STREAM, 0);
    if (slot < 0 || ufd < 0 || nonblock(fd) || nonblock(ufd)) {
        close(fd);
        if (ufd >= 0) close(ufd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(ufd, (struct sockaddr *)&links[li].target, sizeof links[li].target);
    if (rc != 0 && errno != EINPROGRESS) {
        close(fd);
        close(ufd);
        return;
    }
    conn_t *c = &conns[slot];
    memset(c, 0, sizeof *c);
    *c = (conn_t){.used = 1, .connecting = rc != 0, .link = li, .dfd = fd, .ufd = ufd};
}

/* Reads what fd has into q; returns -1 when the queue could not take it. */
static int pump_in(int fd, queue *q, unsigned delay, unsigned jitter)
{
    char buf[CHUNK];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (n <= 0) return queue_push(q, NULL, 0, 1, delay, jitter);
    return queue_push(q, buf, (size_t)n, 0, delay, jitter);
}

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static int setup(int argc, char **argv)
{
    for (int i = 2; i < argc && n_links < MAX_LINKS; i++) {
        link_t *l = &links[n_links];
        char *spec = argv[i], *eq = strchr(spec, '='), *eq2 = eq ? strchr(eq + 1, '=') : NULL;
        if (!eq || !eq2 || (size_t)(eq - spec) >= sizeof l->name) return -1;
        memcpy(l->name, spec, (size_t)(eq - spec));
        *eq2 = 0;
        if (parse_addr(eq + 1, &l->listen) || parse_addr(eq2 + 1, &l->target)) return -1;
        l->fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (l->fd < 0 || setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
            bind(l->fd, (struct sockaddr *)&l->listen, sizeof l->listen) || listen(l->fd, 64) ||
            nonblock(l->fd)) {
            perror("chaos-proxy: listen");
            return -1;
        }
        n_links++;
    }
    for (int i = 0; i < MAX_CONNS; i++) conns[i].dfd = conns[i].ufd = -1;
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGPIPE, SIG_IGN);
    return n_links ? 0 : -1;
}

/* One pass over a connection after poll: move bytes, end it when due. */
static void service(conn_t *c, short drev, short urev, uint64_t now)
{
    link_t *l = &links[c->link];
    if (c->connecting && (urev & (POLLOUT | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_close(c);
            return;
        }
        c->connecting = 0;
    }
    int bad = 0;
    if (!c->to_up.eof_queued && (drev & (POLLIN | POLLHUP | POLLERR)))
        bad |= pump_in(c->dfd, &c->to_up, l->fwd_ms, l->jitter_ms);
    if (!c->connecting && !c->to_down.eof_queued && (urev & (POLLIN | POLLHUP | POLLERR)))
        bad |= pump_in(c->ufd, &c->to_down, l->back_ms, l->jitter_ms);
    if (!c->connecting) bad |= queue_flush(&c->to_up, c->ufd, now);
    bad |= queue_flush(&c->to_down, c->dfd, now);
    if (bad) conn_close(c);
}

int main(int argc, char **argv)
{
    if (argc < 3 || setup(argc, argv) != 0) {
        fprintf(stderr, "usage: chaos-proxy CONTROL NAME=LISTEN_IP:PORT=TARGET_IP:PORT ...\n");
        return 2;
    }
    /* The run's CHAOS_SEED fixes the jitter draws too (one stream each:
     * the control file names the node); a run by hand draws fresh ones. */
    const char *seed = getenv("CHAOS_SEED");
    unsigned mix = seed ? (unsigned)strtoul(seed, NULL, 10) : (unsigned)getpid();
    for (const char *p = argv[1]; *p; p++) mix = mix * 31u + (unsigned char)*p;
    srand(mix);
    struct pollfd pfd[MAX_LINKS + 2 * MAX_CONNS];
    int owner[MAX_LINKS + 2 * MAX_CONNS];
    while (!stopping) {
        read_control(argv[1]);
        uint64_t now = now_ms();
        int n = 0, timeout = 50;
        for (int i = 0; i < n_links; i++) {
            pfd[n] = (struct pollfd){.fd = links[i].fd, .events = POLLIN};
            owner[n++] = -1 - i;
        }
        for (int i = 0; i < MAX_CONNS; i++) {
            conn_t *c = &conns[i];
            if (!c->used) continue;
            short dev = 0, uev = 0;
            if (!c->to_up.eof_queued && c->to_up.bytes < QUEUE_MAX) dev |= POLLIN;
            if (c->connecting) uev |= POLLOUT;
            else if (!c->to_down.eof_queued && c->to_down.bytes < QUEUE_MAX) uev |= POLLIN;
            queue *qs[2] = {&c->to_up, &c->to_down};
            for (int k = 0; k < 2; k++) {
                if (!qs[k]->head) continue;
                if (qs[k]->head->due_ms <= now) {
                    if (k == 0 && !c->connecting) uev |= POLLOUT;
                    if (k == 1) dev |= POLLOUT;
                    if (qs[k]->head->eof) timeout = 0;
                } else if ((int)(qs[k]->head->due_ms - now) < timeout) {
                    timeout = (int)(qs[k]->head->due_ms - now);
                }
            }
            /* a side with nothing to wait for is left out: its hang-up
             * would wake poll at once, again and again */
            pfd[n] = (struct pollfd){.fd = dev ? c->dfd : -1, .events = dev};
            owner[n++] = i;
            pfd[n] = (struct pollfd){.fd = uev ? c->ufd : -1, .events = uev};
            owner[n++] = i;
        }
        if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR) return 1;
        now = now_ms();
        for (int k = 0; k < n; k++)
            if (owner[k] < 0 && (pfd[k].revents & POLLIN)) accept_one(-1 - owner[k]);
        for (int k = n_links; k + 1 < n; k += 2) {
            conn_t *c = &conns[owner[k]];
            if (c->used) service(c, pfd[k].revents, pfd[k + 1].revents, now);
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].used) conn_close(&conns[i]);
    return 0;
}
