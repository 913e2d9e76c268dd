/* The command-line client: status, leader, members, transfer, join, leave,
 * kv, version.
 * It talks to the agent's API through the HTTP client it shares with the C
 * SDK (src/sdk/client.h) and reads the answers with yajl_tree. It must never
 * call exit() nor talk to anything but the API; it returns the exit code. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "base/common.h"
#include "base/json.h"
#include "core/kv.h"
#include "sdk/client.h"

/* join and leave wait for a committed change (a leader leaving hands over
 * first); the agent answers 504 when it gives up, so wait longer than it. */
#define CLI_MEMBER_WAIT_MS 60000
#define CLI_MAX_JOIN 32 /* addresses in one join, as the API takes */
#define CLI_MAX_ARGS (CLI_MAX_JOIN + 1)
#define CLI_MAX_VALUE (QC_KV_MAX_VALUE_DEFAULT + 64 * 1024) /* the API's PUT limit */
#define B64_TAG "base64:"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_NONE = 3 };

typedef struct opts {
    const char *cmd;
    const char *api;
    qc_http_tls tls; /* --cacert, --cert, --key (or $QCLUSTER_CACERT, ...) */
    int json, help, stale, has_cas;
    int wait_ms; /* the whole call's limit: connecting, sending, the answer */
    int64_t cas;
    const char *args[CLI_MAX_ARGS];
    int nargs;
} opts;

typedef qc_http_resp resp;

static const char usage_text[] =
    "usage: qcluster COMMAND [ARGS] [--api [https://]HOST:PORT] [--json]\n"
    "commands:\n"
    "  agent CONFIG           run the agent in the foreground\n"
    "  check CONFIG           validate a config and exit\n"
    "  status                 this agent's view: role, term, leader, peers\n"
    "  leader                 the leader (exit 3 when none is known)\n"
    "  members                every member: role, reachability, health (no:\n"
    "                         and its failing checks), voter, priority, address,\n"
    "                         metadata\n"
    "  transfer [IDENTIFIER]  hand leadership to that peer, or the best one\n"
    "                         (exit 3 when there is no such peer)\n"
    "  join HOST:PORT [HOST:PORT ...]\n"
    "                         this agent joins a running cluster through those\n"
    "                         members' cluster addresses (listen_host:listen_port)\n"
    "  leave [IDENTIFIER]     remove that member, or this node, from the cluster\n"
    "                         (exit 3 when there is no such member)\n"
    "  kv get KEY             print KEY's value as it is (exit 3 when missing)\n"
    "  kv put KEY VALUE       write VALUE (- reads stdin); prints the revision\n"
    "  kv del KEY             delete KEY (exit 3 when missing); prints the revision\n"
    "  kv list [PREFIX]       KEY<TAB>REVISION<TAB>VALUE per key; what is not\n"
    "                         printable text is shown as base64:...\n"
    "  checks                 this node's health checks: NAME KIND STATUS SINCE\n"
    "                         OUTPUT (exit 1 when one is failing)\n"
    "  checks pass|fail NAME [OUTPUT]\n"
    "                         report a ttl_ms check's state, with OUTPUT kept\n"
    "                         as its output (exit 3 when there is no such check)\n"
    "  history                the last leader changes this agent knows, oldest\n"
    "                         first: TIME term TERM: FROM -> TO (REASON)\n"
    "  version                print the version\n"
    "options:\n"
    "  --api HOST:PORT        the agent's API (default $QCLUSTER_API, else 127.0.0.1:8001);\n"
    "                         https://HOST:PORT for an agent with api_tls_cert\n"
    "  --cacert FILE          https: the PEM CA file the agent's certificate must chain\n"
    "                         to (default $QCLUSTER_CACERT, else the system's CAs)\n"
    "  --cert FILE, --key FILE\n"
    "                         https: this client's PEM certificate and key, for an\n"
    "                         agent with api_tls_client_ca ($QCLUSTER_CERT, $QCLUSTER_KEY)\n"
    "  --json                 print the API's JSON answer as it is\n"
    "  --cas N                kv put/del: only if KEY's revision is N (0: only if absent);\n"
    "                         exit 1 and the current revision when it is not\n"
    "  --stale                kv get/list: read this node's copy, maybe behind\n"
    "  -h, --help             this text\n"
    "environment: QCLUSTER_API_TOKEN is sent as a bearer token when set.\n";

static const char *const commands[] = {"status", "leader", "members", "transfer", "join",
                                       "leave",  "kv",     "checks",  "history",  "version"};

/* Which TLS option name is (maybe with =FILE): 0 --cacert, 1 --cert,
 * 2 --key; -1 none of them. */
static int tls_option(const char *name)
{
    static const char *const names[] = {"--cacert", "--cert", "--key"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(name, names[i], n) == 0 && (name[n] == '\0' || name[n] == '=')) return i;
    }
    return -1;
}

/* The client's own options also count: "qcluster --json status" is a
 * client command line whose command comes later. */
int qc_cli_is_command(const char *name)
{
    if (!name) return 0;
    if (strcmp(name, "--json") == 0 || strcmp(name, "--api") == 0 ||
        strncmp(name, "--api=", 6) == 0 || strcmp(name, "--stale") == 0 ||
        strcmp(name, "--cas") == 0 || strncmp(name, "--cas=", 6) == 0 || tls_option(name) >= 0)
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

/* ---------- options ---------- */

/* --cas N: a revision, 0 <= N <= INT64_MAX. */
static int parse_cas(const char *s, opts *o)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return usage_error("--cas needs a revision (0 or more): %s", s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v > INT64_MAX)
        return usage_error("--cas needs a revision (0 or more): %s", s);
    o->has_cas = 1;
    o->cas = (int64_t)v;
    return EXIT_OK;
}

/* --cacert, --cert and --key, else the environment's; cert and key go
 * together. */
static int tls_defaults(opts *o)
{
    if (!o->tls.cacert) o->tls.cacert = getenv("QCLUSTER_CACERT");
    if (!o->tls.cert) o->tls.cert = getenv("QCLUSTER_CERT");
    if (!o->tls.key) o->tls.key = getenv("QCLUSTER_KEY");
    if ((o->tls.cert && *o->tls.cert) != (o->tls.key && *o->tls.key))
        return usage_error("--cert and --key go together (or QCLUSTER_CERT and QCLUSTER_KEY)");
    return EXIT_OK;
}

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
        } else if (tls_option(a) >= 0) {
            const char *eq = strchr(a, '=');
            if (!eq && i + 1 >= argc) return usage_error("%s needs a file name", a);
            int which = tls_option(a);
            const char *v = eq ? eq + 1 : argv[++i];
            if (which == 0)
                o->tls.cacert = v;
            else if (which == 1)
                o->tls.cert = v;
            else
                o->tls.key = v;
        } else if (strcmp(a, "--stale") == 0) {
            o->stale = 1;
        } else if (strcmp(a, "--cas") == 0 || strncmp(a, "--cas=", 6) == 0) {
            if (a[5] == '\0' && i + 1 >= argc) return usage_error("%s needs a revision", a);
            int rc = parse_cas(a[5] == '=' ? a + 6 : argv[++i], o);
            if (rc) return rc;
        } else {
            return usage_error("unknown option %s", a);
        }
    }
    o->api = qc_http_default_api(o->api);
    o->wait_ms = QC_HTTP_TIMEOUT_MS;
    char host[256];
    const char *port;
    if (qc_http_split_hostport(o->api, host, sizeof host, &port) != 0)
        return usage_error("bad --api %s: expected HOST:PORT or https://HOST:PORT", o->api);
    return tls_defaults(o);
}

/* One request (ctype NULL: JSON); 0 with *r filled, else prints the
 * "cannot reach" message. */
static int http_call(const opts *o, const char *method, const char *path, const char *ctype,
                     const void *body, size_t blen, resp *r)
{
    qc_http_req q = {.method = method,
                     .path = path,
                     .ctype = ctype,
                     .body = body,
                     .blen = blen,
                     .token = getenv("QCLUSTER_API_TOKEN"),
                     .wait_ms = o->wait_ms,
                     .tls = &o->tls};
    const char *why;
    if (qc_http_call(o->api, &q, r, &why) == 0) return 0;
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
    if (http_call(o, "GET", path, NULL, NULL, 0, &r)) return EXIT_FAIL;
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

enum { COL_ID, COL_ROLE, COL_UP, COL_HEALTH, COL_VOTER, COL_PRIORITY, COL_ADDR, COL_META, NCOLS };

/* "yes", "no", or "no:" and the failing checks' names ("no:web,db"); a
 * name that is not printable text shows as "?". */
static const char *health_cell(yajl_val p, char *tmp, size_t cap)
{
    if (is_true(p, "healthy")) return "yes";
    yajl_val checks = qc_json_get(p, "checks");
    size_t len = (size_t)snprintf(tmp, cap, "no");
    const char *sep = ":";
    for (size_t i = 0; checks && YAJL_IS_ARRAY(checks) && i < checks->u.array.len; i++) {
        yajl_val k = checks->u.array.values[i];
        const char *name = qc_json_get_str(k, "name"), *st = qc_json_get_str(k, "status");
        if (!st || strcmp(st, "passing") == 0) continue;
        if (!name || !qc_json_is_printable((const uint8_t *)name, strlen(name))) name = "?";
        int k_len = snprintf(tmp + len, cap - len, "%s%s", sep, name);
        if (k_len < 0 || (size_t)k_len >= cap - len) { /* too long: cut, and say so */
            snprintf(tmp + cap - 4, 4, "...");
            break;
        }
        len += (size_t)k_len;
        sep = ",";
    }
    return tmp;
}

/* One table cell; *buf is a malloc'd string or NULL when cell is static. */
static const char *member_cell(yajl_val p, int col, char *tmp, size_t cap, char **buf)
{
    *buf = NULL;
    switch (col) {
    case COL_ID: return str_or(p, "identifier", "?");
    case COL_ROLE: return str_or(p, "role", "?");
    case COL_UP: return is_true(p, "up") ? "yes" : "no";
    case COL_HEALTH: return health_cell(p, tmp, cap);
    case COL_VOTER: return is_true(p, "voter") ? "yes" : "no";
    case COL_PRIORITY: return num_text(qc_json_get(p, "priority"));
    case COL_ADDR:
        snprintf(tmp, cap, "%s:%s", str_or(p, "host", "?"), num_text(qc_json_get(p, "port")));
        return tmp;
    default: *buf = metadata_text(p); return *buf ? *buf : "{}";
    }
}

/* The answer must be an array of members. */
static int print_members(yajl_val list)
{
    static const char *const heads[NCOLS] = {"IDENTIFIER", "ROLE",     "UP",      "HEALTH",
                                             "VOTER",      "PRIORITY", "ADDRESS", "METADATA"};
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

/* The JSON text g holds; malloc'd, NULL when out of memory. Frees g. */
static char *gen_text(yajl_gen g)
{
    char *s = qc_json_gen_text(g, NULL);
    yajl_gen_free(g);
    return s;
}

/* {"KEY": value}; malloc'd, NULL when out of memory. */
static char *object_body(const char *key, const char *value)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return NULL;
    if (yajl_gen_map_open(g) != yajl_gen_status_ok || qc_json_key_str(g, key, value) != 0 ||
        yajl_gen_map_close(g) != yajl_gen_status_ok) {
        yajl_gen_free(g);
        return NULL;
    }
    return gen_text(g);
}

/* The request body {"to": id}, or NULL for "the best peer". */
static char *transfer_body(const char *to) { return to ? object_body("to", to) : NULL; }

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
    int rc =
        http_call(o, "POST", "/v1/transfer-leadership", NULL, body, body ? strlen(body) : 0, &r);
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

/* ---------- membership: join, leave ---------- */

/* HOST:PORT or [V6]:PORT with a port from 1 to 65535, as the API takes. */
static int join_address_ok(const char *a)
{
    char host[256];
    const char *port;
    if (qc_http_split_hostport(a, host, sizeof host, &port) != 0 || strlen(port) > 5) return 0;
    long n = strtol(port, NULL, 10);
    return n >= 1 && n <= 65535;
}

/* {"join": [every argument]}; malloc'd, NULL when out of memory. */
static char *join_body(const opts *o)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) return NULL;
    int bad = yajl_gen_map_open(g) != yajl_gen_status_ok || qc_json_key(g, "join") != 0 ||
              yajl_gen_array_open(g) != yajl_gen_status_ok;
    for (int i = 0; !bad && i < o->nargs; i++) bad = qc_json_str(g, o->args[i]) != 0;
    if (bad || yajl_gen_array_close(g) != yajl_gen_status_ok ||
        yajl_gen_map_close(g) != yajl_gen_status_ok) {
        yajl_gen_free(g);
        return NULL;
    }
    return gen_text(g);
}

/* The agent's own word on a change when it gives one, else done_text. */
static void print_member_done(const resp *r, const char *done_text)
{
    yajl_val v = r->body ? yajl_tree_parse(r->body, NULL, 0) : NULL;
    const char *msg = qc_json_get_str(v, "message");
    printf("%s\n", msg && *msg ? msg : done_text);
    yajl_tree_free(v);
}

/* POSTs body (NULL: empty) to path and waits for the change to commit.
 * Exit 0 on 200, notfound_code on 404, else 1 with the error on stderr;
 * --json prints the answer as it is, whatever its status. */
static int member_request(const opts *o, const char *path, const char *body, const char *done_text,
                          int notfound_code)
{
    opts lo = *o;
    lo.wait_ms = CLI_MEMBER_WAIT_MS;
    resp r;
    if (http_call(&lo, "POST", path, NULL, body, body ? strlen(body) : 0, &r)) return EXIT_FAIL;
    int code = r.status == 200 ? EXIT_OK : r.status == 404 ? notfound_code : EXIT_FAIL;
    if (o->json)
        print_raw(&r);
    else if (code == EXIT_OK)
        print_member_done(&r, done_text);
    else
        report_error(o, &r, code);
    free(r.body);
    return code;
}

static int cmd_join(const opts *o)
{
    if (o->nargs < 1) return usage_error("join needs HOST:PORT of a running member%s", "");
    if (o->nargs > CLI_MAX_JOIN)
        return usage_error("join takes at most %d addresses", CLI_MAX_JOIN);
    for (int i = 0; i < o->nargs; i++)
        if (!join_address_ok(o->args[i]))
            return usage_error("bad address %s: expected HOST:PORT, port 1 to 65535", o->args[i]);
    char *body = join_body(o);
    if (!body) {
        fprintf(stderr, "qcluster: out of memory\n");
        return EXIT_FAIL;
    }
    int code = member_request(o, "/v1/join", body, "joined the cluster", EXIT_FAIL);
    free(body);
    return code;
}

static int cmd_leave(const opts *o)
{
    if (o->nargs > 1) return usage_error("leave takes at most one IDENTIFIER%s", "");
    const char *id = o->nargs ? o->args[0] : NULL;
    if (id && !*id) return usage_error("leave: IDENTIFIER must not be empty%s", "");
    char *body = id ? object_body("identifier", id) : NULL;
    if (id && !body) {
        fprintf(stderr, "qcluster: out of memory\n");
        return EXIT_FAIL;
    }
    char done[300];
    if (id)
        snprintf(done, sizeof done, "removed %.256s from the cluster", id);
    else
        snprintf(done, sizeof done, "this node left the cluster");
    int code = member_request(o, "/v1/leave", body, done, EXIT_NONE);
    free(body);
    return code;
}

/* ---------- kv ---------- */

/* /v1/kv/KEY[?cas=N|?stale], or the listing /v1/kv/?prefix=P[&stale] when
 * key is NULL; malloc'd (the caller frees it), NULL when out of memory. */
static char *kv_url(const opts *o, const char *key, const char *prefix)
{
    const char *text = key ? key : prefix ? prefix : "";
    char *url = malloc(strlen(text) * 3 + 64);
    if (!url) return NULL;
    char *e = stpcpy(url, key ? "/v1/kv/" : "/v1/kv/?prefix=");
    e = qc_http_url_encode(e, text);
    if (o->stale) stpcpy(e, key ? "?stale" : "&stale");
    if (o->has_cas) sprintf(e, "?cas=%lld", (long long)o->cas);
    return url;
}

/* A KV answer other than 200: exit 3 for 404, else 1; says why on stderr
 * (the answer on stdout with --json). */
static int kv_failed(const opts *o, const resp *r)
{
    int code = r->status == 404 ? EXIT_NONE : EXIT_FAIL;
    if (o->json) {
        print_raw(r);
        return code;
    }
    if (r->status != 409) return report_error(o, r, code);
    yajl_val v = r->body ? yajl_tree_parse(r->body, NULL, 0) : NULL;
    fprintf(stderr, "qcluster: revision mismatch: the key's current revision is %s\n",
            num_text(qc_json_get(v, "revision")));
    yajl_tree_free(v);
    return code;
}

/* Runs one KV request and frees url (malloc'd; NULL: out of memory); the
 * answer is handed to ok on 200. */
static int kv_request(const opts *o, const char *method, char *url, const void *body, size_t blen,
                      int (*ok)(const opts *o, const resp *r))
{
    if (!url) {
        fprintf(stderr, "qcluster: out of memory\n");
        return EXIT_FAIL;
    }
    resp r;
    int rc = http_call(o, method, url, body ? "application/octet-stream" : NULL, body, blen, &r);
    free(url);
    if (rc) return EXIT_FAIL;
    int code = r.status == 200 ? ok(o, &r) : kv_failed(o, &r);
    free(r.body);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "qcluster: cannot write the output: %s\n", strerror(errno));
        code = EXIT_FAIL;
    }
    return code;
}

/* {"key", "value", "revision"} of a get, as the listing has them. */
static int print_got_json(const opts *o, const resp *r)
{
    uint64_t rev;
    char *end;
    errno = 0;
    rev = strtoull(r->revision, &end, 10);
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *buf;
    size_t len;
    int ok = r->revision[0] && !*end && !errno && g &&
             qc_json_kv(g, (const uint8_t *)o->args[1], strlen(o->args[1]),
                        (const uint8_t *)r->body, r->len, rev) == 0 &&
             yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok;
    if (ok) printf("%.*s\n", (int)len, (const char *)buf);
    if (g) yajl_gen_free(g);
    if (ok) return EXIT_OK;
    fprintf(stderr, "qcluster: bad answer from agent at %s\n", o->api);
    return EXIT_FAIL;
}

static int print_got(const opts *o, const resp *r)
{
    if (o->json) return print_got_json(o, r);
    if (r->len) fwrite(r->body, 1, r->len, stdout);
    return EXIT_OK;
}

/* The revision of a put or delete, or the API's answer with --json. */
static int print_revision(const opts *o, const resp *r)
{
    if (o->json) {
        print_raw(r);
        return EXIT_OK;
    }
    yajl_val v = parse_body(o, r);
    yajl_val rev = qc_json_get(v, "revision");
    int ok = rev && YAJL_IS_INTEGER(rev);
    if (ok) printf("%s\n", rev->u.number.r);
    yajl_tree_free(v);
    return ok ? EXIT_OK : EXIT_FAIL;
}

/* Bytes as they are when they are printable text that cannot be mistaken
 * for the tag, else "base64:" and their base64. */
static int print_shown(const uint8_t *p, size_t n)
{
    size_t tl = sizeof B64_TAG - 1;
    if (qc_json_is_printable(p, n) && !(n >= tl && memcmp(p, B64_TAG, tl) == 0)) {
        fwrite(p, 1, n, stdout);
        return 0;
    }
    char *b;
    size_t bl;
    if (qc_json_b64_encode(p, n, &b, &bl) != 0) return -1;
    printf("%s%s", B64_TAG, b);
    free(b);
    return 0;
}

/* One field of a listed entry; b64: the API sent it base64. */
static int print_entry_field(yajl_val e, const char *name, int b64)
{
    const char *s = qc_json_get_str(e, name);
    if (!s) return -1;
    if (!b64) return print_shown((const uint8_t *)s, strlen(s));
    uint8_t *d;
    size_t dl;
    if (qc_json_b64_decode(s, strlen(s), &d, &dl) != 0) return -1;
    int rc = print_shown(d, dl);
    free(d);
    return rc;
}

static int print_listing(const opts *o, const resp *r)
{
    if (o->json) {
        print_raw(r);
        return EXIT_OK;
    }
    yajl_val v = parse_body(o, r);
    int bad = !v || !YAJL_IS_ARRAY(v);
    for (size_t i = 0; !bad && i < v->u.array.len; i++) {
        yajl_val e = v->u.array.values[i];
        const char *enc = qc_json_get_str(e, "encoding");
        int b64 = enc && strcmp(enc, "base64") == 0;
        bad = print_entry_field(e, "key", b64) != 0;
        if (!bad) printf("\t%s\t", num_text(qc_json_get(e, "revision")));
        bad = bad || print_entry_field(e, "value", b64) != 0;
        if (!bad) putchar('\n');
    }
    if (bad && v) fprintf(stderr, "qcluster: bad answer from agent at %s\n", o->api);
    yajl_tree_free(v);
    return bad ? EXIT_FAIL : EXIT_OK;
}

/* Reads all of stdin (past CLI_MAX_VALUE it gives up); *out malloc'd (the
 * caller frees it). 0, or -1 after saying why. */
static int read_stdin(char **out, size_t *len)
{
    size_t cap = 0, n = 0;
    char *b = NULL;
    const char *why = "out of memory";
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = cap > CLI_MAX_VALUE ? NULL : realloc(b, ncap);
            if (!nb) {
                if (cap > CLI_MAX_VALUE) why = "too large";
                break;
            }
            b = nb;
            cap = ncap;
        }
        size_t got = fread(b + n, 1, cap - n, stdin);
        n += got;
        if (got > 0) continue;
        if (!ferror(stdin)) {
            *out = b;
            *len = n;
            return 0;
        }
        why = strerror(errno);
        break;
    }
    free(b);
    fprintf(stderr, "qcluster: cannot read the value from stdin: %s\n", why);
    return -1;
}

static int kv_get(const opts *o)
{
    if (o->nargs != 2) return usage_error("usage: kv get KEY%s", "");
    if (o->has_cas) return usage_error("--cas is for kv put and kv del%s", "");
    return kv_request(o, "GET", kv_url(o, o->args[1], NULL), NULL, 0, print_got);
}

static int kv_put(const opts *o)
{
    if (o->nargs != 3) return usage_error("usage: kv put KEY VALUE (VALUE - reads stdin)%s", "");
    if (o->stale) return usage_error("--stale is for kv get and kv list%s", "");
    char *in = NULL;
    const char *value = o->args[2];
    size_t vlen = strlen(value);
    if (strcmp(value, "-") == 0) {
        if (read_stdin(&in, &vlen) != 0) return EXIT_FAIL;
        value = in;
    }
    int code = kv_request(o, "PUT", kv_url(o, o->args[1], NULL), value, vlen, print_revision);
    free(in);
    return code;
}

static int kv_del(const opts *o)
{
    if (o->nargs != 2) return usage_error("usage: kv del KEY%s", "");
    if (o->stale) return usage_error("--stale is for kv get and kv list%s", "");
    return kv_request(o, "DELETE", kv_url(o, o->args[1], NULL), NULL, 0, print_revision);
}

static int kv_list(const opts *o)
{
    if (o->nargs > 2) return usage_error("usage: kv list [PREFIX]%s", "");
    if (o->has_cas) return usage_error("--cas is for kv put and kv del%s", "");
    return kv_request(o, "GET", kv_url(o, NULL, o->nargs == 2 ? o->args[1] : ""), NULL, 0,
                      print_listing);
}

static const struct {
    const char *name;
    int (*fn)(const opts *o);
} kv_table[] = {{"get", kv_get}, {"put", kv_put}, {"del", kv_del}, {"list", kv_list}};

static int cmd_kv(const opts *o)
{
    if (o->nargs < 1) return usage_error("kv needs get, put, del or list%s", "");
    for (size_t i = 0; i < sizeof kv_table / sizeof kv_table[0]; i++)
        if (strcmp(o->args[0], kv_table[i].name) == 0) return kv_table[i].fn(o);
    return usage_error("unknown kv command: %s", o->args[0]);
}

/* ---------- health checks ---------- */

/* "passing"/"failing" rows; exit 1 when one is failing (or on a bad answer). */
static int print_checks(yajl_val list)
{
    if (!YAJL_IS_ARRAY(list)) return -1;
    size_t n = list->u.array.len, wn = 4, wk = 4;
    int failing = 0;
    for (size_t i = 0; i < n; i++) {
        yajl_val k = list->u.array.values[i];
        size_t l = strlen(str_or(k, "name", "?")), m = strlen(str_or(k, "kind", "?"));
        if (l > wn) wn = l;
        if (m > wk) wk = m;
    }
    printf("%-*s  %-*s  %-7s  %-19s  %s\n", (int)wn, "NAME", (int)wk, "KIND", "STATUS", "SINCE",
           "OUTPUT");
    for (size_t i = 0; i < n; i++) {
        yajl_val k = list->u.array.values[i];
        const char *status = str_or(k, "status", "?");
        failing |= strcmp(status, "passing") != 0;
        yajl_val since = qc_json_get(k, "since");
        time_t t = since && YAJL_IS_NUMBER(since) ? (time_t)since->u.number.d : 0;
        char when[32] = "?";
        struct tm tm;
        if (t && localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        /* the output on one line: its first line only */
        const char *out = str_or(k, "output", "");
        printf("%-*s  %-*s  %-7s  %-19s  %.*s\n", (int)wn, str_or(k, "name", "?"), (int)wk,
               str_or(k, "kind", "?"), status, when, (int)strcspn(out, "\r\n"), out);
    }
    return failing;
}

/* PUT /v1/checks/NAME/pass|fail with OUTPUT as the body. */
static int checks_report(const opts *o, int pass)
{
    if (o->nargs < 2 || o->nargs > 3)
        return usage_error("usage: checks %s NAME [OUTPUT]", pass ? "pass" : "fail");
    const char *name = o->args[1], *out = o->nargs == 3 ? o->args[2] : "";
    size_t nl = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
    if (!*name || name[nl] || nl > 64)
        return usage_error("bad check name %s: expected letters, digits, '_', '-', '.'", name);
    char path[128];
    snprintf(path, sizeof path, "/v1/checks/%s/%s", name, pass ? "pass" : "fail");
    resp r;
    if (http_call(o, "PUT", path, "text/plain", out, strlen(out), &r)) return EXIT_FAIL;
    int code = r.status == 200 ? EXIT_OK : r.status == 404 ? EXIT_NONE : EXIT_FAIL;
    if (o->json)
        print_raw(&r);
    else if (code == EXIT_OK)
        printf("%s reported %s\n", name, pass ? "passing" : "failing");
    else
        report_error(o, &r, code);
    free(r.body);
    return code;
}

static int cmd_checks(const opts *o)
{
    if (o->nargs >= 1 && strcmp(o->args[0], "pass") == 0) return checks_report(o, 1);
    if (o->nargs >= 1 && strcmp(o->args[0], "fail") == 0) return checks_report(o, 0);
    if (o->nargs) return usage_error("checks takes pass or fail, or nothing: %s", o->args[0]);
    resp r;
    if (http_call(o, "GET", "/v1/checks", NULL, NULL, 0, &r)) return EXIT_FAIL;
    int code = EXIT_OK;
    yajl_val v = r.status == 200 ? parse_body(o, &r) : NULL;
    if (r.status != 200) {
        code = report_error(o, &r, EXIT_FAIL);
    } else if (!v || !YAJL_IS_ARRAY(v)) {
        code = EXIT_FAIL;
    } else if (o->json) {
        print_raw(&r);
        for (size_t i = 0; i < v->u.array.len; i++)
            if (strcmp(str_or(v->u.array.values[i], "status", "?"), "passing") != 0)
                code = EXIT_FAIL;
    } else if (print_checks(v) != 0) {
        code = EXIT_FAIL;
    }
    yajl_tree_free(v);
    free(r.body);
    return code;
}

/* ---------- history ---------- */

/* "2026-12-07 14:50:09.123 term 3: node1 -> none (leader_down)", local time. */
static int print_history(yajl_val list)
{
    if (!YAJL_IS_ARRAY(list)) return -1;
    for (size_t i = 0; i < list->u.array.len; i++) {
        yajl_val e = list->u.array.values[i];
        yajl_val t = qc_json_get(e, "time");
        double secs = t && YAJL_IS_NUMBER(t) ? t->u.number.d : 0;
        time_t whole = (time_t)secs;
        char when[32] = "?";
        struct tm tm;
        if (whole && localtime_r(&whole, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        printf("%s.%03d term %s: %s -> %s (%s)\n", when, (int)((secs - (double)whole) * 1000),
               num_text(qc_json_get(e, "term")), str_or(e, "previous_leader", "none"),
               str_or(e, "leader", "none"), str_or(e, "reason", "?"));
    }
    return 0;
}

static int cmd_history(const opts *o)
{
    return get_and_print(o, "/v1/history", print_history, 0, NULL);
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
    {"status", cmd_status},   {"leader", cmd_leader},
    {"members", cmd_members}, {"transfer", cmd_transfer},
    {"join", cmd_join},       {"leave", cmd_leave},
    {"kv", cmd_kv},           {"checks", cmd_checks},
    {"history", cmd_history}, {"version", cmd_version},
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
    if ((o.has_cas || o.stale) && strcmp(o.cmd, "kv") != 0)
        return usage_error("--cas and --stale are for kv commands only%s", "");
    for (size_t i = 0; i < sizeof cmd_table / sizeof cmd_table[0]; i++)
        if (strcmp(o.cmd, cmd_table[i].name) == 0) return cmd_table[i].fn(&o);
    fprintf(stderr, "qcluster: unknown command: %s\n%s", o.cmd, usage_text);
    return EXIT_USAGE;
}
