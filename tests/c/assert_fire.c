/* qc_assert's test program (tests/unit/assert_spec.lua): "hold" checks an
 * invariant that holds and goes on; "break" checks one that does not, which
 * must stop the process before it prints "went on". Built as everything is
 * and again with -DNDEBUG -O2, which must not turn it off. */
#include <stdio.h>
#include <string.h>

#include "base/assert.h"

int main(int argc, char **argv)
{
    /* volatile: the compiler may not decide the checks at build time. */
    volatile unsigned long commit = 7, last_index = 9;
    if (argc != 2) return 2;
    if (strcmp(argv[1], "hold") == 0) qc_assert(commit <= last_index);
    if (strcmp(argv[1], "break") == 0) qc_assert(last_index <= commit);
    printf("went on\n");
    return 0;
}
