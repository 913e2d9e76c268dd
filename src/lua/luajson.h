/* JSON text <-> Lua values with yajl (yajl_tree to parse, yajl_gen to write).
 * JSON null is the light userdata NULL (qcluster.null); an empty Lua table is
 * written as {}. Never keeps state between calls. */
#ifndef QC_LUAJSON_H
#define QC_LUAJSON_H

#include <lua.h>
#include <stddef.h>

/* Parses text (len bytes) and pushes the value on L. On failure pushes
 * nothing, returns QC_EINVAL and writes the message into err and the 1-based
 * line of the error into *line (when line is not NULL), or 0 when the
 * message names the key instead: "peers[1].metadata.k: text is not valid
 * UTF-8" (every string must be UTF-8, qc_json_check_utf8; lists count
 * from 1, as Lua does). */
int qc_luajson_decode(lua_State *L, const char *text, size_t len, int *line, char *err,
                      size_t errlen);

/* Writes the value at idx as compact JSON with object keys sorted. On success
 * *out is malloc'd (NUL-terminated, caller frees) and *len its length. Fails
 * with QC_EINVAL and a message naming the path ("a.b[2]: ...") for values
 * JSON cannot hold (functions, NaN, mixed tables, non-UTF-8 text, cycles). */
int qc_luajson_encode(lua_State *L, int idx, char **out, size_t *len, char *err, size_t errlen);
/* The same, with messages naming the path under path ("metadata.k: ..."
 * for path "metadata"; NULL for none). Text must be UTF-8 (qc_json_is_utf8). */
int qc_luajson_encode_at(lua_State *L, int idx, const char *path, char **out, size_t *len,
                         char *err, size_t errlen);

/* Registers encode(value) -> text | nil, err and decode(text) -> value |
 * nil, err into the table on top of the stack, plus null. */
void qc_luajson_register(lua_State *L);

#endif
