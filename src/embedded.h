/* Lua sources from lua/ compiled into the binary (see scripts/embed.lua). */
#ifndef QC_EMBEDDED_H
#define QC_EMBEDDED_H

#include <stddef.h>

/* The source of lua/NAME.lua and its length, or NULL when there is none. */
const char *qc_embedded_lookup(const char *name, size_t *len);

#endif
