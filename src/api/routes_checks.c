/* The health checks' routes, /v1/checks: GET lists this node's checks,
 * PUT /v1/checks/NAME/pass|fail takes a ttl check's report. It reaches
 * the server only through api_int.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "api/api_int.h"
#include "base/common.h"
#include "base/json.h"

#define CHECKS_STACK 16

static void checks_json(yajl_gen g, const qc_check_info *k)
{
    yajl_gen_map_open(g);
    qc_json_key_str(g, "name", k->name);
    qc_json_key_str(g, "kind", k->kind);
    qc_json_key_str(g, "status", k->passing ? "passing" : "failing");
    qc_json_key_str(g, "output", k->output ? k->output : "");
    /* milliseconds are all the clocks behind them promise */
    char num[40];
    int n = snprintf(num, sizeof num, "%.3f", k->since);
    qc_json_key(g, "since");
    yajl_gen_number(g, num, (size_t)n);
    n = snprintf(num, sizeof num, "%.3f", k->duration);
    qc_json_key(g, "duration");
    yajl_gen_number(g, num, (size_t)n);
    yajl_gen_map_close(g);
}

/* GET /v1/checks: this node's checks, in config order. */
static void checks_list(conn *c)
{
    const qc_view *v = c->api->view;
    qc_check_info buf[CHECKS_STACK], *list = buf;
    size_t n = v->checks(v->ud, buf, CHECKS_STACK);
    if (n > CHECKS_STACK) {
        list = calloc(n, sizeof *list);
        if (!list) {
            api_respond_error(c, 500, "out of memory", NULL);
            return;
        }
        size_t m = v->checks(v->ud, list, n);
        if (m < n) n = m;
    }
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        if (list != buf) free(list);
        api_respond_error(c, 500, "out of memory", NULL);
        return;
    }
    yajl_gen_array_open(g);
    for (size_t i = 0; i < n; i++) checks_json(g, &list[i]);
    yajl_gen_array_close(g);
    if (list != buf) free(list);
    api_respond_json_gen(c, 200, g, NULL);
    yajl_gen_free(g);
}

/* PUT /v1/checks/NAME/pass|fail: a ttl check's report; the body (any
 * bytes, maybe none) is kept as its output. */
static void checks_report(conn *c, const char *rest, size_t n)
{
    const qc_view *v = c->api->view;
    const char *slash = memchr(rest, '/', n);
    size_t nl = slash ? (size_t)(slash - rest) : 0;
    const char *verb = slash ? slash + 1 : "";
    size_t vl = slash ? n - nl - 1 : 0;
    int pass = vl == 4 && memcmp(verb, "pass", 4) == 0;
    if (!slash || nl == 0 || nl > 64 || (!pass && !(vl == 4 && memcmp(verb, "fail", 4) == 0))) {
        api_respond_error(c, 404, "expected /v1/checks/NAME/pass or /v1/checks/NAME/fail", NULL);
        return;
    }
    char name[65];
    memcpy(name, rest, nl);
    name[nl] = '\0';
    int rc = v->check_report(v->ud, name, pass, c->body ? c->body : "", c->body_len);
    if (rc == QC_ENOTFOUND) {
        api_respond_error(c, 404, "no such check", NULL);
    } else if (rc == QC_EINVAL) {
        api_respond_error(c, 409, "not a ttl_ms check: only those take reports", NULL);
    } else if (rc != QC_OK) {
        api_respond_error(c, 500, qc_strerror(rc), NULL);
    } else {
        static const char ok[] = "{\"ok\":true}";
        api_respond(c, 200, "application/json", ok, sizeof ok - 1, NULL);
    }
}

void api_h_checks(conn *c, const req *r)
{
    static const char base[] = "/v1/checks";
    const qc_view *v = c->api->view;
    if (!v->checks || !v->check_report) {
        api_respond_error(c, 501, "health checks are not available", NULL);
        return;
    }
    size_t n = r->path_len - (sizeof base - 1);
    if (c->method == HTTP_GET && n == 0) {
        checks_list(c);
    } else if (c->method == HTTP_PUT && n > 1) {
        checks_report(c, r->path + sizeof base, n - 1);
    } else if (c->method == HTTP_GET) {
        api_respond_error(c, 404, "no such path", NULL);
    } else {
        api_respond_error(c, 405, "method not allowed", "Allow: GET\r\n");
    }
}
