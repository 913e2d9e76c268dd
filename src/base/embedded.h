/* Files compiled into the binary so it runs from anywhere (see
 * scripts/embed.lua): the Lua sources of lua/ and the status page. */
#ifndef QC_EMBEDDED_H
#define QC_EMBEDDED_H

#include <stddef.h>

/* A file's bytes (static, never freed, NUL after the last) and its length,
 * or NULL when there is none. name: "NAME" for lua/NAME.lua, else the path
 * from the repository root ("ui/index.html"). */
const char *qc_embedded_lookup(const char *name, size_t *len);

#endif
