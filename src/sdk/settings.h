/* qc_settings (include/qcluster.h): config values set in C, kept as JSON
 * text per key and turned into one JSON config, which the node loads and
 * lua/config.lua checks exactly as it checks a file. Checks here only that
 * each value is JSON; the meaning of keys is the checker's. */
#ifndef QC_SETTINGS_H
#define QC_SETTINGS_H

#include <qcluster.h>
#include <stddef.h>

/* The config object of s as JSON text: every key set, and peers from
 * qc_settings_add_peer (which replace a peers key set otherwise). *json is
 * malloc'd (the caller frees it), *len its length. QC_OK, QC_ENOMEM, or
 * QC_EINVAL for a value the loader cannot take ("settings: KEY: ..."), with
 * a message in err. */
int qc_settings_json(const qc_settings *s, char **json, size_t *len, char *err, size_t errlen);

#endif
