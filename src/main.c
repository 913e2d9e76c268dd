/* qcluster: the agent and the command-line client in one binary, over
 * libqcluster. main only dispatches; every command lives in the library. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "agent/agent.h"
#include "base/common.h"
#include "base/log.h"
#include "cli/cli.h"

#include <qcluster.h>

static void usage(FILE *out)
{
    fputs("usage: qcluster agent CONFIG          run the agent in the foreground\n"
          "       qcluster check CONFIG          validate a config\n"
          "       qcluster status|leader|members [--api HOST:PORT] [--json]\n"
          "       qcluster transfer [IDENTIFIER] [--api HOST:PORT] [--json]\n"
          "       qcluster version\n",
          out);
}

/* Every cluster link, API client and exec hook takes descriptors, and 1024
 * runs out: the agent raises its soft limit to the hard one and says what
 * it has. Only this program does so; a library that raised its host
 * program's limit would surprise it (embedders raise it themselves). */
static void raise_descriptor_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        qc_log(QC_LOG_WARN, "agent", "cannot read the descriptor limit: %s", strerror(errno));
        return;
    }
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            qc_log(QC_LOG_WARN, "agent", "cannot raise the descriptor limit from %llu to %llu: %s",
                   (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
            return;
        }
        qc_log(QC_LOG_INFO, "agent", "descriptor limit %llu (raised from %llu, the hard limit)",
               (unsigned long long)rl.rlim_cur, (unsigned long long)was);
        return;
    }
    qc_log(QC_LOG_INFO, "agent", "descriptor limit %llu (the hard limit)",
           (unsigned long long)rl.rlim_cur);
}

/* qcluster agent CONFIG: the library's node, run in the foreground. Exit
 * codes: 0 after a clean stop, 2 for a bad config, 1 when it could not
 * start (or stopped after a failure). */
static int run_agent(const char *path)
{
    qc_node *n;
    char err[1024];
    int rc = qc_node_new(path, &n, err, sizeof err);
    if (rc == QC_ENOMEM) {
        qc_log(QC_LOG_ERROR, "agent", "cannot start: out of memory");
        return 1;
    }
    if (rc != QC_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    raise_descriptor_limit();
    int code = qc_node_run(n);
    qc_node_free(n);
    return code;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "agent") == 0 || strcmp(cmd, "check") == 0) {
        if (argc != 3 || argv[2][0] == '-') {
            usage(stderr);
            return 2;
        }
        return strcmp(cmd, "agent") == 0 ? run_agent(argv[2]) : qc_agent_check(argv[2]);
    }
    if (qc_cli_is_command(cmd)) return qc_cli_main(argc - 1, argv + 1);
    fprintf(stderr, "qcluster: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
