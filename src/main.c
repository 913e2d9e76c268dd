/* qcluster: the agent and the command-line client in one binary. main only
 * dispatches; every command lives in its module. */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "cli.h"
#include "common.h"

static void usage(FILE *out)
{
    fputs("usage: qcluster agent CONFIG          run the agent in the foreground\n"
          "       qcluster check CONFIG          validate a config\n"
          "       qcluster status|leader|members [--api HOST:PORT] [--json]\n"
          "       qcluster transfer [IDENTIFIER] [--api HOST:PORT] [--json]\n"
          "       qcluster version\n",
          out);
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
        return strcmp(cmd, "agent") == 0 ? qc_agent_main(argv[2]) : qc_agent_check(argv[2]);
    }
    if (qc_cli_is_command(cmd)) return qc_cli_main(argc - 1, argv + 1);
    fprintf(stderr, "qcluster: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
