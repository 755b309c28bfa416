/* Atomic output directories (DST.partial/ -> DST). */
#ifndef MK_IO_OUTDIR_H
#define MK_IO_OUTDIR_H

#include <stdbool.h>

#include "moekit/status.h"

/* Check DST (MK_E_EXISTS unless force), create DST.partial/ (emptied first
 * unless keep_partial, which resumable commands use). *partial is malloc'd. */
mk_status mk_outdir_begin(const char *dst, bool force, bool keep_partial, char **partial);
/* fsync, replace DST (when force) and rename DST.partial -> DST. */
mk_status mk_outdir_commit(const char *partial, const char *dst, bool force);
/* Remove DST.partial after a failure (NULL ok). */
void mk_outdir_abort(const char *partial);
/* Copy config/tokenizer side files that exist in src_dir into dst_dir. */
mk_status mk_outdir_copy_sidecars(const char *src_dir, const char *dst_dir);

#endif
