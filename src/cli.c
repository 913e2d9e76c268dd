/* The command-line client: status, leader, members, transfer, version.
 * A small blocking HTTP/1.1 client (one request per connection, timeouts)
 * over the agent's API, yajl_tree to read its answers. It must never call
 * exit() nor talk to anything but the API; it returns the exit code. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "common.h"
#include "json.h"

#define CLI_TIMEOUT_MS 5000
#define CLI_MAX_BODY (16 * 1024 * 1024)
#define CLI_MAX_ARGS 4

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_NONE = 3 };

typedef struct opts {
    const char *cmd;
    const char *api;
    int json, help;
    const char *args[CLI_MAX_ARGS];
    int nargs;
} opts;

typedef struct resp {
    int status;
    char *body;
    size_t len, cap;
    int complete, too_big;
} resp;

static const char usage_text[] =
    "usage: qcluster COMMAND [ARGS] [--api HOST:PORT] [--json]\n"
    "commands:\n"
    "  agent CONFIG           run the agent in the foreground\n"
    "  check CONFIG           validate a config and exit\n"
    "  status                 this agent's view: role, term, leader, peers\n"
    "  leader                 the leader (exit 3 when none is known)\n"
    "  members                every member: role, reachability, metadata\n"
    "  transfer [IDENTIFIER]  hand leadership to that peer, or the best one\n"
    "  version                print the version\n"
    "options:\n"
    "  --api HOST:PORT        the agent's API (default $QCLUSTER_API, else 127.0.0.1:8001)\n"
    "  --json                 print the API's JSON answer as it is\n"
    "  -h, --help             this text\n"
    "environment: QCLUSTER_API_TOKEN is sent as a bearer token when set.\n";

static const char *const commands[] = {"status", "leader", "members", "transfer", "version"};

/* The client's own options also count: "qcluster --json status" is a
 * client command line whose command comes later. */
int qc_cli_is_command(const char *name)
{
    if (!name) return 0;
    if (strcmp(name, "--json") == 0 || strcmp(name, "--api") == 0 ||
        strncmp(name, "--api=", 6) == 0)
        return 1;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i]) == 0) return 1;
    return 0;
}

/* Prints the message and a pointer to the help. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "qcluster: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nrun 'qcluster --help' for usage\n");
    va_end(ap);
    return EXIT_USAGE;
}

/* Splits HOST:PORT or [V6]:PORT into host (cap bytes) and port text. */
static int split_hostport(const char *api, char *host, size_t cap, const char **port)
{
    const char *colon = strrchr(api, ':');
    if (!colon || colon == api || !colon[1]) return -1;
    const char *h = api;
    size_t hl = (size_t)(colon - api);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    *port = colon + 1;
    return 0;
}

/* ---------- options ---------- */

/* Options may come anywhere; the first other word is the command. */
static int parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    int only_args = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            if (!o->cmd)
                o->cmd = a;
            else if (o->nargs == CLI_MAX_ARGS)
                return usage_error("too many arguments%s", "");
            else
                o->args[o->nargs++] = a;
        } else if (strcmp(a, "--") == 0) {
            only_args = 1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
        } else if (strcmp(a, "--api") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs HOST:PORT", a);
            o->api = argv[++i];
        } else if (strncmp(a, "--api=", 6) == 0) {
            o->api = a + 6;
        } else {
            return usage_error("unknown option %s", a);
        }
    }
    if (!o->api) o->api = getenv("QCLUSTER_API");
    if (!o->api || !*o->api) o->api = "127.0.0.1:8001";
    char host[256];
    const char *port;
    if (split_hostport(o->api, host, sizeof host, &port) != 0)
        return usage_error("bad --api %s: expected HOST:PORT", o->api);
    return EXIT_OK;
}

/* ---------- blocking HTTP client ---------- */

/* Waits for events on fd; 0 ready, -1 with errno (ETIMEDOUT on timeout). */
static int wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, CLI_TIMEOUT_MS);
        if (n > 0) return 0;
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR) return -1;
    }
}

static int connect_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) return -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) goto fail;
    if (wait_fd(fd, POLLOUT) != 0) goto fail;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) goto fail;
    if (err == 0) return fd;
    errno = err;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* Connects to host:port; -1 with *why set (static text or strerror). */
static int dial(const char *host, const char *port, const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        *why = gai_strerror(g);
        return -1;
    }
    int fd = -1;
    errno = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) fd = connect_one(ai);
    if (fd < 0) *why = strerror(errno);
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT) != 0) return -1;
        } else if (w < 0 && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    resp *r = p->data;
    if (r->len + n > CLI_MAX_BODY) {
        r->too_big = 1;
        return -1;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return -1;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, at, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

static int on_complete(http_parser *p)
{
    resp *r = p->data;
    r->complete = 1;
    r->status = (int)p->status_code;
    return 0;
}

/* Reads and parses the response until it is complete or the peer closes. */
static int read_response(int fd, resp *r, const char **why)
{
    http_parser_settings s = {.on_body = on_body, .on_message_complete = on_complete};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = r;
    char buf[8192];
    while (!r->complete) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLIN) != 0) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        size_t used = http_parser_execute(&p, &s, buf, (size_t)n);
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK || used != (size_t)n) {
            *why = r->too_big ? "answer too large" : "malformed answer";
            return -1;
        }
        if (n == 0) break;
    }
    if (r->complete) return 0;
    *why = errno == ETIMEDOUT ? "timed out" : "connection closed before an answer";
    return -1;
}

static int build_request(char *out, size_t cap, const char *method, const char *path,
                         const char *host, const char *body)
{
    const char *token = getenv("QCLUSTER_API_TOKEN");
    char auth[600] = "";
    if (token && *token) {
        int n = snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
        if (n < 0 || (size_t)n >= sizeof auth) return -1;
    }
    size_t bl = body ? strlen(body) : 0;
    int n = snprintf(out, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: qcluster/" QC_VERSION
                     "\r\nAccept: application/json\r\nConnection: close\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, host, auth, bl, body ? body : "");
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* One request; 0 with *r filled, else prints the "cannot reach" message. */
static int http_call(const opts *o, const char *method, const char *path, const char *body, resp *r)
{
    char host[256], req[2048];
    const char *port = NULL, *why = "request too large";
    memset(r, 0, sizeof *r);
    int fd = -1, n = -1;
    if (split_hostport(o->api, host, sizeof host, &port) == 0)
        n = build_request(req, sizeof req, method, path, host, body);
    if (n >= 0) fd = dial(host, port, &why);
    if (fd >= 0 && send_all(fd, req, (size_t)n) != 0)
        why = strerror(errno);
    else if (fd >= 0 && read_response(fd, r, &why) == 0) {
        close(fd);
        return 0;
    }
    if (fd >= 0) close(fd);
    free(r->body);
    r->body = NULL;
    fprintf(stderr, "qcluster: cannot reach agent at %s: %s\n", o->api, why);
    return -1;
}

/* ---------- output ---------- */

static yajl_val parse_body(const opts *o, const resp *r)
{
    yajl_val v = r->body ? yajl_tree_parse(r->body, NULL, 0) : NULL;
    if (!v) fprintf(stderr, "qcluster: bad answer from agent at %s\n", o->api);
    return v;
}

static void print_raw(const resp *r)
{
    const char *b = r->body ? r->body : "";
    fputs(b, stdout);
    if (r->len == 0 || b[r->len - 1] != '\n') putchar('\n');
}

/* The error of an {"error": ...} answer, for stderr. */
static int report_error(const opts *o, const resp *r, int code)
{
    yajl_val v = r->body ? yajl_tree_parse(r->body, NULL, 0) : NULL;
    const char *msg = qc_json_get_str(v, "error");
    if (msg)
        fprintf(stderr, "qcluster: %s\n", msg);
    else
        fprintf(stderr, "qcluster: agent at %s answered HTTP %d\n", o->api, r->status);
    yajl_tree_free(v);
    return code;
}

static const char *num_text(yajl_val v) { return v && YAJL_IS_NUMBER(v) ? v->u.number.r : "?"; }

static const char *str_or(yajl_val obj, const char *key, const char *dflt)
{
    const char *s = qc_json_get_str(obj, key);
    return s ? s : dflt;
}

static int is_true(yajl_val obj, const char *key)
{
    yajl_val v = qc_json_get(obj, key);
    return v && YAJL_IS_TRUE(v);
}

static void print_peers_line(yajl_val peers)
{
    printf("%-12s", "peers");
    size_t n = peers && YAJL_IS_ARRAY(peers) ? peers->u.array.len : 0;
    if (n == 0) printf("none");
    for (size_t i = 0; i < n; i++) {
        yajl_val p = peers->u.array.values[i];
        printf("%s%s %s", i ? ", " : "", str_or(p, "identifier", "?"),
               is_true(p, "up") ? "up" : "down");
    }
    putchar('\n');
}

static int print_status(yajl_val v)
{
    yajl_val lead = qc_json_get(v, "leader");
    printf("%-12s%s\n", "identifier", str_or(v, "identifier", "?"));
    printf("%-12s%s\n", "role", str_or(v, "role", "?"));
    printf("%-12s%s\n", "term", num_text(qc_json_get(v, "term")));
    if (lead && YAJL_IS_OBJECT(lead))
        printf("%-12s%s (%s:%s)\n", "leader", str_or(lead, "identifier", "?"),
               str_or(lead, "host", "?"), num_text(qc_json_get(lead, "port")));
    else
        printf("%-12s%s\n", "leader", "none");
    print_peers_line(qc_json_get(v, "peers"));
    printf("%-12s%s\n", "commit", num_text(qc_json_get(v, "commit_index")));
    return 0;
}

/* Metadata as compact JSON text; malloc'd, or NULL for "{}". */
static char *metadata_text(yajl_val peer)
{
    yajl_val m = qc_json_get(peer, "metadata");
    char *s = NULL;
    if (m && qc_json_val_text(m, &s) == 0) return s;
    return NULL;
}

/* A GET command that takes no argument: prints the answer as it is with
 * --json, else parses it for print, which returns nonzero when the answer is
 * not what it expects. When none_text is set, an answer with none_status
 * means "nothing there": EXIT_NONE, and none_text unless --json. */
static int get_and_print(const opts *o, const char *path, int (*print)(yajl_val), int none_status,
                         const char *none_text)
{
    if (o->nargs) return usage_error("%s takes no argument: %s", o->cmd, o->args[0]);
    resp r;
    if (http_call(o, "GET", path, NULL, &r)) return EXIT_FAIL;
    int code = EXIT_OK;
    if (none_text && r.status == none_status) {
        code = EXIT_NONE;
        if (o->json)
            print_raw(&r);
        else
            printf("%s\n", none_text);
    } else if (r.status != 200) {
        code = report_error(o, &r, EXIT_FAIL);
    } else if (o->json) {
        print_raw(&r);
    } else {
        yajl_val v = parse_body(o, &r);
        if (!v || print(v) != 0) code = EXIT_FAIL;
        yajl_tree_free(v);
    }
    free(r.body);
    return code;
}

static int cmd_status(const opts *o)
{
    return get_and_print(o, "/v1/status", print_status, 0, NULL);
}

static int print_leader(yajl_val v)
{
    char *meta = metadata_text(v);
    printf("%s %s:%s %s\n", str_or(v, "identifier", "?"), str_or(v, "host", "?"),
           num_text(qc_json_get(v, "port")), meta ? meta : "{}");
    free(meta);
    return 0;
}

/* 503: no leader is known. */
static int cmd_leader(const opts *o)
{
    return get_and_print(o, "/v1/leader", print_leader, 503, "no leader");
}

enum { COL_ID, COL_ROLE, COL_UP, COL_VOTER, COL_ADDR, COL_META, NCOLS };

/* One table cell; *buf is a malloc'd string or NULL when cell is static. */
static const char *member_cell(yajl_val p, int col, char *tmp, size_t cap, char **buf)
{
    *buf = NULL;
    switch (col) {
    case COL_ID: return str_or(p, "identifier", "?");
    case COL_ROLE: return str_or(p, "role", "?");
    case COL_UP: return is_true(p, "up") ? "yes" : "no";
    case COL_VOTER: return is_true(p, "voter") ? "yes" : "no";
    case COL_ADDR:
        snprintf(tmp, cap, "%s:%s", str_or(p, "host", "?"), num_text(qc_json_get(p, "port")));
        return tmp;
    default: *buf = metadata_text(p); return *buf ? *buf : "{}";
    }
}

/* The answer must be an array of members. */
static int print_members(yajl_val list)
{
    static const char *const heads[NCOLS] = {"IDENTIFIER", "ROLE",    "UP",
                                             "VOTER",      "ADDRESS", "METADATA"};
    if (!YAJL_IS_ARRAY(list)) return -1;
    size_t w[NCOLS], n = list->u.array.len;
    char tmp[300], *buf;
    for (int c = 0; c < NCOLS; c++) w[c] = strlen(heads[c]);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < NCOLS - 1; c++) {
            size_t l = strlen(member_cell(list->u.array.values[i], c, tmp, sizeof tmp, &buf));
            if (l > w[c]) w[c] = l;
        }
    for (int c = 0; c < NCOLS - 1; c++) printf("%-*s  ", (int)w[c], heads[c]);
    printf("%s\n", heads[NCOLS - 1]);
    for (size_t i = 0; i < n; i++) {
        for (int c = 0; c < NCOLS; c++) {
            const char *s = member_cell(list->u.array.values[i], c, tmp, sizeof tmp, &buf);
            if (c < NCOLS - 1)
                printf("%-*s  ", (int)w[c], s);
            else
                printf("%s\n", s);
            free(buf);
        }
    }
    return 0;
}

static int cmd_members(const opts *o)
{
    return get_and_print(o, "/v1/members", print_members, 0, NULL);
}

/* The request body {"to": id}, or NULL for "the best peer". */
static char *transfer_body(const char *to)
{
    if (!to) return NULL;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return NULL;
    const unsigned char *buf;
    size_t len;
    char *s = NULL;
    yajl_gen_map_open(g);
    if (qc_json_key_str(g, "to", to) == 0 && yajl_gen_map_close(g) == yajl_gen_status_ok &&
        yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok && (s = malloc(len + 1))) {
        memcpy(s, buf, len);
        s[len] = '\0';
    }
    yajl_gen_free(g);
    return s;
}

static void print_transferred(const opts *o, const resp *r)
{
    yajl_val v = parse_body(o, r);
    yajl_val l = qc_json_get(v, "leader");
    const char *who = l && YAJL_IS_OBJECT(l)   ? qc_json_get_str(l, "identifier")
                      : l && YAJL_IS_STRING(l) ? l->u.string
                                               : NULL;
    printf("leadership transferred to %s\n", who ? who : "the best peer");
    yajl_tree_free(v);
}

static int cmd_transfer(const opts *o)
{
    if (o->nargs > 1) return usage_error("transfer takes at most one IDENTIFIER%s", "");
    const char *to = o->nargs ? o->args[0] : NULL;
    char *body = transfer_body(to);
    if (to && !body) {
        fprintf(stderr, "qcluster: out of memory\n");
        return EXIT_FAIL;
    }
    resp r;
    int rc = http_call(o, "POST", "/v1/transfer-leadership", body, &r);
    free(body);
    if (rc) return EXIT_FAIL;
    int code = r.status == 200 ? EXIT_OK : r.status == 404 ? EXIT_NONE : EXIT_FAIL;
    if (o->json)
        print_raw(&r);
    else if (code == EXIT_OK)
        print_transferred(o, &r);
    else
        report_error(o, &r, code);
    free(r.body);
    return code;
}

static int cmd_version(const opts *o)
{
    if (o->nargs) return usage_error("version takes no argument: %s", o->args[0]);
    if (o->json)
        printf("{\"version\":\"%s\"}\n", QC_VERSION);
    else
        printf("qcluster %s\n", QC_VERSION);
    return EXIT_OK;
}

static const struct {
    const char *name;
    int (*fn)(const opts *o);
} cmd_table[] = {
    {"status", cmd_status},     {"leader", cmd_leader},   {"members", cmd_members},
    {"transfer", cmd_transfer}, {"version", cmd_version},
};

int qc_cli_main(int argc, char **argv)
{
    if (argc < 1 || !argv) return usage_error("missing command%s", "");
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc;
    if (o.help || (o.cmd && strcmp(o.cmd, "help") == 0)) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (!o.cmd) return usage_error("missing command%s", "");
    for (size_t i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
        if (strcmp(o.cmd, cmd_table[i].name) == 0) return cmd_table[i].fn(&o);
    fprintf(stderr, "qcluster: unknown command: %s\n%s", o.cmd, usage_text);
    return EXIT_USAGE;
}
