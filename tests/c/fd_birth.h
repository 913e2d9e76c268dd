/* tests/c/fd_birth.c: descriptors born without FD_CLOEXEC so far. */
#ifndef QC_FD_BIRTH_H
#define QC_FD_BIRTH_H

/* How many; *what names the first ("fd N from pipe()"). */
int fd_birth_misses(const char **what);

#endif
