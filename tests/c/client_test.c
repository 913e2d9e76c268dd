/* Test-only: drives the C client SDK (qc_client_* of libqcluster) for
 * tests/integration/client_c_spec.lua, one call a run, printing what came
 * back as one line of key=value. Never linked into the agent.
 * Usage: client_test API|- leader | is_leader | wait SECONDS | loop SECONDS |
 *        checks | pass NAME [OUTPUT] | fail NAME [OUTPUT]  (-: api NULL)
 * QC_TLS_CACERT, QC_TLS_CERT, QC_TLS_KEY: given to qc_client_set_tls when
 * one is set (the SDK reads QCLUSTER_CACERT, ... itself). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qcluster.h>

static void print_peer(int rc, const qc_peer *p)
{
    if (!p) {
        printf("rc=%d (%s) peer=NULL\n", rc, qc_strerror(rc));
        return;
    }
    printf("rc=%d (%s) identifier=%s host=%s port=%d role=%s up=%d voter=%d priority=%d "
           "healthy=%d metadata=%s\n",
           rc, qc_strerror(rc), p->identifier, p->host, p->port, p->role, p->up, p->voter,
           p->priority, p->healthy, p->metadata);
}

/* checks: one line a check, "check NAME KIND passing=N since=S output=O";
 * pass|fail NAME [OUTPUT]: "rc=N". */
static int run_checks(qc_client *c, int argc, char **argv)
{
    if (strcmp(argv[2], "checks") == 0) {
        qc_check *list = (qc_check *)1;
        size_t n = 99;
        int rc = qc_client_checks(c, &list, &n);
        printf("rc=%d (%s) n=%zu\n", rc, qc_strerror(rc), n);
        for (size_t i = 0; rc == QC_OK && i < n; i++)
            printf("check %s %s passing=%d since=%.0f output=%s\n", list[i].name, list[i].kind,
                   list[i].passing, list[i].since, list[i].output);
        if (rc == QC_OK) qc_client_checks_free(list, n);
        return 0;
    }
    const char *output = argc > 4 ? argv[4] : NULL;
    int rc = strcmp(argv[2], "pass") == 0 ? qc_client_check_pass(c, argv[3], output)
                                          : qc_client_check_fail(c, argv[3], output);
    printf("rc=%d (%s)\n", rc, qc_strerror(rc));
    return 0;
}

/* loop SECONDS: waits for a leader change again and again on one client,
 * one line each, until a call names a leader other than the first call's
 * baseline (the leader when it started). Between calls it sleeps 300 ms,
 * as a program handling each answer would: a change then must not be
 * missed. */
static int run_loop(qc_client *c, double timeout)
{
    qc_peer *first = NULL;
    int rc = qc_client_get_leader_info(c, &first);
    if (rc != QC_OK) {
        print_peer(rc, first);
        return 1;
    }
    fprintf(stderr, "waiting\n");
    for (int i = 0; i < 20; i++) {
        qc_peer *p = NULL;
        rc = qc_client_wait_for_leader_change(c, timeout, &p);
        print_peer(rc, p);
        fflush(stdout);
        int done = p && strcmp(p->identifier, first->identifier) != 0;
        qc_peer_free(p);
        if (done) break;
        nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    }
    qc_peer_free(first);
    return 0;
}

static int run(qc_client *c, int argc, char **argv)
{
    qc_peer *p = (qc_peer *)1; /* the call must set it, also to NULL */
    int rc;
    if (strcmp(argv[2], "is_leader") == 0) {
        rc = qc_client_is_leader(c);
        printf("is_leader=%d\n", rc);
        return rc < 0;
    }
    if (strcmp(argv[2], "checks") == 0 ||
        ((strcmp(argv[2], "pass") == 0 || strcmp(argv[2], "fail") == 0) && argc >= 4))
        return run_checks(c, argc, argv);
    if (strcmp(argv[2], "loop") == 0 && argc == 4) return run_loop(c, strtod(argv[3], NULL));
    if (strcmp(argv[2], "leader") == 0) {
        rc = qc_client_get_leader_info(c, &p);
    } else if (strcmp(argv[2], "wait") == 0 && argc == 4) {
        /* the spec kills the leader once it has seen this line */
        fprintf(stderr, "waiting\n");
        rc = qc_client_wait_for_leader_change(c, strtod(argv[3], NULL), &p);
    } else {
        fprintf(stderr, "client_test: unknown command %s\n", argv[2]);
        return 2;
    }
    print_peer(rc, p);
    qc_peer_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: client_test API|- leader|is_leader|wait SECONDS\n");
        return 2;
    }
    qc_client *c;
    int rc = qc_client_new(strcmp(argv[1], "-") == 0 ? NULL : argv[1], getenv("QC_TOKEN"), &c);
    if (rc != QC_OK) {
        printf("new rc=%d (%s)\n", rc, qc_strerror(rc));
        return 1;
    }
    const char *ca = getenv("QC_TLS_CACERT"), *cert = getenv("QC_TLS_CERT");
    if ((ca || cert) && (rc = qc_client_set_tls(c, ca, cert, getenv("QC_TLS_KEY"))) != QC_OK) {
        printf("set_tls rc=%d (%s)\n", rc, qc_strerror(rc));
        qc_client_free(c);
        return 1;
    }
    int code = run(c, argc, argv);
    qc_client_free(c);
    fflush(stdout);
    return code;
}
