/* The request target's text, for the server (api.c) and the routes
 * (routes_*.c): finding a query parameter or copying its value, reading
 * a number in it, percent-decoding. Pure: no connection, no loop, no allocation. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

/* Finds name or name=value in the query: 1 with the raw value, else 0. */
int api_query_find(const req *r, const char *name, const char **val, size_t *vlen)
{
    if (!r->query) return 0; /* no query: NULL + 0 would be undefined */
    size_t nl = strlen(name);
    const char *q = r->query, *end = r->query + r->query_len;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) >= nl && memcmp(q, name, nl) == 0 &&
            (q + nl == stop || q[nl] == '=')) {
            *val = q + nl == stop ? stop : q + nl + 1;
            *vlen = (size_t)(stop - *val);
            return 1;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* Finds name=value in a query string; value copied into out (cap bytes). */
int api_query_get(const req *r, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    if (!api_query_find(r, name, &v, &vl)) return 0;
    if (vl >= cap) return -1;
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 1;
}

int api_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return -1;
    *out = v;
    return 0;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (room for n bytes): 0 and *len, or -1 on
 * a broken escape. */
int api_pct_decode(const char *s, size_t n, uint8_t *out, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = (uint8_t)s[i];
            continue;
        }
        if (i + 2 >= n) return -1;
        int h = hex_digit(s[i + 1]), l = hex_digit(s[i + 2]);
        if (h < 0 || l < 0) return -1;
        out[o++] = (uint8_t)(h << 4 | l);
        i += 2;
    }
    *len = o;
    return 0;
}
