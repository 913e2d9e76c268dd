/* Test-only: runs the command-line client (qc_cli_main) on its own, so the
 * CLI specs can drive it against build/api_fake before the agent links.
 * Usage: qcli COMMAND [ARGS...]. Never linked into the agent. */
#include <stdio.h>

#include "cli/cli.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: qcli COMMAND [ARGS...]\n");
        return 2;
    }
    return qc_cli_main(argc - 1, argv + 1);
}
