/* The command-line client: status, leader, members, transfer, kv, version
 * and their --api/--json (kv: --cas/--stale) options. Talks to an agent's
 * HTTP API only. */
#ifndef QC_CLI_H
#define QC_CLI_H

/* Runs the client command argv[0] (argc >= 1); returns the exit code of the
 * contract: 0 ok, 1 agent unreachable or failed, 2 bad usage, 3 none. */
int qc_cli_main(int argc, char **argv);
/* 1 when name is a client command handled by qc_cli_main. */
int qc_cli_is_command(const char *name);

#endif
