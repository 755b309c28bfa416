/* Checkpoint inspection: what a checkpoint is and what is wrong with it.
 *
 * mk_inspect() reads only headers and config (plus, with scan, every value)
 * and produces a JSON report: architecture, expert layout, quantization per
 * module, totals (parameters, bytes by dtype, experts, active parameters per
 * token), memory needed all-resident vs non-experts-resident, and a list of
 * problems, each with a code, the tensor or module it concerns and its
 * cause. The CLI prints it as text or JSON. */
#ifndef MOEKIT_INSPECT_H
#define MOEKIT_INSPECT_H

#include <stdbool.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_inspect_opts {
    bool scan; /* read every value: NaN/Inf counts, values outside the f16 range */
} mk_inspect_opts;

/* Inspect the checkpoint at `path`; *json_out is a malloc'd JSON text.
 * Problems found in the checkpoint are part of the report, not errors;
 * an error is returned only when the checkpoint cannot be read at all. */
mk_status mk_inspect(const char *path, const mk_inspect_opts *opts, char **json_out);

/* Inspect the GGUF file at `path` (src/inspect/inspect_gguf.c): version,
 * architecture, every key/value pair (arrays as their type, count and
 * first values), every tensor (name, ggml type, dimensions innermost
 * first, offset, bytes), totals by type and problems (a tensor outside
 * the file, an unknown type, rows that are not whole blocks, a misaligned
 * offset). Only the header is read. *json_out is a malloc'd JSON text;
 * an error (naming the file, the field and its offset) only when the
 * header cannot be read. */
mk_status mk_inspect_gguf(const char *path, char **json_out);

#ifdef __cplusplus
}
#endif
#endif
