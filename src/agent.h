/* The agent: owns the libev loop and wires the consensus core to the
 * transport, the store, the Lua hooks, the API and the metrics. Glue only:
 * every decision about leadership is the core's. */
#ifndef QC_AGENT_H
#define QC_AGENT_H

/* Runs the agent for the config at path in the foreground until SIGTERM or
 * SIGINT. Returns the process exit code: 0 after a clean stop, 2 for a bad
 * config, 1 when it could not start. */
int qc_agent_main(const char *path);

/* Checks the config at path (and its hooks) without starting anything.
 * Returns 0 when valid, 2 (with the message on stderr) when not. */
int qc_agent_check(const char *path);

#endif
