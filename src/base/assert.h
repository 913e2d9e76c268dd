/* qc_assert(cond): an invariant that must never fail, in the core, the WAL
 * and the transport. Never for what bad input can cause: input gets a clear
 * QC_E... error and the agent runs on. Always compiled in, release builds
 * and -DNDEBUG included: a node whose invariant broke stops (the message
 * names the file, the line and the condition; then abort(), so a supervisor
 * restarts it from what is durable) rather than go on and corrupt the
 * cluster. A check that holds costs a compare. No I/O in this header, so
 * the pure core may use it; the simulator links its own qc_assert_fail
 * (-Wl,--wrap) to report the seed that broke it. */
#ifndef QC_ASSERT_H
#define QC_ASSERT_H

/* Writes "qcluster: FILE:LINE: invariant failed: COND" to stderr, then
 * abort(). */
_Noreturn void qc_assert_fail(const char *file, int line, const char *cond);

#define qc_assert(cond) ((cond) ? (void)0 : qc_assert_fail(__FILE__, __LINE__, #cond))

#endif
